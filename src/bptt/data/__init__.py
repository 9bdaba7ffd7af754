"""Data: turning files into (T, B, ...) arrays. Text (character level) and time series."""

from .series import Normalizer, nmse, one_step, random_windows, read_series
from .text import (
    BUNDLED,
    Vocab,
    batchify,
    bundled_text_path,
    read_text,
    segments,
    split,
)

__all__ = [
    "BUNDLED",
    "Normalizer",
    "Vocab",
    "batchify",
    "bundled_text_path",
    "nmse",
    "one_step",
    "random_windows",
    "read_series",
    "read_text",
    "segments",
    "split",
]
