"""bptt: backpropagation through time for recurrent networks, with hand-derived gradients on
NumPy.

Layout: sequences are time-major (T, B, D); a state field is (B, H); parameters are a flat
dict of arrays named '<level>.<param>'. See docs/derivations.md for every backward step.
"""

from . import fast  # noqa: E402,F401  (offers its faster operations to bptt.ops, loaded on first use)
from ._version import __version__
from .activations import ACTIVATIONS, get_activation
from .algorithms import Gradient, full_bptt
from .cells import (
    CELLS,
    GRU,
    LSTM,
    Cell,
    Elman,
    ElmanState,
    GRUState,
    Jordan,
    JordanState,
    LSTMState,
    make_cell,
)
from .diagnostics import GradcheckResult, gradcheck, numeric_grad
from .errors import BpttError
from .layers import Dense, Dropout, Embedding, Level, RateRegularizer, Recurrent, rnn
from .losses import Loss
from .model import Model, ModelState
from .scan import scan_backward, scan_forward
from .tape import Tape

__all__ = [
    "ACTIVATIONS",
    "__version__",
    "BpttError",
    "CELLS",
    "Cell",
    "Dense",
    "Dropout",
    "Elman",
    "ElmanState",
    "Embedding",
    "GRU",
    "GRUState",
    "Gradient",
    "GradcheckResult",
    "Jordan",
    "JordanState",
    "LSTM",
    "LSTMState",
    "Level",
    "Loss",
    "Model",
    "ModelState",
    "RateRegularizer",
    "Recurrent",
    "Tape",
    "full_bptt",
    "get_activation",
    "gradcheck",
    "make_cell",
    "numeric_grad",
    "rnn",
    "scan_backward",
    "scan_forward",
]


def __getattr__(name: str):
    """`bptt.fit` (bptt.train.fit), loaded on first use: training's tools (plots, progress bar,
    checkpoints) stay out of `import bptt`."""
    if name == "fit":
        from .train.api import fit

        return fit
    raise AttributeError(f"module 'bptt' has no attribute {name!r}")
