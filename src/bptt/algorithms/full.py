"""Full backpropagation through time.

Forward: every level runs over all T steps; each step keeps its cache (what its backward step
needs, nothing more). Backward: the loss gradient enters at every step that carries a loss; each
recurrent level's error signal runs from t = T down to t = 1 starting from delta(T+1) = 0, and
every shared weight's gradient is the sum of its per-step contributions (Werbos 1990; Rumelhart,
Hinton & Williams 1986). Memory is O(T) caches per level.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple

from .. import ops
from ..cells.base import Params
from ..errors import BpttError
from ..scan import scan_backward

if TYPE_CHECKING:  # the model imports the time loops from this package
    from ..model import Model, ModelState


class Gradient(NamedTuple):
    """Result of a gradient algorithm on one batch or segment.

    loss: the loss, averaged over the counted positions;
    grads: dL/dparams, same keys and shapes as params;
    dstate0: dL/d(initial state) per direction key (the state each direction started from);
    final_state: the state after the last step, to carry into the next segment.
    """

    loss: float
    grads: Params
    dstate0: ModelState
    final_state: ModelState


def full_bptt(
    model: Model,
    params: Params,
    x: Any,
    targets: Any,
    mask: Any = None,
    state0: ModelState | None = None,
) -> Gradient:
    """Loss and exact gradient by full BPTT.

    x: (T, B, D) floats of the params' dtype, or (T, B) integer tokens; targets: (T, B) class
    ids or (T, B, O) floats for at='every', (B,) or (B, O) for at='last'; mask: (T, B) bool
    (state held and loss skipped where False); state0: initial state per direction key
    (default: learned or zeros). float32 stays float32 and float64 stays float64 throughout."""
    b = model.check_batch(params, x, targets, mask, state0)
    with ops.step_context(model, params, b.mask):  # where the step's work may be split between cores
        y, final, tapes = model.forward_levels(params, b.x, b.mask, b.state0, keep=True)
        loss, dy = model.loss_fn.value_and_grad(y, b.targets, b.mask)
        grads = model.zero_grads(params)
        # the tapes are used once (scan_backward consume=True: a compiled scan may reuse their buffers)
        dstate0 = model.backward_levels(params, tapes, dy, None, grads, partial(scan_backward, consume=True))
    model.add_init_grads(grads, dstate0, b.given)
    return Gradient(loss, grads, dstate0, final)


class GradientMean:
    """Segment gradients combined into the gradient of the average loss over all their counted
    positions: each weighted by its share of the positions (accumulated in float64, cast back
    once). Used for a stream cut into segments with the weights fixed (TBPTT windows, a pass of
    batch updates). `result` keeps the first segment's dstate0 and the last one's final state."""

    def __init__(self) -> None:
        self.total, self.loss = 0.0, 0.0
        self.grads: dict | None = None
        self.first: Gradient | None = None
        self.last: Gradient | None = None

    def add(self, g: Gradient, positions: float) -> None:
        w = float(positions)
        if self.grads is None:
            self.grads, self.first = {k: w * v.astype("float64") for k, v in g.grads.items()}, g
        else:
            for k, v in g.grads.items():
                self.grads[k] += w * v
        self.total += w
        self.loss += w * g.loss
        self.last = g

    def result(self, params: Params) -> Gradient:
        if self.grads is None or not self.total > 0:
            raise BpttError("GradientMean: expected at least one segment with counted positions, received none")
        if self.first is self.last:  # the mean of one segment is that segment, bit for bit
            return self.first
        grads = {k: (v / self.total).astype(params[k].dtype) for k, v in self.grads.items()}
        return Gradient(self.loss / self.total, grads, self.first.dstate0, self.last.final_state)
