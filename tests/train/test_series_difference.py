"""Differenced series (--diff, --seasonal-diff): the transform and its inverses, the automatic
choice, and runs that train on differences and report, evaluate and forecast on the series'
own scale; runs recorded without a difference stay undifferenced."""

import os

import numpy as np
import pytest

from bptt.cli import main
from bptt.data import series as ser
from bptt.generate import forecast
from bptt.train import TrainConfig, Trainer
from bptt.train.runs import load_run
from bptt.train.tasks import make_task

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data")


@pytest.mark.parametrize("s", [0, 3, 12])
@pytest.mark.parametrize("d", [0, 1, 2])
def test_a_difference_and_its_inverses_are_exact(d, s):
    """w = (1 - B)^d (1 - B^s) v, as NumPy's repeated differences; with w's true values the
    one-step restore and the iterated integration give v back."""
    rng = np.random.default_rng(d * 10 + s)
    v = rng.standard_normal(80).cumsum() + 0.2 * np.arange(80)
    D = ser.Difference(d, s)
    w, p = D(v), D.order
    ref = v.copy()
    for _ in range(d):
        ref = np.diff(ref)
    if s:
        ref = ref[s:] - ref[:-s]
    np.testing.assert_allclose(w, ref, atol=1e-12)
    np.testing.assert_allclose(D.restore(w[1:], v, p + 1), v[p + 1 :], atol=1e-12)
    np.testing.assert_allclose(D.integrate(w[40 - p :], v[:40]), v[40:], atol=1e-9)
    # one wrong prediction moves a restored value by its error alone, an integrated path for good
    bumped = w[40 - p :].copy()
    bumped[0] += 1.0
    assert abs(D.restore(bumped, v, 40)[0] - v[40] - 1.0) < 1e-12
    if d:
        assert np.all(np.abs(D.integrate(bumped, v[:40])[: s + 1] - v[40 : 41 + s]) > 0.5)


def test_auto_takes_first_differences_for_a_trend_only():
    t = np.arange(300, dtype=float)
    rng = np.random.default_rng(0)
    trend = 0.05 * t + rng.normal(0, 1, 300)
    cycle = np.sin(2 * np.pi * t / 25) + rng.normal(0, 0.2, 300)
    assert ser.Difference.choose("auto", 0, trend)[0] == ser.Difference(1, 0)
    assert ser.Difference.choose("auto", 25, cycle)[0] == ser.Difference(0, 25)
    d, why = ser.Difference.choose("auto", 0, trend)
    assert "auto: a trend" in why and "%" in why
    assert ser.Difference.choose("0", 0, trend)[0] == ser.Difference()
    for name in ("sunspots/sunspots_yearly.dat", "santafe_laser_A/A.dat"):  # the shipped series: none
        path = os.path.join(SHARED, name)
        if os.path.isfile(path):
            v, _ = ser.read_series(path)
            assert not ser.Difference.choose("auto", 0, v[: int(len(v) * 0.9)])[0], name


def trend_season(n, rng, start=0):
    t = np.arange(start, start + n)
    return 50 + 0.8 * t + 10 * np.sin(2 * np.pi * t / 26) + rng.normal(0, 1, n)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("diff")
    rng = np.random.default_rng(1)
    v = trend_season(420, rng)
    (d / "train.csv").write_text("sales\n" + "".join(f"{x:.5f}\n" for x in v))
    (d / "hist.csv").write_text("sales\n" + "".join(f"{x:.5f}\n" for x in v[:378]))
    (d / "next.csv").write_text("sales\n" + "".join(f"{x:.5f}\n" for x in v[378:]))
    return {k: str(d / f"{k}.csv") for k in ("train", "hist", "next")}, v


def small(out, data, **kw):
    base = dict(task="series", data=data, cell="gru", hidden=16, steps=150, eval_every=50, batch_size=8)
    base.update(seq_len=30, lr=0.01, warmup=10, dtype="float64", out=str(out), progress=False)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def runs(files, tmp_path_factory):
    d = tmp_path_factory.mktemp("diff-runs")
    paths, _ = files
    both = Trainer(small(d / "both", paths["train"], diff="1", seasonal_diff=26), log=lambda s: None).run()
    auto = Trainer(small(d / "auto", paths["train"]), log=lambda s: None).run()
    plain = Trainer(small(d / "plain", paths["train"], diff="0"), log=lambda s: None).run()
    return {"both": str(d / "both"), "auto": str(d / "auto"), "plain": str(d / "plain")}, (both, auto, plain)


def test_runs_on_differences_record_them_and_beat_the_undifferenced_run(runs):
    folders, (both, auto, plain) = runs
    assert load_run(folders["both"]).meta["difference"] == {"d": 1, "s": 26}
    assert load_run(folders["auto"]).meta["difference"] == {"d": 1, "s": 0}  # the trend was seen
    assert "difference" not in load_run(folders["plain"]).meta  # what a run without one always recorded
    # validation NMSE on the series' own scale: a trend the plain run cannot follow out of its range
    assert both.best["nmse"] < 0.1 and auto.best["nmse"] < 0.3, (both.best, auto.best)
    assert plain.best["nmse"] > 3 * both.best["nmse"], (plain.best, both.best)


def test_evaluate_and_forecast_turn_differences_back_into_values(runs, files, capsys):
    folders, _ = runs
    paths, v = files
    run = load_run(folders["both"])
    D, norm = run.difference, run.normalizer
    assert main(["evaluate", folders["both"], "--data", paths["train"], "--warmup", "5"]) == 0
    said = capsys.readouterr().out
    z = norm(D(v))
    y, _ = run.model.forward(run.params, z[:-1, None, None])
    pred = D.restore(norm.inverse(y[:, 0, 0]), v, D.order + 1)[5:]
    want = ser.nmse(pred, v[D.order + 1 :][5:])
    assert f"NMSE {want:.4f}" in said and f"{len(pred)} values" in said and "27 values the differences" in said
    assert main(["forecast", folders["both"], "--history", paths["hist"], "--data", paths["next"]]) == 0
    said = capsys.readouterr().out
    hist = v[:378]
    path = D.integrate(norm.inverse(forecast(run.model, run.params, norm(D(hist)), 42)), hist)
    want = ser.nmse(path, v[378:])
    assert f"NMSE {want:.4f}" in said and want < 0.5, said
    # too short a history for the differences: one line
    assert main(["forecast", folders["both"], "--history", paths["next"], "--horizon", "3"]) == 0
    capsys.readouterr()
    short = os.path.join(os.path.dirname(paths["next"]), "short.csv")
    with open(short, "w") as f:
        f.write("sales\n" + "".join(f"{x:.5f}\n" for x in v[:20]))
    assert main(["forecast", folders["both"], "--history", short, "--horizon", "3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "expected at least 29 values" in err, err


def test_a_run_resumes_and_exports_with_its_difference(runs, files, tmp_path, capsys):
    folders, _ = runs
    paths, _ = files
    cfg = load_run(folders["both"]).cfg
    task = make_task(cfg, load_run(folders["both"]).meta)
    assert task.diff == ser.Difference(1, 26)
    # a record without one (written before differencing existed) is undifferenced, whatever --diff says
    meta = {k: v for k, v in load_run(folders["plain"]).meta.items()}
    assert not make_task(small(tmp_path / "x", paths["train"], diff="auto"), meta).diff
    assert main(["export", folders["both"], "--format", "npz", "--out", str(tmp_path / "m.npz")]) == 0
    assert main(["import", str(tmp_path / "m.npz"), "--out", str(tmp_path / "imported")]) == 0
    said = capsys.readouterr().out
    assert "a seasonal difference of period 26" in said
    # a description's differencing stands: asking for another is one line
    assert main(["import", str(tmp_path / "m.npz"), "--out", str(tmp_path / "other"), "--diff", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "expected the differencing the file's description gives" in err, err
    assert "received --diff 0" in err
    assert load_run(str(tmp_path / "imported")).meta["difference"] == {"d": 1, "s": 26}
    # the bare tensors (no description): --diff and --seasonal-diff say what the model was trained with
    os.unlink(str(tmp_path / "m.npz") + ".json")
    bare = ["import", str(tmp_path / "m.npz"), "--task", "series", "--data", paths["train"], "--hidden", "16"]
    assert main([*bare, "--out", str(tmp_path / "bare"), "--diff", "1", "--seasonal-diff", "26"]) == 0
    capsys.readouterr()
    assert load_run(str(tmp_path / "bare")).meta["difference"] == {"d": 1, "s": 26}
    argv = ["--data", paths["train"], "--warmup", "5"]
    assert main(["evaluate", str(tmp_path / "bare"), *argv]) == 0
    got = capsys.readouterr().out
    assert main(["evaluate", folders["both"], *argv]) == 0
    assert got == capsys.readouterr().out
    assert main([*bare, "--out", str(tmp_path / "bad"), "--diff", "3"]) == 2
    assert "diff: expected one of auto, 0, 1, 2, received '3'" in capsys.readouterr().err
    # without --data, with the normaliser given: the differencing as asked, and the config says it too
    norm = load_run(folders["both"]).normalizer
    given = ["--mean", str(norm.mean), "--std", str(norm.std), "--diff", "1", "--seasonal-diff", "26"]
    assert main([*bare[:-4], "--hidden", "16", "--out", str(tmp_path / "given"), *given]) == 0
    capsys.readouterr()
    imp = load_run(str(tmp_path / "given"))
    assert imp.meta["difference"] == {"d": 1, "s": 26} and (imp.cfg.diff, imp.cfg.seasonal_diff) == ("1", 26)


def test_normalize_none_models_the_values_as_they_are(files, tmp_path):
    paths, v = files
    said = []
    res = Trainer(small(tmp_path / "n", paths["train"], normalize="none", diff="0", steps=4), log=said.append).run()
    task = res.task
    assert (task.norm.mean, task.norm.std) == (0.0, 1.0)
    np.testing.assert_array_equal(task.z, task.values)
    assert any("not normalised (--normalize none)" in s for s in said)
    d = Trainer(small(tmp_path / "d", paths["train"], normalize="none", diff="1", steps=4), log=lambda s: None).run()
    np.testing.assert_allclose(d.task.z, np.diff(d.task.values))


def test_input_noise_touches_the_inputs_of_training_batches_alone(tmp_path):
    """--input-noise s: each training batch's inputs get N(0, s^2) noise from the run's
    generator, the targets none; the same generator state gives the same batch."""
    import numpy as np

    from bptt.train import TrainConfig
    from bptt.train.tasks import make_task

    path = tmp_path / "s.csv"
    path.write_text("\n".join(f"{np.sin(i / 7):.6f}" for i in range(2000)) + "\n")
    base = dict(data=str(path), task="series", batch_size=64, seq_len=50)
    clean = make_task(TrainConfig(**base))
    noisy = make_task(TrainConfig(**base, input_noise=0.2))
    (x0, y0, _), (x1, y1, _) = (t.batch(0, np.random.default_rng(3)) for t in (clean, noisy))
    np.testing.assert_array_equal(y0, y1)  # the same windows, clean targets
    d = (x1 - x0).ravel()
    assert abs(d.std() - 0.2) < 0.01 and abs(d.mean()) < 0.01
    again, _, _ = noisy.batch(0, np.random.default_rng(3))
    np.testing.assert_array_equal(again, x1)
    assert noisy.evaluate is not None and np.array_equal(noisy.z, clean.z)  # evaluation sees the series as it is
