"""Running a trained model forward on its own outputs: text sampling and iterated forecasting."""

from __future__ import annotations

import numpy as np

from .cells.base import Params
from .data.series import future_rows
from .data.text import Vocab
from .errors import BpttError
from .model import Model


def _finite_params(params: Params) -> None:
    """A NaN weight would give NaN logits, and text or a forecast drawn from them: refuse it."""
    for k, v in params.items():
        if not np.isfinite(v).all():
            raise BpttError(f"params[{k!r}]: expected finite values, received NaN or inf")


def _probabilities(logits: np.ndarray, temperature: float, top_k: int | None) -> np.ndarray:
    z = logits.astype(np.float64)
    if top_k is not None and top_k < len(z):
        cut = np.partition(z, -top_k)[-top_k]
        z = np.where(z >= cut, z, -np.inf)
    # the maximum off before the temperature (at most 0 after: a temperature of 1e-320 divided
    # first made inf - inf = NaN)
    with np.errstate(over="ignore"):
        z = (z - z.max()) / temperature
    p = np.exp(z)
    return p / p.sum()


def sample_text(
    model: Model,
    params: Params,
    vocab: Vocab,
    prime: str = "",
    length: int = 500,
    temperature: float = 1.0,
    top_k: int | None = None,
    rng: np.random.Generator | None = None,
) -> str:
    """Prime the state on `prime` (encoded by the vocabulary: unknown characters skipped, unknown
    words as <unk>), then draw `length` tokens (characters or words), each from
    softmax(logits / temperature) restricted to the top_k most likely."""
    if not model.tokens or model.loss_fn.kind != "ce":
        raise BpttError("sample: expected a character model (token inputs, 'ce' loss), received another kind")
    if not temperature > 0:
        raise BpttError(f"temperature: expected a number > 0, received {temperature!r}")
    if top_k is not None and not (isinstance(top_k, int) and top_k >= 1):
        raise BpttError(f"top_k: expected a positive integer, received {top_k!r}")
    if not (isinstance(length, int) and length >= 0):
        raise BpttError(f"length: expected a non-negative integer, received {length!r}")
    if not len(vocab) == model.input_size == model.output_size:
        raise BpttError(
            f"vocab: expected {model.input_size} tokens (the model's inputs and outputs), received {len(vocab)}"
        )
    _finite_params(params)
    rng = rng or np.random.default_rng()
    ids, _ = vocab.encode(prime)
    if prime and len(ids) == 0:
        raise BpttError(
            f"prime: expected text with at least one of the run's {len(vocab)} tokens, received {prime[:40]!r} "
            "(none of it known: the sample would ignore it)"
        )
    if len(ids) == 0:  # start from a line's end (a newline, or <eos>) where the vocabulary has one
        ids = np.array([vocab.start()], np.int32)
    state = model.initial_state(params, 1)[0]
    y, state = model.forward(params, ids[:, None], state0=state)
    logits = y[-1, 0]
    out = []
    for _ in range(length):
        k = int(rng.choice(len(vocab), p=_probabilities(logits, temperature, top_k)))
        out.append(k)
        y_t, state = model.step(params, state, np.array([k]))
        logits = y_t[0]
    return vocab.decode(out)


def forecast(model: Model, params: Params, history: np.ndarray, horizon: int) -> np.ndarray:
    """Iterated forecast: run the model over `history` (normalised values, (T,)), then feed each
    one-step prediction back as the next input. Returns `horizon` predictions (normalised)."""
    if model.tokens or model.loss_fn.kind != "mse" or model.input_size != 1 or model.output_size != 1:
        raise BpttError(
            "forecast: expected a univariate series model (1 input, 1 output, 'mse'), received another kind"
        )
    return forecast_columns(model, params, np.asarray(history)[:, None], horizon, [0])[:, 0]


def forecast_columns(
    model: Model,
    params: Params,
    history: np.ndarray,
    horizon: int,
    feedback: list[int],
    future: np.ndarray | None = None,
) -> np.ndarray:
    """Iterated forecast of a model of several columns: run it over `history` (normalised
    inputs, (T, D)), then build each next input row from its last prediction: input column i is
    output feedback[i] when that is >= 0, else future[h - 1, i] (a column the model does not
    predict: its values after the history, (>= horizon - 1, D)). Returns (horizon, K)
    predictions (normalised)."""
    if model.tokens or model.loss_fn.kind != "mse":
        raise BpttError("forecast: expected a series model (real inputs, 'mse'), received another kind")
    if not (isinstance(horizon, (int, np.integer)) and horizon >= 1):
        raise BpttError(f"horizon: expected a positive integer, received {horizon!r}")
    D, K = model.input_size, model.output_size
    fb = np.asarray(feedback, int)
    if fb.shape != (D,) or not ((fb >= -1) & (fb < K)).all():
        raise BpttError(f"feedback: expected {D} output indices in [-1, {K}), received {list(feedback)!r}")
    dtype = model.check_params(params)
    _finite_params(params)
    x = np.asarray(history, dtype)
    if x.ndim != 2 or x.shape[1] != D or len(x) == 0:
        raise BpttError(f"history: expected an array (T, {D}) of normalised inputs, received shape {x.shape}")
    own = fb >= 0
    future = future_rows(future, horizon, ~own)
    if future is not None:
        future = future.astype(dtype)
    if not np.isfinite(x).all():
        raise BpttError("history: expected finite values, received NaN or inf")
    y, state = model.forward(params, x[:, None, :])
    preds = np.empty((horizon, K), dtype)
    preds[0] = y[-1, 0]
    for h in range(1, horizon):
        row = np.empty((1, D), dtype)
        if not own.all():
            row[0, ~own] = future[h - 1, ~own]
        row[0, own] = preds[h - 1, fb[own]]
        y_t, state = model.step(params, state, row)
        preds[h] = y_t[0]
    return preds
