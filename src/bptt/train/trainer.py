"""The training loop a user runs, top to bottom (`Trainer._run`):

    batch -> gradient (--algorithm, from bptt.algorithms' registry) -> guarded optimizer update
          -> [evaluate, checkpoint]

Its collaborators: the task (tasks.py: data, batches, evaluation), the run folder (folder.py:
files, lock, metrics), the divergence guard (`Guard`), the report (report.py: log lines,
progress bar), the optimizer (bptt.optim, whose reduce_on_plateau is fed each validation loss).

With --update batch, the gradient of one update is that of a whole pass over the data (all
its batches in order, the weights fixed): SNNS's BBPTT, or QPTT with Quickprop.

A run folder holds config.json, checkpoint.npz (latest), best.npz (best validation),
metrics.jsonl (one JSON object per line), loss.png and, for text, sample.txt.

Reproducibility: all randomness comes from one np.random.Generator seeded by `seed`; its state
is saved in every checkpoint together with the parameters, the optimizer state, the carried
recurrent state and the trackers, so a run stopped at step n and resumed reaches exactly the
parameters of an uninterrupted run. Ctrl-C finishes the current step, saves and exits.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import algorithms, optim
from .._version import __version__
from ..algorithms import Gradient, GradientMean
from ..cells.base import Params
from ..errors import BpttError
from ..plots import plot_losses, read_metrics
from . import checkpoint as ckpt
from . import report, tb
from .config import TrainConfig
from .diagnose import flow_row
from .folder import RunFolder
from .runtime import Interrupt, blas_threads, default_threads
from .state import Guard, TrainState, finite, restore_carried
from .tasks import make_task


@dataclass
class TrainResult:
    run_dir: str
    step: int
    params: Params
    best: dict[str, float] | None
    last_eval: dict[str, float] | None
    stopped: str  # 'done' | 'early-stop' | 'time-limit' | 'interrupted' | 'diverged'
    train_seconds: float
    tokens_per_s: float
    extra: dict[str, Any] = field(default_factory=dict)


def schedule_for(cfg: TrainConfig, total_steps: int):
    if cfg.schedule == "constant":
        return cfg.lr
    warm = min(cfg.warmup, max(total_steps - 1, 0))
    return optim.warmup_cosine(cfg.lr, warm, max(total_steps, warm + 1), min(cfg.min_lr, cfg.lr))


def _new_run_dir(cfg: TrainConfig) -> str:
    if cfg.out:
        return cfg.out
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join("runs", stamp)


class Trainer:
    def __init__(
        self,
        cfg: TrainConfig | None = None,
        resume: str | None = None,
        overrides: dict[str, Any] | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        """A new run from `cfg`, or the run in folder `resume` continued (with `overrides`
        applied to its saved config, e.g. more steps).

        Everything is checked here, before anything is written: the config, the data, the run
        folder (a new run's must not hold one already; a resumed run's checkpoint must load and
        fit the model), and the folder's lock is taken (one writer per folder, held until `run`
        ends or `close`)."""
        self.log = log
        self.resumed: ckpt.Checkpoint | None = None
        self.folder: RunFolder | None = None
        self.board: tb.Board | None = None  # --tensorboard's event file, from _begin to close
        self.board_dir: str | None = None
        try:
            self._setup(cfg, resume, overrides)
        except BaseException:
            self.close(failed=True)
            raise

    def _setup(self, cfg: TrainConfig | None, resume: str | None, overrides: dict[str, Any] | None) -> None:
        given = None
        if resume:
            resume = os.fspath(resume)
            self.folder = RunFolder.existing(resume)
            path = self.folder.file("checkpoint.npz")
            self.resumed = ckpt.load(path)
            saved = TrainConfig.from_dict(self.resumed.meta["config"], f"checkpoint {path!r}: config").to_dict()
            overrides = dict(overrides or {})
            if overrides.get("out", resume) != resume:
                raise BpttError(
                    f"out: expected no --out with --resume (the run goes on in {resume!r}), "
                    f"received {overrides['out']!r}"
                )
            cfg = TrainConfig.from_dict({**saved, **overrides, "out": resume}, "flags")
            given = set(overrides) - {"out"}
        elif cfg is None:
            cfg = TrainConfig()
        self.cfg = cfg.validate(given)
        self.run_dir = _new_run_dir(self.cfg)
        if self.cfg.tensorboard:  # the package and the folder checked before anything is written
            before = self.resumed.meta["config"].get("tensorboard", "") if self.resumed else ""
            self.board_dir = tb.check(self.cfg.tensorboard, self.run_dir, bool(self.resumed), before)
        self.task = make_task(self.cfg, self.resumed.meta if self.resumed else None)
        self.model = self.task.build_model()
        self.algorithm = algorithms.make(self.cfg.algorithm_name(), **self.cfg.algorithm_options())
        if self.algorithm.stateful and self.task.mode == "stream":
            algorithms.truncated.check_streamable(self.model, self.cfg.algorithm)
        if self.cfg.memory_budget:  # a budget too small is refused before anything runs
            if self.model.bidirectional:
                raise BpttError("memory_budget: expected a unidirectional model, received a bidirectional one")
            p0 = self.model.init_params(np.random.default_rng(0), self.cfg.dtype)
            if isinstance(self.algorithm, algorithms.Budget):
                self.algorithm.plan_for(self.model, p0, getattr(self.task, "T", self.cfg.seq_len), self.cfg.batch_size)
            else:  # TBPTT: the longest window, k2 steps
                self.algorithm.stream(self.model).budget.plan_for(self.model, p0, self.cfg.k2, self.cfg.batch_size)
        self._continuing = False  # a stateful algorithm's stream is running (its state is its own)
        # online: an update per batch; batch: an update per pass over the data (all its segments)
        self.batches_per_update = self.task.steps_per_epoch() if self.cfg.update == "batch" else 1
        spe = self.task.steps_per_epoch() // self.batches_per_update
        self.total_steps = math.ceil(self.cfg.epochs * spe) if self.cfg.epochs else self.cfg.steps
        self.tokens_per_update = (
            self.cfg.batch_size * sum(n for _, n in self.task.segs)
            if self.cfg.update == "batch"
            else self.task.tokens_per_step
        )
        plateau = (self.cfg.plateau_factor, self.cfg.plateau_patience) if self.cfg.plateau_patience else None
        self.optimizer = optim.make_optimizer(
            self.cfg.optimizer,
            schedule_for(self.cfg, self.total_steps),
            clip=self.cfg.clip or None,
            clip_value=self.cfg.clip_value or None,
            momentum=self.cfg.momentum,
            weight_decay=self.cfg.weight_decay,
            plateau=plateau,
        )
        if self.resumed:
            self.state = self._restore(self.resumed, self.folder.file("checkpoint.npz"))
            if self.total_steps <= self.state.step:
                done = self.state.step
                key, value = (
                    ("epochs", f"{self.cfg.epochs:g} ({self.total_steps} updates)")
                    if self.cfg.epochs
                    else ("steps", self.total_steps)
                )
                raise BpttError(
                    f"{key}: expected more than the {done} updates already done in {self.run_dir!r}, received {value} "
                    f"(give --steps N > {done} to train on)"
                )
        else:
            self.folder = RunFolder.new(self.run_dir)
            self.state = self._fresh()
        if hasattr(self.algorithm, "rng"):  # random draws come from the run's generator (saved and restored)
            self.algorithm.rng = self.state.rng

    def close(self, failed: bool = False) -> None:
        """Release the run folder (done by `run` when it ends); after a failed set-up, remove the
        folder if this trainer made it and nothing was written there."""
        if self.board is not None:
            self.board.close()
        if self.folder is not None:
            self.folder.close(failed)

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- the gradient algorithm ----------------------------------------------------------------
    def _gradient(self, params, x, y, state0, mask=None) -> Gradient:
        """One batch's gradient by the configured algorithm, from state0 (None: the initial
        state). A stateful algorithm (TBPTT) on streams carries its own state and window history
        from batch to batch (saved in the checkpoint); state0 None starts a new stream. mask: the
        real steps of right-padded sequences (a generated task of varying lengths)."""
        algo, model = self.algorithm, self.model
        if not algo.stateful:
            return algo(model, params, x, y, mask=mask, state0=state0)
        if state0 is None:
            algo.reset()
            g = algo(model, params, x, y, mask=mask)
        elif self._continuing:
            g = algo(model, params, x, y, mask=mask)
        else:  # resumed from a checkpoint without the stream's history
            g = algo(model, params, x, y, mask=mask, state0=state0)
        self._continuing = self.task.mode == "stream"
        return g

    def _update_gradient(self, params, carried, step, rng) -> Gradient:
        """The gradient of update number `step`. online: that of one batch (from the carried state
        unless the batch starts a pass). batch: SNNS's BBPTT/QPTT rule, the gradients of all
        segments of one pass over the data with the weights fixed, state carried from segment to
        segment, combined as the gradient of the pass's average loss (each segment weighted by its
        share of the positions: the sum of per-segment gradients times 1/P for equal segments)."""
        task = self.task
        if self.batches_per_update == 1:
            x, y, reset, *mask = task.batch(step, rng)
            return self._gradient(params, x, y, None if (reset or carried is None) else carried, *mask)
        P, state, mean = self.batches_per_update, None, GradientMean()
        for i in range(P):
            x, y, _, *mask = task.batch(step * P + i, rng)  # i = 0 starts the pass (and resets TBPTT)
            g = self._gradient(params, x, y, state, *mask)
            state = g.final_state if finite(g.final_state) else None
            mean.add(g, x.shape[0] * x.shape[1])
        # the next pass starts from the initial state: nothing is carried across updates
        return mean.result(params)._replace(final_state=None)

    # ---- state ---------------------------------------------------------------------------------
    def _fresh(self) -> TrainState:
        rng = np.random.default_rng(self.cfg.seed)
        params = self.model.init_params(rng, self.cfg.dtype)
        trackers = {"best": None, "since_best": 0, "train_seconds": 0.0, "skipped": 0, "first_loss": None}
        return TrainState(params, self.optimizer.init(params), rng, None, 0, trackers)

    def _restore(self, c: ckpt.Checkpoint, path: str) -> TrainState:
        """The run's state from its checkpoint, every part checked against this model and config."""
        params = c.params
        try:
            dtype = self.model.check_params(params)
        except BpttError as e:
            raise BpttError(f"checkpoint {path!r} does not fit the run's model: {e}") from None
        if np.dtype(self.cfg.dtype) != dtype:
            raise BpttError(f"dtype: expected {dtype} (the checkpoint's), received {self.cfg.dtype}")
        try:
            opt_state = optim.unflatten_state(self.optimizer.init(params), c.opt)
        except BpttError as e:
            raise BpttError(
                f"checkpoint {path!r}: {e} (was --optimizer, --clip or --plateau-patience changed?)"
            ) from None
        rng = np.random.default_rng()
        try:
            rng.bit_generator.state = c.meta["rng"]
        except (KeyError, TypeError, ValueError, OverflowError):
            raise BpttError(
                f"checkpoint {path!r}: meta.rng: expected a NumPy PCG64 generator state, received "
                f"{json.dumps(c.meta['rng'])[:80]}"
            ) from None
        carried = restore_carried(
            c, params, path, self.model, self.cfg.batch_size if self.task.mode == "stream" else None
        )
        key = f"{self.algorithm.name}_history"
        if carried is not None and key in c.meta:
            self.algorithm.restore(
                self.model, carried, c.meta[key], c.extra or {}, params, where=f"checkpoint {path!r}: {key}"
            )
            self._continuing = True
        trackers = {"skipped": 0, "first_loss": None, **c.meta["trackers"]}
        return TrainState(params, opt_state, rng, carried, int(c.meta["step"]), trackers)

    def _meta(self, s: TrainState) -> dict[str, Any]:
        return {
            "bptt_version": __version__,
            "config": self.cfg.to_dict(),
            "step": s.step,
            "total_steps": self.total_steps,
            "rng": s.rng.bit_generator.state,
            "trackers": s.trackers,
            **self.task.meta(),
        }

    def _save(self, name: str, s: TrainState, best: bool = False) -> None:
        """checkpoint.npz: the whole state; best.npz: the parameters (and the record)."""
        meta, extra = self._meta(s), None
        history = None if best or s.carried is None else self.algorithm.history()
        if history is not None:  # the windows of the next segments reach back into earlier ones
            meta[f"{self.algorithm.name}_history"], extra = history
        opt = {} if best else optim.flatten_state(s.opt_state)
        ckpt.save(self.folder.file(name), s.params, opt, None if best else s.carried, meta, extra)

    # ---- the loop ------------------------------------------------------------------------------
    def run(self, on_step: Callable[[int, float], None] | None = None) -> TrainResult:
        """Train to the configured number of steps (or until stopped). `on_step(step, loss)` is
        called after every update. Releases the run folder when it ends."""
        if self.folder is None or not self.folder.held:
            raise BpttError(
                "run: expected a Trainer that has not run, received one that has ended "
                "(make a new one, e.g. Trainer(resume=folder))"
            )
        try:
            return self._run(on_step)
        finally:
            self.close()

    def _run(self, on_step) -> TrainResult:
        cfg, task, s = self.cfg, self.task, self.state
        threads = self._begin()
        guard = Guard(self.optimizer, cfg.diverge_after)
        out = report.Report(self.log, cfg, task, self.total_steps, s.step, self.tokens_per_update)
        stopped, saved_at, skipped = "done", s.step, None
        t_train, t_loop0 = s.trackers.get("train_seconds", 0.0), time.perf_counter()
        with threads[0], Interrupt() as interrupt, open(self.folder.file("metrics.jsonl"), "a") as f:
            metrics = report.Metrics(f, self.board)  # metrics.jsonl, and the event file with --tensorboard
            if cfg.diagnose_every and s.step == 0:  # the flow at the initial weights
                metrics.row(flow_row(self.model, s.params, task, 0))
            while s.step < self.total_steps:
                t0 = time.perf_counter()
                g = self._update_gradient(s.params, s.carried, s.step, s.rng)
                skipped = guard.update(g, s)
                final = g.final_state if task.mode == "stream" else None
                s.carried = final if finite(final) else None
                s.step += 1
                dt = time.perf_counter() - t0
                t_train += dt
                out.step(metrics, s, g.loss, dt, t_train, skipped, self.optimizer)
                if cfg.diagnose_every and s.step % cfg.diagnose_every == 0 and not skipped:
                    metrics.row(flow_row(self.model, s.params, task, s.step))
                if guard.diverged:  # the last checkpoint is left as it is: the last good state of the run
                    stopped = "diverged"
                    break
                if on_step is not None:
                    on_step(s.step, g.loss)
                out_of_time = bool(cfg.max_seconds and t_train >= cfg.max_seconds)
                regular = s.step % cfg.eval_every == 0 or s.step == self.total_steps or out_of_time
                if (regular or interrupt.requested) and not skipped:  # (skipped: not trusted, not saved)
                    s.trackers["train_seconds"] = t_train
                    # evaluation (and what it decides) only at regular points, so that an
                    # interrupted and resumed run takes exactly the uninterrupted run's path
                    if regular:
                        self._evaluate(s, metrics, out)
                    metrics.flush()
                    self._save("checkpoint.npz", s)
                    saved_at = s.step
                    if regular and cfg.patience and s.trackers["since_best"] >= cfg.patience:
                        stopped = "early-stop"
                        break
                if interrupt.requested or out_of_time:
                    stopped = "interrupted" if interrupt.requested else "time-limit"
                    break
        out.close()
        out.stopped(stopped, s, guard, skipped, saved_at, self.folder.file("checkpoint.npz"), self.run_dir)
        plot_losses(self.folder.file("metrics.jsonl"), self.folder.file("loss.png"), f"{cfg.cell} on {task.source}")
        if hasattr(task, "plot"):  # spike tasks: a raster of one sequence
            task.plot(self.model, s.params, self.folder.file("spikes.png"))
        wall = time.perf_counter() - t_loop0
        return TrainResult(
            self.run_dir,
            s.step,
            s.params,
            s.trackers.get("best"),
            out.last_eval,
            stopped,
            t_train,
            out.tokens / wall if wall > 0 else 0.0,
            {
                "threads": threads[1],
                "parameters": out.n_params,
                "skipped": s.trackers.get("skipped", 0),
                "saved_at": saved_at,
            },
        )

    def _begin(self):
        """The run starts writing: its folder claimed, metrics, config.json and (for a new run)
        the step-0 checkpoint written; returns the BLAS thread limit and its description."""
        s = self.state
        self.folder.start(self.log)
        if self.resumed:
            dropped = self.folder.truncate_metrics(s.step)
            if dropped:
                self.log(f"metrics.jsonl: dropped {dropped} torn line(s) (written when the run was stopped mid-line)")
        else:
            self.folder.fresh_metrics()
        if self.board_dir is not None:  # resumed: its events after the checkpoint dropped, as metrics.jsonl's rows
            rows = read_metrics(self.folder.file("metrics.jsonl")) if self.resumed else []
            self.board = tb.Board(self.board_dir, self.cfg, s.step, bool(self.resumed), rows)
        limiter, threads = blas_threads(self.cfg.threads or default_threads())
        n_params = sum(v.size for v in s.params.values())
        self.folder.write_json(
            "config.json", {**self._meta(s), "model": repr(self.model), "parameters": n_params, "threads": threads}
        )
        if not self.resumed:  # a run folder always holds a checkpoint to resume from (or fall back to)
            self._save("checkpoint.npz", s)
        report.header(
            self.log,
            self.cfg,
            self.task,
            n_params,
            self.total_steps,
            threads,
            self.run_dir,
            s.step if self.resumed else None,
        )
        if self.board is not None:
            dropped = f"; {self.board.dropped} event(s) after step {s.step} dropped" if self.board.dropped else ""
            self.log(f"tensorboard: {self.board_dir} (tensorboard --logdir {self.board_dir}){dropped}")
        return limiter, threads

    def _evaluate(self, s: TrainState, metrics, out) -> None:
        """The validation loss: logged, fed to the optimizer (reduce_on_plateau), best.npz
        written when it is finite and lower than every one before."""
        ev = self.task.evaluate(self.model, s.params)
        out.last_eval = ev
        if ev is None:
            return
        metrics.row({"step": s.step, "split": "val", **_json_safe(ev)})
        if self.board is not None and self.task.kind == "text" and self.cfg.sample_length:
            self.board.sample(s.step, self.model, s.params, self.task.vocab)
        loss = ev["loss"]
        best = s.trackers["best"]
        if math.isfinite(loss) and (best is None or loss < best["loss"]):
            s.trackers["best"], s.trackers["since_best"] = dict(ev, step=s.step), 0
            self._save("best.npz", s, best=True)
        else:
            s.trackers["since_best"] += 1
        if math.isfinite(loss):
            s.opt_state = optim.observe(self.optimizer, s.opt_state, loss)
        out.evaluation(s.step, ev)


def _json_safe(d: dict) -> dict:
    return {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in d.items()}
