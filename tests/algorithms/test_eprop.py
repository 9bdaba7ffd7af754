"""e-prop: with the exact learning signal its eligibility-trace factorisation equals BPTT
(float64, 1e-10) for LIF and ALIF (both resets, a stopped or flowing reset gradient, refractory
steps, every surrogate), LSTM and Elman (float and token inputs, dense and leaky readouts, a
level above); the online signal runs, differs and points the same way; on a stream the carried
traces continue exactly and survive a checkpoint; what it refuses."""

import itertools

import numpy as np
import pytest

import bptt
from bptt.algorithms import eprop, make
from bptt.errors import BpttError


def problem(kind, seed=0, T=16, B=4, D=5, H=7, **opts):
    if kind == "alif":
        opts = {"adapt_strength": np.linspace(0.1, 0.5, H), "adapt_decay": 0.85, **opts}
    model = bptt.Model(
        D, [bptt.Recurrent(kind, H, **opts), bptt.RateRegularizer(0.1, 0.5), bptt.Recurrent("leaky", 3, decay=0.7)],
        at="last", window=4,
    )  # fmt: skip
    rng = np.random.default_rng(seed)
    params = model.init_params(rng)
    params[f"{kind}0.W_ih"] *= 4
    params[f"{kind}0.W_hh"] *= 2
    x = (rng.random((T, B, D)) < 0.5).astype(np.float64)
    y = rng.integers(0, 3, B)
    s0, _ = model.initial_state(params, B)
    st = s0[f"{kind}0"]
    s0[f"{kind}0"] = type(st)(*(rng.uniform(0, 0.5, a.shape) if f in ("v", "a") else a for f, a in zip(st._fields, st)))
    return model, params, x, y, s0


@pytest.mark.parametrize(
    "kind,reset,detach,surrogate",
    list(
        itertools.product(["lif", "alif"], ["subtract", "zero"], [False, True], ["fast_sigmoid", "arctan", "triangle"])
    ),
)
def test_exact_eprop_equals_bptt(kind, reset, detach, surrogate):
    slope = {"fast_sigmoid": 5.0, "arctan": 2.0, "triangle": 0.5}[surrogate]
    model, params, x, y, s0 = problem(kind, reset=reset, detach_reset=detach, surrogate=surrogate, slope=slope)
    full = bptt.full_bptt(model, params, x, y, state0=s0)
    g = eprop(model, params, x, y, state0=s0)
    rate = model.forward(params, x, state0=s0)[0]
    for k in full.grads:
        scale = max(np.abs(full.grads[k]).max(), 1e-300)
        assert np.abs(g.grads[k] - full.grads[k]).max() <= 1e-10 * scale, (k, np.abs(g.grads[k] - full.grads[k]).max())
    assert np.abs(full.grads[f"{kind}0.W_hh"]).max() > 0 and rate is not None


@pytest.mark.parametrize("kind", ["lif", "alif"])
def test_exact_eprop_with_refractory_steps_and_a_learned_decay(kind):
    model, params, x, y, s0 = problem(kind, refractory=2, learn_decay=True, surrogate_scale=0.3)
    full = bptt.full_bptt(model, params, x, y, state0=s0)
    g = make("eprop")(model, params, x, y, state0=s0)
    for k in full.grads:
        np.testing.assert_allclose(g.grads[k], full.grads[k], rtol=1e-10, atol=1e-12 * np.abs(full.grads[k]).max())


def test_online_eprop_is_an_approximation_that_points_the_same_way():
    """The online signal (the readout's error at each step, symmetric or random feedback)
    gives a gradient that differs from BPTT's; with symmetric feedback its cosine with BPTT's
    recurrent-weight gradient is positive on this case; the readout's gradient stays exact."""
    model, params, x, y, s0 = problem("alif", T=30, B=16)
    full = bptt.full_bptt(model, params, x, y, state0=s0)
    sym = make("eprop", signal="online")(model, params, x, y, state0=s0)
    rnd = make("eprop", signal="online", feedback="random", rng=1)(model, params, x, y, state0=s0)
    a, b = sym.grads["alif0.W_ih"].ravel(), full.grads["alif0.W_ih"].ravel()
    assert not np.allclose(a, b) and a @ b / np.linalg.norm(a) / np.linalg.norm(b) > 0.3
    assert not np.allclose(rnd.grads["alif0.W_ih"], sym.grads["alif0.W_ih"])
    np.testing.assert_allclose(sym.grads["leaky2.W_ih"], full.grads["leaky2.W_ih"], rtol=1e-12)


def test_what_eprop_refuses():
    model = bptt.Model(3, [bptt.rnn("gru", 4), bptt.Recurrent("leaky", 2)], at="last")
    with pytest.raises(
        BpttError, match="e-prop: expected a model whose first level is a unidirectional recurrent lif, alif, lstm"
    ):
        eprop(model, model.init_params(0), np.zeros((3, 2, 3)), np.zeros(2, int))
    with pytest.raises(BpttError, match="signal: expected one of exact, online, received 'offline'"):
        make("eprop", signal="offline")
    model = bptt.Model(3, [*bptt.rnn("lstm", 4), *bptt.rnn("gru", 4), bptt.Dense(2)], loss="mse")
    x = np.zeros((3, 2, 3))
    with pytest.raises(BpttError, match="expected the readout right above the e-prop level for the online signal"):
        make("eprop", signal="online")(model, model.init_params(0), x, np.zeros((3, 2, 2)))
    make("eprop")(model, model.init_params(0), x, np.zeros((3, 2, 2)))  # the exact signal: any levels above


def dense_problem(kind, seed=0, T=12, B=3, D=4, H=5, tokens=False, readout="dense", above=False, **opts):
    """A first level of `kind` (random non-zero biases and initial state), optionally a GRU
    level above it, and a dense (mse at every step) or leaky (cross-entropy at the end) readout."""
    levels = [bptt.Recurrent(kind, H, **opts)] + ([bptt.Recurrent("gru", 4)] if above else [])
    if readout == "dense":
        model = bptt.Model(D, [*levels, bptt.Dense(3)], loss="ce" if tokens else "mse", tokens=tokens)
    else:
        model = bptt.Model(D, [*levels, bptt.Recurrent("leaky", 3, decay=0.8)], at="last", tokens=tokens)
    rng = np.random.default_rng(seed)
    params = model.init_params(rng)
    for k in params:
        params[k] = params[k] + rng.uniform(-0.3, 0.3, params[k].shape) * (k.endswith(("b_ih", "b_hh")))
    x = rng.integers(0, D, (T, B)) if tokens else rng.standard_normal((T, B, D))
    if readout == "dense":
        y = rng.integers(0, 3, (T, B)) if tokens else rng.standard_normal((T, B, 3))
    else:
        y = rng.integers(0, 3, B)
    s0, _ = model.initial_state(params, B)
    s0 = {k: type(v)(*(rng.uniform(-0.5, 0.5, a.shape) for a in v)) for k, v in s0.items()}
    return model, params, x, y, s0


@pytest.mark.parametrize(
    "kind,opts,tokens,readout,above",
    [
        ("lstm", {}, False, "dense", False),
        ("lstm", {}, True, "dense", False),
        ("lstm", {}, False, "leaky", False),
        ("lstm", {}, False, "dense", True),
        ("elman", {}, False, "dense", False),
        ("elman", {"activation": "relu"}, False, "dense", False),
        ("elman", {}, True, "leaky", False),
        ("elman", {}, False, "dense", True),
    ],
)
def test_exact_eprop_equals_bptt_for_lstm_and_elman(kind, opts, tokens, readout, above):
    model, params, x, y, s0 = dense_problem(kind, tokens=tokens, readout=readout, above=above, **opts)
    full = bptt.full_bptt(model, params, x, y, state0=s0)
    g = make("eprop")(model, params, x, y, state0=s0)
    assert g.loss == full.loss
    for k in full.grads:
        scale = max(np.abs(full.grads[k]).max(), 1e-300)
        assert np.abs(g.grads[k] - full.grads[k]).max() <= 1e-10 * scale, (k, np.abs(g.grads[k] - full.grads[k]).max())
    assert np.abs(full.grads[f"{kind}0.W_hh"]).max() > 1e-3


def test_the_lstm_trace_is_needed():
    """The LSTM's cell-state trace matters: with eps reset every step (no trace), the exact
    signal no longer gives BPTT's recurrent gradient."""
    import importlib

    ep = importlib.import_module("bptt.algorithms.eprop")

    model, params, x, y, s0 = dense_problem("lstm")
    full = bptt.full_bptt(model, params, x, y, state0=s0)
    real = ep._step_traces

    def no_trace(cell, ch, u, tr, lif):
        tr["eps"][...] = 0.0
        return real(cell, ch, u, tr, lif)

    ep._step_traces = no_trace
    try:
        g = eprop(model, params, x, y, state0=s0)
    finally:
        ep._step_traces = real
    assert (
        np.abs(g.grads["lstm0.W_hh"] - full.grads["lstm0.W_hh"]).max() > 1e-3 * np.abs(full.grads["lstm0.W_hh"]).max()
    )


@pytest.mark.parametrize("kind", ["lstm", "elman", "alif"])
def test_online_eprop_on_a_stream_continues_its_traces(kind):
    """The online signal is local in time, so two calls on the halves of a sequence (state and
    traces carried) give the gradient of one call on the whole; a checkpoint's history restored
    into a new EProp continues the stream bitwise."""
    if kind == "alif":  # a leaky readout with a loss at every step (its traces filtered by the decay)
        opts = {"adapt_strength": np.linspace(0.1, 0.5, 7), "adapt_decay": 0.85}
        model = bptt.Model(5, [bptt.Recurrent("alif", 7, **opts), bptt.Recurrent("leaky", 3, decay=0.7)])
        rng = np.random.default_rng(0)
        params = model.init_params(rng)
        params["alif0.W_ih"] *= 4
        x, y = (rng.random((16, 4, 5)) < 0.5).astype(np.float64), rng.integers(0, 3, (16, 4))
        s0 = model.initial_state(params, 4)[0]
    else:
        model, params, x, y, s0 = dense_problem(kind, T=16)
    whole = make("eprop", signal="online", feedback="random", rng=5)(model, params, x, y, state0=s0)
    algo = make("eprop", signal="online", feedback="random", rng=5)
    g1 = algo(model, params, x[:8], y[:8], state0=s0)
    desc, arrays = algo.history()
    g2 = algo(model, params, x[8:], y[8:])
    k = f"{model.levels[0].name}.W_hh"
    np.testing.assert_allclose(g1.grads[k] + g2.grads[k], 2 * whole.grads[k], rtol=1e-10, atol=1e-14)
    again = make("eprop", signal="online", feedback="random", rng=99)  # its own feedback replaced by the stored one
    again.restore(model, g1.final_state, desc, arrays, params)
    g3 = again(model, params, x[8:], y[8:])
    for key in g2.grads:
        assert np.array_equal(g2.grads[key], g3.grads[key]), key
    with pytest.raises(BpttError, match="alg/eprop/.*expected finite float64 of shape"):
        bad = dict(arrays)
        first = sorted(bad)[0]
        bad[first] = bad[first][:1]
        again.restore(model, g1.final_state, desc, bad, params)


def test_online_eprop_for_lstm_points_the_same_way():
    model, params, x, y, s0 = dense_problem("lstm", T=30, B=16, H=8)
    full = bptt.full_bptt(model, params, x, y, state0=s0)
    g = make("eprop", signal="online")(model, params, x, y, state0=s0)
    a, b = g.grads["lstm0.W_ih"].ravel(), full.grads["lstm0.W_ih"].ravel()
    assert not np.allclose(a, b) and a @ b / np.linalg.norm(a) / np.linalg.norm(b) > 0.5
    np.testing.assert_allclose(g.grads["dense1.W"], full.grads["dense1.W"], rtol=1e-12)


@pytest.mark.parametrize(
    "levels",
    [
        ["elman", ("dense", "tanh")],
        ["lstm", ("dense", "sigmoid")],
        ["lif", ("rate", 50.0), ("dense", "identity")],
        ["alif", ("rate", 5.0), ("leaky", 0.7)],
    ],
    ids=["elman-tanh-readout", "lstm-sigmoid-readout", "lif-rate-regulariser", "alif-rate-leaky"],
)
def test_online_eprop_is_exact_where_units_meet_only_through_the_readout(levels):
    """With W_hh = 0 each unit's future depends on its own state alone, so the online signal
    (the readout's loss gradient at t through its activation, plus the rate regularisers'
    pull on z(t)) is dE/dz(t) itself and online e-prop equals BPTT (Bellec et al. 2020):
    a readout's activation and a rate regulariser each count (both were left out)."""
    rng = np.random.default_rng(41)
    T, B, D, H, K = 8, 2, 3, 4, 2
    kind, *above = levels
    spiking = kind in ("lif", "alif")
    opts = {"threshold": 0.5} if spiking else {}
    made = [bptt.rnn(kind, H, **opts)]
    for what, v in above:
        if what == "dense":
            made.append(bptt.Dense(K, v))
        elif what == "rate":
            made.append(bptt.RateRegularizer(0.0, v))
        else:
            made.append(bptt.rnn("leaky", K, decay=v))
    model = bptt.Model(D, made, loss="mse")
    params = {k: rng.uniform(-0.8, 0.8, v.shape) for k, v in model.init_params(rng).items()}
    params[f"{kind}0.W_hh"][:] = 0.0
    x = (rng.random((T, B, D)) < 0.5) * 1.5 if spiking else rng.standard_normal((T, B, D))
    y = rng.standard_normal((T, B, K))
    full = bptt.full_bptt(model, params, x, y)
    online = eprop(model, params, x, y, signal="online")
    for k in (f"{kind}0.W_ih", f"{kind}0.b_ih"):
        np.testing.assert_allclose(online.grads[k], full.grads[k], rtol=1e-9, atol=1e-12, err_msg=k)


def test_online_eprop_refuses_a_leaky_readout_of_unequal_decays():
    """The online signal filters the traces by one decay: a readout whose units decay at
    different rates is refused (one line) rather than filtered by their mean."""
    model = bptt.Model(3, [bptt.rnn("lif", 4), bptt.rnn("leaky", 2, decay=[0.3, 0.95])], loss="mse")
    params = model.init_params(0)
    x, y = np.ones((5, 2, 3)), np.zeros((5, 2, 2))
    with pytest.raises(BpttError, match="expected a leaky readout with one decay for all its units"):
        eprop(model, params, x, y, signal="online")
    eprop(model, params, x, y, signal="exact")
