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
from . import checkpoint as ckpt
from .config import TrainConfig
from .plots import plot_losses
from .tasks import make_task

DIVERGED_AFTER = 20  # consecutive non-finite gradients before a run is declared diverged


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
        applied to its saved config, e.g. more steps)."""
        self.log = log
        self.resumed: ckpt.Checkpoint | None = None
        if resume:
            path = os.path.join(resume, "checkpoint.npz")
            if not os.path.isfile(path):
                raise ValueError(f"--resume: expected a run folder with checkpoint.npz, received {resume!r}")
            self.resumed = ckpt.load(path)
            saved = dict(self.resumed.meta["config"])
            saved.update(overrides or {})
            saved["out"] = resume
            cfg = TrainConfig.from_dict(saved, "checkpoint config")
        elif cfg is None:
            cfg = TrainConfig()
        self.cfg = cfg.validate()
        self.run_dir = _new_run_dir(self.cfg)
        if not resume and os.path.exists(os.path.join(self.run_dir, "checkpoint.npz")):
            raise ValueError(
                f"--out: expected a new run folder, received {self.run_dir!r} which already holds a run "
                f"(continue it with --resume {self.run_dir}, or choose another --out)"
            )
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
            state = g.final_state
            mean.add(g, x.shape[0] * x.shape[1])
        # the next pass starts from the initial state: nothing is carried across updates
        return mean.result(params)._replace(final_state=None)

    # ---- state ---------------------------------------------------------------------------------
    def _fresh(self):
        rng = np.random.default_rng(self.cfg.seed)
        params = self.model.init_params(rng, self.cfg.dtype)
        return params, self.optimizer.init(params), rng, None, 0, {"best": None, "since_best": 0, "train_seconds": 0.0}

    def _restore(self, c: ckpt.Checkpoint):
        params = c.params
        self.model.check_params(params)
        if np.dtype(self.cfg.dtype) != next(iter(params.values())).dtype:
            raise ValueError(f"dtype: expected {next(iter(params.values())).dtype} (the checkpoint's), received {self.cfg.dtype}")
        opt_state = optim.unflatten_state(self.optimizer.init(params), c.opt)
        rng = np.random.default_rng()
        rng.bit_generator.state = c.meta["rng"]
        carried = None
        if c.state:
            template, _ = self.model.initial_state(params, next(iter(next(iter(c.state.values())).values())).shape[0])
            carried = {k: type(s)(*(c.state[k][f] for f in s._fields)) for k, s in template.items()}
        return params, opt_state, rng, carried, int(c.meta["step"]), dict(c.meta["trackers"])

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
        called after every update."""
        cfg, task, model = self.cfg, self.task, self.model
        os.makedirs(self.run_dir, exist_ok=True)
        metrics_path = os.path.join(self.run_dir, "metrics.jsonl")
        if self.resumed:
            params, opt_state, rng, carried, start, trackers = self._restore(self.resumed)
            if self._tbptt is not None and carried is not None and "tbptt_history" in self.resumed.meta:
                self._tbptt.restore(carried, self.resumed.meta["tbptt_history"], self.resumed.extra or {})
            _truncate_metrics(metrics_path, start)
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
        self.log(f"bptt {__version__} | {task.describe()}")
        self.log(
            f"model: {cfg.cell} {cfg.layers}x{cfg.hidden}, {n_params:,} parameters, {cfg.dtype}; "
            f"{cfg.optimizer} lr {cfg.lr:g} ({cfg.schedule}), clip {cfg.clip or 'off'}; batch {cfg.batch_size} x "
            f"{cfg.seq_len} ({task.mode}); {self.total_steps} steps; {_algorithm(cfg)}; {threads}"
        )
        self.log(f"run folder: {self.run_dir}" + (f" (resumed at step {start})" if self.resumed else ""))

        stopped, last_eval, bad_in_a_row = "done", None, 0
        t_train = trackers.get("train_seconds", 0.0)
        tokens_done, t_loop0 = 0, time.perf_counter()
        bar = _progress(cfg.progress, start, self.total_steps)
        ema = None
        step = start
        with limiter, _Interrupt() as interrupt, open(metrics_path, "a") as mfile:
            while step < self.total_steps:
                t0 = time.perf_counter()
                g = self._update_gradient(params, carried, step, rng)
                updates, opt_state = self.optimizer.update(g.grads, opt_state, params)
                params = optim.apply_updates(params, updates)
                carried = g.final_state if task.mode == "stream" else None
                step += 1
                dt = time.perf_counter() - t0
                t_train += dt
                tokens_done += self.tokens_per_update
                skip = optim.find_states(opt_state, optim.SkipState)[0]
                bad_in_a_row = bad_in_a_row + 1 if skip.last_skipped else 0
                clip = optim.find_states(opt_state, optim.ClipState)
                row = {"step": step, "split": "train", "loss": g.loss if math.isfinite(g.loss) else None,
                       "lr": _current_lr(self.optimizer, opt_state, cfg, self.total_steps), "time": round(t_train, 3),
                       "tokens_per_s": round(self.tokens_per_update / dt, 1)}
                if clip:
                    row["grad_norm"] = clip[0].norm
                if skip.last_skipped:
                    row["skipped"] = True
                mfile.write(json.dumps(row) + "\n")
                if math.isfinite(g.loss):
                    ema = g.loss if ema is None else 0.95 * ema + 0.05 * g.loss
                if bar is not None:
                    bar.update(1)
                    post = {"loss": f"{ema:.4f}" if ema is not None else "nan", "tok/s": f"{self.tokens_per_update / dt:,.0f}"}
                    if last_eval:
                        post["val"] = f"{last_eval['loss']:.4f}"
                    bar.set_postfix(post, refresh=False)
                if bad_in_a_row >= DIVERGED_AFTER:  # the skipped updates left the weights finite: keep them
                    stopped = "diverged"
                    trackers["train_seconds"] = t_train
                    self._save("checkpoint.npz", params, opt_state, carried, step, rng, trackers)
                    break
                last = step == self.total_steps
                out_of_time = cfg.max_seconds and t_train >= cfg.max_seconds
                if on_step is not None:
                    on_step(step, g.loss)
                regular = step % cfg.eval_every == 0 or last or out_of_time
                if regular or interrupt.requested:
                    trackers["train_seconds"] = t_train
                    # evaluation (and what it decides) only at regular points, so that an
                    # interrupted and resumed run takes exactly the uninterrupted run's path
                    last_eval = task.evaluate(model, params) if regular else None
                    if last_eval is not None:
                        mfile.write(json.dumps({"step": step, "split": "val", **last_eval}) + "\n")
                        improved = trackers["best"] is None or last_eval["loss"] < trackers["best"]["loss"]
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
            self.log(
                f"training diverged: {DIVERGED_AFTER} consecutive non-finite gradients at step {step}; "
                f"the weights before them are saved in {self.run_dir} (try a lower --lr or --clip)"
            )
        elif stopped == "interrupted":
            self.log(f"interrupted at step {step}; saved. Continue with: bptt train --resume {self.run_dir}")
        elif stopped != "done":
            self.log(f"stopped at step {step}: {stopped}")
        plot_losses(metrics_path, os.path.join(self.run_dir, "loss.png"), f"{cfg.cell} on {task.source}")
        wall = time.perf_counter() - t_loop0
        return TrainResult(
            self.run_dir, step, params, trackers.get("best"), last_eval, stopped, t_train,
            tokens_done / wall if wall > 0 else 0.0, {"threads": threads, "parameters": n_params},
        )


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


def _truncate_metrics(path: str, step: int) -> None:
    """Keep only the metrics up to `step` (a resumed run rewrites what came after)."""
    if not os.path.isfile(path):
        return
    with open(path) as f:
        keep = [ln for ln in f if ln.strip() and json.loads(ln)["step"] <= step]
    ckpt.atomic_write(path, lambda f: f.write("".join(keep).encode()))
