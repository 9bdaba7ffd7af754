"""Compiled float32 kernels for the built-in cells (Numba), behind the cell interface.

Why. At the sizes recurrent nets are trained at on a CPU the matrix products of a time step are
small, and NumPy spends the rest of the step in a dozen elementwise calls (about 1 us of call
overhead each, plus a pass over memory each), and the Python time loop around them costs as
much again (measured: a 128-unit Elman step took 46 us in the Python loop, of which 17 us the
matrix product). Two levels of kernels:

- Step kernels: the whole elementwise part of one step and direction in one pass (`lstm_fwd`,
  ...), called from the cells' Python `step` / `step_back`.
- Whole scans: the time loop itself compiled (`lstm_scan`, `lstm_scan_back`, ...): per step, the
  recurrent product through NumPy's own BLAS routine cblas_sgemm (bptt._blas: the same library,
  routine and thread setting as NumPy's matmul), then the same row functions as the step kernels.
  The cells use them for a forward scan that keeps its tape and for full BPTT's consumed backward
  scan, with no mask (`Cell.fused_forward`, `Cell.fused_backward`); masks, TBPTT's step-by-step
  backward and user cells run the Python loop.
- Split scans: the same scans cut by hidden units into parts that run on bptt._threads' engine
  threads (`lstm_scan_part`, ...), meeting once per step at a counter in shared memory (atomics
  as Numba intrinsics), each part's recurrent product in bptt's own kernel on W_hh packed once
  per scan (`pack_panels`, `_mm_panels`: 4 x 16 tiles of 8-float fused multiply-adds written
  in LLVM IR). Tests check them equal to the whole scans for 1-3 parts.
- The loss: the softmax cross-entropy of all T * B rows and its gradient in one pass per row
  (`softmax_xent`), where NumPy makes seven passes over the logits.

Their tanh is a 13/6-degree rational interpolant (the one Eigen and XLA use for float32:
x P(x^2) / Q(x^2), clamped to [-9, 9]), accurate to a few float32 ulp (|error| <= 4e-7
everywhere, tested) and vectorised by the compiler; the sigmoid is (1 + tanh(a/2)) / 2; the
softmax's exp (arguments <= 0) is Cephes' polynomial with the power of two written into the
exponent bits (relative error <= 3e-7, tested). They are compiled with LLVM's fast-math flags
except no-NaN and no-inf, so that NaN and inf go through them as through NumPy (a clamp of NaN
stays NaN; tests put NaN and inf into each cell on each path).

What stays NumPy. float64 never comes here: it runs the NumPy reference path of each cell
(np.tanh, exact to the last bit the tests need). Every kernel has that reference beside it in
the cell and the tests check both agree to float32 rounding, and the whole scans agree with the
Python loops over the step kernels. `BPTT_KERNELS=numpy` in the environment (or
`use_kernels(False)`) switches all kernels off, `BPTT_KERNELS=steps` keeps the step kernels and
the Python time loops; without Numba, or where NumPy links a BLAS other than its ILP64 OpenBLAS,
the corresponding kernels are off and nothing else changes.

Loading. The kernels are compiled once to Numba's on-disk cache (about 30 s, on the first import
after installing) and loaded when bptt is imported (about 0.5 s and 65 MiB resident, most of it
LLVM), so a training step never waits for a compiler and its memory is the step's own. Where the
split scans exist (bptt._threads' engine runs full BPTT's steps on them) the unsplit whole scans
serve only steps off the engine (TBPTT's segments, masks aside): they compile at their first use
instead (about 3 s, once). Where no cache can be written the step kernels compile at every import
(about 5 s) and the scans stay off.

Aliasing. Each kernel reads all inputs of an element before writing its outputs and no element
reads another's outputs, so an output may be the same array as an input (the backward kernels
overwrite the cached gates with their gradients when the tape is consumed).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

from . import _blas

try:  # an optional accelerator: the NumPy path is complete without it
    import numba as _nb
except Exception:  # pragma: no cover - exercised where numba is missing
    _nb = None

AVAILABLE = _nb is not None
SCANS = False  # the whole-scan kernels exist: Numba, NumPy's OpenBLAS found, a disk cache (set below)
SPLIT = False  # and their versions split between threads (bptt._threads)
_MODE = os.environ.get("BPTT_KERNELS", "").lower()
_enabled = AVAILABLE and _MODE not in ("numpy", "0", "off")
_scans = _MODE != "steps"  # BPTT_KERNELS=steps: per-step kernels, time loops in Python


def enabled() -> bool:
    return _enabled


@contextmanager
def use_kernels(on: bool, scans: bool | None = None) -> Iterator[None]:
    """Temporarily switch the compiled float32 kernels on or off, and (scans) the whole-scan
    kernels within them (tests compare the paths)."""
    global _enabled, _scans
    old = _enabled, _scans
    _enabled = bool(on) and AVAILABLE
    _scans = old[1] if scans is None else bool(scans)
    try:
        yield
    finally:
        _enabled, _scans = old


def active(dtype: Any) -> bool:
    """Whether a step on arrays of `dtype` uses the compiled kernels."""
    return _enabled and dtype == np.float32


def scans_active(dtype: Any) -> bool:
    """Whether a whole forward or consumed backward scan on `dtype` runs as one compiled loop."""
    return SCANS and _scans and active(dtype)


# Numba's cache lives beside this file (or in NUMBA_CACHE_DIR); where neither is writable the
# kernels are compiled at every import instead (about 5 s) rather than failing.
_CACHE = os.access(os.path.dirname(os.path.abspath(__file__)), os.W_OK) or bool(os.environ.get("NUMBA_CACHE_DIR"))

if AVAILABLE:
    # LLVM's fast-math flags except 'nnan' and 'ninf': with those the compiler may assume no NaN
    # or inf exists and turn a clamp into a min/max that returns the other operand, so a NaN
    # weight gave a finite loss. Without them a NaN in gives NaN out, as in NumPy (tested).
    _FAST = {"contract", "arcp", "nsz", "afn", "reassoc"}
    _jit = _nb.njit(fastmath=_FAST, error_model="numpy", cache=_CACHE, nogil=True)
    _inline = _nb.njit(fastmath=_FAST, error_model="numpy", cache=_CACHE, inline="always")
    f4 = np.float32
    # tanh(x) ~ x P(x^2) / Q(x^2) on [-9, 9] (beyond it tanh is +-1 in float32)
    _A1, _A3, _A5, _A7 = f4(4.89352455891786e-03), f4(6.37261928875436e-04), f4(1.48572235717979e-05), f4(5.12229709037114e-08)
    _A9, _A11, _A13 = f4(-8.60467152213735e-11), f4(2.00018790482477e-13), f4(-2.76076847742355e-16)
    _B0, _B2, _B4, _B6 = f4(4.89352518554385e-03), f4(2.26843463243900e-03), f4(1.18534705686654e-04), f4(1.19825839466702e-06)
    _NINE, _HALF, _ONE, _ZERO = f4(9.0), f4(0.5), f4(1.0), f4(0.0)

    @_inline
    def tanh32(x):
        x = _NINE if x > _NINE else x
        x = -_NINE if x < -_NINE else x
        x2 = x * x
        p = x2 * _A13 + _A11
        p = x2 * p + _A9
        p = x2 * p + _A7
        p = x2 * p + _A5
        p = x2 * p + _A3
        p = x2 * p + _A1
        q = x2 * _B6 + _B4
        q = x2 * q + _B2
        q = x2 * q + _B0
        return x * p / q

    @_inline
    def sigm32(x):
        return _HALF + _HALF * tanh32(_HALF * x)

    # exp(x) for x <= 0 (softmax after subtracting the row maximum): x = n ln 2 + r with
    # n = round(x / ln 2) (by truncation, which rounds x / ln 2 - 1/2 to nearest for x <= 0) and
    # |r| <= ln(2) / 2, exp(r) by Cephes' degree-7 polynomial, 2^n put into the exponent bits.
    # Relative error 1.5e-7 at most on [-87, 0] (the tests allow 3e-7); below -87 (exp < 1.7e-38,
    # nothing next to the row maximum's 1) it returns exp(-87). Written so that the compiler
    # vectorises it (no floor, no call).
    _LOG2E, _LN2_HI, _LN2_LO = f4(1.4426950408889634), f4(0.693145751953125), f4(1.428606765330187e-06)
    _E2, _E3, _E4, _E5, _E6, _E7 = f4(5.0000001201e-1), f4(1.6666665459e-1), f4(4.1665795894e-2), f4(8.3334519073e-3), f4(1.3981999507e-3), f4(1.9875691500e-4)
    _EXP_MIN = f4(-87.0)

    @_inline
    def exp32(x):
        x = _EXP_MIN if x < _EXP_MIN else x
        x = _ZERO if x > _ZERO else x
        n = np.int32(x * _LOG2E - _HALF)
        fn = f4(n)
        r = x - fn * _LN2_HI - fn * _LN2_LO
        p = r * _E7 + _E6
        p = r * p + _E5
        p = r * p + _E4
        p = r * p + _E3
        p = r * p + _E2
        p = p * r * r + r + _ONE
        return p * np.int32((n + np.int32(127)) << np.int32(23)).view(np.float32)

    @_jit
    def exp_(a, out):
        """out = exp(a) for a <= 0, elementwise over a 1-D view (the tests' handle on exp32)."""
        for k in range(a.shape[0]):
            out[k] = exp32(a[k])

    @_jit
    def softmax_xent(y, t, scale, d):
        """Softmax cross-entropy of the rows of y (N, K) against class ids t (N,): returns the
        sum over rows of l_n = log sum_k exp(y_nk) - y_n,t_n (accumulated in float64) and, if d
        has N rows, writes d = scale * (softmax(y_n) - onehot(t_n)) there. One pass per row."""
        N, K = y.shape
        grad = d.shape[0] == N
        total = 0.0
        e = np.empty(K, y.dtype)
        for n in range(N):
            r = y[n]
            m = r[0]
            for k in range(1, K):
                m = r[k] if r[k] > m else m
            for k in range(K):
                e[k] = exp32(r[k] - m)
            s = _ZERO
            for k in range(K):
                s += e[k]
            total += np.log(np.float64(s)) - np.float64(r[t[n]] - m)
            if grad:
                q, o = scale / s, d[n]
                for k in range(K):
                    o[k] = e[k] * q
                o[t[n]] -= scale
        return total

    @_jit
    def tanh_(a, out):
        """out = tanh(a), elementwise over a 1-D view."""
        for k in range(a.shape[0]):
            out[k] = tanh32(a[k])

    # Loops run over one row b at a time (1-D views); each loop reads and writes either the same
    # index of an array or distinct arrays, so the compiler vectorises it. A row function that
    # may write over its input (a consumed tape) builds the row in a scratch row first. The row
    # functions are shared by the one-step kernels (called from the cells' Python steps) and the
    # whole-scan kernels below.

    @_inline
    def _elman_row(x, a):
        for j in range(a.shape[0]):
            a[j] = tanh32(x[j] + a[j])

    @_inline
    def _elman_row_back(y, g1, g2, d, row):
        H = y.shape[0]
        for j in range(H):
            row[j] = (g1[j] + g2[j]) * (_ONE - y[j] * y[j])
        for j in range(H):
            d[j] = row[j]

    @_inline
    def _lstm_cells(xi, xf, xg, xo, ai, af, ag, ao, wi, wf, wg, wo, cp, cr, hr):
        """The gates of H cells from input rows x* and recurrent rows a* into w* (which may be
        the a*), their new c and h; every argument a length-H slice."""
        H = cr.shape[0]
        for j in range(H):
            wi[j] = sigm32(xi[j] + ai[j])
        for j in range(H):
            wf[j] = sigm32(xf[j] + af[j])
        for j in range(H):
            wg[j] = tanh32(xg[j] + ag[j])
        for j in range(H):
            wo[j] = sigm32(xo[j] + ao[j])
        for j in range(H):
            cr[j] = wf[j] * cp[j] + wi[j] * wg[j]
        for j in range(H):
            hr[j] = wo[j] * tanh32(cr[j])

    @_inline
    def _lstm_row(x, a, cp, cr, hr):
        H = cr.shape[0]
        ai, af, ag, ao = a[:H], a[H : 2 * H], a[2 * H : 3 * H], a[3 * H :]
        _lstm_cells(x[:H], x[H : 2 * H], x[2 * H : 3 * H], x[3 * H :], ai, af, ag, ao, ai, af, ag, ao, cp, cr, hr)

    @_inline
    def _lstm_cells_back(ai, af, ag, ao, cp, cr, g1, g2, gc, ri, rf, rg, ro, dp, dcs):
        """dL/d(pre-activations) of H cells into r* from their gates a*, c_prev, c', dL/dh'
        (g1 + g2) and dL/dc' (gc); dL/dc_prev into dp (which may be gc); dcs (H) scratch."""
        H = cr.shape[0]
        for j in range(H):
            tc = tanh32(cr[j])
            gh = g1[j] + g2[j]
            o = ao[j]
            dcs[j] = gc[j] + gh * o * (_ONE - tc * tc)
            ro[j] = gh * tc * o * (_ONE - o)
        for j in range(H):
            i, f, g, d = ai[j], af[j], ag[j], dcs[j]
            dp[j] = d * f
            ri[j] = d * g * i * (_ONE - i)
            rf[j] = d * cp[j] * f * (_ONE - f)
            rg[j] = d * i * (_ONE - g * g)

    @_inline
    def _lstm_row_back(a, cp, cr, g1, g2, gc, out, dp, row, dcs):
        H = cr.shape[0]
        _lstm_cells_back(a[:H], a[H : 2 * H], a[2 * H : 3 * H], a[3 * H :], cp, cr, g1, g2, gc,
                         row[:H], row[H : 2 * H], row[2 * H : 3 * H], row[3 * H :], dp, dcs)
        for k in range(4 * H):
            out[k] = row[k]

    @_inline
    def _gru_cells(xr, xz, xn, rr, rz, rn, b_hn, wr, wz, wn, whn, hp, hn):
        """H cells: gates r, z, n and hn = W_hn h + b_hn into w*, h' into hn; length-H slices."""
        H = hp.shape[0]
        for j in range(H):
            wr[j] = sigm32(xr[j] + rr[j])
        for j in range(H):
            wz[j] = sigm32(xz[j] + rz[j])
        for j in range(H):
            whn[j] = rn[j] + b_hn[j]
        for j in range(H):
            wn[j] = tanh32(xn[j] + wr[j] * whn[j])
        for j in range(H):
            n = wn[j]
            hn[j] = n + wz[j] * (hp[j] - n)

    @_inline
    def _gru_row(x, rc, b_hn, w, hp, hn):
        H = hp.shape[0]
        _gru_cells(x[:H], x[H : 2 * H], x[2 * H :], rc[:H], rc[H : 2 * H], rc[2 * H :], b_hn,
                   w[:H], w[H : 2 * H], w[2 * H : 3 * H], w[3 * H :], hp, hn)

    @_inline
    def _gru_cells_back(wr, wz, wn, whn, hp, g1, g2, r0, r1, r2, r3, dz_):
        """H cells: [da_r, da_z, da_n, da_n r] into r0..r3 from the cached [r, z, n, hn], h and
        dL/dh' = g1 + g2; the direct path g z into dz_ (which may be g1)."""
        for j in range(hp.shape[0]):
            r, z, n = wr[j], wz[j], wn[j]
            g = g1[j] + g2[j]
            dan = g * (_ONE - z) * (_ONE - n * n)
            r0[j] = dan * whn[j] * r * (_ONE - r)
            r1[j] = g * (hp[j] - n) * z * (_ONE - z)
            r2[j] = dan
            r3[j] = dan * r
            dz_[j] = g * z

    @_inline
    def _gru_row_back(w, hp, g1, g2, out, dr, dz_, row):
        H = hp.shape[0]
        r0, r1, r2, r3 = row[:H], row[H : 2 * H], row[2 * H : 3 * H], row[3 * H :]
        _gru_cells_back(w[:H], w[H : 2 * H], w[2 * H : 3 * H], w[3 * H :], hp, g1, g2, r0, r1, r2, r3, dz_)
        drz, drn = dr[: 2 * H], dr[2 * H :]
        for k in range(2 * H):
            drz[k] = row[k]
        for j in range(H):
            drn[j] = r3[j]
        for k in range(4 * H):
            out[k] = row[k]

    @_jit
    def elman_fwd(xp, act):
        """act (B, H) holds h W_hh^T; becomes h' = tanh(xp + act)."""
        for b in range(act.shape[0]):
            _elman_row(xp[b], act[b])

    @_jit
    def elman_bwd(h, dh, dout, delta):
        """delta = (dh + dout) (1 - h^2); delta may be h (then pass the same array twice)."""
        row = np.empty(h.shape[1], h.dtype)
        for b in range(h.shape[0]):
            _elman_row_back(h[b], dh[b], dout[b], delta[b], row)

    @_jit
    def lstm_fwd(xp, gates, c_prev, c, h):
        """gates (B, 4H) holds h W_hh^T; becomes [i, f, g, o] of xp + it. Writes c' and h'."""
        for b in range(gates.shape[0]):
            _lstm_row(xp[b], gates[b], c_prev[b], c[b], h[b])

    @_jit
    def lstm_bwd(gates, c_prev, c, dh, dout, dc, da, dc_prev):
        """da (B, 4H) = dL/d[pre-activations] (may be `gates`); dc_prev = dL/dc_{t-1} (may be dc)."""
        H = c.shape[1]
        row, dcs = np.empty(4 * H, gates.dtype), np.empty(H, gates.dtype)
        for b in range(gates.shape[0]):
            _lstm_row_back(gates[b], c_prev[b], c[b], dh[b], dout[b], dc[b], da[b], dc_prev[b], row, dcs)

    @_jit
    def gru_fwd(xp, rec, b_hn, h, work, h_new):
        """rec (B, 3H) = h W_hh^T; work (B, 4H) <- [r, z, n, hn]; h_new = n + z (h - n)."""
        for b in range(h.shape[0]):
            _gru_row(xp[b], rec[b], b_hn, work[b], h[b], h_new[b])

    @_jit
    def gru_bwd(work, h, dh, dout, da, drec, dhz):
        """da (B, 4H) <- [da_r, da_z, da_n, da_n r] (may be `work`); drec (B, 3H) <- the gradient
        at h W_hh^T, [da_r, da_z, da_n r]; dhz <- (dh + dout) z (the direct path to h)."""
        row = np.empty(work.shape[1], work.dtype)
        for b in range(h.shape[0]):
            _gru_row_back(work[b], h[b], dh[b], dout[b], da[b], drec[b], dhz[b], row)

    @_jit
    def scatter_add(target, idx, rows):
        """target[idx[n]] += rows[n] for every n; target (V, G) C-contiguous."""
        for n in range(idx.shape[0]):
            t, r = target[idx[n]], rows[n]
            for k in range(r.shape[0]):
                t[k] += r[k]

    # ---- whole scans: the time loop itself compiled, BLAS called per step (bptt._blas) ----------
    # Step order s = 0 .. T-1 visits t = s (forward scan) or T-1-s (reversed scan); the step
    # before t is t-1 (or t+1); the first step reads the initial state. src (N, G) and idx (T, B)
    # give step t's input projection rows src[idx[t, b]]: the (V, G) token table and the tokens,
    # or a dense (T*B, G) projection and arange(T*B). All arrays C-contiguous float32.

    # Where no disk cache can be written they stay off: compiling them at every import would
    # cost about 12 s (the per-step kernels, 5 s, still run).
    _SGEMM = _blas.find_sgemm() if _CACHE else None
    SCANS = _SGEMM is not None
    if SCANS:
        from llvmlite import binding as _llvm
        from numba import types as _t

        _llvm.add_symbol("bptt_cblas_sgemm", _SGEMM)
        _I, _P = _t.int64, _t.uintp
        _sgemm = _t.ExternalFunction(
            "bptt_cblas_sgemm",
            _t.void(_t.int32, _t.int32, _t.int32, _I, _I, _I, _t.float32, _P, _I, _P, _I, _t.float32, _P, _I),
        )

        @_inline
        def _mm(A, Bm, C, trans_b, beta):
            """C = A @ Bm (or A @ Bm^T) + beta C, row-major with unit inner strides (cblas_sgemm)."""
            _sgemm(101, 111, 112 if trans_b else 111, A.shape[0], C.shape[1], A.shape[1], _ONE,
                   A.ctypes.data, A.strides[0] // 4, Bm.ctypes.data, Bm.strides[0] // 4, beta,
                   C.ctypes.data, C.strides[0] // 4)

        @_inline
        def _at(s, T, reverse):
            return T - 1 - s if reverse else s

        @_inline
        def _before(first, seq, s, T, reverse):
            """The state step s starts from: `first` for s = 0, else seq at the step before."""
            return first if s == 0 else seq[_at(s - 1, T, reverse)]

        @_inline
        def _scale_rows(d, scale, t):
            """d[b] *= scale[t, b] (the message factors of randomized truncation; none if empty)."""
            if scale.shape[0] > 0:
                for b in range(d.shape[0]):
                    f, r = scale[t, b], d[b]
                    for j in range(r.shape[0]):
                        r[j] *= f

        @_jit
        def elman_scan(src, idx, W, h0, work, outs, reverse):
            """work[t] <- h_t = tanh(xp_t + h_{t-1} W^T); outs[t] <- h_t."""
            T = work.shape[0]
            for s in range(T):
                t = _at(s, T, reverse)
                hp = _before(h0, outs, s, T, reverse)
                a = work[t]
                _mm(hp, W, a, True, _ZERO)
                for b in range(a.shape[0]):
                    _elman_row(src[idx[t, b]], a[b])
                outs[t] = a

        @_jit
        def elman_scan_back(W, h0, work, douts, dh, h_prev, scale, reverse):
            """Consumed tape: work[t] <- delta_t, h_prev[t] <- h_{t-1}; dh: dL/dh_T in, dL/dh_0 out;
            the message leaving step t is multiplied by scale[t] ((T, B), or (0, 0): none)."""
            T = work.shape[0]
            row = np.empty(dh.shape[1], dh.dtype)
            for s in range(T - 1, -1, -1):
                t = _at(s, T, reverse)
                h_prev[t] = _before(h0, work, s, T, reverse)
                w, g = work[t], douts[t]
                for b in range(w.shape[0]):
                    _elman_row_back(w[b], dh[b], g[b], w[b], row)
                _mm(w, W, dh, False, _ZERO)
                _scale_rows(dh, scale, t)

        @_jit
        def lstm_scan(src, idx, W, h0, c0, work, cs, outs, reverse):
            """work[t] <- [i, f, g, o], cs[t] <- c_t, outs[t] <- h_t."""
            T = work.shape[0]
            for s in range(T):
                t = _at(s, T, reverse)
                hp, cp = _before(h0, outs, s, T, reverse), _before(c0, cs, s, T, reverse)
                a, c, h = work[t], cs[t], outs[t]
                _mm(hp, W, a, True, _ZERO)
                for b in range(a.shape[0]):
                    _lstm_row(src[idx[t, b]], a[b], cp[b], c[b], h[b])

        @_jit
        def lstm_scan_back(W, h0, c0, work, cs, outs, douts, dh, dc, h_prev, scale, reverse):
            """Consumed tape: work[t] <- dL/d(pre-activations), h_prev[t] <- h_{t-1};
            dh, dc: dL/d(h_T, c_T) in, dL/d(h_0, c_0) out."""
            T = work.shape[0]
            H = dh.shape[1]
            row, dcs = np.empty(4 * H, dh.dtype), np.empty(H, dh.dtype)
            for s in range(T - 1, -1, -1):
                t = _at(s, T, reverse)
                hp, cp = _before(h0, outs, s, T, reverse), _before(c0, cs, s, T, reverse)
                h_prev[t] = hp
                a, c, g = work[t], cs[t], douts[t]
                for b in range(a.shape[0]):
                    _lstm_row_back(a[b], cp[b], c[b], dh[b], g[b], dc[b], a[b], dc[b], row, dcs)
                _mm(a, W, dh, False, _ZERO)
                _scale_rows(dh, scale, t)
                _scale_rows(dc, scale, t)

        @_jit
        def gru_scan(src, idx, W, b_hn, h0, work, outs, rec, reverse):
            """work[t] <- [r, z, n, hn], outs[t] <- h_t; rec (B, 3H) scratch."""
            T = work.shape[0]
            for s in range(T):
                t = _at(s, T, reverse)
                hp = _before(h0, outs, s, T, reverse)
                w, h = work[t], outs[t]
                _mm(hp, W, rec, True, _ZERO)
                for b in range(w.shape[0]):
                    _gru_row(src[idx[t, b]], rec[b], b_hn, w[b], hp[b], h[b])

        @_jit
        def gru_scan_back(W, h0, work, outs, douts, dh, drec, h_prev, scale, reverse):
            """Consumed tape: work[t] <- [da_r, da_z, da_n, da_n r], h_prev[t] <- h_{t-1};
            dh: dL/dh_T in, dL/dh_0 out; drec (B, 3H) scratch."""
            T = work.shape[0]
            row = np.empty(work.shape[2], dh.dtype)
            for s in range(T - 1, -1, -1):
                t = _at(s, T, reverse)
                hp = _before(h0, outs, s, T, reverse)
                h_prev[t] = hp
                w, g = work[t], douts[t]
                for b in range(w.shape[0]):  # dh <- (dh + dout) z, the direct path, in place
                    _gru_row_back(w[b], hp[b], dh[b], g[b], w[b], drec[b], dh[b], row)
                _mm(drec, W, dh, False, _ONE)
                _scale_rows(dh, scale, t)

    # ---- scans split between threads by hidden units (bptt._threads) --------------------------
    # Part p of P takes the hidden units lo:hi (`_share`): its rows of W_hh, its gate columns,
    # its slices of c and h. The threads meet once per step at a counter in shared memory:
    # forward, step s's product reads all of h_{t-1}, so each part waits until all P parts have
    # finished s steps; backward, step s's product dh[:, lo:hi] = da_t W_hh[:, lo:hi] reads all
    # of da_t, so each part waits until all P parts have written it. Nothing else is shared:
    # every other write goes to the part's own units, and step s never writes what step s+-1
    # of another part reads (they are different tape rows). Each part calls single-threaded
    # BLAS (the engine sets NumPy's OpenBLAS to one thread meanwhile).
    _YIELD = _blas.find_sched_yield() if SCANS else None
    SPLIT = _YIELD is not None
    if SPLIT:
        import platform

        from llvmlite import ir as _ir
        from numba.core import cgutils as _cg
        from numba.extending import intrinsic as _intrinsic

        _llvm.add_symbol("bptt_sched_yield", _YIELD)
        _sched_yield = _t.ExternalFunction("bptt_sched_yield", _t.int32())
        _X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")

        def _i64_at(builder, address):
            return builder.inttoptr(address, _ir.PointerType(_ir.IntType(64)))

        @_intrinsic
        def _atomic_add(typingctx, address, value):
            """*address += value, atomically (sequentially consistent); returns the old value."""

            def codegen(context, builder, sig, args):
                return builder.atomic_rmw("add", _i64_at(builder, args[0]), args[1], "seq_cst")

            return _t.int64(_t.uintp, _t.int64), codegen

        @_intrinsic
        def _atomic_load(typingctx, address):
            """*address, read atomically (never hoisted out of a spin loop)."""

            def codegen(context, builder, sig, args):
                return builder.load_atomic(_i64_at(builder, args[0]), "seq_cst", 8)

            return _t.int64(_t.uintp), codegen

        @_intrinsic
        def _spin_pause(typingctx):
            """x86's pause (a spin-wait hint to the core); nothing elsewhere."""

            def codegen(context, builder, sig, args):
                if _X86:
                    fn = _cg.get_or_insert_function(builder.module, _ir.FunctionType(_ir.VoidType(), []), "llvm.x86.sse2.pause")
                    builder.call(fn, [])
                return context.get_dummy_value()

            return _t.void(), codegen

        _SPINS = 2000  # pauses before yielding the core (~70 us measured here)

        @_inline
        def _wait(bar, target):
            """Until the counter at bar reaches target: spin, then yield the core (another part
            may share it). bar points at int64 (counter, abort flag, most yields); False if
            another part gave up, or after that many yields (a part never came: ~10 s)."""
            n = 0
            while _atomic_load(bar) < target:
                if _atomic_load(bar + 8) != 0:
                    return False
                n += 1
                if n < _SPINS:
                    _spin_pause()
                elif n < _SPINS + _atomic_load(bar + 16):
                    _sched_yield()
                else:
                    _atomic_add(bar + 8, 1)
                    return False
            return True

        # The recurrent product of a part: (B, K) @ (K, N) with the (K, N) factor packed once per
        # scan into 16-column panels (`pack_panels`), so that no step repacks it (OpenBLAS packs
        # its operands at every call: at B = 32 half its time). The inner kernel is written in
        # LLVM IR with 8-float vectors: a 4 x 16 tile of the result in 8 registers, one pass
        # over K with one fused multiply-add per register and step (measured on one core:
        # (32, 128) @ (128, 256) 30 us = 71 GFLOP/s, OpenBLAS 44 us; (32, 512) @ (512, 1024)
        # 77 vs 58 GFLOP/s).
        _PANEL = 16

        def _tile_kernel(rows, add):
            """An intrinsic: C[r, :16] (+)= sum_k A[r, k] P[k, :16] for r < rows, += if `add`
            (byte addresses, strides in floats)."""
            f32, i64, i32 = _ir.FloatType(), _ir.IntType(64), _ir.IntType(32)
            v8 = _ir.VectorType(f32, 8)

            def codegen(context, builder, sig, args):
                a_at, lda, p_at, K, c_at, ldc = args
                fp, vp = f32.as_pointer(), v8.as_pointer()
                fma = _cg.get_or_insert_function(builder.module, _ir.FunctionType(v8, [v8, v8, v8]), "llvm.fmuladd.v8f32")
                A, P, C = (builder.inttoptr(x, fp) for x in (a_at, p_at, c_at))
                zero, undef = _ir.Constant(v8, None), _ir.Constant(v8, _ir.Undefined)
                splat = _ir.Constant(_ir.VectorType(i32, 8), [0] * 8)
                rows_at = [builder.gep(C, [builder.mul(_ir.Constant(i64, r), ldc)]) for r in range(rows)]
                at = [builder.bitcast(builder.gep(rows_at[r], [_ir.Constant(i64, 8 * h)]), vp) for r in range(rows) for h in (0, 1)]
                first = [builder.load(a, align=4) for a in at] if add else [zero] * (2 * rows)
                start = builder.block
                loop, done = builder.function.append_basic_block("tile.k"), builder.function.append_basic_block("tile.done")
                builder.cbranch(builder.icmp_signed(">", K, _ir.Constant(i64, 0)), loop, done)
                builder.position_at_end(loop)
                k = builder.phi(i64)
                acc = [builder.phi(v8) for _ in range(2 * rows)]
                pk = builder.gep(P, [builder.mul(k, _ir.Constant(i64, _PANEL))])
                b = [builder.load(builder.bitcast(builder.gep(pk, [_ir.Constant(i64, 8 * h)]), vp), align=4) for h in (0, 1)]
                new = []
                for r in range(rows):
                    a = builder.load(builder.gep(A, [builder.add(builder.mul(_ir.Constant(i64, r), lda), k)]), align=4)
                    a = builder.shuffle_vector(builder.insert_element(undef, a, _ir.Constant(i32, 0)), undef, splat)
                    new += [builder.call(fma, [a, b[h], acc[2 * r + h]]) for h in (0, 1)]
                k1 = builder.add(k, _ir.Constant(i64, 1))
                end = builder.block
                k.add_incoming(_ir.Constant(i64, 0), start)
                k.add_incoming(k1, end)
                for phi, v, v0 in zip(acc, new, first):
                    phi.add_incoming(v0, start)
                    phi.add_incoming(v, end)
                builder.cbranch(builder.icmp_signed("<", k1, K), loop, done)
                builder.position_at_end(done)
                out = []
                for v, v0 in zip(new, first):
                    phi = builder.phi(v8)
                    phi.add_incoming(v0, start)
                    phi.add_incoming(v, end)
                    out.append(phi)
                for v, a in zip(out, at):
                    builder.store(v, a, align=4)
                return context.get_dummy_value()

            def typer(typingctx, a_at, lda, p_at, K, c_at, ldc):
                return _t.void(_t.uintp, _t.int64, _t.uintp, _t.int64, _t.uintp, _t.int64), codegen

            return _intrinsic(typer)

        _tile4, _tile1, _tile4_add, _tile1_add = (_tile_kernel(r, a) for a in (False, True) for r in (4, 1))

        @_jit
        def pack_panels(B, out):
            """out[j, k, c] = B[k, 16 j + c] (zero beyond B's N columns): the (K, N) factor of a
            product as ceil(N / 16) panels (ceil(N / 16), K, 16); B may be any strided view."""
            K, N = B.shape
            for j in range(out.shape[0]):
                for k in range(K):
                    for c in range(_PANEL):
                        n = j * _PANEL + c
                        out[j, k, c] = B[k, n] if n < N else _ZERO

        @_inline
        def _mm_panels(A, P, C, edge, add):
            """C = A @ B (C += A @ B if add) for B packed by pack_panels; A and C rows with unit
            inner stride; edge (4, 16) scratch for the last, partial panel."""
            M, K = A.shape
            N = C.shape[1]
            sa, sc = A.strides[0], C.strides[0]
            for j in range(P.shape[0]):
                p = P.ctypes.data + j * P.strides[0]
                c0 = j * _PANEL
                w = min(_PANEL, N - c0)
                for i in range(0, M, 4):
                    r = min(4, M - i)
                    if w == _PANEL:
                        at, ld = C.ctypes.data + i * sc + c0 * 4, sc // 4
                    else:
                        at, ld = edge.ctypes.data, _PANEL
                        if add:
                            for q in range(r):
                                for c in range(w):
                                    edge[q, c] = C[i + q, c0 + c]
                    a = A.ctypes.data + i * sa
                    if r == 4 and add:
                        _tile4_add(a, sa // 4, p, K, at, ld)
                    elif r == 4:
                        _tile4(a, sa // 4, p, K, at, ld)
                    else:
                        for q in range(r):
                            if add:
                                _tile1_add(a + q * sa, sa // 4, p, K, at + q * ld * 4, ld)
                            else:
                                _tile1(a + q * sa, sa // 4, p, K, at + q * ld * 4, ld)
                    if w < _PANEL:
                        for q in range(r):
                            for c in range(w):
                                C[i + q, c0 + c] = edge[q, c]

        @_jit
        def mm_panels(A, P, C, edge, add):
            """C (+)= A @ B, B packed by pack_panels (the scans' inner product, for tests)."""
            _mm_panels(A, P, C, edge, add)

        @_jit
        def spin_until(at, count, spins):
            """Spin (pausing) until the int64 at `at` exceeds count, at most `spins` times: an
            engine thread between jobs stays awake for a while (waking a sleeping one costs
            ~0.1 ms on a virtual machine). True if it did."""
            for _ in range(spins):
                if _atomic_load(at) > count:
                    return True
                _spin_pause()
            return False

        @_inline
        def _copy(a, b):
            for j in range(a.shape[0]):
                b[j] = a[j]

        @_inline
        def _copy_part(a, b, lo, hi):
            """b[:, lo:hi] = a[:, lo:hi], row by row."""
            for r in range(a.shape[0]):
                _copy(a[r, lo:hi], b[r, lo:hi])

        @_inline
        def _share(H, part, parts):
            return part * H // parts, (part + 1) * H // parts

        @_jit
        def lstm_scan_part(src, idx, h0, c0, work, cs, outs, reverse, part, parts, P, a, edge, bar):
            """Part `part` of `parts` of lstm_scan: P the transpose of its units' gate rows of
            W_hh ((4n, H), [i, f, g, o]), packed (pack_panels); a (B, 4n) and edge (4, 16)
            scratch; bar the address of the team's barrier (_wait). Returns 0, or -1 if the
            parts lost each other."""
            T, H = work.shape[0], cs.shape[2]
            lo, hi = _share(H, part, parts)
            n = hi - lo
            for s in range(T):
                if s > 0 and not _wait(bar, parts * s):
                    return -1
                t = _at(s, T, reverse)
                hp, cp = _before(h0, outs, s, T, reverse), _before(c0, cs, s, T, reverse)
                _mm_panels(hp, P, a, edge, False)
                w, c, h = work[t], cs[t], outs[t]
                for b in range(a.shape[0]):
                    x, ar, wr = src[idx[t, b]], a[b], w[b]
                    _lstm_cells(x[lo:hi], x[H + lo : H + hi], x[2 * H + lo : 2 * H + hi], x[3 * H + lo : 3 * H + hi],
                                ar[:n], ar[n : 2 * n], ar[2 * n : 3 * n], ar[3 * n :],
                                wr[lo:hi], wr[H + lo : H + hi], wr[2 * H + lo : 2 * H + hi], wr[3 * H + lo : 3 * H + hi],
                                cp[b, lo:hi], c[b, lo:hi], h[b, lo:hi])
                _atomic_add(bar, 1)
            return 0

        @_jit
        def lstm_scan_back_part(h0, c0, work, cs, outs, douts, dh, dc, h_prev, scale, reverse, part, parts, P, row, edge, bar):
            """Part `part` of `parts` of lstm_scan_back (same arguments but W_hh): P its units'
            columns of W_hh ((4H, n)), packed; row (5n) and edge (4, 16) scratch. Returns 0, or
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
                    _lstm_cells_back(ai, af, ag, ao, cp[b, lo:hi], c[b, lo:hi], dh[b, lo:hi], g[b, lo:hi], dc[b, lo:hi],
                                     row[:n], row[n : 2 * n], row[2 * n : 3 * n], row[3 * n : 4 * n], dc[b, lo:hi], row[4 * n :])
                    for j in range(n):
                        ai[j], af[j], ag[j], ao[j] = row[j], row[n + j], row[2 * n + j], row[3 * n + j]
                _atomic_add(bar, 1)
                if not _wait(bar, parts * (T - s)):
                    return -1
                _mm_panels(a, P, dhc, edge, False)
                _scale_rows(dhc, scale, t)
                _scale_rows(dcc, scale, t)
            return 0

        @_jit
        def elman_scan_part(src, idx, h0, work, outs, reverse, part, parts, P, edge, bar):
            """Part `part` of `parts` of elman_scan: P its units' rows of W_hh, transposed and
            packed; edge (4, 16) scratch; bar the team's barrier (_wait). 0, or -1 if lost."""
            T, H = work.shape[0], outs.shape[2]
            lo, hi = _share(H, part, parts)
            for s in range(T):
                if s > 0 and not _wait(bar, parts * s):
                    return -1
                t = _at(s, T, reverse)
                w, o = work[t], outs[t]
                _mm_panels(_before(h0, outs, s, T, reverse), P, w[:, lo:hi], edge, False)
                for b in range(w.shape[0]):
                    a = w[b, lo:hi]  # a row's slice: contiguous, which lets the loops vectorise
                    _elman_row(src[idx[t, b]][lo:hi], a)
                    _copy(a, o[b, lo:hi])
                _atomic_add(bar, 1)
            return 0

        @_jit
        def elman_scan_back_part(h0, work, douts, dh, h_prev, scale, reverse, part, parts, P, row, edge, bar):
            """Part `part` of `parts` of elman_scan_back (W_hh's columns for its units packed in
            P); row (n) and edge (4, 16) scratch. 0, or -1 if the parts lost each other."""
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

        @_jit
        def gru_scan_part(src, idx, b_hn, h0, work, outs, reverse, part, parts, P, rec, edge, bar):
            """Part `part` of `parts` of gru_scan: P its units' [r, z, n] rows of W_hh,
            transposed and packed; rec (B, 3n) and edge (4, 16) scratch. 0, or -1 if lost."""
            T, H = work.shape[0], outs.shape[2]
            lo, hi = _share(H, part, parts)
            n = hi - lo
            for s in range(T):
                if s > 0 and not _wait(bar, parts * s):
                    return -1
                t = _at(s, T, reverse)
                hp = _before(h0, outs, s, T, reverse)
                _mm_panels(hp, P, rec, edge, False)
                w, h = work[t], outs[t]
                for b in range(w.shape[0]):
                    x, rc, wb = src[idx[t, b]], rec[b], w[b]
                    _gru_cells(x[lo:hi], x[H + lo : H + hi], x[2 * H + lo : 2 * H + hi], rc[:n], rc[n : 2 * n], rc[2 * n :],
                               b_hn[lo:hi], wb[lo:hi], wb[H + lo : H + hi], wb[2 * H + lo : 2 * H + hi],
                               wb[3 * H + lo : 3 * H + hi], hp[b, lo:hi], h[b, lo:hi])
                _atomic_add(bar, 1)
            return 0

        @_jit
        def gru_scan_back_part(h0, work, outs, douts, dh, drec, h_prev, scale, reverse, part, parts, P, row, edge, bar):
            """Part `part` of `parts` of gru_scan_back: P its units' columns of W_hh packed;
            drec (2, B, 3H) shared by the parts, alternate steps using alternate halves (the
            step after may write one while a part still reads the other); row (4n) and edge
            (4, 16) scratch. 0, or -1 if the parts lost each other."""
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

    def panels(b: np.ndarray) -> np.ndarray:
        """The (K, N) float32 factor b of a product packed for the split scans (pack_panels)."""
        K, N = b.shape
        out = np.empty((-(-N // 16), K, 16), np.float32)
        pack_panels(b, out)
        return out

    def _warm() -> None:
        """Compile (first time) or load (from the cache) the C-contiguous float32 versions."""
        f, i8 = np.float32, np.int64
        g, s, g3 = np.zeros((1, 4), f), np.zeros((1, 1), f), np.zeros((1, 3), f)
        tanh_(np.zeros(1, f), np.zeros(1, f))
        elman_fwd(s, s.copy())
        elman_bwd(s, s, s, s.copy())
        lstm_fwd(g, g.copy(), s, s.copy(), s.copy())
        lstm_bwd(g, s, s, s, s, s, g.copy(), s.copy())
        gru_fwd(g3, g3.copy(), np.zeros(1, f), s, g.copy(), s.copy())
        gru_bwd(g, s, s, s, g.copy(), g3.copy(), s.copy())
        exp_(np.zeros(1, f), np.zeros(1, f))
        softmax_xent(g, np.zeros(1, i8), f(1.0), g.copy())
        scatter_add(np.zeros((1, 4), f), np.zeros(1, i8), g)
        scatter_add(np.zeros((1, 4)), np.zeros(1, i8), np.zeros((1, 4)))
        scatter_add(np.zeros((1, 4), f), np.zeros(1, i8), np.zeros((1, 5), f)[:, :4])  # GRU's strided dxp
        scatter_add(np.zeros((1, 4)), np.zeros(1, i8), np.zeros((1, 5))[:, :4])
        ix, s3, g3_, g4_ = np.zeros((1, 1), i8), np.zeros((1, 1, 1), f), np.zeros((1, 1, 3), f), np.zeros((1, 1, 4), f)
        if SCANS and not SPLIT:  # with split scans, the unsplit ones serve only steps off the engine
            elman_scan(s, ix, s, s, s3.copy(), s3.copy(), False)
            elman_scan_back(s, s, s3.copy(), s3, s.copy(), s3.copy(), s, False)
            lstm_scan(g, ix, np.zeros((4, 1), f), s, s, g4_.copy(), s3.copy(), s3.copy(), False)
            lstm_scan_back(np.zeros((4, 1), f), s, s, g4_.copy(), s3, s3, s3, s.copy(), s.copy(), s3.copy(), s, False)
            gru_scan(g3, ix, np.zeros((3, 1), f), np.zeros(1, f), s, g4_.copy(), s3.copy(), g3.copy(), False)
            gru_scan_back(np.zeros((3, 1), f), s, g4_.copy(), s3, s3, s.copy(), g3.copy(), s3.copy(), s, False)
        if SPLIT:  # one part of one: no waiting
            bar = np.zeros(3, i8)
            P, e = np.zeros((1, 1, 16), f), np.zeros((4, 16), f)
            for view in (np.zeros((1, 4), f), np.zeros((4, 1), f).T, np.zeros((1, 5), f)[:, :4]):  # C, F, strided
                pack_panels(view, P)
            mm_panels(s, P, g.copy(), e, False)
            spin_until(bar.ctypes.data, -1, 1)
            lstm_scan_part(g, ix, s, s, g4_.copy(), s3.copy(), s3.copy(), False, 0, 1, P, g.copy(), e, bar.ctypes.data)
            lstm_scan_back_part(s, s, g4_.copy(), s3, s3, s3, s.copy(), s.copy(), s3.copy(), s, False, 0, 1, P, np.zeros(5, f), e,
                                bar.ctypes.data)
            elman_scan_part(s, ix, s, s3.copy(), s3.copy(), False, 0, 1, P, e, bar.ctypes.data)
            elman_scan_back_part(s, s3.copy(), s3, s.copy(), s3.copy(), s, False, 0, 1, P, np.zeros(1, f), e, bar.ctypes.data)
            gru_scan_part(g3, ix, np.zeros(1, f), s, g4_.copy(), s3.copy(), False, 0, 1, P, g3.copy(), e, bar.ctypes.data)
            gru_scan_back_part(s, g4_.copy(), s3, s3, s.copy(), np.zeros((2, 1, 3), f), s3.copy(), s, False, 0, 1, P, np.zeros(4, f),
                               e, bar.ctypes.data)

    if _enabled:
        try:
            _warm()
        except Exception as e:  # pragma: no cover - a broken compiler must not break the library
            import warnings

            warnings.warn(f"bptt: compiled kernels unavailable ({type(e).__name__}: {e}); using NumPy", RuntimeWarning)
            AVAILABLE = _enabled = SCANS = SPLIT = False
