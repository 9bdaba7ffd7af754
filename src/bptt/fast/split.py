"""Scans split between threads by hidden units (engine.py runs them), their tasks claimed.

Part q of `parts` takes the hidden units lo:hi (`_share`): its rows of W_hh, its gate columns,
its slices of c and h. A scan runs in rounds of one task per part. Forward, round s is step s:
the part's product with all of h_{s-1}, then its cells. Backward, round k is the product of step
T-k for the part's units, dh[:, lo:hi] = da_{T-k} W_hh[:, lo:hi] (it reads all of da), then the
part's cells at step T-1-k; round T is the last product alone. A round's tasks read what the
whole round before wrote, so the threads meet once per round at a counter in shared memory
(sync.py); nothing else is shared: every other write goes to the part's own units, and a round
never writes what another part of the round before reads (different tape rows).

Rows. Every kernel runs the batch rows span = (b0, b1) of its arrays (its argument before the part):
all of them in a scan split by units, or one chunk of rows in a scan split by rows (engine.py's
`scan_rows`: the chunks share nothing but read-only weights, so each runs one part alone, with
no meeting at all). A row's numbers do not depend on which rows run with it (the product kernel
sums every element over k in the same order whatever its tile). The rows come as one pair, not
two arguments: a call of exactly 20 arguments (LSTM's kernels with two) left about 400 bytes a
call to Python's cycle collector (Numba 0.68, CPython 3.11; measured with tracemalloc: 0.4 MiB
alive between collections, which a memory-budgeted step's peak counted), 19 or 21 none.

Tasks are claimed, not assigned: a thread takes part q of round k by moving the part's counter
from k to k + 1 (compare-and-swap), its own part (`me`) first, then any other part of the round
still untaken. A thread that is late (a worker woken after the process idled, a core busy with
another process) holds nobody up: the others run its parts until it comes. A part's packed
weights (panels[offs[q]:offs[q + 1]]) and scratch are the part's whoever runs it, so the numbers
do not depend on which thread ran what. Each part's recurrent product is gemm.py's packed
kernel; the engine holds NumPy's OpenBLAS at one thread meanwhile. Tested equal to the whole
scans for 1-3 parts, and bitwise the same when one thread runs every part.
"""

from __future__ import annotations

from .gemm import _PANEL, _mm_panels
from .jit import inline, jit
from .rows import (
    _elman_row,
    _elman_row_back,
    _gru_cells,
    _gru_cells_back,
    _lstm_cells,
    _lstm_cells_back,
)
from .scans import _at, _before, _keep, _scale_rows, _stop
from .sync import _atomic_add, _atomic_cas, _wait


@inline
def _copy(a, b):
    for j in range(a.shape[0]):
        b[j] = a[j]


@inline
def _share(H, part, parts):
    return part * H // parts, (part + 1) * H // parts


@inline
def _take(bar, claims, me, parts, k, j):
    """The part the calling thread runs at its j-th try in round k, its own part `me` first:
    part (me + j) % parts if it takes it (the part's counter, one cache line each from
    `claims`, moved from k to k + 1), else -1 (another thread has it); -2 if, waiting for
    round k - 1 to finish (at j = 0), it lost the others."""
    if j == 0 and k > 0 and not _wait(bar, parts * k):
        return -2
    q = (me + j) % parts
    return q if _atomic_cas(claims + 64 * q, k, k + 1) else -1


@inline
def _gates(scratch, q, B, width):
    """Part q's product scratch: the first B * width floats of its row, as (B, width)."""
    return scratch[q][: B * width].reshape((B, width))


@jit
def lstm_scan_part(
    src, idx, h0, c0, work, cs, outs, reverse, stops, kept, panels, offs, scratch, edges, span, me, parts, bar, claims
):
    """lstm_scan split by hidden units: part q's panels the transpose of its units' gate rows
    of W_hh ((4n, H), [i, f, g, o]), packed (gemm.pack_rows); scratch (parts, >= B * 4n padded to
    panels) and edges (parts, TILE, PANEL); bar and claims the addresses of the round counter
    (_wait) and of the parts' claim counters; stops and kept as lstm_scan's (each part copies
    its own units). Returns 0, or -1 if the parts lost each other."""
    T, B, H, k = idx.shape[0], idx.shape[1], cs.shape[2], 0
    b0, b1 = span
    for s in range(T):
        stop = _stop(stops, k, s)
        for j in range(parts):
            q = _take(bar, claims, me, parts, s, j)
            if q == -2:
                return -1
            if q < 0:
                continue
            lo, hi = _share(H, q, parts)
            n, Pq = hi - lo, panels[offs[q] : offs[q + 1]]
            a = _gates(scratch, q, B, Pq.shape[0] * _PANEL)
            t = _at(s, T, reverse)
            hp, cp = _before(h0, outs, s, T, reverse), _before(c0, cs, s, T, reverse)
            _mm_panels(hp[b0:b1], Pq, a[b0:b1], edges[q], False, s % 2 == 1)
            w, c, h = work[t % work.shape[0]], cs[t % cs.shape[0]], outs[t % outs.shape[0]]
            for b in range(b0, b1):
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
            if stop:
                _keep(h, kept[k, 0], lo, hi, b0, b1)
                _keep(c, kept[k, 1], lo, hi, b0, b1)
            _atomic_add(bar, 1)
        k += stop
    return 0


@jit
def lstm_scan_back_part(c0, work, cs, douts, dh, dc, scale, reverse, panels, offs, edges, span, me, parts, bar, claims):
    """lstm_scan_back split by hidden units (same arguments but W_hh): part q's panels its
    units' columns of W_hh ((4H, n)), packed; edges (parts, TILE, PANEL) scratch (the cells
    write their gradients over the gates). Returns 0, or -1 if the parts lost each other."""
    T, H = work.shape[0], dh.shape[1]
    b0, b1 = span
    for k in range(T + 1):
        for j in range(parts):
            q = _take(bar, claims, me, parts, k, j)
            if q == -2:
                return -1
            if q < 0:
                continue
            lo, hi = _share(H, q, parts)
            dhc, dcc = dh[b0:b1, lo:hi], dc[b0:b1, lo:hi]
            if k > 0:  # step T - k's product for the part's units
                t = _at(T - k, T, reverse)
                _mm_panels(work[t][b0:b1], panels[offs[q] : offs[q + 1]], dhc, edges[q], False, k % 2 == 1)
                _scale_rows(dhc, scale, t, b0)
                _scale_rows(dcc, scale, t, b0)
            if k < T:  # step T - 1 - k's cells
                s = T - 1 - k
                t = _at(s, T, reverse)
                cp = _before(c0, cs, s, T, reverse)
                a, c, g = work[t], cs[t], douts[t]
                for b in range(b0, b1):
                    ar = a[b]
                    ai, af = ar[lo:hi], ar[H + lo : H + hi]
                    ag, ao = ar[2 * H + lo : 2 * H + hi], ar[3 * H + lo : 3 * H + hi]
                    _lstm_cells_back(ai, af, ag, ao, cp[b, lo:hi], c[b, lo:hi], dh[b, lo:hi], g[b, lo:hi], dc[b, lo:hi])
            _atomic_add(bar, 1)
    return 0


@jit
def elman_scan_part(src, idx, h0, work, outs, reverse, stops, kept, panels, offs, edges, span, me, parts, bar, claims):
    """elman_scan split by hidden units: part q's panels its units' rows of W_hh, transposed
    and packed; edges (parts, TILE, PANEL) scratch; stops and kept as elman_scan's. 0, or -1
    if the parts lost each other."""
    T, H, k = idx.shape[0], outs.shape[2], 0
    b0, b1 = span
    for s in range(T):
        stop = _stop(stops, k, s)
        for j in range(parts):
            q = _take(bar, claims, me, parts, s, j)
            if q == -2:
                return -1
            if q < 0:
                continue
            lo, hi = _share(H, q, parts)
            t = _at(s, T, reverse)
            w, o = work[t % work.shape[0]], outs[t % outs.shape[0]]
            hp = _before(h0, outs, s, T, reverse)
            _mm_panels(hp[b0:b1], panels[offs[q] : offs[q + 1]], w[b0:b1, lo:hi], edges[q], False, s % 2 == 1)
            for b in range(b0, b1):
                a = w[b, lo:hi]  # a row's slice: contiguous, which lets the loops vectorise
                _elman_row(src[idx[t, b]][lo:hi], a)
                _copy(a, o[b, lo:hi])
            if stop:
                _keep(o, kept[k, 0], lo, hi, b0, b1)
            _atomic_add(bar, 1)
        k += stop
    return 0


@jit
def elman_scan_back_part(work, douts, dh, scale, reverse, panels, offs, rows, edges, span, me, parts, bar, claims):
    """elman_scan_back split by hidden units (part q's panels W_hh's columns for its units,
    packed); rows (parts, >= n) and edges (parts, TILE, PANEL) scratch. 0, or -1 if lost."""
    T, H = work.shape[0], dh.shape[1]
    b0, b1 = span
    for k in range(T + 1):
        for j in range(parts):
            q = _take(bar, claims, me, parts, k, j)
            if q == -2:
                return -1
            if q < 0:
                continue
            lo, hi = _share(H, q, parts)
            dhc = dh[b0:b1, lo:hi]
            if k > 0:  # step T - k's product for the part's units
                t = _at(T - k, T, reverse)
                _mm_panels(work[t][b0:b1], panels[offs[q] : offs[q + 1]], dhc, edges[q], False, k % 2 == 1)
                _scale_rows(dhc, scale, t, b0)
            if k < T:  # step T - 1 - k's cells
                s = T - 1 - k
                t = _at(s, T, reverse)
                w, g, row = work[t], douts[t], rows[q]
                for b in range(b0, b1):
                    _elman_row_back(w[b, lo:hi], dh[b, lo:hi], g[b, lo:hi], w[b, lo:hi], row[: hi - lo])
            _atomic_add(bar, 1)
    return 0


@jit
def gru_scan_part(
    src, idx, b_hn, h0, work, outs, reverse, stops, kept, panels, offs, scratch, edges, span, me, parts, bar, claims
):
    """gru_scan split by hidden units: part q's panels its units' [r, z, n] rows of W_hh,
    transposed and packed; scratch (parts, >= B * 3n padded to panels) and edges (parts,
    TILE, PANEL); stops and kept as gru_scan's. 0, or -1 if the parts lost each other."""
    T, B, H, k = idx.shape[0], idx.shape[1], outs.shape[2], 0
    b0, b1 = span
    for s in range(T):
        stop = _stop(stops, k, s)
        for j in range(parts):
            q = _take(bar, claims, me, parts, s, j)
            if q == -2:
                return -1
            if q < 0:
                continue
            lo, hi = _share(H, q, parts)
            n, Pq = hi - lo, panels[offs[q] : offs[q + 1]]
            rec = _gates(scratch, q, B, Pq.shape[0] * _PANEL)
            t = _at(s, T, reverse)
            hp = _before(h0, outs, s, T, reverse)
            _mm_panels(hp[b0:b1], Pq, rec[b0:b1], edges[q], False, s % 2 == 1)
            w, h = work[t % work.shape[0]], outs[t % outs.shape[0]]
            for b in range(b0, b1):
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
            if stop:
                _keep(h, kept[k, 0], lo, hi, b0, b1)
            _atomic_add(bar, 1)
        k += stop
    return 0


@jit
def gru_scan_back_part(
    h0, work, outs, douts, dh, drec, scale, reverse, panels, offs, edges, span, me, parts, bar, claims
):
    """gru_scan_back split by hidden units: part q's panels its units' columns of W_hh,
    packed; drec (2, B, 3H) shared by the parts, step s in half s % 2 (a part may write step
    s's half while another still reads step s + 1's); edges (parts, TILE, PANEL) scratch (the
    cells write their gradients over the gates). 0, or -1 if the parts lost each other."""
    T, H = work.shape[0], dh.shape[1]
    b0, b1 = span
    for k in range(T + 1):
        for j in range(parts):
            q = _take(bar, claims, me, parts, k, j)
            if q == -2:
                return -1
            if q < 0:
                continue
            lo, hi = _share(H, q, parts)
            dhc = dh[b0:b1, lo:hi]
            if k > 0:  # step T - k's product for the part's units: dh = g z + drec W_hh
                t = _at(T - k, T, reverse)
                _mm_panels(drec[(T - k) % 2][b0:b1], panels[offs[q] : offs[q + 1]], dhc, edges[q], True, k % 2 == 1)
                _scale_rows(dhc, scale, t, b0)
            if k < T:  # step T - 1 - k's cells
                s = T - 1 - k
                t = _at(s, T, reverse)
                hp = _before(h0, outs, s, T, reverse)
                w, g, d = work[t], douts[t], drec[s % 2]
                for b in range(b0, b1):
                    wb, db = w[b], d[b]
                    _gru_cells_back(
                        wb[lo:hi],
                        wb[H + lo : H + hi],
                        wb[2 * H + lo : 2 * H + hi],
                        wb[3 * H + lo : 3 * H + hi],
                        hp[b, lo:hi],
                        dh[b, lo:hi],
                        g[b, lo:hi],
                        db[lo:hi],
                        db[H + lo : H + hi],
                        db[2 * H + lo : 2 * H + hi],
                    )
            _atomic_add(bar, 1)
    return 0
