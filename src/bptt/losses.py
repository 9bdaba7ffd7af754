"""Losses on the model's last level output y.

    'ce'  softmax cross-entropy:  l(t, b) = -log softmax(y[t, b])[target[t, b]]   (nats)
    'mse' squared error:          l(t, b) = 1/2 * sum_k (y[t, b, k] - target[t, b, k])^2

at='every': every counted position (t, b) carries a loss; a position counts when its mask entry
is True (all count without a mask). at='last': only each sequence's last counted step (its
last True mask entry, or t = T for no mask) carries a loss: sequence classification/regression;
with window=W, each of the W steps that end there (from t = 0 at the earliest) carries one, with
the sequence's target (a decision read out over a window, as spiking networks are).

The loss is the AVERAGE over the counted (time, batch) positions, N of them:
L = (1/N) sum l(t, b). Targets at uncounted positions are ignored (any padding value will do).
"""

from __future__ import annotations

import numpy as np

from . import _checks, ops
from .errors import BpttError, one_of

KINDS = ("ce", "mse")
AT = ("every", "last")


def last_index(mask: np.ndarray | None, T: int, B: int) -> np.ndarray:
    """Index of each sequence's last counted step, (B,)."""
    if mask is None:
        return np.full(B, T - 1)
    return T - 1 - np.argmax(mask[::-1], axis=0)


def window_index(mask: np.ndarray | None, T: int, B: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """(times, sequences) of the positions in each sequence's last `window` steps up to its last
    counted one, sequence by sequence."""
    last = last_index(mask, T, B)
    t = last[:, None] - np.arange(window)[::-1]  # (B, W)
    b = np.broadcast_to(np.arange(B)[:, None], t.shape)
    keep = t >= 0
    return t[keep], b[keep]


class Loss:
    def __init__(self, kind: str = "ce", at: str = "every", window: int = 1) -> None:
        if kind not in KINDS:
            raise one_of("loss", kind, KINDS)
        if at not in AT:
            raise one_of("at", at, AT)
        self.kind, self.at = kind, at
        self.window = _checks.positive_int("window", window)
        if self.window > 1 and at != "last":
            raise BpttError(f"window: expected 1 with at='every' (a window is for at='last'), received {window}")

    def count(self, mask: np.ndarray | None, T: int, B: int) -> int:
        """The number N of positions the loss averages over."""
        if self.at == "every":
            return T * B if mask is None else int(np.count_nonzero(mask))
        return len(window_index(mask, T, B, self.window)[0])

    def check_targets(self, targets, T: int, B: int, size: int, dtype: np.dtype, mask: np.ndarray | None) -> np.ndarray:
        _checks.array("targets", targets)
        lead = (T, B) if self.at == "every" else (B,)
        layout = "(T, B" if self.at == "every" else "(B"
        if self.kind == "ce":
            _checks.shape("targets", targets, lead, layout + ") class indices")
            _checks.integer("targets", targets)
            counted = mask if self.at == "every" else None
            _checks.in_range("targets", targets, size, where=counted)
        else:
            _checks.shape("targets", targets, lead + (size,), layout + ", O)")
            _checks.dtype_is("targets", targets, dtype)
            vals = targets[mask] if (mask is not None and self.at == "every") else targets
            _checks.finite("targets", vals)
        return targets

    def _select(self, y: np.ndarray, targets: np.ndarray, mask: np.ndarray | None):
        """The counted positions: (y there (N, K), targets there, index into (T, B))."""
        T, B, K = y.shape
        if self.at == "last":
            idx = window_index(mask, T, B, self.window)
            return y[idx], targets[idx[1]], idx
        if mask is None:
            return y.reshape(T * B, K), targets.reshape(T * B, *targets.shape[2:]), slice(None)
        return y[mask], targets[mask], mask

    def _terms(self, ys: np.ndarray, ts: np.ndarray, need_grad: bool, n: int | None = None):
        """Sum of the per-position losses l over the N rows and, if asked, dl/dy (N, K) / n
        (n: the positions the loss is averaged over; default N)."""
        n = len(ys) if n is None else n
        if self.kind == "ce":
            ts = np.ascontiguousarray(ts, dtype=np.int64)
            if ts.min() < 0 or ts.max() >= ys.shape[1]:  # (-1 would wrap, the kernel reads any index)
                raise BpttError(
                    f"targets: expected class ids in [0, {ys.shape[1]}), received values in [{ts.min()}, {ts.max()}]"
                )
            fused = ops.softmax_xent(ys.dtype)
            if fused is not None:  # one compiled pass per row (float32)
                d = ops.empty(ys.shape, ys.dtype) if need_grad else np.empty((0, 0), ys.dtype)
                total = fused(np.ascontiguousarray(ys), ts, ys.dtype.type(1.0 / n), d)
                return total, (d if need_grad else None)
            z = ys - ys.max(axis=1, keepdims=True)
            e = np.exp(z)
            s = e.sum(axis=1, keepdims=True)
            rows = np.arange(len(ys))
            total = (np.log(s[:, 0]) - z[rows, ts]).sum()
            if not need_grad:
                return total, None
            e *= 1.0 / n / s  # (softmax - onehot(target)) / N
            e[rows, ts] -= 1.0 / n
            return total, e
        d = ys - ts
        total = 0.5 * (d * d).sum()
        d *= 1.0 / n
        return total, d

    def value(self, y: np.ndarray, targets: np.ndarray, mask: np.ndarray | None) -> float:
        """The loss alone: (1/N) sum of l(t, b) over the N counted positions."""
        ys, ts, _ = self._select(y, targets, mask)
        return float(self._terms(ys, ts, False)[0] / len(ys))

    def value_and_grad(self, y: np.ndarray, targets: np.ndarray, mask: np.ndarray | None) -> tuple[float, np.ndarray]:
        """The loss and dL/dy (same shape and dtype as y, zero at uncounted positions)."""
        ys, ts, idx = self._select(y, targets, mask)
        total, d = self._terms(ys, ts, True)
        loss = float(total / len(ys))
        if isinstance(idx, slice):
            return loss, d.reshape(y.shape)
        dy = ops.zeros(y.shape, y.dtype)
        dy[idx] = d
        return loss, dy

    def segment(self, y: np.ndarray, targets: np.ndarray, mask: np.ndarray | None, a: int, T: int, n: int):
        """For the steps a .. a + L - 1 of a T-step batch (y: their (L, B, K) outputs): the sum
        of the losses counted there, and dL/dy for the loss averaged over all n counted
        positions of the batch: row for row the numbers value_and_grad gives on the whole batch
        (so a batch run in segments has the same loss gradient)."""
        L, B, K = y.shape
        if self.at == "last":
            times, rows = window_index(mask, T, B, self.window)
            here = (times >= a) & (times < a + L)
            idx = (times[here] - a, rows[here])
            ys, ts = y[idx], targets[rows[here]]
        elif mask is None:
            idx, ys, ts = slice(None), y.reshape(L * B, K), targets[a : a + L].reshape(L * B, *targets.shape[2:])
        else:
            idx = mask[a : a + L]
            ys, ts = y[idx], targets[a : a + L][idx]
        if len(ys) == 0:
            return 0.0, ops.zeros(y.shape, y.dtype)
        total, d = self._terms(ys, ts, True, n)
        if isinstance(idx, slice):
            return float(total), d.reshape(y.shape)
        dy = ops.zeros(y.shape, y.dtype)
        dy[idx] = d
        return float(total), dy

    def __repr__(self) -> str:
        extra = f", window={self.window}" if self.window > 1 else ""
        return f"Loss({self.kind!r}, at={self.at!r}{extra})"
