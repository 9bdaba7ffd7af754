"""The `bptt` command line."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence

from . import __version__


def _cmd_gradcheck(args: argparse.Namespace) -> int:
    from .diagnostics.sweep import CELL_KINDS, run_case, standard_cases, variant_cases

    cells = tuple(c.strip() for c in args.cells.split(",")) if args.cells else CELL_KINDS
    unknown = sorted(set(cells) - set(CELL_KINDS))
    if unknown:
        print(f"bptt gradcheck: --cells: expected names among {', '.join(CELL_KINDS)}, received {', '.join(unknown)}",
              file=sys.stderr)
        return 2
    cases = standard_cases(cells) + ([] if args.no_variants else variant_cases())
    print(f"bptt gradcheck: {len(cases)} cases, float64, five-point central differences "
          f"(eps 1e-3), tolerance {args.tol:g} (max relative error per array)")
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
    print(f"worst relative error {worst:.2e} over {len(cases)} cases; {failed} above {args.tol:g}; "
          f"{time.perf_counter() - t0:.1f} s")
    return 1 if failed else 0


def _cmd_experiment(args: argparse.Namespace) -> int:
    from .experiments.influence import influence_experiment, plot_influence

    try:
        Ks = tuple(int(k) for k in args.k.split(","))
    except ValueError:
        raise ValueError(f"--k: expected comma-separated positive integers, received {args.k!r}") from None
    res = influence_experiment(args.steps, args.lr, Ks, args.c, args.seeds)
    if args.out:
        plot_influence(res, args.out)
        print(f"plot: {args.out}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    import json as _json

    from .bench import all_cases, markdown, run_bench
    from .bench.contenders import PEERS, available
    from .train.checkpoint import atomic_write

    cases = all_cases(tuple(_names(args.cells)), tuple(_names(args.sizes)))
    wanted = ["bptt"] + [p for p in (_names(args.peers) if args.peers else PEERS) if p != "bptt"]
    unknown = sorted(set(wanted) - {"bptt", *PEERS})
    if unknown:
        raise ValueError(f"--peers: expected names among {list(PEERS)}, received {unknown}")
    missing = [p for p in wanted if not available(p)]
    if missing and args.peers:
        raise ValueError(f"--peers: expected {', '.join(missing)} to be installed (pip install \"bptt[bench]\"), received none")
    names = [p for p in wanted if available(p)]
    if missing:
        print(f"bench: {', '.join(missing)} not installed, measuring without (pip install \"bptt[bench]\")")
    if args.threads is None:
        from .train.trainer import default_threads

        args.threads = default_threads()
    if args.repeats < 1 or args.warmup < 0 or args.threads < 1:
        raise ValueError(f"expected --repeats >= 1, --warmup >= 0, --threads >= 1, received "
                         f"{args.repeats}, {args.warmup}, {args.threads}")
    res = run_bench(cases, names, args.threads, args.repeats, args.warmup, not args.no_memory)
    table = markdown(res)
    print()
    print(table)
    if args.json:
        atomic_write(args.json, lambda f: f.write((_json.dumps(res, indent=1) + "\n").encode()))
    if args.markdown:
        atomic_write(args.markdown, lambda f: f.write(table.encode()))
    return 0


def _names(s: str) -> list[str]:
    return [n.strip() for n in s.split(",") if n.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bptt",
        description="Backpropagation through time for recurrent networks: exact, hand-derived gradients.",
    )
    parser.add_argument("--version", action="version", version=f"bptt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    g = sub.add_parser(
        "gradcheck",
        help="check every cell x loss x mask x layers x direction against central differences",
        description="Check full BPTT against float64 central differences on small random problems "
        "(non-zero biases and initial states) and print the max relative error per case. "
        "Exits 1 if any case exceeds the tolerance.",
    )
    g.add_argument("--cells", help="comma-separated subset of elman,jordan,gru,lstm (default: all)")
    g.add_argument("--tol", type=float, default=1e-6, help="tolerance on the max relative error (default 1e-6)")
    g.add_argument("--seed", type=int, default=0, help="seed of the random problems (default 0)")
    g.add_argument("--max-entries", type=int, default=None, metavar="N",
                   help="check at most N random entries per array (default: all)")
    g.add_argument("--no-variants", action="store_true", help="only the standard sweep")
    g.set_defaults(func=_cmd_gradcheck)

    x = sub.add_parser("experiment", help="run a named experiment comparing gradient algorithms")
    xs = x.add_subparsers(dest="experiment", metavar="NAME", required=True)
    ib = xs.add_parser(
        "influence-balancing",
        help="Tallec & Ollivier's influence balancing: TBPTT(1, K) against ARTBP",
        description="A 23-unit linear system whose truncated gradients point the wrong way: TBPTT(1, K) "
        "for each K and ARTBP with truncation probability c (several seeds) learn theta online from "
        "theta(0) = 0.5; the optimum is -1/6. Prints each run's end point and plots theta over time.",
    )
    ib.add_argument("--steps", type=int, default=20000, help="time steps of the stream (default 20000)")
    ib.add_argument("--lr", type=float, default=1e-4, help="SGD rate per time step (default 1e-4)")
    ib.add_argument("--k", default="1,10,20,50", help="truncation lengths K of TBPTT(1, K) (default 1,10,20,50)")
    ib.add_argument("--c", type=float, default=1 / 32, help="ARTBP truncation probability (default 1/32)")
    ib.add_argument("--seeds", type=int, default=5, help="ARTBP seeds (default 5)")
    ib.add_argument("--out", default="influence_balancing.png", help="plot file ('' for none)")
    ib.set_defaults(func=_cmd_experiment)

    b = sub.add_parser(
        "bench",
        help="time the training step of bptt against PyTorch and JAX (if installed)",
        description="One float32 training step (forward, cross-entropy at every step, full BPTT) of "
        "Elman/GRU/LSTM on token inputs, against torch (nn.RNN/GRU/LSTM + Linear, loss.backward) and JAX "
        "(lax.scan + value_and_grad, jit) on the same weights; gradients checked equal first; contenders "
        "alternated, medians; tokens/s, GFLOP/s against a GEMM roofline, peak memory per contender.",
    )
    b.add_argument("--cells", default="elman,gru,lstm", help="subset of elman,gru,lstm (default: all)")
    b.add_argument("--sizes", default="small,medium,long", help="subset of small,medium,long (default: all)")
    b.add_argument("--peers", default="", help="subset of torch,jax (default: those installed)")
    b.add_argument("--threads", type=int, default=None,
                   help="BLAS/OpenMP/XLA threads for every contender (default: as bptt train, the usable cores, at most 2)")
    b.add_argument("--repeats", type=int, default=7, help="timed rounds (default 7)")
    b.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default 2)")
    b.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    b.add_argument("--json", help="write the results here")
    b.add_argument("--markdown", help="write the table here")
    b.set_defaults(func=_cmd_bench)

    from .train import commands

    t = sub.add_parser(
        "train",
        help="train a recurrent network on text or a time series (default: a char-LSTM on Botchan)",
        description="Train a recurrent network by BPTT. With no arguments: a character-level LSTM on "
        "the bundled novel Botchan, a few minutes on 2 cores. Writes a run folder with config.json, "
        "checkpoint.npz, best.npz, metrics.jsonl and loss.png. Ctrl-C saves and exits; --resume continues.",
    )
    commands.add_train_arguments(t)
    t.set_defaults(func=commands.cmd_train)

    s = sub.add_parser("sample", help="generate text from a trained text run")
    s.add_argument("run", metavar="RUN", help="run folder")
    s.add_argument("--prime", default="", help="text to start from")
    s.add_argument("--length", type=int, default=500, help="characters to generate (default 500)")
    s.add_argument("--temperature", type=float, default=1.0, help="softmax temperature (default 1.0)")
    s.add_argument("--top-k", type=int, default=None, help="sample among the k most likely characters only")
    s.add_argument("--seed", type=int, default=None, help="seed of the sampling")
    s.add_argument("--checkpoint", choices=["best", "last"], default="best", help="which parameters (default best)")
    s.set_defaults(func=commands.cmd_sample)

    f = sub.add_parser("forecast", help="iterated multi-step forecast of a trained series run")
    f.add_argument("run", metavar="RUN", help="run folder")
    f.add_argument("--data", help="the values that follow the history (the truth); NMSE is printed against them")
    f.add_argument("--history", help="the series to start from (default: the run's training data file)")
    f.add_argument("--horizon", type=int, default=None, help="steps to forecast (default: the length of --data, or 100)")
    f.add_argument("--column", default=None, help="column of the files (default: the run's)")
    f.add_argument("--out", help="plot file (default: RUN/forecast.png)")
    f.add_argument("--checkpoint", choices=["best", "last"], default="best")
    f.set_defaults(func=commands.cmd_forecast)

    e = sub.add_parser("evaluate", help="loss of a trained run on new data")
    e.add_argument("run", metavar="RUN", help="run folder")
    e.add_argument("--data", required=True, help="text or series file")
    e.add_argument("--column", default=None, help="series: column (default: the run's)")
    e.add_argument("--warmup", type=int, default=0, help="series: steps excluded from the score at the start")
    e.add_argument("--checkpoint", choices=["best", "last"], default="best")
    e.set_defaults(func=commands.cmd_evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except ValueError as e:  # a user mistake: say what was expected and received, no traceback
        print(f"bptt {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
