"""The gradient-check sweep behind `bptt gradcheck` and the test suite.

Every cell x loss x {masked, not} x {1, 2 layers} x {uni, bidirectional}, each on a small random
problem with non-zero biases and a non-zero initial state, plus variants that exercise the other
paths (activations, token inputs, embeddings, feed-forward levels between recurrent ones, the
classic Jordan network, learned initial states).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..cells import CELLS
from ..cells.base import Params
from ..layers import Dense, Embedding, Recurrent, rnn
from ..model import Model, ModelState
from .gradcheck import GradcheckResult, gradcheck

LOSSES = (("ce", "every"), ("mse", "every"), ("ce", "last"), ("mse", "last"))
CELL_KINDS = tuple(CELLS)  # ('elman', 'jordan', 'gru', 'lstm')
D, H, K, T, B = 3, 4, 5, 5, 3  # input, hidden, output sizes; steps; sequences


@dataclass
class Problem:
    """A model with parameters and one batch, everything random but seeded."""

    model: Model
    params: Params
    x: np.ndarray
    targets: np.ndarray
    mask: np.ndarray | None
    state0: ModelState


def random_problem(
    model: Model,
    rng: np.random.Generator,
    T: int = T,
    B: int = B,
    masked: bool = False,
    dtype: Any = np.float64,
    bias_scale: float = 0.5,
    state_scale: float = 0.5,
) -> Problem:
    """Random parameters (biases drawn from U(-bias_scale, bias_scale), so none is zero, and
    learned initial states from N(0, state_scale^2)), inputs,
    targets, an optional right-padding mask (lengths T, T-2, 1, T, ...) and an initial state for
    every direction drawn from N(0, state_scale^2)."""
    params = model.init_params(rng, dtype)
    init_names = {f"{f}0" for lv in model.recurrent_levels for d in lv.directions for f in d.cell.State._fields}
    for k, v in params.items():
        local = k.rsplit(".", 1)[1]
        if local.startswith("b"):
            v[...] = rng.uniform(-bias_scale, bias_scale, v.shape)
        elif local in init_names:  # a learned initial state
            v[...] = state_scale * rng.standard_normal(v.shape)
    if model.tokens:
        x = rng.integers(0, model.input_size, (T, B))
    else:
        x = rng.standard_normal((T, B, model.input_size)).astype(dtype)
    mask = None
    if masked:
        lengths = np.array([(T, max(T - 2, 1), 1)[b % 3] for b in range(B)])
        mask = np.arange(T)[:, None] < lengths[None, :]
    lead = (T, B) if model.loss_fn.at == "every" else (B,)
    if model.loss_fn.kind == "ce":
        targets = rng.integers(0, model.output_size, lead)
    else:
        targets = rng.standard_normal(lead + (model.output_size,)).astype(dtype)
    zero, _ = model.initial_state(params, B, None, np.dtype(dtype))
    state0 = {
        k: type(s)(*(state_scale * rng.standard_normal(a.shape).astype(dtype) for a in s)) for k, s in zero.items()
    }
    return Problem(model, params, x, targets, mask, state0)


@dataclass
class Case:
    """One configuration of the sweep; `build` makes its (unbuilt-level) model."""

    cell: str
    loss: str
    at: str
    masked: bool
    layers: int
    bidirectional: bool
    variant: str = ""
    build: Callable[[], Model] = field(default=None, repr=False)  # type: ignore[assignment]

    @property
    def name(self) -> str:
        parts = [
            self.cell,
            f"{self.loss}-{self.at}",
            "masked" if self.masked else "full",
            f"{self.layers}L",
            "bi" if self.bidirectional else "uni",
        ]
        return "/".join(parts + ([self.variant] if self.variant else []))


def _standard(cell: str, loss: str, at: str, layers: int, bidirectional: bool) -> Callable[[], Model]:
    opts = {"output_size": 3} if cell == "jordan" else {}

    def build() -> Model:
        levels = [rnn(cell, H, layers, bidirectional, **opts), Dense(K)]
        return Model(D, levels, loss=loss, at=at)

    return build


def standard_cases(cells: tuple[str, ...] = CELL_KINDS) -> list[Case]:
    """cell x loss x {masked, not} x {1, 2 layers} x {uni, bidirectional}."""
    return [
        Case(cell, loss, at, masked, layers, bi, build=_standard(cell, loss, at, layers, bi))
        for cell in cells
        for loss, at in LOSSES
        for masked in (False, True)
        for layers in (1, 2)
        for bi in (False, True)
    ]


def variant_cases() -> list[Case]:
    """Paths the standard sweep does not reach."""

    def case(variant, cell, build, loss="ce", at="every", masked=True, layers=1, bi=False):
        return Case(cell, loss, at, masked, layers, bi, variant, build)

    return [
        *(
            case(f"activation={a}", "elman", (lambda a=a: Model(D, [Recurrent("elman", H, activation=a), Dense(K)])))
            for a in ("sigmoid", "relu", "identity")
        ),
        case(
            "classic Jordan: loss on its own output, context decay 0.5",
            "jordan",
            lambda: Model(D, [Recurrent("jordan", H, output_size=K, context_decay=0.5)], loss="mse"),
            loss="mse",
        ),
        case(
            "tokens into the recurrent level", "lstm", lambda: Model(7, [Recurrent("lstm", H), Dense(7)], tokens=True)
        ),
        case(
            "tokens, embedding, 2 layers",
            "gru",
            lambda: Model(7, [Embedding(3), rnn("gru", H, 2, True), Dense(7)], tokens=True),
            layers=2,
            bi=True,
        ),
        case(
            "dense(tanh) / elman / dense(tanh) / lstm / dense",
            "mixed",
            lambda: Model(
                D, [Dense(4, "tanh"), Recurrent("elman", H), Dense(3, "tanh"), Recurrent("lstm", H), Dense(K)]
            ),
            layers=2,
        ),
        case(
            "learned initial state",
            "lstm",
            lambda: Model(D, [rnn("lstm", H, 2, True, learn_init=True), Dense(K)], at="last"),
            at="last",
            layers=2,
            bi=True,
        ),
    ]


def run_case(
    case: Case, seed: int = 0, max_entries: int | None = None, tol: float = 1e-6
) -> tuple[GradcheckResult, int]:
    """Gradient-check one case; returns the result and the number of parameters.

    The learned-initial-state variant leaves state0 out so that the learned parameters are
    the ones checked; every other case checks the gradient of a given, non-zero state0."""
    rng = np.random.default_rng(seed)
    model = case.build()
    p = random_problem(model, rng, masked=case.masked)
    learned = any(lv.learn_init for lv in model.recurrent_levels)
    state0 = None if learned else p.state0
    res = gradcheck(
        model, p.params, p.x, p.targets, mask=p.mask, state0=state0, max_entries=max_entries, rng=rng, tol=tol
    )
    return res, sum(v.size for v in p.params.values())
