"""A cell around another cell: the parts of the contract a wrapper passes on unchanged.

Recurrent dropout and zoneout (recurrent_dropout.py, zoneout.py) change what one step does with
the state; the wrapped cell keeps its parameters, sizes, state, input projection and its own
settings (an Elman's activation, ...), and its steps run through what runs the wrapped cell on
that dtype (its NumPy math, or the fast path's per-step kernels).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import ops
from ..errors import BpttError
from .base import Cell, Params


class Wrapped(Cell):
    """Subclasses set `what` (their name in messages) and `supported` (the cell kinds they take),
    and implement step and step_back on top of `self.inner`."""

    what = "a wrapper"
    supported: tuple[str, ...] = ()
    reason = ""  # why only those, in the refusal's words

    def __init__(self, cell: Cell) -> None:
        if getattr(cell, "kind", None) not in self.supported or isinstance(cell, Wrapped):
            raise BpttError(
                f"{self.what}: expected an unwrapped {' or '.join(self.supported)} cell{self.reason}, received "
                f"{getattr(cell, 'kind', type(cell).__name__)!r}"
                + (f" already wrapped ({cell!r})" if isinstance(cell, Wrapped) else "")
            )
        self.inner = cell
        self.kind = cell.kind
        self.State = cell.State
        self.gates = cell.gates
        self.input_size, self.hidden_size = cell.input_size, cell.hidden_size

    @staticmethod
    def _rate(what: str, rate: Any, low_open: bool = True) -> float:
        ok = isinstance(rate, (int, float)) and not isinstance(rate, bool)
        if not ok or not (0 < rate < 1 if low_open else 0 <= rate < 1):
            raise BpttError(f"{what}: expected a number in {'(0, 1)' if low_open else '[0, 1)'}, received {rate!r}")
        return float(rate)

    @property
    def held(self) -> bool:
        """Whether masks are held now (between `draw` and `clear`, Model.dropout); a wrapper
        that draws masks says so."""
        return False

    @property
    def output_size(self) -> int:
        return self.inner.output_size

    def state_sizes(self) -> dict[str, int]:
        return self.inner.state_sizes()

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return self.inner.param_shapes()

    def init_params(self, rng: np.random.Generator, dtype: Any = np.float64) -> Params:
        return self.inner.init_params(rng, dtype)

    def zero_state(self, batch: int, dtype: Any = np.float64):
        return self.inner.zero_state(batch, dtype)

    def project(self, params: Params, x: np.ndarray):
        return self.inner.project(params, x)

    def project_back(self, params, x, dxp, grads, need_dx: bool = True):
        return self.inner.project_back(params, x, dxp, grads, need_dx)

    def _steps(self, dtype: Any) -> Any:
        """What runs the wrapped cell's steps on `dtype` (its NumPy math, or the fast path's
        per-step kernels: the same one for a step and its backward step)."""
        return ops.implementation(self.inner, dtype)

    def __getattr__(self, name: str) -> Any:  # the wrapped cell's own settings (an Elman's activation, ...)
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)
