"""Loading a finished (or interrupted) run for sampling, forecasting and evaluation."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..cells.base import Params
from ..data.series import Difference, Normalizer
from ..data.text import Vocab
from ..errors import BpttError
from ..model import Model
from . import checkpoint as ckpt
from .config import TrainConfig
from .tasks import build_model


@dataclass
class Run:
    folder: str
    cfg: TrainConfig
    model: Model
    params: Params
    meta: dict[str, Any]
    which: str  # 'best.npz' or 'checkpoint.npz'

    @property
    def vocab(self) -> Vocab:
        return Vocab(self.meta["vocab"])

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
    return Run(folder, cfg, model, c.params, c.meta, os.path.basename(path))


def _model_for(cfg: TrainConfig, meta: dict[str, Any]) -> Model:
    """The model of a run, without reading its data file again."""
    return build_model(cfg, len(meta["vocab"]) if cfg.task == "text" else None)
