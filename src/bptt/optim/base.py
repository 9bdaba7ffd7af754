"""Optimizers as composable gradient transformations (in the style of optax).

A transformation is a pair of plain functions with explicit state:

    state = t.init(params)
    updates, state = t.update(grads, state, params)
    params = apply_updates(params, updates)          # params + updates

`chain(t1, t2, ...)` feeds the updates of t1 into t2, and so on. Nothing is hidden: the state is
a NamedTuple of arrays and numbers that `flatten_state` turns into a flat dict for a checkpoint
and `unflatten_state` restores.

Scalars are kept as Python floats so that a float32 model stays float32 (NumPy 2 promotes a
float32 array times a NumPy float64 scalar to float64; times a Python float it stays float32).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from ..errors import BpttError

Params = dict[str, np.ndarray]


class Transform(NamedTuple):
    init: Callable[[Params], Any]
    update: Callable[[Params, Any, Params], tuple[Params, Any]]
    # a transform that reacts to a monitored value (a validation loss): state -> new state
    observe: Callable[[Any, float], Any] | None = None


def observe(t: Transform, state: Any, value: float) -> Any:
    """`t`'s state after it has seen a monitored value (a validation loss); unchanged for
    transforms that do not watch one (optax's reduce_on_plateau takes the value the same way)."""
    return t.observe(state, value) if t.observe is not None else state


class ChainState(NamedTuple):
    states: tuple


def chain(*transforms: Transform) -> Transform:
    """Apply transforms in order; each sees the previous one's updates."""

    def init(params: Params) -> ChainState:
        return ChainState(tuple(t.init(params) for t in transforms))

    def update(grads: Params, state: ChainState, params: Params) -> tuple[Params, ChainState]:
        new = []
        for t, s in zip(transforms, state.states):
            grads, s = t.update(grads, s, params)
            new.append(s)
        return grads, ChainState(tuple(new))

    def watch(state: ChainState, value: float) -> ChainState:
        return ChainState(tuple(observe(t, s, value) for t, s in zip(transforms, state.states)))

    return Transform(init, update, watch)


def apply_updates(params: Params, updates: Params) -> Params:
    """params + updates, as new arrays of the params' dtype."""
    return {k: (p + updates[k]).astype(p.dtype, copy=False) for k, p in params.items()}


def tree_map(fn: Callable[[np.ndarray], np.ndarray], tree: Params) -> Params:
    return {k: fn(v) for k, v in tree.items()}


def global_norm(tree: Params) -> float:
    """sqrt(sum of squares over all arrays): each array's by BLAS's dot in its own dtype, the
    sum over arrays in float64; a float32 array whose squares overflow float32 (from about 2e19)
    again in float64, so that the norm is inf only where float64's is."""
    total = 0.0
    with np.errstate(over="ignore"):  # (an overflow is done again in float64, not a warning)
        for v in tree.values():
            a = v.reshape(-1)
            part = float(np.dot(a, a))
            if part == np.inf and a.dtype != np.float64:
                a = a.astype(np.float64)
                part = float(np.dot(a, a))
            total += part
    return float(np.sqrt(total))


# ---- state (de)serialisation for checkpoints --------------------------------------------------
def flatten_state(state: Any, prefix: str = "opt") -> dict[str, np.ndarray]:
    """Flatten nested NamedTuples / tuples / dicts of arrays and numbers to {path: array}."""
    out: dict[str, np.ndarray] = {}

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{path}/{k}")
        elif isinstance(node, tuple) and hasattr(node, "_fields"):
            for f, v in zip(node._fields, node):
                walk(v, f"{path}/{f}")
        elif isinstance(node, tuple):
            for i, v in enumerate(node):
                walk(v, f"{path}/{i}")
        elif node is None:
            pass
        else:
            out[path] = np.asarray(node)

    walk(state, prefix)
    return out


def unflatten_state(template: Any, flat: dict[str, np.ndarray], prefix: str = "opt") -> Any:
    """Rebuild a state shaped like `template` (from init) from flatten_state's dict.

    Raises ValueError naming the first entry that is missing or of the wrong shape/dtype."""

    def build(node: Any, path: str) -> Any:
        if isinstance(node, dict):
            return {k: build(v, f"{path}/{k}") for k, v in node.items()}
        if isinstance(node, tuple) and hasattr(node, "_fields"):
            return type(node)(*(build(v, f"{path}/{f}") for f, v in zip(node._fields, node)))
        if isinstance(node, tuple):
            return tuple(build(v, f"{path}/{i}") for i, v in enumerate(node))
        if node is None:
            return None
        if path not in flat:
            raise BpttError(f"optimizer state: expected entry {path!r}, received none")
        a = flat[path]
        ref = np.asarray(node)
        if a.shape != ref.shape or a.dtype != ref.dtype:
            raise BpttError(f"optimizer state {path!r}: expected {ref.dtype}{ref.shape}, received {a.dtype}{a.shape}")
        # values too: a NaN would skip every update, a negative count make the rate negative
        if a.dtype.kind == "f" and (np.isnan(a) | (np.isinf(a) & np.isfinite(ref))).any():
            raise BpttError(
                f"optimizer state {path!r}: expected finite floats (infinite only where a new state has them), "
                "received NaN or inf"
            )
        if a.dtype.kind in "iu" and not isinstance(node, (bool, np.bool_)) and (a < 0).any():
            raise BpttError(f"optimizer state {path!r}: expected a count of at least 0, received {a.min()}")
        if isinstance(node, (bool, np.bool_)):
            return bool(a)
        if isinstance(node, (int, np.integer)):
            return int(a)
        if isinstance(node, float):
            return float(a)
        return a.copy()

    return build(template, prefix)


def find_states(state: Any, cls: type) -> list:
    """All sub-states of type `cls` inside a (chained) state, in order."""
    found = []

    def walk(node: Any) -> None:
        if isinstance(node, cls):
            found.append(node)
        if isinstance(node, tuple):
            for v in node:
                walk(v)

    walk(state)
    return found


def replace_states(state: Any, cls: type, fn: Callable[[Any], Any]) -> Any:
    """A copy of `state` with every sub-state of type `cls` replaced by fn(sub-state)."""
    if isinstance(state, cls):
        return fn(state)
    if isinstance(state, tuple) and hasattr(state, "_fields"):
        return type(state)(*(replace_states(v, cls, fn) for v in state))
    if isinstance(state, tuple):
        return tuple(replace_states(v, cls, fn) for v in state)
    return state
