"""Scans split between threads by hidden units (engine.py runs them).

Part p of P takes the hidden units lo:hi (`_share`): its rows of W_hh, its gate columns, its
slices of c and h. The threads meet once per step at a counter in shared memory (sync.py):
forward, step s's product reads all of h_{t-1}, so each part waits until all P parts have
finished s steps; backward, step s's product dh[:, lo:hi] = da_t W_hh[:, lo:hi] reads all of
da_t, so each part waits until all P parts have written it. Nothing else is shared: every other
write goes to the part's own units, and step s never writes what step s+-1 of another part reads
(they are different tape rows). Each part's recurrent product is gemm.py's packed kernel; the
engine holds NumPy's OpenBLAS at one thread meanwhile. Tested equal to the whole scans for 1-3
parts.
"""

from __future__ import annotations

from .gemm import _mm_panels
from .jit import inline, jit
from .rows import (
    _elman_row,
    _elman_row_back,
    _gru_cells,
    _gru_cells_back,
    _lstm_cells,
    _lstm_cells_back,
)
from .scans import _at, _before, _scale_rows
from .sync import _atomic_add, _wait


@inline
def _copy(a, b):
    for j in range(a.shape[0]):
        b[j] = a[j]


@inline
def _copy_part(a, b, lo, hi):
    """b[:, lo:hi] = a[:, lo:hi], row by row."""
    for r in range(a.shape[0]):
        _copy(a[r, lo:hi], b[r, lo:hi])


@inline
def _share(H, part, parts):
    return part * H // parts, (part + 1) * H // parts


@jit
def lstm_scan_part(src, idx, h0, c0, work, cs, outs, reverse, part, parts, P, a, edge, bar):
    """Part `part` of `parts` of lstm_scan: P the transpose of its units' gate rows of
    W_hh ((4n, H), [i, f, g, o]), packed (pack_panels); a (B, 4n) and edge (4, PANEL)
    scratch; bar the address of the team's barrier (_wait). Returns 0, or -1 if the
    parts lost each other."""
    T, H = idx.shape[0], cs.shape[2]
    lo, hi = _share(H, part, parts)
    n = hi - lo
    for s in range(T):
        if s > 0 and not _wait(bar, parts * s):
            return -1
        t = _at(s, T, reverse)
        hp, cp = _before(h0, outs, s, T, reverse), _before(c0, cs, s, T, reverse)
        _mm_panels(hp, P, a, edge, False)
        w, c, h = work[t % work.shape[0]], cs[t % cs.shape[0]], outs[t % outs.shape[0]]
        for b in range(a.shape[0]):
            x, ar, wr = src[idx[t, b]], a[b], w[b]
            _lstm_cells(
                x[lo:hi],
                x[H + lo : H + hi],
                x[2 * H + lo : 2 * H + hi],
                x[3 * H + lo : 3 * H + hi],
                ar[:n],
                ar[n : 2 * n],
                ar[2 * n : 3 * n],
                ar[3 * n : 4 * n],
                wr[lo:hi],
                wr[H + lo : H + hi],
                wr[2 * H + lo : 2 * H + hi],
                wr[3 * H + lo : 3 * H + hi],
                cp[b, lo:hi],
                c[b, lo:hi],
                h[b, lo:hi],
            )
        _atomic_add(bar, 1)
    return 0


@jit
def lstm_scan_back_part(h0, c0, work, cs, outs, douts, dh, dc, h_prev, scale, reverse, part, parts, P, row, edge, bar):
    """Part `part` of `parts` of lstm_scan_back (same arguments but W_hh): P its units'
    columns of W_hh ((4H, n)), packed; row (5n) and edge (4, PANEL) scratch. Returns 0, or
    -1 if the parts lost each other."""
    T, H = work.shape[0], dh.shape[1]
    lo, hi = _share(H, part, parts)
    n = hi - lo
    dhc, dcc = dh[:, lo:hi], dc[:, lo:hi]
    for s in range(T - 1, -1, -1):
        t = _at(s, T, reverse)
        hp, cp = _before(h0, outs, s, T, reverse), _before(c0, cs, s, T, reverse)
        _copy_part(hp, h_prev[t], lo, hi)
        a, c, g = work[t], cs[t], douts[t]
        for b in range(a.shape[0]):
            ar = a[b]
            ai, af, ag, ao = ar[lo:hi], ar[H + lo : H + hi], ar[2 * H + lo : 2 * H + hi], ar[3 * H + lo : 3 * H + hi]
            _lstm_cells_back(
                ai,
                af,
                ag,
                ao,
                cp[b, lo:hi],
                c[b, lo:hi],
                dh[b, lo:hi],
                g[b, lo:hi],
                dc[b, lo:hi],
                row[:n],
                row[n : 2 * n],
                row[2 * n : 3 * n],
                row[3 * n : 4 * n],
                dc[b, lo:hi],
                row[4 * n :],
            )
            for j in range(n):
                ai[j], af[j], ag[j], ao[j] = row[j], row[n + j], row[2 * n + j], row[3 * n + j]
        _atomic_add(bar, 1)
        if not _wait(bar, parts * (T - s)):
            return -1
        _mm_panels(a, P, dhc, edge, False)
        _scale_rows(dhc, scale, t)
        _scale_rows(dcc, scale, t)
    return 0


@jit
def elman_scan_part(src, idx, h0, work, outs, reverse, part, parts, P, edge, bar):
    """Part `part` of `parts` of elman_scan: P its units' rows of W_hh, transposed and
    packed; edge (4, PANEL) scratch; bar the team's barrier (_wait). 0, or -1 if lost."""
    T, H = idx.shape[0], outs.shape[2]
    lo, hi = _share(H, part, parts)
    for s in range(T):
        if s > 0 and not _wait(bar, parts * s):
            return -1
        t = _at(s, T, reverse)
        w, o = work[t % work.shape[0]], outs[t % outs.shape[0]]
        _mm_panels(_before(h0, outs, s, T, reverse), P, w[:, lo:hi], edge, False)
        for b in range(w.shape[0]):
            a = w[b, lo:hi]  # a row's slice: contiguous, which lets the loops vectorise
            _elman_row(src[idx[t, b]][lo:hi], a)
            _copy(a, o[b, lo:hi])
        _atomic_add(bar, 1)
    return 0


@jit
def elman_scan_back_part(h0, work, douts, dh, h_prev, scale, reverse, part, parts, P, row, edge, bar):
    """Part `part` of `parts` of elman_scan_back (W_hh's columns for its units packed in
    P); row (n) and edge (4, PANEL) scratch. 0, or -1 if the parts lost each other."""
    T, H = work.shape[0], dh.shape[1]
    lo, hi = _share(H, part, parts)
    dhc = dh[:, lo:hi]
    for s in range(T - 1, -1, -1):
        t = _at(s, T, reverse)
        _copy_part(_before(h0, work, s, T, reverse), h_prev[t], lo, hi)
        w, g = work[t], douts[t]
        for b in range(w.shape[0]):
            _elman_row_back(w[b, lo:hi], dh[b, lo:hi], g[b, lo:hi], w[b, lo:hi], row)
        _atomic_add(bar, 1)
        if not _wait(bar, parts * (T - s)):
            return -1
        _mm_panels(w, P, dhc, edge, False)
        _scale_rows(dhc, scale, t)
    return 0


@jit
def gru_scan_part(src, idx, b_hn, h0, work, outs, reverse, part, parts, P, rec, edge, bar):
    """Part `part` of `parts` of gru_scan: P its units' [r, z, n] rows of W_hh,
    transposed and packed; rec (B, 3n) and edge (4, PANEL) scratch. 0, or -1 if lost."""
    T, H = idx.shape[0], outs.shape[2]
    lo, hi = _share(H, part, parts)
    n = hi - lo
    for s in range(T):
        if s > 0 and not _wait(bar, parts * s):
            return -1
        t = _at(s, T, reverse)
        hp = _before(h0, outs, s, T, reverse)
        _mm_panels(hp, P, rec, edge, False)
        w, h = work[t % work.shape[0]], outs[t % outs.shape[0]]
        for b in range(w.shape[0]):
            x, rc, wb = src[idx[t, b]], rec[b], w[b]
            _gru_cells(
                x[lo:hi],
                x[H + lo : H + hi],
                x[2 * H + lo : 2 * H + hi],
                rc[:n],
                rc[n : 2 * n],
                rc[2 * n : 3 * n],
                b_hn[lo:hi],
                wb[lo:hi],
                wb[H + lo : H + hi],
                wb[2 * H + lo : 2 * H + hi],
                wb[3 * H + lo : 3 * H + hi],
                hp[b, lo:hi],
                h[b, lo:hi],
            )
        _atomic_add(bar, 1)
    return 0


@jit
def gru_scan_back_part(h0, work, outs, douts, dh, drec, h_prev, scale, reverse, part, parts, P, row, edge, bar):
    """Part `part` of `parts` of gru_scan_back: P its units' columns of W_hh packed;
    drec (2, B, 3H) shared by the parts, alternate steps using alternate halves (the
    step after may write one while a part still reads the other); row (4n) and edge
    (4, PANEL) scratch. 0, or -1 if the parts lost each other."""
    T, H = work.shape[0], dh.shape[1]
    lo, hi = _share(H, part, parts)
    n = hi - lo
    dhc = dh[:, lo:hi]
    r0, r1, r2, r3 = row[:n], row[n : 2 * n], row[2 * n : 3 * n], row[3 * n : 4 * n]
    for s in range(T - 1, -1, -1):
        t = _at(s, T, reverse)
        hp = _before(h0, outs, s, T, reverse)
        _copy_part(hp, h_prev[t], lo, hi)
        w, g, d = work[t], douts[t], drec[s % 2]
        for b in range(w.shape[0]):
            wb, db = w[b], d[b]
            wr, wz, wn, whn = wb[lo:hi], wb[H + lo : H + hi], wb[2 * H + lo : 2 * H + hi], wb[3 * H + lo : 3 * H + hi]
            _gru_cells_back(wr, wz, wn, whn, hp[b, lo:hi], dh[b, lo:hi], g[b, lo:hi], r0, r1, r2, r3, dh[b, lo:hi])
            for j in range(n):
                db[lo + j], db[H + lo + j], db[2 * H + lo + j] = r0[j], r1[j], r3[j]
                wr[j], wz[j], wn[j], whn[j] = r0[j], r1[j], r2[j], r3[j]
        _atomic_add(bar, 1)
        if not _wait(bar, parts * (T - s)):
            return -1
        _mm_panels(d, P, dhc, edge, True)  # dh = g z + drec W_hh
        _scale_rows(dhc, scale, t)
    return 0
