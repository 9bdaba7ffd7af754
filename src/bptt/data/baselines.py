"""The forecasts a network must beat, on the same points: persistence, seasonal naive and a
least-squares AR(p) fitted on the training part.

    base = Baselines.fit(train)                        # the training part of a 1-D series
    preds = base.one_step(series, start)               # each method's predictions of series[start:]
    paths = base.iterated(history, horizon)            # each method's forecast after `history`

- persistence: the next value is the last one (a random walk's best forecast);
- seasonal naive: the value one period before (only where a period is given or detected: the
  lag of the highest autocorrelation peak of the linearly detrended training part, 2 .. N/3,
  above 0.3; Hyndman & Athanasopoulos, Forecasting: Principles and Practice, 5.2);
- AR(p): z(t) = c + a_1 z(t-1) + ... + a_p z(t-p) by least squares on the training part, p
  chosen by Akaike's criterion among 1 .. min(20, N/10).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import BpttError
from .series import ar_predict, fit_ar, nmse

MIN_ACF = 0.3  # the least autocorrelation at which a peak counts as a period


def detect_period(x: np.ndarray, min_acf: float = MIN_ACF) -> int | None:
    """The lag (>= 2) of the highest local maximum of the autocorrelation of the linearly
    detrended series at lags up to len(x) // 3, if it is at least min_acf; else None."""
    x = np.asarray(x, np.float64)
    n = len(x)
    if n < 8:
        return None
    t = np.arange(n)
    r = x - np.polyval(np.polyfit(t, x, 1), t)
    var = float(r @ r)
    if var == 0.0:
        return None
    L = n // 3
    f = np.fft.rfft(r, 2 * n)
    acf = np.fft.irfft(f * np.conj(f))[: L + 2] / var
    peaks = [k for k in range(2, L + 1) if acf[k] > acf[k - 1] and acf[k] >= acf[k + 1]]
    if not peaks:
        return None
    k = max(peaks, key=lambda k: acf[k])
    return int(k) if acf[k] >= min_acf else None


def choose_order(x: np.ndarray, max_order: int = 20) -> int:
    """AR order by Akaike's criterion, n log(RSS / n) + 2 (p + 1), fitted on x (the same
    points, the first max p values left out, for every p)."""
    x = np.asarray(x, np.float64)
    top = max(1, min(max_order, len(x) // 10))
    best, best_p = np.inf, 1
    for p in range(1, top + 1):
        coef = fit_ar(x, p)
        res = x[top:] - ar_predict(coef, x)[top - p :]
        n = len(res)
        aic = n * np.log(max(float(res @ res) / n, 1e-300)) + 2 * (p + 1)
        if aic < best:
            best, best_p = aic, p
    return best_p


@dataclass(frozen=True)
class Baselines:
    coef: np.ndarray  # AR(p): [c, a_1, ..., a_p]
    period: int | None  # seasonal naive's, None for none

    @property
    def order(self) -> int:
        return len(self.coef) - 1

    @classmethod
    def fit(cls, train: np.ndarray, period: int | None = None) -> Baselines:
        """Fitted on the training part (1-D); period None: detected (or none)."""
        train = np.asarray(train, np.float64)
        if train.ndim != 1 or len(train) < 6:
            raise BpttError(
                f"baselines: expected a 1-D training part of at least 6 values, received shape {train.shape}"
            )
        if period is not None and not (isinstance(period, (int, np.integer)) and 2 <= period < len(train)):
            raise BpttError(f"period: expected an integer from 2 to {len(train) - 1}, received {period!r}")
        return cls(fit_ar(train, choose_order(train)), detect_period(train) if period is None else int(period))

    def first(self) -> int:
        """The first index every method can predict (each needs its values before it)."""
        return max(1, self.order, self.period or 0)

    def names(self) -> list[str]:
        out = ["persistence"]
        if self.period:
            out.append(f"seasonal naive (period {self.period})")
        return out + [f"AR({self.order})"]

    def one_step(self, series: np.ndarray, start: int) -> dict[str, np.ndarray]:
        """Each method's one-step predictions of series[start:], each from the values before
        it (start >= first())."""
        x = np.asarray(series, np.float64)
        if start < self.first() or start >= len(x):
            raise BpttError(f"start: expected {self.first()} to {len(x) - 1}, received {start}")
        p, names = self.order, self.names()
        out = {names[0]: x[start - 1 : -1]}
        if self.period:
            out[names[1]] = x[start - self.period : len(x) - self.period]
        out[names[-1]] = ar_predict(self.coef, x[start - p :])[: len(x) - start]
        return out

    def iterated(self, history: np.ndarray, horizon: int) -> dict[str, np.ndarray]:
        """Each method's forecast of the `horizon` values after `history` (its own predictions
        fed back)."""
        h = np.asarray(history, np.float64)
        if len(h) < self.first():
            raise BpttError(f"history: expected at least {self.first()} values, received {len(h)}")
        names = self.names()
        out = {names[0]: np.full(horizon, h[-1])}
        if self.period:
            out[names[1]] = np.resize(h[-self.period :], horizon)
        c, a = self.coef[0], self.coef[1:]
        buf = list(h[-self.order :])
        path = np.empty(horizon)
        for i in range(horizon):
            v = c + sum(a[k] * buf[-1 - k] for k in range(self.order))
            path[i] = v
            buf.append(v)
        out[names[-1]] = path
        return out


def scores(preds: dict[str, np.ndarray], truth: np.ndarray) -> dict[str, float]:
    """NMSE of each method's predictions against truth."""
    return {k: nmse(v[: len(truth)], truth) for k, v in preds.items()}


def verdict(network: float, base: dict[str, float]) -> str:
    """One line: the baselines' NMSE beside the network's, and the ones it loses to."""
    parts = ", ".join(f"{k} {v:.4f}" for k, v in base.items())
    lost = [k for k, v in base.items() if v < network]
    tail = f"; the network LOSES to {', '.join(lost)}" if lost else "; the network beats every one"
    return f"baselines on the same points: {parts}{tail}"
