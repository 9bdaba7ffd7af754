"""Fused float32 elementwise kernels for the built-in cells (Numba), behind the cell interface.

Why. At the sizes recurrent nets are trained at on a CPU the matrix products of a time step are
small, and NumPy spends the rest of the step in a dozen elementwise calls (about 1 us of call
overhead each, plus a pass over memory each). One compiled loop per step and direction does the
whole elementwise part in one pass. Its tanh is a 13/6-degree rational interpolant (the one
Eigen and XLA use for float32: x P(x^2) / Q(x^2), clamped to [-9, 9]), accurate to a few float32
ulp (|error| <= 4e-7 everywhere, tested) and vectorised by the compiler; the sigmoid is
(1 + tanh(a/2)) / 2.

What stays NumPy. float64 never comes here: it runs the NumPy reference path of each cell
(np.tanh, exact to the last bit the tests need). Every kernel has that reference beside it in
the cell and the tests check both agree to float32 rounding. `BPTT_KERNELS=numpy` in the
environment (or `use_kernels(False)`) switches the kernels off; without Numba installed they are
off and nothing else changes.

Aliasing. Each kernel reads all inputs of an element before writing its outputs and no element
reads another's outputs, so an output may be the same array as an input (the backward kernels
overwrite the cached gates with their gradients when the tape is consumed).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

try:  # an optional accelerator: the NumPy path is complete without it
    import numba as _nb
except Exception:  # pragma: no cover - exercised where numba is missing
    _nb = None

AVAILABLE = _nb is not None
_enabled = AVAILABLE and os.environ.get("BPTT_KERNELS", "").lower() not in ("numpy", "0", "off")


def enabled() -> bool:
    return _enabled


@contextmanager
def use_kernels(on: bool) -> Iterator[None]:
    """Temporarily switch the compiled float32 kernels on or off (tests compare both paths)."""
    global _enabled
    old = _enabled
    _enabled = bool(on) and AVAILABLE
    try:
        yield
    finally:
        _enabled = old


def active(dtype: Any) -> bool:
    """Whether a step on arrays of `dtype` uses the compiled kernels."""
    return _enabled and dtype == np.float32


if AVAILABLE:
    _jit = _nb.njit(fastmath=True, error_model="numpy", cache=True, nogil=True)
    _inline = _nb.njit(fastmath=True, error_model="numpy", cache=True, inline="always")
    f4 = np.float32
    # tanh(x) ~ x P(x^2) / Q(x^2) on [-9, 9] (beyond it tanh is +-1 in float32)
    _A1, _A3, _A5, _A7 = f4(4.89352455891786e-03), f4(6.37261928875436e-04), f4(1.48572235717979e-05), f4(5.12229709037114e-08)
    _A9, _A11, _A13 = f4(-8.60467152213735e-11), f4(2.00018790482477e-13), f4(-2.76076847742355e-16)
    _B0, _B2, _B4, _B6 = f4(4.89352518554385e-03), f4(2.26843463243900e-03), f4(1.18534705686654e-04), f4(1.19825839466702e-06)
    _NINE, _HALF, _ONE = f4(9.0), f4(0.5), f4(1.0)

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

    @_jit
    def tanh_(a, out):
        """out = tanh(a), elementwise over a 1-D view."""
        for k in range(a.shape[0]):
            out[k] = tanh32(a[k])

    @_jit
    def elman_fwd(xp, act):
        """act (B, H) holds h W_hh^T; becomes h' = tanh(xp + act)."""
        B, H = act.shape
        for b in range(B):
            for j in range(H):
                act[b, j] = tanh32(xp[b, j] + act[b, j])

    @_jit
    def elman_bwd(h, dh, dout, delta):
        """delta = (dh + dout) (1 - h^2); delta may be h."""
        B, H = h.shape
        for b in range(B):
            for j in range(H):
                y = h[b, j]
                delta[b, j] = (dh[b, j] + dout[b, j]) * (_ONE - y * y)

    @_jit
    def lstm_fwd(xp, gates, c_prev, c, h):
        """gates (B, 4H) holds h W_hh^T; becomes [i, f, g, o] of xp + it. Writes c' and h'."""
        B, G = gates.shape
        H = G // 4
        for b in range(B):
            for j in range(H):
                i = sigm32(xp[b, j] + gates[b, j])
                f = sigm32(xp[b, H + j] + gates[b, H + j])
                g = tanh32(xp[b, 2 * H + j] + gates[b, 2 * H + j])
                o = sigm32(xp[b, 3 * H + j] + gates[b, 3 * H + j])
                cn = f * c_prev[b, j] + i * g
                gates[b, j] = i
                gates[b, H + j] = f
                gates[b, 2 * H + j] = g
                gates[b, 3 * H + j] = o
                c[b, j] = cn
                h[b, j] = o * tanh32(cn)

    @_jit
    def lstm_bwd(gates, c_prev, c, dh, dout, dc, da, dc_prev):
        """da (B, 4H) = dL/d[pre-activations] (may be `gates`); dc_prev = dL/dc_{t-1}."""
        B, G = gates.shape
        H = G // 4
        for b in range(B):
            for j in range(H):
                i = gates[b, j]
                f = gates[b, H + j]
                g = gates[b, 2 * H + j]
                o = gates[b, 3 * H + j]
                tc = tanh32(c[b, j])
                gh = dh[b, j] + dout[b, j]
                d = dc[b, j] + gh * o * (_ONE - tc * tc)
                da[b, j] = d * g * i * (_ONE - i)
                da[b, H + j] = d * c_prev[b, j] * f * (_ONE - f)
                da[b, 2 * H + j] = d * i * (_ONE - g * g)
                da[b, 3 * H + j] = gh * tc * o * (_ONE - o)
                dc_prev[b, j] = d * f

    @_jit
    def gru_fwd(xp, rec, b_hn, h, work, h_new):
        """rec (B, 3H) = h W_hh^T; work (B, 4H) <- [r, z, n, hn]; h_new = n + z (h - n)."""
        B, H = h.shape
        for b in range(B):
            for j in range(H):
                r = sigm32(xp[b, j] + rec[b, j])
                z = sigm32(xp[b, H + j] + rec[b, H + j])
                hn = rec[b, 2 * H + j] + b_hn[j]
                n = tanh32(xp[b, 2 * H + j] + r * hn)
                work[b, j] = r
                work[b, H + j] = z
                work[b, 2 * H + j] = n
                work[b, 3 * H + j] = hn
                h_new[b, j] = n + z * (h[b, j] - n)

    @_jit
    def gru_bwd(work, h, dh, dout, da, drec, dhz):
        """da (B, 4H) <- [da_r, da_z, da_n, da_n r] (may be `work`); drec (B, 3H) <- the gradient
        at h W_hh^T, [da_r, da_z, da_n r]; dhz <- (dh + dout) z (the direct path to h)."""
        B, H = h.shape
        for b in range(B):
            for j in range(H):
                r = work[b, j]
                z = work[b, H + j]
                n = work[b, 2 * H + j]
                hn = work[b, 3 * H + j]
                g = dh[b, j] + dout[b, j]
                dan = g * (_ONE - z) * (_ONE - n * n)
                dar = dan * hn * r * (_ONE - r)
                daz = g * (h[b, j] - n) * z * (_ONE - z)
                danr = dan * r
                da[b, j] = dar
                da[b, H + j] = daz
                da[b, 2 * H + j] = dan
                da[b, 3 * H + j] = danr
                drec[b, j] = dar
                drec[b, H + j] = daz
                drec[b, 2 * H + j] = danr
                dhz[b, j] = g * z
