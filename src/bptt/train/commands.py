"""`bptt train | sample | forecast | evaluate`: what each command does, given parsed arguments."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import numpy as np

from ..data import series as ser
from ..data import text as txt
from ..data.baselines import Baselines, scores, verdict
from ..errors import BpttError
from ..generate import forecast, sample_text
from ..plots import plot_series
from . import ensemble, report
from .argtypes import integer, number, output_file
from .checkpoint import atomic_write
from .config import HELP, TrainConfig, load_toml
from .report import text_line
from .runs import load_members, load_run
from .tasks import text_loss, text_metrics
from .tb import DEFAULT as TENSORBOARD_DEFAULT


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE.toml", help="read these keys from a TOML file; flags override it")
    p.add_argument("--resume", metavar="RUN", help="continue the run in this folder (flags override its config)")
    p.add_argument(
        "--seeds",
        type=integer(1),
        default=None,
        metavar="N",
        help="train N runs of these settings, seeds SEED .. SEED+N-1, one after another into OUT/seed-<s>; print "
        "each one's figure, their spread and the ensemble's (their predictions averaged), which bptt evaluate and "
        "bptt forecast give for the folder (default: one run)",
    )
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        if f.name == "extra":
            continue
        flag = "--" + f.name.replace("_", "-")
        d = getattr(defaults, f.name)
        shown = repr(d) if isinstance(d, str) else d
        if isinstance(d, bool):
            p.add_argument(
                flag,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=f"{HELP.get(f.name, '')} (default: {d})",
            )
        else:
            parse = integer() if isinstance(d, int) else number() if isinstance(d, float) else str
            # the one option whose value may be left out: --tensorboard alone is RUN/tensorboard
            optional = {"nargs": "?", "const": TENSORBOARD_DEFAULT} if f.name == "tensorboard" else {}
            p.add_argument(
                flag,
                dest=f.name,
                type=parse,
                default=argparse.SUPPRESS,
                metavar="DIR" if optional else type(d).__name__.upper(),
                help=f"{HELP.get(f.name, '')} (default: {shown})",
                **optional,
            )


def cmd_train(args: argparse.Namespace) -> int:
    from . import dist
    from .api import fit  # the Python entry point: the command is its settings and what it prints after
    from .trainer import _new_run_dir

    given = {k: v for k, v in vars(args).items() if k in TrainConfig.keys()}
    for flag, v in (("--resume", args.resume), ("--out", given.get("out"))):
        if v == "":  # (not a folder: read as no flag, it started a new run or wrote to runs/<time>)
            raise BpttError(f"{flag}: expected a run folder, received ''")
    if args.resume and args.config:
        raise BpttError("--config: expected no config file with --resume (the run's own config is used), received one")
    if args.seeds is not None or (args.resume and ensemble.read(args.resume) is not None):
        return _train_ensemble(args, given)
    if args.resume:
        res = fit(resume=args.resume, **given)
    else:
        cfg = _new_config(args, given)
        cfg.out = cfg.out or _new_run_dir(cfg)  # the command's run folder: runs/<timestamp> unless --out
        res = fit(cfg)
    if not dist.world().root:  # under MPI: rank 0 prints the summary and writes the sample
        return {"diverged": 1, "interrupted": 130}.get(res.stopped, 0)
    cfg, task = res.cfg, res.task
    ev = res.best or res.last_eval
    print(
        f"trained {res.step} steps in {res.train_seconds:.1f} s ({res.tokens_per_s:,.0f} tokens/s); {res.extra['threads']}"
    )
    if ev:
        if task.kind == "text":
            print(f"best validation: {text_line(ev, cfg.tokens)} (step {ev.get('step', res.step)})")
        elif task.kind == "spikes":
            print(
                f"best validation: {ev['loss']:.4f} nats, accuracy {ev['accuracy']:.1%} (step {ev.get('step', res.step)})"
            )
        elif task.kind == "longterm":
            print(f"best validation: {report.longterm_figures(ev)} (step {ev.get('step', res.step)})")
        else:
            print(
                f"best validation one-step NMSE: {ev['nmse']:.4f}{report.per_target(ev, 'nmse')} (step {ev.get('step', res.step)})"
            )
            said = _validation_verdict(task, ev)
            if said:
                print(said)
    if res.stopped == "diverged":
        print(f"run folder: {res.run_dir} (the last good checkpoint: step {res.extra['saved_at']})")
        return 1
    if res.stopped == "interrupted":
        return 130
    run = load_run(res.run_dir)
    if task.kind == "text" and cfg.sample_length:
        text = sample_text(
            run.model,
            run.params,
            run.vocab,
            length=cfg.sample_length,
            temperature=0.8,
            rng=np.random.default_rng(cfg.seed),
        )
        atomic_write(os.path.join(res.run_dir, "sample.txt"), lambda f: f.write(text.encode()))
        print("sample (temperature 0.8):\n" + "-" * 60 + "\n" + text + "\n" + "-" * 60)
    elif task.kind == "series" and task.n_val and task.multi:  # the first target column
        a, e = task.n_train, task.n_train + task.n_val
        pred = task.one_step_predictions(run.model, run.params)[a - 1 : e - 1, 0]
        truth = task.values[:, task.targets[0]]
        plot_series(
            os.path.join(res.run_dir, "prediction.png"),
            truth[a:e],
            pred,
            f"{task.table.target_names[0]}: one-step predictions on the validation split, "
            f"NMSE {ser.nmse(pred, truth[a:e]):.4f}",
            truth[: task.n_train],
        )
    elif task.kind == "series" and task.n_val:
        a, e = task.n_train, task.n_train + task.n_val
        pred = task.one_step_predictions(run.model, run.params)[a - 1 : e - 1]
        plot_series(
            os.path.join(res.run_dir, "prediction.png"),
            task.values[a:e],
            pred,
            f"one-step predictions on the validation split, NMSE {ser.nmse(pred, task.values[a:e]):.4f}",
            task.values[: task.n_train],
        )
    print(f"run folder: {res.run_dir}")
    return 0


def _new_config(args: argparse.Namespace, given: dict) -> TrainConfig:
    """A new run's settings: the --config file's, the flags over them, validated."""
    base = load_toml(args.config) if args.config else {}
    if base:
        TrainConfig.from_dict(base, f"--config {args.config!r}")  # its own keys and types, named as its own
    return TrainConfig.from_dict({**base, **given}, "flags").validate(set(base) | set(given))


def _validation_verdict(task, ev: dict) -> str | None:
    """'validation <the network against the baselines>' for a series run with a validation part
    (several target columns: a line for each, the baselines fitted on its own training part),
    else None."""
    if task.kind != "series" or not task.n_val:
        return None
    a, e = task.n_train, task.n_train + task.n_val
    if not task.multi:
        columns = [("", task.values, ev["nmse"])]
    else:
        names = task.table.target_names
        columns = [(f" of {n}:", task.values[:, j], ev[f"nmse.{n}"]) for n, j in zip(names, task.targets)]
    lines = []
    for name, v, net in columns:
        base = _baselines(v[:a])
        if base is not None and a >= base.first():
            lines.append(f"validation{name} {verdict(net, scores(base.one_step(v[:e], a), v[a:e]))}")
    return "\n".join(lines) or None


def _train_ensemble(args: argparse.Namespace, given: dict) -> int:
    """bptt train --seeds N (or --resume of an ensemble folder): the members one after another,
    then each one's figure, their spread and the ensemble's."""
    from .trainer import _new_run_dir

    if args.resume:
        out = ensemble.train(None, args.seeds, given, resume=args.resume)
    else:
        cfg = _new_config(args, given)
        cfg.out = cfg.out or _new_run_dir(cfg)
        out = ensemble.train(cfg, args.seeds, {})
    for line in ensemble.report(out["summary"], out["seeds"], out["kind"], getattr(out["task"], "unit", "char")):
        print(line)
    validation = (out["summary"].get("ensemble") or {}).get("validation")
    said = _validation_verdict(out["task"], validation) if validation and "nmse" in validation else None
    for line in said.splitlines() if said else []:
        print(f"the ensemble, {line}")
    print(f"ensemble folder: {out['folder']} (members {', '.join(ensemble.member_name(s) for s in out['seeds'])})")
    return {"diverged": 1, "interrupted": 130}.get(out["stopped"], 0)


def cmd_sample(args: argparse.Namespace) -> int:
    run = load_run(args.run, args.checkpoint)
    if run.cfg.task != "text":
        raise BpttError(
            f"RUN: expected a run of --task text, received a {run.cfg.task} run {args.run!r} "
            f"(bptt forecast continues a series)"
        )
    text = sample_text(
        run.model,
        run.params,
        run.vocab,
        args.prime or "",
        args.length,
        args.temperature,
        args.top_k,
        np.random.default_rng(args.seed),
    )
    prime = args.prime or ""
    gap = " " if run.cfg.tokens == "word" and prime and not prime[-1].isspace() and not text.startswith("\n") else ""
    sys.stdout.write(prime + gap + text + "\n")
    return 0


def _series_of(run, path: str, column) -> np.ndarray:
    col = column if column is not None else (run.cfg.column or None)
    values, _ = ser.read_series(path, col, run.cfg.missing)
    return values


def _training_part(run) -> np.ndarray | None:
    """The run's training values (its data file, less the validation and test parts): (N,) for
    one column, (N, K) of its K target columns for several; None where the file is not there."""
    if not run.cfg.data or not os.path.isfile(run.cfg.data):
        return None
    try:
        if run.normalizer.columns is not None:
            table, _ = _table_of(run, run.cfg.data, None)
            values = table.values[:, list(table.targets)]
        else:
            values = _series_of(run, run.cfg.data, None)
    except BpttError:  # the file no longer holds the run's columns: no baselines to fit
        return None
    return values[: txt.split_sizes(len(values), run.cfg.val_fraction, run.cfg.test_fraction)[0]]


def _baselines(train: np.ndarray | None) -> Baselines | None:
    if train is None:
        return None
    try:
        return Baselines.fit(train)
    except BpttError:  # too short a training part for them: nothing to say
        return None


def _against_baselines(base: Baselines | None, series: np.ndarray, start: int, pred: np.ndarray) -> str:
    """' The network ...; baselines on the same points: ...' for the one-step predictions `pred`
    of series[start:], on the points every baseline can predict."""
    if base is None:
        return "baselines: not computed (the run's data file, for their training part, is not there as it was)"
    s = max(start, base.first())
    if s >= len(series):
        return "baselines: not computed (too few points after their history)"
    truth = series[s:]
    net = ser.nmse(pred[s - start :], truth)
    where = f" (points {s}-{len(series) - 1}, after the baselines' history)" if s > start else ""
    return f"network NMSE {net:.4f}{where}; {verdict(net, scores(base.one_step(series, s), truth))}"


def _table_of(run, path: str, column) -> tuple[ser.Table, ser.Normalizer]:
    """The columns of a run of several columns in `path` (--column: other input columns, as
    many), and the run's normaliser, checked to fit them."""
    from .tasks import series_columns

    inputs, targets = series_columns(run.cfg)
    if column is not None:
        inputs = ser.parse_columns(column, "--column")
        if len(inputs) != run.model.input_size:
            raise BpttError(
                f"--column: expected {run.model.input_size} input columns (as the run's "
                f"{', '.join(run.meta.get('series_columns', {}).get('inputs', [])) or run.cfg.column}), "
                f"received {column!r}"
            )
    table = ser.read_table(path, inputs, targets, run.cfg.missing)
    known = run.meta.get("series_columns")
    if column is not None and isinstance(known, dict):  # (normalised by position: a run's column stays in its place)
        own = ser.used_columns(known)
        moved = next((n for i, n in enumerate(table.names) if n in own and own.index(n) != i), None)
        if moved is not None:
            raise BpttError(
                f"--column: expected the run's columns in its order ({', '.join(own)}: each normalised by its "
                f"own mean and spread), received {column!r}, which puts {moved!r} at position "
                f"{table.names.index(moved)} instead of {own.index(moved)}"
            )
    norm = run.normalizer
    if norm.columns != len(table.names) or len(table.targets) != run.model.output_size:
        raise BpttError(
            f"RUN: expected a normaliser of the {len(table.names)} columns {', '.join(table.names)} and "
            f"{len(table.targets)} outputs, received {norm.columns or 1} column(s) and {run.model.output_size} "
            f"outputs in {run.folder!r}"
        )
    if norm.window and any(t >= table.n_inputs for t in table.targets):
        raise BpttError(
            f"RUN: expected every target among the inputs of a run normalised per window, received the targets "
            f"{', '.join(table.target_names)} and the inputs {', '.join(table.input_names)} in {run.folder!r}"
        )
    return table, norm


def _forecast_columns(runs, args, hist_path: str, out: str) -> int:
    """bptt forecast for a run (or ensemble) of several columns: target columns that are inputs
    are fed back; the other inputs come from --data, the rows that follow the history (their
    future values are not predicted), so that such a forecast reaches at most the end of --data."""
    from ..generate import forecast_columns

    run = runs[0]
    hist, norm = _table_of(run, hist_path, args.column)
    truth = _table_of(run, args.data, args.column)[0] if args.data else None
    n_in, tgt = hist.n_inputs, list(hist.targets)
    feedback = [tgt.index(i) if i in tgt else -1 for i in range(n_in)]
    given = [hist.names[i] for i in range(n_in) if feedback[i] < 0]
    if given and truth is None:
        raise BpttError(
            f"--data: expected the rows that follow the history: the input columns that are not targets "
            f"({', '.join(given)}) have no predictions to feed back, so a forecast takes their values from --data, "
            "received none"
        )
    horizon = args.horizon or (len(truth.values) if truth is not None else 100)
    if given and truth is not None and horizon > len(truth.values):
        raise BpttError(
            f"--horizon: expected at most {len(truth.values)} steps (the rows of --data {args.data!r} that give "
            f"{', '.join(given)}), received {horizon}"
        )
    diff = run.difference
    p = diff.order
    if p and len(hist.values) < p + 2:
        raise BpttError(
            f"--history: expected at least {p + 2} rows (the run models {diff.describe(hist.names)}), received "
            f"{len(hist.values)}"
        )
    if truth is None:
        future = None
    elif p:  # the differences of the rows after the history, from the history's last rows on
        both = np.concatenate([hist.values, truth.values])
        future = norm(diff(both)[len(hist.values) - p :])[:, :n_in]
    else:
        future = norm(truth.values)[:, :n_in]
    start = norm(diff(hist.values) if p else hist.values)[:, :n_in]
    if norm.window:  # each step from the last window of rows, normalised by its own means and spreads
        if len(start) < norm.window:
            raise BpttError(
                f"--history: expected at least {p + norm.window} rows (the run predicts from windows of "
                f"{norm.window}{', after ' + diff.describe(hist.names) if p else ''}), received {len(hist.values)}"
            )
        paths = [
            norm.forecast_columns(
                lambda x, r=r: r.model.forward(r.params, x)[0], start, horizon, r.cfg.dtype, tgt, future
            )
            for r in runs
        ]
        pred = np.mean(paths, axis=0)
    else:
        z = np.mean([forecast_columns(r.model, r.params, start, horizon, feedback, future) for r in runs], axis=0)
        pred = norm.take(tgt).inverse(z.astype(np.float64))
    if p:  # each target column's differences added back up from its history
        pred = diff.take(tgt).integrate(pred, hist.values[:, tgt])
    names = hist.target_names
    fed = f"; {', '.join(given)} from --data" if given else ""
    if truth is not None:
        n = min(horizon, len(truth.values))
        true = truth.values[:n][:, tgt]
        m = ser.column_metrics(pred[:n], true, names)
        print(
            f"iterated {n}-step forecast from {len(hist.values)} rows of {hist_path}{_of(runs)}: NMSE {m['nmse']:.4f}"
            f"{report.per_target(m, 'nmse')}, MSE {m['mse']:.4g}{fed}"
        )
        train = _training_part(run)
        for j, (name, c) in enumerate(zip(names, tgt)):  # each target against its own baselines' forecasts
            base = _baselines(None if train is None else train[:, j])
            if base is not None and len(hist.values) >= base.first():
                paths = base.iterated(hist.values[:, c], n)
                said = verdict(m[f"nmse.{name}"], scores(paths, true[:, j]))
                print(f"{name}, iterated from the same history: {said}")
        plot_series(
            out,
            true[:, 0],
            pred[:n, 0],
            f"{names[0]}: iterated forecast, NMSE {m[f'nmse.{names[0]}']:.4f}",
            hist.values[:, tgt[0]],
        )
    else:
        print("# " + " ".join(names))
        for row in pred:
            print(" ".join(f"{v:.6g}" for v in row))
        plot_series(
            out, pred[:, 0], pred[:, 0], f"{names[0]}: iterated forecast (no truth given)", hist.values[:, tgt[0]]
        )
    print(f"plot: {out}")
    return 0


def _of(runs: list) -> str:
    """' by the mean of M members' for an ensemble, else ''."""
    return f" by the mean of {len(runs)} members" if len(runs) > 1 else ""


def _members_line(runs: list, scores_: list[float], what: str) -> None:
    """For an ensemble: each member's figure and their spread, on one line."""
    if len(runs) > 1:
        each = ", ".join(f"{os.path.basename(r.folder)} {v:.4f}" for r, v in zip(runs, scores_))
        print(f"members' {what}: {each}; {ensemble.spread(scores_)}")


def cmd_forecast(args: argparse.Namespace) -> int:
    runs = load_members(args.run, args.checkpoint)
    run = runs[0]
    if run.cfg.task != "series":
        raise BpttError(f"RUN: expected a run of --task series, received a {run.cfg.task} run")
    hist_path = args.history or run.cfg.data
    if not args.history and not os.path.isfile(hist_path):
        raise BpttError(
            f"--history: expected the series to start from (the run's data file {run.cfg.data!r} is not there), received none"
        )
    out = output_file("--out", args.out or os.path.join(run.folder, "forecast.png"))
    if run.normalizer.columns is not None:  # several columns
        return _forecast_columns(runs, args, hist_path, out)
    history = _series_of(run, hist_path, args.column)
    truth = _series_of(run, args.data, args.column) if args.data else None
    horizon = args.horizon or (len(truth) if truth is not None else 100)
    norm, diff = run.normalizer, run.difference
    if diff and len(history) < diff.order + 2:
        raise BpttError(
            f"--history: expected at least {diff.order + 2} values (the run models {diff.describe()}), "
            f"received {len(history)}"
        )
    if norm.window and len(history) < diff.order + norm.window:
        raise BpttError(
            f"--history: expected at least {diff.order + norm.window} values (the run predicts from windows of "
            f"{norm.window}{', after ' + diff.describe() if diff else ''}), received {len(history)}"
        )
    z = norm(diff(history) if diff else history)
    paths = []
    for r in runs:  # each member iterated on its own outputs
        if norm.window:  # each step from the last window, its own predictions included
            p = norm.forecast(lambda x, r=r: r.model.forward(r.params, x)[0], z, horizon, r.cfg.dtype)
        else:
            p = norm.inverse(forecast(r.model, r.params, z, horizon).astype(np.float64))
        paths.append(diff.integrate(p, history) if diff else p)  # differences added back up from the history
    pred = np.mean(paths, axis=0)
    if truth is not None:
        n = min(horizon, len(truth))
        score = ser.nmse(pred[:n], truth[:n])
        print(
            f"iterated {n}-step forecast from {len(history)} values of {hist_path}{_of(runs)}: NMSE {score:.4f} "
            f"(MSE {np.mean((pred[:n] - truth[:n]) ** 2):.4g}, variance of the truth {np.var(truth[:n]):.4g})"
        )
        _members_line(runs, [ser.nmse(p[:n], truth[:n]) for p in paths], "NMSE")
        base = _baselines(_training_part(run))
        if base is not None and len(history) >= base.first():
            paths = base.iterated(history, n)
            print(f"iterated from the same history: {verdict(score, scores(paths, truth[:n]))}")
        plot_series(out, truth[:n], pred[:n], f"iterated forecast, NMSE {score:.4f}", history)
    else:
        print(" ".join(f"{v:.6g}" for v in pred))
        plot_series(out, pred, pred, "iterated forecast (no truth given)", history)
    print(f"plot: {out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    runs = load_members(args.run, args.checkpoint)
    run = runs[0]
    if run.cfg.task == "text":
        for flag, v in (("--column", args.column), ("--warmup", args.warmup)):
            if v is not None:
                raise BpttError(f"{flag}: expected only for a series run, received {v!r} for the text run {args.run!r}")
        ids, unknown = run.vocab.encode(txt.read_text(args.data))
        unit = run.cfg.tokens
        if len(ids) < 2:
            raise BpttError(f"--data: expected at least 2 known {txt.UNITS[unit]}, received {len(ids)}")
        streams = txt.batchify(ids, max(1, min(run.cfg.batch_size, len(ids) // (2 * run.cfg.seq_len))))
        # an ensemble's: its mixture's, the mean of the members' probabilities
        loss, each, n = text_loss([(r.model, r.params) for r in runs], streams, run.cfg.seq_len)
        m = text_metrics(loss, unit)
        mean = " (the mean of the members' probabilities)" if len(runs) > 1 else ""
        unknowns = f"{unknown} unknown characters skipped" if unit == "char" else f"{unknown:,} unknown words as <unk>"
        print(f"{args.data}: {n:,} predictions{mean}, {text_line(m, unit)}; {unknowns}")
        if len(runs) > 1:
            _members_line(runs, each, f"nats/{unit}")
        return 0
    if run.normalizer.columns is not None:
        return _evaluate_columns(runs, args)
    values = _series_of(run, args.data, args.column)
    warmup = _warmup(run, len(values), args.warmup or 0, "values", args.data)
    p, window = run.difference.order, run.normalizer.window
    preds = [pr[p + warmup :] for pr in _one_step(runs, values)]  # (the first p start the differences)
    pred = np.mean(preds, axis=0)
    truth = values[1 + p :][warmup:]
    print(
        f"{args.data}: one-step-ahead predictions of {len(truth)} value{'s' * (len(truth) != 1)}{_of(runs)} (after a warm-up of "
        f"{warmup}{_seeded(p, 'value')}{f', each from the window of {window} values before it' if window else ''}): "
        f"NMSE {ser.nmse(pred, truth):.4f}, MSE {np.mean((pred - truth) ** 2):.4g}"
    )
    _members_line(runs, [ser.nmse(pr, truth) for pr in preds], "NMSE")
    print(_against_baselines(_baselines(_training_part(run)), values, 1 + p + warmup, pred))
    return 0


def _evaluate_columns(runs, args: argparse.Namespace) -> int:
    """bptt evaluate for a run (or ensemble) of several columns: NMSE and MSE per target column
    and their means."""
    run = runs[0]
    table, _ = _table_of(run, args.data, args.column)
    warmup = _warmup(run, len(table.values), args.warmup or 0, "rows", args.data, table.names)
    p, window = run.difference.order, run.normalizer.window
    tgt = list(table.targets)
    preds = [pr[p + warmup :] for pr in _one_step(runs, table.values, tgt, table.n_inputs)]
    pred = np.mean(preds, axis=0)
    truth = table.values[1 + p :][:, tgt][warmup:]
    m = ser.column_metrics(pred, truth, table.target_names)
    note = f"; {table.note()}" if table.note() else ""
    print(
        f"{args.data}: one-step-ahead predictions of {len(truth)} row{'s' * (len(truth) != 1)}{_of(runs)} (after a warm-up of {warmup}"
        f"{_seeded(p, 'row')}{f', each from the window of {window} rows before it' if window else ''}) from "
        f"{', '.join(table.input_names)}: NMSE {m['nmse']:.4f}{report.per_target(m, 'nmse')}, MSE {m['mse']:.4g}"
        f"{report.per_target(m, 'mse')}{note}"
    )
    _members_line(runs, [ser.column_metrics(pr, truth, table.target_names)["nmse"] for pr in preds], "NMSE")
    train = _training_part(run)
    for j, (name, c) in enumerate(zip(table.target_names, tgt)):  # each target against its own baselines
        base = _baselines(None if train is None else train[:, j])
        print(f"{name}: {_against_baselines(base, table.values[:, c], 1 + p + warmup, pred[:, j])}")
    return 0


def _warmup(run, n: int, warmup: int, unit: str, data: str, names=None) -> int:
    """The warm-up of an evaluation of the n values (rows) of `data`: the one asked, at least the
    run's window - 1 where it normalises per window; one line where the data is too short."""
    if warmup > n - 2:
        raise BpttError(
            f"--warmup: expected fewer than {n - 1} steps (the {n - 1} predictions of {data!r}), received {warmup}"
        )
    norm, diff = run.normalizer, run.difference
    p = diff.order  # values before the first predicted difference
    if p and n < p + 2 + warmup:
        raise BpttError(
            f"--data: expected at least {p + 2 + warmup} {unit} (the run models {diff.describe(names)}, which takes "
            f"the first {p}; warm-up {warmup}), received {n}"
        )
    if norm.window:  # each prediction from the window before it: none for the first window - 1
        need = p + 2 + max(warmup, norm.window - 1)
        if n < need:
            raise BpttError(
                f"--data: expected at least {need} {unit} (the run normalises each window of "
                f"{norm.window}{', after ' + diff.describe(names) if p else ''}; warm-up {warmup}), received {n}"
            )
        warmup = max(warmup, norm.window - 1)
    return warmup


def _seeded(p: int, unit: str) -> str:
    return f" and the {p} {unit}{'s' * (p > 1)} the differences start from" if p else ""


def _one_step(runs, values: np.ndarray, targets=None, n_in: int = 0) -> list[np.ndarray]:
    """Each member's one-step predictions of values[1:] (ser.one_step_values)."""
    run = runs[0]
    return [
        ser.one_step_values(
            lambda x, r=r: r.model.forward(r.params, x)[0],
            values,
            run.normalizer,
            run.difference,
            run.cfg.dtype,
            targets,
            n_in,
        )
        for r in runs
    ]


def cmd_diagnose(args: argparse.Namespace) -> int:
    """bptt diagnose RUN [--data]: the flow rows the run recorded (--diagnose-every), the flow of
    its checkpoint's weights on the task's diagnostic batch, gradient norms and clip rates ->
    RUN/diagnose.json and (unless --data) RUN/flow.png (bptt.train.diagnose)."""
    from ..plots import read_metrics
    from . import diagnose
    from .tasks import make_task

    run = load_run(args.run, args.checkpoint)
    task = make_task(run.cfg, run.meta)
    rows = read_metrics(os.path.join(args.run, "metrics.jsonl"))
    now = diagnose.flow_row(run.model, run.params, task, None)
    data = diagnose.summary(rows, now, run.cfg.clip)
    out = os.path.join(args.run, "diagnose.json")
    diagnose.write_json(out, data)
    formed = [(i, v) for i, v in enumerate(now["lag"]) if i > 0 and v is not None]  # (None: not formed, or overflowed)
    (l1, v1), (ln, vn) = (formed[0], formed[-1]) if formed else ((0, 0.0), (0, 0.0))
    print(
        f"{args.run} ({run.which}): loss {now['loss']:.4f} on the diagnostic batch; |dS(T)/dS(T-l)| "
        + (f"{v1:.3g} at lag {l1}, {vn:.3g} at lag {ln}" if formed else "not formed")
        + f"; error signal {now['error'][-1]:.3g} at the last step, {now['error'][0]:.3g} at the first; "
        + f"{len(data['recorded'])} flow rows recorded"
    )
    rates = data["clip_rates"]
    if rates:
        listed = ", ".join(f"{r['clip_rate']:.0%}" for r in rates)
        print(f"clip rate per evaluation: {listed} (clip {run.cfg.clip:g})")
    print(f"data: {out}")
    if not args.data:
        png = os.path.join(args.run, "flow.png")
        diagnose.plot_flow(data, png, f"{run.cfg.cell} on {task.source}")
        print(f"plot: {png}")
    return 0
