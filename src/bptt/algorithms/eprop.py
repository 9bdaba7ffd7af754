"""e-prop (Bellec et al. 2020, "A solution to the learning dilemma for recurrent networks of
spiking neurons"): the gradient of a spiking level's weights as a sum over time of a learning
signal times an eligibility trace computed forward in time.

For neuron j with hidden state h_j = (v_j, a_j) (membrane, adaptation; LIF: v only) and output
z_j, and a weight W_ji of its input (x_i for W_ih, z_i(t-1) for W_hh, 1 for a bias):

    eps(t)  = D(t) eps(t-1) + dh_j(t)/dW_ji            eligibility vector (2 numbers)
    e(t)    = dz_j(t)/dh_j(t) . eps(t) = psi(t) (eps_v - beta eps_a)   eligibility trace
    dE/dW_ji = sum_t L_j(t) e_ji(t)

where D(t) = dh_j(t)/dh_j(t-1) is the neuron's own dynamics (leak, reset and adaptation through
its own spike z_j(t-1), whose derivative is the surrogate psi):

    subtract:  dv/dv' = alpha - c theta psi',    dv/da' = c theta beta psi'
    zero:      dv/dv' = alpha (1 - z') - c alpha v' psi',   dv/da' = c alpha v' beta psi'
    ALIF:      da/dv' = psi',   da/da' = rho - beta psi'

(primes: step t-1; c = 0 with detach_reset; psi' = 0 at t = 0, whose z(t-1) is given). The
learning signal L_j(t) is the derivative of E with respect to z_j(t) through the network (the
readout at t and every neuron's input at t + 1, W_jj included), not through the neuron's own
hidden state. With the exact signal (`signal="exact"`: taken from BPTT's backward pass, dE/dy at
the level's output plus the next step's dE/dv times W_hh) the factorisation is exact: e-prop then
equals BPTT (tested to 1e-10, float64). With `signal="online"`, L_j(t) = sum_k B_jk dE/dy_k(t),
the loss gradient at the leaky readout's step t alone (the future ignored), B the readout's
weights transposed (`feedback="symmetric"`) or fixed random ones (`"random"`, from a Generator),
and the eligibility traces filtered by the readout's decay kappa (as the readout integrates);
that runs forward in time.

Scope: a model whose first level is a unidirectional spiking level (lif or alif, recurrent),
then optional feed-forward levels (a RateRegularizer) and a leaky readout. The spiking level's
W_ih, W_hh, b_ih, b_hh get e-prop gradients; every other parameter (the readout, a learned
decay) gets its exact BPTT gradient.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..cells.base import Params
from ..cells.spiking import LIF, surrogate
from ..errors import BpttError, one_of
from ..scan import scan_backward
from .base import Algorithm, Gradient, register

if TYPE_CHECKING:
    from ..model import Model


def _level(model: Model):
    lv = model.levels[0]
    cell = lv.directions[0].cell if lv.recurrent else None
    if not isinstance(cell, LIF) or lv.bidirectional or not cell.recurrent:
        raise BpttError(
            "e-prop: expected a model whose first level is a unidirectional recurrent lif or alif level, "
            f"received a first level {lv!r}"
        )
    last = model.levels[-1]
    if not (last.recurrent and last.kind == "leaky"):
        raise BpttError(f"e-prop: expected a leaky readout as the last level, received {last!r}")
    return lv, cell


def _traces(cell: LIF, params: Params, x: np.ndarray, caches: list, signal: np.ndarray, kappa: Any) -> Params:
    """sum_t L(t) e(t) for W_ih, W_hh, b (module docstring); caches: the level's per-step
    caches (v_prev, z_prev, x, free, a_prev); signal: (T, B, H) learning signals; kappa: None,
    or (H?) the readout decay that filters the traces (online)."""
    T, B, D = x.shape
    H = cell.hidden_size
    dtype = x.dtype
    alpha, theta = cell.alpha(params).astype(dtype), cell.threshold.astype(dtype)
    rho = cell.rho.astype(dtype) if cell.adaptive else np.zeros(H, dtype)
    beta = cell.beta.astype(dtype) if cell.adaptive else np.zeros(H, dtype)
    c = 0.0 if cell.detach_reset else 1.0
    ev = {"W_ih": np.zeros((B, H, D), dtype), "W_hh": np.zeros((B, H, H), dtype), "b": np.zeros((B, H), dtype)}
    ea = {k: np.zeros_like(v) for k, v in ev.items()}
    filt = {k: np.zeros_like(v) for k, v in ev.items()}
    out = {k: np.zeros(v.shape[1:], dtype) for k, v in ev.items()}
    psi_prev = np.zeros((B, H), dtype)
    for t in range(T):
        ch = caches[t]
        zp, vp = ch.z_prev, ch.v_prev
        if cell.reset == "subtract":
            dvv = alpha - c * theta * psi_prev
            dva = c * theta * beta * psi_prev
        else:
            dvv = alpha * (1 - zp) - c * alpha * vp * psi_prev
            dva = c * alpha * vp * beta * psi_prev
        dav, daa = psi_prev, rho - beta * psi_prev
        psi = surrogate(cell.surrogate, ch.x, cell.slope) * cell.surrogate_scale
        if ch.free is not None:
            psi = psi * ch.free
        inputs = {"W_ih": x[t], "W_hh": zp, "b": None}
        for k in ev:
            if ev[k].ndim == 3:
                d = lambda a: a[:, :, None]  # noqa: E731  (B, H) -> (B, H, 1)
            else:
                d = lambda a: a  # noqa: E731
            new_v = d(dvv) * ev[k] + d(dva) * ea[k]
            new_a = d(dav) * ev[k] + d(daa) * ea[k]
            if inputs[k] is None:
                new_v = new_v + 1.0
            else:
                new_v = new_v + inputs[k][:, None, :]
            ev[k], ea[k] = new_v, new_a
            e = d(psi) * (new_v - (beta[:, None] if new_a.ndim == 3 else beta) * new_a)
            if kappa is not None:
                filt[k] = kappa * filt[k] + e
                e = filt[k]
            out[k] += np.einsum("bj,bj...->j...", signal[t], e)
        psi_prev = psi
    return out


def eprop(
    model: Model,
    params: Params,
    x: Any,
    targets: Any,
    *,
    mask: Any = None,
    state0: Any = None,
    signal: str = "exact",
    feedback: np.ndarray | None = None,
) -> Gradient:
    """e-prop's gradient (module docstring). signal 'exact' or 'online'; feedback: the (K, H)
    matrix B^T of the online signal (None: the readout's own weights, symmetric feedback)."""
    if signal not in ("exact", "online"):
        raise one_of("signal", signal, ("exact", "online"))
    lv, cell = _level(model)
    if mask is not None:
        raise BpttError("e-prop: expected no mask (every sequence runs every step), received one")
    b = model.check_batch(params, x, targets, mask, state0)
    y, final, tapes = model.forward_levels(params, b.x, None, b.state0, keep=True)
    loss, dy = model.loss_fn.value_and_grad(y, b.targets, None)
    grads = model.zero_grads(params)
    seen: dict[str, Any] = {}

    def record(c, p, tape, douts, dT, g):
        dxp, d0 = scan_backward(c, p, tape, douts, dT, g)
        if c is cell:
            seen["douts"], seen["dxp"] = douts, dxp
        return dxp, d0

    dstate0 = model.backward_levels(params, tapes, dy, None, grads, record)
    model.add_init_grads(grads, dstate0, b.given)
    sub = lv.sub(params)
    x0, dir_tapes = tapes[0]
    caches = dir_tapes[0].caches
    if signal == "exact":  # dE/dz(t) through the network: the level above at t, every input at t + 1
        nxt = np.zeros_like(seen["dxp"])
        nxt[:-1] = seen["dxp"][1:]
        L = seen["douts"] + nxt @ sub["W_hh"]
        kappa = None
    else:  # the readout's loss gradient at step t alone, fed back through B
        ro = model.levels[-1]
        W_out = ro.sub(params)["W_ih"]  # (K, H)
        Bm = W_out if feedback is None else np.asarray(feedback, y.dtype)
        if Bm.shape != W_out.shape:
            raise BpttError(f"feedback: expected a {W_out.shape} matrix, received shape {Bm.shape}")
        L = dy @ Bm
        kappa = float(np.mean(ro.directions[0].cell.decay))
    if b.x.ndim == 2:
        raise BpttError("e-prop: expected float (spike) inputs, received tokens")
    tr = _traces(cell, sub, b.x, caches, L, kappa)
    name = lv.name
    grads[f"{name}.W_ih"] = tr["W_ih"].astype(grads[f"{name}.W_ih"].dtype)
    grads[f"{name}.W_hh"] = tr["W_hh"].astype(grads[f"{name}.W_hh"].dtype)
    grads[f"{name}.b_ih"] = tr["b"].astype(grads[f"{name}.b_ih"].dtype)
    grads[f"{name}.b_hh"] = tr["b"].astype(grads[f"{name}.b_hh"].dtype)
    return Gradient(loss, grads, dstate0, final)


@register
class EProp(Algorithm):
    """e-prop over each batch (`eprop`): signal 'exact' (equals BPTT) or 'online' (forward in
    time) with feedback 'symmetric' or 'random' (a fixed matrix drawn once from `rng`)."""

    name = "eprop"

    def __init__(self, signal: str = "exact", feedback: str = "symmetric", rng: np.random.Generator | int = 0) -> None:
        if signal not in ("exact", "online"):
            raise one_of("signal", signal, ("exact", "online"))
        if feedback not in ("symmetric", "random"):
            raise one_of("feedback", feedback, ("symmetric", "random"))
        self.signal, self.feedback = signal, feedback
        self.rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        self._B: np.ndarray | None = None

    def __call__(self, model, params, x, targets, *, mask=None, state0=None) -> Gradient:
        B = None
        if self.signal == "online" and self.feedback == "random":
            W = model.levels[-1].sub(params)["W_ih"]
            if self._B is None or self._B.shape != W.shape:
                self._B = (self.rng.standard_normal(W.shape) / np.sqrt(W.shape[1])).astype(W.dtype)
            B = self._B
        return eprop(model, params, x, targets, mask=mask, state0=state0, signal=self.signal, feedback=B)
