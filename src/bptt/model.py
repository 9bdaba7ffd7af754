"""A model: input -> levels (feed-forward and recurrent, in any order) -> loss.

The model knows how levels compose; it does not know how time is traversed. Its level-wise
`forward_levels` / `backward_levels` take the time loops (`scan_forward`, `scan_backward`) from
the gradient algorithm that calls them. Every level runs over the whole segment before the next
level starts (layer-wise, like cuDNN), which is exact because level l + 1 at time t depends on
level l only at time t, and it lets every input projection be one matrix product.

    model = Model(65, [Recurrent("lstm", 128), Dense(65)], tokens=True, loss="ce")
    params = model.init_params(np.random.default_rng(0))
    g = full_bptt(model, params, x, targets)          # x (T, B) tokens, targets (T, B)

Shapes: inputs (T, B, D) floats or (T, B) integer tokens; mask (T, B) bool; a model state is a
dict from direction key ('lstm0', 'lstm0.reverse') to the cell's state (LSTMState(h, c), ...),
each field (B, n).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _checks, ops
from .cells.base import Params, project_at
from .errors import BpttError
from .layers import Level, Recurrent
from .losses import Loss
from .scan import scan_backward, scan_forward

ModelState = dict[str, Any]


@dataclass
class Batch:
    """Checked inputs of one call: arrays converted to what the loops expect."""

    x: np.ndarray
    targets: np.ndarray | None
    mask: np.ndarray | None  # (T, B) bool
    state0: ModelState
    given: frozenset  # direction keys whose initial state the caller gave


def _flatten(levels) -> list[Level]:
    if isinstance(levels, Level):  # (one level, not in a list)
        return [levels]
    if isinstance(levels, (str, bytes)) or not hasattr(levels, "__iter__"):
        raise BpttError(f"levels: expected a list of Level objects, received {type(levels).__name__}")
    out: list[Level] = []
    for lv in levels:
        if isinstance(lv, (list, tuple)):
            out.extend(_flatten(lv))
        elif isinstance(lv, Level):
            out.append(lv)
        else:
            raise BpttError(f"levels: expected Level objects, received {type(lv).__name__}")
    return out


class Model:
    """Levels composed in order, with a loss on the last level's output.

    input_size: D for float inputs, or the vocabulary size with tokens=True.
    loss: 'ce' (softmax cross-entropy, integer targets) or 'mse' (1/2 squared error).
    at: 'every' step carries a loss, or only the 'last' (counted) step of each sequence (with
    window=W: each of its last W steps, with the sequence's target).
    """

    def __init__(
        self,
        input_size: int,
        levels: Sequence[Level | Sequence[Level]],
        *,
        tokens: bool = False,
        loss: str = "ce",
        at: str = "every",
        window: int = 1,
    ) -> None:
        self.input_size = _checks.positive_int("input_size", input_size)
        self.tokens = bool(tokens)
        self.levels = _flatten(levels)
        if not self.levels:
            raise BpttError("levels: expected at least one level, received none")
        self.loss_fn = Loss(loss, at, window)
        size, names = self.input_size, set()
        for i, lv in enumerate(self.levels):
            if lv.input_size is not None:
                raise BpttError(f"levels[{i}]: this level object is already built into a model")
            tie = getattr(lv, "tie", None)
            if tie is not None and not any(tie is earlier for earlier in self.levels[:i]):
                raise BpttError(
                    f"levels[{i}]: expected a tie to an Embedding level before it in this model, received one to "
                    f"an Embedding of another model or after it"
                )
            lv.build(size, f"{lv.kind}{i}", self.tokens and i == 0)
            if lv.name in names or "." in lv.name:
                raise BpttError(f"levels[{i}]: expected a unique name without '.', received {lv.name!r}")
            names.add(lv.name)
            size = lv.output_size
        self.output_size = size
        self._shapes = {k: s for lv in self.levels for k, s in lv.param_shapes().items()}

    # ---- parameters ------------------------------------------------------------------------
    @property
    def recurrent_levels(self) -> list[Recurrent]:
        return [lv for lv in self.levels if lv.recurrent]

    def mask_holders(self, upto: int | None = None) -> list:
        """What holds masks for a batch, in the levels' order: Dropout levels, and the wrapped
        cells of recurrent levels (recurrent dropout, zoneout); of levels[:upto] only if given."""
        held = []
        for lv in self.levels[:upto]:
            if lv.kind == "dropout":
                held.append(lv)
            elif lv.recurrent:
                held += [d.cell for d in lv.directions if hasattr(d.cell, "draw")]
        return held

    def holds_masks(self, upto: int | None = None) -> bool:
        """Whether masks are held now (within `dropout`), in levels[:upto] if given."""
        return any(getattr(h, "held", True) for h in self.mask_holders(upto))  # (one without `held`: assume so)

    @contextlib.contextmanager
    def dropout(self, rng: np.random.Generator, batch: int, dtype: Any) -> Iterator[None]:
        """Within: every Dropout level, and every recurrent level with recurrent dropout or
        zoneout, holds masks for a batch of `batch` sequences, drawn from rng (level by level);
        after, none (the levels are the identity, and the cells their evaluation steps, again)."""
        held = self.mask_holders()
        for h in held:
            h.draw(rng, batch, dtype)
        try:
            yield
        finally:
            for h in held:
                h.clear()

    @property
    def bidirectional(self) -> bool:
        return any(lv.bidirectional for lv in self.recurrent_levels)

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return dict(self._shapes)

    def init_params(self, rng: np.random.Generator | int = 0, dtype: Any = np.float64) -> Params:
        """Fresh parameters. Randomness comes only from `rng` (a Generator, or a seed)."""
        dt = _checks.float_dtype("dtype", dtype)
        rng = _checks.generator("rng", rng)
        params: Params = {}
        for lv in self.levels:
            params.update({f"{lv.name}.{k}": v for k, v in lv.init_params(rng, dt).items()})
        return params

    def check_params(self, params: Params) -> np.dtype:
        """Keys, shapes and one common float dtype; returns that dtype."""
        if not isinstance(params, dict):
            raise BpttError(f"params: expected a dict of arrays, received {type(params).__name__}")
        missing = sorted(set(self._shapes) - set(params))
        extra = sorted(set(params) - set(self._shapes))
        if missing or extra:
            raise BpttError(
                f"params: expected keys {sorted(self._shapes)}, received keys with {missing} missing "
                f"and {extra} unexpected"
            )
        dtype = None
        for k, shape in self._shapes.items():
            a = _checks.array(f"params[{k!r}]", params[k])
            _checks.shape(f"params[{k!r}]", a, shape, "")
            if dtype is None:
                dtype = _checks.float_dtype(f"params[{k!r}] dtype", a.dtype)
            _checks.dtype_is(f"params[{k!r}]", a, dtype)
        return dtype

    def zero_grads(self, params: Params) -> Params:
        return {k: ops.zeros(v.shape, v.dtype) for k, v in params.items()}

    # ---- inputs ----------------------------------------------------------------------------
    def check_batch(
        self,
        params: Params,
        x: Any,
        targets: Any = None,
        mask: Any = None,
        state0: ModelState | None = None,
        need_targets: bool = True,
        every_sequence: bool = True,
    ) -> Batch:
        dtype = self.check_params(params)
        _checks.array("x", x)
        if self.tokens:
            _checks.shape("x", x, (None, None), "(T, B) token ids")
            _checks.integer("x", x)
            _checks.in_range("x", x, self.input_size)
        else:
            _checks.shape("x", x, (None, None, self.input_size), "(T, B, D)")
            _checks.dtype_is("x", x, dtype)
            _checks.finite("x", x)
        T, B = x.shape[:2]
        if T == 0 or B == 0:
            raise BpttError(f"x: expected at least one step and one sequence, received shape {x.shape}")
        m = None
        if mask is not None:
            m = _checks.array("mask", mask)
            _checks.shape("mask", m, (T, B), "(T, B)")
            if m.dtype != bool:
                if not np.isin(m, (0, 1)).all():
                    raise BpttError("mask: expected booleans or 0/1 values, received other values")
                m = m.astype(bool)
            if every_sequence and not m.any(axis=0).all():
                b = int(np.flatnonzero(~m.any(axis=0))[0])
                raise BpttError(
                    f"mask: expected every sequence to have a counted step, received sequence {b} with none"
                )
            if m.all():
                m = None
        if need_targets:
            if targets is None:
                raise BpttError("targets: expected an array, received None")
            targets = self.loss_fn.check_targets(targets, T, B, self.output_size, dtype, m)
        s0, given = self.initial_state(params, B, state0, dtype)
        return Batch(x, targets, m, s0, given)

    def state_keys(self) -> list[str]:
        return [d.key for lv in self.recurrent_levels for d in lv.directions]

    def initial_state(
        self, params: Params, batch: int, state0: ModelState | None = None, dtype: Any = None
    ) -> tuple[ModelState, frozenset]:
        """The state each direction starts from: given in `state0`, else learned (learn_init),
        else zeros. Also returns the keys that were given."""
        dtype = dtype or self.check_params(params)
        state0 = {} if state0 is None else state0
        if not isinstance(state0, dict):
            raise BpttError(f"state0: expected a dict keyed by {self.state_keys()}, received {type(state0).__name__}")
        unknown = sorted(set(state0) - set(self.state_keys()))
        if unknown:
            raise BpttError(f"state0: expected keys among {self.state_keys()}, received {unknown}")
        out: ModelState = {}
        for lv in self.recurrent_levels:
            for d in lv.directions:
                cell = d.cell
                if d.key in state0:
                    s = state0[d.key]
                    if not isinstance(s, cell.State):
                        raise BpttError(
                            f"state0[{d.key!r}]: expected {cell.State.__name__}, received {type(s).__name__}"
                        )
                    for f, n in cell.state_sizes().items():
                        a = _checks.array(f"state0[{d.key!r}].{f}", getattr(s, f))
                        _checks.shape(f"state0[{d.key!r}].{f}", a, (batch, n), "(B, n)")
                        _checks.dtype_is(f"state0[{d.key!r}].{f}", a, dtype)
                        _checks.finite(f"state0[{d.key!r}].{f}", a)
                    out[d.key] = s
                elif lv.learn_init:
                    p = lv.sub(params, d.prefix)
                    out[d.key] = cell.State(
                        *(np.broadcast_to(p[f"{f}0"], (batch, n)).copy() for f, n in cell.state_sizes().items())
                    )
                else:
                    out[d.key] = cell.zero_state(batch, dtype)
        return out, frozenset(state0)

    # ---- level-wise composition ------------------------------------------------------------
    def forward_levels(
        self,
        params: Params,
        x: np.ndarray,
        mask: np.ndarray | None,
        state0: ModelState,
        keep: bool = True,
        state_only: bool = False,
        t0: int = 0,
        stops: Any = (),
        kept: list | None = None,
    ) -> tuple[np.ndarray | None, ModelState, list]:
        """Run every level over the segment. Returns the last level's output (T, B, K), the
        final state of every direction, and the tapes for `backward_levels` (if keep).
        state_only: for the final states alone (memory-budgeted BPTT's advances): the levels up
        to the last recurrent one, whose outputs are not kept (output None, no tapes).
        t0: the segment's first step in the sequence (memory-budgeted BPTT's segments: a cell
        drawing noise per step meets the same noise when a segment runs again).
        stops: steps (rising, 0 the segment's first; a reversed direction's in its own order)
        after which every direction's state is appended to `kept` (a ModelState of arrays of
        their own per stop: memory-budgeted BPTT's advance past several store points, one scan
        per level)."""
        tapes: list = []
        final: ModelState = {}
        states: dict[str, list] = {}  # each direction's states at the stops
        last = max(i for i, lv in enumerate(self.levels) if lv.recurrent) if state_only else len(self.levels)
        for i, lv in enumerate(self.levels[: last + 1]):
            if not lv.recurrent:
                x, cache = lv.forward(lv.sub(params), x)
                tapes.append(cache if keep else None)
                continue
            outs, dir_tapes = [], []
            for d in lv.directions:
                p = lv.sub(params, d.prefix)
                xp = project_at(d.cell, p, x, t0)  # (T, B, G): one matrix product for all steps
                at = states.setdefault(d.key, []) if len(stops) else None
                out, final[d.key], tape = scan_forward(
                    d.cell, p, xp, state0[d.key], mask, d.reverse, keep and not state_only, i < last, stops, at
                )
                outs.append(out)
                dir_tapes.append(tape)
            if state_only and i == last:
                _gather(states, len(stops), kept)
                return None, final, []
            tapes.append((x, dir_tapes) if keep else None)
            x = outs[0] if len(outs) == 1 else np.concatenate(outs, axis=-1)
        _gather(states, len(stops), kept)
        return x, final, tapes

    def backward_levels(
        self,
        params: Params,
        tapes: list,
        dy: np.ndarray,
        dfinal: ModelState | None,
        grads: Params,
        scan_back: Callable = scan_backward,
    ) -> ModelState:
        """Backpropagate dy = dL/d(last level output) through all levels, adding into `grads`.

        dfinal: gradient with respect to each direction's final state (missing: zeros, i.e.
        delta(T+1) = 0). Returns the gradient with respect to each initial state."""
        return self.backward_range(params, tapes, dy, dfinal, grads, 0, len(self.levels), scan_back)[0]

    def backward_range(
        self,
        params: Params,
        tapes: list,
        dy: np.ndarray,
        dfinal: ModelState | None,
        grads: Params,
        lo: int,
        hi: int,
        scan_back: Callable = scan_backward,
    ) -> tuple[ModelState, np.ndarray | None]:
        """backward_levels for levels lo .. hi-1 only (tapes indexed like self.levels; dy is the
        gradient at level hi-1's output). Returns the initial-state gradients of the directions
        in that range and the gradient at level lo's input (None for lo = 0)."""
        dstate0: ModelState = {}
        for i in range(hi - 1, lo - 1, -1):
            lv, tape = self.levels[i], tapes[i]
            need_dx = i > 0
            if not lv.recurrent:
                dy = lv.backward(lv.sub(params), tape, dy, lv.sub(grads), need_dx)
                continue
            x, dir_tapes = tape
            dx, col = None, 0
            for d, dtape in zip(lv.directions, dir_tapes):
                p, g = lv.sub(params, d.prefix), lv.sub(grads, d.prefix)
                O = d.cell.output_size
                douts = dy[..., col : col + O]
                col += O
                dT = (dfinal or {}).get(d.key)
                if dT is None:
                    dT = d.cell.zero_state(dy.shape[1], dy.dtype)
                dxp, dstate0[d.key] = scan_back(d.cell, p, dtape, douts, dT, g)
                dx_d = d.cell.project_back(p, x, dxp, g, need_dx)
                dx = dx_d if dx is None else dx + dx_d
            dy = dx
        return dstate0, dy

    def add_init_grads(self, grads: Params, dstate0: ModelState, given: frozenset) -> None:
        """Learned initial states receive the batch-summed initial-state gradient (when the
        caller did not supply that state)."""
        for lv in self.recurrent_levels:
            if not lv.learn_init:
                continue
            for d in lv.directions:
                if d.key in given:
                    continue
                g = lv.sub(grads, d.prefix)
                for f in d.cell.state_sizes():
                    g[f"{f}0"] += getattr(dstate0[d.key], f).sum(axis=0)

    # ---- inference -------------------------------------------------------------------------
    def forward(
        self, params: Params, x: Any, *, mask: Any = None, state0: ModelState | None = None
    ) -> tuple[np.ndarray, ModelState]:
        """The last level's output (T, B, K) (logits for 'ce') and the final state."""
        b = self.check_batch(params, x, None, mask, state0, need_targets=False)
        y, final, _ = self.forward_levels(params, b.x, b.mask, b.state0, keep=False)
        return y, final

    def step(self, params: Params, state: ModelState, x_t: np.ndarray) -> tuple[np.ndarray, ModelState]:
        """One time step for generation: x_t (B,) tokens or (B, D) floats -> (y_t (B, K), state).

        `state` must hold every direction (start from `initial_state`). Inputs are not checked
        here (this is the inner loop of sampling); bidirectional models cannot step."""
        if self.bidirectional:
            raise BpttError(
                "step: expected a unidirectional model, received a bidirectional one "
                "(its output at t depends on inputs after t)"
            )
        if self.tokens:  # (an id past the table reads outside it: the one check this loop makes)
            _checks.in_range("x_t", np.asarray(x_t), self.input_size)
        y, final, _ = self.forward_levels(params, x_t[None], None, state, keep=False)
        return y[0], final

    def loss(self, params: Params, x: Any, targets: Any, mask: Any = None, state0: ModelState | None = None) -> float:
        """The loss (average over counted positions) without gradients."""
        return self.batch_loss(params, self.check_batch(params, x, targets, mask, state0))

    def batch_loss(self, params: Params, b: Batch) -> float:
        """The loss on an already checked batch."""
        y, _, _ = self.forward_levels(params, b.x, b.mask, b.state0, keep=False)
        return self.loss_fn.value(y, b.targets, b.mask)

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(lv) for lv in self.levels)
        return (
            f"Model(input_size={self.input_size}, tokens={self.tokens}, loss={self.loss_fn.kind!r}, "
            f"at={self.loss_fn.at!r}{f', window={self.loss_fn.window}' if self.loss_fn.window > 1 else ''}, levels=[\n  {inner}])"
        )


def _gather(states: dict[str, list], n: int, into: list | None) -> None:
    """Each direction's states at n stops, as n ModelStates appended to `into`."""
    if n:
        into.extend({key: at[k] for key, at in states.items()} for k in range(n))
