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
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import _kernels, _threads
from .._ops import matmul
from ..activations import sigmoid
from .base import Cell, Params, StepCaches, previous_step


class GRUState(NamedTuple):
    h: np.ndarray  # (B, H)


class GRUCache(NamedTuple):
    h_prev: np.ndarray  # (B, H)
    work: np.ndarray  # (B, 4H) [r, z, n, hn], hn = W_hn h + b_hn


class GRU(Cell):
    kind = "gru"
    split_scans = True
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

    def work_size(self) -> int:
        return 4 * self.hidden_size

    def step(self, params: Params, state: GRUState, xp_t: np.ndarray, work: np.ndarray | None = None):
        H = self.hidden_size
        h = state.h
        rec = h @ params["W_hh"].T  # (B, 3H)
        if work is None:
            work = np.empty((h.shape[0], 4 * H), dtype=h.dtype)
        if _kernels.active(h.dtype):
            h_new = np.empty_like(h)
            _kernels.gru_fwd(xp_t, rec, params["b_hh"][2 * H :], h, work, h_new)
            return GRUState(h_new), h_new, GRUCache(h, work)
        rz = sigmoid(xp_t[:, : 2 * H] + rec[:, : 2 * H], out=work[:, : 2 * H])
        hn = np.add(rec[:, 2 * H :], params["b_hh"][2 * H :], out=work[:, 3 * H :])
        n = np.tanh(xp_t[:, 2 * H :] + rz[:, :H] * hn, out=work[:, 2 * H : 3 * H])
        z = rz[:, H:]
        h_new = n + z * (h - n)
        return GRUState(h_new), h_new, GRUCache(h, work)

    def _back(self, cache: GRUCache, dstate: GRUState, dout, da: np.ndarray, drec: np.ndarray) -> np.ndarray:
        """Write [da_r, da_z, da_n, da_n r] into da (B, 4H) (which may be cache.work) and the
        gradient at h W_hh^T into drec (B, 3H); return the direct path dL/dh' * z."""
        h, work = cache
        if _kernels.active(h.dtype):
            dhz = np.empty_like(h)
            _kernels.gru_bwd(work, h, dstate.h, dout, da, drec, dhz)
            return dhz
        H = self.hidden_size
        r, z, n, hn = work[:, :H], work[:, H : 2 * H], work[:, 2 * H : 3 * H], work[:, 3 * H :]
        g = dstate.h + dout
        da_n = g * (1.0 - z) * (1.0 - n * n)
        da_r = da_n * hn * (r * (1.0 - r))
        da_z = g * (h - n) * (z * (1.0 - z))
        da_nr = da_n * r
        dhz = g * z
        for k, blk in enumerate((da_r, da_z, da_n, da_nr)):  # written only now: da may be work
            da[:, k * H : (k + 1) * H] = blk
        drec[:, : 2 * H] = da[:, : 2 * H]
        drec[:, 2 * H :] = da_nr
        return dhz

    def step_back(self, params: Params, cache: GRUCache, dstate: GRUState, dout, grads: Params):
        H = self.hidden_size
        da = np.empty_like(cache.work)
        drec = np.empty((da.shape[0], 3 * H), dtype=da.dtype)
        dhz = self._back(cache, dstate, dout, da, drec)
        grads["W_hh"] += drec.T @ cache.h_prev
        grads["b_hh"][2 * H :] += drec[:, 2 * H :].sum(axis=0)
        return GRUState(dhz + drec @ params["W_hh"]), da[:, : 3 * H]

    def step_back_consume(self, params: Params, cache: GRUCache, dstate: GRUState, dout):
        drec = np.empty((cache.work.shape[0], 3 * self.hidden_size), dtype=cache.work.dtype)
        dhz = self._back(cache, dstate, dout, cache.work, drec)
        return GRUState(dhz + drec @ params["W_hh"])

    def consume_grads(self, params: Params, work: np.ndarray, h_prev: np.ndarray, grads: Params) -> np.ndarray:
        T, B, G4 = work.shape
        H = G4 // 4
        w2, hp = work.reshape(T * B, G4), h_prev.reshape(T * B, -1)
        grads["W_hh"][: 2 * H] += matmul(w2[:, : 2 * H].T, hp)
        grads["W_hh"][2 * H :] += matmul(w2[:, 3 * H :].T, hp)
        grads["b_hh"][2 * H :] += w2[:, 3 * H :].sum(axis=0)
        return work[..., : 3 * H]

    def fused_forward(self, params: Params, xp, state: GRUState, reverse: bool):
        if not _kernels.scans_active(xp.dtype):
            return None
        src, idx, work, outs = self.scan_buffers(xp)
        T, B = idx.shape
        H = self.hidden_size
        h0 = np.ascontiguousarray(state.h)
        b_hn = np.ascontiguousarray(params["b_hh"][2 * H :])
        if _threads.engaged():  # split by hidden units between the engine's threads

            def own(p, P):  # packed weights, product and edge scratch
                Wp = self.part_panels(params, p, P, True)
                return Wp, np.empty((B, Wp.shape[0] * 16), xp.dtype), np.empty((4, 16), xp.dtype)

            _threads.scan_parts(_kernels.gru_scan_part, src, idx, b_hn, h0, work, outs, reverse, own=own)
        else:
            rec = np.empty((B, 3 * H), dtype=xp.dtype)
            _kernels.gru_scan(src, idx, np.ascontiguousarray(params["W_hh"]), b_hn, h0, work, outs, rec, reverse)

        def cache(t):
            p = previous_step(t, T, reverse)
            return GRUCache(h0 if p is None else outs[p], work[t])

        return outs, GRUState(outs[0 if reverse else T - 1]), StepCaches(cache, T), work, (h0, outs)

    def fused_backward(self, params: Params, tape, douts, scale, dstate: GRUState, h_prev):
        h0, outs = tape.aux
        dh = np.array(dstate.h, dtype=douts.dtype, order="C")
        B, H = dh.shape
        if _threads.engaged():
            drec = np.empty((2, B, 3 * H), dtype=dh.dtype)  # shared, alternate halves on alternate steps

            def own(p, P):  # packed weights, row and edge scratch
                return self.part_panels(params, p, P, False), np.empty(4 * -(-H // P), dh.dtype), np.empty((4, 16), dh.dtype)

            _threads.scan_parts(_kernels.gru_scan_back_part, h0, tape.work, outs, np.ascontiguousarray(douts), dh, drec,
                                h_prev, scale, tape.reverse, own=own)
        else:
            drec = np.empty((B, 3 * H), dtype=dh.dtype)
            _kernels.gru_scan_back(np.ascontiguousarray(params["W_hh"]), h0, tape.work, outs,
                                   np.ascontiguousarray(douts), dh, drec, h_prev, scale, tape.reverse)
        return GRUState(dh)
