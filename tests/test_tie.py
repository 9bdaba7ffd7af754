"""Weight tying (Dense(V, tie=embedding), --tie): the readout's W is the embedding's table, one
parameter whose gradient is the sum of both uses: float64 central differences, torch autograd on
a model whose nn.Linear shares nn.Embedding's weight, every algorithm that takes text; a run
with --tie trains, exports as torch's tied modules and imports back tied."""

import json
import os

import numpy as np
import pytest

from bptt import BpttError, Dense, Embedding, Model, rnn
from bptt.algorithms import make
from bptt.algorithms.full import full_bptt
from bptt.cli import main
from bptt.diagnostics import gradcheck
from bptt.train.runs import load_run

V, H = 7, 5


def tied_model(cell="lstm", layers=1):
    emb = Embedding(H)
    return Model(V, [emb, rnn(cell, H, layers), Dense(V, tie=emb)], tokens=True, loss="ce")


def problem(model, seed=0, T=6, B=3):
    rng = np.random.default_rng(seed)
    params = {k: rng.uniform(-0.6, 0.6, v.shape) for k, v in model.init_params(0).items()}  # non-zero biases
    x = rng.integers(0, V, (T, B))
    y = rng.integers(0, V, (T, B))
    state0, _ = model.initial_state(params, B)
    state0 = {k: type(s)(*(rng.normal(size=a.shape) * 0.5 for a in s)) for k, s in state0.items()}
    return params, x, y, state0


def test_one_table_for_both_levels():
    model = tied_model()
    shapes = model.param_shapes()
    assert "dense2.W" not in shapes and shapes["embed0.W"] == (V, H) and shapes["dense2.b"] == (V,)
    assert "tie='embed0'" in repr(model.levels[-1])
    untied = Model(V, [Embedding(H), rnn("lstm", H), Dense(V)], tokens=True, loss="ce")
    n = sum(np.prod(s) for s in shapes.values())
    assert n == sum(np.prod(s) for s in untied.param_shapes().values()) - V * H
    # the tied table is drawn at the readout's scale (torch Linear's), not N(0, 1)
    p = model.init_params(0)
    assert np.abs(p["embed0.W"]).max() <= 1 / np.sqrt(H)


@pytest.mark.parametrize("cell", ["elman", "gru", "lstm"])
def test_gradients_are_exact(cell):
    model = tied_model(cell, layers=2)
    params, x, y, state0 = problem(model)
    res = gradcheck(model, params, x, y, state0=state0, tol=1e-6)
    assert res.passed, res.errors
    # the table's gradient is the sum of what the embedding and the readout each give it
    g = full_bptt(model, params, x, y, state0=state0).grads["embed0.W"]
    emb = Embedding(H)
    untied = Model(V, [emb, rnn(cell, H, 2), Dense(V)], tokens=True, loss="ce")
    out = untied.levels[-1].name
    p2 = {**params, f"{out}.W": params["embed0.W"].copy()}
    u = full_bptt(untied, p2, x, y, state0=state0).grads
    np.testing.assert_allclose(g, u["embed0.W"] + u[f"{out}.W"], rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("algorithm", ["tbptt", "budget"])
def test_other_algorithms_give_the_same_gradient(algorithm):
    model = tied_model()
    params, x, y, state0 = problem(model, seed=1)
    g = full_bptt(model, params, x, y, state0=state0)
    opts = {"k1": 6, "k2": 6} if algorithm == "tbptt" else {"budget": 1}
    if algorithm == "budget":
        from bptt.algorithms.budget import measure_storage

        st = measure_storage(model, params, 3)
        opts = {"budget": st.leaf(2) + 2 * st.state}
    other = make(algorithm, **opts)(model, params, x, y, state0=state0)
    for k in g.grads:
        np.testing.assert_allclose(other.grads[k], g.grads[k], rtol=1e-12, atol=1e-14)


def test_gradients_equal_torch_autograd_with_a_shared_weight():
    torch = pytest.importorskip("torch")
    model = tied_model("lstm")
    params, x, y, state0 = problem(model, seed=4)
    g = full_bptt(model, params, x, y, state0=state0)
    emb = torch.nn.Embedding(V, H).double()
    lstm = torch.nn.LSTM(H, H).double()
    lin = torch.nn.Linear(H, V).double()
    lin.weight = emb.weight  # torch's word_language_model's tying
    with torch.no_grad():
        emb.weight.copy_(torch.from_numpy(params["embed0.W"]))
        lstm.weight_ih_l0.copy_(torch.from_numpy(params["lstm1.W_ih"]))
        lstm.weight_hh_l0.copy_(torch.from_numpy(params["lstm1.W_hh"]))
        lstm.bias_ih_l0.copy_(torch.from_numpy(params["lstm1.b_ih"]))
        lstm.bias_hh_l0.copy_(torch.from_numpy(params["lstm1.b_hh"]))
        lin.bias.copy_(torch.from_numpy(params["dense2.b"]))
    s = state0["lstm1"]
    h0, c0 = (torch.from_numpy(a[None].copy()) for a in (s.h, s.c))
    out, _ = lstm(emb(torch.from_numpy(x)), (h0, c0))
    logits = lin(out)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), torch.from_numpy(y).reshape(-1))
    loss.backward()
    assert abs(loss.item() - g.loss) < 1e-13
    np.testing.assert_allclose(g.grads["embed0.W"], emb.weight.grad.numpy(), rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(g.grads["dense2.b"], lin.bias.grad.numpy(), rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(g.grads["lstm1.W_hh"], lstm.weight_hh_l0.grad.numpy(), rtol=1e-11, atol=1e-14)


def test_a_tie_must_fit():
    with pytest.raises(BpttError, match="Dense tie: expected an Embedding level of the same model, received Dense"):
        Dense(V, tie=Dense(3))
    other = Embedding(H)
    Model(V, [other, rnn("lstm", H), Dense(V)], tokens=True, loss="ce")
    with pytest.raises(BpttError, match="expected a tie to an Embedding level before it in this model"):
        Model(V, [Embedding(H), rnn("lstm", H), Dense(V, tie=other)], tokens=True, loss="ce")
    assert other.readout is None  # (another model's embedding is left as it was)
    emb = Embedding(4)
    with pytest.raises(
        BpttError, match=r"Dense tie: expected an earlier Embedding of shape \(7, 5\).*received \(7, 4\)"
    ):
        Model(V, [emb, rnn("lstm", H), Dense(V, tie=emb)], tokens=True, loss="ce")


def test_a_tied_run_trains_exports_and_imports_tied(tmp_path):
    text = tmp_path / "words.txt"
    words = "the cat sat on a mat while a dog ran to the big red barn and the bird sang ".split()
    text.write_text(" ".join(np.random.default_rng(0).choice(words, size=800)) + "\n")
    out = str(tmp_path / "run")
    common = ["--hidden", "16", "--embed", "16", "--steps", "30", "--batch-size", "4", "--seq-len", "20"]
    rc = main(["train", "--data", str(text), "--tie", "--out", out, "--sample-length", "0", "--no-progress", *common])
    assert rc == 0
    run = load_run(out)
    assert run.cfg.tie and "dense2.W" not in run.params
    first = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])["loss"]
    last = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r for r in last if r.get("split") == "train"][-1]["loss"] < first  # it learns
    path = str(tmp_path / "w.npz")
    assert main(["export", out, "--out", path]) == 0
    spec = json.loads(open(path + ".json").read())
    assert spec["tie_weights"] is True
    arrays = np.load(path)
    np.testing.assert_array_equal(arrays["linear.weight"], arrays["embedding.weight"])
    back = str(tmp_path / "back")
    assert main(["import", path, "--out", back]) == 0
    again = load_run(back)
    assert again.cfg.tie and set(again.params) == set(run.params)
    for k in run.params:
        np.testing.assert_array_equal(again.params[k], run.params[k])
    # a file whose two tables differ is refused
    bad = dict(arrays)
    bad["linear.weight"] = bad["linear.weight"] + 1
    np.savez(str(tmp_path / "bad.npz"), **bad)
    os.link(path + ".json", str(tmp_path / "bad.npz.json"))
    assert main(["import", str(tmp_path / "bad.npz"), "--out", str(tmp_path / "bad-run")]) == 2
    assert not os.path.exists(tmp_path / "bad-run" / "checkpoint.npz")
