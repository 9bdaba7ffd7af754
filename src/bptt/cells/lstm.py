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
element, cheaper than storing it for every step). This NumPy code is the reference that
bptt.fast's float32 kernels are tested against.

Tangent step (`step_jvp`, its transpose), from (dh, dc) the tangent of (h, c) and dxp (B, 4H):

    ta  = dxp + dh W_hh^T                                    # pre-activations' tangent
    dc' = f dc + g i(1-i) ta_i + c f(1-f) ta_f + i (1-g^2) ta_g
    dh' = o (1 - tanh(c')^2) dc' + tanh(c') o(1-o) ta_o
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..activations import sigmoid
from .base import Cell, Params


class LSTMState(NamedTuple):
    h: np.ndarray  # (B, H)
    c: np.ndarray  # (B, H)


class LSTMCache(NamedTuple):
    h_prev: np.ndarray  # (B, H)
    c_prev: np.ndarray  # (B, H)
    gates: np.ndarray  # (B, 4H) activations [i, f, g, o]
    c: np.ndarray  # (B, H) c'


class LSTM(Cell):
    kind = "lstm"
    State = LSTMState
    gates = 4

    def step(self, params: Params, state: LSTMState, xp_t: np.ndarray):
        H = self.hidden_size
        act = state.h @ params["W_hh"].T  # (B, 4H)
        act += xp_t  # pre-activations, biases folded into xp
        sigmoid(act[:, : 2 * H], out=act[:, : 2 * H])  # i, f
        np.tanh(act[:, 2 * H : 3 * H], out=act[:, 2 * H : 3 * H])  # g
        sigmoid(act[:, 3 * H :], out=act[:, 3 * H :])  # o
        i, f, g, o = act[:, :H], act[:, H : 2 * H], act[:, 2 * H : 3 * H], act[:, 3 * H :]
        c = f * state.c + i * g
        h = o * np.tanh(c)
        return LSTMState(h, c), h, LSTMCache(state.h, state.c, act, c)

    def step_back(self, params: Params, cache: LSTMCache, dstate: LSTMState, dout, grads: Params):
        h_prev, c_prev, act, c = cache
        H = self.hidden_size
        i, f, g, o = act[:, :H], act[:, H : 2 * H], act[:, 2 * H : 3 * H], act[:, 3 * H :]
        tc = np.tanh(c)
        gh = dstate.h + dout
        dc = dstate.c + gh * o * (1.0 - tc * tc)
        da = np.empty_like(act)  # (B, 4H) dL/d(pre-activations)
        da[:, :H] = dc * g * (i * (1.0 - i))
        da[:, H : 2 * H] = dc * c_prev * (f * (1.0 - f))
        da[:, 2 * H : 3 * H] = dc * i * (1.0 - g * g)
        da[:, 3 * H :] = gh * tc * (o * (1.0 - o))
        grads["W_hh"] += da.T @ h_prev
        return LSTMState(da @ params["W_hh"], dc * f), da

    def step_jvp(self, params: Params, cache: LSTMCache, dstate_prev: LSTMState, dxp):
        _, c_prev, act, c = cache
        H = self.hidden_size
        i, f, g, o = act[:, :H], act[:, H : 2 * H], act[:, 2 * H : 3 * H], act[:, 3 * H :]
        ta = dstate_prev.h @ params["W_hh"].T  # (B, 4H)
        if dxp is not None:
            ta += dxp
        tc = np.tanh(c)
        dc = f * dstate_prev.c
        dc += ta[:, :H] * g * (i * (1.0 - i))
        dc += ta[:, H : 2 * H] * c_prev * (f * (1.0 - f))
        dc += ta[:, 2 * H : 3 * H] * i * (1.0 - g * g)
        dh = dc * o * (1.0 - tc * tc) + ta[:, 3 * H :] * tc * (o * (1.0 - o))
        return LSTMState(dh, dc), dh
