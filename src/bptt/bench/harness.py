"""`bptt bench`: run the cases for every available contender, check that their gradients agree,
time them alternated in one process (median of the repeats after warm-up), measure a float32
GEMM roofline in the same run, and each contender's peak memory in a process of its own.

Threads: the same count for all, set before torch or JAX is imported: OMP/MKL/OpenBLAS
environment variables, threadpoolctl for NumPy's BLAS, torch.set_num_threads, and XLA's CPU
flags (one thread: Eigen's thread pool off).
"""

from __future__ import annotations

import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .cases import Case

GRAD_TOL = 1e-3  # max relative error per array between contenders (float32, sums over B*T)


def set_threads(n: int) -> None:
    """Environment for libraries not yet imported (torch, JAX); call before importing them."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    flags = os.environ.get("XLA_FLAGS", "")
    if n == 1 and "xla_cpu_multi_thread_eigen" not in flags:
        os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()


def _blas_limit(n: int):
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=n)


def _kernels_line() -> str:
    from .. import fast

    if fast.OFF or not fast.available()["kernels"]:
        return "bptt float32 kernels off (NumPy path)"
    import numba

    from ..fast import jit

    return (
        f"bptt float32 kernels: Numba {numba.__version__}, {jit.LANES}-float vectors; big products: {fast.products()}"
    )


def gemm_gflops(n: int = 1024, repeats: int = 15) -> float:
    """NumPy float32 (n x n) @ (n x n): GFLOP/s of the fastest of `repeats` after three
    warm-ups. A roofline is what the BLAS can reach: a median of 7 at the start of a run read
    anywhere from 91 to 295 GFLOP/s on two threads of the same machine (a first call's thread
    start, a busy moment of the host), which made the cases' percentages of it meaningless."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), np.float32)
    for _ in range(3):
        np.matmul(a, b, out=out)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.matmul(a, b, out=out)
        times.append(time.perf_counter() - t0)
    return 2.0 * n**3 / min(times) / 1e9


def max_rel_error(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return max(float(np.abs(a[k] - b[k]).max() / max(np.abs(b[k]).max(), 1e-30)) for k in b)


def steps_per_timing(warm_seconds: float, min_time: float) -> int:
    """Consecutive steps in one timing: enough for it to last about `min_time` seconds, given one
    warm-up step's duration (at least 1)."""
    if not warm_seconds > 0:
        return 1
    return max(1, math.ceil(min_time / warm_seconds))


def time_alternated(
    contenders: list, repeats: int, warmup: int, min_time: float = 0.2, pause: float = 0.02
) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Every round runs each contender once, the order rotating; the first `warmup` rounds are
    not kept. After warm-up, a timing is n consecutive steps lasting about `min_time` seconds
    (n per contender, from its last warm-up step), preceded by a `pause`: the thread pools of
    the contender before (OpenMP, OpenBLAS, Eigen) spin for a while after their last call and
    would otherwise take the cores from the next one's first step. Before the pause a full
    garbage collection, so that no contender pays for the collection of objects another one
    (or the imports) left behind; each still pays for the collections its own steps trigger.
    Returns the seconds per step of each timing and each contender's n."""
    times: dict[str, list[float]] = {c.name: [] for c in contenders}
    steps = {c.name: 1 for c in contenders}
    for r in range(warmup + repeats):
        order = contenders[r % len(contenders) :] + contenders[: r % len(contenders)]
        for c in order:
            n = steps[c.name] if r >= warmup else 1
            gc.collect()
            time.sleep(pause)
            t0 = time.perf_counter()
            for _ in range(n):
                c.step()
            dt = (time.perf_counter() - t0) / n
            if r >= warmup:
                times[c.name].append(dt)
            elif r == warmup - 1:
                steps[c.name] = steps_per_timing(dt, min_time)
    return times, steps


def peak_memory(case: Case, name: str, threads: int, steps: int = 3) -> dict[str, float] | None:
    """Run the contender alone in a new process: its peak resident memory (VmHWM) above the
    resident memory right after its imports, in MiB. None if the process fails."""
    cmd = [sys.executable, "-m", "bptt.bench.memory", case.cell, case.size, name, str(threads), str(steps)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError):
        return None


def run_bench(
    cases: list[Case],
    names: list[str],
    threads: int = 1,
    repeats: int = 7,
    warmup: int = 2,
    memory: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Measure every case; returns the results as a JSON-able dict."""
    set_threads(threads)
    from .contenders import BUILDERS, case_params

    if "torch" in names:
        import torch

        torch.set_num_threads(threads)
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": _machine(),
        "threads": threads,
        "repeats": repeats,
        "warmup": warmup,
        "versions": {},
        "cases": [],
        "kernels": _kernels_line(),
        "flops": "3 * 2 * T * B * (G*H*H + H*V): recurrent and readout products, forward + 2 backward",
    }
    with _blas_limit(threads):
        roof = gemm_gflops()
        results["gemm_gflops"] = roof
        log(
            f"GEMM roofline (NumPy float32 1024^3, the fastest of 15, {threads} thread{'s' * (threads > 1)}): {roof:.1f} GFLOP/s"
        )
        for case in cases:
            x, y = case.data()
            params = case_params(case)
            contenders = []
            for n in names:
                c = BUILDERS[n](case, params, x, y)
                results["versions"][n] = c.version
                contenders.append(c)
            ref_loss, ref = contenders[0].grads()
            check = {}
            for c in contenders[1:]:
                loss, g = c.grads()
                check[c.name] = max(max_rel_error(g, ref), abs(loss - ref_loss) / abs(ref_loss))
                if not check[c.name] <= GRAD_TOL:
                    raise RuntimeError(f"{case.name}: {c.name}'s gradients differ from bptt's by {check[c.name]:.2e}")
            times, steps = time_alternated(contenders, repeats, warmup)
            row: dict[str, Any] = {
                "case": case.name,
                "cell": case.cell,
                "size": case.size,
                "flops": case.flops,
                "grad_check": check,
                "contenders": {},
            }
            for c in contenders:
                med = statistics.median(times[c.name])
                row["contenders"][c.name] = {
                    "median_s": med,
                    "tokens_per_s": case.tokens / med,
                    "gflops": case.flops / med / 1e9,
                    "times": times[c.name],
                    "steps_per_timing": steps[c.name],
                    "compile_s": c.compile_seconds,
                }
            peers = [n for n in row["contenders"] if n != "bptt"]
            if peers:
                best = max(row["contenders"][n]["tokens_per_s"] for n in peers)
                row["ratio_to_fastest_peer"] = row["contenders"]["bptt"]["tokens_per_s"] / best
            results["cases"].append(row)
            log(_row_line(row, roof))
    if memory:
        for row, case in zip(results["cases"], cases):
            for n in row["contenders"]:
                row["contenders"][n]["memory"] = peak_memory(case, n, threads)
            log(
                f"{case.name}: peak memory above import "
                + ", ".join(f"{n} {_mib(row['contenders'][n]['memory'])}" for n in row["contenders"])
            )
    return results


def _mib(m: dict | None) -> str:
    return "n/a" if not m else f"{m['above_mib']:.1f} MiB"


def _row_line(row: dict, roof: float) -> str:
    parts = [f"{n} {c['tokens_per_s']:,.0f} tok/s" for n, c in row["contenders"].items()]
    b = row["contenders"]["bptt"]
    ratio = f", bptt / fastest peer {row['ratio_to_fastest_peer']:.2f}x" if "ratio_to_fastest_peer" in row else ""
    return (
        f"{row['case']}: "
        + ", ".join(parts)
        + ratio
        + f"; bptt {b['gflops']:.1f} GFLOP/s = {100 * b['gflops'] / roof:.0f}% of GEMM"
    )


def markdown(results: dict[str, Any]) -> str:
    """The results as a markdown table, with the machine, versions, threads and date."""
    names = list(results["cases"][0]["contenders"]) if results["cases"] else ["bptt"]
    v = ", ".join(f"{n} {results['versions'].get(n, '?')}" for n in names)
    lines = [
        f"{results['machine']}; {results['threads']} thread(s) for all; {v}; NumPy {np.__version__}; "
        f"{results.get('kernels', 'kernels unknown')}; {results['date']}.",
        f"Median of {results['repeats']} alternated repeats after {results['warmup']} warm-up rounds, each timing "
        "about 0.2 s of consecutive steps after a 20 ms pause; "
        f"GEMM roofline {results['gemm_gflops']:.1f} GFLOP/s (NumPy float32 1024^3, the fastest of 15); FLOPs = {results['flops']}.",
        "",
        "| case | "
        + " | ".join(f"{n} tok/s" for n in names)
        + " | bptt / fastest peer | bptt GFLOP/s (% GEMM) | "
        + " | ".join(f"{n} MiB" for n in names)
        + " | grad check |",
        "|" + " --- |" * (2 * len(names) + 4),
    ]
    for r in results["cases"]:
        cs = r["contenders"]
        b = cs["bptt"]
        ratio = f"{r['ratio_to_fastest_peer']:.2f}x" if "ratio_to_fastest_peer" in r else "-"
        mem = " | ".join(f"{cs[n]['memory']['above_mib']:.0f}" if cs[n].get("memory") else "-" for n in names)
        check = ", ".join(f"{n} {e:.0e}" for n, e in r["grad_check"].items()) or "-"
        comp = {n: cs[n]["compile_s"] for n in names if cs[n].get("compile_s")}
        tok = " | ".join(
            f"{cs[n]['tokens_per_s']:,.0f}" + (f" (+{comp[n]:.1f} s compile)" if n in comp else "") for n in names
        )
        lines.append(
            f"| {r['case']} | {tok} | {ratio} | {b['gflops']:.1f} ({100 * b['gflops'] / results['gemm_gflops']:.0f}%) | {mem} | {check} |"
        )
    return "\n".join(lines) + "\n"


def _machine() -> str:
    from .. import machine

    return f"{machine.cpu()}, Python {platform.python_version()}; BLAS: {machine.blas()}"
