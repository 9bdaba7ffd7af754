"""What a run says while it trains: the header, one metrics row per update, the progress bar,
evaluations, and how it stopped."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from .. import optim
from .config import TrainConfig


def describe_algorithm(cfg: TrainConfig) -> str:
    if cfg.algorithm == "tbptt":
        how = f"TBPTT(k1={cfg.k1}, k2={cfg.k2})" + (
            f", each window within {cfg.memory_budget} ({cfg.memory_policy})" if cfg.memory_budget else ""
        )
    elif cfg.algorithm in ("random", "artbp"):
        how = f"{cfg.algorithm} truncation, c = {cfg.truncation_prob:g}"
    elif cfg.algorithm in ("rtrl", "uoro"):
        how = f"{cfg.algorithm.upper()} (sensitivities carried forward)"
    elif cfg.algorithm == "eprop":
        how = f"e-prop ({cfg.eprop_signal} signal" + (
            f", {cfg.eprop_feedback} feedback)" if cfg.eprop_signal == "online" else ")"
        )
    elif cfg.memory_budget:
        how = f"full BPTT per batch within {cfg.memory_budget} ({cfg.memory_policy})"
    else:
        how = "full BPTT per batch"
    return how + ("; batch update per pass" if cfg.update == "batch" else "; online update per batch")


def header(
    log: Callable[[str], None],
    cfg: TrainConfig,
    task: Any,
    n_params: int,
    total: int,
    threads: str,
    run_dir: str,
    resumed_at: int | None,
) -> None:
    from .._version import __version__

    log(f"bptt {__version__} | {task.describe()}")
    log(
        f"model: {cfg.cell} {cfg.layers}x{cfg.hidden}{regularisers(cfg)}, {n_params:,} parameters, {cfg.dtype}; "
        f"{cfg.optimizer} lr {cfg.lr:g} ({cfg.schedule}), clip {cfg.clip or 'off'}; batch {cfg.batch_size} x "
        f"{getattr(task, 'T', cfg.seq_len)} ({task.mode}); {total} steps; {describe_algorithm(cfg)}; {threads}"
    )
    log(f"run folder: {run_dir}" + (f" (resumed at step {resumed_at})" if resumed_at is not None else ""))


def regularisers(cfg: TrainConfig) -> str:
    """' (embedding 256 tied to the readout; dropout 0.25 between layers, ...)' or ''."""
    parts = []
    if cfg.task == "text" and cfg.embed:
        parts.append(f"embedding {cfg.embed}" + (" tied to the readout" if cfg.tie else ""))
    drops = [
        f"{what} {p:g}"
        for what, p in (
            ("input dropout", cfg.input_dropout),
            ("dropout after each layer", cfg.dropout),
            ("recurrent dropout", cfg.recurrent_dropout),
            ("zoneout of h", cfg.zoneout),
            ("zoneout of c", cfg.zoneout_cell),
        )
        if p
    ]
    parts += drops
    return f" ({'; '.join(parts)})" if parts else ""


def learning_rate(cfg: TrainConfig, schedule: Any, state: Any) -> float:
    """The rate of the last update: the schedule's at the optimizer's step count, times the
    plateau factor (rprop and quickprop set their own steps: their initial rate is shown)."""
    counts = optim.find_states(state, optim.ScaleByLRState)
    if not counts or cfg.optimizer in ("rprop", "quickprop"):
        return cfg.lr
    plateau = optim.find_states(state, optim.PlateauState)
    rate = schedule(max(counts[0].count - 1, 0)) if callable(schedule) else schedule
    return rate * (plateau[0].scale if plateau else 1.0)


def longterm_figures(ev: dict) -> str:
    """A long-term task's evaluation in words: its loss beside the no-memory baseline, and its
    own figures (tasks.LongTermTask.evaluate)."""
    words = f"loss {ev['loss']:.4f}" + (f" (no memory: {ev['baseline']:.4f})" if "baseline" in ev else "")
    if "mse" in ev:
        words += f", mean square error {ev['mse']:.4f} (predicting 1: 0.1667)"
    if "accuracy" in ev:
        words += f", accuracy {ev['accuracy']:.1%}"
    if "loss_determined" in ev:
        words += f", determined steps {ev['loss_determined']:.4f} nats, the others {ev['loss_other']:.4f}"
    return words


def text_line(m: dict[str, float], unit: str = "char") -> str:
    """'1.5000 nats/char = 2.164 bits/char, perplexity 4.48', or '5.1000 nats/word, perplexity 164.02'."""
    if unit == "word":
        return f"{m['loss']:.4f} nats/word, perplexity {m['ppl']:.2f}"
    return f"{m['loss']:.4f} nats/char = {m['bpc']:.3f} bits/char, perplexity {m['ppl']:.2f}"


class Metrics:
    """metrics.jsonl (one JSON object a line) and, with --tensorboard, the run's event file
    (tb.Board): every row goes to both, so the two hold the same numbers."""

    def __init__(self, file: Any, board: Any = None) -> None:
        self.file, self.board = file, board

    def row(self, row: dict) -> None:
        self.file.write(json.dumps(row) + "\n")
        if self.board is not None:
            self.board.row(row)

    def flush(self) -> None:
        self.file.flush()
        if self.board is not None:
            self.board.flush()


class Report:
    def __init__(
        self,
        log: Callable[[str], None],
        cfg: TrainConfig,
        task: Any,
        total: int,
        start: int,
        tokens_per_update: int,
        quiet: bool = False,
    ) -> None:
        """tokens_per_update: those of the whole (global) batch, so that tokens/s under MPI is
        the sum over the ranks; quiet: no progress bar (a rank other than 0)."""
        from .trainer import schedule_for

        self.log, self.cfg, self.kind = log, cfg, task.kind
        self.schedule = schedule_for(cfg, total)
        self.tokens_per_update = tokens_per_update
        self.bar = _progress(cfg.progress and not quiet, start, total)
        self.ema: float | None = None
        self.last_eval: dict[str, float] | None = None
        self.tokens = 0
        self.n_params = 0

    def step(self, metrics, s: Any, loss: float, dt: float, t_train: float, skipped: str | None, optimizer) -> None:
        """One metrics row (and the progress bar) for the update just done."""
        self.n_params = self.n_params or sum(v.size for v in s.params.values())
        self.tokens += self.tokens_per_update
        row = {
            "step": s.step,
            "split": "train",
            "loss": loss if math.isfinite(loss) else None,
            "lr": learning_rate(self.cfg, self.schedule, s.opt_state),
            "time": round(t_train, 3),
            "tokens_per_s": round(self.tokens_per_update / dt, 1),
        }
        clip = optim.find_states(s.opt_state, optim.ClipState)
        if clip and not skipped:
            row["grad_norm"] = clip[0].norm
        if skipped:
            row["skipped"] = skipped
        metrics.row(row)
        if math.isfinite(loss):
            self.ema = loss if self.ema is None else 0.95 * self.ema + 0.05 * loss
        if self.bar is not None:
            self.bar.update(1)
            post = {
                "loss": f"{self.ema:.4f}" if self.ema is not None else "nan",
                "tok/s": f"{self.tokens_per_update / dt:,.0f}",
            }
            if self.last_eval:
                post["val"] = f"{self.last_eval['loss']:.4f}"
            self.bar.set_postfix(post, refresh=False)

    def evaluation(self, step: int, ev: dict) -> None:
        write = self.log if self.bar is None else self.bar.write
        train = f"train {self.ema:.4f}, " if self.ema is not None else ""
        if self.kind == "text":
            write(f"step {step}: {train}validation {text_line(ev, self.cfg.tokens)}")
        elif self.kind == "spikes":
            rates = ", ".join(f"{k.split('.', 1)[1]} {v:.1f} Hz" for k, v in ev.items() if k.startswith("rate_hz."))
            write(
                f"step {step}: {train}validation {ev['loss']:.4f} nats, accuracy {ev['accuracy']:.1%}"
                + (f"; firing rate {rates}" if rates else "")
            )
        elif self.kind == "longterm":
            write(f"step {step}: {train}validation {longterm_figures(ev)}")
        else:
            write(f"step {step}: {train}validation one-step NMSE {ev['nmse']:.4f} (MSE {ev['mse']:.4g})")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def stopped(
        self, how: str, s: Any, guard: Any, skipped: str | None, saved_at: int, checkpoint: str, run_dir: str
    ) -> None:
        step = s.step
        if how == "diverged":
            best = s.trackers.get("best")
            n = guard.in_a_row
            self.log(
                f"training diverged: the last {n} updates (steps {step - n + 1}-{step}) were skipped "
                f"(the last one: {skipped}); the last good checkpoint is {checkpoint} (step {saved_at})"
                + (f", the best is best.npz (step {best['step']}, validation {best['loss']:.4g})" if best else "")
                + f". Try a lower --lr or --clip: bptt train --resume {run_dir} --lr {self.cfg.lr / 10:g}"
            )
        elif how == "interrupted":
            saved = (
                "saved"
                if saved_at == step
                else (f"not saved (its last update was skipped); the checkpoint holds step {saved_at}")
            )
            self.log(f"interrupted at step {step}; {saved}. Continue with: bptt train --resume {run_dir}")
        elif how != "done":
            self.log(f"stopped at step {step}: {how}")


def _progress(enabled: bool, start: int, total: int):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=start, unit="step", dynamic_ncols=True, leave=True, disable=None)


def per_target(ev: dict, key: str) -> str:
    """' (mean of K targets: load 0.0123, temp 0.0456)' for several target columns, else ''."""
    per = [(k.split(".", 1)[1], v) for k, v in ev.items() if k.startswith(key + ".")]
    if not per:
        return ""
    if len(per) == 1:
        return f" ({per[0][0]})"
    fmt = ".4f" if key == "nmse" else ".4g"
    return f" (mean of {len(per)} targets: " + ", ".join(f"{n} {v:{fmt}}" for n, v in per) + ")"
