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
import os
from typing import Any

import numpy as np

# the ILP64 names of cblas_sgemm in NumPy's OpenBLAS (NumPy >= 2: scipy-openblas64; 1.x: openblas64_)
_NAMES = ("scipy_cblas_sgemm64_", "cblas_sgemm64_")
_THREADS = (
    ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
    ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
)


def _numpy_openblas() -> list[str]:
    try:
        from threadpoolctl import ThreadpoolController
    except Exception:  # pragma: no cover - threadpoolctl is a dependency
        return []
    home = os.path.realpath(os.path.dirname(np.__file__))  # numpy/ and its numpy.libs/ beside it
    paths = []
    for c in ThreadpoolController().lib_controllers:
        path = getattr(c, "filepath", None)
        if c.internal_api == "openblas" and path and os.path.realpath(path).startswith(home):
            paths.append(path)
    return paths


def _libraries() -> list[ctypes.CDLL]:
    libs = []
    for path in _numpy_openblas():
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
