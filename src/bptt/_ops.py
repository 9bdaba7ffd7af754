"""Small array operations shared by the levels and cells."""

from __future__ import annotations

import numpy as np

from . import _kernels


def scatter_add_rows(target: np.ndarray, idx: np.ndarray, rows: np.ndarray) -> None:
    """target[idx[n]] += rows[n] for every n (repeated indices accumulate): the gradient of a
    row gather (token lookup). Sorted once and summed per distinct index with one reduceat,
    several times faster than np.add.at's row-by-row loop for (T*B, G) rows.

    target (V, G) (may be a transposed view), idx (N,) ints in [0, V), rows (N, G)."""
    if len(idx) == 0:
        return
    if _kernels.AVAILABLE and _kernels.enabled():  # one compiled pass over the rows
        acc = np.zeros(target.shape, dtype=rows.dtype)
        _kernels.scatter_add(acc, np.ascontiguousarray(idx, dtype=np.int64), rows)
        target += acc
        return
    order = np.argsort(idx, kind="stable")
    sidx = idx[order]
    starts = np.flatnonzero(np.concatenate(([True], sidx[1:] != sidx[:-1])))
    target[sidx[starts]] += np.add.reduceat(rows[order], starts, axis=0)
