"""Forward-in-time rivals of BPTT: real-time recurrent learning (RTRL, Williams & Zipser 1989)
and its unbiased rank-one approximation (UORO, Tallec & Ollivier 2017).

Both carry, forward in time, how the model's state depends on the parameters, instead of
storing the past and running back through it. Write S(t) for the whole model's state after
step t (every recurrent direction's fields, flattened: n numbers per sequence), theta for all
parameters (P numbers), and one model step as S(t) = F(S(t-1), theta, x(t)), with the step's
output y(t) and loss L_t(y(t)). Then

    J(t) = dS(t)/dtheta = A(t) J(t-1) + M(t),   A(t) = dF/dS(t-1) (n x n),  M(t) = dF/dtheta (n x P)
    dL/dtheta = sum_t [ g(t) + dL_t/dS(t-1) J(t-1) ]

where g(t) and dL_t/dS(t-1) are the step's own loss gradients with S(t-1) held (stacked levels
are one step: the sensitivities of a lower level feed the upper one through F). RTRL carries J
exactly: O(n P) memory, O(n^2 P) time a step (n^3 and n^4 for n units of one level). UORO
carries a rank-one pair with E[s~ theta~^T] = J:

    nu ~ Rademacher(n),  rho0 = sqrt(|theta~| / |A s~|),  rho1 = sqrt(|nu^T M| / |nu|)
    s~ <- rho0 A s~ + rho1 nu,   theta~ <- theta~ / rho0 + nu^T M / rho1

(rho0, rho1 minimise the estimate's variance; they cancel in expectation, so the estimate
dL_t/dS(t-1) s~ theta~ is unbiased; Rademacher signs keep rho1 even in nu).

Both are built on the cell contract alone: A(t) and M(t) come row by row from the model's
one-step backward (a vector-Jacobian product with the i-th state unit's one-hot gradient), for
each sequence of the batch, so they hold for every cell (spiking ones through their surrogate),
stacked levels and masks, and equal BPTT's gradient in exact arithmetic. RTRL spends n VJPs a
step on A and M; UORO needs only A s~, one forward-mode product of the cells (bptt.jvp: the exact
transpose of their backward step), and nu^T M, one VJP: O(n^2 + P) a step.
Bidirectional models are not causal and are refused, and so is a rate penalty (a function of
the segment's mean rate, not a sum of per-step losses).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from .._checks import generator
from ..cells.base import Params
from ..errors import BpttError
from ..jvp import step_jvp
from .base import Algorithm, Gradient, carried_batch, refuse_learned_start, register
from .truncated import check_carried_batch

if TYPE_CHECKING:
    from ..model import Model, ModelState


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return 8 << 30


class _Flat:
    """The model's state of one sequence as a vector (direction keys and fields in a fixed
    order) and the parameters as a vector (keys sorted)."""

    def __init__(self, model: Model, params: Params) -> None:
        self.model = model
        self.pkeys = sorted(params)
        self.psizes = [params[k].size for k in self.pkeys]
        self.P = sum(self.psizes)
        state, _ = model.initial_state(params, 1)
        self.skeys = sorted(state)
        self.fields = [(k, type(state[k]), [a.shape[1] for a in state[k]]) for k in self.skeys]
        self.n = sum(sum(w) for _, _, w in self.fields)

    def state_vec(self, state: ModelState) -> np.ndarray:
        return np.concatenate([a[0] for k in self.skeys for a in state[k]])

    def state_of(self, v: np.ndarray, dtype: Any) -> ModelState:
        out, i = {}, 0
        for k, cls, widths in self.fields:
            arrays = []
            for w in widths:
                arrays.append(np.asarray(v[i : i + w], dtype)[None, :].copy())
                i += w
            out[k] = cls(*arrays)
        return out

    def grads_vec(self, grads: Params) -> np.ndarray:
        return np.concatenate([grads[k].ravel() for k in self.pkeys])

    def grads_of(self, v: np.ndarray, params: Params) -> Params:
        out, i = {}, 0
        for k, size in zip(self.pkeys, self.psizes):
            out[k] = v[i : i + size].reshape(params[k].shape).astype(params[k].dtype)
            i += size
        return out


class _Step:
    """One model step of one sequence from a state: its output, new state, and VJPs."""

    def __init__(self, model: Model, params: Params, flat: _Flat, x_t: Any, m_t: Any, state: ModelState) -> None:
        self.model, self.params, self.flat = model, params, flat
        self.y, self.state, self.tapes = model.forward_levels(params, x_t, m_t, state, keep=True)
        self.dtype = self.y.dtype

    def vjp(self, dy: np.ndarray | None, dstate: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(dL/dS(t-1), dL/dtheta) as vectors for the gradients dy at the output and dstate at
        S(t) (None: zero)."""
        grads = self.model.zero_grads(self.params)
        dy = np.zeros_like(self.y) if dy is None else dy
        dfinal = None if dstate is None else self.flat.state_of(dstate, self.dtype)
        d0 = self.model.backward_levels(self.params, self.tapes, dy, dfinal, grads)
        return self.flat.state_vec(d0).astype(np.float64), self.flat.grads_vec(grads).astype(np.float64)

    def jvp(self, v: np.ndarray) -> np.ndarray:
        """A v = dS(t)/dS(t-1) v as a vector: one forward-mode product of the step (bptt.jvp);
        for a level without one (a cell of one's own with no `step_jvp`), A from n VJPs."""
        if getattr(self, "_A", None) is None:
            try:
                d = step_jvp(self.model, self.params, self.tapes, self.flat.state_of(v, self.dtype))
                return self.flat.state_vec(d).astype(np.float64)
            except NotImplementedError:
                self._A = self.jacobians(params=False)[0]
        return self._A @ v

    def jacobians(self, params: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """A = dS(t)/dS(t-1) (n, n) and (with `params`) M = dS(t)/dtheta (n, P), row by row."""
        n = self.flat.n
        A, M = np.empty((n, n)), (np.empty((n, self.flat.P)) if params else None)
        e = np.zeros(n)
        for i in range(n):
            e[i] = 1.0
            A[i], row = self.vjp(None, e)
            if M is not None:
                M[i] = row
            e[i] = 0.0
        return A, M


def _forward_in_time(model: Model, params: Params, x: Any, targets: Any, mask: Any, state0: Any, carry: Any):
    """Shared loop: per sequence b and step t, calls carry(b, t, step, dS_loss, g_loss) where
    dS_loss = dL_t/dS(t-1) and g_loss = dL_t/dtheta with S(t-1) held; returns (loss, final
    state dict of (B, w) arrays, the batch)."""
    if model.bidirectional:
        raise BpttError(
            "model: expected a unidirectional model for a forward-in-time algorithm, received a bidirectional one"
        )
    for lv in model.levels:
        if lv.kind == "rate" and lv.strength > 0:
            raise BpttError(
                f"model: expected no rate penalty for a forward-in-time algorithm (its gradient is of the "
                f"segment's mean rate, not a sum of per-step losses), received {lv!r}"
            )
    b = model.check_batch(params, x, targets, mask, state0)
    T, B = b.x.shape[:2]
    flat = _Flat(model, params)
    n_pos = model.loss_fn.count(b.mask, T, B)
    loss = 0.0
    finals = []
    for s in range(B):
        state = {k: type(v)(*(a[s : s + 1] for a in v)) for k, v in b.state0.items()}
        ts = b.targets[:, s : s + 1] if model.loss_fn.at == "every" else b.targets[s : s + 1]
        ms = None if b.mask is None else b.mask[:, s : s + 1]
        for t in range(T):
            step = _Step(model, params, flat, b.x[t : t + 1, s : s + 1], None if ms is None else ms[t : t + 1], state)
            part, dy = model.loss_fn.segment(step.y, ts, ms, t, T, n_pos)
            loss += part
            dS, g = step.vjp(dy, None) if part or np.any(dy) else (np.zeros(flat.n), np.zeros(flat.P))
            carry(s, t, step, dS, g)
            state = step.state
        finals.append(state)
    final = {k: type(finals[0][k])(*(np.concatenate(f) for f in zip(*(fs[k] for fs in finals)))) for k in finals[0]}
    return loss / n_pos, final, b, flat


def _gradient(model, params, flat, b, loss, total, dS0, final) -> Gradient:
    grads = flat.grads_of(total, params)
    dstate0 = {}
    for k, cls, widths in flat.fields:
        i0 = sum(sum(w) for kk, _, w in flat.fields[: flat.skeys.index(k)])
        arrays, i = [], i0
        for w in widths:
            arrays.append(dS0[:, i : i + w].astype(b.x.dtype if b.x.dtype.kind == "f" else grads[flat.pkeys[0]].dtype))
            i += w
        dstate0[k] = cls(*arrays)
    model.add_init_grads(grads, dstate0, b.given)
    return Gradient(loss, grads, dstate0, final)


def _max_bytes(max_bytes: Any) -> int | None:
    """RTRL's memory cap: None (half the machine's memory) or a positive number of bytes."""
    if max_bytes is None:
        return None
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer)) or max_bytes <= 0:
        raise BpttError(f"rtrl max_bytes: expected a positive number of bytes (an integer), received {max_bytes!r}")
    return int(max_bytes)


def _check_memory(name: str, flat: _Flat, batch: int, max_bytes: int | None) -> None:
    need = 8 * flat.n * (flat.P + flat.n) * 2  # J and its update, float64, for one sequence at a time
    limit = max_bytes if max_bytes is not None else _physical_memory() // 2
    if need > limit:
        raise BpttError(
            f"{name}: expected sensitivities that fit in {limit:,} bytes, received a model whose sensitivities "
            f"need {need:,} bytes (n = {flat.n} state units x P = {flat.P:,} parameters, float64)"
        )


def rtrl(
    model: Model,
    params: Params,
    x: Any,
    targets: Any,
    *,
    mask: Any = None,
    state0: Any = None,
    max_bytes: int | None = None,
    carried: list | None = None,
) -> Gradient:
    """The exact gradient by real-time recurrent learning (module docstring); equals full BPTT's.
    carried: each sequence's J (n, P) at the start (None: zeros, a new stream); the list is
    updated in place to J at the end (online learning carries it to the next segment)."""
    _check_memory("rtrl", _Flat(model, params), 1, _max_bytes(max_bytes))
    acc: dict[str, Any] = {"dS0": []}
    Js = carried if carried is not None else []

    def carry(s, t, step, dS, g):
        if t == 0:
            if len(Js) <= s:
                Js.append(np.zeros((step.flat.n, step.flat.P)))
            acc["K"] = np.eye(step.flat.n)
            acc["dS0"].append(np.zeros(step.flat.n))
        acc["total"] = acc.get("total", 0.0) + g + dS @ Js[s]
        acc["dS0"][-1] += dS @ acc["K"]
        A, M = step.jacobians()
        Js[s] = A @ Js[s] + M
        acc["K"] = A @ acc["K"]

    loss, final, b, flat = _forward_in_time(model, params, x, targets, mask, state0, carry)
    return _gradient(model, params, flat, b, loss, acc["total"], np.array(acc["dS0"]), final)


def uoro(
    model: Model,
    params: Params,
    x: Any,
    targets: Any,
    rng: np.random.Generator,
    *,
    mask: Any = None,
    state0: Any = None,
    eps: float = 1e-7,
    carried: list | None = None,
) -> Gradient:
    """An unbiased estimate of the gradient by UORO (module docstring); signs from `rng`. A s~
    is one forward-mode product of the step (bptt.jvp), nu^T M one vector-Jacobian product:
    O(n^2 + P) a step. The initial-state gradient is an unbiased rank-one estimate as well:
    dS(t)/dS(0) = K(t) with K(0) = I = E[nu0 nu0^T], so K(t) nu0 (carried by the same forward
    products) times nu0^T. carried: each sequence's rank-one pair (s~, theta~) at the start
    (None: zeros), updated in place."""
    acc: dict[str, Any] = {"dS0": []}
    pairs = carried if carried is not None else []

    def carry(s, t, step, dS, g):
        n, P = step.flat.n, step.flat.P
        if t == 0:
            if len(pairs) <= s:
                pairs.append((np.zeros(n), np.zeros(P)))
            acc["nu0"] = rng.choice(np.array([-1.0, 1.0]), size=n)
            acc["k"] = acc["nu0"].copy()
            acc["dS0"].append(np.zeros(n))
        st, th = pairs[s]
        acc["total"] = acc.get("total", 0.0) + g + (dS @ st) * th
        acc["dS0"][-1] += (dS @ acc["k"]) * acc["nu0"]
        nu = rng.choice(np.array([-1.0, 1.0]), size=n)
        _, nuM = step.vjp(None, nu)
        As, acc["k"] = step.jvp(st), step.jvp(acc["k"])
        rho0 = np.sqrt(np.linalg.norm(th) / (np.linalg.norm(As) + eps)) + eps
        rho1 = np.sqrt(np.linalg.norm(nuM) / (np.linalg.norm(nu) + eps)) + eps
        pairs[s] = (rho0 * As + rho1 * nu, th / rho0 + nuM / rho1)

    loss, final, b, flat = _forward_in_time(model, params, x, targets, mask, state0, carry)
    return _gradient(model, params, flat, b, loss, acc["total"], np.array(acc["dS0"]), final)


class _Online(Algorithm):
    """A forward-in-time algorithm on a stream: its sensitivities and the state are carried from
    call to call (online learning: the parameters may change between calls; the carried
    sensitivities then mix old and new parameters, as in Williams & Zipser's real-time form).
    A call with `state0`, or after `reset()`, starts a new stream."""

    stateful = True

    def reset(self) -> None:
        self._carried: list | None = None
        self._state: Any = None

    def _start(self, model: Model, state0: Any, x: Any) -> tuple[list, Any]:
        if state0 is not None or getattr(self, "_carried", None) is None:
            self._carried, self._state = [], None
        elif self._state is not None:
            refuse_learned_start(self.name, model)
            check_carried_batch(carried_batch(self._state), x)
        return self._carried, state0 if state0 is not None else self._state

    def _end(self, g: Gradient) -> Gradient:
        self._state = g.final_state
        return g

    _FIELDS: tuple[str, ...] = ()  # the arrays carried per sequence

    def _shapes(self, flat: _Flat) -> tuple[tuple[int, ...], ...]:
        raise NotImplementedError

    def history(self) -> tuple[Any, dict[str, np.ndarray]] | None:
        """The carried sensitivities, for a checkpoint: {"sequences": B} and arrays
        'alg/<name>/<field><b>'."""
        carried = getattr(self, "_carried", None)
        if not carried:
            return None
        arrays = {}
        for b, item in enumerate(carried):
            parts = item if isinstance(item, tuple) else (item,)
            for f, a in zip(self._FIELDS, parts):
                arrays[f"alg/{self.name}/{f}{b}"] = np.array(a, np.float64)
        return {"sequences": len(carried)}, arrays

    def restore(self, model, state, desc, arrays, params, where: str = "history") -> None:
        """Continue a stream from a checkpoint's carried state and sensitivities, each array
        checked against this model's sizes."""
        if not (isinstance(desc, dict) and set(desc) == {"sequences"} and isinstance(desc["sequences"], int)):
            raise BpttError(f"{where}: expected {{'sequences': a number}}, received {str(desc)[:80]}")
        flat = _Flat(model, params)
        shapes = self._shapes(flat)
        carried = []
        for b in range(desc["sequences"]):
            parts = []
            for f, shape in zip(self._FIELDS, shapes):
                key = f"alg/{self.name}/{f}{b}"
                a = arrays.get(key)
                if not (
                    isinstance(a, np.ndarray) and a.shape == shape and a.dtype == np.float64 and np.isfinite(a).all()
                ):
                    got = (
                        "nothing" if a is None else f"{getattr(a, 'dtype', type(a).__name__)} {getattr(a, 'shape', '')}"
                    )
                    raise BpttError(f"{where}: {key}: expected finite float64 of shape {shape}, received {got}")
                parts.append(a.copy())
            carried.append(parts[0] if len(parts) == 1 else tuple(parts))
        self._carried, self._state = carried, state


@register
class RTRL(_Online):
    """Real-time recurrent learning (`rtrl`): BPTT's gradient of each call's segment, forward in
    time, carrying J along the stream. `max_bytes`: the most its sensitivities may take
    (default: half the machine's memory)."""

    name = "rtrl"
    _FIELDS = ("J",)

    def _shapes(self, flat: _Flat) -> tuple[tuple[int, ...], ...]:
        return ((flat.n, flat.P),)

    def __init__(self, max_bytes: int | None = None) -> None:
        self.max_bytes = _max_bytes(max_bytes)
        self.reset()

    def __call__(self, model, params, x, targets, *, mask=None, state0=None) -> Gradient:
        carried, start = self._start(model, state0, x)
        g = rtrl(model, params, x, targets, mask=mask, state0=start, max_bytes=self.max_bytes, carried=carried)
        return self._end(g)


@register
class UORO(_Online):
    """Unbiased online recurrent optimisation (`uoro`), signs from `rng`, carrying its rank-one
    pair along the stream."""

    name = "uoro"
    _FIELDS = ("s", "theta")

    def _shapes(self, flat: _Flat) -> tuple[tuple[int, ...], ...]:
        return ((flat.n,), (flat.P,))

    def __init__(self, rng: np.random.Generator | int = 0) -> None:
        self.rng = generator("uoro rng", rng)
        self.reset()

    def __call__(self, model, params, x, targets, *, mask=None, state0=None) -> Gradient:
        carried, start = self._start(model, state0, x)
        return self._end(uoro(model, params, x, targets, self.rng, mask=mask, state0=start, carried=carried))
