"""Influence balancing (Tallec & Ollivier 2017, "Unbiased online recurrent optimization", and
"Unbiasing truncated backpropagation through time"): a task built so that truncated BPTT's
gradient has the wrong sign.

A linear system of n = 23 units driven by one parameter theta,

    s(t) = A s(t-1) + theta b,     A = 0.5 I + 0.5 (superdiagonal),
    b = (+1 x 10, -1 x 13),        s(0) = 1,  theta(0) = 0.5,
    loss at every step  l(t) = 1/2 (s_0(t) - 1)^2.

Unit 0 sees unit j only after j steps: (A^j b)_0 = 1 for j < 10 (the positive units), and the
13 negative units arrive later. The derivative of the stationary s_0 with respect to theta is
sum_j (A^j b)_0 = -6, so the optimum is s_0 = 1 at theta* = -1/6; but summed only over the
first K lags it is +K for K <= 10 and still positive up to K ~ 40 (16.5 at K = 20): a truncated
gradient points the wrong way and theta runs away from theta*.

The system is a cell (`InfluenceCell`, the contract of cells/base.py) inside an ordinary
`Model`, so TBPTT, ARTBP and every other gradient algorithm run on it unchanged.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from ..algorithms.forward import RTRL, UORO
from ..algorithms.randomized import OnlineARTBP
from ..algorithms.truncated import TBPTTStream
from ..cells.base import Cell, Params
from ..errors import BpttError
from ..layers import Recurrent
from ..model import Model

THETA_STAR = -1.0 / 6.0


class InfluenceState(NamedTuple):
    h: np.ndarray  # (B, n)


class InfluenceCell(Cell):
    """s(t) = A s(t-1) + theta b x(t), output s_0(t); A and b are fixed, theta (1,) is learned.
    With x(t) = 1 this is the influence-balancing system."""

    kind = "influence"
    State = InfluenceState

    def __init__(
        self, input_size: int, hidden_size: int, n_plus: int = 10, a: float = 0.5, theta0: float = 0.5
    ) -> None:
        super().__init__(input_size, hidden_size)
        if input_size != 1 or not 0 < n_plus < hidden_size:
            raise BpttError(
                f"influence cell: expected 1 input and 0 < n_plus < {hidden_size}, received {input_size}, {n_plus}"
            )
        n = hidden_size
        self.A = a * np.eye(n) + (1.0 - a) * np.eye(n, k=1)  # (n, n)
        self.b = np.array([1.0] * n_plus + [-1.0] * (n - n_plus))  # (n,)
        self.theta0 = float(theta0)

    @property
    def output_size(self) -> int:
        return 1

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"theta": (1,)}

    def init_params(self, rng: np.random.Generator, dtype: Any = np.float64) -> Params:
        return {"theta": np.full(1, self.theta0, dtype)}

    def project(self, params: Params, x: np.ndarray) -> np.ndarray:
        return x * (params["theta"][0] * self.b)  # (T, B, 1) -> (T, B, n)

    def project_back(self, params: Params, x: np.ndarray, dxp: np.ndarray, grads: Params, need_dx: bool = True):
        db = dxp @ self.b  # (T, B)
        grads["theta"] += np.sum(db * x[..., 0])
        return (db * params["theta"][0])[..., None] if need_dx else None

    def step(self, params: Params, state: InfluenceState, xp_t: np.ndarray):
        h = state.h @ self.A.T + xp_t  # (B, n)
        return InfluenceState(h), h[:, :1], None

    def step_jvp(self, params: Params, cache: Any, dstate: InfluenceState, dxp: np.ndarray | None):
        h = dstate.h @ self.A.T + (0.0 if dxp is None else dxp)
        return InfluenceState(h), h[:, :1]

    def step_back(self, params: Params, cache: Any, dstate: InfluenceState, dout: np.ndarray, grads: Params):
        g = dstate.h.copy()
        g[:, 0] += dout[:, 0]
        return InfluenceState(g @ self.A), g


def influence_model(n: int = 23, n_plus: int = 10, theta0: float = 0.5) -> Model:
    """The system as a Model: input x(t) = 1, target 1, loss 1/2 (s_0 - 1)^2 at every step."""
    return Model(1, [Recurrent(InfluenceCell, n, n_plus=n_plus, theta0=theta0, name="system")], loss="mse")


class InfluenceRun(NamedTuple):
    label: str
    theta: np.ndarray  # (steps + 1,) theta after each time step (theta[0] = theta(0))
    diverged: bool

    @property
    def final_error(self) -> float:
        return abs(float(self.theta[-1]) - THETA_STAR)


def run_influence(
    method: str,
    steps: int,
    lr: float | Any,
    *,
    K: int = 1,
    c: Any = 1 / 32,
    seed: int = 0,
    n: int = 23,
    n_plus: int = 10,
    limit: float = 1e3,
) -> InfluenceRun:
    """Online SGD on theta over `steps` time steps of one stream (s(0) = 1, theta(0) = 0.5).

    method 'tbptt': TBPTT(1, K), the real-time form: after every step, that step's error is
    backpropagated K steps and theta updated. method 'tbptt-chunks': TBPTT(K, K), an update
    every K steps. method 'artbp': segments end at truncations drawn with probability c (a
    number or c(L)), each segment backpropagated with reweighted messages, then an update.
    lr: the rate per time step (a number or a function of the time step): each update moves
    theta by -lr * (the sum of the per-step gradients it covers). A run whose |theta| passes
    `limit` is stopped and marked diverged."""
    model = influence_model(n, n_plus)
    params = model.init_params(0)
    key = model.state_keys()[0]
    s0 = {key: InfluenceState(np.ones((1, n)))}
    rate = lr if callable(lr) else (lambda t, _lr=float(lr): _lr)
    if method == "artbp":
        algo: Any = OnlineARTBP(model, c, np.random.default_rng(seed))
        algo.start_from(s0)
        label = f"ARTBP c = {_c_label(c)}"
    elif method in ("tbptt", "tbptt-chunks"):
        algo = TBPTTStream(model, 1 if method == "tbptt" else K, K)
        algo.start_from(s0)
        label = f"TBPTT({1 if method == 'tbptt' else K}, {K})"
    elif method in ("rtrl", "uoro"):  # forward in time, an update after every step
        online = RTRL() if method == "rtrl" else UORO(np.random.default_rng(seed))
        started = [False]

        def algo(p, x, y):
            g = online(model, p, x, y, state0=None if started[0] else s0)
            started[0] = True
            return g

        label = method.upper()
    else:
        raise BpttError(f"method: expected 'tbptt', 'tbptt-chunks', 'artbp', 'rtrl' or 'uoro', received {method!r}")
    ones = np.ones((steps, 1, 1))
    theta = np.full(steps + 1, np.nan)
    theta[0] = params["system.theta"][0]
    t = 0
    while t < steps:
        L = (
            algo.draw_length(steps - t)
            if method == "artbp"
            else 1
            if method in ("rtrl", "uoro")
            else min(algo.k1, steps - t)
        )
        g = algo(params, ones[t : t + L], ones[t : t + L])
        params = {"system.theta": params["system.theta"] - rate(t) * L * g.grads["system.theta"]}
        theta[t + 1 : t + L + 1] = params["system.theta"][0]
        t += L
        if not abs(params["system.theta"][0]) < limit:
            return InfluenceRun(label, theta[: t + 1], True)
    return InfluenceRun(label, theta, False)


def _c_label(c: Any) -> str:
    if callable(c):
        return "c(L)"
    inv = 1 / c if c else 0
    return f"1/{inv:.0f}" if c and math.isclose(inv, round(inv)) else f"{c:g}"


def settled_at(run: InfluenceRun, tol: float = 1e-3) -> int | None:
    """The first time step from which |theta - theta*| < tol to the end (None if never)."""
    if run.diverged:
        return None
    far = np.nonzero(~(np.abs(run.theta - THETA_STAR) < tol))[0]
    if len(far) == 0:
        return 0
    return None if far[-1] == len(run.theta) - 1 else int(far[-1] + 1)


def influence_experiment(
    steps: int = 20000,
    lr: float = 1e-4,
    Ks: tuple[int, ...] = (1, 10, 20, 50),
    c: float = 1 / 32,
    seeds: int = 5,
    tol: float = 1e-3,
    log=print,
    forward: bool = True,
) -> list[tuple[InfluenceRun, int | None]]:
    """TBPTT(1, K) for each K and ARTBP(c) for `seeds` seeds, all from theta(0) = 0.5 with the
    same per-step rate, and (`forward`) RTRL and UORO updating after every step (UORO at a
    tenth of the rate: its rank-one estimate's variance diverges at the full one); prints one
    line per run and returns (run, settled_at) pairs."""
    if not (isinstance(steps, int) and steps > 0 and lr > 0 and seeds >= 0 and all(k >= 1 for k in Ks)):
        raise BpttError(
            f"influence balancing: expected steps > 0, lr > 0, K >= 1, seeds >= 0, received "
            f"steps={steps}, lr={lr}, K={list(Ks)}, seeds={seeds}"
        )
    runs = [run_influence("tbptt", steps, lr, K=K) for K in Ks]
    runs += [run_influence("artbp", steps, lr, c=c, seed=s) for s in range(seeds)]
    seeded = len(runs)
    if forward:  # BPTT's forward-in-time rivals: RTRL (exact), UORO (unbiased, noisier: a tenth of the rate)
        runs += [run_influence("rtrl", steps, lr)]
        runs += [run_influence("uoro", steps, lr / 10, seed=s)._replace(label="UORO (lr / 10)") for s in range(seeds)]
    out = []
    log(
        f"influence balancing: n = 23 (10 positive, 13 negative), theta(0) = 0.5, theta* = -1/6, "
        f"SGD {lr:g} per step, {steps} steps"
    )
    log(f"{'method':<18} {'seed':>4} {'final theta':>13} {'|theta - theta*|':>17}  result")
    for i, r in enumerate(runs):
        at = settled_at(r, tol)
        if r.diverged:
            what = f"diverged (|theta| > 1e3 at step {len(r.theta) - 1})"
        elif at is None:
            what = f"not within {tol:g} at the end"
        else:
            what = f"within {tol:g} from step {at}"
        seed = str(i - len(Ks)) if len(Ks) <= i < seeded else str(i - seeded - 1) if i > seeded else "-"
        log(f"{r.label:<18} {seed:>4} {r.theta[-1]:>13.6g} {r.final_error:>17.3e}  {what}")
        out.append((r, at))
    return out


def plot_influence(results: list[tuple[InfluenceRun, int | None]], path: str, tol: float = 1e-3) -> None:
    """theta over time (left) and |theta - theta*| on a log scale (right)."""
    from ..plots import _pyplot, _save

    plt = _pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    seen = set()
    counts = {r.label: sum(q.label == r.label for q, _ in results) for r, _ in results}
    grouped = {"ARTBP": "black", "UORO": "tab:purple"}  # seeds of one method: one colour, one legend entry
    for i, (r, _) in enumerate(results):
        group = next((c for k, c in grouped.items() if r.label.startswith(k)), None)
        color = group or colors[i % len(colors)]
        label = None if r.label in seen else r.label + (f" ({counts[r.label]} seeds)" if counts[r.label] > 1 else "")
        seen.add(r.label)
        t = np.arange(len(r.theta))
        kw = dict(color=color, lw=0.9, alpha=0.6 if group else 1.0, label=label)
        a.plot(t, r.theta, **kw)
        b.semilogy(t, np.maximum(np.abs(r.theta - THETA_STAR), 1e-17), **kw)
    n = max(len(r.theta) for r, _ in results)
    a.axhline(THETA_STAR, color="grey", ls="--", lw=0.8)
    a.set_ylim(-0.8, 2.0)
    a.set_xlim(0, max(n // 4, 1))  # (a run of under 4 steps: a range of 0 warns)
    a.set_xlabel("time step")
    a.set_ylabel("theta")
    a.set_title("influence balancing: theta (theta* = -1/6 dashed)")
    b.axhline(tol, color="grey", ls=":", lw=0.8)
    b.set_xlim(0, n)
    b.set_xlabel("time step")
    b.set_ylabel("|theta - theta*|")
    b.set_title(f"distance to the optimum ({tol:g} dotted)")
    a.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
