"""Full backpropagation through time.

Forward: every level runs over all T steps; each step keeps its cache (what its backward step
needs, nothing more). Backward: the loss gradient enters at every step that carries a loss; each
recurrent level's error signal runs from t = T down to t = 1 starting from delta(T+1) = 0, and
every shared weight's gradient is the sum of its per-step contributions (Werbos 1990; Rumelhart,
Hinton & Williams 1986). Memory is O(T) caches per level.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from ..cells.base import Params

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
    y, final, tapes = model.forward_levels(params, b.x, b.mask, b.state0, keep=True)
    loss, dy = model.loss_fn.value_and_grad(y, b.targets, b.mask)
    grads = model.zero_grads(params)
    dstate0 = model.backward_levels(params, tapes, dy, None, grads)
    model.add_init_grads(grads, dstate0, b.given)
    return Gradient(loss, grads, dstate0, final)
