"""Gated recurrent unit (Cho et al. 2014) in torch.nn.GRU's exact parametrisation.

Gate order r, z, n in the stacked weights W_ih (3H, D), W_hh (3H, H), b_ih (3H), b_hh (3H):

    r  = sigma(W_ir x + b_ir + W_hr h + b_hr)
    z  = sigma(W_iz x + b_iz + W_hz h + b_hz)
    n  = tanh (W_in x + b_in + r * (W_hn h + b_hn))
    h' = (1 - z) * n + z * h

b_hr and b_hz are folded into the input projection; b_hn cannot be (it sits inside r * (...)).

Backward step (derivations.md, "GRU"), g = dL/dh':

    dn = g (1 - z)          dz = g (h - n)          dh = g z
    da_n = dn (1 - n^2)                      # gradient at n's pre-activation
    dr   = da_n * hn,  hn = W_hn h + b_hn    # cached
    da_r = dr r (1 - r),   da_z = dz z (1 - z)
    dxp  = [da_r, da_z, da_n]                # gradient at the input projection
    drec = [da_r, da_z, da_n * r]            # gradient at the recurrent product h W_hh^T
    dW_hh += drec^T h,   db_hn += sum(da_n * r),   dh += drec W_hh

The cache is (h, work) with work = [r, z, n, hn] (B, 4H), a row of the tape's work buffer. A
consumed tape's backward step overwrites it with [da_r, da_z, da_n, da_n r]: dxp is its first
3H columns and the recurrent product's gradient its columns r, z and the last H.

Tangent step (`step_jvp`, its transpose), from dh = the tangent of h and dxp (B, 3H):

    [ur, uz, un] = dh W_hh^T                        # the recurrent product's tangent
    tr = r (1 - r) (dxp_r + ur),   tz = z (1 - z) (dxp_z + uz)
    tn = (1 - n^2) (dxp_n + r un + hn tr)
    dh' = (1 - z) tn + (h - n) tz + z dh
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..activations import sigmoid
from .base import Cell, Params


class GRUState(NamedTuple):
    h: np.ndarray  # (B, H)


class GRUCache(NamedTuple):
    h_prev: np.ndarray  # (B, H)
    work: np.ndarray  # (B, 4H) [r, z, n, hn], hn = W_hn h + b_hn


class GRU(Cell):
    kind = "gru"
    State = GRUState
    gates = 3

    def _folded_bias(self, params: Params) -> np.ndarray:
        H = self.hidden_size
        b = params["b_ih"].copy()
        b[: 2 * H] += params["b_hh"][: 2 * H]
        return b

    def _fold_bias_back(self, grads: Params, db: np.ndarray) -> None:
        H = self.hidden_size
        grads["b_ih"] += db
        grads["b_hh"][: 2 * H] += db[: 2 * H]

    def step(self, params: Params, state: GRUState, xp_t: np.ndarray):
        H = self.hidden_size
        h = state.h
        rec = h @ params["W_hh"].T  # (B, 3H)
        work = np.empty((h.shape[0], 4 * H), dtype=h.dtype)  # the cache's [r, z, n, hn]
        rz = sigmoid(xp_t[:, : 2 * H] + rec[:, : 2 * H], out=work[:, : 2 * H])
        hn = np.add(rec[:, 2 * H :], params["b_hh"][2 * H :], out=work[:, 3 * H :])
        n = np.tanh(xp_t[:, 2 * H :] + rz[:, :H] * hn, out=work[:, 2 * H : 3 * H])
        z = rz[:, H:]
        h_new = n + z * (h - n)
        return GRUState(h_new), h_new, GRUCache(h, work)

    def step_back(self, params: Params, cache: GRUCache, dstate: GRUState, dout, grads: Params):
        H = self.hidden_size
        h, work = cache
        r, z, n, hn = work[:, :H], work[:, H : 2 * H], work[:, 2 * H : 3 * H], work[:, 3 * H :]
        g = dstate.h + dout
        da = np.empty((h.shape[0], 3 * H), dtype=h.dtype)  # dL/dxp: [da_r, da_z, da_n]
        da[:, 2 * H :] = g * (1.0 - z) * (1.0 - n * n)
        da[:, :H] = da[:, 2 * H :] * hn * (r * (1.0 - r))
        da[:, H : 2 * H] = g * (h - n) * (z * (1.0 - z))
        drec = da.copy()  # the gradient at h W_hh^T: [da_r, da_z, da_n r]
        drec[:, 2 * H :] *= r
        grads["W_hh"] += drec.T @ h
        grads["b_hh"][2 * H :] += drec[:, 2 * H :].sum(axis=0)
        return GRUState(g * z + drec @ params["W_hh"]), da

    def step_jvp(self, params: Params, cache: GRUCache, dstate_prev: GRUState, dxp):
        H = self.hidden_size
        h, work = cache
        r, z, n, hn = work[:, :H], work[:, H : 2 * H], work[:, 2 * H : 3 * H], work[:, 3 * H :]
        dh = dstate_prev.h
        u = dh @ params["W_hh"].T  # (B, 3H)
        if dxp is not None:
            u[:, : 2 * H] += dxp[:, : 2 * H]
        tr = u[:, :H] * (r * (1.0 - r))
        tz = u[:, H : 2 * H] * (z * (1.0 - z))
        a_n = r * u[:, 2 * H :] + hn * tr
        if dxp is not None:
            a_n += dxp[:, 2 * H :]
        tn = a_n * (1.0 - n * n)
        dh_new = (1.0 - z) * tn + (h - n) * tz + z * dh
        return GRUState(dh_new), dh_new
