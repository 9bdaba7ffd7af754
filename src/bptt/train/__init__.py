"""Training: configuration, tasks (text, series), the loop, checkpoints and plots; `fit`, the
entry point from Python (and under `bptt train`)."""

from .api import fit
from .config import TrainConfig, load_toml
from .tasks import SeriesTask, TextTask, make_task
from .trainer import Stop, Trainer, TrainResult

__all__ = [
    "SeriesTask",
    "Stop",
    "TextTask",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "fit",
    "load_toml",
    "make_task",
]
