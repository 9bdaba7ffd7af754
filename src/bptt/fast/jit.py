"""Numba for the float32 kernels: the decorators and where their compiled code is cached.

The kernels are compiled with LLVM's fast-math flags except 'nnan' and 'ninf': with those the
compiler may assume no NaN or inf exists and turn a clamp into a min/max that returns the other
operand (a NaN weight gave a finite loss). Without them a NaN in gives NaN out, as in NumPy.

Numba's cache lives beside this package (or in NUMBA_CACHE_DIR); where the folder cannot be
written the step kernels are compiled in each process that uses them (about 5 s) and the whole
scans stay off. The packed product's vector width (LANES) is the host's, or BPTT_LANES's.

Which compiled code is still good. Numba keys a function's cached code by its own source file,
but a kernel here inlines functions and reads constants of other files (split.py's scans take
gemm.py's tile kernels and panel width): with gemm.py changed and split.py not, Numba would load
scans compiled for the old panels, and they give wrong numbers. So every function of this
folder is cached under one stamp, a hash of all the folder's sources and the vector width, in a
folder named by it (`_Locator`, `cache_folder`): a change to any source compiles all of them
again, once, and two installs, or hosts of two vector widths, sharing a cache folder keep their
kernels apart. Numba's own locators never see these functions (they would fall back to its
per-file stamps).
"""

from __future__ import annotations

import hashlib
import os
import tempfile

import numba as nb
from numba.core import caching

from ..machine import lanes, vector_isa

_HERE = os.path.dirname(os.path.abspath(__file__))

# The packed product's vector width in floats (gemm.py): 16 where the CPU has AVX-512, else 8,
# or BPTT_LANES (8 or 16).
HOST_LANES = 16 if vector_isa() == "AVX-512" else 8
LANES = lanes()  # (a bad BPTT_LANES: one line at the first float32 step, not the kernels silently off)


def _stamp() -> str:
    """A hash of every Python source of this folder and of LANES."""
    h = hashlib.sha256(f"lanes {LANES}\n".encode())
    for name in sorted(os.listdir(_HERE)):
        if name.endswith(".py"):
            with open(os.path.join(_HERE, name), "rb") as f:
                h.update(f"{name}\n".encode() + f.read())
    return h.hexdigest()


STAMP = _stamp()


def cache_folder() -> str:
    """Where this folder's compiled kernels are cached: kernels-<stamp> in its __pycache__, or
    in NUMBA_CACHE_DIR where that is set."""
    base = os.path.abspath(os.environ.get("NUMBA_CACHE_DIR") or os.path.join(_HERE, "__pycache__"))
    return os.path.join(base, f"bptt-kernels-{STAMP[:16]}")  # (absolute: the same folder after a chdir)


def _writable(folder: str) -> bool:
    try:
        os.makedirs(folder, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError:
        return False
    return True


CACHE = _writable(cache_folder())


class _Locator(caching._SourceFileBackedLocatorMixin, caching._CacheLocator):
    """Numba's cache locator for the functions of this folder (and only those): their code
    in cache_folder(), valid while STAMP holds (module docstring)."""

    def __init__(self, py_func, py_file):
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        self._cache_path = cache_folder()

    def get_cache_path(self):
        return self._cache_path

    def get_source_stamp(self):
        return STAMP

    @classmethod
    def from_function(cls, py_func, py_file):
        if os.path.dirname(os.path.abspath(py_file)) != _HERE:
            return None
        return cls(py_func, py_file)  # (never None here: no other locator may take it)


# (Numba's class of cache machinery: CacheImpl since 0.61, _CacheImpl before)
_IMPL = getattr(caching, "CacheImpl", None) or caching._CacheImpl
if _Locator not in _IMPL._locator_classes:
    _IMPL._locator_classes.insert(0, _Locator)

FLAGS = {"contract", "arcp", "nsz", "afn", "reassoc"}
jit = nb.njit(fastmath=FLAGS, error_model="numpy", cache=CACHE, nogil=True)
# IEEE float32 arithmetic, each operation rounded as NumPy rounds it (no contraction into fused
# multiply-adds, no reassociation): kernels that must give NumPy's numbers bit for bit
exact = nb.njit(error_model="numpy", cache=CACHE, nogil=True)
inline = nb.njit(fastmath=FLAGS, error_model="numpy", cache=CACHE, inline="always")
