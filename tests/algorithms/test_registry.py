"""The algorithm registry: every registered algorithm through the one interface, against full
BPTT where they must agree; and a cell of the user's own (written here, touching nothing of
bptt.fast) that every registered algorithm trains and gradcheck passes."""

from typing import NamedTuple

import numpy as np
import pytest

import bptt
from bptt import algorithms, ops
from bptt.algorithms import REGISTRY, make
from bptt.cells import Cell
from bptt.errors import BpttError

# options under which each registered algorithm computes full BPTT's gradient exactly
EXACT = {
    "full": {},
    "tbptt": {"k1": 50, "k2": 50},
    "random": {"c": 0.0},
    "artbp": {"c": 0.0},
    "budget": {"budget": "1GB"},
    "rtrl": {},
}
ESTIMATES = {"uoro"}  # unbiased estimates (tests/algorithms/test_forward.py)
FIRST_LEVEL_ONLY = {"eprop"}  # exact on lif, alif, lstm and elman first levels (tests/algorithms/test_eprop.py)


def test_every_registered_algorithm_is_listed_here():
    assert set(REGISTRY) == set(EXACT) | ESTIMATES | FIRST_LEVEL_ONLY


def test_make_checks_names_and_options():
    with pytest.raises(BpttError, match=r"algorithm: expected one of .* received 'tbtt' \(did you mean 'tbptt'\?\)"):
        make("tbtt")
    with pytest.raises(
        BpttError,
        match=r"algorithm 'tbptt': expected options among \['k1', 'k2', 'budget', 'policy'\], received \['c'\]",
    ):
        make("tbptt", c=0.1)
    assert make("artbp", c=0.1).reweight and not make("random", c=0.1).reweight
    assert repr(make("tbptt", k1=3, k2=5)) == "TBPTT(k1=3, k2=5)"


class IndState(NamedTuple):
    h: np.ndarray  # (B, H)


class IndRNN(Cell):
    """A user's cell (Li et al. 2018's IndRNN): h' = tanh(xp + u * h), one recurrent weight per
    unit. Only the math of one step; bptt runs it over time with every algorithm."""

    kind = "indrnn"
    State = IndState
    gates = 1

    def param_shapes(self):
        H, D = self.hidden_size, self.input_size
        return {"W_ih": (H, D), "b_ih": (H,), "b_hh": (H,), "u": (H,)}

    def step(self, params, state, xp_t):
        h = np.tanh(xp_t + params["u"] * state.h)
        return IndState(h), h, (state.h, h)

    def step_back(self, params, cache, dstate, dout, grads):
        h_prev, h = cache
        da = (dstate.h + dout) * (1.0 - h * h)  # (B, H)
        grads["u"] += (da * h_prev).sum(axis=0)
        return IndState(da * params["u"]), da


def _indrnn_problem(seed=0, T=9, B=3):
    rng = np.random.default_rng(seed)
    model = bptt.Model(4, [bptt.Recurrent(IndRNN, 6), bptt.Dense(2)], loss="mse")
    params = model.init_params(rng)
    params = {k: v + rng.uniform(-0.3, 0.3, v.shape) for k, v in params.items()}  # non-zero biases
    x, y = rng.standard_normal((T, B, 4)), rng.standard_normal((T, B, 2))
    s0 = {"indrnn0": IndState(rng.uniform(-0.5, 0.5, (B, 6)))}
    return model, params, x, y, s0


def test_a_users_cell_passes_gradcheck_and_runs_as_itself():
    model, params, x, y, s0 = _indrnn_problem()
    res = bptt.gradcheck(model, params, x, y, state0=s0)
    assert res.passed, res
    cell = model.recurrent_levels[0].directions[0].cell
    assert ops.implementation(cell, np.float32) is cell  # nothing faster is offered for it


@pytest.mark.parametrize("name", sorted(EXACT))
@pytest.mark.parametrize("problem", ["indrnn", "lstm"])
def test_every_algorithm_at_its_exact_setting_is_full_bptt(name, problem):
    if problem == "indrnn":
        model, params, x, y, s0 = _indrnn_problem(1)
    else:
        rng = np.random.default_rng(2)
        model = bptt.Model(3, [bptt.rnn("lstm", 5), bptt.Dense(2)], loss="mse")
        params = model.init_params(rng)
        x, y, s0 = rng.standard_normal((9, 3, 3)), rng.standard_normal((9, 3, 2)), None
    full = bptt.full_bptt(model, params, x, y, state0=s0)
    algo = make(name, **EXACT[name])
    g = algo(model, params, x, y, state0=s0)
    assert g.loss == pytest.approx(full.loss, rel=1e-14)
    for k in full.grads:
        np.testing.assert_allclose(g.grads[k], full.grads[k], rtol=1e-11, atol=1e-14, err_msg=k)


@pytest.mark.parametrize(
    "name,options", [("full", {}), ("tbptt", {"k1": 4, "k2": 8}), ("random", {"c": 0.1}), ("artbp", {"c": 0.1})]
)
def test_every_algorithm_trains_a_users_cell(name, options):
    """SGD on a delayed-copy series: every algorithm brings the loss down by half."""
    rng = np.random.default_rng(3)
    model = bptt.Model(1, [bptt.Recurrent(IndRNN, 16), bptt.Dense(1)], loss="mse")
    params = model.init_params(rng)
    algo = make(name, **options, **({"rng": np.random.default_rng(4)} if "c" in options else {}))
    x = rng.standard_normal((40, 16, 1))
    y = np.concatenate([np.zeros((1, 16, 1)), x[:-1]])  # y(t) = x(t - 1)
    losses = []
    for _ in range(150):
        algo.reset()
        g = algo(model, params, x, y)
        losses.append(g.loss)
        params = {k: v - 0.3 * g.grads[k] for k, v in params.items()}
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10]), (losses[0], losses[-1])


def test_tbptt_continues_its_stream_and_restarts_on_state0():
    rng = np.random.default_rng(5)
    model = bptt.Model(3, [bptt.rnn("gru", 4), bptt.Dense(2)], loss="mse")
    params = model.init_params(rng)
    x, y = rng.standard_normal((12, 2, 3)), rng.standard_normal((12, 2, 2))
    whole = make("tbptt", k1=4, k2=10)
    g = whole(model, params, x, y)
    parts = make("tbptt", k1=4, k2=10)
    pieces = [parts(model, params, x[s : s + 4], y[s : s + 4]) for s in (0, 4, 8)]  # the stream goes on
    for a, b in zip(whole.windows, pieces):
        for k in a.grads:
            np.testing.assert_allclose(a.grads[k], b.grads[k], rtol=1e-12, atol=1e-15)
    again = parts(model, params, x[:4], y[:4], state0=model.initial_state(params, 2)[0])  # a new stream
    np.testing.assert_allclose(again.grads["gru0.W_hh"], pieces[0].grads["gru0.W_hh"], rtol=1e-12)
    assert g.dstate0.keys() == pieces[0].dstate0.keys()


def test_tbptt_over_right_padded_batches():
    """A sequence with no counted step in a segment contributes nothing to it; a segment with
    none at all is skipped; the result equals TBPTT over each sequence alone, summed by its
    share of the positions."""
    rng = np.random.default_rng(6)
    model = bptt.Model(3, [bptt.rnn("lstm", 4), bptt.Dense(2)], loss="mse")
    params = model.init_params(rng)
    x, y = rng.standard_normal((12, 2, 3)), rng.standard_normal((12, 2, 2))
    mask = np.ones((12, 2), bool)
    mask[5:, 1] = False  # the second sequence is 5 steps long: nothing counted in segments 2 and 3
    g = make("tbptt", k1=4, k2=4)(model, params, x, y, mask=mask)
    one = make("tbptt", k1=4, k2=4)(model, params, x[:, :1], y[:, :1])
    two = make("tbptt", k1=4, k2=4)(model, params, x[:5, 1:], y[:5, 1:])
    for k in g.grads:
        np.testing.assert_allclose(g.grads[k], (12 * one.grads[k] + 5 * two.grads[k]) / 17, rtol=1e-10, atol=1e-14)
    assert algorithms.TBPTT(2)(model, params, x[:2], y[:2], mask=np.zeros((2, 2), bool) | [True, False]).loss >= 0
