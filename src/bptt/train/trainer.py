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

Under `mpirun -n N` (dist.py) each rank computes the gradient of its share of every batch's
streams, the ranks combine them into the whole batch's (the same bits on every rank), and rank 0
alone takes the folder, writes and logs; a checkpoint holds every stream's state, as one
process's would, so a run resumes on any number of ranks.
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

from .. import algorithms, machine, ops, optim
from .._version import __version__
from ..algorithms import Gradient, GradientMean
from ..cells.base import Params
from ..errors import BpttError
from ..model import Model
from ..plots import plot_losses, read_metrics
from . import checkpoint as ckpt
from . import dist, report, tb
from .config import TrainConfig
from .diagnose import flow_row
from .folder import Follower, RunFolder
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
    stopped: str  # 'done' | 'early-stop' | 'time-limit' | 'interrupted' | 'diverged' | 'callback'
    train_seconds: float  # the run's training time, over every session of it
    tokens_per_s: float  # this session's tokens over its training time (not its evaluations and plots)
    extra: dict[str, Any] = field(default_factory=dict)
    model: Any = None  # the bptt.Model trained
    metrics: list[dict[str, Any]] = field(default_factory=list)  # the rows of metrics.jsonl
    best_params: Params | None = None  # those of the best validation loss (best.npz), if any
    cfg: TrainConfig | None = None  # the run's settings, as validated
    task: Any = None  # what it trained on (tasks.py; its vocabulary, normaliser, splits)


class Stop(Exception):
    """Raised by an `on_step` or `on_eval` callback (or return True from one) to end training
    after the current update, as early stopping does: the run is saved and `run` returns, its
    `stopped` 'callback'."""


def _asks_to_stop(callback: Callable[..., Any], *args: Any) -> bool:
    try:
        answer = callback(*args)
    except Stop:
        return True
    return isinstance(answer, (bool, np.bool_)) and bool(answer)  # (not any truthy value: list.append's None...)


def optimizer_for(cfg: TrainConfig, total_steps: int) -> optim.Transform:
    """The run's optimizer: --optimizer with its schedule, clipping, momentum, weight decay and
    plateau rule."""
    plateau = (cfg.plateau_factor, cfg.plateau_patience) if cfg.plateau_patience else None
    return optim.make_optimizer(
        cfg.optimizer,
        schedule_for(cfg, total_steps),
        clip=cfg.clip or None,
        clip_value=cfg.clip_value or None,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        plateau=plateau,
    )


def fresh_trackers() -> dict[str, Any]:
    """What a run tracks from its step 0 (kept in every checkpoint)."""
    return {"best": None, "since_best": 0, "train_seconds": 0.0, "skipped": 0, "first_loss": None}


def run_meta(cfg: TrainConfig, step: int, total_steps: int, rng: np.random.Generator, trackers, task_meta) -> dict:
    """A checkpoint's record (and config.json's head): version, config, step, generator, trackers
    and what the task keeps (vocabulary or normaliser)."""
    return {
        "bptt_version": __version__,
        "config": cfg.to_dict(),
        "step": step,
        "total_steps": total_steps,
        "rng": rng.bit_generator.state,
        "trackers": trackers,
        **task_meta,
    }


def schedule_for(cfg: TrainConfig, total_steps: int):
    if cfg.schedule == "constant":
        return cfg.lr
    warm = min(cfg.warmup, max(total_steps - 1, 0))
    return optim.warmup_cosine(cfg.lr, warm, max(total_steps, warm + 1), min(cfg.min_lr, cfg.lr))


ARRAYS = "arrays"  # the config's `extra` key of a run on in-memory arrays: what they were


def check_fits(model: Model, task: Any, dtype: str) -> None:
    """A model of one's own against the task's data (its inputs, targets, mask): a BpttError of
    one line if it does not fit."""
    try:
        if task.kind == "text" and not (model.tokens and model.input_size == model.output_size == len(task.vocab)):
            V = len(task.vocab)
            got = f"{'token ids' if model.tokens else 'float inputs'} of {model.input_size}"
            raise BpttError(
                f"expected token ids of the {V} characters in and {V} outputs, received {got} and "
                f"{model.output_size} outputs"
            )
        check = getattr(task, "check_model", None)
        params = model.init_params(0, dtype)
        if check is not None:
            check(model, params)
        else:
            x, y, mask = task.diagnostic_batch()
            model.check_batch(params, x, y, mask)
    except BpttError as e:
        raise BpttError(f"model: does not fit {task.source}: {e}") from None


def _new_run_dir(cfg: TrainConfig) -> str:
    if cfg.out:
        return cfg.out
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join("runs", stamp)


def _check_watched(cfg: TrainConfig, task: Any) -> None:
    """Early stopping and the plateau schedule watch the validation loss: refused where the task
    holds no validation part (--val-fraction 0, one too small to hold any of this data, or arrays
    without val), where they would never act. A run saved before this check with such a setting
    resumes with it set to 0, which the message says."""
    if getattr(task, "validates", True):
        return
    for key, what in (
        ("patience", "the run would never stop early"),
        ("plateau_patience", "the lr would never be cut"),
    ):
        value = getattr(cfg, key)
        if value:
            flag = "--" + key.replace("_", "-")
            raise BpttError(
                f"{key}: expected a validation part to watch (--val-fraction above 0, enough for this data to "
                f"hold one, or val= with arrays), received {value} with none ({what}; {flag} 0 goes on without it)"
            )


class Trainer:
    def __init__(
        self,
        cfg: TrainConfig | None = None,
        resume: str | None = None,
        overrides: dict[str, Any] | None = None,
        log: Callable[[str], None] = print,
        *,
        data: Any = None,
        model: Model | None = None,
    ) -> None:
        """A new run from `cfg`, or the run in folder `resume` continued (with `overrides`
        applied to its saved config, e.g. more steps).

        data: in-memory sequences instead of the config's task (an object whose `task(cfg)`
        makes the task; bptt.train.fit's arrays); model: a model of one's own instead of the
        one the config describes, checked to fit the data.

        Everything is checked here, before anything is written: the config, the data, the run
        folder (a new run's must not hold one already; a resumed run's checkpoint must load and
        fit the model), and the folder's lock is taken (one writer per folder, held until `run`
        ends or `close`)."""
        self.world = dist.world()  # this process alone, or the ranks of `mpirun -n N` (dist.py)
        self.log = log if self.world.root else dist.quiet
        self._data, self._user_model = data, model
        self.resumed: ckpt.Checkpoint | None = None
        self.folder: RunFolder | Follower | None = None
        self.board: tb.Board | None = None  # --tensorboard's event file, from _begin to close
        self.board_dir: str | None = None
        failed = None
        try:
            self._setup(cfg, resume, overrides)
        except BaseException as e:
            self.close(failed=True)
            failed = e
        self.world.agree(failed)  # raises it (under MPI: rank 0 says the first failing rank's error)

    def _setup(self, cfg: TrainConfig | None, resume: str | None, overrides: dict[str, Any] | None) -> None:
        machine.lanes()  # (a bad BPTT_LANES or BPTT_GEMM refused before any folder is touched)
        machine.own_products()
        given = None
        if resume:
            resume = os.fspath(resume)
            path = os.path.join(resume, "checkpoint.npz")

            def load() -> ckpt.Checkpoint:
                self.folder = RunFolder.existing(resume)
                return ckpt.load(path)

            if not self.world.root:
                self.folder = Follower(resume)
            self.resumed = self.world.share(load)  # rank 0 takes the folder and reads it; every rank gets it
            saved = TrainConfig.from_dict(self.resumed.meta["config"], f"checkpoint {path!r}: config").to_dict()
            overrides = dict(overrides or {})
            if overrides.get("out", resume) != resume:
                raise BpttError(
                    f"out: expected no --out with --resume (the run goes on in {resume!r}), "
                    f"received {overrides['out']!r}"
                )
            for key in ("tokens", "vocab_size", "tie"):  # the run's vocabulary and parameters are its own
                if key in overrides and overrides[key] != saved[key]:
                    raise BpttError(
                        f"{key}: expected {saved[key]!r} with --resume (the run's own: its vocabulary and parameters "
                        f"are made of it), received {overrides[key]!r}"
                    )
            if "steps" in overrides and "epochs" not in overrides:  # (a run of epochs told --steps: steps it is)
                overrides["epochs"] = 0.0
            cfg = TrainConfig.from_dict({**saved, **overrides, "out": resume}, "flags")
            given = set(overrides) - {"out", "epochs"}
        elif cfg is None:
            cfg = TrainConfig()
        self.cfg = cfg.validate(given)
        self.run_dir = _new_run_dir(self.cfg)
        if self.cfg.tensorboard and self.world.root:  # the package and the folder checked before anything is written
            before = self.resumed.meta["config"].get("tensorboard", "") if self.resumed else ""
            self.board_dir = tb.check(self.cfg.tensorboard, self.run_dir, bool(self.resumed), before)
        self.task, self.model = self._task_and_model()
        self.algorithm = algorithms.make(self.cfg.algorithm_name(), **self.cfg.algorithm_options())
        if self.algorithm.stateful and self.task.mode == "stream":
            algorithms.truncated.check_streamable(self.model, self.cfg.algorithm)
        self.world.check(self.model, self.cfg.batch_size)
        local_batch = self.cfg.batch_size // self.world.size  # the streams this rank computes
        if self.cfg.memory_budget:  # a budget too small is refused before anything runs
            if self.model.bidirectional:
                raise BpttError("memory_budget: expected a unidirectional model, received a bidirectional one")
            p0 = self.model.init_params(np.random.default_rng(0), self.cfg.dtype)
            masked = self.task.masked  # (a masked batch's plan holds more: planned as its steps will run)
            if isinstance(self.algorithm, algorithms.Budget):
                T = getattr(self.task, "T", self.cfg.seq_len)
                self.algorithm.plan_for(self.model, p0, T, local_batch, masked)
            else:  # TBPTT: the longest window, k2 steps
                self.algorithm.stream(self.model).budget.plan_for(self.model, p0, self.cfg.k2, local_batch, masked)
        self.algorithm = dist.sharded(self.algorithm, self.world, self.cfg.batch_size)
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
        self.optimizer = optimizer_for(self.cfg, self.total_steps)
        if self.resumed:
            self.state = self._restore(self.resumed, self.folder.file("checkpoint.npz"))
            if self.total_steps <= self.state.step:
                done = self.state.step
                key, value = (
                    ("epochs", f"{self.cfg.epochs:g} ({self.total_steps} updates)")
                    if self.cfg.epochs
                    else ("steps", self.total_steps)
                )
                more = (
                    f"--epochs E of more than {done} updates, or --steps N > {done}"
                    if self.cfg.epochs
                    else f"--steps N > {done}"
                )
                raise BpttError(
                    f"{key}: expected more than the {done} updates already done in {self.run_dir!r}, received {value} "
                    f"(give {more} to train on)"
                )
        else:
            self.folder = RunFolder.new(self.run_dir) if self.world.root else Follower(self.run_dir)
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

    def _task_and_model(self) -> tuple[Any, Model]:
        """The task (the config's, or that of the in-memory data) and the model (the task's, or
        one's own, checked to fit the data). A run on arrays says so in its config (extra), and
        goes on only with arrays given again."""
        trained_on = self.cfg.extra.get(ARRAYS) if self.resumed else None
        if self.resumed and self._data is None and trained_on:
            raise BpttError(
                f"data: expected the arrays the run in {self.run_dir!r} trained on ({trained_on}), given again "
                "(bptt.train.fit(x=..., y=..., resume=RUN)), received none"
            )
        if self.resumed and self._data is not None and trained_on:
            given = self._data.note
            same = given == trained_on if "sha256" in trained_on else given.split(";")[0] == trained_on
            if not same:  # (a run saved before its arrays' digest was kept: their shapes)
                raise BpttError(
                    f"x: expected the arrays the run in {self.run_dir!r} trained on ({trained_on}), received {given}"
                )
        if self.resumed and self._data is not None and not trained_on:
            raise BpttError(
                f"x: expected no arrays for the run in {self.run_dir!r} (it trains on its --task {self.cfg.task} "
                f"data), received {self._data.note}"
            )
        extra = {k: v for k, v in self.cfg.extra.items() if k != ARRAYS}
        self.cfg.extra = extra if self._data is None else {**extra, ARRAYS: self._data.note}  # (into config.json)
        if self._data is not None:
            task = self._data.task(self.cfg)
        else:
            task = make_task(self.cfg, self.resumed.meta if self.resumed else None)
        _check_watched(self.cfg, task)
        if self._user_model is None:
            return task, task.build_model()
        check_fits(self._user_model, task, self.cfg.dtype)
        return task, self._user_model

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
        segment, each segment's gradient truncated at its start (the carried state is a constant
        of it, as in SNNS), combined as the pass's average (each segment weighted by its share of
        the positions: the sum of per-segment gradients times 1/P for equal segments). It is not
        the gradient of the pass's average loss, which would reach back across the segments."""
        task, world = self.task, self.world  # under MPI: this rank's streams of each batch, then combined
        if self.batches_per_update == 1:
            x, y, reset, *mask = world.shard(self.model, task.batch(step, rng))
            with self.model.dropout(rng, np.shape(x)[1], self.cfg.dtype):  # (the masks of --dropout)
                g = self._gradient(params, x, y, None if (reset or carried is None) else carried, *mask)
            return world.combine(g, self.model.loss_fn.count(mask[0] if mask else None, *np.shape(x)[:2]), params)
        P, state, mean = self.batches_per_update, None, GradientMean()
        for i in range(P):
            x, y, _, *mask = world.shard(self.model, task.batch(step * P + i, rng))  # i = 0 starts the pass
            with self.model.dropout(rng, np.shape(x)[1], self.cfg.dtype):
                g = self._gradient(params, x, y, state, *mask)
            state = g.final_state if finite(g.final_state) else None
            mean.add(g, x.shape[0] * x.shape[1])
        # the next pass starts from the initial state: nothing is carried across updates
        return world.combine(mean.result(params)._replace(final_state=None), mean.total, params)

    # ---- state ---------------------------------------------------------------------------------
    def _fresh(self) -> TrainState:
        rng = np.random.default_rng(self.cfg.seed)
        params = self.model.init_params(rng, self.cfg.dtype)
        return TrainState(params, self.optimizer.init(params), rng, None, 0, fresh_trackers())

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
        history, where = (c.meta.get(key), c.extra or {}), f"checkpoint {path!r}: {key}"
        if self.world.parallel and carried is not None:  # the checkpoint holds every stream's: this rank's share
            share = self.world.streams(self.cfg.batch_size)
            carried = dist.split_state(carried, share)
            if history[0] is not None:
                history = dist.split_history(self.algorithm.name, *history, share, where)
        if carried is not None and key in c.meta:
            self.algorithm.restore(self.model, carried, *history, params, where=where)
            self._continuing = True
        trackers = {"skipped": 0, "first_loss": None, **c.meta["trackers"]}
        return TrainState(params, opt_state, rng, carried, int(c.meta["step"]), trackers)

    def _meta(self, s: TrainState) -> dict[str, Any]:
        return run_meta(self.cfg, s.step, self.total_steps, s.rng, s.trackers, self.task.meta())

    def _save(self, name: str, s: TrainState, best: bool = False) -> None:
        """checkpoint.npz: the whole state; best.npz: the parameters (and the record)."""
        meta, extra = self._meta(s), None
        history = None if best or s.carried is None else self.algorithm.history()
        carried = None if best else s.carried
        if self.world.parallel and not best:  # rank 0 writes every rank's streams, as one process would
            self.world.check_same(s.params, s.rng)
            every = self.world.gather((carried, history))
            if every is None:
                return
            carried = dist.join_state([c for c, _ in every])
            history = dist.join_history(self.algorithm.name, [h for _, h in every])
        if not self.world.root:
            return
        if history is not None:  # the windows of the next segments reach back into earlier ones
            meta[f"{self.algorithm.name}_history"], extra = history
        opt = {} if best else optim.flatten_state(s.opt_state)
        ckpt.save(self.folder.file(name), s.params, opt, carried, meta, extra)

    # ---- the loop ------------------------------------------------------------------------------
    def run(
        self,
        on_step: Callable[[int, float], Any] | None = None,
        on_eval: Callable[[int, dict[str, float]], Any] | None = None,
    ) -> TrainResult:
        """Train to the configured number of steps (or until stopped). `on_step(step, loss)` is
        called after every update, `on_eval(step, figures)` after every evaluation with its
        figures (the validation loss, bits/char, NMSE, accuracy...: the row of metrics.jsonl);
        either stops the run by returning True or raising `Stop`. Releases the run folder when it
        ends."""
        if self.folder is None or not self.folder.held:
            raise BpttError(
                "run: expected a Trainer that has not run, received one that has ended "
                "(make a new one, e.g. Trainer(resume=folder))"
            )
        try:
            return self._run(on_step, on_eval)
        except BaseException as e:
            self.world.abort(e)  # under MPI the other ranks may wait for this one: every rank ends
            raise
        finally:
            self.close()

    def _run(self, on_step, on_eval) -> TrainResult:
        cfg, task, s = self.cfg, self.task, self.state
        threads = self._begin()
        guard = Guard(self.optimizer, cfg.diverge_after)
        out = report.Report(
            self.log, cfg, task, self.total_steps, s.step, self.tokens_per_update, quiet=not self.world.root
        )
        stopped, saved_at, skipped = "done", s.step, None
        t_train = t_session = s.trackers.get("train_seconds", 0.0)
        rows = self.folder.file("metrics.jsonl") if self.world.root else os.devnull  # (rank 0 writes)
        with threads[0], Interrupt() as interrupt, open(rows, "a") as f:
            metrics = report.Metrics(f, self.board)  # metrics.jsonl, and the event file with --tensorboard
            if cfg.diagnose_every and s.step == 0 and self.world.root:  # the flow at the initial weights
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
                if cfg.diagnose_every and s.step % cfg.diagnose_every == 0 and not skipped and self.world.root:
                    metrics.row(flow_row(self.model, s.params, task, s.step))
                if guard.diverged:  # the last checkpoint is left as it is: the last good state of the run
                    stopped = "diverged"
                    break
                asked = on_step is not None and _asks_to_stop(on_step, s.step, g.loss)  # a callback's stop
                out_of_time = bool(cfg.max_seconds and t_train >= cfg.max_seconds)
                # under MPI every rank stops (and saves) at the same step: a stop asked on any rank
                requested, asked, out_of_time = self.world.any(interrupt.requested, asked, out_of_time)
                regular = s.step % cfg.eval_every == 0 or s.step == self.total_steps or out_of_time
                if (regular or requested or asked) and not skipped:  # (skipped: not trusted, not saved)
                    s.trackers["train_seconds"] = t_train
                    # evaluation (and what it decides) only at regular points, so that an
                    # interrupted and resumed run takes exactly the uninterrupted run's path
                    if regular:
                        ev = self._evaluate(s, metrics, out)
                        if ev is not None and on_eval is not None:
                            asked = _asks_to_stop(on_eval, s.step, dict(ev)) or asked
                            (asked,) = self.world.any(asked)
                    metrics.flush()
                    self._save("checkpoint.npz", s)
                    saved_at = s.step
                    if regular and cfg.patience and s.trackers["since_best"] >= cfg.patience:
                        stopped = "early-stop"
                        break
                if asked:
                    stopped = "callback"
                    break
                if requested or out_of_time:
                    stopped = "interrupted" if requested else "time-limit"
                    break
        out.close()
        out.stopped(stopped, s, guard, skipped, saved_at, self.folder.file("checkpoint.npz"), self.run_dir)
        best_file = self.folder.file("best.npz")
        best_params = ckpt.load(best_file).params if os.path.isfile(best_file) else None
        tested = self._test(stopped, best_params, s.params)
        if self.world.root:
            plot_losses(self.folder.file("metrics.jsonl"), self.folder.file("loss.png"), f"{cfg.cell} on {task.source}")
            if hasattr(task, "plot"):  # spike tasks: a raster of one sequence
                task.plot(self.model, s.params, self.folder.file("spikes.png"))
        self.world.barrier()  # (the other ranks return once rank 0's files are written)
        session = t_train - t_session
        return TrainResult(
            self.run_dir,
            s.step,
            s.params,
            s.trackers.get("best"),
            out.last_eval,
            stopped,
            t_train,
            out.tokens / session if session > 0 else 0.0,
            {
                "threads": threads[1],
                "parameters": out.n_params,
                "skipped": s.trackers.get("skipped", 0),
                "saved_at": saved_at,
                **({"test": tested} if tested else {}),
            },
            self.model,
            read_metrics(self.folder.file("metrics.jsonl")),
            best_params,
            cfg,
            task,
        )

    def _test(self, stopped: str, best, last) -> dict[str, Any] | None:
        """The test part's figures (--test-fraction), once, at the end of a run that was not
        interrupted or diverged: with the weights of the best validation where there are some,
        else the last; said in the log and written to test.json."""
        task = self.task
        if stopped in ("interrupted", "diverged") or not getattr(task, "n_test", 0):
            return None
        which, params = ("best", best) if best is not None else ("last", last)
        m = task.test(self.model, params)
        if m is None:
            return None
        m = {**m, "weights": which, "values": task.n_test}
        self.folder.write_json("test.json", m)  # (rank 0 writes; the others' folder writes nothing)
        if task.kind == "text":
            shown = report.text_line(m, task.unit)
        else:
            shown = (
                f"NMSE {m['nmse']:.4f}{report.per_target(m, 'nmse')}, MSE {m['mse']:.4g}{report.per_target(m, 'mse')}"
            )
        if task.kind == "text":
            held = "characters" if task.unit == "char" else "words"
        else:
            held = "rows" if task.multi else "values"
        self.log(f"test ({task.n_test:,} held-out {held}, the {which} weights): {shown}")
        return m

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
        limiter, threads = blas_threads(self.cfg.threads or self.world.default_threads(default_threads()))
        speed = ops.speed(np.dtype(self.cfg.dtype))  # (float32: the kernels load here, not at the first step)
        threads += f"; {speed}" if speed else ""
        # a run folder always holds a checkpoint to resume from (or fall back to), written before
        # any other file of the run: a start killed before it leaves none of them (the same
        # command starts it again), one killed after it a run to resume (config.json was written
        # after the kernels loaded and before the checkpoint: a kill in between left a folder that
        # neither a new start nor --resume took)
        if not self.resumed:
            self._save("checkpoint.npz", s)
        if self.board_dir is not None:  # resumed: its events after the checkpoint dropped, as metrics.jsonl's rows
            rows = read_metrics(self.folder.file("metrics.jsonl")) if self.resumed else []
            self.board = tb.Board(self.board_dir, self.cfg, s.step, bool(self.resumed), rows)
        n_params = sum(v.size for v in s.params.values())
        ranks = {"mpi_ranks": self.world.size} if self.world.parallel else {}
        self.folder.write_json(
            "config.json",
            {**self._meta(s), "model": repr(self.model), "parameters": n_params, "threads": threads, **ranks},
        )
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
        if self.world.parallel:
            self.log(self.world.describe(self.cfg.batch_size))
        if self.board is not None:
            dropped = f"; {self.board.dropped} event(s) after step {s.step} dropped" if self.board.dropped else ""
            self.log(f"tensorboard: {self.board_dir} (tensorboard --logdir {self.board_dir}){dropped}")
        return limiter, threads

    def _evaluate(self, s: TrainState, metrics, out) -> dict[str, float] | None:
        """The validation loss: logged, fed to the optimizer (reduce_on_plateau), best.npz
        written when it is finite and lower than every one before."""
        ev = self.world.bcast(self.task.evaluate(self.model, s.params) if self.world.root else None)
        out.last_eval = ev
        if ev is None:
            return None
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
        return ev


def _json_safe(d: dict) -> dict:
    return {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in d.items()}
