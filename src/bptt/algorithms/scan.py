"""Running one cell over a segment of time, forward and backward.

These two loops are the core of full BPTT; the other gradient algorithms order the same
`cell.step` / `cell.step_back` calls differently.

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

from ..cells.base import Cell, Params, state_map


class Tape(NamedTuple):
    """What a forward scan keeps for its backward scan."""

    caches: list  # one cache per step, in time order (None on fully masked steps)
    mask: np.ndarray | None  # (T, B) bool, or None
    reverse: bool
    work: np.ndarray | None = None  # (T, B, W) buffer the caches' bulk lives in (cell.work_size())


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
    outs = np.empty((T, B, cell.output_size), dtype=xp.dtype)
    caches: list = [None] * T if keep else []
    full, empty = _mask_flags(mask, T)
    width = cell.work_size() if keep else None
    work = np.empty((T, B, width), dtype=xp.dtype) if width else None  # allocated once per segment
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
    caches, mask, reverse = tape[:3]
    if scale is not None:
        scale = np.asarray(scale, douts.dtype)[..., None]  # (T, B, 1), cast once
    if consume and tape.work is not None:
        return _scan_backward_consumed(cell, params, tape, douts, dstate, grads, scale)
    T = len(caches)
    B = douts.shape[1]
    G = cell.gates * cell.hidden_size
    dxp = np.empty((T, B, G), dtype=douts.dtype)
    full, empty = _mask_flags(mask, T)
    for t in _order(T, not reverse):
        if empty[t]:
            dxp[t] = 0.0
        elif full[t]:
            dstate, dxp[t] = cell.step_back(params, caches[t], dstate, douts[t], grads)
        else:
            m = mask[t][:, None]
            d_in = state_map(lambda a: np.where(m, a, 0.0), dstate)
            d_prev, dxp_t = cell.step_back(params, caches[t], d_in, np.where(m, douts[t], 0.0), grads)
            dstate = state_map(lambda a, b: np.where(m, a, b), d_prev, dstate)
            dxp[t] = dxp_t
        if scale is not None:
            f = scale[t]
            dstate = state_map(lambda a: a * f, dstate)
    return dxp, dstate


def _scan_backward_consumed(cell, params, tape, douts, dstate, grads, scale):
    """scan_backward(consume=True): dL/dxp_t is written over step t's work row, which the
    backward steps of earlier times no longer read."""
    caches, mask, reverse, work = tape
    T = len(caches)
    full, empty = _mask_flags(mask, T)
    h_prev = None  # (T, B, H): what each step multiplied by W_hh, for the one weight product
    for t in _order(T, not reverse):
        cache = caches[t]
        if empty[t]:
            work[t] = 0.0
        else:
            hp = cell.recurrent_input(cache)
            if h_prev is None:
                h_prev = np.zeros((T,) + hp.shape, dtype=hp.dtype)
            h_prev[t] = hp
            if full[t]:
                dstate = cell.step_back_consume(params, cache, dstate, douts[t])
            else:  # held sequences get zero gradients here, so their rows of work are zero
                m = mask[t][:, None]
                d_in = state_map(lambda a: np.where(m, a, 0.0), dstate)
                d_prev = cell.step_back_consume(params, cache, d_in, np.where(m, douts[t], 0.0))
                dstate = state_map(lambda a, b: np.where(m, a, b), d_prev, dstate)
            caches[t] = None  # consumed: its arrays can go
        if scale is not None:
            f = scale[t]
            dstate = state_map(lambda a: a * f, dstate)
    if h_prev is None:  # every step was empty
        h_prev = np.zeros(work.shape[:2] + (cell.hidden_size,), dtype=work.dtype)
    return cell.consume_grads(params, work, h_prev, grads), dstate
