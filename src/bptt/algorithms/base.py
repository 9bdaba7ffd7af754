"""What every gradient algorithm returns and how it is called, and the registry of them by name.

One interface: an algorithm is an object made with its own options (`make("tbptt", k1=20,
k2=50)`) and called on a batch,

    g = algo(model, params, x, targets, *, mask=None, state0=None)    # -> Gradient

so that any two can be compared on the same parameters, data and initial state (the tests'
equivalence matrix, `bptt experiment`, the trainer). A stateful algorithm (`stateful = True`:
TBPTT's window history, a forward-in-time algorithm's sensitivities) carries what the next
call on the same stream needs; `reset()` starts a new stream, and `state0` given to a call
starts it from that state. The registry's names are those of `bptt train --algorithm`.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import numpy as np

from ..cells.base import Params
from ..errors import BpttError, one_of

if TYPE_CHECKING:
    from ..model import Model, ModelState


def carried_batch(state: Any) -> int | None:
    """The number of streams a carried state (ModelState) holds, or None (no state)."""
    for s in (state or {}).values():
        return int(np.shape(s[0])[0])
    return None


def refuse_learned_start(name: str, model: Model) -> None:
    """A stream continued from its carried state on a model that learns its initial states:
    the carried state stands for the past, not the learned one, so h0's part of the segment's
    gradient would be left out. One BpttError."""
    if any(lv.learn_init for lv in model.recurrent_levels):
        raise BpttError(
            f"{name}: expected a model without learned initial states (learn_init=False) to continue "
            "a stream, received a model with learn_init=True; call reset() (or give state0) before each "
            "sequence, or learn no initial state"
        )


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


class Algorithm:
    """Base class of the registered gradient algorithms (see the module docstring)."""

    name: ClassVar[str]
    stateful: ClassVar[bool] = False

    def __call__(
        self, model: Model, params: Params, x: Any, targets: Any, *, mask: Any = None, state0: ModelState | None = None
    ) -> Gradient:
        raise NotImplementedError

    def reset(self) -> None:
        """Start a new stream (nothing to forget for a stateless algorithm)."""

    def history(self) -> tuple[Any, dict[str, Any]] | None:
        """What a stateful algorithm's next calls need besides the carried state, as a JSON
        description and named arrays for a checkpoint (None: nothing)."""
        return None

    def restore(
        self, model: Model, state: ModelState, desc: Any, arrays: dict[str, Any], params: Params, where: str = "history"
    ) -> None:
        """Continue from a checkpoint's `history()` (checked against the model)."""
        raise BpttError(f"{where}: expected no saved history for algorithm {self.name!r}, received one")

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={getattr(self, k)!r}" for k in _options(type(self)) if hasattr(self, k))
        return f"{type(self).__name__}({opts})"


REGISTRY: dict[str, type[Algorithm]] = {}


def register(cls: type[Algorithm]) -> type[Algorithm]:
    """Add an algorithm class to the registry under its `name`."""
    REGISTRY[cls.name] = cls
    return cls


def _options(cls: type) -> list[str]:
    return (
        [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        if cls.__init__ is not object.__init__
        else []
    )


def make(name: str, **options: Any) -> Algorithm:
    """The registered algorithm `name` with its options, e.g. make("artbp", c=0.1, rng=rng)."""
    if name not in REGISTRY:
        raise one_of("algorithm", name, sorted(REGISTRY))
    cls = REGISTRY[name]
    allowed = _options(cls)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise BpttError(f"algorithm {name!r}: expected options among {allowed}, received {unknown}")
    return cls(**options)


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
