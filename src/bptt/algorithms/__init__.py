"""Gradient algorithms: the order in which a cell's forward and backward steps run, and what is
kept in memory between them. All consume the same cell interface (cells/base.py)."""

from .full import Gradient, GradientMean, full_bptt
from .randomized import ARTBP, randomized_bptt, truncation_factors
from ..scan import scan_backward, scan_forward
from ..tape import Tape
from .truncated import TBPTT, tbptt

__all__ = [
    "ARTBP", "Gradient", "GradientMean", "TBPTT", "Tape", "full_bptt", "randomized_bptt", "scan_backward", "scan_forward",
    "tbptt", "truncation_factors",
]
