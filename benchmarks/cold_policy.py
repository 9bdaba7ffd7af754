"""The cold-step policy against the split-only engine, alternated in one process.

    python benchmarks/cold_policy.py [--cells elman,gru,lstm] [--idle 0.5] [--repeats 9] [--threads 2]

For each small bench case: the warm step (median of back-to-back steps), then the three steps
after each of --repeats sleeps of --idle seconds, with the engine's cold policy (a step that
finds it idle for over engine.COLD_S runs serially while its threads warm up) and without it
(COLD_S = inf: every step split), the two alternated sleep by sleep. Prints medians in ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells", default="elman,gru,lstm")
    ap.add_argument("--idle", type=float, default=0.5)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    from bptt.bench.harness import _blas_limit, _kernels_line, _machine, set_threads

    set_threads(args.threads)
    from bptt.bench import all_cases
    from bptt.bench.contenders import case_params, make_bptt
    from bptt.fast import engine

    policy = engine.COLD_S
    print(f"cold policy: {args.threads} thread(s); {_machine()}; {_kernels_line()}")
    print(f"the 3 steps after {args.idle:g} s of idle, medians of {args.repeats}; warm: median of 20 back-to-back")
    print("| case | warm (ms) | with the policy (ms) | split only (ms) |\n|---|---|---|---|")
    with _blas_limit(args.threads):
        for case in all_cases(tuple(args.cells.split(",")), ("small",)):
            params = case_params(case)
            c = make_bptt(case, params, *case.data())

            def timed() -> float:
                t0 = time.perf_counter()
                c.step()
                return time.perf_counter() - t0

            for _ in range(5):
                c.step()
            warm = statistics.median(timed() for _ in range(20))
            after: dict[str, list[list[float]]] = {"policy": [], "split": []}
            for r in range(args.repeats):
                for mode in ("policy", "split") if r % 2 == 0 else ("split", "policy"):
                    engine.COLD_S = policy if mode == "policy" else float("inf")
                    time.sleep(args.idle)
                    after[mode].append([timed() for _ in range(3)])
            engine.COLD_S = policy
            med = {
                m: " / ".join(f"{1e3 * statistics.median(s[i] for s in v):.1f}" for i in range(3))
                for m, v in after.items()
            }
            print(f"| {case.cell} {case.size} | {1e3 * warm:.1f} | {med['policy']} | {med['split']} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
