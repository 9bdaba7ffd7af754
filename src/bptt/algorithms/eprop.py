"""e-prop (Bellec et al. 2020, "A solution to the learning dilemma for recurrent networks of
spiking neurons"): the gradient of a recurrent level's weights as a sum over time of a learning
signal times an eligibility trace computed forward in time.

For unit j with hidden state h_j, observable output z_j, and a weight W_ji of its input u_i
(x_i for W_ih, z_i(t-1) for W_hh, 1 for a bias):

    eps(t)  = D(t) eps(t-1) + dh_j(t)/dW_ji           eligibility vector (z(t-1) held)
    e(t)    = dz_j(t)/dh_j(t) . eps(t) + dz_j(t)/dW_ji  eligibility trace
    dE/dW_ji = sum_t L_j(t) e_ji(t)

D(t) = dh_j(t)/dh_j(t-1) is the unit's own dynamics with every output z(t-1) held. The learning
signal L_j(t) is the derivative of E with respect to z_j(t) through the network (the level
above at t and every unit's input at t + 1, W_jj included), not through the unit's own hidden
state. Per cell:

- LIF / ALIF (h = (v, a), z the spikes through the surrogate psi; primes: step t-1; c = 0 with
  detach_reset; psi' = 0 at t = 0, whose z(t-1) is given):
      subtract:  dv/dv' = alpha - c theta psi',    dv/da' = c theta beta psi'
      zero:      dv/dv' = alpha (1 - z') - c alpha v' psi',   dv/da' = c alpha v' beta psi'
      ALIF:      da/dv' = psi',   da/da' = rho - beta psi'
      e = psi (eps_v - beta eps_a)
- LSTM (h = c, z = h; gates i, f, g, o of the unit's four rows): D = f, and for a weight of
  gate row k, eps_k(t) = f eps_k(t-1) + a_k u with a_i = g i (1 - i), a_f = c' f (1 - f),
  a_g = i (1 - g^2) (c' the previous cell state), e_k = o (1 - tanh^2 c) eps_k for k = i, f, g,
  and e_o = tanh(c) o (1 - o) u (the output gate acts on z directly: no trace).
- Elman (z = h = f(a): no hidden state of its own): e = f'(a) u, no trace; with the exact
  signal e-prop is BPTT's own factorisation.

Exactness. With the exact signal (`signal="exact"`: from BPTT's backward pass, dE/dz at the
level's output plus the next step's pre-activation gradient times W_hh) the factorisation is
exact for every one of these cells (the total derivative of E splits into the paths through
z(t), in L, and those through the unit's own hidden state, in eps): e-prop then equals BPTT
(tested to 1e-10, float64). With `signal="online"`, L_j(t) = sum_k B_jk dE/dy_k(t), the loss
gradient at the readout's step t alone (the future ignored), B the readout's weights transposed
(`feedback="symmetric"`) or fixed random ones (`"random"`, from a Generator), through a Dense
readout's activation; with a leaky readout the eligibility traces are filtered by its decay
kappa (as the readout integrates; one decay for all its units). A rate regulariser's pull on
z(t) joins the signal on the unfiltered traces. That runs forward in time; with W_hh = 0 (units
that meet only through the readout) it is exact (tested).

Scope: a model whose first level is a unidirectional recurrent level of lif, alif, lstm or elman
cells; for the online signal, the levels above it are optional rate regularisers and the
readout (a Dense level or a leaky one). That level's W_ih, W_hh, b_ih, b_hh get e-prop
gradients; every other parameter (the readout, a learned decay, levels above) gets its exact
BPTT gradient. Token inputs are one-hot. No mask (every sequence runs every step).

Streams: `EProp` carries the traces (and the state) from call to call, so that consecutive
segments of a stream continue the traces; a call with state0, or after reset(), starts anew.
Its carried traces go into checkpoints (history / restore), like RTRL's sensitivities.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .._checks import generator
from ..cells.base import Params
from ..cells.elman import Elman
from ..cells.lstm import LSTM
from ..cells.spiking import LIF, surrogate
from ..errors import BpttError, one_of
from ..scan import scan_backward
from .base import Algorithm, Gradient, carried_batch, refuse_learned_start, register
from .truncated import check_carried_batch

if TYPE_CHECKING:
    from ..model import Model

KINDS = "lif, alif, lstm or elman"


def _level(model: Model, signal: str):
    lv = model.levels[0]
    cell = lv.directions[0].cell if lv.recurrent else None
    ok = isinstance(cell, (LSTM, Elman)) or (isinstance(cell, LIF) and cell.recurrent)
    if not ok or lv.bidirectional:
        raise BpttError(
            f"e-prop: expected a model whose first level is a unidirectional recurrent {KINDS} level, "
            f"received a first level {lv!r}"
        )
    last = model.levels[-1]
    if not ((last.recurrent and last.kind == "leaky") or last.kind == "dense"):
        raise BpttError(f"e-prop: expected a leaky or dense readout as the last level, received {last!r}")
    between = [lv2 for lv2 in model.levels[1:-1] if lv2.kind != "rate"]
    if signal == "online" and between:
        raise BpttError(
            "e-prop: expected the readout right above the e-prop level for the online signal (rate "
            f"regularisers between allowed), received {between[0]!r} between them"
        )
    return lv, cell


def _zero_traces(cell: Any, B: int, U: int, dtype: Any, filtered: bool) -> dict[str, np.ndarray]:
    """The carried trace state of a fresh stream: eligibility vectors, the filtered traces
    (leaky readout), and the spiking cells' previous surrogate."""
    H = cell.hidden_size
    t: dict[str, np.ndarray] = {}
    if isinstance(cell, LIF):
        t["ev"], t["ea"], t["psi"] = np.zeros((B, H, U), dtype), np.zeros((B, H, U), dtype), np.zeros((B, H), dtype)
    elif isinstance(cell, LSTM):
        t["eps"] = np.zeros((B, 3, H, U), dtype)  # gates i, f, g
    if filtered:
        t["filt"] = np.zeros((B, cell.gates * H, U), dtype)
    return t


def _lif_constants(cell: Any, params: Params, dtype: Any) -> tuple:
    """A spiking level's per-unit constants of its trace dynamics (alpha, theta, rho, beta, c),
    once per call rather than once per step."""
    H = cell.hidden_size
    alpha, theta = cell.alpha(params).astype(dtype), cell.threshold.astype(dtype)
    rho = cell.rho.astype(dtype) if cell.adaptive else np.zeros(H, dtype)
    beta = cell.beta.astype(dtype) if cell.adaptive else np.zeros(H, dtype)
    return alpha, theta, rho, beta, 0.0 if cell.detach_reset else 1.0


def _step_traces(cell: Any, ch: Any, u: np.ndarray, tr: dict, lif: tuple | None) -> np.ndarray:
    """One step: updates the carried `tr` in place and returns e(t), (B, G, U) for the G rows of
    W_ih and the inputs u = [x(t), z(t-1), 1]; lif: `_lif_constants` for a spiking level."""
    dtype = u.dtype
    if isinstance(cell, LSTM):
        H = cell.hidden_size
        act = ch.gates
        i, f, g, o = act[:, :H], act[:, H : 2 * H], act[:, 2 * H : 3 * H], act[:, 3 * H :]
        a = np.stack([g * i * (1 - i), ch.c_prev * f * (1 - f), i * (1 - g * g)], axis=1)  # (B, 3, H)
        eps = tr["eps"]
        eps *= f[:, None, :, None]
        eps += a[..., None] * u[:, None, None, :]
        tc = np.tanh(ch.c)
        e = np.empty((u.shape[0], 4 * H, u.shape[1]), dtype)
        e[:, : 3 * H] = ((o * (1 - tc * tc))[:, None, :, None] * eps).reshape(u.shape[0], 3 * H, -1)
        e[:, 3 * H :] = (tc * o * (1 - o))[:, :, None] * u[:, None, :]
        return e
    if isinstance(cell, Elman):
        fprime = cell.activation.backward(ch.h, np.ones_like(ch.h))
        return fprime[:, :, None] * u[:, None, :]
    # LIF / ALIF
    alpha, theta, rho, beta, c = lif
    psi_prev = tr["psi"]
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
    ev, ea = tr["ev"], tr["ea"]
    new_v = dvv[:, :, None] * ev + dva[:, :, None] * ea + u[:, None, :]
    new_a = dav[:, :, None] * ev + daa[:, :, None] * ea
    tr["ev"], tr["ea"], tr["psi"] = new_v, new_a, psi
    return psi[:, :, None] * (new_v - beta[None, :, None] * new_a)


def _traces(
    cell: Any,
    params: Params,
    x: np.ndarray,
    caches: list,
    signal: np.ndarray,
    kappa: Any,
    tr: dict,
    local: np.ndarray | None = None,
):
    """sum_t L(t) e(t) as one (G, U) array [W_ih | W_hh | b] (module docstring), the carried
    trace state `tr` updated in place; x: (T, B, D) floats; caches: the level's per-step
    caches; signal: (T, B, H) learning signals; kappa: None, or the readout decay that filters
    the traces (online, leaky readout); local: (T, B, H) signals on z(t) itself (a rate
    regulariser's), which take the traces unfiltered."""
    T, B, _ = x.shape
    G = cell.gates * cell.hidden_size
    out = np.zeros((G, tr["U"]), x.dtype)
    ones = np.ones((B, 1), x.dtype)
    lif = _lif_constants(cell, params, x.dtype) if isinstance(cell, LIF) else None
    for t in range(T):
        ch = caches[t]
        u = np.concatenate([x[t], ch.z_prev if isinstance(cell, LIF) else ch.h_prev, ones], axis=1)
        e = _step_traces(cell, ch, u, tr, lif)
        if local is not None:
            out += np.einsum("bg,bgu->gu", local[t] if cell.gates == 1 else np.tile(local[t], cell.gates), e)
        if kappa is not None:
            tr["filt"] *= kappa
            tr["filt"] += e
            e = tr["filt"]
        L = signal[t] if cell.gates == 1 else np.tile(signal[t], cell.gates)  # (B, G): a unit's signal on its rows
        out += np.einsum("bg,bgu->gu", L, e)
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
    carried: dict | None = None,
) -> Gradient:
    """e-prop's gradient (module docstring). signal 'exact' or 'online'; feedback: the (K, H)
    matrix B^T of the online signal (None: the readout's own weights, symmetric feedback);
    carried: the trace state at the start (None or empty: a new stream), updated in place."""
    if signal not in ("exact", "online"):
        raise one_of("signal", signal, ("exact", "online"))
    lv, cell = _level(model, signal)
    if mask is not None:
        raise BpttError("e-prop: expected no mask (every sequence runs every step), received one")
    b = model.check_batch(params, x, targets, mask, state0)
    if b.x.ndim == 2 and isinstance(cell, LIF):
        raise BpttError("e-prop: expected float (spike) inputs for a spiking level, received tokens")
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
    kappa, local = None, None
    ro = model.levels[-1]
    if signal == "exact":  # dE/dz(t) through the network: the level above at t, every input at t + 1
        nxt = np.zeros_like(seen["dxp"])
        nxt[:-1] = seen["dxp"][1:]
        L = seen["douts"] + nxt @ sub["W_hh"]
    else:  # the readout's loss gradient at step t alone, fed back through B
        W_out = ro.sub(params)["W" if ro.kind == "dense" else "W_ih"]  # (K, H)
        if feedback is not None and (isinstance(feedback, (str, bytes)) or not hasattr(feedback, "__len__")):
            raise BpttError(f"feedback: expected a {W_out.shape} matrix (or None), received {feedback!r}")
        Bm = W_out if feedback is None else np.asarray(feedback, y.dtype)
        if Bm.shape != W_out.shape:
            raise BpttError(f"feedback: expected a {W_out.shape} matrix, received shape {Bm.shape}")
        # dE/dy through the readout's activation (a Dense readout's; a leaky one has none)
        L = (ro.activation.backward(tapes[-1][1], dy) if ro.kind == "dense" else dy) @ Bm
        for i, lv2 in enumerate(model.levels[1:-1], start=1):  # rate regularisers: their pull on z(t)
            part = lv2.backward(lv2.sub(params), tapes[i], np.zeros_like(L), {}, True)
            local = part if local is None else local + part
        if ro.kind == "leaky":
            decay = np.asarray(ro.directions[0].cell.decay)
            if np.ptp(decay) > 0:  # (traces filtered by one kappa: per-unit decays would need one a unit)
                raise BpttError(
                    "e-prop: expected a leaky readout with one decay for all its units for the online signal, "
                    f"received decays from {decay.min():g} to {decay.max():g}"
                )
            kappa = float(decay.reshape(-1)[0])
    xf = x0
    if x0.ndim == 2:  # tokens: one-hot inputs
        xf = np.zeros((*x0.shape, cell.input_size), L.dtype)
        np.put_along_axis(xf, x0[..., None], 1.0, axis=-1)
    B, D, H = xf.shape[1], xf.shape[2], cell.hidden_size
    U = D + H + 1
    tr = carried if carried is not None else {}
    fresh = _zero_traces(cell, B, U, L.dtype, kappa is not None)
    if tr.get("U") != U or any(k not in tr or tr[k].shape != v.shape for k, v in fresh.items()):
        tr.clear()
        tr.update(fresh, U=U)
    out = _traces(cell, sub, xf.astype(L.dtype, copy=False), caches, L, kappa, tr, local)
    name = lv.name
    for key, part in (("W_ih", out[:, :D]), ("W_hh", out[:, D : D + H]), ("b_ih", out[:, -1]), ("b_hh", out[:, -1])):
        grads[f"{name}.{key}"] = np.ascontiguousarray(part).astype(grads[f"{name}.{key}"].dtype)
    return Gradient(loss, grads, dstate0, final)


@register
class EProp(Algorithm):
    """e-prop over each batch (`eprop`): signal 'exact' (equals BPTT) or 'online' (forward in
    time) with feedback 'symmetric' or 'random' (a fixed matrix drawn once from `rng`). On a
    stream the traces and the state go from call to call (module docstring)."""

    name = "eprop"
    stateful = True

    def __init__(self, signal: str = "exact", feedback: str = "symmetric", rng: np.random.Generator | int = 0) -> None:
        if signal not in ("exact", "online"):
            raise one_of("signal", signal, ("exact", "online"))
        if feedback not in ("symmetric", "random"):
            raise one_of("feedback", feedback, ("symmetric", "random"))
        self.signal, self.feedback = signal, feedback
        self.rng = generator("eprop rng", rng)
        self._B: np.ndarray | None = None
        self.reset()

    def reset(self) -> None:
        self._carried: dict | None = None
        self._state: Any = None

    def __call__(self, model, params, x, targets, *, mask=None, state0=None) -> Gradient:
        B = None
        if self.signal == "online" and self.feedback == "random":
            ro = model.levels[-1]
            W = ro.sub(params)["W" if ro.kind == "dense" else "W_ih"]
            if self._B is None or self._B.shape != W.shape:
                self._B = (self.rng.standard_normal(W.shape) / np.sqrt(W.shape[1])).astype(W.dtype)
            B = self._B
        if state0 is not None or self._carried is None:
            self._carried, self._state = {}, None
        elif self._state is not None:
            refuse_learned_start("eprop", model)
            check_carried_batch(carried_batch(self._state), x)
        start = state0 if state0 is not None else self._state
        g = eprop(
            model, params, x, targets, mask=mask, state0=start, signal=self.signal, feedback=B, carried=self._carried
        )
        self._state = g.final_state
        return g

    def history(self) -> tuple[Any, dict[str, np.ndarray]] | None:
        """The carried traces, for a checkpoint: {"traces": [names]} and arrays 'alg/eprop/<name>'
        (and the random feedback matrix, which the run drew once)."""
        if not self._carried:
            return None
        names = sorted(k for k in self._carried if k != "U")
        arrays = {f"alg/eprop/{k}": np.array(self._carried[k]) for k in names}
        if self._B is not None:
            arrays["alg/eprop/feedback"] = np.array(self._B)
        return {"traces": names, "U": int(self._carried["U"]), "feedback": self._B is not None}, arrays

    def restore(self, model, state, desc, arrays, params, where: str = "history") -> None:
        """Continue a stream from a checkpoint's state and traces, each array checked against
        this model's sizes."""
        ok = (
            isinstance(desc, dict)
            and set(desc) == {"traces", "U", "feedback"}
            and isinstance(desc["traces"], list)
            and all(isinstance(k, str) for k in desc["traces"])
            and isinstance(desc["U"], int)
            and isinstance(desc["feedback"], bool)
        )
        if not ok:
            raise BpttError(f"{where}: expected {{'traces': [names], 'U': a number, 'feedback': true/false}}, "
                            f"received {str(desc)[:80]}")  # fmt: skip
        lv, cell = _level(model, self.signal)
        B = next(iter(state.values()))[0].shape[0]
        dtype = np.dtype(model.check_params(params))
        ro = model.levels[-1]
        fresh = _zero_traces(cell, B, desc["U"], dtype, self.signal == "online" and ro.kind == "leaky")
        D = cell.input_size
        if desc["U"] != D + cell.hidden_size + 1 or sorted(fresh) != desc["traces"]:
            raise BpttError(
                f"{where}: expected traces {sorted(fresh)} over {D + cell.hidden_size + 1} inputs, received "
                f"{desc['traces']} over {desc['U']}"
            )
        carried: dict[str, Any] = {"U": desc["U"]}
        want = dict(fresh)
        if desc["feedback"]:
            W = ro.sub(params)["W" if ro.kind == "dense" else "W_ih"]
            want["feedback"] = np.zeros(W.shape, dtype)
        for k, like in want.items():
            key = f"alg/eprop/{k}"
            a = arrays.get(key)
            if not (isinstance(a, np.ndarray) and a.shape == like.shape and a.dtype == dtype and np.isfinite(a).all()):
                got = "nothing" if a is None else f"{getattr(a, 'dtype', type(a).__name__)} {getattr(a, 'shape', '')}"
                raise BpttError(f"{where}: {key}: expected finite {dtype} of shape {like.shape}, received {got}")
            carried[k] = a.copy()
        if desc["feedback"]:
            self._B = carried.pop("feedback")
        self._carried, self._state = carried, state
