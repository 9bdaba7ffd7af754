"""Every registered gradient algorithm on the same model, batch, parameters and initial state:
time and peak memory per call, and how close its gradient is to full BPTT's (cosine similarity
and relative error) — `bptt experiment compare`."""

from __future__ import annotations

import statistics
import time
import tracemalloc
from typing import NamedTuple

import numpy as np

from ..algorithms import make
from ..layers import Dense, rnn
from ..model import Model


class Row(NamedTuple):
    name: str
    seconds: float  # median per call
    peak_bytes: int  # tracemalloc's peak over one call
    cosine: float  # with full BPTT's gradient (all parameters flattened)
    rel_error: float  # |g - g_full| / |g_full|


def compare(
    cell: str = "gru",
    hidden: int = 16,
    batch: int = 4,
    length: int = 50,
    inputs: int = 3,
    repeats: int = 3,
    seed: int = 0,
) -> list[Row]:
    """The table's rows (float64, mse loss at every step, random weights, data and state)."""
    from ..algorithms.budget import measure_storage

    rng = np.random.default_rng(seed)
    model = Model(inputs, [*rnn(cell, hidden), Dense(inputs)], loss="mse")
    params = model.init_params(rng)
    x, y = rng.standard_normal((length, batch, inputs)), rng.standard_normal((length, batch, inputs))
    state0 = {
        k: type(v)(*(rng.uniform(-0.5, 0.5, a.shape) for a in v))
        for k, v in model.initial_state(params, batch)[0].items()
    }
    flat = lambda g: np.concatenate([g.grads[k].ravel() for k in sorted(g.grads)])  # noqa: E731
    exact = flat(make("full")(model, params, x, y, state0=state0))
    st = measure_storage(model, params, batch)
    draws = np.random.default_rng(seed + 1)
    k = max(1, length // 5)
    contenders = {  # a fresh algorithm per call: no stream carried from one to the next
        "full": lambda: make("full"),
        f"tbptt k1=k2={k}": lambda: make("tbptt", k1=k, k2=k),
        "artbp c=0.1": lambda: make("artbp", c=0.1, rng=draws),
        "budget 10% (mixed)": lambda: make("budget", budget=max(st.leaf(1), st.leaf(length) // 10), policy="mixed"),
        "rtrl": lambda: make("rtrl"),
        "uoro": lambda: make("uoro", rng=draws),
    }
    rows = []
    for name, make_one in contenders.items():
        make_one()(model, params, x, y, state0=state0)  # warm
        tracemalloc.start()
        g = make_one()(model, params, x, y, state0=state0)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        times = []
        for _ in range(repeats):
            algo = make_one()
            t0 = time.perf_counter()
            algo(model, params, x, y, state0=state0)
            times.append(time.perf_counter() - t0)
        v = flat(g)
        cos = float(v @ exact / (np.linalg.norm(v) * np.linalg.norm(exact)))
        rows.append(
            Row(name, statistics.median(times), peak, cos, float(np.linalg.norm(v - exact) / np.linalg.norm(exact)))
        )
    return rows


def table(rows: list[Row]) -> str:
    lines = [
        "| algorithm | time per call | peak memory | cosine with full BPTT | relative error |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r.name} | {r.seconds * 1e3:,.1f} ms | {r.peak_bytes / 1024:,.0f} KiB | {r.cosine:.6f} | {r.rel_error:.2e} |"
        )
    return "\n".join(lines)


# ---- learning curves: every algorithm training the same model online on one stream ---------------
CURVE_ALGORITHMS = ("full", "tbptt", "artbp", "rtrl", "uoro", "eprop")
DELAY, SEGMENT = 5, 8  # the curves' task: recall the input 5 steps back; an update every 8 steps


def recall_stream(steps: int, batch: int, delay: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The delayed-recall task: random +-1 inputs x (steps, batch, 1); the target at t is the input
    at t - delay (0 for t < delay, where there is nothing to recall yet). Predicting 0 costs 0.5
    (mse = 1/2 squared error); only a gradient reaching `delay` steps back can learn it."""
    x = rng.choice(np.array([-1.0, 1.0]), size=(steps, batch, 1))
    y = np.zeros_like(x)
    y[delay:] = x[:-delay]
    return x, y


def curves(
    cell: str = "elman",
    hidden: int = 12,
    batch: int = 2,
    delay: int = DELAY,
    segment: int = SEGMENT,
    updates: int = 400,
    lr: float = 0.01,
    truncation: int = 2,
    c: float = 0.1,
    evals: int = 9,
    eval_length: int = 200,
    eval_batch: int = 8,
    seed: int = 0,
    algorithms: tuple[str, ...] = CURVE_ALGORITHMS,
    log=None,
) -> dict:
    """Learning curves of the gradient algorithms on one task: each trains the same model (same
    initial weights, float64) online on the same seeded delayed-recall stream (`recall_stream`),
    an Adam update (the trainer's chain: global-norm clip 1, lr) after every `segment` steps.

    The model's state runs on from segment to segment (each algorithm's own, from its own
    weights). full BPTT, ARTBP(c) (and e-prop) get each segment with the carried state as state0,
    and TBPTT(truncation, truncation) carries it itself (k1 = k2: no window history), so no
    gradient of theirs crosses a segment's start;
    RTRL and UORO carry the state and their sensitivities along the whole stream (their
    gradients reach into earlier segments, with the weights of their time). e-prop (online
    signal, symmetric feedback) is included only where `make("eprop", signal="online")` accepts
    the model. At `evals` evenly spaced updates (0 and the last among them) the held-out loss is
    measured on `eval_batch` fresh sequences of `eval_length` steps from the zero state.

    Returns plain data (JSON-ready): {"settings": {...}, "curves": [{"name", "algorithm",
    "train": [[update, loss of the segment before that update], ...], "eval": [[update, held-out
    loss after it], ...] (update 0: the initial weights), "seconds": wall time of the training
    (gradients and updates, not the evaluations)}, ...]}."""
    from ..errors import BpttError, one_of
    from ..optim import apply_updates, make_optimizer

    for a in algorithms:
        if a not in CURVE_ALGORITHMS:
            raise one_of("algorithm", a, CURVE_ALGORITHMS)
    for name, v, lo in (
        ("hidden", hidden, 1),
        ("batch", batch, 1),
        ("delay", delay, 1),
        ("segment", segment, 1),
        ("updates", updates, 1),
        ("truncation", truncation, 1),
        ("evals", evals, 2),
        ("eval_length", eval_length, delay + 1),
        ("eval_batch", eval_batch, 1),
    ):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise BpttError(f"curves: {name}: expected an integer >= {lo}, received {v!r}")
    model = Model(1, [*rnn(cell, hidden), Dense(1)], loss="mse")
    params0 = model.init_params(np.random.default_rng(seed))
    x, y = recall_stream(updates * segment, batch, delay, np.random.default_rng([seed, 1]))
    ex, ey = recall_stream(eval_length, eval_batch, delay, np.random.default_rng([seed, 2]))
    at = sorted({round(i * updates / (evals - 1)) for i in range(evals)})
    contenders = {
        "full": ("full BPTT (per segment)", lambda r: make("full")),
        "tbptt": (
            f"TBPTT k1=k2={truncation}",
            lambda r: make("tbptt", k1=truncation, k2=truncation),
        ),
        "artbp": (f"ARTBP c={c:g}", lambda r: make("artbp", c=c, rng=r)),
        "rtrl": ("RTRL", lambda r: make("rtrl")),
        "uoro": ("UORO", lambda r: make("uoro", rng=r)),
        "eprop": ("e-prop (online)", lambda r: make("eprop", signal="online", rng=r)),
    }
    out = []
    for key in algorithms:
        label, build = contenders[key]
        if key == "eprop":  # only where it accepts this model (a first level of lif, alif, lstm or elman)
            try:
                build(np.random.default_rng(0))(model, params0, x[:segment], y[:segment])
            except BpttError as e:
                if log:
                    log(f"{label}: skipped ({str(e)[:100]})")
                continue
        algo = build(np.random.default_rng([seed, 3]))
        opt = make_optimizer("adam", lr, clip=1.0)
        params, ostate, state = dict(params0), opt.init(params0), None
        train, held = [], [[0, float(model.loss(params0, ex, ey))]]
        seconds = 0.0
        for u in range(1, updates + 1):
            s = slice((u - 1) * segment, u * segment)
            t0 = time.perf_counter()
            # a stateful algorithm carries its own stream (state0 only starts it); the others get the carried state
            g = algo(model, params, x[s], y[s], state0=None if algo.stateful else state)
            state = g.final_state
            upd, ostate = opt.update(g.grads, ostate, params)
            params = apply_updates(params, upd)
            seconds += time.perf_counter() - t0
            train.append([u, float(g.loss)])
            if u in at:
                held.append([u, float(model.loss(params, ex, ey))])
        out.append({"name": label, "algorithm": key, "train": train, "eval": held, "seconds": seconds})
        if log:
            log(
                f"{label:<24} final training loss {_tail_mean(train):.4g} (mean of the last {_tail(train)} updates), "
                f"held-out {held[-1][1]:.4g}, {seconds:.1f} s"
            )
    settings = dict(
        task="delayed recall",
        cell=cell,
        hidden=hidden,
        batch=batch,
        delay=delay,
        segment=segment,
        updates=updates,
        optimizer=f"adam lr={lr:g}, clip 1",
        truncation=truncation,
        c=c,
        eval_length=eval_length,
        eval_batch=eval_batch,
        seed=seed,
    )
    return {"settings": settings, "curves": out}


def _tail(train: list) -> int:
    return max(1, len(train) // 10)


def _tail_mean(train: list) -> float:
    return float(np.mean([loss for _, loss in train[-_tail(train) :]]))


def save_curves(result: dict, path: str) -> None:
    """`curves`' result as JSON."""
    import json

    from ..files import atomic_write

    atomic_write(path, lambda f: f.write((json.dumps(result, indent=1) + "\n").encode()))


def plot_curves(result: dict, path: str) -> None:
    """One PNG: the training loss per update (faint) and its moving mean (solid) of every
    algorithm on the left, the held-out loss on the right; log-scale losses against updates."""
    from ..plots import _pyplot, _save

    plt = _pyplot()
    s = result["settings"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    n = max((len(cv["train"]) for cv in result["curves"]), default=1)
    k = max(1, n // 25)
    for i, cv in enumerate(result["curves"]):
        color = f"C{i}"
        u, loss = np.array(cv["train"]).T if cv["train"] else (np.zeros(0), np.zeros(0))
        a.plot(u, loss, color=color, lw=0.5, alpha=0.25)
        if len(loss) >= k:
            a.plot(
                u[k - 1 :],
                np.convolve(loss, np.ones(k) / k, mode="valid"),
                color=color,
                lw=1.6,
                label=f"{cv['name']} ({cv['seconds']:.1f} s)",
            )
        if cv["eval"]:
            eu, el = np.array(cv["eval"]).T
            b.plot(eu, el, "o-", color=color, lw=1.2, ms=3.5, label=cv["name"])
    for ax in (a, b):
        ax.set_yscale("log")
        ax.set_xlabel("update")
        ax.grid(alpha=0.3, which="both")
    a.set_ylabel("loss (mse, 1/2 squared error)")
    a.set_title(f"training loss per update: faint raw, solid moving mean of {k}", fontsize=10)
    b.set_title(f"held-out loss ({s['eval_batch']} sequences x {s['eval_length']} steps)", fontsize=10)
    a.legend(fontsize=8, loc="lower left")
    fig.suptitle(
        f"delayed recall (target = input {s['delay']} steps earlier): {s['cell']} {s['hidden']}, batch {s['batch']}, "
        f"an update every {s['segment']} steps, {s['optimizer']}, seed {s['seed']}",
        fontsize=10,
    )
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
