"""Gradient algorithms: the order in which a cell's forward and backward steps run, and what is
kept in memory between them. All consume the same cell interface (cells/base.py)."""

from .full import Gradient, full_bptt
from .scan import Tape, scan_backward, scan_forward

__all__ = ["Gradient", "Tape", "full_bptt", "scan_backward", "scan_forward"]
