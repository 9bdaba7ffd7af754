"""What the trainer trains on: character-level text, or a univariate time series.

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

from ..data import series as ser
from ..data import text as txt
from ..errors import BpttError
from ..layers import Dense, Embedding, rnn
from ..model import Model
from .config import TrainConfig


def build_model(cfg: TrainConfig, vocab_size: int | None = None) -> Model:
    """text: tokens -> [Embedding] -> recurrent layers -> Dense(V), cross-entropy at every step;
    series: value -> recurrent layers -> Dense(1), squared error at every step."""
    rec = rnn(cfg.cell, cfg.hidden, cfg.layers)
    if cfg.task == "text":
        levels = ([Embedding(cfg.embed)] if cfg.embed else []) + [rec, Dense(vocab_size)]
        return Model(vocab_size, levels, tokens=True, loss="ce")
    return Model(1, [rec, Dense(1)], loss="mse")


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


class _Batches:
    """What both tasks share: B streams cut into consecutive segments, or random windows."""

    cfg: TrainConfig
    mode: str
    n_train: int
    streams: np.ndarray
    segs: list

    @property
    def tokens_per_step(self) -> int:
        return self.cfg.batch_size * self.cfg.seq_len

    def steps_per_epoch(self) -> int:
        if self.mode == "stream":
            return len(self.segs)
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
        self.vocab = vocab or txt.Vocab.from_text(text)
        ids, self.unknown = self.vocab.encode(text)
        train, val = txt.split(ids, cfg.val_fraction)
        self.n_train, self.n_val = len(train), len(val)
        if len(train) < cfg.seq_len + 1:
            raise BpttError(
                f"seq_len: expected fewer than {len(train)} steps for {len(train)} training characters, received {cfg.seq_len}"
            )
        self.train_ids = train
        self.unigram = txt.unigram_entropy(train, len(self.vocab))
        self.mode = cfg.batching_mode
        if self.mode == "stream":
            self.streams = txt.batchify(train, cfg.batch_size)
            self.segs = txt.segments(self.streams, cfg.seq_len)
        self.val_streams = None
        if len(val) >= 2:
            b = max(1, min(cfg.batch_size, len(val) // (2 * cfg.seq_len)))
            self.val_streams = txt.batchify(val, b)

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

    def evaluate(self, model: Model, params) -> dict[str, float] | None:
        if self.val_streams is None:
            return None
        loss, _ = stream_loss(model, params, self.val_streams, self.cfg.seq_len)
        return text_metrics(loss)

    def meta(self) -> dict[str, Any]:
        return {"vocab": self.vocab.chars}

    def describe(self) -> str:
        return (
            f"text {self.source}: {self.n_train + self.n_val:,} characters, vocabulary {len(self.vocab)}, "
            f"train {self.n_train:,} / validation {self.n_val:,}"
            + (f", {self.unknown} unknown skipped" if self.unknown else "")
            + f"; unigram entropy {self.unigram:.4f} nats/char (the no-context baseline)"
        )


def text_metrics(loss: float) -> dict[str, float]:
    return {"loss": loss, "bpc": loss / math.log(2.0), "ppl": math.exp(min(loss, 700.0))}


class SeriesTask(_Batches):
    kind = "series"

    def __init__(self, cfg: TrainConfig, normalizer: ser.Normalizer | None = None) -> None:
        self.cfg = cfg
        if not cfg.data:
            raise BpttError("data: expected a series file for --task series, received none")
        self.path = self.source = cfg.data
        column = cfg.column if cfg.column else None
        self.values, self.name = ser.read_series(self.path, column)
        n_val = int(round(len(self.values) * cfg.val_fraction))
        self.n_train, self.n_val = len(self.values) - n_val, n_val
        self.norm = normalizer or ser.Normalizer.fit(self.values[: self.n_train])
        self.z = self.norm(self.values)
        self.z_train = self.z[: self.n_train]
        if self.n_train < 3:
            raise BpttError(f"val_fraction: expected at least 3 training values, received {self.n_train}")
        self.mode = cfg.batching_mode
        if self.mode == "stream":
            self.streams = txt.batchify(self.z_train, cfg.batch_size)[..., None].astype(self.dtype)
            self.segs = txt.segments(self.streams, cfg.seq_len)
        elif cfg.seq_len > self.n_train - 2:
            raise BpttError(
                f"seq_len: expected at most {self.n_train - 2} for {self.n_train} training values, received {cfg.seq_len}"
            )

    @property
    def dtype(self):
        return np.dtype(self.cfg.dtype)

    def build_model(self) -> Model:
        return build_model(self.cfg)

    def batch(self, step: int, rng: np.random.Generator):
        if self.mode == "stream":
            return self._stream_batch(step)
        x, y = ser.random_windows(self.z_train, self.cfg.batch_size, self.cfg.seq_len, rng, self.dtype)
        return x, y, True

    def one_step_predictions(self, model: Model, params, z: np.ndarray) -> np.ndarray:
        """Predictions of z[1:] from z[:-1], one sequence from the initial state, in original units."""
        x = np.asarray(z[:-1], self.dtype)[:, None, None]
        y, _ = model.forward(params, x)
        return self.norm.inverse(y[:, 0, 0].astype(np.float64))

    def evaluate(self, model: Model, params) -> dict[str, float] | None:
        if self.n_val == 0:
            return None
        pred = self.one_step_predictions(model, params, self.z)[self.n_train - 1 :]
        truth = self.values[self.n_train :]
        mse = float(np.mean((pred - truth) ** 2))
        return {"loss": ser.nmse(pred, truth), "mse": mse, "nmse": ser.nmse(pred, truth)}

    def meta(self) -> dict[str, Any]:
        return {"normalizer": {"mean": self.norm.mean, "std": self.norm.std}, "series_name": self.name}

    def describe(self) -> str:
        return (
            f"series {self.source} ({self.name}): {len(self.values)} values, train {self.n_train} / "
            f"validation {self.n_val}, normalised by mean {self.norm.mean:.4g}, std {self.norm.std:.4g}"
        )


def make_task(cfg: TrainConfig, meta: dict[str, Any] | None = None):
    """The task for a config; `meta` (from a checkpoint) restores the vocabulary/normaliser."""
    meta = meta or {}
    if cfg.task == "text":
        vocab = txt.Vocab(meta["vocab"]) if "vocab" in meta else None
        return TextTask(cfg, vocab)
    norm = ser.Normalizer(**meta["normalizer"]) if "normalizer" in meta else None
    return SeriesTask(cfg, norm)
