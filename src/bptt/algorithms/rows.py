"""Runs of batch rows side by side: the forward steps, loss and backward steps of a stretch of
time over a run of the batch's rows on each of a step's threads, each run into a gradient of its
own, the gradients added in a fixed order at the end.

Where a step's work is split between cores (bptt.fast's engine, float32) and its recurrent
cells' scans split by batch rows (their recurrent weights fit a core's cache: ops.row_runs),
the rows of a batch never meet: each row's states, outputs, loss and backward message depend
on that row alone (every level row-wise, no mask). So instead of handing off each scan and
each product of the step between the threads (a meeting each time, and the work between them
on one thread: the loss, the index sums, Python), each thread runs the whole stretch for its
rows. Full BPTT runs a whole step so (full.py), memory-budgeted BPTT its long recorded
segments (budget.py).

What equals what. A run's states, losses and backward messages are those of its rows in the
whole batch; a weight gradient is the sum of the runs' sums over their rows, added in the runs'
order whichever thread ran which, so the numbers are the same from one step to the next, and
differ from one thread's (one sum over all rows) by float32 rounding.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import ops
from ..cells.base import Params
from ..scan import scan_backward

if TYPE_CHECKING:
    from ..model import Model, ModelState


def runs(model: Model, params: Params, b: Any, steps: int) -> list[tuple[int, int]] | None:
    """The runs of rows (b0, b1), one a thread, for `steps` steps of checked batch b, or None
    (one thread, a mask, a level that sees the whole batch, cells whose scans do not split by
    rows, or too little work to pay for it: ops.row_runs)."""
    if b.mask is not None or not all(lv.rowwise for lv in model.levels):
        return None
    return ops.row_runs(model, params, None, b.x.shape[1], steps)


def side_by_side(
    model: Model,
    params: Params,
    b: Any,
    a: int,
    e: int,
    spans: list[tuple[int, int]],
    state: ModelState,
    dstate: ModelState | None,
    n: int,
    grads: list[Params],
    t0: int = 0,
    measure: Callable[[Any], int] | None = None,
) -> tuple[float, ModelState, ModelState, int]:
    """Steps a .. e-1 of checked batch b recorded and backpropagated as runs of rows `spans`
    side by side (ops.side_by_side), run i into grads[i], from `state` at a and the state
    gradient `dstate` at e (None: zero): (their loss summed, each position's loss over n; the
    state gradient at a; the state at e; the bytes `measure` counts in their tapes, 0 without)."""
    calls = [
        partial(_run, model, params, b, a, e, r, state, dstate, n, grads[i], t0, measure) for i, r in enumerate(spans)
    ]
    out = ops.side_by_side(calls)
    return sum(o[0] for o in out), _cat([o[1] for o in out]), _cat([o[2] for o in out]), sum(o[3] for o in out)


def add_into(grads: list[Params]) -> Params:
    """The runs' gradients added into the first, in order."""
    for g in grads[1:]:
        for k in grads[0]:
            grads[0][k] += g[k]
    return grads[0]


def _run(
    model: Model,
    params: Params,
    b: Any,
    a: int,
    e: int,
    rows: tuple[int, int],
    state: ModelState,
    dstate: ModelState | None,
    n: int,
    grads: Params,
    t0: int,
    measure: Callable[[Any], int] | None,
) -> tuple[float, ModelState, ModelState, int]:
    """Steps a .. e-1 of batch rows b0 .. b1-1 recorded and backpropagated, into `grads`."""
    r = slice(*rows)
    y, last, tapes = model.forward_levels(params, b.x[a:e, r], None, _rows_of(state, r), keep=True, t0=t0 + a)
    size = measure(tapes) if measure is not None else 0
    targets = b.targets[:, r] if model.loss_fn.at == "every" else b.targets[r]
    part, dy = model.loss_fn.segment(y, targets, None, a, b.x.shape[0], n)
    del y
    d0 = model.backward_levels(params, tapes, dy, None if dstate is None else _rows_of(dstate, r), grads, consume)
    return part, d0, compact(last), size


def consume(cell, params, tape, douts, dstate, grads, scale=None):
    """scan_backward on tapes used once (a compiled scan may reuse their buffers)."""
    return scan_backward(cell, params, tape, douts, dstate, grads, scale=scale, consume=True)


def compact(state: ModelState) -> ModelState:
    """A state of arrays of its own (a scan's final state may be a row of its buffers, which
    would stay held with it)."""
    return {k: type(v)(*(np.array(a, copy=True) for a in v)) for k, v in state.items()}


def _rows_of(state: ModelState, r: slice) -> ModelState:
    """Batch rows r of a model state (views)."""
    return {k: type(s)(*(v[r] for v in s)) for k, s in state.items()}


def _cat(states: list[ModelState]) -> ModelState:
    """States of runs of rows, joined along the batch."""
    return {k: type(s)(*(np.concatenate(f) for f in zip(*(st[k] for st in states)))) for k, s in states[0].items()}
