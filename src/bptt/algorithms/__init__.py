"""Gradient algorithms: the orders in which a cell's forward and backward steps run, and what
is kept between them. One interface (`Algorithm`: algo(model, params, x, targets, *, mask,
state0) -> Gradient) and a registry by name (`make`, `REGISTRY`): full, tbptt, random, artbp, budget,
and BPTT's forward-in-time rivals rtrl, uoro and eprop (spiking levels)."""

from ..scan import scan_backward, scan_forward
from ..tape import Tape
from .base import REGISTRY, Algorithm, Gradient, GradientMean, make, register
from .budget import Budget
from .eprop import EProp, eprop
from .forward import RTRL, UORO, rtrl, uoro
from .full import FullBPTT, full_bptt
from .randomized import (
    ARTBP,
    OnlineARTBP,
    RandomTruncation,
    randomized_bptt,
    truncation_factors,
)
from .truncated import TBPTT, TBPTTStream, tbptt

__all__ = [
    "ARTBP",
    "Budget",
    "EProp",
    "REGISTRY",
    "RTRL",
    "TBPTT",
    "UORO",
    "Algorithm",
    "FullBPTT",
    "Gradient",
    "GradientMean",
    "OnlineARTBP",
    "RandomTruncation",
    "TBPTTStream",
    "Tape",
    "eprop",
    "full_bptt",
    "make",
    "randomized_bptt",
    "register",
    "rtrl",
    "scan_backward",
    "scan_forward",
    "tbptt",
    "truncation_factors",
    "uoro",
]
