"""Training from Python: `fit`, the one entry point under `bptt train` (commands.cmd_train).

    res = bptt.fit(x=text, cell="gru", hidden=64, steps=300)            # a text, or a series
    res = bptt.fit(x=x, y=y, model=model, steps=200, on_eval=callback)  # (T, B, D) sequences
    res = bptt.fit(task="adding", cell="lstm", hidden=32)               # a task the config names

What it trains on: a string is a text (characters, as `--task text` reads a file), a 1-D or 2-D
numeric array without `y` a series (rows of columns, as `--task series` reads a table), arrays
`x`, `y` (and `mask`) sequences with their targets; nothing: the task of the settings. Text and
series are written into the run folder (data.txt, data.csv) and trained on from there, so such a
run is the file-based run and goes on with `bptt train --resume`; arrays are held in memory (a
run on them goes on only with the arrays given again: fit(x=..., y=..., resume=RUN)).

Files: with `out`, a run folder there as `bptt train --out` writes it; without, a temporary one,
removed when fit returns (kept only when the run was interrupted, to be resumed).
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import BpttError
from ..layers import Dense
from ..losses import window_index
from ..model import Model
from .config import MASKED, TrainConfig
from .tasks import recurrent_stack
from .trainer import Stop, Trainer, TrainResult

__all__ = ["Stop", "fit"]

# settings that choose or cut the data of a file: arrays come with their own
_FILE_KEYS = (
    "data",
    "task",
    "seq_len",
    "batching",
    "column",
    "target",
    "missing",
    "diff",
    "seasonal_diff",
    "normalize",
    "test_fraction",
    "embed",
    "sample_length",
)
_SPIKING = ("lif", "alif")


def fit(
    config: TrainConfig | dict[str, Any] | None = None,
    *,
    x: str | np.ndarray | None = None,
    y: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    val: tuple | None = None,
    model: Model | None = None,
    resume: str | None = None,
    on_step: Callable[[int, float], Any] | None = None,
    on_eval: Callable[[int, dict[str, float]], Any] | None = None,
    log: Callable[[str], None] | None = print,
    **settings: Any,
) -> TrainResult:
    """Train a recurrent network; returns a TrainResult (params, model, metrics rows, best
    validation figures and params, run_dir, stopped, step, ...).

    config: a TrainConfig or a dict of its keys; `settings`: the same keys as keywords (they
    override config). x: a text (str), a series ((N,) or (N, D) numbers), or sequences (T, B, D)
    floats / (T, B) token ids with targets y: (T, B) class ids or (T, B, K) values at every step,
    (B,) or (B, K) one per sequence (the loss at each one's last step), mask (T, B); val: (x, y) or
    (x, y, mask) to validate on (default: the last val_fraction of the sequences). model: a
    bptt.Model of one's own (default: the config's cell, hidden and layers, a Dense readout).
    resume: a run folder to continue (settings override its config). on_step(step, loss) after
    every update and on_eval(step, figures) after every evaluation: True or `raise Stop` ends
    training there. log: where the run's lines go (None: nowhere)."""
    for name, f in (("on_step", on_step), ("on_eval", on_eval), ("log", log)):
        if f is not None and not callable(f):
            raise BpttError(f"{name}: expected a function or None, received {type(f).__name__}")
    if model is not None and not isinstance(model, Model):
        raise BpttError(f"model: expected a bptt.Model, received {type(model).__name__}")
    if x is None and (y is not None or mask is not None or val is not None):
        which = "y" if y is not None else "mask" if mask is not None else "val"
        raise BpttError(f"{which}: expected it with the sequences x, received it without x")
    if (y is None or isinstance(x, str)) and (mask is not None or val is not None):
        which = "mask" if mask is not None else "val"
        raise BpttError(f"{which}: expected only with sequences x and targets y, received it with a text or series")
    say = log if log is not None else (lambda line: None)
    arrays = Arrays(x, y, mask, val) if y is not None else None
    if resume is not None:
        if config is not None:
            raise BpttError("config: expected none with resume (the run's own config is used), received one")
        if x is not None and arrays is None:
            raise BpttError(
                "x: expected no text or series with resume (the run reads its own data file again), received one"
            )
        trainer = Trainer(resume=os.fspath(resume), overrides=settings, log=say, data=arrays, model=model)
        return trainer.run(on_step, on_eval)
    cfg, given = _config(config, settings)
    what = None if x is None else "text" if isinstance(x, str) else "series" if arrays is None else "arrays"
    if what is not None:
        keys = ("data", "task") if what != "arrays" else _FILE_KEYS
        for k in keys:
            if k in given and not (k == "task" and cfg.task == what):
                raise BpttError(f"{k}: expected none with x (the {what} given in Python), received {getattr(cfg, k)!r}")
        if val is not None and "val_fraction" in given:
            raise BpttError(
                f"val_fraction: expected none with val (the sequences to validate on), received {cfg.val_fraction!r}"
            )
        cfg.task = "series" if what == "arrays" else what  # (arrays: checked as a series of windows would be)
    if model is not None:
        _describe_model(cfg, given, model)
    file = _data_file(x, what) if what in ("text", "series") else None  # (name, content)
    cfg.validate(given)
    temporary = not cfg.out
    folder = tempfile.mkdtemp(prefix="bptt-run-") if temporary else cfg.out
    cfg.out = folder
    try:
        written = _write_data(folder, *file) if file is not None else []
    except BaseException:
        if temporary:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    if written:
        cfg.data = written[-1]
    try:
        trainer = Trainer(cfg, log=say, data=arrays, model=model)
    except BaseException:  # nothing left behind: the folder if made here, else the data file
        if temporary or (written and written[0] == folder):
            shutil.rmtree(folder, ignore_errors=True)
        elif written:
            os.unlink(written[-1])
        raise
    try:
        res = trainer.run(on_step, on_eval)
    except BaseException:
        if temporary:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    if temporary and res.stopped != "interrupted":
        shutil.rmtree(folder, ignore_errors=True)
        res.run_dir, res.cfg.out = None, ""
    return res


def _config(config: Any, settings: dict[str, Any]) -> tuple[TrainConfig, set[str]]:
    """The settings, checked (names, types), and the keys given."""
    if config is None:
        config = {}
    if isinstance(config, TrainConfig):
        defaults = TrainConfig()
        base = config.to_dict()
        given = {k for k, v in base.items() if v != getattr(defaults, k)}
    elif isinstance(config, dict):
        base, given = dict(config), set(config)
    else:
        raise BpttError(f"config: expected a TrainConfig or a dict of settings, received {type(config).__name__}")
    cfg = TrainConfig.from_dict({**base, **settings}, "settings")
    return cfg, given | set(settings)


def _describe_model(cfg: TrainConfig, given: set[str], model: Model) -> None:
    """A model of one's own replaces cell, hidden, layers and embed: they are refused, and set
    from its first recurrent level (for the run's header and config.json)."""
    for k in ("cell", "hidden", "layers", "embed", "tie", *MASKED):
        if k in given:
            raise BpttError(
                f"{k}: expected none with a model of one's own (it has its own levels; put a Dropout level or the "
                f"cell's option in it), received {getattr(cfg, k)!r}"
            )
    rec = model.recurrent_levels
    if rec and rec[0].kind in ("elman", "jordan", "gru", "lstm", *_SPIKING):
        cfg.cell, cfg.hidden = rec[0].kind, rec[0].size
        cfg.layers = sum(lv.kind == rec[0].kind for lv in rec)


def _data_file(x: Any, what: str) -> tuple[str, bytes]:
    """The file a text or series is written to: its name and content."""
    if what == "series":
        return "data.csv", _series_bytes(x)
    if not x:
        raise BpttError("x: expected a text of at least one character, received ''")
    try:
        return "data.txt", x.encode("utf-8")
    except UnicodeEncodeError as e:
        raise BpttError(f"x: expected a text of characters, received a lone surrogate at {e.start}") from None


def _write_data(folder: str, name: str, body: bytes) -> list[str]:
    """The text or series into the run folder, as the file the run reads; returns what was made
    (the folder first when made here, then the file)."""
    if os.path.isfile(os.path.join(folder, "checkpoint.npz")):
        return []  # (the trainer refuses a folder that holds a run, before anything is written)
    path = os.path.join(folder, name)
    if os.path.exists(path):
        raise BpttError(f"out: expected a folder without {name} (fit writes x there), received {folder!r}")
    made = [] if os.path.isdir(folder) else [folder]
    if made:
        try:
            os.makedirs(folder)
        except OSError as e:
            raise BpttError(f"out: expected a folder for the run, received {folder!r} ({e.strerror.lower()})") from None
    with open(path, "wb") as f:
        f.write(body)
    return [*made, path]


def _series_bytes(x: Any) -> bytes:
    """A series as a table's text: (N,) one value a row, (N, D) D columns; every float64
    written so that it reads back the same (repr)."""
    a = np.asarray(x)
    if a.dtype.kind not in "iuf" or a.ndim not in (1, 2) or a.size == 0:
        raise BpttError(
            f"x: expected a text (str), a series of numbers (N,) or (N, D), or sequences (T, B, D) with targets y, "
            f"received {a.dtype} of shape {a.shape}"
        )
    rows = a.astype(np.float64).reshape(len(a), -1)
    return "".join(",".join(repr(float(v)) for v in r) + "\n" for r in rows).encode()


class Arrays:
    """Sequences given in Python: x (T, B, D) floats or (T, B) token ids; targets y at every step
    ((T, B) class ids, (T, B, K) values) or one per sequence ((B,), (B, K)); mask (T, B); val the
    same for validation. `task(cfg)` makes their task."""

    def __init__(self, x: Any, y: Any, mask: Any = None, val: Any = None) -> None:
        self.x, self.y, self.mask, self.every = _sequences("x", "y", "mask", x, y, mask)
        self.val = None
        if val is not None:
            if not isinstance(val, (tuple, list)) or len(val) not in (2, 3):
                raise BpttError(f"val: expected (x, y) or (x, y, mask), received {type(val).__name__}")
            xv, yv, mv, every = _sequences("val[0]", "val[1]", "val[2]", *val)
            if xv.shape[2:] != self.x.shape[2:] or xv.dtype.kind != self.x.dtype.kind or every != self.every:
                raise BpttError(
                    f"val: expected sequences like x and y ({_shape(self.x)}, {_shape(self.y)}), received "
                    f"{_shape(xv)}, {_shape(yv)}"
                )
            if yv.shape[every + 1 :] != self.y.shape[self.every + 1 :] or yv.dtype.kind != self.y.dtype.kind:
                raise BpttError(f"val[1]: expected targets like y ({_shape(self.y)}), received {_shape(yv)}")
            self.val = (xv, yv, mv)
        self.note = f"x {_shape(self.x)}, y {_shape(self.y)}" + (f", val x {_shape(self.val[0])}" if self.val else "")
        parts = [self.x, self.y, self.mask, *(self.val or ())]
        self.note += f"; sha256 {_fingerprint(parts)}"  # (a resume is given these very arrays again)

    def task(self, cfg: TrainConfig) -> ArrayTask:
        return ArrayTask(cfg, self)


def _shape(a: np.ndarray) -> str:
    return f"{a.dtype}{a.shape}"


def _array(name: str, v: Any) -> np.ndarray:
    """v as an array; a ragged nested list is one line naming it, not NumPy's traceback."""
    try:
        return np.asarray(v)
    except (ValueError, TypeError):
        raise BpttError(
            f"{name}: expected an array (nested lists of one length per level), received a ragged {type(v).__name__}"
        ) from None


def _fingerprint(arrays: list) -> str:
    """The first 16 hex digits of a SHA-256 over the arrays' dtypes, shapes and bytes: what a
    resume checks it is given again."""
    h = hashlib.sha256()
    for a in arrays:
        if a is None:
            h.update(b"none")
            continue
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def _sequences(nx: str, ny: str, nm: str, x: Any, y: Any, mask: Any = None):
    """(x, y, mask, targets at every step) checked for their layout."""
    x, y = _array(nx, x), _array(ny, y)
    tokens = x.ndim == 2 and x.dtype.kind in "iu"
    if not (tokens or (x.ndim == 3 and x.dtype.kind == "f")) or 0 in x.shape:
        raise BpttError(f"{nx}: expected sequences (T, B, D) of floats or (T, B) of token ids, received {_shape(x)}")
    T, B = x.shape[:2]
    ints = y.dtype.kind in "iu"
    if y.dtype.kind not in "iuf":
        every = None
    elif y.shape[:2] == (T, B) and y.ndim == (2 if ints else 3):
        every = True
    elif y.shape[:1] == (B,) and y.ndim == (1 if ints else 2):
        every = False
    else:
        every = None
    if every is None:
        raise BpttError(
            f"{ny}: expected targets of x's T={T}, B={B}: class ids (T, B) or values (T, B, K) at every step, or "
            f"(B,) / (B, K) one per sequence, received {_shape(y)}"
        )
    if mask is not None:
        mask = _array(nm, mask)
        if mask.shape != (T, B):
            raise BpttError(f"{nm}: expected (T, B) = ({T}, {B}) booleans, received {_shape(mask)}")
        if mask.dtype != bool:  # (0/1 integers taken as booleans; an int mask indexed by position)
            if mask.dtype.kind not in "iu" or not np.isin(mask, (0, 1)).all():
                raise BpttError(f"{nm}: expected booleans (or 0/1 integers), received values of dtype {mask.dtype}")
            mask = mask.astype(bool)
    return x, y, mask, every


class ArrayTask:
    """The task of Arrays: the training sequences (all of them at every step when batch_size
    covers them, else batch_size drawn at random from the run's generator), the validation ones
    (val, or the last val_fraction of the sequences) evaluated whole: the loss and, for classes,
    the accuracy at the counted positions. Reported like a generated task (kind 'longterm')."""

    kind = "longterm"
    mode = "window"
    source = "arrays"

    def __init__(self, cfg: TrainConfig, a: Arrays) -> None:
        self.cfg, self.every = cfg, a.every
        dtype = np.dtype(cfg.dtype)
        cast = lambda v: v.astype(dtype) if v.dtype.kind == "f" else v  # the run's float dtype
        x, y, m = cast(a.x), cast(a.y), a.mask
        self.T, B = x.shape[:2]
        if a.val is not None:
            self.train = (x, y, m)
            xv, yv, mv = a.val
            self.valid: tuple | None = (cast(xv), cast(yv), mv)
        else:
            n_val = int(round(B * cfg.val_fraction))
            if n_val >= B:
                raise BpttError(
                    f"val_fraction: expected at least one of the {B} sequences left for training, received "
                    f"{cfg.val_fraction!r}"
                )
            k = B - n_val
            self.train = (x[:, :k], y[:, :k] if self.every else y[:k], None if m is None else m[:, :k])
            self.valid = (
                (x[:, k:], y[:, k:] if self.every else y[k:], None if m is None else m[:, k:]) if n_val else None
            )
        self.n_train = self.train[0].shape[1]
        self.n_val = 0 if self.valid is None else self.valid[0].shape[1]
        self.validates = self.valid is not None
        self.tokens = x.dtype.kind in "iu"
        if self.tokens and cfg.input_noise:
            raise BpttError(
                f"input_noise: expected float inputs (T, B, D) to add noise to, received token ids {_shape(x)}"
            )
        self.masked = self.train[2] is not None  # (its batches carry the mask: a budget plans for it)

    @property
    def tokens_per_step(self) -> int:
        return min(self.cfg.batch_size, self.n_train) * self.T

    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(self.n_train / self.cfg.batch_size))

    def _take(self, part: tuple, idx: Any) -> tuple:
        x, y, m = part
        return x[:, idx], (y[:, idx] if self.every else y[idx]), (None if m is None else m[:, idx])

    def batch(self, step: int, rng: np.random.Generator):
        n, b = self.n_train, self.cfg.batch_size
        idx = slice(None) if b >= n else np.sort(rng.choice(n, b, replace=False))
        x, y, m = self._take(self.train, idx)
        if self.cfg.input_noise:  # the inputs of this batch alone, the targets clean (as a series run's)
            x = x + rng.normal(0.0, self.cfg.input_noise, x.shape).astype(x.dtype)
        return x, y, True, m

    def diagnostic_batch(self) -> tuple:
        """The first 4 training sequences."""
        return self._take(self.train, slice(0, 4))

    def build_model(self) -> Model:
        """inputs -> cfg's recurrent levels -> Dense(K): cross-entropy for class ids (K: the
        largest id + 1; token inputs and class targets share one vocabulary), squared error for
        values (K: their width); at every step or the last, as the targets are."""
        parts = [self.train] + ([self.valid] if self.valid is not None else [])
        ys = [p[1] for p in parts]
        classes = ys[0].dtype.kind in "iu"
        top = max(int(y.max()) for y in ys) + 1 if classes else 0
        if self.tokens:
            top = max([top] + [int(p[0].max()) + 1 for p in parts])
        D = top if self.tokens else self.train[0].shape[2]
        K = top if classes else ys[0].shape[-1]
        for p, name in zip(parts, ("x", "val[0]")):
            for a, what in ((p[0], name), (p[1], "y" if name == "x" else "val[1]")):
                if a.dtype.kind in "iu" and a.min() < 0:
                    raise BpttError(f"{what}: expected ids >= 0, received {int(a.min())}")
        levels = [*recurrent_stack(self.cfg), Dense(K)]  # (with the run's dropout, zoneout, ...)
        model = Model(
            D, levels, tokens=self.tokens, loss="ce" if classes else "mse", at="every" if self.every else "last"
        )
        self.check_model(model, model.init_params(0, self.cfg.dtype))
        return model

    def check_model(self, model: Model, params) -> None:
        """Every training and validation sequence against the model (shapes, ids, finiteness)."""
        model.check_batch(params, *self.train)
        if self.valid is not None:
            try:
                model.check_batch(params, *self.valid)
            except BpttError as e:
                raise BpttError(f"val: {e}") from None

    def evaluate(self, model: Model, params) -> dict[str, float] | None:
        if self.valid is None:
            return None
        x, y, m = self.valid
        out, _ = model.forward(params, x, mask=m)
        figures = {"loss": model.loss_fn.value(out, y, m)}
        if model.loss_fn.kind == "ce":
            T, B = x.shape[:2]
            if self.every:
                hit = out.argmax(axis=-1) == y
                figures["accuracy"] = float(hit.mean() if m is None else hit[np.asarray(m, bool)].mean())
            else:
                t, b = window_index(None if m is None else np.asarray(m, bool), T, B, model.loss_fn.window)
                figures["accuracy"] = float(np.mean(out[t, b].argmax(axis=-1) == y[b]))
        return figures

    def meta(self) -> dict[str, Any]:
        return {"normalizer": {"mean": 0.0, "std": 1.0}}  # (the values as given)

    def describe(self) -> str:
        what = "token ids" if self.tokens else f"{self.train[0].shape[2]} features"
        where = "every step" if self.every else "the last step"
        return (
            f"arrays: sequences of {self.T} steps ({what}), targets at {where}; train {self.n_train} / "
            f"validation {self.n_val} sequences"
        )
