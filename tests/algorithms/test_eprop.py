"""e-prop on spiking levels: with the exact learning signal its eligibility-trace factorisation
equals BPTT (float64, 1e-10) for LIF and ALIF, both resets, a stopped or flowing reset
gradient, refractory steps and every surrogate; the online signal runs and differs; what it
refuses."""

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
    model = bptt.Model(3, [bptt.rnn("lstm", 4), bptt.Recurrent("leaky", 2)], at="last")
    with pytest.raises(
        BpttError, match="e-prop: expected a model whose first level is a unidirectional recurrent lif or alif level"
    ):
        eprop(model, model.init_params(0), np.zeros((3, 2, 3)), np.zeros(2, int))
    with pytest.raises(BpttError, match="signal: expected one of exact, online, received 'offline'"):
        make("eprop", signal="offline")
