"""Small array operations shared by the levels and cells."""

from __future__ import annotations

import numpy as np

from . import _kernels


def index_sums(idx: np.ndarray, rows: np.ndarray, size: int) -> np.ndarray:
    """(size, G) array whose row v is the sum of rows[n] over the n with idx[n] == v: the
    gradient of a row gather (token lookup). idx (N,) ints in [0, size), rows (N, G).

    Compiled: one pass over the rows. NumPy: sorted once and summed per distinct index with one
    reduceat, several times faster than np.add.at's row-by-row loop for (T*B, G) rows."""
    acc = np.zeros((size, rows.shape[1]), dtype=rows.dtype)
    if len(idx) == 0:
        return acc
    if _kernels.AVAILABLE and _kernels.enabled():
        _kernels.scatter_add(acc, np.ascontiguousarray(idx, dtype=np.int64), rows)
        return acc
    order = np.argsort(idx, kind="stable")
    sidx = idx[order]
    starts = np.flatnonzero(np.concatenate(([True], sidx[1:] != sidx[:-1])))
    acc[sidx[starts]] = np.add.reduceat(rows[order], starts, axis=0)
    return acc


def scatter_add_rows(target: np.ndarray, idx: np.ndarray, rows: np.ndarray) -> None:
    """target[idx[n]] += rows[n] for every n (repeated indices accumulate).

    target (V, G) (may be a transposed view), idx (N,) ints in [0, V), rows (N, G)."""
    if len(idx):
        target += index_sums(idx, rows, target.shape[0])
