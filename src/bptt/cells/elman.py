"""Elman network (simple recurrent network), Elman 1990.

    s(t) = f(V x(t) + U s(t-1) + b)

In the code's names (those of torch.nn.RNN): V = W_ih (H, D), U = W_hh (H, H), b = b_ih + b_hh.
The output of the level is s(t) itself; a readout W (hidden -> output) is a separate Dense level.

Backward step (derivations.md, "Elman"): with g = dL/ds(t) (from the output and from step t+1),

    delta(t)   = g * f'(a(t))          # (B, H), f' written through s(t)
    dU        += delta(t)^T s(t-1)
    dL/ds(t-1) = delta(t) U
    dL/dxp(t)  = delta(t)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import _kernels, _threads
from ..activations import get_activation
from .base import Cell, Params, StepCaches, previous_step


class ElmanState(NamedTuple):
    h: np.ndarray  # (B, H)


class ElmanCache(NamedTuple):
    h_prev: np.ndarray  # (B, H) s(t-1)
    h: np.ndarray  # (B, H) s(t) = f(a(t)); f'(a) is written through it (a row of the work buffer)


class Elman(Cell):
    kind = "elman"
    State = ElmanState
    gates = 1

    def __init__(self, input_size: int, hidden_size: int, activation: str = "tanh") -> None:
        super().__init__(input_size, hidden_size)
        self.activation = get_activation(activation)

    def work_size(self) -> int:
        return self.hidden_size

    @property
    def split_scans(self) -> bool:  # type: ignore[override]
        return self.activation.name == "tanh"

    def _fused(self, dtype) -> bool:
        return self.activation.name == "tanh" and _kernels.active(dtype)

    def step(self, params: Params, state: ElmanState, xp_t: np.ndarray, work: np.ndarray | None = None):
        a = np.matmul(state.h, params["W_hh"].T, out=work)  # (B, H); b_hh is folded into xp
        if self._fused(a.dtype):
            _kernels.elman_fwd(xp_t, a)
            h = a
        else:
            a += xp_t
            h = self.activation.forward(a)
            if work is not None and h is not work:
                work[...] = h
                h = work
        return ElmanState(h), h, ElmanCache(state.h, h)

    def _back(self, cache: ElmanCache, dstate: ElmanState, dout, delta: np.ndarray) -> None:
        if self._fused(cache.h.dtype):
            _kernels.elman_bwd(cache.h, dstate.h, dout, delta)
        else:
            delta[...] = self.activation.backward(cache.h, dstate.h + dout)

    def step_back(self, params: Params, cache: ElmanCache, dstate: ElmanState, dout, grads: Params):
        delta = np.empty_like(cache.h)  # (B, H)
        self._back(cache, dstate, dout, delta)
        grads["W_hh"] += delta.T @ cache.h_prev
        return ElmanState(delta @ params["W_hh"]), delta

    def step_back_consume(self, params: Params, cache: ElmanCache, dstate: ElmanState, dout):
        self._back(cache, dstate, dout, cache.h)
        return ElmanState(cache.h @ params["W_hh"])

    def fused_forward(self, params: Params, xp, state: ElmanState, reverse: bool):
        if not (self._fused(xp.dtype) and _kernels.scans_active(xp.dtype)):
            return None
        src, idx, work, outs = self.scan_buffers(xp)
        T = idx.shape[0]
        h0 = np.ascontiguousarray(state.h)
        if _threads.engaged():  # split by hidden units between the engine's threads

            def own(p, P):  # packed weights, edge scratch
                return self.part_panels(params, p, P, True), np.empty((4, 16), xp.dtype)

            _threads.scan_parts(_kernels.elman_scan_part, src, idx, h0, work, outs, reverse, own=own)
        else:
            _kernels.elman_scan(src, idx, np.ascontiguousarray(params["W_hh"]), h0, work, outs, reverse)

        def cache(t):
            p = previous_step(t, T, reverse)
            return ElmanCache(h0 if p is None else outs[p], work[t])

        return outs, ElmanState(outs[0 if reverse else T - 1]), StepCaches(cache, T), work, h0

    def fused_backward(self, params: Params, tape, douts, scale, dstate: ElmanState, h_prev):
        dh = np.array(dstate.h, dtype=douts.dtype, order="C")
        args = (tape.aux, tape.work, np.ascontiguousarray(douts), dh, h_prev, scale, tape.reverse)
        if _threads.engaged():

            def own(p, P):  # packed weights, row and edge scratch
                return self.part_panels(params, p, P, False), np.empty(-(-self.hidden_size // P), dh.dtype), np.empty((4, 16), dh.dtype)

            _threads.scan_parts(_kernels.elman_scan_back_part, *args, own=own)
        else:
            _kernels.elman_scan_back(np.ascontiguousarray(params["W_hh"]), *args)
        return ElmanState(dh)

    def __repr__(self) -> str:
        return (
            f"Elman(input_size={self.input_size}, hidden_size={self.hidden_size}, "
            f"activation={self.activation.name!r})"
        )
