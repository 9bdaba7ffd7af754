"""Spiking cells: leaky integrate-and-fire (LIF), adaptive LIF (ALIF) and a leaky readout.

A spike is a step function of the membrane, z = H(v - A) (1 where v exceeds the threshold A);
its derivative, zero almost everywhere, is replaced in the backward step by a surrogate
psi(v - A) (Neftci, Mostafa & Zenke 2019). The leak makes the layer a recurrent one unrolled in
time, trained by BPTT like any other cell. With the names of this module, at step t:

    I(t) = W_ih x(t) + W_hh z(t-1) + b          # input current (no W_hh: feed-forward)
    v(t) = alpha v(t-1) + I(t) - theta z(t-1)    # reset by subtraction
    v(t) = alpha v(t-1) (1 - z(t-1)) + I(t)      # reset to zero
    z(t) = H(v(t) - A(t)) [r(t) = 0]             # the spike, the level's output

alpha in (0, 1) is the membrane's decay per neuron: fixed, or learned as sigmoid(decay_logit)
so that it stays in (0, 1). The reset acts one step after the spike, as in snntorch's `Leaky`
(whose default equals reset by subtraction with the reset's gradient stopped,
`detach_reset=True`). With `refractory` n > 0, a neuron that spiked is silent for the next n
steps: r(t) = n if z(t-1) else max(r(t-1) - 1, 0).

LIF: A(t) = theta. ALIF (the adaptive neurons of LSNNs, Bellec et al. 2018, 2020): the
threshold rises with each spike and decays back,

    a(t) = rho a(t-1) + z(t-1),    A(t) = theta + beta a(t).

Surrogates psi(x), x = v - A, each with its slope k:
    'fast_sigmoid'  1 / (1 + k |x|)^2                 (snntorch's fast_sigmoid, k = 25)
    'arctan'        (k / 2) / (1 + (pi k x / 2)^2)     (snntorch's atan, k = 2)
    'triangle'      k max(0, 1 - k |x|)                (Bellec et al.'s pseudo-derivative, k = 1 / theta)
times `surrogate_scale` (Bellec et al.'s dampening factor, 0.3 there; 1 by default).

Backward step: with gz = dL/dz(t) (from the output and from step t+1's recurrence and reset),
gv = dL/dv(t), ga = dL/da(t) from step t+1:

    e        = gz psi(v - A) [r = 0]             # through the surrogate
    dv       = gv + e,     da = ga - beta e      # (ALIF)
    dxp      = dv;  dW_hh += dv^T z(t-1)
    subtract: dL/dv(t-1) = alpha dv;              dL/dz(t-1) = dv W_hh - theta dv (the last term
                                                    dropped with detach_reset)
    zero:     dL/dv(t-1) = alpha (1 - z(t-1)) dv; dL/dz(t-1) = dv W_hh - alpha v(t-1) dv
    ALIF:     dL/da(t-1) = rho da;  dL/dz(t-1) += da
    decay:    d decay_logit = sum_b dv v_prev' alpha (1 - alpha)   (v_prev' the leaked term's v)

Tangent step (`step_jvp`, the transpose of the backward step: the same surrogate where the
backward step takes it), from (dv, dz, da) the tangent of (v, z, a)(t-1) and dxp (r has none):

    dI       = dxp + dz W_hh^T
    subtract: dv(t) = alpha dv + dI - theta dz   (- theta dz dropped with detach_reset)
    zero:     dv(t) = alpha (1 - z(t-1)) dv + dI - alpha v(t-1) dz   (the last term dropped
                                                    with detach_reset)
    ALIF:     da(t) = rho da + dz
    dz(t)    = dout(t) = psi(v - A) [r = 0] (dv(t) - beta da(t))

The leaky readout (kind 'leaky'): a non-spiking unit y(t) = kappa y(t-1) + W_ih x(t) + b, kappa in
(0, 1] (1: it counts its input, e.g. spikes, over time), for a loss on y at the last step or at
every step; its tangent step is dy(t) = dout(t) = kappa dy(t-1) + dxp.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..errors import BpttError, one_of
from .base import Cell, Params

SURROGATES = ("fast_sigmoid", "arctan", "triangle")
RESETS = ("subtract", "zero")
_DEFAULT_SLOPE = {"fast_sigmoid": 25.0, "arctan": 2.0, "triangle": 1.0}


def surrogate(name: str, x: np.ndarray, k: float) -> np.ndarray:
    """psi(x): the stand-in for dH/dx (module docstring)."""
    if name == "fast_sigmoid":
        return 1.0 / (1.0 + k * np.abs(x)) ** 2
    if name == "arctan":
        return (k / 2) / (1.0 + (np.pi * k / 2 * x) ** 2)
    return k * np.maximum(0.0, 1.0 - k * np.abs(x))


def _per_neuron(
    name: str, value: Any, H: int, low: float, high: float, closed_high: bool = False, closed_low: bool = False
) -> np.ndarray:
    """A scalar or an (H,) array of finite values in (low, high) (or with `closed_low` /
    `closed_high`, [low, ... / ..., high]), as float64."""
    try:
        a = (
            np.asarray(value, dtype=float)
            if value is not None and not isinstance(value, (str, bytes, dict, set))
            else None
        )
    except (TypeError, ValueError):  # (a list holding a string, a None)
        a = None
    if a is None or a.ndim > 1 or (a.ndim == 1 and a.shape != (H,)):
        got = f"shape {a.shape}" if a is not None else repr(value)
        raise BpttError(f"{name}: expected a number or one value per neuron (shape ({H},)), received {got}")
    ok = np.isfinite(a) & ((a >= low) if closed_low else (a > low)) & ((a <= high) if closed_high else (a < high))
    if not ok.all():
        bad = a[~ok].ravel()[0] if a.ndim else float(a)
        edges = "[" if closed_low else "(", "]" if closed_high else ")"
        raise BpttError(f"{name}: expected values in {edges[0]}{low:g}, {high:g}{edges[1]}, received {bad!r}")
    return np.broadcast_to(a, (H,)).copy()


class LIFState(NamedTuple):
    v: np.ndarray  # (B, H) membrane
    z: np.ndarray  # (B, H) the last step's spikes (0 or 1)
    r: np.ndarray  # (B, H) refractory steps left (no gradient)


class ALIFState(NamedTuple):
    v: np.ndarray  # (B, H) membrane
    z: np.ndarray  # (B, H) the last step's spikes
    a: np.ndarray  # (B, H) adaptation: the threshold is theta + beta a
    r: np.ndarray  # (B, H) refractory steps left


class _SpikeCache(NamedTuple):
    v_prev: np.ndarray  # (B, H) v(t-1)
    z_prev: np.ndarray  # (B, H) z(t-1)
    x: np.ndarray  # (B, H) v(t) - A(t), where the surrogate is taken
    free: np.ndarray | None  # (B, H) r(t) == 0 (None: no refractory steps)
    a_prev: np.ndarray | None  # (B, H) a(t-1) (ALIF)


class LIF(Cell):
    """Leaky integrate-and-fire neurons (module docstring): output the spikes z(t)."""

    kind = "lif"
    State = LIFState
    gates = 1
    adaptive = False

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        decay: Any = 0.9,
        learn_decay: bool = False,
        threshold: Any = 1.0,
        reset: str = "subtract",
        detach_reset: bool = False,
        refractory: int = 0,
        surrogate: str = "fast_sigmoid",
        slope: float | None = None,
        surrogate_scale: float = 1.0,
        recurrent: bool = True,
    ) -> None:
        super().__init__(input_size, hidden_size)
        H = self.hidden_size
        self.decay = _per_neuron("decay", decay, H, 0.0, 1.0)
        self.learn_decay = bool(learn_decay)
        self.threshold = _per_neuron("threshold", threshold, H, 0.0, np.inf)
        if reset not in RESETS:
            raise one_of("reset", reset, RESETS)
        if surrogate not in SURROGATES:
            raise one_of("surrogate", surrogate, SURROGATES)
        self.reset, self.detach_reset, self.surrogate = reset, bool(detach_reset), surrogate
        self.slope = float(_per_neuron("slope", _DEFAULT_SLOPE[surrogate] if slope is None else slope, 1, 0, np.inf)[0])
        self.surrogate_scale = float(_per_neuron("surrogate_scale", surrogate_scale, 1, 0, np.inf)[0])
        if isinstance(refractory, bool) or not isinstance(refractory, (int, np.integer)) or refractory < 0:
            raise BpttError(f"refractory: expected a whole number of steps >= 0, received {refractory!r}")
        self.refractory = int(refractory)
        self.recurrent = bool(recurrent)

    # ---- parameters ------------------------------------------------------------------------
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        H, D = self.hidden_size, self.input_size
        shapes = {"W_ih": (H, D), "b_ih": (H,)}
        if self.recurrent:
            shapes.update({"W_hh": (H, H), "b_hh": (H,)})
        if self.learn_decay:
            shapes["decay_logit"] = (H,)
        return shapes

    def init_params(self, rng: np.random.Generator, dtype: Any = np.float64) -> Params:
        k = 1.0 / np.sqrt(self.hidden_size)
        p = {n: rng.uniform(-k, k, size=s).astype(dtype) for n, s in self.param_shapes().items() if n != "decay_logit"}
        if self.learn_decay:
            p["decay_logit"] = np.log(self.decay / (1 - self.decay)).astype(dtype)
        return p

    def _folded_bias(self, params: Params) -> np.ndarray:
        return params["b_ih"] + params["b_hh"] if self.recurrent else params["b_ih"]

    def _fold_bias_back(self, grads: Params, db: np.ndarray) -> None:
        grads["b_ih"] += db
        if self.recurrent:
            grads["b_hh"] += db

    def alpha(self, params: Params) -> np.ndarray:
        """The membrane's decay per neuron, (H,)."""
        if self.learn_decay:
            return 1.0 / (1.0 + np.exp(-params["decay_logit"]))
        return self.decay.astype(params["W_ih"].dtype)

    def zero_state(self, batch: int, dtype: Any = np.float64):
        return self.State(*(np.zeros((batch, self.hidden_size), dtype) for _ in self.State._fields))

    # ---- one step --------------------------------------------------------------------------
    def _threshold(self, a: np.ndarray | None, dtype) -> np.ndarray:
        return self.threshold.astype(dtype)

    def step(self, params: Params, state, xp_t: np.ndarray):
        v_prev, z_prev = state.v, state.z
        dtype = v_prev.dtype
        current = xp_t + z_prev @ params["W_hh"].T if self.recurrent else xp_t + 0  # (B, H)
        alpha, theta = self.alpha(params), self.threshold.astype(dtype)
        if self.reset == "subtract":
            v = alpha * v_prev + current - theta * z_prev
        else:
            v = alpha * v_prev * (1 - z_prev) + current
        a_prev, a = None, None
        if self.adaptive:
            a_prev = state.a
            a = self.rho.astype(dtype) * a_prev + z_prev
        x = v - self._threshold(a, dtype)
        z = (x > 0).astype(dtype)
        free = None
        r = state.r
        if self.refractory:
            r = np.where(z_prev > 0, dtype.type(self.refractory), np.maximum(r - 1, 0))
            free = r == 0
            z *= free
        else:
            r = r.copy()  # (the new state's own array, not the caller's state0's)
        new = self.State(v, z, a, r) if self.adaptive else self.State(v, z, r)
        return new, z, _SpikeCache(v_prev, z_prev, x, free, a_prev)

    def step_back(self, params: Params, cache: _SpikeCache, dstate, dout, grads: Params):
        v_prev, z_prev = cache.v_prev, cache.z_prev
        dtype = v_prev.dtype
        e = (dstate.z + dout) * surrogate(self.surrogate, cache.x, self.slope)  # (B, H)
        if self.surrogate_scale != 1.0:
            e *= self.surrogate_scale
        if cache.free is not None:
            e *= cache.free
        dv = dstate.v + e
        alpha = self.alpha(params)
        dz_prev = dv @ params["W_hh"] if self.recurrent else np.zeros_like(dv)
        if self.recurrent:
            grads["W_hh"] += dv.T @ z_prev
        if self.reset == "subtract":
            dv_prev = alpha * dv
            leaked = v_prev
            if not self.detach_reset:
                dz_prev -= self.threshold.astype(dtype) * dv
        else:
            keep = 1 - z_prev
            dv_prev = alpha * keep * dv
            leaked = v_prev * keep
            if not self.detach_reset:
                dz_prev -= alpha * v_prev * dv
        if self.learn_decay:
            grads["decay_logit"] += (dv * leaked).sum(axis=0) * alpha * (1 - alpha)
        zeros = np.zeros_like(dv)
        if self.adaptive:
            da = dstate.a - self.beta.astype(dtype) * e
            dz_prev += da
            return self.State(dv_prev, dz_prev, self.rho.astype(dtype) * da, zeros), dv
        return self.State(dv_prev, dz_prev, zeros), dv

    def step_jvp(self, params: Params, cache: _SpikeCache, dstate_prev, dxp):
        v_prev, z_prev = cache.v_prev, cache.z_prev
        dtype = v_prev.dtype
        dv_prev, dz_prev = dstate_prev.v, dstate_prev.z
        alpha = self.alpha(params)
        dv = dz_prev @ params["W_hh"].T if self.recurrent else np.zeros_like(v_prev)
        if dxp is not None:
            dv += dxp
        if self.reset == "subtract":
            dv += alpha * dv_prev
            if not self.detach_reset:
                dv -= self.threshold.astype(dtype) * dz_prev
        else:
            dv += alpha * (1 - z_prev) * dv_prev
            if not self.detach_reset:
                dv -= alpha * v_prev * dz_prev
        e = dv
        if self.adaptive:
            da = self.rho.astype(dtype) * dstate_prev.a + dz_prev
            e = dv - self.beta.astype(dtype) * da
        dz = e * surrogate(self.surrogate, cache.x, self.slope)  # (B, H)
        if self.surrogate_scale != 1.0:
            dz *= self.surrogate_scale
        if cache.free is not None:
            dz *= cache.free
        zeros = np.zeros_like(dv)
        if self.adaptive:
            return self.State(dv, dz, da, zeros), dz
        return self.State(dv, dz, zeros), dz

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(input_size={self.input_size}, hidden_size={self.hidden_size}, "
            f"reset={self.reset!r}, surrogate={self.surrogate!r}, slope={self.slope:g})"
        )


class ALIF(LIF):
    """Adaptive LIF (module docstring): the threshold theta + beta a(t) rises by beta with each
    spike and decays by rho per step. State (v, z, a, r)."""

    kind = "alif"
    State = ALIFState
    adaptive = True

    def __init__(
        self, input_size: int, hidden_size: int, adapt_decay: Any = 0.995, adapt_strength: Any = 1.8, **options: Any
    ) -> None:
        super().__init__(input_size, hidden_size, **options)
        self.rho = _per_neuron("adapt_decay", adapt_decay, self.hidden_size, 0.0, 1.0)
        self.beta = _per_neuron("adapt_strength", adapt_strength, self.hidden_size, 0.0, np.inf, closed_low=True)

    def _threshold(self, a: np.ndarray | None, dtype) -> np.ndarray:
        return self.threshold.astype(dtype) + self.beta.astype(dtype) * a


class LeakyState(NamedTuple):
    y: np.ndarray  # (B, O)


class Leaky(Cell):
    """A leaky non-spiking readout: y(t) = kappa y(t-1) + W_ih x(t) + b_ih, kappa per unit in
    (0, 1] (1: the sum of its inputs over time, e.g. spike counts). Its output is y."""

    kind = "leaky"
    State = LeakyState
    gates = 1

    def __init__(self, input_size: int, hidden_size: int, decay: Any = 0.9) -> None:
        super().__init__(input_size, hidden_size)
        self.decay = _per_neuron("decay", decay, self.hidden_size, 0.0, 1.0, closed_high=True)

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"W_ih": (self.hidden_size, self.input_size), "b_ih": (self.hidden_size,)}

    def _folded_bias(self, params: Params) -> np.ndarray:
        return params["b_ih"]

    def _fold_bias_back(self, grads: Params, db: np.ndarray) -> None:
        grads["b_ih"] += db

    def step(self, params: Params, state: LeakyState, xp_t: np.ndarray):
        y = self.decay.astype(xp_t.dtype) * state.y + xp_t
        return LeakyState(y), y, None

    def step_back(self, params: Params, cache: Any, dstate: LeakyState, dout, grads: Params):
        dy = dstate.y + dout
        return LeakyState(self.decay.astype(dy.dtype) * dy), dy

    def step_jvp(self, params: Params, cache: Any, dstate_prev: LeakyState, dxp):
        dy = self.decay.astype(dstate_prev.y.dtype) * dstate_prev.y
        if dxp is not None:
            dy += dxp
        return LeakyState(dy), dy
