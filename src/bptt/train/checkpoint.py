"""Checkpoints: one .npz file holding parameters, optimizer state, the carried recurrent state
and a JSON record (config, step, RNG state, vocabulary, normalisation, trackers).

Written atomically: the file is written under a temporary name in the same folder, flushed to
disk, then renamed over the old one, so a crash never leaves a half-written checkpoint. Read with
allow_pickle=False: nothing in it can run code. A corrupted or truncated file raises ValueError.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np

FORMAT = "bptt-checkpoint-1"


def atomic_write(path: str, write) -> None:
    """Call write(file object) on a temp file beside `path`, fsync, then rename over `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str, obj: Any) -> None:
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()))


@dataclass
class Checkpoint:
    params: dict[str, np.ndarray]
    opt: dict[str, np.ndarray]  # flattened optimizer state (optim.unflatten_state restores it)
    state: dict[str, dict[str, np.ndarray]]  # carried state: direction key -> field -> (B, n)
    meta: dict[str, Any]
    extra: dict[str, np.ndarray] | None = None  # arrays of an algorithm's own state ('alg/...')


def save(path: str, params, opt_flat: dict[str, np.ndarray], state, meta: dict[str, Any],
         extra: dict[str, np.ndarray] | None = None) -> None:
    arrays: dict[str, np.ndarray] = {f"param/{k}": v for k, v in params.items()}
    arrays.update(extra or {})
    arrays.update(opt_flat)
    for key, s in (state or {}).items():
        for f, a in zip(s._fields, s):
            arrays[f"state/{key}/{f}"] = a
    arrays["meta"] = np.array(json.dumps(dict(meta, format=FORMAT)))
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load(path: str) -> Checkpoint:
    if not os.path.isfile(path):
        raise ValueError(f"checkpoint: expected an existing file, received {path!r}")
    try:
        with np.load(path, allow_pickle=False) as z:
            files = {k: z[k] for k in z.files}
        meta = json.loads(str(files.pop("meta")))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, json.JSONDecodeError) as e:
        raise ValueError(
            f"checkpoint {path!r}: expected a complete bptt checkpoint (.npz), received a corrupted "
            f"or truncated file ({type(e).__name__}: {e})"
        ) from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"checkpoint {path!r}: expected format {FORMAT!r}, received {meta.get('format')!r}")
    params = {k[6:]: v for k, v in files.items() if k.startswith("param/")}
    opt = {k: v for k, v in files.items() if k.startswith("opt")}
    state: dict[str, dict[str, np.ndarray]] = {}
    for k, v in files.items():
        if k.startswith("state/"):
            _, key, f = k.split("/", 2)
            state.setdefault(key, {})[f] = v
    extra = {k: v for k, v in files.items() if k.startswith("alg/")}
    return Checkpoint(params, opt, state, meta, extra)
