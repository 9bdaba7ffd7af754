"""`bptt bench --train`: the whole training step of `bptt train` (a batch, forward, loss, BPTT,
clipping, Adam, the guard against non-finite updates, the metrics row) against the same step in
a plain PyTorch loop, alternated in one process.

Both train the default configuration (a character LSTM on the bundled novel, float32, B streams
of T steps carried from batch to batch, Adam with warm-up and cosine rate, clipping by global
norm) from the same weights (bptt's initialisation copied into nn.LSTM + nn.Linear) on the same
batches. bptt runs through its Trainer (what `bptt train` runs); a step's time is the time
between two of its on_step callbacks. torch runs the loop a user would write (one-hot inputs,
cross entropy, backward, clip_grad_norm_, Adam). Rounds of `steps` steps alternate (bptt, torch,
bptt, ...); the first round of each is warm-up; a figure is the median step over the others.
The losses of the first steps are compared (same weights, same batches: float32 rounding).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from typing import Any

import numpy as np

from .harness import _blas_limit, _kernels_line, _machine, set_threads

LOSS_TOL = 1e-3  # relative, first steps' losses of the two (float32, different summation orders)


def run_train(
    threads: int,
    steps: int = 50,
    repeats: int = 3,
    hidden: int = 256,
    batch_size: int = 32,
    seq_len: int = 100,
    data: str = "",
    log=print,
) -> dict[str, Any]:
    """Median step times of bptt's trainer and a plain torch loop (seconds), alternated rounds."""
    set_threads(threads)  # before torch is imported
    import torch

    from ..train.config import TrainConfig
    from ..train.tasks import make_task
    from ..train.trainer import Trainer, schedule_for

    torch.set_num_threads(threads)
    root = tempfile.mkdtemp(prefix="bptt_bench_train_")
    base = dict(data=data, cell="lstm", hidden=hidden, layers=1, optimizer="adam", batch_size=batch_size)
    base.update(seq_len=seq_len, steps=steps, eval_every=steps, threads=threads, progress=False, sample_length=0)
    base.update(dtype="float32")
    cfg = TrainConfig(**base, out=f"{root}/probe")
    task = make_task(cfg)
    model = task.build_model()
    params0 = model.init_params(np.random.default_rng(cfg.seed), cfg.dtype)  # what a Trainer starts from
    V, H = len(task.vocab), cfg.hidden

    net_of = lambda: torch_char_lstm(model, params0, V, H)  # noqa: E731
    sched = schedule_for(cfg, cfg.steps)

    def bptt_round(i: int) -> tuple[list[float], list[float]]:
        stamps, losses = [], []

        def on_step(step: int, loss: float) -> None:
            stamps.append(time.perf_counter())
            losses.append(loss)

        Trainer(TrainConfig(**base, out=f"{root}/bptt{i}"), log=lambda s: None).run(on_step=on_step)
        return list(np.diff(stamps)), losses

    def torch_round(i: int) -> tuple[list[float], list[float]]:
        times, losses = torch_train(net_of(), task, cfg, sched)
        return times[1:], losses  # (the first step: like bptt's, not timed)

    log(
        f"bptt bench --train: {task.describe()}\nLSTM {H}, B = {cfg.batch_size}, T = {cfg.seq_len}, float32, Adam "
        f"lr {cfg.lr:g} (cosine), clip {cfg.clip}; rounds of {steps} steps alternated, the first of each untimed, "
        f"{repeats} timed; {threads} thread(s); torch {torch.__version__}\n{_machine()}; {_kernels_line()}"
    )
    times: dict[str, list[float]] = {"bptt": [], "torch": []}
    first: dict[str, list[float]] = {}
    with _blas_limit(threads):
        for i in range(repeats + 1):
            for name, fn in (("bptt", bptt_round), ("torch", torch_round)):
                t, losses = fn(i)
                first.setdefault(name, losses[:5])
                if i:
                    times[name].extend(t)
                    log(f"  round {i}: {name} median step {1e3 * statistics.median(t):.1f} ms")
    diff = max(abs(a - b) / abs(b) for a, b in zip(first["bptt"], first["torch"]))
    if not diff <= LOSS_TOL:
        raise RuntimeError(f"bench --train: the first steps' losses of bptt and torch differ by {diff:.2e} (relative)")
    med = {n: statistics.median(t) for n, t in times.items()}
    tokens = cfg.batch_size * cfg.seq_len
    res = {
        "threads": threads,
        "hidden": H,
        "batch_size": cfg.batch_size,
        "seq_len": cfg.seq_len,
        "steps_per_round": steps,
        "repeats": repeats,
        "machine": _machine(),
        "torch": torch.__version__,
        "first_losses": first,
        "loss_difference": diff,
        "median_step_s": med,
        "tokens_per_s": {n: tokens / m for n, m in med.items()},
        "speedup": med["torch"] / med["bptt"],
        "step_times_s": times,
    }
    log(
        f"median step: bptt {1e3 * med['bptt']:.1f} ms ({tokens / med['bptt']:,.0f} tok/s), torch "
        f"{1e3 * med['torch']:.1f} ms ({tokens / med['torch']:,.0f} tok/s): bptt {res['speedup']:.2f}x torch; "
        f"first {len(first['bptt'])} losses agree to {diff:.1e}"
    )
    return res


def torch_char_lstm(model: Any, params: Any, V: int, H: int) -> Any:
    """nn.LSTM + nn.Linear on one-hot characters, holding bptt's weights (bptt.interop)."""
    import torch

    from ..interop import to_torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = torch.nn.LSTM(V, H)
            self.linear = torch.nn.Linear(H, V)

        def forward(self, x, state):
            y, state = self.rnn(torch.nn.functional.one_hot(x, V).float(), state)
            return self.linear(y), state

    net = Net()
    net.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in to_torch(model, params).items()})
    return net


def torch_train(net: Any, task: Any, cfg: Any, sched: Any) -> tuple[list[float], list[float]]:
    """The plain PyTorch loop over the task's batches as bptt train takes them (state carried
    and detached, reset where a pass starts), Adam at the schedule's rate, clipping by global
    norm: each step's seconds and loss."""
    import torch

    V = net.linear.out_features
    lr_at = sched if callable(sched) else (lambda step: sched)
    torch.manual_seed(cfg.seed)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8)
    rng, state, times, losses = np.random.default_rng(cfg.seed), None, [], []  # (stream batches draw nothing)
    for step in range(cfg.steps):
        t0 = time.perf_counter()
        x, y, reset, *_ = task.batch(step, rng)
        if reset:
            state = None
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        logits, state = net(torch.from_numpy(x.astype(np.int64)), state)
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, V), torch.from_numpy(y.astype(np.int64)).reshape(-1)
        )
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.clip)
        opt.step()
        state = tuple(s.detach() for s in state)
        losses.append(loss.item())
        times.append(time.perf_counter() - t0)
    return times, losses
