"""The speed floor: what makes bptt's steps fast on a CPU, beside the math and not under it.

The math (bptt.cells, bptt.scan, the model, the algorithms) is NumPy and complete on its own; it
leaves a few operations open (bptt.ops). This package offers faster ones and installs them the
first time one is used (so `import bptt` compiles nothing):

- pool.py: the buffer pool for a step's big arrays, and the big products that fill them;
- rows.py: the elementwise part of one step of Elman (tanh), GRU and LSTM fused into one compiled
  pass per row, the softmax cross-entropy in one pass per row, the token-gradient scatter-add;
- scans.py: whole time loops compiled, NumPy's own cblas_sgemm called per step (blas.py);
- split.py, gemm.py, sync.py: the same scans split by hidden units between threads, each part's
  product in bptt's own packed kernel (LLVM IR), the parts meeting at an atomic counter;
- engine.py: the threads, and NumPy's OpenBLAS held at one thread within a step on them;
- cells.py: the built-in cells on all of that, with the cell contract (bptt.ops.implementation).

Everything here is tested equal to the NumPy reference (tests/fast). BPTT_FAST=0 (or
`use(False)`) gives the reference everywhere; Numba missing, only the pool is used.

Compiling. The kernels compile once into Numba's disk cache (about 30 s; one line on stderr says
so) the first time a float32 step needs them, or ahead of time with `bptt warm`; after that
they load in about a second, in the first step of a process.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import ops
from .switch import MODE, OFF, kernels_on, scans_on, use

__all__ = ["MODE", "OFF", "available", "kernels_on", "load", "scans_on", "use"]

_loaded: dict[str, Any] = {}


def available() -> dict[str, bool]:
    """What this machine has: kernels (Numba), scans (NumPy's OpenBLAS, a disk cache), split
    scans and the engine (sched_yield, OpenBLAS's thread control). Loads the kernels."""
    load()
    return dict(_loaded.get("available", {"kernels": False, "scans": False, "split": False}))


def load(verbose: bool = True) -> None:
    """Install the faster operations into bptt.ops (once)."""
    if _loaded:
        return
    from . import pool

    impls: dict[str, Any] = {"empty": pool.empty, "zeros": pool.zeros, "matmul": pool.matmul}
    _loaded["available"] = {"kernels": False, "scans": False, "split": False}
    try:
        from . import rows
    except ImportError:  # no Numba: the pool only
        ops.install(**impls)
        return
    from . import cells, engine, warm

    if not warm.ensure(verbose):  # a broken compiler must not break the library
        ops.install(**impls)
        return
    _loaded["available"] = {"kernels": True, "scans": cells.SCANS, "split": cells.SCANS and engine.AVAILABLE}

    def index_sums(idx: np.ndarray, rows_: np.ndarray, size: int) -> np.ndarray:
        if not kernels_on():
            return ops.DEFAULTS["index_sums"](idx, rows_, size)
        acc = np.zeros((size, rows_.shape[1]), dtype=rows_.dtype)
        if len(idx):
            rows.scatter_add(acc, np.ascontiguousarray(idx, dtype=np.int64), rows_)
        return acc

    def softmax_xent(dtype: Any):
        return rows.softmax_xent if dtype == np.float32 and kernels_on() else None

    def step_context(model: Any, params: Any, mask: Any):
        found = [d.cell for lv in model.recurrent_levels for d in lv.directions]
        return engine.engine(engine.ready(found, mask, cells.splits(next(iter(params.values())).dtype)))

    impls.update(
        index_sums=index_sums, softmax_xent=softmax_xent, implementation=cells.implementation, step_context=step_context
    )
    ops.install(**impls)
    _loaded["done"] = True


if not OFF:
    ops.on_first_use(load)
