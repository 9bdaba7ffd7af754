"""Per-window normalisation (--normalize window): each window of --seq-len inputs and its target
by the window's own mean and spread; training batches, validation, evaluate and forecast all
recomputed by hand from the recorded weights; what it refuses."""

import json
import os
import signal

import numpy as np
import pytest

from bptt.cli import main
from bptt.data import series as ser
from bptt.train import TrainConfig, Trainer
from bptt.train.runs import load_run
from bptt.train.tasks import make_task


def drifting(n, rng):
    """A cycle whose level and amplitude drift: what one global mean and std do not fit."""
    t = np.arange(n)
    return 100 + 0.5 * t + (5 + 0.05 * t) * np.sin(2 * np.pi * t / 17) + rng.normal(0, 0.5, n)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("wnorm")
    v = np.round(drifting(400, np.random.default_rng(3)), 6)  # (the values as the files hold them)
    (d / "all.csv").write_text("v\n" + "".join(f"{x:.6f}\n" for x in v))
    (d / "hist.csv").write_text("v\n" + "".join(f"{x:.6f}\n" for x in v[:360]))
    (d / "next.csv").write_text("v\n" + "".join(f"{x:.6f}\n" for x in v[360:]))
    return {k: str(d / f"{k}.csv") for k in ("all", "hist", "next")}, v


def interrupt_at(n):
    def on_step(step, loss):
        if step == n:
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C

    return on_step


def small(out, data, **kw):
    base = dict(task="series", data=data, cell="gru", hidden=12, steps=60, eval_every=30, batch_size=8)
    base.update(
        seq_len=24, lr=0.01, warmup=5, dtype="float64", out=str(out), progress=False, normalize="window", diff="0"
    )
    base.update(kw)
    return TrainConfig(**base)


def test_windows_pairs_predictions_and_forecasts_by_hand():
    rng = np.random.default_rng(0)
    z = rng.normal(size=60).cumsum() * 3 + 40
    norm = ser.Normalizer.per_window(z[:40], 8)
    assert norm.window == 8 and norm.floor == pytest.approx(1e-3 * np.std(z[:40]))
    np.testing.assert_array_equal(norm(z), z)  # no global transform
    x = np.stack([z[3:11], z[20:28]], axis=1)[..., None]  # (8, 2, 1)
    y = np.stack([z[4:12], z[21:29]], axis=1)[..., None]
    xn, yn = norm.pair(x, y, np.float64)
    for b in range(2):
        m, s = x[:, b, 0].mean(), x[:, b, 0].std()
        np.testing.assert_allclose(xn[:, b, 0], (x[:, b, 0] - m) / s, rtol=1e-12)
        np.testing.assert_allclose(yn[:, b, 0], (y[:, b, 0] - m) / s, rtol=1e-12)
    flat = np.full((8, 1, 1), 5.0)
    xf, yf = norm.pair(flat, flat + 1e-3 * np.std(z[:40]), np.float32)
    assert xf.dtype == yf.dtype == np.float32
    np.testing.assert_array_equal(xf, 0.0)
    np.testing.assert_allclose(yf, 1.0)  # a flat window's spread is the floor

    W = rng.normal(size=3)

    def forward(x):  # any causal map: out_t = W . (x_t, x_(t-1), 1)
        prev = np.concatenate([np.zeros_like(x[:1]), x[:-1]])
        return W[0] * x + W[1] * prev + W[2]

    pred = norm.predictions(forward, z, np.float64, chunk=7)
    assert np.isnan(pred[:7]).all() and not np.isnan(pred[7:]).any()
    for j in range(7, len(z) - 1):
        win = z[j - 7 : j + 1]
        m, s = win.mean(), win.std()
        want = (W[0] * (win[-1] - m) / s + W[1] * (win[-2] - m) / s + W[2]) * s + m
        assert pred[j] == pytest.approx(want, rel=1e-12)
    path = norm.forecast(forward, z[:30], 5, np.float64)
    seq = list(z[:30])
    for _ in range(5):
        win = np.array(seq[-8:])
        m, s = win.mean(), win.std()
        seq.append((W[0] * (win[-1] - m) / s + W[1] * (win[-2] - m) / s + W[2]) * s + m)
    np.testing.assert_allclose(path, seq[30:], rtol=1e-12)


def test_training_batches_are_normalised_window_by_window(files, tmp_path):
    paths, v = files
    task = make_task(small(tmp_path / "t", paths["all"]))
    x, y, first = task.batch(0, np.random.default_rng(0))
    assert first and x.shape == (24, 8, 1) and y.shape == (8, 1)
    assert task.build_model().loss_fn.at == "last"  # the earlier targets are inputs of the window
    np.testing.assert_allclose(x.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(x.std(axis=0), 1.0, rtol=1e-12)
    m_s = [(v[o : o + 24].mean(), v[o : o + 24].std()) for o in range(len(v) - 24)]
    for b in range(8):  # each window found in the series; its target is the next values in its units
        hits = [o for o, (m, s) in enumerate(m_s) if np.allclose((v[o : o + 24] - m) / s, x[:, b, 0], atol=1e-9)]
        assert len(hits) == 1, hits
        o = hits[0]
        m, s = m_s[o]
        assert y[b, 0] * s + m == pytest.approx(v[o + 24], rel=1e-10)  # the value after the window, alone


@pytest.fixture(scope="module")
def run(files, tmp_path_factory):
    paths, _ = files
    d = tmp_path_factory.mktemp("wnorm-run")
    res = Trainer(small(d / "w", paths["all"]), log=lambda s: None).run()
    glob = Trainer(small(d / "g", paths["all"], normalize="global"), log=lambda s: None).run()
    return str(d / "w"), res, glob


def _by_hand(r, z):
    """One-step predictions of z[1:] from the window of 24 values before each, by hand."""
    out = np.full(len(z) - 1, np.nan)
    for j in range(23, len(z) - 1):
        win = z[j - 23 : j + 1]
        m, s = win.mean(), win.std()
        y, _ = r.model.forward(r.params, ((win - m) / s)[:, None, None])
        out[j] = y[-1, 0, 0] * s + m
    return out


def test_validation_evaluate_and_forecast_by_hand(run, files, capsys):
    folder, res, glob = run
    paths, v = files
    r = load_run(folder, "best")
    assert r.normalizer.window == 24 and json.load(open(f"{folder}/config.json"))["config"]["normalize"] == "window"
    pred = _by_hand(r, v)
    n_train = len(v) - round(0.1 * len(v))
    want = ser.nmse(pred[n_train - 1 :], v[n_train:])
    assert res.best["nmse"] == pytest.approx(want, rel=1e-9)
    assert res.best["nmse"] < glob.best["nmse"], (res.best, glob.best)  # a drifting level: the windows' own units pay
    assert main(["evaluate", folder, "--data", paths["all"]]) == 0
    said = capsys.readouterr().out
    assert f"NMSE {ser.nmse(pred[23:], v[24:]):.4f}" in said and "after a warm-up of 23" in said
    assert "each from the window of 24 values before it" in said
    assert main(["forecast", folder, "--history", paths["hist"], "--data", paths["next"]]) == 0
    said = capsys.readouterr().out
    seq = list(v[:360])
    for _ in range(40):
        win = np.array(seq[-24:])
        m, s = win.mean(), win.std()
        y, _ = r.model.forward(r.params, ((win - m) / s)[:, None, None])
        seq.append(y[-1, 0, 0] * s + m)
    assert f"NMSE {ser.nmse(np.array(seq[360:]), v[360:]):.4f}" in said


def test_with_differences_the_windows_are_of_the_differences(files, tmp_path):
    paths, v = files
    res = Trainer(small(tmp_path / "d", paths["all"], diff="1"), log=lambda s: None).run()
    r = load_run(str(tmp_path / "d"), "best")
    w = np.diff(v)
    pw = _by_hand(r, w)  # predictions of w[1:]; value t = w(t) + v(t-1)
    pred = pw + v[1:-1]
    n_train = len(v) - round(0.1 * len(v))
    assert res.best["nmse"] == pytest.approx(ser.nmse(pred[n_train - 2 :], v[n_train:]), rel=1e-9)


def test_resume_is_bitwise(files, tmp_path):
    paths, _ = files
    a = Trainer(small(tmp_path / "a", paths["all"], steps=12, eval_every=6), log=lambda s: None).run()
    b = Trainer(small(tmp_path / "b", paths["all"], steps=12, eval_every=6), log=lambda s: None)
    b = b.run(on_step=interrupt_at(6))
    assert b.stopped == "interrupted"
    c = Trainer(resume=str(tmp_path / "b"), log=lambda s: None).run()
    assert c.step == 12
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], c.params[k], err_msg=k)


def test_what_it_refuses(files, tmp_path, capsys):
    paths, v = files
    with pytest.raises(
        Exception, match="normalize: 'window' .* expected --batching window, received --batching stream"
    ):
        small(tmp_path / "s", paths["all"], batching="stream").validate()
    two = tmp_path / "two.csv"
    two.write_text("a,b\n" + "".join(f"{x:.4f},{x / 2:.4f}\n" for x in v))
    with pytest.raises(Exception, match="normalize: expected every --target among the --column inputs for 'window'"):
        make_task(small(tmp_path / "c", str(two), column="a", target="b"))
    with pytest.raises(Exception, match="normalize: 'window' .* expected --seq-len of at least 2, received 1"):
        small(tmp_path / "one", paths["all"], seq_len=1).validate()


def test_evaluate_and_forecast_refuse_less_than_a_window(run, files, tmp_path, capsys):
    folder, _, _ = run
    short = tmp_path / "short.csv"
    short.write_text("v\n" + "".join(f"{x:.6f}\n" for x in files[1][:20]))
    assert main(["evaluate", folder, "--data", str(short)]) == 2
    err = capsys.readouterr().err
    assert "--data: expected at least 25 values (the run normalises each window of 24; warm-up 0), received 20" in err
    assert main(["forecast", folder, "--history", str(short)]) == 2
    err = capsys.readouterr().err
    assert "--history: expected at least 24 values (the run predicts from windows of 24), received 20" in err
    assert len(err.strip().splitlines()) == 1


def test_a_run_keeps_its_normalisation(run, files, tmp_path, capsys):
    """Resuming with another normalisation or window, or importing a per-window model with a
    global normaliser, is one line; an epoch is the windows' count (one target each)."""
    import shutil

    folder, _, _ = run
    paths, _ = files
    copy = str(tmp_path / "copy")
    shutil.copytree(folder, copy)
    assert main(["train", "--resume", copy, "--normalize", "global", "--steps", "70"]) == 2
    err = capsys.readouterr().err
    assert "normalize: expected the normalisation the model was trained with, 'window' (windows of 24)" in err
    assert main(["train", "--resume", copy, "--seq-len", "10", "--steps", "70"]) == 2
    assert "received --normalize window --seq-len 10" in capsys.readouterr().err
    out = str(tmp_path / "m.npz")
    assert main(["export", folder, "--format", "npz", "--out", out]) == 0
    capsys.readouterr()
    assert main(["import", out, "--out", str(tmp_path / "imp"), "--mean", "50", "--std", "40"]) == 2
    assert "--mean, --std: expected none for a model trained with --normalize window" in capsys.readouterr().err
    assert main(["import", out, "--out", str(tmp_path / "imp2")]) == 0
    assert load_run(str(tmp_path / "imp2")).normalizer.window == 24
    task = make_task(small(tmp_path / "e", paths["all"]))
    assert task.steps_per_epoch() == -(-task.n_train // 8)  # batches of 8 windows, one target each


def test_columns_each_by_its_own_window_by_hand():
    """Rows of two columns: each column of a window by its own mean, spread and floor; the
    target (column 0) turned back by its column's; a forecast feeds it back and takes column 1
    from the given rows."""
    rng = np.random.default_rng(1)
    z = np.column_stack([rng.normal(size=70).cumsum() * 3 + 40, rng.normal(size=70) * 0.2])
    norm = ser.Normalizer.per_window(z[:50], 6)
    assert norm.columns == 2 and norm.floor == pytest.approx((1e-3 * z[:50, 0].std(), 1e-3 * z[:50, 1].std()))
    assert ser.Normalizer(**json.loads(json.dumps(norm.as_dict()))) == norm
    from bptt.train import checkpoint as ckpt

    assert ckpt.normalizer_ok(norm.as_dict())
    assert not ckpt.normalizer_ok({**norm.as_dict(), "floor": 1e-3})  # one floor for two columns
    assert not ckpt.normalizer_ok({**norm.as_dict(), "mean": [0.0, 0.5]})
    W = rng.normal(size=(2, 1))

    def forward(x):  # any causal map of both columns: out_t = x_t W
        return x @ W

    def by_hand(win):
        m, s = win.mean(axis=0), win.std(axis=0)
        return (((win - m) / s) @ W)[-1, 0] * s[0] + m[0]

    pred = norm.predictions(forward, z, np.float64, [0], chunk=9)
    assert pred.shape == (69, 1) and np.isnan(pred[:5]).all() and not np.isnan(pred[5:]).any()
    for j in range(5, 69):
        assert pred[j, 0] == pytest.approx(by_hand(z[j - 5 : j + 1]), rel=1e-12)
    path = norm.forecast_columns(forward, z[:40], 6, np.float64, [0], z[40:])
    rows = list(z[:40])
    for h in range(6):
        p = by_hand(np.array(rows[-6:]))
        assert path[h, 0] == pytest.approx(p, rel=1e-12)
        rows.append(np.array([p, z[40 + h, 1]]))
    with pytest.raises(Exception, match="future: expected the 5 rows after the history"):
        norm.forecast_columns(forward, z[:40], 6, np.float64, [0])


@pytest.fixture(scope="module")
def two_columns(files, tmp_path_factory):
    """v and a column u that leads it by one step: (v, u) -> v, normalised per window."""
    paths, v = files
    d = tmp_path_factory.mktemp("wnorm-cols")
    u = np.round(np.r_[v[1:], v[-1]] - v + np.random.default_rng(4).normal(0, 0.1, len(v)), 6)
    rows = np.column_stack([v, u])
    for name, part in (("all", rows), ("hist", rows[:360]), ("next", rows[360:])):
        (d / f"{name}.csv").write_text("v,u\n" + "".join(f"{a:.6f},{b:.6f}\n" for a, b in part))
    res = Trainer(small(d / "run", str(d / "all.csv"), column="v,u", target="v"), log=lambda s: None).run()
    return {k: str(d / f"{k}.csv") for k in ("all", "hist", "next")}, rows, str(d / "run"), res


def _rows_by_hand(r, rows):
    out = np.full(len(rows) - 1, np.nan)
    for j in range(23, len(rows) - 1):
        win = rows[j - 23 : j + 1]
        m, s = win.mean(axis=0), np.maximum(win.std(axis=0), r.normalizer.floor)
        y, _ = r.model.forward(r.params, ((win - m) / s)[:, None, :])
        out[j] = y[-1, 0, 0] * s[0] + m[0]
    return out


def test_a_run_of_columns_validates_evaluates_and_forecasts_by_hand(two_columns, capsys, tmp_path):
    paths, rows, folder, res = two_columns
    r = load_run(folder, "best")
    assert r.normalizer.window == 24 and r.normalizer.columns == 2
    pred = _rows_by_hand(r, rows)
    n_train = len(rows) - round(0.1 * len(rows))
    assert res.best["nmse"] == pytest.approx(ser.nmse(pred[n_train - 1 :], rows[n_train:, 0]), rel=1e-9)
    assert main(["evaluate", folder, "--data", paths["all"]]) == 0
    said = capsys.readouterr().out
    assert f"NMSE {ser.nmse(pred[23:], rows[24:, 0]):.4f}" in said and "after a warm-up of 23" in said, said
    assert "each from the window of 24 rows before it" in said
    assert main(["forecast", folder, "--history", paths["hist"], "--data", paths["next"]]) == 0
    said = capsys.readouterr().out
    seq = list(rows[:360])
    for h in range(40):
        p = _rows_by_hand(r, np.array(seq[-24:] + [seq[-1]]))[-1]
        seq.append(np.array([p, rows[360 + h, 1]]))
    want = ser.nmse(np.array(seq[360:])[:, 0], rows[360:, 0])
    assert f"NMSE {want:.4f}" in said and "u from --data" in said, said
    # export and import keep it; the imported model evaluates alike
    assert main(["export", folder, "--format", "npz", "--out", str(tmp_path / "m.npz")]) == 0
    assert main(["import", str(tmp_path / "m.npz"), "--out", str(tmp_path / "imp")]) == 0
    capsys.readouterr()
    assert load_run(str(tmp_path / "imp")).normalizer == r.normalizer
    assert main(["evaluate", str(tmp_path / "imp"), "--data", paths["all"]]) == 0
    assert f"NMSE {ser.nmse(pred[23:], rows[24:, 0]):.4f}" in capsys.readouterr().out
