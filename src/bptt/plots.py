"""PNG plots of a run: loss curves, and predictions against the truth (matplotlib, no screen)."""

from __future__ import annotations

import json
import os

import numpy as np

from .files import atomic_write


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> None:
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))


def read_metrics(path: str) -> list[dict]:
    if not os.path.isfile(path):
        return []
    rows = []
    with open(path, "rb") as f:
        for line in f:
            try:
                row = json.loads(line.decode())
            except ValueError:  # a line torn by a killed run
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def plot_losses(metrics_path: str, out_path: str, title: str = "") -> None:
    """Training loss (raw and smoothed) and validation metric against the step."""
    rows = read_metrics(metrics_path)
    train = [(r["step"], r["loss"]) for r in rows if r.get("split") == "train" and r.get("loss") is not None]
    val = [(r["step"], r["loss"]) for r in rows if r.get("split") == "val" and r.get("loss") is not None]
    if not train:
        return
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    s, l = np.array(train).T
    ax.plot(s, l, color="0.8", lw=0.8, label="train (per batch)")
    if len(l) > 10:
        k = max(5, len(l) // 50)
        sm = np.convolve(l, np.ones(k) / k, mode="valid")
        ax.plot(s[k - 1 :], sm, color="C0", lw=1.5, label=f"train (mean of {k})")
    if val:
        vs, vl = np.array(val).T
        label = "validation" + (
            " NMSE" if rows and "nmse" in next((r for r in rows if r.get("split") == "val"), {}) else ""
        )
        ax.plot(vs, vl, "o-", color="C3", lw=1.5, ms=3, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, out_path)
    plt.close(fig)


def plot_series(
    out_path: str, truth: np.ndarray, pred: np.ndarray, title: str, history: np.ndarray | None = None
) -> None:
    """Prediction against truth (with the end of the history before them, if given)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.5))
    offset = 0
    if history is not None and len(history):
        h = history[-min(len(history), 3 * len(truth)) :]
        ax.plot(np.arange(-len(h), 0), h, color="0.6", lw=1, label="history")
    t = np.arange(offset, offset + len(truth))
    ax.plot(t, truth, color="k", lw=1.2, label="truth")
    ax.plot(t, pred, color="C3", lw=1.2, label="prediction")
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, out_path)
    plt.close(fig)
