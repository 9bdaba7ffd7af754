"""Cue accumulation (Bellec et al. 2020): adaptive spiking neurons remember across a delay,
plain LIF neurons do not, and truncated BPTT cannot see the cues.

Seven cues, each on the left or the right, then a delay, then a recall cue during which the
network must say which side had more (bptt.data.spikes.cue_accumulation; steps of 10 ms, so a
20 ms membrane decays by exp(-1/2) a step). The network: 40 input channels -> 100 recurrent
spiking neurons (half of them adaptive: threshold theta + beta a with a 2 s time constant; the
other half plain LIF, beta = 0) -> 2 leaky readout units, cross-entropy over the recall window,
firing-rate regularisation toward 10 Hz. Variants:

- `alif`: as above, full BPTT;
- `lif`: every neuron plain LIF (beta = 0), full BPTT: nothing in it lasts the delay;
- `tbptt`: as `alif`, with the gradient truncated to the last `window` steps (TBPTT with
  k1 = k2 = window for a loss at the end): the cues lie outside it;
- `eprop`: as `alif`, with online e-prop (symmetric feedback; bptt.algorithms.eprop): the
  learning signal is the readout's error at each step, carried back by eligibility traces.

Accuracy is measured on 1,000 fresh sequences of a held-out seed.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import numpy as np

from ..algorithms import make
from ..data.spikes import cue_accumulation
from ..errors import BpttError
from ..layers import RateRegularizer, Recurrent
from ..model import Model
from ..optim import adam, apply_updates, chain, clip_by_global_norm

VARIANTS = ("alif", "lif", "tbptt", "eprop")
DT_MS = 10.0


class CueRun(NamedTuple):
    variant: str
    seed: int
    accuracy: float  # on the held-out sequences
    loss: float  # the last training loss (mean over the final 20 steps)
    rate_hz: float  # mean firing rate of the recurrent neurons on the held-out sequences
    seconds: float


def cue_model(variant: str, hidden: int = 100, task: dict | None = None, adapt: float = 0.1) -> Model:
    """The network of the module docstring (variant 'lif': no adaptation)."""
    beta = np.zeros(hidden)
    if variant != "lif":
        beta[hidden // 2 :] = adapt
    cell = dict(
        decay=np.exp(-DT_MS / 20.0),
        threshold=0.6,
        adapt_decay=np.exp(-DT_MS / 2000.0),
        adapt_strength=beta,
        reset="subtract",
        surrogate="triangle",
        slope=1 / 0.6,
        surrogate_scale=0.3,
        refractory=0,
    )
    recall = (task or {}).get("recall", 15)
    return Model(
        40,
        [
            Recurrent("alif", hidden, name="snn", **cell),
            RateRegularizer(target=10.0 * DT_MS / 1000.0, strength=1.0, name="rate"),
            Recurrent("leaky", 2, name="out", decay=np.exp(-DT_MS / 20.0)),
        ],
        at="last",
        window=recall,
    )


def _init(model: Model, rng: np.random.Generator) -> dict[str, np.ndarray]:
    p = model.init_params(rng, np.float32)
    n_in, n = p["snn.W_ih"].shape[1], p["snn.W_ih"].shape[0]
    p["snn.W_ih"] = (rng.standard_normal((n, n_in)) / np.sqrt(n_in)).astype(np.float32)
    p["snn.W_hh"] = (rng.standard_normal((n, n)) / np.sqrt(n)).astype(np.float32)
    np.fill_diagonal(p["snn.W_hh"], 0)
    for k in ("snn.b_ih", "snn.b_hh", "out.b_ih"):
        p[k][:] = 0
    p["out.W_ih"] = (rng.standard_normal(p["out.W_ih"].shape) / np.sqrt(n)).astype(np.float32)
    return p


def _accuracy(model: Model, params, task) -> tuple[float, float]:
    y, _ = model.forward(params, task.x)
    votes = y[-task.window :].mean(axis=0)  # (B, 2): the readout averaged over the recall window
    sub = {k: v for k, v in params.items() if k.startswith("snn.")}
    spikes, _ = Model(
        40, [Recurrent("alif", model.levels[0].size, name="snn", **model.levels[0].cell_options)]
    ).forward(sub, task.x)
    return float(np.mean(votes.argmax(axis=1) == task.y)), float(spikes.mean() * 1000.0 / DT_MS)


def run_cues(
    variant: str,
    seed: int,
    steps: int = 300,
    batch: int = 64,
    lr: float = 1e-2,
    window: int = 30,
    task: dict | None = None,
    adapt: float = 0.1,
    log: Any = None,
) -> CueRun:
    """Train one network (module docstring) for `steps` Adam steps on fresh batches; report its
    held-out accuracy."""
    if variant not in VARIANTS:
        raise ValueError(variant)
    task = dict(task or {})
    rng = np.random.default_rng(seed)
    model = cue_model(variant, task=task, adapt=adapt)
    params = _init(model, rng)
    opt = chain(clip_by_global_norm(1.0), adam(lr))
    state = opt.init(params)
    full = make("eprop", signal="online") if variant == "eprop" else make("full")
    losses = []
    t0 = time.perf_counter()
    for step in range(steps):
        data = cue_accumulation(rng, batch, **task)
        if variant == "tbptt":  # the state at T - window without a tape, then BPTT over the rest
            T = data.x.shape[0]
            if window >= T:  # (x[: T - window] would wrap around, or be empty)
                raise BpttError(f"--window: expected fewer steps than the sequences' {T}, received {window}")
            s0 = model.initial_state(params, batch)[0]
            _, s = model.forward(params, data.x[: T - window], state0=s0)
            g = full(model, params, data.x[T - window :], data.y, state0=s)
        else:
            g = full(model, params, data.x, data.y)
        updates, state = opt.update(g.grads, state, params)
        params = apply_updates(params, updates)
        losses.append(g.loss)
        if log and (step + 1) % 50 == 0:
            log(f"  {variant} seed {seed} step {step + 1}: loss {np.mean(losses[-50:]):.4f}")
    test = cue_accumulation(np.random.default_rng(10_000 + seed), 1000, **task)
    acc, rate = _accuracy(model, params, test)
    return CueRun(variant, seed, acc, float(np.mean(losses[-20:])), rate, time.perf_counter() - t0)


def cue_experiment(
    variants=VARIANTS, seeds: int = 5, steps: int = 300, log: Any = print, **options: Any
) -> list[CueRun]:
    runs = []
    for v in variants:
        for s in range(seeds):
            r = run_cues(v, s, steps, log=log, **options)
            log(f"{v} seed {s}: accuracy {r.accuracy:.3f}, loss {r.loss:.4f}, {r.rate_hz:.1f} Hz, {r.seconds:.0f} s")
            runs.append(r)
    return runs


def cue_table(runs: list[CueRun]) -> str:
    """A markdown table: per variant, the accuracy of each seed, how many reach 90%, the median."""
    lines = [
        "| variant | held-out accuracy per seed | seeds >= 90% | median | firing rate | seconds per run |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for v in dict.fromkeys(r.variant for r in runs):
        rs = [r for r in runs if r.variant == v]
        accs = [r.accuracy for r in rs]
        lines.append(
            f"| {v} | {', '.join(f'{a:.3f}' for a in accs)} | {sum(a >= 0.9 for a in accs)} of {len(accs)} | "
            f"{np.median(accs):.3f} | {np.mean([r.rate_hz for r in rs]):.1f} Hz | {np.median([r.seconds for r in rs]):.0f} |"
        )
    return "\n".join(lines)
