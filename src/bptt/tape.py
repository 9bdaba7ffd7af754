"""The tape: what a forward scan keeps for its backward scan, and how a tape is cut and joined.

A model's forward pass keeps, per level, a "part": for a recurrent level (x, [Tape per
direction]), for a feed-forward one (x, y), nested in lists and tuples. Algorithms that reorder
steps (TBPTT's overlapping windows, memory-budgeted BPTT) cut the last steps off a part (`tail`),
join consecutive segments' parts (`join`) and keep a history of the last steps (`last_steps`);
none of them reaches into a tape's fields. `layout_diff` compares a part with the layout a
forward run gives (a restored checkpoint's history is checked with it).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np


class Tape(NamedTuple):
    """One direction of one recurrent level over a segment."""

    caches: Any  # one cache per step, in time order (None on fully masked steps); a list or list-like
    mask: np.ndarray | None  # (T, B) bool, or None
    reverse: bool
    aux: Any = None  # what a faster implementation's whole scan keeps for its backward scan (bptt.ops)


def join(parts: list, B: int) -> Any:
    """The parts of consecutive segments (of B sequences) as one part over all their steps."""
    a = parts[0]
    if a is None:
        return None
    if isinstance(a, Tape):
        masks = [p.mask for p in parts]
        if all(m is None for m in masks):
            mask = None
        else:
            mask = np.concatenate([np.ones((len(p.caches), B), bool) if p.mask is None else p.mask for p in parts])
        return Tape([c for p in parts for c in p.caches], mask, a.reverse)
    if isinstance(a, np.ndarray):
        return np.concatenate(parts, axis=0)
    if isinstance(a, tuple):  # (x, [tapes]) of a recurrent level, (x, y) of a dense one
        return tuple(join([p[i] for p in parts], B) for i in range(len(a)))
    if isinstance(a, list):
        return [join([p[i] for p in parts], B) for i in range(len(a))]
    raise TypeError(f"cannot join tape part {type(a).__name__}")  # pragma: no cover


def tail(part: Any, n: int) -> Any:
    """The last n steps of a tape part (without a faster implementation's buffers)."""
    if part is None:
        return None
    if isinstance(part, Tape):
        return Tape(part.caches[-n:], None if part.mask is None else part.mask[-n:], part.reverse)
    if isinstance(part, np.ndarray):
        return part[-n:]
    if isinstance(part, tuple):
        return tuple(tail(p, n) for p in part)
    if isinstance(part, list):
        return [tail(p, n) for p in part]
    raise TypeError(f"cannot cut tape part {type(part).__name__}")  # pragma: no cover


def is_cut(c: Any, B: int) -> bool:
    return c is None or (isinstance(c, np.ndarray) and c.shape == (B,) and c.dtype == bool)


def what(x: Any) -> str:
    if isinstance(x, np.ndarray):
        return f"a {x.dtype} array of shape {x.shape}"
    return repr(x)[:60]


def layout_diff(ref: Any, got: Any, path: str, ids: int) -> str | None:
    """Where `got` differs from `ref` in classes, lengths, shapes or dtypes (None if nowhere);
    integer arrays (token ids) may be of any integer dtype, with values in [0, ids)."""
    if isinstance(ref, np.ndarray):
        if isinstance(got, np.ndarray) and got.shape == ref.shape:
            if ref.dtype.kind in "iu" and got.dtype.kind in "iu":
                if got.size and (got.min() < 0 or got.max() >= ids):
                    return f"{path}: expected token ids in [0, {ids}), received values from {got.min()} to {got.max()}"
                return None
            if got.dtype == ref.dtype:
                if got.dtype.kind == "f" and not np.isfinite(got).all():
                    return f"{path}: expected finite values, received NaN or inf"
                return None
        return f"{path}: expected a {ref.dtype} array of shape {ref.shape}, received {what(got)}"
    if ref is None or isinstance(ref, (bool, int, float, str)):
        return (
            None
            if type(got) is type(ref) and (ref is None or isinstance(ref, float) or got == ref)
            else f"{path}: expected {ref!r}, received {what(got)}"
        )
    if isinstance(ref, tuple):
        if type(got) is not type(ref) or len(got) != len(ref):
            return f"{path}: expected a {type(ref).__name__} of {len(ref)}, received {what(got)}"
        names = getattr(ref, "_fields", range(len(ref)))
        return next((d for r, g, n in zip(ref, got, names) if (d := layout_diff(r, g, f"{path}.{n}", ids))), None)
    if isinstance(ref, list) or hasattr(ref, "__getitem__"):
        ref = list(ref)
        if not isinstance(got, list) or len(got) != len(ref):
            return f"{path}: expected a list of {len(ref)}, received {what(got)}"
        return next(
            (d for i, (r, g) in enumerate(zip(ref, got)) if (d := layout_diff(r, g, f"{path}[{i}]", ids))), None
        )
    return f"{path}: expected a {type(ref).__name__}, received {what(got)}"  # pragma: no cover


def last_steps(history: list, keep: int) -> list:
    """The last `keep` steps of a history of (steps, tapes, cut) segments; a segment cut short
    loses its first steps, and with them its cut (which sat on its first step)."""
    out, have = [], 0
    for steps, past, cut in reversed(history):
        if have >= keep:
            break
        take = min(steps, keep - have)
        out.append((take, past if take == steps else [tail(p, take) for p in past], cut if take == steps else None))
        have += take
    return out[::-1]
