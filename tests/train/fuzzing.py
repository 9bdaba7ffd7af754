"""Mutating a valid checkpoint's bytes and loading the result (tests/test_trust.py runs a few
hundred; scripts/mutate_checkpoints.py runs 10,000 and prints the counts)."""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections import Counter

import numpy as np

from bptt.errors import BpttError
from bptt.train import checkpoint as ckpt


def mutate(data: bytes, rng: np.random.Generator, hot: list[int]) -> tuple[bytes, str]:
    """One random change: a few bytes replaced, bits flipped, bytes inserted or deleted, a range
    overwritten or duplicated, or the file cut short. Positions are uniform, or (a third of the
    time) within 64 bytes of a zip or npy header, where a change is most likely to slip past."""
    n = len(data)

    def pos() -> int:
        if hot and rng.random() < 1 / 3:
            return int(min(n - 1, max(0, hot[rng.integers(len(hot))] + rng.integers(-8, 64))))
        return int(rng.integers(n))

    kind = rng.choice(["replace", "flip", "insert", "delete", "overwrite", "duplicate", "truncate"])
    b = bytearray(data)
    i = pos()
    if kind == "replace":
        for _ in range(rng.integers(1, 5)):
            b[pos()] = int(rng.integers(256))
    elif kind == "flip":
        b[i] ^= 1 << int(rng.integers(8))
    elif kind == "insert":
        b[i:i] = bytes(rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8))
    elif kind == "delete":
        del b[i : i + int(rng.integers(1, 64))]
    elif kind == "overwrite":
        k = int(rng.integers(1, 256))
        b[i : i + k] = bytes(rng.integers(0, 256, min(k, n - i), dtype=np.uint8))
    elif kind == "duplicate":
        k = int(rng.integers(1, 256))
        b[i:i] = b[i : i + k]
    else:
        b = b[: int(rng.integers(n))]
    return bytes(b), str(kind)


def _same(a: ckpt.Checkpoint, b: ckpt.Checkpoint) -> bool:
    def eq(x: dict, y: dict) -> bool:
        return x.keys() == y.keys() and all(
            x[k].dtype == y[k].dtype and x[k].shape == y[k].shape and np.array_equal(x[k], y[k], equal_nan=True)
            for k in x
        )

    return (
        eq(a.params, b.params)
        and eq(a.opt, b.opt)
        and eq(a.extra or {}, b.extra or {})
        and a.meta == b.meta
        and a.state.keys() == b.state.keys()
        and all(eq(a.state[k], b.state[k]) for k in a.state)
    )


def mutate_and_load(path: str, n: int, seed: int = 0) -> Counter:
    """Counts of: refused (bptt's own error), loaded_same (the original content: the change hit
    a part of the zip nobody reads), loaded_changed (a corrupted file taken as valid: must be 0),
    other_exception (anything else escaping: must be 0), and per mutation kind."""
    data = open(path, "rb").read()
    ref = ckpt.load(path)
    with zipfile.ZipFile(path) as z:
        hot = [i.header_offset for i in z.infolist()] + [i.header_offset + 30 + len(i.filename) for i in z.infolist()]
    hot += [len(data) - 22, data.rfind(b"PK\x01\x02")]
    rng = np.random.default_rng(seed)
    counts: Counter = Counter()
    with tempfile.TemporaryDirectory() as d:
        target = os.path.join(d, "checkpoint.npz")
        for _ in range(n):
            mutated, kind = mutate(data, rng, hot)
            with open(target, "wb") as f:
                f.write(mutated)
            try:
                got = ckpt.load(target)
            except BpttError:
                counts["refused"] += 1
                continue
            except Exception as e:  # noqa: BLE001 - what the test counts
                counts["other_exception"] += 1
                counts[f"other: {type(e).__name__}: {str(e)[:60]}"] += 1
                continue
            if _same(got, ref):
                counts["loaded_same"] += 1
            else:
                counts["loaded_changed"] += 1
                counts[f"changed by {kind}"] += 1
    return counts
