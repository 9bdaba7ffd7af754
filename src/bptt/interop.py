"""Exchanging weights and states with torch.nn.RNN / GRU / LSTM (+ nn.Linear), as NumPy arrays.

bptt's cells use torch's parametrisation exactly (gate order, both biases, (G, D) weight layout),
so the mapping is only a renaming:

    '<level>.W_ih'          <-> 'weight_ih_l{k}'          '<level>.reverse.W_ih' <-> '..._reverse'
    '<level>.W_hh'          <-> 'weight_hh_l{k}'
    '<level>.b_ih'          <-> 'bias_ih_l{k}'
    '<level>.b_hh'          <-> 'bias_hh_l{k}'
    '<dense>.W', '<dense>.b' <-> the Linear readout's 'weight', 'bias'
    '<embed>.W'              <-> an nn.Embedding's 'weight' (V, E), where a model on tokens has one

where k counts the recurrent levels. A model on integer tokens without an Embedding level
corresponds to torch fed with one-hot vectors (W_ih is (G, vocabulary) in both). Initial states
map to torch's h0 / c0 of shape (layers * directions, B, H), ordered layer-major, forward
direction first. `torch_spec` describes the torch modules (and their keyword arguments) that
take these names. No torch import here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .cells import CELLS
from .cells.base import Params
from .errors import BpttError
from .layers import Dense, Embedding
from .model import Model, ModelState

_NAMES = {"W_ih": "weight_ih", "W_hh": "weight_hh", "b_ih": "bias_ih", "b_hh": "bias_hh"}
PREFIXES = {"embedding": "embedding.", "rnn": "rnn.", "linear": "linear."}  # torch module -> name prefix
TORCH_MODULES = {"elman": "RNN", "gru": "GRU", "lstm": "LSTM"}
EXPECTED = (
    "a model of N identical Elman/GRU/LSTM levels (Elman with tanh or relu, no learned initial state, no zoneout; "
    "on tokens, one Embedding level may come first) followed by one linear Dense level"
)


def _kept(model: Model) -> list:
    """The model's levels but its Dropout levels (the identity outside training, as torch's
    modules in eval mode): the ones torch's modules stand for."""
    return [lv for lv in model.levels if lv.kind != "dropout"]


def torch_problem(model: Model) -> str | None:
    """What keeps `model` from being torch's [nn.Embedding ->] nn.RNN/GRU/LSTM -> nn.Linear, in a
    few words ('a jordan level jordan0', ...); None when nothing does. Dropout levels are
    passed over (`_kept`)."""
    levels = _kept(model)
    first = 1 if levels and isinstance(levels[0], Embedding) else 0
    rec = model.recurrent_levels
    if not rec:
        return "no recurrent level"
    for lv in rec:
        if lv.kind not in TORCH_MODULES or lv.cell_type is not CELLS[lv.kind]:
            return f"a {lv.kind!r} level {lv.name} ({lv.cell_type.__name__})"
        extra = set(lv.cell_options) - ({"activation"} if lv.kind == "elman" else set())
        if extra:
            return f"the cell options {sorted(extra)} of {lv.name}"
        if lv.kind == "elman" and _nonlinearity(lv) not in ("tanh", "relu"):
            return f"an Elman level {lv.name} with activation {_nonlinearity(lv)!r}"
        if lv.learn_init:
            return f"learned initial states in {lv.name}"
        zoned = {f: z for f, z in getattr(lv, "zoneout", {}).items() if z}
        if zoned:  # its evaluation step mixes the previous state in: not torch's cell
            return f"zoneout {zoned} in {lv.name}"
    for i, lv in enumerate(levels[first : first + len(rec)], first):
        if not lv.recurrent:
            return f"the {type(lv).__name__} level {lv.name} at position {i}, before or between the recurrent levels"
    sigs = {(lv.kind, lv.size, lv.bidirectional, _nonlinearity(lv)) for lv in rec}
    if len(sigs) > 1:
        return "recurrent levels that differ: " + ", ".join(
            f"{lv.name} ({lv.kind}, {lv.size}{', bidirectional' if lv.bidirectional else ''}"
            f"{', ' + _nonlinearity(lv) if _nonlinearity(lv) else ''})"
            for lv in rec
        )
    after = levels[first + len(rec) :]
    if len(after) != 1 or not isinstance(after[0], Dense):
        got = ", ".join(f"{type(lv).__name__} {lv.name}" for lv in after) or "nothing"
        return f"{got} after the recurrent levels"
    if after[0].activation.name != "identity":
        return f"a Dense readout {after[0].name} with activation {after[0].activation.name!r}"
    return None


def _nonlinearity(lv) -> str | None:
    """An Elman level's activation (torch's nonlinearity); None for the gated cells."""
    return lv.directions[0].cell.activation.name if lv.kind == "elman" else None


def _check_torch_shaped(model: Model, where: str = "interop") -> None:
    problem = torch_problem(model)
    if problem is not None:
        raise BpttError(f"{where}: expected {EXPECTED}, received {problem}")


def torch_names(model: Model) -> dict[str, str]:
    """bptt parameter name -> torch name ('rnn.<name>' for the recurrent module,
    'linear.<name>' for the readout, 'embedding.weight' for an Embedding level)."""
    _check_torch_shaped(model)
    names = {}
    levels = _kept(model)
    if isinstance(levels[0], Embedding):
        names[f"{levels[0].name}.W"] = "embedding.weight"
    for k, lv in enumerate(model.recurrent_levels):
        for d in lv.directions:
            suffix = "_reverse" if d.reverse else ""
            for local, tname in _NAMES.items():
                names[f"{lv.name}.{d.prefix}{local}"] = f"rnn.{tname}_l{k}{suffix}"
    out = levels[-1]
    if getattr(out, "tie", None) is None:  # (tied: linear.weight is embedding.weight, see to_torch)
        names[f"{out.name}.W"] = "linear.weight"
    names[f"{out.name}.b"] = "linear.bias"
    return names


def _tied(model: Model) -> bool:
    return getattr(_kept(model)[-1], "tie", None) is not None


def torch_spec(model: Model) -> dict[str, Any]:
    """The torch modules that hold the model's parameters under torch_names' names, as plain
    JSON-able values: the architecture (cell, input_size of the recurrent module, hidden_size,
    num_layers, bidirectional, nonlinearity for Elman, output_size, how inputs come in), the
    name prefixes, and each module's class and keyword arguments ('torch'), so that

        nn.ModuleDict({m: getattr(nn, s["module"])(**s["kwargs"]) for m, s in spec["torch"].items()})

    loads to_torch's arrays with load_state_dict(strict=True). Sequences are time-major
    (batch_first=False) as in bptt."""
    _check_torch_shaped(model)
    rec = model.recurrent_levels
    lv = rec[0]
    first = _kept(model)[0]
    emb = first if isinstance(first, Embedding) else None
    nonlinearity = _nonlinearity(lv)
    rnn_kwargs: dict[str, Any] = {
        "input_size": lv.input_size,
        "hidden_size": lv.size,
        "num_layers": len(rec),
        "bidirectional": lv.bidirectional,
    }
    if nonlinearity:
        rnn_kwargs["nonlinearity"] = nonlinearity
    torch_mods: dict[str, Any] = {}
    if emb is not None:
        torch_mods["embedding"] = {
            "module": "Embedding",
            "kwargs": {"num_embeddings": model.input_size, "embedding_dim": emb.size},
        }
    torch_mods["rnn"] = {"module": TORCH_MODULES[lv.kind], "kwargs": rnn_kwargs}
    torch_mods["linear"] = {
        "module": "Linear",
        "kwargs": {"in_features": lv.output_size, "out_features": model.output_size},
    }
    return {
        "cell": lv.kind,
        "input_size": lv.input_size,
        "hidden_size": lv.size,
        "num_layers": len(rec),
        "bidirectional": lv.bidirectional,
        "nonlinearity": nonlinearity,
        "output_size": model.output_size,
        "input": "embedding" if emb is not None else "one-hot" if model.tokens else "float",
        "vocab_size": model.input_size if model.tokens else None,
        "embedding_dim": emb.size if emb is not None else None,
        "tie_weights": _tied(model),
        "batch_first": False,
        "prefixes": {m: PREFIXES[m] for m in torch_mods},
        "torch": torch_mods,
    }


def to_torch(model: Model, params: Params) -> dict[str, np.ndarray]:
    """Parameters under torch names (see torch_names). With tied weights linear.weight is the
    embedding's array, as in a torch model with `linear.weight = embedding.weight`."""
    out = {t: params[b] for b, t in torch_names(model).items()}
    if _tied(model):
        out["linear.weight"] = out["embedding.weight"]
    return out


def from_torch(model: Model, tensors: dict[str, Any], readout: dict[str, Any] | None = None) -> Params:
    """Parameters from torch's arrays (inverse of to_torch). `tensors` may use this module's
    names ('rnn.weight_ih_l0', 'linear.weight'), or be a bare `nn.RNN/GRU/LSTM.state_dict()`
    ('weight_ih_l0', ...) with the readout's `nn.Linear.state_dict()` in `readout`. Tensors
    (anything with .numpy() or __array__) become NumPy arrays of the dtype they hold, float32 or
    float64, one for all; a missing, extra (a deeper network's layer), misshapen, other-typed or
    non-finite entry is one BpttError naming it."""
    names = torch_names(model)
    merged = {k if k.startswith(tuple(PREFIXES.values())) else f"rnn.{k}": v for k, v in tensors.items()}
    merged.update({f"linear.{k}": v for k, v in (readout or {}).items()})
    missing = [t for t in names.values() if t not in merged]
    if missing:
        raise BpttError(
            f"from_torch: expected the torch entries {missing} (a bare nn.{TORCH_MODULES[model.recurrent_levels[0].kind]} "
            f"state_dict needs the readout's nn.Linear state_dict as readout=), received {sorted(tensors)[:8]}"
        )
    extra = sorted(set(merged) - set(names.values()) - ({"linear.weight"} if _tied(model) else set()))
    if extra:
        raise BpttError(
            f"from_torch: expected only the entries of the model's torch modules ({len(names)}), received also {extra[:8]}"
            f"{' and more' if len(extra) > 8 else ''} (another depth, direction or module?)"
        )
    merged = {t: _array(t, v) for t, v in merged.items()}
    dtypes = sorted({str(a.dtype) for a in merged.values()})
    if len(dtypes) > 1:
        raise BpttError(f"from_torch: expected one dtype for all entries, received {dtypes}")
    if _tied(model) and "linear.weight" in merged:  # a tied torch model's state_dict holds the table twice
        lin, emb = merged["linear.weight"], merged["embedding.weight"]
        if lin.shape != emb.shape or not np.array_equal(lin, emb):
            raise BpttError(
                "from_torch: expected linear.weight equal to embedding.weight (the model ties them), received other values"
            )
    shapes = model.param_shapes()
    out = {}
    for b, t in names.items():
        a = merged[t]
        if a.shape != tuple(shapes[b]):
            raise BpttError(f"from_torch: {t}: expected shape {tuple(shapes[b])} (bptt's {b}), received {a.shape}")
        out[b] = a
    return out


def _array(name: str, v: Any) -> np.ndarray:
    """A torch tensor or array-like entry as a float32 or float64 NumPy array of its own, finite;
    else one BpttError naming the entry (a torch dtype NumPy lacks, bfloat16, is named, not a
    TypeError from .numpy())."""
    if hasattr(v, "detach"):
        v = v.detach().cpu()
        kind = str(getattr(v, "dtype", "")).replace("torch.", "")
        if kind not in ("float32", "float64"):
            raise BpttError(f"from_torch: {name}: expected float32 or float64 values, received {kind}")
        v = v.numpy()
    try:
        a = np.array(v)
    except (TypeError, ValueError) as e:
        raise BpttError(
            f"from_torch: {name}: expected an array of numbers, received {type(v).__name__} ({e})"
        ) from None
    if a.dtype not in (np.float32, np.float64):
        raise BpttError(f"from_torch: {name}: expected float32 or float64 values, received {a.dtype}")
    if not np.isfinite(a).all():
        raise BpttError(
            f"from_torch: {name}: expected finite values, received {int((~np.isfinite(a)).sum())} NaN or inf"
        )
    return a


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
