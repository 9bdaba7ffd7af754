"""A char-LSTM trained by bptt and the same network trained by PyTorch, side by side.

Both start from the same weights (bptt's initialisation, copied into nn.LSTM + nn.Linear through
bptt.interop; torch reads one-hot vectors where bptt gathers columns of W_ih), see the same
batches (B contiguous streams, state carried across segments and detached, reset at each pass),
and take the same optimizer steps (Adam, warm-up + cosine learning rate, gradient clipping by
global norm). bptt trains through its own Trainer; torch through a plain loop. Both are then
evaluated on the same validation split by the same rule (state carried across segments).

    python benchmarks/compare_torch.py [--data FILE] [--steps 500] [--hidden 128] ...

Prints both validation losses (nats/char) and their relative difference. Needs torch
(pip install torch==2.13.0); the BLAS/OpenMP threads are set to --threads for both.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="", help="text file (default: the bundled novel Botchan)")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=100)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    try:
        import torch
    except ImportError:
        print("compare_torch: expected PyTorch (pip install torch==2.13.0), received none installed")
        return 2
    from bptt.bench.train_step import torch_char_lstm, torch_train
    from bptt.data import text as txt
    from bptt.train.config import TrainConfig
    from bptt.train.tasks import make_task, stream_loss
    from bptt.train.trainer import Trainer, schedule_for

    torch.set_num_threads(args.threads)
    out = tempfile.mkdtemp(prefix="compare_torch_")
    cfg = TrainConfig(
        data=args.data,
        cell="lstm",
        hidden=args.hidden,
        layers=1,
        optimizer="adam",
        lr=args.lr,
        clip=args.clip,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        steps=args.steps,
        eval_every=args.steps,
        seed=args.seed,
        threads=args.threads,
        out=out,
        progress=False,
        sample_length=0,
        dtype="float32",
    )
    task = make_task(cfg)
    model = task.build_model()
    params0 = model.init_params(np.random.default_rng(cfg.seed), cfg.dtype)  # what Trainer starts from
    V, H = len(task.vocab), cfg.hidden
    print(
        f"{task.describe()}\nLSTM {H}, {cfg.steps} steps of {cfg.batch_size} x {cfg.seq_len}, "
        f"Adam lr {cfg.lr:g} (warm-up {cfg.warmup}, cosine to {cfg.min_lr:g}), clip {cfg.clip}, "
        f"seed {cfg.seed}, {args.threads} thread(s), torch {torch.__version__}"
    )

    # ---- bptt, through its trainer
    t0 = time.perf_counter()
    res = Trainer(cfg, log=lambda s: None).run()
    t_bptt = time.perf_counter() - t0
    ours = res.last_eval["loss"]

    # ---- torch, a plain loop over the same batches (the one `bptt bench --train` times)
    net = torch_char_lstm(model, params0, V, H)
    t0 = time.perf_counter()
    torch_train(net, task, cfg, schedule_for(cfg, cfg.steps))
    t_torch = time.perf_counter() - t0

    # evaluate torch's weights by bptt's evaluation rule (the same code for both)
    from bptt.interop import from_torch

    theirs_params = from_torch(model, {k: v.detach().numpy() for k, v in net.state_dict().items()})
    theirs, n = stream_loss(model, theirs_params, task.val_streams, cfg.seq_len)
    # and by torch's own forward pass, as a check of the evaluation itself
    with torch.no_grad():
        vs = torch.from_numpy(task.val_streams.astype(np.int64))
        total, st = 0.0, None
        for start, length in txt.segments(task.val_streams, cfg.seq_len):
            logits, st = net(vs[start : start + length], st)
            total += torch.nn.functional.cross_entropy(
                logits.reshape(-1, V), vs[start + 1 : start + 1 + length].reshape(-1), reduction="sum"
            ).item()
        theirs_torch_eval = total / n

    rel = abs(ours - theirs) / theirs
    print(f"validation loss (nats/char, {n:,} predictions):")
    print(f"  bptt   {ours:.5f}   training {t_bptt:6.1f} s (with its evaluation and checkpoints)")
    print(f"  torch  {theirs:.5f}   training {t_torch:6.1f} s   (its own forward pass gives {theirs_torch_eval:.5f})")
    print(f"  relative difference {100 * rel:.2f}%  ({'within' if rel <= 0.02 else 'NOT within'} 2%)")
    return 0 if rel <= 0.02 else 1


if __name__ == "__main__":
    sys.exit(main())
