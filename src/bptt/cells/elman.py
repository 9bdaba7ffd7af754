"""Elman network (simple recurrent network), Elman 1990.

    s(t) = f(V x(t) + U s(t-1) + b)

In the code's names (those of torch.nn.RNN): V = W_ih (H, D), U = W_hh (H, H), b = b_ih + b_hh.
The output of the level is s(t) itself; a readout W (hidden -> output) is a separate Dense level.

Backward step (derivations.md, "Elman"): with g = dL/ds(t) (from the output and from step t+1),

    delta(t)   = g * f'(a(t))          # (B, H), f' written through s(t)
    dU        += delta(t)^T s(t-1)
    dL/ds(t-1) = delta(t) U
    dL/dxp(t)  = delta(t)

Tangent step (`step_jvp`, its transpose): with ds = the tangent of s(t-1), dxp that of xp(t),

    ds(t) = dout(t) = f'(a(t)) * (ds U^T + dxp)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..activations import get_activation
from .base import Cell, Params


class ElmanState(NamedTuple):
    h: np.ndarray  # (B, H)


class ElmanCache(NamedTuple):
    h_prev: np.ndarray  # (B, H) s(t-1)
    h: np.ndarray  # (B, H) s(t) = f(a(t)); f'(a) is written through it


class Elman(Cell):
    kind = "elman"
    State = ElmanState
    gates = 1

    def __init__(self, input_size: int, hidden_size: int, activation: str = "tanh") -> None:
        super().__init__(input_size, hidden_size)
        self.activation = get_activation(activation)

    def step(self, params: Params, state: ElmanState, xp_t: np.ndarray):
        a = state.h @ params["W_hh"].T  # (B, H); b_hh is folded into xp
        a += xp_t
        h = self.activation.forward(a)
        return ElmanState(h), h, ElmanCache(state.h, h)

    def step_back(self, params: Params, cache: ElmanCache, dstate: ElmanState, dout, grads: Params):
        delta = self.activation.backward(cache.h, dstate.h + dout)  # (B, H)
        grads["W_hh"] += delta.T @ cache.h_prev
        return ElmanState(delta @ params["W_hh"]), delta

    def step_jvp(self, params: Params, cache: ElmanCache, dstate_prev: ElmanState, dxp):
        a = dstate_prev.h @ params["W_hh"].T
        if dxp is not None:
            a += dxp
        dh = self.activation.backward(cache.h, a)
        return ElmanState(dh), dh

    def __repr__(self) -> str:
        return (
            f"Elman(input_size={self.input_size}, hidden_size={self.hidden_size}, activation={self.activation.name!r})"
        )
