"""Exchanging weights and states with torch.nn.RNN / GRU / LSTM (+ nn.Linear), as NumPy arrays.

bptt's cells use torch's parametrisation exactly (gate order, both biases, (G, D) weight layout),
so the mapping is only a renaming:

    '<level>.W_ih'          <-> 'weight_ih_l{k}'          '<level>.reverse.W_ih' <-> '..._reverse'
    '<level>.W_hh'          <-> 'weight_hh_l{k}'
    '<level>.b_ih'          <-> 'bias_ih_l{k}'
    '<level>.b_hh'          <-> 'bias_hh_l{k}'
    '<dense>.W', '<dense>.b' <-> the Linear readout's 'weight', 'bias'

where k counts the recurrent levels. A model on integer tokens corresponds to torch fed with
one-hot vectors (W_ih is (G, vocabulary) in both). Initial states map to torch's h0 / c0 of shape
(layers * directions, B, H), ordered layer-major, forward direction first. No torch import here.
"""

from __future__ import annotations

import numpy as np

from .cells.base import Params
from .errors import BpttError
from .layers import Dense
from .model import Model, ModelState

_NAMES = {"W_ih": "weight_ih", "W_hh": "weight_hh", "b_ih": "bias_ih", "b_hh": "bias_hh"}


def _check_torch_shaped(model: Model) -> None:
    rec = model.recurrent_levels
    kinds = {lv.kind for lv in rec}
    ok = (
        rec
        and model.levels[: len(rec)] == rec
        and len(kinds) == 1
        and kinds <= {"elman", "gru", "lstm"}
        and len({(lv.size, lv.bidirectional) for lv in rec}) == 1
        and not any(lv.learn_init for lv in rec)
        and len(model.levels) == len(rec) + 1
        and isinstance(model.levels[-1], Dense)
        and model.levels[-1].activation.name == "identity"
    )
    if not ok:
        raise BpttError(
            "interop: expected a model of N identical Elman/GRU/LSTM levels followed by one "
            f"linear Dense level, received {model!r}"
        )


def torch_names(model: Model) -> dict[str, str]:
    """bptt parameter name -> torch name ('rnn.<name>' for the recurrent module,
    'linear.<name>' for the readout)."""
    _check_torch_shaped(model)
    names = {}
    for k, lv in enumerate(model.recurrent_levels):
        for d in lv.directions:
            suffix = "_reverse" if d.reverse else ""
            for local, tname in _NAMES.items():
                names[f"{lv.name}.{d.prefix}{local}"] = f"rnn.{tname}_l{k}{suffix}"
    out = model.levels[-1]
    names[f"{out.name}.W"] = "linear.weight"
    names[f"{out.name}.b"] = "linear.bias"
    return names


def to_torch(model: Model, params: Params) -> dict[str, np.ndarray]:
    """Parameters under torch names (see torch_names)."""
    return {t: params[b] for b, t in torch_names(model).items()}


def from_torch(model: Model, tensors: dict[str, np.ndarray]) -> Params:
    """Parameters from arrays under torch names (inverse of to_torch)."""
    return {b: np.array(tensors[t]) for b, t in torch_names(model).items()}


def state_to_torch(model: Model, state: ModelState) -> tuple[np.ndarray, np.ndarray | None]:
    """(h0, c0) of shape (layers * directions, B, H); c0 is None except for LSTM."""
    _check_torch_shaped(model)
    keys = model.state_keys()
    h = np.stack([state[k][0] for k in keys])
    c = np.stack([state[k].c for k in keys]) if model.recurrent_levels[0].kind == "lstm" else None
    return h, c
