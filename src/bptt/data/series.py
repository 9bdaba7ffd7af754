"""Time series from CSV or whitespace-separated files.

A file holds one or more numeric columns, one row per time step; a CSV file may start with a
header row of column names. `read_series` returns one column as float64; `read_table` several:
the input columns and the target columns (by default the inputs themselves), with missing values
(an empty field, NA, NaN, nan or ?) refused (`missing="error"`, naming the row and column),
their rows dropped ("drop"), or filled linearly between the neighbouring values of the column
("interpolate"; before the first and after the last value: the nearest value). The normalisation
is fitted per column on the training part only and applied to everything (no information from
the future leaks into training). The model learns one-step-ahead prediction: the inputs at t,
the targets at t+1. Iterated multi-step forecasting feeds each prediction back as the next input.

    NMSE = mean((prediction - target)^2) / var(target)

where var is the variance of the target segment itself (1 = predicting its mean), per target
column.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import BpttError, one_of
from ._io import read_bytes

MISSING = ("", "NA", "NaN", "nan", "?")  # how a missing value is written (and any other spelling of NaN)
MISSING_RULES = ("error", "drop", "interpolate")


def _missing(cell: str) -> bool:
    if cell in MISSING:
        return True
    try:
        return math.isnan(float(cell))
    except ValueError:
        return False


def _rows(text: str, path: str) -> tuple[list[str] | None, list[list[str]], list[int]]:
    """(the header or None, the rows' cells, each row's line in the file: comments and blank
    lines are skipped, and an error names the file's own line)."""
    kept = [(k + 1, ln) for k, ln in enumerate(text.splitlines()) if ln.strip() and not ln.lstrip().startswith("#")]
    lines, numbers = [ln for _, ln in kept], [k for k, _ in kept]
    if not lines:
        raise BpttError(f"data file {path!r}: expected numeric rows, received an empty file")
    semi = next((ln for ln in lines[:2] if ";" in ln), None)
    if semi is not None:  # (read as commas, '0;0,25' became the columns '0;0' and '25': wrong numbers)
        raise BpttError(
            f"data file {path!r}: expected numbers separated by commas, spaces or tabs (a decimal point, no "
            f"thousands separator), received a line with ';': {semi[:60]!r}"
        )
    if "," in lines[0]:
        rows = [[c.strip() for c in r] for r in csv.reader(io.StringIO("\n".join(lines)))]
    else:
        rows = [ln.split() for ln in lines]

    def numeric(cell: str) -> bool:
        try:
            float(cell)
            return True
        except ValueError:
            return cell in MISSING  # a first row with a missing value is still data

    if len(rows) != len(numbers):  # (a quoted field over several lines: rows counted instead)
        numbers = list(range(1, len(rows) + 1))
    header = None
    if not all(numeric(c) for c in rows[0]):
        header = [c.strip('"') for c in rows[0]]
        rows, numbers = rows[1:], numbers[1:]
    if not rows:
        raise BpttError(f"data file {path!r}: expected numeric rows after the header, received none")
    return header, rows, numbers


def _spread(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) over the first axis; finite values whose squares overflow a float64 (beyond
    about 1e154) are refused: every statistic of them would be inf or NaN."""
    with np.errstate(over="ignore", invalid="ignore"):
        mean, std = np.mean(values, axis=0), np.std(values, axis=0)
    if not (np.isfinite(mean).all() and np.isfinite(std).all()):
        raise BpttError(
            "data: expected values whose mean and spread fit a float64, received values up to "
            f"{float(np.max(np.abs(values))):.3g} (their spread overflows)"
        )
    return mean, std


def parse_columns(text: str, key: str = "column") -> list[str]:
    """'temp,humidity,load' -> ['temp', 'humidity', 'load']: header names or 0-based indices
    separated by commas ('' -> [], the default)."""
    if not text.strip():
        return []
    items = [c.strip() for c in text.split(",")]
    if "" in items:
        raise BpttError(
            f"{key}: expected column names or 0-based indices separated by commas, received {text!r} (an empty name)"
        )
    twice = next((c for i, c in enumerate(items) if c in items[:i]), None)
    if twice is not None:
        raise BpttError(f"{key}: expected distinct columns, received {twice!r} twice in {text!r}")
    return items


def _resolve(column: str | int | None, header: list[str] | None, width: int, key: str) -> int:
    """The 0-based index of a column given by name, index (negative from the end) or None (the last)."""
    if column is None:
        return width - 1
    if isinstance(column, str) and not column.lstrip("-").isdigit():
        if header is None or column not in header:
            raise one_of(key, column, header or list(range(width)))
        if header.count(column) > 1:
            where = [i for i, h in enumerate(header) if h == column]
            raise BpttError(
                f"{key}: expected a name that one column has, received {column!r}, the name of columns "
                f"{', '.join(map(str, where))} (give an index)"
            )
        return header.index(column)
    col = int(column)
    if not -width <= col < width:
        raise BpttError(f"{key}: expected an index in [{-width}, {width}), received {column!r}")
    return col % width


def used_columns(columns: dict[str, list[str]]) -> list[str]:
    """The columns a run of several columns records ({'inputs', 'targets'} names) in the order
    of its per-column records and of `Table`: the inputs, then the targets that are not inputs."""
    return columns["inputs"] + [t for t in columns["targets"] if t not in columns["inputs"]]


@dataclass(frozen=True)
class Table:
    """The columns a series run uses, (T, D) float64: the inputs first, then the targets that
    are not inputs; `targets` indexes the target columns among them."""

    values: np.ndarray  # (T, D)
    names: tuple[str, ...]  # of the D columns
    index: tuple[int, ...]  # their 0-based columns in the file
    n_inputs: int
    targets: tuple[int, ...]
    missing: str = "error"
    dropped: int = 0  # rows dropped (missing="drop")
    filled: int = 0  # values filled in (missing="interpolate")

    @property
    def input_names(self) -> list[str]:
        return list(self.names[: self.n_inputs])

    @property
    def target_names(self) -> list[str]:
        return [self.names[j] for j in self.targets]

    def note(self) -> str:
        """What the missing-value rule did, in words ('' for the default rule)."""
        if self.missing == "drop":
            return f"--missing drop: {self.dropped} row(s) with a missing value dropped"
        if self.missing == "interpolate":
            return f"--missing interpolate: {self.filled} missing value(s) filled in"
        return ""


def _text(path: str) -> str:
    raw = read_bytes(path)
    if b"\x00" in raw[:65536]:
        raise BpttError(f"data file {path!r}: expected a numeric text table, received binary data")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise BpttError(
            f"data file {path!r}: expected a numeric text table, received undecodable bytes at offset {e.start}"
        ) from None


def read_table(
    path: str | os.PathLike,
    inputs: Sequence[str | int | None] = (None,),
    targets: Sequence[str | int | None] = (),
    missing: str = "error",
) -> Table:
    """The input columns and the target columns (default: the inputs) of a numeric table.

    Columns: header names or 0-based indices (negative from the end; None: the last column).
    A missing value (an empty field, NA, NaN, nan, ?) is an error naming the row and column
    (missing="error"), drops its row (missing="drop": any used column missing), or is filled
    linearly between its column's neighbours (missing="interpolate": the nearest value before the
    first or after the last). A missing, empty, binary, non-numeric or inf-holding file raises
    BpttError naming the file, row and column."""
    path = os.fspath(path)
    if missing not in MISSING_RULES:
        raise one_of("missing", missing, MISSING_RULES)
    header, rows, line = _rows(_text(path), path)
    width = len(rows[0])
    cols = [_resolve(c, header, width, "column") for c in inputs]
    tcols = [_resolve(c, header, width, "target") for c in targets] or list(cols)
    for key, given, got in (("column", inputs, cols), ("target", targets, tcols)):
        for i, c in enumerate(got):
            if c in got[:i]:
                j = got.index(c)
                raise BpttError(
                    f"{key}: expected distinct columns, received {given[j]!r} and {given[i]!r}, both column {c}"
                )
    used = cols + [c for c in tcols if c not in cols]
    names = [header[c] if header and c < len(header) else f"column {c}" for c in used]
    need = max(used) + 1
    values = np.empty((len(rows), len(used)))
    gaps = np.zeros((len(rows), len(used)), bool)
    for i, r in enumerate(rows):
        if len(r) < need:
            raise BpttError(f"data file {path!r}, row {line[i]}: expected at least {need} columns, received {len(r)}")
        for j, c in enumerate(used):
            if _missing(r[c]):
                gaps[i, j] = True
                continue
            try:
                values[i, j] = float(r[c])
            except ValueError:
                raise BpttError(
                    f"data file {path!r}, row {line[i]}, column {c}: expected a number, received {r[c]!r}"
                ) from None
    bad = ~np.isfinite(np.where(gaps, 0.0, values))
    if missing == "error":
        bad |= gaps
    if bad.any():
        i, j = (int(k[0]) for k in np.nonzero(bad))
        cell, c = rows[i][used[j]], used[j]
        why = ""
        if gaps[i, j]:
            named = f" in {names[j]!r}" if header else ""
            why = f" (a missing value{named}; --missing drop or interpolate handles them)"
        raise BpttError(
            f"data file {path!r}, row {line[i]}, column {c}: expected a finite number, received {cell!r}{why}"
        )
    dropped = filled = 0
    if gaps.any() and missing == "drop":
        keep = ~gaps.any(axis=1)
        dropped = int(len(keep) - keep.sum())
        values = values[keep]
    elif gaps.any():  # interpolate
        t = np.arange(len(values))
        for j in range(len(used)):
            hole = gaps[:, j]
            if hole.all():
                raise BpttError(
                    f"data file {path!r}, column {used[j]}: expected at least one value to interpolate from, "
                    f"received {len(hole)} missing values"
                )
            if hole.any():
                values[hole, j] = np.interp(t[hole], t[~hole], values[~hole, j])
        filled = int(gaps.sum())
    if len(values) < 3:
        after = f" (after dropping {dropped} rows with a missing value)" if dropped else ""
        raise BpttError(f"data file {path!r}: expected at least 3 values, received {len(values)}{after}")
    _spread(values)
    return Table(
        values, tuple(names), tuple(used), len(cols), tuple(used.index(c) for c in tcols), missing, dropped, filled
    )


def read_series(
    path: str | os.PathLike, column: str | int | None = None, missing: str = "error"
) -> tuple[np.ndarray, str]:
    """One column of a numeric table as float64, and its name.

    column: a header name, or a 0-based index (negative counts from the end); default the last
    column. A missing, empty, binary, non-numeric or NaN/inf-holding file raises ValueError
    naming the file, row and column (missing: see read_table)."""
    t = read_table(path, [column], (), missing)
    return t.values[:, 0], t.names[0]


@dataclass(frozen=True)
class Normalizer:
    """z = (v - mean) / std, with mean and std of the training part: numbers for one column, or
    tuples of one per column (the last axis of v).

    Per window (`window` > 0; mean 0 and std 1, so that z = v): each window of `window` inputs
    is normalised by its own mean m and standard deviation s (at least `floor`), and so is its
    target: the network reads (v - m) / s and predicts (v(t+1) - m) / s, which is turned back by
    the same m and s (instance normalisation of the input window, as in RevIN). A level or scale
    that drifts over the series then reaches the network as the same shapes. Several columns:
    each column by its own m and s (and floor), the targets among the inputs."""

    mean: float | tuple[float, ...]
    std: float | tuple[float, ...]
    window: int = 0
    floor: float | tuple[float, ...] = 0.0

    def __post_init__(self) -> None:  # lists (from JSON) become tuples: hashable, comparable
        for k in ("mean", "std", "floor"):
            v = getattr(self, k)
            if isinstance(v, (list, tuple, np.ndarray)):
                object.__setattr__(self, k, tuple(float(x) for x in v))

    @classmethod
    def fit(cls, values: np.ndarray) -> Normalizer:
        values = np.asarray(values)
        if values.ndim == 2:  # each column as a series of its own
            fits = [cls.fit(values[:, j]) for j in range(values.shape[1])]
            return cls(tuple(f.mean for f in fits), tuple(f.std for f in fits))
        mean, std = (float(v) for v in _spread(values))
        return cls(mean, std if std > 0 else 1.0)

    @classmethod
    def per_window(cls, train: np.ndarray, window: int) -> Normalizer:
        """Per-window normalisation over windows of `window` values; a window's spread is taken
        as at least 1e-3 of the training part's (a flat window is not blown up). Columns
        (train (n, D)): a floor per column."""
        train = np.asarray(train, np.float64)
        if train.ndim == 2:
            k = train.shape[1]
            floors = tuple(cls.per_window(train[:, j], window).floor for j in range(k))
            return cls((0.0,) * k, (1.0,) * k, int(window), floors)
        std = float(np.std(train))
        return cls(0.0, 1.0, int(window), 1e-3 * std if std > 0 else 1e-3)

    @property
    def columns(self) -> int | None:
        """How many columns it normalises (None: one series, numbers)."""
        return len(self.mean) if isinstance(self.mean, tuple) else None

    def take(self, idx: Sequence[int]) -> Normalizer:
        """The normaliser of some of the columns."""
        assert isinstance(self.mean, tuple) and isinstance(self.std, tuple)
        floor = tuple(self.floor[i] for i in idx) if isinstance(self.floor, tuple) else self.floor
        return Normalizer(tuple(self.mean[i] for i in idx), tuple(self.std[i] for i in idx), self.window, floor)

    def as_dict(self) -> dict[str, Any]:
        """For JSON (a checkpoint's record, export's description)."""
        out: dict[str, Any] = {"mean": self.mean, "std": self.std}
        if self.window:
            out.update(window=self.window, floor=self.floor)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    def __call__(self, v: np.ndarray) -> np.ndarray:
        return (v - _vector(self.mean)) / _vector(self.std)

    def inverse(self, z: np.ndarray) -> np.ndarray:
        return z * _vector(self.std) + _vector(self.mean)

    def stats(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per window: the mean and spread (at least `floor`, per column) of windows x (T, ...)
        over time, in float64, shaped (1, ...) to broadcast over the window."""
        x = np.asarray(x, np.float64)
        return x.mean(axis=0, keepdims=True), np.maximum(x.std(axis=0, keepdims=True), _vector(self.floor))

    def pair(self, x: np.ndarray, y: np.ndarray, dtype: Any) -> tuple[np.ndarray, np.ndarray]:
        """A batch of windows x (T, B, 1), or (T, B, D) of D columns, and their next-step targets
        y, each window (and column) by its own inputs' mean and spread, computed in float64 and
        returned as `dtype`. (Only the last target lies outside the window: a run trains on it
        alone.)"""
        m, s = self.stats(x)
        return ((x - m) / s).astype(dtype), ((y - m) / s).astype(dtype)

    def windows(self, z: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """The windows of `window` values (or rows) ending just before each index in `ends`:
        (T, n), or (T, n, D) for rows of D columns."""
        return np.asarray(z, np.float64)[ends[None, :] - self.window + np.arange(self.window)[:, None]]

    def next_values(self, forward, x: np.ndarray, dtype, targets: Sequence[int] | None = None) -> np.ndarray:
        """The value after each window x (T, n): the network's last output on the window
        normalised by its own mean and spread, turned back by them. forward(x (T, B, 1)) ->
        outputs (T, B, 1). Columns (x (T, n, D), the K target columns among them): (n, K), each
        target turned back by its own column's mean and spread."""
        if targets is None:  # one series: a column of its own
            return self.next_values(forward, np.asarray(x)[..., None], dtype, [0])[:, 0]
        m, s = self.stats(x)
        y = forward(((x - m) / s).astype(dtype))
        return np.asarray(y[-1], np.float64) * s[0][:, targets] + m[0][:, targets]

    def predictions(self, forward, z: np.ndarray, dtype, targets=None, chunk: int = 512) -> np.ndarray:
        """One-step predictions of z[1:] (len(z) - 1,), each from the `window` values before it;
        the first window - 1 have no whole window (NaN). Columns (z (N, D); targets): (N - 1, K)."""
        out = np.full((len(z) - 1,) + (() if targets is None else (len(targets),)), np.nan)
        ends = np.arange(self.window, len(z))
        for a in range(0, len(ends), chunk):
            e = ends[a : a + chunk]
            out[e - 1] = self.next_values(forward, self.windows(z, e), dtype, targets)
        return out

    def forecast(self, forward, history: np.ndarray, horizon: int, dtype) -> np.ndarray:
        """An iterated forecast of `horizon` values after `history` (at least `window` values):
        each from the last window, its own predictions included."""
        return self.forecast_columns(forward, np.asarray(history, np.float64)[:, None], horizon, dtype, [0])[:, 0]

    def forecast_columns(self, forward, history: np.ndarray, horizon: int, dtype, targets, future=None) -> np.ndarray:
        """forecast for rows of D input columns (history (>= window, D)), the K targets being
        input columns `targets`: (horizon, K), each step from the last window of rows. The next
        row takes the targets' predictions and, for the other columns, future[h] (the given rows
        after the history: at least horizon - 1 of them when some column is not a target)."""
        targets = list(targets)
        rows = np.asarray(history, np.float64)[-self.window :]
        given = np.ones(rows.shape[1], bool)
        given[targets] = False
        future = future_rows(future, horizon, given)
        out = np.empty((horizon, len(targets)))
        for h in range(horizon):
            out[h] = self.next_values(forward, rows[:, None, :], dtype, targets)[0]
            if h + 1 < horizon:  # the next row: the targets' predictions, the other columns given
                row = future[h].copy() if future is not None else np.empty(rows.shape[1])
                row[targets] = out[h]
                rows = np.vstack([rows[1:], row])
        return out


def one_step_values(
    forward,
    values: np.ndarray,
    norm: Normalizer,
    diff: Difference,
    dtype,
    targets: Sequence[int] | None = None,
    n_in: int = 0,
) -> np.ndarray:
    """One-step-ahead predictions of values[1:] in the series' own units, each from the true
    values before it: (T - 1,) for a series (T,); (T - 1, K) of the K `targets` for rows (T, D)
    whose first n_in columns are the inputs. NaN where there is none: the first diff.order
    values (they start the differences) and, per window, the first window - 1 after them.
    forward(x (T, B, inputs)) -> outputs (T, B, outputs), from the initial state."""
    p = diff.order
    w = diff(values) if p else np.asarray(values, np.float64)
    if norm.window:  # each from the window (of rows) before it
        pred = norm.predictions(forward, w, dtype, targets)
    elif targets is None:
        pred = norm.inverse(np.asarray(forward(np.asarray(norm(w)[:-1], dtype)[:, None, None])[:, 0, 0], np.float64))
    else:
        x = np.asarray(norm(w)[:-1, :n_in], dtype)[:, None, :]
        pred = norm.take(targets).inverse(np.asarray(forward(x)[:, 0, :], np.float64))
    if not p:
        return pred
    # w starts at value p: its predictions are of values p + 1 .., each target column by its own orders
    if targets is not None:
        diff, values = diff.take(targets), np.asarray(values, np.float64)[:, targets]
    return np.r_[np.full((p,) + pred.shape[1:], np.nan), diff.restore(pred, values, p + 1)]


def future_rows(future: Any, horizon: int, given: np.ndarray) -> np.ndarray | None:
    """The rows after a forecast's history that give the input columns the model does not
    predict (`given`, a mask over the columns): at least horizon - 1 rows, finite where given,
    as float64; None where no column is given or there is no next row."""
    if not given.any() or horizon <= 1:
        return None
    width = len(given)
    if future is None or np.ndim(future) != 2 or np.shape(future)[1] != width or len(future) < horizon - 1:
        got = "none" if future is None else f"shape {np.shape(future)}"
        raise BpttError(
            f"future: expected the {horizon - 1} rows after the history (for the inputs the model does not "
            f"predict), received {got}"
        )
    future = np.asarray(future, np.float64)[: horizon - 1]
    if not np.isfinite(future[:, given]).all():
        raise BpttError("future: expected finite values, received NaN or inf")
    return future


DIFF_CHOICES = ("auto", "0", "1", "2")
TREND_R2 = 0.5  # auto: first differences where a straight line explains at least this much of the training part


@dataclass(frozen=True)
class Difference:
    """Differencing of a series: w(t) = (1 - B)^d (1 - B^s) v(t), B the backshift (B v(t) =
    v(t-1)); s = 0: no seasonal difference. The model learns w (normalised) and its
    predictions are turned back into values of v: w(t) = sum_k c_k v(t-k) with c_0 = 1
    (`coeffs`), so v(t) = w(t) - sum_{k>=1} c_k v(t-k), from the values before t: the true
    ones for one-step predictions (`restore`), the predicted ones for an iterated forecast
    (`integrate`). The first `order` = d + s values have no w of their own.

    Several columns (the last axis of v): d and s are tuples of one order per column (a number
    given for the other is the same for every column). Each column is differenced by its own
    orders; the rows of w start at the largest order, where every column has its w."""

    d: int | tuple[int, ...] = 0
    s: int | tuple[int, ...] = 0

    def __post_init__(self) -> None:  # lists (from JSON) become tuples; a number beside a tuple, one per column
        per = {len(v) for v in (self.d, self.s) if isinstance(v, (list, tuple))}
        if len(per) > 1 or 0 in per:
            raise BpttError(
                f"difference: expected one order d and s per column, as many of each, received d {self.d!r}, s {self.s!r}"
            )
        k = per.pop() if per else None
        for key, ok, want in (
            ("d", lambda x: x in (0, 1, 2), "0, 1 or 2"),
            ("s", lambda x: x == 0 or x >= 2, "0 (none) or a period of at least 2"),
        ):
            v = getattr(self, key)
            each = list(v) if isinstance(v, (list, tuple)) else [v] * (k or 1)
            for x in each:
                if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or not ok(x):
                    raise BpttError(f"difference {key}: expected {want}, received {x!r}")
            object.__setattr__(self, key, int(v) if k is None else tuple(int(x) for x in each))

    @property
    def columns(self) -> int | None:
        """How many columns it differences (None: one series)."""
        return len(self.d) if isinstance(self.d, tuple) else None

    def parts(self) -> list[Difference]:
        """One single-series Difference per column (itself for one series)."""
        if self.columns is None:
            return [self]
        return [Difference(d, s) for d, s in zip(self.d, self.s)]

    def take(self, idx: Sequence[int]) -> Difference:
        """The differencing of some of the columns."""
        assert self.columns is not None
        return Difference(tuple(self.d[i] for i in idx), tuple(self.s[i] for i in idx))

    @property
    def order(self) -> int:
        if self.columns is not None:
            return max(p.order for p in self.parts())
        return self.d + self.s

    @property
    def coeffs(self) -> np.ndarray:
        """c_0 .. c_order of (1 - B)^d (1 - B^s) (one series)."""
        assert self.columns is None
        c = np.array([1.0])
        for _ in range(self.d):
            c = np.convolve(c, [1.0, -1.0])
        if self.s:
            c = np.convolve(c, np.r_[1.0, np.zeros(self.s - 1), -1.0])
        return c

    def __bool__(self) -> bool:
        return self.order > 0

    def __call__(self, v: np.ndarray) -> np.ndarray:
        """w for t = order .. len(v) - 1: (T - order,) for a series, (T - order, D) for columns."""
        v = np.asarray(v, np.float64)
        if len(v) <= self.order + 1:
            raise BpttError(
                f"series: expected more than {self.order + 1} values for {self.describe()}, received {len(v)}"
            )
        if self.columns is not None:
            self._width(v)
            p = self.order
            return np.stack([c(v[:, j])[p - c.order :] if c else v[p:, j] for j, c in enumerate(self.parts())], 1)
        c, p = self.coeffs, self.order
        return sum(c[k] * v[p - k : len(v) - k] for k in range(p + 1))

    def _width(self, v: np.ndarray) -> None:
        if v.ndim != 2 or v.shape[1] != self.columns:
            raise BpttError(f"difference: expected values of {self.columns} columns, received shape {v.shape}")

    def restore(self, w: np.ndarray, v: np.ndarray, start: int) -> np.ndarray:
        """Values of v(t) for t = start, start + 1, ... from predictions w of w(t) and the true
        values of v before each t (start >= order)."""
        w, v = np.asarray(w, np.float64), np.asarray(v, np.float64)
        if self.columns is not None:
            self._width(v)
            return np.stack([c.restore(w[:, j], v[:, j], start) for j, c in enumerate(self.parts())], 1)
        c, p = self.coeffs, self.order
        assert start >= p and start + len(w) <= len(v)
        t = np.arange(start, start + len(w))
        return w - sum(c[k] * v[t - k] for k in range(1, p + 1))

    def integrate(self, w: np.ndarray, history: np.ndarray) -> np.ndarray:
        """An iterated forecast: v(t) for the len(w) steps after `history`, each from its
        predicted w(t) and the values before it (predicted ones after the history)."""
        if self.columns is not None:
            h = np.asarray(history, np.float64)
            self._width(h)
            w = np.asarray(w, np.float64)
            return np.stack([c.integrate(w[:, j], h[:, j]) for j, c in enumerate(self.parts())], 1)
        c, p = self.coeffs, self.order
        v = list(np.asarray(history, np.float64)[-p:]) if p else []
        out = np.empty(len(w))
        for i, wi in enumerate(np.asarray(w, np.float64)):
            out[i] = wi - sum(c[k] * v[-k] for k in range(1, p + 1))
            v.append(out[i])
        return out

    def describe(self, names: Sequence[str] | None = None) -> str:
        if self.columns is not None:
            names = list(names) if names else [f"column {j}" for j in range(self.columns)]
            said: dict[str, list[str]] = {}
            for name, c in zip(names, self.parts()):
                said.setdefault(c.describe(), []).append(name)
            if len(said) == 1:
                how = next(iter(said))
                return "no differencing of any column" if how == "no differencing" else f"{how} of every column"
            return "; ".join(f"{how} of {', '.join(cols)}" for how, cols in said.items())
        parts = [f"differences of order {self.d}" if self.d > 1 else "first differences"] if self.d else []
        if self.s:
            parts.append(f"a seasonal difference of period {self.s}")
        return " and ".join(parts) if parts else "no differencing"

    def as_dict(self) -> dict[str, int | list[int]]:
        if self.columns is not None:
            return {"d": list(self.d), "s": list(self.s)}
        return {"d": self.d, "s": self.s}

    @classmethod
    def choose(
        cls, diff: str, seasonal: int, train: np.ndarray, names: Sequence[str] | None = None
    ) -> tuple[Difference, str]:
        """The differencing of --diff (auto, 0, 1, 2) and --seasonal-diff, and why: auto takes
        first differences where a straight line fitted to the training part explains at least
        TREND_R2 of its variance (a trend a stationary model cannot follow out of its range).
        Columns (train (n, D)): each column by its own trend; asked orders for every column."""
        train = np.asarray(train, np.float64)
        k = train.shape[1] if train.ndim == 2 else None
        names = (list(names) if names else [f"column {j}" for j in range(k)]) if k else None
        if diff != "auto":
            asked = cls((int(diff),) * k, (seasonal,) * k) if k else cls(int(diff), seasonal)
            return asked, f"{asked.describe(names)} (as asked)"
        if k:
            r2 = [trend_r2(train[:, j]) for j in range(k)]
            chosen = cls(tuple(1 if r >= TREND_R2 else 0 for r in r2), (seasonal,) * k)
            each = ", ".join(f"{n} {r:.0%}" for n, r in zip(names, r2))
            return chosen, (
                f"{chosen.describe(names)} (auto, column by column: a straight line explains {each} of the training "
                f"part's variance; {TREND_R2:.0%} or more takes first differences)"
            )
        r2 = trend_r2(train)
        d = 1 if r2 >= TREND_R2 else 0
        why = "a trend" if d else "no strong trend"
        return cls(d, seasonal), (
            f"{cls(d, seasonal).describe()} (auto: {why}, a straight line explains {r2:.0%} of the training part's "
            f"variance; {TREND_R2:.0%} or more takes first differences)"
        )


def trend_r2(v: np.ndarray) -> float:
    """The part of v's variance a least-squares straight line over time explains (R^2)."""
    v = np.asarray(v, np.float64)
    if len(v) < 3 or not np.var(v) > 0:
        return 0.0
    t = np.arange(len(v), dtype=np.float64)
    r = np.corrcoef(t, v)[0, 1]
    return float(r * r) if np.isfinite(r) else 0.0


def _vector(x):
    """A per-column tuple as an array (over the last axis); a number stays a Python float."""
    return np.asarray(x) if isinstance(x, tuple) else x


def nmse(prediction: np.ndarray, target: np.ndarray) -> float:
    """Mean squared error divided by the variance of the target segment."""
    prediction, target = np.asarray(prediction, float), np.asarray(target, float)
    var = float(np.var(target))
    return float(np.mean((prediction - target) ** 2) / (var if var > 0 else 1.0))


def column_metrics(prediction: np.ndarray, target: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """NMSE and MSE of (T, K) predictions of K target columns, per column ('nmse.NAME',
    'mse.NAME') and their means ('nmse', 'mse'; 'loss' is the mean NMSE)."""
    prediction, target = np.asarray(prediction, float), np.asarray(target, float)
    out: dict[str, float] = {}
    for j, name in enumerate(names):
        out[f"nmse.{name}"] = nmse(prediction[:, j], target[:, j])
        out[f"mse.{name}"] = float(np.mean((prediction[:, j] - target[:, j]) ** 2))
    mean_nmse = float(np.mean([out[f"nmse.{n}"] for n in names]))
    mean_mse = float(np.mean([out[f"mse.{n}"] for n in names]))
    return {"loss": mean_nmse, "nmse": mean_nmse, "mse": mean_mse, **out}


def one_step(z: np.ndarray, dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    """Inputs z(t) and one-step-ahead targets z(t+1) as (T, 1, 1) arrays."""
    z = np.asarray(z, dtype)
    return z[:-1, None, None], z[1:, None, None]


def random_windows(z: np.ndarray, batch: int, length: int, rng: np.random.Generator, dtype=np.float64):
    """B windows of `length` inputs with their next-step targets, at random offsets: (T, B, 1)
    for a series (T,), (T, B, D) for columns (T, D)."""
    n = len(z) - length  # the last valid offset is n - 1 (its target reaches z[-1])
    if n < 1:
        raise BpttError(f"seq_len: expected less than {len(z) - 1} for a series of {len(z)} values, received {length}")
    starts = rng.integers(0, n, size=batch)
    idx = starts[None, :] + np.arange(length)[:, None]  # (T, B)
    z = np.asarray(z, dtype)
    if z.ndim == 2:
        return z[idx], z[idx + 1]
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
