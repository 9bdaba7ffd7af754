"""Influence balancing: the system as a cell, its gradient, and the behaviour the task is built
to show (truncated BPTT runs away from the optimum, ARTBP reaches it)."""

import numpy as np
import pytest

from bptt import full_bptt
from bptt.cli import main
from bptt.experiments.influence import THETA_STAR, influence_model, run_influence, settled_at


def test_cell_gradient_matches_central_differences_and_stationary_point():
    model = influence_model()
    params = model.init_params(0)
    key = model.state_keys()[0]
    T = 40
    x = np.ones((T, 1, 1))
    rng = np.random.default_rng(0)
    s0 = {key: model.initial_state(params, 1)[0][key]._replace(h=rng.uniform(-1, 1, (1, 23)))}
    g = full_bptt(model, params, x, x, mask=None, state0=s0)
    eps = 1e-6
    f = lambda th: full_bptt(model, {"system.theta": np.array([th])}, x, x, mask=None, state0=s0).loss  # noqa: E731
    num = (f(0.5 + eps) - f(0.5 - eps)) / (2 * eps)
    assert abs(g.grads["system.theta"][0] - num) <= 1e-7 * abs(num)
    # at theta* the stationary state has s_0 = 1 (zero loss)
    star = {"system.theta": np.array([THETA_STAR])}
    stat = {
        key: s0[key]._replace(
            h=np.linalg.solve(
                np.eye(23) - model.levels[0].directions[0].cell.A, THETA_STAR * model.levels[0].directions[0].cell.b
            )[None]
        )
    }
    assert full_bptt(model, star, x, x, mask=None, state0=stat).loss < 1e-28


def test_truncated_bptt_runs_away_and_artbp_reaches_the_optimum():
    for K in (1, 10, 20):
        r = run_influence("tbptt", 3000, 1e-4, K=K)
        assert abs(r.theta[-1] - THETA_STAR) > 1.0, (K, r.theta[-1])  # moved away from theta(0) = 0.5
    assert run_influence("tbptt", 3000, 1e-4, K=10).diverged
    for seed in range(5):
        r = run_influence("artbp", 20000, 1e-4, c=1 / 32, seed=seed)
        at = settled_at(r)
        assert at is not None and at < 20000 and r.final_error < 1e-3, (seed, r.theta[-1])


def test_cli_experiment(tmp_path, capsys):
    out = tmp_path / "ib.png"
    assert (
        main(["experiment", "influence-balancing", "--steps", "800", "--k", "10", "--seeds", "1", "--out", str(out)])
        == 0
    )
    text = capsys.readouterr().out
    assert "TBPTT(1, 10)" in text and "ARTBP c = 1/32" in text and out.stat().st_size > 10000
    assert "RTRL" in text and "UORO (lr / 10)" in text
    assert main(["experiment", "influence-balancing", "--k", "1,x"]) == 2
    assert "--k: expected comma-separated positive integers" in capsys.readouterr().err


def test_unknown_method():
    with pytest.raises(ValueError, match="method: expected 'tbptt', 'tbptt-chunks', 'artbp', 'rtrl' or 'uoro'"):
        run_influence("sgd", 10, 1e-4)


def test_online_rtrl_reaches_the_optimum_where_truncation_runs_away():
    """RTRL carries the exact sensitivity along the stream, an update after every step: theta
    within 1e-3 of -1/6 well before 2,000 steps (measured: from step 979)."""
    r = run_influence("rtrl", 2000, 1e-4)
    at = settled_at(r)
    assert at is not None and at < 1500 and r.final_error < 1e-5, (at, r.theta[-1])
