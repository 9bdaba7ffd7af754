"""Variational dropout on the recurrent connections (--recurrent-dropout, cells/recurrent_dropout.py):
with masks held the gradient is exact (float64 central differences, torch autograd on the same
masks, truncation and memory-budgeted BPTT meeting the same masks, the fast path's per-step
kernels against the NumPy steps); without masks the model is the plain one."""

import numpy as np
import pytest
from stepcheck import check_central_differences
from stepcheck import model_problem as problem

from bptt import BpttError, Dense, Model, fast, ops, rnn
from bptt.algorithms import make
from bptt.algorithms.budget import measure_storage
from bptt.algorithms.full import full_bptt
from bptt.cells import make_cell
from bptt.cells.recurrent_dropout import RecurrentDropout
from bptt.diagnostics import gradcheck


def model_with(cell="lstm", rate=0.4, layers=2, D=3, K=4, dtype=np.float64):
    return Model(D, [*rnn(cell, 5, layers, recurrent_dropout=rate), Dense(K)], loss="ce")


@pytest.mark.parametrize("cell", ["elman", "lstm"])
def test_gradients_with_held_masks_are_exact(cell):
    model = model_with(cell)
    params, x, y, state0 = problem(model)
    mask = np.ones(x.shape[:2], bool)
    mask[4:, 1] = False  # a shorter sequence: held steps pass the masked cells too
    with model.dropout(np.random.default_rng(5), 3, np.float64):
        cells = [d.cell for lv in model.recurrent_levels for d in lv.directions]
        assert all(isinstance(c, RecurrentDropout) and (c.mask == 0).any() for c in cells)
        res = gradcheck(model, params, x, y, mask=mask, state0=state0, tol=1e-6)
        assert res.passed, res.errors
        g = full_bptt(model, params, x, y, state0=state0)
        st = measure_storage(model, params, 3)
        budget = make("budget", budget=st.leaf(2) + 2 * st.state)
        b = budget(model, params, x, y, state0=state0)
        assert budget.stats["forward_steps"] > len(x)  # segments run again meet the same masks
        t = make("tbptt", k1=6, k2=6)(model, params, x, y, state0=state0)
    for k in g.grads:
        np.testing.assert_allclose(b.grads[k], g.grads[k], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(t.grads[k], g.grads[k], rtol=1e-12, atol=1e-14)
    plain = full_bptt(model, params, x, y, state0=state0)  # no masks: another network's gradient
    assert max(np.abs(plain.grads[k] - g.grads[k]).max() for k in g.grads) > 1e-3


def test_without_masks_it_is_the_plain_model():
    model = model_with("lstm")
    plain = Model(3, [*rnn("lstm", 5, 2), Dense(4)], loss="ce")
    params, x, y, state0 = problem(model, seed=2)
    a, _ = model.forward(params, x, state0=state0)
    b, _ = plain.forward(params, x, state0=state0)
    np.testing.assert_array_equal(a, b)
    cell = model.recurrent_levels[0].directions[0].cell
    assert cell.effective() is cell.inner  # (so the fast path takes it)


def test_gradients_equal_torch_autograd_with_the_same_masks():
    torch = pytest.importorskip("torch")
    model = model_with("lstm", layers=1)
    params, x, y, state0 = problem(model, seed=3)
    with model.dropout(np.random.default_rng(7), 3, np.float64):
        m = torch.from_numpy(model.recurrent_levels[0].directions[0].cell.mask)
        g = full_bptt(model, params, x, y, state0=state0)
    t = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    s = state0["lstm0"]
    h, c = torch.tensor(s.h, requires_grad=True), torch.tensor(s.c, requires_grad=True)
    h0, c0 = h, c
    W_ih, W_hh, b = t["lstm0.W_ih"], t["lstm0.W_hh"], t["lstm0.b_ih"] + t["lstm0.b_hh"]
    logits = []
    for step in range(len(x)):
        a = torch.from_numpy(x[step]) @ W_ih.T + (h * m) @ W_hh.T + b  # the mask on h_(t-1) only
        i, f, gg, o = a.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
        h = torch.sigmoid(o) * torch.tanh(c)
        logits.append(h @ t["dense1.W"].T + t["dense1.b"])
    loss = torch.nn.functional.cross_entropy(torch.stack(logits).reshape(-1, 4), torch.from_numpy(y).reshape(-1))
    loss.backward()
    assert abs(loss.item() - g.loss) < 1e-13
    for k in params:
        np.testing.assert_allclose(g.grads[k], t[k].grad.numpy(), rtol=1e-10, atol=1e-13, err_msg=k)
    np.testing.assert_allclose(g.dstate0["lstm0"].h, h0.grad.numpy(), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(g.dstate0["lstm0"].c, c0.grad.numpy(), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("cell", ["elman", "lstm"])
def test_float32_fast_steps_equal_the_numpy_steps(cell):
    model = model_with(cell, layers=1, D=6, K=5)
    params, x, y, state0 = problem(model, seed=4, T=12, B=4, dtype=np.float32)
    out = {}
    for on in (True, False):
        with fast.use(on), model.dropout(np.random.default_rng(1), 4, np.float32):
            out[on] = full_bptt(model, params, x, y, state0=state0)
    inner = model.recurrent_levels[0].directions[0].cell.inner
    with fast.use(True):
        assert ops.implementation(inner, np.float32) is not inner  # the kernels ran (numba is a dependency)
    for k in out[True].grads:
        np.testing.assert_allclose(out[True].grads[k], out[False].grads[k], rtol=2e-4, atol=2e-6, err_msg=k)


def test_what_it_refuses():
    with pytest.raises(BpttError, match="recurrent dropout: expected an unwrapped elman or lstm cell.*received 'gru'"):
        Model(3, [*rnn("gru", 5, recurrent_dropout=0.2), Dense(2)])
    with pytest.raises(BpttError, match=r"recurrent dropout rate: expected a number in \(0, 1\), received 1.0"):
        RecurrentDropout(make_cell("lstm", 3, 5), 1.0)
    model = model_with("lstm", layers=1)
    params, x, y, state0 = problem(model)
    with model.dropout(np.random.default_rng(0), 2, np.float64):  # masks for 2 sequences, a batch of 3
        with pytest.raises(BpttError, match="recurrent dropout: expected a batch of 2 sequences"):
            full_bptt(model, params, x, y)


def _holders(model):
    """Whatever holds masks: Dropout levels and recurrent-dropout cells."""
    out = [lv for lv in model.levels if lv.kind == "dropout"]
    return out + [d.cell for lv in model.recurrent_levels for d in lv.directions if hasattr(d.cell, "draw")]


def test_tbptt_steps_kept_past_their_batch_go_back_through_their_own_masks():
    """TBPTT(k1 = 2, k2 = 4) on a stream: the second window reaches back into the first batch,
    whose steps met that batch's masks (input dropout and recurrent dropout). Reference: float64
    central differences of the second window's loss, the first two steps run with the first
    batch's masks, the last two with the second's, from the initial state (the window's start)."""
    from bptt import Dropout
    from bptt.algorithms.truncated import TBPTTStream

    model = Model(2, [Dropout(0.5), *rnn("lstm", 3, 1, recurrent_dropout=0.5), Dense(2)], loss="ce")
    rng = np.random.default_rng(0)
    params = {k: rng.uniform(-0.8, 0.8, v.shape) for k, v in model.init_params(0).items()}
    B = 4
    x1, x2 = rng.normal(size=(2, B, 2)), rng.normal(size=(2, B, 2))
    y1, y2 = rng.integers(0, 2, (2, B)), rng.integers(0, 2, (2, B))
    stream = TBPTTStream(model, k1=2, k2=4)
    masks = []
    for x, y, seed in ((x1, y1, 1), (x2, y2, 2)):
        with model.dropout(np.random.default_rng(seed), B, np.float64):
            masks.append([h.mask.copy() for h in _holders(model)])
            g = stream(params, x, y)
    assert not all(np.array_equal(a, b) for a, b in zip(*masks))

    def loss() -> float:
        state = None
        try:
            for h, m in zip(_holders(model), masks[0]):
                h.mask = m
            _, state = model.forward(params, x1, state0=state)
            for h, m in zip(_holders(model), masks[1]):
                h.mask = m
            out, _ = model.forward(params, x2, state0=state)
            return model.loss_fn.value(out, y2, None)
        finally:
            for h in _holders(model):
                h.clear()

    assert abs(loss() - g.loss) < 1e-12
    check_central_differences(loss, params, g.grads)


@pytest.mark.parametrize("where", ["between", "recurrent"])
def test_several_mpi_ranks_refuse_masks(where):
    """Each rank would need its streams' share of a batch's masks: refused in one line."""
    from bptt import Dropout
    from bptt.train.dist import World

    class TwoRanks:  # what World reads of an MPI communicator
        def Get_size(self):
            return 2

        def Get_rank(self):
            return 0

    levels = (
        [*rnn("lstm", 4, recurrent_dropout=0.3), Dense(2)]
        if where == "recurrent"
        else [rnn("lstm", 4), Dropout(0.3), Dense(2)]
    )
    what = "recurrent dropout" if where == "recurrent" else "dropout"
    with pytest.raises(BpttError, match=f"^{what}: expected none for 2 MPI ranks .*received 0.3"):
        World(TwoRanks()).check(Model(3, levels), 4)
    World(TwoRanks()).check(Model(3, [rnn("lstm", 4), Dense(2)]), 4)  # without masks: nothing to refuse


@pytest.mark.parametrize("zoned", [False, True])
def test_budgeted_tbptt_reaching_back_refuses_masks(zoned):
    """A budgeted TBPTT window with k2 > k1 runs its earlier steps again, under this batch's
    masks where those steps met the previous batch's (its gradient differed from TBPTTStream's by
    0.023 here before the refusal). Refused in one line; with k2 = k1 it is TBPTTStream's."""
    from bptt import Dropout
    from bptt.algorithms.truncated import BudgetTBPTTStream

    opts = dict(zoneout=0.3) if zoned else dict(recurrent_dropout=0.5)
    model = Model(2, [Dropout(0.5), *rnn("lstm", 3, 1, **opts), Dense(2)], loss="ce")
    rng = np.random.default_rng(0)
    params = {k: rng.uniform(-0.8, 0.8, v.shape) for k, v in model.init_params(0).items()}
    B = 4
    xs, ys = [rng.normal(size=(2, B, 2)) for _ in range(2)], [rng.integers(0, 2, (2, B)) for _ in range(2)]
    reaching = BudgetTBPTTStream(model, k1=2, k2=4, budget=10**9)
    with model.dropout(np.random.default_rng(1), B, np.float64):
        reaching(params, xs[0], ys[0])  # nothing to reach back to yet
    with model.dropout(np.random.default_rng(2), B, np.float64):
        with pytest.raises(BpttError, match="expected no dropout or zoneout masks when a window reaches back"):
            reaching(params, xs[1], ys[1])
    _budgeted_equals_plain(model, params, xs, ys, k2=2)


def test_budgeted_tbptt_reaching_back_takes_dropout_after_the_last_layer():
    """Masks of a Dropout level after the last recurrent level touch only the readout, which the
    re-run steps never reach: the window reaching back is TBPTTStream's."""
    from bptt import Dropout

    model = Model(2, [*rnn("lstm", 3, 1), Dropout(0.5), Dense(2)], loss="ce")
    rng = np.random.default_rng(0)
    params = {k: rng.uniform(-0.8, 0.8, v.shape) for k, v in model.init_params(0).items()}
    B = 4
    xs, ys = [rng.normal(size=(2, B, 2)) for _ in range(3)], [rng.integers(0, 2, (2, B)) for _ in range(3)]
    _budgeted_equals_plain(model, params, xs, ys, k2=4)


def _budgeted_equals_plain(model, params, xs, ys, k2):
    """TBPTT(2, k2) within a budget gives TBPTTStream's gradient on the last of these batches,
    each batch's masks drawn from its own generator."""
    from bptt.algorithms.truncated import BudgetTBPTTStream, TBPTTStream

    grads = []
    for stream in (TBPTTStream(model, k1=2, k2=k2), BudgetTBPTTStream(model, k1=2, k2=k2, budget=10**9)):
        for i, (x, y) in enumerate(zip(xs, ys)):
            with model.dropout(np.random.default_rng(i + 1), x.shape[1], np.float64):
                g = stream(params, x, y)
        grads.append(g.grads)
    for k in params:
        np.testing.assert_allclose(grads[1][k], grads[0][k], rtol=1e-12, atol=1e-15, err_msg=k)
