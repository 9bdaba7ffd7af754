"""Memory-budgeted BPTT: full BPTT's gradient within a byte budget, by storing some states and
running the steps after them forward again (the plans of bptt.algorithms.plan).

    algo = Budget("64MB")                          # or make("budget", budget="64MB", policy="mixed")
    g = algo(model, params, x, targets)            # the gradient full BPTT gives

The executor walks the plan with an explicit stack (never recursing T deep), right to left in
time: a leaf runs its steps forward keeping their tapes (the model's own level-wise segments:
every level, masks, the readout and the loss; the same compiled scans as full BPTT), takes the
loss gradient of those steps, and backpropagates through them from the state gradient that
arrived from the right; a split runs forward to its point without tapes and keeps that state
while the plan on its right runs. The state gradient is handed right to left from segment to
segment, exactly as full BPTT hands it from step to step.

What equals what. The recurrent weights' gradients add the same per-step terms in the same
order as full BPTT's (float64: bitwise); the input weights', the biases', the readout's and the
loss are sums over segments instead of one product over all T steps (float64: within 1e-15
relative). A model with bidirectional levels (no time step's state stands for its past) runs
level by level, each direction through its own plan (levelwise.py).

Counted: forward steps run (`stats["forward_steps"]`, equal to the plan's), the bytes of the
stored states and recorded tapes at their peak (`stats["peak_bytes"]`) and the recorded segments
run as runs of batch rows side by side (`stats["row_segments"]`, below).

Runs of rows. With two threads or more (a float32 step on bptt.fast's engine), the mixed policy
and cells whose scans split by batch rows, each long recorded segment runs a run of the batch's
rows on each thread (forward, loss and backward; ops.row_runs, ops.side_by_side): one hand-off
a segment instead of one for each scan and product in it. Each run adds into a gradient of its
own, so the plan is made within the budget less those (and a segment's fixed part) for every
run after the first, and is taken only where it runs at most ROW_STEPS times the forward steps
of the plan for the whole budget (Budget.by_rows). The runs' gradients are added in a fixed
order, so the numbers do not depend on which thread ran which run.
"""

from __future__ import annotations

import contextlib
import re
import tracemalloc
import weakref
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import ops
from ..cells.base import Params, state_map
from ..errors import BpttError, one_of
from .base import Algorithm, Gradient, register
from .plan import POLICIES, Leaf, Plan, Revolve, Split, Storage, expand, longest, plan
from .rows import add_into, compact, consume, runs
from .rows import side_by_side as rows_side_by_side

if TYPE_CHECKING:
    from ..model import Model, ModelState

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_bytes(value: Any, what: str = "memory budget") -> int:
    """Bytes from a number or a string like '64MB', '1.5GiB', '800KB' (SI and binary units)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        n = int(value)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMG]i?B|B)?\s*", str(value), re.IGNORECASE)
        if not m:
            raise BpttError(f"{what}: expected bytes such as 64MB, 1.5GiB or 800000, received {value!r}")
        n = int(float(m.group(1)) * _UNITS[(m.group(2) or "").upper()])
    if n <= 0:
        raise BpttError(f"{what}: expected a positive number of bytes, received {value!r}")
    return n


def nbytes(obj: Any, data: tuple = ()) -> int:
    """Bytes of the arrays in a nested structure (tapes, states), each buffer counted once;
    views of the `data` arrays (the batch's inputs and mask, held by the caller) not counted."""
    seen = {id(_base(d)) for d in data if isinstance(d, np.ndarray)}
    total, stack = 0, [obj]
    pop, extend, ndarray = stack.pop, stack.extend, np.ndarray  # (memory-budgeted BPTT counts
    while stack:  # thousands of small tapes and states a step: this loop is kept lean)
        o = pop()
        if isinstance(o, ndarray):
            while isinstance(o.base, ndarray):
                o = o.base
            if id(o) not in seen:
                seen.add(id(o))
                total += o.nbytes
        elif isinstance(o, (list, tuple)):
            extend(o)
        elif isinstance(o, dict):
            extend(o.values())
    return total


def _base(a: np.ndarray) -> np.ndarray:
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


# model -> {(B, dtype, masked): Storage}, and levelwise.py's directions' {(level, direction, T, B, dtype, masked): Storage}
_MEASURED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def measure_storage(model: Model, params: Params, B: int, masked: bool = False) -> Storage:
    """`_measure_storage`, once per model, batch, dtype and mask (the same figures for every plan
    made in a process)."""
    key = (int(B), str(model.check_params(params)), bool(masked))
    known = _MEASURED.setdefault(model, {})
    if key not in known:
        known[key] = _measure_storage(model, params, B, masked)
    return known[key]


def _measure_storage(model: Model, params: Params, B: int, masked: bool = False) -> Storage:
    """The bytes a plan holds, measured on the model at batch B: its carried state, and, by
    running them (tracemalloc's peak over each, the buffer pool emptied first), recorded
    segments of 1, 4, 16 and 32 steps from their forward to the end of their backward (the
    tapes, the loss gradient and the backward's own arrays: a step's part from 16 to 32, the
    fixed part such that no shorter one exceeds it) and advances of 4 and 16 steps
    (Storage.advance: per step; its fixed part is no more than a recorded segment's). masked: with a mask that holds some sequences at every step
    (a held state is an array of its own: the most a masked step keeps). Not counted: the
    weights, their gradients (the result) and the batch, which the caller holds anyway."""
    dtype = model.check_params(params)
    state, _ = model.initial_state(params, B)
    grads = model.zero_grads(params)

    def batch(n: int) -> tuple:
        x = np.zeros((n, B), np.int64) if model.tokens else np.zeros((n, B, model.input_size), dtype)
        mask = None
        if masked and B > 1:
            mask = np.ones((n, B), bool)
            mask[:, 0] = False
        K = model.output_size
        lead = (n, B) if model.loss_fn.at == "every" else (B,)
        targets = np.zeros(lead, np.int64) if model.loss_fn.kind == "ce" else np.zeros((*lead, K), dtype)
        return x, mask, targets

    def record(n: int) -> int:
        x, mask, targets = batch(n)
        with _traced() as peak:
            y, _, tapes = model.forward_levels(params, x, mask, state, keep=True)
            _, dy = model.loss_fn.segment(y, targets, mask, 0, n, n * B)
            del y
            model.backward_levels(params, tapes, dy, None, grads, consume)
            del tapes, dy
        return peak()

    def advance(n: int) -> int:
        x, mask, _ = batch(n)
        with _traced() as peak:
            model.forward_levels(params, x, mask, state, keep=False, state_only=True)
        return peak()

    return probed(record, advance, stored_bytes(state))


def stored_bytes(state: Any) -> int:
    """Bytes a stored copy of `state` holds, the figure plans count per state: its arrays,
    their Python objects and what the walk keeps for it (the state's entry and its count of
    bytes, the node of the part left before it and the mark that frees it). For LSTM 128 at B = 32 (two arrays of
    16 KiB) those add 0.7 KiB: 0.3 MiB over the 457 states a 10% budget stores."""
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        copy = compact(state)
        held = tracemalloc.get_traced_memory()[0] - base
        del copy
        n, base = 64, tracemalloc.get_traced_memory()[0]
        big = 1 << 20  # (time indices above 256 are objects of their own)
        entries = {
            big + i: (("node", Revolve(big + i, big + i + 2, 2), None), ("free", big + i, None)) for i in range(n)
        }
        sizes = {big + i: (big << 5) + i for i in range(n)}  # (the walk's count of its bytes)
        held += -(-(tracemalloc.get_traced_memory()[0] - base) // n)
        del entries, sizes
    finally:
        if started:
            tracemalloc.stop()
    return max(held, nbytes(state))


def probed(record: Any, advance: Any, state_bytes: int, longest: int = 32) -> Storage:
    """Storage from probes: record(n), the peak bytes of a recorded segment of n steps from its
    forward to the end of its backward, for n in 1, 4, 16, 32, and advance(n), of a forward run
    for its final state, for n in 1, 4, 16 (those up to `longest`). A step's part of each from
    its two longest probes, the fixed part such that no recorded probe exceeds it; each probe
    the least of three runs (after one untimed: it may load kernels or fill caches), since a
    Python object that grows once inside a probe (a cache, a dict) is not the step's memory and
    would make two processes plan differently.

    Why records up to 32 steps. Where a segment's peak falls moves with its length: in 16 steps
    of LSTM 128 under GRU 64 (B = 16) the forward's transient arrays peaked as high as the
    backward, whose own arrays (the GRU's input gradient and its contiguous copy) grow with the
    length; 4 to 16 steps recorded 79 KB a step, 16 to 32 and 64 to 88 steps 92 KB, and a plan
    from the first under-counted an 88-step segment by 0.9 MB. Advances stay at 4 to 16: from
    16 to 32 their step halved, and plans from it ran 6-20 steps over."""
    recorded = [n for n in (1, 4, 16, 32) if n <= longest] or [1]
    advanced = [n for n in (1, 4, 16) if n <= longest] or [1]
    for n in recorded:
        record(n)
    for n in advanced:
        advance(n)
    rec = {n: min(record(n) for _ in range(3)) for n in recorded}
    adv = {n: min(advance(n) for _ in range(3)) for n in advanced}

    def per_step(probes: dict[int, int]) -> int:
        # (the scans of a few steps take other paths: from the two longest probes beyond 1)
        ns = list(probes)
        lo, hi = ns[-2] if len(ns) > 1 else ns[0], ns[-1]
        return max(-(-(probes[hi] - probes[lo]) // (hi - lo)), 1) if hi > lo else max(probes[lo], 1)

    step, per = per_step(rec), per_step(adv)
    fixed = max(max(rec[n] - n * step for n in recorded), 0)
    return Storage(max(state_bytes, 1), step, fixed, per)


@contextlib.contextmanager
def _traced():
    """Within: the arrays allocated are traced (tracemalloc, started here unless it runs
    already); yields a function giving the peak of what was allocated since entering. The
    buffer pool is emptied first, so that what a probe asks of it is allocated."""
    ops.release()
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    result = [0]
    try:
        yield lambda: result[0]
    finally:
        result[0] = max(0, tracemalloc.get_traced_memory()[1] - base)
        if started:
            tracemalloc.stop()
        ops.release()


# A plan whose recorded segments run by runs of rows side by side (Budget.by_rows) is taken where
# it runs at most this many times the forward steps of the plan for the whole budget.
ROW_STEPS = 1.1


@register
class Budget(Algorithm):
    """Full BPTT's gradient within `budget` bytes (a number, or '64MB', '1GiB', ...) for the
    stored states and recorded tapes; `policy` 'revolve' (default) or 'mixed' (see
    bptt.algorithms.plan, with its patent notice). A budget that holds full BPTT's tapes runs
    full BPTT; one below a single step's tapes is refused, naming the minimum."""

    name = "budget"

    def __init__(self, budget: Any, policy: str = "revolve") -> None:
        if policy not in POLICIES:
            raise one_of("memory policy", policy, POLICIES)
        self.budget, self.policy = parse_bytes(budget), policy
        # model -> {(T, B, dtype, masked, budget) (levelwise: per direction): Plan}, held no
        # longer than the model (a plan keyed by id() went to the next model at that address)
        self._plans: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.stats: dict[str, int] = {}

    def plan_for(
        self, model: Model, params: Params, T: int, B: int, masked: bool = False, budget: int | None = None
    ) -> Plan:
        dtype = next(iter(params.values())).dtype
        budget = self.budget if budget is None else budget
        known, key = self._plans.setdefault(model, {}), (T, B, str(dtype), masked, budget)
        if key not in known:
            known[key] = plan(T, budget, measure_storage(model, params, B, masked), self.policy)
        return known[key]

    def __call__(
        self, model: Model, params: Params, x: Any, targets: Any, *, mask: Any = None, state0: ModelState | None = None
    ) -> Gradient:
        b = model.check_batch(params, x, targets, mask, state0)
        T, B = b.x.shape[:2]
        if model.bidirectional:  # no step's state stands for the past: level by level (levelwise.py)
            from .levelwise import levelwise

            with ops.step_context(model, params, b.mask):
                g, self.stats = levelwise(model, params, b, self.budget, self.policy, self._plans.setdefault(model, {}))
            return g
        p = self.plan_for(model, params, T, B, b.mask is not None)  # (its storage probes: before any thread)
        with ops.step_context(model, params, b.mask):  # where the step's work may be split between cores
            p, rows = self.by_rows(model, params, b, p)
            g, self.stats = execute(model, params, b, p, rows=rows)
        return g

    def by_rows(self, model: Model, params: Params, b: Any, p: Plan) -> tuple[Plan, list | None]:
        """Within a step's context, on checked batch b: (the plan, the runs of batch rows its
        recorded segments run side by side, or None). With the mixed policy, where the step's
        threads can each take a run of rows of a segment as long as the plan's longest
        (ops.row_runs: no mask, cells whose scans split by rows), a plan within the budget less
        what each run after the first holds of its own (a gradient, a segment's fixed part), if
        it exists and runs at most ROW_STEPS times p's forward steps; else (p, None). Only where
        every level treats each batch row alone (Level.rowwise)."""
        if p.policy != "mixed" or p.root == Leaf(0, p.T):
            return p, None
        T, B = b.x.shape[:2]
        spans = runs(model, params, b, longest(p))  # (not with a rate regulariser, dropout's masks held)
        if spans is None:
            return p, None
        own = sum(v.nbytes for v in params.values()) + p.storage.segment
        try:
            q = self.plan_for(model, params, T, B, budget=self.budget - (len(spans) - 1) * own)
        except BpttError:
            return p, None
        if q.forward_steps > ROW_STEPS * p.forward_steps or ops.row_runs(model, params, None, B, longest(q)) != spans:
            return p, None
        # (the buffers kept from segment to segment (Plan.keep) are the whole batch's: runs of
        # rows given their fronts held 1.7 MiB more at 25% (LSTM 128, T = 1000), so none are kept)
        return replace(q, keep=False), spans


def execute(
    model: Model,
    params: Params,
    b: Any,
    p: Plan,
    loss_mask: np.ndarray | None = None,
    scale: np.ndarray | None = None,
    restarts: dict[int, np.ndarray] | None = None,
    t0: int = 0,
    rows: list[tuple[int, int]] | None = None,
) -> tuple[Gradient, dict[str, int]]:
    """Run plan p on a checked batch b: (the gradient, counts). Buffers kept for reuse (ops'
    memory_limit) stay within those in use and the work about to run (a recorded segment, or
    a piece of an advance).

    rows: runs of batch rows (b0, b1) (Budget.by_rows; b unmasked): each recorded segment
    whose recurrent products pay for it runs them side by side (ops.side_by_side), each run's
    forward, loss and backward on its rows, into a gradient of its own (the first run's: the
    result), the loss averaged over the whole batch; the runs' gradients are added in order at
    the end, whichever thread ran which.

    For a truncated window (TBPTT under a budget): loss_mask (T, B), the positions whose loss
    counts (instead of b.mask, which still decides where states are held); scale (T, B), the
    factors on the backward message leaving each step (scan_backward's), a cut stream's 0;
    restarts {t: (B,) bool}, the streams whose state is zeroed before step t (a stream reset
    inside the window: forward runs and records split there); t0, the batch's first step in the
    sequence its masks belong to (a truncated window's)."""
    T, B = b.x.shape[:2]
    counted = b.mask if loss_mask is None else loss_mask
    n = model.loss_fn.count(counted, T, B)
    grads = model.zero_grads(params)
    loss = [0.0]

    def forward(a: int, e: int, state: Any, keep: bool, stops: Any = (), kept: list | None = None):
        ms = None if b.mask is None else b.mask[a:e]
        return model.forward_levels(
            params, b.x[a:e], ms, state, keep=keep, state_only=not keep, t0=t0 + a, stops=stops, kept=kept
        )

    def backward(a: int, e: int, y: Any, tapes: list, dstate: Any) -> Any:
        part, dy = model.loss_fn.segment(y, b.targets, counted, a, T, n)
        loss[0] += part
        # each segment's tapes are used once (a compiled scan may take their buffers)
        back = consume if scale is None else partial(consume, scale=scale[a:e])
        return model.backward_levels(params, tapes, dy, dstate, grads, back)

    # chains for the mixed policy's one sweep of stores; revolve's many short chains, freed as
    # they came, left the heap's high-water mark 0.2 MiB higher (LSTM 128, 4%) for 14% less time
    chains = p.policy == "mixed"
    extra: list[Params] = []  # the gradients of the runs of rows after the first
    row_segments = [0]

    def by_rows(a: int, e: int, state: Any, dstate: Any) -> tuple[Any, Any, int] | None:
        """A recorded segment's runs of rows side by side: (the state gradient at a, the state
        at e, the bytes of their tapes), or None to record it whole."""
        spans = ops.row_runs(model, params, b.mask, B, e - a)
        if spans != rows:
            return None
        while len(extra) < len(spans) - 1:
            extra.append(model.zero_grads(params))
        part, d0, last, size = rows_side_by_side(
            model, params, b, a, e, spans, state, dstate, n, [grads, *extra], t0, measure=partial(nbytes, data=(b.x,))
        )
        row_segments[0] += 1
        loss[0] += part
        return d0, last, size

    whole = b.mask is not None or loss_mask is not None or scale is not None or restarts  # (rows: unmasked)
    leaf = by_rows if rows is not None and not whole else None
    dstate, final, stats = walk(p, T, b.state0, forward, backward, (b.x, b.mask), restarts, chains=chains, leaf=leaf)
    stats["row_segments"] = row_segments[0]
    add_into([grads, *extra])
    extra.clear()
    model.add_init_grads(grads, dstate, b.given)
    return Gradient(loss[0] / n, grads, dstate, final), stats


def walk(
    p: Plan,
    T: int,
    state0: Any,
    forward: Any,
    backward: Any,
    data: tuple = (),
    restarts: dict[int, np.ndarray] | None = None,
    chains: bool = False,
    leaf: Any = None,
) -> tuple[Any, Any, dict[str, int]]:
    """Walk plan p over T steps from state0 (a dict of states): forward(a, e, state, keep) ->
    (outputs, state at e, tapes) runs steps a .. e-1 (keep: recording them); backward(a, e,
    outputs, tapes, dstate) -> the state gradient at a, given the one at e (None: zero), taking
    the segment's loss. Returns the state gradient at 0, the state at T and the counts.
    chains: forward also takes stops and kept (Model.forward_levels'): a chain of advances, each
    storing its state and going on from it (the splits down a right spine of the plan), then
    runs as one advance that keeps the states at the store points, not one run per store.
    leaf(a, e, state, dstate): records and backpropagates a recorded segment in its own way
    (execute's runs of rows): (the state gradient at a, the state at e, the bytes of its
    tapes), or None to leave it to forward and backward."""
    stored: dict[int, Any] = {0: state0}  # checkpoints by time index (the initial state given)
    sizes: dict[int, int] = {}  # their bytes, as counted when stored
    live = {"states": 0, "tapes": 0, "peak": 0, "forward": 0}
    dstate: Any = None  # dL/d(state at the right end of what is left): zero at T
    final: Any = None
    cuts = sorted(restarts or ())

    def pieces(a: int, e: int) -> list[tuple[int, int]]:
        """[a, e) split at the restarts inside it."""
        at = [a] + [r for r in cuts if a < r < e] + [e]
        return list(zip(at[:-1], at[1:]))

    def run(a: int, e: int, state: Any, keep: bool, **stops: Any):
        live["forward"] += e - a
        if restarts and a in restarts:  # the stream starts over from zeros (no learned initial state)
            m = restarts[a][:, None]
            state = {
                k: state_map(lambda v: np.where(m, 0.0, v).astype(v.dtype, copy=False), s) for k, s in state.items()
            }
        return forward(a, e, state, keep, **stops)

    def held(kind: str, delta: int) -> None:
        live[kind] += delta
        live["peak"] = max(live["peak"], live["states"] + live["tapes"])

    def room(work: int, storing: int = 0) -> None:
        """Buffers kept for reuse stay within those in use (gradients, stored states and tapes)
        and the work about to run: idle ones beyond are dropped. Where the plan allows it
        (Plan.keep), within what it allows beside the stored states now and the `storing`
        bytes of states the work stores: the buffers of its longest recorded segment then stay
        from one segment, and one step, to the next, and shorter segments use their fronts, so
        that no pages are faulted in again."""
        ops.memory_limit(max(work, p.peak_bytes - live["states"] - storing) if p.keep else work)

    def advance(a: int, e: int, state: Any, ys: list[int] = ()) -> tuple[Any, list]:
        """The state at e from the one at a, keeping no tape, in pieces that fit the part of the
        plan's peak not in use (Storage.advance per step, beside a segment's fixed part and the
        states to keep); and the states at ys (a <= y < e, rising), each of its own."""
        kept: list = [compact(state) for y in ys if y == a]
        free = p.peak_bytes - live["states"] - len(ys) * p.storage.state - p.storage.segment
        piece, longest = max(1, free // p.storage.advance), 0
        while a < e:
            k = min([piece, e - a] + [r - a for r in cuts if a < r < e])
            room(p.storage.segment + k * p.storage.advance, len(ys) * p.storage.state)
            inside = [y - a - 1 for y in ys if a < y < a + k]  # (steps of the piece, after which)
            _, state, _ = run(a, a + k, state, keep=False, **({"stops": inside, "kept": kept} if inside else {}))
            a, longest = a + k, max(longest, k * p.storage.advance)
            if a in ys and a < e:
                kept.append(compact(state))
        state = compact(state)  # (not a row of the advance's buffers, which go back now)
        if longest >= p.storage.step:  # those buffers (lower levels' outputs) are no recording's:
            ops.memory_limit(0)  # given back, not kept beside the next segment's
        return state, kept

    held("states", 0)
    stack: list = [("node", p.root, None)]  # (kind, node, the state at node.a when already at hand)
    try:
        while stack:
            kind, node, state = stack.pop()
            if kind == "free":
                stored.pop(node)
                held("states", -sizes.pop(node))
                continue
            node = expand(node)
            start = stored[node.a] if state is None else state
            if isinstance(node, Leaf):
                room(p.storage.leaf(node.b - node.a))
                done = None if leaf is None else leaf(node.a, node.b, start, dstate)
                if done is not None:
                    live["forward"] += node.b - node.a
                    dstate, last, size = done
                    held("tapes", size)  # (held by the runs together, all freed now)
                    held("tapes", -size)
                    if node.b == T:
                        final = last
                    del last
                    continue
                parts, last = [], start
                for a, e in pieces(node.a, node.b):  # one piece unless a stream restarts inside
                    y, last, tapes = run(a, e, last, keep=True)
                    parts.append((a, e, y, tapes))
                size = nbytes([pt[3] for pt in parts], data)
                held("tapes", size)
                if node.b == T:
                    final = compact(last)  # (not a row of the segment's buffers, which go back now)
                del last
                while parts:
                    a, e, y, tapes = parts.pop()
                    dstate = backward(a, e, y, tapes, dstate)
                    del tapes, y
                held("tapes", -size)
                continue
            chain = [node]  # and the splits down its right spine, each starting where the last ends
            while chains and isinstance(nxt := expand(chain[-1].right), Split) and nxt.y > nxt.a:
                chain.append(nxt)
            ys = [n.y for n in chain[:-1] if n.store]
            at_y, kept = advance(node.a, chain[-1].y, start, ys)
            for n in chain:
                if n.left is not None:
                    stack.append(("node", n.left, None))
                if n.store:
                    stored[n.y] = kept.pop(0) if n is not chain[-1] else at_y
                    sizes[n.y] = nbytes(stored[n.y])
                    held("states", sizes[n.y])
                    stack.append(("free", n.y, None))
            last = chain[-1]  # the right part starts from the state just reached, or the one stored
            stack.append(("node", last.right, None if last.store else at_y))
    finally:
        ops.memory_limit(None)
    stats = {
        "forward_steps": live["forward"],
        "peak_bytes": live["peak"],
        "planned_forward_steps": p.forward_steps,
        "planned_peak_bytes": p.peak_bytes,
    }
    return dstate, final, stats
