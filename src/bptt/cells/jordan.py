"""Jordan network (Jordan 1986): the network's previous OUTPUT feeds the hidden layer.

The hidden layer has no recurrence of its own; the recurrence runs through the output units,
whose values are copied into context (state) units, optionally with a fixed self-decay mu:

    s(t)   = f(V x(t) + U ctx(t-1) + b)       # hidden, (B, H)
    y(t)   = g(W s(t) + c)                    # output, (B, O): this is the level's output
    ctx(t) = mu * ctx(t-1) + y(t)             # context, (B, O): the carried state

Names: V = W_ih (H, D), b = b_ih (H,), U = W_ch (H, O), W = W_hy (O, H), c = b_y (O,).
Because W and c sit inside the recurrence, the output layer belongs to the cell: put no
further Dense level after a Jordan level when it is the network's output (Model(...) then
applies the loss to y directly; use out_activation='identity' for logits).

Backward step (derivations.md, "Jordan"), with gy = dL/dy(t) from the loss/level above and
gctx = dL/dctx(t) from step t+1:

    delta_y = (gy + gctx) * g'(.)             # (B, O)
    dW += delta_y^T s(t),  dc += sum delta_y
    delta_s = (delta_y W) * f'(.)             # (B, H)
    dU += delta_s^T ctx(t-1)
    dL/dctx(t-1) = mu * gctx + delta_s U,    dxp = delta_s

Tangent step (`step_jvp`, its transpose), from dctx = the tangent of ctx(t-1) and dxp:

    ds      = f'(.) * (dxp + dctx U^T)
    dy      = g'(.) * (ds W^T)                # the output's tangent
    dctx(t) = mu * dctx + dy
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import _checks
from ..activations import get_activation
from ..errors import BpttError
from .base import Cell, Params


class JordanState(NamedTuple):
    ctx: np.ndarray  # (B, O)


class JordanCache(NamedTuple):
    ctx_prev: np.ndarray  # (B, O)
    s: np.ndarray  # (B, H)
    y: np.ndarray  # (B, O)


class Jordan(Cell):
    kind = "jordan"
    State = JordanState
    gates = 1

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int | None = None,
        activation: str = "tanh",
        out_activation: str = "identity",
        context_decay: float = 0.0,
    ) -> None:
        super().__init__(input_size, hidden_size)
        self._out = _checks.positive_int("output_size", output_size if output_size is not None else hidden_size)
        self.activation = get_activation(activation)
        self.out_activation = get_activation(out_activation)
        mu = _checks.real("context_decay", context_decay, "a number in [0, 1)")
        if not 0.0 <= mu < 1.0:
            raise BpttError(f"context_decay: expected a number in [0, 1), received {context_decay!r}")
        self.context_decay = mu

    @property
    def output_size(self) -> int:
        return self._out

    def state_sizes(self) -> dict[str, int]:
        return {"ctx": self._out}

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        H, D, O = self.hidden_size, self.input_size, self._out
        return {"W_ih": (H, D), "b_ih": (H,), "W_ch": (H, O), "W_hy": (O, H), "b_y": (O,)}

    def _folded_bias(self, params: Params) -> np.ndarray:
        return params["b_ih"]

    def _fold_bias_back(self, grads: Params, db: np.ndarray) -> None:
        grads["b_ih"] += db

    def step(self, params: Params, state: JordanState, xp_t: np.ndarray):
        s = self.activation.forward(xp_t + state.ctx @ params["W_ch"].T)  # (B, H)
        y = self.out_activation.forward(s @ params["W_hy"].T + params["b_y"])  # (B, O)
        ctx = y if self.context_decay == 0.0 else self.context_decay * state.ctx + y
        return JordanState(ctx), y, JordanCache(state.ctx, s, y)

    def step_back(self, params: Params, cache: JordanCache, dstate: JordanState, dout, grads: Params):
        ctx_prev, s, y = cache
        delta_y = self.out_activation.backward(y, dstate.ctx + dout)  # (B, O)
        grads["W_hy"] += delta_y.T @ s
        grads["b_y"] += delta_y.sum(axis=0)
        delta_s = self.activation.backward(s, delta_y @ params["W_hy"])  # (B, H)
        grads["W_ch"] += delta_s.T @ ctx_prev
        dctx = delta_s @ params["W_ch"]
        if self.context_decay != 0.0:
            dctx += self.context_decay * dstate.ctx
        return JordanState(dctx), delta_s

    def step_jvp(self, params: Params, cache: JordanCache, dstate_prev: JordanState, dxp):
        _, s, y = cache
        a = dstate_prev.ctx @ params["W_ch"].T  # (B, H)
        if dxp is not None:
            a += dxp
        ds = self.activation.backward(s, a)
        dy = self.out_activation.backward(y, ds @ params["W_hy"].T)  # (B, O)
        dctx = dy if self.context_decay == 0.0 else self.context_decay * dstate_prev.ctx + dy
        return JordanState(dctx), dy

    def __repr__(self) -> str:
        return (
            f"Jordan(input_size={self.input_size}, hidden_size={self.hidden_size}, "
            f"output_size={self._out}, context_decay={self.context_decay})"
        )
