"""Several runs of one configuration from consecutive seeds (`bptt train --seeds N`), and the
folder they share, which `bptt evaluate` and `bptt forecast` read as one model.

    OUT/ensemble.json   the seeds, the configuration they share, each finished member's best
                        validation (and test) figures, the ensemble's
    OUT/seed-<s>/       one run folder per seed (bptt sample, diagnose and export take one)

Why. One training run is one draw: on a chaotic series the same configuration from five seeds
forecasts with NMSEs from 0.04 to 4.5. The spread of the members is the honest figure of a
configuration, and the mean of their predictions is usually better than a typical member.

The ensemble's prediction: for a series, the mean of the members' predictions in the series'
own units (one-step predictions, or iterated forecasts, each member fed its own outputs); for
text, the mean of the members' probabilities of the next token, whose loss is
-log((1/M) sum_m p_m(y)) (a mixture; never more than the members' mean loss, by Jensen).

ensemble.json is read as data: the member folders are named from its integer seeds alone, and
its configuration is checked as a config.json is.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
from collections.abc import Callable
from typing import Any

from ..errors import BpttError
from .config import TrainConfig
from .lock import RunLock

ENSEMBLE = "ensemble.json"
FORMAT = "bptt ensemble"
MAX_SEEDS = 1000


def member_name(seed: int) -> str:
    return f"seed-{seed}"


def read(folder: str) -> dict[str, Any] | None:
    """The ensemble record of `folder` (seeds, config: a TrainConfig, results), or None where the
    folder holds none; a damaged record is a BpttError naming the file."""
    path = os.path.join(folder, ENSEMBLE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read(1 << 22).decode())
    except (OSError, ValueError, RecursionError) as e:
        raise BpttError(
            f"{path}: expected the JSON that bptt train --seeds writes, received one that does not read ({e})"
        ) from None
    seeds = doc.get("seeds") if isinstance(doc, dict) else None
    if (
        not isinstance(doc, dict)
        or doc.get("format") != FORMAT
        or not isinstance(seeds, list)
        or not 1 <= len(seeds) <= MAX_SEEDS
        or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**32 for s in seeds)
        or len(set(seeds)) != len(seeds)
        or not isinstance(doc.get("results", {}), dict)
    ):
        raise BpttError(
            f"{path}: expected {{'format': {FORMAT!r}, 'seeds': [1 to {MAX_SEEDS} distinct seeds], 'config': {{...}}}}, "
            "received a file without them"
        )
    cfg = TrainConfig.from_dict(doc.get("config"), f"{path}: config")
    return {"seeds": seeds, "config": cfg, "results": _clean(doc.get("results", {}), seeds)}


def _figures(v: Any) -> dict[str, float] | None:
    """A record's figures: names to numbers, or None (whatever else the file holds)."""
    if not isinstance(v, dict):
        return None
    out = {
        k: float(x)
        for k, x in v.items()
        if isinstance(k, str) and isinstance(x, (int, float)) and not isinstance(x, bool)
    }
    return out or None


def _clean(results: dict, seeds: list[int]) -> dict[str, Any]:
    """The members' records of a read ensemble.json, as far as they hold figures and a known
    ending (a member without one is trained again)."""
    out: dict[str, Any] = {}
    for s in seeds:
        rec = results.get(member_name(s))
        if isinstance(rec, dict) and rec.get("stopped") in (*FINISHED, "interrupted", "diverged"):
            out[member_name(s)] = {
                "best": _figures(rec.get("best")),
                "test": _figures(rec.get("test")),
                "stopped": rec["stopped"],
            }
    return out


def member_folders(folder: str) -> list[str] | None:
    """The member run folders of the ensemble in `folder`, or None where it is not one."""
    doc = read(folder)
    return None if doc is None else [os.path.join(folder, member_name(s)) for s in doc["seeds"]]


def _write(folder: str, seeds: list[int], cfg: TrainConfig, results: dict[str, Any]) -> None:
    from ..files import write_json

    write_json(
        os.path.join(folder, ENSEMBLE), {"format": FORMAT, "seeds": seeds, "config": cfg.to_dict(), "results": results}
    )


def _member_config(cfg: TrainConfig, folder: str, seed: int) -> TrainConfig:
    tb = cfg.tensorboard
    if tb and "{run}" not in tb:  # one event folder per member
        tb = os.path.join(tb, member_name(seed))
    return dataclasses.replace(cfg, seed=seed, out=os.path.join(folder, member_name(seed)), tensorboard=tb)


FINISHED = ("done", "early-stop", "time-limit", "callback")


@dataclasses.dataclass
class Member:
    seed: int
    model: Any
    params: Any  # its best weights (the latest where it has no validation part)
    best: dict[str, float] | None
    test: dict[str, float] | None
    stopped: str


def _given_fits(folder: str, seeds: list[int], given: dict[str, Any]) -> None:
    """Settings given to a resumed ensemble fit its members' series records (columns,
    differencing, normalisation): checked on the first member with a checkpoint, before
    anything is written (one line where they do not)."""
    from . import checkpoint as ckpt
    from .tasks import make_task

    for s in seeds:
        path = os.path.join(folder, member_name(s), "checkpoint.npz")
        if os.path.isfile(path):
            c = ckpt.load(path)
            cfg = TrainConfig.from_dict({**c.meta["config"], **given}, "flags")
            if cfg.task == "series":
                make_task(cfg, c.meta)
            return


def train(
    cfg: TrainConfig | None,
    n: int | None,
    given: dict[str, Any],
    resume: str | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train the members of a new ensemble (cfg with cfg.out; seeds cfg.seed .. cfg.seed + n - 1)
    or continue the one in `resume`: a member not begun is started, one with a checkpoint is
    resumed with the settings `given`, and, where none are given, one recorded as finished is
    kept as it is. The folder is locked while its members train; ensemble.json is written before
    the first member and after each. Returns {'folder', 'seeds', 'kind' (the task's), 'stopped'
    (the last member's), 'summary' (the record's results)}."""
    from . import dist
    from .api import fit

    if dist.world().size > 1:
        raise BpttError(
            "--seeds: expected a run on one process (train the seeds one after another), received MPI ranks"
        )
    if resume is not None:
        doc = read(resume)
        if doc is None:
            single = os.path.isfile(os.path.join(resume, "checkpoint.npz"))
            raise BpttError(
                f"--seeds: expected an ensemble folder with --resume, received {resume!r}, "
                + (
                    "a single run (resume it without --seeds)"
                    if single
                    else "which holds neither a run nor an ensemble"
                )
            )
        folder, seeds, base, results = resume, doc["seeds"], doc["config"], doc["results"]
        if n is not None and n != len(seeds):
            raise BpttError(
                f"--seeds: expected {len(seeds)} (the ensemble {resume!r}) or none with --resume, received {n}"
            )
        if given:  # members not begun yet start with the settings given too, and the record says so
            base = TrainConfig.from_dict({**base.to_dict(), **given}, "flags").validate(set(given))
            _given_fits(folder, seeds, given)
    else:
        assert cfg is not None and n is not None
        folder, base, results = cfg.out, cfg, {}
        if cfg.seed + n > 2**32:
            raise BpttError(
                f"--seeds: expected seeds below 2**32 (--seed {cfg.seed} and {n} after it), received {n} from {cfg.seed}"
            )
        seeds = [cfg.seed + i for i in range(n)]
        _new_folder(folder)
    lock = RunLock(folder).acquire("--resume" if resume else "--out")
    try:
        lock.record()
        _write(folder, seeds, base, results)
        members: list[Member] = []
        task, stopped = None, "done"
        for i, s in enumerate(seeds):
            name, sub = member_name(s), os.path.join(folder, member_name(s))
            rec = results.get(name)
            if resume and not given and rec and rec["stopped"] in FINISHED and _has_weights(sub):
                from .runs import load_run

                log(f"== member {i + 1} of {len(seeds)}: seed {s}, {sub}: finished ({rec['stopped']})")
                run = load_run(sub)
                members.append(Member(s, run.model, run.params, rec.get("best"), rec.get("test"), rec["stopped"]))
                continue
            log(f"== member {i + 1} of {len(seeds)}: seed {s}, {sub}")
            if os.path.isfile(os.path.join(sub, "checkpoint.npz")):
                res = fit(resume=sub, log=log, **given)
            else:
                res = fit(_member_config(base, folder, s), log=log)
            best = res.best_params if res.best_params is not None else res.params
            m = Member(s, res.model, best, res.best or res.last_eval, res.extra.get("test"), res.stopped)
            members.append(m)
            task, stopped = res.task, res.stopped
            results[name] = {"best": m.best, "test": m.test, "stopped": m.stopped}
            _write(folder, seeds, base, results)
            if stopped in ("interrupted", "diverged"):
                break
        if task is None:  # every member was finished: the data they share, read again
            from .runs import load_run
            from .tasks import make_task

            first = load_run(os.path.join(folder, member_name(seeds[0])))
            task = make_task(first.cfg, first.meta)
        results.pop("ensemble", None)
        if len(members) == len(seeds) and hasattr(task, "ensemble"):
            pairs = [(m.model, m.params) for m in members]
            results["ensemble"] = {part: task.ensemble(pairs, part) for part in ("validation", "test")}
        _write(folder, seeds, base, results)
    finally:
        lock.release()
    return {"folder": folder, "seeds": seeds, "kind": task.kind, "task": task, "stopped": stopped, "summary": results}


def _has_weights(folder: str) -> bool:
    return any(os.path.isfile(os.path.join(folder, f)) for f in ("best.npz", "checkpoint.npz"))


def _new_folder(folder: str) -> None:
    for name in (ENSEMBLE, "checkpoint.npz"):
        if os.path.exists(os.path.join(folder, name)):
            what = "an ensemble" if name == ENSEMBLE else "a run"
            raise BpttError(
                f"--out: expected a new folder for the ensemble, received {folder!r}, which already holds {what} "
                f"(continue it with --resume {folder}, or choose another --out)"
            )
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise BpttError(f"--out: expected a folder for the ensemble, received {folder!r}, which is a file")
    os.makedirs(folder, exist_ok=True)


def key_figure(kind: str) -> str:
    """The figure members are compared on: nats for text, NMSE for series, else the loss."""
    return "nmse" if kind == "series" else "loss"


def spread(values: list[float]) -> str:
    """'median m, mean a, min l, max h' of the members' figures."""
    if not values:
        return "no figures"
    return (
        f"median {statistics.median(values):.4f}, mean {statistics.fmean(values):.4f}, "
        f"min {min(values):.4f}, max {max(values):.4f}"
    )


def report(summary: dict[str, Any], seeds: list[int], kind: str, tokens: str = "char") -> list[str]:
    """The lines bptt train prints after the members: each seed's figure, their spread, the
    ensemble's (validation, and test where there is a test part)."""
    key = key_figure(kind)
    unit = f" nats/{tokens}" if kind == "text" else " one-step NMSE" if kind == "series" else " loss"
    lines = [f"ensemble of {len(seeds)} seeds, best validation{unit}:"]
    values = []
    for s in seeds:
        m = summary.get(member_name(s))
        v = (m or {}).get("best") or {}
        if key in v:
            values.append(float(v[key]))
            lines.append(
                f"  seed {s}: {v[key]:.4f}" + ("" if m["stopped"] in ("done", "early-stop") else f" ({m['stopped']})")
            )
        else:
            lines.append(f"  seed {s}: not trained")
    lines.append(f"  members: {spread(values)}")
    ens = summary.get("ensemble") or {}
    how = "mean of the members' probabilities" if kind == "text" else "mean of the members' predictions"
    for part in ("validation", "test"):
        figs = ens.get(part)
        if figs and key in figs:
            lines.append(f"  the ensemble ({how}), {part}: {figs[key]:.4f}")
    tests = [
        float(summary[member_name(s)]["test"][key]) for s in seeds if (summary.get(member_name(s)) or {}).get("test")
    ]
    if tests:
        lines.append(f"  members on the test part: {spread(tests)}")
    return lines
