"""Variational dropout on the recurrent connections (Gal & Ghahramani 2016), around a cell.

While a batch is trained, sequence b reads its previous hidden state through a mask m_b (H,)
drawn once for the batch: unit j kept with probability 1 - rate and scaled by 1 / (1 - rate),
the same units at every time step:

    Elman:  h_t = tanh(xp_t + W_hh (m * h_{t-1}))
    LSTM:   [i, f, g, o]_t = xp_t + W_hh (m * h_{t-1});  c_t = f c_{t-1} + i g  (c unmasked)

The state carried from step to step is the unmasked h_{t-1}; only the recurrent product sees
the mask (the initial state's too). With the mask held the step is the cell's step on m * h, so
its backward step is the cell's, and the gradient reaching h_{t-1} is m times the one reaching
m * h_{t-1}: exact, for every algorithm that runs the cell's steps. Without a mask (evaluation,
sampling, export) the wrapper is the cell itself, fast path included.

Only cells whose previous hidden state enters the step through the recurrent product alone:
Elman (tanh or relu) and LSTM. A GRU carries h_{t-1} into h_t itself ((1 - z) n + z h_{t-1}),
and a Jordan cell reads its previous output; masking their state would drop part of the
memory, not the connections.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..errors import BpttError
from .base import Cell, Params
from .wrapped import Wrapped

SUPPORTED = ("elman", "lstm")


class MaskedCache(NamedTuple):
    """A masked step's cache: the wrapped cell's, and the mask the step met."""

    cache: Any
    mask: np.ndarray


def keep_mask(rng: np.random.Generator, batch: int, width: int, rate: float, dtype: Any) -> np.ndarray:
    """(batch, width) masks of inverted dropout: 1 / (1 - rate) with probability 1 - rate, else 0."""
    keep = rng.random((batch, width)) >= rate
    return (keep / (1.0 - rate)).astype(dtype)


class RecurrentDropout(Wrapped):
    """`cell` with variational dropout of `rate` on its recurrent input h_{t-1}."""

    what = "recurrent dropout"
    supported = SUPPORTED
    reason = " (whose h_(t-1) enters only the recurrent product)"

    def __init__(self, cell: Cell, rate: float) -> None:
        super().__init__(cell)
        self.rate = self._rate("recurrent dropout rate", rate)
        self.mask: np.ndarray | None = None  # (B, H): 0 or 1 / (1 - rate)

    # ---- masks (held per batch: Model.dropout) --------------------------------------------
    def draw(self, rng: np.random.Generator, batch: int, dtype: Any) -> None:
        self.mask = keep_mask(rng, batch, self.hidden_size, self.rate, dtype)

    def clear(self) -> None:
        self.mask = None

    @property
    def held(self) -> bool:
        """Whether masks are held (within Model.dropout)."""
        return self.mask is not None

    def effective(self) -> Cell:
        """The cell whose forward steps run now: this one while a mask is held, else the plain
        cell (and its fast path). Backward steps always go through this one (step_back), which
        reads from each step's cache whether it met a mask."""
        return self if self.mask is not None else self.inner

    def _masked(self, state):
        m = self.mask
        if m is None:
            return state
        if m.shape != state.h.shape:
            raise BpttError(
                f"recurrent dropout: expected a batch of {m.shape[0]} sequences (its masks), received states of "
                f"shape {state.h.shape}"
            )
        return state._replace(h=state.h * m)

    def step(self, params: Params, state, xp_t: np.ndarray):
        new, out, cache = self._steps(xp_t.dtype).step(params, self._masked(state), xp_t)
        # the mask travels in the cache: a step kept past its batch (TBPTT with k2 > k1) goes
        # back through the mask it met, not the one held now
        return new, out, (cache if self.mask is None else MaskedCache(cache, self.mask))

    def step_back(self, params: Params, cache: Any, dstate, dout: np.ndarray, grads: Params):
        """The wrapped cell's backward step; for a step run with a mask (its cache says which),
        the gradient reaching h_(t-1) is m times the one reaching m * h_(t-1). A step run
        without one (the plain cell's, e.g. a compiled scan's tape) goes back plainly."""
        m = None
        if isinstance(cache, MaskedCache):
            cache, m = cache
        d_prev, dxp = self._steps(dout.dtype).step_back(params, cache, dstate, dout, grads)
        if m is not None:
            d_prev = d_prev._replace(h=d_prev.h * m)
        return d_prev, dxp

    def step_jvp(self, params: Params, cache: Any, dstate_prev, dxp):
        if self.mask is not None:
            raise BpttError("recurrent dropout: expected no masks held in forward-mode products, received masks")
        return self.inner.step_jvp(params, cache, dstate_prev, dxp)

    def __repr__(self) -> str:
        return f"RecurrentDropout({self.inner!r}, rate={self.rate!r})"
