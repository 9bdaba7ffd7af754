"""Running one cell over a segment of time, forward and backward: the reference time loops.

These two loops are the core of full BPTT; the other gradient algorithms order the same
`step` / `step_back` calls differently.

Faster implementations. The loops run a cell's steps through `ops.implementation(cell, dtype)`:
the cell itself (its NumPy math), or a stand-in with the same contract that bptt.fast offers for
the built-in cells in float32. Where that stand-in also has a whole compiled scan
(`forward_scan`: unmasked, tape kept, or with `ring` the final state alone in two steps'
buffers, and the states after given steps copied out; `backward_scan`: a tape used once), the
loop hands it the segment; its tape then reads the per-step caches on demand from the scan's
buffers, so the step-by-step backward (TBPTT k1 < k2) uses it unchanged.

Masks. `mask` is a boolean (T, B) array; on a step where mask[t, b] is False, sequence b's state
is HELD (state_t = state_{t-1}) and its output is zero. So a padded batch computes exactly what
its sequences compute one by one, and a reversed scan over right-padded sequences starts each
sequence at its own last real step. In the backward loop a held step passes the state gradient
through unchanged and gives the cell nothing:

    dstate_{t-1} = where(m_t, step_back(cache_t, dstate_t, dout_t).dstate, dstate_t)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import ops
from .cells.base import Cell, Params, state_map
from .tape import Tape


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
    outputs: bool = True,
    stops: Any = (),
    kept: list | None = None,
) -> tuple[np.ndarray | None, Any, Tape | None]:
    """Run `cell` over xp (T, B, G) from `state`.

    Returns the outputs (T, B, O; None if not `outputs`: a scan run for its final state alone,
    which then holds a step or two, not T), the state after the last step processed (t = T for
    a forward scan, t = 1 for a reversed one) and, if `keep`, the tape for `scan_backward`.
    stops: scan steps (rising, 0 the first step processed) after which the state is appended
    to `kept`, as arrays of its own (memory-budgeted BPTT's advances past store points)."""
    T, B = xp.shape[:2]
    cell = cell.effective()
    impl = ops.implementation(cell, xp.dtype)
    if T > 0 and (mask is None or mask.all()) and hasattr(impl, "forward_scan"):  # a whole compiled scan
        fused = impl.forward_scan(params, xp, state, reverse, not (keep or outputs), stops, kept)
        if fused is not None:
            return fused if keep else (fused[0], fused[1], None)
    full, empty = _mask_flags(mask, T)
    outs = ops.empty((T, B, cell.output_size), xp.dtype) if outputs or keep else None
    caches: list = [None] * T if keep else []
    stop = iter(stops)
    at = next(stop, -1)
    for s, t in enumerate(_order(T, reverse)):
        if at == s - 1 >= 0:
            kept.append(state_map(np.array, state))  # (a copy: the state may be a row of outs)
            at = next(stop, -1)
        if empty[t]:  # nothing to compute: every sequence holds its state
            if outs is not None:
                outs[t] = 0.0
            continue
        new, out, cache = impl.step(params, state, xp[t])
        if not full[t]:
            m = mask[t][:, None]  # (B, 1)
            new = state_map(lambda a, b: np.where(m, a, b), new, state)
            out = np.where(m, out, 0.0)
        if outs is None:
            state = new
            continue
        outs[t] = out
        if keep:
            caches[t] = cache
            if out is new[0]:  # the output is the state's first field: keep one copy of it
                new = type(new)(outs[t], *new[1:])
        state = new
    if at == T - 1 >= 0:
        kept.append(state_map(np.array, state))
    return outs, state, (Tape(caches, mask, reverse) if keep else None)


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
    consume: the tape is not needed afterwards (full BPTT, randomized truncation): a faster
    implementation's whole scan may then use its buffers for the gradients (`backward_scan`).
    Adds the recurrent parameters' gradients into `grads`; returns dL/dxp (T, B, G) and the
    gradient with respect to the initial state (scaled by the first step's factor)."""
    T, B = douts.shape[:2]
    impl = ops.implementation(cell, douts.dtype)
    whole = tape.mask is None or tape.mask.all()
    if consume and tape.aux is not None and whole and hasattr(impl, "backward_scan"):
        return impl.backward_scan(params, tape, douts, scale, dstate, grads)
    full, empty = _mask_flags(tape.mask, T)
    if scale is not None:
        scale = np.asarray(scale, douts.dtype)[..., None]  # (T, B, 1), cast once
    caches = tape.caches
    dxp = np.empty((T, B, cell.gates * cell.hidden_size), dtype=douts.dtype)

    def back(t, d, g):
        d_prev, dxp[t] = impl.step_back(params, caches[t], d, g, grads)
        return d_prev

    for t in _order(T, not tape.reverse):
        if empty[t]:
            dxp[t] = 0.0
        elif full[t]:
            dstate = back(t, dstate, douts[t])
        else:  # held sequences get zero gradients at this step (zero rows of dxp)
            m = tape.mask[t][:, None]
            d_prev = back(t, state_map(lambda a: np.where(m, a, 0.0), dstate), np.where(m, douts[t], 0.0))
            dstate = state_map(lambda a, b: np.where(m, a, b), d_prev, dstate)
        if scale is not None:
            f = scale[t]
            dstate = state_map(lambda a: a * f, dstate)
    return dxp, dstate
