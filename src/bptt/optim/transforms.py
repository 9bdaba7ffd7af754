"""Gradient transformations. Each function returns a Transform(init, update); the equation it
implements is in its docstring, with the paper it comes from. g is the incoming gradient (or
the previous transform's output), u the outgoing update (params += u)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple, Union

import numpy as np

from .. import ops
from ..errors import BpttError
from .base import Params, Transform, global_norm

Schedule = Callable[[int], float]
ScalarOrSchedule = Union[float, Schedule]


def _zeros(params: Params) -> Params:
    return {k: np.zeros_like(v) for k, v in params.items()}


# ---- learning rate ----------------------------------------------------------------------------
class ScaleByLRState(NamedTuple):
    count: int  # updates applied so far


def scale_by_learning_rate(lr: ScalarOrSchedule) -> Transform:
    """u = -lr(count) * g. `lr` is a number or a schedule count -> lr."""
    sched = lr if callable(lr) else (lambda _count, _lr=float(lr): _lr)

    def init(params: Params) -> ScaleByLRState:
        return ScaleByLRState(0)

    def update(g: Params, state: ScaleByLRState, params: Params):
        step = -float(sched(state.count))
        return {k: v * step for k, v in g.items()}, ScaleByLRState(state.count + 1)

    return Transform(init, update)


class PlateauState(NamedTuple):
    best: float  # the lowest value observed
    since: int  # observations since it
    scale: float  # the factor on the updates


def reduce_on_plateau(factor: float, patience: int) -> Transform:
    """u = scale * g, where scale is multiplied by `factor` at every `patience`-th observed value
    in a row without a new lowest one (optax's reduce_on_plateau with threshold 0, no cooldown;
    torch's ReduceLROnPlateau with mode='min' cuts one value later: its patience n is this
    patience n + 1). The values come through `observe` (e.g. each validation loss); the updates
    between observations are scaled. patience >= 1."""
    f, n = float(factor), int(patience)
    if n < 1:  # (0 divided by zero at the first value without a new lowest one)
        raise BpttError(f"patience: expected an integer >= 1, received {patience!r}")

    def init(params: Params) -> PlateauState:
        return PlateauState(math.inf, 0, 1.0)

    def update(g: Params, state: PlateauState, params: Params):
        return ({k: v * state.scale for k, v in g.items()} if state.scale != 1.0 else g), state

    def observe(state: PlateauState, value: float) -> PlateauState:
        if value < state.best:
            return PlateauState(float(value), 0, state.scale)
        since = state.since + 1
        return PlateauState(state.best, since, state.scale * f if since % n == 0 else state.scale)

    return Transform(init, update, observe)


# ---- momentum ---------------------------------------------------------------------------------
class TraceState(NamedTuple):
    trace: Params


def trace(momentum: float, nesterov: bool = False) -> Transform:
    """Momentum (Rumelhart, Hinton & Williams 1986; Polyak 1964), as torch.optim.SGD:

    v = momentum * v + g,   u = v            (classic: with a constant learning rate eta
                                              this is dw(t) = -eta g + momentum dw(t-1))
    u = g + momentum * v                     (Nesterov, Sutskever et al. 2013)
    """
    mu = float(momentum)

    def init(params: Params) -> TraceState:
        return TraceState(_zeros(params))

    def update(g: Params, state: TraceState, params: Params):
        v = {k: mu * state.trace[k] + g[k] for k in g}
        u = {k: g[k] + mu * v[k] for k in g} if nesterov else v
        return u, TraceState(v)

    return Transform(init, update)


# ---- adaptive scalings ------------------------------------------------------------------------
class AccumulatorState(NamedTuple):
    acc: Params


def scale_by_adagrad(eps: float = 1e-10, initial: float = 0.0) -> Transform:
    """Adagrad (Duchi, Hazan & Singer 2011), as torch.optim.Adagrad:
    s += g^2,  u = g / (sqrt(s) + eps)."""

    def init(params: Params) -> AccumulatorState:
        return AccumulatorState({k: np.full_like(v, initial) for k, v in params.items()})

    def update(g: Params, state: AccumulatorState, params: Params):
        s = {k: state.acc[k] + g[k] * g[k] for k in g}
        return {k: g[k] / (np.sqrt(s[k]) + eps) for k in g}, AccumulatorState(s)

    return Transform(init, update)


def scale_by_rms(decay: float = 0.99, eps: float = 1e-8) -> Transform:
    """RMSProp (Tieleman & Hinton 2012), as torch.optim.RMSprop:
    s = decay s + (1 - decay) g^2,  u = g / (sqrt(s) + eps)."""
    a = float(decay)

    def init(params: Params) -> AccumulatorState:
        return AccumulatorState(_zeros(params))

    def update(g: Params, state: AccumulatorState, params: Params):
        s = {k: a * state.acc[k] + (1.0 - a) * g[k] * g[k] for k in g}
        return {k: g[k] / (np.sqrt(s[k]) + eps) for k in g}, AccumulatorState(s)

    return Transform(init, update)


class AdamState(NamedTuple):
    count: int
    mu: Params
    nu: Params


def scale_by_adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> Transform:
    """Adam (Kingma & Ba 2015), as torch.optim.Adam:

    m = b1 m + (1 - b1) g,   v = b2 v + (1 - b2) g^2,   t += 1
    u = [m / (1 - b1^t)] / (sqrt(v) / sqrt(1 - b2^t) + eps)
    """
    b1, b2 = float(b1), float(b2)

    def init(params: Params) -> AdamState:
        return AdamState(0, _zeros(params), _zeros(params))

    def update(g: Params, state: AdamState, params: Params):
        t = state.count + 1
        c1 = 1.0 / (1.0 - b1**t)
        c2 = 1.0 / math.sqrt(1.0 - b2**t)
        m, v, u = {}, {}, {}
        for k in g:  # (ops.adam: one pass per array in float32 on the kernels, the same numbers)
            m[k], v[k], u[k] = ops.adam(g[k], state.mu[k], state.nu[k], b1, b2, c1, c2, eps)
        return u, AdamState(t, m, v)

    return Transform(init, update)


def add_decayed_weights(weight_decay: float) -> Transform:
    """u = g + weight_decay * w. Before an adaptive scaling this is L2 regularisation; after
    it (and before the learning rate) it is decoupled weight decay (AdamW)."""
    wd = float(weight_decay)

    def update(g: Params, state, params: Params):
        return {k: g[k] + wd * params[k] for k in g}, state

    return Transform(lambda params: (), update)


# ---- sign-based and second-order-ish rules ----------------------------------------------------
class RpropState(NamedTuple):
    step: Params  # per-weight step sizes
    prev: Params  # previous gradient (0 where it changed sign)


def rprop(
    lr: float = 0.01, etas: tuple[float, float] = (0.5, 1.2), step_sizes: tuple[float, float] = (1e-6, 50.0)
) -> Transform:
    """iRprop- (Riedmiller & Braun 1993; Igel & Huesken 2000), as torch.optim.Rprop:

        s = g * g_prev
        step = clip(step * (eta+ if s > 0, eta- if s < 0, 1 otherwise), step_min, step_max)
        where s < 0: g := 0           (no move after a sign change, and g_prev := 0)
        u = -sign(g) * step,   g_prev = g

    This is a complete optimizer: its updates are not scaled by a learning rate again. `lr` is
    the initial step size."""
    eminus, eplus = float(etas[0]), float(etas[1])
    smin, smax = float(step_sizes[0]), float(step_sizes[1])

    def init(params: Params) -> RpropState:
        return RpropState({k: np.full_like(v, lr) for k, v in params.items()}, _zeros(params))

    def update(g: Params, state: RpropState, params: Params):
        step, prev, u = {}, {}, {}
        for k, gk in g.items():
            s = gk * state.prev[k]
            factor = np.where(s > 0, eplus, np.where(s < 0, eminus, 1.0)).astype(gk.dtype)
            step[k] = np.clip(state.step[k] * factor, smin, smax)
            gk = np.where(s < 0, 0.0, gk).astype(gk.dtype)
            u[k] = -np.sign(gk) * step[k]
            prev[k] = gk
        return u, RpropState(step, prev)

    return Transform(init, update)


class QuickpropState(NamedTuple):
    prev_slope: Params
    prev_step: Params


def quickprop(lr: float = 0.1, mu: float = 1.75, decay: float = 0.0) -> Transform:
    """Quickprop (Fahlman 1988) with the per-weight rule of SNNS's `Quickprop`. Each weight's
    error curve is taken for a parabola through the current and previous slopes
    S = dE/dw + decay * w; with the previous step dw_prev and shrink factor f = mu / (1 + mu):

        dw_prev = 0:  dw = -lr * S                                   (a plain gradient step)
        dw_prev > 0:  dw = [-lr * S  if S < 0]                       (still going downhill)
                         + mu * dw_prev                 if S <= f * S_prev  (maximum growth)
                           S / (S_prev - S) * dw_prev   otherwise           (parabola minimum)
        dw_prev < 0:  the mirror image (S > 0, S >= f * S_prev)

    (SNNS's rule: the test is on the slopes, S <= f * S_prev, with f = mu / (1 + mu); it is not
    the same as testing the parabola's jump against mu * dw_prev.) Where S_prev = S the jump is
    undefined; the maximum step is taken there.
    `decay` is SNNS's decay term (a weight decay: + decay * w in the slope).
    A complete optimizer: its updates are not scaled by a learning rate again."""
    eps_, mu_, nu = float(lr), float(mu), float(decay)
    shrink = mu_ / (1.0 + mu_)

    def init(params: Params) -> QuickpropState:
        return QuickpropState(_zeros(params), _zeros(params))

    def update(g: Params, state: QuickpropState, params: Params):
        u, slopes = {}, {}
        for k, gk in g.items():
            S = gk + nu * params[k] if nu else gk
            Sp, dp = state.prev_slope[k], state.prev_step[k]
            denom = Sp - S
            with np.errstate(divide="ignore", invalid="ignore"):
                jump = S / np.where(denom != 0, denom, 1.0) * dp
            up, down = dp > 0, dp < 0
            max_step = np.where(up, S <= shrink * Sp, S >= shrink * Sp) | (denom == 0)
            quad = np.where(max_step, mu_ * dp, jump)
            downhill = (up & (S < 0)) | (down & (S > 0)) | (dp == 0)
            dw = np.where(downhill, -eps_ * S, 0.0) + np.where(dp != 0, quad, 0.0)
            u[k] = dw.astype(gk.dtype)
            slopes[k] = S
        return u, QuickpropState(slopes, u)

    return Transform(init, update)


# ---- clipping and guards ----------------------------------------------------------------------
class ClipState(NamedTuple):
    norm: float  # global norm of the last gradient, before clipping
    clipped: int  # how many updates were clipped


def clip_by_global_norm(max_norm: float) -> Transform:
    """Scale all gradients by min(1, max_norm / (||g|| + 1e-6)), as
    torch.nn.utils.clip_grad_norm_; ||g|| (before clipping) is kept in the state as a monitor."""
    m = float(max_norm)

    def init(params: Params) -> ClipState:
        return ClipState(0.0, 0)

    def update(g: Params, state: ClipState, params: Params):
        n = global_norm(g)
        c = m / (n + 1e-6)
        if c < 1.0:
            return {k: v * c for k, v in g.items()}, ClipState(n, state.clipped + 1)
        return g, ClipState(n, state.clipped)

    return Transform(init, update)


def clip_by_value(limit: float) -> Transform:
    """g clipped elementwise to [-limit, limit]."""
    c = float(limit)
    return Transform(lambda params: (), lambda g, s, p: ({k: np.clip(v, -c, c) for k, v in g.items()}, s))


class SkipState(NamedTuple):
    inner: tuple
    skipped: int  # updates skipped so far
    last_skipped: bool


def skip_nonfinite(inner: Transform) -> Transform:
    """Run `inner` only when every gradient is finite; otherwise return zero updates and keep
    the inner state unchanged (a NaN never reaches momentum or Adam's moments)."""

    def init(params: Params) -> SkipState:
        return SkipState((inner.init(params),), 0, False)

    def update(g: Params, state: SkipState, params: Params):
        if all(np.isfinite(v).all() for v in g.values()):
            u, s = inner.update(g, state.inner[0], params)
            return u, SkipState((s,), state.skipped, False)
        return _zeros(params), SkipState(state.inner, state.skipped + 1, True)

    def observe(state: SkipState, value: float) -> SkipState:
        return state._replace(inner=(inner.observe(state.inner[0], value),)) if inner.observe else state

    return Transform(init, update, observe)
