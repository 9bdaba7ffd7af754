"""The cost of a training step after the process idled: bptt against torch, same pattern.

A loop that does other work between steps (evaluation, data loading, an environment) meets the
step cold: worker threads asleep, caches holding other data. For each case and contender (the
`bptt bench` contenders: one float32 full-BPTT step on the same weights and tokens): the median
of back-to-back steps (warm), then steps each after sleeping `idle` seconds (cold, median over
--repeats), contenders alternated within every repetition. Prints warm, cold and the extra cost
(cold - warm) of each, and bptt's extra cost over torch's.

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
    ap.add_argument("--warm", type=int, default=20, help="back-to-back steps for the warm median")
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
        f"warm: median of {args.warm} back-to-back steps; cold: median of {args.repeats} steps each after the idle time"
    )
    print("| case | idle | bptt warm / cold / extra (ms) | torch warm / cold / extra (ms) | bptt extra / torch extra |")
    print("|---|---|---|---|---|")
    with _blas_limit(args.threads):
        for case in all_cases(tuple(args.cells.split(",")), tuple(args.sizes.split(","))):
            params = case_params(case)
            x, y = case.data()
            cs = [make_bptt(case, params, x, y), make_torch(case, params, x, y)]
            warm = {}
            for c in cs:
                for _ in range(5):
                    c.step()
                ts = []
                for _ in range(args.warm):
                    t0 = time.perf_counter()
                    c.step()
                    ts.append(time.perf_counter() - t0)
                warm[c.name] = statistics.median(ts)
            for idle in idles:
                cold: dict[str, list[float]] = {c.name: [] for c in cs}
                for r in range(args.repeats):
                    for c in cs if r % 2 == 0 else cs[::-1]:
                        time.sleep(idle)
                        t0 = time.perf_counter()
                        c.step()
                        cold[c.name].append(time.perf_counter() - t0)
                med = {n: statistics.median(v) for n, v in cold.items()}
                extra = {n: med[n] - warm[n] for n in med}
                ratio = extra["bptt"] / extra["torch"] if extra["torch"] > 0 else float("inf")
                b, t = "bptt", "torch"
                print(
                    f"| {case.cell} {case.size} | {idle:g} s | {1e3 * warm[b]:.1f} / {1e3 * med[b]:.1f} / "
                    f"{1e3 * extra[b]:.1f} | {1e3 * warm[t]:.1f} / {1e3 * med[t]:.1f} / {1e3 * extra[t]:.1f} | "
                    f"{ratio:.2f} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
