"""RTRL and UORO: RTRL's gradient accumulated forward in time equals full BPTT's (float64,
every unidirectional gradcheck case: cells, stacks, masks, tokens, losses, spiking cells);
UORO's estimate averages to it within a stated statistical tolerance; what they refuse."""

import numpy as np
import pytest

import bptt
from bptt.algorithms import make, rtrl, uoro
from bptt.diagnostics import estimator_stats, random_problem, standard_cases, variant_cases
from bptt.errors import BpttError

CASES = [c for c in standard_cases() + variant_cases() if not c.build().bidirectional]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name + (f"[{c.variant}]" if c.variant else ""))
def test_rtrl_equals_full_bptt(case):
    """Random non-zero biases and initial states (random_problem); gradients, initial-state
    gradients and final states within 1e-12 relative of full BPTT's."""
    model = case.build()
    p = random_problem(model, np.random.default_rng(0), masked=case.masked)
    full = bptt.full_bptt(model, p.params, p.x, p.targets, mask=p.mask, state0=p.state0)
    g = make("rtrl")(model, p.params, p.x, p.targets, mask=p.mask, state0=p.state0)
    assert g.loss == pytest.approx(full.loss, rel=1e-13)
    for k in full.grads:
        scale = max(np.abs(full.grads[k]).max(), 1e-300)
        assert np.abs(g.grads[k] - full.grads[k]).max() <= 1e-12 * scale, k
    for k in full.dstate0:
        for a, b in zip(g.dstate0[k], full.dstate0[k]):
            assert np.abs(a - b).max() <= 1e-12 * max(np.abs(b).max(), 1e-300), k
    for k in full.final_state:
        for a, b in zip(g.final_state[k], full.final_state[k]):
            np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("kind", ["lif", "alif"])
def test_rtrl_equals_full_bptt_on_spiking_cells(kind):
    opts = {"adapt_strength": 0.2, "adapt_decay": 0.9} if kind == "alif" else {}
    model = bptt.Model(3, [bptt.Recurrent(kind, 5, refractory=1, learn_decay=True, **opts), bptt.Recurrent("leaky", 2)])
    rng = np.random.default_rng(1)
    params = model.init_params(rng)
    params[f"{kind}0.W_ih"] *= 4
    x, y = rng.standard_normal((12, 3, 3)), rng.integers(0, 2, (12, 3))
    full = bptt.full_bptt(model, params, x, y)
    g = rtrl(model, params, x, y)
    for k in full.grads:
        np.testing.assert_allclose(g.grads[k], full.grads[k], rtol=1e-12, atol=1e-14 * np.abs(full.grads[k]).max())


def _with_dstate0(g):
    """The gradients and the initial-state gradient's arrays, as one dict of estimates."""
    out = dict(g.grads)
    out.update({f"dstate0.{k}.{i}": a for k, v in g.dstate0.items() for i, a in enumerate(v)})
    return out


def test_uoro_is_unbiased():
    """1,000 seeded UORO draws on a GRU + Elman stack (float64): every parameter's and every
    initial-state gradient entry's mean within 4.5 standard errors of full BPTT's (the largest
    |z| over its 138 entries; under the normal approximation an entry passes 4.5 with
    probability 1 - 7e-6), so a bias of a fraction of the spread fails; its variance reported
    beside ARTBP's (c = 0.3)."""
    rng = np.random.default_rng(2)
    model = bptt.Model(2, [bptt.rnn("gru", 4), bptt.rnn("elman", 3), bptt.Dense(2)], loss="mse")
    params = model.init_params(rng)
    params = {k: v + rng.uniform(-0.2, 0.2, v.shape) for k, v in params.items()}
    x, y = rng.standard_normal((6, 1, 2)), rng.standard_normal((6, 1, 2))
    s0 = {
        k: type(v)(*(rng.uniform(-0.5, 0.5, a.shape) for a in v)) for k, v in model.initial_state(params, 1)[0].items()
    }
    exact = _with_dstate0(bptt.full_bptt(model, params, x, y, state0=s0))
    stats = estimator_stats(
        lambda i: _with_dstate0(uoro(model, params, x, y, np.random.default_rng(100 + i), state0=s0)), exact, 1000
    )
    assert stats.max_z < 4.5, stats.summary()
    assert sum(a.size for a in exact.values()) == 138
    artbp = estimator_stats(
        lambda i: make("artbp", c=0.3, rng=np.random.default_rng(i))(model, params, x, y, state0=s0).grads,
        {k: v for k, v in exact.items() if not k.startswith("dstate0")},
        1000,
    )
    assert artbp.max_z < 4.5 and stats.relative_variance > 0 and artbp.relative_variance > 0
    print(f"UORO: {stats.summary()}\nARTBP c=0.3: {artbp.summary()}")


def test_uoro_on_a_cell_without_a_forward_mode_product(monkeypatch):
    """Where a level has no step_jvp (a cell of one's own), UORO forms A from VJPs instead: the
    same estimate with the same draws."""
    import bptt.algorithms.forward as fw

    rng = np.random.default_rng(6)
    model = bptt.Model(2, [bptt.rnn("gru", 3), bptt.Dense(2)], loss="mse")
    params = model.init_params(rng)
    x, y = rng.standard_normal((5, 2, 2)), rng.standard_normal((5, 2, 2))
    a = uoro(model, params, x, y, np.random.default_rng(7))

    def missing(*args, **kw):
        raise NotImplementedError("no step_jvp")

    monkeypatch.setattr(fw, "step_jvp", missing)
    b = uoro(model, params, x, y, np.random.default_rng(7))
    for k in a.grads:
        np.testing.assert_allclose(b.grads[k], a.grads[k], rtol=1e-11, atol=1e-14)


def test_uoros_forward_mode_product_is_the_jacobians():
    """UORO's A s~ (one forward-mode product) equals A built from n one-step VJPs times s~."""
    from bptt.algorithms.forward import _Flat, _Step

    rng = np.random.default_rng(5)
    model = bptt.Model(3, [bptt.rnn("lstm", 4), bptt.rnn("gru", 3), bptt.Dense(2)], loss="mse")
    params = {k: v + rng.uniform(-0.3, 0.3, v.shape) for k, v in model.init_params(rng).items()}
    flat = _Flat(model, params)
    s0 = flat.state_of(rng.standard_normal(flat.n), np.float64)
    step = _Step(model, params, flat, rng.standard_normal((1, 1, 3)), None, s0)
    A, _ = step.jacobians(params=False)
    v = rng.standard_normal(flat.n)
    np.testing.assert_allclose(step.jvp(v), A @ v, rtol=1e-12, atol=1e-14)


def test_what_forward_in_time_algorithms_refuse():
    model = bptt.Model(2, [bptt.rnn("gru", 4, bidirectional=True), bptt.Dense(2)], loss="mse")
    params = model.init_params(0)
    x = np.zeros((3, 1, 2))
    with pytest.raises(BpttError, match="expected a unidirectional model for a forward-in-time algorithm"):
        rtrl(model, params, x, x)
    model = bptt.Model(2, [bptt.rnn("lstm", 16), bptt.Dense(2)], loss="mse")
    with pytest.raises(
        BpttError,
        match=r"rtrl: expected sensitivities that fit in 1,000 bytes, received .* need [\d,]+ bytes \(n = 32 state units x P = 1,314 parameters",
    ):
        make("rtrl", max_bytes=1000)(model, model.init_params(0), x, x)
    model = bptt.Model(2, [bptt.Recurrent("lif", 4), bptt.RateRegularizer(0.1, 0.5), bptt.Recurrent("leaky", 2)])
    with pytest.raises(BpttError, match="expected no rate penalty for a forward-in-time algorithm"):
        make("uoro")(model, model.init_params(0), x, np.zeros((3, 1), int))


@pytest.mark.parametrize("name", ["rtrl", "uoro"])
def test_a_stream_of_a_model_with_a_learned_initial_state_is_refused_past_its_first_call(name):
    """A continued stream starts from the carried state, not the learned one, so the learned
    state's gradient would be left out: the second call without reset() is refused (one line);
    after reset() it is a new stream, exact for RTRL (full BPTT's, the initial state's too)."""
    rng = np.random.default_rng(6)
    model = bptt.Model(2, [bptt.rnn("gru", 3, learn_init=True), bptt.Dense(2)], loss="mse")
    params = model.init_params(rng)
    x, y = rng.standard_normal((4, 2, 2)), rng.standard_normal((4, 2, 2))
    algo = make(name)
    algo(model, params, x, y)
    with pytest.raises(BpttError, match=f"{name}: expected a model without learned initial states .* to continue"):
        algo(model, params, x, y)
    algo.reset()
    g = algo(model, params, x, y)
    if name == "rtrl":
        full = bptt.full_bptt(model, params, x, y)
        for k in full.grads:
            np.testing.assert_allclose(g.grads[k], full.grads[k], rtol=1e-10, atol=1e-13)


def test_a_stream_carries_the_sensitivities():
    """Two RTRL calls on the halves of a stream (the second continuing the first's state and
    sensitivities J) give the same total as one call: the second half's gradient is exact
    (full BPTT's over the whole stream, less the first half's part); state0 starts anew."""
    name = "rtrl"
    rng = np.random.default_rng(4)
    model = bptt.Model(2, [bptt.rnn("lstm", 3), bptt.Dense(2)], loss="mse")
    params = model.init_params(rng)
    x, y = rng.standard_normal((10, 2, 2)), rng.standard_normal((10, 2, 2))
    whole = make(name)(model, params, x, y)
    algo = make(name)
    first = algo(model, params, x[:4], y[:4])
    second = algo(model, params, x[4:], y[4:])
    for k in whole.grads:
        np.testing.assert_allclose(
            4 * first.grads[k] + 6 * second.grads[k], 10 * whole.grads[k], rtol=1e-12, atol=1e-14
        )
    again = algo(model, params, x[:4], y[:4], state0=model.initial_state(params, 2)[0])  # a new stream
    for k in first.grads:
        np.testing.assert_allclose(again.grads[k], first.grads[k], rtol=1e-13)
