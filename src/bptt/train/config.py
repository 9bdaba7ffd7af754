"""The training configuration: one flat set of keys shared by `bptt train` flags, TOML files
(`--config run.toml`, same keys; flags override) and the run's config.json."""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from ..algorithms.budget import parse_bytes
from ..algorithms.plan import POLICIES
from ..cells import ALIASES, CELLS
from ..data.series import DIFF_CHOICES, MISSING_RULES, parse_columns
from ..data.text import MAX_WORDS
from ..errors import BpttError, did_you_mean, one_of
from ..optim import OPTIMIZERS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


ALGORITHMS = ("full", "tbptt", "random", "artbp", "rtrl", "uoro", "eprop")
UPDATES = ("online", "batch")
TASKS = ("text", "series", "cue-accumulation", "store-recall")  # the last two: generated spike trains
LONG_TERM = ("adding", "copy-memory", "temporal-xor", "letters", "embedded-reber", "add-task")  # bptt.data.longterm
TASKS = TASKS + LONG_TERM
SCHEDULES = ("constant", "cosine")
_KIND = {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "a table"}

NORMALIZE = ("global", "window", "none")
MASKED = ("dropout", "recurrent_dropout", "zoneout", "zoneout_cell", "input_dropout")  # keys whose masks a batch holds


@dataclass
class TrainConfig:
    """Every setting of a run; what each means is in HELP (shown by `bptt train --help`)."""

    # data
    data: str = ""
    task: str = "text"
    column: str = ""
    target: str = ""
    missing: str = "error"
    diff: str = "auto"
    seasonal_diff: int = 0
    normalize: str = "global"
    val_fraction: float = 0.1
    test_fraction: float = 0.0
    # model
    cell: str = "lstm"
    hidden: int = 256
    layers: int = 1
    embed: int = 0
    dropout: float = 0.0
    recurrent_dropout: float = 0.0
    zoneout: float = 0.0
    zoneout_cell: float = 0.0
    input_dropout: float = 0.0
    input_noise: float = 0.0
    tie: bool = False
    tokens: str = "char"
    vocab_size: int = 10000
    # optimisation
    optimizer: str = "adam"
    lr: float = 3e-3
    schedule: str = "cosine"
    warmup: int = 50
    min_lr: float = 1e-4
    momentum: float = 0.9
    weight_decay: float = 0.0
    clip: float = 1.0
    clip_value: float = 0.0
    plateau_patience: int = 0
    plateau_factor: float = 0.5
    # gradient algorithm
    algorithm: str = "full"
    k1: int = 0
    k2: int = 0
    truncation_prob: float = 0.0
    update: str = "online"
    memory_budget: str = ""
    memory_policy: str = "revolve"
    eprop_signal: str = "online"
    eprop_feedback: str = "symmetric"
    update_every: int = 0
    # batches
    batch_size: int = 32
    seq_len: int = 100
    batching: str = ""
    steps: int = 1500
    epochs: float = 0.0
    max_seconds: float = 0.0
    eval_every: int = 250
    patience: int = 0
    # numerics and reproducibility
    dtype: str = "float32"
    seed: int = 0
    threads: int = 0
    diverge_after: int = 20
    diagnose_every: int = 0
    # output
    out: str = ""
    sample_length: int = 400
    progress: bool = True
    tensorboard: str = ""
    extra: dict = field(default_factory=dict)  # free-form notes kept in config.json (no flag)

    def validate(self, given: set[str] | None = None) -> TrainConfig:
        """Check every value; raise BpttError naming the key, what was expected and received.

        A setting that does not apply to the chosen task, optimizer, schedule or algorithm is
        refused rather than ignored: any of `given` (the keys a user set; default: every key
        whose value differs from its default)."""

        def bad(key: str, expected: str) -> BpttError:
            return BpttError(f"{key}: expected {expected}, received {getattr(self, key)!r}")

        if self.cell in ALIASES:  # torch's name for the Elman network
            self.cell = ALIASES[self.cell]
        for key, names in (
            ("task", TASKS),
            ("cell", sorted(CELLS) + ["alif", "lif"]),
            ("optimizer", OPTIMIZERS),
            ("schedule", SCHEDULES),
            ("algorithm", ALGORITHMS),
            ("update", UPDATES),
            ("dtype", ("float32", "float64")),
        ):
            if getattr(self, key) not in names:
                raise one_of(key, getattr(self, key), names)
        if self.batching not in ("", "stream", "window"):
            raise one_of("batching", self.batching, ("stream", "window"))
        if self.missing not in MISSING_RULES:
            raise one_of("missing", self.missing, MISSING_RULES)
        if isinstance(self.diff, int) and not isinstance(self.diff, bool):  # (diff = 1 in a TOML file)
            self.diff = str(self.diff)
        if self.diff not in DIFF_CHOICES:
            raise one_of("diff", self.diff, DIFF_CHOICES)
        if self.normalize not in NORMALIZE:
            raise one_of("normalize", self.normalize, NORMALIZE)
        if self.normalize == "window" and self.task == "series" and self.seq_len < 2:
            raise BpttError(
                f"normalize: 'window' normalises each window of --seq-len inputs by its own mean and spread, so it "
                f"expected --seq-len of at least 2, received {self.seq_len}"
            )
        if self.normalize == "window" and self.task == "series" and self.algorithm == "tbptt":
            raise BpttError(
                "normalize: 'window' trains on each window's last step (its earlier targets are inputs of the window), "
                "so it expected --algorithm full, random, artbp, rtrl, uoro or eprop, received --algorithm tbptt"
            )
        if self.normalize == "window" and self.task == "series" and self.batching_mode != "window":
            raise BpttError(
                "normalize: 'window' normalises each window of --seq-len inputs by its own mean and spread, so it "
                f"expected --batching window, received --batching {self.batching_mode}"
            )
        if self.tokens not in ("char", "word"):
            raise one_of("tokens", self.tokens, ("char", "word"))
        if (
            isinstance(self.vocab_size, bool)
            or not isinstance(self.vocab_size, int)
            or not 2 <= self.vocab_size <= MAX_WORDS
        ):
            raise bad("vocab_size", "an integer from 2 to 1,000,000")
        if (
            isinstance(self.seasonal_diff, bool)
            or not isinstance(self.seasonal_diff, int)
            or self.seasonal_diff == 1
            or self.seasonal_diff < 0
        ):
            raise bad("seasonal_diff", "0 (none) or a period of at least 2")
        for key in ("hidden", "layers", "batch_size", "seq_len", "eval_every", "diverge_after"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise bad(key, "a positive integer")
        for key in (
            "k1",
            "k2",
            "steps",
            "embed",
            "warmup",
            "patience",
            "plateau_patience",
            "threads",
            "sample_length",
            "seed",
            "update_every",
            "diagnose_every",
        ):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise bad(key, "a non-negative integer")
        for key in (
            "lr",
            "min_lr",
            "momentum",
            "weight_decay",
            "clip",
            "clip_value",
            "epochs",
            "max_seconds",
            "val_fraction",
            "test_fraction",
            "truncation_prob",
            "plateau_factor",
            "dropout",
            "recurrent_dropout",
            "zoneout",
            "zoneout_cell",
            "input_dropout",
            "input_noise",
        ):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v >= 0 and math.isfinite(v)):
                raise bad(key, "a finite non-negative number")
        if not self.lr > 0:
            raise bad("lr", "a number > 0")
        if not self.truncation_prob < 1:
            raise bad("truncation_prob", "a number in [0, 1)")
        if not self.val_fraction < 1.0:
            raise bad("val_fraction", "a number in [0, 1)")
        if not self.val_fraction + self.test_fraction < 1.0:
            raise bad(
                "test_fraction",
                f"a number in [0, {1 - self.val_fraction:g}) (with --val-fraction {self.val_fraction:g})",
            )
        if not self.dropout < 1.0:
            raise bad("dropout", "a number in [0, 1)")
        if not self.recurrent_dropout < 1.0:
            raise bad("recurrent_dropout", "a number in [0, 1)")
        if not self.input_dropout < 1.0:
            raise bad("input_dropout", "a number in [0, 1)")
        if not self.zoneout < 1.0:
            raise bad("zoneout", "a number in [0, 1)")
        if not self.zoneout_cell < 1.0:
            raise bad("zoneout_cell", "a number in [0, 1)")
        if (self.zoneout or self.zoneout_cell) and self.cell not in ("elman", "gru", "lstm"):
            raise BpttError(
                "zoneout: expected --cell elman, gru or lstm (whose output is its hidden state), received --cell "
                f"{self.cell}"
            )
        if self.zoneout_cell and self.cell != "lstm":
            raise BpttError(
                f"zoneout_cell: expected --cell lstm (the cell state c is an LSTM's), received --cell {self.cell}"
            )
        if self.recurrent_dropout and (self.zoneout or self.zoneout_cell):
            raise BpttError(
                "zoneout: expected either --recurrent-dropout or --zoneout/--zoneout-cell on the recurrent state, "
                f"received --recurrent-dropout {self.recurrent_dropout:g} and zoneout "
                f"{self.zoneout:g}/{self.zoneout_cell:g}"
            )
        if self.input_dropout and self.task == "text" and not self.embed:
            raise BpttError(
                "input_dropout: expected --embed E on text (the units dropped are the embedding's; token ids have "
                "none), received --embed 0"
            )
        if self.recurrent_dropout and self.cell not in ("elman", "lstm"):
            raise BpttError(
                "recurrent_dropout: expected --cell elman or lstm (whose h_(t-1) enters only the recurrent product; a "
                f"GRU carries it into h_t, a Jordan cell reads its output), received --cell {self.cell}"
            )
        if self.tie and self.task == "text" and self.embed != self.hidden:
            raise BpttError(
                f"tie: expected --embed equal to --hidden ({self.hidden}; the readout's rows are the embedding's), "
                f"received --embed {self.embed}"
            )
        if not 0.0 < self.plateau_factor < 1.0:
            raise bad("plateau_factor", "a number in (0, 1)")
        if self.steps == 0 and self.epochs == 0:
            raise bad("steps", "a positive number of steps (or epochs > 0)")
        if self.epochs and given is not None and {"steps", "epochs"} <= given:
            raise BpttError(
                f"steps: expected --steps or --epochs (epochs set the number of updates), received both: "
                f"--steps {self.steps} and --epochs {self.epochs:g}"
            )
        self._refuse_what_does_not_apply(given)
        parse_columns(self.column, "column")  # names or indices, separated by commas
        parse_columns(self.target, "target")
        if self.algorithm == "tbptt":
            if self.k1 and given is not None and "seq_len" in given and self.seq_len != self.k1:
                raise BpttError(
                    f"k1: expected the same as --seq-len (TBPTT's segment is k1 steps), received {self.k1} and "
                    f"--seq-len {self.seq_len}"
                )
            if self.k1:
                self.seq_len = self.k1  # the segment length is k1
            self.k1 = self.seq_len
            self.k2 = self.k2 or self.k1
            if self.k2 < self.k1:
                raise bad("k2", f"a number >= k1 = {self.k1}")
        if self.update_every:  # the forward-in-time algorithms' update interval: their segment length
            if self.batching_mode != "stream":
                raise BpttError(
                    "update_every: expected stream batching (the state and the sensitivities carried from update "
                    f"to update), received --batching {self.batching_mode!r}"
                )
            if given is not None and "seq_len" in given and self.seq_len != self.update_every:
                raise BpttError(
                    f"update_every: expected the same as --seq-len (the steps between updates), received "
                    f"{self.update_every} and --seq-len {self.seq_len}"
                )
            self.seq_len = self.update_every
        if self.algorithm in ("random", "artbp") and not self.truncation_prob > 0:
            raise BpttError(
                f"truncation_prob: expected a probability c in (0, 1) with --algorithm {self.algorithm}, received "
                f"{self.truncation_prob!r} (c = 0 never truncates: that is --algorithm full)"
            )
        if self.memory_budget:
            parse_bytes(self.memory_budget, "memory_budget")
            # masks the re-run steps meet (dropout after the last layer only touches the readout)
            keys = ("recurrent_dropout", "zoneout", "zoneout_cell", "input_dropout") + (
                ("dropout",) if self.layers > 1 else ()
            )
            masked = [f"--{k.replace('_', '-')} {getattr(self, k):g}" for k in keys if getattr(self, k)]
            if self.algorithm == "tbptt" and self.k2 > self.k1 and masked:
                raise BpttError(
                    f"memory_budget: expected --k2 equal to --k1 with dropout below the last layer or zoneout (a window reaching back past "
                    f"its batch runs its earlier steps again, and they met the earlier batch's masks), received --k2 "
                    f"{self.k2} > --k1 {self.k1} with {', '.join(masked)}"
                )
        if self.memory_policy not in POLICIES:
            raise one_of("memory_policy", self.memory_policy, POLICIES)
        if self.eprop_signal not in ("online", "exact"):
            raise one_of("eprop_signal", self.eprop_signal, ("online", "exact"))
        if self.eprop_feedback not in ("symmetric", "random"):
            raise one_of("eprop_feedback", self.eprop_feedback, ("symmetric", "random"))
        if self.algorithm == "eprop":
            spikes = self.task in ("cue-accumulation", "store-recall")
            if (spikes and self.cell not in ("lif", "alif")) or (not spikes and self.cell not in ("lstm", "elman")):
                raise BpttError(
                    "algorithm: expected eprop with a spiking cell on a spike task (--cell lif or alif) or an lstm or "
                    f"elman cell on text or series, received task {self.task!r} and cell {self.cell!r}"
                )
            if not spikes and self.embed:
                raise BpttError(
                    "algorithm: expected eprop on the recurrent level that reads the input (tokens one-hot), "
                    f"received --embed {self.embed} (an embedding level below it)"
                )
            if not spikes and self.eprop_signal == "online" and self.layers > 1:
                raise BpttError(
                    "algorithm: expected --layers 1 for eprop's online signal (the readout's error is fed back "
                    f"to the level right below it), received --layers {self.layers} (the exact signal takes more)"
                )
        if self.update == "batch" and self.batching_mode != "stream":
            raise BpttError(
                "update: 'batch' accumulates the gradient over one pass through the data in order, so it "
                f"expected --batching stream, received {self.batching_mode!r}"
            )
        return self

    def _refuse_what_does_not_apply(self, given: set[str] | None) -> None:
        defaults = TrainConfig()
        masks = (  # where dropout's masks are held for a batch's gradient
            self.task in ("text", "series") and self.algorithm in ("full", "tbptt", "random", "artbp"),
            "--task text or series and --algorithm full, tbptt, random or artbp",
        )
        rules = {
            "column": (self.task == "series", "--task series"),
            "target": (self.task == "series", "--task series"),
            "missing": (self.task == "series", "--task series"),
            "diff": (self.task == "series", "--task series"),
            "seasonal_diff": (self.task == "series", "--task series"),
            "normalize": (self.task == "series", "--task series"),
            "input_noise": (self.task == "series", "--task series"),
            "data": (self.task in ("text", "series"), "--task text or series"),
            "seq_len": (
                self.task in ("text", "series") or (self.task in LONG_TERM and self.task != "embedded-reber"),
                "--task text, series or a long-term task but embedded-reber",
            ),
            "val_fraction": (self.task in ("text", "series"), "--task text or series"),
            "test_fraction": (self.task in ("text", "series"), "--task text or series"),
            "batching": (self.task in ("text", "series"), "--task text or series"),
            "embed": (self.task == "text", "--task text"),
            "tie": (self.task == "text", "--task text"),
            "tokens": (self.task == "text", "--task text"),
            "vocab_size": (self.task == "text" and self.tokens == "word", "--tokens word"),
            **dict.fromkeys(MASKED, masks),
            "sample_length": (self.task == "text", "--task text"),
            "k1": (self.algorithm == "tbptt", "--algorithm tbptt"),
            "k2": (self.algorithm == "tbptt", "--algorithm tbptt"),
            "truncation_prob": (self.algorithm in ("random", "artbp"), "--algorithm random or artbp"),
            "momentum": (self.optimizer in ("momentum", "nesterov"), "--optimizer momentum or nesterov"),
            "weight_decay": (self.optimizer == "adam", "--optimizer adam"),
            "warmup": (self.schedule == "cosine", "--schedule cosine"),
            "min_lr": (self.schedule == "cosine", "--schedule cosine"),
            "plateau_factor": (self.plateau_patience > 0, "--plateau-patience > 0"),
            "memory_budget": (self.algorithm in ("full", "tbptt"), "--algorithm full or tbptt"),
            "memory_policy": (bool(self.memory_budget), "--memory-budget"),
            "eprop_signal": (self.algorithm == "eprop", "--algorithm eprop"),
            "eprop_feedback": (
                self.algorithm == "eprop" and self.eprop_signal == "online",
                "--algorithm eprop --eprop-signal online",
            ),
            "update_every": (self.algorithm in ("rtrl", "uoro", "eprop"), "--algorithm rtrl, uoro or eprop"),
        }
        off = {
            "column": "",
            "target": "",
            "missing": "error",
            "diff": "auto",
            "seasonal_diff": 0,
            "normalize": "global",
            "input_noise": 0.0,
            "test_fraction": 0.0,
            "embed": 0,
            "tie": False,
            "tokens": "char",
            "vocab_size": 10000,
            **dict.fromkeys(MASKED, 0.0),
            "sample_length": 0,
            "k1": 0,
            "k2": 0,
            "truncation_prob": 0.0,
            "weight_decay": 0.0,
        }
        for key, (applies, where) in rules.items():
            v = getattr(self, key)
            set_by_user = (key in given) if given is not None else v != getattr(defaults, key)
            if set_by_user and not applies and (key not in off or v != off[key]):
                chosen = {
                    "column": "task",
                    "target": "task",
                    "missing": "task",
                    "diff": "task",
                    "seasonal_diff": "task",
                    "normalize": "task",
                    "input_noise": "task",
                    "data": "task",
                    "seq_len": "task",
                    "val_fraction": "task",
                    "test_fraction": "task",
                    "batching": "task",
                    "embed": "task",
                    "tie": "task",
                    "tokens": "task",
                    "vocab_size": "tokens" if self.task == "text" else "task",
                    **dict.fromkeys(MASKED, "task" if self.task not in ("text", "series") else "algorithm"),
                    "sample_length": "task",
                    "k1": "algorithm",
                    "k2": "algorithm",
                    "truncation_prob": "algorithm",
                    "momentum": "optimizer",
                    "weight_decay": "optimizer",
                    "warmup": "schedule",
                    "min_lr": "schedule",
                    "plateau_factor": "plateau_patience",
                    "memory_budget": "algorithm",
                    "memory_policy": "memory_budget",
                    "eprop_signal": "algorithm",
                    "eprop_feedback": "eprop_signal" if self.algorithm == "eprop" else "algorithm",
                    "update_every": "algorithm",
                }[key]
                raise BpttError(
                    f"{key}: expected only with {where}, received {getattr(self, key)!r} with "
                    f"{chosen} {getattr(self, chosen)!r} (where it would be ignored)"
                )

    def algorithm_name(self) -> str:
        """The registered algorithm the run uses: --algorithm, or 'budget' for full BPTT within
        --memory-budget."""
        return "budget" if self.algorithm == "full" and self.memory_budget else self.algorithm

    def algorithm_options(self) -> dict[str, Any]:
        """The options of the chosen gradient algorithm (bptt.algorithms.make)."""
        if self.algorithm_name() == "budget":
            return {"budget": self.memory_budget, "policy": self.memory_policy}
        if self.algorithm == "tbptt":
            within = {"budget": self.memory_budget, "policy": self.memory_policy} if self.memory_budget else {}
            return {"k1": self.k1, "k2": self.k2, **within}
        if self.algorithm in ("random", "artbp"):
            return {"c": self.truncation_prob}
        if self.algorithm == "eprop":
            return {"signal": self.eprop_signal, "feedback": self.eprop_feedback}
        return {}

    @property
    def batching_mode(self) -> str:
        return self.batching or ("stream" if self.task == "text" else "window")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> TrainConfig:
        """A config from a dict of some of the keys (flags, a TOML table, a saved config), each of
        its key's type; unknown keys and wrong types are a BpttError naming the key."""
        if not isinstance(d, dict):
            raise BpttError(f"{source}: expected a table of settings, received {type(d).__name__}")
        for k in d:
            if k not in cls.keys():
                raise BpttError(
                    f"{source}: expected keys among {', '.join(cls.keys())}, received unknown {k!r}{did_you_mean(k, cls.keys())}"
                )
        defaults = cls()
        clean = {}
        for k, v in d.items():
            ref = getattr(defaults, k)
            if isinstance(ref, float) and isinstance(v, int) and not isinstance(v, bool):
                v = float(v)
            if type(ref) is not type(v):
                raise BpttError(f"{source}: {k}: expected {_KIND[type(ref)]}, received {v!r}")
            clean[k] = v
        return dataclasses.replace(defaults, **clean)


def load_toml(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise BpttError(f"--config: expected an existing TOML file, received {path!r}")
    try:
        with open(path, "rb") as f:
            d = tomllib.load(f)
    except OSError as e:
        raise BpttError(f"--config: expected a readable TOML file, received {path!r} ({e.strerror.lower()})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise BpttError(f"--config {path!r}: expected valid TOML, received a file that does not parse ({e})") from None
    # a [train] table or top-level keys, not both (settings beside the table were dropped silently)
    if isinstance(d.get("train"), dict):
        beside = sorted(k for k in d if k != "train")
        if beside:
            raise BpttError(
                f"--config {path!r}: expected the settings in the [train] table or at the top level, not both, "
                f"received {beside} outside [train]"
            )
        return d["train"]
    return d


# What each setting means: the one place it is written (bptt train --help shows it).
HELP = {
    "data": "text or series file (default: the bundled novel Botchan)",
    "task": "text, series, a generated spike task: cue-accumulation (Bellec et al. 2020), store-recall, or a long-term dependency task: adding, copy-memory, temporal-xor, letters, embedded-reber, add-task (--seq-len: their length T)",
    "column": "series: the input column(s), header names or 0-based indices separated by commas, e.g. "
    "temp,humidity,load (default: the last column)",
    "target": "series: the column(s) the inputs at t predict at t+1, as --column (default: the --column columns)",
    "missing": "series: what a missing value (an empty field, NA, NaN, nan or ?) in the columns used does: error "
    "(names its row and column), drop (its row) or interpolate (linearly between the column's neighbours; before "
    "the first or after the last value: the nearest one)",
    "diff": "series: model the differences of the series instead of its values, predictions and forecasts turned "
    "back into values (metrics on the original scale): 1 (first differences), 2, 0 (none) or auto (first "
    "differences where a straight line explains at least half the training part's variance; said in the log). "
    "Several columns: each column by its own trend (auto), or as asked for every column",
    "seasonal_diff": "series: also a seasonal difference of this period, v(t) - v(t - s) (e.g. 12 for monthly data "
    "with a yearly cycle; 0: none; several columns: every column)",
    "normalize": "series: global (each column's mean and standard deviation on the training part, after any "
    "differencing), window (--batching window: each window of --seq-len inputs and its target by the window's own "
    "mean and standard deviation, column by column, the targets among the inputs; predictions turned back by them; "
    "evaluation and forecasts read the --seq-len values before each prediction) or none (the values as they are)",
    "val_fraction": "the last fraction of the data (before the test part) is held out for validation",
    "test_fraction": "text or series: the very last fraction of the data is held out for a test figure, computed "
    "once at the end of the run with the weights of the best validation (printed, test.json; 0: none)",
    "cell": "elman, jordan, gru, lstm, or spiking: lif, alif (adaptive; with --task cue-accumulation half the neurons adapt)",
    "hidden": "units per recurrent layer",
    "layers": "stacked recurrent layers",
    "embed": "text: embedding width (0: token ids go straight into the recurrent layer)",
    "recurrent_dropout": "text or series, elman or lstm: variational dropout on the recurrent connections (Gal & "
    "Ghahramani 2016): each sequence of a batch reads h_(t-1) through one mask of its own (rate P, the kept units "
    "scaled by 1/(1 - P)) at every step; the identity in evaluation",
    "zoneout": "text or series, elman, gru or lstm: zoneout (Krueger et al. 2017): at every step each unit of "
    "the hidden state keeps its previous value with this probability (a fresh draw per step and sequence); in "
    "evaluation h_t = z h_(t-1) + (1 - z) h~_t (0: none)",
    "zoneout_cell": "text or series, lstm: zoneout of the cell state c, as --zoneout for h (Krueger et al. used 0.5 "
    "on c and 0.05 on h for characters)",
    "input_noise": "series: the standard deviation of Gaussian noise added to the inputs of each training batch "
    "(in normalised units; the targets stay clean), drawn from the run's generator: a network whose iterated forecasts "
    "meet their own errors learns from inputs that are not exact",
    "input_dropout": "text (with --embed) or series: variational dropout of the inputs of the first recurrent "
    "layer (the embedding's units, or the series' columns), one mask per sequence of a batch",
    "tokens": "text: char (every character a token) or word (runs of letters and digits, single punctuation marks, "
    "<eos> at each line's end; the --vocab-size most frequent on the training part, <unk> for the rest)",
    "vocab_size": "text with --tokens word: the vocabulary's size, <unk> included",
    "tie": "text: the readout's weights are the embedding's table (weight tying, Press & Wolf 2017; Inan et al. "
    "2017); needs --embed equal to --hidden",
    "dropout": "text or series: variational dropout after every recurrent layer (Gal & Ghahramani 2016): in "
    "training each sequence of a batch drops a unit's output with this probability, the same units at every "
    "time step, the kept ones scaled by 1/(1 - p); off for validation, sampling and forecasts (0: none)",
    "optimizer": "sgd, momentum, nesterov, adagrad, rmsprop, adam, rprop or quickprop",
    "lr": "learning rate (peak of the schedule)",
    "schedule": "constant or cosine (linear warm-up, then cosine decay to --min-lr)",
    "warmup": "warm-up updates of the cosine schedule",
    "min_lr": "final learning rate of the cosine schedule",
    "momentum": "momentum of the momentum and nesterov optimizers",
    "weight_decay": "decoupled weight decay (adam)",
    "clip": "clip the gradient's global norm to this (0: off)",
    "clip_value": "clip each gradient entry to [-v, v] (0: off)",
    "plateau_patience": "cut the lr after this many evaluations without improvement (0: off)",
    "plateau_factor": "factor the lr is cut by on a plateau",
    "algorithm": "full (BPTT over each batch), tbptt (TBPTT(k1, k2): an update every k1 steps, each window reaching k2 steps back), random (cuts drawn with --truncation-prob, no reweighting: biased), artbp (the same cuts, messages reweighted by 1/(1-c): unbiased), rtrl (real-time recurrent learning: the exact gradient forward in time, its sensitivities carried along the stream), uoro (UORO's unbiased rank-one estimate of them) or eprop (e-prop: spike tasks with --cell lif or alif, text or series with --cell lstm or elman; its eligibility traces carried on streams); with stream batching the state and the carried sensitivities go from batch to batch (and into checkpoints), an update every --seq-len steps",
    "k1": "tbptt: steps per segment and update (sets --seq-len; 0: --seq-len)",
    "k2": "tbptt: steps each window backpropagates (>= k1; 0: k1)",
    "truncation_prob": "random/artbp: probability c of a truncation at each step",
    "memory_budget": "full BPTT's gradient (or with --algorithm tbptt each window's) within this memory for stored "
    "states and tapes (e.g. 64MB, 1GiB): some states are stored and the steps after them recomputed (bptt plan "
    "shows the cost); empty: no limit",
    "eprop_signal": "with --algorithm eprop: online (the readout's error at each step, forward in time) or exact (dE/dz from BPTT: equals BPTT)",
    "eprop_feedback": "with --algorithm eprop and the online signal: symmetric (the readout's weights) or random (a fixed random matrix from the run's generator)",
    "diagnose_every": "every N updates, the gradient flow on a fixed batch (bptt.diagnostics.flow: the error signal at every step, |dS(T)/dS(t)| by lag, each lag's part of the recurrent weight gradients) as a 'flow' row of metrics.jsonl, for `bptt diagnose RUN` (0: never)",
    "update_every": "with --algorithm rtrl, uoro or eprop on streams: an update every K time steps (1: at every step), the state and the algorithm's sensitivities or traces carried from update to update and into checkpoints (the same as --seq-len K)",
    "memory_policy": "revolve (hidden-state checkpointing with the binomial optimum, Griewank 1992) or mixed "
    "(states and whole recorded segments where each pays best, after Gruslys et al. 2016; NOTICE: patents "
    "US 11,256,990 B2 and EP 3446260 B1 claim choosing what to store during BPTT from a memory allocation; "
    "judge for your jurisdiction)",
    "update": "online (an update after every batch: every k1 steps with tbptt on streams, SNNS's BPTT; per minibatch otherwise) or batch (one update per pass over the training data with the mean gradient of all its segments, SNNS's BBPTT; with --optimizer quickprop, QPTT); --steps then counts passes",
    "batch_size": "sequences (streams) per batch (under mpirun -n N: the whole batch, B/N streams on each rank)",
    "seq_len": "time steps per batch (the BPTT length)",
    "batching": "stream (state carried across batches) or window (random windows); default: stream for text, window for series",
    "steps": "training updates",
    "epochs": "passes over the training data (overrides --steps when > 0)",
    "max_seconds": "stop after this many seconds of training (0: no limit)",
    "eval_every": "evaluate on the validation split every N updates",
    "patience": "stop early after this many evaluations without improvement (0: off)",
    "dtype": "float32 or float64",
    "seed": "seed of all randomness (initial weights, batches)",
    "threads": "BLAS threads (0: the usable cores, at most 2; use 1 on a machine shared with other jobs)",
    "diverge_after": "stop after this many updates in a row skipped for a non-finite loss, gradient or weight "
    "(the last good checkpoint is kept as it is)",
    "out": "run folder (default: runs/<timestamp>)",
    "sample_length": "text: characters sampled at the end",
    "progress": "show a progress bar",
    "tensorboard": "also write TensorBoard event files to this folder: the losses, bits/char or NMSE, lr, gradient norm, "
    "clip rate, tokens/s as in metrics.jsonl, and (text) a sample at each evaluation; --tensorboard alone: "
    "{run}/tensorboard, {run} standing for the run folder; needs pip install 'bptt[tensorboard]' ('': off)",
}
