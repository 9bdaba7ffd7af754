"""Elementwise float32 kernels: the rows of one time step of the built-in cells, fused.

Each kernel does the whole elementwise part of one step and direction in one pass over a batch
row (`lstm_fwd`, `lstm_bwd`, ...), where NumPy makes a dozen calls and passes over memory. The
row functions (`_lstm_cells`, ...) are shared with the whole and split scans (scans.py,
split.py). Their tanh is a 13/6-degree rational interpolant (the one Eigen and XLA use for
float32: x P(x^2) / Q(x^2), clamped to [-9, 9]), accurate to a few float32 ulp (|error| <= 4e-7
everywhere, tested) and vectorised by the compiler; the sigmoid is (1 + tanh(a/2)) / 2; the
softmax's exp (arguments <= 0) is Cephes' polynomial with the power of two written into the
exponent bits (relative error <= 3e-7, tested).

Aliasing. Each kernel reads all inputs of an element before writing its outputs and no element
reads another's outputs, so an output may be the same array as an input (the consumed-tape
backward overwrites the cached gates with their gradients).

The NumPy code of each cell (bptt.cells) is the reference these are tested against.
"""

from __future__ import annotations

import numpy as np

from .jit import exact, inline, jit

f4 = np.float32
# tanh(x) ~ x P(x^2) / Q(x^2) on [-9, 9] (beyond it tanh is +-1 in float32)
_A1, _A3, _A5, _A7 = (
    f4(4.89352455891786e-03),
    f4(6.37261928875436e-04),
    f4(1.48572235717979e-05),
    f4(5.12229709037114e-08),
)
_A9, _A11, _A13 = f4(-8.60467152213735e-11), f4(2.00018790482477e-13), f4(-2.76076847742355e-16)
_B0, _B2, _B4, _B6 = (
    f4(4.89352518554385e-03),
    f4(2.26843463243900e-03),
    f4(1.18534705686654e-04),
    f4(1.19825839466702e-06),
)
_NINE, _HALF, _ONE, _ZERO = f4(9.0), f4(0.5), f4(1.0), f4(0.0)


@inline
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


@inline
def sigm32(x):
    return _HALF + _HALF * tanh32(_HALF * x)


# exp(x) for x <= 0 (softmax after subtracting the row maximum): x = n ln 2 + r with
# n = round(x / ln 2) (by truncation, which rounds x / ln 2 - 1/2 to nearest for x <= 0) and
# |r| <= ln(2) / 2, exp(r) by Cephes' degree-7 polynomial, 2^n put into the exponent bits.
# Relative error 1.5e-7 at most on [-87, 0] (the tests allow 3e-7); below -87 (exp < 1.7e-38,
# nothing next to the row maximum's 1) it returns exp(-87). Written so that the compiler
# vectorises it (no floor, no call).
_LOG2E, _LN2_HI, _LN2_LO = f4(1.4426950408889634), f4(0.693145751953125), f4(1.428606765330187e-06)
_E2, _E3, _E4, _E5, _E6, _E7 = (
    f4(5.0000001201e-1),
    f4(1.6666665459e-1),
    f4(4.1665795894e-2),
    f4(8.3334519073e-3),
    f4(1.3981999507e-3),
    f4(1.9875691500e-4),
)
_EXP_MIN = f4(-87.0)


@inline
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


@jit
def exp_(a, out):
    """out = exp(a) for a <= 0, elementwise over a 1-D view (the tests' handle on exp32)."""
    for k in range(a.shape[0]):
        out[k] = exp32(a[k])


_MAXW = 16  # the running maxima of softmax_xent's row maximum


@jit
def softmax_xent(y, t, scale, d):
    """Softmax cross-entropy of the rows of y (N, K) against class ids t (N,): returns the
    sum over rows of l_n = log sum_k exp(y_nk) - y_n,t_n (accumulated in float64) and, if d
    has N rows, writes d = scale * (softmax(y_n) - onehot(t_n)) there. One pass per row."""
    N, K = y.shape
    grad = d.shape[0] == N
    total = 0.0
    e, mv = np.empty(K, y.dtype), np.empty(_MAXW, y.dtype)
    full = K - K % _MAXW
    for n in range(N):
        r = y[n]
        # the row's maximum by _MAXW running maxima, which the compiler vectorises, folded in
        # halves (a running `m = r[k] if r[k] > m else m` is a chain of dependent selects that it
        # cannot vectorise without assuming no NaN: (3200, 65) rows 450 -> 235 us). The maximum
        # is exact, so the order does not change it; a NaN anywhere makes the exp sum NaN either
        # way. (Written here: as an inlined function of its own it ran 1.6x slower.)
        if full:
            for j in range(_MAXW):
                mv[j] = r[j]
            for k0 in range(_MAXW, full, _MAXW):
                for j in range(_MAXW):
                    v = r[k0 + j]
                    mv[j] = v if v > mv[j] else mv[j]
            h = _MAXW // 2
            while h > 0:
                for j in range(h):
                    mv[j] = mv[j + h] if mv[j + h] > mv[j] else mv[j]
                h //= 2
            m, k1 = mv[0], full
        else:
            m, k1 = r[0], 1
        for k in range(k1, K):
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


@jit
def tanh_(a, out):
    """out = tanh(a), elementwise over a 1-D view."""
    for k in range(a.shape[0]):
        out[k] = tanh32(a[k])


# Loops run over one row b at a time (1-D views); each loop reads and writes either the same
# index of an array or distinct arrays, so the compiler vectorises it. A row function that
# may write over its input (a consumed tape) builds the row in a scratch row first. The row
# functions are shared by the one-step kernels (called from the cells' Python steps) and the
# whole-scan kernels below.


@inline
def _elman_row(x, a):
    for j in range(a.shape[0]):
        a[j] = tanh32(x[j] + a[j])


@inline
def _elman_row_back(y, g1, g2, d, row):
    H = y.shape[0]
    for j in range(H):
        row[j] = (g1[j] + g2[j]) * (_ONE - y[j] * y[j])
    for j in range(H):
        d[j] = row[j]


@inline
def _lstm_cell(xi, xf, xg, xo, ai, af, ag, ao, cp):
    """One cell: its gates i, f, g, o from the input and recurrent pre-activations, its new c
    and h from c_prev."""
    i = sigm32(xi + ai)
    f = sigm32(xf + af)
    g = tanh32(xg + ag)
    o = sigm32(xo + ao)
    c = f * cp + i * g
    return i, f, g, o, c, o * tanh32(c)


@inline
def _lstm_cells(xi, xf, xg, xo, ai, af, ag, ao, wi, wf, wg, wo, cp, cr, hr):
    """The gates of H cells from input rows x* and recurrent rows a* into w*, their new c and
    h; every argument a length-H slice, the outputs apart from the inputs. One pass over the
    cells (each pass over memory costs more than its arithmetic at these sizes)."""
    for j in range(cr.shape[0]):
        wi[j], wf[j], wg[j], wo[j], cr[j], hr[j] = _lstm_cell(
            xi[j], xf[j], xg[j], xo[j], ai[j], af[j], ag[j], ao[j], cp[j]
        )


@inline
def _lstm_cells_inplace(xi, xf, xg, xo, ai, af, ag, ao, cp, cr, hr):
    """_lstm_cells with the gates written over the a* they are computed from (the step
    kernels' and whole scans' gate buffer): the same cell, the same gates and c bit for bit
    and h within a few ulp (fast-math contraction may differ in the loops' vector remainders)."""
    for j in range(cr.shape[0]):
        ai[j], af[j], ag[j], ao[j], cr[j], hr[j] = _lstm_cell(
            xi[j], xf[j], xg[j], xo[j], ai[j], af[j], ag[j], ao[j], cp[j]
        )


@inline
def _lstm_row(x, a, cp, cr, hr):
    H = cr.shape[0]
    ai, af, ag, ao = a[:H], a[H : 2 * H], a[2 * H : 3 * H], a[3 * H :]
    _lstm_cells_inplace(x[:H], x[H : 2 * H], x[2 * H : 3 * H], x[3 * H :], ai, af, ag, ao, cp, cr, hr)


@inline
def _lstm_cells_back(ai, af, ag, ao, cp, cr, g1, g2, dc):
    """dL/d(pre-activations) of H cells written over their gates a* (read first), from c_prev,
    c', dL/dh' (g1 + g2) and dL/dc' (dc, which becomes dL/dc_prev). One pass over the cells,
    each output in the array of an input of the same cell (which lets the loop vectorise)."""
    for j in range(cr.shape[0]):
        i, f, g, o = ai[j], af[j], ag[j], ao[j]
        tc = tanh32(cr[j])
        gh = g1[j] + g2[j]
        d = dc[j] + gh * o * (_ONE - tc * tc)
        ao[j] = gh * tc * o * (_ONE - o)
        dc[j] = d * f
        ai[j] = d * g * i * (_ONE - i)
        af[j] = d * cp[j] * f * (_ONE - f)
        ag[j] = d * i * (_ONE - g * g)


@inline
def _lstm_row_back(a, cp, cr, g1, g2, dc):
    """_lstm_cells_back over a row of the gate buffer (B, 4H): a and dc in place."""
    H = cr.shape[0]
    _lstm_cells_back(a[:H], a[H : 2 * H], a[2 * H : 3 * H], a[3 * H :], cp, cr, g1, g2, dc)


@inline
def _gru_cells(xr, xz, xn, rr, rz, rn, b_hn, wr, wz, wn, whn, hp, hn):
    """H cells: gates r, z, n and hn = W_hn h + b_hn into w*, h' into hn; length-H slices,
    the outputs apart from the inputs. One pass over the cells."""
    for j in range(hp.shape[0]):
        r = sigm32(xr[j] + rr[j])
        z = sigm32(xz[j] + rz[j])
        m = rn[j] + b_hn[j]
        n = tanh32(xn[j] + r * m)
        wr[j], wz[j], whn[j], wn[j] = r, z, m, n
        hn[j] = n + z * (hp[j] - n)


@inline
def _gru_row(x, rc, b_hn, w, hp, hn):
    H = hp.shape[0]
    _gru_cells(
        x[:H],
        x[H : 2 * H],
        x[2 * H :],
        rc[:H],
        rc[H : 2 * H],
        rc[2 * H :],
        b_hn,
        w[:H],
        w[H : 2 * H],
        w[2 * H : 3 * H],
        w[3 * H :],
        hp,
        hn,
    )


@inline
def _gru_cells_back(wr, wz, wn, whn, hp, g1, g2, dr, dz, dn):
    """H cells: [da_r, da_z, da_n, da_n r] written over the cached [r, z, n, hn] (read first)
    from h and dL/dh' = g1 + g2; the gradient at h W_hh^T, [da_r, da_z, da_n r], into dr, dz,
    dn; g1 becomes the direct path (g1 + g2) z. One pass over the cells, each output in the
    array of an input of the same cell or in an array of its own (which lets the loop vectorise)."""
    for j in range(hp.shape[0]):
        r, z, n = wr[j], wz[j], wn[j]
        g = g1[j] + g2[j]
        dan = g * (_ONE - z) * (_ONE - n * n)
        a_r = dan * whn[j] * r * (_ONE - r)
        a_z = g * (hp[j] - n) * z * (_ONE - z)
        a_nr = dan * r
        wr[j], wz[j], wn[j], whn[j] = a_r, a_z, dan, a_nr
        dr[j], dz[j], dn[j] = a_r, a_z, a_nr
        g1[j] = g * z


@inline
def _gru_row_back(w, hp, g1, g2, dr):
    """_gru_cells_back over a row of the gate buffer (B, 4H), w and g1 in place; dr (3H)."""
    H = hp.shape[0]
    _gru_cells_back(w[:H], w[H : 2 * H], w[2 * H : 3 * H], w[3 * H :], hp, g1, g2, dr[:H], dr[H : 2 * H], dr[2 * H :])


@jit
def elman_fwd(xp, act):
    """act (B, H) holds h W_hh^T; becomes h' = tanh(xp + act)."""
    for b in range(act.shape[0]):
        _elman_row(xp[b], act[b])


@jit
def elman_bwd(h, dh, dout, delta):
    """delta = (dh + dout) (1 - h^2); delta may be h (then pass the same array twice)."""
    row = np.empty(h.shape[1], h.dtype)
    for b in range(h.shape[0]):
        _elman_row_back(h[b], dh[b], dout[b], delta[b], row)


@jit
def lstm_fwd(xp, gates, c_prev, c, h):
    """gates (B, 4H) holds h W_hh^T; becomes [i, f, g, o] of xp + it. Writes c' and h'."""
    for b in range(gates.shape[0]):
        _lstm_row(xp[b], gates[b], c_prev[b], c[b], h[b])


@jit
def lstm_bwd(gates, c_prev, c, dh, dout, dc, da, dc_prev):
    """da (B, 4H) = dL/d[pre-activations] (may be `gates`); dc_prev = dL/dc_{t-1} (may be dc)."""
    for b in range(gates.shape[0]):
        a, d = da[b], dc_prev[b]
        if a.ctypes.data != gates[b].ctypes.data:
            a[:] = gates[b]
        if d.ctypes.data != dc[b].ctypes.data:
            d[:] = dc[b]
        _lstm_row_back(a, c_prev[b], c[b], dh[b], dout[b], d)


@jit
def gru_fwd(xp, rec, b_hn, h, work, h_new):
    """rec (B, 3H) = h W_hh^T; work (B, 4H) <- [r, z, n, hn]; h_new = n + z (h - n)."""
    for b in range(h.shape[0]):
        _gru_row(xp[b], rec[b], b_hn, work[b], h[b], h_new[b])


@jit
def gru_bwd(work, h, dh, dout, da, drec, dhz):
    """da (B, 4H) <- [da_r, da_z, da_n, da_n r] (may be `work`); drec (B, 3H) <- the gradient
    at h W_hh^T, [da_r, da_z, da_n r]; dhz <- (dh + dout) z (the direct path to h; may be dh)."""
    for b in range(h.shape[0]):
        a, d = da[b], dhz[b]
        if a.ctypes.data != work[b].ctypes.data:
            a[:] = work[b]
        if d.ctypes.data != dh[b].ctypes.data:
            d[:] = dh[b]
        _gru_row_back(a, h[b], d, dout[b], drec[b])


@jit
def scatter_add(target, idx, flat, stride):
    """target[idx[n]] += row n for every n, row n being flat[n * stride : n * stride + G];
    target (V, G) C-contiguous, flat 1-D contiguous (`flat_rows`: rows of a wider buffer, as
    GRU's (N, 3H) view of its (N, 4H) gradients, stay contiguous loops: 3.5x faster than the
    same loop over a strided 2-D view)."""
    G = target.shape[1]
    for n in range(idx.shape[0]):
        t, r = target[idx[n]], flat[n * stride : n * stride + G]  # (a slice: the loop vectorises)
        for k in range(G):
            t[k] += r[k]


@jit
def column_sums_add(out, flat, stride):
    """out[k] += the sum over n of flat[n * stride + k] (rows added in order, as NumPy's
    sum(axis=0) adds them), k < out.shape[0]; flat from `flat_rows`."""
    G = out.shape[0]
    n_rows = (flat.shape[0] - G) // stride + 1 if flat.shape[0] >= G > 0 else 0
    acc = np.zeros(G, out.dtype)
    for n in range(n_rows):
        r = flat[n * stride : n * stride + G]
        for k in range(G):
            acc[k] += r[k]
    for k in range(G):
        out[k] += acc[k]


def add_column_sums(out: np.ndarray, rows: np.ndarray) -> None:
    """out += rows.sum(axis=0) for 2-D float32 rows and a contiguous 1-D out (a strided view of
    wider rows, as GRU's block of its gradients, in one pass where NumPy's reduction takes
    about 9 times as long on it: 0.27 against 0.03 ms at 3,200 x 128)."""
    flat = flat_rows(rows) if out.flags.c_contiguous and out.dtype == rows.dtype else None
    if flat is None or rows.shape[0] == 0:
        out += rows.sum(axis=0)
        return
    column_sums_add(out, *flat)


def flat_rows(rows: np.ndarray) -> tuple[np.ndarray, int] | None:
    """A 2-D array whose rows are each contiguous, as (a 1-D view from its first element to its
    last, the row stride in elements) for scatter_add; None for another layout."""
    N, G = rows.shape
    item = rows.itemsize
    if N == 0 or G == 0:
        return np.zeros(0, rows.dtype), G
    if (G > 1 and rows.strides[1] != item) or rows.strides[0] % item or rows.strides[0] < G * item:
        return None
    stride = rows.strides[0] // item if N > 1 else G
    size = (N - 1) * stride + G
    return np.lib.stride_tricks.as_strided(rows, shape=(size,), strides=(item,)), stride  # (read only)


# ---- whole scans: the time loop itself compiled, BLAS called per step (bptt._blas) ----------
# Step order s = 0 .. T-1 visits t = s (forward scan) or T-1-s (reversed scan); the step
# before t is t-1 (or t+1); the first step reads the initial state. src (N, G) and idx (T, B)
# give step t's input projection rows src[idx[t, b]]: the (V, G) token table and the tokens,
# or a dense (T*B, G) projection and arange(T*B). All arrays C-contiguous float32.


@exact
def adam_moments(g, mu, nu, m, v, u, b1, d1, b2, d2, c1, c2, eps):
    """Adam's moments and update in one pass over 1-D float32 arrays (float32 constants):
    m = b1 mu + d1 g, v = b2 nu + (d2 g) g, u = (m c1) / (sqrt(v) c2 + eps), with d1 = 1 - b1 and
    d2 = 1 - b2: each operation in NumPy's order and rounding (bptt.ops' adam), so the numbers
    are the same bit for bit."""
    for i in range(g.shape[0]):
        gi = g[i]
        mi = b1 * mu[i] + d1 * gi
        vi = b2 * nu[i] + (d2 * gi) * gi
        m[i], v[i] = mi, vi
        u[i] = (mi * c1) / (np.sqrt(vi) * c2 + eps)
