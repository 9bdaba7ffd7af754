"""Forward-mode products of one model step: the tangent of the state after a step from the
tangent of the state before it, the parameters and the input held.

Write S(t) = F(S(t-1), theta, x(t)) for one step of the whole model (every recurrent direction's
state; bptt.algorithms.forward). `step_jvp` gives A(t) v = dS(t)/dS(t-1) v in one pass over the
levels, each cell's `step_jvp` (O(n^2) a step: a product with W_hh per level) instead of the n
vector-Jacobian products that build A row by row. It is exactly the transpose of the model's
one-step backward (`Model.backward_levels` with a zero output gradient), spiking cells through
the same surrogate, so <u, A v> = <A^T u, v>:

    level l recurrent:   dxp = dx W_ih^T          (dx: the tangent of the level's input; none at the
                                                    model's input, tokens or floats: x is held)
                         (dS_l(t), dout) = cell.step_jvp(cache_t, dS_l(t-1), dxp)
    held (mask False):   dS_l(t) = dS_l(t-1)   (its output is zero; every level holds the same rows)
    level l feed-forward: dy = level.forward_jvp(cache, dx)   (Dense: f' * (dx W^T); rate: dx)

and dout is the next level's dx. Levels above the last recurrent one are not visited (the state
does not depend on them).

    y, S1, tapes = model.forward_levels(params, x_t, m_t, S0, keep=True)   # x_t (1, B, ...)
    dS1 = step_jvp(model, params, tapes, dS0)

The step's caches are read through the tape as the backward scan reads them (`tape.caches[0]`),
so the tapes of bptt.fast's float32 scans serve as well, until a consumed backward scan has
released them. Tangents are computed in the model's dtype.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .cells.base import Params, state_map
from .errors import BpttError

if TYPE_CHECKING:
    from .model import Model, ModelState

__all__ = ["step_jvp"]


def _tangent_in(d: Any, cell: Any, given: Any, B: int, dtype: np.dtype) -> Any:
    """The tangent of a direction's previous state: the given one (checked, in `dtype`) or zeros."""
    if given is None:
        return cell.zero_state(B, dtype)
    if not isinstance(given, cell.State):
        raise BpttError(f"dstate[{d.key!r}]: expected {cell.State.__name__}, received {type(given).__name__}")
    fields = []
    for f, n in cell.state_sizes().items():
        a = np.asarray(getattr(given, f), dtype=dtype)
        if a.shape != (B, n):
            raise BpttError(f"dstate[{d.key!r}].{f}: expected shape {(B, n)}, received {a.shape}")
        fields.append(a)
    return cell.State(*fields)


def step_jvp(model: Model, params: Params, tapes: list, dstate: ModelState) -> ModelState:
    """The tangent of every direction's state after ONE step, from `dstate`, the tangent of each
    direction's state before it (missing keys: zero), with the parameters and the input held
    (module docstring). `tapes`: what `model.forward_levels(params, x_t, m_t, state, keep=True)`
    returned for that step (x_t of shape (1, B, ...)). Returns fresh arrays, every key."""
    if model.bidirectional:
        raise BpttError(
            "step_jvp: expected a unidirectional model, received a bidirectional one (its reverse direction runs back in time)"
        )
    dstate = {} if dstate is None else dstate
    if not isinstance(dstate, dict):
        raise BpttError(f"dstate: expected a dict keyed by {model.state_keys()}, received {type(dstate).__name__}")
    unknown = sorted(set(dstate) - set(model.state_keys()))
    if unknown:
        raise BpttError(f"dstate: expected keys among {model.state_keys()}, received {unknown}")
    if not isinstance(tapes, list) or len(tapes) != len(model.levels):
        got = f"a list of {len(tapes)}" if isinstance(tapes, list) else type(tapes).__name__
        raise BpttError(
            f"tapes: expected one part per level ({len(model.levels)}, forward_levels with keep=True), received {got}"
        )
    dtype = params[next(iter(model.param_shapes()))].dtype
    last = max(i for i, lv in enumerate(model.levels) if lv.recurrent)
    lost = [i for i, (lv, tape) in enumerate(zip(model.levels[: last + 1], tapes)) if lv.recurrent and tape is None]
    if lost:
        raise BpttError(f"tapes: expected the tapes of forward_levels with keep=True, received none for levels {lost}")
    out: ModelState = {}
    dx: np.ndarray | None = None  # the tangent of the level's input (B, D); None: zero
    for i, (lv, tape) in enumerate(zip(model.levels[: last + 1], tapes)):
        if not lv.recurrent:
            if dx is not None:
                dx = lv.forward_jvp(lv.sub(params), tape, dx[None])[0]
            continue
        x, dir_tapes = tape
        (d,), (dtape,) = lv.directions, dir_tapes
        cell, p = d.cell, lv.sub(params, d.prefix)
        if len(dtape.caches) != 1:
            raise BpttError(f"tapes[{i}]: expected the tape of one time step, received {len(dtape.caches)} steps")
        B = x.shape[1]
        prev = _tangent_in(d, cell, dstate.get(d.key), B, dtype)
        mask = None if dtape.mask is None else dtape.mask[0]
        if mask is not None and not mask.any():  # every sequence holds its state (no cache), here and above
            out[d.key] = state_map(np.copy, prev)
            dx = None
            continue
        cache = dtape.caches[0]
        if cache is None and dtape.aux is not None:  # a compiled scan's tape, released by its consumed backward
            raise BpttError(
                f"tapes[{i}]: expected the step's caches, received a tape a consumed backward scan has released"
            )
        dxp = None if dx is None else (dx @ p["W_ih"].T).astype(dtype, copy=False)
        new, dout = cell.step_jvp(p, cache, prev, dxp)
        if mask is not None and not mask.all():
            # held sequences keep their tangent; their output rows (held at zero) reach only held rows above
            m = mask[:, None]  # (B, 1)
            new = state_map(lambda a, b: np.where(m, a, b), new, prev)
        out[d.key] = new
        dx = dout
    return out
