"""Memory-budgeted BPTT of models with bidirectional levels (level by level, each direction
through its own plan): full BPTT's gradients for every bidirectional case of the gradient-check
sweep, from the smallest feasible budget up, within the budget; float32 on the compiled scans."""

import numpy as np
import pytest

import bptt
from bptt.algorithms import make
from bptt.diagnostics import random_problem, standard_cases, variant_cases
from bptt.errors import BpttError

CASES = [c for c in standard_cases() + variant_cases() if c.bidirectional or c.build().bidirectional]


def smallest(model, params, x, targets, **batch):
    """The least budget the level-wise run accepts (found by asking: the refusal names it)."""
    with pytest.raises(BpttError, match="memory budget: expected at least") as e:
        make("budget", budget=1)(model, params, x, targets, **batch)
    return int(str(e.value).split("(")[1].split(" bytes")[0].replace(",", ""))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name + (f"[{c.variant}]" if c.variant else ""))
@pytest.mark.parametrize("policy", ["revolve", "mixed"])
def test_bidirectional_budgets_equal_full_bptt(case, policy):
    model = case.build()
    p = random_problem(model, np.random.default_rng(0), masked=case.masked)
    full = bptt.full_bptt(model, p.params, p.x, p.targets, mask=p.mask, state0=p.state0)
    least = smallest(model, p.params, p.x, p.targets, mask=p.mask, state0=p.state0)
    recomputed = False
    for budget in (least, least + 2_000, least * 4, 10**9):
        algo = make("budget", budget=budget, policy=policy)
        g = algo(model, p.params, p.x, p.targets, mask=p.mask, state0=p.state0)
        s = algo.stats
        assert s["forward_steps"] == s["planned_forward_steps"] and s["peak_bytes"] <= budget, (budget, s)
        recomputed |= s["forward_steps"] > 2 * sum(len(lv.directions) for lv in model.recurrent_levels) * len(p.x)
        assert g.loss == pytest.approx(full.loss, rel=1e-14)
        for k in full.grads:
            err = np.abs(g.grads[k] - full.grads[k]).max() / max(np.abs(full.grads[k]).max(), 1e-300)
            assert err <= 2e-15, (budget, k, err)
        for k in full.dstate0:
            for a, b in zip(g.dstate0[k], full.dstate0[k]):
                assert np.abs(a - b).max() <= 2e-15 * max(np.abs(b).max(), 1e-300), (budget, k)
        for k in full.final_state:
            for a, b in zip(g.final_state[k], full.final_state[k]):
                np.testing.assert_array_equal(a, b)
    assert recomputed  # the smallest budgets ran steps again


def test_float32_on_the_compiled_scans_agrees_with_full_bptt():
    model = bptt.Model(
        9,
        [*bptt.rnn("lstm", 32, bidirectional=True), *bptt.rnn("gru", 16, bidirectional=True), bptt.Dense(9)],
        tokens=True,
    )
    params = model.init_params(np.random.default_rng(1), np.float32)
    rng = np.random.default_rng(2)
    x, y = rng.integers(0, 9, (60, 4)), rng.integers(0, 9, (60, 4))
    full = bptt.full_bptt(model, params, x, y)
    for policy in ("revolve", "mixed"):
        algo = make("budget", budget=400_000, policy=policy)
        g = algo(model, params, x, y)
        assert algo.stats["forward_steps"] > 4 * 60 * 2  # recomputed
        for k in full.grads:
            assert np.abs(g.grads[k] - full.grads[k]).max() <= 2e-5 * max(1.0, np.abs(full.grads[k]).max()), k


@pytest.mark.parametrize("times", [1.05, 1.5, 2.5])
def test_what_a_bidirectional_budgeted_step_allocates_stays_within_its_budget(times, allocated_peak):
    """The arrays a float32 level-by-level step allocates at their peak (tracemalloc; the
    buffer pool emptied first), less the weight-sized arrays it holds whatever the budget (the
    gradients; the recurrent weights packed forward and backward, and their gradient's
    product), stay within the budget, from about the least it accepts up. (The first pass's chunk
    buffers, held by a final state that was a row of them or carved into the input gradients'
    fronts, once took 25-38% beyond it.)"""
    D, B, T = 11, 16, 300
    model = bptt.Model(D, [*bptt.rnn("lstm", 128, bidirectional=True), bptt.rnn("gru", 64), bptt.Dense(D)], tokens=True)
    params = model.init_params(np.random.default_rng(3), np.float32)
    rng = np.random.default_rng(4)
    x, y = rng.integers(0, D, (T, B)), rng.integers(0, D, (T, B))
    budget = int(times * smallest(model, params, x, y))
    algo = make("budget", budget=budget, policy="mixed")
    allocated = allocated_peak(algo, model, params, x, y)
    assert algo.stats["peak_bytes"] <= budget
    assert allocated <= budget, (times, allocated / budget)
