"""The contract every recurrent cell fulfils: the math of ONE time step, forward and backward.

A cell knows nothing of sequences, truncation, memory or optimizers. The gradient algorithms
(full, truncated, checkpointed BPTT, RTRL, ...) call these methods in the order they choose.

Layout: a sequence is time-major (T, B, D), a state field is (B, H). Parameters are a
``dict[str, ndarray]``; gradients are a dict with the same keys and shapes.

Every cell here has an input projection ``xp = x W_ih^T + b`` that does not depend on the state,
so it is computed for all T steps as ONE matrix product before the time loop (`project`), and
its weight gradient is ONE matrix product after the backward loop (`project_back`). Only the
recurrent product runs step by step:

    forward   step(params, state, xp_t)              -> (state_t, out_t, cache_t)
    backward  step_back(params, cache_t, dstate_t, dout_t, grads) -> (dstate_{t-1}, dxp_t)
    tangent   step_jvp(params, cache_t, dstate_{t-1}, dxp_t)        -> (dstate_t, dout_t)

`step_back` is the vector-Jacobian product of `step`: given the gradient of the loss with
respect to the new state and to the step's output, it returns the gradient with respect to the
previous state and to xp_t, and ADDS the step's contribution to the recurrent parameters'
gradients into `grads` (the shared weights' gradient is the sum over the unrolled copies).
`step_jvp` is the Jacobian-vector product of `step` with the parameters held: the transpose of
step_back's map (dstate_t, dout_t) -> (dstate_{t-1}, dxp_t), so <u, JVP v> = <VJP u, v>.
Caches are returned values holding what the backward step needs (activations, the previous
state), never recomputed.
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from typing import Any, ClassVar, NamedTuple

import numpy as np

from .. import _checks, ops

_TABLES = threading.Lock()  # a step's token tables, built by one of the calls that share its memo


def _new_tables_lock() -> None:
    """In a child of os.fork, a new lock (another thread may have held the old one)."""
    global _TABLES
    _TABLES = threading.Lock()


if hasattr(os, "register_at_fork"):  # (POSIX)
    os.register_at_fork(after_in_child=_new_tables_lock)

Params = dict[str, np.ndarray]
State = Any  # a NamedTuple of (B, n) arrays, e.g. LSTMState(h, c)


class TokenRows:
    """The input projection of token inputs, gathered step by step: rows[t] = table[x[t]]
    ((B, G), a fresh array), where table = W_ih^T + bias is (V, G). Quacks like the (T, B, G)
    array it stands for in the time loops (shape, dtype, indexing by a step)."""

    def __init__(self, table: np.ndarray, x: np.ndarray) -> None:
        self.table = np.ascontiguousarray(table)
        self.x = x
        self.shape = (x.shape[0], x.shape[1], table.shape[1])
        self.dtype = table.dtype

    def __getitem__(self, t: int) -> np.ndarray:
        return self.table[self.x[t]]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.table[self.x]
        return out if dtype is None else out.astype(dtype)


def project_at(cell: Any, params: Params, x: Any, t0: int = 0) -> Any:
    """cell.project(params, x) for steps t0 .. t0 + T - 1 of the sequence (x in the sequence's
    own order of time): a cell whose steps draw noise per step (zoneout: `timed`) takes t0, so
    that a segment run again meets the same noise."""
    return cell.project(params, x, t0) if getattr(cell, "timed", False) else cell.project(params, x)


def state_map(fn, *states: NamedTuple) -> NamedTuple:
    """Apply `fn` field by field to states of the same type."""
    first = states[0]
    return type(first)(*(fn(*fields) for fields in zip(*states)))


class Cell(ABC):
    """Base class: holds sizes and hyperparameters, no arrays.

    Subclasses set `kind`, `State` (a NamedTuple type), `gates` (the input projection has
    gates * hidden_size columns) and implement `step` and `step_back`.
    """

    kind: ClassVar[str]
    State: ClassVar[type]
    gates: ClassVar[int] = 1

    def __init__(self, input_size: int, hidden_size: int) -> None:
        self.input_size = _checks.positive_int("input_size", input_size)
        self.hidden_size = _checks.positive_int("hidden_size", hidden_size)

    # ---- sizes and parameters --------------------------------------------------------------
    @property
    def output_size(self) -> int:
        """Width of the output the next level sees (H for all cells but Jordan)."""
        return self.hidden_size

    def state_sizes(self) -> dict[str, int]:
        """Width of each state field, e.g. {'h': H, 'c': H}."""
        return {f: self.hidden_size for f in self.State._fields}

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        G, H, D = self.gates * self.hidden_size, self.hidden_size, self.input_size
        return {"W_ih": (G, D), "W_hh": (G, H), "b_ih": (G,), "b_hh": (G,)}

    def init_params(self, rng: np.random.Generator, dtype: Any = np.float64) -> Params:
        """Uniform(-1/sqrt(H), 1/sqrt(H)) for every weight and bias, as torch.nn.RNN/GRU/LSTM."""
        k = 1.0 / np.sqrt(self.hidden_size)
        return {name: rng.uniform(-k, k, size=shape).astype(dtype) for name, shape in self.param_shapes().items()}

    def zero_state(self, batch: int, dtype: Any = np.float64) -> NamedTuple:
        return self.State(*(np.zeros((batch, n), dtype) for n in self.state_sizes().values()))

    # ---- whole-sequence input projection ---------------------------------------------------
    def _folded_bias(self, params: Params) -> np.ndarray:
        """The bias added to the input projection: b_ih plus whatever part of b_hh commutes
        with the recurrent product (all of it for Elman and LSTM), so the step adds none."""
        return params["b_ih"] + params["b_hh"]

    def _fold_bias_back(self, grads: Params, db: np.ndarray) -> None:
        grads["b_ih"] += db
        grads["b_hh"] += db

    def project(self, params: Params, x: np.ndarray) -> np.ndarray | TokenRows:
        """xp = x W_ih^T + bias for all steps at once.

        x: (T, B, D) floats -> (T, B, G) array (one matrix product), or (T, B) integer tokens ->
        `TokenRows`, which gives step t's (B, G) rows on indexing: the product with a one-hot
        row is a gather from the (V, G) table W_ih^T + bias, done step by step so that no
        (T, B, G) array is held."""
        W = params["W_ih"]  # (G, D)
        if x.ndim == 2:  # tokens: one-hot(x) W_ih^T = W_ih^T[x], the table built once a step
            held = tuple(params.values())  # (the weights and biases it is built from among them)
            memo, key = ops.memo(), ("token table", *map(id, held))
            with _TABLES:  # (runs of batch rows side by side share their step's memo: one builds it)
                if key not in memo or any(a is not b for a, b in zip(held, memo[key][0])):
                    memo[key] = (held, np.ascontiguousarray(W.T + self._folded_bias(params)))
                return TokenRows(memo[key][1], x)
        b = self._folded_bias(params)
        T, B, D = x.shape
        xp = ops.matmul(x.reshape(T * B, D), W.T)
        xp += b
        return xp.reshape(T, B, -1)

    def project_back(
        self, params: Params, x: np.ndarray, dxp: np.ndarray, grads: Params, need_dx: bool = True
    ) -> np.ndarray | None:
        """Accumulate dW_ih = sum_t dxp_t^T x_t and the bias gradients; return dx (T, B, D).

        For token inputs the weight gradient is a scatter-add into the looked-up columns and
        no dx is returned."""
        T, B, G = dxp.shape
        d2 = dxp.reshape(T * B, G)
        if x.ndim == 2:  # per-token sums of the rows; the bias gradient is their sum (V rows, not T*B)
            acc = ops.index_sums(x.reshape(-1), d2, self.input_size)
            grads["W_ih"] += acc.T
            self._fold_bias_back(grads, acc.sum(axis=0))
            return None
        self._fold_bias_back(grads, d2.sum(axis=0))
        x2 = x.reshape(T * B, -1)
        ops.matmul_add(d2.T, x2, grads["W_ih"])
        if not need_dx:
            return None
        return ops.matmul(d2, params["W_ih"]).reshape(T, B, -1)

    # ---- one time step ---------------------------------------------------------------------
    @abstractmethod
    def step(self, params: Params, state: NamedTuple, xp_t: np.ndarray) -> tuple[NamedTuple, np.ndarray, Any]:
        """(state_{t-1}, xp_t) -> (state_t, out_t, cache_t). The cache holds what step_back
        needs (activations, the previous state); nothing is recomputed from it."""

    @abstractmethod
    def step_back(
        self, params: Params, cache: Any, dstate: NamedTuple, dout: np.ndarray, grads: Params
    ) -> tuple[NamedTuple, np.ndarray]:
        """(cache_t, dL/dstate_t, dL/dout_t) -> (dL/dstate_{t-1}, dL/dxp_t); adds dparams.
        Returns arrays of its own: never writes into the cache or the incoming gradients."""

    def effective(self) -> Cell:
        """The cell whose steps run now: itself (a wrapper holding no masks gives the cell it
        wraps, so that the fast path takes it)."""
        return self

    def step_jvp(self, params: Params, cache: Any, dstate_prev: NamedTuple, dxp: np.ndarray | None):
        """(cache_t, tangent of state_{t-1}, tangent of xp_t or None: zero) -> (tangent of
        state_t, tangent of out_t), the parameters held: the Jacobian-vector product of `step`,
        exactly the transpose of the linear map `step_back` applies (forward-mode UORO/RTRL:
        A v in O(n^2) instead of n VJPs). Returns arrays of its own."""
        raise NotImplementedError(
            f"{type(self).__name__}.step_jvp: this cell has no forward-mode product; implement "
            "step_jvp(params, cache, dstate_prev, dxp) -> (dstate, dout) as the transpose of its step_back"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(input_size={self.input_size}, hidden_size={self.hidden_size})"
