"""Gradient-flow diagnostics are exact: the error signal at every step equals full BPTT's
initial-state gradient of the rest of the sequence; each lag's part of the recurrent weight
gradient adds up, lag by lag, to what TBPTT(1, k) keeps and in all to full BPTT's; the norm of
dS(T)/dS(t) by lag equals central differences (smooth cells) or the explicit product of the
step Jacobians built from VJPs (spiking cells); spectral radius and largest singular value of
each step Jacobian likewise."""

import numpy as np
import pytest

import bptt
from bptt.algorithms import make
from bptt.algorithms.forward import _Flat, _Step
from bptt.diagnostics import random_problem
from bptt.diagnostics.flow import flow
from bptt.errors import BpttError

SMOOTH = [
    ("elman", {}),
    ("elman", {"activation": "relu"}),
    ("jordan", {}),
    ("gru", {}),
    ("lstm", {}),
]


def _model(kind, opts, layers=1, tokens=False):
    return bptt.Model(3, [*bptt.rnn(kind, 4, layers, **opts), bptt.Dense(2)], loss="ce", tokens=tokens)


def _forward(model, params, x, state):
    return model.forward_levels(params, x, None, state, keep=False)[1]


@pytest.mark.parametrize("kind,opts", SMOOTH, ids=[f"{k}{o}" for k, o in SMOOTH])
def test_error_signal_is_the_rest_of_the_sequences_state_gradient(kind, opts):
    model = _model(kind, opts)
    p = random_problem(model, np.random.default_rng(0), T=8, B=3)
    f = flow(model, p.params, p.x, p.targets, state0=p.state0, jacobians=False)
    T = 8
    state = p.state0
    for t in range(T):
        sub = bptt.full_bptt(model, p.params, p.x[t:], p.targets[t:], state0=state)
        d = np.concatenate([a for k in sorted(sub.dstate0) for a in sub.dstate0[k]], axis=1)
        assert f.error[t] == pytest.approx(np.linalg.norm(d) * (T - t) / T, rel=1e-12)
        state = _forward(model, p.params, p.x[t : t + 1], state)


@pytest.mark.parametrize("kind,opts", SMOOTH, ids=[f"{k}{o}" for k, o in SMOOTH])
def test_lags_add_up_to_what_truncation_keeps_and_to_full_bptt(kind, opts):
    model = _model(kind, opts, layers=2)
    p = random_problem(model, np.random.default_rng(1), T=9, B=2)
    f = flow(model, p.params, p.x, p.targets, state0=p.state0, jacobians=False)
    full = bptt.full_bptt(model, p.params, p.x, p.targets, state0=p.state0)
    for k, parts in f.by_lag.items():
        scale = np.abs(full.grads[k]).max()
        np.testing.assert_allclose(parts.sum(axis=0), full.grads[k], rtol=0, atol=1e-13 * scale)
        for lags in (1, 2, 5):
            kept = make("tbptt", k1=1, k2=lags)(model, p.params, p.x, p.targets, state0=p.state0).grads[k]
            np.testing.assert_allclose(parts[:lags].sum(axis=0), kept, rtol=0, atol=1e-13 * scale)
        assert np.linalg.norm(parts[3]) > 1e-6 * scale  # every lag carries something here
    # a shorter max_lag: the same first lags, the last entry holding the rest
    short = flow(model, p.params, p.x, p.targets, state0=p.state0, max_lag=3, jacobians=False)
    for k in f.by_lag:
        np.testing.assert_allclose(short.by_lag[k][:3], f.by_lag[k][:3], rtol=1e-13, atol=1e-16)
        np.testing.assert_allclose(short.by_lag[k][3], f.by_lag[k][3:].sum(axis=0), rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("kind,opts", SMOOTH, ids=[f"{k}{o}" for k, o in SMOOTH])
def test_lag_norms_equal_central_differences(kind, opts):
    model = _model(kind, opts)
    p = random_problem(model, np.random.default_rng(2), T=6, B=2)
    f = flow(model, p.params, p.x, p.targets, state0=p.state0)
    T, keys = 6, sorted(p.state0)
    states = [p.state0]
    for t in range(T):
        states.append(_forward(model, p.params, p.x[t : t + 1], states[-1]))
    flat = lambda s: np.concatenate([a for k in keys for a in s[k]], axis=1)  # noqa: E731
    n = flat(p.state0).shape[1]
    widths = [(k, [a.shape[1] for a in p.state0[k]]) for k in keys]

    def unflat(v):
        out, i = {}, 0
        for k, ws in widths:
            parts = []
            for w in ws:
                parts.append(v[:, i : i + w].copy())
                i += w
            out[k] = type(p.state0[k])(*parts)
        return out

    h = 1e-6
    for lag in range(1, T):
        t0 = T - lag  # S(t0 - 1) perturbed, run steps t0 .. T-1
        base = flat(states[t0])
        J = np.zeros((2, n, n))
        for i in range(n):
            plus, minus = base.copy(), base.copy()
            plus[:, i] += h
            minus[:, i] -= h
            sp, sm = unflat(plus), unflat(minus)
            sp = _forward(model, p.params, p.x[t0:], sp)
            sm = _forward(model, p.params, p.x[t0:], sm)
            J[:, :, i] = (flat(sp) - flat(sm)) / (2 * h)
        expect = np.linalg.norm(J, 2, axis=(1, 2))
        np.testing.assert_allclose(f.lag_by_sequence[lag], expect, rtol=1e-6)
    assert f.lag[0] == 1 and f.sigma[-1] == pytest.approx(f.lag[1], rel=1e-12)


@pytest.mark.parametrize("kind", ["lif", "alif"])
def test_spiking_lags_equal_the_product_of_the_vjp_jacobians(kind):
    opts = {"adapt_strength": 0.2, "adapt_decay": 0.9} if kind == "alif" else {}
    model = bptt.Model(3, [bptt.Recurrent(kind, 5, **opts), bptt.Recurrent("leaky", 2)])
    rng = np.random.default_rng(3)
    params = model.init_params(rng)
    params[f"{kind}0.W_ih"] *= 4
    x, y = rng.standard_normal((7, 2, 3)), rng.integers(0, 2, (7, 2))
    f = flow(model, params, x, y)
    flat = _Flat(model, params)
    for b in range(2):
        state = {k: type(v)(*(a[b : b + 1] for a in v)) for k, v in model.initial_state(params, 2)[0].items()}
        As = []
        for t in range(7):
            step = _Step(model, params, flat, x[t : t + 1, b : b + 1], None, state)
            As.append(step.jacobians(params=False)[0])
            state = step.state
        P = np.eye(flat.n)
        for lag in range(1, 7):
            P = P @ As[7 - lag]
            assert f.lag_by_sequence[lag, b] == pytest.approx(np.linalg.norm(P, 2), rel=1e-10, abs=1e-14)
        radius = [np.abs(np.linalg.eigvals(A)).max() for A in As]
        assert np.isfinite(radius).all()


def test_masks_tokens_and_refusals():
    model = _model("gru", {}, tokens=True)
    p = random_problem(model, np.random.default_rng(4), T=6, B=3, masked=True)
    f = flow(model, p.params, p.x, p.targets, mask=p.mask, state0=p.state0)
    full = bptt.full_bptt(model, p.params, p.x, p.targets, mask=p.mask, state0=p.state0)
    np.testing.assert_allclose(f.by_lag["gru0.W_hh"].sum(axis=0), full.grads["gru0.W_hh"], rtol=1e-12, atol=1e-15)
    assert f.loss == pytest.approx(full.loss, rel=1e-13) and np.isfinite(f.radius).all()
    js = f.to_json()
    assert set(js) == {"loss", "error", "lag", "radius", "sigma", "by_lag_norm"} and len(js["error"]) == 6
    bi = bptt.Model(3, [bptt.rnn("gru", 4, bidirectional=True), bptt.Dense(2)], loss="mse")
    with pytest.raises(BpttError, match="flow: expected a unidirectional model"):
        flow(bi, bi.init_params(0), np.zeros((3, 1, 3)), np.zeros((3, 1, 2)))


def test_lags_not_formed_are_nan_not_one():
    """jacobians=False (bptt diagnose above 256 state units): the lag norms were ones, and
    reports read them as measured."""
    model = _model("lstm", {})
    p = random_problem(model, np.random.default_rng(0), T=6, B=2)
    f = flow(model, p.params, p.x, p.targets, state0=p.state0, jacobians=False)
    assert f.lag[0] == 1.0 and np.isnan(f.lag[1:]).all() and np.isnan(f.lag_by_sequence[1:]).all()
    formed = flow(model, p.params, p.x, p.targets, state0=p.state0)
    assert np.isfinite(formed.lag).all() and not np.allclose(formed.lag[1:], 1.0)


def test_a_plot_of_rows_with_fewer_lags(tmp_path):
    """Flow rows of a run resumed with another --seq-len have fewer lags: the heatmap pads them
    (np.array of ragged rows raised)."""
    from bptt.train.diagnose import plot_flow

    row = {"step": 2, "lag": [1.0, 0.5, None], "error": [0.1, 0.2, 0.3], "by_lag_norm": {"lstm0.W_hh": [1, 2, 3, 4]}}
    short = {**row, "step": 4, "by_lag_norm": {"lstm0.W_hh": [1, 2, 5]}}
    data = {
        "recorded": [row, short],
        "checkpoint": {**short, "step": None},
        "grad_norm": [],
        "clip": 1.0,
        "clip_rates": [],
    }
    plot_flow(data, str(tmp_path / "flow.png"))
    assert (tmp_path / "flow.png").stat().st_size > 1000
