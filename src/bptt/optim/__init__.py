"""Optimizers: how a gradient becomes an update, as composable transforms (see base.py).

Ready-made optimizers (each a Transform):

    sgd(lr, momentum=0, nesterov=False)   adagrad(lr)   rmsprop(lr)   adam(lr)
    rprop(lr)   quickprop(lr, mu)

and `make_optimizer(...)` builds the chain the trainer uses: clipping, the optimizer, the
learning-rate schedule, guarded against non-finite gradients.
"""

from __future__ import annotations

from ..errors import one_of
from .base import (
    ChainState,
    Transform,
    apply_updates,
    chain,
    find_states,
    flatten_state,
    global_norm,
    observe,
    replace_states,
    unflatten_state,
)
from .schedules import Schedule, constant, warmup_cosine
from .transforms import (
    ClipState,
    PlateauState,
    QuickpropState,
    RpropState,
    ScaleByLRState,
    SkipState,
    add_decayed_weights,
    clip_by_global_norm,
    clip_by_value,
    quickprop,
    reduce_on_plateau,
    rprop,
    scale_by_adagrad,
    scale_by_adam,
    scale_by_learning_rate,
    scale_by_rms,
    skip_nonfinite,
    trace,
)


def sgd(lr, momentum: float = 0.0, nesterov: bool = False) -> Transform:
    """Gradient descent, with (classic or Nesterov) momentum if momentum > 0."""
    if momentum:
        return chain(trace(momentum, nesterov), scale_by_learning_rate(lr))
    return scale_by_learning_rate(lr)


def adagrad(lr, eps: float = 1e-10) -> Transform:
    return chain(scale_by_adagrad(eps), scale_by_learning_rate(lr))


def rmsprop(lr, decay: float = 0.99, eps: float = 1e-8) -> Transform:
    return chain(scale_by_rms(decay, eps), scale_by_learning_rate(lr))


def adam(lr, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0) -> Transform:
    """Adam; with weight_decay > 0, decoupled weight decay (AdamW, Loshchilov & Hutter 2019)."""
    parts = [scale_by_adam(b1, b2, eps)]
    if weight_decay:
        parts.append(add_decayed_weights(weight_decay))
    return chain(*parts, scale_by_learning_rate(lr))


OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "rprop", "quickprop")


def make_optimizer(
    name: str,
    lr,
    clip: float | None = None,
    clip_value: float | None = None,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    plateau: tuple[float, int] | None = None,
) -> Transform:
    """The trainer's optimizer: skip_nonfinite(chain(clip?, <name>, reduce_on_plateau?)).

    name: one of OPTIMIZERS; lr: a number or a schedule; clip: max global norm; clip_value:
    elementwise limit; plateau: (factor, patience) of reduce_on_plateau, which the trainer feeds
    each validation loss (`observe`). rprop and quickprop take lr as their initial step / gradient rate and
    ignore schedules after the first step (they set their own steps)."""
    if name not in OPTIMIZERS:
        raise one_of("optimizer", name, OPTIMIZERS)
    first_lr = lr(0) if callable(lr) else float(lr)
    core = {
        "sgd": lambda: sgd(lr),
        "momentum": lambda: sgd(lr, momentum),
        "nesterov": lambda: sgd(lr, momentum, nesterov=True),
        "adagrad": lambda: adagrad(lr),
        "rmsprop": lambda: rmsprop(lr),
        "adam": lambda: adam(lr, weight_decay=weight_decay),
        "rprop": lambda: rprop(first_lr),
        "quickprop": lambda: quickprop(first_lr),
    }[name]()
    parts = []
    if clip:
        parts.append(clip_by_global_norm(clip))
    if clip_value:
        parts.append(clip_by_value(clip_value))
    parts.append(core)
    if plateau is not None:
        parts.append(reduce_on_plateau(*plateau))
    return skip_nonfinite(chain(*parts))


__all__ = [
    "ChainState",
    "ClipState",
    "OPTIMIZERS",
    "QuickpropState",
    "RpropState",
    "ScaleByLRState",
    "Schedule",
    "SkipState",
    "Transform",
    "adagrad",
    "adam",
    "add_decayed_weights",
    "apply_updates",
    "chain",
    "clip_by_global_norm",
    "clip_by_value",
    "constant",
    "find_states",
    "flatten_state",
    "global_norm",
    "make_optimizer",
    "observe",
    "PlateauState",
    "quickprop",
    "reduce_on_plateau",
    "replace_states",
    "rmsprop",
    "rprop",
    "scale_by_adagrad",
    "scale_by_adam",
    "scale_by_learning_rate",
    "scale_by_rms",
    "sgd",
    "skip_nonfinite",
    "trace",
    "unflatten_state",
    "warmup_cosine",
]
