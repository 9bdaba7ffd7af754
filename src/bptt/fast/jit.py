"""Numba for the float32 kernels: the decorators and where their compiled code is cached.

The kernels are compiled with LLVM's fast-math flags except 'nnan' and 'ninf': with those the
compiler may assume no NaN or inf exists and turn a clamp into a min/max that returns the other
operand (a NaN weight gave a finite loss). Without them a NaN in gives NaN out, as in NumPy.

Numba's cache lives beside this package (or in NUMBA_CACHE_DIR); where neither is writable the
step kernels are compiled in each process that uses them (about 5 s) and the whole scans stay off.
The packed product's vector width (LANES) is the host's, or BPTT_LANES's.
"""

from __future__ import annotations

import os

import numba as nb

from ..machine import lanes, vector_isa

CACHE = os.access(os.path.dirname(os.path.abspath(__file__)), os.W_OK) or bool(os.environ.get("NUMBA_CACHE_DIR"))

# The packed product's vector width in floats (gemm.py): 16 where the CPU has AVX-512, else 8,
# or BPTT_LANES (8 or 16). Numba's cache keys compiled code by the CPU, not by this constant,
# so code compiled for a width other than the host's own is cached in a folder of its own.
HOST_LANES = 16 if vector_isa() == "AVX-512" else 8
LANES = lanes()  # (a bad BPTT_LANES: one line at the first float32 step, not the kernels silently off)
if LANES != HOST_LANES and CACHE:
    base = os.environ.get("NUMBA_CACHE_DIR") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "__pycache__")
    nb.config.CACHE_DIR = os.path.join(base, f"lanes{LANES}")  # (this process only)
FLAGS = {"contract", "arcp", "nsz", "afn", "reassoc"}
jit = nb.njit(fastmath=FLAGS, error_model="numpy", cache=CACHE, nogil=True)
# IEEE float32 arithmetic, each operation rounded as NumPy rounds it (no contraction into fused
# multiply-adds, no reassociation): kernels that must give NumPy's numbers bit for bit
exact = nb.njit(error_model="numpy", cache=CACHE, nogil=True)
inline = nb.njit(fastmath=FLAGS, error_model="numpy", cache=CACHE, inline="always")
