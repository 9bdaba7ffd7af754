"""Randomized truncation with reweighting: an unbiased estimate of the full BPTT gradient at the
cost of truncated BPTT (d2l's "randomized truncation"; Tallec & Ollivier 2017, ARTBP).

At every step t a truncation is drawn with probability c_t, in the forward pass (the draw does
not depend on the data). The backward message leaving step t towards step t-1 is then

    cut (multiplied by 0)             where a truncation was drawn,
    multiplied by 1 / (1 - c_t)       where none was,

so each factor has expectation 1. Every term of the BPTT gradient is an error at tau carried
back across steps tau, tau-1, ..., s+1 to the weights' use at s: a product of independent
factors, so its expectation is the untruncated term and the estimate is unbiased. Its variance
grows as c grows (longer carries are rarer but weighted up). With c = 0 every factor is exactly
1 and the estimate is full BPTT. With reweight=False the same cuts give an ordinary, biased,
random-length truncation.

The draws are per (step, sequence): each sequence of a batch gets its own truncation points.
The message into the initial state is drawn too (row 0), so learned initial states get an
unbiased gradient as well. In a bidirectional level the reverse direction's message leaving
step t (towards t+1) gets the same factor; each path's factors are still independent with mean
1, so the estimate stays unbiased. Not so where a bidirectional level and another recurrent
level are stacked: a path back in time through one and forward through the other crosses the
same factor twice (E[f^2] = 1 / (1 - c), not 1: a bias of 1e-3 measured on T = 4, c = 0.3), so
the reweighted estimate refuses such a model.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import ops
from .._checks import generator
from ..cells.base import Params
from ..errors import BpttError
from ..scan import scan_backward
from .base import Algorithm, Gradient, register
from .truncated import check_carried_batch, check_streamable

if TYPE_CHECKING:
    from ..model import Model, ModelState


def truncation_factors(T: int, B: int, c: Any, rng: np.random.Generator, reweight: bool = True) -> np.ndarray:
    """(T, B) factors on the backward messages: 0 where a truncation is drawn (probability c_t),
    1 / (1 - c_t) (or 1 without reweighting) elsewhere. c: a number or a (T,) array in [0, 1)."""
    cs = np.broadcast_to(np.asarray(c, dtype=np.float64), (T,)) if np.ndim(c) == 0 else np.asarray(c, np.float64)
    if cs.shape != (T,) or not np.all((cs >= 0) & (cs < 1)):
        raise BpttError(
            f"truncation probability: expected a number or {T} numbers in [0, 1), received "
            f"{c if np.ndim(c) == 0 else f'an array of shape {np.shape(c)}'}"
        )
    if not cs.any():  # nothing can be cut: no draws (the generator is left as it was)
        return np.ones((T, B))
    cut = rng.random((T, B)) < cs[:, None]
    keep = 1.0 / (1.0 - cs[:, None]) if reweight else np.ones((T, 1))
    return np.where(cut, 0.0, keep)


def randomized_bptt(
    model: Model,
    params: Params,
    x: Any,
    targets: Any,
    c: Any,
    rng: np.random.Generator,
    *,
    mask: Any = None,
    state0: ModelState | None = None,
    reweight: bool = True,
    factors: np.ndarray | None = None,
) -> Gradient:
    """One draw of the randomized-truncation gradient (unbiased with reweight=True).

    c: truncation probability per step (number or (T,) array); rng: where the draws come from;
    factors: (T, B) message factors to use instead of drawing (see truncation_factors)."""
    b = model.check_batch(params, x, targets, mask, state0)
    T, B = b.x.shape[:2]
    if factors is None:
        factors = truncation_factors(T, B, c, rng, reweight)
    elif np.shape(factors) != (T, B):
        raise BpttError(f"factors: expected shape {(T, B)}, received {np.shape(factors)}")
    if reweight and model.bidirectional and len(model.recurrent_levels) > 1 and np.any(factors != 1):
        raise BpttError(
            "artbp: expected a unidirectional model, or one bidirectional recurrent level alone, received a "
            "bidirectional level stacked with another recurrent level (the reweighted estimate would be biased: "
            "a path through both directions crosses one factor twice)"
        )
    with ops.step_context(model, params, b.mask):  # where the step's work may be split between cores
        y, final, tapes = model.forward_levels(params, b.x, b.mask, b.state0, keep=True)
        loss, dy = model.loss_fn.value_and_grad(y, b.targets, b.mask)
        grads = model.zero_grads(params)
        dstate0 = model.backward_levels(
            params, tapes, dy, None, grads, partial(scan_backward, scale=factors, consume=True)
        )
    model.add_init_grads(grads, dstate0, b.given)
    return Gradient(loss, grads, dstate0, final)


@register
class RandomTruncation(Algorithm):
    """Random-length truncation over each batch: cuts drawn with probability c per step and
    sequence, no reweighting (biased; `randomized_bptt(..., reweight=False)`). Draws come from
    `rng` (an np.random.Generator; the trainer's own, so that a resumed run draws the same)."""

    name = "random"
    reweight = False

    def __init__(self, c: float, rng: np.random.Generator | None = None) -> None:
        if isinstance(c, bool) or not isinstance(c, (int, float, np.floating)) or not 0 <= c < 1:
            raise BpttError(f"c: expected a truncation probability in [0, 1), received {c!r}")
        self.c, self.rng = float(c), generator(f"{self.name} rng", rng, default=True)

    def __call__(
        self, model: Model, params: Params, x: Any, targets: Any, *, mask: Any = None, state0: ModelState | None = None
    ) -> Gradient:
        return randomized_bptt(
            model, params, x, targets, self.c, self.rng, mask=mask, state0=state0, reweight=self.reweight
        )


@register
class ARTBP(RandomTruncation):
    """Randomized truncation with the surviving messages reweighted by 1 / (1 - c): an unbiased
    estimate of full BPTT's gradient over each batch (Tallec & Ollivier 2017's estimator;
    `randomized_bptt(..., reweight=True)`). `OnlineARTBP` is the online form over a stream."""

    name = "artbp"
    reweight = True


class OnlineARTBP:
    """ARTBP online over a stream (Tallec & Ollivier 2017): the network runs continually, its
    state carried on; truncation points are drawn in the forward pass, and at each one the
    segment since the previous truncation is backpropagated with its messages reweighted, and
    the weights may be updated before the stream goes on.

        algo = OnlineARTBP(model, c=1/32, rng=np.random.default_rng(0))
        t = 0
        while t < T:
            L = algo.draw_length(T - t)          # steps until the next truncation (or the end)
            g = algo(params, x[t:t+L], y[t:t+L])  # that segment's reweighted gradient
            params = update(params, g.grads)     # online: the next segment uses new weights
            t += L

    c: the truncation probability, a number in [0, 1) or a function of the current segment's
    length: c(L) is the probability of a truncation after a segment has run L steps (L >= 1),
    e.g. growing with L to bound the memory on average. Where no truncation was drawn after
    L steps, the message crossing that point backwards is multiplied by 1 / (1 - c(L)); each
    such factor has mean 1, the draws do not depend on the data, so the gradient summed over
    the segments is an unbiased estimate of full BPTT's (with the weights held fixed; with
    updates between segments it is the online approximation, as for TBPTT). The truncations are
    shared by the B streams of a batch, so that all streams update together. Draws come from
    `rng` only. With the same draws, the segment gradients summed (weighted by positions) equal
    `randomized_bptt` with `factors` = `self.factors(lengths)`.
    """

    def __init__(self, model: Model, c: Any, rng: np.random.Generator) -> None:
        check_streamable(model, "artbp")
        if callable(c):
            self.c = c
        else:
            if isinstance(c, bool) or not isinstance(c, (int, float, np.floating)) or not 0 <= c < 1:
                raise BpttError(f"c: expected a number in [0, 1) or a function of the segment length, received {c!r}")
            self.c = lambda L, _c=float(c): _c
        self.model, self.rng = model, generator("artbp rng", rng)
        self.state: ModelState | None = None
        self.batch: int | None = None

    def prob(self, L: int) -> float:
        """c(L), checked: a truncation after L steps needs probability in [0, 1)."""
        raw = self.c(L)
        try:
            p = float(raw)
        except (TypeError, ValueError):
            p = float("nan")  # (c(L) not a number: refused below)
        if not 0.0 <= p < 1.0:
            raise BpttError(f"c: expected c({L}) in [0, 1) (a truncation must be possible to skip), received {raw!r}")
        return p

    def draw_length(self, limit: int) -> int:
        """The next segment's length: steps run until a truncation is drawn, at most `limit`
        (where the data ends; no truncation is drawn there)."""
        limit = int(limit)
        if limit < 1:
            raise BpttError(f"limit: expected at least 1 step, received {limit}")
        L = 1
        while L < limit and not self.rng.random() < self.prob(L):
            L += 1
        return L

    def factors(self, L: int) -> np.ndarray:
        """(L,) factors on a segment's backward messages: 0 out of its first step (the
        truncation before it), 1 / (1 - c(i)) out of step i = 1 .. L-1 of the segment."""
        return np.array([0.0] + [1.0 / (1.0 - self.prob(i)) for i in range(1, L)])

    def reset(self) -> None:
        """Start the streams over from zeros."""
        self.state, self.batch = None, None

    def start_from(self, state: ModelState) -> None:
        """Start the streams over from a given state."""
        self.state = dict(state)
        self.batch = next(iter(state.values()))[0].shape[0]

    def __call__(self, params: Params, x: Any, targets: Any, mask: Any = None) -> Gradient:
        """The gradient of one segment (x: its L steps), from the carried state."""
        model = self.model
        check_carried_batch(self.batch if self.state is not None else None, x)
        b = model.check_batch(params, x, targets, mask, self.state)
        L, B = b.x.shape[:2]
        scale = np.broadcast_to(self.factors(L)[:, None], (L, B))
        y, final, tapes = model.forward_levels(params, b.x, b.mask, b.state0, keep=True)
        loss, dy = model.loss_fn.value_and_grad(y, b.targets, b.mask)
        grads = model.zero_grads(params)
        dstate0 = model.backward_levels(params, tapes, dy, None, grads, partial(scan_backward, scale=scale))
        self.state, self.batch = final, B
        return Gradient(loss, grads, dstate0, final)
