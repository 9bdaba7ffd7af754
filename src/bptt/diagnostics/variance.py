"""Bias and variance of a stochastic gradient estimator against an exact gradient."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..cells.base import Params
from ..errors import BpttError


@dataclass
class EstimatorStats:
    draws: int
    mean: Params  # average estimate per parameter
    bias_norm: float  # || mean - exact ||
    exact_norm: float  # || exact ||
    variance: float  # E || estimate - mean ||^2 (trace of the covariance), over all parameters
    relative_variance: float  # variance / ||exact||^2
    max_z: float  # largest |mean - exact| / standard error over all entries (bias test)

    def summary(self) -> str:
        return (
            f"{self.draws} draws: |bias| {self.bias_norm:.3g} (|exact| {self.exact_norm:.3g}), "
            f"variance {self.variance:.3g} ({self.relative_variance:.3g} x |exact|^2), "
            f"largest |bias| / standard error {self.max_z:.2f}"
        )


def estimator_stats(estimate: Callable[[int], Params], exact: Params, draws: int) -> EstimatorStats:
    """Draw `estimate(i)` for i = 0 .. draws-1 and compare with `exact`."""
    if draws < 2:
        raise BpttError(f"draws: expected at least 2, received {draws}")
    keys = sorted(exact)
    flat = np.stack(
        [np.concatenate([np.ravel(g[k]) for k in keys]).astype(np.float64) for g in map(estimate, range(draws))]
    )
    ex = np.concatenate([np.ravel(exact[k]) for k in keys]).astype(np.float64)
    mean = flat.mean(axis=0)
    var = flat.var(axis=0, ddof=1)
    se = np.sqrt(var / draws)
    diff = np.abs(mean - ex)
    tiny = 1e-12 * max(np.abs(ex).max(), 1e-300)
    z = np.where(se > tiny, diff / np.maximum(se, tiny), np.where(diff > tiny, np.inf, 0.0))
    out, off = {}, 0
    for k in keys:
        n = np.size(exact[k])
        out[k] = mean[off : off + n].reshape(np.shape(exact[k]))
        off += n
    en = float(np.linalg.norm(ex))
    total_var = float(var.sum())
    return EstimatorStats(
        draws,
        out,
        float(np.linalg.norm(mean - ex)),
        en,
        total_var,
        total_var / en**2 if en > 0 else float("inf"),
        float(z.max()),
    )
