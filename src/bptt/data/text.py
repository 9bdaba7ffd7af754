"""Text as tokens (characters or words): reading, vocabulary, encoding, splitting and stateful
streams.

Characters (Vocab). The vocabulary is the set of characters of the text a run is made on. Text
encoded later (`bptt evaluate` on another file, a sampling prime) may hold characters outside
it; the rule is to SKIP them: they are removed before encoding, so the model never sees them and
they carry no loss. Their count is returned so that it can be reported (bits per character are
then on in-vocabulary characters).

Words (WordVocab, `--tokens word`). The rule: each line is cut into runs of letters and digits
(apostrophes inside a word kept: don't, o'clock) and single other non-space characters
(punctuation), and ends with the token <eos> (PyTorch's word_language_model's convention); case
is kept. The vocabulary is the `limit` - 1 most frequent tokens of the TRAINING part (ties by
the token's text) and <unk>, which every other token becomes, in training and later alike: an
unknown word is predicted as <unk> and counts in the loss (as in the Penn Treebank's
benchmarks). Decoding joins tokens with spaces and turns <eos> into a line break.
"""

from __future__ import annotations

import functools
import os
import re
from collections import Counter
from dataclasses import dataclass
from importlib import resources

import numpy as np

from ..errors import BpttError
from ._io import read_bytes

BUNDLED = "botchan"  # the default corpus shipped inside the package (see data/botchan/SOURCE.md)


def bundled_text_path() -> str:
    return str(resources.files("bptt.data").joinpath("botchan/botchan_body.txt"))


def read_text(path: str | os.PathLike) -> str:
    """Read a UTF-8 text file, with a clear BpttError for a missing, empty or binary file."""
    path = os.fspath(path)
    raw = read_bytes(path)
    if not raw.strip():
        raise BpttError(f"data file {path!r}: expected text, received an empty file")
    if b"\x00" in raw[:65536]:
        raise BpttError(f"data file {path!r}: expected UTF-8 text, received binary data (NUL bytes)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise BpttError(
            f"data file {path!r}: expected UTF-8 text, received undecodable bytes at offset {e.start}"
        ) from None
    if not text.strip():
        raise BpttError(f"data file {path!r}: expected text, received only white space")
    return text.replace("\r\n", "\n")


def _codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


@dataclass(frozen=True)
class Vocab:
    """Sorted characters; id i <-> chars[i]."""

    chars: str

    @classmethod
    def from_text(cls, text: str) -> Vocab:
        if not text:
            raise BpttError("vocabulary: expected non-empty text, received an empty string")
        return cls("".join(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.chars)

    @property
    def _codes(self) -> np.ndarray:
        return _codepoints(self.chars)

    def encode(self, text: str) -> tuple[np.ndarray, int]:
        """(ids as int32, number of unknown characters skipped)."""
        cp = _codepoints(text)
        codes = self._codes
        idx = np.minimum(np.searchsorted(codes, cp), len(codes) - 1)
        known = codes[idx] == cp
        return idx[known].astype(np.int32), int((~known).sum())

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in np.asarray(ids).reshape(-1))

    def start(self) -> int:
        """The id a sample starts from without a prime: a newline where there is one."""
        return max(self.chars.find("\n"), 0)

    def meta(self) -> str:
        return self.chars


UNK, EOS = "<unk>", "<eos>"
UNITS = {"char": "characters", "word": "words"}  # a token kind, as counted in words
_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*|[^\s]")
MAX_WORDS = 1_000_000  # the largest word vocabulary a run may have (--vocab-size, a checkpoint's list)


def words(text: str) -> list[str]:
    """The word rule (module docstring): tokens of each line, then <eos>."""
    out: list[str] = []
    lines = text.split("\n")
    if lines and lines[-1] == "":  # a final line break ends the last line, not another one
        lines.pop()
    for line in lines:
        out.extend(_WORD.findall(line))
        out.append(EOS)
    return out


@dataclass(frozen=True)
class WordVocab:
    """Words; id i <-> words[i]; <unk> among them (every token outside the vocabulary)."""

    words: tuple[str, ...]

    @classmethod
    def from_tokens(cls, tokens: list[str], limit: int) -> WordVocab:
        """The limit - 1 most frequent tokens (ties by their text) and <unk>."""
        counts = Counter(t for t in tokens if t != UNK)
        top = sorted(counts, key=lambda t: (-counts[t], t))[: max(limit - 1, 1)]
        return cls(tuple(sorted([*top, UNK])))

    def __len__(self) -> int:
        return len(self.words)

    @functools.cached_property
    def _ids(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.words)}

    def encode_tokens(self, tokens: list[str]) -> tuple[np.ndarray, int]:
        """(ids as int32, number of tokens that became <unk>)."""
        ids, unk = self._ids, self._ids[UNK]
        out = np.fromiter((ids.get(t, unk) for t in tokens), np.int32, len(tokens))
        known = sum(1 for t in tokens if t in ids and t != UNK)
        return out, len(tokens) - known

    def encode(self, text: str) -> tuple[np.ndarray, int]:
        """(ids of the text's words by the word rule, number that became <unk>)."""
        return self.encode_tokens(words(text))

    def decode(self, ids) -> str:
        parts: list[str] = []
        for i in np.asarray(ids).reshape(-1):
            w = self.words[i]
            if w == EOS:
                parts.append("\n")
            else:
                if parts and parts[-1] != "\n":
                    parts.append(" ")
                parts.append(w)
        return "".join(parts)

    def start(self) -> int:
        """The id a sample starts from without a prime: <eos> (a line's end), else <unk>."""
        return self._ids.get(EOS, self._ids[UNK])

    def meta(self) -> list[str]:
        return list(self.words)


def vocab_from_meta(tokens: str, vocab) -> Vocab | WordVocab:
    """A run's vocabulary from its record (a checked string of characters, or list of words)."""
    return WordVocab(tuple(vocab)) if tokens == "word" else Vocab(vocab)


def split_sizes(n: int, val_fraction: float, test_fraction: float = 0.0) -> tuple[int, int, int]:
    """(train, validation, test) sizes of n items in order: the test part is the very end
    (test_fraction of n), validation the val_fraction of n before it, each rounded."""
    if not (0.0 <= val_fraction and 0.0 <= test_fraction and val_fraction + test_fraction < 1.0):
        raise BpttError(
            f"val_fraction: expected a number in [0, 1) (with the test fraction, below 1), received {val_fraction!r}"
        )
    n_val, n_test = int(round(n * val_fraction)), int(round(n * test_fraction))
    return n - n_val - n_test, n_val, n_test


def split(ids: np.ndarray, val_fraction: float, test_fraction: float = 0.0) -> tuple[np.ndarray, ...]:
    """(train, validation, test) parts of ids in order, sized by split_sizes."""
    a, v, _ = split_sizes(len(ids), val_fraction, test_fraction)
    return ids[:a], ids[a : a + v], ids[a + v :]


def batchify(ids: np.ndarray, batch: int) -> np.ndarray:
    """B contiguous streams, (N, B): stream b is ids[b*N : (b+1)*N] (the tail that does not fill
    a row is dropped), so that a state carried from one segment to the next continues the same
    text in every column (torch's word_language_model `batchify`)."""
    n = len(ids) // batch
    if n < 2:
        raise BpttError(f"batch size: expected at most {len(ids) // 2} streams for {len(ids)} tokens, received {batch}")
    return np.ascontiguousarray(ids[: n * batch].reshape(batch, n).T)


def segments(streams: np.ndarray, seq_len: int) -> list[tuple[int, int]]:
    """(start, length) of consecutive segments of inputs; targets are shifted by one."""
    n = len(streams) - 1  # the last token has no target
    return [(i, min(seq_len, n - i)) for i in range(0, n, seq_len)]


def unigram_entropy(ids: np.ndarray, vocab_size: int) -> float:
    """Entropy in nats of the character frequencies of `ids`: the loss of the best model that
    ignores context, the baseline a sequence model must beat."""
    counts = np.bincount(np.asarray(ids).ravel(), minlength=vocab_size)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())
