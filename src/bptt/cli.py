"""The `bptt` command line."""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Sequence
from typing import Any

from ._version import __version__
from .errors import BpttError, did_you_mean, one_of
from .train.argtypes import integer, number, output_file


class _UsageError(BpttError):
    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as bptt's one-line sentences (raised, not printed and exited)."""

    def __init__(self, *a: Any, **k: Any) -> None:
        k.setdefault("allow_abbrev", False)
        super().__init__(*a, **k)

    def error(self, message: str):  # type: ignore[override]
        raise _UsageError(self.prog, _reword(message, self))


def _options(parser: argparse.ArgumentParser) -> list[str]:
    return [o for o in parser._option_string_actions if o.startswith("--")]


def _reword(message: str, parser: argparse.ArgumentParser) -> str:
    m = re.match(r"argument (\S+?)(?:/\S+)?: invalid choice: '?(.*?)'? \(choose from (.*)\)$", message)
    if m:
        name, value = m.group(1), m.group(2)
        choices = [c.strip().strip("'") for c in m.group(3).split(",")]
        return f"{name}: expected one of {', '.join(choices)}, received {value!r}{did_you_mean(value, choices)}"
    m = re.match(r"the following arguments are required: (.*)$", message)
    if m:
        return f"{m.group(1)}: expected a value, received none (see {parser.prog} --help)"
    m = re.match(r"argument (\S+?)(?:/\S+)?: expected (one|at least one) argument", message)
    if m:
        return f"{m.group(1)}: expected a value, received none"
    m = re.match(r"argument (\S+?)(?:/\S+)?: (ignored explicit argument .*)$", message)
    if m:
        return f"{m.group(1)}: expected no value, received one ({m.group(2)})"
    m = re.match(r"argument (\S+?)(?:/\S+)?: (.*)$", message)
    if m:
        return f"{m.group(1)}: {m.group(2)}"
    return message


def _cmd_gradcheck(args: argparse.Namespace) -> int:
    from .diagnostics.sweep import CELL_KINDS, run_case, standard_cases, variant_cases

    cells = tuple(_names(args.cells)) if args.cells else CELL_KINDS
    for c in cells:
        if c not in CELL_KINDS:
            raise one_of("--cells", c, CELL_KINDS)
    mixed = {"elman", "lstm"} <= set(cells)  # (the mixed variant stacks both)
    variants = [v for v in variant_cases() if v.cell in cells or (v.cell == "mixed" and mixed)]
    cases = standard_cases(cells) + ([] if args.no_variants else variants)
    print(
        f"bptt gradcheck: {len(cases)} cases, float64, five-point central differences "
        f"(eps 1e-3), tolerance {args.tol:g} (max relative error per array)"
    )
    head = f"{'cell':<7} {'loss':<10} {'mask':<6} {'layers':>6} {'dir':<4} {'params':>6} {'max rel err':>11}  {'':4} worst array"
    print(head)
    print("-" * len(head))
    worst, failed, t0 = 0.0, 0, time.perf_counter()
    for case in cases:
        res, n = run_case(case, seed=args.seed, max_entries=args.max_entries, tol=args.tol)
        worst = max(worst, res.max_error)
        failed += not res.passed
        status = "ok" if res.passed else "FAIL"
        print(
            f"{case.cell:<7} {case.loss + '-' + case.at:<10} {'yes' if case.masked else 'no':<6} "
            f"{case.layers:>6} {'bi' if case.bidirectional else 'uni':<4} {n:>6} {res.max_error:>11.2e}  "
            f"{status:<4} {res.worst}" + (f"  [{case.variant}]" if case.variant else ""),
            flush=True,
        )
    print("-" * len(head))
    print(
        f"worst relative error {worst:.2e} over {len(cases)} cases; {failed} above {args.tol:g}; "
        f"{time.perf_counter() - t0:.1f} s"
    )
    return 1 if failed else 0


def _cmd_cues(args: argparse.Namespace) -> int:
    from .experiments.cues import VARIANTS, cue_experiment, cue_table

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for v in variants:
        if v not in VARIANTS:
            raise one_of("--variants", v, VARIANTS)
    if args.out:
        output_file("--out", args.out)
    runs = cue_experiment(variants, args.seeds, args.steps, window=args.window, log=print)
    table = cue_table(runs)
    print(table)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(table + "\n")
        print(f"table: {args.out}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    import json

    from .experiments.compare import DELAY, SEGMENT, compare, curves, plot_curves, save_curves, table
    from .files import atomic_write

    if args.json:
        output_file("--json", args.json)
    if args.curves is None:
        if args.curve_updates is not None:
            raise BpttError(
                f"--curve-updates: expected it with --curves (the learning curves' plot), received "
                f"--curve-updates {args.curve_updates} without --curves"
            )
        cell, hidden, batch = args.cell or "gru", args.hidden or 16, args.batch or 4
        length, repeats = args.length or 50, args.repeats or 3
        rows = compare(cell, hidden, batch, length, repeats=repeats, seed=args.seed)
        print(
            f"every gradient algorithm on one problem: {cell} {hidden}, batch {batch}, {length} steps, "
            f"float64, mse at every step, random weights, data and initial state (seed {args.seed}); median of {repeats} calls"
        )
        print(table(rows))
        if args.json:
            text = json.dumps([r._asdict() for r in rows], indent=1) + "\n"
            atomic_write(args.json, lambda f: f.write(text.encode()))
            print(f"json: {args.json}")
        return 0
    if not args.curves:
        raise BpttError("--curves: expected a PNG file to write, received ''")
    output_file("--curves", args.curves)
    for flag, v in (("--length", args.length), ("--repeats", args.repeats)):
        if v is not None:
            raise BpttError(
                f"{flag}: expected {flag} only without --curves (a table setting), received {flag} {v} with --curves"
            )
    cell, hidden, batch = args.cell or "elman", args.hidden or 12, args.batch or 2
    updates = args.curve_updates or 400
    print(
        f"learning curves on delayed recall (target = the input {DELAY} steps earlier): {cell} {hidden}, batch {batch}, "
        f"float64, an Adam update every {SEGMENT} steps, {updates} updates, the same weights and stream (seed {args.seed})"
    )
    t0 = time.perf_counter()
    res = curves(cell, hidden, batch, updates=updates, seed=args.seed, log=print)
    print(f"{time.perf_counter() - t0:.1f} s in all")
    plot_curves(res, args.curves)
    print(f"plot: {args.curves}")
    if args.json:
        save_curves(res, args.json)
        print(f"json: {args.json}")
    return 0


def _cmd_longterm(args: argparse.Namespace) -> int:
    from .experiments.longterm import PARTS, run_experiment

    parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
    for p in parts:
        if p not in PARTS:
            raise one_of("--parts", p, PARTS)
    if args.out:
        if not os.path.isdir(args.out):
            raise BpttError(f"--out: expected an existing folder, received {args.out!r}")
    res = run_experiment(parts, args.seeds, args.out, print)
    print(res["markdown"])
    if args.out:
        print(
            f"results: {args.out}/longterm.json, longterm.md" + (" and plots" if {"xor", "flow"} & set(parts) else "")
        )
    return 0


def _cmd_experiment(args: argparse.Namespace) -> int:
    from .experiments.influence import influence_experiment, plot_influence

    try:
        Ks = tuple(int(k) for k in args.k.split(","))
    except ValueError:
        raise BpttError(f"--k: expected comma-separated positive integers, received {args.k!r}") from None
    if args.out:
        output_file("--out", args.out)
    res = influence_experiment(args.steps, args.lr, Ks, args.c, args.seeds)
    if args.out:
        plot_influence(res, args.out)
        print(f"plot: {args.out}")
    return 0


def _cmd_warm(args: argparse.Namespace) -> int:
    from . import fast

    if fast.OFF:
        print("bptt warm: BPTT_FAST is off in this environment: nothing to compile")
        return 0
    t0 = time.perf_counter()
    have = fast.available()
    took = time.perf_counter() - t0
    if not have["kernels"]:
        print(f"bptt warm: no compiled kernels here (Numba missing or failing): the NumPy path runs ({took:.1f} s)")
        return 0
    parts = (
        ["per-step kernels"]
        + (["whole scans"] if have["scans"] else [])
        + (["split scans and the engine"] if have["split"] else [])
    )
    from .fast import jit

    kept = (
        "cached: later processes load them in about a second"
        if jit.CACHE
        else f"not cached: {jit.cache_folder()} cannot be written, so each process compiles them; "
        "set NUMBA_CACHE_DIR to a folder that can"
    )
    print(f"bptt warm: {', '.join(parts)} ready in {took:.1f} s ({kept})")
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    import numpy as np

    from . import Dense, Model, rnn
    from .algorithms.budget import measure_storage, parse_bytes
    from .algorithms.plan import plan

    budget = parse_bytes(args.budget, "--budget")
    tokens = not args.inputs
    model = Model(
        args.inputs or args.vocab, [*rnn(args.cell, args.hidden, args.layers), Dense(args.vocab)], tokens=tokens
    )
    params = model.init_params(np.random.default_rng(0), args.dtype)
    st = measure_storage(model, params, args.batch)
    T = args.length
    full = st.leaf(T)
    plans = []
    for policy in args.policy.split(","):
        t0 = time.perf_counter()
        made = plan(T, budget, st, policy.strip())
        plans.append((policy.strip(), made, time.perf_counter() - t0))
    print(
        f"bptt plan: {args.layers}x{args.cell} {args.hidden}, batch {args.batch}, {T} steps, {args.dtype}: a stored state "
        f"{st.state:,} bytes, a recorded step {st.step:,} bytes (+{st.segment:,} per segment)"
    )
    print(f"  full BPTT: {T} forward steps (1.000 per step), {full / 2**20:.2f} MiB of tapes")
    for policy, p, took in plans:
        name = policy if p.policy != "full" else f"{policy} (the budget holds full BPTT)"
        print(
            f"  {name}: {p.states} stored states, {p.forward_steps} forward steps ({p.forward_steps / T:.3f} per step), "
            f"peak {p.peak_bytes / 2**20:.2f} MiB ({p.peak_bytes / full:.1%} of full BPTT) within {budget / 2**20:.2f} MiB; "
            f"planned in {took:.3f} s"
        )
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    import json as _json

    from .bench import all_cases, markdown, run_bench
    from .bench.contenders import PEERS, available
    from .files import atomic_write

    if args.budget:
        return _bench_budget(args)
    if args.train:
        return _bench_train(args)

    cases = all_cases(tuple(_names(args.cells)), tuple(_names(args.sizes)))
    wanted = ["bptt"] + [p for p in (_names(args.peers) if args.peers else PEERS) if p != "bptt"]
    for p in wanted:
        if p not in ("bptt", *PEERS):
            raise one_of("--peers", p, PEERS)
    missing = [p for p in wanted if not available(p)]
    if missing and args.peers:
        raise BpttError(
            f'--peers: expected {", ".join(missing)} to be installed (pip install "bptt[bench]"), received none'
        )
    names = [p for p in wanted if available(p)]
    if missing:
        print(f'bench: {", ".join(missing)} not installed, measuring without (pip install "bptt[bench]")')
    if args.threads is None:
        from .train.runtime import default_threads

        args.threads = default_threads()
    for flag, path in (("--json", args.json), ("--markdown", args.markdown)):
        if path:
            output_file(flag, path)
    res = run_bench(cases, names, args.threads, args.repeats, args.warmup, not args.no_memory)
    table = markdown(res)
    print()
    print(table)
    if args.json:
        atomic_write(args.json, lambda f: f.write((_json.dumps(res, indent=1) + "\n").encode()))
    if args.markdown:
        atomic_write(args.markdown, lambda f: f.write(table.encode()))
    return 0


def _bench_train(args: argparse.Namespace) -> int:
    """`bptt bench --train`: bptt train's whole step against a plain PyTorch loop."""
    import json as _json

    from .bench.contenders import available
    from .bench.train_step import run_train
    from .files import atomic_write

    if not available("torch"):
        raise BpttError(
            '--train: expected PyTorch to compare with (pip install "bptt[bench]"), received none installed'
        )
    if args.threads is None:
        from .train.runtime import default_threads

        args.threads = default_threads()
    if args.json:
        output_file("--json", args.json)
    res = run_train(args.threads, repeats=args.repeats)
    if args.json:
        atomic_write(args.json, lambda f: f.write((_json.dumps(res, indent=1) + "\n").encode()))
    return 0


def _bench_budget(args: argparse.Namespace) -> int:
    """`bptt bench --budget`: memory-budgeted BPTT against full BPTT, segments and torch."""
    import json as _json

    from .bench import budget
    from .bench.contenders import available
    from .files import atomic_write

    hiddens = tuple(_positive_ints("--hidden", args.hidden))
    fractions = tuple(_fractions(args.fractions))
    peers = _names(args.peers) if args.peers else (["torch"] if available("torch") else [])
    for p in peers:
        if p != "torch":
            raise one_of("--peers (with --budget)", p, ("torch",))
        if not available("torch"):
            raise BpttError('--peers: expected torch to be installed (pip install "bptt[bench]"), received none')
    if not peers:
        print('bench: torch not installed, measuring without (pip install "bptt[bench]")')
    for flag, path in (("--json", args.json), ("--markdown", args.markdown), ("--plot", args.plot)):
        if path:
            output_file(flag, path)
    if args.threads is None:
        from .train.runtime import default_threads

        args.threads = default_threads()
    res = budget.run_budget(hiddens, fractions, args.threads, args.repeats, args.warmup, bool(peers))
    table = budget.markdown(res)
    print()
    print(table)
    if args.json:
        atomic_write(args.json, lambda f: f.write((_json.dumps(res, indent=1) + "\n").encode()))
    if args.markdown:
        atomic_write(args.markdown, lambda f: f.write(table.encode()))
    if args.plot:
        budget.plot(res, args.plot)
    return 0


def _positive_ints(flag: str, text: str) -> list[int]:
    out = []
    for n in _names(text):
        if not n.isdigit() or int(n) < 1:
            raise BpttError(f"{flag}: expected comma-separated positive integers, received {text!r}")
        out.append(int(n))
    if not out:
        raise BpttError(f"{flag}: expected comma-separated positive integers, received {text!r}")
    return out


def _fractions(text: str) -> list[float]:
    out = []
    for n in _names(text):
        try:
            f = float(n.rstrip("%")) / (100 if n.endswith("%") else 1)
        except ValueError:
            f = float("nan")
        if not 0 < f < 1:
            raise BpttError(
                f"--fractions: expected fractions of full BPTT's memory in (0, 1) such as 0.04 or 4%, received {n!r}"
            )
        out.append(f)
    if not out:
        raise BpttError(f"--fractions: expected fractions such as 0.04,0.025, received {text!r}")
    return out


def _names(s: str) -> list[str]:
    return [n.strip() for n in s.split(",") if n.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bptt",
        description="Backpropagation through time for recurrent networks: exact, hand-derived gradients.",
    )
    parser.add_argument("--version", action="version", version=f"bptt {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    debug = _Parser(add_help=False)
    debug.add_argument("--debug", action="store_true", help="show the traceback of an error instead of one line")

    g = sub.add_parser(
        "gradcheck",
        parents=[debug],
        help="check every cell x loss x mask x layers x direction against central differences",
        description="Check full BPTT against float64 central differences on small random problems "
        "(non-zero biases and initial states) and print the max relative error per case. "
        "Exits 1 if any case exceeds the tolerance.",
    )
    g.add_argument("--cells", help="comma-separated subset of elman,jordan,gru,lstm (default: all); the variants too")
    g.add_argument(
        "--tol", type=number(0, lo_open=True), default=1e-6, help="tolerance on the max relative error (default 1e-6)"
    )
    g.add_argument("--seed", type=integer(0), default=0, help="seed of the random problems (default 0)")
    g.add_argument(
        "--max-entries",
        type=integer(1),
        default=None,
        metavar="N",
        help="check at most N random entries per array (default: all)",
    )
    g.add_argument("--no-variants", action="store_true", help="only the standard sweep")
    g.set_defaults(func=_cmd_gradcheck)

    pl = sub.add_parser(
        "plan",
        parents=[debug],
        help="how memory-budgeted BPTT would run: stored states, forward steps, peak memory",
        description="The plan of memory-budgeted BPTT (--memory-budget in bptt train) for a model and batch: the "
        "states it stores, the forward steps it runs per step, its predicted peak bytes, beside full BPTT's. "
        "Policies: revolve (Griewank's binomial checkpointing) and mixed (after Gruslys et al. 2016; NOTICE: "
        "patents US 11,256,990 B2 and EP 3446260 B1 claim choosing what to store during BPTT from a memory "
        "allocation; judge for your jurisdiction).",
    )
    pl.add_argument("--cell", default="lstm", help="elman, jordan, gru or lstm (default lstm)")
    pl.add_argument("--hidden", type=integer(1), default=256, help="units per layer (default 256)")
    pl.add_argument("--layers", type=integer(1), default=1, help="stacked layers (default 1)")
    pl.add_argument("--batch", type=integer(1), default=32, help="sequences per batch (default 32)")
    pl.add_argument("--length", type=integer(1), default=1000, help="time steps T (default 1000)")
    pl.add_argument("--vocab", type=integer(1), default=65, help="token vocabulary = outputs (default 65)")
    pl.add_argument("--inputs", type=integer(1), default=None, help="float inputs of this width instead of tokens")
    pl.add_argument("--dtype", default="float32", choices=["float32", "float64"], help="(default float32)")
    pl.add_argument("--budget", required=True, help="bytes for stored states and tapes, e.g. 8MB, 1GiB")
    pl.add_argument("--policy", default="revolve,mixed", help="revolve, mixed, or both (default)")
    pl.set_defaults(func=_cmd_plan)

    w = sub.add_parser(
        "warm",
        parents=[debug],
        help="compile the float32 kernels now (once per install, under a minute)",
        description="Compile bptt's float32 kernels into Numba's disk cache now, instead of in the first "
        "float32 training step of the first run (under a minute, once per install).",
    )
    w.set_defaults(func=_cmd_warm)

    x = sub.add_parser("experiment", parents=[debug], help="run a named experiment comparing gradient algorithms")
    xs = x.add_subparsers(dest="experiment", metavar="NAME", required=True)
    ib = xs.add_parser(
        "influence-balancing",
        parents=[debug],
        help="Tallec & Ollivier's influence balancing: TBPTT(1, K) against ARTBP",
        description="A 23-unit linear system whose truncated gradients point the wrong way: TBPTT(1, K) "
        "for each K and ARTBP with truncation probability c (several seeds) learn theta online from "
        "theta(0) = 0.5; the optimum is -1/6. Prints each run's end point and plots theta over time.",
    )
    ib.add_argument("--steps", type=integer(1, 10**7), default=20000, help="time steps of the stream (default 20000)")
    ib.add_argument("--lr", type=number(0, lo_open=True), default=1e-4, help="SGD rate per time step (default 1e-4)")
    ib.add_argument("--k", default="1,10,20,50", help="truncation lengths K of TBPTT(1, K) (default 1,10,20,50)")
    ib.add_argument("--c", type=number(0, 1), default=1 / 32, help="ARTBP truncation probability (default 1/32)")
    ib.add_argument("--seeds", type=integer(0), default=5, help="ARTBP seeds (default 5)")
    ib.add_argument("--out", default="influence_balancing.png", help="plot file ('' for none)")
    ib.set_defaults(func=_cmd_experiment)
    cu = xs.add_parser(
        "cue-accumulation",
        parents=[debug],
        help="spiking networks on Bellec et al.'s cue accumulation: ALIF, LIF, truncated BPTT",
        description="Seven left/right cues, a delay, a recall cue: say which side had more. 100 spiking neurons "
        "(half adaptive, 'alif'; none, 'lif'), a leaky readout, cross-entropy over the recall window, firing "
        "rate regularised toward 10 Hz; 'tbptt' truncates the gradient to the last --window steps. Adam on "
        "fresh batches of 64; prints each run's held-out accuracy (1,000 sequences) and a table.",
    )
    cu.add_argument("--steps", type=integer(1), default=300, help="training steps per run (default 300)")
    cu.add_argument("--seeds", type=integer(1), default=5, help="seeds per variant (default 5)")
    cu.add_argument(
        "--variants",
        default="alif,lif,tbptt",
        help="among alif, lif, tbptt, eprop (online e-prop; default the first three)",
    )
    cu.add_argument("--window", type=integer(1), default=30, help="steps the tbptt variant backpropagates (default 30)")
    cu.add_argument("--out", default="", help="also write the table to this markdown file")
    cu.set_defaults(func=_cmd_cues)
    cp = xs.add_parser(
        "compare",
        parents=[debug],
        help="every gradient algorithm on one problem: time, memory, agreement with full BPTT",
        description="Full BPTT, TBPTT, ARTBP, memory-budgeted BPTT, RTRL and UORO on the same model, batch, "
        "parameters and initial state: median time per call, peak memory (tracemalloc), and the cosine "
        "similarity and relative error of each gradient to full BPTT's. With --curves instead: learning "
        "curves of full BPTT, TBPTT, ARTBP, RTRL, UORO (and online e-prop where it takes the model) training "
        "the same model online on one delayed-recall stream, in one PNG.",
    )
    cp.add_argument("--cell", default=None, help="elman, jordan, gru or lstm (default gru; elman with --curves)")
    cp.add_argument("--hidden", type=integer(1), default=None, help="units (default 16; 12 with --curves)")
    cp.add_argument("--batch", type=integer(1), default=None, help="sequences (default 4; 2 with --curves)")
    cp.add_argument("--length", type=integer(1, 10**5), default=None, help="time steps (default 50; not with --curves)")
    cp.add_argument(
        "--repeats", type=integer(1), default=None, help="timed calls per algorithm (default 3; not with --curves)"
    )
    cp.add_argument("--seed", type=integer(0), default=0, help="the problem's seed (default 0)")
    cp.add_argument(
        "--curves",
        metavar="PNG",
        help="instead of the table: train with each algorithm (an update every 8 steps) and plot the "
        "learning curves here",
    )
    cp.add_argument(
        "--curve-updates", type=integer(1), default=None, help="with --curves: updates per algorithm (default 400)"
    )
    cp.add_argument("--json", help="also write the results (the table's rows or the curves) here")
    cp.set_defaults(func=_cmd_compare)
    lt = xs.add_parser(
        "long-term",
        parents=[debug],
        help="the classic long-term dependency tasks: Elman, GRU, LSTM x full BPTT, TBPTT, ARTBP, clipping",
        description="The adding problem, the embedded Reber grammar, Elman's temporal XOR, copy memory and the Add "
        "task learned by Elman, GRU and LSTM networks (full BPTT, TBPTT and ARTBP, with and without clipping on "
        "the Add task), and the gradient flow by lag of the trained networks and of an Elman network in an "
        "exploding regime with and without clipping. Tables, and with --out the JSON and the plots.",
    )
    lt.add_argument("--parts", default="adding,reber,xor,copy,add-task,flow", help="comma-separated among adding, "
                    "reber, xor, copy, add-task, flow (default: all; about 35 minutes on one core)")  # fmt: skip
    lt.add_argument("--seeds", type=integer(1), default=5, help="seeds per cell (adding; twice as many for reber)")
    lt.add_argument("--out", default="", help="a folder for longterm.json, longterm.md and the plots")
    lt.set_defaults(func=_cmd_longterm)

    b = sub.add_parser(
        "bench",
        parents=[debug],
        help="time the training step of bptt against PyTorch and JAX (if installed)",
        description="One float32 training step (forward, cross-entropy at every step, full BPTT) of "
        "Elman/GRU/LSTM on token inputs, against torch (nn.RNN/GRU/LSTM + Linear, loss.backward) and JAX "
        "(lax.scan + value_and_grad, jit) on the same weights; gradients checked equal first; contenders "
        "alternated, medians; tokens/s, GFLOP/s against a GEMM roofline, peak memory per contender.",
    )
    b.add_argument("--cells", default="elman,gru,lstm", help="subset of elman,gru,lstm (default: all)")
    b.add_argument("--sizes", default="small,medium,long", help="subset of small,medium,long (default: all)")
    b.add_argument("--peers", default="", help="subset of torch,jax (default: those installed)")
    b.add_argument(
        "--threads",
        type=integer(1),
        default=None,
        help="BLAS/OpenMP/XLA threads for every contender (default: as bptt train, the usable cores, at most 2)",
    )
    b.add_argument("--repeats", type=integer(1), default=7, help="timed rounds (default 7)")
    b.add_argument("--warmup", type=integer(0), default=2, help="untimed rounds first (default 2)")
    b.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    b.add_argument(
        "--budget",
        action="store_true",
        help="instead: memory-budgeted BPTT (float32 LSTM, T=1000, B=32, tokens) for a sweep of budgets, "
        "revolve and mixed, beside full BPTT, sqrt(T) segments, torch and torch.utils.checkpoint: peak memory "
        "(each contender in a process of its own) and time relative to full BPTT",
    )
    b.add_argument(
        "--train",
        action="store_true",
        help="instead: the whole training step of bptt train (batch, forward, loss, BPTT, clipping, Adam) on its "
        "default configuration (char-LSTM 256, B=32, T=100, float32) against the same step in a plain PyTorch "
        "loop, from the same weights on the same batches; rounds of 50 steps alternated, --repeats timed rounds "
        "after one untimed each; median step times",
    )
    b.add_argument("--hidden", default="128,256", help="with --budget: units H (default 128,256)")
    b.add_argument(
        "--fractions",
        default=",".join(f"{f:g}" for f in (0.25, 0.1, 0.04, 0.025, 0.015)),
        help="with --budget: budgets as fractions of full BPTT's recorded bytes (default 0.25,0.1,0.04,0.025,0.015)",
    )
    b.add_argument("--plot", help="with --budget: a PNG of the memory-time curves")
    b.add_argument("--json", help="write the results here")
    b.add_argument("--markdown", help="write the table here")
    b.set_defaults(func=_cmd_bench)

    from .train import commands

    t = sub.add_parser(
        "train",
        parents=[debug],
        help="train a recurrent network on text or a time series (default: a char-LSTM on Botchan)",
        description="Train a recurrent network by BPTT. With no arguments: a character-level LSTM on "
        "the bundled novel Botchan, a few minutes on 2 cores. Writes a run folder with config.json, "
        "checkpoint.npz, best.npz, metrics.jsonl and loss.png. Ctrl-C saves and exits; --resume continues.",
    )
    commands.add_train_arguments(t)
    t.set_defaults(func=commands.cmd_train)

    s = sub.add_parser("sample", parents=[debug], help="generate text from a trained text run")
    s.add_argument("run", metavar="RUN", help="run folder")
    s.add_argument("--prime", default="", help="text to start from")
    s.add_argument(
        "--length", type=integer(0), default=500, help="tokens to generate: characters, or words (default 500)"
    )
    s.add_argument("--temperature", type=number(0, lo_open=True), default=1.0, help="softmax temperature (default 1.0)")
    s.add_argument("--top-k", type=integer(1), default=None, help="sample among the k most likely tokens only")
    s.add_argument("--seed", type=integer(0), default=None, help="seed of the sampling")
    s.add_argument("--checkpoint", choices=["best", "last"], default="best", help="which parameters (default best)")
    s.set_defaults(func=commands.cmd_sample)

    f = sub.add_parser("forecast", parents=[debug], help="iterated multi-step forecast of a trained series run")
    f.add_argument("run", metavar="RUN", help="run folder")
    f.add_argument("--data", help="the values that follow the history (the truth); NMSE is printed against them")
    f.add_argument("--history", help="the series to start from (default: the run's training data file)")
    f.add_argument(
        "--horizon",
        type=integer(1, 10**6),
        default=None,
        help="steps to forecast (default: the length of --data, or 100)",
    )
    f.add_argument("--column", default=None, help="column of the files (default: the run's)")
    f.add_argument("--out", help="plot file (default: RUN/forecast.png)")
    f.add_argument("--checkpoint", choices=["best", "last"], default="best")
    f.set_defaults(func=commands.cmd_forecast)

    e = sub.add_parser("evaluate", parents=[debug], help="loss of a trained run on new data")
    e.add_argument("run", metavar="RUN", help="run folder")
    e.add_argument("--data", required=True, help="text or series file")
    e.add_argument("--column", default=None, help="series: column (default: the run's)")
    e.add_argument(
        "--warmup", type=integer(0), default=None, help="series: steps excluded from the score at the start (default 0)"
    )
    e.add_argument("--checkpoint", choices=["best", "last"], default="best")
    e.set_defaults(func=commands.cmd_evaluate)

    d = sub.add_parser(
        "diagnose", parents=[debug], help="gradient flow of a run: error signals and Jacobian norms by lag, clip rates"
    )
    d.add_argument("run", metavar="RUN", help="run folder")
    d.add_argument("--data", action="store_true", help="write RUN/diagnose.json only (no RUN/flow.png)")
    d.add_argument("--checkpoint", choices=["best", "last"], default="last", help="which parameters (default last)")
    d.set_defaults(func=commands.cmd_diagnose)

    from .train import export

    ex = sub.add_parser(
        "export",
        parents=[debug],
        help="a run's weights as a PyTorch state_dict file (safetensors or npz) with its architecture in JSON",
        description="Write a run's parameters under the names of torch.nn.RNN/GRU/LSTM(...).state_dict() "
        "(prefix 'rnn.'), the readout nn.Linear ('linear.') and, with --embed, nn.Embedding ('embedding.'); a text "
        "run without --embed reads one-hot token vectors (rnn.weight_ih_l0 takes the vocabulary). FILE.json beside "
        "it (and the safetensors metadata) describes the architecture, dtype, vocabulary or normaliser.",
    )
    ex.add_argument("run", metavar="RUN", help="run folder")
    ex.add_argument(
        "--format",
        choices=list(export.FORMATS),
        default=None,
        help="safetensors (pip install 'bptt[safetensors]') or npz (default: safetensors if installed, else npz)",
    )
    ex.add_argument("--out", metavar="FILE", help="the file, .safetensors or .npz (default: RUN/model.<format>)")
    ex.add_argument("--checkpoint", choices=["best", "last"], default="best", help="which parameters (default best)")
    ex.set_defaults(func=export.cmd_export)

    im = sub.add_parser(
        "import",
        parents=[debug],
        help="a run folder from a PyTorch state_dict (safetensors or npz; never a pickled .pt)",
        description="Make a run folder (config.json, checkpoint.npz at step 0) from the weights of a torch "
        "nn.RNN/GRU/LSTM ('rnn.'), nn.Linear ('linear.') and optionally nn.Embedding ('embedding.') saved with "
        "safetensors or numpy.savez, e.g. by bptt export; ready for sample, forecast, evaluate, diagnose and "
        "train --resume. The architecture comes from FILE.json or the file's metadata when present, else from "
        "the tensors' names and shapes; flags override it. A pickle (.pt) is never loaded.",
    )
    im.add_argument("file", metavar="FILE", help="a .safetensors or .npz file of torch-named tensors")
    im.add_argument("--out", metavar="DIR", required=True, help="the new run folder")
    im.add_argument("--cell", default=None, help="elman (torch's RNN), gru or lstm (default: from the file)")
    im.add_argument("--hidden", type=integer(1), default=None, help="units per layer (default: from the file)")
    im.add_argument("--layers", type=integer(1), default=None, help="stacked layers (default: from the file)")
    im.add_argument("--task", choices=["text", "series"], default=None, help="(default: from the file)")
    im.add_argument(
        "--data",
        default=None,
        help="the text or series the model was trained on: the run's data (train --resume, forecast); text: its "
        "characters are the vocabulary where the file carries none; series: the normaliser is fitted on it as bptt "
        "train does where neither the file nor --mean/--std give one",
    )
    im.add_argument("--column", default=None, help="series: column of --data")
    im.add_argument(
        "--diff",
        default=None,
        help="series: the differencing the model was trained with (auto, 0, 1, 2), where the file's description does "
        "not give it (default: auto, chosen on --data as bptt train chooses it)",
    )
    im.add_argument(
        "--seasonal-diff",
        type=integer(0),
        default=None,
        help="series: its seasonal difference's period, where the description does not give it (default 0)",
    )
    im.add_argument("--mean", type=number(), default=None, help="series: the normaliser's mean")
    im.add_argument("--std", type=number(0, lo_open=True), default=None, help="series: the normaliser's std")
    im.add_argument(
        "--names",
        default=None,
        help="the file's prefixes, e.g. rnn=lstm,linear=fc for a module with self.lstm and self.fc "
        "(default: rnn, linear, embedding)",
    )
    im.set_defaults(func=export.cmd_import)
    return parser


def _unknown(parser: argparse.ArgumentParser, args: argparse.Namespace, extra: list[str]) -> _UsageError:
    sub = parser
    for action in parser._subparsers._group_actions if parser._subparsers else []:
        sub = action.choices.get(getattr(args, "command", None), parser)
        name = getattr(args, "experiment", None)
        if sub is not parser and name and sub._subparsers:
            sub = sub._subparsers._group_actions[0].choices.get(name, sub)
    tok = extra[0]
    hint = did_you_mean(tok.split("=")[0], _options(sub)) if tok.startswith("-") else ""
    return _UsageError(
        sub.prog,
        f"expected the arguments of {sub.prog} (see {sub.prog} --help), received "
        f"{'unknown option' if tok.startswith('-') else 'an extra argument'} {tok!r}{hint}",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: a user mistake is one line on stderr and exit status 2 (with --debug or
    BPTT_DEBUG=1, the traceback instead); a file system failure one line and status 1."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("BPTT_DEBUG", "") not in ("", "0")
    parser = build_parser()
    prog = "bptt"
    try:
        args, extra = parser.parse_known_args(argv)
        prog = f"bptt {args.command}" if getattr(args, "command", None) else prog
        if extra:
            raise _unknown(parser, args, extra)
        if not getattr(args, "func", None):
            parser.print_help()
            return 0
        return args.func(args)
    except BpttError as e:
        if debug:
            raise
        where = e.prog if isinstance(e, _UsageError) else prog
        print(f"{where}: {_one_line(str(e))}", file=sys.stderr)
        return 2
    except OSError as e:
        if debug:
            raise
        what = f"{e.strerror or e}" + (f": {e.filename!r}" if e.filename else "")
        print(
            f"{prog}: expected to read and write its files, received an error from the system ({what})", file=sys.stderr
        )
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


def _one_line(s: str) -> str:
    return " ".join(s.split())


if __name__ == "__main__":
    sys.exit(main())
