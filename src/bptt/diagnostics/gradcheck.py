"""Gradient checking by central differences in float64.

The derivative of the loss with respect to each entry w_i is estimated by the five-point
central difference (fourth order: its truncation error is O(eps^4), so with eps = 1e-3 and
float64 rounding of about 1e-16 / eps it is accurate to about 1e-13 absolute):

    dL/dw_i ~ [8 (L(w + eps e_i) - L(w - eps e_i)) - (L(w + 2 eps e_i) - L(w - 2 eps e_i))] / (12 eps)

(points=2 gives the plain (L(w + eps e_i) - L(w - eps e_i)) / (2 eps)). The error of one array
of gradients is measured against the array's own scale:

    rel = max_i |analytic_i - numeric_i| / max(max_i |analytic_i|, max_i |numeric_i|, floor)

(an infinity-norm relative error; `floor` keeps an all-zero gradient from dividing by zero).
Exact gradients score around 1e-9 or below on the small problems of `bptt gradcheck`; a wrong
term scores near 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..algorithms.full import full_bptt
from ..cells.base import Params
from ..errors import BpttError

__all__ = ["GradcheckResult", "gradcheck", "numeric_grad", "relative_error"]


def relative_error(a: np.ndarray, n: np.ndarray, floor: float = 1e-12) -> float:
    a, n = np.asarray(a, np.float64), np.asarray(n, np.float64)
    if a.size == 0:
        return 0.0
    scale = max(np.abs(a).max(), np.abs(n).max(), floor)
    return float(np.abs(a - n).max() / scale)


def numeric_grad(
    f: Callable[[], float],
    arrays: dict[str, np.ndarray],
    eps: float = 1e-3,
    max_entries: int | None = None,
    rng: np.random.Generator | None = None,
    points: int = 4,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Central-difference derivative of f() with respect to each entry of each array.

    The arrays are perturbed in place (and restored), so f must read them. With `max_entries`,
    at most that many entries per array are checked, drawn by `rng`. Returns, per name, the
    flat indices checked and the derivatives there."""
    out = {}
    for name, a in arrays.items():
        if a.dtype != np.float64:
            raise BpttError(f"numeric_grad: {name}: expected float64, received {a.dtype}")
        n = a.size
        if max_entries is not None and n > max_entries:
            rng = rng or np.random.default_rng(0)
            idx = np.sort(rng.choice(n, size=max_entries, replace=False))
        else:
            idx = np.arange(n)
        flat = a.reshape(-1)  # a view: a is contiguous
        if not np.shares_memory(flat, a):
            raise BpttError(f"numeric_grad: {name}: expected a contiguous array")
        vals = np.empty(len(idx))
        for j, i in enumerate(idx):
            old = flat[i]

            def at(h: float) -> float:
                flat[i] = old + h
                return f()

            d1 = at(eps) - at(-eps)
            if points == 2:
                vals[j] = d1 / (2.0 * eps)
            else:
                vals[j] = (8.0 * d1 - (at(2 * eps) - at(-2 * eps))) / (12.0 * eps)
            flat[i] = old
        out[name] = (idx, vals)
    return out


@dataclass
class GradcheckResult:
    """Per-array relative errors ('params:<name>' and 'state0:<key>.<field>'), their maximum,
    and whether it is within `tol`."""

    errors: dict[str, float] = field(default_factory=dict)
    tol: float = 1e-6

    def _key(self, name: str) -> float:
        """An error for comparisons: a NaN (a NaN gradient) counts as infinite, not as whatever
        max() makes of it where it stands."""
        e = self.errors[name]
        return e if e == e else float("inf")

    @property
    def max_error(self) -> float:
        return max((self._key(k) for k in self.errors), default=0.0)

    @property
    def worst(self) -> str:
        return max(self.errors, key=self._key) if self.errors else ""

    @property
    def passed(self) -> bool:
        return self.max_error <= self.tol


def gradcheck(
    model,
    params: Params,
    x: np.ndarray,
    targets: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    state0: dict | None = None,
    algorithm: Callable = full_bptt,
    eps: float = 1e-3,
    tol: float = 1e-6,
    max_entries: int | None = None,
    rng: np.random.Generator | None = None,
    points: int = 4,
) -> GradcheckResult:
    """Compare `algorithm`'s gradient (default full BPTT) with central differences of
    model.loss, for every parameter and for every initial state given in `state0`.

    Everything must be float64. Returns a GradcheckResult; `result.passed` is max error <= tol.
    """
    dtype = model.check_params(params)
    if dtype != np.float64:
        raise BpttError(f"gradcheck: expected float64 params (central differences need them), received {dtype}")
    g = algorithm(model, params, x, targets, mask=mask, state0=state0)
    res = GradcheckResult(tol=tol)
    batch = model.check_batch(params, x, targets, mask, state0)

    def loss() -> float:  # reads params and state0 as numeric_grad perturbs them in place
        batch.state0 = model.initial_state(params, batch.x.shape[1], state0, np.float64)[0]
        return model.batch_loss(params, batch)

    arrays = {f"params:{k}": v for k, v in params.items()}
    analytic = {f"params:{k}": v for k, v in g.grads.items()}
    for key, s in (state0 or {}).items():
        for f, a in zip(s._fields, s):
            arrays[f"state0:{key}.{f}"] = a
            analytic[f"state0:{key}.{f}"] = getattr(g.dstate0[key], f)
    num = numeric_grad(loss, arrays, eps, max_entries, rng, points)
    for name, (idx, vals) in num.items():
        res.errors[name] = relative_error(analytic[name].reshape(-1)[idx], vals)
    return res
