"""Variational dropout between levels (bptt.Dropout, --dropout): masks held per batch make the
level linear, so the gradient is exact (central differences, torch autograd with the same
masks, memory-budgeted BPTT meeting the same masks); without masks it is the identity; runs
place it after every recurrent level and export as torch's modules."""

import numpy as np
import pytest

import bptt
from bptt import Dense, Dropout, Model, rnn
from bptt.algorithms import make
from bptt.algorithms.budget import measure_storage
from bptt.algorithms.full import full_bptt
from bptt.diagnostics import gradcheck
from bptt.train import TrainConfig, Trainer


def dropout_model(cell="lstm", rate=0.4):
    a, b = rnn(cell, 5), rnn(cell, 5)
    return Model(3, [a, Dropout(rate), b, Dropout(rate), Dense(4)], loss="ce")


def problem(model, seed=0, T=6, B=3):
    rng = np.random.default_rng(seed)
    params = {k: rng.uniform(-0.6, 0.6, v.shape) for k, v in model.init_params(0).items()}  # non-zero biases
    x = rng.normal(size=(T, B, 3))
    y = rng.integers(0, 4, (T, B))
    state0, _ = model.initial_state(params, B)
    state0 = {k: type(s)(*(rng.normal(size=a.shape) * 0.5 for a in s)) for k, s in state0.items()}
    return params, x, y, state0


def test_a_level_without_masks_is_the_identity_and_its_masks_are_per_sequence():
    lv = Dropout(0.3)
    Model(4, [lv, Dense(2)])
    x = np.random.default_rng(0).normal(size=(5, 6, 4))
    assert lv.forward({}, x)[0] is x
    lv.draw(np.random.default_rng(1), 6, np.float64)
    assert lv.mask.shape == (6, 4) and set(np.unique(lv.mask)) <= {0.0, 1 / 0.7}
    y = lv.forward({}, x)[0]
    np.testing.assert_array_equal(y, x * lv.mask)  # the same units of a sequence at every step
    lv.clear()
    assert lv.forward({}, x)[0] is x
    with pytest.raises(bptt.BpttError, match=r"dropout rate: expected a number in \[0, 1\), received 1.0"):
        Dropout(1.0)
    lv.draw(np.random.default_rng(2), 4000, np.float32)  # each unit of each sequence kept with 1 - rate
    assert lv.mask.dtype == np.float32 and abs((lv.mask > 0).mean() - 0.7) < 0.01


@pytest.mark.parametrize("cell", ["elman", "gru", "lstm"])
def test_gradients_with_held_masks_are_exact(cell):
    """float64: central differences of the masked network's loss, and full BPTT equal under
    memory-budgeted BPTT (its recomputed segments meet the same masks)."""
    model = dropout_model(cell)
    params, x, y, state0 = problem(model)
    with model.dropout(np.random.default_rng(5), 3, np.float64):
        assert any((lv.mask == 0).any() for lv in model.levels if lv.kind == "dropout")
        res = gradcheck(model, params, x, y, state0=state0, tol=1e-6)
        assert res.passed, res.errors
        g = full_bptt(model, params, x, y, state0=state0)
        st = measure_storage(model, params, 3)
        algo = make("budget", budget=st.leaf(2) + 2 * st.state)
        b = algo(model, params, x, y, state0=state0)
        assert algo.stats["forward_steps"] > len(x)  # segments were run again
    for k in g.grads:
        np.testing.assert_allclose(b.grads[k], g.grads[k], rtol=1e-12, atol=1e-14)
    # the masks changed the gradient: without them it is another network's
    plain = full_bptt(model, params, x, y, state0=state0)
    assert max(np.abs(plain.grads[k] - g.grads[k]).max() for k in g.grads) > 1e-3


def test_gradients_equal_torch_autograd_with_the_same_masks():
    torch = pytest.importorskip("torch")
    model = dropout_model("lstm")
    params, x, y, state0 = problem(model, seed=3)
    with model.dropout(np.random.default_rng(7), 3, np.float64):
        masks = [torch.from_numpy(lv.mask) for lv in model.levels if lv.kind == "dropout"]
        g = full_bptt(model, params, x, y, state0=state0)
    t = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    names = [lv.name for lv in model.levels]  # lstm0, dropout1, lstm2, dropout3, dense4
    h = torch.from_numpy(x)
    for li, m in ((0, masks[0]), (2, masks[1])):
        n = names[li]
        hs, cs = (torch.from_numpy(a) for a in state0[n])
        outs = []
        for step in range(h.shape[0]):  # torch's LSTM equations, gates [i, f, g, o]
            a = h[step] @ t[f"{n}.W_ih"].T + t[f"{n}.b_ih"] + hs @ t[f"{n}.W_hh"].T + t[f"{n}.b_hh"]
            i_, f_, g_, o_ = a.chunk(4, dim=1)
            cs = torch.sigmoid(f_) * cs + torch.sigmoid(i_) * torch.tanh(g_)
            hs = torch.sigmoid(o_) * torch.tanh(cs)
            outs.append(hs)
        h = torch.stack(outs) * m
    logits = h @ t[f"{names[4]}.W"].T + t[f"{names[4]}.b"]
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 4), torch.from_numpy(y).reshape(-1))
    loss.backward()
    assert abs(loss.item() - g.loss) < 1e-12
    for k in params:
        np.testing.assert_allclose(g.grads[k], t[k].grad.numpy(), rtol=1e-9, atol=1e-12)


def cfg(out, **kw):
    base = dict(hidden=16, layers=2, steps=8, eval_every=4, batch_size=4, seq_len=12, dtype="float64")
    base.update(progress=False, out=str(out), dropout=0.3)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("drop") / "t.txt"
    rng = np.random.default_rng(0)
    p.write_text(" ".join(rng.choice("the cat sat on a mat and a dog ran".split(), 1500)))
    return str(p)


def test_a_dropout_run_places_its_levels_and_exports_to_torch_modules(tmp_path, text_file):
    """(Its resume, bitwise: tests/train/test_train.py.)"""
    whole = Trainer(cfg(tmp_path / "whole", data=text_file), log=lambda s: None).run()
    plain = Trainer(cfg(tmp_path / "plain", data=text_file, dropout=0.0), log=lambda s: None).run()
    assert [lv.kind for lv in whole.model.levels] == ["lstm", "dropout", "lstm", "dropout", "dense"]
    assert [lv.kind for lv in plain.model.levels] == ["lstm", "lstm", "dense"]  # as before
    assert whole.last_eval["loss"] != plain.last_eval["loss"]
    from bptt.interop import torch_names, torch_problem

    assert torch_problem(whole.model) is None  # identity outside training: torch's modules in eval mode
    assert torch_names(whole.model)["dense4.W"] == "linear.weight"
    assert torch_names(whole.model)["lstm2.W_hh"] == "rnn.weight_hh_l1"


def test_input_dropout_sits_below_the_first_recurrent_level(tmp_path, text_file):
    """--input-dropout: after the embedding for text, first for a series; it changes the run
    and the model still maps onto torch's modules."""
    a = Trainer(cfg(tmp_path / "a", data=text_file, dropout=0.0, embed=8, input_dropout=0.3), log=lambda s: None).run()
    b = Trainer(cfg(tmp_path / "b", data=text_file, dropout=0.0, embed=8), log=lambda s: None).run()
    assert [lv.kind for lv in a.model.levels] == ["embed", "dropout", "lstm", "lstm", "dense"]
    assert a.last_eval["loss"] != b.last_eval["loss"]
    from bptt.interop import torch_problem

    assert torch_problem(a.model) is None
    series = tmp_path / "s.csv"
    series.write_text("\n".join(f"{np.sin(i / 5):.5f}" for i in range(300)) + "\n")
    s = Trainer(
        cfg(tmp_path / "s", data=str(series), task="series", dropout=0.0, input_dropout=0.5), log=lambda s: None
    )
    assert [lv.kind for lv in s.model.levels] == ["dropout", "lstm", "lstm", "dense"]
    # with masks held the model's gradient is exact (float64 central differences)
    model = s.model
    rng = np.random.default_rng(0)
    params = {k: rng.uniform(-0.5, 0.5, v.shape) for k, v in model.init_params(0).items()}
    x, y = rng.normal(size=(5, 6, 1)), rng.normal(size=(5, 6, 1))
    with model.dropout(np.random.default_rng(2), 6, np.float64):
        assert (model.levels[0].mask == 0).any() and (model.levels[0].mask > 0).any()
        res = gradcheck(model, params, x, y, tol=1e-6)
    assert res.passed, res.errors
