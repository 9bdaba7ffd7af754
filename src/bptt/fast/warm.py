"""Compiling the kernels once: `ensure()` loads them from Numba's disk cache, or compiles them
the first time, with one line on stderr saying so; `bptt warm` does it ahead of time.

Where split scans exist (the engine runs full BPTT's steps on them), the unsplit whole scans
serve only steps off the engine (TBPTT's segments): they compile at their first use (about 3 s).
"""

from __future__ import annotations

import os
import sys
import time
import warnings

import numba
import numpy as np

from . import jit, rows, scans

SCANS = scans.AVAILABLE
if SCANS:
    from . import gemm, split, sync

    SPLIT = sync.AVAILABLE
else:  # pragma: no cover - without NumPy's OpenBLAS or a disk cache
    SPLIT = False


def _marker() -> str:
    return os.path.join(jit.cache_folder(), f"numba{numba.__version__}-numpy{np.__version__}.compiled")


def compiled() -> bool:
    """Whether the kernels were compiled into the disk cache already (by this install)."""
    return jit.CACHE and os.path.exists(_marker())


def ensure(verbose: bool = True) -> bool:
    """Compile or load every kernel this machine uses; False (with a warning) if that fails."""
    cached = compiled()
    if verbose and not cached:
        said = (
            "once (under a minute; `bptt warm` does it ahead of time)"
            if jit.CACHE
            else f"for this process ({jit.cache_folder()} cannot be written: set NUMBA_CACHE_DIR to keep them)"
        )
        print(f"bptt: compiling the float32 kernels {said}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    try:
        _compile()
    except Exception as e:  # pragma: no cover - a broken compiler must not break the library
        warnings.warn(
            f"bptt: compiled kernels unavailable ({type(e).__name__}: {e}); using NumPy", RuntimeWarning, stacklevel=2
        )
        return False
    if jit.CACHE and not cached:
        try:
            with open(_marker(), "w") as f:
                f.write(f"compiled in {time.perf_counter() - t0:.1f} s\n")
        except OSError:  # (the folder went away or read-only since: the kernels are there anyway)
            pass
    return True


def _compile() -> None:
    """Compile (first time) or load (from the cache) the C-contiguous float32 versions."""
    f, i8 = np.float32, np.int64
    g, s, g3 = np.zeros((1, 4), f), np.zeros((1, 1), f), np.zeros((1, 3), f)
    rows.tanh_(np.zeros(1, f), np.zeros(1, f))
    rows.elman_fwd(s, s.copy())
    rows.elman_bwd(s, s, s, s.copy())
    rows.lstm_fwd(g, g.copy(), s, s.copy(), s.copy())
    rows.lstm_bwd(g, s, s, s, s, s, g.copy(), s.copy())
    rows.gru_fwd(g3, g3.copy(), np.zeros(1, f), s, g.copy(), s.copy())
    rows.gru_bwd(g, s, s, s, g.copy(), g3.copy(), s.copy())
    rows.exp_(np.zeros(1, f), np.zeros(1, f))
    v1 = np.zeros(1, f)
    rows.adam_moments(v1, v1, v1, v1.copy(), v1.copy(), v1.copy(), *(f(c) for c in (0.9, 0.1, 0.99, 0.01, 1, 1, 1e-8)))
    rows.softmax_xent(g, np.zeros(1, i8), f(1.0), g.copy())
    rows.scatter_add(np.zeros((1, 4), f), np.zeros(1, i8), np.zeros(4, f), 4)  # (rows.flat_rows' views)
    rows.scatter_add(np.zeros((1, 4)), np.zeros(1, i8), np.zeros(4), 4)
    rows.column_sums_add(np.zeros(4, f), np.zeros(4, f), 4)
    ix, s3, _, g4_ = np.zeros((1, 1), i8), np.zeros((1, 1, 1), f), np.zeros((1, 1, 3), f), np.zeros((1, 1, 4), f)
    none = (np.zeros(0, i8), np.zeros((0, 2), i8))  # no stops (scans.py's _STOPS)
    if SCANS and not SPLIT:  # with split scans, the unsplit ones serve only steps off the engine
        scans.elman_scan(s, ix, s, s, s3.copy(), s3.copy(), False, *none)
        scans.elman_scan_back(s, s3.copy(), s3, s.copy(), s, False)
        scans.lstm_scan(g, ix, np.zeros((4, 1), f), s, s, g4_.copy(), s3.copy(), s3.copy(), False, *none)
        scans.lstm_scan_back(np.zeros((4, 1), f), s, g4_.copy(), s3, s3, s.copy(), s.copy(), s, False)
        scans.gru_scan(g3, ix, np.zeros((3, 1), f), np.zeros(1, f), s, g4_.copy(), s3.copy(), g3.copy(), False, *none)
        scans.gru_scan_back(np.zeros((3, 1), f), s, g4_.copy(), s3, s3, s.copy(), g3.copy(), s, False)
    if SCANS:  # the spiking cells' scans (never split)
        from . import spiking

        v1 = np.zeros(1, f)
        spiking.spike_scan(
            s, ix, s, True, v1, v1, v1, v1, False, True, 0, s, s, s, s,
            s3.copy(), s3.copy(), s3.copy(), s3.copy(), s3.copy(), False,
        )  # fmt: skip
        spiking.spike_scan_back(
            s, True, v1, v1, v1, v1, False, True, False, 0, 0, f(1.0), f(1.0), s, s, s3, s3, s3, s3, s3,
            s.copy(), s.copy(), s.copy(), s3.copy(), s3.copy(), v1.copy(), s, False,
        )  # fmt: skip
    if SPLIT:  # one part of one: no waiting
        bar = np.zeros(3, i8)
        P, e = np.zeros((1, 1, gemm.PANEL), f), np.zeros((gemm.TILE, gemm.PANEL), f)
        for view in (np.zeros((1, 4), f), np.zeros((4, 1), f).T, np.zeros((1, 5), f)[:, :4]):  # C, F, strided
            gemm.pack_panels(view, P)
        gemm.pack_rows(np.zeros((4, 1), f), np.zeros(1, i8), P)
        gemm.mm_panels(s, P, g.copy(), e, False)
        sync.spin_until(bar.ctypes.data, -1, 1)
        one, edges, wide = (P, np.array([0, 1], i8)), e[None].copy(), np.zeros((1, gemm.PANEL), f)
        one4, one3 = ((np.zeros((1, k, gemm.PANEL), f), one[1]) for k in (4, 3))  # (K rows: LSTM's, GRU's gates)
        kept = []

        def at():  # row 0 of 1, part 0 of 1, a fresh round counter and claim (kept alive while the kernel runs)
            kept.append((np.zeros(3, i8), np.zeros((1, 8), i8)))
            return (0, 1), 0, 1, kept[-1][0].ctypes.data, kept[-1][1].ctypes.data

        split.lstm_scan_part(
            g, ix, s, s, g4_.copy(), s3.copy(), s3.copy(), False, *none, *one, wide.copy(), edges, *at()
        )  # fmt: skip
        split.lstm_scan_back_part(
            s, g4_.copy(), s3, s3, s.copy(), s.copy(), s, False, *one4, edges, *at()
        )  # fmt: skip
        split.elman_scan_part(s, ix, s, s3.copy(), s3.copy(), False, *none, *one, edges, *at())
        split.elman_scan_back_part(s3.copy(), s3, s.copy(), s, False, *one, s.copy(), edges, *at())
        split.gru_scan_part(
            g3, ix, np.zeros(1, f), s, g4_.copy(), s3.copy(), False, *none, *one, wide.copy(), edges, *at()
        )  # fmt: skip
        split.gru_scan_back_part(
            s, g4_.copy(), s3, s3, s.copy(), np.zeros((2, 1, 3), f), s, False, *one3, edges, *at(),
        )  # fmt: skip
