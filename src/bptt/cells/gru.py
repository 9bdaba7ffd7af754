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
    rz: np.ndarray  # (B, 2H) sigma outputs r | z
    n: np.ndarray  # (B, H)
    hn: np.ndarray  # (B, H) W_hn h + b_hn


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
        rz = sigmoid(xp_t[:, : 2 * H] + rec[:, : 2 * H])
        hn = rec[:, 2 * H :] + params["b_hh"][2 * H :]
        n = np.tanh(xp_t[:, 2 * H :] + rz[:, :H] * hn)
        z = rz[:, H:]
        h_new = n + z * (h - n)
        return GRUState(h_new), h_new, GRUCache(h, rz, n, hn)

    def step_back(self, params: Params, cache: GRUCache, dstate: GRUState, dout, grads: Params):
        H = self.hidden_size
        h, rz, n, hn = cache
        r, z = rz[:, :H], rz[:, H:]
        g = dstate.h + dout
        dxp = np.empty((g.shape[0], 3 * H), dtype=g.dtype)
        da_n = dxp[:, 2 * H :]
        np.multiply(g * (1.0 - z), 1.0 - n * n, out=da_n)
        dr = da_n * hn
        dz = g * (h - n)
        drz = dxp[:, : 2 * H]
        drz[:, :H] = dr
        drz[:, H:] = dz
        drz *= rz * (1.0 - rz)
        drec = dxp.copy()
        drec[:, 2 * H :] *= r
        grads["W_hh"] += drec.T @ h
        grads["b_hh"][2 * H :] += drec[:, 2 * H :].sum(axis=0)
        dh = g * z + drec @ params["W_hh"]
        return GRUState(dh), dxp
