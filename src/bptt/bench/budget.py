"""Memory-budgeted BPTT measured (`bptt bench --budget`): peak memory and time of one training
step of a float32 LSTM (T = 1000, B = 32, tokens, V = 65) for a sweep of budgets, under the
revolve and the mixed policy, beside full BPTT, Chen et al.'s segments of sqrt(T) steps, and
PyTorch's full backward and torch.utils.checkpoint over segments of sqrt(T) steps.

Each contender lives in a process of its own (a worker), which builds the model, checks its
gradient against full BPTT's, runs a step to load what it needs, and then, with its high-water
mark reset (/proc/self/clear_refs), runs the steps the parent asks for, one at a time: the
parent alternates the workers, step by step, with the order rotating every round, so drift hits
all alike, and keeps the medians. Peak memory is the worker's high-water mark (VmHWM) over those
steps above its resident memory before them (after its imports, model, weights and batch);
full BPTT's is the reference for the memory fractions. A budget is a fraction of full BPTT's
recorded bytes (bptt plan's figure), so "4%" is a budget of 0.04 of them.
"""

from __future__ import annotations

import gc
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .cases import Case
from .harness import _blas_limit, _kernels_line, _machine, max_rel_error, set_threads
from .memory import _status

T, B, V = 1000, 32, 65
FRACTIONS = (0.25, 0.1, 0.04, 0.025, 0.015)
GRAD_TOL = 1e-4  # float32, relative to each array's largest entry


@dataclass(frozen=True)
class LongCase(Case):
    """The LSTM of this benchmark at H units."""

    hidden: int = 256

    @property
    def dims(self) -> tuple[int, int, int, int]:
        return V, self.hidden, B, T


def contenders(fractions: tuple[float, ...], torch: bool) -> list[str]:
    names = ["full", "forward", "one step", "segments"]
    names += [f"{policy} {f:.1%}" for f in fractions for policy in ("revolve", "mixed")]
    return names + (["torch", "torch checkpoint"] if torch else [])


def _build(
    name: str, case: LongCase, threads: int, length: int = T
) -> tuple[Callable[[], Any], Callable[[], tuple], dict]:
    """(step, grads, facts) of a contender (on the first `length` steps)."""
    from ..algorithms.budget import Budget, execute, measure_storage
    from ..algorithms.full import full_bptt
    from ..algorithms.plan import segments_plan
    from .contenders import case_model, case_params, make_torch, make_torch_checkpoint

    x, y = (a[:length] for a in case.data())
    params = case_params(case)
    k = max(1, round(math.sqrt(length)))
    if name.startswith("torch"):
        import torch

        torch.set_num_threads(threads)
        c = make_torch(case, params, x, y) if name == "torch" else make_torch_checkpoint(case, params, x, y, k)
        return c.step, c.grads, {"version": torch.__version__}
    from .. import ops

    model = case_model(case)
    storage = measure_storage(model, params, B)
    full = storage.leaf(length)
    facts: dict[str, Any] = {"full_bytes": full, "weights_mib": _weights_bytes(params) / 2**20}
    if name == "full":
        run = lambda: full_bptt(model, params, x, y)  # noqa: E731
        facts["forward_steps"] = length
    elif name == "one step":  # one step's working memory: full BPTT over the first time step
        run = lambda: full_bptt(model, params, x[:1], y[:1])  # noqa: E731
    elif name == "forward":  # the forward pass alone, for its final state: what a recomputation costs

        def run():
            state, _ = model.initial_state(params, B)
            with ops.step_context(model, params, None):
                model.forward_levels(params, x, None, state, keep=False, state_only=True)

    else:
        if name == "segments":
            p = segments_plan(length, k, storage)
            rows = None
        else:  # as the algorithm runs it (Budget: its plan, and its runs of rows side by side)
            policy, pct = name.split()
            facts["budget_bytes"] = max(int(float(pct.rstrip("%")) / 100 * full), storage.leaf(1) + storage.state)
            algo = Budget(facts["budget_bytes"], policy)
            p = algo.plan_for(model, params, length, B)
        b = model.check_batch(params, x, y, None, None)
        if name != "segments":
            with ops.step_context(model, params, None):
                p, rows = algo.by_rows(model, params, b, p)
            facts["row_runs"] = len(rows or [(0, B)])

        def run():
            with ops.step_context(model, params, None):
                g, stats = execute(model, params, b, p, rows=rows)
            assert stats["forward_steps"] == p.forward_steps
            return g

        facts.update(planned_peak_bytes=p.peak_bytes, forward_steps=p.forward_steps, states=p.states)

    def grads():
        g = run()
        return g.loss, g.grads

    return run, grads, facts


def _warm(name: str, threads: int) -> None:
    """Load what a contender's first step would (compiled kernels, torch's thread pool, bptt's
    engine threads with their stacks and heaps, which a unit of the smallest case would not
    start) on a small problem, so that the measured steps' peak is the contender's own memory."""
    _build(name, LongCase("lstm", "long", 32), threads, length=40)[0]()


def _trim() -> None:
    """Hand the heap's free memory back to the system (glibc), so that the resident memory
    measured next holds no leftovers of earlier steps."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the baseline may hold some freed memory
        pass


def _traced_peak(step: Callable[[], Any]) -> int:
    """The most bytes of Python objects and NumPy arrays that one step holds at once beyond
    those held before it (algorithms.budget's traced probes: tracemalloc, the buffer pool
    emptied first so that the step allocates all it uses): what the step itself needs,
    whatever the heap has kept from earlier work (torch's own allocations are not seen)."""
    from ..algorithms.budget import _traced

    gc.collect()
    with _traced() as peak:
        step()
    return peak()


def _weights_bytes(params: dict) -> int:
    """Bytes of the arrays a step holds the size of the weights, whatever the budget: the
    gradients, the recurrent weights packed for the split scans (forward and backward) and the
    token table (W_ih^T + bias, W_ih's size)."""
    packed = 2 * sum(v.nbytes for k, v in params.items() if k.endswith("W_hh"))
    table = sum(v.nbytes for k, v in params.items() if k.endswith("W_ih"))
    return sum(v.nbytes for v in params.values()) + packed + table


def worker(spec: dict) -> int:
    """One contender: reads 'step', 'peak', 'check' or 'quit' lines, answers each with a JSON
    line (the gradient check comes last: full BPTT's tapes would count in the peak)."""
    threads = spec["threads"]
    set_threads(threads)
    case = LongCase("lstm", "long", spec["hidden"])
    with _blas_limit(threads):
        step, grads, facts = _build(spec["name"], case, threads)
        _warm(spec["name"], threads)
        from .. import ops

        ops.release()
        _trim()
        base = _status("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # the high-water mark starts again from here
        facts["baseline_mib"] = base
        print(json.dumps(facts), flush=True)
        for line in sys.stdin:
            cmd = line.strip()
            if cmd == "step":
                gc.collect()
                t0 = time.perf_counter()
                step()
                print(json.dumps({"s": time.perf_counter() - t0}), flush=True)
            elif cmd == "peak":
                print(json.dumps({"above_mib": _status("VmHWM") - base}), flush=True)
            elif cmd == "traced":  # one step's own arrays at their peak, the buffer pool emptied first
                print(json.dumps({"traced_mib": _traced_peak(step) / 2**20}), flush=True)
            elif cmd == "check":
                from ..algorithms.full import full_bptt
                from .contenders import case_model, case_params

                x, y = case.data()
                ref = full_bptt(case_model(case), case_params(case), x, y)
                loss, g = grads()
                err = max(max_rel_error(g, ref.grads), abs(loss - ref.loss) / abs(ref.loss))
                print(json.dumps({"grad_error": err}), flush=True)
            else:
                break
    return 0


class _Worker:
    def __init__(self, name: str, hidden: int, threads: int) -> None:
        self.name = name
        spec = json.dumps({"name": name, "hidden": hidden, "threads": threads})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bptt.bench.budget", spec],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.facts: dict = {}

    def ask(self, cmd: str | None = None) -> dict:
        if cmd is not None:
            assert self.proc.stdin is not None
            self.proc.stdin.write(cmd + "\n")
            self.proc.stdin.flush()
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"budget benchmark: the worker of {self.name!r} ended (exit {self.proc.wait()})")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.communicate("quit\n", timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def run_budget(
    hiddens: tuple[int, ...] = (128, 256),
    fractions: tuple[float, ...] = FRACTIONS,
    threads: int = 2,
    repeats: int = 5,
    warmup: int = 1,
    torch: bool = True,
    pause: float = 0.05,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Measure every contender at every H; the results as a JSON-able dict."""
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": _machine(),
        "blas": os.environ.get("OPENBLAS_CORETYPE", "native") + " OpenBLAS kernels",
        "threads": threads,
        "repeats": repeats,
        "warmup": warmup,
        "kernels": _kernels_line(),
        "T": T,
        "B": B,
        "V": V,
        "rows": [],
    }
    names = contenders(fractions, torch)
    for H in hiddens:
        workers = []
        try:
            for n in names:
                w = _Worker(n, H, threads)
                workers.append(w)
                w.facts = w.ask()
            times: dict[str, list[float]] = {w.name: [] for w in workers}
            for r in range(warmup + repeats):
                for w in workers[r % len(workers) :] + workers[: r % len(workers)]:
                    time.sleep(pause)  # the thread pools of the worker before spin down
                    s = w.ask("step")["s"]
                    if r >= warmup:
                        times[w.name].append(s)
            peaks = {w.name: w.ask("peak")["above_mib"] for w in workers}
            traced = {w.name: w.ask("traced")["traced_mib"] for w in workers if not w.name.startswith("torch")}
            for w in workers:
                if w.name in ("forward", "one step"):
                    continue
                w.facts["grad_error"] = w.ask("check")["grad_error"]
                if not w.facts["grad_error"] <= GRAD_TOL:
                    raise RuntimeError(
                        f"H={H} {w.name}: gradients differ from full BPTT's by {w.facts['grad_error']:.2e}"
                    )
        finally:
            for w in workers:
                w.close()
        t_full, m_full = statistics.median(times["full"]), peaks["full"]
        for w in workers:
            med = statistics.median(times[w.name])
            row = {
                "hidden": H,
                "contender": w.name,
                "median_s": med,
                "times": times[w.name],
                "time_ratio": med / t_full,
                "peak_mib": peaks[w.name],
                "memory_ratio": peaks[w.name] / m_full,
                **({"traced_mib": traced[w.name]} if w.name in traced else {}),
                **w.facts,
            }
            results["rows"].append(row)
            log(_line(row))
    return results


def _line(row: dict) -> str:
    budget = f", budget {row['budget_bytes'] / 2**20:.2f} MiB" if "budget_bytes" in row else ""
    planned = f", planned {row['planned_peak_bytes'] / 2**20:.2f} MiB" if "planned_peak_bytes" in row else ""
    steps = f", {row['forward_steps'] / T:.2f} forward steps per step" if "forward_steps" in row else ""
    return (
        f"H={row['hidden']} {row['contender']}: {row['median_s'] * 1e3:.0f} ms ({row['time_ratio']:.2f}x full), "
        f"peak {row['peak_mib']:.1f} MiB ({row['memory_ratio']:.1%} of full){budget}{planned}{steps}"
    )


def markdown(results: dict[str, Any]) -> str:
    lines = [
        f"Memory-budgeted BPTT: float32 LSTM, T = {results['T']}, B = {results['B']}, tokens (V = {results['V']}); "
        f"{results['machine']}; {results['threads']} threads, {results['blas']}; {results['kernels']}; "
        f"medians of {results['repeats']} alternated steps; {results['date']}.",
        "",
        "| H | contender | time | x full | floor | peak memory (MiB) | % of full | budget (MiB) "
        "| peak - budget - one step (MiB) | traced peak (MiB) | traced - budget - one step (MiB) "
        "| forward steps / T |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    one = {r["hidden"]: r["peak_mib"] for r in results["rows"] if r["contender"] == "one step"}
    one_traced = {r["hidden"]: r["traced_mib"] for r in results["rows"] if r["contender"] == "one step"}
    fwd = {r["hidden"]: r["time_ratio"] for r in results["rows"] if r["contender"] == "forward"}
    for r in results["rows"]:
        H = r["hidden"]
        budget = f"{r['budget_bytes'] / 2**20:.2f}" if "budget_bytes" in r else ""
        over = f"{r['peak_mib'] - r['budget_bytes'] / 2**20 - one[H]:.2f}" if "budget_bytes" in r and H in one else ""
        traced = f"{r['traced_mib']:.1f}" if "traced_mib" in r else ""
        traced_over = (
            f"{r['traced_mib'] - r['budget_bytes'] / 2**20 - one_traced[H]:.2f}"
            if "budget_bytes" in r and "traced_mib" in r and H in one_traced
            else ""
        )
        steps = f"{r['forward_steps'] / results['T']:.2f}" if "forward_steps" in r else ""
        floor = (
            f"{1 + (r['forward_steps'] / results['T'] - 1) * fwd[H]:.2f}" if "forward_steps" in r and H in fwd else ""
        )
        lines.append(
            f"| {H} | {r['contender']} | {r['median_s'] * 1e3:.0f} ms | {r['time_ratio']:.2f} | {floor} | "
            f"{r['peak_mib']:.1f} | {r['memory_ratio']:.1%} | {budget} | {over} | {traced} | {traced_over} | {steps} |"
        )
    weights = {r["hidden"]: r["weights_mib"] for r in results["rows"] if "weights_mib" in r}
    lines += [
        "",
        "forward: the forward pass alone over the T steps, for its final state (what recomputing them costs); "
        "floor: 1 + (forward steps / T - 1) x forward's time, the least a plan that runs those forward steps can "
        "cost, whatever its overheads. one step: full BPTT over one time step, whose peak is one step's working "
        "memory (the gradients, the packed weights, the token table, one step's tape); "
        "peak - budget - one step <= 0 is a peak within the budget and one step's working memory.",
        "",
        "Peak memory: the worker's VmHWM over the timed steps above its resident memory before them "
        "(imports, weights, batch loaded); what the steps reuse of the free memory the heap kept from the work "
        "before them (building the plan, measuring the storage) is not seen, and the allocator's and the "
        "libraries' own (free blocks between live ones, other threads' heaps, BLAS's scratch) is. Traced peak: "
        "the most bytes of Python objects and NumPy arrays one more step holds at once beyond those held before "
        "it (tracemalloc, the buffer pool emptied first; torch's own allocations are not traced): the step's "
        "own memory, whatever the heap holds. A budget counts what grows with T (stored states, recorded tapes, "
        "their working arrays); not counted are arrays the size of the weights that every step holds whatever "
        "the budget: the gradients, the packed recurrent weights and the token table ("
        + ", ".join(f"H={h}: {m:.1f} MiB" for h, m in sorted(weights.items()))
        + ").",
    ]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: str) -> None:
    """Memory against time relative to full BPTT, a panel per H: the two policies' curves over
    the budgets, and the single points of the others."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hiddens = sorted({r["hidden"] for r in results["rows"]})
    fig, axes = plt.subplots(1, len(hiddens), figsize=(5.5 * len(hiddens), 4.2), squeeze=False)
    for ax, H in zip(axes[0], hiddens):
        rows = [r for r in results["rows"] if r["hidden"] == H]
        for policy, style in (("revolve", "o-"), ("mixed", "s-")):
            pts = sorted((r["memory_ratio"], r["time_ratio"]) for r in rows if r["contender"].startswith(policy))
            if pts:
                ax.plot([100 * m for m, _ in pts], [t for _, t in pts], style, label=f"bptt {policy}")
        for r in rows:
            if r["contender"].split()[0] in ("full", "segments", "torch"):
                ax.plot(100 * r["memory_ratio"], r["time_ratio"], "^", label=r["contender"])
        ax.set_xscale("log")
        ax.set_xlabel("peak memory, % of bptt full BPTT")
        ax.set_ylabel("time per step, x bptt full BPTT")
        ax.set_title(f"LSTM H={H}, T={results['T']}, B={results['B']}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(worker(json.loads(sys.argv[1])))
