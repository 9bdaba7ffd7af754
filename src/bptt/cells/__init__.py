"""Recurrent cells: the math of one time step (see base.py for the contract)."""

from __future__ import annotations

import inspect
from typing import Any

from ..errors import BpttError, one_of
from .base import Cell, Params, State, state_map
from .elman import Elman, ElmanState
from .gru import GRU, GRUState
from .jordan import Jordan, JordanState
from .lstm import LSTM, LSTMState
from .spiking import ALIF, LIF, ALIFState, Leaky, LeakyState, LIFState

CELLS: dict[str, type[Cell]] = {c.kind: c for c in (Elman, Jordan, GRU, LSTM)}  # smooth: central differences check them
SPIKING: dict[str, type[Cell]] = {c.kind: c for c in (LIF, ALIF, Leaky)}  # surrogate gradients (spiking.py)


ALIASES = {"rnn": "elman"}  # torch's name for the Elman network (nn.RNN)


def cell_class(kind: str | type[Cell]) -> type[Cell]:
    """The cell class for a name ('elman', 'jordan', 'gru', 'lstm'), or a Cell subclass itself
    (a cell of one's own, fulfilling the contract in base.py)."""
    if isinstance(kind, type) and issubclass(kind, Cell):
        return kind
    kind = ALIASES.get(kind, kind)
    known = {**CELLS, **SPIKING}
    if kind not in known:
        raise one_of("cell", kind, sorted(known))
    return known[kind]


def make_cell(kind: str | type[Cell], input_size: int, hidden_size: int, **options: Any) -> Cell:
    """Build a cell by name ('elman', 'jordan', 'gru', 'lstm') or from a Cell subclass."""
    cls = cell_class(kind)
    allowed: list[str] = []
    for klass in cls.__mro__:  # a subclass passing **options on: its base's options too
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        allowed += [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD or p.kind is p.KEYWORD_ONLY]
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    allowed = [p for p in dict.fromkeys(allowed) if p not in ("self", "input_size", "hidden_size")]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise BpttError(f"cell {kind!r}: expected options among {allowed}, received {unknown}")
    return cls(input_size, hidden_size, **options)


__all__ = [
    "ALIASES",
    "ALIF",
    "ALIFState",
    "CELLS",
    "Cell",
    "Elman",
    "ElmanState",
    "GRU",
    "GRUState",
    "Jordan",
    "JordanState",
    "LSTM",
    "LSTMState",
    "LIF",
    "LIFState",
    "Leaky",
    "LeakyState",
    "Params",
    "SPIKING",
    "State",
    "cell_class",
    "make_cell",
    "state_map",
]
