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
