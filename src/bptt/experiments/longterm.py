"""Long-term dependencies: the classic tasks (bptt.data.longterm) learned by Elman, GRU and LSTM
networks with full BPTT, truncated BPTT and ARTBP, with and without clipping, and the gradient
flow that explains the results (bptt.diagnostics.flow) — `bptt experiment long-term`.

Every run: a recurrent level of `hidden` units and a dense readout, float32, fresh seeded
batches every update, Adam with a warm-up and cosine decay, global-norm clipping (or none);
held out: 500 sequences from another seed. Parts (each a list of runs, a table, plots):

- adding: T = 100 (and longer), cells x seeds; the mean square error (predicting 1: 1/6).
- reber: the embedded Reber grammar, cells x seeds; the share of held-out strings all right, and
  the strings seen when it first reached 100% (evaluated every 50 updates).
- xor: Elman's temporal XOR; the loss at each position of the triples (a, b, a XOR b).
- copy: copy memory with a delay of 100 (6,000 updates); the loss against 10 ln 8 / (T + 20).
- add-task: Marschall et al.'s Add task (lags 5 and 9) for cells x algorithms x clipping;
  which of the levels 0.66 / 0.52 / 0.45 nats each reaches.
- flow: |dS(T)/dS(t)| and each lag's part of the recurrent weight gradient by lag, for Elman,
  GRU and LSTM trained on the adding problem; and an Elman network started in an exploding
  regime (recurrent weights scaled to spectral radius 2) trained by plain gradient descent with and
  without clipping.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import numpy as np

from ..algorithms import make
from ..data import longterm as lt
from ..diagnostics.flow import flow
from ..errors import BpttError
from ..layers import Dense, rnn
from ..model import Model
from ..optim import adam, apply_updates, chain, clip_by_global_norm, constant, global_norm, sgd, warmup_cosine

PARTS = ("adding", "reber", "xor", "copy", "add-task", "flow")


class Run(NamedTuple):
    task: str
    cell: str
    algorithm: str
    clip: float
    seed: int
    T: int
    steps: int
    loss: float  # held-out loss at the end
    figures: dict  # the task's own held-out figures at the end (bptt.data.longterm.figures)
    curve: list  # (update, held-out loss, figures) at each evaluation
    seconds: float
    params: Any = None


def problem(task: str, rng: np.random.Generator, B: int, T: int) -> lt.Problem:
    return lt.make(task, rng, B, T)


def model_for(task: str, cell: str, hidden: int, p: lt.Problem) -> Model:
    D, K, tokens = lt.SIZES[task]
    return Model(D, [rnn(cell, hidden), Dense(K)], tokens=tokens, loss=p.loss, at=p.at)


def _targets(p: lt.Problem) -> np.ndarray:
    return p.y.astype(np.float32) if p.loss == "mse" else p.y


def algorithm(name: str, rng: np.random.Generator):
    """'full', 'tbptt-K' (TBPTT(K, K) over each sequence) or 'artbp-C' (ARTBP with c = C)."""
    if name == "full":
        return make("full")
    kind, arg = name.split("-", 1)
    if kind == "tbptt":
        return make("tbptt", k1=int(arg), k2=int(arg))
    return make("artbp", c=float(arg), rng=rng)


def train(
    task: str,
    cell: str,
    seed: int = 0,
    *,
    algo: str = "full",
    clip: float = 1.0,
    T: int = 100,
    hidden: int = 64,
    batch: int = 32,
    steps: int = 3000,
    lr: float = 0.01,
    eval_every: int = 250,
    keep_params: bool = False,
    init_radius: float = 0.0,
    optimizer: str = "adam",
    warmup: int | None = None,
    log: Any = None,
) -> Run:
    """One run (module docstring). init_radius > 0: the recurrent weights scaled to that spectral
    radius at the start (an exploding regime above 1). optimizer 'adam' (warm-up, then cosine
    decay to lr / 30) or 'sgd' (plain gradient descent: with warmup=0 at the constant rate lr,
    else as Adam's schedule); warmup: the warm-up updates (default min(50, steps // 10))."""
    if optimizer not in ("adam", "sgd"):
        raise BpttError(f"optimizer: expected adam or sgd, received {optimizer!r}")
    rng = np.random.default_rng(seed)
    val = problem(task, np.random.default_rng(10_000 + seed), 500, T)
    model = model_for(task, cell, hidden, val)
    params = model.init_params(rng, np.float32)
    if init_radius > 0:
        for k in params:
            if k.endswith("W_hh"):
                W = params[k].astype(np.float64)
                params[k] = (W * init_radius / np.abs(np.linalg.eigvals(W)).max()).astype(np.float32)
    warm = min(50, steps // 10) if warmup is None else warmup
    rate = constant(lr) if optimizer == "sgd" and warm == 0 else warmup_cosine(lr, warm, steps, lr / 30)
    parts = ([clip_by_global_norm(clip)] if clip > 0 else []) + [adam(rate) if optimizer == "adam" else sgd(rate)]
    opt = chain(*parts)
    state = opt.init(params)
    grad = algorithm(algo, rng)
    curve, norms, trace = [], [], []
    t0 = time.perf_counter()

    def evaluate(step: int) -> None:
        y, _ = model.forward(params, val.x, mask=val.mask)
        loss = model.loss_fn.value(y, _targets(val), val.mask)
        curve.append((step, float(loss), lt.figures(task, val, y), float(np.median(norms)) if norms else None))
        norms.clear()
        if log:
            log(f"  {task} {cell} {algo} clip {clip:g} seed {seed} step {step}: held-out {loss:.4f} {curve[-1][2]}")

    for step in range(steps):
        p = problem(task, rng, batch, T)
        if getattr(grad, "stateful", False):
            grad.reset()
        g = grad(model, params, p.x, _targets(p), mask=p.mask)
        norms.append(float(global_norm(g.grads)))
        updates, state = opt.update(g.grads, state, params)
        params = apply_updates(params, updates)
        if init_radius > 0 and step < 200:  # the exploding start: each update's gradient norm and W_hh's radius
            W = params[f"{cell}0.W_hh"].astype(np.float64)
            trace.append((step + 1, norms[-1], float(np.abs(np.linalg.eigvals(W)).max())))
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            evaluate(step + 1)
    last = curve[-1]
    if trace:
        last[2]["trace"] = trace
    return Run(task, cell, algo, clip, seed, T, steps, last[1], last[2], curve, time.perf_counter() - t0,
               params if keep_params else None)  # fmt: skip


def adding_part(seeds: int = 5, log: Any = None) -> list[Run]:
    runs = []
    for cell in ("lstm", "gru", "elman"):
        for s in range(seeds if cell != "elman" else min(seeds, 2)):
            runs.append(train("adding", cell, s, T=100, log=log, keep_params=s == 0))
    for T in (200, 500):
        for cell in ("lstm", "gru"):
            runs.append(train("adding", cell, 0, T=T, steps=3000 if T == 200 else 2000, log=log))
    return runs


def reber_part(seeds: int = 10, log: Any = None) -> list[Run]:
    runs = []
    for cell in ("lstm", "gru", "elman"):
        for s in range(seeds if cell == "lstm" else min(seeds, 3)):
            runs.append(train("embedded-reber", cell, s, hidden=32, batch=16, steps=1000, eval_every=50, log=log))
    return runs


def strings_to_solve(run: Run, batch: int = 16) -> int | None:
    """Strings seen (updates x batch) when the held-out strings were first all right."""
    for step, _, fig, _ in run.curve:
        if fig.get("accuracy", 0) >= 1.0:
            return step * batch
    return None


def xor_part(log: Any = None) -> list[Run]:
    return [train("temporal-xor", "elman", 0, T=300, hidden=8, batch=16, steps=2000, log=log, keep_params=True)]


def copy_part(log: Any = None) -> list[Run]:
    return [train("copy-memory", c, 0, T=100, hidden=128, batch=32, steps=6000, lr=0.003, log=log)
            for c in ("lstm", "gru", "elman")]  # fmt: skip


ADD_ALGORITHMS = ("full", "tbptt-4", "tbptt-8", "tbptt-16", "artbp-0.1")


def add_task_part(log: Any = None, steps: int = 4000) -> list[Run]:
    """Each cell with each algorithm (clipping at 1), and full BPTT without clipping."""
    runs = []
    for cell in ("elman", "gru", "lstm"):
        for a, clip in [(a, 1.0) for a in ADD_ALGORITHMS] + [("full", 0.0)]:
            runs.append(train("add-task", cell, 0, algo=a, clip=clip, T=64, hidden=32, batch=32, steps=steps,
                              lr=0.005, eval_every=1000, log=log))  # fmt: skip
    return runs


def level_of(loss: float, T: int | None = None) -> str:
    """Which dependencies an Add-task loss shows learned, against the levels of a sequence of
    T steps (bptt.data.longterm.add_task_levels: 0.66 / 0.53 / 0.475 at T = 64, where the first
    steps cannot know the lags); between two levels, the share of the longer lag's information
    used (a readout reads whatever the state holds of x(t - 9), even where no gradient reaches
    that lag)."""
    none, first, both = lt.add_task_levels(T)
    if loss <= both + 0.003:
        return "both"
    if loss < first - 0.005:
        return f"t - 5, and {(first - loss) / (first - both):.0%} of t - 9"
    if loss <= first + 0.005:
        return "t - 5"
    if loss < none - 0.005:
        return f"{(none - loss) / (none - first):.0%} of t - 5"
    return "none" if loss <= none + 0.02 else "above the no-memory level"


def lag_profiles(adding_runs: list[Run], T: int = 100) -> dict[str, dict]:
    """|dS(T)/dS(t)| and the parts of dL/dW_hh by lag for each cell's trained adding network
    (seed 0) on 4 held-out sequences."""
    out = {}
    for r in adding_runs:
        if r.params is None or r.T != T:
            continue
        val = problem("adding", np.random.default_rng(10_000 + r.seed), 4, T)
        model = model_for("adding", r.cell, r.params[f"{r.cell}0.W_hh"].shape[1], val)
        f = flow(model, r.params, val.x, _targets(val), max_lag=T - 1)
        out[r.cell] = {"lag": f.lag.tolist(), "by_lag": f.by_lag_norm[f"{r.cell}0.W_hh"].tolist(), "loss": f.loss}
    return out


def exploding_part(log: Any = None) -> list[Run]:
    """Elman from spectral radius 2 (a first gradient of 84 against 2.3 at radius 1), adding T = 50,
    plain gradient descent (Adam would rescale the steps), with and without clipping."""
    return [train("adding", "elman", 0, T=50, hidden=32, steps=1000, lr=0.01, clip=c, init_radius=2.0,
                  optimizer="sgd", warmup=0, eval_every=50, log=log) for c in (1.0, 0.0)]  # fmt: skip


# ---- tables and plots -----------------------------------------------------------------------
def table_adding(runs: list[Run]) -> str:
    lines = ["| cell | T | held-out MSE per seed | seeds < 0.01 | seconds per run |", "| --- | --- | --- | --- | --- |"]
    for key in dict.fromkeys((r.cell, r.T) for r in runs):
        rs = [r for r in runs if (r.cell, r.T) == key]
        mse = [r.figures["mse"] for r in rs]
        lines.append(
            f"| {key[0]} | {key[1]} | {', '.join(f'{m:.4f}' for m in mse)} | {sum(m < 0.01 for m in mse)} of "
            f"{len(mse)} | {np.mean([r.seconds for r in rs]):.0f} |"
        )
    return "\n".join(lines)


def table_reber(runs: list[Run]) -> str:
    lines = ["| cell | held-out strings all right, per seed | seeds at 100% | strings seen to 100% (median) |",
             "| --- | --- | --- | --- |"]  # fmt: skip
    for cell in dict.fromkeys(r.cell for r in runs):
        rs = [r for r in runs if r.cell == cell]
        acc = [r.figures["accuracy"] for r in rs]
        seen = [strings_to_solve(r) for r in rs]
        got = [s for s in seen if s is not None]
        lines.append(
            f"| {cell} | {', '.join(f'{a:.0%}' for a in acc)} | {sum(a >= 1.0 for a in acc)} of {len(acc)} | "
            f"{int(np.median(got)) if got else '-'} |"
        )
    return "\n".join(lines)


def table_simple(runs: list[Run]) -> str:
    lines = [
        "| task | cell | held-out loss | no-memory baseline | figures | seconds |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in runs:
        base = problem(r.task, np.random.default_rng(0), 1, r.T).baseline
        figs = ", ".join(f"{k} {v:.4f}" for k, v in r.figures.items())
        lines.append(f"| {r.task} T={r.T} | {r.cell} | {r.loss:.4f} | {base:.4f} | {figs} | {r.seconds:.0f} |")
    return "\n".join(lines)


def table_exploding(runs: list[Run]) -> str:
    lines = ["| clipping | gradient norm, first update | largest in the first 50 | W_hh spectral radius after 1 / 10 / 50 updates | held-out MSE at the end |",
             "| --- | --- | --- | --- | --- |"]  # fmt: skip
    for r in runs:
        tr = r.figures["trace"]
        g, rad = [t[1] for t in tr], [t[2] for t in tr]
        clip = f"{r.clip:g}" if r.clip else "none"
        lines.append(
            f"| {clip} | {g[0]:.3g} | {max(g[:50]):.3g} | {rad[0]:.2f} / {rad[9]:.2f} / {rad[49]:.2f} | "
            f"{r.figures['mse']:.4f} |"
        )
    return "\n".join(lines)


def table_add_task(runs: list[Run]) -> str:
    T = runs[0].T if runs else 64
    none, first, both = lt.add_task_levels(T)
    lines = [
        f"Levels over {T} steps from the start: no dependency {none:.3f}, x(t - 5) {first:.3f}, both {both:.3f} nats "
        "(0.662 / 0.519 / 0.454 on an endless stream).",
        "",
        "| cell | algorithm | clip | held-out loss (nats) | dependencies learned |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in runs:
        clip = f"{r.clip:g}" if r.clip else "none"
        lines.append(f"| {r.cell} | {r.algorithm} | {clip} | {r.loss:.3f} | {level_of(r.loss, r.T)} |")
    return "\n".join(lines)


def plot_flow(profiles: dict[str, dict], exploding: list[Run], path: str) -> None:
    from ..plots import _pyplot, _save

    plt = _pyplot()
    fig, ax = plt.subplots(1, 3, figsize=(16, 4.4))
    for cell, pr in profiles.items():
        ax[0].semilogy(pr["lag"], label=cell)
        by = np.asarray(pr["by_lag"], float)
        ax[1].semilogy(np.arange(len(by) - 1), np.maximum(by[:-1], 1e-30), label=cell)
    ax[0].set(
        xlabel="lag l",
        ylabel="largest singular value of dS(T)/dS(T-l)",
        title="adding T = 100, trained: Jacobians by lag",
    )
    ax[1].set(xlabel="lag l", ylabel="|part of dL/dW_hh at lag l|", title="each lag's part of the recurrent gradient")
    tw = ax[2].twinx()
    for r, color in zip(exploding, ("tab:blue", "tab:red")):
        tr = np.asarray(r.figures["trace"], float)
        label = f"clip {r.clip:g}" if r.clip else "no clipping"
        ax[2].semilogy(tr[:, 0], tr[:, 1], color=color, lw=0.8, label=f"gradient norm, {label}")
        tw.plot(tr[:, 0], tr[:, 2], "--", color=color, label=f"W_hh spectral radius, {label}")
    tw.set_ylabel("spectral radius of W_hh (dashed)")
    tw.legend(fontsize=8, loc="center right")
    ax[2].set(xlabel="update", title="Elman from spectral radius 2, gradient descent (adding T = 50)")
    for a in ax:
        a.legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)


def plot_xor(run: Run, path: str, T: int = 300) -> None:
    """Elman's figure: the held-out loss at each step of a stretch of the stream, low on every
    third bit (the XOR of the two before)."""
    from ..plots import _pyplot, _save

    plt = _pyplot()
    val = problem("temporal-xor", np.random.default_rng(10_000 + run.seed), 500, T)
    model = model_for("temporal-xor", "elman", run.params["elman0.W_hh"].shape[1], val)
    y, _ = model.forward(run.params, val.x)
    top = y.max(-1, keepdims=True)
    logp = y - top - np.log(np.exp(y - top).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, val.y[..., None], axis=-1)[..., 0].mean(axis=1)  # (T,) mean over sequences
    fig, ax = plt.subplots(figsize=(9, 3.6))
    t = np.arange(24)
    ax.plot(t, nll[-24:], "o-")
    for i in t[(np.arange(T)[-24:] % 3) == 1]:
        ax.axvline(i, color="0.85", zorder=0)
    ax.set(xlabel="step (last 24 of the stream)", ylabel="held-out loss (nats)",
           title="temporal XOR, Elman 8: low where the next bit is the XOR of the two before (grey)")  # fmt: skip
    _save(fig, path)
    plt.close(fig)


TABLES = {  # part -> (heading, table of its runs)
    "adding": ("Adding problem", "table_adding"),
    "reber": ("Embedded Reber grammar", "table_reber"),
    "xor": ("Temporal XOR", "table_simple"),
    "copy": ("Copy memory", "table_simple"),
    "add-task": ("Add task", "table_add_task"),
    "exploding": ("Elman from spectral radius 2, plain gradient descent", "table_exploding"),
}


def markdown(runs: dict[str, list[Run]]) -> str:
    return "\n\n".join(f"### {head}\n\n" + globals()[fn](runs[k]) for k, (head, fn) in TABLES.items() if runs.get(k))


def run_experiment(parts: tuple[str, ...] = PARTS, seeds: int = 5, out: str = "", log: Any = print) -> dict[str, Any]:
    """The chosen parts; with `out` (a folder), longterm.json (every run's figures and curve),
    longterm.md (the tables) and the plots longterm_flow.png, longterm_xor.png written there
    as each part ends. Parts already in `out`'s longterm.json and not run now are kept (so the
    parts can be run one at a time)."""
    import json
    import os

    from ..files import atomic_write

    runs: dict[str, list[Run]] = {}
    extra: dict[str, Any] = {}
    path = os.path.join(out, "longterm.json") if out else ""
    if path and os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as f:
                old = json.load(f)
            extra = {k: v for k, v in old.items() if k not in TABLES}
            runs = {k: [Run(**r) for r in v] for k, v in old.items() if k in TABLES}
        except (OSError, UnicodeDecodeError, ValueError, TypeError, AttributeError) as e:
            raise BpttError(
                f"--out: expected a longterm.json written by bptt experiment long-term in {out!r}, "
                f"received one it cannot read ({type(e).__name__}: {e})"
            ) from None

    def save() -> None:
        if not out:
            return
        data = {k: [r._replace(params=None)._asdict() for r in v] for k, v in runs.items()}
        atomic_write(path, lambda f: f.write(json.dumps({**data, **extra}).encode()))
        atomic_write(os.path.join(out, "longterm.md"), lambda f: f.write((markdown(runs) + "\n").encode()))

    if "adding" in parts:
        runs["adding"] = adding_part(seeds, log)
        save()
    if "reber" in parts:
        runs["reber"] = reber_part(2 * seeds, log)
        save()
    if "xor" in parts:
        runs["xor"] = xor_part(log)
        if out:
            plot_xor(runs["xor"][0], os.path.join(out, "longterm_xor.png"))
        save()
    if "copy" in parts:
        runs["copy"] = copy_part(log)
        save()
    if "add-task" in parts:
        runs["add-task"] = add_task_part(log)
        save()
    if "flow" in parts:
        trained = [r for r in runs.get("adding", []) if r.params is not None]
        if not trained:  # (the adding part not run in this process: its seed-0 networks again)
            trained = [train("adding", c, 0, T=100, log=log, keep_params=True) for c in ("lstm", "gru", "elman")]
        extra["lag_profiles"] = lag_profiles(trained)
        runs["exploding"] = exploding_part(log)
        if out:
            plot_flow(extra["lag_profiles"], runs["exploding"], os.path.join(out, "longterm_flow.png"))
        save()
    return {"runs": runs, "markdown": markdown(runs), **extra}
