"""Checkpoints: one .npz file holding parameters, optimizer state, the carried recurrent state
and a JSON record (config, step, RNG state, vocabulary, normalisation, trackers).

Written atomically: the file is written under a temporary name in the same folder, flushed to
disk, then renamed over the old one, so a crash never leaves a half-written checkpoint.

Read as data, never as code. The file is a zip of .npy members; each member is read whole (zip's
CRC checked), its header parsed without pickle, its dtype limited to booleans, integers, floats
(and unicode text for the record), its declared size checked against the bytes present before
anything is allocated. The record says the format version and carries a SHA-256 checksum of the
record and of every array (name, dtype, shape, bytes): a file that is not complete, not this
format, or whose checksum does not match is refused with one BpttError naming the file, and so
is a record with a missing key or a value of the wrong type (`check_meta`). Nothing in the
file is imported or called: bptt's own classes in an algorithm's saved state are rebuilt from a
fixed registry (bptt._treeio).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data.text import MAX_WORDS
from ..errors import BpttError
from ..files import TMP_PREFIX, atomic_write, remove_stale_temps, write_json  # noqa: F401 (re-exported)

FORMAT = "bptt-checkpoint-2"
OLDER = ("bptt-checkpoint-1",)  # bptt 0.1: no checksum; read, with every other check
_KINDS = "biuf"  # bool, signed and unsigned integers, floats
_MAX_MEMBERS = 100_000


@dataclass
class Checkpoint:
    params: dict[str, np.ndarray]
    opt: dict[str, np.ndarray]  # flattened optimizer state (optim.unflatten_state restores it)
    state: dict[str, dict[str, np.ndarray]]  # carried state: direction key -> field -> (B, n)
    meta: dict[str, Any]
    extra: dict[str, np.ndarray] | None = None  # arrays of an algorithm's own state ('alg/...')


def checksum(meta_json: str, arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 of the record's JSON text and of every array's name, dtype, shape and bytes."""
    h = hashlib.sha256()
    h.update(meta_json.encode())
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(f"\0{k}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.reshape(-1).view(np.uint8) if a.size else b"")
    return h.hexdigest()


def save(
    path: str,
    params,
    opt_flat: dict[str, np.ndarray],
    state,
    meta: dict[str, Any],
    extra: dict[str, np.ndarray] | None = None,
) -> None:
    arrays: dict[str, np.ndarray] = {f"param/{k}": v for k, v in params.items()}
    arrays.update(extra or {})
    arrays.update(opt_flat)
    for key, s in (state or {}).items():
        for f, a in zip(s._fields, s):
            arrays[f"state/{key}/{f}"] = a
    meta_json = json.dumps(dict(meta, format=FORMAT), allow_nan=False)
    arrays["checksum"] = np.array(checksum(meta_json, arrays))
    arrays["meta"] = np.array(meta_json)
    atomic_write(path, lambda f: np.savez(f, **arrays))


def _corrupt(path: str, what: str, expected: str | None = None) -> BpttError:
    head = expected or f"checkpoint {path!r}: expected a complete bptt checkpoint (.npz)"
    return BpttError(f"{head}, received {what}")


def _npy(raw: bytes, name: str, path: str, expected: str | None = None) -> np.ndarray:
    """One .npy member parsed without pickle; only plain numeric (or unicode text) dtypes."""
    f = io.BytesIO(raw)
    try:
        major, _ = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
    except Exception as e:  # any malformed header: a corrupted file
        raise _corrupt(path, f"a damaged array header in {name!r} ({type(e).__name__})", expected) from None
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in _KINDS + "U":
        head = expected or f"checkpoint {path!r}: expected arrays of booleans, integers or floats"
        raise BpttError(f"{head}, received {name!r} of dtype {dtype} (object and structured arrays are never loaded)")
    size = math.prod(shape) * dtype.itemsize
    data = raw[f.tell() :]
    if len(data) != size:
        raise _corrupt(path, f"{name!r} with {len(data)} bytes of data where its header declares {size}", expected)
    a = np.frombuffer(data, dtype)
    return (a.reshape(shape[::-1]).T if fortran else a.reshape(shape)).copy()


def _read_npz(path: str, expected: str | None = None) -> dict[str, np.ndarray]:
    """The arrays of an .npz, read without pickle (member by member, CRCs, headers, sizes);
    `expected` the start of its errors ("FILE 'x.npz': expected ...") where not a checkpoint."""
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            names = [i.filename for i in infos]
            if len(names) > _MAX_MEMBERS or len(set(names)) != len(names):
                raise _corrupt(path, "a zip with repeated or too many members", expected)
            limit = os.path.getsize(path)
            raws = {}
            for i in infos:
                if not i.filename.endswith(".npy") or i.file_size > 64 * limit + 2**20:
                    raise _corrupt(path, f"an unexpected member {i.filename!r}", expected)
                raws[i.filename[:-4]] = z.read(i)  # checks the member's CRC
    except BpttError:
        raise
    except OSError as e:
        if isinstance(e, (PermissionError, IsADirectoryError)):
            head = expected or f"checkpoint {path!r}: expected a readable file"
            raise BpttError(f"{head}, received {e.strerror.lower()}") from None
        raise _corrupt(path, f"a damaged file ({type(e).__name__})", expected) from None
    except Exception as e:  # zipfile, zlib, struct... on damaged bytes: all mean the same to the user
        raise _corrupt(path, f"a corrupted or truncated file ({type(e).__name__}: {str(e)[:80]})", expected) from None
    return {k: _npy(raw, k, path, expected) for k, raw in raws.items()}


def load(path: str) -> Checkpoint:
    """The checkpoint in `path`, checked (see the module docstring); BpttError otherwise."""
    if not os.path.isfile(path):
        raise BpttError(f"checkpoint: expected an existing file, received {path!r}")
    files = _read_npz(path)
    meta_a, sum_a = files.pop("meta", None), files.pop("checksum", None)
    if meta_a is None or meta_a.dtype.kind != "U" or meta_a.shape != ():
        raise _corrupt(path, "a file without its record ('meta')")
    meta_json = str(meta_a)
    try:
        meta = json.loads(meta_json)
    except (ValueError, RecursionError):
        raise _corrupt(path, "a record ('meta') that is not JSON") from None
    if not isinstance(meta, dict):
        raise BpttError(f"checkpoint {path!r}: meta: expected a JSON object, received a {type(meta).__name__}")
    fmt = meta.get("format")
    if fmt not in (FORMAT, *OLDER):
        raise BpttError(f"checkpoint {path!r}: format: expected {FORMAT!r}, received {fmt!r}")
    for k, a in files.items():
        if a.dtype.kind not in _KINDS:
            raise BpttError(f"checkpoint {path!r}: {k}: expected a numeric array, received dtype {a.dtype}")
        if not k.startswith(("param/", "opt", "state/", "alg/")):
            raise BpttError(f"checkpoint {path!r}: expected arrays param/, opt, state/ and alg/, received {k!r}")
    if fmt == FORMAT:
        if sum_a is None or sum_a.dtype.kind != "U" or sum_a.shape != ():
            raise _corrupt(path, "a file without its checksum")
        if str(sum_a) != checksum(meta_json, files):
            raise _corrupt(path, "a file whose arrays or record do not match its checksum")
    params = {k[6:]: v for k, v in files.items() if k.startswith("param/")}
    if not params:
        raise BpttError(f"checkpoint {path!r}: expected parameters (param/...), received none")
    for k, v in params.items():
        if v.dtype.kind != "f" or not np.isfinite(v).all():
            raise BpttError(
                f"checkpoint {path!r}: param/{k}: expected finite floats, received "
                + (f"dtype {v.dtype}" if v.dtype.kind != "f" else "NaN or inf")
            )
    opt = {k: v for k, v in files.items() if k.startswith("opt")}
    state: dict[str, dict[str, np.ndarray]] = {}
    for k, v in files.items():
        if k.startswith("state/"):
            parts = k.split("/")
            if len(parts) != 3 or v.ndim != 2:
                raise BpttError(
                    f"checkpoint {path!r}: {k}: expected a (B, n) array state/<key>/<field>, received shape {v.shape}"
                )
            state.setdefault(parts[1], {})[parts[2]] = v
    extra = {k: v for k, v in files.items() if k.startswith("alg/")}
    check_meta(meta, path)
    return Checkpoint(params, opt, state, meta, extra)


def _typed(path: str, meta: dict, key: str, kinds: tuple, what: str, ok: Callable[[Any], bool] = lambda v: True):
    if key not in meta:
        raise BpttError(f"checkpoint {path!r}: meta.{key}: expected {what}, received nothing")
    v = meta[key]
    if isinstance(v, bool) and bool not in kinds or not isinstance(v, kinds) or not ok(v):
        raise BpttError(f"checkpoint {path!r}: meta.{key}: expected {what}, received {json.dumps(v)[:80]}")
    return v


def check_meta(meta: dict[str, Any], path: str) -> None:
    """The record's keys and JSON types; BpttError naming the file and key otherwise."""
    _typed(path, meta, "config", (dict,), "an object of training settings")
    _typed(path, meta, "step", (int,), "a non-negative integer", lambda v: v >= 0)
    _typed(
        path,
        meta,
        "rng",
        (dict,),
        "a NumPy PCG64 generator state",
        lambda v: (
            v.get("bit_generator") == "PCG64"
            and isinstance(v.get("state"), dict)
            and all(
                isinstance(v["state"].get(k), int) and not isinstance(v["state"].get(k), bool) and v["state"][k] >= 0
                for k in ("state", "inc")
            )
        ),
    )
    trackers = _typed(
        path,
        meta,
        "trackers",
        (dict,),
        "an object with best, since_best, train_seconds",
        lambda v: {"best", "since_best", "train_seconds"} <= set(v),
    )
    best = trackers["best"]
    if best is not None and not (
        isinstance(best, dict)
        and isinstance(best.get("loss"), (int, float))
        and math.isfinite(best["loss"])
        and isinstance(best.get("step"), int)
    ):
        raise BpttError(
            f"checkpoint {path!r}: meta.trackers.best: expected null or an object with a finite loss "
            f"and a step, received {json.dumps(best)[:80]}"
        )
    for k, kinds in (("since_best", (int,)), ("train_seconds", (int, float)), ("skipped", (int,))):
        v = trackers.get(k, 0)
        if isinstance(v, bool) or not isinstance(v, kinds) or not v >= 0 or not math.isfinite(v):
            raise BpttError(
                f"checkpoint {path!r}: meta.trackers.{k}: expected a finite non-negative number, received {v!r}"
            )
    first = trackers.get("first_loss")
    if first is not None and (
        isinstance(first, bool) or not isinstance(first, (int, float)) or not math.isfinite(first)
    ):
        raise BpttError(
            f"checkpoint {path!r}: meta.trackers.first_loss: expected null or a finite number, received {first!r}"
        )
    task = meta["config"].get("task", "text")
    if task == "text" and meta["config"].get("tokens") == "word":
        _typed(path, meta, "vocab", (list,), WORD_VOCAB, word_vocab_ok)
    elif task == "text":
        _typed(
            path,
            meta,
            "vocab",
            (str,),
            "the vocabulary (a non-empty string of distinct characters in sorted order)",
            lambda v: len(v) > 0 and list(v) == sorted(set(v)),
        )
    elif task == "series":
        _typed(
            path,
            meta,
            "normalizer",
            (dict,),
            NORMALIZER,
            normalizer_ok,
        )
        if "difference" in meta:
            _typed(
                path,
                meta,
                "difference",
                (dict,),
                DIFFERENCE,
                difference_ok,
            )
        if "series_columns" in meta:
            _typed(
                path,
                meta,
                "series_columns",
                (dict,),
                "an object with lists of column names 'inputs' and 'targets'",
                lambda v: (
                    set(v) == {"inputs", "targets"}
                    and all(isinstance(n, list) and n and all(isinstance(x, str) for x in n) for n in v.values())
                ),
            )


DIFFERENCE = (
    "an object with the orders d (0, 1 or 2) and s (0 or a period of at least 2): numbers, or lists of one per column"
)


WORD_VOCAB = "the vocabulary of a word run (a list of up to 1,000,000 distinct non-empty strings, <unk> among them)"


def word_vocab_ok(v: Any) -> bool:
    return (
        isinstance(v, list)
        and 0 < len(v) <= MAX_WORDS
        and all(isinstance(w, str) and 0 < len(w) <= 1000 for w in v)
        and len(set(v)) == len(v)
        and "<unk>" in v
    )


def difference_ok(v: Any) -> bool:
    """A series' differencing as JSON: {"d": 0|1|2, "s": 0 or a period >= 2}, or lists of as many
    of each, one per column."""
    if not (isinstance(v, dict) and set(v) == {"d", "s"}):
        return False
    d, s = v["d"], v["s"]
    if isinstance(d, list) != isinstance(s, list) or (isinstance(d, list) and not (0 < len(d) == len(s) <= 10_000)):
        return False
    ds, ss = (d, s) if isinstance(d, list) else ([d], [s])
    return (
        all(isinstance(x, int) and not isinstance(x, bool) for x in ds + ss)
        and all(x in (0, 1, 2) for x in ds)
        and all(x == 0 or x >= 2 for x in ss)
    )


NORMALIZER = (
    "an object with a finite mean and a positive std (numbers, or lists of one per column; per window, mean 0, "
    "std 1, an integer window >= 2 and a positive floor)"
)


def normalizer_ok(v: Any) -> bool:
    """A series normaliser as JSON: {"mean": m, "std": s}, finite numbers with s > 0, or lists
    of one per column (the same length); per window, also "window" (an integer >= 2) and "floor"
    (a finite number > 0, or a list of one per column) with mean 0 and std 1."""

    def finite(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    if isinstance(v, dict) and set(v) == {"mean", "std", "window", "floor"}:
        w, f, mean, std = v["window"], v["floor"], v["mean"], v["std"]
        if not (isinstance(w, int) and not isinstance(w, bool) and w >= 2):
            return False
        if isinstance(f, list) or isinstance(mean, list) or isinstance(std, list):  # columns: one of each per column
            lists = [x for x in (f, mean, std) if isinstance(x, list)]
            if len(lists) < 3 or not 0 < len(f) == len(mean) == len(std) <= 10_000:
                return False
            return (
                all(finite(x) and x > 0 for x in f)
                and all(finite(x) and x == 0 for x in mean)
                and all(finite(x) and x == 1 for x in std)
            )
        return finite(f) and f > 0 and mean == 0 and std == 1
    if not (isinstance(v, dict) and set(v) == {"mean", "std"}):
        return False
    mean, std = v["mean"], v["std"]
    if isinstance(mean, list) or isinstance(std, list):
        return (
            isinstance(mean, list)
            and isinstance(std, list)
            and 0 < len(mean) == len(std)
            and all(map(finite, mean + std))
            and all(s > 0 for s in std)
        )
    return finite(mean) and finite(std) and std > 0
