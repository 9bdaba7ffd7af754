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


def plot_spikes(
    inputs: np.ndarray,
    spikes: np.ndarray,
    membrane: np.ndarray,
    threshold: np.ndarray,
    readout: np.ndarray,
    window: int,
    out_path: str,
    title: str = "",
    dt_ms: float = 1.0,
) -> None:
    """One sequence of a spiking network: a raster of its input spikes (T, C) and of its
    neurons' spikes (T, H), the membrane (and threshold) of a few neurons (T, k), and the
    readout units (T, O) with the decision window shaded."""
    plt = _pyplot()
    T = len(spikes)
    t = np.arange(T) * dt_ms
    fig, axes = plt.subplots(4, 1, figsize=(8, 8), sharex=True, gridspec_kw={"height_ratios": [1, 2, 1.2, 1]})
    for ax, arr, label in ((axes[0], inputs, "input channel"), (axes[1], spikes, "neuron")):
        ts, ns = np.nonzero(arr > 0)
        ax.scatter(ts * dt_ms, ns, s=1.5, marker="|", color="k", linewidths=0.8)
        ax.set_ylabel(label)
        ax.set_ylim(-0.5, arr.shape[1] - 0.5)
    for j in range(membrane.shape[1]):
        axes[2].plot(t, membrane[:, j], lw=0.9, color=f"C{j}")
        axes[2].plot(t, threshold[:, j], lw=0.7, ls="--", color=f"C{j}")
    axes[2].set_ylabel("membrane\n(-- threshold)")
    for k in range(readout.shape[1]):
        axes[3].plot(t, readout[:, k], lw=1.2, label=f"readout {k}")
    axes[3].axvspan((T - window) * dt_ms, T * dt_ms, color="0.9")
    axes[3].legend(loc="upper left", fontsize=8)
    axes[3].set_xlabel("time (ms)" if dt_ms != 1.0 else "step")
    axes[0].set_title(title)
    for ax in axes:
        ax.grid(alpha=0.2)
    _save(fig, out_path)
    plt.close(fig)
