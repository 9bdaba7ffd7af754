"""How the cost of full BPTT, RTRL and UORO grows with the number of units n: time per step
and peak memory (tracemalloc, above what the call starts with) for an Elman network of n units,
B = 1, T = 20, 4 inputs, a linear readout of 2, float64; medians of alternated repeats.

Theory per step (P ~ n^2 parameters): BPTT O(n^2) time, O(n) memory a step kept; RTRL O(n^2 P) =
O(n^4) time, O(n P) = O(n^3) memory; UORO O(n^2 + P) with a forward-mode product of the cell,
O(n^3) here, where bptt forms A(t) from n vector-Jacobian products (bptt.algorithms.forward).

python benchmarks/forward_cost.py [--repeats 5] [--sizes 8,16,32,64]
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
        algos = {"full BPTT": make("full"), "RTRL": make("rtrl"), "UORO": make("uoro", rng=1)}
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
    print("| n | P | full BPTT per step | RTRL per step | UORO per step | peak: full | peak: RTRL | peak: UORO |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for n, P, t, m in rows:
        print(
            f"| {n} | {P:,} | {t['full BPTT'] * 1e6:,.0f} µs | {t['RTRL'] * 1e6:,.0f} µs | {t['UORO'] * 1e6:,.0f} µs | "
            f"{m['full BPTT'] / 1024:,.0f} KiB | {m['RTRL'] / 1024:,.0f} KiB | {m['UORO'] / 1024:,.0f} KiB |"
        )
    if len(rows) > 1:
        (n0, _, t0_, m0), (n1, _, t1, m1) = rows[-2], rows[-1]
        f = n1 / n0
        slope = {k: np.log(t1[k] / t0_[k]) / np.log(f) for k in t1}
        mslope = {k: np.log(m1[k] / m0[k]) / np.log(f) for k in m1}
        print(
            f"growth from n = {n0} to {n1} (exponent of n): time "
            + ", ".join(f"{k} {v:.2f}" for k, v in slope.items())
            + "; memory "
            + ", ".join(f"{k} {v:.2f}" for k, v in mslope.items())
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
