"""The cost of a training step after the process idled: bptt against torch, same pattern.

A loop that does other work between steps (evaluation, data loading, an environment) meets the
step cold: worker threads asleep, caches holding other data. For each case and contender (the
`bptt bench` contenders: one float32 full-BPTT step on the same weights and tokens), --repeats
times: sleep `idle` seconds, time one step (cold), run one more, then time --warm steps
back to back (warm: their median); the extra cost is cold - warm of the same repetition (paired, so that the drift of
this machine's speed over minutes cancels), contenders alternated within every repetition.
Prints the medians of warm, cold and extra of each (the extra's quartiles beside it: a cold step
is one sample of a machine's wake-up, and its spread is milliseconds), and bptt's extra cost over
torch's with its 90% bootstrap interval (the repetitions resampled with replacement, 10,000
times, both contenders' samples of a repetition together; the 5th and 95th percentiles of the
ratio of the medians, inf where torch's median extra is not positive): a ratio of two medians of about a millisecond each is decided by that
interval, not by one run's value. With --claims, also how long after a step's first hand-off bptt's worker claimed its job
(in the cold step and in the first warm one): whether waking the thread is what a cold step pays.

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
    ap.add_argument("--claims", action="store_true", help="also time bptt's worker's first claim in each step")
    args = ap.parse_args(argv)

    from bptt.bench.harness import _blas_limit, _kernels_line, _machine, set_threads

    set_threads(args.threads)
    import torch

    from bptt.bench import all_cases
    from bptt.bench.contenders import case_params, make_bptt, make_torch

    torch.set_num_threads(args.threads)
    claims = _Claims() if args.claims else None
    idles = [float(s) for s in args.idle.split(",")]
    print(f"cold steps: {args.threads} thread(s); {_machine()}; {_kernels_line()}; torch {torch.__version__}")
    print(
        f"medians of {args.repeats} repetitions of: sleep, one step (cold), one more, {args.warm} steps (warm: their median); "
        "extra = cold - warm of the same repetition"
    )
    print(
        "| case | idle | bptt warm / cold / extra (ms) | torch warm / cold / extra (ms) | bptt extra / torch extra "
        "| 90% interval | extra quartiles bptt; torch (ms) |"
    )
    print("|---|---|---|---|---|---|---|")
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
                delays: dict[str, list[float]] = {"cold": [], "warm": []}
                for r in range(args.repeats):
                    for c in cs if r % 2 == 0 else cs[::-1]:
                        time.sleep(idle)
                        mine = claims is not None and c.name == "bptt"
                        if mine:
                            claims.start()
                        t0 = time.perf_counter()
                        c.step()
                        cold = time.perf_counter() - t0
                        if mine:
                            delays["cold"].append(claims.delay())
                        c.step()  # (the warm steps start one step after the cold one)
                        ts = []
                        for i in range(args.warm):
                            if mine and i == 0:
                                claims.start()
                            t0 = time.perf_counter()
                            c.step()
                            ts.append(time.perf_counter() - t0)
                            if mine and i == 0:
                                delays["warm"].append(claims.delay())
                        runs[c.name].append((cold, statistics.median(ts)))
                med = {n: statistics.median(a for a, _ in v) for n, v in runs.items()}
                warm = {n: statistics.median(w for _, w in v) for n, v in runs.items()}
                extras = {n: [a - w for a, w in v] for n, v in runs.items()}
                extra = {n: statistics.median(e) for n, e in extras.items()}
                b, t = "bptt", "torch"
                ratio = _ratio(extras[b], extras[t])
                lo, hi = _interval(extras[b], extras[t])
                quart = {n: statistics.quantiles(e, n=4) for n, e in extras.items()}
                spread = "; ".join(f"{1e3 * quart[n][0]:.1f} to {1e3 * quart[n][2]:.1f}" for n in (b, t))
                print(
                    f"| {case.cell} {case.size} | {idle:g} s | {1e3 * warm[b]:.1f} / {1e3 * med[b]:.1f} / "
                    f"{1e3 * extra[b]:.1f} | {1e3 * warm[t]:.1f} / {1e3 * med[t]:.1f} / {1e3 * extra[t]:.1f} | "
                    f"{ratio:.2f} | {lo:.2f} to {hi:.2f} | {spread} |",
                    flush=True,
                )
                if claims is not None:
                    print(
                        f"  bptt's worker claimed its first job after the post: {_spread(delays['cold'])} cold, "
                        f"{_spread(delays['warm'])} warm (ms: median, range)",
                        flush=True,
                    )
    return 0


class _Claims:
    """Records, for one bptt step at a time, the delay between the engine's first hand-off
    (engine.run with more than one call) and the first claim of a posted job by a worker thread."""

    def __init__(self) -> None:
        import threading

        from bptt.fast import engine

        self.posted: float | None = None
        self.claimed: float | None = None
        run, claim = engine.run, engine._Job.claim

        def timed_run(calls):
            if len(calls) > 1 and self.posted is None:
                self.posted = time.perf_counter()
            return run(calls)

        def timed_claim(job):
            fn = claim(job)
            if fn is not None and self.claimed is None and threading.current_thread() is not threading.main_thread():
                self.claimed = time.perf_counter()
            return fn

        engine.run, engine._Job.claim = timed_run, timed_claim

    def start(self) -> None:
        self.posted = self.claimed = None

    def delay(self) -> float:
        """ms from the first hand-off to the worker's first claim (nan: none in this step)."""
        if self.posted is None or self.claimed is None:
            return float("nan")
        return 1e3 * (self.claimed - self.posted)


def _ratio(a: list[float], b: list[float]) -> float:
    """The ratio of the medians of a and b (inf where b's is not positive)."""
    mb = statistics.median(b)
    return statistics.median(a) / mb if mb > 0 else float("inf")


def _interval(a: list[float], b: list[float], n: int = 10_000) -> tuple[float, float]:
    """The 5th and 95th percentiles of _ratio over n bootstrap resamples of the repetitions (a[i]
    and b[i] are repetition i's: drawn together)."""
    import numpy as np

    rng = np.random.default_rng(0)
    pairs = np.array([a, b])  # (2, repetitions)
    picks = rng.integers(0, pairs.shape[1], size=(n, pairs.shape[1]))
    med = np.median(pairs[:, picks], axis=2)  # (2, n)
    ratios = np.where(med[1] > 0, med[0] / np.where(med[1] > 0, med[1], 1.0), np.inf)
    # (percentiles taken as samples, not interpolated: between a ratio and inf that is nan)
    return float(np.percentile(ratios, 5, method="lower")), float(np.percentile(ratios, 95, method="higher"))


def _spread(ms: list[float]) -> str:
    ms = [m for m in ms if m == m]
    if not ms:
        return "none"
    return f"{statistics.median(ms):.2f} ({min(ms):.2f}-{max(ms):.2f})"


if __name__ == "__main__":
    sys.exit(main())
