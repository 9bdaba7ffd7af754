"""Gradient flow of a run: recorded as training goes (`bptt train --diagnose-every N`) and
examined afterwards (`bptt diagnose RUN [--data]`).

A 'flow' row of metrics.jsonl holds bptt.diagnostics.flow's figures for the run's weights at that
update, on the task's fixed diagnostic batch (4 sequences): the error signal carried back into
every step, the largest singular value of dS(T)/dS(t) by lag, the step Jacobians' spectral
radius and largest singular value, and the norm of each lag's part of every recurrent weight
gradient. `bptt diagnose` adds the same for the run's last checkpoint, the gradient norm before
clipping per update and the clip rate per evaluation (from the train rows), writes them to
RUN/diagnose.json and, unless --data, draws RUN/flow.png: a heatmap of lag x training update,
the norms by lag on a log scale, and the gradient norms with the clip threshold.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..diagnostics.flow import flow
from ..files import atomic_write
from ..model import Model

MAX_LAG = 100  # lags recorded one by one (the rest summed in the last entry)
MAX_JACOBIAN_UNITS = 256  # state units up to which the step Jacobians are formed (n^3 per step)


def flow_row(model: Model, params: dict, task: Any, step: int) -> dict[str, Any]:
    """The 'flow' row of update `step` (module docstring)."""
    x, y, mask = task.diagnostic_batch()
    n = sum(sum(a.shape[1] for a in v) for v in model.initial_state(params, 1)[0].values())
    f = flow(
        model,
        params,
        x,
        y,
        mask=mask,
        max_lag=min(MAX_LAG, x.shape[0] - 1),
        jacobians=n <= MAX_JACOBIAN_UNITS,
    )
    row = {"step": step, "split": "flow", **f.to_json()}
    return _finite(row)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    return obj


def clip_rates(rows: list[dict], clip: float) -> list[dict[str, float]]:
    """Per evaluation: the updates since the previous one, their median gradient norm before
    clipping and the share of them that were clipped (norm above `clip`)."""
    out, norms = [], []
    for r in rows:
        if r.get("split") == "train" and r.get("grad_norm") is not None:
            norms.append(float(r["grad_norm"]))
        elif r.get("split") == "val" and norms:
            a = np.asarray(norms)
            out.append(
                {
                    "step": r["step"],
                    "updates": len(a),
                    "median_grad_norm": float(np.median(a)),
                    "clip_rate": float(np.mean(a > clip)) if clip > 0 else 0.0,
                }
            )
            norms = []
    return out


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _well_formed(rows: list[dict], names: Any) -> list[dict]:
    """The rows whose fields this command reads are of their types (rows of another kind, or a
    hand-edited metrics.jsonl, are left out rather than fail the command)."""
    out = []
    for r in rows:
        if not isinstance(r, dict) or not _number(r.get("step")):
            continue
        if r.get("split") == "train" and r.get("grad_norm") is not None and not _number(r["grad_norm"]):
            continue
        if r.get("split") == "flow":
            lags = r.get("by_lag_norm")
            if not isinstance(lags, dict) or not all(
                isinstance(lags.get(n), list) and all(v is None or _number(v) for v in lags[n]) for n in names
            ):
                continue
        out.append(r)
    return out


def summary(rows: list[dict], now: dict[str, Any], clip: float) -> dict[str, Any]:
    """What `bptt diagnose` writes: the flow rows recorded, the flow of the checkpoint's weights,
    and the gradient norms and clip rates."""
    rows = _well_formed(rows, now["by_lag_norm"])
    return {
        "recorded": [r for r in rows if r.get("split") == "flow"],
        "checkpoint": now,
        "grad_norm": [[r["step"], r["grad_norm"]] for r in rows if r.get("split") == "train" and "grad_norm" in r],
        "clip": clip,
        "clip_rates": clip_rates(rows, clip),
    }


def plot_flow(data: dict[str, Any], path: str, title: str = "") -> None:
    """RUN/flow.png (module docstring)."""
    from ..plots import _pyplot, _save

    plt = _pyplot()
    fig, ax = plt.subplots(1, 3, figsize=(17, 4.4))
    fig.subplots_adjust(wspace=0.42)
    flows = data["recorded"] + [data["checkpoint"]]
    name = sorted(data["checkpoint"]["by_lag_norm"])[0] if data["checkpoint"]["by_lag_norm"] else None
    if name and data["recorded"]:
        rows = [[v if v else np.nan for v in r["by_lag_norm"][name]] for r in data["recorded"]]
        width = max(len(r) for r in rows)  # (rows of a run resumed with another --seq-len: fewer lags)
        grid = np.array([r[:-1] + [np.nan] * (width - len(r)) + r[-1:] for r in rows], float)
        steps = [r["step"] for r in data["recorded"]]
        im = ax[0].imshow(
            np.log10(np.maximum(grid.T, 1e-30)),
            aspect="auto",
            origin="lower",
            extent=(steps[0] - 0.5, steps[-1] + 0.5, -0.5, grid.shape[1] - 0.5),
        )
        fig.colorbar(im, ax=ax[0], label="log10 |part of dL/dW_hh| (top row: the rest)")
        ax[0].set(xlabel="training update", ylabel="lag", title=f"{name}: each lag's part of the gradient")
    else:
        ax[0].text(0.5, 0.5, "no flow rows recorded\n(bptt train --diagnose-every N)", ha="center", va="center")
        ax[0].set_axis_off()
    for r in (flows[0], flows[-1]) if len(flows) > 1 else flows:
        label = f"update {r['step']}" if r.get("step") is not None else "checkpoint"
        lag = np.asarray([v if v is not None else np.nan for v in r["lag"]], float)
        if np.isfinite(lag).any():
            ax[1].semilogy(np.arange(len(lag)), lag, label=f"|dS(T)/dS(T-l)|, {label}")
        err = np.asarray([v if v is not None else np.nan for v in r["error"]], float)[::-1]
        ax[1].semilogy(np.arange(len(err)), err, "--", label=f"|dL/dS(T-l-1)|, {label}")
    ax[1].set(xlabel="lag l (steps back from the end)", title="norms by lag")
    ax[1].legend(fontsize=8)
    g = np.asarray(data["grad_norm"], float)
    if len(g):
        ax[2].semilogy(g[:, 0], g[:, 1], lw=0.8, label="gradient norm before clipping")
        if data["clip"] > 0:
            ax[2].axhline(data["clip"], color="k", ls=":", label=f"clip {data['clip']:g}")
        rates = data["clip_rates"]
        if rates:
            tw = ax[2].twinx()
            tw.plot([r["step"] for r in rates], [r["clip_rate"] for r in rates], "o-", color="tab:red", ms=3)
            tw.set_ylabel("clip rate per evaluation", color="tab:red")
            tw.set_ylim(-0.02, 1.02)
        ax[2].legend(fontsize=8, loc="upper right")
    ax[2].set(xlabel="training update", title="gradient norms")
    if title:
        fig.suptitle(title)
    _save(fig, path)
    plt.close(fig)


def write_json(path: str, data: dict[str, Any]) -> None:
    import json

    atomic_write(path, lambda f: f.write(json.dumps(data).encode()))
