"""`bptt export RUN` and `bptt import FILE`: a run's weights as a PyTorch state_dict file, and back.

export writes the parameters under the names of torch's modules (bptt.interop):

    rnn.weight_ih_l{k}[_reverse], rnn.weight_hh_l{k}, rnn.bias_ih_l{k}, rnn.bias_hh_l{k}
                                  torch.nn.RNN / GRU / LSTM(...).state_dict(), prefixed 'rnn.'
    linear.weight, linear.bias    the readout, torch.nn.Linear
    embedding.weight              an nn.Embedding, where the run has --embed E

A text run without --embed reads token ids as one-hot vectors: its rnn.weight_ih_l0 takes the
vocabulary as its input size. The file is safetensors (the optional extra `bptt[safetensors]`)
or .npz; FILE.json beside it (and the safetensors metadata, key 'bptt') describes the
architecture (interop.torch_spec), the dtype, the vocabulary or the series normaliser (and
columns: the input and target columns, one mean and std per column where there are several),
bptt's version and the prefixes. Written atomically (temp file, then rename).

import makes a run folder from such a file, or from any torch state_dict of that shape saved
with safetensors.torch.save_file or numpy.savez: config.json and checkpoint.npz (step 0, a fresh
optimizer state), ready for sample, forecast, evaluate, diagnose and train --resume. The file is
read as data, never as code: safetensors is a JSON header and raw bytes; an .npz goes through
the checkpoint reader (no pickle, numeric dtypes, declared sizes checked); a torch pickle (.pt)
is refused, never opened. Names, shapes, dtypes (float32/float64, one for all), finiteness and
the description's fields are checked; each refusal is one BpttError.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import json
import os
import re
import zipfile
from typing import Any

import numpy as np

from .. import interop, optim
from .._version import __version__
from ..cells import ALIASES
from ..data import series as ser
from ..data import text as txt
from ..errors import BpttError, one_of
from ..files import atomic_write, write_json
from ..model import Model
from . import checkpoint as ckpt
from .argtypes import output_file
from .config import TrainConfig
from .folder import FILES, RunFolder
from .runs import load_run
from .tasks import build_model

SPEC_FORMAT = "bptt-torch-weights-1"
INSTALL = "pip install 'bptt[safetensors]'"
FORMATS = ("safetensors", "npz")
PICKLES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle", ".tar")
_ST_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64"}
_RNN_KEY = re.compile(r"^(weight|bias)_(ih|hh)_l(\d+)(_reverse)?$")
_GATES = {1: "elman", 3: "gru", 4: "lstm"}
_MAX_JSON = 16 * 2**20


def has_safetensors() -> bool:
    return importlib.util.find_spec("safetensors") is not None


def sidecar(path: str) -> str:
    """The JSON description written beside a weights file: FILE.json."""
    return path + ".json"


# ---- writing ------------------------------------------------------------------------------------
def write_weights(path: str, model: Model, params, fmt: str, info: dict[str, Any] | None = None) -> dict[str, Any]:
    """The model's parameters under torch's names into `path` (fmt 'safetensors' or 'npz'), and
    the description (returned) into FILE.json and, for safetensors, the file's metadata."""
    if fmt == "safetensors" and not has_safetensors():
        raise BpttError(f"--format: expected the safetensors package for safetensors ({INSTALL}), received none")
    tensors = {k: np.ascontiguousarray(v) for k, v in interop.to_torch(model, params).items()}
    dtype = model.check_params(params)
    spec = {"format": SPEC_FORMAT, "bptt_version": __version__, **interop.torch_spec(model), "dtype": str(dtype)}
    spec.update(info or {})
    text = json.dumps(spec, allow_nan=False)
    if fmt == "safetensors":
        from safetensors.numpy import save

        data = save(tensors, metadata={"format": "pt", "bptt": text})
        atomic_write(path, lambda f: f.write(data))
    else:
        atomic_write(path, lambda f: np.savez(f, **tensors))
    write_json(sidecar(path), spec)
    return spec


def _output(args: argparse.Namespace, run_folder: str) -> tuple[str, str, str]:
    """(path, format, a note on how the format was chosen)."""
    fmt, note = args.format, ""
    if args.out:
        ext = os.path.splitext(args.out)[1].lower()
        if ext not in (".safetensors", ".npz"):
            raise BpttError(f"--out: expected a file name ending in .safetensors or .npz, received {args.out!r}")
        if fmt and fmt != ext[1:]:
            raise BpttError(f"--format: expected {ext[1:]} for --out {args.out!r}, received {fmt}")
        fmt = ext[1:]
    if fmt is None:
        fmt = "safetensors" if has_safetensors() else "npz"
        note = "" if fmt == "safetensors" else f"; safetensors is not installed ({INSTALL}), so npz"
    if fmt == "safetensors" and not has_safetensors():
        raise BpttError(f"--format: expected the safetensors package for safetensors ({INSTALL}), received none")
    path = output_file("--out", args.out or os.path.join(run_folder, f"model.{fmt}"))
    # (resolved: a link to the run folder, or a link as --out, must not reach the run's files)
    own = {os.path.realpath(os.path.join(run_folder, n)) for n in FILES}
    for p in (path, sidecar(path)):
        if os.path.realpath(p) in own:
            raise BpttError(f"--out: expected a file other than the run's own files, received {args.out!r}")
    return path, fmt, note


def cmd_export(args: argparse.Namespace) -> int:
    run = load_run(args.run, args.checkpoint)
    problem = interop.torch_problem(run.model)
    if problem is not None:
        raise BpttError(
            f"RUN: expected a run whose model maps onto torch, {interop.EXPECTED}, received {problem} "
            f"(a --cell {run.cfg.cell} run of --task {run.cfg.task})"
        )
    path, fmt, note = _output(args, run.folder)
    info: dict[str, Any] = {"task": run.cfg.task}
    if run.cfg.task == "text":
        info["vocab"] = run.meta["vocab"]
    elif run.cfg.task == "series":
        info["normalizer"] = dict(run.meta["normalizer"])
        if "difference" in run.meta:  # the model's inputs and outputs are differences of the series
            info["difference"] = dict(run.meta["difference"])
        name = run.meta.get("series_name")  # (one column; a run of several records its columns)
        cols = run.meta.get("series_columns") or ({"inputs": [name], "targets": [name]} if name else None)
        if cols:
            info["columns"] = dict(cols)
    info["source"] = {"run": run.folder, "checkpoint": run.which, "step": run.meta["step"]}
    info["train_config"] = run.cfg.to_dict()  # bptt import takes the run's settings back from it
    spec = write_weights(path, run.model, run.params, fmt, info)
    print(
        f"wrote {path} ({fmt}{note}): {len(interop.to_torch(run.model, run.params))} tensors, {spec['dtype']}, "
        f"{describe(spec)}, from the run's {run.which} (step {run.meta['step']})"
    )
    if spec["input"] == "one-hot":
        print(
            f"input: token ids as one-hot vectors (no embedding): rnn.weight_ih_l0 takes the vocabulary, "
            f"input_size {spec['input_size']}"
        )
    print(
        f"wrote {sidecar(path)} (the architecture" + (", also in the file's metadata)" if fmt == "safetensors" else ")")
    )
    return 0


def describe(spec: dict[str, Any]) -> str:
    """'LSTM 65 -> 256 x 2 -> Linear 65' and the like."""
    rnn = spec["torch"]["rnn"]
    emb = f"Embedding {spec['vocab_size']}x{spec['embedding_dim']} -> " if spec.get("embedding_dim") else ""
    nl = f" ({spec['nonlinearity']})" if spec.get("nonlinearity") else ""
    bi = ", bidirectional" if spec["bidirectional"] else ""
    tied = " (its weight the embedding's)" if spec.get("tie_weights") else ""
    return (
        f"{emb}{rnn['module']}{nl} {spec['input_size']} -> {spec['hidden_size']} x {spec['num_layers']}{bi} "
        f"-> Linear {spec['output_size']}{tied}"
    )


# ---- reading ------------------------------------------------------------------------------------
def _kind(path: str) -> str:
    """'safetensors' or 'npz' from the name or the first bytes; a pickle is refused unopened."""
    if not os.path.isfile(path):
        what = "a folder" if os.path.isdir(path) else "no such file"
        raise BpttError(f"FILE: expected a .safetensors or .npz file, received {path!r} ({what})")
    refuse = (
        f"FILE: expected a .safetensors or .npz file, received {path!r}, a pickle (torch.save's format): bptt never "
        "unpickles a file "
        "(loading a pickle runs the code it names); save it with safetensors.torch.save_file(model.state_dict(), "
        "'model.safetensors') or numpy.savez"
    )
    ext = os.path.splitext(path)[1].lower()
    if ext in PICKLES:
        raise BpttError(refuse)
    with open(path, "rb") as f:
        head = f.read(9)
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as z:
                if any(n.endswith(".pkl") for n in z.namelist()):
                    raise BpttError(refuse)
        except zipfile.BadZipFile:
            pass  # the npz reader names the damage
        return "npz"
    if head[:1] == b"\x80":  # a pickle's protocol opcode
        raise BpttError(refuse)
    if ext == ".safetensors" or head[8:9] == b"{":
        return "safetensors"
    if ext == ".npz":
        return "npz"
    raise BpttError(f"FILE: expected a .safetensors or .npz file, received {path!r} (neither by name nor by content)")


def read_weights(path: str) -> tuple[dict[str, np.ndarray], dict[str, Any] | None, str]:
    """(tensors, the description or None, format) of a safetensors or .npz file, read as data;
    float32/float64 tensors only."""
    fmt = _kind(path)
    where = f"FILE {path!r}"
    tensors: dict[str, np.ndarray] = {}
    text = None
    if fmt == "safetensors":
        if not has_safetensors():
            raise BpttError(f"FILE: expected the safetensors package to read {path!r} ({INSTALL}), received none")
        from safetensors import safe_open

        try:
            with safe_open(path, framework="np") as f:
                text = (f.metadata() or {}).get("bptt")
                for k in f.keys():
                    dt = f.get_slice(k).get_dtype()
                    if dt not in ("F32", "F64"):
                        raise BpttError(f"{where}: {k}: expected float32 or float64, received {_ST_DTYPES.get(dt, dt)}")
                    tensors[k] = f.get_tensor(k)
        except BpttError:
            raise
        except Exception as e:  # the reader's own errors on damaged bytes: one meaning for the user
            raise BpttError(
                f"{where}: expected a complete safetensors file, received a damaged one ({type(e).__name__}: "
                f"{' '.join(str(e).split())[:100]})"
            ) from None
    else:
        tensors = ckpt._read_npz(path, f"{where}: expected a .npz of float arrays (numpy.savez)")
        for k, a in tensors.items():
            if a.dtype not in (np.float32, np.float64):
                raise BpttError(f"{where}: {k}: expected float32 or float64, received {a.dtype}")
    side = sidecar(path)
    if text is None and os.path.isfile(side):
        if os.path.getsize(side) > _MAX_JSON:
            raise BpttError(f"{side!r}: expected a description under {_MAX_JSON} bytes, received a larger file")
        with open(side, "rb") as f:
            text = f.read().decode("utf-8", errors="replace")
        where = f"description {side!r}"
    else:
        where += " metadata 'bptt'"
    return tensors, (None if text is None else _parse_description(text, where)), fmt


def _parse_description(text: str, where: str) -> dict[str, Any]:
    """The description's fields that import uses, each of its JSON type; BpttError otherwise."""
    try:
        d = json.loads(text)
    except (ValueError, RecursionError):
        raise BpttError(f"{where}: expected JSON, received text that does not parse") from None
    if not isinstance(d, dict):
        raise BpttError(f"{where}: expected a JSON object, received a {type(d).__name__}")
    if d.get("format") != SPEC_FORMAT:
        raise BpttError(f"{where}: format: expected {SPEC_FORMAT!r}, received {json.dumps(d.get('format'))[:60]}")

    def pos(v):
        return isinstance(v, int) and not isinstance(v, bool) and v > 0

    rules = {
        "cell": ("elman, gru or lstm", lambda v: v in interop.TORCH_MODULES),
        "hidden_size": ("a positive integer", pos),
        "num_layers": ("a positive integer", pos),
        "bidirectional": ("true or false", lambda v: isinstance(v, bool)),
        "nonlinearity": ("null, 'tanh' or 'relu'", lambda v: v in (None, "tanh", "relu")),
        "embedding_dim": ("null or a positive integer", lambda v: v is None or pos(v)),
        "tie_weights": ("true or false", lambda v: isinstance(v, bool)),
        "dtype": ("'float32' or 'float64'", lambda v: v in ("float32", "float64")),
        "task": ("a task name", lambda v: isinstance(v, str)),
        "train_config": ("an object of training settings", lambda v: isinstance(v, dict)),
        "vocab": (
            "the vocabulary: a non-empty string of distinct characters in sorted order, or a word run's list of "
            "distinct words with <unk>",
            lambda v: (isinstance(v, str) and len(v) > 0 and list(v) == sorted(set(v))) or ckpt.word_vocab_ok(v),
        ),
        "normalizer": (ckpt.NORMALIZER, ckpt.normalizer_ok),
        "difference": (ckpt.DIFFERENCE, ckpt.difference_ok),
        "columns": (
            "an object with lists of column names 'inputs' and 'targets'",
            lambda v: (
                isinstance(v, dict)
                and set(v) == {"inputs", "targets"}
                and all(isinstance(n, list) and n and all(isinstance(x, str) for x in n) for n in v.values())
            ),
        ),
        "prefixes": (
            "an object of module prefixes among embedding, rnn, linear",
            lambda v: (
                isinstance(v, dict) and set(v) <= set(interop.PREFIXES) and all(isinstance(p, str) for p in v.values())
            ),
        ),
    }
    for key, (what, ok) in rules.items():
        if key in d and not ok(d[key]):
            raise BpttError(f"{where}: {key}: expected {what}, received {json.dumps(d[key])[:80]}")
    return d


def _prefixes(given: str | None, meta: dict[str, Any] | None) -> dict[str, str]:
    """module -> the prefix its names carry in the file (--names > the description > torch_spec's)."""
    out = dict(interop.PREFIXES)
    if meta and "prefixes" in meta:
        out.update(meta["prefixes"])
    for part in (given or "").split(","):
        if not part.strip():
            continue
        m, eq, p = part.strip().partition("=")
        if not eq or m not in interop.PREFIXES:
            raise BpttError(
                f"--names: expected MODULE=PREFIX pairs with MODULE among embedding, rnn, linear (e.g. rnn=lstm,linear=fc), "
                f"received {part.strip()!r}"
            )
        out[m] = p if not p or p.endswith(".") else p + "."
    return out


def _renamed(tensors: dict[str, np.ndarray], prefixes: dict[str, str]) -> dict[str, np.ndarray]:
    """The tensors under interop's names ('rnn.', 'linear.', 'embedding.'); others unchanged."""
    order = sorted(prefixes.items(), key=lambda kv: -len(kv[1]))  # the longest prefix first; '' last
    out: dict[str, np.ndarray] = {}
    was: dict[str, str] = {}
    for k, a in tensors.items():
        m = next((m for m, p in order if k.startswith(p)), None)
        name = interop.PREFIXES[m] + k[len(prefixes[m]) :] if m else k
        if name in out:
            raise BpttError(f"--names: expected one entry per name, received {was[name]!r} and {k!r} both as {name!r}")
        out[name], was[name] = a, k
    return out


# ---- import -------------------------------------------------------------------------------------
def _infer(t: dict[str, np.ndarray], where: str) -> dict[str, Any]:
    """cell, hidden, layers, bidirectional, embedding and sizes from the tensors' names and shapes."""
    w = t.get("rnn.weight_hh_l0")
    if w is None or w.ndim != 2 or w.shape[1] == 0 or w.shape[0] % w.shape[1] or w.shape[0] // w.shape[1] not in _GATES:
        got = "none" if w is None else f"shape {w.shape}"
        raise BpttError(
            f"{where}: rnn.weight_hh_l0: expected an array of shape (G*H, H), G = 1 (nn.RNN), 3 (nn.GRU) or 4 "
            f"(nn.LSTM), received {got} (other prefixes than 'rnn.' are mapped with --names)"
        )
    layers, bidirectional = 1, False
    for k in t:
        m = _RNN_KEY.match(k[4:]) if k.startswith("rnn.") else None
        if m:
            layers, bidirectional = max(layers, int(m.group(3)) + 1), bidirectional or bool(m.group(4))
    emb = t.get("embedding.weight")
    ih, lin = t.get("rnn.weight_ih_l0"), t.get("linear.weight")
    return {
        "cell": _GATES[w.shape[0] // w.shape[1]],
        "hidden": int(w.shape[1]),
        "layers": layers,
        "bidirectional": bidirectional,
        "embed": int(emb.shape[1]) if emb is not None and emb.ndim == 2 else 0,
        "input_size": int(ih.shape[1]) if ih is not None and ih.ndim == 2 else None,
        "output_size": int(lin.shape[0]) if lin is not None and lin.ndim == 2 else None,
    }


def _pick(flag: Any, meta: dict[str, Any] | None, key: str, inferred: Any) -> Any:
    if flag is not None:
        return flag
    if meta and meta.get(key) is not None:
        return meta[key]
    return inferred


def cmd_import(args: argparse.Namespace) -> int:
    path = args.file
    raw, meta, fmt = read_weights(path)
    where = f"FILE {path!r}"
    if not raw:
        raise BpttError(f"{where}: expected the tensors of a torch state_dict, received none")
    t = _renamed(raw, _prefixes(args.names, meta))
    inf = _infer(t, where)
    cell = _pick(args.cell, meta, "cell", inf["cell"])
    cell = ALIASES.get(cell, cell)
    if cell not in interop.TORCH_MODULES:
        raise one_of("--cell", cell, interop.TORCH_MODULES)
    hidden = _pick(args.hidden, meta, "hidden_size", inf["hidden"])
    layers = _pick(args.layers, meta, "num_layers", inf["layers"])
    if inf["bidirectional"] or (meta or {}).get("bidirectional"):
        raise BpttError(
            f"{where}: expected a unidirectional network (a run folder's model reads its sequence forward: sample, "
            "forecast and train need that), received a bidirectional one"
        )
    if cell == "elman" and ((meta or {}).get("nonlinearity") or "tanh") != "tanh":
        raise BpttError(
            f"{where}: nonlinearity: expected 'tanh' (a run's Elman networks), received {meta['nonlinearity']!r}"
        )
    dtypes = sorted({str(a.dtype) for a in t.values()})
    if len(dtypes) > 1:
        raise BpttError(f"{where}: expected one dtype for all tensors, received {', '.join(dtypes)}")
    dtype = dtypes[0]
    if meta and meta.get("dtype", dtype) != dtype:
        raise BpttError(f"{where}: expected tensors of the description's dtype {meta['dtype']}, received {dtype}")
    series_shaped = not inf["embed"] and inf["input_size"] == 1 and inf["output_size"] == 1
    task = _pick(args.task, meta, "task", "series" if series_shaped else "text")
    if task not in ("text", "series"):
        raise BpttError(
            f"{where}: expected a text or series model (what sample, forecast and evaluate read), received task {task!r}"
        )
    saved = (meta or {}).get("train_config") or {}  # the exported run's settings, where bptt exported it
    base = TrainConfig.from_dict(saved, f"{where}: train_config") if task == saved.get("task", task) else TrainConfig()
    imported = {"file": os.path.abspath(path), "format": fmt, "sha256": _sha256(path)}
    cfg = dataclasses.replace(
        base,
        task=task,
        data=base.data if args.data is None else args.data,
        column=base.column if args.column is None else args.column,
        diff=base.diff if args.diff is None else args.diff,
        seasonal_diff=base.seasonal_diff if args.seasonal_diff is None else args.seasonal_diff,
        cell=cell,
        hidden=hidden,
        layers=layers,
        embed=inf["embed"] if task == "text" else 0,
        tie=task == "text" and bool((meta or {}).get("tie_weights", base.tie)),
        tokens="word" if task == "text" and isinstance((meta or {}).get("vocab"), list) else base.tokens,
        dtype=dtype,
        out=args.out,
        extra={**base.extra, "imported": imported},
    )
    cfg.validate()
    task_meta, source = _task_meta(cfg, meta, args, where)
    if task == "series":  # the differencing: the description's, else as asked; the config says the same
        task_meta, source = _differencing(task_meta, meta or {}, args, source)
        cfg = dataclasses.replace(cfg, **_config_differencing(task_meta))
    model = build_model(cfg, len(task_meta["vocab"]) if task == "text" else None)
    params = _params(model, t, where, task_meta, dtype)
    _write_run(cfg, model, params, task_meta)
    n = sum(a.size for a in params.values())
    spec = interop.torch_spec(model)
    print(
        f"imported {path} ({fmt}, {len(t)} tensors, {dtype}): {describe(spec)}, {n:,} parameters; --task {task}, "
        + source
    )
    if cell == "elman" and not (meta or {}).get("nonlinearity"):
        print("nonlinearity: tanh (torch's default; the file does not say)")
    if not cfg.data:
        print("no --data: bptt train --resume would train on " + ("the bundled novel" if task == "text" else "nothing"))
    print(f"run folder: {args.out} (bptt sample/forecast/evaluate/diagnose {args.out}, bptt train --resume {args.out})")
    return 0


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            h.update(block)
    return h.hexdigest()


def _task_meta(cfg: TrainConfig, meta: dict[str, Any] | None, args, where: str) -> tuple[dict[str, Any], str]:
    """({'vocab': ...} or {'normalizer': ...}, where it came from)."""
    meta = meta or {}
    if cfg.task == "text":
        for flag in ("mean", "std"):
            if getattr(args, flag) is not None:
                raise BpttError(f"--{flag}: expected only for a series model, received {getattr(args, flag)} for text")
        unit = "words" if cfg.tokens == "word" else "characters"
        if "vocab" in meta:
            return {"vocab": meta["vocab"]}, f"a vocabulary of {len(meta['vocab'])} {unit} (from the description)"
        if not cfg.data:
            raise BpttError(
                f"--data: expected the text the model was trained on (its characters are the vocabulary; {where} "
                "carries none), received none"
            )
        if cfg.tokens == "word":  # as bptt train makes it: the most frequent words of the training part
            from .tasks import TextTask

            words = TextTask(cfg).vocab.meta()
            return {"vocab": words}, f"a vocabulary of {len(words)} words (those of {cfg.data}, as bptt train makes it)"
        vocab = txt.Vocab.from_text(txt.read_text(cfg.data)).chars
        return {"vocab": vocab}, f"a vocabulary of {len(vocab)} characters (those of {cfg.data})"
    from .tasks import SeriesTask, series_sizes

    columns = series_sizes(cfg) != (1, 1) or cfg.target not in ("", cfg.column)  # several columns
    if columns:
        return _columns_meta(cfg, meta, args, where)
    if (args.mean is None) != (args.std is None):
        raise BpttError(
            f"--mean, --std: expected both or neither, received only --{'mean' if args.std is None else 'std'}"
        )
    described = dict(meta.get("normalizer") or {})
    if args.mean is not None and (cfg.normalize == "window" or described.get("window")):
        raise BpttError(
            f"--mean, --std: expected none for a model trained with --normalize window (each window by its own mean "
            f"and spread), received --mean {args.mean} --std {args.std}"
        )
    _window_settings(described, cfg, where)
    if args.mean is not None:
        if not args.std > 0:
            raise BpttError(f"--std: expected a number > 0, received {args.std}")
        norm = {"mean": float(args.mean), "std": float(args.std)}
        how = "--mean and --std"
    elif "normalizer" in meta:
        norm, how = dict(meta["normalizer"]), "the description"
    elif cfg.data:
        task = SeriesTask(cfg)  # as bptt train fits it: on the training part of --data
        norm, how = task.norm.as_dict(), f"{cfg.data}, fitted as bptt train does"
        if task.diff and "difference" not in meta:
            meta = {**meta, "difference": task.diff.as_dict()}
    else:
        raise BpttError(
            f"--mean, --std: expected the series normaliser z = (v - mean) / std the model was trained with ({where} "
            "carries none; or --data to fit it as bptt train does), received none"
        )
    out: dict[str, Any] = {"normalizer": norm}
    said = f"normaliser mean {norm['mean']:.6g}, std {norm['std']:.6g} (from {how})"
    if norm.get("window"):
        said = f"each window of {norm['window']} inputs normalised by its own mean and spread (from {how})"
    if "difference" in meta:
        if isinstance(meta["difference"]["d"], list):
            raise BpttError(
                f"{where}: difference: expected the orders d and s of one column (numbers), received "
                f"{json.dumps(meta['difference'])[:80]}"
            )
        out["difference"] = dict(meta["difference"])
        said += f", {ser.Difference(**meta['difference']).describe()}"
    return out, said


def _differencing(task_meta: dict[str, Any], meta: dict[str, Any], args, source: str) -> tuple[dict[str, Any], str]:
    """The model's differencing: the description's (where it gives one; --diff or --seasonal-diff
    asking for another is one line), else the one fitted on --data, else as --diff and
    --seasonal-diff say (none where they say nothing)."""
    cols = task_meta.get("series_columns")
    names = ser.used_columns(cols) if cols else None
    k = len(names) if names else None
    asked_d = None if args.diff in (None, "auto") else int(args.diff)
    if asked_d is None and not args.seasonal_diff:
        return task_meta, source
    have = task_meta.get("difference")
    if have is None:
        d, s = asked_d or 0, args.seasonal_diff or 0
        asked = ser.Difference((d,) * k, (s,) * k) if k else ser.Difference(d, s)
        if not asked:
            return task_meta, source
        return {**task_meta, "difference": asked.as_dict()}, f"{source}, {asked.describe(names)} (as asked)"
    parts = ser.Difference(**have).parts()
    if (asked_d is not None and any(c.d != asked_d for c in parts)) or (
        args.seasonal_diff is not None and any(c.s != args.seasonal_diff for c in parts)
    ):
        flags = [f"--{k} {v}" for k, v in (("diff", args.diff), ("seasonal-diff", args.seasonal_diff)) if v is not None]
        raise BpttError(
            f"--diff, --seasonal-diff: expected the differencing the file's description gives ({have}) or none, "
            f"received {' '.join(flags)}"
        )
    return task_meta, source


def _config_differencing(task_meta: dict[str, Any]) -> dict[str, Any]:
    """--diff and --seasonal-diff as the recorded differencing reads (auto where the columns'
    orders differ), so that the run's config says what its record holds."""
    parts = ser.Difference(**task_meta.get("difference", {})).parts()
    ds, ss = {c.d for c in parts}, {c.s for c in parts}
    return {"diff": str(ds.pop()) if len(ds) == 1 else "auto", "seasonal_diff": ss.pop() if len(ss) == 1 else 0}


def _window_settings(norm: dict[str, Any], cfg: TrainConfig, where: str) -> None:
    """A described per-window normaliser needs the training settings that made it beside it."""
    if norm.get("window") and (cfg.normalize != "window" or cfg.seq_len != norm["window"]):
        raise BpttError(
            f"{where}: normalizer: expected the training settings of a per-window run (normalize 'window', seq_len "
            f"{norm['window']}) beside it, received normalize {cfg.normalize!r}, seq_len {cfg.seq_len}"
        )


def _columns_meta(cfg: TrainConfig, meta: dict[str, Any], args, where: str) -> tuple[dict[str, Any], str]:
    """A series model of several columns: its per-column normaliser and column names from the
    description, or fitted on --data as bptt train fits them."""
    from .tasks import SeriesTask

    for flag in ("mean", "std"):
        if getattr(args, flag) is not None:
            raise BpttError(
                f"--{flag}: expected only for a one-column series (a model of the columns {cfg.column!r} takes its "
                f"per-column normaliser from the description or --data), received {getattr(args, flag)}"
            )
    if "normalizer" in meta and "columns" in meta:
        norm, cols = meta["normalizer"], meta["columns"]
        used = ser.used_columns(cols)
        if not isinstance(norm["mean"], list) or len(norm["mean"]) != len(used):
            raise BpttError(
                f"{where}: normalizer: expected one mean and std per column of {', '.join(used)}, received "
                f"{json.dumps(norm)[:80]}"
            )
        _window_settings(norm, cfg, where)
        out: dict[str, Any] = {"normalizer": dict(norm), "series_columns": dict(cols)}
        said = " per window" if norm.get("window") else ""
        if "difference" in meta:  # the model's inputs and outputs are differences of the columns
            d = meta["difference"]
            if not isinstance(d["d"], list) or len(d["d"]) != len(used):
                raise BpttError(
                    f"{where}: difference: expected one order per column of {', '.join(used)}, received "
                    f"{json.dumps(d)[:80]}"
                )
            out["difference"] = dict(d)
            said += f", {ser.Difference(**d).describe(used)}"
        return out, (
            f"columns {', '.join(cols['inputs'])} -> {', '.join(cols['targets'])}, a per-column normaliser{said} "
            "(from the description)"
        )
    if cfg.data:
        task = SeriesTask(cfg)  # as bptt train fits it: on the training part of --data
        said = f", {task.diff_note}" if task.diff else ""
        return task.meta(), (
            f"columns {task.name}, a per-column normaliser{said} fitted on {cfg.data} as bptt train does"
        )
    raise BpttError(
        f"--data: expected the series the model was trained on, to fit its per-column normaliser ({where} carries "
        "no normaliser and columns), received none"
    )


def _params(model: Model, t: dict[str, np.ndarray], where: str, task_meta: dict[str, Any], dtype: str):
    """The tensors as bptt's parameters: names, shapes and finiteness checked."""
    names = interop.torch_names(model)
    shapes = model.param_shapes()
    wanted = list(names.values())
    tied = ["linear.weight"] if "linear.weight" not in wanted and "linear.weight" in t else []  # (checked equal)
    unexpected = [k for k in t if k not in names.values() and k not in tied]
    if unexpected:
        hint = (
            " (an LSTM with proj_size, which bptt has no level for)"
            if any("weight_hr" in k for k in unexpected)
            else ""
        )
        raise BpttError(
            f"{where}: expected the entries {_few(wanted)}, received unexpected {_few(unexpected)}{hint} "
            "(prefixes other than rnn., linear., embedding. are mapped with --names, e.g. rnn=lstm,linear=fc)"
        )
    missing = [k for k in wanted if k not in t]
    if missing:
        raise BpttError(f"{where}: expected the entries {_few(wanted)}, received none for {_few(missing)}")
    vocab = len(task_meta["vocab"]) if "vocab" in task_meta else None
    for b, k in names.items():
        if t[k].shape != tuple(shapes[b]):
            why = f"; the vocabulary has {vocab} characters" if vocab in shapes[b] else ""
            raise BpttError(f"{where}: {k}: expected shape {tuple(shapes[b])} (bptt's {b}{why}), received {t[k].shape}")
        if not np.isfinite(t[k]).all():
            raise BpttError(f"{where}: {k}: expected finite values, received NaN or inf")
    return interop.from_torch(model, {k: t[k].astype(dtype, copy=True) for k in wanted + tied})


def _few(names: list[str]) -> str:
    return "[" + ", ".join(names[:6]) + (f", ... ({len(names)} in all)" if len(names) > 6 else "") + "]"


def _write_run(cfg: TrainConfig, model: Model, params, task_meta: dict[str, Any]) -> None:
    """config.json and checkpoint.npz at step 0: what bptt train writes before its first update."""
    from .trainer import fresh_trackers, optimizer_for, run_meta

    optimizer = optimizer_for(cfg, cfg.steps)
    meta = run_meta(cfg, 0, cfg.steps, np.random.default_rng(cfg.seed), fresh_trackers(), task_meta)
    folder = RunFolder.new(cfg.out)
    try:
        folder.start(lambda s: None)
        ckpt.save(folder.file("checkpoint.npz"), params, optim.flatten_state(optimizer.init(params)), None, meta)
        n = sum(a.size for a in params.values())
        folder.write_json("config.json", {**meta, "model": repr(model), "parameters": n})
    except BaseException:
        folder.close(failed=True)
        raise
    folder.close()
