"""Randomized truncation (biased without reweighting, unbiased ARTBP with it) over a batch, and
ARTBP online over a stream: exact at c = 0, unbiased by seeded Monte Carlo, equal to each other
with the same draws."""

import numpy as np
import pytest
from test_truncated import CELLS, problem, rel

from bptt import Dense, Model, full_bptt, rnn
from bptt.algorithms import GradientMean, OnlineARTBP, randomized_bptt, truncation_factors
from bptt.diagnostics import estimator_stats


@pytest.mark.parametrize("cell", CELLS)
def test_randomized_with_c_zero_is_full_bptt_exactly(cell):
    rng = np.random.default_rng(7)
    model, params, x, y, s0 = problem(cell, rng)
    g = full_bptt(model, params, x, y, mask=None, state0=s0)
    r = randomized_bptt(model, params, x, y, 0.0, np.random.default_rng(0), mask=None, state0=s0)
    for k in params:
        np.testing.assert_array_equal(r.grads[k], g.grads[k])


def test_randomized_truncation_is_unbiased_and_reports_its_variance():
    """2000 seeded draws at c = 0.3: every gradient entry's average lies within 4.5 standard
    errors of full BPTT (about 100 entries: a false alarm has probability ~1e-3); without the
    reweighting the same cuts are biased (far outside)."""
    rng = np.random.default_rng(3)
    model, params, x, y, s0 = problem("gru", rng, T=8, B=1, stacked=False)
    exact = full_bptt(model, params, x, y, mask=None, state0=s0).grads

    def draw(reweight):
        return lambda i: (
            randomized_bptt(
                model, params, x, y, 0.3, np.random.default_rng(i), mask=None, state0=s0, reweight=reweight
            ).grads
        )

    st = estimator_stats(draw(True), exact, 2000)
    assert st.max_z < 4.5, st.summary()
    assert st.variance > 0
    biased = estimator_stats(draw(False), exact, 2000)
    assert biased.max_z > 10, biased.summary()
    assert biased.bias_norm > 10 * st.bias_norm


def test_truncation_factors():
    f = truncation_factors(1000, 4, 0.25, np.random.default_rng(0))
    assert set(np.unique(f)) == {0.0, 1 / 0.75}
    assert abs((f == 0).mean() - 0.25) < 0.03
    assert abs(f.mean() - 1.0) < 0.05
    g = truncation_factors(3, 2, [0.0, 0.5, 0.0], np.random.default_rng(0), reweight=False)
    assert (g[[0, 2]] == 1.0).all() and set(np.unique(g[1])) <= {0.0, 1.0}
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        truncation_factors(3, 2, 1.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="3 numbers"):
        truncation_factors(3, 2, [0.1, 0.2], np.random.default_rng(0))


def test_randomized_on_a_bidirectional_model_at_c_zero_is_full_bptt():
    rng = np.random.default_rng(8)
    model = Model(3, [rnn("gru", 4, bidirectional=True), Dense(2)], loss="mse")
    params = model.init_params(rng)
    x, y = rng.standard_normal((6, 2, 3)), rng.standard_normal((6, 2, 2))
    g = full_bptt(model, params, x, y)
    r = randomized_bptt(model, params, x, y, 0.0, np.random.default_rng(0))
    for k in params:
        np.testing.assert_array_equal(r.grads[k], g.grads[k])


def _run_online(algo, params, x, y, s0):
    """ARTBP over the whole stream with the weights fixed: segment gradients combined by their
    share of the positions, and the drawn lengths."""
    algo.start_from(s0)
    T, t, lengths, mean = len(x), 0, [], GradientMean()
    while t < T:
        L = algo.draw_length(T - t)
        mean.add(algo(params, x[t : t + L], y[t : t + L]), L)
        lengths.append(L)
        t += L
    return mean.result(params).grads, lengths


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("c", [0.3, lambda L: min(0.1 * L, 0.9)])
def test_online_artbp_equals_randomized_truncation_with_the_same_draws(cell, c):
    """Segment by segment (state carried, backprop at each drawn truncation) gives what one
    randomized-truncation pass over the stream gives with the same cuts and weights."""
    rng = np.random.default_rng(11)
    model, params, x, y, s0 = problem(cell, rng, T=12, B=2)
    algo = OnlineARTBP(model, c, np.random.default_rng(5))
    grads, lengths = _run_online(algo, params, x, y, s0)
    assert sum(lengths) == 12 and len(lengths) > 1
    factors = np.concatenate([algo.factors(L) for L in lengths])
    r = randomized_bptt(
        model, params, x, y, None, None, mask=None, state0=s0, factors=np.repeat(factors[:, None], 2, 1)
    )
    for k in params:
        assert rel(grads[k], r.grads[k]) <= 1e-12, k


def test_online_artbp_with_length_dependent_c_is_unbiased():
    """c(L) = 0.15 L (truncation more likely the longer the segment), 3000 seeded streams:
    every entry of the averaged gradient lies within 4.5 standard errors of full BPTT's."""
    rng = np.random.default_rng(12)
    model, params, x, y, s0 = problem("gru", rng, T=8, B=1, stacked=False)
    exact = full_bptt(model, params, x, y, mask=None, state0=s0).grads

    def draw(i):
        return _run_online(
            OnlineARTBP(model, lambda L: min(0.15 * L, 0.95), np.random.default_rng(i)), params, x, y, s0
        )[0]

    st = estimator_stats(draw, exact, 3000)
    assert st.max_z < 4.5, st.summary()
    assert st.variance > 0


def test_online_artbp_errors():
    rng = np.random.default_rng(0)
    model, params, x, y, s0 = problem("elman", rng)
    with pytest.raises(ValueError, match=r"c: expected a number in \[0, 1\)"):
        OnlineARTBP(model, 1.0, rng)
    algo = OnlineARTBP(model, lambda L: 1.0, rng)
    with pytest.raises(ValueError, match=r"c: expected c\(1\) in \[0, 1\)"):
        algo.draw_length(5)
    algo = OnlineARTBP(model, 0.5, rng)
    algo(params, x[:3], y[:3])
    with pytest.raises(ValueError, match="expected 2 streams"):
        algo(params, x[3:5, :1], y[3:5, :1])
    bi = Model(3, [rnn("gru", 4, bidirectional=True), Dense(2)], loss="mse")
    with pytest.raises(ValueError, match="artbp: expected a unidirectional model"):
        OnlineARTBP(bi, 0.1, rng)


def test_reweighted_truncation_refuses_a_bidirectional_level_stacked_with_another():
    """A path back in time through one level and forward through a reverse direction crosses
    one factor twice (E[f^2] = 1 / (1 - c)): the reweighted estimate is refused there (one
    line), and stays exact at c = 0 and allowed for one bidirectional level alone."""
    from bptt.errors import BpttError

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((4, 1, 3)), rng.standard_normal((4, 1, 2))
    stacked = Model(3, [rnn("elman", 3, bidirectional=True), rnn("elman", 3), Dense(2)], loss="mse")
    p = stacked.init_params(rng)
    with pytest.raises(BpttError, match="artbp: expected a unidirectional model, or one bidirectional recurrent"):
        randomized_bptt(stacked, p, x, y, 0.3, np.random.default_rng(1))
    g, full = randomized_bptt(stacked, p, x, y, 0.0, np.random.default_rng(1)), full_bptt(stacked, p, x, y)
    for k in full.grads:
        np.testing.assert_allclose(g.grads[k], full.grads[k], rtol=1e-12, atol=1e-15)
    alone = Model(3, [rnn("elman", 3, bidirectional=True), Dense(2)], loss="mse")
    randomized_bptt(alone, alone.init_params(rng), x, y, 0.3, np.random.default_rng(1))
    randomized_bptt(stacked, p, x, y, 0.3, np.random.default_rng(1), reweight=False)  # (biased by design)
