"""Running one cell over a segment of time, forward and backward.

These two loops are the core of full BPTT; the other gradient algorithms order the same
`cell.step` / `cell.step_back` calls differently.

Compiled scans. Where a cell has one (the built-in cells in float32 with the kernels on, see
bptt._kernels), an unmasked forward scan that keeps its tape, and a consumed backward scan of
such a tape, run as one compiled loop (`cell.fused_forward`, `cell.fused_backward`) instead of
the Python loops below; the tape then reads its per-step caches on demand from the scan's
buffers, so the step-by-step backward (TBPTT k1 < k2) uses it unchanged.

Masks. `mask` is a boolean (T, B) array; on a step where mask[t, b] is False, sequence b's state
is HELD (state_t = state_{t-1}) and its output is zero. So a padded batch computes exactly what
its sequences compute one by one, and a reversed scan over right-padded sequences starts each
sequence at its own last real step. In the backward loop a held step passes the state gradient
through unchanged and gives the cell nothing:

    dstate_{t-1} = where(m_t, step_back(cache_t, dstate_t, dout_t).dstate, dstate_t)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .._ops import buffers
from ..cells.base import Cell, Params, state_map


class Tape(NamedTuple):
    """What a forward scan keeps for its backward scan."""

    caches: list  # one cache per step, in time order (None on fully masked steps)
    mask: np.ndarray | None  # (T, B) bool, or None
    reverse: bool
    work: np.ndarray | None = None  # (T, B, W) buffer the caches' bulk lives in (cell.work_size())
    aux: Any = None  # a compiled scan's other buffers (cell.fused_forward), for cell.fused_backward


def _order(T: int, reverse: bool) -> range:
    return range(T - 1, -1, -1) if reverse else range(T)


def _mask_flags(mask: np.ndarray | None, T: int) -> tuple[np.ndarray, np.ndarray]:
    if mask is None:
        return np.ones(T, bool), np.zeros(T, bool)
    return mask.all(axis=1), ~mask.any(axis=1)


def scan_forward(
    cell: Cell,
    params: Params,
    xp: np.ndarray,
    state: Any,
    mask: np.ndarray | None = None,
    reverse: bool = False,
    keep: bool = True,
) -> tuple[np.ndarray, Any, Tape | None]:
    """Run `cell` over xp (T, B, G) from `state`.

    Returns the outputs (T, B, O), the state after the last step processed (t = T for a forward
    scan, t = 1 for a reversed one) and, if `keep`, the tape for `scan_backward`."""
    T, B = xp.shape[:2]
    full, empty = _mask_flags(mask, T)
    if keep and T > 0 and full.all():  # the cell's compiled whole scan, where it has one
        fused = cell.fused_forward(params, xp, state, reverse)
        if fused is not None:
            outs, state, caches, work, aux = fused
            return outs, state, Tape(caches, mask, reverse, work, aux)
    outs = buffers.empty((T, B, cell.output_size), xp.dtype)
    caches: list = [None] * T if keep else []
    width = cell.work_size() if keep else None
    work = buffers.empty((T, B, width), xp.dtype) if width else None  # allocated once per segment
    for t in _order(T, reverse):
        if empty[t]:  # nothing to compute: every sequence holds its state
            outs[t] = 0.0
            continue
        if work is None:
            new, out, cache = cell.step(params, state, xp[t])
        else:
            new, out, cache = cell.step(params, state, xp[t], work=work[t])
        if not full[t]:
            m = mask[t][:, None]  # (B, 1)
            new = state_map(lambda a, b: np.where(m, a, b), new, state)
            out = np.where(m, out, 0.0)
        outs[t] = out
        if keep:
            caches[t] = cache
            if out is new[0]:  # the output is the state's first field: keep one copy of it
                new = type(new)(outs[t], *new[1:])
        state = new
    return outs, state, (Tape(caches, mask, reverse, work) if keep else None)


def scan_backward(
    cell: Cell,
    params: Params,
    tape: Tape,
    douts: np.ndarray,
    dstate: Any,
    grads: Params,
    scale: np.ndarray | None = None,
    consume: bool = False,
) -> tuple[np.ndarray, Any]:
    """Backpropagate through the steps recorded in `tape`.

    douts: (T, B, O) gradient of the loss with respect to each step's output;
    dstate: gradient with respect to the final state (zeros for delta(T+1) = 0);
    scale: optional (T, B) factors on the backward message leaving step t towards the step
    before it (0 cuts it: a truncation point; 1/(1 - c) reweights it, as in ARTBP).
    consume: the tape is not needed afterwards (full BPTT): where the cell keeps its caches in
    the tape's work buffer, the gradients overwrite them step by step, each step's cache is
    dropped once used, and the recurrent weights' gradient is ONE matrix product over all
    steps after the loop (`cell.consume_grads`) instead of T small ones.
    Adds the recurrent parameters' gradients into `grads`; returns dL/dxp (T, B, G) and the
    gradient with respect to the initial state (scaled by the first step's factor)."""
    caches, mask, reverse, work, aux = tape
    T, B = douts.shape[:2]
    full, empty = _mask_flags(mask, T)
    if consume and aux is not None and full.all():  # the compiled backward scan
        h_prev = buffers.empty((T, B, cell.hidden_size), douts.dtype)
        f = np.zeros((0, 0), douts.dtype) if scale is None else np.ascontiguousarray(scale, douts.dtype)
        dstate = cell.fused_backward(params, tape, douts, f, dstate, h_prev)
        caches.release()
        return cell.consume_grads(params, work, h_prev, grads), dstate
    if scale is not None:
        scale = np.asarray(scale, douts.dtype)[..., None]  # (T, B, 1), cast once
    consume = consume and work is not None
    if consume:  # dL/dxp_t goes over step t's work row; W_hh's gradient waits for the end
        dxp, h_prev = work, buffers.zeros((T, B, cell.hidden_size), douts.dtype)  # zero rows on empty steps

        def back(t, d, g):
            h_prev[t] = cell.recurrent_input(caches[t])
            d_prev = cell.step_back_consume(params, caches[t], d, g)
            caches[t] = None  # consumed: its arrays can go
            return d_prev
    else:
        dxp = np.empty((T, B, cell.gates * cell.hidden_size), dtype=douts.dtype)

        def back(t, d, g):
            d_prev, dxp[t] = cell.step_back(params, caches[t], d, g, grads)
            return d_prev

    for t in _order(T, not reverse):
        if empty[t]:
            dxp[t] = 0.0
        elif full[t]:
            dstate = back(t, dstate, douts[t])
        else:  # held sequences get zero gradients at this step (zero rows of dxp)
            m = mask[t][:, None]
            d_prev = back(t, state_map(lambda a: np.where(m, a, 0.0), dstate), np.where(m, douts[t], 0.0))
            dstate = state_map(lambda a, b: np.where(m, a, b), d_prev, dstate)
        if scale is not None:
            f = scale[t]
            dstate = state_map(lambda a: a * f, dstate)
    if consume:
        dxp = cell.consume_grads(params, work, h_prev, grads)
    return dxp, dstate
