"""The training configuration: one flat set of keys shared by `bptt train` flags, TOML files
(`--config run.toml`, same keys; flags override) and the run's config.json."""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from ..cells import CELLS
from ..optim import OPTIMIZERS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


ALGORITHMS = ("full", "tbptt", "random", "artbp")
UPDATES = ("online", "batch")


@dataclass
class TrainConfig:
    # data
    data: str = ""  # text or series file; empty: the bundled novel Botchan (text)
    task: str = "text"  # text | series
    column: str = ""  # series: column name or index (default: the last column)
    val_fraction: float = 0.1  # the last fraction of the data is the validation split
    # model
    cell: str = "lstm"
    hidden: int = 256
    layers: int = 1
    embed: int = 0  # text: embedding width; 0 feeds token ids straight into the recurrent level
    # optimisation
    optimizer: str = "adam"
    lr: float = 3e-3
    schedule: str = "cosine"  # constant | cosine (warm-up + cosine decay to min_lr)
    warmup: int = 50
    min_lr: float = 1e-4
    momentum: float = 0.9  # momentum / nesterov
    weight_decay: float = 0.0
    clip: float = 1.0  # max global gradient norm; 0 disables
    clip_value: float = 0.0  # elementwise gradient limit; 0 disables
    plateau_patience: int = 0  # evaluations without improvement before the lr is cut; 0 off
    plateau_factor: float = 0.5
    # gradient algorithm
    algorithm: str = "full"  # full | tbptt | random | artbp
    k1: int = 0  # tbptt: steps per segment (an update every k1 steps); 0: seq_len. Sets seq_len.
    k2: int = 0  # tbptt: steps each window reaches back (>= k1); 0: k1
    truncation_prob: float = 0.0  # random / artbp: probability of a truncation at each step
    update: str = "online"  # online: after every batch (SNNS BPTT) | batch: once per pass (SNNS BBPTT/QPTT)
    # batches
    batch_size: int = 32
    seq_len: int = 100
    batching: str = ""  # stream (state carried across batches) | window (random windows); "" = task default
    steps: int = 1500
    epochs: float = 0.0  # if > 0, overrides steps: this many passes over the training data
    max_seconds: float = 0.0  # stop after this much training time; 0: no limit
    eval_every: int = 250
    patience: int = 0  # early stopping after this many evaluations without improvement; 0 off
    # numerics and reproducibility
    dtype: str = "float32"
    seed: int = 0
    threads: int = 0  # BLAS threads; 0: the default (default_threads(): the usable cores, at most 2)
    # output
    out: str = ""  # run folder; empty: runs/<timestamp>
    sample_length: int = 400
    progress: bool = True
    extra: dict = field(default_factory=dict)  # free-form notes kept in config.json

    def validate(self) -> "TrainConfig":
        """Check every value; raise ValueError naming the key, what was expected and received."""

        def bad(key: str, expected: str) -> ValueError:
            return ValueError(f"{key}: expected {expected}, received {getattr(self, key)!r}")

        if self.task not in ("text", "series"):
            raise bad("task", "'text' or 'series'")
        if self.cell not in CELLS:
            raise bad("cell", f"one of {sorted(CELLS)}")
        if self.optimizer not in OPTIMIZERS:
            raise bad("optimizer", f"one of {list(OPTIMIZERS)}")
        if self.schedule not in ("constant", "cosine"):
            raise bad("schedule", "'constant' or 'cosine'")
        if self.batching not in ("", "stream", "window"):
            raise bad("batching", "'stream' or 'window'")
        if self.algorithm not in ALGORITHMS:
            raise bad("algorithm", f"one of {list(ALGORITHMS)}")
        if self.update not in UPDATES:
            raise bad("update", f"one of {list(UPDATES)}")
        if self.dtype not in ("float32", "float64"):
            raise bad("dtype", "'float32' or 'float64'")
        for key in ("hidden", "layers", "batch_size", "seq_len", "eval_every"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise bad(key, "a positive integer")
        for key in ("k1", "k2", "steps", "embed", "warmup", "patience", "plateau_patience", "threads", "sample_length", "seed"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise bad(key, "a non-negative integer")
        for key in ("lr", "min_lr", "momentum", "weight_decay", "clip", "clip_value", "epochs", "max_seconds"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
                raise bad(key, "a non-negative number")
        if isinstance(self.truncation_prob, bool) or not isinstance(self.truncation_prob, (int, float)) or not 0 <= self.truncation_prob < 1:
            raise bad("truncation_prob", "a number in [0, 1)")
        if self.algorithm == "tbptt":
            if self.k1:
                self.seq_len = self.k1  # the segment length is k1
            self.k1 = self.seq_len
            self.k2 = self.k2 or self.k1
            if self.k2 < self.k1:
                raise bad("k2", f"a number >= k1 = {self.k1}")
        elif self.k1 or self.k2:
            raise ValueError(f"k1, k2: expected only with --algorithm tbptt, received them with {self.algorithm!r}")
        if self.truncation_prob and self.algorithm not in ("random", "artbp"):
            raise ValueError(
                f"truncation_prob: expected only with --algorithm random or artbp, received it with {self.algorithm!r}"
            )
        if not self.lr > 0:
            raise bad("lr", "a number > 0")
        if not 0.0 <= self.val_fraction < 1.0:
            raise bad("val_fraction", "a number in [0, 1)")
        if not 0.0 < self.plateau_factor < 1.0:
            raise bad("plateau_factor", "a number in (0, 1)")
        if self.steps == 0 and self.epochs == 0:
            raise bad("steps", "a positive number of steps (or epochs > 0)")
        if self.update == "batch" and self.batching_mode != "stream":
            raise ValueError(
                "update: 'batch' accumulates the gradient over one pass through the data in order, so it "
                f"expected --batching stream, received {self.batching_mode!r}"
            )
        if self.task == "series" and self.embed:
            raise bad("embed", "0 for a series task")
        return self

    @property
    def batching_mode(self) -> str:
        return self.batching or ("stream" if self.task == "text" else "window")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> "TrainConfig":
        unknown = sorted(set(d) - set(cls.keys()))
        if unknown:
            raise ValueError(f"{source}: expected keys among {cls.keys()}, received unknown {unknown}")
        defaults = cls()
        clean = {}
        for k, v in d.items():
            ref = getattr(defaults, k)
            if isinstance(ref, float) and isinstance(v, int) and not isinstance(v, bool):
                v = float(v)
            if type(ref) is not type(v):
                raise ValueError(f"{source}: {k}: expected a {type(ref).__name__}, received {v!r}")
            clean[k] = v
        return dataclasses.replace(defaults, **clean)


def load_toml(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise ValueError(f"--config: expected an existing TOML file, received {path!r}")
    try:
        with open(path, "rb") as f:
            d = tomllib.load(f)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"--config {path!r}: expected valid TOML, received a file that does not parse ({e})") from None
    # allow a [train] table or top-level keys
    return d.get("train", d) if isinstance(d.get("train"), dict) else d
