"""The float32 matrix product of NumPy's own BLAS, for compiled code (scans.py).

The whole-scan kernels run a time loop in compiled code and call BLAS's cblas_sgemm directly for
each step's recurrent product: the same library, the same routine and the same thread setting
(threadpoolctl) as NumPy's matmul, without the Python interpreter between steps.

`find_sgemm()` locates NumPy's OpenBLAS (the ILP64 build PyPI wheels ship: symbol
scipy_cblas_sgemm64_ or cblas_sgemm64_, 64-bit integers) and returns the routine's address, or
None where NumPy links another BLAS; the time loops then stay in Python and nothing else changes.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from .. import machine

# the ILP64 names of cblas_sgemm in NumPy's OpenBLAS (NumPy >= 2: scipy-openblas64; 1.x: openblas64_)
_NAMES = ("scipy_cblas_sgemm64_", "cblas_sgemm64_")
_THREADS = (
    ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
    ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
)


def _libraries() -> list[ctypes.CDLL]:
    libs = []
    for path in (i["filepath"] for i in machine.numpy_openblas()):
        try:
            libs.append(ctypes.CDLL(path))
        except OSError:
            continue
    return libs


def find_sgemm() -> int | None:
    """Address of NumPy's ILP64 cblas_sgemm, or None."""
    for lib in _libraries():
        for name in _NAMES:
            fn = getattr(lib, name, None)
            if fn is not None:
                return ctypes.cast(fn, ctypes.c_void_p).value
    return None


def find_gemm_add() -> Any:
    """gemm_add(a, b, c): c += a @ b for 2-D float32 arrays with a unit stride along one axis
    (a transposed view passes as the routine's transpose; c's rows unit-strided), through
    NumPy's cblas_sgemm with beta = 1 (no array for the product); None where it is not found."""
    address = find_sgemm()
    if address is None:
        return None
    i32, i64, f32, ptr = ctypes.c_int, ctypes.c_int64, ctypes.c_float, ctypes.c_void_p
    sgemm = ctypes.CFUNCTYPE(None, i32, i32, i32, i64, i64, i64, f32, ptr, i64, ptr, i64, f32, ptr, i64)(address)

    def layout(x: np.ndarray) -> tuple[int, int] | None:
        """(CBLAS transpose flag, leading dimension) of x as stored (rows or columns of unit
        stride, the other stride no shorter), or None."""
        (m, n), (rows, cols) = x.shape, x.strides
        if rows % 4 or cols % 4 or not x.flags.aligned:  # (leading dimensions in whole floats)
            return None
        if cols == 4 and rows >= 4 * n:
            return 111, rows // 4
        if rows == 4 and cols >= 4 * m:
            return 112, cols // 4
        return None

    def gemm_add(a: np.ndarray, b: np.ndarray, c: np.ndarray, run: bool = True) -> bool:
        """Whether it ran, or with run=False would run (False: a layout the routine does not
        take; nothing done)."""
        la, lb, lc = layout(a), layout(b), layout(c)
        if la is None or lb is None or lc is None or lc[0] != 111 or 0 in a.shape or 0 in b.shape:
            return False
        if not run:
            return True
        (M, K), N = a.shape, b.shape[1]
        sgemm(101, la[0], lb[0], M, N, K, 1.0, a.ctypes.data, la[1], b.ctypes.data, lb[1], 1.0, c.ctypes.data, lc[1])
        return True

    return gemm_add


def find_threads() -> tuple | None:
    """(get, set) for the thread count of NumPy's OpenBLAS (what threadpoolctl sets), or None.
    Calling them directly costs about a microsecond, threadpoolctl's context about a hundred."""
    for lib in _libraries():
        for get, put in _THREADS:
            g, s = getattr(lib, get, None), getattr(lib, put, None)
            if g is not None and s is not None:
                g.restype, g.argtypes = ctypes.c_int, []
                s.restype, s.argtypes = None, [ctypes.c_int]
                return g, s
    return None


def _libc(name: str) -> Any:
    """The C library's function `name`, or None."""
    try:
        return getattr(ctypes.CDLL(None), name, None)
    except (OSError, TypeError):  # pragma: no cover - no C library to open (Windows)
        return None


def find_sched_yield() -> int | None:
    """Address of the C library's sched_yield (POSIX), or None."""
    fn = _libc("sched_yield")
    return None if fn is None else ctypes.cast(fn, ctypes.c_void_p).value


def find_getcpu() -> Any:
    """The C library's sched_getcpu (the CPU the calling thread runs on; glibc), or None."""
    fn = _libc("sched_getcpu")
    if fn is not None:
        fn.restype, fn.argtypes = ctypes.c_int, []
    return fn
