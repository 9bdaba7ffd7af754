"""Whole scans: the time loop of a built-in cell compiled, BLAS called per step.

Per step, the recurrent product goes through NumPy's own BLAS routine cblas_sgemm (blas.py: the
same library, routine and thread setting as NumPy's matmul), then the same row functions as
the step kernels (rows.py), with no Python between steps. Used for an unmasked forward scan
that keeps its tape and for a consumed backward scan, off the engine (the engine runs the split
scans of split.py). Step order s = 0 .. T-1 visits t = s (forward scan) or T-1-s (reversed
scan); the step before t is t-1 (or t+1); the first step reads the initial state. src (N, G)
and idx (T, B) give step t's input projection rows src[idx[t, b]]: the (V, G) token table and
the tokens, or a dense (T*B, G) projection and arange(T*B). All arrays C-contiguous float32.

_RING: a forward scan's T is idx's; its work, cs and outs may have fewer rows, each a ring that
holds step t in row t % rows (at least 2 rows for outs and cs, whose previous row step t reads;
the split scans' barrier keeps a row from being overwritten while another part reads it): a
scan run only for its final state (memory-budgeted BPTT's advances) keeps two steps, not T.

_STOPS: a forward scan also copies its state after the scan steps in `stops` (int64, rising)
out: after stops[k], field f of the state (LSTM: h, c; Elman, GRU: h) into the (B, H) float32
C-contiguous array whose address is kept[k, f] (an (n, 2) int64 array; (0, 2) for none), each
an array of its own: a memory-budgeted advance past several store points is one scan.

AVAILABLE is False where NumPy's OpenBLAS is not found or no disk cache can be written
(compiling these at every start would cost about 12 s); the Python time loops then run.
"""

from __future__ import annotations

import numpy as np

from . import blas
from .jit import CACHE, inline, jit
from .rows import (
    _ONE,
    _ZERO,
    _elman_row,
    _elman_row_back,
    _gru_row,
    _gru_row_back,
    _lstm_row,
    _lstm_row_back,
)

SGEMM = blas.find_sgemm() if CACHE else None
AVAILABLE = SGEMM is not None

if AVAILABLE:
    from llvmlite import binding as llvm
    from llvmlite import ir
    from numba import carray
    from numba import types as nt
    from numba.extending import intrinsic

    llvm.add_symbol("bptt_cblas_sgemm", SGEMM)
    _I, _P = nt.int64, nt.uintp
    _sgemm = nt.ExternalFunction(
        "bptt_cblas_sgemm",
        nt.void(nt.int32, nt.int32, nt.int32, _I, _I, _I, nt.float32, _P, _I, _P, _I, nt.float32, _P, _I),
    )

    @inline
    def _mm(A, Bm, C, trans_b, beta):
        """C = A @ Bm (or A @ Bm^T) + beta C, row-major with unit inner strides (cblas_sgemm)."""
        _sgemm(
            101,
            111,
            112 if trans_b else 111,
            A.shape[0],
            C.shape[1],
            A.shape[1],
            _ONE,
            A.ctypes.data,
            A.strides[0] // 4,
            Bm.ctypes.data,
            Bm.strides[0] // 4,
            beta,
            C.ctypes.data,
            C.strides[0] // 4,
        )

    @inline
    def _at(s, T, reverse):
        return T - 1 - s if reverse else s

    @inline
    def _before(first, seq, s, T, reverse):
        """The state step s starts from: `first` for s = 0, else seq at the step before (a
        ring of fewer rows than T holds step t in row t % rows)."""
        return first if s == 0 else seq[_at(s - 1, T, reverse) % seq.shape[0]]

    @inline
    def _scale_rows(d, scale, t, b0):
        """d[b] *= scale[t, b0 + b] (the message factors of randomized truncation; none if
        empty), d the batch rows from b0 on."""
        if scale.shape[0] > 0:
            for b in range(d.shape[0]):
                f, r = scale[t, b0 + b], d[b]
                for j in range(r.shape[0]):
                    r[j] *= f

    @intrinsic
    def _f32_at(typingctx, address):
        """The float32 pointer at an address (a C-contiguous float32 array's .ctypes.data)."""

        def codegen(context, builder, sig, args):
            return builder.inttoptr(args[0], ir.PointerType(ir.FloatType()))

        return nt.CPointer(nt.float32)(nt.int64), codegen

    @inline
    def _keep(rows, address, lo, hi, b0, b1):
        """Columns lo:hi of rows b0:b1 of rows (B, H) into the (B, H) C-contiguous float32
        array at address (_STOPS)."""
        out = carray(_f32_at(address), rows.shape)
        for b in range(b0, b1):
            for j in range(lo, hi):
                out[b, j] = rows[b, j]

    @inline
    def _stop(stops, k, s):
        """Whether scan step s is the next stop, stops[k] (_STOPS)."""
        return k < stops.shape[0] and stops[k] == s

    @jit
    def elman_scan(src, idx, W, h0, work, outs, reverse, stops, kept):
        """work[t] <- h_t = tanh(xp_t + h_{t-1} W^T); outs[t] <- h_t (rings: see _RING; stops
        and kept: _STOPS)."""
        T, k = idx.shape[0], 0
        for s in range(T):
            t = _at(s, T, reverse)
            hp = _before(h0, outs, s, T, reverse)
            a = work[t % work.shape[0]]
            _mm(hp, W, a, True, _ZERO)
            for b in range(a.shape[0]):
                _elman_row(src[idx[t, b]], a[b])
            outs[t % outs.shape[0]] = a
            if _stop(stops, k, s):
                _keep(a, kept[k, 0], 0, a.shape[1], 0, a.shape[0])
                k += 1

    @jit
    def elman_scan_back(W, work, douts, dh, scale, reverse):
        """Consumed tape: work[t] <- delta_t; dh: dL/dh_T in, dL/dh_0 out; the message leaving
        step t is multiplied by scale[t] ((T, B), or (0, 0): none). (The weight gradient's
        h_{t-1} are the outputs the forward scan left: cells.py, _prev_pairs.)"""
        T = work.shape[0]
        row = np.empty(dh.shape[1], dh.dtype)
        for s in range(T - 1, -1, -1):
            t = _at(s, T, reverse)
            w, g = work[t], douts[t]
            for b in range(w.shape[0]):
                _elman_row_back(w[b], dh[b], g[b], w[b], row)
            _mm(w, W, dh, False, _ZERO)
            _scale_rows(dh, scale, t, 0)

    @jit
    def lstm_scan(src, idx, W, h0, c0, work, cs, outs, reverse, stops, kept):
        """work[t] <- [i, f, g, o], cs[t] <- c_t, outs[t] <- h_t (rings: see _RING; stops and
        kept: _STOPS)."""
        T, k = idx.shape[0], 0
        for s in range(T):
            t = _at(s, T, reverse)
            hp, cp = _before(h0, outs, s, T, reverse), _before(c0, cs, s, T, reverse)
            a, c, h = work[t % work.shape[0]], cs[t % cs.shape[0]], outs[t % outs.shape[0]]
            _mm(hp, W, a, True, _ZERO)
            for b in range(a.shape[0]):
                _lstm_row(src[idx[t, b]], a[b], cp[b], c[b], h[b])
            if _stop(stops, k, s):
                _keep(h, kept[k, 0], 0, h.shape[1], 0, h.shape[0])
                _keep(c, kept[k, 1], 0, c.shape[1], 0, c.shape[0])
                k += 1

    @jit
    def lstm_scan_back(W, c0, work, cs, douts, dh, dc, scale, reverse):
        """Consumed tape: work[t] <- dL/d(pre-activations); dh, dc: dL/d(h_T, c_T) in,
        dL/d(h_0, c_0) out."""
        T = work.shape[0]
        for s in range(T - 1, -1, -1):
            t = _at(s, T, reverse)
            cp = _before(c0, cs, s, T, reverse)
            a, c, g = work[t], cs[t], douts[t]
            for b in range(a.shape[0]):
                _lstm_row_back(a[b], cp[b], c[b], dh[b], g[b], dc[b])
            _mm(a, W, dh, False, _ZERO)
            _scale_rows(dh, scale, t, 0)
            _scale_rows(dc, scale, t, 0)

    @jit
    def gru_scan(src, idx, W, b_hn, h0, work, outs, rec, reverse, stops, kept):
        """work[t] <- [r, z, n, hn], outs[t] <- h_t; rec (B, 3H) scratch (rings: see _RING;
        stops and kept: _STOPS)."""
        T, k = idx.shape[0], 0
        for s in range(T):
            t = _at(s, T, reverse)
            hp = _before(h0, outs, s, T, reverse)
            w, h = work[t % work.shape[0]], outs[t % outs.shape[0]]
            _mm(hp, W, rec, True, _ZERO)
            for b in range(w.shape[0]):
                _gru_row(src[idx[t, b]], rec[b], b_hn, w[b], hp[b], h[b])
            if _stop(stops, k, s):
                _keep(h, kept[k, 0], 0, h.shape[1], 0, h.shape[0])
                k += 1

    @jit
    def gru_scan_back(W, h0, work, outs, douts, dh, drec, scale, reverse):
        """Consumed tape: work[t] <- [da_r, da_z, da_n, da_n r]; dh: dL/dh_T in, dL/dh_0 out;
        drec (B, 3H) scratch."""
        T = work.shape[0]
        for s in range(T - 1, -1, -1):
            t = _at(s, T, reverse)
            hp = _before(h0, outs, s, T, reverse)
            w, g = work[t], douts[t]
            for b in range(w.shape[0]):  # dh <- (dh + dout) z, the direct path, in place
                _gru_row_back(w[b], hp[b], dh[b], g[b], drec[b])
            _mm(drec, W, dh, False, _ONE)
            _scale_rows(dh, scale, t, 0)

        # ---- scans split between threads by hidden units (bptt._threads) --------------------------
        # Part p of P takes the hidden units lo:hi (`_share`): its rows of W_hh, its gate columns,
        # its slices of c and h. The threads meet once per step at a counter in shared memory:
        # forward, step s's product reads all of h_{t-1}, so each part waits until all P parts have
        # finished s steps; backward, step s's product dh[:, lo:hi] = da_t W_hh[:, lo:hi] reads all
        # of da_t, so each part waits until all P parts have written it. Nothing else is shared:
        # every other write goes to the part's own units, and step s never writes what step s+-1
