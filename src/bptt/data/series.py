"""Time series from CSV or whitespace-separated files.

A file holds one or more numeric columns, one row per time step; a CSV file may start with a
header row of column names. `read_series` returns one column as float64. The normalisation is
fitted on the training part only and applied to everything (no information from the future
leaks into training). The model learns one-step-ahead prediction: input v(t), target v(t+1).
Iterated multi-step forecasting feeds each prediction back as the next input.

    NMSE = mean((prediction - target)^2) / var(target)

where var is the variance of the target segment itself (1 = predicting its mean).
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass

import numpy as np

from ..errors import BpttError, one_of
from ._io import read_bytes


def _rows(text: str, path: str) -> tuple[list[str] | None, list[list[str]]]:
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise BpttError(f"data file {path!r}: expected numeric rows, received an empty file")
    if "," in lines[0]:
        rows = [[c.strip() for c in r] for r in csv.reader(io.StringIO("\n".join(lines)))]
    else:
        rows = [ln.split() for ln in lines]

    def numeric(cell: str) -> bool:
        try:
            float(cell)
            return True
        except ValueError:
            return False

    header = None
    if not all(numeric(c) for c in rows[0]):
        header = [c.strip('"') for c in rows[0]]
        rows = rows[1:]
    if not rows:
        raise BpttError(f"data file {path!r}: expected numeric rows after the header, received none")
    return header, rows


def read_series(path: str | os.PathLike, column: str | int | None = None) -> tuple[np.ndarray, str]:
    """One column of a numeric table as float64, and its name.

    column: a header name, or a 0-based index (negative counts from the end); default the last
    column. A missing, empty, binary, non-numeric or NaN/inf-holding file raises ValueError
    naming the file, row and column."""
    path = os.fspath(path)
    raw = read_bytes(path)
    if b"\x00" in raw[:65536]:
        raise BpttError(f"data file {path!r}: expected a numeric text table, received binary data")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise BpttError(
            f"data file {path!r}: expected a numeric text table, received undecodable bytes at offset {e.start}"
        ) from None
    header, rows = _rows(text, path)
    width = len(rows[0])
    if column is None:
        col = width - 1
    elif isinstance(column, str) and not column.lstrip("-").isdigit():
        if header is None or column not in header:
            raise one_of("column", column, header or list(range(width)))
        col = header.index(column)
    else:
        col = int(column)
        if not -width <= col < width:
            raise BpttError(f"column: expected an index in [{-width}, {width}), received {column!r}")
        col %= width
    values = np.empty(len(rows))
    first_line = 2 if header else 1
    for i, r in enumerate(rows):
        if len(r) <= col:
            raise BpttError(
                f"data file {path!r}, row {i + first_line}: expected at least {col + 1} columns, received {len(r)}"
            )
        try:
            values[i] = float(r[col])
        except ValueError:
            raise BpttError(
                f"data file {path!r}, row {i + first_line}, column {col}: expected a number, received {r[col]!r}"
            ) from None
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise BpttError(
            f"data file {path!r}, row {i + first_line}, column {col}: expected a finite number, received {rows[i][col]!r}"
        )
    if len(values) < 3:
        raise BpttError(f"data file {path!r}: expected at least 3 values, received {len(values)}")
    name = header[col] if header else f"column {col}"
    return values, name


@dataclass(frozen=True)
class Normalizer:
    """z = (v - mean) / std, with mean and std of the training part."""

    mean: float
    std: float

    @classmethod
    def fit(cls, values: np.ndarray) -> Normalizer:
        std = float(np.std(values))
        return cls(float(np.mean(values)), std if std > 0 else 1.0)

    def __call__(self, v: np.ndarray) -> np.ndarray:
        return (v - self.mean) / self.std

    def inverse(self, z: np.ndarray) -> np.ndarray:
        return z * self.std + self.mean


def nmse(prediction: np.ndarray, target: np.ndarray) -> float:
    """Mean squared error divided by the variance of the target segment."""
    prediction, target = np.asarray(prediction, float), np.asarray(target, float)
    var = float(np.var(target))
    return float(np.mean((prediction - target) ** 2) / (var if var > 0 else 1.0))


def one_step(z: np.ndarray, dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    """Inputs z(t) and one-step-ahead targets z(t+1) as (T, 1, 1) arrays."""
    z = np.asarray(z, dtype)
    return z[:-1, None, None], z[1:, None, None]


def random_windows(z: np.ndarray, batch: int, length: int, rng: np.random.Generator, dtype=np.float64):
    """B windows of `length` inputs with their next-step targets, at random offsets: (T, B, 1)."""
    n = len(z) - length  # the last valid offset is n - 1 (its target reaches z[-1])
    if n < 1:
        raise BpttError(f"seq_len: expected less than {len(z) - 1} for a series of {len(z)} values, received {length}")
    starts = rng.integers(0, n, size=batch)
    idx = starts[None, :] + np.arange(length)[:, None]  # (T, B)
    z = np.asarray(z, dtype)
    return z[idx][..., None], z[idx + 1][..., None]


def fit_ar(z: np.ndarray, order: int) -> np.ndarray:
    """Least-squares autoregression z(t) = c + a_1 z(t-1) + ... + a_p z(t-p) on the series z;
    returns [c, a_1, ..., a_p]. A linear baseline for one-step forecasts."""
    z = np.asarray(z, np.float64)
    if not (isinstance(order, (int, np.integer)) and order >= 1):
        raise BpttError(f"order: expected a positive integer, received {order!r}")
    if len(z) < 2 * order + 2:
        raise BpttError(f"fit_ar: expected at least {2 * order + 2} values for order {order}, received {len(z)}")
    X = np.column_stack([np.ones(len(z) - order)] + [z[order - k : len(z) - k] for k in range(1, order + 1)])
    coef, *_ = np.linalg.lstsq(X, z[order:], rcond=None)
    return coef


def ar_predict(coef: np.ndarray, z: np.ndarray) -> np.ndarray:
    """One-step predictions of z[p:] from the p values before each (len(z) - p values)."""
    z = np.asarray(z, np.float64)
    p = len(coef) - 1
    X = np.column_stack([np.ones(len(z) - p)] + [z[p - k : len(z) - k] for k in range(1, p + 1)])
    return X @ coef
