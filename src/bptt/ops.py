"""The few operations the math floor leaves open to a faster implementation.

The math of bptt (cells, the time loop, levels, losses, algorithms) is NumPy and is complete on
its own. A handful of places may run faster where something knows how: where the big arrays
come from, the big matrix products, the gather-gradient of token inputs, the softmax
cross-entropy, one step (or a whole scan) of a built-in cell, and whether a training step's
work is split between cores. Each is a function here whose default is the plain NumPy
reference; `install` replaces them. `bptt.fast` installs its own on first use (unless
BPTT_FAST=0); the math floor only ever calls `ops.<name>(...)` and never imports `bptt.fast`.

Every replacement must compute what the default computes (to float32 rounding): the tests run
both and compare. `defaults()` puts the references back, `installed(...)` for a block.

Implementations of a cell (`implementation`) follow the cell contract (bptt.cells.base) and may
offer more, which the time loop uses where present (bptt.scan): a whole compiled forward scan
(`forward_scan`, unmasked, tape kept; with `ring=True` the final state alone, in two steps'
buffers) and a consumed backward scan of its tape (`backward_scan`:
the tape's buffers overwritten by the gradients, the recurrent weights' gradient as products
over all its rows afterwards).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np


def _empty(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """An uninitialised array nothing else references (a step's big scratch and results)."""
    return np.empty(shape, dtype)


def _zeros(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    return np.zeros(shape, dtype)


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b for 2-D a (M, K), b (K, N): a product over all T * B rows of a segment."""
    return np.matmul(a, b)


def _matmul_add(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """out += a @ b: a weight gradient's sum over the T * B rows of a segment."""
    out += np.matmul(a, b)


def _adam(
    g: np.ndarray, mu: np.ndarray, nu: np.ndarray, b1: float, b2: float, c1: float, c2: float, eps: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Adam's step for one array: the moments m = b1 mu + (1 - b1) g, v = b2 nu + (1 - b2) g^2
    and the update (m c1) / (sqrt(v) c2 + eps) (c1, c2: the bias corrections), as new arrays."""
    m = b1 * mu + (1.0 - b1) * g
    v = b2 * nu + (1.0 - b2) * g * g
    return m, v, (m * c1) / (np.sqrt(v) * c2 + eps)


def _both(first: Callable[[], Any], second: Callable[[], Any]) -> tuple[Any, Any]:
    """(first(), second()) of two calls that touch nothing of each other's (a readout's weight
    gradient and input gradient): by default one after the other."""
    return first(), second()


def _index_sums(idx: np.ndarray, rows: np.ndarray, size: int) -> np.ndarray:
    """(size, G) array whose row v is the sum of rows[n] over the n with idx[n] == v: the
    gradient of a row gather (token lookup). idx (N,) ints in [0, size), rows (N, G). Sorted
    once and summed per distinct index with one reduceat (several times faster than np.add.at's
    row-by-row loop)."""
    acc = np.zeros((size, rows.shape[1]), dtype=rows.dtype)
    if len(idx) == 0:
        return acc
    order = np.argsort(idx, kind="stable")
    sidx = idx[order]
    starts = np.flatnonzero(np.concatenate(([True], sidx[1:] != sidx[:-1])))
    acc[sidx[starts]] = np.add.reduceat(rows[order], starts, axis=0)
    return acc


def _softmax_xent(dtype: Any) -> Callable | None:
    """A fused softmax cross-entropy for arrays of `dtype`, or None (the loss's NumPy code).
    Called as f(y (N, K), t (N,) int64, scale, d): returns the summed loss, writes scale *
    (softmax(y) - onehot(t)) into d when d has N rows."""
    return None


def _implementation(cell: Any, dtype: Any) -> Any:
    """What runs `cell`'s steps on arrays of `dtype`: the cell itself (its NumPy math), or a
    faster stand-in with the same contract."""
    return cell


def _release() -> None:
    """Give back memory kept for later steps (a buffer pool's idle arrays). By default there is
    none."""


def _memory_limit(nbytes: int | None) -> None:
    """From now on, keep buffers for reuse within those in use now and `nbytes` more (None: no
    limit): memory-budgeted BPTT sets it to the work it is about to run. By default nothing is
    kept."""


def _memo() -> dict:
    """What the calling thread's step keeps for its own duration, derived from weights that
    hold still within it (a token table: a step of many short segments builds it once). By
    default nothing is kept (a fresh dict)."""
    return {}


def _step_context(model: Any, params: Any, mask: Any) -> contextlib.AbstractContextManager:
    """Around one training step of `model` (full BPTT, randomized truncation): where the step's
    work may be split between cores. By default nothing."""
    return contextlib.nullcontext()


def _row_runs(model: Any, params: Any, mask: Any, B: int, steps: int) -> list[tuple[int, int]] | None:
    """Runs of batch rows (b0, b1) whose recorded segments of `steps` steps memory-budgeted BPTT
    may run side by side (`side_by_side`: forward, loss and backward of each run on a thread of
    its own), or None: the batch whole. By default None."""
    return None


def _side_by_side(calls: list[Callable[[], Any]]) -> list[Any]:
    """The results of calls that touch nothing of each other's (one run of rows each), side by
    side on the step's threads where its work is split. By default one after the other."""
    return [c() for c in calls]


def _speed(dtype: Any) -> str:
    """The faster code that runs `dtype`'s steps, in words, for a run's header (loading it
    where it loads on first use); by default '' (NumPy's own)."""
    return ""


DEFAULTS: dict[str, Callable] = {
    "empty": _empty,
    "zeros": _zeros,
    "matmul": _matmul,
    "index_sums": _index_sums,
    "softmax_xent": _softmax_xent,
    "implementation": _implementation,
    "step_context": _step_context,
    "release": _release,
    "memory_limit": _memory_limit,
    "memo": _memo,
    "matmul_add": _matmul_add,
    "adam": _adam,
    "both": _both,
    "row_runs": _row_runs,
    "side_by_side": _side_by_side,
    "speed": _speed,
}

empty, zeros, matmul, index_sums = _empty, _zeros, _matmul, _index_sums
softmax_xent, implementation, step_context, release = _softmax_xent, _implementation, _step_context, _release
memory_limit, memo, matmul_add, adam, both = _memory_limit, _memo, _matmul_add, _adam, _both
row_runs, side_by_side, speed = _row_runs, _side_by_side, _speed

_loader: Callable[[], None] | None = None


def install(**impls: Callable) -> None:
    """Replace some of the operations (names as in DEFAULTS)."""
    unknown = sorted(set(impls) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"ops.install: expected names among {sorted(DEFAULTS)}, received {unknown}")
    globals().update(impls)


def current() -> dict[str, Callable]:
    _load()
    return {name: globals()[name] for name in DEFAULTS}


def defaults() -> None:
    """The NumPy references everywhere (and no loading of a faster implementation)."""
    global _loader
    _loader = None
    globals().update(DEFAULTS)


@contextlib.contextmanager
def installed(impls: dict[str, Callable]) -> Iterator[None]:
    """Within the block, these operations (e.g. `installed(DEFAULTS)`: the reference path)."""
    old = current()
    install(**impls)
    try:
        yield
    finally:
        install(**old)


def on_first_use(loader: Callable[[], None]) -> None:
    """Call `loader` (which installs faster operations) the first time any operation is used,
    so that importing bptt loads and compiles nothing."""
    global _loader
    _loader = loader

    def stub(name: str) -> Callable:
        def first(*a: Any, **k: Any) -> Any:
            _load()
            return globals()[name](*a, **k)

        first.__name__ = name
        return first

    globals().update({name: stub(name) for name in DEFAULTS})


def _load() -> None:
    global _loader
    if _loader is not None:
        loader, _loader = _loader, None
        globals().update(DEFAULTS)  # (no stub while it loads: an operation it uses is NumPy's)
        try:
            loader()
        except BaseException:  # (a bad BPTT_LANES, Ctrl-C: the next use tries again, not NumPy's silently)
            on_first_use(loader)
            raise
