"""The cost of a training step after the process idled: bptt against torch, same pattern.

A loop that does other work between steps (evaluation, data loading, an environment) meets the
step cold: worker threads asleep, caches holding other data. For each case and contender (the
`bptt bench` contenders: one float32 full-BPTT step on the same weights and tokens), --repeats
times: sleep `idle` seconds, time one step (cold), run one more, then time --warm steps
back to back (warm: their median); the extra cost is cold - warm of the same repetition (paired, so that the drift of
this machine's speed over minutes cancels), contenders alternated within every repetition.
Prints the medians of warm, cold and extra of each (the extra's quartiles beside it: a cold step
is one sample of a machine's wake-up, and its spread is milliseconds), and bptt's extra cost over
torch's.

    python benchmarks/cold_step.py [--cells elman,lstm] [--sizes small] [--idle 0.05,0.5] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells", default="elman,gru,lstm")
    ap.add_argument("--sizes", default="small")
    ap.add_argument("--idle", default="0.05,0.5", help="seconds of sleep before a cold step")
    ap.add_argument("--repeats", type=int, default=9, help="cold steps per idle time and contender")
    ap.add_argument("--warm", type=int, default=3, help="steps right after each cold one, for its warm median")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    from bptt.bench.harness import _blas_limit, _kernels_line, _machine, set_threads

    set_threads(args.threads)
    import torch

    from bptt.bench import all_cases
    from bptt.bench.contenders import case_params, make_bptt, make_torch

    torch.set_num_threads(args.threads)
    idles = [float(s) for s in args.idle.split(",")]
    print(f"cold steps: {args.threads} thread(s); {_machine()}; {_kernels_line()}; torch {torch.__version__}")
    print(
        f"medians of {args.repeats} repetitions of: sleep, one step (cold), one more, {args.warm} steps (warm: their median); "
        "extra = cold - warm of the same repetition"
    )
    print(
        "| case | idle | bptt warm / cold / extra (ms) | torch warm / cold / extra (ms) | bptt extra / torch extra "
        "| extra quartiles bptt; torch (ms) |"
    )
    print("|---|---|---|---|---|---|")
    with _blas_limit(args.threads):
        for case in all_cases(tuple(args.cells.split(",")), tuple(args.sizes.split(","))):
            params = case_params(case)
            x, y = case.data()
            cs = [make_bptt(case, params, x, y), make_torch(case, params, x, y)]
            for c in cs:
                for _ in range(5):
                    c.step()
            for idle in idles:
                runs: dict[str, list[tuple[float, float]]] = {c.name: [] for c in cs}
                for r in range(args.repeats):
                    for c in cs if r % 2 == 0 else cs[::-1]:
                        time.sleep(idle)
                        t0 = time.perf_counter()
                        c.step()
                        cold = time.perf_counter() - t0
                        c.step()  # (the warm steps start one step after the cold one)
                        ts = []
                        for _ in range(args.warm):
                            t0 = time.perf_counter()
                            c.step()
                            ts.append(time.perf_counter() - t0)
                        runs[c.name].append((cold, statistics.median(ts)))
                med = {n: statistics.median(a for a, _ in v) for n, v in runs.items()}
                warm = {n: statistics.median(w for _, w in v) for n, v in runs.items()}
                extra = {n: statistics.median(a - w for a, w in v) for n, v in runs.items()}
                ratio = extra["bptt"] / extra["torch"] if extra["torch"] > 0 else float("inf")
                b, t = "bptt", "torch"
                quart = {n: statistics.quantiles([a - w for a, w in v], n=4) for n, v in runs.items()}
                spread = "; ".join(f"{1e3 * quart[n][0]:.1f} to {1e3 * quart[n][2]:.1f}" for n in (b, t))
                print(
                    f"| {case.cell} {case.size} | {idle:g} s | {1e3 * warm[b]:.1f} / {1e3 * med[b]:.1f} / "
                    f"{1e3 * extra[b]:.1f} | {1e3 * warm[t]:.1f} / {1e3 * med[t]:.1f} / {1e3 * extra[t]:.1f} | "
                    f"{ratio:.2f} | {spread} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
