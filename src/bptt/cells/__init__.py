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

CELLS: dict[str, type[Cell]] = {c.kind: c for c in (Elman, Jordan, GRU, LSTM)}


ALIASES = {"rnn": "elman"}  # torch's name for the Elman network (nn.RNN)


def cell_class(kind: str | type[Cell]) -> type[Cell]:
    """The cell class for a name ('elman', 'jordan', 'gru', 'lstm'), or a Cell subclass itself
    (a cell of one's own, fulfilling the contract in base.py)."""
    if isinstance(kind, type) and issubclass(kind, Cell):
        return kind
    kind = ALIASES.get(kind, kind)
    if kind not in CELLS:
        raise one_of("cell", kind, sorted(CELLS))
    return CELLS[kind]


def make_cell(kind: str | type[Cell], input_size: int, hidden_size: int, **options: Any) -> Cell:
    """Build a cell by name ('elman', 'jordan', 'gru', 'lstm') or from a Cell subclass."""
    cls = cell_class(kind)
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "input_size", "hidden_size")]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise BpttError(f"cell {kind!r}: expected options among {allowed}, received {unknown}")
    return cls(input_size, hidden_size, **options)


__all__ = [
    "ALIASES",
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
    "Params",
    "State",
    "cell_class",
    "make_cell",
    "state_map",
]
