"""Truncated BPTT(k1, k2) over a stream (Williams & Peng 1990's BPTT(h; h') with k1 = h', k2 = h).

The network runs continually over a long stream; its state is carried from one segment to the
next. Every k1 steps (at the end of a segment, time t) the errors of the segment's steps
t-k1+1 .. t are injected and propagated back to the start of the window t-k2+1, and no further:

    grad(t) = sum_{tau = t-k1+1}^{t}  sum_{s = t-k2+1}^{tau}  dE(tau)/dh(tau) . dh(tau)/dh(s) . d+h(s)/dW

where d+h(s)/dW is step s's immediate dependence on the weights. So the newest error (tau = t)
travels back k2 steps (k2 - 1 transitions), the oldest injected one (tau = t-k1+1) k2 - k1 + 1
steps; the state gradient entering the window's first step from before it is dropped (the
truncation), and the one at its end is zero (delta(t+1) = 0: no later error has been seen yet).
k1 = k2 is the common chunked form (each segment backpropagated on its own); k1 = 1 the real-time
form (an update after every step); k1 < k2 overlapping windows; k1 = k2 >= T full BPTT.

Nothing is recomputed: each step's forward cache is kept while a later window can still reach
it (the last k2 - k1 steps of history), and every window's backward pass reuses those caches.
The caches of steps in the history were computed with the parameters of their time: with
updates between windows (online learning) that is Williams & Peng's real-time approximation.

A segment's errors are those of all its steps (averaged over its counted positions), so a short
last segment of n < k1 steps injects n errors and reaches k2 - k1 steps before itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import ops, tape
from .._treeio import decode, encode
from ..cells.base import Params, state_map
from ..errors import BpttError
from ..scan import scan_backward
from .base import Algorithm, Gradient, GradientMean, register

if TYPE_CHECKING:
    from ..model import Model, ModelState


def check_streamable(model: Model, what: str) -> None:
    """Streaming (state carried across segments) needs a model whose output at t depends only on
    inputs up to t, and whose segments start from the carried state, not a learned one."""
    if model.bidirectional:
        raise BpttError(
            f"{what}: expected a unidirectional model (state carried forward in time), received a "
            "bidirectional one: its reverse direction needs the whole sequence, so it cannot stream"
        )
    if any(lv.learn_init for lv in model.recurrent_levels):
        raise BpttError(
            f"{what}: expected a model without learned initial states (learn_init=False): a "
            "carried state is not the learned one, received a model with learn_init=True"
        )


def check_carried_batch(batch: int | None, x: Any) -> None:
    """A carried state fits only the same number of streams."""
    B = np.shape(x)[1] if np.ndim(x) >= 2 else None
    if batch is not None and B != batch:
        raise BpttError(
            f"x: expected {batch} streams (the batch size of the carried state), received "
            f"{B}; call reset() before changing the batch size"
        )


def window(k1: Any, k2: Any = None) -> tuple[int, int]:
    """(k1, k2) checked: positive integers, k2 >= k1 (k2 defaults to k1)."""
    k1 = _positive_int("k1", k1)
    k2 = k1 if k2 is None else _positive_int("k2", k2)
    if k2 < k1:
        raise BpttError(
            f"k2: expected k2 >= k1 (errors of the last k1 steps are backpropagated k2 steps), received k1={k1}, k2={k2}"
        )
    return k1, k2


def _positive_int(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise BpttError(f"{name}: expected a positive integer, received {v!r}")
    return int(v)


class TBPTTStream:
    """Truncated BPTT(k1, k2) on one model's stream, one segment at a time (what `TBPTT` runs).

        stream = TBPTTStream(model, k1=20, k2=50)
        for x, y in segments_of_k1_steps:          # (k1, B[, D]) inputs and targets
            g = stream(params, x, y)                # the window gradient (Gradient)
            params = update(params, g.grads)        # online: the next segment uses new weights

    The state is carried from segment to segment (`state`, `reset`). `g.final_state` is the state
    after the segment; `g.dstate0` the gradient at the window's first step (before truncation).
    A sequence with no counted step in a segment (right-padded batches) contributes nothing to
    it; a segment with no counted step at all is skipped (its steps hold every state).
    """

    def __init__(self, model: Model, k1: int, k2: int | None = None) -> None:
        check_streamable(model, "tbptt")
        self.k1, self.k2 = window(k1, k2)
        self.model = model
        rec = [i for i, lv in enumerate(model.levels) if lv.recurrent]
        self.head = rec[-1] + 1  # levels from here on are time-local (readout)
        self.state: ModelState | None = None
        self.batch: int | None = None
        self._history: list = []  # per past segment: (steps, tapes of levels < head, cut (B,) or None)
        self._pending_cut: np.ndarray | None = None

    # ---- state -----------------------------------------------------------------------------
    def reset(self, streams: Any = None) -> None:
        """Start over: all streams (streams=None) or those where the (B,) boolean mask is True.
        A reset stream starts its next step from the initial state, and no gradient crosses the
        reset point."""
        if streams is None or self.state is None:
            self.state, self.batch, self._history, self._pending_cut = None, None, [], None
            return
        m = np.asarray(streams)
        if m.shape != (self.batch,) or m.dtype != bool:
            raise BpttError(
                f"streams: expected a ({self.batch},) boolean array (one flag per stream), received "
                f"{m.dtype} array of shape {m.shape}"
            )
        # no learned initial states (refused above): a restarted stream starts from zeros
        self.state = {
            k: state_map(lambda a: np.where(m[:, None], 0.0, a).astype(a.dtype, copy=False), s)
            for k, s in self.state.items()
        }
        self._pending_cut = m if self._pending_cut is None else (self._pending_cut | m)

    def start_from(self, state: ModelState) -> None:
        """Start over from a given state (e.g. a checkpoint's carried state), with no window
        history before it."""
        self.reset()
        self.state = dict(state)
        self.batch = next(iter(state.values()))[0].shape[0]

    def history(self) -> tuple[Any, dict[str, np.ndarray]]:
        """What later windows can still reach (the kept caches of the last k2 - k1 steps and
        any pending per-stream cut), as a JSON description and named arrays for a checkpoint."""
        arrays: dict[str, np.ndarray] = {}
        desc = encode({"history": self._history, "cut": self._pending_cut}, arrays, "alg/tbptt/")
        return desc, arrays

    def restore(
        self,
        state: ModelState,
        desc: Any,
        arrays: dict[str, np.ndarray],
        params: Params | None = None,
        where: str = "tbptt history",
    ) -> None:
        """Continue from a checkpoint: the carried state and the history saved by `history()`.

        With `params`, the history is checked against what this model keeps: each saved
        segment's tapes must have exactly the layout (classes, shapes, dtypes) that a forward
        run of that many steps gives, and the segments no more than k2 - k1 steps in all; a
        BpttError naming the first difference otherwise."""
        self.start_from(state)
        h = decode(desc, arrays, where)
        if not (isinstance(h, dict) and set(h) == {"history", "cut"} and isinstance(h["history"], list)):
            raise BpttError(f"{where}: expected an object with a history list and a cut, received {str(h)[:80]}")
        history, cut = h["history"], h["cut"]
        if params is not None:
            self._check_history(params, history, cut, where)
        self._history, self._pending_cut = history, cut

    def _check_history(self, params: Params, history: list, cut: Any, where: str) -> None:
        B = self.batch
        if not tape.is_cut(cut, B):
            raise BpttError(f"{where}: cut: expected null or a ({B},) boolean array, received {tape.what(cut)}")
        total = 0
        for i, seg in enumerate(history):
            if not (
                isinstance(seg, tuple)
                and len(seg) == 3
                and isinstance(seg[0], int)
                and not isinstance(seg[0], bool)
                and seg[0] >= 1
                and isinstance(seg[1], list)
                and tape.is_cut(seg[2], B)
            ):
                raise BpttError(f"{where}[{i}]: expected (steps >= 1, tapes, cut), received {tape.what(seg)}")
            steps, tapes, _ = seg
            total += steps
            if total > self.k2 - self.k1:
                raise BpttError(
                    f"{where}: expected at most k2 - k1 = {self.k2 - self.k1} steps of history, received {total}"
                )
            if not tapes:  # (steps whose every state was held: nothing kept)
                continue
            m = self.model
            shape = (steps, B) if m.tokens else (steps, B, m.input_size)
            x = np.zeros(shape, np.int64 if m.tokens else m.check_params(params))
            b = m.check_batch(params, x, None, None, self.state, need_targets=False)

            def layout(masked: bool) -> str | None:
                """What differs from the tapes a forward run gives, without masks or with
                (a model with dropout or zoneout trained with its masks held)."""
                held = (
                    m.dropout(np.random.default_rng(0), B, m.check_params(params))
                    if masked
                    else contextlib.nullcontext()
                )
                with held:
                    run = m.forward_levels(params, b.x, None, b.state0, keep=True)[2][: self.head]
                return tape.layout_diff([tape.tail(p, steps) for p in run], tapes, f"{where}[{i}]", m.input_size)

            diff = layout(False)
            if diff and m.mask_holders() and not m.holds_masks() and not layout(True):
                diff = None  # a history saved with its batches' masks
            if diff:
                raise BpttError(diff)

    # ---- one segment -----------------------------------------------------------------------
    def _segment(self, params: Params, x: Any, targets: Any, mask: Any) -> tuple[Any, Gradient | None]:
        """The checked batch of a segment from the carried state, or (b, the gradient) of a
        segment with nothing counted (every state held, no window)."""
        model = self.model
        check_carried_batch(self.batch if self.state is not None else None, x)
        if self.state is not None and not all(np.isfinite(a).all() for s in self.state.values() for a in s):
            raise BpttError(
                "tbptt: expected a finite state carried from the previous segment, received NaN or inf "
                "(the weights or the loss diverged before it); call reset() to start over"
            )
        b = model.check_batch(params, x, targets, mask, self.state, every_sequence=False)
        if b.mask is not None and not b.mask.any():
            state = b.state0
            self.state, self.batch = state, b.x.shape[1]
            self._hold(b)
            zero = {k: state_map(np.zeros_like, v) for k, v in state.items()}
            return b, Gradient(0.0, model.zero_grads(params), zero, state)
        if b.x.shape[0] > self.k2:
            raise BpttError(f"x: expected a segment of at most k2={self.k2} steps, received {b.x.shape[0]}")
        return b, None

    def _hold(self, b: Any) -> None:
        """A segment whose every state is held still takes its steps of the k2 steps later
        windows reach back: in the history as steps with no tapes (the state passes them as it
        is), so that no window reaches the segments before them by more than k2 steps."""
        self._history.append((b.x.shape[0], [], None))
        self._history = tape.last_steps(self._history, self.k2 - self.k1)

    def __call__(self, params: Params, x: Any, targets: Any, mask: Any = None, t0: int = 0) -> Gradient:
        """t0: the segment's first step in the sequence its masks belong to (zoneout draws per
        step: TBPTT over a whole sequence gives each k1-segment its own)."""
        model = self.model
        b, empty = self._segment(params, x, targets, mask)
        if empty is not None:
            return empty
        n = b.x.shape[0]
        y, final, tapes = model.forward_levels(params, b.x, b.mask, b.state0, keep=True, t0=t0)
        loss, dy = model.loss_fn.value_and_grad(y, b.targets, b.mask)
        grads = model.zero_grads(params)
        # the time-local top levels see only this segment's errors
        _, dh = model.backward_range(params, tapes, dy, None, grads, self.head, len(model.levels))
        # the window: up to k2 - n earlier steps of history, then this segment
        hist = [h for h in tape.last_steps(self._history, self.k2 - n) if h[1]]  # (held steps: no tapes)
        have = sum(steps for steps, _, _ in hist)
        cut_now = self._pending_cut
        parts = [p for _, p, _ in hist] + [tapes[: self.head]]
        B = b.x.shape[1]
        window = [tape.join([p[i] for p in parts], B) for i in range(self.head)] if hist else tapes[: self.head]
        W = have + n
        scale = None
        cuts = [(c, s) for (s, _, c) in hist] + [(cut_now, n)]
        if any(c is not None for c, _ in cuts):
            scale = np.ones((W, B))
            row = 0
            for c, s in cuts:
                if c is not None:
                    scale[row] = np.where(c, 0.0, 1.0)  # the message leaving this segment's first step
                row += s
        if have:
            dh = np.concatenate([np.zeros((have,) + dh.shape[1:], dh.dtype), dh])
        # with k1 = k2 no later window reaches back into these tapes: they are consumed (as in
        # full BPTT, whose computation TBPTT(k, k) then is, bit for bit)
        scan_back = partial(scan_backward, scale=scale, consume=self.k2 == self.k1)
        dstate0, _ = model.backward_range(params, window, dh, None, grads, 0, self.head, scan_back)
        # remember what later windows can reach: the last k2 - k1 steps
        self._history.append((n, [tape.tail(p, n) for p in tapes[: self.head]], cut_now))
        self._pending_cut = None
        self._history = tape.last_steps(self._history, self.k2 - self.k1)
        self.state, self.batch = final, B
        return Gradient(loss, grads, dstate0, final)


class BudgetTBPTTStream(TBPTTStream):
    """Truncated BPTT(k1, k2) whose windows run within a memory budget (Budget's plans): for a
    long k2, the window's caches are not kept from step to step. The history is what a window
    needs to run its earlier steps again: each past segment's inputs, mask and cut and the state
    it started from (a few arrays of (steps, B) or (B, n) instead of the caches of every step);
    each window runs from the stored state at its first step (advancing state-only over the
    steps of a segment it cuts short) through the plan for its length.

    The same gradient as TBPTTStream on fixed weights (float64: within 1e-15 relative, the
    input weights' gradient summed over the plan's segments). With updates between windows the
    window's earlier steps are run again with the current weights, where TBPTTStream reuses the
    caches of their time (Williams & Peng's real-time approximation): from the same stored
    states, the same inputs."""

    def __init__(self, model: Model, k1: int, k2: int | None = None, budget: Any = None, policy: str = "revolve"):
        from .budget import Budget  # (budget imports nothing of this module)

        super().__init__(model, k1, k2)
        self.budget = Budget(budget, policy)

    def __call__(self, params: Params, x: Any, targets: Any, mask: Any = None, t0: int = 0) -> Gradient:
        from .budget import execute

        model = self.model
        b, empty = self._segment(params, x, targets, mask)
        if empty is not None:
            return empty
        n, B = b.x.shape[:2]
        # the history segments this window reaches (the first one possibly cut short by `skip`)
        reach = min(self.k2 - n, self.k2 - self.k1)  # TBPTTStream keeps k2 - k1 steps of history
        keep, have = [], 0
        for seg in reversed(self._history):
            if have >= reach:
                break
            keep.append(seg)
            have += seg[0]
        keep.reverse()
        skip = max(0, have - reach)
        if keep and model.holds_masks(self.head):  # (a Dropout level after the last recurrent one: no matter)
            raise BpttError(
                f"truncated BPTT within a memory budget: expected no dropout or zoneout masks when a window reaches "
                f"back past its batch (k2 = {self.k2} > k1 = {self.k1}: its earlier steps would run again with "
                "this batch's masks), received masks held; use k2 = k1, or no memory budget"
            )
        cut_now = self._pending_cut
        segs = keep + [(n, b.x, b.mask, cut_now, b.state0)]
        state0 = segs[0][4]
        xs = [s[1] for s in segs]
        ms = [s[2] for s in segs]
        cuts = [s[3] for s in segs]
        if skip:  # the first segment's first steps lie before the window: run them state-only
            m0 = None if ms[0] is None else ms[0][:skip]
            _, state0, _ = model.forward_levels(params, xs[0][:skip], m0, state0, keep=False, state_only=True)
            xs[0], ms[0], cuts[0] = xs[0][skip:], None if ms[0] is None else ms[0][skip:], None
        steps = [len(v) for v in xs]
        W, h = sum(steps), sum(steps[:-1])
        xw = np.concatenate(xs) if len(xs) > 1 else b.x
        mw = None
        if any(m is not None for m in ms):
            mw = np.concatenate([np.ones((k, B), bool) if m is None else m for k, m in zip(steps, ms)])
        # the earlier steps carry no loss (their targets are never read)
        tw = b.targets
        if h:
            tw = np.concatenate([np.zeros((h,) + b.targets.shape[1:], b.targets.dtype), b.targets])
        lm = np.ones((W, B), bool) if mw is None else mw.copy()
        lm[:h] = False
        scale = None
        if any(c is not None for c in cuts):
            scale = np.ones((W, B))
            row = 0
            for c, k in zip(cuts, steps):
                if c is not None:
                    scale[row] = np.where(c, 0.0, 1.0)  # the message leaving this segment's first step
                row += k
        bw = model.check_batch(params, xw, tw, mw, state0, every_sequence=False)
        p = self.budget.plan_for(model, params, W, B, mw is not None)
        restarts = {r: c for r, c in zip(np.cumsum([0] + steps[:-1]).tolist(), cuts) if c is not None and r > 0}
        with ops.step_context(model, params, mw):  # where the step's work may be split between cores
            g, self.budget.stats = execute(model, params, bw, p, lm, scale, restarts, t0 - h)
        # what later windows can reach: whole segments covering the last k2 - k1 steps
        self._history.append((n, np.array(b.x), None if b.mask is None else np.array(b.mask), cut_now, b.state0))
        self._pending_cut = None
        self._reach()
        self.state, self.batch = g.final_state, B
        return g

    def _hold(self, b: Any) -> None:
        """A segment whose every state is held: in the history as it is (run again, its steps
        hold the state), so that it takes its steps of the k2 later windows reach back."""
        self._history.append((b.x.shape[0], np.array(b.x), np.array(b.mask), None, b.state0))
        self._reach()

    def _reach(self) -> None:
        """Keep the whole segments that cover the last k2 - k1 steps."""
        while len(self._history) > 1 and sum(s[0] for s in self._history[1:]) >= self.k2 - self.k1:
            self._history.pop(0)
        if self.k2 == self.k1:
            self._history = []

    def _check_history(self, params: Params, history: list, cut: Any, where: str) -> None:
        B, m = self.batch, self.model
        if not tape.is_cut(cut, B):
            raise BpttError(f"{where}: cut: expected null or a ({B},) boolean array, received {tape.what(cut)}")
        template = m.initial_state(params, B)[0]
        for i, seg in enumerate(history):
            if not (
                isinstance(seg, tuple)
                and len(seg) == 5
                and isinstance(seg[0], int)
                and not isinstance(seg[0], bool)
                and seg[0] >= 1
                and tape.is_cut(seg[3], B)
                and isinstance(seg[4], dict)
            ):
                raise BpttError(
                    f"{where}[{i}]: expected (steps >= 1, inputs, mask, cut, state) as a memory-budgeted "
                    f"window keeps them, received {tape.what(seg)}"
                )
            steps, x, mask, _, state = seg
            try:
                m.check_batch(params, x, None, mask, None, need_targets=False, every_sequence=False)
            except BpttError as e:
                raise BpttError(f"{where}[{i}]: {e}") from None
            if len(x) != steps:
                raise BpttError(f"{where}[{i}]: expected {steps} steps of inputs, received {len(x)}")
            if np.shape(x)[1] != B:
                raise BpttError(f"{where}[{i}]: expected inputs of {B} streams, received {np.shape(x)[1]}")
            if set(state) != set(template):
                raise BpttError(f"{where}[{i}]: expected a state keyed by {sorted(template)}, received {sorted(state)}")
            for k, v in state.items():
                if not (isinstance(v, list) and len(v) == len(template[k])):
                    raise BpttError(
                        f"{where}[{i}]: state[{k!r}]: expected {len(template[k])} arrays, received {tape.what(v)}"
                    )
            try:
                m.initial_state(params, B, {k: type(template[k])(*v) for k, v in state.items()})
            except BpttError as e:
                raise BpttError(f"{where}[{i}]: {e}") from None
        if history and sum(s[0] for s in history[1:]) >= self.k2 - self.k1:
            raise BpttError(
                f"{where}: expected the fewest whole segments covering k2 - k1 = {self.k2 - self.k1} steps, "
                f"received {[s[0] for s in history]}"
            )

    def history(self) -> tuple[Any, dict[str, np.ndarray]]:
        arrays: dict[str, np.ndarray] = {}
        plain = [(k, x, m, c, {key: list(v) for key, v in s.items()}) for k, x, m, c, s in self._history]
        desc = encode({"history": plain, "cut": self._pending_cut}, arrays, "alg/tbptt/")
        return desc, arrays

    def restore(self, state, desc, arrays, params=None, where: str = "tbptt history") -> None:
        super().restore(state, desc, arrays, params, where)
        template = self.model.initial_state(params, self.batch)[0] if params is not None else self.state
        self._history = [
            (k, x, m, c, {key: type(template[key])(*v) for key, v in s.items()}) for k, x, m, c, s in self._history
        ]


def segments(T: int, k1: int) -> Iterator[tuple[int, int]]:
    """(start, stop) of consecutive segments of k1 steps over T (the last may be shorter)."""
    for s in range(0, T, k1):
        yield s, min(T, s + k1)


@register
class TBPTT(Algorithm):
    """Truncated BPTT(k1, k2) over a stream (Williams & Peng 1990; the module docstring).

        algo = TBPTT(k1=20, k2=50)                        # or make("tbptt", k1=20, k2=50)
        g = algo(model, params, x, targets)               # x: any number of steps

    Each call runs x as consecutive k1-step segments with the weights fixed, each segment's
    errors backpropagated through a window reaching k2 steps back, into this call's earlier
    steps and the stream's (earlier calls'); it returns the gradient of the call's average loss
    (each window weighted by its share of the counted positions: k1 = k2 >= T gives full BPTT's
    gradient exactly), and keeps the per-window gradients in `windows`. The returned dstate0 is
    the first window's: the gradient at the first step that window reaches (the call's first
    step where the stream starts there). Stateful: the next call continues the stream; `state0`
    starts it anew from that state, `reset()` from the initial state. An online learner calls
    it once per k1-step segment and updates the weights in between (the trainer's --algorithm
    tbptt).

    With `budget` (bytes, or '64MB'; `policy` 'revolve' or 'mixed'), each window runs within
    that memory for its stored states and caches (BudgetTBPTTStream): a long k2 without keeping
    k2 steps of caches."""

    name = "tbptt"
    stateful = True

    def __init__(self, k1: int, k2: int | None = None, budget: Any = None, policy: str = "revolve") -> None:
        self.k1, self.k2 = window(k1, k2)
        self.budget, self.policy = budget, policy
        if budget is not None:
            from .budget import Budget

            Budget(budget, policy)  # checked now, not at the first call
        self._stream: TBPTTStream | None = None
        self.windows: list[Gradient] = []

    def __repr__(self) -> str:
        within = f", budget={self.budget!r}, policy={self.policy!r}" if self.budget is not None else ""
        return f"TBPTT(k1={self.k1}, k2={self.k2}{within})"

    def stream(self, model: Model) -> TBPTTStream:
        """The stream of `model` this algorithm carries (a new one for another model); with a
        budget, one whose windows run within it (BudgetTBPTTStream)."""
        if self._stream is None or self._stream.model is not model:
            if self.budget is None:
                self._stream = TBPTTStream(model, self.k1, self.k2)
            else:
                self._stream = BudgetTBPTTStream(model, self.k1, self.k2, self.budget, self.policy)
        return self._stream

    def reset(self) -> None:
        if self._stream is not None:
            self._stream.reset()

    def history(self) -> tuple[Any, dict[str, np.ndarray]] | None:
        """What the stream's later windows can still reach, for a checkpoint (TBPTTStream.history)."""
        return None if self._stream is None else self._stream.history()

    def restore(
        self,
        model: Model,
        state: ModelState,
        desc: Any,
        arrays: dict[str, np.ndarray],
        params: Params,
        where: str = "tbptt history",
    ) -> None:
        """Continue a stream from a checkpoint's state and history (checked against the model)."""
        self.stream(model).restore(state, desc, arrays, params, where)

    def __call__(
        self, model: Model, params: Params, x: Any, targets: Any, *, mask: Any = None, state0: ModelState | None = None
    ) -> Gradient:
        if model.loss_fn.at != "every":
            raise BpttError("tbptt: expected a model with a loss at every step (at='every'), received at='last'")
        stream = self.stream(model)
        if state0 is not None:
            stream.start_from(state0)
        T = np.shape(x)[0]
        self.windows, mean = [], GradientMean()
        for s, e in segments(T, self.k1):
            m = None if mask is None else np.asarray(mask)[s:e]
            self.windows.append(stream(params, x[s:e], targets[s:e], m, t0=s))
            mean.add(self.windows[-1], np.count_nonzero(m) if m is not None else (e - s) * np.shape(x)[1])
        return mean.result(params)


def tbptt(
    model: Model,
    params: Params,
    x: Any,
    targets: Any,
    k1: int,
    k2: int | None = None,
    *,
    mask: Any = None,
    state0: ModelState | None = None,
) -> tuple[list[Gradient], Gradient]:
    """TBPTT(k1, k2) over a whole sequence with fixed parameters, from state0 (or the initial
    state): the gradient of every window and their combination (see `TBPTT`)."""
    algo = TBPTT(k1, k2)
    g = algo(model, params, x, targets, mask=mask, state0=state0)
    return algo.windows, g
