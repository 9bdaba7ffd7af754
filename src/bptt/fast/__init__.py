"""The speed floor: what makes bptt's steps fast on a CPU, beside the math and not under it.

The math (bptt.cells, bptt.scan, the model, the algorithms) is NumPy and complete on its own; it
leaves a few operations open (bptt.ops). This package offers faster ones:

- pool.py: the buffer pool for a step's big arrays, and the big products that fill them (in
  NumPy's BLAS, or in gemm.py's blocked kernel where the BLAS runs narrower vectors than the
  CPU has: machine.own_products);
- rows.py: the elementwise part of one step of Elman (tanh), GRU and LSTM fused into one compiled
  pass per row, the softmax cross-entropy in one pass per row, the token-gradient scatter-add;
- scans.py: whole time loops compiled, NumPy's own cblas_sgemm called per step (blas.py);
- split.py, gemm.py, sync.py: the same scans split by hidden units between threads, each part's
  product in bptt's own packed kernel (LLVM IR), the parts meeting at an atomic counter;
- engine.py: the threads, and NumPy's OpenBLAS held at one thread within a step on them;
- cells.py: the built-in cells on all of that, with the cell contract (bptt.ops.implementation).

Everything here is tested equal to the NumPy reference (tests/fast). BPTT_FAST=0 (or
`use(False)`) gives the reference everywhere; Numba missing, only the pool is used.

Loading. Nothing is loaded when bptt is imported. The first use of any operation installs the
pool; the first float32 use loads the compiled kernels: from Numba's disk cache in about a
second, or, the first time after installing, compiled (under a minute, said in one line on stderr).
`bptt warm` does that ahead of time. float64 never loads them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import ops
from .switch import MODE, OFF, kernels_on, scans_on, use

__all__ = ["MODE", "OFF", "available", "kernels_on", "load", "products", "scans_on", "use"]

_state: dict[str, Any] = {}


def available() -> dict[str, bool]:
    """What this machine has: kernels (Numba), scans (NumPy's OpenBLAS, a disk cache), split
    scans and the engine (sched_yield, OpenBLAS's thread control). Loads the kernels."""
    load()
    _kernels()
    return dict(_state["available"])


def load() -> None:
    """Install the faster operations into bptt.ops; the kernels load at their first float32
    use. Installs every time it is called: where it was called directly first, ops' first use
    puts the defaults back and calls it again."""
    from . import engine, pool

    if not _state:
        _state["available"] = {"kernels": False, "scans": False, "split": False}
    ops.install(
        empty=pool.empty,
        zeros=pool.zeros,
        matmul=pool.matmul,
        index_sums=_index_sums,
        softmax_xent=_softmax_xent,
        implementation=_implementation,
        step_context=_step_context,
        release=pool.buffers.clear,
        memory_limit=_memory_limit,
        memo=engine.memo,
        matmul_add=pool.matmul_add,
        adam=_adam,
        both=_both,
        row_runs=_row_runs,
        side_by_side=engine.side_by_side,
        speed=_speed,
    )


def _memory_limit(nbytes: int | None) -> None:
    from . import pool

    pool.buffers.set_limit(nbytes)


def _kernels() -> Any:
    """The compiled kernels' modules (rows, cells, engine), loaded on first use; None where
    Numba is missing or the compiler failed."""
    if "kernels" not in _state:
        _state["kernels"] = None
        try:
            try:
                from . import cells, engine, rows, warm
            except ImportError:  # no Numba: the NumPy path
                return None
            ready = warm.ensure()
            if ready:
                _products(cells.SCANS)
        except BaseException:  # (Ctrl-C in the first compile, a bad BPTT_LANES or BPTT_GEMM: the next step tries again)
            del _state["kernels"]
            raise
        if ready:
            _state["kernels"] = (rows, cells, engine)
            _state["available"] = {"kernels": True, "scans": cells.SCANS, "split": cells.SCANS and engine.AVAILABLE}
    return _state["kernels"]


def _products(scans: bool) -> None:
    """The big float32 products in bptt's own kernel (pool.own_gemm) where
    machine.own_products() chooses it (a bad BPTT_GEMM: one line at the first float32 step)."""
    from .. import machine
    from . import pool

    if scans and machine.own_products():
        from functools import partial

        from . import gemm

        pool.own_gemm = partial(gemm.product, empty=pool.empty)
    else:
        pool.own_gemm = None


def products() -> str:
    """Which code runs a step's big float32 products, in words (bench and run headers).
    Loads the kernels."""
    from . import pool

    if OFF or not available()["kernels"] or not kernels_on():
        return "NumPy's BLAS"
    return "bptt's packed kernel" if pool.own_gemm is not None else "NumPy's BLAS"


def _speed(dtype: Any) -> str:
    """ops.speed: the kernels that run `dtype`'s steps, in words ('' where none of bptt's)."""
    if _f32(dtype) is None:
        return ""
    from .jit import LANES

    return f"bptt float32 kernels, {LANES}-float vectors; big products: {products()}"


def _f32(dtype: Any) -> Any:
    """The kernels, where `dtype` is float32 and they are on."""
    return _kernels() if dtype == np.float32 and kernels_on() else None


def _index_sums(idx: np.ndarray, rows: np.ndarray, size: int) -> np.ndarray:
    k = _f32(rows.dtype)
    if k is None:
        return ops.DEFAULTS["index_sums"](idx, rows, size)
    acc = np.zeros((size, rows.shape[1]), dtype=rows.dtype)
    if len(idx):
        flat = k[0].flat_rows(rows) or k[0].flat_rows(np.ascontiguousarray(rows))
        k[0].scatter_add(acc, np.ascontiguousarray(idx, dtype=np.int64), *flat)
    return acc


def _adam(g: np.ndarray, mu: np.ndarray, nu: np.ndarray, b1: float, b2: float, c1: float, c2: float, eps: float):
    """ops.adam in one pass (rows.adam_moments) where all three are float32 arrays of one shape
    laid out in order; bit for bit the NumPy version's numbers."""
    k = _f32(g.dtype)
    arrays = (g, mu, nu)
    if k is None or any(a.dtype != g.dtype or a.shape != g.shape or not a.flags.c_contiguous for a in arrays):
        return ops.DEFAULTS["adam"](g, mu, nu, b1, b2, c1, c2, eps)
    m, v, u = (np.empty_like(g) for _ in range(3))
    f = np.float32
    flat = [a.reshape(-1) for a in (g, mu, nu, m, v, u)]
    k[0].adam_moments(*flat, f(b1), f(1.0 - b1), f(b2), f(1.0 - b2), f(c1), f(c2), f(eps))
    return m, v, u


def _both(first: Any, second: Any) -> tuple[Any, Any]:
    """ops.both: side by side on the engine's threads where the step's work is split, each
    call as one part, its own products then whole (engine.side_by_side)."""
    from . import engine

    a, b = engine.side_by_side([first, second])
    return a, b


def _row_runs(model: Any, params: Any, mask: Any, B: int, steps: int) -> list[tuple[int, int]] | None:
    """ops.row_runs: within a step on the engine with P >= 2 parts, one run of rows a part where
    every recurrent cell's scans split by rows and the segment is long enough to pay for the
    hand-off (cells.leaf_rows), else None."""
    from . import engine

    dtype = next(iter(params.values())).dtype
    k = _f32(dtype)
    if k is None or mask is not None or engine.parts() < 2:
        return None
    found = [(lv, d) for lv in model.recurrent_levels for d in lv.directions]
    if not found or not all(k[1].splits(dtype)(d.cell) for _, d in found):
        return None
    return k[1].leaf_rows([lv.sub(params, d.prefix)["W_hh"] for lv, d in found], B, steps, engine.parts())


def _softmax_xent(dtype: Any):
    k = _f32(dtype)
    return None if k is None else k[0].softmax_xent


def _implementation(cell: Any, dtype: Any) -> Any:
    k = _f32(dtype)
    return cell if k is None else k[1].implementation(cell, dtype)


def _step_context(model: Any, params: Any, mask: Any):
    dtype = next(iter(params.values())).dtype
    k = _f32(dtype)
    if k is None:
        return ops.DEFAULTS["step_context"](model, params, mask)
    _, cells, engine = k
    found = [d.cell for lv in model.recurrent_levels for d in lv.directions]
    return engine.engine(engine.ready(found, mask, cells.splits(dtype)))


if not OFF:
    ops.on_first_use(load)
