"""Numba for the float32 kernels: the decorators and where their compiled code is cached.

The kernels are compiled with LLVM's fast-math flags except 'nnan' and 'ninf': with those the
compiler may assume no NaN or inf exists and turn a clamp into a min/max that returns the other
operand (a NaN weight gave a finite loss). Without them a NaN in gives NaN out, as in NumPy.

Numba's cache lives beside this package (or in NUMBA_CACHE_DIR); where neither is writable the
step kernels are compiled in each process that uses them (about 5 s) and the whole scans stay off.
"""

from __future__ import annotations

import os

import numba as nb

CACHE = os.access(os.path.dirname(os.path.abspath(__file__)), os.W_OK) or bool(os.environ.get("NUMBA_CACHE_DIR"))
FLAGS = {"contract", "arcp", "nsz", "afn", "reassoc"}
jit = nb.njit(fastmath=FLAGS, error_model="numpy", cache=CACHE, nogil=True)
inline = nb.njit(fastmath=FLAGS, error_model="numpy", cache=CACHE, inline="always")
