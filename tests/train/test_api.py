"""bptt.fit, the Python entry point under `bptt train`: the README's example as written, data
given in Python trains exactly as its file does, callbacks that stop a run and see its
evaluations, a model of one's own, and misuse as one line before anything is written."""

import os
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest

import bptt
from bptt.cli import main
from bptt.errors import BpttError
from bptt.train import Stop, TrainConfig, Trainer, fit
from bptt.train import checkpoint as ckpt

ROOT = Path(__file__).resolve().parents[2]
QUIET = dict(log=None, progress=False, threads=1)
WORDS = "the cat sat on a mat while a dog ran to the big red barn and the bird sang ".split()
TEXT = " ".join(np.random.default_rng(0).choice(WORDS, size=600)) + "\n"
t = np.arange(300)
SERIES = np.sin(2 * np.pi * t / 23.0) + 0.5 * np.sin(2 * np.pi * t / 7.0) + 0.1 * np.cos(t / 3.0)
SMALL = dict(hidden=6, steps=6, eval_every=3, batch_size=4, seq_len=12, dtype="float64", seed=3)


def same_params(a, b):
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def rows(metrics):
    """metrics.jsonl rows without the clock's figures."""
    return [{k: v for k, v in r.items() if k not in ("time", "tokens_per_s")} for r in metrics]


@pytest.fixture
def quiet_tmp(tmp_path, monkeypatch):
    """cwd and the temporary folders under tmp_path, to see what a call leaves behind."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    return tmp_path


def test_the_readme_example_runs_as_written(quiet_tmp, capsys):
    section = (ROOT / "README.md").read_text().split("\n## From Python\n", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) <= 20
    ns: dict = {}
    exec(compile(code, "README.md (From Python)", "exec"), ns)
    res = ns["res"]
    printed = capsys.readouterr().out
    assert res.stopped == "callback" and 0 < res.step < 500, printed  # its on_eval stopped it
    assert f"step {res.step}: validation loss {res.metrics[-1]['loss']:.4f}" in printed
    assert res.best["loss"] < 0.02 and res.run_dir is None and res.model is ns["model"]
    assert sorted(os.listdir(quiet_tmp)) == ["tmp"] and os.listdir(quiet_tmp / "tmp") == []  # nothing left


def test_text_given_as_a_string_trains_as_its_file(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text(TEXT)
    cfg = TrainConfig(data=str(path), out=str(tmp_path / "file"), sample_length=0, progress=False, threads=1, **SMALL)
    by_file = Trainer(cfg, log=lambda s: None).run()
    given = fit(x=TEXT, out=str(tmp_path / "given"), sample_length=0, **QUIET, **SMALL)
    same_params(given.params, by_file.params)
    same_params(given.best_params, ckpt.load(str(tmp_path / "file" / "best.npz")).params)
    assert rows(given.metrics) == rows(by_file.metrics) and given.best == by_file.best
    assert given.task.vocab == by_file.task.vocab and given.step == 6 and given.stopped == "done"
    assert (tmp_path / "given" / "data.txt").read_text() == TEXT  # the run reads it from there:
    assert main(["sample", str(tmp_path / "given"), "--length", "20"]) == 0  # the CLI's commands work on it


def test_a_series_given_as_an_array_trains_as_its_file_through_the_cli(tmp_path):
    np.savetxt(tmp_path / "s.dat", SERIES)
    flags = ["--hidden", "6", "--steps", "6", "--eval-every", "3", "--batch-size", "4", "--seq-len", "12"]
    flags += ["--dtype", "float64", "--seed", "3", "--no-progress", "--threads", "1", "--cell", "gru"]
    assert (
        main(["train", "--task", "series", "--data", str(tmp_path / "s.dat"), "--out", str(tmp_path / "cli"), *flags])
        == 0
    )
    cli = ckpt.load(str(tmp_path / "cli" / "checkpoint.npz"))
    res = fit(x=SERIES, cell="gru", **QUIET, **SMALL)
    same_params(res.params, cli.params)
    assert res.step == cli.meta["step"] == 6 and res.run_dir is None
    assert rows(res.metrics) == rows(json_rows(tmp_path / "cli" / "metrics.jsonl"))
    # a column of a 2-D array is the column of a table
    two = fit(x=np.stack([np.zeros_like(SERIES), SERIES], axis=1), column="1", cell="gru", **QUIET, **SMALL)
    same_params(two.params, cli.params)


def json_rows(path):
    import json

    return [json.loads(line) for line in open(path)]


def test_arrays_train_as_a_hand_written_loop():
    """Every sequence in every batch (batch_size covers them), no validation, SGD at a constant
    rate: the updates are p <- p - lr * (full BPTT's gradient), from the seed's parameters."""
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((12, 6, 2)), rng.standard_normal((12, 6, 1))
    mask = np.ones((12, 6), bool)
    mask[9:, 2] = False
    opt = dict(optimizer="sgd", schedule="constant", lr=0.05, clip=0.0, val_fraction=0.0)
    res = fit(
        x=x, y=y, mask=mask, cell="elman", hidden=5, steps=4, batch_size=8, dtype="float64", seed=2, **opt, **QUIET
    )
    model = bptt.Model(2, [bptt.rnn("elman", 5), bptt.Dense(1)], loss="mse")
    p = model.init_params(np.random.default_rng(2), "float64")
    losses = []
    for _ in range(4):
        g = bptt.full_bptt(model, p, x, y, mask=mask)
        losses.append(g.loss)
        p = {k: p[k] + g.grads[k] * -0.05 for k in p}
    same_params(res.params, p)
    assert [r["loss"] for r in res.metrics if r["split"] == "train"] == losses
    assert res.best is None and res.best_params is None  # (nothing held out)


def test_a_model_of_ones_own_on_token_sequences_with_one_class_each(tmp_path):
    """(T, B) token ids, a class per sequence at its last counted step, a mask of lengths; the
    validation figures are the model's loss and accuracy on `val`; a run on arrays goes on only
    with them given again, to the end an unbroken run reaches."""
    rng = np.random.default_rng(4)
    x = rng.integers(0, 5, size=(10, 40))
    lengths = rng.integers(4, 11, size=40)
    mask = np.arange(10)[:, None] < lengths[None, :]
    y = x[lengths - 1, np.arange(40)] % 3  # the class: the last counted token mod 3
    train, val = slice(0, 32), slice(32, 40)
    model = bptt.Model(5, [bptt.Embedding(4), bptt.rnn("lstm", 8), bptt.Dense(3)], tokens=True, loss="ce", at="last")
    kw = dict(x=x[:, train], y=y[train], mask=mask[:, train], val=(x[:, val], y[val], mask[:, val]), model=model)
    kw.update(steps=8, eval_every=4, batch_size=8, lr=0.05, dtype="float64", **QUIET)
    seen = []
    whole = fit(**kw, on_eval=lambda s, f: seen.append((s, f)))
    assert [s for s, _ in seen] == [4, 8] and set(seen[-1][1]) == {"loss", "accuracy"}
    assert seen[-1][1]["loss"] == pytest.approx(model.loss(whole.params, x[:, val], y[val], mask[:, val]), rel=1e-12)
    logits, _ = model.forward(whole.params, x[:, val], mask=mask[:, val])
    last = logits[lengths[val] - 1, np.arange(8)]
    assert seen[-1][1]["accuracy"] == np.mean(last.argmax(axis=1) == y[val])
    assert whole.cfg.cell == "lstm" and whole.cfg.hidden == 8  # (the header and config.json describe it)

    out = str(tmp_path / "r")
    half = fit(**{**kw, "out": out}, on_step=lambda s, loss: s == 4)
    assert half.stopped == "callback" and half.step == 4
    with pytest.raises(BpttError, match="data: expected the arrays the run in .* trained on"):
        fit(resume=out, steps=8, **QUIET)
    assert main(["train", "--resume", out]) == 2  # the CLI cannot go on without them
    changed = kw["x"].copy()
    changed.flat[0] += 1.0  # (the same shapes, one value other: not the run's arrays)
    with pytest.raises(BpttError, match=r"x: expected the arrays the run in .* trained on \(x .*sha256"):
        fit(resume=out, x=changed, y=kw["y"], mask=kw["mask"], val=kw["val"], model=model, **QUIET)
    rest = fit(resume=out, x=kw["x"], y=kw["y"], mask=kw["mask"], val=kw["val"], model=model, **QUIET)
    assert rest.step == 8 and rest.stopped == "done"
    same_params(rest.params, whole.params)


@pytest.mark.parametrize("how", ["return True", "raise Stop"])
def test_a_callback_stops_training_at_a_chosen_step(tmp_path, how):
    def on_step(step, loss):
        if step == 5:
            if how == "raise Stop":
                raise Stop
            return True
        return loss  # (a value that is not True goes on)

    out = str(tmp_path / "run")
    res = fit(x=SERIES, out=out, on_step=on_step, **QUIET, **{**SMALL, "steps": 20, "eval_every": 4})
    assert res.stopped == "callback" and res.step == 5 and res.run_dir == out
    assert ckpt.load(os.path.join(out, "checkpoint.npz")).meta["step"] == 5  # saved there, as early stopping does
    assert max(r["step"] for r in res.metrics) == 5
    assert [r["step"] for r in res.metrics if r["split"] == "val"] == [4]
    goes_on = fit(resume=out, **QUIET)  # (the data file is in the run folder)
    assert goes_on.step == 20 and goes_on.stopped == "done"


def test_on_eval_receives_the_validation_figures_and_can_stop():
    seen = []
    res = fit(x=SERIES, on_eval=lambda s, f: seen.append((s, f)), **QUIET, **{**SMALL, "steps": 12, "eval_every": 4})
    val = [r for r in res.metrics if r["split"] == "val"]
    assert [s for s, _ in seen] == [r["step"] for r in val] == [4, 8, 12]
    assert [f for _, f in seen] == [{k: v for k, v in r.items() if k not in ("step", "split")} for r in val]
    assert set(seen[0][1]) == {"loss", "mse", "nmse"}
    s, f = min(seen, key=lambda sf: sf[1]["loss"])
    assert res.best == {**f, "step": s}
    stopped = fit(x=SERIES, on_eval=lambda s, f: s >= 8, **QUIET, **{**SMALL, "steps": 12, "eval_every": 4})
    assert stopped.stopped == "callback" and stopped.step == 8


def test_a_task_by_its_settings_and_a_config_object():
    cfg = TrainConfig(task="adding", cell="gru", hidden=6, seq_len=10, steps=3, eval_every=3, batch_size=4)
    a = fit(cfg, **QUIET)
    b = fit({"task": "adding", "cell": "gru", "hidden": 6, "seq_len": 10}, steps=3, eval_every=3, batch_size=4, **QUIET)
    same_params(a.params, b.params)
    assert a.task.kind == "longterm" and "loss" in a.best and a.run_dir is None


def _arrays(T=5, B=6, D=2):
    rng = np.random.default_rng(0)
    return rng.standard_normal((T, B, D)), rng.standard_normal((T, B, 1))


BAD = {
    "unknown setting": (lambda: fit(hiden=8), "unknown 'hiden'"),
    "wrong type": (lambda: fit(hidden="big"), "hidden: expected an integer, received 'big'"),
    "bad value": (lambda: fit(cell="lsmt"), "did you mean 'lstm'"),
    "config not a config": (lambda: fit(3), "config: expected a TrainConfig or a dict"),
    "y without x": (lambda: fit(y=np.zeros(3)), "y: expected it with the sequences x"),
    "mask with a text": (lambda: fit(x="abc", mask=np.ones((2, 2))), "mask: expected only with sequences x"),
    "x of strings": (lambda: fit(x=np.array(["a", "b"])), "x: expected a text (str), a series of numbers"),
    "empty text": (lambda: fit(x=""), "x: expected a text of at least one character"),
    "x of 4 axes": (lambda: fit(x=np.zeros((2, 2, 2, 2)), y=np.zeros((2, 2, 1))), "x: expected sequences (T, B, D)"),
    "y of other B": (lambda: fit(x=_arrays()[0], y=np.zeros((5, 4, 1))), "y: expected targets of x's T=5, B=6"),
    "mask of other shape": (lambda: fit(x=_arrays()[0], y=_arrays()[1], mask=np.ones((5, 5))), "mask: expected (T, B)"),
    "ragged y": (lambda: fit(x=_arrays()[0], y=[[1, 2], [3]]), "y: expected an array (nested lists of one length"),
    "ragged mask": (
        lambda: fit(x=_arrays()[0], y=_arrays()[1], mask=[[True], [True, False]]),
        "mask: expected an array",
    ),
    "val not a pair": (lambda: fit(x=_arrays()[0], y=_arrays()[1], val=_arrays()[0]), "val: expected (x, y)"),
    "val of other D": (
        lambda: fit(x=_arrays()[0], y=_arrays()[1], val=_arrays(D=3)),
        "val: expected sequences like x and y",
    ),
    "val and val_fraction": (
        lambda: fit(x=_arrays()[0], y=_arrays()[1], val=_arrays(), val_fraction=0.5),
        "val_fraction: expected none with val",
    ),
    "seq_len with arrays": (lambda: fit(x=_arrays()[0], y=_arrays()[1], seq_len=3), "seq_len: expected none with x"),
    "task with a text": (lambda: fit(x="abc abc", task="series"), "task: expected none with x"),
    "data with a series": (lambda: fit(x=SERIES, data="s.csv"), "data: expected none with x"),
    "a model that is not one": (lambda: fit(model="lstm"), "model: expected a bptt.Model, received str"),
    "a model and hidden": (
        lambda: fit(x=_arrays()[0], y=_arrays()[1], model=bptt.Model(2, [bptt.rnn("gru", 3), bptt.Dense(1)]), hidden=4),
        "hidden: expected none with a model of one's own",
    ),
    "a model of other inputs": (
        lambda: fit(
            x=_arrays()[0], y=_arrays()[1], model=bptt.Model(3, [bptt.rnn("gru", 3), bptt.Dense(1)], loss="mse")
        ),
        "model: does not fit arrays: x: expected",
    ),
    "a model of other outputs for a series": (
        lambda: fit(x=SERIES, model=bptt.Model(1, [bptt.rnn("gru", 3), bptt.Dense(2)], loss="mse")),
        "model: does not fit",
    ),
    "a model of another vocabulary": (
        lambda: fit(x=TEXT, model=bptt.Model(5, [bptt.rnn("gru", 3), bptt.Dense(5)], tokens=True)),
        "model: does not fit",
    ),
    "NaN in the arrays": (
        lambda: fit(x=np.full((5, 6, 2), np.nan), y=_arrays()[1]),
        "x: expected finite",
    ),
    "all sequences held out": (
        lambda: fit(x=_arrays()[0], y=_arrays()[1], val_fraction=0.95),
        "val_fraction: expected at least one of the 6 sequences left for training",
    ),
    "a callback that is not one": (lambda: fit(on_step=3), "on_step: expected a function or None, received int"),
    "config with resume": (lambda: fit({}, resume="runs/x"), "config: expected none with resume"),
    "a text with resume": (lambda: fit(x="abc", resume="runs/x"), "x: expected no text or series with resume"),
    "a setting that does not apply": (lambda: fit(x="abc abc abc", momentum=0.5), "momentum: expected only with"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_a_mistake_is_one_line_before_anything_is_written(case, quiet_tmp):
    call, words = BAD[case]
    with pytest.raises(BpttError) as e:
        call()
    message = str(e.value)
    assert "\n" not in message and "expected" in message and "received" in message, message
    assert words in message, message
    assert sorted(os.listdir(quiet_tmp)) == ["tmp"] and os.listdir(quiet_tmp / "tmp") == []


def test_a_failed_set_up_leaves_the_out_folder_as_it_was(tmp_path):
    out = tmp_path / "new"
    with pytest.raises(BpttError, match="seq_len: expected fewer than"):
        fit(x="abcdefgh" * 3, out=str(out), seq_len=200, **QUIET)
    assert not out.exists()
    out.mkdir()
    (out / "notes.md").write_text("mine")
    with pytest.raises(BpttError, match="seq_len: expected fewer than"):
        fit(x="abcdefgh" * 3, out=str(out), seq_len=200, **QUIET)
    assert [p.name for p in out.iterdir()] == ["notes.md"]


def test_regularisers_on_arrays_take_effect():
    """dropout, recurrent_dropout, zoneout, input_dropout and input_noise on arrays were accepted
    and ignored (the same weights as without them)."""
    import bptt

    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 16, 3))
    y = np.cumsum(x, axis=0)[..., :1] / 5
    base = dict(x=x, y=y, cell="lstm", hidden=8, steps=3, eval_every=3, batch_size=8, log=None, progress=False,
                dtype="float64", threads=1)  # fmt: skip
    r0 = bptt.fit(**base)
    for extra, kinds in (
        ({"dropout": 0.5}, ["lstm", "dropout", "dense"]),
        ({"input_dropout": 0.5}, ["dropout", "lstm", "dense"]),
        ({"recurrent_dropout": 0.5}, ["lstm", "dense"]),
        ({"zoneout": 0.5}, ["lstm", "dense"]),
        ({"input_noise": 1.0}, ["lstm", "dense"]),
    ):
        r = bptt.fit(**base, **extra)
        assert [lv.kind for lv in r.model.levels] == kinds, extra
        moved = [k for k in r.params if k in r0.params and not np.array_equal(r.params[k], r0.params[k])]
        assert r.params.keys() != r0.params.keys() or moved, extra


def test_an_integer_mask_is_a_boolean_one():
    """A 0/1 integer mask was used as indices in the validation loss (4.01 against 2.37)."""
    import bptt

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((10, 12, 3)), rng.integers(0, 4, (10, 12))
    m = np.ones((10, 12), bool)
    m[7:, ::2] = False
    runs = [
        bptt.fit(x=x, y=y, mask=mask, hidden=6, steps=3, eval_every=3, log=None, progress=False, dtype="float64")
        for mask in (m, m.astype(np.int64))
    ]
    assert runs[0].last_eval["loss"] == runs[1].last_eval["loss"]
    assert all(np.array_equal(runs[0].params[k], runs[1].params[k]) for k in runs[0].params)


def test_tokens_per_second_is_of_the_training_time(tmp_path):
    """tokens/s divided this session's tokens by the wall time of evaluations, tests and plots too."""
    import bptt

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((10, 12, 3)), rng.standard_normal((10, 12, 1))
    r = bptt.fit(x=x, y=y, hidden=6, steps=4, eval_every=1, batch_size=12, log=None, progress=False, dtype="float64")
    n_train = 12 - round(12 * r.cfg.val_fraction)
    assert r.tokens_per_s == pytest.approx(4 * 10 * n_train / r.train_seconds, rel=1e-9)
