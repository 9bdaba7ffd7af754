"""The training loop a user runs, top to bottom:

    batch -> gradient (--algorithm: full BPTT, TBPTT, random/ARTBP truncation) -> optimizer update
          -> [evaluate, checkpoint]

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
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .. import __version__, optim
from ..algorithms.full import Gradient, GradientMean, full_bptt
from ..algorithms.randomized import randomized_bptt
from ..algorithms.truncated import TBPTT, tbptt
from ..cells.base import Params
from ..errors import BpttError
from . import checkpoint as ckpt
from .config import TrainConfig
from .lock import LOCK_NAME, RunLock
from .plots import plot_losses
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


def default_threads() -> int:
    """The BLAS thread count a run uses unless told: the cores this process may use, at most 2.
    Measured on the default job (char-LSTM, 2-core machine otherwise idle): 2 threads train
    1.37x faster than 1 (28.4K vs 20.8K tokens/s); more than 2 were not measured. OpenBLAS
    threads busy-wait, so on a machine shared with another busy process use --threads 1."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        n = os.cpu_count() or 1
    return max(1, min(2, n))


def blas_threads(n: int):
    """Context manager limiting BLAS threads to n (threadpoolctl), and a description."""
    from threadpoolctl import threadpool_info, threadpool_limits

    limiter = threadpool_limits(limits=n, user_api="blas")
    libs = sorted({f"{i['internal_api']}" for i in threadpool_info() if i.get("user_api") == "blas"})
    return limiter, f"{n} BLAS thread{'s' if n > 1 else ''} ({', '.join(libs) or 'no BLAS found'})"


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


class _Interrupt:
    """First Ctrl-C: ask the loop to stop after the current step. Second: stop now."""

    def __init__(self) -> None:
        self.requested = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


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
        self._lock: RunLock | None = None
        self._created: str | None = None
        try:
            self._setup(cfg, resume, overrides)
        except BaseException:
            self.close(failed=True)
            raise

    def _setup(self, cfg: TrainConfig | None, resume: str | None, overrides: dict[str, Any] | None) -> None:
        given = None
        if resume:
            resume = os.fspath(resume)
            path = os.path.join(resume, "checkpoint.npz")
            if not os.path.isfile(path):
                raise BpttError(f"--resume: expected a run folder with checkpoint.npz, received {resume!r}")
            self._lock = RunLock(resume).acquire("--resume")
            self.resumed = ckpt.load(path)
            saved = TrainConfig.from_dict(self.resumed.meta["config"], f"checkpoint {path!r}: config").to_dict()
            overrides = dict(overrides or {})
            if overrides.get("out", resume) != resume:
                raise BpttError(f"out: expected no --out with --resume (the run goes on in {resume!r}), "
                                f"received {overrides['out']!r}")
            cfg = TrainConfig.from_dict({**saved, **overrides, "out": resume}, "flags")
            given = set(overrides) - {"out"}
        elif cfg is None:
            cfg = TrainConfig()
        self.cfg = cfg.validate(given)
        self.run_dir = _new_run_dir(self.cfg)
        self.task = make_task(self.cfg, self.resumed.meta if self.resumed else None)
        self.model = self.task.build_model()
        # TBPTT keeps its window history across batches (and checks that the model can stream)
        self._tbptt = TBPTT(self.model, self.cfg.k1, self.cfg.k2) if self.cfg.algorithm == "tbptt" else None
        # online: an update per batch; batch: an update per pass over the data (all its segments)
        self.batches_per_update = self.task.steps_per_epoch() if self.cfg.update == "batch" else 1
        spe = self.task.steps_per_epoch() // self.batches_per_update
        self.total_steps = math.ceil(self.cfg.epochs * spe) if self.cfg.epochs else self.cfg.steps
        self.tokens_per_update = (
            self.cfg.batch_size * sum(n for _, n in self.task.segs) if self.cfg.update == "batch" else self.task.tokens_per_step
        )
        self.optimizer = optim.make_optimizer(
            self.cfg.optimizer,
            schedule_for(self.cfg, self.total_steps),
            clip=self.cfg.clip or None,
            clip_value=self.cfg.clip_value or None,
            momentum=self.cfg.momentum,
            weight_decay=self.cfg.weight_decay,
        )
        if self.resumed:
            self._resume_from = self._restore(self.resumed, os.path.join(self.run_dir, "checkpoint.npz"))
            done = self._resume_from[4]
            if self.total_steps <= done:
                key, value = ("epochs", f"{self.cfg.epochs:g} ({self.total_steps} updates)") if self.cfg.epochs else ("steps", self.total_steps)
                raise BpttError(
                    f"{key}: expected more than the {done} updates already done in {self.run_dir!r}, received {value} "
                    f"(give --steps N > {done} to train on)"
                )
        else:
            self._claim(self.run_dir)

    def _claim(self, out: str) -> None:
        """Make (or take) a new run's folder and lock it; refuse a file, a path under a file, a
        folder that cannot be written, or one that already holds a run."""
        p = os.path.abspath(out)
        if os.path.exists(p) and not os.path.isdir(p):
            raise BpttError(f"--out: expected a folder for the run, received {out!r}, which is a file")
        parent = p
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent):
            raise BpttError(f"--out: expected a path under folders, received {out!r}, under the file {parent!r}")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise BpttError(f"--out: expected a folder this user can write in, received {out!r} ({parent!r} is not writable)")
        if not os.path.isdir(p):
            os.makedirs(p)
            self._created = p
        self._lock = RunLock(out).acquire("--out")
        if os.path.exists(os.path.join(out, "checkpoint.npz")):
            raise BpttError(
                f"--out: expected a new run folder, received {out!r} which already holds a run "
                f"(continue it with --resume {out}, or choose another --out)"
            )

    def close(self, failed: bool = False) -> None:
        """Release the run folder (done by `run` when it ends); after a failed set-up, remove the
        folder if this trainer made it and nothing was written there."""
        if self._lock is not None:
            self._lock.release()
        if failed and self._created:
            try:
                os.unlink(os.path.join(self._created, LOCK_NAME))
                os.rmdir(self._created)
            except OSError:
                pass
            self._created = None

    def __enter__(self) -> "Trainer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- the gradient algorithm ----------------------------------------------------------------
    def _gradient(self, params, x, y, state0, rng):
        """One batch's gradient by the configured algorithm. tbptt on streams: an online update
        per k1-step segment, windows reaching k2 steps back (the caches of earlier segments are
        kept, and saved in the checkpoint); on random windows: TBPTT(k1, k2) over each window
        with the weights fixed, one update per batch."""
        cfg, model = self.cfg, self.model
        if cfg.algorithm == "full":
            return full_bptt(model, params, x, y, None, state0)
        if cfg.algorithm in ("random", "artbp"):
            return randomized_bptt(model, params, x, y, cfg.truncation_prob, rng, None, state0,
                                   reweight=cfg.algorithm == "artbp")
        if self.task.mode == "stream":
            if state0 is None:  # a new pass over the data
                self._tbptt.reset()
            elif self._tbptt.state is None:  # resumed: the carried state, without the window history
                self._tbptt.start_from(state0)
            return self._tbptt(params, x, y)
        return tbptt(model, params, x, y, cfg.k1, cfg.k2, None, state0)[1]

    def _update_gradient(self, params, carried, step, rng) -> Gradient:
        """The gradient of update number `step`. online: that of one batch (from the carried state
        unless the batch starts a pass). batch: SNNS's BBPTT/QPTT rule, the gradients of all
        segments of one pass over the data with the weights fixed, state carried from segment to
        segment, combined as the gradient of the pass's average loss (each segment weighted by its
        share of the positions: the sum of per-segment gradients times 1/P for equal segments)."""
        task = self.task
        if self.batches_per_update == 1:
            x, y, reset = task.batch(step, rng)
            return self._gradient(params, x, y, None if (reset or carried is None) else carried, rng)
        P, state, mean = self.batches_per_update, None, GradientMean()
        for i in range(P):
            x, y, _ = task.batch(step * P + i, rng)  # i = 0 starts the pass (and resets TBPTT)
            g = self._gradient(params, x, y, state, rng)
            state = g.final_state if _finite(g.final_state) else None
            mean.add(g, x.shape[0] * x.shape[1])
        # the next pass starts from the initial state: nothing is carried across updates
        return mean.result(params)._replace(final_state=None)

    def _guarded_update(self, g: Gradient, params, opt_state, first_loss: float | None):
        """(new params, new optimizer state, None), or the old ones and why the update was
        skipped: a non-finite loss or gradient never reaches the optimizer, an update that
        would leave a non-finite weight or optimizer state is dropped, and so is one from weights
        whose loss has exploded (more than EXPLODED times the run's first loss)."""
        if not (math.isfinite(g.loss) and _finite(g.grads)):
            return params, opt_state, "non-finite loss or gradient"
        if first_loss is not None and g.loss > EXPLODED * max(first_loss, 1e-3):
            return params, opt_state, f"loss of {g.loss:.4g}, over {EXPLODED}x the first update's {first_loss:.4g}"
        updates, new_state = self.optimizer.update(g.grads, opt_state, params)
        new_params = optim.apply_updates(params, updates)
        if not (_finite(new_params) and _finite(optim.flatten_state(new_state))):
            return params, opt_state, "non-finite weights after the update"
        return new_params, new_state, None

    # ---- state ---------------------------------------------------------------------------------
    def _fresh(self):
        rng = np.random.default_rng(self.cfg.seed)
        params = self.model.init_params(rng, self.cfg.dtype)
        trackers = {"best": None, "since_best": 0, "train_seconds": 0.0, "skipped": 0, "first_loss": None}
        return params, self.optimizer.init(params), rng, None, 0, trackers

    def _restore(self, c: ckpt.Checkpoint, path: str):
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
            raise BpttError(f"checkpoint {path!r}: {e} (was --optimizer or --clip changed?)") from None
        rng = np.random.default_rng()
        try:
            rng.bit_generator.state = c.meta["rng"]
        except (KeyError, TypeError, ValueError, OverflowError):
            raise BpttError(f"checkpoint {path!r}: meta.rng: expected a NumPy PCG64 generator state, received "
                            f"{json.dumps(c.meta['rng'])[:80]}") from None
        carried = None
        if c.state:
            B = next(iter(next(iter(c.state.values())).values())).shape[0]
            if self.task.mode == "stream" and B != self.cfg.batch_size:
                raise BpttError(f"batch_size: expected {B} (the streams of the run's carried state), received {self.cfg.batch_size}")
            template, _ = self.model.initial_state(params, B)
            if sorted(c.state) != sorted(template):
                raise BpttError(f"checkpoint {path!r}: state: expected the carried state of {sorted(template)}, "
                                f"received {sorted(c.state)}")
            carried = {}
            for k, s in template.items():
                fields = c.state[k]
                for f, ref in zip(s._fields, s):
                    a = fields.get(f)
                    if a is None or a.shape != ref.shape or a.dtype != ref.dtype or not np.isfinite(a).all():
                        got = "none" if a is None else f"{a.dtype}{a.shape}" + ("" if np.isfinite(a).all() else " with NaN or inf")
                        raise BpttError(f"checkpoint {path!r}: state/{k}/{f}: expected finite {ref.dtype}{ref.shape}, received {got}")
                carried[k] = type(s)(*(fields[f] for f in s._fields))
        if self._tbptt is not None and carried is not None and "tbptt_history" in c.meta:
            self._tbptt.restore(carried, c.meta["tbptt_history"], c.extra or {}, params, where=f"checkpoint {path!r}: tbptt_history")
        trackers = {"skipped": 0, "first_loss": None, **c.meta["trackers"]}
        return params, opt_state, rng, carried, int(c.meta["step"]), trackers

    def _meta(self, step: int, rng: np.random.Generator, trackers: dict) -> dict[str, Any]:
        return {
            "bptt_version": __version__,
            "config": self.cfg.to_dict(),
            "step": step,
            "total_steps": self.total_steps,
            "rng": rng.bit_generator.state,
            "trackers": trackers,
            **self.task.meta(),
        }

    def _save(self, name: str, params, opt_state, carried, step, rng, trackers) -> None:
        meta, extra = self._meta(step, rng, trackers), None
        if self._tbptt is not None and carried is not None and opt_state is not None:
            # the windows of the next segments reach back into earlier ones: keep their caches
            meta["tbptt_history"], extra = self._tbptt.history()
        ckpt.save(
            os.path.join(self.run_dir, name),
            params,
            optim.flatten_state(opt_state) if opt_state is not None else {},
            carried,
            meta,
            extra,
        )

    # ---- the loop ------------------------------------------------------------------------------
    def run(self, on_step: Callable[[int, float], None] | None = None) -> TrainResult:
        """Train to the configured number of steps (or until stopped). `on_step(step, loss)` is
        called after every update. Releases the run folder when it ends."""
        if self._lock is None or not self._lock.held:
            raise BpttError("run: expected a Trainer that has not run, received one that has ended "
                            "(make a new one, e.g. Trainer(resume=folder))")
        try:
            return self._run(on_step)
        finally:
            self.close()

    def _run(self, on_step) -> TrainResult:
        cfg, task, model = self.cfg, self.task, self.model
        self._lock.record()
        removed = ckpt.remove_stale_temps(self.run_dir, RUN_FILES)
        if removed:
            self.log(f"removed {len(removed)} temporary file(s) a killed run left in {self.run_dir}")
        metrics_path = os.path.join(self.run_dir, "metrics.jsonl")
        if self.resumed:
            params, opt_state, rng, carried, start, trackers = self._resume_from
            dropped = _truncate_metrics(metrics_path, start)
            if dropped:
                self.log(f"metrics.jsonl: dropped {dropped} torn line(s) (written when the run was stopped mid-line)")
        else:
            params, opt_state, rng, carried, start, trackers = self._fresh()
            if os.path.exists(metrics_path):
                os.unlink(metrics_path)
        n_params = sum(v.size for v in params.values())
        limiter, threads = blas_threads(cfg.threads or default_threads())
        ckpt.write_json(
            os.path.join(self.run_dir, "config.json"),
            {**self._meta(start, rng, trackers), "model": repr(model), "parameters": n_params, "threads": threads},
        )
        if not self.resumed:  # a run folder always holds a checkpoint to resume from (or fall back to)
            self._save("checkpoint.npz", params, opt_state, carried, start, rng, trackers)
        self.log(f"bptt {__version__} | {task.describe()}")
        self.log(
            f"model: {cfg.cell} {cfg.layers}x{cfg.hidden}, {n_params:,} parameters, {cfg.dtype}; "
            f"{cfg.optimizer} lr {cfg.lr:g} ({cfg.schedule}), clip {cfg.clip or 'off'}; batch {cfg.batch_size} x "
            f"{cfg.seq_len} ({task.mode}); {self.total_steps} steps; {_algorithm(cfg)}; {threads}"
        )
        self.log(f"run folder: {self.run_dir}" + (f" (resumed at step {start})" if self.resumed else ""))

        stopped, last_eval, bad_in_a_row, saved_at = "done", None, 0, start
        t_train = trackers.get("train_seconds", 0.0)
        tokens_done, t_loop0 = 0, time.perf_counter()
        bar = _progress(cfg.progress, start, self.total_steps)
        ema = None
        step = start
        with limiter, _Interrupt() as interrupt, open(metrics_path, "a") as mfile:
            while step < self.total_steps:
                t0 = time.perf_counter()
                g = self._update_gradient(params, carried, step, rng)
                params, opt_state, skipped = self._guarded_update(g, params, opt_state, trackers["first_loss"])
                if trackers["first_loss"] is None and math.isfinite(g.loss):
                    trackers["first_loss"] = g.loss
                final = g.final_state if task.mode == "stream" else None
                carried = final if _finite(final) else None
                step += 1
                dt = time.perf_counter() - t0
                t_train += dt
                tokens_done += self.tokens_per_update
                bad_in_a_row = bad_in_a_row + 1 if skipped else 0
                clip = optim.find_states(opt_state, optim.ClipState)
                row = {"step": step, "split": "train", "loss": g.loss if math.isfinite(g.loss) else None,
                       "lr": _current_lr(self.optimizer, opt_state, cfg, self.total_steps), "time": round(t_train, 3),
                       "tokens_per_s": round(self.tokens_per_update / dt, 1)}
                if clip and not skipped:
                    row["grad_norm"] = clip[0].norm
                if skipped:
                    row["skipped"] = skipped
                    trackers["skipped"] = trackers.get("skipped", 0) + 1
                mfile.write(json.dumps(row) + "\n")
                if math.isfinite(g.loss):
                    ema = g.loss if ema is None else 0.95 * ema + 0.05 * g.loss
                if bar is not None:
                    bar.update(1)
                    post = {"loss": f"{ema:.4f}" if ema is not None else "nan", "tok/s": f"{self.tokens_per_update / dt:,.0f}"}
                    if last_eval:
                        post["val"] = f"{last_eval['loss']:.4f}"
                    bar.set_postfix(post, refresh=False)
                if bad_in_a_row >= cfg.diverge_after:
                    # the last checkpoint is left as it is: the last good state of the run
                    stopped = "diverged"
                    break
                last = step == self.total_steps
                out_of_time = cfg.max_seconds and t_train >= cfg.max_seconds
                if on_step is not None:
                    on_step(step, g.loss)
                regular = step % cfg.eval_every == 0 or last or out_of_time
                if (regular or interrupt.requested) and skipped:
                    # the weights of this point are not trusted: the folder keeps the last good files
                    if interrupt.requested or out_of_time:
                        stopped = "interrupted" if interrupt.requested else "time-limit"
                        break
                elif regular or interrupt.requested:
                    trackers["train_seconds"] = t_train
                    # evaluation (and what it decides) only at regular points, so that an
                    # interrupted and resumed run takes exactly the uninterrupted run's path
                    last_eval = task.evaluate(model, params) if regular else None
                    if last_eval is not None:
                        mfile.write(json.dumps({"step": step, "split": "val", **_json_safe(last_eval)}) + "\n")
                        finite = math.isfinite(last_eval["loss"])
                        improved = finite and (trackers["best"] is None or last_eval["loss"] < trackers["best"]["loss"])
                        if improved:
                            trackers["best"], trackers["since_best"] = dict(last_eval, step=step), 0
                            self._save("best.npz", params, None, None, step, rng, trackers)
                        else:
                            trackers["since_best"] += 1
                        if cfg.plateau_patience and trackers["since_best"] and trackers["since_best"] % cfg.plateau_patience == 0:
                            opt_state = optim.replace_states(
                                opt_state, optim.ScaleByLRState, lambda s: s._replace(scale=s.scale * cfg.plateau_factor)
                            )
                        _log_eval(self.log if bar is None else bar.write, task.kind, step, last_eval, ema)
                    mfile.flush()
                    self._save("checkpoint.npz", params, opt_state, carried, step, rng, trackers)
                    saved_at = step
                    if cfg.patience and trackers["since_best"] >= cfg.patience:
                        stopped = "early-stop"
                        break
                    if interrupt.requested:
                        stopped = "interrupted"
                        break
                    if out_of_time:
                        stopped = "time-limit"
                        break
        if bar is not None:
            bar.close()
        if stopped == "diverged":
            best = trackers.get("best")
            self.log(
                f"training diverged: the last {bad_in_a_row} updates (steps {step - bad_in_a_row + 1}-{step}) were skipped "
                f"(the last one: {skipped}); the last good checkpoint is {os.path.join(self.run_dir, 'checkpoint.npz')} "
                f"(step {saved_at})"
                + (f", the best is best.npz (step {best['step']}, validation {best['loss']:.4g})" if best else "")
                + f". Try a lower --lr or --clip: bptt train --resume {self.run_dir} --lr {cfg.lr / 10:g}"
            )
        elif stopped == "interrupted":
            saved = "saved" if saved_at == step else (
                f"not saved (its last update was skipped); the checkpoint holds step {saved_at}")
            self.log(f"interrupted at step {step}; {saved}. Continue with: bptt train --resume {self.run_dir}")
        elif stopped != "done":
            self.log(f"stopped at step {step}: {stopped}")
        plot_losses(metrics_path, os.path.join(self.run_dir, "loss.png"), f"{cfg.cell} on {task.source}")
        wall = time.perf_counter() - t_loop0
        return TrainResult(
            self.run_dir, step, params, trackers.get("best"), last_eval, stopped, t_train,
            tokens_done / wall if wall > 0 else 0.0,
            {"threads": threads, "parameters": n_params, "skipped": trackers.get("skipped", 0), "saved_at": saved_at},
        )


RUN_FILES = ("checkpoint.npz", "best.npz", "config.json", "metrics.jsonl", "loss.png", "prediction.png", "sample.txt")
EXPLODED = 100  # a loss over this many times the run's first one: the weights have diverged


def _finite(tree) -> bool:
    """Every array in a dict / NamedTuple / nested structure of arrays is finite (None is)."""
    if tree is None:
        return True
    if isinstance(tree, dict):
        return all(_finite(v) for v in tree.values())
    if isinstance(tree, (tuple, list)):
        return all(_finite(v) for v in tree)
    a = np.asarray(tree)
    return a.dtype.kind not in "fc" or bool(np.isfinite(a).all())


def _json_safe(d: dict) -> dict:
    return {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in d.items()}


def _algorithm(cfg: TrainConfig) -> str:
    if cfg.algorithm == "tbptt":
        how = f"TBPTT(k1={cfg.k1}, k2={cfg.k2})"
    elif cfg.algorithm in ("random", "artbp"):
        how = f"{cfg.algorithm} truncation, c = {cfg.truncation_prob:g}"
    else:
        how = "full BPTT per batch"
    return how + ("; batch update per pass" if cfg.update == "batch" else "; online update per batch")


def _current_lr(opt, state, cfg: TrainConfig, total: int) -> float:
    s = optim.find_states(state, optim.ScaleByLRState)
    if not s or cfg.optimizer in ("rprop", "quickprop"):
        return cfg.lr
    sched = schedule_for(cfg, total)
    count = max(s[0].count - 1, 0)
    return (sched(count) if callable(sched) else sched) * s[0].scale


def _log_eval(write, kind: str, step: int, ev: dict, ema: float | None) -> None:
    train = f"train {ema:.4f}, " if ema is not None else ""
    if kind == "text":
        write(f"step {step}: {train}validation {ev['loss']:.4f} nats/char ({ev['bpc']:.3f} bits/char, perplexity {ev['ppl']:.2f})")
    else:
        write(f"step {step}: {train}validation one-step NMSE {ev['nmse']:.4f} (MSE {ev['mse']:.4g})")


def _progress(enabled: bool, start: int, total: int):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=start, unit="step", dynamic_ncols=True, leave=True, disable=None)


def _truncate_metrics(path: str, step: int) -> int:
    """Keep only the metrics up to `step` (a resumed run rewrites what came after); a line torn
    by a killed run is dropped. Returns the number of torn lines dropped."""
    if not os.path.isfile(path):
        return 0
    keep, torn = [], 0
    with open(path, "rb") as f:
        for raw in f:
            try:
                row = json.loads(raw.decode())
                s = row["step"]
            except (ValueError, KeyError, TypeError):
                torn += bool(raw.strip())
                continue
            if isinstance(s, int) and s <= step:
                keep.append(raw if raw.endswith(b"\n") else raw + b"\n")
    ckpt.atomic_write(path, lambda f: f.write(b"".join(keep)))
    return torn
