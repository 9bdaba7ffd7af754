"""The classic long-term dependency tasks, as seeded generators: the problems on which BPTT's
vanishing and exploding gradients were found and on which LSTM was first judged.

Every generator takes a Generator (all randomness comes from it) and a batch size, and returns a
`Problem`: time-major inputs (float (T, B, D), or integer tokens (T, B)), the targets, the loss
that judges them (bptt.Model's `loss` and `at`), the mask of real steps where sequences differ in
length, and the loss a model without memory reaches (`baseline`, in the loss's own units:
squared-error losses are the model's 1/2 sum of squares; `mse` below is the plain mean square).

- `adding`: two marked numbers among T values of U[0, 1]; the target at the end is their sum.
  Predicting 1 always gives a mean square error of Var(u1 + u2) = 1/6 ~ 0.167.
- `copy_memory`: 10 symbols of 8, a delay, then recall them (Hochreiter & Schmidhuber 1997;
  Arjovsky et al. 2016's form): T + 20 steps; without memory, 10 ln 8 / (T + 20) nats per step.
- `temporal_xor`: a stream of triples (a, b, a XOR b) (Elman 1990); only every third bit is
  predictable (loss ln 2 on the others; without memory ln 2 on all).
- `letters`: Elman's consonant-vowel stream (b -> ba, d -> dii, g -> guuu): the consonants are
  unpredictable, the vowels (and the next consonant's coming) are; without memory (the current
  letter alone) 0.732 nats per step, with it ln 3 / 3 = 0.366.
- `embedded_reber`: strings of the embedded Reber grammar (Hochreiter & Schmidhuber 1997); the
  targets are the sets of allowed next symbols (multi-hot, squared error); solving it needs the
  second symbol remembered to the second-last.
- `add_task`: x(t) fair coin flips, y(t) ~ Bernoulli(0.5 + 0.5 x(t - t1) - 0.25 x(t - t2))
  (Marschall et al.'s Add task, after Pitis 2016): cross-entropy 0.66 nats with no dependency
  learned, 0.52 with the first, 0.45 with both (`add_task_levels`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..errors import BpttError


class Problem(NamedTuple):
    x: np.ndarray  # (T, B, D) floats or (T, B) tokens
    y: np.ndarray  # targets for `loss` at `at`
    loss: str  # "ce" or "mse"
    at: str  # "every" or "last"
    baseline: float  # the loss without memory (module docstring)
    mask: np.ndarray | None = None  # (T, B) real steps of right-padded sequences
    scored: np.ndarray | None = None  # (T, B) the steps whose prediction is determined (where told)


def _positive(name: str, n: Any, least: int = 1) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < least:
        raise BpttError(f"{name}: expected a whole number >= {least}, received {n!r}")
    return int(n)


def adding(rng: np.random.Generator, batch: int, length: int = 100, dtype: Any = np.float64) -> Problem:
    """Channels [value, marker]: one marked step in each half of the sequence (Hochreiter &
    Schmidhuber 1997's form as in Arjovsky et al. 2016); y (B, 1) = the sum of the two marked
    values, a squared error at the last step."""
    B, T = _positive("batch", batch), _positive("length", length, 2)
    x = np.zeros((T, B, 2), dtype)
    x[:, :, 0] = rng.random((T, B))
    half = T // 2
    first = rng.integers(0, half, B)
    second = rng.integers(half, T, B)
    cols = np.arange(B)
    x[first, cols, 1] = 1.0
    x[second, cols, 1] = 1.0
    y = (x[first, cols, 0] + x[second, cols, 0])[:, None].astype(dtype)
    return Problem(x, y, "mse", "last", 0.5 / 6.0)  # 1/2 Var(u1 + u2): the model's loss is 1/2 the square


def copy_memory(rng: np.random.Generator, batch: int, delay: int = 100, symbols: int = 8, recall: int = 10) -> Problem:
    """Tokens 0 .. symbols-1 are the data, `symbols` the blank, `symbols + 1` the go marker:
    `recall` data symbols, `delay - 1` blanks, the marker, `recall` blanks; the target is blank
    everywhere except the last `recall` steps, which must repeat the data. T = delay + 2 recall.
    Without memory: recall ln(symbols) / T nats per step."""
    B, T0 = _positive("batch", batch), _positive("delay", delay)
    S, R = _positive("symbols", symbols, 2), _positive("recall", recall)
    T = T0 + 2 * R
    data = rng.integers(0, S, (R, B))
    x = np.full((T, B), S, np.int64)
    x[:R] = data
    x[R + T0 - 1] = S + 1
    y = np.full((T, B), S, np.int64)
    y[-R:] = data
    return Problem(x, y, "ce", "every", R * np.log(S) / T)


def temporal_xor(rng: np.random.Generator, batch: int, triples: int = 100) -> Problem:
    """Elman's XOR stream: bits a, b, a XOR b, ... as tokens 0/1; the target at t is the bit at
    t + 1. `scored`: the steps whose target is an XOR bit (after its a and b were seen)."""
    B, n = _positive("batch", batch), _positive("triples", triples)
    ab = rng.integers(0, 2, (n + 1, 2, B))
    stream = np.concatenate([ab, (ab[:, :1] ^ ab[:, 1:])], axis=1).reshape(3 * (n + 1), B)
    x, y = stream[:-1][: 3 * n], stream[1:][: 3 * n]
    scored = np.zeros(x.shape, bool)
    scored[1::3] = True  # the input at t is b, the target at t the XOR bit
    # without memory every next bit is a coin flip (ln 2); with it the XOR bits cost nothing (2/3 ln 2)
    return Problem(x.astype(np.int64), y.astype(np.int64), "ce", "every", np.log(2), scored=scored)


LETTERS = "bdgaiu"
_WORDS = {0: [0, 3], 1: [1, 4, 4], 2: [2, 5, 5, 5]}  # b -> ba, d -> dii, g -> guuu


def letters(rng: np.random.Generator, batch: int, length: int = 300) -> Problem:
    """Elman's letter stream: consonants b, d, g drawn at random, each followed by its vowels
    (a; ii; uuu); tokens index LETTERS; the target at t is the letter at t + 1. `scored`: the
    steps whose next letter is determined (a vowel, or the consonant after the last vowel: not
    which one, so only vowels are scored)."""
    B, T = _positive("batch", batch), _positive("length", length, 2)
    out = np.empty((T + 1, B), np.int64)
    for b in range(B):
        seq: list[int] = []
        while len(seq) < T + 1:
            seq += _WORDS[int(rng.integers(0, 3))]
        out[:, b] = seq[: T + 1]
    x, y = out[:-1], out[1:]
    scored = y >= 3  # the next letter is a vowel: known from the consonant and the vowels so far
    return Problem(x, y, "ce", "every", LETTERS_NO_MEMORY, scored=scored)


def _letters_no_memory() -> float:
    """The next letter's entropy given the current letter alone (nats per step): after b, d, g
    the vowel is known; after a, one of three consonants; after i (two per word) i or a
    consonant half the time each; after u (three per word) u two times in three. With memory
    only the consonants are uncertain: ln 3 / 3 = 0.366."""

    def h(p):
        return -sum(q * np.log(q) for q in p if q > 0)

    after = {"a": h([1 / 3] * 3), "i": h([1 / 2] + [1 / 6] * 3), "u": h([2 / 3] + [1 / 9] * 3)}
    counts = {"a": 1, "i": 2, "u": 3}  # per three words (9 letters, 3 of them consonants: entropy 0 after them)
    return float(sum(counts[v] * after[v] for v in counts) / 9)


LETTERS_NO_MEMORY = _letters_no_memory()


REBER = "BTSXPVE"
# the Reber grammar's graph: state -> [(symbol, next state)]; state 5 is the end
_REBER = {0: [("T", 1), ("P", 2)], 1: [("S", 1), ("X", 3)], 2: [("T", 2), ("V", 4)], 3: [("X", 2), ("S", 5)],
          4: [("P", 3), ("V", 5)]}  # fmt: skip


def _reber(rng: np.random.Generator) -> list[tuple[str, set[str]]]:
    """One Reber string between its B and E: (symbol, the symbols allowed after it)."""
    out, s = [], 0
    while s != 5:
        options = _REBER[s]
        sym, s = options[int(rng.integers(0, len(options)))]
        out.append((sym, {o for o, _ in _REBER[s]} if s != 5 else {"E"}))
    return out


def embedded_reber(rng: np.random.Generator, batch: int) -> Problem:
    """Strings B T <reber> T E or B P <reber> P E (the embedded Reber grammar), tokens index
    REBER, right-padded with a mask; targets (T, B, 7) multi-hot: the symbols allowed next (the
    second-last step's only allowed symbol is the one from step 2: long-term). A step's set is
    predicted right when the outputs above 0.5 are exactly the allowed ones (`reber_correct`).
    Baseline: the squared error of the best memoryless prediction is not given (0.0)."""
    B = _positive("batch", batch)
    strings = []
    for _ in range(B):
        branch = "T" if rng.integers(0, 2) == 0 else "P"
        seq = [("B", {"T", "P"}), (branch, {"B"}), ("B", {"T", "P"}), *_reber(rng), ("E", {branch}), (branch, {"E"})]
        strings.append(seq)
    T = max(len(s) for s in strings)
    x = np.zeros((T, B), np.int64)
    y = np.zeros((T, B, len(REBER)), np.float64)
    mask = np.zeros((T, B), bool)
    for b, seq in enumerate(strings):
        for t, (sym, nxt) in enumerate(seq):
            x[t, b] = REBER.index(sym)
            y[t, b, [REBER.index(s) for s in nxt]] = 1.0
            mask[t, b] = True
    return Problem(x, y, "mse", "every", 0.0, mask=mask)


def reber_correct(outputs: np.ndarray, problem: Problem) -> np.ndarray:
    """(B,) whether every step of each string had exactly its allowed next symbols above 0.5."""
    hit = ((outputs > 0.5) == (problem.y > 0.5)).all(axis=-1)  # (T, B)
    return (hit | ~problem.mask).all(axis=0)


def figures(name: str, p: Problem, y: np.ndarray) -> dict[str, float]:
    """A task's own figures for the outputs y of a model on problem p (the task `name`):
    adding: the mean square error of the last step; copy-memory: the recall accuracy;
    temporal-xor and letters: the cross-entropy (nats) on the determined steps and on the
    others; embedded-reber: the share of strings whose every next-symbol set is right."""
    if name == "adding":
        return {"mse": float(np.mean((y[-1, :, 0] - p.y[:, 0]) ** 2))}
    if name == "copy-memory":
        R = 10
        return {"accuracy": float(np.mean(y[-R:].argmax(axis=-1) == p.y[-R:]))}
    if name in ("temporal-xor", "letters"):
        top = y.max(-1, keepdims=True)
        logp = y - top - np.log(np.exp(y - top).sum(-1, keepdims=True))
        nll = -np.take_along_axis(logp, p.y[..., None], axis=-1)[..., 0]
        return {"loss_determined": float(nll[p.scored].mean()), "loss_other": float(nll[~p.scored].mean())}
    if name == "embedded-reber":
        return {"accuracy": float(np.mean(reber_correct(y, p)))}
    return {}


def add_task(rng: np.random.Generator, batch: int, length: int = 1000, t1: int = 5, t2: int = 9) -> Problem:
    """x(t) in {0, 1} (tokens), y(t) ~ Bernoulli(0.5 + 0.5 x(t - t1) - 0.25 x(t - t2)) as class
    0/1 (x before the start: fair coins too, so every step has both dependencies)."""
    B, T = _positive("batch", batch), _positive("length", length)
    a, b = _positive("t1", t1), _positive("t2", t2)
    if b <= a:
        raise BpttError(f"t2: expected a lag longer than t1 = {a}, received {t2!r}")
    bits = rng.integers(0, 2, (T + b, B))
    x = bits[b:]
    p = 0.5 + 0.5 * bits[b - a : b - a + T] - 0.25 * bits[:T]
    y = (rng.random((T, B)) < p).astype(np.int64)
    return Problem(x.astype(np.int64), y, "ce", "every", add_task_levels()[0])


def _h(p: float) -> float:
    return 0.0 if p in (0.0, 1.0) else float(-p * np.log(p) - (1 - p) * np.log(1 - p))


def add_task_levels(length: int | None = None, t1: int = 5, t2: int = 9) -> tuple[float, float, float]:
    """The Add task's expected cross-entropy (nats per step) knowing no dependency, x(t - t1),
    or both: (0.662, 0.519, 0.454) on an endless stream; over a sequence of `length` steps
    from its start the first t1 steps cannot know x(t - t1) and the first t2 not x(t - t2)
    (they fall before the input), which raises the last two (T = 64: 0.530 and 0.475)."""
    none = _h(0.625)
    first = 0.5 * _h(0.375) + 0.5 * _h(0.875)
    both = 0.25 * (_h(0.5) + _h(1.0) + _h(0.25) + _h(0.75))
    if length is None:
        return none, first, both
    T = length
    a, b = min(t1, T), min(t2, T)
    return none, (a * none + (T - a) * first) / T, (a * none + (b - a) * first + (T - b) * both) / T


def make(name: str, rng: np.random.Generator, batch: int, length: int, dtype: Any = np.float32) -> Problem:
    """Task `name` of TASKS with its length parameter from one number: adding, letters and
    add-task T = length; copy-memory the delay; temporal-xor length // 3 triples;
    embedded-reber none."""
    if name == "adding":
        return adding(rng, batch, length, dtype=dtype)
    if name == "copy-memory":
        return copy_memory(rng, batch, delay=length)
    if name == "temporal-xor":
        return temporal_xor(rng, batch, triples=max(1, length // 3))
    if name == "letters":
        return letters(rng, batch, length)
    if name == "add-task":
        return add_task(rng, batch, length)
    return embedded_reber(rng, batch)


# (inputs, outputs, token inputs) of a model for each task
SIZES = {
    "adding": (2, 1, False),
    "copy-memory": (10, 9, True),
    "temporal-xor": (2, 2, True),
    "letters": (6, 6, True),
    "embedded-reber": (7, 7, True),
    "add-task": (2, 2, True),
}

TASKS = {
    "adding": adding,
    "copy-memory": copy_memory,
    "temporal-xor": temporal_xor,
    "letters": letters,
    "embedded-reber": embedded_reber,
    "add-task": add_task,
}
