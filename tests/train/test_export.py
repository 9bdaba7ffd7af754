"""bptt export / bptt import: weights under torch's names, back again bitwise, torch's modules built
from the description reproducing bptt's outputs, imported run folders that work, and files that
are read as data only (the refusals' wording is in bad_inputs.py)."""

import json
import os
import pickle

import numpy as np
import pytest

from bptt import BpttError, Dense, Embedding, Model, rnn
from bptt.cli import main
from bptt.interop import from_torch, state_to_torch
from bptt.train import TrainConfig, Trainer, export
from bptt.train.runs import load_run

WORDS = "the cat sat on a mat while a dog ran to the big red barn and the bird sang ".split()
CELLS = ("elman", "gru", "lstm")


def random_params(model, seed=0, dtype=np.float64):
    """Parameters with random non-zero biases (a zero bias would hide a swapped b_ih / b_hh)."""
    rng = np.random.default_rng(seed)
    p = model.init_params(rng, dtype)
    for k in p:
        if k.rsplit(".", 1)[1] in ("b_ih", "b_hh", "b"):
            p[k] = rng.normal(0, 0.5, p[k].shape).astype(dtype)
    return p


def torch_net(spec, path):
    """torch's modules from the description, the weights loaded strictly (as in the README)."""
    torch = pytest.importorskip("torch")
    st = pytest.importorskip("safetensors.torch")
    nn = torch.nn
    net = nn.ModuleDict({m: getattr(nn, s["module"])(**s["kwargs"]) for m, s in spec["torch"].items()})
    net = net.to(getattr(torch, spec["dtype"]))
    tensors = (
        st.load_file(path)
        if path.endswith(".safetensors")
        else {k: torch.from_numpy(v) for k, v in np.load(path).items()}
    )
    net.load_state_dict(tensors, strict=True)
    return net


def torch_forward(net, model, x, state0=None):
    import torch

    inp = torch.from_numpy(x)
    if "embedding" in net:
        inp = net["embedding"](inp)
    elif model.tokens:
        inp = torch.nn.functional.one_hot(inp.long(), model.input_size).to(net["linear"].weight.dtype)
    hx = None
    if state0 is not None:
        h, c = state_to_torch(model, state0)
        hx = torch.from_numpy(h) if c is None else (torch.from_numpy(h), torch.from_numpy(c))
    with torch.no_grad():
        out, _ = net["rnn"](inp, hx)
        return net["linear"](out).numpy()


def random_state(model, params, B, rng):
    s, _ = model.initial_state(params, B)
    return {k: type(v)(*(rng.normal(0, 0.5, a.shape) for a in v)) for k, v in s.items()}


# ---- the library: write_weights / read_weights ---------------------------------------------------
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", CELLS + ("elman-relu",))
def test_torch_built_from_an_export_reproduces_bptt(tmp_path, cell, layers, bidirectional):
    """float64, random non-zero biases and initial states: torch's nn.RNN/GRU/LSTM + nn.Linear
    made from the description, loaded with load_state_dict(strict=True), gives bptt's outputs."""
    opts = {"activation": "relu"} if cell == "elman-relu" else {}
    model = Model(4, [rnn(cell.split("-")[0], 5, layers, bidirectional, **opts), Dense(3)], loss="mse")
    params = random_params(model)
    path = str(tmp_path / "w.safetensors")
    pytest.importorskip("safetensors")
    spec = export.write_weights(path, model, params, "safetensors")
    assert json.load(open(path + ".json")) == spec
    assert spec["nonlinearity"] == ("relu" if opts else "tanh" if cell == "elman" else None)
    net = torch_net(spec, path)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(7, 3, 4))
    s0 = random_state(model, params, 3, rng)
    y, _ = model.forward(params, x, state0=s0)
    assert np.abs(y - torch_forward(net, model, x, s0)).max() <= 1e-12


@pytest.mark.parametrize("embed", [0, 6], ids=["one-hot", "embedding"])
@pytest.mark.parametrize("cell", CELLS)
def test_torch_reproduces_a_token_model(tmp_path, cell, embed):
    """On tokens: an Embedding level is nn.Embedding ('embedding.weight'); without one, torch
    reads one-hot vectors and rnn.weight_ih_l0 takes the vocabulary as input size."""
    V = 11
    model = Model(V, ([Embedding(embed)] if embed else []) + [rnn(cell, 5, 2), Dense(V)], tokens=True)
    params = random_params(model, 2)
    path = str(tmp_path / "w.safetensors")
    pytest.importorskip("safetensors")
    spec = export.write_weights(path, model, params, "safetensors")
    assert spec["input"] == ("embedding" if embed else "one-hot")
    assert spec["input_size"] == (embed or V) and spec["vocab_size"] == V
    net = torch_net(spec, path)
    x = np.random.default_rng(3).integers(0, V, size=(9, 2))
    y, _ = model.forward(params, x)
    assert np.abs(y - torch_forward(net, model, x)).max() <= 1e-12


@pytest.mark.parametrize("fmt", export.FORMATS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_file_round_trip_is_bitwise(tmp_path, fmt, dtype):
    if fmt == "safetensors":
        pytest.importorskip("safetensors")
    model = Model(7, [Embedding(3), rnn("lstm", 4, 2, True), Dense(7)], tokens=True)
    params = random_params(model, 4, dtype)
    path = str(tmp_path / f"w.{fmt}")
    export.write_weights(path, model, params, fmt, {"task": "text"})
    tensors, meta, got_fmt = export.read_weights(path)
    assert got_fmt == fmt and meta["dtype"] == np.dtype(dtype).name and meta["bidirectional"] is True
    assert "embedding.weight" in tensors and "rnn.weight_hh_l1_reverse" in tensors
    back = from_torch(model, tensors)
    assert set(back) == set(params)
    for k in params:
        assert back[k].dtype == dtype
        np.testing.assert_array_equal(back[k], params[k])
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]


@pytest.mark.parametrize(
    "levels, fragment",
    [
        ([rnn("jordan", 4), Dense(2)], "received a 'jordan' level jordan0"),
        ([rnn("lstm", 4, learn_init=True), Dense(2)], "received learned initial states in lstm0"),
        ([rnn("lstm", 4), Dense(2, "tanh")], "received a Dense readout dense1 with activation 'tanh'"),
        ([rnn("lstm", 4), rnn("gru", 4), Dense(2)], "received recurrent levels that differ: lstm0 (lstm, 4), gru1"),
        ([rnn("elman", 4, activation="sigmoid"), Dense(2)], "received an Elman level elman0 with activation 'sigmoid'"),
        ([Dense(4), rnn("gru", 4), Dense(2)], "received the Dense level dense0 at position 0"),
        ([rnn("lif", 4), Dense(2)], "received a 'lif' level lif0"),
    ],
)
def test_models_torch_has_no_modules_for_are_refused(tmp_path, levels, fragment):
    model = Model(3, levels, loss="mse")
    with pytest.raises(BpttError) as e:
        export.write_weights(str(tmp_path / "w.npz"), model, model.init_params(0), "npz")
    msg = str(e.value)
    assert fragment in msg and "expected a model of N identical" in msg and "\n" not in msg
    assert os.listdir(tmp_path) == []


# ---- the command line ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """words.txt, series.dat and three small float64 runs: a one-hot LSTM and an embedding GRU on
    text, an Elman network on a series."""
    d = tmp_path_factory.mktemp("export")
    rng = np.random.default_rng(0)
    (d / "words.txt").write_text(" ".join(rng.choice(WORDS, size=3000)) + "\n")
    t = np.arange(300)
    np.savetxt(d / "series.dat", np.sin(2 * np.pi * t / 23.0) + 0.3 * np.cos(2 * np.pi * t / 7.0))
    small = dict(hidden=8, steps=4, eval_every=2, batch_size=4, seq_len=10, dtype="float64", progress=False)
    quiet = dict(log=lambda s: None)
    words, series = str(d / "words.txt"), str(d / "series.dat")
    Trainer(TrainConfig(data=words, out=str(d / "lstm"), sample_length=0, **small), **quiet).run()
    Trainer(TrainConfig(data=words, cell="gru", embed=5, out=str(d / "gru"), sample_length=0, **small), **quiet).run()
    Trainer(TrainConfig(data=series, task="series", cell="elman", out=str(d / "elman"), **small), **quiet).run()
    return d


def run_cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("fmt", export.FORMATS)
@pytest.mark.parametrize("run", ["lstm", "gru", "elman"])
def test_export_then_import_gives_the_same_run(ws, tmp_path, capsys, run, fmt):
    if fmt == "safetensors":
        pytest.importorskip("safetensors")
    src, path, out = ws / run, tmp_path / f"m.{fmt}", tmp_path / "imported"
    rc, said, err = run_cli(capsys, "export", src, "--out", path, "--format", fmt)
    assert rc == 0, err
    assert f"wrote {path} ({fmt})" in said and ("one-hot" in said) == (run == "lstm")
    spec = json.load(open(f"{path}.json"))
    assert spec["format"] == export.SPEC_FORMAT and spec["bptt_version"] and spec["dtype"] == "float64"
    assert spec["prefixes"]["rnn"] == "rnn." and spec["prefixes"]["linear"] == "linear."
    rc, said, err = run_cli(capsys, "import", path, "--out", out)
    assert rc == 0, err
    a, b = load_run(str(src)), load_run(str(out))
    assert set(a.params) == set(b.params)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    assert (b.cfg.cell, b.cfg.hidden, b.cfg.layers, b.cfg.embed, b.cfg.task) == (
        a.cfg.cell,
        a.cfg.hidden,
        a.cfg.layers,
        a.cfg.embed,
        a.cfg.task,
    )
    key = "vocab" if a.cfg.task == "text" else "normalizer"
    assert spec[key] == a.meta[key] == b.meta[key]


def test_torch_reproduces_an_exported_run(ws, capsys):
    for run in ("lstm", "gru"):
        rc, _, err = run_cli(capsys, "export", ws / run, "--checkpoint", "last")
        assert rc == 0, err
        r = load_run(str(ws / run), "last")
        spec = json.load(open(ws / run / "model.safetensors.json"))
        net = torch_net(spec, str(ws / run / "model.safetensors"))
        ids = r.vocab.encode("the big red barn")[0][:, None]
        y, _ = r.model.forward(r.params, ids)
        assert np.abs(y - torch_forward(net, r.model, ids)).max() <= 1e-12


def test_an_imported_folder_samples_evaluates_diagnoses_and_resumes(ws, tmp_path, capsys):
    words = ws / "words.txt"
    assert run_cli(capsys, "export", ws / "gru", "--out", tmp_path / "g.npz")[0] == 0
    out = tmp_path / "g"
    rc, said, err = run_cli(capsys, "import", tmp_path / "g.npz", "--out", out, "--data", words)
    assert rc == 0, err
    assert "a vocabulary of 18 characters (from the description)" in said
    for argv in (["sample", "--length", "40", "--seed", "3"], ["evaluate", "--data", words]):
        got = run_cli(capsys, argv[0], out, *argv[1:])
        want = run_cli(capsys, argv[0], ws / "gru", *argv[1:])
        assert got[0] == want[0] == 0
        assert got[1].replace(str(out), "R") == want[1].replace(str(ws / "gru"), "R")
    assert run_cli(capsys, "diagnose", out, "--data")[0] == 0
    rc, said, err = run_cli(capsys, "train", "--resume", out, "--steps", "3", "--no-progress")
    assert rc == 0, err
    assert load_run(str(out), "last").meta["step"] == 3


def test_an_imported_run_with_a_plateau_rule_resumes(ws, tmp_path, capsys):
    """The imported step-0 checkpoint holds the optimizer state the trainer builds for the run's
    config, the plateau rule's included (bptt train --resume checks its layout)."""
    words = ws / "words.txt"
    src = tmp_path / "plateau"
    cfg = dict(hidden=8, steps=4, eval_every=2, batch_size=4, seq_len=10, dtype="float64", progress=False)
    Trainer(TrainConfig(data=str(words), out=str(src), sample_length=0, plateau_patience=1, **cfg), log=print).run()
    assert run_cli(capsys, "export", src, "--out", tmp_path / "p.npz")[0] == 0
    out = tmp_path / "p"
    rc, _, err = run_cli(capsys, "import", tmp_path / "p.npz", "--out", out, "--data", words)
    assert rc == 0, err
    assert load_run(str(out)).cfg.plateau_patience == 1
    rc, said, err = run_cli(capsys, "train", "--resume", out, "--steps", "3", "--no-progress")
    assert rc == 0, err
    assert load_run(str(out), "last").meta["step"] == 3, said


def test_an_imported_series_forecasts_like_the_original(ws, tmp_path, capsys):
    assert run_cli(capsys, "export", ws / "elman", "--out", tmp_path / "e.npz")[0] == 0
    out = tmp_path / "e"
    assert run_cli(capsys, "import", tmp_path / "e.npz", "--out", out)[0] == 0
    argv = ["--history", ws / "series.dat", "--horizon", "12"]
    got = run_cli(capsys, "forecast", out, *argv, "--out", tmp_path / "a.png")
    want = run_cli(capsys, "forecast", ws / "elman", *argv, "--out", tmp_path / "b.png")
    assert got[0] == want[0] == 0 and got[1].splitlines()[0] == want[1].splitlines()[0]


@pytest.mark.parametrize("fmt", export.FORMATS)
def test_a_torch_module_of_ones_own_imports(ws, tmp_path, capsys, fmt):
    """A state_dict from torch itself (no description; self.emb, self.lstm, self.fc), mapped with
    --names, the vocabulary from --data: bptt's outputs equal the module's."""
    torch = pytest.importorskip("torch")
    if fmt == "safetensors":
        st = pytest.importorskip("safetensors.torch")
    from bptt.data.text import Vocab

    words = ws / "words.txt"
    V = len(Vocab.from_text(words.read_text()))

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.lstm, self.fc = torch.nn.Embedding(V, 4), torch.nn.LSTM(4, 6, 2), torch.nn.Linear(6, V)

        def forward(self, ids):
            return self.fc(self.lstm(self.emb(ids))[0])

    torch.manual_seed(0)
    net = Net().double()
    sd = net.state_dict()
    path = tmp_path / f"own.{fmt}"
    if fmt == "safetensors":
        st.save_file(sd, str(path))
    else:
        np.savez(path, **{k: v.numpy() for k, v in sd.items()})
    out = tmp_path / "own"
    rc, said, err = run_cli(
        capsys, "import", path, "--out", out, "--data", words, "--names", "rnn=lstm,linear=fc,embedding=emb"
    )
    assert rc == 0, err
    assert "Embedding" in said and "LSTM" in said and f"those of {words}" in said
    r = load_run(str(out))
    assert (r.cfg.cell, r.cfg.hidden, r.cfg.layers, r.cfg.embed) == ("lstm", 6, 2, 4)
    ids = np.random.default_rng(5).integers(0, V, size=(8, 3))
    y, _ = r.model.forward(r.params, ids)
    with torch.no_grad():
        assert np.abs(y - net(torch.from_numpy(ids)).numpy()).max() <= 1e-12


def test_without_safetensors_npz_is_the_default_and_safetensors_is_one_line(ws, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(export, "has_safetensors", lambda: False)
    rc, said, err = run_cli(capsys, "export", ws / "lstm", "--out", tmp_path / "x.safetensors")
    assert rc == 2 and err.count("\n") == 1 and "pip install 'bptt[safetensors]'" in err
    rc, said, err = run_cli(capsys, "export", ws / "lstm")
    assert rc == 0, err
    assert "(npz; safetensors is not installed (pip install 'bptt[safetensors]'), so npz)" in said
    assert os.path.isfile(ws / "lstm" / "model.npz")
    (tmp_path / "w.safetensors").write_bytes(b"\x10" + b"\0" * 7 + b'{"__metadata__":{}}' + b" " * 5)
    rc, said, err = run_cli(capsys, "import", tmp_path / "w.safetensors", "--out", tmp_path / "r")
    assert rc == 2 and err.count("\n") == 1 and "pip install 'bptt[safetensors]'" in err
    assert not os.path.exists(tmp_path / "r")


class _Boom:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("name", ["m.pt", "m.npz", "m.safetensors", "m"])
def test_a_pickle_is_never_unpickled(tmp_path, capsys, monkeypatch, name):
    marker = tmp_path / "PWNED"

    def refuse(*a, **k):
        raise AssertionError("bptt import unpickled something")

    for fn in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, fn, refuse)
    (tmp_path / name).write_bytes(pickle.dumps(_Boom(str(marker))))
    rc, _, err = run_cli(capsys, "import", tmp_path / name, "--out", tmp_path / "r")
    assert rc == 2 and err.count("\n") == 1, err
    assert "bptt never unpickles a file" in err or "expected a complete safetensors file" in err
    assert not marker.exists() and not (tmp_path / "r").exists()


def test_a_failed_write_leaves_nothing(ws, tmp_path, capsys, monkeypatch):
    def torn(f, **arrays):
        f.write(b"PK\x03\x04 half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", torn)
    rc, _, err = run_cli(capsys, "export", ws / "lstm", "--out", tmp_path / "w.npz")
    assert rc == 1 and "No space left on device" in err
    assert os.listdir(tmp_path) == []


def test_export_refuses_a_spiking_run_in_one_line(tmp_path, capsys):
    cfg = TrainConfig(
        task="store-recall", cell="lif", hidden=8, steps=1, batch_size=2, progress=False, out=str(tmp_path / "s")
    )
    Trainer(cfg, log=lambda s: None).run()
    rc, _, err = run_cli(capsys, "export", tmp_path / "s")
    assert rc == 2 and err.count("\n") == 1
    assert "expected a run whose model maps onto torch" in err and "received a 'lif' level" in err
    assert not [f for f in os.listdir(tmp_path / "s") if f.startswith("model")]
