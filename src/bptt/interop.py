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

from typing import Any

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


def from_torch(model: Model, tensors: dict[str, Any], readout: dict[str, Any] | None = None) -> Params:
    """Parameters from torch's arrays (inverse of to_torch). `tensors` may use this module's
    names ('rnn.weight_ih_l0', 'linear.weight'), or be a bare `nn.RNN/GRU/LSTM.state_dict()`
    ('weight_ih_l0', ...) with the readout's `nn.Linear.state_dict()` in `readout`. Tensors
    (anything with .numpy() or __array__) become NumPy arrays of the dtype they hold; a missing
    or misshapen entry is one BpttError naming it."""
    names = torch_names(model)
    merged = {k if k.startswith(("rnn.", "linear.")) else f"rnn.{k}": v for k, v in tensors.items()}
    merged.update({f"linear.{k}": v for k, v in (readout or {}).items()})
    missing = [t for t in names.values() if t not in merged]
    if missing:
        raise BpttError(
            f"from_torch: expected the torch entries {missing} (a bare nn.{_TORCH[model.recurrent_levels[0].kind]} "
            f"state_dict needs the readout's nn.Linear state_dict as readout=), received {sorted(tensors)[:8]}"
        )
    shapes = model.param_shapes()
    out = {}
    for b, t in names.items():
        v = merged[t]
        a = np.array(v.detach().cpu().numpy() if hasattr(v, "detach") else v)
        if a.shape != tuple(shapes[b]):
            raise BpttError(f"from_torch: {t}: expected shape {tuple(shapes[b])} (bptt's {b}), received {a.shape}")
        out[b] = a
    return out


_TORCH = {"elman": "RNN", "gru": "GRU", "lstm": "LSTM"}


def state_to_torch(model: Model, state: ModelState) -> tuple[np.ndarray, np.ndarray | None]:
    """(h0, c0) of shape (layers * directions, B, H); c0 is None except for LSTM."""
    _check_torch_shaped(model)
    keys = model.state_keys()
    h = np.stack([state[k][0] for k in keys])
    c = np.stack([state[k].c for k in keys]) if model.recurrent_levels[0].kind == "lstm" else None
    return h, c


def state_from_torch(model: Model, h: Any, c: Any = None) -> ModelState:
    """The state for bptt from torch's (h0, c0) of shape (layers * directions, B, H) (inverse
    of state_to_torch; c0 only for LSTM)."""
    _check_torch_shaped(model)
    keys = model.state_keys()
    h = np.asarray(h.detach().cpu().numpy() if hasattr(h, "detach") else h)
    lstm = model.recurrent_levels[0].kind == "lstm"
    if h.ndim != 3 or h.shape[0] != len(keys) or (lstm and c is None) or (not lstm and c is not None):
        raise BpttError(
            f"state_from_torch: expected h0{' and c0' if lstm else ''} of shape ({len(keys)}, B, H), "
            f"received h0 of shape {h.shape}" + ("" if lstm else " and a c0" if c is not None else "")
        )
    if lstm:
        c = np.asarray(c.detach().cpu().numpy() if hasattr(c, "detach") else c)
        if c.shape != h.shape:
            raise BpttError(f"state_from_torch: expected c0 of the shape of h0 {h.shape}, received {c.shape}")
    out = {}
    for i, k in enumerate(keys):
        cls = model.recurrent_levels[0].directions[0].cell.State
        out[k] = cls(h[i].copy(), c[i].copy()) if lstm else cls(h[i].copy())
    return out
