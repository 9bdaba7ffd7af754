"""A NaN or inf that enters a step comes out as NaN (or a clear error), in float32 exactly as in
float64, on every path a step can take: the NumPy reference, the per-step kernels with Python
time loops, the whole compiled scans (TBPTT's segments), and the thread engine's split scans in
one and in two parts. (Kernels built with fast-math's no-NaN assumption turned an all-NaN W_hh
into a finite loss.)"""

import numpy as np
import pytest

import bptt
from bptt import fast
from bptt.algorithms import tbptt
from bptt.errors import BpttError
from bptt.fast import engine, rows
from bptt.generate import forecast, sample_text

CELLS = ("elman", "jordan", "gru", "lstm")
PATHS = ("float64", "numpy", "steps", "scans", "engine1", "engine2")


def _path(name: str):
    if name in ("float64", "numpy"):
        return fast.use(name == "float64")  # float64 never uses a kernel anyway
    if name == "steps":
        return fast.use(True, scans=False)
    if name == "scans":
        return fast.use(True, scans=True)
    if not fast.available()["split"]:
        pytest.skip("no split scans here")
    return engine.split(1 if name == "engine1" else 2)


def _problem(cell: str, dtype, where: str, value: float):
    model = bptt.Model(13, [bptt.rnn(cell, 32), bptt.Dense(13)], tokens=True, loss="ce")
    p = model.init_params(np.random.default_rng(0), dtype=dtype)
    key = {"W_hh": f"{cell}0.W_hh", "bias": f"{cell}0.b_ih", "readout": "dense1.W"}[where]
    if key not in p:  # Jordan's recurrent weight has another name
        key = next(k for k in p if k.startswith(f"{cell}0.W") and k != f"{cell}0.W_ih")
    p[key].flat[3] = value
    rng = np.random.default_rng(1)
    x = rng.integers(0, 13, size=(12, 4))
    return model, p, x, np.roll(x, -1, 0)


def _run(path, model, p, x, y):
    with _path(path):
        if path == "scans":  # the unsplit compiled scans serve TBPTT's segments
            return tbptt(model, p, x, y, 12, 12)[1]
        return bptt.full_bptt(model, p, x, y)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("where", ["W_hh", "bias", "readout"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_a_nonfinite_weight_gives_what_float64_gives_on_every_path(cell, path, where, value):
    """NaN: a NaN loss and NaN in the gradient. inf: what the float64 reference gives (tanh(inf)
    = 1 is a finite, correct answer; inf - inf is NaN)."""
    dtype = np.float64 if path == "float64" else np.float32
    model, p, x, y = _problem(cell, dtype, where, value)
    g = _run(path, model, p, x, y)
    model64, p64, _, _ = _problem(cell, np.float64, where, value)
    ref = _run("float64", model64, p64, x, y)
    if np.isnan(value):
        assert np.isnan(ref.loss)
    assert np.isnan(g.loss) == np.isnan(ref.loss), (cell, path, where, value, g.loss, ref.loss)
    for k in ref.grads:
        np.testing.assert_array_equal(np.isfinite(g.grads[k]), np.isfinite(ref.grads[k]), err_msg=k)


@pytest.mark.parametrize("path", PATHS)
def test_the_float32_and_float64_losses_are_nan_in_the_same_cases(path):
    """One NaN in the middle of a long run of steps: both dtypes NaN from that weight on."""
    for cell in ("gru", "lstm", "elman"):
        losses = []
        for dtype in (np.float32, np.float64):
            model, p, x, y = _problem(cell, dtype, "W_hh", np.nan)
            with _path("float64" if dtype == np.float64 else path):
                losses.append(bptt.full_bptt(model, p, x, y).loss)
        assert np.isnan(losses).all(), (cell, losses)


def test_tbptt_refuses_to_go_on_from_a_nan_state():
    model, p, x, y = _problem("gru", np.float32, "W_hh", np.nan)
    with pytest.raises(BpttError, match="tbptt: expected a finite state carried from the previous segment"):
        tbptt(model, p, x, y, 6, 6)


def test_the_compiled_softmax_cross_entropy_keeps_nan_and_inf():
    if not fast.available()["kernels"]:
        pytest.skip("no kernels")
    y = np.zeros((3, 5), np.float32)
    y[0, 2], y[1, 0], y[2, 4] = np.nan, np.inf, -np.inf
    t = np.array([0, 1, 2])
    d = np.empty_like(y)
    total = rows.softmax_xent(y[:1], t[:1], np.float32(1), d[:1])
    assert np.isnan(total) and np.isnan(d[0]).all()
    assert np.isnan(rows.softmax_xent(y[1:2], t[1:2], np.float32(1), d[1:2]))  # inf - inf
    assert np.isfinite(rows.softmax_xent(y[2:], t[2:], np.float32(1), d[2:]))  # exp(-inf) = 0: finite, as NumPy


def test_the_kernels_elementwise_functions_keep_nan():
    if not fast.available()["kernels"]:
        pytest.skip("no numba")
    a = np.array([np.nan, np.inf, -np.inf, 0.5], np.float32)
    out = np.empty_like(a)
    rows.tanh_(a, out)
    np.testing.assert_array_equal(out[:3], [np.nan, 1.0, -1.0])
    rows.exp_(np.array([np.nan], np.float32), out[:1])
    assert np.isnan(out[0])


def test_sampling_and_forecasting_refuse_nonfinite_weights_and_history():
    model = bptt.Model(5, [bptt.rnn("gru", 8), bptt.Dense(5)], tokens=True, loss="ce")
    p = model.init_params(np.random.default_rng(0), dtype=np.float32)
    p["gru0.W_hh"][0, 0] = np.nan
    with pytest.raises(BpttError, match=r"params\['gru0.W_hh'\]: expected finite values, received NaN or inf"):
        sample_text(model, p, bptt.data.Vocab("abcde"), length=5)
    series = bptt.Model(1, [bptt.rnn("lstm", 8), bptt.Dense(1)], loss="mse")
    q = series.init_params(np.random.default_rng(0), dtype=np.float64)
    with pytest.raises(BpttError, match="history: expected finite values"):
        forecast(series, q, np.array([0.1, np.nan, 0.2]), 3)
    q["dense1.b"][0] = np.inf
    with pytest.raises(BpttError, match="dense1.b"):
        forecast(series, q, np.array([0.1, 0.2]), 3)


def test_inputs_and_initial_states_with_nan_are_refused_at_the_entry():
    model = bptt.Model(3, [bptt.rnn("lstm", 4), bptt.Dense(2)], loss="mse")
    p = model.init_params(np.random.default_rng(0), dtype=np.float32)
    x = np.zeros((5, 2, 3), np.float32)
    x[2, 1, 0] = np.nan
    with pytest.raises(BpttError, match="x: expected finite values, received NaN or inf"):
        bptt.full_bptt(model, p, x, np.zeros((5, 2, 2), np.float32))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("kind", ["lif", "alif"])
@pytest.mark.parametrize("surrogate", ["fast_sigmoid", "arctan", "triangle"])
@pytest.mark.parametrize("refractory", [0, 2])
def test_a_nan_weight_of_a_spiking_level_gives_nan_gradients_as_float64_does(kind, surrogate, refractory):
    """The compiled spiking backward keeps a NaN where the reference does: the triangle
    surrogate's max(0, NaN) gave 0, and a refractory step set its error to 0 instead of
    multiplying it by 0 (NaN * 0 is NaN)."""
    B, T, H = 2, 2, 3
    model = bptt.Model(
        3,
        [bptt.Recurrent(kind, H, surrogate=surrogate, refractory=refractory), bptt.Recurrent("leaky", 2)],
        at="every",
        loss="mse",
    )
    grads = {}
    for name, dtype, on in (("float64", np.float64, False), ("compiled", np.float32, True)):
        p = model.init_params(np.random.default_rng(0), dtype)
        p[f"{kind}0.W_ih"][0, 0] = np.nan
        x, y = np.ones((T, B, 3), dtype), np.zeros((T, B, 2), dtype)
        s0, _ = model.initial_state(p, B)
        st = s0[f"{kind}0"]
        s0[f"{kind}0"] = st._replace(z=np.tile(np.array([0.0, 1.0, 0.0], dtype), (B, 1)))  # a unit just fired
        with fast.use(on):
            grads[name] = bptt.full_bptt(model, p, x, y, state0=s0)
    ref, got = grads["float64"], grads["compiled"]
    for k in ref.grads:
        np.testing.assert_array_equal(np.isnan(got.grads[k]), np.isnan(ref.grads[k]), err_msg=k)
    for a, b in zip(got.dstate0[f"{kind}0"], ref.dstate0[f"{kind}0"]):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
