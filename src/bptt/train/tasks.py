"""What the trainer trains on: character-level text, a time series (one column, or several
input columns and target columns), a generated
spike-train task (cue accumulation, store-recall) for spiking networks, or one of the classic
long-term dependency tasks (bptt.data.longterm: adding, copy-memory, temporal-xor, letters,
embedded-reber, add-task).

A task reads its data, builds the model that fits it, hands out training batches and evaluates
the validation split. Two ways to batch:

- stream: B contiguous streams over the training data, consecutive segments of seq_len steps;
  the state at the end of one batch is the initial state of the next (the gradient does not
  cross the boundary: truncated BPTT with k1 = k2 = seq_len). The state is reset at the start of
  every pass over the data. The default for text.
- window: B windows of seq_len steps at random offsets, each from the initial state. The
  default for series.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..data import longterm as lt
from ..data import series as ser
from ..data import spikes
from ..data import text as txt
from ..errors import BpttError
from ..layers import Dense, Dropout, Embedding, RateRegularizer, Recurrent, rnn
from ..model import Model
from .config import TrainConfig


def build_model(cfg: TrainConfig, vocab_size: int | None = None) -> Model:
    """text: tokens -> [Embedding] -> recurrent layers -> Dense(V), cross-entropy at every step;
    series: the input columns -> recurrent layers -> Dense(the target columns), squared error at
    every step (one column: value -> Dense(1)); a spike task: `spike_model`."""
    if cfg.task in SPIKE_TASKS:
        probe = SPIKE_TASKS[cfg.task](np.random.default_rng(0), 1)
        return spike_model(cfg, probe.x.shape[2], probe.window)
    if cfg.task in lt.TASKS:
        return LongTermTask(cfg).build_model()
    rec = recurrent_stack(cfg)
    if cfg.task == "text":
        emb = Embedding(cfg.embed) if cfg.embed else None
        out = Dense(vocab_size, tie=emb if cfg.tie else None)
        return Model(vocab_size, ([emb] if emb else []) + [rec, out], tokens=True, loss="ce")
    n_in, n_out = series_sizes(cfg)
    # per-window normalisation: only the window's last step predicts a value outside the window
    # its statistics come from (the earlier targets are inputs of the same window)
    return Model(n_in, [rec, Dense(n_out)], loss="mse", at="last" if cfg.normalize == "window" else "every")


def recurrent_stack(cfg: TrainConfig) -> list:
    """The recurrent levels of cfg (cell, hidden, layers) with its regularisers: recurrent
    dropout and zoneout in the cells, dropout after every level, input dropout before them."""
    rec: list = rnn(
        cfg.cell,
        cfg.hidden,
        cfg.layers,
        **({"recurrent_dropout": cfg.recurrent_dropout} if cfg.recurrent_dropout else {}),
        **({"zoneout": cfg.zoneout} if cfg.zoneout else {}),
        **({"zoneout_cell": cfg.zoneout_cell} if cfg.zoneout_cell else {}),
    )
    if cfg.dropout:  # after every recurrent level (Zaremba et al.'s places; Gal & Ghahramani's masks)
        rec = [lv for i, r in enumerate(rec) for lv in (r, Dropout(cfg.dropout, name=f"drop{i}"))]
    if cfg.input_dropout:  # on what the first recurrent level reads
        rec = [Dropout(cfg.input_dropout, name="dropin"), *rec]
    return rec


def series_columns(cfg: TrainConfig) -> tuple[list[str | None], list[str]]:
    """(the input columns, the target columns) of --column and --target: names or indices as
    given; the inputs [None] (the last column) by default, the targets [] (the inputs)."""
    return ser.parse_columns(cfg.column, "column") or [None], ser.parse_columns(cfg.target, "target")


def series_sizes(cfg: TrainConfig) -> tuple[int, int]:
    """(inputs, outputs) of a series model, from the config alone (no data file read)."""
    inputs, targets = series_columns(cfg)
    return len(inputs), len(targets or inputs)


def stream_loss(model: Model, params, streams: np.ndarray, seq_len: int) -> tuple[float, int]:
    """Average loss over all next-token predictions of (N, B) streams, state carried across
    segments; returns (mean loss, number of predictions)."""
    state = model.initial_state(params, streams.shape[1])[0]
    total, count = 0.0, 0
    for start, length in txt.segments(streams, seq_len):
        x = streams[start : start + length]
        y = streams[start + 1 : start + 1 + length]
        out, state = model.forward(params, x, state0=state)
        n = y.size
        total += model.loss_fn.value(out, y, None) * n
        count += n
    return total / count, count


def target_logprobs(model: Model, params, streams: np.ndarray, seq_len: int) -> np.ndarray:
    """log p(next token) of every next-token prediction of (N, B) streams, as stream_loss makes
    them (state carried across segments): (N - 1, B) float64."""
    state = model.initial_state(params, streams.shape[1])[0]
    rows = []
    for start, length in txt.segments(streams, seq_len):
        out, state = model.forward(params, streams[start : start + length], state0=state)
        z = out.astype(np.float64)
        z -= z.max(axis=-1, keepdims=True)
        y = streams[start + 1 : start + 1 + length]
        rows.append(np.take_along_axis(z, y[..., None], axis=-1)[..., 0] - np.log(np.exp(z).sum(axis=-1)))
    return np.concatenate(rows)


def mixture_loss(members: list, streams: np.ndarray, seq_len: int) -> tuple[float, list[float]]:
    """Mean loss of the members' mixture over the next-token predictions of the streams,
    -mean log((1/M) sum_m p_m(y)), and each member's own mean loss (members: (model, params))."""
    logp = np.stack([target_logprobs(m, p, streams, seq_len) for m, p in members])
    mix = -np.mean(np.logaddexp.reduce(logp, axis=0) - np.log(len(members)))
    return float(mix), [float(-np.mean(lp)) for lp in logp]


def text_loss(members: list, streams: np.ndarray, seq_len: int) -> tuple[float, list[float], int]:
    """(the loss of one model, or of several models' mixture, each member's own loss, the number
    of predictions) over the next-token predictions of (N, B) streams."""
    if len(members) == 1:
        loss, n = stream_loss(*members[0], streams, seq_len)
        return loss, [loss], n
    mix, each = mixture_loss(members, streams, seq_len)
    return mix, each, (len(streams) - 1) * streams.shape[1]


class _Batches:
    """What both tasks share: B streams cut into consecutive segments, or random windows."""

    cfg: TrainConfig
    mode: str
    n_train: int
    streams: np.ndarray
    segs: list
    masked = False  # whether its batches carry a mask of real steps

    @property
    def tokens_per_step(self) -> int:
        return self.cfg.batch_size * self.cfg.seq_len

    def steps_per_epoch(self) -> int:
        if self.mode == "stream":
            return len(self.segs)
        if self.cfg.normalize == "window" and self.cfg.task == "series":  # one target per window
            return max(1, math.ceil(self.n_train / self.cfg.batch_size))
        return max(1, math.ceil(self.n_train / self.tokens_per_step))

    def _stream_batch(self, step: int) -> tuple[np.ndarray, np.ndarray, bool]:
        """(inputs, next-step targets, whether this segment starts a pass over the data)."""
        i = step % len(self.segs)
        start, length = self.segs[i]
        return self.streams[start : start + length], self.streams[start + 1 : start + 1 + length], i == 0


class TextTask(_Batches):
    kind = "text"

    def __init__(self, cfg: TrainConfig, vocab: txt.Vocab | None = None) -> None:
        self.cfg = cfg
        self.path = cfg.data or txt.bundled_text_path()
        self.source = cfg.data or f"bundled: {txt.BUNDLED}"
        text = txt.read_text(self.path)
        self.unit = cfg.tokens  # 'char' or 'word'
        if self.unit == "word":
            tokens = txt.words(text)
            if vocab is None:  # the most frequent words of the training part
                n = txt.split_sizes(len(tokens), cfg.val_fraction, cfg.test_fraction)[0]
                vocab = txt.WordVocab.from_tokens(tokens[:n], cfg.vocab_size)
            self.vocab = vocab
            ids, self.unknown = vocab.encode_tokens(tokens)
        else:
            self.vocab = vocab or txt.Vocab.from_text(text)
            ids, self.unknown = self.vocab.encode(text)
        train, val, test = txt.split(ids, cfg.val_fraction, cfg.test_fraction)
        self.n_train, self.n_val, self.n_test = len(train), len(val), len(test)
        if len(train) < cfg.seq_len + 1:
            raise BpttError(
                f"seq_len: expected fewer than {len(train)} steps for {len(train)} training {txt.UNITS[self.unit]}, received {cfg.seq_len}"
            )
        self.train_ids = train
        self.unigram = txt.unigram_entropy(train, len(self.vocab))
        self.mode = cfg.batching_mode
        if self.mode == "stream":
            self.streams = txt.batchify(train, cfg.batch_size)
            self.segs = txt.segments(self.streams, cfg.seq_len)
        self.val_streams, self.test_streams = self._streams(val), self._streams(test)
        self.validates = self.val_streams is not None  # (whether evaluate has figures to give)

    def _streams(self, ids: np.ndarray) -> np.ndarray | None:
        """A held-out part as streams for stream_loss (None if under 2 characters)."""
        if len(ids) < 2:
            return None
        return txt.batchify(ids, max(1, min(self.cfg.batch_size, len(ids) // (2 * self.cfg.seq_len))))

    def build_model(self) -> Model:
        return build_model(self.cfg, len(self.vocab))

    def batch(self, step: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, bool]:
        """(x (T, B) ids, targets (T, B), whether to start from the initial state)."""
        c = self.cfg
        if self.mode == "stream":
            return self._stream_batch(step)
        starts = rng.integers(0, self.n_train - c.seq_len, size=c.batch_size)
        idx = starts[None, :] + np.arange(c.seq_len)[:, None]
        return self.train_ids[idx], self.train_ids[idx + 1], True

    def diagnostic_batch(self) -> tuple:
        """A fixed batch for the gradient-flow diagnostics: 4 windows of seq_len steps at evenly
        spaced places of the training text, from the initial state."""
        c = self.cfg
        starts = np.linspace(0, self.n_train - c.seq_len - 1, 4).astype(int)
        idx = starts[None, :] + np.arange(c.seq_len)[:, None]
        return self.train_ids[idx], self.train_ids[idx + 1], None

    def evaluate(self, model: Model, params) -> dict[str, float] | None:
        return self._scored([(model, params)], self.val_streams)

    def test(self, model: Model, params) -> dict[str, float] | None:
        """The figures of the test part (--test-fraction), as evaluate's."""
        return self._scored([(model, params)], self.test_streams)

    def ensemble(self, members: list, part: str) -> dict[str, float] | None:
        """evaluate's (part 'validation') or test's figures of the members' mixture: the mean of
        their probabilities of each next token."""
        return self._scored(members, self.val_streams if part == "validation" else self.test_streams)

    def _scored(self, members: list, streams: np.ndarray | None) -> dict[str, float] | None:
        if streams is None:
            return None
        return text_metrics(text_loss(members, streams, self.cfg.seq_len)[0], self.unit)

    def meta(self) -> dict[str, Any]:
        return {"vocab": self.vocab.meta()}

    def describe(self) -> str:
        return (
            f"text {self.source}: {self.n_train + self.n_val + self.n_test:,} {txt.UNITS[self.unit]}, vocabulary {len(self.vocab)}, "
            f"train {self.n_train:,} / validation {self.n_val:,}"
            + (f" / test {self.n_test:,}" if self.n_test else "")
            + (f", {self.unknown} unknown skipped" if self.unknown and self.unit == "char" else "")
            + (
                f", {self.unknown:,} as <unk> ({self.unknown / (self.n_train + self.n_val + self.n_test):.1%})"
                if self.unit == "word"
                else ""
            )
            + f"; unigram entropy {self.unigram:.4f} nats/{self.unit} (the no-context baseline)"
        )


def text_metrics(loss: float, unit: str = "char") -> dict[str, float]:
    """The figures of a mean loss in nats per token: bits per character and perplexity for
    characters, perplexity for words."""
    ppl = math.exp(min(loss, 700.0))
    return {"loss": loss, "bpc": loss / math.log(2.0), "ppl": ppl} if unit == "char" else {"loss": loss, "ppl": ppl}


class SeriesTask(_Batches):
    """A series: one column (v(t) predicts v(t+1)), or several: the --column inputs at t predict
    the --target columns at t+1, each column normalised on the training part. The state of a
    one-column task (values (T,), a scalar normaliser, its metrics) is what it always was."""

    kind = "series"

    def __init__(
        self,
        cfg: TrainConfig,
        normalizer: ser.Normalizer | None = None,
        difference: ser.Difference | None = None,
        columns: dict[str, list[str]] | None = None,
        name: str | None = None,
    ) -> None:
        """normalizer, difference, columns: a run's own (resume), the columns' names as its record
        has them ({'inputs': [...], 'targets': [...]}); name: a one-column run's column."""
        self.cfg = cfg
        if not cfg.data:
            raise BpttError("data: expected a series file for --task series, received none")
        self.path = self.source = cfg.data
        inputs, targets = series_columns(cfg)
        self.table = ser.read_table(self.path, inputs, targets, cfg.missing)
        got = {"inputs": list(self.table.input_names), "targets": list(self.table.target_names)}
        if columns is not None and got != columns:  # its per-column orders and statistics go by position
            raise BpttError(
                f"column: expected the run's columns, inputs {', '.join(columns['inputs'])} -> targets "
                f"{', '.join(columns['targets'])}, received inputs {', '.join(got['inputs'])} -> targets "
                f"{', '.join(got['targets'])}"
            )
        self.multi = len(self.table.names) > 1
        self.n_in, self.targets = self.table.n_inputs, list(self.table.targets)
        self.values = self.table.values if self.multi else self.table.values[:, 0]
        self.name = ", ".join(self.table.names)
        if name is not None and not self.multi and self.name != name:  # (its normaliser is that column's)
            raise BpttError(f"column: expected the run's column {name}, received {self.name}")
        self.n_train, self.n_val, self.n_test = txt.split_sizes(len(self.values), cfg.val_fraction, cfg.test_fraction)
        self.validates = self.n_val > 0
        self.diff, self.diff_note = self._difference(cfg, difference)
        p = self.diff.order  # the modelled series w starts at value p
        if p and self.n_train - p < 3:
            key, got = ("seasonal_diff", cfg.seasonal_diff) if cfg.seasonal_diff else ("diff", cfg.diff)
            raise BpttError(
                f"{key}: expected differencing that leaves at least 3 of the {self.n_train} training values "
                f"(it takes the first {p}: {self.diff.describe(self.table.names if self.multi else None)}), "
                f"received {got}"
            )
        self.w = self.diff(self.values) if self.diff else self.values
        self.norm = normalizer or self._normalizer(self.w[: self.n_train - p])
        want = len(self.table.names) if self.multi else None
        if self.norm.columns != want:
            raise BpttError(
                f"normalizer: expected {'one mean and std' if want is None else f'{want} means and stds'} (the "
                f"columns {self.name}), received "
                + ("one of each" if self.norm.columns is None else f"{self.norm.columns} of each")
            )
        if bool(self.norm.window) != (cfg.normalize == "window") or self.norm.window not in (0, cfg.seq_len):
            had = f"'window' (windows of {self.norm.window})" if self.norm.window else "'global' or 'none'"
            raise BpttError(
                f"normalize: expected the normalisation the model was trained with, {had}, received --normalize "
                f"{cfg.normalize} --seq-len {cfg.seq_len}"
            )
        self.z = self.norm(self.w)
        self.z_train = self.z[: self.n_train - p]
        if self.n_train < 3:
            raise BpttError(f"val_fraction: expected at least 3 training values, received {self.n_train}")
        self.mode = cfg.batching_mode
        if self.mode == "stream":
            if self.multi:  # B contiguous streams of rows, (N, B, D), as txt.batchify cuts a series
                n = len(self.z_train) // cfg.batch_size
                if n < 2:
                    raise BpttError(
                        f"batch size: expected at most {len(self.z_train) // 2} streams for {len(self.z_train)} "
                        f"rows, received {cfg.batch_size}"
                    )
                rows = self.z_train[: n * cfg.batch_size].reshape(cfg.batch_size, n, -1)
                self.streams = np.ascontiguousarray(rows.transpose(1, 0, 2), self.dtype)
            else:
                self.streams = txt.batchify(self.z_train, cfg.batch_size)[..., None].astype(self.dtype)
            self.segs = txt.segments(self.streams, cfg.seq_len)
        elif cfg.seq_len > len(self.z_train) - 2:
            raise BpttError(
                f"seq_len: expected at most {len(self.z_train) - 2} for {self.n_train} training values"
                + (f" ({len(self.z_train)} differences)" if p else "")
                + f", received {cfg.seq_len}"
            )

    def _normalizer(self, train: np.ndarray) -> ser.Normalizer:
        """--normalize global: fitted on the training part; window: each window by its own
        (ser.Normalizer); none: the identity (mean 0, std 1)."""
        if self.cfg.normalize == "window":
            other = [n for n in self.table.target_names if n not in self.table.input_names]
            if other:
                raise BpttError(
                    f"normalize: expected every --target among the --column inputs for 'window' (each target is "
                    f"normalised by its own column's window, which the network reads), received the targets "
                    f"{', '.join(other)} that are not inputs"
                )
            return ser.Normalizer.per_window(train, self.cfg.seq_len)
        if self.cfg.normalize == "none":
            k = train.shape[1] if train.ndim == 2 else None
            return ser.Normalizer((0.0,) * k, (1.0,) * k) if k else ser.Normalizer(0.0, 1.0)
        return ser.Normalizer.fit(train)

    def _difference(self, cfg: TrainConfig, given: ser.Difference | None) -> tuple[ser.Difference, str]:
        """The run's differencing (a resumed run's own; else --diff and --seasonal-diff, auto
        looking for a trend in the training part) and what to say of it."""
        names = self.table.names
        if given is not None:
            if given and given.columns != (len(names) if self.multi else None):
                raise BpttError(
                    f"difference: expected {'one order' if not self.multi else f'{len(names)} orders'} (the columns "
                    f"{self.name}), received {given.as_dict()}"
                )
            said = given.describe(names if self.multi else None)
            parts = given.parts() if given else [ser.Difference()]
            for key, flag, differs in (
                ("seasonal_diff", cfg.seasonal_diff, any(c.s != cfg.seasonal_diff for c in parts)),
                ("diff", cfg.diff, cfg.diff != "auto" and any(c.d != int(cfg.diff) for c in parts)),
            ):
                if differs:
                    raise BpttError(
                        f"{key}: expected the run's own differencing ({said}; a run keeps it), received "
                        f"--{key.replace('_', '-')} {flag}"
                    )
            return given, said
        return ser.Difference.choose(cfg.diff, cfg.seasonal_diff, self.values[: self.n_train], names)

    @property
    def dtype(self):
        return np.dtype(self.cfg.dtype)

    def build_model(self) -> Model:
        return build_model(self.cfg)

    def _columns(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(T, B, D) rows -> the inputs of x and the targets of y."""
        if not self.multi:
            return x, y
        return np.ascontiguousarray(x[..., : self.n_in]), np.ascontiguousarray(y[..., self.targets])

    def batch(self, step: int, rng: np.random.Generator):
        if self.mode == "stream":
            x, y, first = self._stream_batch(step)
            x, y = self._columns(x, y)
        else:
            if self.norm.window:  # each window by its own mean and spread (in float64), its last target alone
                x, y = self._columns(
                    *self.norm.pair(
                        *ser.random_windows(self.z_train, self.cfg.batch_size, self.cfg.seq_len, rng), self.dtype
                    )
                )
                y = np.ascontiguousarray(y[-1])
            else:
                x, y = self._columns(
                    *ser.random_windows(self.z_train, self.cfg.batch_size, self.cfg.seq_len, rng, self.dtype)
                )
            first = True
        if self.cfg.input_noise:  # the inputs of this batch alone, the targets clean
            x = x + rng.normal(0.0, self.cfg.input_noise, x.shape).astype(x.dtype)
        return x, y, first

    def diagnostic_batch(self) -> tuple:
        """4 windows of seq_len steps at evenly spaced places of the training series."""
        n = len(self.z_train)
        T = min(self.cfg.seq_len, n - 1)
        starts = np.linspace(0, n - T - 1, 4).astype(int)
        idx = starts[None, :] + np.arange(T)[:, None]
        if self.norm.window:
            z = np.asarray(self.z_train, np.float64)
            rows = (z[idx], z[idx + 1]) if self.multi else (z[idx][..., None], z[idx + 1][..., None])
            x, y = self._columns(*self.norm.pair(*rows, self.dtype))
            return x, np.ascontiguousarray(y[-1]), None
        z = np.asarray(self.z_train, self.dtype)
        if self.multi:
            return (*self._columns(z[idx], z[idx + 1]), None)
        return z[idx][..., None], z[idx + 1][..., None], None

    def one_step_predictions(self, model: Model, params) -> np.ndarray:
        """Predictions of the series' values[1:] (ser.one_step_values), one sequence from the
        initial state, in original units: (T-1,) for one column; (T-1, K) of the K targets for
        several."""
        return ser.one_step_values(
            lambda x: model.forward(params, x)[0],
            self.values,
            self.norm,
            self.diff,
            self.dtype,
            self.targets if self.multi else None,
            self.n_in,
        )

    def evaluate(self, model: Model, params) -> dict[str, float] | None:
        """NMSE and MSE of the one-step predictions of the validation split; with several
        target columns, per column (nmse.NAME, mse.NAME) and their means (nmse, mse, loss)."""
        return self._scored([(model, params)], self.n_train, self.n_val)

    def test(self, model: Model, params) -> dict[str, float] | None:
        """The figures of the test part (--test-fraction), as evaluate's."""
        return self._scored([(model, params)], self.n_train + self.n_val, self.n_test)

    def ensemble(self, members: list, part: str) -> dict[str, float] | None:
        """evaluate's (part 'validation') or test's figures of the mean of the members' one-step
        predictions (members: (model, params) pairs)."""
        if part == "validation":
            return self._scored(members, self.n_train, self.n_val)
        return self._scored(members, self.n_train + self.n_val, self.n_test)

    def _scored(self, members: list, start: int, n: int) -> dict[str, float] | None:
        """evaluate's figures for the n values from `start` (one-step predictions of the whole
        series from its start, the state carried through the parts before; several members'
        predictions averaged)."""
        if n == 0:
            return None
        pred = np.mean([self.one_step_predictions(m, p) for m, p in members], axis=0)
        pred = pred[start - 1 : start - 1 + n]
        if self.multi:
            truth = self.values[start : start + n][:, self.targets]
            return ser.column_metrics(pred, truth, self.table.target_names)
        truth = self.values[start : start + n]
        mse = float(np.mean((pred - truth) ** 2))
        return {"loss": ser.nmse(pred, truth), "mse": mse, "nmse": ser.nmse(pred, truth)}

    def meta(self) -> dict[str, Any]:
        if self.multi:
            cols = {"inputs": self.table.input_names, "targets": self.table.target_names}
            meta = {"normalizer": self.norm.as_dict(), "series_columns": cols}
        else:
            meta = {"normalizer": self.norm.as_dict(), "series_name": self.name}
        if self.diff:
            meta["difference"] = self.diff.as_dict()
        return meta

    def _test_note(self) -> str:
        return f" / test {self.n_test}" if self.n_test else ""

    def describe(self) -> str:
        note = f"; {self.table.note()}" if self.table.note() else ""
        if self.multi:
            assert isinstance(self.norm.mean, tuple) and isinstance(self.norm.std, tuple)
            means = ", ".join(f"{m:.4g}" for m in self.norm.mean)
            stds = ", ".join(f"{s:.4g}" for s in self.norm.std)
            scale = f"normalised per column ({self.name}) by mean {means}, std {stds}"
            if self.norm.window:
                scale = f"each window of {self.norm.window} rows normalised column by column by its own mean and "
                scale += "spread (--normalize window)"
            elif self.cfg.normalize == "none":
                scale = "not normalised (--normalize none)"
            return (
                f"series {self.source}: {len(self.values)} rows, inputs {', '.join(self.table.input_names)} at t -> "
                f"targets {', '.join(self.table.target_names)} at t+1, train {self.n_train} / validation "
                f"{self.n_val}{self._test_note()}, {self.diff_note}, then {scale}{note}"
            )
        scale = f"{self.diff_note}, then normalised by mean {self.norm.mean:.4g}, std {self.norm.std:.4g}"
        if self.norm.window:
            scale = f"{self.diff_note}, then each window of {self.norm.window} inputs normalised by its own mean and "
            scale += "spread (--normalize window)"
        elif self.cfg.normalize == "none":
            scale = f"{self.diff_note}, not normalised (--normalize none)"
        return (
            f"series {self.source} ({self.name}): {len(self.values)} values, train {self.n_train} / "
            f"validation {self.n_val}{self._test_note()}, {scale}{note}"
        )


# Spiking neurons as the generated tasks want them: steps of 10 ms (a 20 ms membrane, a 2 s
# adaptation), Bellec et al.'s triangle pseudo-derivative dampened by 0.3; for 'alif', half the
# neurons adapt (LSNN's mix), the others are plain LIF.
SPIKE_TASKS = {"cue-accumulation": spikes.cue_accumulation, "store-recall": spikes.store_recall}
DT_MS = 10.0


def spiking_options(cell: str, hidden: int) -> dict[str, Any]:
    if cell not in ("lif", "alif"):
        return {}
    opts: dict[str, Any] = dict(
        decay=math.exp(-DT_MS / 20.0), threshold=0.6, surrogate="triangle", slope=1 / 0.6, surrogate_scale=0.3
    )
    if cell == "alif":
        beta = np.zeros(hidden)
        beta[hidden // 2 :] = 0.1
        opts.update(adapt_decay=math.exp(-DT_MS / 2000.0), adapt_strength=beta)
    return opts


def spike_model(c: TrainConfig, channels: int, window: int) -> Model:
    """spikes (T, B, channels) -> recurrent layers [-> firing-rate regulariser toward 10 Hz, for
    spiking cells] -> 2 leaky readout units; cross-entropy over the last `window` steps."""
    levels: list = [
        Recurrent(c.cell, c.hidden, name=f"{c.cell}{i}", **spiking_options(c.cell, c.hidden)) for i in range(c.layers)
    ]
    if c.cell in ("lif", "alif"):
        levels.append(RateRegularizer(target=10.0 * DT_MS / 1000.0, strength=1.0, name="rate"))
    levels.append(Recurrent("leaky", 2, name="readout", decay=math.exp(-DT_MS / 20.0)))
    return Model(channels, levels, at="last", window=window)


class SpikeTask:
    """A generated spike-train task: fresh batches from the run's generator every step; a fixed
    validation set of 1,000 sequences (from the run's seed); the loss is the cross-entropy over
    the recall window, the accuracy the readout's mean over that window."""

    kind = "spikes"
    mode = "window"
    n_train = 0
    masked = False

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.make = SPIKE_TASKS[cfg.task]
        self.source = f"generated {cfg.task}"
        self.val = self.make(np.random.default_rng(10_000 + cfg.seed), 1000, dtype=cfg.dtype)
        self.T, _, self.channels = self.val.x.shape
        self.window = self.val.window

    @property
    def tokens_per_step(self) -> int:
        return self.cfg.batch_size * self.T

    def steps_per_epoch(self) -> int:
        return 1  # (every batch is new)

    def build_model(self) -> Model:
        return spike_model(self.cfg, self.channels, self.window)

    def batch(self, step: int, rng: np.random.Generator):
        d = self.make(rng, self.cfg.batch_size, dtype=self.cfg.dtype)
        return d.x, d.y, True

    def diagnostic_batch(self) -> tuple:
        """The first 4 validation sequences."""
        return self.val.x[:, :4], self.val.y[:4], None

    def evaluate(self, model: Model, params) -> dict[str, float]:
        """The validation loss and accuracy, and each spiking level's mean firing rate (Hz)."""
        x = self.val.x
        state0, _ = model.initial_state(params, x.shape[1])
        y, _, tapes = model.forward_levels(params, x, None, state0, keep=True)
        loss = model.loss_fn.value(y, self.val.y, None)
        votes = y[-self.window :].mean(axis=0)
        out = {"loss": loss, "accuracy": float(np.mean(votes.argmax(axis=1) == self.val.y))}
        for i, lv in enumerate(model.levels[:-1]):
            if lv.kind in ("lif", "alif"):  # its spikes are the next level's input (what its tape keeps first)
                nxt = tapes[i + 1]
                spikes = nxt[0] if model.levels[i + 1].recurrent else nxt
                out[f"rate_hz.{lv.name}"] = float(np.mean(spikes) * 1000.0 / DT_MS)
        return out

    def meta(self) -> dict[str, Any]:
        return {}

    def plot(self, model: Model, params, path: str) -> None:
        """The first validation sequence: input raster, the first recurrent level's spikes, the
        membrane and threshold of three neurons (the last of them adaptive for 'alif'), the
        readout (bptt.plots.plot_spikes)."""
        from ..plots import plot_spikes

        first = model.levels[0]
        if first.kind not in ("lif", "alif"):
            return
        cell = first.directions[0].cell
        p = first.sub(params)
        x = self.val.x[:, :1]
        xp = cell.project(p, x)
        state = cell.zero_state(1, x.dtype)
        v, theta, z = [], [], []
        for t in range(len(x)):
            state, out, cache = cell.step(p, state, xp[t])
            v.append(state.v[0])
            theta.append(state.v[0] - cache.x[0])  # A(t) = v(t) - (v(t) - A(t))
            z.append(out[0])
        y, _ = model.forward(params, x)
        pick = [0, 1, cell.hidden_size - 1]
        plot_spikes(
            x[:, 0],
            np.array(z),
            np.array(v)[:, pick],
            np.array(theta)[:, pick],
            y[:, 0],
            self.window,
            path,
            f"{self.cfg.task}: {self.cfg.cell} {self.cfg.hidden}, class {int(self.val.y[0])}",
            DT_MS,
        )

    def describe(self) -> str:
        return (
            f"{self.source}: sequences of {self.T} steps x {self.channels} input channels, two classes, decided "
            f"over the last {self.window} steps; validation: 1,000 fixed sequences (chance: 50%)"
        )


class LongTermTask:
    """A classic long-term dependency task (bptt.data.longterm): fresh sequences from the run's
    generator every step, a fixed validation set of 500 sequences (from the run's seed); the
    model reads tokens or floats through the recurrent levels and a dense readout. --seq-len is
    the sequence length T (copy-memory: its delay; temporal-xor: T // 3 triples; embedded-reber
    takes none). Evaluation: the loss, the task's no-memory baseline, and its own figures:
    adding: the mean square error (baseline 1/6); copy-memory: the recall accuracy;
    temporal-xor and letters: the loss on the determined steps and on the others; embedded-reber:
    the share of strings whose every next-symbol set is right; add-task: the loss beside the
    levels 0.66 / 0.52 / 0.45."""

    kind = "longterm"
    mode = "window"
    n_train = 0

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.source = f"generated {cfg.task}"
        self.val = self.make(np.random.default_rng(10_000 + cfg.seed), 500)
        self.T = self.val.x.shape[0]
        self.masked = self.val.mask is not None  # (right-padded sequences: embedded-reber)

    def make(self, rng: np.random.Generator, B: int) -> lt.Problem:
        return lt.make(self.cfg.task, rng, B, self.cfg.seq_len, self.cfg.dtype)

    @property
    def tokens_per_step(self) -> int:
        return self.cfg.batch_size * self.T

    def steps_per_epoch(self) -> int:
        return 1

    def build_model(self) -> Model:
        D, K, tokens = lt.SIZES[self.cfg.task]
        levels = [rnn(self.cfg.cell, self.cfg.hidden, self.cfg.layers), Dense(K)]
        return Model(D, levels, tokens=tokens, loss=self.val.loss, at=self.val.at)

    def _targets(self, p: lt.Problem) -> np.ndarray:
        return p.y.astype(self.cfg.dtype) if p.loss == "mse" else p.y

    def batch(self, step: int, rng: np.random.Generator):
        p = self.make(rng, self.cfg.batch_size)
        return p.x, self._targets(p), True, p.mask

    def diagnostic_batch(self) -> tuple:
        """The first 4 validation sequences (and their mask)."""
        p, t = self.val, self._targets(self.val)
        y = t[:, :4] if p.at == "every" else t[:4]
        mask = None if p.mask is None else p.mask[:, :4]
        if mask is not None:  # (trimmed to the longest of the four)
            T = int(mask.any(axis=1).nonzero()[0][-1]) + 1
            return p.x[:T, :4], y[:T], mask[:T]
        return p.x[:, :4], y, None

    def evaluate(self, model: Model, params) -> dict[str, float]:
        p = self.val
        y, _ = model.forward(params, p.x, mask=p.mask)
        t = self._targets(p)
        out = {"loss": model.loss_fn.value(y, t, p.mask)}
        if p.baseline > 0:  # (embedded-reber states none)
            out["baseline"] = float(p.baseline)
        out.update(lt.figures(self.cfg.task, p, y))
        return out

    def meta(self) -> dict[str, Any]:
        return {}

    def describe(self) -> str:
        shape = "tokens" if lt.SIZES[self.cfg.task][2] else "floats"
        return (
            f"{self.source}: sequences of {self.T} steps ({shape}), loss {self.val.loss} at {self.val.at} step(s); "
            "validation: 500 fixed sequences"
            + (f" (no-memory baseline {self.val.baseline:.4g})" if self.val.baseline > 0 else "")
        )


def make_task(cfg: TrainConfig, meta: dict[str, Any] | None = None):
    """The task for a config; `meta` (from a checkpoint) restores the vocabulary/normaliser."""
    meta = meta or {}
    if cfg.task in SPIKE_TASKS:
        return SpikeTask(cfg)
    if cfg.task in lt.TASKS:
        return LongTermTask(cfg)
    if cfg.task == "text":
        vocab = txt.vocab_from_meta(cfg.tokens, meta["vocab"]) if "vocab" in meta else None
        return TextTask(cfg, vocab)
    if "normalizer" not in meta:
        return SeriesTask(cfg)
    # a run's own normaliser, differencing (none where its record has none) and columns (several
    # columns: their orders and statistics go by position; one column: another of the run's own
    # file is refused, any column of another file is taken as the series continued)
    problem = series_record_problem(meta)
    if problem:
        raise BpttError(f"the run's record: {problem}")
    return SeriesTask(
        cfg,
        ser.Normalizer(**meta["normalizer"]),
        ser.Difference(**meta.get("difference", {})),
        meta.get("series_columns"),
        meta.get("series_name") if (meta.get("config") or {}).get("data") == cfg.data else None,
    )


def series_record_problem(meta: dict[str, Any]) -> str | None:
    """What is wrong with a series run's record, or None: it is one column's (numbers, no
    series_columns) or several columns' (lists of one per column, series_columns) throughout."""
    cols = meta.get("series_columns")
    used = ser.used_columns(cols) if cols else []
    k = len(used) if cols else None
    norm = ser.Normalizer(**meta["normalizer"])
    diff = ser.Difference(**meta.get("difference", {}))
    for key, got in (("normalizer", norm.columns), ("difference", diff.columns if diff else k)):
        if got != k:
            want = "numbers (one column)" if k is None else f"lists of {k} (its columns {', '.join(used)})"
            return f"meta.{key}: expected {want}, received {meta[key]}"
    return None
