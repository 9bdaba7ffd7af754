"""Character-level LSTM on tiny Shakespeare (the classic char-rnn corpus), trained by `bptt`.

    python benchmarks/tinyshakespeare.py ../shared/data/tinyshakespeare/input.txt [--steps N] [...]

The last 10% of the characters are the validation split (the trainer's default). Prints the
configuration, the validation cross-entropy in nats/char (and bits/char) and the time taken.
Any TrainConfig key can be overridden as --key value (e.g. --hidden 512 --threads 2).
"""

from __future__ import annotations

import argparse
import sys
import time

# the configuration whose result the README reports
CONFIG = dict(
    cell="lstm",
    hidden=256,
    layers=1,
    dropout=0.0,
    recurrent_dropout=0.0,
    zoneout=0.0,
    zoneout_cell=0.0,
    input_dropout=0.0,
    embed=0,
    tie=False,
    optimizer="adam",
    lr=3e-3,
    weight_decay=0.0,
    schedule="cosine",
    warmup=100,
    min_lr=1e-4,
    clip=1.0,
    batch_size=32,
    seq_len=100,
    steps=3000,
    eval_every=500,
    seed=0,
    dtype="float32",
    threads=1,
    val_fraction=0.1,
    sample_length=300,
)


def main(argv=None) -> int:
    from bptt.generate import sample_text
    from bptt.train.config import TrainConfig
    from bptt.train.trainer import Trainer

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("path", help="tiny Shakespeare's input.txt")
    ap.add_argument("--out", default="runs/tinyshakespeare", help="run folder (default %(default)s)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    ap.add_argument("--target", type=float, default=1.70, help="validation nats/char to reach (default %(default)s)")
    for k, v in CONFIG.items():
        if isinstance(v, bool):
            ap.add_argument(f"--{k.replace('_', '-')}", action=argparse.BooleanOptionalAction, default=v)
        else:
            ap.add_argument(f"--{k.replace('_', '-')}", type=type(v), default=v)
    args = ap.parse_args(argv)
    cfg = TrainConfig(
        data=args.path,
        task="text",
        out=args.out,
        progress=not args.no_progress,
        **{k: getattr(args, k) for k in CONFIG},
    )
    t0 = time.perf_counter()
    try:
        trainer = Trainer(cfg)
    except ValueError as e:
        print(f"tinyshakespeare: {e}")
        return 2
    res = trainer.run()
    wall = time.perf_counter() - t0
    ev = res.last_eval or {}
    best = res.best or {}
    import numpy as np

    print(
        sample_text(
            trainer.model, res.params, trainer.task.vocab, "\n", cfg.sample_length, 0.8, None, np.random.default_rng(0)
        )
    )
    print(f"\nconfig: {', '.join(f'{k}={getattr(cfg, k)}' for k in CONFIG)}")
    print(
        f"validation after {res.step} steps: {ev.get('loss', float('nan')):.4f} nats/char "
        f"({ev.get('bpc', float('nan')):.4f} bits/char); best {best.get('loss', float('nan')):.4f} at step {best.get('step')}"
    )
    print(
        f"time: {res.train_seconds:.0f} s training, {wall:.0f} s in all, {res.tokens_per_s:,.0f} tokens/s, "
        f"{res.extra['threads']}"
    )
    ok = ev.get("loss", float("inf")) <= args.target
    print(f"target {args.target} nats/char: {'reached' if ok else 'NOT reached'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
