"""Gradient flow through time: where BPTT's error signals vanish or explode, measured exactly.

Write S(t) for the whole model's state after step t (every recurrent direction's fields,
n numbers per sequence), S(-1) the initial state, and one step S(t) = F(S(t-1), theta, x(t)) with
its output y(t) and loss L_t. Then, for one batch and the model's parameters:

- `error[t] = |dL/dS(t-1)|`: the error signal that BPTT carries back into step t from the
  losses at steps >= t (Frobenius norm over the batch and the n units; error[0] is the
  initial state's gradient). A vanishing gradient is error[t] shrinking as t goes back from T.
- `lag[l]` = the largest singular value of dS(T-1)/dS(T-1-l) = A(T-1) ... A(T-l), the product
  of the step Jacobians A(t) = dS(t)/dS(t-1) (each sequence's; lag[0] = 1), for l = 0 .. L.
  Formed explicitly: A(t) from n forward-mode products of the step (bptt.jvp), the product by
  matrix products, its norm by an SVD; per sequence, `lag_by_sequence` (L+1, B), `lag` their mean.
- `radius[t]`, `sigma[t]`: the spectral radius and the largest singular value of A(t), mean over
  the sequences (an exploding regime has them above 1).
- `by_lag[name][l]`: the contribution of lag l to the gradient of each recurrent weight matrix
  (`<level>.W_hh`): sum over t of the part of the loss at t that reached step t - l and was
  turned into a weight gradient there, for l < L; by_lag[name][L] holds all lags >= L (the rest
  of the whole gradient). Summed over l it is full BPTT's gradient (tested);
  `by_lag_norm[name][l]` their Frobenius norms. Truncated BPTT with k2 steps keeps
  lags < k2 only; ARTBP reweights them (the plots show what each algorithm keeps).

Everything runs one step at a time through the model's own one-step forward and backward
(`Model.forward_levels` / `backward_levels` on 1-step segments, batched over sequences), so it
holds for every cell (spiking ones through their surrogate), stacked levels and masks. Cost:
T one-step VJPs for `error`, T * min(T, L) for `by_lag` (max_lag L), T * n JVPs and
B n^3 products for `lag`; meant for diagnosis, not training.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from ..errors import BpttError
from ..jvp import step_jvp

if TYPE_CHECKING:
    from ..model import Model, ModelState


class Flow(NamedTuple):
    error: np.ndarray  # (T,) |dL/dS(t-1)|
    lag: np.ndarray  # (L+1,) mean over sequences of sigma_max(dS(T-1)/dS(T-1-l))
    lag_by_sequence: np.ndarray  # (L+1, B)
    radius: np.ndarray  # (T,) mean spectral radius of A(t)
    sigma: np.ndarray  # (T,) mean largest singular value of A(t)
    by_lag: dict[str, np.ndarray]  # name -> (L+1, *shape) contributions to dL/dW_hh by lag
    by_lag_norm: dict[str, np.ndarray]  # name -> (L+1,)
    loss: float

    def to_json(self) -> dict[str, Any]:
        """The figures as plain lists (no arrays of weights): for `bptt diagnose` files."""
        return {
            "loss": self.loss,
            "error": self.error.tolist(),
            "lag": self.lag.tolist(),
            "radius": self.radius.tolist(),
            "sigma": self.sigma.tolist(),
            "by_lag_norm": {k: v.tolist() for k, v in self.by_lag_norm.items()},
        }


class _Layout:
    """The whole model's state of B sequences as (B, n) arrays and back (keys, fields in order)."""

    def __init__(self, state: ModelState) -> None:
        self.keys = sorted(state)
        self.fields = [(k, type(state[k]), [a.shape[1] for a in state[k]]) for k in self.keys]
        self.n = sum(sum(w) for _, _, w in self.fields)

    def flat(self, state: ModelState) -> np.ndarray:
        return np.concatenate([a for k in self.keys for a in state[k]], axis=1)

    def state(self, v: np.ndarray) -> ModelState:
        out, i = {}, 0
        for k, cls, widths in self.fields:
            arrays = []
            for w in widths:
                arrays.append(np.ascontiguousarray(v[:, i : i + w]))
                i += w
            out[k] = cls(*arrays)
        return out


def flow(
    model: Model,
    params: dict[str, np.ndarray],
    x: Any,
    targets: Any,
    *,
    mask: Any = None,
    state0: ModelState | None = None,
    max_lag: int | None = None,
    jacobians: bool = True,
) -> Flow:
    """The gradient-flow figures of one batch (module docstring). max_lag: the longest lag for
    `lag` and `by_lag` (default T - 1: all); jacobians=False skips `lag`, `radius` and `sigma`
    (the O(n^3) part)."""
    if model.bidirectional:
        raise BpttError("flow: expected a unidirectional model (a reverse direction has no past), received one")
    b = model.check_batch(params, x, targets, mask, state0)
    T, B = b.x.shape[:2]
    L = T - 1 if max_lag is None else int(max_lag)
    if L < 0:
        raise BpttError(f"max_lag: expected a number of steps >= 0, received {max_lag!r}")
    L = min(L, T - 1)
    n_pos = model.loss_fn.count(b.mask, T, B)
    names = [k for k in params if k.endswith("W_hh")]

    # the forward pass one step at a time, keeping each step's tapes, output and loss gradient
    steps, state, loss = [], b.state0, 0.0
    for t in range(T):
        m_t = None if b.mask is None else b.mask[t : t + 1]
        y, new, tapes = model.forward_levels(params, b.x[t : t + 1], m_t, state, keep=True, t0=t)
        part, dy = model.loss_fn.segment(y, b.targets, b.mask, t, T, n_pos)
        loss += part
        steps.append((tapes, dy, state))
        state = new
    lay = _Layout(b.state0)
    dtype = np.asarray(next(iter(params.values()))).dtype

    def vjp(t: int, dy: np.ndarray | None, cot: np.ndarray | None) -> tuple[np.ndarray, dict]:
        tapes, dy_t, _ = steps[t]
        grads = model.zero_grads(params)
        d0 = model.backward_levels(
            params,
            tapes,
            np.zeros_like(dy_t) if dy is None else dy,
            None if cot is None else lay.state(cot.astype(dtype, copy=False)),
            grads,
        )
        return lay.flat(d0), grads

    # the error signal carried back into each step (and the whole gradient of the W_hh)
    error = np.zeros(T)
    total = {k: np.zeros(params[k].shape) for k in names}
    cot = None
    for t in range(T - 1, -1, -1):
        cot, g = vjp(t, steps[t][1], cot)
        error[t] = float(np.linalg.norm(cot))
        for k in names:
            total[k] += g[k]

    # each lag's part of the recurrent weights' gradients: lags 0 .. L-1 one by one, L the rest
    by_lag = {k: np.zeros((L + 1, *params[k].shape)) for k in names}
    for s in range(T):
        if not np.any(steps[s][1]):
            continue
        c = None
        for lag in range(0, min(s + 1, L)):
            c, g = vjp(s - lag, steps[s][1] if lag == 0 else None, c)
            for k in names:
                by_lag[k][lag] += g[k]
    for k in names:
        by_lag[k][L] = total[k] - by_lag[k][:L].sum(axis=0)
    by_lag_norm = {k: np.linalg.norm(v.reshape(L + 1, -1), axis=1) for k, v in by_lag.items()}

    lag_b = np.full((L + 1, B), np.nan)  # (not formed: NaN, not a norm of 1; lag 0 is the identity's)
    lag_b[0] = 1.0
    radius, sigma = np.full(T, np.nan), np.full(T, np.nan)
    if jacobians:
        A = []
        for t in range(T):
            cols = np.empty((B, lay.n, lay.n))
            e = np.zeros((B, lay.n), dtype)
            for i in range(lay.n):
                e[:, i] = 1
                cols[:, :, i] = lay.flat(step_jvp(model, params, steps[t][0], lay.state(e)))
                e[:, i] = 0
            A.append(cols)
            radius[t] = float(np.mean(np.abs(np.linalg.eigvals(cols)).max(axis=1)))
            sigma[t] = float(np.mean(np.linalg.norm(cols, 2, axis=(1, 2))))
        P = np.broadcast_to(np.eye(lay.n), (B, lay.n, lay.n)).copy()
        for lag in range(1, L + 1):
            P = P @ A[T - lag]
            lag_b[lag] = np.linalg.norm(P, 2, axis=(1, 2))
    return Flow(error, lag_b.mean(axis=1), lag_b, radius, sigma, by_lag, by_lag_norm, loss / n_pos)
