"""Learning-rate schedules: functions from the update count (0, 1, 2, ...) to a learning rate."""

from __future__ import annotations

import math
from collections.abc import Callable

from ..errors import BpttError

Schedule = Callable[[int], float]


def constant(lr: float) -> Schedule:
    v = float(lr)
    return lambda count: v


def warmup_cosine(peak: float, warmup: int, total: int, end: float = 0.0) -> Schedule:
    """Linear warm-up from 0 to `peak` over `warmup` updates, then half a cosine from `peak` down
    to `end` at update `total` (and `end` after it):

        lr(n) = peak * (n + 1) / warmup                                   n < warmup
        lr(n) = end + (peak - end) * (1 + cos(pi * (n - warmup) / (total - warmup))) / 2
    """
    peak, end = float(peak), float(end)
    warmup, total = int(warmup), int(total)
    if warmup < 0 or total <= warmup:
        raise BpttError(f"warmup_cosine: expected 0 <= warmup < total, received warmup={warmup}, total={total}")

    def lr(count: int) -> float:
        if count < warmup:
            return peak * (count + 1) / warmup
        p = min(1.0, (count - warmup) / (total - warmup))
        return end + (peak - end) * 0.5 * (1.0 + math.cos(math.pi * p))

    return lr
