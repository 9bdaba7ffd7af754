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
1, so the estimate stays unbiased.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from ..cells.base import Params
from .full import Gradient
from .scan import scan_backward

if TYPE_CHECKING:
    from ..model import Model, ModelState


def truncation_factors(
    T: int, B: int, c: Any, rng: np.random.Generator, reweight: bool = True
) -> np.ndarray:
    """(T, B) factors on the backward messages: 0 where a truncation is drawn (probability c_t),
    1 / (1 - c_t) (or 1 without reweighting) elsewhere. c: a number or a (T,) array in [0, 1)."""
    cs = np.broadcast_to(np.asarray(c, dtype=np.float64), (T,)) if np.ndim(c) == 0 else np.asarray(c, np.float64)
    if cs.shape != (T,) or not np.all((cs >= 0) & (cs < 1)):
        raise ValueError(
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
        raise ValueError(f"factors: expected shape {(T, B)}, received {np.shape(factors)}")
    y, final, tapes = model.forward_levels(params, b.x, b.mask, b.state0, keep=True)
    loss, dy = model.loss_fn.value_and_grad(y, b.targets, b.mask)
    grads = model.zero_grads(params)
    dstate0 = model.backward_levels(params, tapes, dy, None, grads, partial(scan_backward, scale=factors))
    model.add_init_grads(grads, dstate0, b.given)
    return Gradient(loss, grads, dstate0, final)
