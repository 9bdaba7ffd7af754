"""Zoneout (--zoneout, --zoneout-cell; cells/zoneout.py): with masks held the gradient is exact
(float64 central differences, torch autograd on a hand-written loop with the same masks,
memory-budgeted BPTT and truncation meeting the same masks, the fast path's per-step kernels
against the NumPy steps); without masks the step is the expectation z s_(t-1) + (1 - z) s~_t."""

import numpy as np
import pytest
from stepcheck import check_central_differences
from stepcheck import model_problem as problem

from bptt import BpttError, Dense, Model, fast, ops, rnn
from bptt.algorithms import make
from bptt.algorithms.budget import measure_storage
from bptt.algorithms.full import full_bptt
from bptt.cells import make_cell
from bptt.cells.zoneout import Zoneout
from bptt.diagnostics import gradcheck

CASES = {
    "lstm h and c": ("lstm", dict(zoneout=0.3, zoneout_cell=0.5)),
    "lstm c": ("lstm", dict(zoneout_cell=0.5)),
    "gru": ("gru", dict(zoneout=0.4)),
    "elman": ("elman", dict(zoneout=0.4)),
}


def model_with(cell="lstm", layers=2, D=3, K=4, bidirectional=False, **zo):
    zo = zo or dict(zoneout=0.3, zoneout_cell=0.5)
    return Model(D, [*rnn(cell, 5, layers, bidirectional=bidirectional, **zo), Dense(K)], loss="ce")


def cells_of(model):
    return [d.cell for lv in model.recurrent_levels for d in lv.directions]


@pytest.mark.parametrize("case", CASES)
def test_gradients_with_held_masks_are_exact(case):
    cell, zo = CASES[case]
    model = model_with(cell, **zo)
    params, x, y, state0 = problem(model)
    mask = np.ones(x.shape[:2], bool)
    mask[4:, 1] = False  # a shorter sequence: held steps pass the zoned cells too
    with model.dropout(np.random.default_rng(5), 3, np.float64):
        assert all(isinstance(c, Zoneout) and c.seed is not None for c in cells_of(model))
        res = gradcheck(model, params, x, y, mask=mask, state0=state0, tol=1e-6)
        assert res.passed, res.errors
        g = full_bptt(model, params, x, y, mask=mask, state0=state0)
    res = gradcheck(model, params, x, y, mask=mask, state0=state0, tol=1e-6)  # without masks: the expectation
    assert res.passed, res.errors
    plain = full_bptt(model, params, x, y, mask=mask, state0=state0)
    assert max(np.abs(plain.grads[k] - g.grads[k]).max() for k in g.grads) > 1e-3


def test_masks_are_fresh_per_step_and_a_function_of_the_step():
    cell = Zoneout(make_cell("lstm", 3, 64), {"h": 0.2, "c": 0.5})
    cell.draw(np.random.default_rng(0), 32, np.float64)
    m = cell.masks(0, 40, 32)  # (T, B, fields, H)
    assert m.shape == (40, 32, 2, 64)
    assert abs(m[:, :, 0].mean() - 0.2) < 0.01 and abs(m[:, :, 1].mean() - 0.5) < 0.01
    assert not np.array_equal(m[0], m[1])  # a fresh draw per step
    np.testing.assert_array_equal(np.concatenate([cell.masks(0, 13, 32), cell.masks(13, 27, 32)]), m)
    seed = cell.seed
    cell.draw(np.random.default_rng(1), 32, np.float64)
    assert cell.seed != seed and not np.array_equal(cell.masks(0, 40, 32), m)
    cell.clear()
    assert cell.masks(0, 40, 32) is None


def test_without_masks_the_step_is_the_expectation():
    """A hand-written NumPy loop: s_t = z s_(t-1) + (1 - z) s~_t of the plain cell's step."""
    model = model_with("lstm", layers=1)
    plain = Model(3, [*rnn("lstm", 5, 1), Dense(4)], loss="ce")
    params, x, y, state0 = problem(model, seed=2)
    out, final = model.forward(params, x, state0=state0)
    c = plain.recurrent_levels[0].directions[0].cell
    p = {k.split(".", 1)[1]: v for k, v in params.items() if k.startswith("lstm0.")}
    s = state0["lstm0"]
    hs = []
    for t in range(len(x)):
        new, _, _ = c.step(p, s, c.project(p, x[t : t + 1])[0])
        s = type(s)(0.3 * s.h + 0.7 * new.h, 0.5 * s.c + 0.5 * new.c)
        hs.append(s.h)
    np.testing.assert_allclose(out, np.stack(hs) @ params["dense1.W"].T + params["dense1.b"], rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(final["lstm0"].c, s.c, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_segments_run_again_and_truncation_meet_the_same_masks(bidirectional):
    model = model_with("lstm", bidirectional=bidirectional)
    params, x, y, state0 = problem(model, seed=1, T=9)
    with model.dropout(np.random.default_rng(3), 3, np.float64):
        g = full_bptt(model, params, x, y, state0=state0)
        st = measure_storage(model, params, 3)
        budget = make("budget", budget=st.leaf(2) + 2 * st.state)
        b = budget(model, params, x, y, state0=state0)
        assert budget.stats["forward_steps"] > len(x)  # segments run again
        if not bidirectional:
            t = make("tbptt", k1=9, k2=9)(model, params, x, y, state0=state0)
            for k in g.grads:
                np.testing.assert_allclose(t.grads[k], g.grads[k], rtol=1e-12, atol=1e-14)
    for k in g.grads:
        np.testing.assert_allclose(b.grads[k], g.grads[k], rtol=1e-12, atol=1e-14, err_msg=k)


def test_gradients_equal_torch_autograd_with_the_same_masks():
    torch = pytest.importorskip("torch")
    model = model_with("lstm", layers=1)
    params, x, y, state0 = problem(model, seed=3)
    cell = cells_of(model)[0]
    with model.dropout(np.random.default_rng(7), 3, np.float64):
        d = torch.from_numpy(cell.masks(0, len(x), 3).astype(np.float64))  # (T, B, [h, c], H)
        g = full_bptt(model, params, x, y, state0=state0)
    t = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    s = state0["lstm0"]
    h, c = torch.tensor(s.h, requires_grad=True), torch.tensor(s.c, requires_grad=True)
    h0, c0 = h, c
    W_ih, W_hh, b = t["lstm0.W_ih"], t["lstm0.W_hh"], t["lstm0.b_ih"] + t["lstm0.b_hh"]
    logits = []
    for step in range(len(x)):
        a = torch.from_numpy(x[step]) @ W_ih.T + h @ W_hh.T + b
        i, f, gg, o = a.chunk(4, dim=1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
        h_new = torch.sigmoid(o) * torch.tanh(c_new)
        dh, dc = d[step, :, 0], d[step, :, 1]
        h, c = dh * h + (1 - dh) * h_new, dc * c + (1 - dc) * c_new
        logits.append(h @ t["dense1.W"].T + t["dense1.b"])
    loss = torch.nn.functional.cross_entropy(torch.stack(logits).reshape(-1, 4), torch.from_numpy(y).reshape(-1))
    loss.backward()
    assert abs(loss.item() - g.loss) < 1e-13
    for k in params:
        np.testing.assert_allclose(g.grads[k], t[k].grad.numpy(), rtol=1e-10, atol=1e-13, err_msg=k)
    np.testing.assert_allclose(g.dstate0["lstm0"].h, h0.grad.numpy(), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(g.dstate0["lstm0"].c, c0.grad.numpy(), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("case", ["lstm h and c", "gru", "elman"])
def test_float32_fast_steps_equal_the_numpy_steps(case):
    cell, zo = CASES[case]
    model = model_with(cell, layers=1, D=6, K=5, **zo)
    params, x, y, state0 = problem(model, seed=4, T=12, B=4, dtype=np.float32)
    out = {}
    for on in (True, False):
        with fast.use(on), model.dropout(np.random.default_rng(1), 4, np.float32):
            out[on] = full_bptt(model, params, x, y, state0=state0)
    assert out[True].grads[next(iter(params))].dtype == np.float32
    inner = cells_of(model)[0].inner
    with fast.use(True):
        assert ops.implementation(inner, np.float32) is not inner  # the kernels ran (numba is a dependency)
    for k in out[True].grads:
        np.testing.assert_allclose(out[True].grads[k], out[False].grads[k], rtol=2e-4, atol=2e-6, err_msg=k)


@pytest.mark.parametrize("held", [True, False])
def test_step_jvp_is_the_transpose_of_step_back(held):
    rng = np.random.default_rng(0)
    cell = Zoneout(make_cell("lstm", 3, 4), {"h": 0.3, "c": 0.6})
    p = {k: rng.normal(size=v.shape) for k, v in cell.init_params(rng).items()}
    if held:
        cell.draw(rng, 2, np.float64)
    state = cell.State(rng.normal(size=(2, 4)), rng.normal(size=(2, 4)))
    xp = cell.project(p, rng.normal(size=(1, 2, 3)))
    _, _, cache = cell.step(p, state, xp[0])
    v = cell.State(rng.normal(size=(2, 4)), rng.normal(size=(2, 4)))
    vx = rng.normal(size=(2, 16))
    u, uo = cell.State(rng.normal(size=(2, 4)), rng.normal(size=(2, 4))), rng.normal(size=(2, 4))
    js, jo = cell.step_jvp(p, cache, v, vx)
    bs, bx = cell.step_back(p, cache, u, uo, {k: np.zeros_like(a) for k, a in p.items()})
    lhs = sum((a * b).sum() for a, b in zip(u, js)) + (uo * jo).sum()
    rhs = sum((a * b).sum() for a, b in zip(bs, v)) + (bx * vx).sum()
    assert abs(lhs - rhs) < 1e-12 * max(1.0, abs(lhs))


def test_tbptt_steps_kept_past_their_batch_go_back_through_their_own_masks():
    """TBPTT(k1 = 2, k2 = 4) on a stream: the second window reaches back into the first batch,
    whose steps met that batch's masks. Reference: float64 central differences of the second
    window's loss, its first two steps with the first batch's masks, the last two with the
    second's."""
    from bptt.algorithms.truncated import TBPTTStream

    model = Model(2, [*rnn("lstm", 3, 1, zoneout=0.5, zoneout_cell=0.5), Dense(2)], loss="ce")
    rng = np.random.default_rng(0)
    params = {k: rng.uniform(-0.8, 0.8, v.shape) for k, v in model.init_params(0).items()}
    B = 4
    x1, x2 = rng.normal(size=(2, B, 2)), rng.normal(size=(2, B, 2))
    y1, y2 = rng.integers(0, 2, (2, B)), rng.integers(0, 2, (2, B))
    stream = TBPTTStream(model, k1=2, k2=4)
    cell = cells_of(model)[0]
    seeds = []
    for x, y, s in ((x1, y1, 1), (x2, y2, 2)):
        with model.dropout(np.random.default_rng(s), B, np.float64):
            seeds.append(cell.seed)
            g = stream(params, x, y)

    def loss() -> float:
        try:
            cell.seed, cell.batch = seeds[0], B
            _, state = model.forward(params, x1)
            cell.seed = seeds[1]
            out, _ = model.forward(params, x2, state0=state)
            return model.loss_fn.value(out, y2, None)
        finally:
            cell.clear()

    assert abs(loss() - g.loss) < 1e-12
    check_central_differences(loss, params, g.grads)


def test_what_it_refuses():
    with pytest.raises(BpttError, match="zoneout: expected an unwrapped elman or gru or lstm cell.*received 'jordan'"):
        Model(3, [*rnn("jordan", 5, zoneout=0.2), Dense(2)])
    with pytest.raises(BpttError, match=r"zoneout rate of 'h': expected a number in \[0, 1\), received 1.0"):
        Zoneout(make_cell("lstm", 3, 5), {"h": 1.0})
    with pytest.raises(BpttError, match=r"zoneout: expected rates for some of the state fields \['h'\]"):
        Zoneout(make_cell("gru", 3, 5), {"c": 0.5})
    with pytest.raises(BpttError, match="expected recurrent dropout or zoneout, received both"):
        Model(3, [*rnn("lstm", 5, recurrent_dropout=0.2, zoneout=0.1), Dense(2)])
    model = model_with("lstm", layers=1)
    params, x, y, state0 = problem(model)
    with model.dropout(np.random.default_rng(0), 2, np.float64):  # masks for 2 sequences, a batch of 3
        with pytest.raises(BpttError, match="zoneout: expected a batch of 2 sequences .*received 3"):
            full_bptt(model, params, x, y)


def test_step_by_step_runs_meet_the_masks_of_their_steps():
    """The gradient-flow diagnostics run the model one step at a time (forward_levels with t0 =
    t): with masks held, their loss is full BPTT's on the same masks, not step 0's masks again."""
    from bptt.diagnostics import flow

    model = model_with("lstm", layers=1)
    params, x, y, state0 = problem(model, seed=6)
    with model.dropout(np.random.default_rng(2), 3, np.float64):
        f = flow(model, params, x, y, state0=state0, jacobians=False)
        g = full_bptt(model, params, x, y, state0=state0)
    assert abs(f.loss - g.loss) < 1e-12


@pytest.mark.parametrize("budget", [None, 10**9])
def test_truncation_over_a_whole_sequence_gives_each_segment_its_own_masks(budget):
    """TBPTT(k1 = 3) over 9 steps (within a budget too): the windows' losses are the full
    forward pass's on the same masks (each segment's masks those of its steps, not steps 0-2's)."""
    model = model_with("lstm", layers=1)
    params, x, y, state0 = problem(model, seed=8, T=9)
    algo = make("tbptt", k1=3, k2=3, **({"budget": budget} if budget else {}))
    with model.dropout(np.random.default_rng(4), 3, np.float64):
        g = algo(model, params, x, y, state0=state0)
        whole = full_bptt(model, params, x, y, state0=state0)
    assert abs(g.loss - whole.loss) < 1e-12
