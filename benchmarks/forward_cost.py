"""How the cost of full BPTT, RTRL, UORO and e-prop grows with the number of units n: time per
step and peak memory (tracemalloc, above what the call starts with) for an Elman network of n
units, B = 1, T = 20, 4 inputs, a linear readout of 2, float64; medians of alternated repeats.

Theory per step (P ~ n^2 parameters): BPTT O(n^2) time, O(n) memory a step kept; RTRL O(n^2 P) =
O(n^4) time, O(n P) = O(n^3) memory; UORO O(n^2 + P) (a forward-mode product of the cells and one
vector-Jacobian product a step), O(P) memory; e-prop (online signal) O(P) time and memory a step
(its traces: one number per weight).

python benchmarks/forward_cost.py [--repeats 5] [--sizes 8,16,32,64,128,256,512] [--rtrl-max 128]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import tracemalloc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sizes", default="8,16,32,64")
    ap.add_argument("--length", type=int, default=20)
    ap.add_argument("--rtrl-max", type=int, default=128, help="RTRL only up to this n (its J: 8 n P bytes)")
    args = ap.parse_args()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import numpy as np

    import bptt
    from bptt.algorithms import make

    T = args.length
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        rng = np.random.default_rng(0)
        model = bptt.Model(4, [bptt.rnn("elman", n), bptt.Dense(2)], loss="mse")
        params = model.init_params(rng)
        x, y = rng.standard_normal((T, 1, 4)), rng.standard_normal((T, 1, 2))
        algos = {
            "full BPTT": make("full"),
            "RTRL": make("rtrl"),
            "UORO": make("uoro", rng=1),
            "e-prop": make("eprop", signal="online"),
        }
        if n > args.rtrl_max:
            del algos["RTRL"]
        times: dict[str, list[float]] = {k: [] for k in algos}
        peaks: dict[str, int] = {}
        for name, algo in algos.items():  # warm, and the memory
            algo(model, params, x, y)
            tracemalloc.start()
            algo(model, params, x, y, state0=model.initial_state(params, 1)[0])
            peaks[name] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        for _ in range(args.repeats):
            for name, algo in algos.items():
                t0 = time.perf_counter()
                algo(model, params, x, y, state0=model.initial_state(params, 1)[0])
                times[name].append((time.perf_counter() - t0) / T)
        P = sum(v.size for v in params.values())
        rows.append((n, P, {k: statistics.median(v) for k, v in times.items()}, peaks))
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    print(
        f"Elman n units, B = 1, T = {T}, float64; {cpu}, BLAS threads {os.environ['OPENBLAS_NUM_THREADS']}; "
        f"Python {platform.python_version()}, NumPy {np.__version__}; medians of {args.repeats} alternated calls"
    )
    names = list(rows[0][2])
    cell = lambda d, k, f: f(d[k]) if k in d else "-"  # noqa: E731
    print(
        "| n | P | "
        + " | ".join(f"{k} per step" for k in names)
        + " | "
        + " | ".join(f"peak: {k}" for k in names)
        + " |"
    )
    print("| --- | --- |" + " --- |" * (2 * len(names)))
    for n, P, t, m in rows:
        print(
            f"| {n} | {P:,} | "
            + " | ".join(cell(t, k, lambda v: f"{v * 1e6:,.0f} µs") for k in names)
            + " | "
            + " | ".join(cell(m, k, lambda v: f"{v / 1024:,.0f} KiB") for k in names)
            + " |"
        )
    for (n0, _, t0_, m0), (n1, _, t1, m1) in zip(rows, rows[1:]):
        f = n1 / n0
        both = [k for k in t1 if k in t0_]
        print(
            f"growth from n = {n0} to {n1} (exponent of n): time "
            + ", ".join(f"{k} {np.log(t1[k] / t0_[k]) / np.log(f):.2f}" for k in both)
            + "; memory "
            + ", ".join(f"{k} {np.log(m1[k] / m0[k]) / np.log(f):.2f}" for k in both)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
