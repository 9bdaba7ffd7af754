"""The buffer pool: big scratch arrays kept between training steps, and the products that
fill them (split between the engine's threads within a step on the engine)."""

from __future__ import annotations

import math
import sys
import threading

import numpy as np

from . import engine


class BufferPool:
    """Large scratch arrays kept between training steps and handed out again only once nothing
    else references them.

    Why. A training step allocates its tape (a 100-step LSTM of 512 units at batch 32: a 26 MB
    gate buffer, three 6.5 MB state buffers) and frees it at the end. Where a step's big arrays
    add up to more than glibc's trim threshold (twice its adaptive mmap threshold, so about 52 MB),
    the freed memory goes back to the OS and the next step faults every page in again: measured
    on that LSTM, 5,200 page faults and 35 ms of system time in a 236 ms step. The small steps
    (arrays of 0.3-1.6 MB) lost 1.4-5 ms per 8-28 ms step the same way until the readout, loss
    and gradient arrays came from the pool as well.

    `empty(shape, dtype)` returns an array that no one else holds: a pooled one of that shape
    and dtype whose only references are the pool's (every view of an array holds its base, so a
    returned output, a tape or a gradient view keeps its buffer out of reuse), else a new one.
    Contents are undefined, as with np.empty. Arrays under `min_bytes` (256 KiB) are left to
    malloc; the pool keeps at most `size` arrays, dropping the least recently used unreferenced
    ones first.
    """

    def __init__(self, size: int = 32, min_bytes: int = 1 << 18) -> None:
        self.size, self.min_bytes = size, min_bytes
        self._arrays: list[np.ndarray] = []
        self._lock = threading.Lock()
        self._idle = self._references([np.empty(1)], 0)  # an array only a list holds

    @staticmethod
    def _references(arrays: list[np.ndarray], i: int) -> int:
        return sys.getrefcount(arrays[i])

    def _free(self, i: int) -> bool:
        return self._references(self._arrays, i) <= self._idle

    def empty(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        shape = tuple(map(int, shape))
        if math.prod(shape) * dtype.itemsize < self.min_bytes:
            return np.empty(shape, dtype)
        arrays = self._arrays
        with self._lock:
            for i in range(len(arrays) - 1, -1, -1):
                if arrays[i].shape == shape and arrays[i].dtype == dtype and self._free(i):
                    arrays.append(arrays.pop(i))
                    return arrays[-1]
            arrays.append(np.empty(shape, dtype))
            while len(arrays) > self.size:
                free = [i for i in range(len(arrays) - 1) if self._free(i)]
                arrays.pop(free[0] if free else 0)
            return arrays[-1]

    def zeros(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        a = self.empty(shape, dtype)
        a.fill(0)
        return a

    def clear(self) -> None:
        with self._lock:
            self._arrays.clear()


buffers = BufferPool()


def empty(shape: tuple[int, ...], dtype) -> np.ndarray:
    return buffers.empty(shape, dtype)


def zeros(shape: tuple[int, ...], dtype) -> np.ndarray:
    return buffers.zeros(shape, dtype)


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b for 2-D a (M, K) and b (K, N), into an (M, N) array from the buffer pool: the
    products over all T * B rows of a segment (input projections, readouts, their input
    gradients, weight gradients), whose results a training step drops at its end. On the
    engine, split by output rows (or columns) between its threads, one BLAS thread each."""
    (M, K), N = a.shape, b.shape[1]
    out = buffers.empty((M, N), np.result_type(a, b))
    P = engine.parts()
    if P == 1 or M * N * K < engine.SPLIT_MACS:
        return np.matmul(a, b, out=out)
    if M >= N:
        engine.run_parts(lambda p: np.matmul(a[engine.share(M, p, P)], b, out=out[engine.share(M, p, P)]))
    else:
        engine.run_parts(lambda p: np.matmul(a, b[:, engine.share(N, p, P)], out=out[:, engine.share(N, p, P)]))
    return out
