"""Training: configuration, tasks (text, series), the loop, checkpoints and plots."""

from .config import TrainConfig, load_toml
from .tasks import SeriesTask, TextTask, make_task
from .trainer import Trainer, TrainResult

__all__ = ["SeriesTask", "TextTask", "TrainConfig", "TrainResult", "Trainer", "load_toml", "make_task"]
