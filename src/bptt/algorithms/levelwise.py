"""Memory-budgeted BPTT for models with bidirectional levels: level by level, each direction's
time loop through its own plan.

A bidirectional level's output at t needs the whole sequence, so no single time step's state
stands for the past of the whole model. But each direction of each level is an ordinary time
loop over that level's input: given the input sequence and the gradient at the direction's
outputs, its weight gradients and its input gradient can be computed within a budget by
storing some of its states and recording segments (the same plans and walk as `Budget`'s).

    1. forward, level by level, keeping each level's input sequence (not its caches): the
       recurrent levels in chunks, state carried, each chunk's input projection made there;
    2. the loss and its gradient at the last level's output, back through the time-local levels
       (recomputed from their kept inputs, as full BPTT computes them);
    3. each recurrent level from the top: each direction walked through its plan (a reverse
       direction in its own order of time), its input gradient added into the level's, which
       is the gradient at the output of the level below.

Held besides the plans: the levels' input sequences and one level's output and input
gradients (T x B x width each); the plans get the rest of the budget. Gradients: the
recurrent weights' add the same per-step terms in the same order as full BPTT's; the input
weights' and biases' are sums over segments (float64: within 1e-15 relative).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .. import ops
from ..cells.base import Params, project_at
from ..errors import BpttError
from ..scan import scan_forward
from .base import Gradient
from .plan import Storage, plan
from .rows import compact, consume

if TYPE_CHECKING:
    from ..model import Batch, Model


class _Direction:
    """One direction of a recurrent level over its whole input X (T, B, D): forward and backward
    of steps a .. e-1 in its own order of time (for a reverse direction, original steps
    T-e .. T-a-1), as `budget.walk` asks."""

    def __init__(self, d: Any, p: Params, g: Params, X: np.ndarray, mask: np.ndarray | None, dx: np.ndarray | None):
        self.d, self.p, self.g, self.X, self.mask, self.dx = d, p, g, X, mask, dx
        self.douts: np.ndarray | None = None
        self.T = X.shape[0]
        self.accumulate = True  # input gradients into dx (not while measuring)

    def rows(self, a: int, e: int) -> slice:
        return slice(self.T - e, self.T - a) if self.d.reverse else slice(a, e)

    def forward(self, a: int, e: int, state: Any, keep: bool, outputs: bool = False):
        d, r = self.d, self.rows(a, e)
        xs = self.X[r]
        xp = project_at(d.cell, self.p, xs, r.start)  # (e - a, B, G): this segment's input projection
        m = None if self.mask is None else self.mask[r]
        out, fin, tape = scan_forward(d.cell, self.p, xp, state[d.key], m, d.reverse, keep, keep or outputs)
        return out, {d.key: fin}, ([xs, tape] if keep else None)

    def outputs(self, state: Any, chunk: int) -> tuple[np.ndarray, Any]:
        """The direction's outputs over all T (T, B, O) and its final state (arrays of its own:
        the scan's is a row of the last chunk's buffers, which it would hold), in chunks of
        steps."""
        out = None
        for a in range(0, self.T, chunk):
            e = min(self.T, a + chunk)
            y, state, _ = self.forward(a, e, state, False, True)
            if out is None:
                out = np.empty((self.T,) + y.shape[1:], y.dtype)
            out[self.rows(a, e)] = y
        return out, compact(state)[self.d.key]

    def backward(self, a: int, e: int, y: Any, tapes: list, dstate: Any) -> Any:
        d, r = self.d, self.rows(a, e)
        xs, tape = tapes
        dT = (dstate or {}).get(d.key)
        if dT is None:
            dT = d.cell.zero_state(xs.shape[1], self.douts.dtype)
        dxp, ds = consume(d.cell, self.p, tape, self.douts[r], dT, self.g)
        part = d.cell.project_back(self.p, xs, dxp, self.g, self.dx is not None)
        if self.dx is not None and self.accumulate:
            self.dx[r] += part  # the level's input gradient: directions added in order
        return {d.key: ds}


def _measure(d: Any, p: Params, X: np.ndarray, mask: np.ndarray | None, need_dx: bool) -> Storage:
    """Storage of one direction over inputs like X, measured as `budget._measure_storage`
    measures a model (the least of three probes of recorded segments and advances of 1, 4 and
    16 steps), on 16 steps of X (its steps again where it has fewer: a step measured over 4 made
    a 15-step sequence need more than a 16-step one) with zero output gradients. (Probes of 32
    steps, as a model's, made the least budget of a masked two-level LSTM differ by 45 bytes
    from one measurement to the next; its plans are within the budget without them.)"""
    from .budget import _traced, probed, stored_bytes

    n, B, dtype = 16, X.shape[1], p[next(iter(p))].dtype
    steps = np.arange(n) % X.shape[0]
    probe = X[steps] if X.dtype.kind in "iu" else np.zeros((n,) + X.shape[1:], dtype)
    dx = np.zeros(probe.shape, dtype) if need_dx else None
    run = _Direction(
        d, p, {k: np.zeros_like(v) for k, v in p.items()}, probe, None if mask is None else mask[steps], dx
    )
    run.douts, run.accumulate = np.zeros((n, B, d.cell.output_size), dtype), False
    state = {d.key: d.cell.zero_state(B, dtype)}

    def record(n: int) -> int:
        with _traced() as peak:
            y, _, tapes = run.forward(0, n, state, True)
            run.backward(0, n, y, tapes, None)
            del y, tapes
        return peak()

    def advance(n: int) -> int:
        with _traced() as peak:
            run.forward(0, n, state, False)
        return peak()

    return probed(record, advance, stored_bytes(state), n)


def levelwise(model: Model, params: Params, b: Batch, budget: int, policy: str, cache: dict) -> tuple[Gradient, dict]:
    """Full BPTT's gradient of a model with bidirectional levels within `budget` bytes (module
    docstring). cache: this model's plans by (level, direction, T, B, dtype, masked) and the
    budget left for them. Each direction's storage is measured once a process, beside the
    model's own (budget._MEASURED): measured again for each new Budget, the least budget a
    refusal named could differ by a few hundred bytes from what the next one asked (a masked
    two-level Elman: 10,314 against 10,575 bytes)."""
    from .budget import _MEASURED, nbytes, walk

    T, B = b.x.shape[:2]
    dtype = model.check_params(params)
    levels = model.levels
    # 1. the levels' inputs, forward in chunks (the input projection of a chunk at a time)
    ins: list[np.ndarray] = [b.x]
    final: dict = {}
    h = b.x
    for lv in levels:
        if not lv.recurrent:
            h, _ = lv.forward(lv.sub(params), h)
        else:
            outs = []
            for d in lv.directions:
                run = _Direction(d, lv.sub(params, d.prefix), {}, h, b.mask, None)
                G = d.cell.project(run.p, h[:1]).shape[-1]
                chunk = max(1, min(T, (budget - nbytes(ins[1:], (b.x,))) // (4 * B * G * h.itemsize)))
                out, final[d.key] = run.outputs({d.key: b.state0[d.key]}, chunk)
                outs.append(out)
            h = outs[0] if len(outs) == 1 else np.concatenate(outs, axis=-1)
        ins.append(h)
    # The first pass's chunk buffers go: kept idle, the arrays below would be carved from their
    # fronts and hold them whole, outside every count. Bidirectional LSTM 128 under GRU 64, B = 16,
    # T = 300, budgets of 1.05-2.5 times the least: 7-25% over the budget with them kept, within
    # it without; the step took 119-126 against 109-113 ms (its pages faulted in again).
    ops.release()
    kept = nbytes(ins[1:], (b.x,))
    widest = max(a[0].nbytes for a in ins[1:])  # one row of T: an output or input gradient per step
    held = kept + 2 * widest * T
    rest = budget - held
    # every direction's storage first: the least budget is the largest of their needs
    # (plans by what they were made for: the budget left changes with the levels' held arrays,
    # a Dropout's while its masks are held; the least budget checked at every call)
    storage: dict = {}
    known = _MEASURED.setdefault(model, {})  # (keys of six: a model's own have three)
    for i, lv in enumerate(levels):
        for d in lv.directions if lv.recurrent else ():
            key = (i, d.key, T, B, str(dtype), b.mask is not None)
            if key not in known:
                known[key] = _measure(d, lv.sub(params, d.prefix), ins[i], b.mask, i > 0)
            storage[key] = known[key]
    if storage and rest < max(st.leaf(1) for st in storage.values()):
        need = held + max(st.leaf(1) for st in storage.values())
        raise BpttError(
            f"memory budget: expected at least {need / 2**20:.2f} MiB ({need:,} bytes: the levels' inputs over T "
            f"and one step's caches of a direction) for a bidirectional model, received {budget / 2**20:.2f} MiB "
            f"({budget:,} bytes)"
        )
    plans = {}
    for key, st in storage.items():
        if (*key, rest) not in cache:
            cache[(*key, rest)] = plan(T, rest, st, policy)
        plans[key] = cache[(*key, rest)]
    # 2. the loss and the time-local levels above the last recurrent one
    grads = model.zero_grads(params)
    loss, dy = model.loss_fn.value_and_grad(ins[-1], b.targets, b.mask)
    dstate0: dict = {}
    stats = {"forward_steps": 0, "peak_bytes": 0, "planned_forward_steps": 0, "planned_peak_bytes": 0}
    for i in range(len(levels) - 1, -1, -1):
        lv = levels[i]
        if not lv.recurrent:
            _, cache_i = lv.forward(lv.sub(params), ins[i])
            dy = lv.backward(lv.sub(params), cache_i, dy, lv.sub(grads), i > 0)
            del cache_i
            continue
        # 3. each direction through its plan; the level's input gradient summed over directions
        dx = ops.zeros(ins[i].shape, dtype) if i > 0 else None
        col = 0
        for d in lv.directions:
            run = _Direction(d, lv.sub(params, d.prefix), lv.sub(grads, d.prefix), ins[i], b.mask, dx)
            O = d.cell.output_size
            run.douts = dy[..., col : col + O]
            col += O
            p = plans[(i, d.key, T, B, str(dtype), b.mask is not None)]
            ds, _, s = walk(p, T, {d.key: b.state0[d.key]}, run.forward, run.backward, (ins[i], run.douts, b.mask))
            dstate0[d.key] = ds[d.key]
            stats["forward_steps"] += s["forward_steps"] + T  # (and the first pass's)
            stats["planned_forward_steps"] += p.forward_steps + T
            stats["peak_bytes"] = max(stats["peak_bytes"], held + s["peak_bytes"])
            stats["planned_peak_bytes"] = max(stats["planned_peak_bytes"], held + p.peak_bytes)
        dy = dx
    model.add_init_grads(grads, dstate0, b.given)
    return Gradient(loss, grads, dstate0, final), stats
