"""Series runs of several columns: inputs and targets (--column LIST, --target), missing values
(--missing), what they learn, forecast and evaluate, resume, export/import; and run folders of
one column written before columns existed."""

import json
import os
import signal

import numpy as np
import pytest

from bptt.cli import main
from bptt.data import series as ser
from bptt.generate import forecast_columns
from bptt.train import TrainConfig, Trainer
from bptt.train import checkpoint as ckpt
from bptt.train.runs import load_run

LAG = 2  # b(t) = a(t - 2): b's own past says nothing of its next value, a's does


def lagged(rng, n, before=None):
    a = rng.standard_normal(n)
    head = np.zeros(LAG) if before is None else before[-LAG:]
    return a, np.r_[head, a][:n]


def write_csv(path, cols):
    names = list(cols)
    rows = zip(*cols.values())
    path.write_text(",".join(names) + "\n" + "".join(",".join(f"{v:.6f}" for v in r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("columns")
    rng = np.random.default_rng(0)
    a, b = lagged(rng, 1200)
    a2, b2 = lagged(rng, 60, a)
    gaps = d / "gaps.csv"
    lines = ["a,b"] + [f"{x:.6f},{y:.6f}" for x, y in zip(a[:300], b[:300])]
    for i in (5, 50, 51):  # three rows with a missing value: one in a, two in b
        x, y = lines[i].split(",")
        lines[i] = f"NA,{y}" if i == 5 else f"{x},"
    gaps.write_text("\n".join(lines) + "\n")
    return {
        "train": write_csv(d / "lag.csv", {"a": a, "b": b}),
        "cont": write_csv(d / "cont.csv", {"a": a2, "b": b2}),
        "gaps": str(gaps),
    }


def small(out, **kw):
    base = dict(
        task="series",
        cell="gru",
        hidden=16,
        steps=12,
        eval_every=4,
        batch_size=4,
        seq_len=20,
        dtype="float64",
        out=str(out),
        progress=False,
        warmup=2,
    )
    base.update(kw)
    return TrainConfig(**base)


def quiet(s):
    pass


@pytest.fixture(scope="module")
def lag_runs(files, tmp_path_factory):
    """a, b -> b, and b alone -> b: the same network, steps and seed."""
    d = tmp_path_factory.mktemp("lag-runs")
    how = dict(data=files["train"], steps=300, seq_len=30, batch_size=8, lr=0.01, eval_every=100, warmup=50)
    two = Trainer(small(d / "two", column="a,b", target="b", **how), log=quiet).run()
    one = Trainer(small(d / "one", column="b", **how), log=quiet).run()
    return str(d / "two"), two, str(d / "one"), one


def test_two_inputs_learn_what_one_column_cannot(lag_runs):
    _, two, _, one = lag_runs
    assert two.best["nmse"] < 0.05, two.best  # b(t+1) = a(t-1): a's last two values
    assert one.best["nmse"] > 0.8, one.best  # b's past: white noise, unrelated to its next value
    assert two.best["nmse.b"] == two.best["nmse"] == two.best["loss"]
    assert "nmse.b" not in one.best  # a one-column run's metrics are what they were


def test_evaluate_and_forecast_a_run_of_several_columns(lag_runs, files, capsys):
    run_dir = lag_runs[0]
    assert main(["evaluate", run_dir, "--data", files["cont"], "--warmup", "3"]) == 0
    said = capsys.readouterr().out
    run = load_run(run_dir)
    t = ser.read_table(files["cont"], ["a", "b"], ["b"])
    z = run.normalizer(t.values)
    y, _ = run.model.forward(run.params, z[:-1, None, :])
    pred = run.normalizer.take([1]).inverse(y[:, 0, :])[3:]
    want = ser.nmse(pred[:, 0], t.values[1:, 1][3:])
    assert f"NMSE {want:.4f} (b)" in said and "56 rows" in said and "from a, b" in said, said
    assert want < 0.05
    # a is an input, not a target: the forecast takes its values from --data, b is predicted
    assert main(["forecast", run_dir, "--data", files["cont"], "--out", os.path.join(run_dir, "f.png")]) == 0
    said = capsys.readouterr().out
    score = float(said.split("NMSE ")[1].split()[0])
    assert score < 0.05 and "a from --data" in said, said
    # without the rows that follow, there is no a to forecast b with: one line
    assert main(["forecast", run_dir, "--horizon", "5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the input columns that are not targets (a)" in err, err


def test_the_forecast_feeds_its_predictions_back(lag_runs, files, tmp_path, capsys):
    """Prediction h is the model's output after the history and the rows built from the
    predictions before it (the targets) and --data (the other inputs)."""
    run = load_run(lag_runs[0])
    hist = run.normalizer(ser.read_table(files["train"], ["a", "b"], ["b"]).values)[-50:]
    future = run.normalizer(ser.read_table(files["cont"], ["a", "b"], ["b"]).values)
    H = 8
    preds = forecast_columns(run.model, run.params, hist, H, [-1, 0], future)
    rows = np.column_stack([future[: H - 1, 0], preds[:-1, 0]])  # a from the file, b fed back
    y, _ = run.model.forward(run.params, np.vstack([hist, rows])[:, None, :])
    np.testing.assert_allclose(preds[:, 0], y[len(hist) - 1 :, 0, 0], rtol=1e-12, atol=1e-12)
    # every input a target: all fed back, no --data needed
    Trainer(small(tmp_path / "ab", data=files["train"], column="a,b", steps=4), log=quiet).run()
    ab = load_run(str(tmp_path / "ab"))
    whole = ab.normalizer(ser.read_table(files["train"], ["a", "b"]).values)
    h2 = whole[-30:]
    p2 = forecast_columns(ab.model, ab.params, h2, 6, [0, 1])
    y2, _ = ab.model.forward(ab.params, np.vstack([h2, p2[:-1]])[:, None, :])
    np.testing.assert_allclose(p2, y2[len(h2) - 1 :, 0], rtol=1e-12, atol=1e-12)
    assert main(["forecast", str(tmp_path / "ab"), "--horizon", "6"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "# a b" and len(out) == 8  # the targets' names, 6 rows, the plot
    got = np.array([[float(v) for v in line.split()] for line in out[1:7]])
    want = ab.normalizer.inverse(forecast_columns(ab.model, ab.params, whole, 6, [0, 1]))  # from the whole file
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)  # (printed to 6 digits)


def interrupt_at(n):
    def on_step(step, loss):
        if step == n:
            os.kill(os.getpid(), signal.SIGINT)

    return on_step


@pytest.mark.parametrize("batching", ["window", "stream"])
def test_resume_reaches_the_uninterrupted_parameters_bitwise(tmp_path, files, batching):
    kw = dict(data=files["train"], column="a,b", target="b", batching=batching, optimizer="momentum", lr=0.05)
    a = Trainer(small(tmp_path / "a", **kw), log=quiet).run()
    b = Trainer(small(tmp_path / "b", **kw), log=quiet).run(on_step=interrupt_at(6))
    assert b.stopped == "interrupted" and b.step == 6
    c = Trainer(resume=str(tmp_path / "b"), log=quiet).run()
    assert a.step == c.step == 12 and c.stopped == "done"
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], c.params[k], err_msg=k)
    meta = ckpt.load(str(tmp_path / "b" / "checkpoint.npz")).meta
    assert meta["series_columns"] == {"inputs": ["a", "b"], "targets": ["b"]}
    assert len(meta["normalizer"]["mean"]) == len(meta["normalizer"]["std"]) == 2


def test_missing_values_are_counted_in_the_header_line(tmp_path, files):
    for rule, said in (
        ("drop", "--missing drop: 3 row(s) with a missing value dropped"),
        ("interpolate", "--missing interpolate: 3 missing value(s) filled in"),
    ):
        lines = []
        cfg = small(tmp_path / rule, data=files["gaps"], column="a,b", target="b", missing=rule, steps=2)
        Trainer(cfg, log=lines.append).run()
        assert said in lines[0], lines[0]
        assert "inputs a, b at t -> targets b at t+1" in lines[0]
    lines = []
    Trainer(small(tmp_path / "b-only", data=files["gaps"], column="a", missing="drop", steps=2), log=lines.append).run()
    assert "--missing drop: 1 row(s)" in lines[0] and "(a): 299 values" in lines[0], lines[0]


def _as_before_columns(folder):
    """Rewrite a one-column run's files as bptt wrote them before --target and --missing
    existed (its config without them), the checksum made to match."""
    for name in ("checkpoint.npz", "best.npz"):
        path = os.path.join(folder, name)
        arrays = ckpt._read_npz(path)
        meta = json.loads(str(arrays.pop("meta")))
        arrays.pop("checksum")
        for key in ("target", "missing"):
            del meta["config"][key]
        text = json.dumps(meta)
        arrays["checksum"] = np.array(ckpt.checksum(text, arrays))
        arrays["meta"] = np.array(text)
        with open(path, "wb") as f:
            np.savez(f, **arrays)
    cj = os.path.join(folder, "config.json")
    d = json.load(open(cj))
    for key in ("target", "missing"):
        del d["config"][key]
    json.dump(d, open(cj, "w"))


def test_a_one_column_run_folder_of_before_loads_and_says_the_same(tmp_path, files, capsys):
    folder = str(tmp_path / "old")
    Trainer(small(folder, data=files["train"], column="b", steps=6), log=quiet).run()
    meta = ckpt.load(os.path.join(folder, "best.npz")).meta
    assert set(meta["normalizer"]) == {"mean", "std"} and isinstance(meta["normalizer"]["mean"], float)
    assert meta["series_name"] == "b" and "series_columns" not in meta  # the record of one column as it was
    argv = [
        ["forecast", folder, "--data", files["cont"], "--out", str(tmp_path / "f.png")],
        ["evaluate", folder, "--data", files["cont"], "--warmup", "2"],
    ]
    before = []
    for a in argv:
        assert main(a) == 0
        before.append(capsys.readouterr().out)
    _as_before_columns(folder)
    assert "target" not in ckpt.load(os.path.join(folder, "checkpoint.npz")).meta["config"]
    run = load_run(folder)
    assert run.cfg.target == "" and run.cfg.missing == "error" and run.normalizer.columns is None
    for a, said in zip(argv, before):
        assert main(a) == 0
        assert capsys.readouterr().out == said
    assert "one-step-ahead predictions of 57 values" in before[1]
    res = Trainer(resume=folder, overrides={"steps": 8}, log=quiet).run()
    assert res.step == 8 and res.stopped == "done"


def test_export_records_the_columns_and_import_takes_them_back(lag_runs, files, tmp_path, capsys):
    run_dir, _, one_dir, _ = lag_runs
    assert main(["export", run_dir, "--out", str(tmp_path / "two.npz")]) == 0
    spec = json.load(open(tmp_path / "two.npz.json"))
    meta = load_run(run_dir).meta
    assert spec["columns"] == {"inputs": ["a", "b"], "targets": ["b"]}
    assert spec["normalizer"] == meta["normalizer"] and len(spec["normalizer"]["mean"]) == 2
    assert spec["input_size"] == 2 and spec["output_size"] == 1
    assert main(["import", str(tmp_path / "two.npz"), "--out", str(tmp_path / "imported")]) == 0
    capsys.readouterr()
    argv = ["--data", files["cont"], "--warmup", "3"]
    assert main(["evaluate", str(tmp_path / "imported"), *argv]) == 0
    got = capsys.readouterr().out
    assert main(["evaluate", run_dir, *argv]) == 0
    assert got == capsys.readouterr().out
    # one column: its column, and the normaliser as numbers, as before
    assert main(["export", one_dir, "--out", str(tmp_path / "one.npz")]) == 0
    spec = json.load(open(tmp_path / "one.npz.json"))
    assert spec["columns"] == {"inputs": ["b"], "targets": ["b"]} and isinstance(spec["normalizer"]["mean"], float)
