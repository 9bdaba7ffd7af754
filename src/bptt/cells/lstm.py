"""Long short-term memory (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al.
2000) in torch.nn.LSTM's exact parametrisation.

Gate order i, f, g, o in W_ih (4H, D), W_hh (4H, H), b_ih (4H), b_hh (4H):

    [a_i, a_f, a_g, a_o] = W_ih x + b_ih + W_hh h + b_hh
    i = sigma(a_i)   f = sigma(a_f)   g = tanh(a_g)   o = sigma(a_o)
    c' = f * c + i * g
    h' = o * tanh(c')

Backward step (derivations.md, "LSTM"), with gh = dL/dh', gc = dL/dc' (from step t+1):

    do  = gh * tanh(c')
    dc  = gc + gh * o * (1 - tanh(c')^2)
    di  = dc * g,  df = dc * c,  dg = dc * i,  dc_prev = dc * f
    da  = [di i(1-i), df f(1-f), dg (1-g^2), do o(1-o)]      # (B, 4H)
    dW_hh += da^T h,   dh_prev = da W_hh,   dxp = da

The cache is (h, c, gates, c'): tanh(c') is recomputed in the backward step (one tanh per
element, cheaper than storing it for every step). In float32 with the compiled kernels on, the
elementwise part of each direction is one fused loop (bptt._kernels); the NumPy code below is
the reference it is tested against, and the float64 path.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import _kernels, _threads
from .._ops import buffers
from ..activations import sigmoid
from .base import Cell, Params, StepCaches, previous_step


class LSTMState(NamedTuple):
    h: np.ndarray  # (B, H)
    c: np.ndarray  # (B, H)


class LSTMCache(NamedTuple):
    h_prev: np.ndarray  # (B, H)
    c_prev: np.ndarray  # (B, H)
    gates: np.ndarray  # (B, 4H) activations [i, f, g, o] (a row of the tape's work buffer)
    c: np.ndarray  # (B, H) c'


class LSTM(Cell):
    kind = "lstm"
    State = LSTMState
    gates = 4
    split_scans = True  # its compiled scans run split by hidden units on the engine (bptt._threads)

    def work_size(self) -> int:
        return 4 * self.hidden_size

    def step(self, params: Params, state: LSTMState, xp_t: np.ndarray, work: np.ndarray | None = None):
        H = self.hidden_size
        act = np.matmul(state.h, params["W_hh"].T, out=work)  # (B, 4H)
        if _kernels.active(act.dtype):
            c, h = np.empty_like(state.c), np.empty_like(state.h)
            _kernels.lstm_fwd(xp_t, act, state.c, c, h)
            return LSTMState(h, c), h, LSTMCache(state.h, state.c, act, c)
        act += xp_t  # pre-activations, biases folded into xp
        sigmoid(act[:, : 2 * H], out=act[:, : 2 * H])  # i, f
        np.tanh(act[:, 2 * H : 3 * H], out=act[:, 2 * H : 3 * H])  # g
        sigmoid(act[:, 3 * H :], out=act[:, 3 * H :])  # o
        i, f, g, o = act[:, :H], act[:, H : 2 * H], act[:, 2 * H : 3 * H], act[:, 3 * H :]
        c = f * state.c + i * g
        h = o * np.tanh(c)
        return LSTMState(h, c), h, LSTMCache(state.h, state.c, act, c)

    def _back(self, cache: LSTMCache, dstate: LSTMState, dout: np.ndarray, da: np.ndarray) -> np.ndarray:
        """Write dL/d(pre-activations) into da (which may be cache.gates); return dL/dc_prev."""
        h_prev, c_prev, act, c = cache
        if _kernels.active(act.dtype):
            dc_prev = np.empty_like(c)
            _kernels.lstm_bwd(act, c_prev, c, dstate.h, dout, dstate.c, da, dc_prev)
            return dc_prev
        H = self.hidden_size
        i, f, g, o = act[:, :H], act[:, H : 2 * H], act[:, 2 * H : 3 * H], act[:, 3 * H :]
        tc = np.tanh(c)
        gh = dstate.h + dout
        dc = dstate.c + gh * o * (1.0 - tc * tc)
        blocks = (dc * g * (i * (1.0 - i)), dc * c_prev * (f * (1.0 - f)), dc * i * (1.0 - g * g),
                  gh * tc * (o * (1.0 - o)))
        dc_prev = dc * f
        for k, blk in enumerate(blocks):  # written only now: da may be the gates it was computed from
            da[:, k * H : (k + 1) * H] = blk
        return dc_prev

    def step_back(self, params: Params, cache: LSTMCache, dstate: LSTMState, dout, grads: Params):
        da = np.empty_like(cache.gates)  # (B, 4H)
        dc_prev = self._back(cache, dstate, dout, da)
        grads["W_hh"] += da.T @ cache.h_prev
        return LSTMState(da @ params["W_hh"], dc_prev), da

    def step_back_consume(self, params: Params, cache: LSTMCache, dstate: LSTMState, dout):
        dc_prev = self._back(cache, dstate, dout, cache.gates)
        return LSTMState(cache.gates @ params["W_hh"], dc_prev)

    def fused_forward(self, params: Params, xp, state: LSTMState, reverse: bool):
        if not _kernels.scans_active(xp.dtype):
            return None
        src, idx, work, outs = self.scan_buffers(xp)
        T, B = idx.shape
        h0, c0 = np.ascontiguousarray(state.h), np.ascontiguousarray(state.c)
        cs = buffers.empty(outs.shape, xp.dtype)
        if _threads.engaged():  # split by hidden units between the engine's threads

            def own(p, P):  # packed weights, product and edge scratch
                Wp = self.part_panels(params, p, P, True)
                return Wp, np.empty((B, Wp.shape[0] * 16), xp.dtype), np.empty((4, 16), xp.dtype)

            _threads.scan_parts(_kernels.lstm_scan_part, src, idx, h0, c0, work, cs, outs, reverse, own=own)
        else:
            _kernels.lstm_scan(src, idx, np.ascontiguousarray(params["W_hh"]), h0, c0, work, cs, outs, reverse)

        def cache(t):
            p = previous_step(t, T, reverse)
            return LSTMCache(h0, c0, work[t], cs[t]) if p is None else LSTMCache(outs[p], cs[p], work[t], cs[t])

        last = 0 if reverse else T - 1
        return outs, LSTMState(outs[last], cs[last]), StepCaches(cache, T), work, (h0, c0, cs, outs)

    def fused_backward(self, params: Params, tape, douts, scale, dstate: LSTMState, h_prev):
        h0, c0, cs, outs = tape.aux
        dh = np.array(dstate.h, dtype=douts.dtype, order="C")
        dc = np.array(dstate.c, dtype=douts.dtype, order="C")
        args = (h0, c0, tape.work, cs, outs, np.ascontiguousarray(douts), dh, dc, h_prev, scale, tape.reverse)
        if _threads.engaged():

            def own(p, P):  # packed weights, row and edge scratch
                return self.part_panels(params, p, P, False), np.empty(5 * -(-self.hidden_size // P), dh.dtype), np.empty((4, 16), dh.dtype)

            _threads.scan_parts(_kernels.lstm_scan_back_part, *args, own=own)
        else:
            _kernels.lstm_scan_back(np.ascontiguousarray(params["W_hh"]), *args)
        return LSTMState(dh, dc)
