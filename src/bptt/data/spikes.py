"""Spike trains: seeded generators of the tasks spiking networks are judged on, and encoders
from values to spikes. Every array is time-major, (T, B, channels) of 0/1, in the dtype asked;
randomness comes only from the Generator passed in.

Time runs in steps; the rates below are probabilities per step (a step of 10 ms makes 0.4 a
40 Hz cue and 0.1 a 10 Hz background, the rates of Bellec et al. 2020 at their 1 ms).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..errors import BpttError


class SpikeTask(NamedTuple):
    x: np.ndarray  # (T, B, channels) spikes
    y: np.ndarray  # (B,) class per sequence
    window: int  # the last `window` steps carry the decision (a loss at='last' over them)


def _positive(name: str, n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise BpttError(f"{name}: expected a positive whole number, received {n!r}")
    return int(n)


def _rate(name: str, p: float) -> float:
    if not (isinstance(p, (int, float)) and 0 <= p <= 1):
        raise BpttError(f"{name}: expected a probability per step in [0, 1], received {p!r}")
    return float(p)


def cue_accumulation(
    rng: np.random.Generator,
    batch: int,
    cues: int = 7,
    cue_steps: int = 10,
    gap_steps: int = 5,
    delay: int = 50,
    recall: int = 15,
    channels: int = 10,
    cue_rate: float = 0.4,
    noise_rate: float = 0.1,
    dtype: Any = np.float32,
) -> SpikeTask:
    """Evidence accumulation (Bellec et al. 2020, after Morcos & Harvey 2016): `cues` cues (an
    odd number), each on the left or the right at random, each `cue_steps` of Poisson spikes at
    `cue_rate` on the `channels` input channels of its side, `gap_steps` apart; then `delay`
    quiet steps; then the recall cue (`recall` steps on the recall channels), during which the
    network must say on which side most cues were. Channels: [left | right | recall | noise]
    (noise: `noise_rate` throughout). T = cues (cue_steps + gap_steps) + delay + recall; y = 1
    where the right side had the majority. Remembering the count across the delay needs a memory
    longer than a membrane's: adaptive neurons have it, plain LIF do not."""
    B = _positive("batch", batch)
    n = _positive("cues", cues)
    if n % 2 == 0:
        raise BpttError(f"cues: expected an odd number (so that one side has the majority), received {cues}")
    cs, gs = _positive("cue_steps", cue_steps), int(gap_steps)
    dl, rc, C = int(delay), _positive("recall", recall), _positive("channels", channels)
    if gs < 0 or dl < 0:
        raise BpttError(f"gap_steps, delay: expected whole numbers >= 0, received {gap_steps!r}, {delay!r}")
    pc, pn = _rate("cue_rate", cue_rate), _rate("noise_rate", noise_rate)
    T = n * (cs + gs) + dl + rc
    sides = rng.integers(0, 2, (n, B))  # 0 left, 1 right
    p = np.zeros((T, B, 4 * C))
    p[:, :, 3 * C :] = pn
    for i in range(n):
        t0 = i * (cs + gs)
        for side in (0, 1):
            on = sides[i] == side
            p[t0 : t0 + cs, on, side * C : (side + 1) * C] = pc
    p[T - rc :, :, 2 * C : 3 * C] = pc
    x = (rng.random(p.shape) < p).astype(dtype)
    y = (sides.sum(axis=0) > n // 2).astype(np.int64)
    return SpikeTask(x, y, rc)


def store_recall(
    rng: np.random.Generator,
    batch: int,
    steps: int = 100,
    bit_steps: int = 5,
    recall: int = 10,
    channels: int = 5,
    rate: float = 0.5,
    noise_rate: float = 0.05,
    dtype: Any = np.float32,
) -> SpikeTask:
    """Delayed store-recall: a stream of random bits, one every `bit_steps` steps (each on the
    `channels` channels of its value, 0 or 1, at `rate`); once, at a random bit in the first
    half, the store channels fire with it. After `steps` steps the recall channels fire for
    `recall` steps: the network must give the bit that was stored, not the last one seen.
    Channels: [bit 0 | bit 1 | store | recall | noise]; T = steps + recall."""
    B = _positive("batch", batch)
    S, bs, rc, C = (
        _positive(k, v)
        for k, v in (("steps", steps), ("bit_steps", bit_steps), ("recall", recall), ("channels", channels))
    )
    if S < 2 * bs:
        raise BpttError(f"steps: expected at least two bits' steps ({2 * bs}), received {S}")
    pr, pn = _rate("rate", rate), _rate("noise_rate", noise_rate)
    bits = S // bs
    values = rng.integers(0, 2, (bits, B))
    stored = rng.integers(0, max(1, bits // 2), B)
    T = S + rc
    p = np.full((T, B, 5 * C), 0.0)
    p[:, :, 4 * C :] = pn
    for i in range(bits):
        t0 = i * bs
        for v in (0, 1):
            p[t0 : t0 + bs, values[i] == v, v * C : (v + 1) * C] = pr
        here = stored == i
        p[t0 : t0 + bs, here, 2 * C : 3 * C] = pr
    p[S:, :, 3 * C : 4 * C] = pr
    x = (rng.random(p.shape) < p).astype(dtype)
    y = values[stored, np.arange(B)].astype(np.int64)
    return SpikeTask(x, y, rc)


def rate_encode(
    values: np.ndarray, rng: np.random.Generator, steps: int = 1, gain: float = 1.0, dtype: Any = None
) -> np.ndarray:
    """Rate (Bernoulli, the discrete Poisson) code: each value v in [0, 1] of a (T, B, D) array
    becomes `steps` steps of spikes with probability gain v per step: (T steps, B, D)."""
    v = np.asarray(values)
    if v.ndim != 3:
        raise BpttError(f"values: expected a (T, B, D) array, received shape {v.shape}")
    if not np.isfinite(v).all() or v.min() < 0 or v.max() > 1:
        raise BpttError(f"values: expected values in [0, 1], received values in [{v.min()}, {v.max()}]")
    k = _positive("steps", steps)
    g = _rate("gain", gain)
    p = np.repeat(v, k, axis=0) * g
    return (rng.random(p.shape) < p).astype(dtype or (v.dtype if v.dtype.kind == "f" else np.float32))


def latency_encode(values: np.ndarray, steps: int, dtype: Any = None) -> np.ndarray:
    """Latency (time-to-first-spike) code: each value v in [0, 1] of a (T, B, D) array becomes
    one spike within its `steps` steps, at step round((1 - v) (steps - 1)) (the larger the
    value, the earlier); v = 0 gives no spike. (T steps, B, D)."""
    v = np.asarray(values)
    if v.ndim != 3:
        raise BpttError(f"values: expected a (T, B, D) array, received shape {v.shape}")
    if not np.isfinite(v).all() or v.min() < 0 or v.max() > 1:
        raise BpttError(f"values: expected values in [0, 1], received values in [{v.min()}, {v.max()}]")
    k = _positive("steps", steps)
    T, B, D = v.shape
    out = np.zeros((T, k, B, D), dtype or (v.dtype if v.dtype.kind == "f" else np.float32))
    at = np.rint((1 - v) * (k - 1)).astype(np.int64)  # (T, B, D)
    t, b, d = np.nonzero(v > 0)
    out[t, at[t, b, d], b, d] = 1
    return out.reshape(T * k, B, D)
