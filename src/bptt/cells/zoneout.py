"""Zoneout (Krueger et al. 2017), around a cell: some units keep their previous value.

At every time step each unit of a zoned state field keeps its previous value with probability
z (a fresh draw per step, sequence and unit) and takes the cell's new value otherwise:

    s_t = d_t * s_(t-1) + (1 - d_t) * s~_t,   d_t ~ Bernoulli(z),   s~_t the cell's step

for the hidden state h (Elman, GRU, LSTM; rate `h`) and the LSTM's cell state c (rate `c`,
Krueger et al.'s z_c), where the LSTM's s~_t are its usual c~ = f c + i g and h~ = o tanh(c~).
The output is the zoned h. Without masks (evaluation, sampling) d_t is its expectation z, so the
step is s_t = z s_(t-1) + (1 - z) s~_t, as in the paper.

The masks are a function of the batch's draw (one number from the run's generator) and the
step's position in the sequence: a counter-based generator (Philox) keyed by the draw gives step
t's masks without drawing those of other steps. So a segment run again (memory-budgeted BPTT)
meets the same masks, and each step's cache carries the mask it met (truncated BPTT keeping
steps past their batch). The input projection carries the masks to the steps (`Zoned`); callers
pass the segment's first step to `project` (cells.base.project_at).

With the mask held the step is linear in the cell's step, so its backward step is the cell's on
(1 - d) times the incoming gradients, plus d times them straight to the previous state: exact
for every algorithm that runs the cell's steps. Float32 steps run the fast path's per-step
kernels of the wrapped cell, never its whole compiled scans (the mixing sits between steps).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..errors import BpttError
from .base import Cell, Params
from .wrapped import Wrapped

SUPPORTED = ("elman", "gru", "lstm")


class Zoned:
    """The input projection of a zoned cell: step t gives (xp_t, masks_t or None), masks_t a
    (B, fields, H) boolean array (True: the unit keeps its previous value). Quacks like the
    (T, B, G) array it wraps (shape, dtype, indexing by a step)."""

    def __init__(self, xp: Any, masks: np.ndarray | None) -> None:
        self.xp, self.masks = xp, masks
        self.shape, self.dtype = xp.shape, xp.dtype

    def __getitem__(self, t: int) -> tuple[Any, np.ndarray | None]:
        return self.xp[t], None if self.masks is None else self.masks[t]


class ZonedCache(NamedTuple):
    """A zoned step's cache: the wrapped cell's, and the masks the step met (None: their
    expectation z)."""

    cache: Any
    masks: np.ndarray | None


class Zoneout(Wrapped):
    """`cell` with zoneout of rates {field: z} on its state fields ('h'; 'c' for an LSTM)."""

    what = "zoneout"
    supported = SUPPORTED
    reason = " (whose output is its hidden state)"
    timed = True  # project takes the segment's first step (cells.base.project_at)

    def __init__(self, cell: Cell, rates: dict[str, float]) -> None:
        super().__init__(cell)
        fields = list(cell.State._fields)
        if not isinstance(rates, dict) or not rates or set(rates) - set(fields):
            raise BpttError(f"zoneout: expected rates for some of the state fields {fields}, received {rates!r}")
        self.rates = {f: self._rate(f"zoneout rate of {f!r}", rates[f], low_open=False) for f in fields if f in rates}
        self.rates = {f: z for f, z in self.rates.items() if z > 0}
        if not self.rates:
            raise BpttError(f"zoneout: expected a rate in (0, 1) for at least one of {fields}, received {rates!r}")
        self.fields = list(self.rates)  # the zoned fields, in the state's order
        self._z = np.array([self.rates[f] for f in self.fields])[:, None]  # (fields, 1)
        self.seed: int | None = None
        self.batch = 0

    # ---- masks (held per batch: Model.dropout) --------------------------------------------
    def draw(self, rng: np.random.Generator, batch: int, dtype: Any) -> None:
        self.seed, self.batch = int(rng.integers(2**63)), batch

    def clear(self) -> None:
        self.seed = None

    @property
    def held(self) -> bool:
        """Whether masks are held (within Model.dropout)."""
        return self.seed is not None

    def masks(self, t0: int, steps: int, batch: int) -> np.ndarray | None:
        """Steps t0 .. t0 + steps - 1's masks (steps, B, fields, H), or None when none are held."""
        if self.seed is None:
            return None
        if batch != self.batch:
            raise BpttError(
                f"zoneout: expected a batch of {self.batch} sequences (its masks), received {batch} sequences"
            )
        out = np.empty((steps, batch, len(self.fields), self.hidden_size), bool)
        for i in range(steps):
            gen = np.random.Generator(np.random.Philox(key=self.seed, counter=[0, t0 + i, 0, 0]))
            out[i] = gen.random((batch, len(self.fields), self.hidden_size)) < self._z
        return out

    def project(self, params: Params, x: np.ndarray, t0: int = 0) -> Zoned:
        xp = self.inner.project(params, x)
        return Zoned(xp, self.masks(int(t0), xp.shape[0], xp.shape[1]))

    # ---- one step ------------------------------------------------------------------------
    def _mix(self, masks: np.ndarray | None, j: int, keep: np.ndarray, new: np.ndarray) -> np.ndarray:
        """d * keep + (1 - d) * new for zoned field j (d the mask, or its expectation z)."""
        if masks is None:
            z = self.rates[self.fields[j]]
            return z * keep + (1.0 - z) * new
        return np.where(masks[:, j], keep, new)

    def step(self, params: Params, state, xp_t: Any):
        if not isinstance(xp_t, tuple):
            raise BpttError(
                "zoneout: expected the step's input projection from Zoneout.project (with its masks), received "
                f"{type(xp_t).__name__}"
            )
        xp, masks = xp_t
        new, _, cache = self._steps(xp.dtype).step(params, state, xp)
        new = new._replace(
            **{f: self._mix(masks, j, getattr(state, f), getattr(new, f)) for j, f in enumerate(self.fields)}
        )
        return new, new.h, ZonedCache(cache, masks)

    def step_back(self, params: Params, cache: ZonedCache, dstate, dout: np.ndarray, grads: Params):
        """The wrapped cell's backward step on (1 - d) times the incoming gradients; d times
        them go straight to the previous state (the output is the state's h)."""
        inner_cache, masks = cache
        zero = np.zeros((), dout.dtype)
        through, straight = {}, {}
        for j, f in enumerate(self.fields):
            g = dstate.h + dout if f == "h" else getattr(dstate, f)
            straight[f] = self._mix(masks, j, g, zero)
            through[f] = self._mix(masks, j, zero, getattr(dstate, f))
        if "h" in self.rates:
            dout = self._mix(masks, self.fields.index("h"), zero, dout)
        d_prev, dxp = self._steps(dout.dtype).step_back(params, inner_cache, dstate._replace(**through), dout, grads)
        return d_prev._replace(**{f: getattr(d_prev, f) + straight[f] for f in self.fields}), dxp

    def step_jvp(self, params: Params, cache: ZonedCache, dstate_prev, dxp):
        """The transpose of step_back: the cell's tangent mixed as its state is."""
        inner_cache, masks = cache
        dnew, _ = self.inner.step_jvp(params, inner_cache, dstate_prev, dxp)
        dnew = dnew._replace(
            **{f: self._mix(masks, j, getattr(dstate_prev, f), getattr(dnew, f)) for j, f in enumerate(self.fields)}
        )
        return dnew, dnew.h

    def __repr__(self) -> str:
        return f"Zoneout({self.inner!r}, rates={self.rates!r})"
