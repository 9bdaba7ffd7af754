"""Loading a finished (or interrupted) run for sampling, forecasting and evaluation."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..cells.base import Params
from ..data.series import Difference, Normalizer
from ..data.text import Vocab, WordVocab, vocab_from_meta
from ..errors import BpttError
from ..model import Model
from . import checkpoint as ckpt
from . import ensemble
from .config import TrainConfig
from .tasks import build_model, series_record_problem


@dataclass
class Run:
    folder: str
    cfg: TrainConfig
    model: Model
    params: Params
    meta: dict[str, Any]
    which: str  # 'best.npz' or 'checkpoint.npz'

    @property
    def vocab(self) -> Vocab | WordVocab:
        return vocab_from_meta(self.cfg.tokens, self.meta["vocab"])

    @property
    def normalizer(self) -> Normalizer:
        return Normalizer(**self.meta["normalizer"])

    @property
    def difference(self) -> Difference:
        """The series' differencing (none where the run's record has none)."""
        return Difference(**self.meta.get("difference", {}))


def load_run(folder: str, which: str = "best") -> Run:
    """The run in `folder` with its best (default) or latest parameters."""
    if not os.path.isdir(folder):
        what = "a file" if os.path.exists(folder) else "no such folder"
        raise BpttError(f"RUN: expected a run folder (from bptt train), received {folder!r} ({what})")
    members = ensemble.member_folders(folder)
    if members is not None:
        raise BpttError(
            f"RUN: expected one run, received the ensemble {folder!r} of {len(members)} runs "
            f"(bptt evaluate and forecast take it whole; here give one of its members, e.g. {members[0]})"
        )
    names = ["best.npz", "checkpoint.npz"] if which == "best" else ["checkpoint.npz"]
    path = next((os.path.join(folder, n) for n in names if os.path.isfile(os.path.join(folder, n))), None)
    if path is None:
        raise BpttError(f"RUN: expected {' or '.join(names)} in {folder!r}, received a folder without them")
    c = ckpt.load(path)
    cfg = TrainConfig.from_dict(c.meta["config"], f"checkpoint {path!r}: config")
    try:
        model = _model_for(cfg, c.meta)
        model.check_params(c.params)
    except BpttError as e:
        raise BpttError(f"checkpoint {path!r} does not fit the model its config describes: {e}") from None
    problem = series_record_problem(c.meta) if cfg.task == "series" else None
    if problem:
        raise BpttError(f"checkpoint {path!r}: {problem}")
    return Run(folder, cfg, model, c.params, c.meta, os.path.basename(path))


def _model_for(cfg: TrainConfig, meta: dict[str, Any]) -> Model:
    """The model of a run, without reading its data file again."""
    return build_model(cfg, len(meta["vocab"]) if cfg.task == "text" else None)


def load_members(folder: str, which: str = "best") -> list[Run]:
    """The runs of the ensemble in `folder` (bptt train --seeds), or [the run] of a run folder.
    The members must share their task, data and what turns predictions into values (vocabulary,
    normaliser, differencing)."""
    members = ensemble.member_folders(folder) if os.path.isdir(folder) else None
    if members is None:
        return [load_run(folder, which)]
    missing = [m for m in members if not os.path.isdir(m)]
    if missing:
        raise BpttError(
            f"RUN: expected the {len(members)} member folders of the ensemble {folder!r}, received it without "
            f"{', '.join(map(os.path.basename, missing))} (bptt train --resume {folder} trains them)"
        )
    runs = [load_run(m, which) for m in members]
    shared = ("vocab", "normalizer", "difference", "series_columns")
    first = runs[0]
    for r in runs[1:]:
        for k in shared:
            if r.meta.get(k) != first.meta.get(k) or r.cfg.task != first.cfg.task:
                raise BpttError(
                    f"RUN: expected members that read their data alike, received {r.folder!r} whose "
                    f"{k if r.cfg.task == first.cfg.task else 'task'} differs from {first.folder!r}'s"
                )
    return runs
