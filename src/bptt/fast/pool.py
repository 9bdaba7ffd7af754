"""The buffer pool: big scratch arrays kept between training steps, and the products that
fill them (split between the engine's threads within a step on the engine)."""

from __future__ import annotations

import math
import os
import sys
import threading
from typing import Any

import numpy as np

from . import blas, engine
from .switch import kernels_on


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
    returned output, a tape or a gradient view keeps its buffer out of reuse), else the front of
    the smallest such array of that dtype that is larger (segments of differing lengths, as
    memory-budgeted BPTT runs them, use the fronts of the longest one's buffers), else a new
    one (idle arrays of that dtype too small for it are dropped first: they are a shorter
    segment's or step's, and kept beside it they would hold memory no plan counts, or, over
    steps of growing lengths, many times a step's: 115 MB against 13 MB, LSTM 128, T 20 to 200).
    Contents are undefined, as with np.empty. Arrays under `min_bytes` (256 KiB) are left to
    malloc; the pool keeps at most `size` arrays, dropping the least recently used unreferenced
    ones first, and, where a limit is set (`set_limit`), drops idle arrays (least recently used
    first) before a new one would take its arrays beyond it (memory-budgeted BPTT sets it).
    """

    def __init__(self, size: int = 32, min_bytes: int = 1 << 18) -> None:
        self.size, self.min_bytes = size, min_bytes
        self.limit: int | None = None
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
            n, fit = math.prod(shape), -1
            for i in range(len(arrays) - 1, -1, -1):  # (no name may hold an array while it is tested)
                if arrays[i].dtype != dtype or arrays[i].size < n or not self._free(i):
                    continue
                if arrays[i].shape == shape:
                    arrays.append(arrays.pop(i))
                    return arrays[-1]
                if fit < 0 or arrays[i].size < arrays[fit].size:
                    fit = i
            if fit >= 0:  # the front of the smallest idle array that holds it (it stays in use while this lives)
                arrays.append(arrays.pop(fit))
                return arrays[-1].reshape(-1)[:n].reshape(shape)
            # idle arrays of its dtype too small for it go first: a shorter step's or segment's
            # (kept, steps of growing lengths held 115 MB of them beside the 13 MB a step uses)
            self._make_room(n * dtype.itemsize, self.limit, smaller=(dtype, n))
            arrays.append(np.empty(shape, dtype))
            while len(arrays) > self.size:
                free = [i for i in range(len(arrays) - 1) if self._free(i)]
                arrays.pop(free[0] if free else 0)
            return arrays[-1]

    def zeros(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        a = self.empty(shape, dtype)
        a.fill(0)
        return a

    def _make_room(self, need: int, limit: int | None, smaller: tuple | None = None) -> None:
        """Drop idle arrays, least recently used first, until `need` more bytes fit in `limit`
        (None: no limit), or none is idle; with smaller = (dtype, n), first every idle array of
        that dtype with fewer than n elements."""
        arrays = self._arrays
        total = sum(arrays[i].nbytes for i in range(len(arrays)))
        i, dropped = 0, False
        while i < len(arrays):  # (no name may hold an array while it is tested)
            small = smaller is not None and arrays[i].dtype == smaller[0] and arrays[i].size < smaller[1]
            if small and self._free(i):
                total -= arrays.pop(i).nbytes
                dropped = True
            elif limit is not None and total + need > limit and self._free(i):
                total -= arrays.pop(i).nbytes
                dropped = True
            else:
                i += 1
        if dropped:
            _trim()

    def set_limit(self, spare: int | None) -> None:
        """Keep the pool's arrays within those in use now and `spare` bytes more (None: no
        limit), dropping idle arrays beyond it now."""
        with self._lock:
            if spare is None:
                self.limit = None
                return
            arrays = self._arrays
            self.limit = spare + sum(arrays[i].nbytes for i in range(len(arrays)) if not self._free(i))
            self._make_room(0, self.limit)

    def clear(self) -> None:
        """Drop the idle arrays (those still referenced stay: they are someone's) and hand the
        heap's free memory back to the system."""
        with self._lock:
            self._make_room(1, 0)


def _trim() -> None:
    """Hand the heap's free memory back to the system (glibc's malloc_trim). A freed array of
    a few MB may otherwise stay in the heap: glibc raises its mmap threshold to the size of the
    largest block freed and trims the heap only above twice that, so a process that runs
    segments of differing lengths (memory-budgeted BPTT) would hold memory no budget counts."""
    if _libc is not None:
        _libc.malloc_trim(0)


def _glibc() -> Any:
    try:
        import ctypes

        lib = ctypes.CDLL(None)
        return lib if hasattr(lib, "malloc_trim") else None
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        return None


_libc = _glibc()


buffers = BufferPool()
if hasattr(os, "register_at_fork"):  # (POSIX: in a child of os.fork, a lock another thread held is held for ever)
    os.register_at_fork(after_in_child=lambda: setattr(buffers, "_lock", threading.Lock()))


def empty(shape: tuple[int, ...], dtype) -> np.ndarray:
    return buffers.empty(shape, dtype)


def zeros(shape: tuple[int, ...], dtype) -> np.ndarray:
    return buffers.zeros(shape, dtype)


# bptt's own blocked product (gemm.gemm) where machine.own_products() says so: set by
# bptt.fast when the kernels load; used for float32 products of at least OWN_MACS
# multiply-adds while the kernels are on (smaller ones: BLAS)
own_gemm: Any = None
OWN_MACS = 1 << 20


def _own(a: np.ndarray, b: np.ndarray, out: np.ndarray, add: bool) -> bool:
    """out (+)= a @ b in bptt's own product, where it is chosen and takes these arrays (float32,
    a unit stride along one of a's axes, out's rows unit-strided), split between the engine's
    threads by out's rows (or columns, for fewer rows than a tile a part); whether it ran."""
    (M, K), N = a.shape, b.shape[1]
    if own_gemm is None or not kernels_on() or M * N * K < OWN_MACS:
        return False
    if not (a.dtype == b.dtype == out.dtype == np.float32) or 4 not in a.strides or out.strides[1] != 4:
        return False
    if a.strides[0] % 4 or a.strides[1] % 4 or out.strides[0] % 4 or not (a.flags.aligned and out.flags.aligned):
        return False  # (strides in whole floats: the kernel's leading dimensions)
    P = engine.parts()
    if P == 1:
        own_gemm(a, b, out, add)
    elif M >= 8 * P:
        engine.run_parts(lambda p: own_gemm(a[engine.share(M, p, P)], b, out[engine.share(M, p, P)], add))
    else:
        engine.run_parts(lambda p: own_gemm(a, b[:, engine.share(N, p, P)], out[:, engine.share(N, p, P)], add))
    return True


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b for 2-D a (M, K) and b (K, N), into an (M, N) array from the buffer pool: the
    products over all T * B rows of a segment (input projections, readouts, their input
    gradients, weight gradients), whose results a training step drops at its end. On the
    engine, split by output rows (or columns) between its threads, one BLAS thread each."""
    (M, K), N = a.shape, b.shape[1]
    out = buffers.empty((M, N), np.result_type(a, b))
    if _own(a, b, out, False):
        return out
    P = engine.parts()
    if P == 1 or M * N * K < engine.SPLIT_MACS:
        return np.matmul(a, b, out=out)
    if M >= N:
        engine.run_parts(lambda p: np.matmul(a[engine.share(M, p, P)], b, out=out[engine.share(M, p, P)]))
    else:
        engine.run_parts(lambda p: np.matmul(a, b[:, engine.share(N, p, P)], out=out[:, engine.share(N, p, P)]))
    return out


_gemm_add = blas.find_gemm_add()


def matmul_add(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """out += a @ b for 2-D a (M, K), b (K, N) and out (M, N): the weight gradients' sums over
    a segment's T * B rows. In float32, NumPy's cblas_sgemm adds the product into out itself
    (beta = 1): no (M, N) array for the product, no second pass over out; on the engine, split
    by out's rows between its threads. Else (other dtypes, layouts) out += matmul(a, b)."""
    (M, K), N = a.shape, b.shape[1]
    if _own(a, b, out, True):
        return
    P = engine.parts()
    if _gemm_add is None or not (a.dtype == b.dtype == out.dtype == np.float32):
        out += matmul(a, b)
    elif P == 1 or M * N * K < engine.SPLIT_MACS or M < P:
        if not _gemm_add(a, b, out):  # (a layout the routine does not take: nothing was added)
            out += matmul(a, b)
    elif _gemm_add(a, b, out, run=False):  # (row blocks keep the layout the whole arrays have)
        engine.run_parts(lambda p: _gemm_add(a[engine.share(M, p, P)], b, out[engine.share(M, p, P)]))
    else:
        out += matmul(a, b)
