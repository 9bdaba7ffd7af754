"""Load N random mutations of a valid checkpoint and count what happened (the issue's 10,000).

    python scripts/mutate_checkpoints.py [--n 10000] [--seed 0]

Trains a small TBPTT(k1 < k2) run (its checkpoint holds parameters, Adam's state, the carried
state and TBPTT's window history with bptt classes named in its record), then mutates the bytes
of its checkpoint.npz: bytes replaced, bits flipped, inserted, deleted, overwritten, duplicated,
the file cut short; a third of the positions near a zip or npy header. Every load must either
raise bptt's own error or give back exactly the original content.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "train"))

import numpy as np  # noqa: E402
from fuzzing import mutate_and_load  # noqa: E402

from bptt.train import TrainConfig, Trainer  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        text = os.path.join(d, "words.txt")
        words = "the cat sat on a mat while a dog ran to the big red barn".split()
        open(text, "w").write(" ".join(np.random.default_rng(0).choice(words, 3000)))
        out = os.path.join(d, "run")
        Trainer(
            TrainConfig(
                data=text,
                hidden=12,
                steps=8,
                eval_every=4,
                batch_size=4,
                seq_len=5,
                algorithm="tbptt",
                k1=5,
                k2=12,
                cell="gru",
                out=out,
                progress=False,
                sample_length=0,
            ),
            log=lambda s: None,
        ).run()
        path = os.path.join(out, "checkpoint.npz")
        t0 = time.perf_counter()
        counts = mutate_and_load(path, args.n, args.seed)
        print(f"{args.n} mutations of {path} ({os.path.getsize(path):,} bytes) in {time.perf_counter() - t0:.1f} s:")
        for k in ("refused", "loaded_same", "loaded_changed", "other_exception"):
            print(f"  {k:16} {counts.get(k, 0)}")
        for k, v in sorted(counts.items()):
            if k.startswith(("other:", "changed by")):
                print(f"  {k}: {v}")
    return 0 if counts.get("loaded_changed", 0) == 0 and counts.get("other_exception", 0) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
