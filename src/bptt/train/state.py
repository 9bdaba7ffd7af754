"""A run's state between updates, and the guard that keeps it finite."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import optim
from ..algorithms import Gradient
from ..cells.base import Params
from ..errors import BpttError
from . import checkpoint as ckpt


@dataclass
class TrainState:
    """Everything a checkpoint holds of a run in progress."""

    params: Params
    opt_state: Any
    rng: np.random.Generator
    carried: Any  # the recurrent state carried into the next batch (streams), or None
    step: int
    trackers: dict[str, Any]  # best, since_best, train_seconds, skipped, first_loss


EXPLODED = 100  # a loss over this many times the run's first one: the weights have diverged


class Guard:
    """A non-finite loss or gradient never updates the parameters; neither does an update that
    would leave a non-finite weight or optimizer state, or one from weights whose loss exploded
    (over EXPLODED times the run's first). Such an update is skipped (and counted); `diverged`
    after `limit` in a row."""

    def __init__(self, optimizer: optim.Transform, limit: int) -> None:
        self.optimizer, self.limit, self.in_a_row = optimizer, limit, 0

    def update(self, g: Gradient, s: TrainState) -> str | None:
        """Apply g to s (params, optimizer state); the reason it was skipped, or None."""
        first = s.trackers["first_loss"]
        reason = None
        if not (math.isfinite(g.loss) and finite(g.grads)):
            reason = "non-finite loss or gradient"
        elif first is not None and g.loss > EXPLODED * max(first, 1e-3):
            reason = f"loss of {g.loss:.4g}, over {EXPLODED}x the first update's {first:.4g}"
        else:
            updates, opt_state = self.optimizer.update(g.grads, s.opt_state, s.params)
            params = optim.apply_updates(s.params, updates)
            if finite(params) and _stays_finite(optim.flatten_state(s.opt_state), optim.flatten_state(opt_state)):
                s.params, s.opt_state = params, opt_state
            else:
                reason = "non-finite weights after the update"
        if first is None and math.isfinite(g.loss):
            s.trackers["first_loss"] = g.loss
        self.in_a_row = self.in_a_row + 1 if reason else 0
        if reason:
            s.trackers["skipped"] = s.trackers.get("skipped", 0) + 1
        return reason

    @property
    def diverged(self) -> bool:
        return self.in_a_row >= self.limit


def restore_carried(c: ckpt.Checkpoint, params: Params, path: str, model: Any, streams: int | None):
    """The carried recurrent state of a checkpoint, checked against the model (and, on streams,
    the number of streams); None if it has none."""
    if not c.state:
        return None
    B = next(iter(next(iter(c.state.values())).values())).shape[0]
    if streams is not None and B != streams:
        raise BpttError(f"batch_size: expected {B} (the streams of the run's carried state), received {streams}")
    template, _ = model.initial_state(params, B)
    if sorted(c.state) != sorted(template):
        raise BpttError(
            f"checkpoint {path!r}: state: expected the carried state of {sorted(template)}, received {sorted(c.state)}"
        )
    carried = {}
    for k, s in template.items():
        fields = c.state[k]
        for f, ref in zip(s._fields, s):
            a = fields.get(f)
            if a is None or a.shape != ref.shape or a.dtype != ref.dtype or not np.isfinite(a).all():
                got = (
                    "none"
                    if a is None
                    else f"{a.dtype}{a.shape}" + ("" if np.isfinite(a).all() else " with NaN or inf")
                )
                raise BpttError(
                    f"checkpoint {path!r}: state/{k}/{f}: expected finite {ref.dtype}{ref.shape}, received {got}"
                )
        carried[k] = type(s)(*(fields[f] for f in s._fields))
    return carried


def _stays_finite(before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> bool:
    """No optimizer state entry became NaN or infinite in the update. An entry that starts
    infinite by design stays allowed as it was (reduce_on_plateau's best loss before the first
    evaluation is +inf: counting it made every update of a --plateau-patience run a skip)."""
    for k, a in after.items():
        ok = np.isfinite(a)
        if not ok.all():
            b = before.get(k)
            if b is None or np.shape(b) != np.shape(a) or not (ok | (a == b)).all():
                return False
    return True


def finite(tree) -> bool:
    """Every array in a dict / NamedTuple / nested structure of arrays is finite (None is)."""
    if tree is None:
        return True
    if isinstance(tree, dict):
        return all(finite(v) for v in tree.values())
    if isinstance(tree, (tuple, list)):
        return all(finite(v) for v in tree)
    a = np.asarray(tree)
    return a.dtype.kind not in "fc" or bool(np.isfinite(a).all())
