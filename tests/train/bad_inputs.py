"""The catalogue of bad inputs: data files, flags, TOML configs, run folders and checkpoints
(truncated, corrupted, of another model, with crafted records, object arrays, another version),
and misuse of the Python API. Each case is a command line (run in-process through `bptt.cli.main`
inside a workspace of files and runs) or an API call, with the words its one-line error must hold.

tests/test_bad_inputs.py runs every case; scripts/errors_catalogue.py prints every case with its
message into docs/errors.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
import shutil
import struct
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

WORDS = "the cat sat on a mat while a dog ran to the big red barn and the bird sang ".split()


@dataclass
class Case:
    id: str
    group: str
    what: str
    argv: list[str] | None = None  # a command line (run in the workspace)
    call: Callable[[Any], Any] | None = None  # or an API call on the workspace
    expect: list[str] = field(default_factory=list)  # fragments of the message
    code: int = 2


# ---- the workspace: data files, run folders, crafted checkpoints ----------------------------------
def build_workspace(ws: str) -> None:
    """Files and runs the cases refer to, by relative path (the cases run with ws as cwd)."""
    from bptt.train import TrainConfig, Trainer

    os.makedirs(ws, exist_ok=True)
    cwd = os.getcwd()
    os.chdir(ws)
    try:
        rng = np.random.default_rng(0)
        open("words.txt", "w").write(" ".join(rng.choice(WORDS, size=3000)) + "\n")
        t = np.arange(400)
        v = np.sin(2 * np.pi * t / 23.0) + 0.3 * np.cos(2 * np.pi * t / 7.0)
        open("series.csv", "w").write("t,value\n" + "".join(f"{i},{x:.6f}\n" for i, x in zip(t, v)))
        np.savetxt("series.dat", v)
        open("empty.txt", "w").close()
        open("blank.txt", "w").write("\n\n   \n")
        open("binary.bin", "wb").write(b"abc\x00\x01\x02" * 100)
        open("latin1.txt", "wb").write("caf\xe9 cr\xe8me".encode("latin-1") * 50)
        open("huge.csv", "w").write("".join(f"{1e300 * (1 + (i % 7))}\n" for i in range(60)))
        open("semicolons.csv", "w").write("".join(f"{i};{0.1 * i:.4f}\n".replace(".", ",") for i in range(60)))
        open("samename.csv", "w").write("value,value\n" + "".join(f"{i},{0.1 * i}\n" for i in range(60)))
        open("comments.csv", "w").write("# a note\n\nt,value\n1,2\n\n2,3\n3,oops\n4,5\n")
        open("short.txt", "w").write("abcab")
        open("header_only.csv", "w").write("t,value\n")
        open("nan.csv", "w").write("value\n1.0\n2.0\nnan\n3.0\n")
        open("inf.csv", "w").write("1.0\n2.0\ninf\n3.0\n")
        open("word.csv", "w").write("value\n1.0\ntwo\n3.0\n")
        open("ragged.csv", "w").write("a,b\n1,2\n3\n5,6\n")
        open("two.csv", "w").write("1.0\n2.0\n")
        open("tiny.csv", "w").write("".join(f"{x}\n" for x in range(12)))
        open("afile", "w").write("not a folder\n")
        os.makedirs("adir", exist_ok=True)
        os.makedirs("tb-used", exist_ok=True)  # the event files of another run (bptt train --tensorboard)
        open("tb-used/events.out.tfevents.1700000000.host", "wb").close()
        if not os.path.lexists("dangling.txt"):
            os.symlink("nowhere.txt", "dangling.txt")
        open("bad.toml", "w").write("hidden = = 1\n")
        open("unknown.toml", "w").write("hiden = 12\n")
        open("wrongtype.toml", "w").write("hidden = 'big'\n")
        open("nan.toml", "w").write("lr = nan\n")
        open("list.toml", "w").write("cell = ['lstm']\n")
        open("both.toml", "w").write("lr = 0.5\nsteps = 1\n[train]\nhidden = 8\n")
        small = dict(
            hidden=8, steps=4, eval_every=2, batch_size=4, seq_len=10, dtype="float64", progress=False, sample_length=0
        )
        quiet = dict(log=lambda s: None)
        Trainer(TrainConfig(data="words.txt", out="runs/text", **small), **quiet).run()
        Trainer(TrainConfig(data="series.csv", task="series", out="runs/series", **small), **quiet).run()
        Trainer(
            TrainConfig(
                data="words.txt",
                out="runs/tbptt",
                algorithm="tbptt",
                k1=5,
                k2=12,
                cell="gru",
                **{**small, "seq_len": 5},
            ),
            **quiet,
        ).run()
        Trainer(TrainConfig(data="words.txt", cell="jordan", out="runs/jordan", **small), **quiet).run()
        _arrays_run("runs/arrays")
        os.makedirs("runs/empty", exist_ok=True)
        os.makedirs("stale", exist_ok=True)  # a run's best.npz without its checkpoint
        shutil.copy("runs/text/best.npz", "stale/best.npz")
        if not os.path.lexists("runs/text-link"):  # a link to a run folder
            os.symlink("text", "runs/text-link")
        open("precious.txt", "w").write("a file of the user's\n")
        shutil.copytree("runs/text", "runs/lock-link", dirs_exist_ok=True)  # its .lock a link to that file
        if os.path.lexists("runs/lock-link/.lock"):
            os.remove("runs/lock-link/.lock")
        os.symlink("../../precious.txt", "runs/lock-link/.lock")
        for name, make in CRAFTED.items():
            _craft(name, make)
        _build_weights()
        _columns_workspace()
        _ensembles()
    finally:
        os.chdir(cwd)


def _ensembles() -> None:
    """Ensemble folders (bptt train --seeds) made from the runs above: a whole one, and damaged
    ones (ensemble.json unreadable, naming paths, a member missing, members of other tasks)."""
    from bptt.train.runs import load_run

    cfg = load_run("runs/series").cfg.to_dict()

    def ens(name: str, doc: Any, members: dict[str, str]) -> None:
        os.makedirs(name, exist_ok=True)
        for sub, src in members.items():
            shutil.copytree(src, os.path.join(name, sub), dirs_exist_ok=True)
        body = doc if isinstance(doc, str) else json.dumps(doc)
        open(os.path.join(name, "ensemble.json"), "w").write(body)

    whole = {"format": "bptt ensemble", "seeds": [0, 1], "config": cfg, "results": {}}
    two = {"seed-0": "runs/series", "seed-1": "runs/series"}
    ens("ens/whole", whole, two)
    ens("ens/unreadable", '{"format": "bptt ensemble", "seeds": [0,', two)
    ens("ens/paths", {**whole, "seeds": ["../../runs/text"]}, two)
    ens("ens/missing", whole, {"seed-0": "runs/series"})
    ens("ens/mixed", whole, {"seed-0": "runs/series", "seed-1": "runs/text"})
    ens("ens/badconfig", {**whole, "config": {**cfg, "hidden": "many"}}, two)


def _fit_arrays(**kw: Any) -> Any:
    """bptt.fit on small (T, B, D) sequences with targets at every step."""
    from bptt.train import fit

    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((6, 8, 2)), rng.standard_normal((6, 8, 1))
    return fit(x=x, y=y, log=None, progress=False, **kw)


def _arrays_run(out: str) -> None:
    """A run folder of a run on arrays given in Python (its config says so; no data file)."""
    _fit_arrays(out=out, hidden=8, steps=4, eval_every=2, batch_size=4, dtype="float64")


# ---- weights files for bptt import: exported, then damaged ----------------------------------------
def _safetensors(path: str, tensors: dict[str, tuple[str, np.ndarray]]) -> None:
    """A safetensors file written by hand (dtype code, array), so that any dtype can be stored."""
    header, data = {}, b""
    for k, (code, a) in tensors.items():
        raw = np.ascontiguousarray(a).tobytes()
        header[k] = {"dtype": code, "shape": list(a.shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)


def _build_weights() -> None:
    from bptt.train.export import write_weights
    from bptt.train.runs import load_run

    os.makedirs("weights", exist_ok=True)
    run = load_run("runs/text")
    write_weights("weights/text.npz", run.model, run.params, "npz", {"task": "text", "vocab": run.meta["vocab"]})
    sr = load_run("runs/series")
    write_weights("weights/series.npz", sr.model, sr.params, "npz", {"task": "series"})
    base = dict(np.load("weights/text.npz"))
    spec = json.load(open("weights/text.npz.json"))

    def npz(name: str, arrays: dict, desc: dict | None = None) -> None:
        with open(f"weights/{name}.npz", "wb") as f:
            np.savez(f, **arrays)
        if desc is not None:
            with open(f"weights/{name}.npz.json", "w") as f:
                json.dump(desc, f)

    rnn = {k: v for k, v in base.items() if k.startswith("rnn.")}
    npz("bare", base)
    npz("series-bare", dict(np.load("weights/series.npz")))
    npz("no-bias", {k: v for k, v in base.items() if k != "linear.bias"}, spec)
    npz("proj", {**base, "rnn.weight_hr_l0": np.zeros((8, 8))}, spec)
    npz("lstm-prefix", {k.replace("rnn.", "lstm."): v for k, v in base.items()})
    npz("int", {**base, "linear.bias": base["linear.bias"].astype(np.int64)}, spec)
    npz("nan", {**base, "rnn.weight_hh_l0": base["rnn.weight_hh_l0"] * np.nan}, spec)
    npz("mixed", {**base, "linear.bias": base["linear.bias"].astype(np.float32)}, spec)
    npz("bidirectional", {**base, **{k + "_reverse": v for k, v in rnn.items()}}, spec)
    npz("bad-hidden", base, {**spec, "hidden_size": -1})
    npz("bad-vocab", base, {**spec, "vocab": spec["vocab"][::-1]})
    npz("other-format", base, {**spec, "format": "onnx"})
    npz("adding", base, {**spec, "task": "adding"})
    npz("relu", base, {**spec, "cell": "elman", "nonlinearity": "relu"})
    evil = pickle.dumps(_Boom())
    open("weights/model.pt", "wb").write(evil)
    open("weights/pickle.npz", "wb").write(evil)
    _raw_zip("weights/torch.npz", [("archive/data.pkl", evil), ("archive/version", b"3\n")])
    whole = open("weights/text.npz", "rb").read()
    open("weights/truncated.npz", "wb").write(whole[: len(whole) // 2])
    _safetensors(
        "weights/f16.safetensors",
        {k: ("F16", v.astype(np.float16)) if k == "linear.bias" else ("F64", v) for k, v in base.items()},
    )
    open("weights/damaged.safetensors", "wb").write(struct.pack("<Q", 10**12) + b"{}")


def _load(path: str) -> tuple[dict, dict]:
    from bptt.train.checkpoint import _read_npz

    arrays = _read_npz(path)
    meta = json.loads(str(arrays.pop("meta")))
    arrays.pop("checksum", None)
    return arrays, meta


def _save(path: str, arrays: dict, meta: Any, fix: bool = True, old_sum: Any = None) -> None:
    """Write arrays and a record, with a checksum that matches them (as an attacker can)."""
    from bptt.train.checkpoint import checksum

    arrays = dict(arrays)
    meta_json = meta if isinstance(meta, str) else json.dumps(meta)
    if fix:
        arrays["checksum"] = np.array(checksum(meta_json, arrays))
    elif old_sum is not None:
        arrays["checksum"] = old_sum
    arrays["meta"] = np.array(meta_json)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _raw_zip(path: str, members: list[tuple[str, bytes]]) -> None:
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w") as z:
        warnings.simplefilter("ignore")  # a repeated member is what one case wants
        for name, data in members:
            z.writestr(name, data)


def _pickled() -> bytes:
    """An .npy of an object array: its data is a pickle that would call os.system if unpickled."""
    b = io.BytesIO()
    np.lib.format.write_array(b, np.array([_Boom()], dtype=object), allow_pickle=True)
    return b.getvalue()


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def _craft(name: str, make: Callable[[str, str], None]) -> None:
    """crafted/<name>: a copy of a run folder whose checkpoint.npz `make` rewrites."""
    src = "runs/tbptt" if name.startswith("history") else "runs/text"
    dst = os.path.join("crafted", name)
    if os.path.exists(dst):
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    os.unlink(os.path.join(dst, "best.npz"))
    make(os.path.join(dst, "checkpoint.npz"), name)


def _edit(fn: Callable[[dict, dict], Any], fix: bool = True) -> Callable[[str, str], None]:
    def make(path: str, name: str) -> None:
        from bptt.train.checkpoint import _read_npz

        old_sum = _read_npz(path).get("checksum")
        arrays, meta = _load(path)
        out = fn(arrays, meta)  # a list or a string replaces the whole record
        _save(path, arrays, out if isinstance(out, (list, str)) else meta, fix, old_sum)

    return make


def _bytes(fn: Callable[[bytes], bytes]) -> Callable[[str, str], None]:
    def make(path: str, name: str) -> None:
        data = open(path, "rb").read()
        open(path, "wb").write(fn(data))

    return make


def _members(fn: Callable[[list[tuple[str, bytes]]], list[tuple[str, bytes]]]) -> Callable[[str, str], None]:
    def make(path: str, name: str) -> None:
        with zipfile.ZipFile(path) as z:
            members = [(i.filename, z.read(i)) for i in z.infolist()]
        _raw_zip(path, fn(members))

    return make


def _set(d: dict, key: str, value: Any) -> None:
    d[key] = value


def _del(d: dict, key: str) -> None:
    del d[key]


def _history(payload: Any) -> Callable[[dict, dict], None]:
    def fn(arrays: dict, meta: dict) -> None:
        meta["tbptt_history"]["d"]["history"]["l"][0] = payload

    return fn


def _first_segment(meta: dict) -> list:
    return meta["tbptt_history"]["d"]["history"]["l"][0]["t"]  # [steps, tapes, cut]


def _damage_header(members):
    out = []
    for n, d in members:
        if n == "param/lstm0.W_hh.npy":
            d = d[:10] + b"{'descr': <f8, 'fortran_order': False, }" + d[50:]
        out.append((n, d))
    return out


def _short_data(members):
    return [(n, d[:-16] if n == "param/lstm0.W_hh.npy" else d) for n, d in members]


CRAFTED: dict[str, Callable[[str, str], None]] = {
    "truncated": _bytes(lambda d: d[: len(d) // 2]),
    "random-bytes": _bytes(lambda d: b"PK\x03\x04" + hashlib.sha256(d).digest() * 20),
    "not-a-zip": _bytes(lambda d: b"this is not a checkpoint\n"),
    "empty-file": _bytes(lambda d: b""),
    "record-changed": _edit(lambda a, m: _set(m, "step", 3), fix=False),
    "array-changed": _edit(lambda a, m: _set(a, "param/lstm0.W_hh", a["param/lstm0.W_hh"] + 1e-3), fix=False),
    "future-format": _edit(lambda a, m: _set(m, "format", "bptt-checkpoint-9")),
    "no-format": _edit(lambda a, m: _del(m, "format")),
    "record-a-list": _edit(lambda a, m: [1, 2, 3]),
    "record-not-json": _edit(lambda a, m: "{not json"),
    "record-deeply-nested": _edit(lambda a, m: "[" * 100000 + "]" * 100000),
    "no-config": _edit(lambda a, m: _del(m, "config")),
    "step-a-string": _edit(lambda a, m: _set(m, "step", "ten")),
    "step-negative": _edit(lambda a, m: _set(m, "step", -4)),
    "rng-garbage": _edit(lambda a, m: _set(m, "rng", {"bit_generator": "MT19937", "state": 5})),
    "trackers-missing": _edit(lambda a, m: _set(m, "trackers", {"best": None})),
    "best-loss-nan": _edit(lambda a, m: _set(m["trackers"], "best", {"loss": float("nan"), "step": 2})),
    "no-vocab": _edit(lambda a, m: _del(m, "vocab")),
    "vocab-a-number": _edit(lambda a, m: _set(m, "vocab", 42)),
    "vocab-unsorted": _edit(lambda a, m: _set(m, "vocab", m["vocab"][1] + m["vocab"][0] + m["vocab"][2:])),
    "train-seconds-inf": _edit(lambda a, m: _set(m["trackers"], "train_seconds", float("inf"))),
    "optimizer-nan": _edit(
        lambda a, m: _set(a, k := next(k for k in sorted(a) if k.startswith("opt/") and "/mu/" in k), a[k] * np.nan)
    ),
    "optimizer-count-negative": _edit(
        lambda a, m: _set(a, next(k for k in sorted(a) if k.startswith("opt/") and k.endswith("/count")), np.array(-1))
    ),
    "word-vocab-without-unk": _edit(lambda a, m: (_set(m["config"], "tokens", "word"), _set(m, "vocab", ["a", "b"]))),
    "config-wrong-type": _edit(lambda a, m: _set(m["config"], "hidden", "big")),
    "config-unknown-key": _edit(lambda a, m: _set(m["config"], "hiden", 8)),
    "config-bad-cell": _edit(lambda a, m: _set(m["config"], "cell", "cnn")),
    "param-wrong-shape": _edit(lambda a, m: _set(a, "param/lstm0.W_hh", np.zeros((5, 5)))),
    "param-missing": _edit(lambda a, m: _del(a, "param/dense1.W")),
    "unknown-array": _edit(lambda a, m: _set(a, "evil/x", np.zeros(3))),
    "object-array": _members(lambda ms: ms + [("param/evil.npy", _pickled())]),
    "structured-array": _edit(lambda a, m: _set(a, "param/lstm0.b_hh", np.zeros(32, "i4,f8"))),
    "text-array": _edit(lambda a, m: _set(a, "param/lstm0.b_hh", np.array(["x"] * 32))),
    "nan-param": _edit(lambda a, m: _set(a, "param/lstm0.W_hh", a["param/lstm0.W_hh"] * np.nan)),
    "int-param": _edit(lambda a, m: _set(a, "param/lstm0.b_hh", np.zeros(32, np.int64))),
    "repeated-member": _members(lambda ms: ms + [ms[0]]),
    "python-member": _members(lambda ms: ms + [("evil.py", b"import os; os.system('touch PWNED')\n")]),
    "damaged-npy-header": _members(_damage_header),
    "short-npy-data": _members(_short_data),
    "optimizer-entry-missing": _edit(lambda a, m: _del(a, next(k for k in sorted(a) if k.startswith("opt/")))),
    "optimizer-wrong-shape": _edit(
        lambda a, m: _set(
            a, next(k for k in sorted(a) if k.endswith("lstm0.W_hh") and k.startswith("opt/")), np.zeros(3)
        )
    ),
    "state-wrong-shape": _edit(lambda a, m: _set(a, "state/lstm0/h", np.zeros((4, 3)))),
    "state-nan": _edit(lambda a, m: _set(a, "state/lstm0/c", a["state/lstm0/c"] * np.nan)),
    "history-os-system": _edit(_history({"nt": "bptt.train.checkpoint:os.system", "f": ["touch PWNED"]})),
    "history-builtins-eval": _edit(_history({"nt": "builtins:eval", "f": ["open('PWNED', 'w')"]})),
    "history-wrong-field-count": _edit(_history({"nt": "bptt.cells.gru:GRUState", "f": [None, None, None]})),
    "history-unknown-tag": _edit(_history({"call": "os.system", "args": ["touch PWNED"]})),
    "history-too-long": _edit(lambda a, m: _first_segment(m).__setitem__(0, 50)),
    "history-wrong-shape": _edit(
        lambda a, m: _set(a, sorted(k for k in a if k.startswith("alg/"))[-1], np.zeros((2, 2)))
    ),
}


# ---- the cases ------------------------------------------------------------------------------------
TRAIN = [
    "--data",
    "words.txt",
    "--hidden",
    "8",
    "--steps",
    "4",
    "--seq-len",
    "10",
    "--batch-size",
    "4",
    "--no-progress",
    "--sample-length",
    "0",
    "--out",
    "new-run",
]


def _pairs(args: list[str]) -> list[tuple[str, str | None]]:
    out, i = [], 0
    while i < len(args):
        a = args[i]
        if a.startswith("--") and "=" not in a and i + 1 < len(args) and not args[i + 1].startswith("--"):
            out.append((a, args[i + 1]))
            i += 2
        else:
            out.append((a, None))
            i += 1
    return out


def T(*args: str) -> list[str]:
    """`bptt train` with small settings (so that a case which wrongly succeeded would end fast),
    `args` replacing those of the same name."""
    given = _pairs(list(args))
    names = {a for a, _ in given}
    merged = [(a, v) for a, v in _pairs(TRAIN) if a not in names] + given
    return ["train"] + [t for a, v in merged for t in ((a,) if v is None else (a, v))]


def S(*args: str) -> list[str]:
    names = {a for a, _ in _pairs(list(args))}
    return T("--task", "series", *(() if "--data" in names else ("--data", "series.csv")), *args)


def _api(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return fn


def _model():
    import bptt

    m = bptt.Model(3, [bptt.rnn("lstm", 4), bptt.Dense(2)], loss="mse")
    p = m.init_params(np.random.default_rng(0), dtype=np.float32)
    x, y = np.zeros((5, 2, 3), np.float32), np.zeros((5, 2, 2), np.float32)
    return bptt, m, p, x, y


def _api_cases() -> list[Case]:
    def full(mod: Callable) -> Callable[[Any], Any]:
        def call(ws):
            bptt, m, p, x, y = _model()
            return mod(bptt, m, p, x, y)

        return call

    return [
        Case(
            "api-x-shape",
            "Python API",
            "full_bptt with inputs of the wrong width",
            call=full(lambda b, m, p, x, y: b.full_bptt(m, p, x[:, :, :2], y)),
            expect=["x: expected shape (T, B, D) = (*, *, 3), received (5, 2, 2)"],
        ),
        Case(
            "api-x-dtype",
            "Python API",
            "float64 inputs for float32 weights",
            call=full(lambda b, m, p, x, y: b.full_bptt(m, p, x.astype(np.float64), y)),
            expect=["x: expected dtype float32, received float64"],
        ),
        Case(
            "api-x-nan",
            "Python API",
            "NaN in the inputs",
            call=full(lambda b, m, p, x, y: b.full_bptt(m, p, np.full_like(x, np.nan), y)),
            expect=["x: expected finite values, received NaN"],
        ),
        Case(
            "api-no-targets",
            "Python API",
            "no targets",
            call=full(lambda b, m, p, x, y: b.full_bptt(m, p, x, None)),
            expect=["targets: expected an array, received None"],
        ),
        Case(
            "api-mask-shape",
            "Python API",
            "a mask of the wrong length",
            call=full(lambda b, m, p, x, y: b.full_bptt(m, p, x, y, mask=np.ones((4, 2), bool))),
            expect=["mask: expected shape (T, B) = (5, 2), received (4, 2)"],
        ),
        Case(
            "api-state0-key",
            "Python API",
            "an initial state for a level the model lacks",
            call=full(lambda b, m, p, x, y: b.full_bptt(m, p, x, y, mask=None, state0={"gru0": None})),
            expect=["state0: expected keys among ['lstm0'], received ['gru0']"],
        ),
        Case(
            "api-params-list",
            "Python API",
            "parameters as a list",
            call=full(lambda b, m, p, x, y: b.full_bptt(m, list(p.values()), x, y)),
            expect=["params: expected a dict of arrays, received list"],
        ),
        Case(
            "api-params-missing",
            "Python API",
            "a parameter missing",
            call=full(lambda b, m, p, x, y: b.full_bptt(m, {k: v for k, v in p.items() if k != "dense1.W"}, x, y)),
            expect=["params: expected keys", "['dense1.W'] missing"],
        ),
        Case(
            "api-cell-name",
            "Python API",
            "a misspelt cell",
            call=lambda ws: __import__("bptt").rnn("lsmt", 8),
            expect=["cell: expected one of ", "elman, gru, jordan", "received 'lsmt' (did you mean 'lstm'?)"],
        ),
        Case(
            "api-size",
            "Python API",
            "a negative layer size",
            call=lambda ws: __import__("bptt").rnn("lstm", -1),
            expect=["lstm size: expected a positive integer, received -1"],
        ),
        Case(
            "api-loss",
            "Python API",
            "an unknown loss",
            call=lambda ws: __import__("bptt").Model(3, [__import__("bptt").Dense(2)], loss="mae"),
            expect=["loss: expected one of ce, mse, received 'mae' (did you mean 'mse'?)"],
        ),
        Case(
            "api-activation",
            "Python API",
            "an unknown activation",
            call=lambda ws: __import__("bptt").Dense(4, "swish"),
            expect=["activation: expected one of identity, relu, sigmoid, tanh, received 'swish'"],
        ),
        Case(
            "api-optimizer",
            "Python API",
            "an unknown optimizer",
            call=lambda ws: __import__("bptt.optim", fromlist=["x"]).make_optimizer("adamw", 0.1),
            expect=["optimizer: expected one of", "received 'adamw' (did you mean 'adam'?)"],
        ),
        Case(
            "api-tbptt-k2",
            "Python API",
            "TBPTT with k2 < k1",
            call=full(lambda b, m, p, x, y: __import__("bptt.algorithms", fromlist=["x"]).TBPTT(5, 3)),
            expect=["k2: expected k2 >= k1", "received k1=5, k2=3"],
        ),
        Case(
            "api-truncation-prob",
            "Python API",
            "a truncation probability above 1",
            call=full(
                lambda b, m, p, x, y: __import__("bptt.algorithms", fromlist=["x"]).randomized_bptt(
                    m, p, x, y, 1.5, np.random.default_rng()
                )
            ),
            expect=["truncation probability: expected", "received 1.5"],
        ),
        Case(
            "api-gradcheck-float32",
            "Python API",
            "gradcheck on float32 weights",
            call=full(lambda b, m, p, x, y: b.gradcheck(m, p, x, y)),
            expect=["gradcheck: expected float64 params", "received float32"],
        ),
        Case(
            "api-config-key",
            "Python API",
            "a misspelt setting",
            call=lambda ws: __import__("bptt.train", fromlist=["x"]).TrainConfig.from_dict({"hiden": 3}),
            expect=["received unknown 'hiden' (did you mean 'hidden'?)"],
        ),
        Case(
            "api-config-value",
            "Python API",
            "a config that cannot train",
            call=lambda ws: __import__("bptt.train", fromlist=["x"]).Trainer(
                __import__("bptt.train", fromlist=["x"]).TrainConfig(hidden=0)
            ),
            expect=["hidden: expected a positive integer, received 0"],
        ),
        Case(
            "api-register",
            "Python API",
            "registering a class that is not a NamedTuple for checkpoints",
            call=lambda ws: __import__("bptt._treeio", fromlist=["x"]).register(dict),
            expect=["register: expected NamedTuple classes, received"],
        ),
        Case(
            "api-sample-temperature",
            "Python API",
            "sampling at temperature 0",
            call=lambda ws: _sample(ws, temperature=0.0),
            expect=["temperature: expected a number > 0, received 0.0"],
        ),
        Case(
            "api-forecast-horizon",
            "Python API",
            "a forecast of 0 steps",
            call=lambda ws: _forecast(ws, horizon=0),
            expect=["horizon: expected a positive integer, received 0"],
        ),
        Case(
            "api-forecast-nan",
            "Python API",
            "a forecast from a history with NaN",
            call=lambda ws: _forecast(ws, history=np.array([0.1, np.nan])),
            expect=["history: expected finite values, received NaN or inf"],
        ),
        Case(
            "api-load-run-file",
            "Python API",
            "load_run on a file",
            call=lambda ws: _load_run(ws, "afile"),
            expect=["RUN: expected a run folder (from bptt train), received 'afile' (a file)"],
        ),
        Case(
            "api-fit-model-dropout",
            "Python API",
            "fit with a model of one's own and dropout= (it was ignored)",
            call=lambda ws: _fit_arrays(
                model=__import__("bptt").Model(
                    2, [__import__("bptt").rnn("gru", 4), __import__("bptt").Dense(1)], loss="mse"
                ),
                dropout=0.5,
                steps=2,
            ),
            expect=[
                "dropout: expected none with a model of one's own (it has its own levels; put a Dropout level or the cell's option in it), received 0.5"
            ],
        ),
        Case(
            "api-fit-patience-no-validation",
            "Python API",
            "early stopping on arrays with no validation part (it never stopped)",
            call=lambda ws: _fit_arrays(hidden=4, steps=2, patience=1, val_fraction=0.0),
            expect=[
                "patience: expected a validation part to watch",
                "received 1 with none",
                "--patience 0 goes on without it",
            ],
        ),
        Case(
            "api-fit-float-mask",
            "Python API",
            "fit with a mask of floats (a traceback in the first evaluation)",
            call=lambda ws: _fit_arrays(mask=np.ones((6, 8)), steps=2),
            expect=["mask: expected booleans (or 0/1 integers), received values of dtype float64"],
        ),
        Case(
            "api-eprop-learned-start",
            "Python API",
            "an e-prop stream continued on a model with learned initial states",
            call=lambda ws: _stream_twice("eprop"),
            expect=["eprop: expected a model without learned initial states (learn_init=False) to continue a stream"],
        ),
        Case(
            "api-stream-batch",
            "Python API",
            "a UORO stream continued with another number of streams",
            call=lambda ws: _stream_other_batch("uoro"),
            expect=[
                "x: expected 3 streams (the batch size of the carried state), received 2; call reset() before "
                "changing the batch size"
            ],
        ),
        Case(
            "api-rtrl-max-bytes",
            "Python API",
            "RTRL's memory cap as a size string",
            call=lambda ws: __import__("bptt.algorithms", fromlist=["x"]).make("rtrl", max_bytes="64MB"),
            expect=["rtrl max_bytes: expected a positive number of bytes (an integer), received '64MB'"],
        ),
        Case(
            "api-uoro-rng",
            "Python API",
            "UORO's rng as a string",
            call=lambda ws: __import__("bptt.algorithms", fromlist=["x"]).make("uoro", rng="a"),
            expect=["uoro rng: expected a numpy Generator or a seed (an integer >= 0), received 'a'"],
        ),
        Case(
            "api-artbp-c-none",
            "Python API",
            "an ARTBP truncation function that returns None",
            call=lambda ws: _artbp_c_none(),
            expect=["c: expected c(5) in [0, 1) (a truncation must be possible to skip), received None"],
        ),
        Case(
            "api-eprop-feedback-name",
            "Python API",
            "e-prop's function given feedback='random' (it takes a matrix)",
            call=lambda ws: _eprop_feedback_name(),
            expect=["feedback: expected a (2, 4) matrix (or None), received 'random'"],
        ),
        Case(
            "api-from-torch-deeper",
            "Python API",
            "from_torch given a 2-layer network's weights for a 1-layer model",
            call=lambda ws: _from_torch(layers=2),
            expect=[
                "from_torch: expected only the entries of the model's torch modules (6), received also",
                "'rnn.weight_hh_l1'",
            ],
        ),
        Case(
            "api-from-torch-nan",
            "Python API",
            "from_torch given a NaN weight",
            call=lambda ws: _from_torch(nan=True),
            expect=["from_torch: rnn.weight_hh_l0: expected finite values, received 1 NaN or inf"],
        ),
        Case(
            "api-from-torch-float16",
            "Python API",
            "from_torch given float16 weights",
            call=lambda ws: _from_torch(dtype=np.float16),
            expect=["from_torch: ", "expected float32 or float64 values, received float16"],
        ),
        Case(
            "api-jvp-no-tapes",
            "Python API",
            "step_jvp given the tapes of forward_levels(keep=False)",
            call=lambda ws: _jvp_without_tapes(),
            expect=["tapes: expected the tapes of forward_levels with keep=True, received none for levels [0]"],
        ),
        Case(
            "api-jordan-decay",
            "Python API",
            "a Jordan context decay that is not a number",
            call=lambda ws: _built(__import__("bptt").rnn("jordan", 4, context_decay="a")),
            expect=["context_decay: expected a number in [0, 1), received 'a'"],
        ),
        Case(
            "api-dropout-tokens",
            "Python API",
            "Dropout as the first level of a model on tokens",
            call=lambda ws: _dropout_on_tokens(),
            expect=[
                "Dropout: expected float inputs (a level after an Embedding or a Recurrent level), received a "
                "model with tokens=True as its input"
            ],
        ),
        Case(
            "api-lif-decay-list",
            "Python API",
            "a LIF decay list holding a string",
            call=lambda ws: _built(__import__("bptt").rnn("lif", 2, decay=[0.5, "a"])),
            expect=["decay: expected a number or one value per neuron (shape (2,)), received [0.5, 'a']"],
        ),
    ]


def _from_torch(layers: int = 1, nan: bool = False, dtype: Any = np.float64):
    """from_torch on a 1-layer LSTM model, from torch-named arrays of `layers` layers."""
    import bptt
    from bptt import interop

    m = bptt.Model(3, [bptt.rnn("lstm", 4), bptt.Dense(2)], loss="mse")
    tensors = dict(interop.to_torch(m, m.init_params(0)))
    for k in range(1, layers):
        tensors.update({n.replace("_l0", f"_l{k}"): v for n, v in tensors.items() if "_l0" in n})
    tensors = {n: v.astype(dtype) for n, v in tensors.items()}
    if nan:
        tensors["rnn.weight_hh_l0"] = tensors["rnn.weight_hh_l0"].copy()
        tensors["rnn.weight_hh_l0"][0, 0] = np.nan
    return interop.from_torch(m, tensors)


def _stream_twice(name: str):
    """Two calls of a stream of `name` on a model that learns its initial state."""
    import bptt
    from bptt.algorithms import make

    m = bptt.Model(3, [bptt.rnn("lstm", 4, learn_init=True), bptt.Dense(2)], loss="mse")
    p = m.init_params(0)
    x, y = np.zeros((4, 2, 3)), np.zeros((4, 2, 2))
    algo = make(name)
    algo(m, p, x, y)
    return algo(m, p, x, y)


def _stream_other_batch(name: str):
    import bptt
    from bptt.algorithms import make

    m = bptt.Model(3, [bptt.rnn("lstm", 4), bptt.Dense(2)], loss="mse")
    p = m.init_params(0)
    algo = make(name)
    algo(m, p, np.zeros((4, 3, 3)), np.zeros((4, 3, 2)))
    return algo(m, p, np.zeros((4, 2, 3)), np.zeros((4, 2, 2)))


def _artbp_c_none():
    import bptt
    from bptt.algorithms.randomized import OnlineARTBP

    m = bptt.Model(3, [bptt.rnn("gru", 4), bptt.Dense(2)], loss="mse")
    return OnlineARTBP(m, lambda L: None, np.random.default_rng(0)).prob(5)


def _eprop_feedback_name():
    import bptt
    from bptt.algorithms import eprop

    m = bptt.Model(3, [bptt.rnn("lstm", 4), bptt.Dense(2)], loss="mse")
    p = m.init_params(0)
    return eprop(m, p, np.zeros((4, 2, 3)), np.zeros((4, 2, 2)), signal="online", feedback="random")


def _built(level):
    """A model of `level` and a readout (a level's cell options are checked when it is built)."""
    import bptt

    return bptt.Model(3, [level, bptt.Dense(2)], loss="mse")


def _jvp_without_tapes():
    import bptt
    from bptt import jvp

    m = bptt.Model(3, [bptt.rnn("gru", 4), bptt.Dense(2)], loss="mse")
    p = m.init_params(0)
    s0, _ = m.initial_state(p, 2)
    _, _, tapes = m.forward_levels(p, np.zeros((1, 2, 3)), None, s0, keep=False)
    return jvp.step_jvp(m, p, tapes, {})


def _dropout_on_tokens():
    import bptt
    from bptt.layers import Dropout

    return bptt.Model(5, [Dropout(0.3), bptt.rnn("gru", 3), bptt.Dense(5)], tokens=True)


def _sample(ws, **kw):
    from bptt.generate import sample_text
    from bptt.train.runs import load_run

    run = load_run(os.path.join(ws, "runs/text"))
    return sample_text(run.model, run.params, run.vocab, **kw)


def _forecast(ws, horizon=5, history=None):
    from bptt.generate import forecast
    from bptt.train.runs import load_run

    run = load_run(os.path.join(ws, "runs/series"))
    return forecast(run.model, run.params, np.zeros(5) if history is None else history, horizon)


def _load_run(ws, name):
    from bptt.train.runs import load_run

    cwd = os.getcwd()
    os.chdir(ws)
    try:
        return load_run(name)
    finally:
        os.chdir(cwd)


def _cases() -> list[Case]:
    C = Case
    data = [
        C(
            "text-missing",
            "data: text",
            "a data file that does not exist",
            T("--data", "missing.txt"),
            expect=["data file: expected an existing file, received 'missing.txt' (no such file)"],
        ),
        C(
            "text-folder",
            "data: text",
            "a folder as the data file",
            T("--data", "adir"),
            expect=["expected an existing file, received 'adir' (a folder)"],
        ),
        C(
            "text-dangling-link",
            "data: text",
            "a link to nothing",
            T("--data", "dangling.txt"),
            expect=["expected an existing file, received 'dangling.txt'"],
        ),
        C(
            "text-unreadable",
            "data: text",
            "a file that cannot be read (root reads anything else)",
            T("--data", "/proc/self/mem"),
            expect=["data file: expected a readable file, received '/proc/self/mem' (input/output error)"],
        ),
        C(
            "text-empty",
            "data: text",
            "an empty text file",
            T("--data", "empty.txt"),
            expect=["expected text, received an empty file"],
        ),
        C(
            "text-blank",
            "data: text",
            "a text file of blank lines",
            T("--data", "blank.txt"),
            expect=["expected text, received an empty file"],
        ),
        C(
            "text-binary",
            "data: text",
            "a binary file as text",
            T("--data", "binary.bin"),
            expect=["expected UTF-8 text, received binary data"],
        ),
        C(
            "text-latin1",
            "data: text",
            "Latin-1 bytes as text",
            T("--data", "latin1.txt"),
            expect=["expected UTF-8 text, received undecodable bytes at offset 3"],
        ),
        C(
            "text-too-short",
            "data: text",
            "a text shorter than one sequence",
            T("--data", "short.txt"),
            expect=["seq_len: expected fewer than", "received 10"],
        ),
        C(
            "text-batch-too-big",
            "data: text",
            "more streams than the text can fill",
            T("--batch-size", "50000"),
            expect=["batch size: expected at most", "received 50000"],
        ),
        C(
            "series-missing",
            "data: series",
            "a series file that does not exist",
            S("--data", "missing.csv"),
            expect=["data file: expected an existing file, received 'missing.csv'"],
        ),
        C(
            "series-empty",
            "data: series",
            "an empty series file",
            S("--data", "empty.txt"),
            expect=["expected numeric rows, received an empty file"],
        ),
        C(
            "series-header-only",
            "data: series",
            "a header and no rows",
            S("--data", "header_only.csv"),
            expect=["expected numeric rows after the header, received none"],
        ),
        C(
            "series-nan",
            "data: series",
            "a NaN in the series",
            S("--data", "nan.csv"),
            expect=["row 4, column 0: expected a finite number, received 'nan'"],
        ),
        C(
            "series-inf",
            "data: series",
            "an inf in the series",
            S("--data", "inf.csv"),
            expect=["row 3, column 0: expected a finite number, received 'inf'"],
        ),
        C(
            "series-word",
            "data: series",
            "a word among the numbers",
            S("--data", "word.csv"),
            expect=["row 3, column 0: expected a number, received 'two'"],
        ),
        C(
            "series-ragged",
            "data: series",
            "a row with fewer columns",
            S("--data", "ragged.csv"),
            expect=["row 3: expected at least 2 columns, received 1"],
        ),
        C(
            "series-two-values",
            "data: series",
            "a series of two values",
            S("--data", "two.csv"),
            expect=["expected at least 3 values, received 2"],
        ),
        C(
            "series-binary",
            "data: series",
            "a binary file as a series",
            S("--data", "binary.bin"),
            expect=["expected a numeric text table, received binary data"],
        ),
        C(
            "series-latin1",
            "data: series",
            "Latin-1 bytes as a series",
            S("--data", "latin1.txt"),
            expect=["expected a numeric text table, received undecodable bytes"],
        ),
        C(
            "series-column-name",
            "data: series",
            "a misspelt column name",
            S("--column", "valeu"),
            expect=["column: expected one of t, value, received 'valeu' (did you mean 'value'?)"],
        ),
        C(
            "series-column-index",
            "data: series",
            "a column index past the last",
            S("--column", "5"),
            expect=["column: expected an index in [-2, 2), received '5'"],
        ),
        C(
            "series-seq-too-long",
            "data: series",
            "windows longer than the series",
            S("--data", "tiny.csv", "--seq-len", "50"),
            expect=["seq_len: expected at most", "received 50"],
        ),
        C(
            "series-diff-unknown",
            "data: series",
            "a differencing order the series task does not have",
            S("--diff", "3"),
            expect=["diff: expected one of auto, 0, 1, 2, received '3'"],
        ),
        C(
            "series-seasonal-one",
            "data: series",
            "a seasonal difference of period 1",
            S("--seasonal-diff", "1"),
            expect=["seasonal_diff: expected 0 (none) or a period of at least 2, received 1"],
        ),
        C(
            "series-seasonal-too-long",
            "data: series",
            "a seasonal period that leaves too few training values",
            S("--seasonal-diff", "400"),
            expect=["seasonal_diff: expected differencing that leaves at least 3 of the 360 training values"],
        ),
        C(
            "series-seasonal-columns-too-long",
            "data: series",
            "a seasonal period that leaves too few training rows of several columns",
            S("--column", "t,value", "--seasonal-diff", "400"),
            expect=["seasonal_diff: expected differencing that leaves at least 3 of the 360 training values"],
        ),
        C(
            "text-diff",
            "data: series",
            "--diff for a text run",
            T("--diff", "1"),
            expect=["diff: expected only with --task series, received '1' with task 'text'"],
        ),
        C(
            "series-normalize-unknown",
            "data: series",
            "a normalisation the series task does not have",
            S("--normalize", "robust"),
            expect=["normalize: expected one of global, window, none, received 'robust'"],
        ),
        C(
            "series-normalize-window-stream",
            "data: series",
            "per-window normalisation of a stream (no windows)",
            S("--normalize", "window", "--batching", "stream"),
            expect=[
                "normalize: 'window' normalises each window",
                "expected --batching window, received --batching stream",
            ],
        ),
        C(
            "series-normalize-window-one-step",
            "data: series",
            "per-window normalisation of windows of one value",
            S("--normalize", "window", "--seq-len", "1"),
            expect=["normalize: 'window' normalises each window", "expected --seq-len of at least 2, received 1"],
        ),
        C(
            "series-normalize-window-tbptt",
            "data: series",
            "per-window normalisation with truncated BPTT (a loss at every step)",
            S("--normalize", "window", "--algorithm", "tbptt"),
            expect=["normalize: 'window' trains on each window's last step", "received --algorithm tbptt"],
        ),
        C(
            "series-normalize-window-columns",
            "data: series",
            "per-window normalisation of a target the network does not read",
            S("--column", "t", "--target", "value", "--normalize", "window"),
            expect=["normalize: expected every --target among the --column inputs for 'window'", "targets value"],
        ),
        C(
            "series-no-data",
            "data: series",
            "a series task without data",
            ["train", "--task", "series", "--out", "new-run"],
            expect=["data: expected a series file for --task series, received none"],
        ),
    ]
    flags = [
        C(
            "flag-hidden-negative",
            "flags",
            "a negative size",
            T("--hidden", "-3"),
            expect=["hidden: expected a positive integer, received -3"],
        ),
        C(
            "flag-hidden-word",
            "flags",
            "a word for a number",
            T("--hidden", "big"),
            expect=["--hidden: expected an integer, received 'big'"],
        ),
        C(
            "flag-recurrent-dropout-gru",
            "flags",
            "recurrent dropout on a GRU",
            T("--recurrent-dropout", "0.2", "--cell", "gru"),
            expect=["recurrent_dropout: expected --cell elman or lstm", "received --cell gru"],
        ),
        C(
            "flag-recurrent-dropout-uoro",
            "flags",
            "recurrent dropout with a forward-in-time algorithm",
            T("--recurrent-dropout", "0.2", "--algorithm", "uoro"),
            expect=["recurrent_dropout: expected only with --task text or series and --algorithm full, tbptt"],
        ),
        C(
            "flag-recurrent-dropout-one",
            "flags",
            "recurrent dropout of 1",
            T("--recurrent-dropout", "1"),
            expect=["recurrent_dropout: expected a number in [0, 1), received 1.0"],
        ),
        C(
            "flag-zoneout-jordan",
            "flags",
            "zoneout on a Jordan network",
            T("--zoneout", "0.1", "--cell", "jordan"),
            expect=["zoneout: expected --cell elman, gru or lstm", "received --cell jordan"],
        ),
        C(
            "flag-zoneout-cell-gru",
            "flags",
            "zoneout of the cell state on a GRU (which has none)",
            T("--zoneout-cell", "0.5", "--cell", "gru"),
            expect=["zoneout_cell: expected --cell lstm", "received --cell gru"],
        ),
        C(
            "flag-zoneout-with-recurrent-dropout",
            "flags",
            "zoneout and recurrent dropout on the same state",
            T("--zoneout", "0.1", "--recurrent-dropout", "0.2"),
            expect=["zoneout: expected either --recurrent-dropout or --zoneout/--zoneout-cell", "received"],
        ),
        C(
            "flag-zoneout-rtrl",
            "flags",
            "zoneout with a forward-in-time algorithm",
            T("--zoneout", "0.1", "--algorithm", "rtrl"),
            expect=["zoneout: expected only with --task text or series and --algorithm full, tbptt"],
        ),
        C(
            "flag-dropout-budget-reaching-back",
            "flags",
            "dropout between layers with truncated BPTT whose windows reach past their batch within a memory budget",
            T(
                "--dropout",
                "0.2",
                "--layers",
                "2",
                "--algorithm",
                "tbptt",
                "--k1",
                "10",
                "--k2",
                "30",
                "--memory-budget",
                "1MB",
            ),  # fmt: skip
            expect=[
                "memory_budget: expected --k2 equal to --k1 with dropout below the last layer or zoneout",
                "received --k2 30 > --k1 10",
            ],
        ),
        C(
            "flag-input-dropout-tokens",
            "flags",
            "input dropout on token ids (no embedding)",
            T("--input-dropout", "0.2"),
            expect=["input_dropout: expected --embed E on text", "received --embed 0"],
        ),
        C(
            "flag-input-noise-text",
            "flags",
            "input noise on text",
            T("--input-noise", "0.1"),
            expect=["input_noise: expected only with --task series, received 0.1 with task 'text'"],
        ),
        C(
            "flag-input-noise-negative",
            "flags",
            "a negative noise level",
            S("--input-noise", "-0.1"),
            expect=["input_noise: expected a finite non-negative number, received -0.1"],
        ),
        C(
            "flag-tokens-unknown",
            "flags",
            "a kind of token there is none of",
            T("--tokens", "sentence"),
            expect=["tokens: expected one of char, word, received 'sentence'"],
        ),
        C(
            "flag-vocab-size-chars",
            "flags",
            "a vocabulary size for a character run",
            T("--vocab-size", "500"),
            expect=["vocab_size: expected only with --tokens word, received 500 with tokens 'char'"],
        ),
        C(
            "flag-vocab-size-one",
            "flags",
            "a word vocabulary of one (<unk> alone)",
            T("--tokens", "word", "--vocab-size", "1"),
            expect=["vocab_size: expected an integer from 2 to 1,000,000, received 1"],
        ),
        C(
            "flag-tokens-series",
            "flags",
            "word tokens on a series",
            S("--tokens", "word"),
            expect=["tokens: expected only with --task text, received 'word' with task 'series'"],
        ),
        C(
            "flag-tie-no-embedding",
            "flags",
            "weight tying without an embedding as wide as the hidden layer",
            T("--tie"),
            expect=[
                "tie: expected --embed equal to --hidden (8; the readout's rows are the embedding's), received --embed 0"
            ],
        ),
        C(
            "flag-tie-series",
            "flags",
            "weight tying on a series",
            S("--tie"),
            expect=["tie: expected only with --task text, received True with task 'series'"],
        ),
        C(
            "flag-dropout-one",
            "flags",
            "dropping every unit",
            T("--dropout", "1"),
            expect=["dropout: expected a number in [0, 1), received 1.0"],
        ),
        C(
            "flag-dropout-rtrl",
            "flags",
            "dropout with a forward-in-time algorithm",
            T("--dropout", "0.2", "--algorithm", "rtrl", "--hidden", "8"),
            expect=["dropout: expected only with --task text or series and --algorithm full, tbptt, random or artbp"],
        ),
        C(
            "flag-dropout-spikes",
            "flags",
            "dropout on a spike task",
            ["train", "--task", "cue-accumulation", "--cell", "alif", "--dropout", "0.2", "--out", "new-run"],
            expect=["dropout: expected only with --task text or series", "with task 'cue-accumulation'"],
        ),
        C(
            "flag-test-fraction-all",
            "flags",
            "validation and test parts that take all the data",
            T("--val-fraction", "0.5", "--test-fraction", "0.5"),
            expect=["test_fraction: expected a number in [0, 0.5) (with --val-fraction 0.5), received 0.5"],
        ),
        C(
            "flag-test-fraction-task",
            "flags",
            "a test part for a generated task",
            ["train", "--task", "adding", "--test-fraction", "0.1", "--out", "new-run"],
            expect=["test_fraction: expected only with --task text or series, received 0.1 with task 'adding'"],
        ),
        C(
            "flag-steps-fraction",
            "flags",
            "a fraction of a step",
            T("--steps", "1.5"),
            expect=["--steps: expected an integer, received '1.5'"],
        ),
        C(
            "flag-lr-inf",
            "flags",
            "an infinite learning rate",
            T("--lr", "inf"),
            expect=["--lr: expected a finite number, received 'inf'"],
        ),
        C(
            "flag-lr-nan",
            "flags",
            "a NaN learning rate",
            T("--lr", "nan"),
            expect=["--lr: expected a finite number, received 'nan'"],
        ),
        C(
            "flag-lr-zero",
            "flags",
            "a zero learning rate",
            T("--lr", "0"),
            expect=["lr: expected a number > 0, received 0.0"],
        ),
        C(
            "flag-lr-negative",
            "flags",
            "a negative learning rate",
            T("--lr", "-0.1"),
            expect=["lr: expected a finite non-negative number, received -0.1"],
        ),
        C(
            "flag-epochs-inf",
            "flags",
            "infinitely many epochs",
            T("--epochs", "inf"),
            expect=["--epochs: expected a finite number, received 'inf'"],
        ),
        C(
            "flag-no-steps",
            "flags",
            "neither steps nor epochs",
            T("--steps", "0"),
            expect=["steps: expected a positive number of steps (or epochs > 0), received 0"],
        ),
        C(
            "flag-cell",
            "flags",
            "a misspelt cell",
            T("--cell", "lsmt"),
            expect=["cell: expected one of ", "elman, gru, jordan", "received 'lsmt' (did you mean 'lstm'?)"],
        ),
        C(
            "flag-optimizer",
            "flags",
            "an unknown optimizer",
            T("--optimizer", "adamw"),
            expect=["optimizer: expected one of", "received 'adamw' (did you mean 'adam'?)"],
        ),
        C(
            "flag-task",
            "flags",
            "a misspelt task",
            T("--task", "seris"),
            expect=[
                "task: expected one of text, series, cue-accumulation, store-recall, adding, copy-memory, temporal-xor, letters, embedded-reber, add-task, received 'seris' (did you mean 'series'?)"
            ],
        ),
        C(
            "flag-algorithm",
            "flags",
            "a misspelt algorithm",
            T("--algorithm", "tbtt"),
            expect=[
                "algorithm: expected one of full, tbptt, random, artbp, rtrl, uoro, eprop, received 'tbtt' (did you mean 'tbptt'?)"
            ],
        ),
        C(
            "flag-dtype",
            "flags",
            "an unsupported dtype",
            T("--dtype", "float16"),
            expect=["dtype: expected one of float32, float64, received 'float16'"],
        ),
        C(
            "flag-batching",
            "flags",
            "a misspelt batching",
            T("--batching", "strem"),
            expect=["batching: expected one of stream, window, received 'strem' (did you mean 'stream'?)"],
        ),
        C(
            "flag-update",
            "flags",
            "an unknown update mode",
            T("--update", "epoch"),
            expect=["update: expected one of online, batch, received 'epoch'"],
        ),
        C(
            "flag-schedule",
            "flags",
            "an unknown schedule",
            T("--schedule", "cosin"),
            expect=["schedule: expected one of constant, cosine, received 'cosin' (did you mean 'cosine'?)"],
        ),
        C(
            "flag-k1-without-tbptt",
            "flags",
            "--k1 without --algorithm tbptt",
            T("--k1", "5"),
            expect=["k1: expected only with --algorithm tbptt, received 5 with algorithm 'full'"],
        ),
        C(
            "flag-k2-below-k1",
            "flags",
            "k2 below k1",
            T("--algorithm", "tbptt", "--k1", "10", "--k2", "5"),
            expect=["k2: expected a number >= k1 = 10, received 5"],
        ),
        C(
            "flag-c-without-random",
            "flags",
            "--truncation-prob with full BPTT",
            T("--truncation-prob", "0.1"),
            expect=["truncation_prob: expected only with --algorithm random or artbp, received 0.1"],
        ),
        C(
            "flag-artbp-without-c",
            "flags",
            "ARTBP without a truncation probability",
            T("--algorithm", "artbp"),
            expect=["truncation_prob: expected a probability c in (0, 1) with --algorithm artbp, received 0.0"],
        ),
        C(
            "flag-random-without-c",
            "flags",
            "random truncation without a probability",
            T("--algorithm", "random"),
            expect=["with --algorithm random, received 0.0"],
        ),
        C(
            "flag-c-one",
            "flags",
            "a truncation probability of 1",
            T("--algorithm", "artbp", "--truncation-prob", "1"),
            expect=["truncation_prob: expected a number in [0, 1), received 1.0"],
        ),
        C(
            "flag-column-on-text",
            "flags",
            "--column on a text task",
            T("--column", "2"),
            expect=["column: expected only with --task series, received '2' with task 'text'"],
        ),
        C(
            "flag-seq-len-on-spikes",
            "flags",
            "--seq-len on a generated spike task (its sequences have their own length)",
            ["train", "--task", "cue-accumulation", "--cell", "alif", "--seq-len", "50", "--steps", "2", "--out", "x"],
            expect=[
                "seq_len: expected only with --task text, series or a long-term task but embedded-reber, received 50 with task 'cue-accumulation'"
            ],
        ),
        C(
            "flag-eprop-gru",
            "flags",
            "e-prop with a cell it has no eligibility traces for",
            T("--algorithm", "eprop", "--cell", "gru"),
            expect=[
                "algorithm: expected eprop with a spiking cell on a spike task (--cell lif or alif) or an lstm",
                "received task 'text' and cell 'gru'",
            ],
        ),
        C(
            "flag-eprop-embed",
            "flags",
            "e-prop under an embedding level",
            T("--algorithm", "eprop", "--embed", "16"),
            expect=["expected eprop on the recurrent level that reads the input", "received --embed 16"],
        ),
        C(
            "flag-eprop-online-layers",
            "flags",
            "e-prop's online signal with two recurrent levels",
            T("--algorithm", "eprop", "--layers", "2"),
            expect=["expected --layers 1 for eprop's online signal", "received --layers 2"],
        ),
        C(
            "flag-update-every-full",
            "flags",
            "--update-every with full BPTT",
            T("--update-every", "5"),
            expect=["update_every: expected only with --algorithm rtrl, uoro or eprop", "received 5"],
        ),
        C(
            "flag-update-every-window",
            "flags",
            "--update-every on random windows (nothing carried between updates)",
            T("--algorithm", "rtrl", "--update-every", "5", "--batching", "window"),
            expect=["update_every: expected stream batching", "received --batching 'window'"],
        ),
        C(
            "flag-update-every-seq-len",
            "flags",
            "--update-every and a different --seq-len",
            T("--algorithm", "uoro", "--update-every", "5", "--seq-len", "6"),
            expect=["update_every: expected the same as --seq-len", "received 5 and --seq-len 6"],
        ),
        C(
            "flag-data-on-spikes",
            "flags",
            "--data on a generated spike task",
            ["train", "--task", "store-recall", "--data", "words.txt", "--steps", "2", "--out", "x"],
            expect=["data: expected only with --task text or series, received 'words.txt' with task 'store-recall'"],
        ),
        C(
            "flag-embed-on-series",
            "flags",
            "--embed on a series task",
            S("--embed", "8"),
            expect=["embed: expected only with --task text, received 8 with task 'series'"],
        ),
        C(
            "flag-momentum-with-adam",
            "flags",
            "--momentum with Adam",
            T("--momentum", "0.5"),
            expect=[
                "momentum: expected only with --optimizer momentum or nesterov, received 0.5 with optimizer 'adam'"
            ],
        ),
        C(
            "flag-weight-decay-with-sgd",
            "flags",
            "--weight-decay with SGD",
            T("--optimizer", "sgd", "--weight-decay", "0.01"),
            expect=["weight_decay: expected only with --optimizer adam, received 0.01"],
        ),
        C(
            "flag-warmup-constant",
            "flags",
            "--warmup with a constant rate",
            T("--schedule", "constant", "--warmup", "10"),
            expect=["warmup: expected only with --schedule cosine, received 10"],
        ),
        C(
            "flag-plateau-factor-alone",
            "flags",
            "--plateau-factor without --plateau-patience",
            T("--plateau-factor", "0.3"),
            expect=["plateau_factor: expected only with --plateau-patience > 0, received 0.3"],
        ),
        C(
            "flag-batch-update-windows",
            "flags",
            "batch updates over random windows",
            S("--update", "batch"),
            expect=["update: 'batch'", "expected --batching stream, received 'window'"],
        ),
        C(
            "flag-patience-no-validation",
            "flags",
            "early stopping with no validation part",
            T("--val-fraction", "0", "--patience", "2"),
            expect=[
                "patience: expected a validation part to watch",
                "received 2 with none (the run would never stop early",
            ],
        ),
        C(
            "flag-plateau-no-validation",
            "flags",
            "a plateau schedule with no validation part",
            S("--val-fraction", "0", "--plateau-patience", "3"),
            expect=[
                "plateau_patience: expected a validation part to watch",
                "received 3 with none (the lr would never be cut; --plateau-patience 0",
            ],
        ),
        C(
            "flag-val-fraction",
            "flags",
            "a validation fraction of 1",
            T("--val-fraction", "1"),
            expect=["val_fraction: expected a number in [0, 1), received 1.0"],
        ),
        C(
            "flag-seq-len-zero",
            "flags",
            "sequences of length 0",
            T("--seq-len", "0"),
            expect=["seq_len: expected a positive integer, received 0"],
        ),
        C(
            "flag-threads-negative",
            "flags",
            "a negative thread count",
            T("--threads", "-1"),
            expect=["threads: expected a non-negative integer, received -1"],
        ),
        C(
            "flag-diverge-after-zero",
            "flags",
            "--diverge-after 0",
            T("--diverge-after", "0"),
            expect=["diverge_after: expected a positive integer, received 0"],
        ),
        C(
            "flag-plateau-factor-one",
            "flags",
            "a plateau factor of 1",
            T("--plateau-patience", "2", "--plateau-factor", "1"),
            expect=["plateau_factor: expected a number in (0, 1), received 1.0"],
        ),
        C(
            "flag-memory-budget-word",
            "flags",
            "a memory budget that is not a size",
            T("--memory-budget", "lots"),
            expect=["memory_budget: expected bytes such as 64MB, 1.5GiB or 800000, received 'lots'"],
        ),
        C(
            "flag-memory-budget-too-small",
            "flags",
            "a memory budget under one step's tapes",
            T("--memory-budget", "1KB"),
            expect=["memory budget: expected at least", "one step's caches), received 0.00 MiB (1,000 bytes)"],
        ),
        C(
            "flag-memory-budget-masked-task",
            "flags",
            "a memory budget over an unmasked step's minimum and under a masked one's (embedded-reber's "
            "right-padded strings: refused before the run folder is made, not at the first step)",
            ["train", "--task", "embedded-reber", "--hidden", "8", "--batch-size", "4", "--steps", "2"]
            + ["--memory-budget", "9300", "--no-progress", "--out", "new-run"],
            expect=["memory budget: expected at least", "received 0.01 MiB (9,300 bytes)"],
        ),
        C(
            "flag-resume-empty",
            "run folders",
            "an empty --resume (read as none, it started a new run)",
            ["train", "--resume", ""],
            expect=["--resume: expected a run folder, received ''"],
        ),
        C(
            "flag-out-empty",
            "run folders",
            "an empty --out (read as none, the run went to runs/<time>)",
            T("--out", ""),
            expect=["--out: expected a run folder, received ''"],
        ),
        C(
            "flag-out-dangling-link",
            "run folders",
            "--out naming a link to nothing",
            T("--out", "dangling.txt"),
            expect=["--out: expected a folder for the run, received 'dangling.txt', a link to nothing"],
        ),
        C(
            "import-over-stale-best",
            "run folders",
            "import into a folder holding another run's best.npz (it would stand for the imported weights)",
            ["import", "weights/text.npz", "--out", "stale"],
            expect=["--out: expected a new run folder, received 'stale' which holds best.npz of another run"],
        ),
        C(
            "resume-lock-link",
            "run folders",
            "a run folder whose .lock is a link to another file (which the lock's record would overwrite)",
            ["train", "--resume", "runs/lock-link", "--steps", "6"],
            expect=["--resume: expected .lock in 'runs/lock-link' to be a regular file, received a symbolic link"],
        ),
        C(
            "series-huge-values",
            "data files",
            "finite values whose spread overflows a float64 (about 1e300)",
            S("--data", "huge.csv"),
            expect=["data: expected values whose mean and spread fit a float64, received values up to 7e+300"],
        ),
        C(
            "series-semicolons",
            "data files",
            "semicolon-separated numbers with decimal commas (read as commas: wrong numbers)",
            S("--data", "semicolons.csv"),
            expect=["expected numbers separated by commas, spaces or tabs", "received a line with ';': '0;0,0000'"],
        ),
        C(
            "series-column-name-twice",
            "data files",
            "--column naming a header name two columns have",
            S("--data", "samename.csv", "--column", "value"),
            expect=["column: expected a name that one column has, received 'value', the name of columns 0, 1"],
        ),
        C(
            "series-bad-value-after-comments",
            "data files",
            "a bad value after comment and blank lines: the file's own line is named",
            S("--data", "comments.csv"),
            expect=["data file 'comments.csv', row 7, column 1: expected a number, received 'oops'"],
        ),
        C(
            "sample-prime-unknown",
            "sampling",
            "a prime none of whose characters the run knows (the sample would ignore it)",
            ["sample", "runs/text", "--prime", "\u2603\u2603"],
            expect=["prime: expected text with at least one of the run's", "received '\u2603\u2603'"],
        ),
        C(
            "forecast-horizon-huge",
            "sampling",
            "a forecast horizon of 10^11 steps",
            ["forecast", "runs/series", "--horizon", "99999999999"],
            expect=["--horizon: expected a positive integer of at most 1,000,000, received '99999999999'"],
        ),
        C(
            "flag-memory-policy-alone",
            "flags",
            "--memory-policy without --memory-budget",
            T("--memory-policy", "mixed"),
            expect=["memory_policy: expected only with --memory-budget, received 'mixed'"],
        ),
        C(
            "flag-memory-budget-rtrl",
            "flags",
            "--memory-budget with RTRL",
            T("--algorithm", "rtrl", "--memory-budget", "1MB"),
            expect=[
                "memory_budget: expected only with --algorithm full or tbptt, received '1MB' with algorithm 'rtrl'"
            ],
        ),
        C(
            "plan-too-small",
            "commands",
            "bptt plan with a budget under one step",
            ["plan", "--budget", "1KB"],
            expect=["memory budget: expected at least", "bytes: one step's caches), received 0.00 MiB (1,000 bytes)"],
        ),
        C(
            "flag-unknown",
            "flags",
            "a misspelt option",
            T("--lrr", "3"),
            expect=["received unknown option '--lrr' (did you mean '--lr'?)"],
        ),
        C(
            "flag-abbreviated",
            "flags",
            "an abbreviated option",
            T("--hid", "3"),
            expect=["received unknown option '--hid' (did you mean '--hidden'?)"],
        ),
        C(
            "flag-extra-argument",
            "flags",
            "a stray argument",
            T("words.txt"),
            expect=["received an extra argument 'words.txt'"],
        ),
        C(
            "flag-missing-value",
            "flags",
            "an option without its value",
            ["train", "--hidden"],
            expect=["--hidden: expected a value, received none"],
        ),
        C(
            "flag-bool-value",
            "flags",
            "a value for a switch",
            T("--progress=yes"),
            expect=["--progress: expected no value, received one"],
        ),
        C(
            "command-unknown",
            "flags",
            "a misspelt command",
            ["trian"],
            expect=["COMMAND: expected one of", "received 'trian' (did you mean 'train'?)"],
        ),
        C(
            "out-a-file",
            "run folders",
            "--out naming a file",
            T("--out", "afile"),
            expect=["--out: expected a folder for the run, received 'afile', which is a file"],
        ),
        C(
            "out-under-a-file",
            "run folders",
            "--out under a file",
            T("--out", "afile/run"),
            expect=["--out: expected a path under folders, received 'afile/run', under the file"],
        ),
        C(
            "out-existing-run",
            "run folders",
            "--out naming a folder that holds a run",
            T("--out", "runs/text"),
            expect=["--out: expected a new run folder, received 'runs/text' which already holds a run"],
        ),
        C(
            "seeds-out-existing-ensemble",
            "ensembles",
            "--seeds with --out naming a folder that holds an ensemble",
            S("--seeds", "2", "--out", "ens/whole"),
            expect=[
                "--out: expected a new folder for the ensemble, received 'ens/whole', which already holds an ensemble"
            ],
        ),
        C(
            "seeds-out-existing-run",
            "ensembles",
            "--seeds with --out naming a run folder",
            S("--seeds", "2", "--out", "runs/series"),
            expect=["--out: expected a new folder for the ensemble, received 'runs/series', which already holds a run"],
        ),
        C(
            "seeds-zero",
            "ensembles",
            "--seeds 0",
            S("--seeds", "0"),
            expect=["--seeds: expected a positive integer, received '0'"],
        ),
        C(
            "seeds-resume-other-count",
            "ensembles",
            "--resume of an ensemble of 2 with --seeds 3",
            ["train", "--resume", "ens/whole", "--seeds", "3"],
            expect=["--seeds: expected 2 (the ensemble 'ens/whole') or none with --resume, received 3"],
        ),
        C(
            "resume-other-diff",
            "data: series",
            "--resume of a series run with another differencing",
            ["train", "--resume", "runs/series", "--diff", "1"],
            expect=["diff: expected the run's own differencing (no differencing; a run keeps it), received --diff 1"],
        ),
        C(
            "resume-other-columns",
            "data: series",
            "--resume of a run of two columns with them in another order",
            ["train", "--resume", "runs/cols", "--column", "y,x"],
            expect=["column: expected the run's columns, inputs x, y -> targets y, received inputs y, x -> targets y"],
        ),
        C(
            "seeds-resume-a-run",
            "ensembles",
            "--resume of a single run with --seeds",
            ["train", "--resume", "runs/series", "--seeds", "2"],
            expect=["--seeds: expected an ensemble folder with --resume, received 'runs/series', a single run"],
        ),
        C(
            "seeds-past-2-32",
            "ensembles",
            "seeds that would pass 2**32",
            S("--seeds", "3", "--seed", "4294967294"),
            expect=["--seeds: expected seeds below 2**32 (--seed 4294967294 and 3 after it)"],
        ),
        C(
            "resume-other-tokens",
            "run folders",
            "--resume of a character run with --tokens word",
            ["train", "--resume", "runs/text", "--tokens", "word", "--steps", "9"],
            expect=["tokens: expected 'char' with --resume (the run's own", "received 'word'"],
        ),
        C(
            "ensemble-sample",
            "ensembles",
            "bptt sample given an ensemble folder",
            ["sample", "ens/whole"],
            expect=["RUN: expected one run, received the ensemble 'ens/whole' of 2 runs", "ens/whole/seed-0"],
        ),
        C(
            "ensemble-export",
            "ensembles",
            "bptt export given an ensemble folder",
            ["export", "ens/whole", "--out", "ens.npz"],
            expect=["RUN: expected one run, received the ensemble 'ens/whole' of 2 runs"],
        ),
        C(
            "ensemble-unreadable",
            "ensembles",
            "ensemble.json cut short",
            ["evaluate", "ens/unreadable", "--data", "series.csv"],
            expect=["ens/unreadable/ensemble.json: expected the JSON that bptt train --seeds writes", "does not read"],
        ),
        C(
            "ensemble-paths",
            "ensembles",
            "ensemble.json naming a path instead of seeds",
            ["forecast", "ens/paths", "--horizon", "5"],
            expect=[
                "ens/paths/ensemble.json: expected {'format': 'bptt ensemble', 'seeds': [1 to 1000 distinct seeds]"
            ],
        ),
        C(
            "ensemble-bad-config",
            "ensembles",
            "ensemble.json with a setting of the wrong type",
            ["train", "--resume", "ens/badconfig"],
            expect=["ens/badconfig/ensemble.json: config: hidden: expected an integer, received 'many'"],
        ),
        C(
            "ensemble-member-missing",
            "ensembles",
            "an ensemble whose second member's folder is gone",
            ["evaluate", "ens/missing", "--data", "series.csv"],
            expect=["RUN: expected the 2 member folders of the ensemble 'ens/missing', received it without seed-1"],
        ),
        C(
            "ensemble-mixed-tasks",
            "ensembles",
            "an ensemble whose members are a series run and a text run",
            ["evaluate", "ens/mixed", "--data", "series.csv"],
            expect=["RUN: expected members that read their data alike", "whose task differs"],
        ),
        C(
            "tensorboard-a-file",
            "run folders",
            "--tensorboard naming a file",
            T("--tensorboard", "afile"),
            expect=["tensorboard: expected a folder for the event files, received 'afile', which is a file"],
        ),
        C(
            "tensorboard-used",
            "run folders",
            "--tensorboard naming a folder with another run's event files",
            T("--tensorboard", "tb-used"),
            expect=["tensorboard: expected a folder without event files", "received 'tb-used', which holds 1"],
        ),
    ]
    toml = [
        C(
            "toml-both",
            "TOML config",
            "settings at the top level beside a [train] table (they were dropped)",
            T("--config", "both.toml"),
            expect=[
                "--config 'both.toml': expected the settings in the [train] table or at the top level, not both, "
                "received ['lr', 'steps'] outside [train]"
            ],
        ),
        C(
            "epochs-and-steps",
            "TOML config",
            "--epochs and --steps both (--steps was ignored)",
            T("--epochs", "0.05", "--steps", "50"),
            expect=[
                "steps: expected --steps or --epochs (epochs set the number of updates), received both: --steps 50 and --epochs 0.05"
            ],
        ),
        C(
            "k1-and-seq-len",
            "TOML config",
            "TBPTT's --k1 unlike --seq-len (--seq-len was ignored)",
            T("--algorithm", "tbptt", "--k1", "20", "--seq-len", "50"),
            expect=["k1: expected the same as --seq-len (TBPTT's segment is k1 steps), received 20 and --seq-len 50"],
        ),
        C(
            "eprop-feedback-exact",
            "TOML config",
            "random feedback with e-prop's exact signal (it has no feedback matrix)",
            T("--algorithm", "eprop", "--eprop-signal", "exact", "--eprop-feedback", "random"),
            expect=[
                "eprop_feedback: expected only with --algorithm eprop --eprop-signal online, received 'random' with "
                "eprop_signal 'exact'"
            ],
        ),
        C(
            "resume-series-column",
            "TOML config",
            "a one-column series run resumed on another column (its normaliser is the first column's)",
            ["train", "--resume", "runs/series", "--steps", "6", "--column", "t"],
            expect=["column: expected the run's column value, received t"],
        ),
        C(
            "toml-missing",
            "TOML config",
            "a config file that does not exist",
            T("--config", "missing.toml"),
            expect=["--config: expected an existing TOML file, received 'missing.toml'"],
        ),
        C(
            "toml-syntax",
            "TOML config",
            "a config that does not parse",
            T("--config", "bad.toml"),
            expect=["--config 'bad.toml': expected valid TOML, received a file that does not parse"],
        ),
        C(
            "toml-unknown-key",
            "TOML config",
            "a misspelt key",
            T("--config", "unknown.toml"),
            expect=[
                "--config 'unknown.toml': expected keys among",
                "received unknown 'hiden' (did you mean 'hidden'?)",
            ],
        ),
        C(
            "toml-wrong-type",
            "TOML config",
            "a string for a number",
            T("--config", "wrongtype.toml"),
            expect=["--config 'wrongtype.toml': hidden: expected an integer, received 'big'"],
        ),
        C(
            "toml-nan",
            "TOML config",
            "lr = nan",
            T("--config", "nan.toml"),
            expect=["lr: expected a finite non-negative number, received nan"],
        ),
        C(
            "toml-list",
            "TOML config",
            "a list for a name",
            T("--config", "list.toml"),
            expect=["cell: expected a string, received ['lstm']"],
        ),
        C(
            "toml-a-folder",
            "TOML config",
            "a folder as the config",
            T("--config", "adir"),
            expect=["--config: expected an existing TOML file, received 'adir'"],
        ),
        C(
            "toml-with-resume",
            "TOML config",
            "--config with --resume",
            ["train", "--resume", "runs/text", "--config", "bad.toml"],
            expect=["--config: expected no config file with --resume"],
        ),
    ]
    runs = [
        C(
            "resume-missing",
            "run folders",
            "--resume of a folder that does not exist",
            ["train", "--resume", "runs/none"],
            expect=["--resume: expected a run folder with checkpoint.npz, received 'runs/none'"],
        ),
        C(
            "resume-empty-folder",
            "run folders",
            "--resume of a folder without a checkpoint",
            ["train", "--resume", "runs/empty"],
            expect=["--resume: expected a run folder with checkpoint.npz, received 'runs/empty'"],
        ),
        C(
            "resume-fewer-steps",
            "run folders",
            "--resume --steps below the steps done",
            ["train", "--resume", "runs/text", "--steps", "2"],
            expect=["steps: expected more than the 4 updates already done in 'runs/text', received 2"],
        ),
        C(
            "resume-done",
            "run folders",
            "--resume of a finished run without more steps",
            ["train", "--resume", "runs/text"],
            expect=["steps: expected more than the 4 updates already done", "received 4"],
        ),
        C(
            "resume-arrays-run",
            "run folders",
            "--resume of a run trained from Python on arrays (bptt.fit(x=..., y=...)), without them",
            ["train", "--resume", "runs/arrays", "--steps", "8"],
            expect=["data: expected the arrays the run in 'runs/arrays' trained on", "received none"],
        ),
        Case(
            "fit-resume-arrays-on-a-file-run",
            "run folders",
            "bptt.fit(x=..., y=..., resume=RUN) of a run that trains on its file",
            call=lambda ws: _fit_arrays(resume="runs/text", steps=8),
            expect=["x: expected no arrays for the run in 'runs/text'"],
        ),
        C(
            "resume-other-out",
            "run folders",
            "--resume with another --out",
            ["train", "--resume", "runs/text", "--out", "elsewhere"],
            expect=["out: expected no --out with --resume", "received 'elsewhere'"],
        ),
        C(
            "resume-other-size",
            "run folders",
            "--resume with another --hidden",
            ["train", "--resume", "runs/text", "--steps", "8", "--hidden", "16"],
            expect=["does not fit the run's model", "expected shape"],
        ),
        C(
            "resume-other-dtype",
            "run folders",
            "--resume with another --dtype",
            ["train", "--resume", "runs/text", "--steps", "8", "--dtype", "float32"],
            expect=["dtype: expected float64 (the checkpoint's), received float32"],
        ),
        C(
            "resume-other-optimizer",
            "run folders",
            "--resume with another optimizer",
            ["train", "--resume", "runs/text", "--steps", "8", "--optimizer", "sgd"],
            expect=["optimizer state: expected entry", "was --optimizer, --clip or --plateau-patience changed?"],
        ),
        C(
            "resume-other-batch",
            "run folders",
            "--resume with another number of streams",
            ["train", "--resume", "runs/text", "--steps", "8", "--batch-size", "8"],
            expect=["batch_size: expected 4 (the streams of the run's carried state), received 8"],
        ),
        C(
            "resume-task-flag",
            "run folders",
            "--resume adding a setting that does not apply",
            ["train", "--resume", "runs/text", "--steps", "8", "--column", "1"],
            expect=["column: expected only with --task series"],
        ),
        C(
            "sample-series-run",
            "commands",
            "bptt sample on a series run",
            ["sample", "runs/series"],
            expect=["RUN: expected a run of --task text, received a series run 'runs/series'"],
        ),
        C(
            "sample-missing-run",
            "commands",
            "bptt sample on a folder that does not exist",
            ["sample", "runs/none"],
            expect=["RUN: expected a run folder (from bptt train), received 'runs/none' (no such folder)"],
        ),
        C(
            "sample-a-file",
            "commands",
            "bptt sample on a file",
            ["sample", "afile"],
            expect=["RUN: expected a run folder (from bptt train), received 'afile' (a file)"],
        ),
        C(
            "sample-empty-folder",
            "commands",
            "bptt sample on a folder without checkpoints",
            ["sample", "runs/empty"],
            expect=["RUN: expected best.npz or checkpoint.npz in 'runs/empty', received a folder without them"],
        ),
        C(
            "sample-temperature-zero",
            "commands",
            "temperature 0",
            ["sample", "runs/text", "--temperature", "0"],
            expect=["--temperature: expected a finite number > 0, received '0'"],
        ),
        C(
            "sample-temperature-nan",
            "commands",
            "temperature NaN",
            ["sample", "runs/text", "--temperature", "nan"],
            expect=["--temperature: expected a finite number > 0, received 'nan'"],
        ),
        C(
            "sample-length-negative",
            "commands",
            "a negative length",
            ["sample", "runs/text", "--length", "-1"],
            expect=["--length: expected a non-negative integer, received '-1'"],
        ),
        C(
            "sample-top-k-zero",
            "commands",
            "top-k of 0",
            ["sample", "runs/text", "--top-k", "0"],
            expect=["--top-k: expected a positive integer, received '0'"],
        ),
        C(
            "sample-checkpoint-name",
            "commands",
            "a misspelt checkpoint choice",
            ["sample", "runs/text", "--checkpoint", "bets"],
            expect=["--checkpoint: expected one of best, last, received 'bets' (did you mean 'best'?)"],
        ),
        C(
            "sample-no-run",
            "commands",
            "bptt sample without a run",
            ["sample"],
            expect=["RUN: expected a value, received none"],
        ),
        C(
            "forecast-text-run",
            "commands",
            "bptt forecast on a text run",
            ["forecast", "runs/text"],
            expect=["RUN: expected a run of --task series, received a text run"],
        ),
        C(
            "forecast-horizon-zero",
            "commands",
            "a forecast of 0 steps",
            ["forecast", "runs/series", "--horizon", "0"],
            expect=["--horizon: expected a positive integer of at most 1,000,000, received '0'"],
        ),
        C(
            "forecast-out-missing-folder",
            "commands",
            "a plot into a missing folder",
            ["forecast", "runs/series", "--out", "nowhere/f.png"],
            expect=["--out: expected a file in an existing folder, received 'nowhere/f.png'"],
        ),
        C(
            "forecast-out-a-folder",
            "commands",
            "a plot onto a folder",
            ["forecast", "runs/series", "--out", "adir"],
            expect=["--out: expected a file to write, received 'adir', which is a folder"],
        ),
        C(
            "forecast-bad-truth",
            "commands",
            "truth with NaN",
            ["forecast", "runs/series", "--data", "nan.csv", "--column", "0"],
            expect=["row 4, column 0: expected a finite number, received 'nan'"],
        ),
        C(
            "forecast-history-missing",
            "commands",
            "a history file that does not exist",
            ["forecast", "runs/series", "--history", "missing.csv"],
            expect=["data file: expected an existing file, received 'missing.csv'"],
        ),
        C(
            "evaluate-warmup-too-long",
            "commands",
            "a warm-up longer than the data",
            ["evaluate", "runs/series", "--data", "series.csv", "--warmup", "1000"],
            expect=["--warmup: expected fewer than 399 steps", "received 1000"],
        ),
        C(
            "evaluate-column-on-text",
            "commands",
            "--column for a text run",
            ["evaluate", "runs/text", "--data", "words.txt", "--column", "1"],
            expect=["--column: expected only for a series run, received '1'"],
        ),
        C(
            "evaluate-warmup-on-text",
            "commands",
            "--warmup for a text run",
            ["evaluate", "runs/text", "--data", "words.txt", "--warmup", "5"],
            expect=["--warmup: expected only for a series run, received 5"],
        ),
        C(
            "evaluate-no-data",
            "commands",
            "bptt evaluate without --data",
            ["evaluate", "runs/text"],
            expect=["--data: expected a value, received none"],
        ),
        C(
            "evaluate-binary",
            "commands",
            "a binary file to evaluate a text run on",
            ["evaluate", "runs/text", "--data", "binary.bin"],
            expect=["expected UTF-8 text, received binary data"],
        ),
        C(
            "evaluate-unknown-chars",
            "commands",
            "text with no known character",
            ["evaluate", "runs/text", "--data", "latin1.txt"],
            expect=["expected UTF-8 text, received undecodable bytes"],
        ),
        C(
            "gradcheck-tol-nan",
            "commands",
            "a NaN tolerance",
            ["gradcheck", "--tol", "nan"],
            expect=["--tol: expected a finite number > 0, received 'nan'"],
        ),
        C(
            "gradcheck-tol-negative",
            "commands",
            "a negative tolerance",
            ["gradcheck", "--tol", "-1"],
            expect=["--tol: expected a finite number > 0, received '-1'"],
        ),
        C(
            "gradcheck-cells",
            "commands",
            "a misspelt cell",
            ["gradcheck", "--cells", "lsmt"],
            expect=["--cells: expected one of elman, jordan, gru, lstm, received 'lsmt' (did you mean 'lstm'?)"],
        ),
        C(
            "experiment-c",
            "commands",
            "a truncation probability of 1.5",
            ["experiment", "influence-balancing", "--c", "1.5"],
            expect=["--c: expected a number in [0, 1), received '1.5'"],
        ),
        C(
            "experiment-huge-steps",
            "commands",
            "an influence-balancing stream too long to hold",
            ["experiment", "influence-balancing", "--steps", "100000000000"],
            expect=["--steps: expected a positive integer of at most 10,000,000, received '100000000000'"],
        ),
        C(
            "experiment-cue-window",
            "commands",
            "a truncation window as long as the cue sequences",
            [
                "experiment",
                "cue-accumulation",
                "--steps",
                "1",
                "--seeds",
                "1",
                "--variants",
                "tbptt",
                "--window",
                "170",
            ],
            expect=["--window: expected fewer steps than the sequences' 170, received 170"],
        ),
        C(
            "experiment-k",
            "commands",
            "K that is not a number",
            ["experiment", "influence-balancing", "--k", "1,x"],
            expect=["--k: expected comma-separated positive integers, received '1,x'"],
        ),
        C(
            "experiment-name",
            "commands",
            "a misspelt experiment",
            ["experiment", "influence"],
            expect=[
                "NAME: expected one of influence-balancing, cue-accumulation, compare, long-term, received 'influence' (did you mean 'influence-balancing'?)"
            ],
        ),
        C(
            "bench-cells",
            "commands",
            "an unknown cell to bench",
            ["bench", "--cells", "rnn"],
            expect=["--cells: expected one of elman, gru, lstm, received 'rnn'"],
        ),
        C(
            "bench-repeats",
            "commands",
            "zero repeats",
            ["bench", "--repeats", "0"],
            expect=["--repeats: expected a positive integer, received '0'"],
        ),
        C(
            "bench-json-folder",
            "commands",
            "results into a missing folder",
            ["bench", "--json", "nowhere/b.json"],
            expect=["--json: expected a file in an existing folder, received 'nowhere/b.json'"],
        ),
    ]
    crafted_expect = {
        "truncated": "received a corrupted or truncated file",
        "random-bytes": "received a corrupted or truncated file",
        "not-a-zip": "received a corrupted or truncated file",
        "empty-file": "received a corrupted or truncated file",
        "record-changed": "received a file whose arrays or record do not match its checksum",
        "array-changed": "received a file whose arrays or record do not match its checksum",
        "future-format": "format: expected 'bptt-checkpoint-2', received 'bptt-checkpoint-9'",
        "no-format": "format: expected 'bptt-checkpoint-2', received None",
        "record-a-list": "meta: expected a JSON object, received a list",
        "record-not-json": "received a record ('meta') that is not JSON",
        "record-deeply-nested": "received a record ('meta') that is not JSON",
        "no-config": "meta.config: expected an object of training settings, received nothing",
        "step-a-string": 'meta.step: expected a non-negative integer, received "ten"',
        "step-negative": "meta.step: expected a non-negative integer, received -4",
        "rng-garbage": "meta.rng: expected a NumPy PCG64 generator state, received",
        "trackers-missing": "meta.trackers: expected an object with best, since_best, train_seconds, received",
        "best-loss-nan": "meta.trackers.best: expected null or an object with a finite loss",
        "no-vocab": "meta.vocab: expected the vocabulary (a non-empty string of distinct characters in sorted order), received nothing",
        "vocab-a-number": "meta.vocab: expected the vocabulary (a non-empty string of distinct characters in sorted order), received 42",
        "vocab-unsorted": "meta.vocab: expected the vocabulary (a non-empty string of distinct characters in sorted "
        "order), received",
        "train-seconds-inf": "meta.trackers.train_seconds: expected a finite non-negative number, received inf",
        "optimizer-nan": "expected finite floats (infinite only where a new state has them), received NaN or inf",
        "optimizer-count-negative": "expected a count of at least 0, received -1",
        "word-vocab-without-unk": "meta.vocab: expected the vocabulary of a word run (a list of up to 1,000,000 distinct "
        'non-empty strings, <unk> among them), received ["a", "b"]',
        "config-wrong-type": "config: hidden: expected an integer, received 'big'",
        "config-unknown-key": "config: expected keys among",
        "config-bad-cell": "lstm, received 'cnn'",
        "param-wrong-shape": "params['lstm0.W_hh']: expected shape",
        "param-missing": "['dense1.W'] missing",
        "unknown-array": "expected arrays param/, opt, state/ and alg/, received 'evil/x'",
        "object-array": "expected arrays of booleans, integers or floats, received 'param/evil' of dtype object",
        "structured-array": "expected arrays of booleans, integers or floats, received 'param/lstm0.b_hh'",
        "text-array": "param/lstm0.b_hh: expected a numeric array, received dtype <U1",
        "nan-param": "param/lstm0.W_hh: expected finite floats, received NaN or inf",
        "int-param": "param/lstm0.b_hh: expected finite floats, received dtype int64",
        "repeated-member": "received a zip with repeated or too many members",
        "python-member": "received an unexpected member 'evil.py'",
        "damaged-npy-header": "received a damaged array header in 'param/lstm0.W_hh'",
        "short-npy-data": "'param/lstm0.W_hh' with 2032 bytes of data where its header declares 2048",
        "optimizer-entry-missing": "optimizer state: expected entry",
        "optimizer-wrong-shape": "optimizer state 'opt/",
        "state-wrong-shape": "state/lstm0/h: expected finite float64(4, 8), received float64(4, 3)",
        "state-nan": "state/lstm0/c: expected finite float64(4, 8), received float64(4, 8) with NaN or inf",
        "history-os-system": "expected the name of a stored class among",
        "history-builtins-eval": "received 'builtins:eval'",
        "history-wrong-field-count": "expected a list of the 1 fields of GRUState",
        "history-unknown-tag": "expected an object with one of the key sets",
        "history-too-long": "expected at most k2 - k1 = 7 steps of history, received 50",
        "history-wrong-shape": "expected an array of 5 stacked steps, received one of shape (2, 2)",
    }
    crafted = []
    for name in CRAFTED:
        argv = (
            ["train", "--resume", f"crafted/{name}", "--steps", "20"]
            if name.startswith(("history", "optimizer", "state", "rng"))
            else ["sample", f"crafted/{name}", "--length", "5"]
        )
        crafted.append(
            C(
                f"checkpoint-{name}",
                "checkpoints",
                f"a checkpoint: {name.replace('-', ' ')}",
                argv,
                expect=[crafted_expect[name]],
            )
        )
    return data + flags + toml + runs + crafted + _weights_cases() + _api_cases() + _columns_cases()


def _weights_cases() -> list[Case]:
    """bptt export and bptt import: what they refuse, before anything is written."""
    g = "weights: export and import"
    pickled = "a pickle (torch.save's format): bptt never unpickles a file"

    def imp(file: str, *args: str) -> list[str]:
        return ["import", f"weights/{file}", "--out", "imported", *args]

    return [
        Case(
            "export-jordan",
            g,
            "a Jordan network, which torch has no module for",
            ["export", "runs/jordan"],
            expect=["RUN: expected a run whose model maps onto torch", "received a 'jordan' level jordan0"],
        ),
        Case(
            "export-format",
            g,
            "an unknown format",
            ["export", "runs/text", "--format", "onnx"],
            expect=["--format: expected one of safetensors, npz, received 'onnx'"],
        ),
        Case(
            "export-out-pt",
            g,
            "a .pt file name",
            ["export", "runs/text", "--out", "model.pt"],
            expect=["--out: expected a file name ending in .safetensors or .npz, received 'model.pt'"],
        ),
        Case(
            "export-format-clash",
            g,
            "--format and the file name disagree",
            ["export", "runs/text", "--format", "safetensors", "--out", "w.npz"],
            expect=["--format: expected npz for --out 'w.npz', received safetensors"],
        ),
        Case(
            "export-over-checkpoint",
            g,
            "--out onto the run's own checkpoint",
            ["export", "runs/text", "--out", "runs/text/checkpoint.npz"],
            expect=["--out: expected a file other than the run's own files, received 'runs/text/checkpoint.npz'"],
        ),
        Case(
            "export-over-checkpoint-link",
            g,
            "--out onto the run's own checkpoint through a link to the run folder",
            ["export", "runs/text-link", "--out", "runs/text/checkpoint.npz"],
            expect=["--out: expected a file other than the run's own files, received 'runs/text/checkpoint.npz'"],
        ),
        Case(
            "export-no-run",
            g,
            "a folder without a run",
            ["export", "runs/empty"],
            expect=["RUN: expected best.npz or checkpoint.npz in 'runs/empty'"],
        ),
        Case(
            "export-out-folder",
            g,
            "--out into a missing folder",
            ["export", "runs/text", "--out", "nowhere/w.npz"],
            expect=["--out: expected a file in an existing folder, received 'nowhere/w.npz'"],
        ),
        Case("import-pt", g, "a pickled .pt file", imp("model.pt"), expect=[pickled]),
        Case("import-pickle-as-npz", g, "a pickle named .npz", imp("pickle.npz"), expect=[pickled]),
        Case("import-torch-zip", g, "torch.save's zip named .npz", imp("torch.npz"), expect=[pickled]),
        Case(
            "import-missing",
            g,
            "a file that does not exist",
            imp("none.safetensors"),
            expect=["FILE: expected a .safetensors or .npz file, received 'weights/none.safetensors' (no such file)"],
        ),
        Case(
            "import-no-out",
            g,
            "no --out",
            ["import", "weights/text.npz"],
            expect=["--out: expected a value, received none"],
        ),
        Case(
            "import-missing-key",
            g,
            "the readout's bias missing",
            imp("no-bias.npz"),
            expect=["expected the entries [", "received none for [linear.bias]"],
        ),
        Case(
            "import-proj-size",
            g,
            "an LSTM with proj_size",
            imp("proj.npz"),
            expect=["received unexpected [rnn.weight_hr_l0] (an LSTM with proj_size"],
        ),
        Case(
            "import-own-prefix",
            g,
            "a module's own names (self.lstm) without --names",
            imp("lstm-prefix.npz", "--data", "words.txt"),
            expect=["rnn.weight_hh_l0: expected an array of shape (G*H, H)", "received none", "--names"],
        ),
        Case(
            "import-int",
            g,
            "an integer tensor",
            imp("int.npz"),
            expect=["linear.bias: expected float32 or float64, received int64"],
        ),
        Case(
            "import-float16",
            g,
            "a float16 tensor in safetensors",
            imp("f16.safetensors", "--data", "words.txt"),
            expect=["linear.bias: expected float32 or float64, received float16"],
        ),
        Case(
            "import-nan",
            g,
            "NaN weights",
            imp("nan.npz"),
            expect=["rnn.weight_hh_l0: expected finite values, received NaN or inf"],
        ),
        Case(
            "import-mixed-dtypes",
            g,
            "float32 and float64 tensors",
            imp("mixed.npz"),
            expect=["expected one dtype for all tensors, received float32, float64"],
        ),
        Case(
            "import-bidirectional",
            g,
            "a bidirectional network",
            imp("bidirectional.npz"),
            expect=["expected a unidirectional network", "received a bidirectional one"],
        ),
        Case(
            "import-no-vocab",
            g,
            "a text model without a vocabulary",
            imp("bare.npz"),
            expect=["--data: expected the text the model was trained on", "received none"],
        ),
        Case(
            "import-vocab-mismatch",
            g,
            "a text whose vocabulary is not the model's",
            imp("bare.npz", "--data", "short.txt"),
            expect=["rnn.weight_ih_l0: expected shape (32, 3) (bptt's lstm0.W_ih; the vocabulary has 3 characters)"],
        ),
        Case(
            "import-hidden-override",
            g,
            "--hidden that the tensors contradict",
            imp("text.npz", "--hidden", "16"),
            expect=["rnn.weight_ih_l0: expected shape (64, ", "received (32, "],
        ),
        Case(
            "import-series-no-normaliser",
            g,
            "a series model without its normaliser",
            imp("series-bare.npz"),
            expect=["--mean, --std: expected the series normaliser", "received none"],
        ),
        Case(
            "import-mean-only",
            g,
            "--mean without --std",
            imp("series-bare.npz", "--mean", "0"),
            expect=["--mean, --std: expected both or neither, received only --mean"],
        ),
        Case(
            "import-text-mean",
            g,
            "--mean and --std for a text model",
            imp("text.npz", "--mean", "0", "--std", "1"),
            expect=["--mean: expected only for a series model, received 0.0 for text"],
        ),
        Case(
            "import-bad-description",
            g,
            "a description with a negative hidden size",
            imp("bad-hidden.npz"),
            expect=["description 'weights/bad-hidden.npz.json': hidden_size: expected a positive integer, received -1"],
        ),
        Case(
            "import-unsorted-vocab",
            g,
            "a vocabulary out of order",
            imp("bad-vocab.npz"),
            expect=["vocab: expected the vocabulary: a non-empty string of distinct characters in sorted order"],
        ),
        Case(
            "import-other-description",
            g,
            "a JSON beside the file that is not bptt's",
            imp("other-format.npz"),
            expect=["format: expected 'bptt-torch-weights-1', received \"onnx\""],
        ),
        Case(
            "import-other-task",
            g,
            "a model of another task",
            imp("adding.npz"),
            expect=["expected a text or series model", "received task 'adding'"],
        ),
        Case(
            "import-relu",
            g,
            "a relu Elman network",
            imp("relu.npz"),
            expect=["nonlinearity: expected 'tanh' (a run's Elman networks), received 'relu'"],
        ),
        Case(
            "import-names",
            g,
            "--names of an unknown module",
            imp("text.npz", "--names", "gru=lstm"),
            expect=["--names: expected MODULE=PREFIX pairs with MODULE among embedding, rnn, linear", "'gru=lstm'"],
        ),
        Case(
            "import-cell",
            g,
            "an unknown cell",
            imp("text.npz", "--cell", "cnn"),
            expect=["--cell: expected one of elman, gru, lstm, received 'cnn'"],
        ),
        Case(
            "import-column-text",
            g,
            "--column for a text model",
            imp("text.npz", "--column", "1"),
            expect=["column: expected only with --task series, received '1'"],
        ),
        Case(
            "import-into-a-run",
            g,
            "--out a folder that holds a run",
            ["import", "weights/text.npz", "--out", "runs/text"],
            expect=["--out: expected a new run folder, received 'runs/text' which already holds a run"],
        ),
        Case(
            "import-damaged-safetensors",
            g,
            "a damaged safetensors file",
            imp("damaged.safetensors"),
            expect=["expected a complete safetensors file, received a damaged one"],
        ),
        Case(
            "import-truncated-npz",
            g,
            "a truncated .npz",
            imp("truncated.npz"),
            expect=["expected a .npz of float arrays (numpy.savez), received a corrupted or truncated file"],
        ),
    ]


# ---- series of several columns (--column LIST, --target, --missing) ----------------------------
def _columns_workspace() -> None:
    """cols.csv (x, y with y(t) = x(t-1)), files with missing values, runs/cols (inputs x, y ->
    target y), its weights (weights/cols.npz, and one with a normaliser of the wrong length) and
    crafted/columns-*: its checkpoint with a damaged per-column normaliser."""
    from bptt.train import TrainConfig, Trainer
    from bptt.train.export import write_weights
    from bptt.train.runs import load_run

    x = np.random.default_rng(1).standard_normal(300)
    y = np.r_[0.0, x[:-1]]
    open("cols.csv", "w").write("x,y\n" + "".join(f"{a:.6f},{b:.6f}\n" for a, b in zip(x, y)))
    open("gaps.csv", "w").write("t,value\n1,0.5\n2,NA\n3,0.7\n4,0.1\n5,0.2\n")
    open("allgap.csv", "w").write("t,value\n1,?\n2,\n3,NaN\n4,nan\n")
    open("fewrows.csv", "w").write("t,value\n1,0.5\n2,NA\n3,?\n4,0.1\n")
    small = dict(hidden=8, steps=4, eval_every=2, batch_size=4, seq_len=10, dtype="float64", progress=False)
    cfg = TrainConfig(data="cols.csv", task="series", column="x,y", target="y", out="runs/cols", **small)
    Trainer(cfg, log=lambda s: None).run()
    run = load_run("runs/cols")
    info = {
        "task": "series",
        "normalizer": run.meta["normalizer"],
        "columns": run.meta["series_columns"],
        "train_config": run.cfg.to_dict(),
    }
    write_weights("weights/cols.npz", run.model, run.params, "npz", info)
    shutil.copy("weights/cols.npz", "weights/cols-short.npz")
    with open("weights/cols-short.npz.json", "w") as f:
        json.dump({**json.load(open("weights/cols.npz.json")), "normalizer": {"mean": [0.0], "std": [1.0]}}, f)
    damage = {
        "columns-normalizer-short": lambda m: m["normalizer"].update(mean=[0.0], std=[1.0]),
        "columns-normalizer-mixed": lambda m: m["normalizer"].update(std=1.0),
        "columns-difference-count": lambda m: m.update(difference={"d": [1, 0, 0], "s": [0, 0, 0]}),
    }
    for name, fn in damage.items():
        dst = os.path.join("crafted", name)
        if os.path.exists(dst):
            shutil.rmtree(dst)
        shutil.copytree("runs/cols", dst)
        os.unlink(os.path.join(dst, "best.npz"))
        _edit(lambda a, m, fn=fn: fn(m))(os.path.join(dst, "checkpoint.npz"), name)
    dst = os.path.join("crafted", "difference-order")  # a one-column run with a crafted differencing
    if os.path.exists(dst):
        shutil.rmtree(dst)
    shutil.copytree("runs/series", dst)
    os.unlink(os.path.join(dst, "best.npz"))
    _edit(lambda a, m: m.update(difference={"d": 5, "s": 0}))(os.path.join(dst, "checkpoint.npz"), "difference")
    dst = os.path.join("crafted", "difference-list")  # a one-column run whose differencing is a list of one
    if os.path.exists(dst):
        shutil.rmtree(dst)
    shutil.copytree("runs/series", dst)
    os.unlink(os.path.join(dst, "best.npz"))
    _edit(lambda a, m: m.update(difference={"d": [1], "s": [0]}))(os.path.join(dst, "checkpoint.npz"), "difference")


def _forecast_columns_api(ws):
    from bptt.generate import forecast_columns

    run = _load_run(ws, "runs/cols")
    return forecast_columns(run.model, run.params, np.zeros((5, 2)), 3, [-1, 0])


def _columns_cases() -> list[Case]:
    C, g, w = Case, "data: series of several columns", "weights: export and import"
    fix = "(a missing value in 'value'; --missing drop or interpolate handles them)"
    return [
        C(
            "columns-missing-value",
            g,
            "a missing value (NA) with the default --missing error",
            S("--data", "gaps.csv"),
            expect=[f"data file 'gaps.csv', row 3, column 1: expected a finite number, received 'NA' {fix}"],
        ),
        C(
            "columns-missing-rule",
            g,
            "an unknown missing-value rule",
            S("--missing", "skip"),
            expect=["missing: expected one of error, drop, interpolate, received 'skip'"],
        ),
        C(
            "columns-missing-everywhere",
            g,
            "a column of missing values only, to interpolate",
            S("--data", "allgap.csv", "--missing", "interpolate"),
            expect=["column 1: expected at least one value to interpolate from, received 4 missing values"],
        ),
        C(
            "columns-drop-too-many",
            g,
            "too few rows left after dropping those with a missing value",
            S("--data", "fewrows.csv", "--missing", "drop"),
            expect=["expected at least 3 values, received 2 (after dropping 2 rows with a missing value)"],
        ),
        C(
            "columns-empty-name",
            g,
            "an empty name in a list of columns",
            S("--column", "t,,value"),
            expect=["column: expected column names or 0-based indices separated by commas, received 't,,value'"],
        ),
        C(
            "columns-named-twice",
            g,
            "a column named twice",
            S("--column", "value,value"),
            expect=["column: expected distinct columns, received 'value' twice in 'value,value'"],
        ),
        C(
            "columns-same-by-index",
            g,
            "a column given by name and by index",
            S("--column", "value,1"),
            expect=["column: expected distinct columns, received 'value' and '1', both column 1"],
        ),
        C(
            "columns-target-unknown",
            g,
            "a target column the file does not have",
            S("--target", "load"),
            expect=["target: expected one of t, value, received 'load'"],
        ),
        C(
            "columns-target-index",
            g,
            "a target index past the last column",
            S("--target", "0,7"),
            expect=["target: expected an index in [-2, 2), received '7'"],
        ),
        C(
            "columns-target-on-text",
            g,
            "--target on a text run",
            T("--target", "x"),
            expect=["target: expected only with --task series, received 'x' with task 'text'"],
        ),
        C(
            "columns-missing-on-text",
            g,
            "--missing on a text run",
            T("--missing", "drop"),
            expect=["missing: expected only with --task series, received 'drop' with task 'text'"],
        ),
        C(
            "columns-forecast-no-future",
            g,
            "a forecast beyond the data of a run whose input x is not a target",
            ["forecast", "runs/cols"],
            expect=["--data: expected the rows that follow the history: the input columns that are not targets (x)"],
        ),
        C(
            "columns-forecast-past-the-data",
            g,
            "a forecast longer than the rows that give the other inputs",
            ["forecast", "runs/cols", "--data", "cols.csv", "--horizon", "400"],
            expect=["--horizon: expected at most 300 steps (the rows of --data 'cols.csv' that give x), received 400"],
        ),
        C(
            "columns-forecast-other-file",
            g,
            "a file without the run's columns",
            ["forecast", "runs/cols", "--data", "series.csv"],
            expect=["column: expected one of t, value, received 'x'"],
        ),
        C(
            "columns-evaluate-order",
            g,
            "the run's input columns in another order (each is normalised by its own mean and spread)",
            ["evaluate", "runs/cols", "--data", "cols.csv", "--column", "y,x"],
            expect=["--column: expected the run's columns in its order (x, y: each normalised by its own mean"],
        ),
        C(
            "columns-evaluate-count",
            g,
            "fewer input columns than the run has",
            ["evaluate", "runs/cols", "--data", "cols.csv", "--column", "x"],
            expect=["--column: expected 2 input columns (as the run's x, y), received 'x'"],
        ),
        C(
            "columns-normalizer-short",
            g,
            "a checkpoint whose per-column normaliser has one column of two",
            ["evaluate", "crafted/columns-normalizer-short", "--data", "cols.csv"],
            expect=["meta.normalizer: expected lists of 2 (its columns x, y), received {'mean': [0.0], 'std': [1.0]}"],
        ),
        C(
            "columns-normalizer-short-resume",
            g,
            "resuming with a per-column normaliser of one column of two",
            ["train", "--resume", "crafted/columns-normalizer-short", "--steps", "20"],
            expect=[
                "the run's record: meta.normalizer: expected lists of 2 (its columns x, y), received {'mean': [0.0]"
            ],
        ),
        C(
            "columns-normalizer-mixed",
            g,
            "a checkpoint with a list of means and one std",
            ["forecast", "crafted/columns-normalizer-mixed"],
            expect=["meta.normalizer: expected an object with a finite mean and a positive std (numbers, or lists"],
        ),
        C(
            "columns-difference-count",
            g,
            "a checkpoint of two columns whose differencing has three orders",
            ["evaluate", "crafted/columns-difference-count", "--data", "cols.csv"],
            expect=["meta.difference: expected lists of 2 (its columns x, y), received {'d': [1, 0, 0]"],
        ),
        C(
            "difference-order",
            g,
            "a checkpoint whose series differencing has an order of 5",
            ["forecast", "crafted/difference-order"],
            expect=["meta.difference: expected an object with the orders d (0, 1 or 2) and s"],
        ),
        C(
            "difference-list",
            g,
            "a one-column checkpoint whose differencing is written as for several columns",
            ["evaluate", "crafted/difference-list", "--data", "series.csv"],
            expect=["meta.difference: expected numbers (one column), received {'d': [1], 's': [0]}"],
        ),
        C(
            "columns-api-forecast-no-future",
            g,
            "forecast_columns without the future of an input it does not predict",
            call=_forecast_columns_api,
            expect=["future: expected the 2 rows after the history", "received none"],
        ),
        C(
            "import-columns-mean",
            w,
            "--mean and --std for a model of several columns",
            ["import", "weights/cols.npz", "--out", "imported", "--mean", "0", "--std", "1"],
            expect=["--mean: expected only for a one-column series"],
        ),
        C(
            "import-columns-short-normalizer",
            w,
            "a description whose normaliser has one column of two",
            ["import", "weights/cols-short.npz", "--out", "imported"],
            expect=["normalizer: expected one mean and std per column of x, y, received"],
        ),
    ]


def _without_mpi4py(ws: str) -> None:
    """A process an MPI launcher started (PMI_SIZE=2) where mpi4py is not installed."""
    import sys

    from bptt.train import TrainConfig, Trainer, dist

    env, mod = os.environ.get("PMI_SIZE"), sys.modules.get("mpi4py", KeyError)
    os.environ["PMI_SIZE"], sys.modules["mpi4py"], dist._WORLD = "2", None, None  # (None: import fails)
    try:
        Trainer(TrainConfig(data="words.txt", steps=2, out="mpi-run"))
    finally:
        dist._WORLD = None
        if env is None:
            del os.environ["PMI_SIZE"]
        else:
            os.environ["PMI_SIZE"] = env
        if mod is KeyError:
            del sys.modules["mpi4py"]
        else:
            sys.modules["mpi4py"] = mod


def _mpi_cases() -> list[Case]:
    """Data-parallel training (bptt.train.dist); the mistakes only a real mpirun shows (a batch
    that does not split, a rate penalty) are in tests/train/test_mpi.py."""
    return [
        Case(
            "mpi-without-mpi4py",
            "data-parallel training (MPI)",
            "bptt train started by mpirun where mpi4py is not installed",
            call=_without_mpi4py,
            expect=["mpi: expected mpi4py in a process an MPI launcher started (PMI_SIZE=2)", "bptt[mpi]"],
        ),
    ]


CASES = _cases() + _mpi_cases()


# ---- running a case ----------------------------------------------------------------------------
def run_case(case: Case, ws: str) -> tuple[int | str, str]:
    """(exit status, or the exception's class name for an API case; the message)."""
    cwd = os.getcwd()
    os.chdir(ws)
    try:
        if case.argv is not None:
            from bptt.cli import main

            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                rc = main(list(case.argv))
            return rc, err.getvalue()
        try:
            case.call(ws)
        except Exception as e:  # noqa: BLE001 - the catalogue reports what was raised
            return type(e).__name__, str(e)
        return "no error", ""
    finally:
        os.chdir(cwd)


def snapshot(ws: str) -> dict[str, tuple]:
    """Every file and folder under ws: size, modification time, a hash of the content."""
    out: dict[str, tuple] = {}
    for root, dirs, files in os.walk(ws):
        for d in dirs:
            out[os.path.relpath(os.path.join(root, d), ws) + "/"] = ()
        for f in files:
            p = os.path.join(root, f)
            if os.path.islink(p):
                out[os.path.relpath(p, ws)] = ("link", os.readlink(p))
                continue
            st = os.stat(p)
            out[os.path.relpath(p, ws)] = (st.st_size, st.st_mtime_ns, hashlib.sha256(open(p, "rb").read()).hexdigest())
    return out
