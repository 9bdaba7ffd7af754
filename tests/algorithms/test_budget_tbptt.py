"""Truncated BPTT(k1, k2) within a memory budget: the same window gradients as TBPTT keeping
every cache (fixed weights), over streams with masks, per-stream resets, short segments and
checkpointed histories; fewer caches held than the window."""

import numpy as np
import pytest
from test_truncated import problem, rel  # (tests/algorithms is on the path)

from bptt.algorithms import make
from bptt.algorithms.budget import measure_storage
from bptt.algorithms.truncated import BudgetTBPTTStream, TBPTTStream
from bptt.errors import BpttError

CELLS = ["elman", "jordan", "gru", "lstm"]


def budget_for(model, params, B, steps, masked=False):
    """Bytes for the caches of `steps` steps (a window of k2 > steps must recompute)."""
    return measure_storage(model, params, B, masked).leaf(steps)


def run_pair(model, params, x, y, k1, k2, budget, policy, mask=None, state0=None, resets=()):
    """Both streams over x in segments of k1 (the last may be shorter): their window gradients."""
    plain, kept = TBPTTStream(model, k1, k2), BudgetTBPTTStream(model, k1, k2, budget, policy)
    out = []
    for s in (plain, kept):
        if state0 is not None:
            s.start_from(state0)
    T = len(x)
    for i, a in enumerate(range(0, T, k1)):
        e = min(T, a + k1)
        m = None if mask is None else mask[a:e]
        for at, streams in resets:
            if at == i:
                plain.reset(streams)
                kept.reset(streams)
        out.append((plain(params, x[a:e], y[a:e], m), kept(params, x[a:e], y[a:e], m), kept.budget.stats))
    return out


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("policy", ["revolve", "mixed"])
@pytest.mark.parametrize("k1,k2", [(3, 3), (2, 9), (3, 10), (4, 13)])
def test_budgeted_windows_equal_tbptt(cell, policy, k1, k2):
    rng = np.random.default_rng(3)
    model, params, x, y, s0 = problem(cell, rng, T=23, tokens=cell == "gru")
    budget = budget_for(model, params, 2, 2)  # two steps' caches: every window of k2 > 2 recomputes
    for w, (a, b, stats) in enumerate(run_pair(model, params, x, y, k1, k2, budget, policy, state0=s0)):
        assert abs(a.loss - b.loss) <= 1e-14 * abs(a.loss), w
        for k in params:
            assert rel(b.grads[k], a.grads[k]) <= 1e-13, (w, k)
        for key in a.dstate0:
            for f, g in zip(a.dstate0[key], b.dstate0[key]):
                assert rel(g, f) <= 1e-13, (w, key)
            for f, g in zip(a.final_state[key], b.final_state[key]):
                np.testing.assert_array_equal(g, f)
        assert stats["peak_bytes"] <= budget, (w, stats)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_masks_resets_and_short_segments(cell):
    rng = np.random.default_rng(4)
    model, params, x, y, s0 = problem(cell, rng, T=26, B=3)
    mask = rng.random((26, 3)) < 0.8
    mask[10:14, 1] = False  # a stream with a whole segment of nothing counted
    resets = [(2, np.array([True, False, False])), (4, np.array([False, True, True]))]
    budget = budget_for(model, params, 3, 3, masked=True)
    for k1, k2 in [(4, 11), (5, 7)]:  # 26 = 6 x 4 + 2 and 5 x 5 + 1: a short last segment
        for w, (a, b, _) in enumerate(
            run_pair(model, params, x, y, k1, k2, budget, "mixed", mask=mask, state0=s0, resets=resets)
        ):
            assert abs(a.loss - b.loss) <= 1e-14 * max(abs(a.loss), 1e-300), (k1, w)
            for k in params:
                assert rel(b.grads[k], a.grads[k]) <= 1e-13, (k1, w, k)


def test_a_window_longer_than_a_segment_holds_fewer_caches_than_it_spans():
    rng = np.random.default_rng(5)
    model, params, x, y, s0 = problem("lstm", rng, T=60, stacked=False)
    st = measure_storage(model, params, 2)
    k1, k2 = 5, 40
    algo = make("tbptt", k1=k1, k2=k2, budget=st.leaf(6), policy="revolve")
    full = make("tbptt", k1=k1, k2=k2)
    g, h = algo(model, params, x, y, state0=s0), full(model, params, x, y, state0=s0)
    for k in params:
        assert rel(g.grads[k], h.grads[k]) <= 1e-13, k
    stats = algo.stream(model).budget.stats
    assert stats["peak_bytes"] <= st.leaf(6) < st.leaf(k2) / 4
    assert stats["forward_steps"] == stats["planned_forward_steps"] > k2  # recomputed, as planned


def test_history_checkpoint_round_trip_continues_bitwise():
    rng = np.random.default_rng(6)
    model, params, x, y, s0 = problem("gru", rng, T=30, B=2)
    budget = budget_for(model, params, 2, 3)
    one = BudgetTBPTTStream(model, 4, 14, budget, "mixed")
    one.start_from(s0)
    for a in range(0, 16, 4):
        one(params, x[a : a + 4], y[a : a + 4])
    one.reset(np.array([False, True]))
    desc, arrays = one.history()
    two = BudgetTBPTTStream(model, 4, 14, budget, "mixed")
    two.restore(one.state, desc, arrays, params)
    for a in range(16, 30, 4):
        g1, g2 = one(params, x[a : a + 4], y[a : a + 4]), two(params, x[a : a + 4], y[a : a + 4])
        for k in params:
            np.testing.assert_array_equal(g1.grads[k], g2.grads[k])
    # a history of another layout is refused with one line naming the place
    plain = TBPTTStream(model, 4, 14)
    plain.start_from(s0)
    plain(params, x[:4], y[:4])
    pdesc, parrays = plain.history()
    with pytest.raises(BpttError, match=r"tbptt history\[0\]: expected \(steps >= 1, inputs, mask, cut, state\)"):
        BudgetTBPTTStream(model, 4, 14, budget).restore(plain.state, pdesc, parrays, params)
    bad = dict(arrays)
    key = next(k for k in bad if bad[k].shape == (2, 5))  # a stored state
    bad[key] = bad[key] * np.inf
    with pytest.raises(BpttError, match="tbptt history"):
        BudgetTBPTTStream(model, 4, 14, budget).restore(one.state, desc, bad, params)


def test_budget_errors():
    with pytest.raises(BpttError, match="memory budget: expected a positive number of bytes"):
        make("tbptt", k1=2, k2=4, budget=-1)
    with pytest.raises(BpttError, match="memory policy"):
        make("tbptt", k1=2, k2=4, budget="1MB", policy="fast")
    rng = np.random.default_rng(7)
    model, params, x, y, _ = problem("elman", rng)
    with pytest.raises(BpttError, match="memory budget: expected at least"):
        make("tbptt", k1=2, k2=4, budget=10)(model, params, x, y)


def test_float32_on_the_compiled_scans_agrees_with_tbptt():
    rng = np.random.default_rng(8)
    model, params, x, y, s0 = problem("lstm", rng, T=40, B=4, tokens=True)
    params = {k: v.astype(np.float32) for k, v in params.items()}
    s0 = {k: type(s)(*(a.astype(np.float32) for a in s)) for k, s in s0.items()}
    budget = budget_for(model, params, 4, 3)
    for w, (a, b, stats) in enumerate(run_pair(model, params, x, y, 8, 24, budget, "mixed", state0=s0)):
        assert abs(a.loss - b.loss) <= 1e-6 * abs(a.loss), w
        for k in params:
            assert rel(b.grads[k], a.grads[k]) <= 1e-5, (w, k)
        assert stats["peak_bytes"] <= budget


@pytest.mark.parametrize("k1,k2", [(2, 4), (2, 6)])
def test_a_segment_held_throughout_takes_its_steps_of_later_windows(k1, k2):
    """A segment whose every state is held (all its steps masked) still takes its k1 steps of
    the k2 a later window reaches back, so no window reaches past them into earlier segments
    by more: each window's gradient equals central differences of that window's loss with the
    state k2 steps back held fixed, for the plain stream and the budgeted one."""
    rng = np.random.default_rng(5)
    T = 8
    model, params, x, y, s0 = problem("elman", rng, T=T, stacked=False)
    mask = np.ones((T, 2), bool)
    mask[2:4] = False
    budget = budget_for(model, params, 2, 2, masked=True)
    for w, (plain, kept, _) in enumerate(run_pair(model, params, x, y, k1, k2, budget, "mixed", mask, s0)):
        a, e = w * k1, min(T, w * k1 + k1)
        if not mask[a:e].any():
            continue
        start = max(0, e - k2)
        held = model.forward(params, x[:start], mask=mask[:start], state0=s0)[1] if start else s0

        def loss(p):
            out, _ = model.forward(p, x[start:e], mask=mask[start:e], state0=held)
            return model.loss_fn.value(out[a - start :], y[a:e], mask[a:e])

        for k, v in params.items():
            ref = np.zeros_like(v)
            for i in np.ndindex(v.shape):
                up, down = dict(params), dict(params)
                up[k], down[k] = v.copy(), v.copy()
                up[k][i] += 1e-6
                down[k][i] -= 1e-6
                ref[i] = (loss(up) - loss(down)) / 2e-6
            for got in (plain, kept):
                assert np.abs(got.grads[k] - ref).max() <= 1e-6 * max(1.0, np.abs(ref).max()), (w, k)
