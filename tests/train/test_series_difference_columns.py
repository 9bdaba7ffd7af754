"""Differencing a series of several columns: each column by its own orders (auto: by its own
trend), the targets' predictions turned back into values in validation, evaluate and forecast
(the targets fed back, the other inputs' differences taken from --data), and the orders kept
through resume, export and import."""

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


def quiet(s):
    pass


@pytest.mark.parametrize("orders", [((1, 0), (0, 0)), ((2, 1), (5, 0)), ((0, 1), (3, 3))])
def test_each_column_is_differenced_and_turned_back_as_a_series_of_its_own(orders):
    d, s = orders
    rng = np.random.default_rng(sum(d) + sum(s))
    v = rng.standard_normal((90, 2)).cumsum(0) + 0.3 * np.arange(90)[:, None]
    D = ser.Difference(d, s)
    one = [ser.Difference(d[j], s[j]) for j in range(2)]
    p = D.order
    assert D.columns == 2 and p == max(c.order for c in one)
    w = D(v)
    for j, c in enumerate(one):  # column j's own differences, from the first row every column has
        np.testing.assert_array_equal(w[:, j], c(v[:, j])[p - c.order :] if c else v[p:, j])
    np.testing.assert_allclose(D.restore(w[1:], v, p + 1), v[p + 1 :], atol=1e-10)
    np.testing.assert_allclose(D.integrate(w[50 - p :], v[:50]), v[50:], atol=1e-8)
    # one column's wrong prediction moves that column alone
    bumped = w[50 - p :].copy()
    bumped[0, 1] += 1.0
    moved = D.restore(bumped, v, 50) - v[50:]
    assert abs(moved[0, 1] - 1.0) < 1e-10 and np.abs(moved[:, 0]).max() < 1e-10
    assert D.take([1]) == ser.Difference((d[1],), (s[1],))
    # as JSON and back; a number beside a list is that order for every column
    assert ser.Difference(**json.loads(json.dumps(D.as_dict()))) == D
    assert ckpt.difference_ok(D.as_dict())
    assert ser.Difference([1, 0], 12) == ser.Difference((1, 0), (12, 12))


def test_orders_of_different_counts_or_values_are_refused_in_one_line():
    for d, s, said in (
        ([1, 0], [0, 0, 0], "as many of each"),
        ([], 0, "as many of each"),
        ([1, 3], 0, "difference d: expected 0, 1 or 2, received 3"),
        ([1, True], 0, "received True"),
        (1, [0, 1], "difference s: expected 0 (none) or a period of at least 2, received 1"),
    ):
        with pytest.raises(ser.BpttError, match=said.replace("(", r"\(").replace(")", r"\)")):
            ser.Difference(d, s)
    for bad in ({"d": [1, 0], "s": 0}, {"d": [1], "s": [0, 0]}, {"d": [], "s": []}, {"d": [3], "s": [0]}):
        assert not ckpt.difference_ok(bad), bad
    with pytest.raises(ser.BpttError, match="expected values of 2 columns, received shape"):
        ser.Difference((1, 0), 0)(np.zeros((20, 3)))


def sales_and_price(n, rng, start=0):
    """sales: a rising trend, a cycle of 26 and 3 x the price of the row before; price: noise."""
    t = np.arange(start, start + n)
    price = rng.standard_normal(n + 1)
    sales = 50 + 0.8 * t + 10 * np.sin(2 * np.pi * t / 26) + 3 * price[:-1] + rng.normal(0, 0.5, n)
    return np.column_stack([sales, price[1:]])


def write(path, rows):
    path.write_text("sales,price\n" + "".join(f"{a:.5f},{b:.5f}\n" for a, b in rows))
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("diff-columns")
    v = sales_and_price(420, np.random.default_rng(3))
    paths = {"train": write(d / "train.csv", v), "hist": write(d / "hist.csv", v[:378])}
    paths["next"] = write(d / "next.csv", v[378:])
    return paths, ser.read_table(paths["train"], ["sales", "price"], ["sales"]).values  # (as the file rounds them)


def small(out, data, **kw):
    base = dict(task="series", data=data, column="sales,price", target="sales", cell="gru", hidden=16, steps=150)
    base.update(eval_every=50, batch_size=8, seq_len=30, lr=0.01, warmup=10, dtype="float64", out=str(out))
    base.update(progress=False, **kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def runs(files, tmp_path_factory):
    d = tmp_path_factory.mktemp("diff-columns-runs")
    paths, _ = files
    said = []
    auto = Trainer(small(d / "auto", paths["train"]), log=said.append).run()
    plain = Trainer(small(d / "plain", paths["train"], diff="0"), log=quiet).run()
    return {"auto": str(d / "auto"), "plain": str(d / "plain")}, (auto, plain), said


def test_auto_differences_the_trending_column_alone_and_beats_the_values(runs):
    folders, (auto, plain), said = runs
    assert load_run(folders["auto"]).meta["difference"] == {"d": [1, 0], "s": [0, 0]}
    assert "first differences of sales; no differencing of price (auto, column by column" in said[0], said[0]
    assert "difference" not in load_run(folders["plain"]).meta
    # the validation figure on the sales' own scale: a trend the plain run cannot follow out of its range
    assert auto.best["nmse"] < 0.3 and plain.best["nmse"] > 3 * auto.best["nmse"], (auto.best, plain.best)


def one_step(run, v):
    """The run's one-step predictions of sales for rows p + 1 .. of v, by hand."""
    D, norm = run.difference, run.normalizer
    z = norm(D(v))
    y, _ = run.model.forward(run.params, z[:-1, None, :])
    w = norm.take([0]).inverse(y[:, 0, :])[:, 0]  # predicted differences of sales
    p = D.order
    return w + v[p : len(v) - 1, 0]  # first differences: sales(t) = w(t) + sales(t - 1)


def test_validation_and_evaluate_are_the_values_the_differences_give(runs, files, capsys):
    folders, (auto, _), _ = runs
    paths, v = files
    run = load_run(folders["auto"])
    n_train, n_val, _ = 378, 42, 0
    pred = one_step(run, v)[n_train - 2 : n_train - 2 + n_val]  # predictions of rows 2 .. (p = 1)
    assert abs(ser.nmse(pred, v[n_train:, 0]) - auto.best["nmse"]) < 1e-12
    assert main(["evaluate", folders["auto"], "--data", paths["next"], "--warmup", "3"]) == 0
    out = capsys.readouterr().out
    want = ser.nmse(one_step(run, v[378:])[3:], v[378 + 2 + 3 :, 0])
    assert f"NMSE {want:.4f}" in out and "37 rows" in out and "the 1 row the differences start from" in out, out


def test_the_forecast_feeds_back_sales_and_takes_the_price_differences_from_data(runs, files, capsys):
    folders, _, _ = runs
    paths, v = files
    run = load_run(folders["auto"])
    D, norm = run.difference, run.normalizer
    assert main(["forecast", folders["auto"], "--history", paths["hist"], "--data", paths["next"]]) == 0
    out = capsys.readouterr().out
    hist = v[:378]
    future = norm(D(v)[377:])[:, :2]  # rows 378 ..: the price differences after the history (none taken)
    z = forecast_columns(run.model, run.params, norm(D(hist)), 42, [0, -1], future)
    path = np.cumsum(norm.take([0]).inverse(z)[:, 0]) + hist[-1, 0]
    want = ser.nmse(path, v[378:, 0])
    assert f"NMSE {want:.4f}" in out and "price from --data" in out and want < 1.0, (out, want)


def test_asked_orders_apply_to_every_column_and_resume_bitwise(files, tmp_path, capsys):
    paths, v = files
    kw = dict(diff="1", seasonal_diff=26, steps=12, eval_every=4, optimizer="momentum", lr=0.02)
    a = Trainer(small(tmp_path / "a", paths["train"], **kw), log=quiet).run()
    assert a.task.diff == ser.Difference((1, 1), (26, 26))

    def stop(step, loss):
        if step == 6:
            os.kill(os.getpid(), signal.SIGINT)

    b = Trainer(small(tmp_path / "b", paths["train"], **kw), log=quiet).run(on_step=stop)
    assert b.stopped == "interrupted"
    c = Trainer(resume=str(tmp_path / "b"), log=quiet).run()
    assert c.step == a.step == 12
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], c.params[k], err_msg=k)
    assert ckpt.load(str(tmp_path / "b" / "checkpoint.npz")).meta["difference"] == {"d": [1, 1], "s": [26, 26]}
    # a history shorter than the differences need: one line
    short = write(tmp_path / "short.csv", v[:20])
    assert main(["forecast", str(tmp_path / "a"), "--history", short, "--data", paths["next"]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--history: expected at least 29 rows (the run models first differences" in err
    assert main(["evaluate", str(tmp_path / "a"), "--data", short]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--data: expected at least 29 rows (the run models first differences" in err


def test_export_and_import_keep_the_orders_of_each_column(runs, files, tmp_path, capsys):
    folders, _, _ = runs
    paths, _ = files
    assert main(["export", folders["auto"], "--out", str(tmp_path / "m.npz")]) == 0
    spec = json.load(open(tmp_path / "m.npz.json"))
    assert spec["difference"] == {"d": [1, 0], "s": [0, 0]}
    assert main(["import", str(tmp_path / "m.npz"), "--out", str(tmp_path / "imported")]) == 0
    assert "first differences of sales; no differencing of price" in capsys.readouterr().out
    argv = ["--data", paths["next"], "--warmup", "2"]
    assert main(["evaluate", str(tmp_path / "imported"), *argv]) == 0
    got = capsys.readouterr().out
    assert main(["evaluate", folders["auto"], *argv]) == 0
    assert got == capsys.readouterr().out
    # a description whose orders do not match its columns: one line
    with open(tmp_path / "m.npz.json", "w") as f:
        json.dump({**spec, "difference": {"d": [1], "s": [0]}}, f)
    assert main(["import", str(tmp_path / "m.npz"), "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "difference: expected one order per column of sales, price" in err, err


def test_a_run_keeps_its_columns_and_differencing_on_resume(runs, tmp_path, capsys):
    """Its orders and statistics go by column position: other columns, another order of them or
    other differencing is one line, and nothing in the folder changes."""
    import shutil

    folders, _, _ = runs
    copy = str(tmp_path / "copy")
    shutil.copytree(folders["auto"], copy)
    before = {n: open(os.path.join(copy, n), "rb").read() for n in ("checkpoint.npz", "config.json")}
    for argv, said in (
        (["--column", "price,sales"], "column: expected the run's columns, inputs sales, price -> targets sales, "),
        (["--diff", "2"], "diff: expected the run's own differencing (first differences of sales; no differencing"),
        (["--seasonal-diff", "26"], "seasonal_diff: expected the run's own differencing (first differences of"),
    ):
        assert main(["train", "--resume", copy, "--steps", "160", *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and said in err, err
    assert before == {n: open(os.path.join(copy, n), "rb").read() for n in before}


def test_an_ensemble_of_columns_averages_its_members(files, tmp_path, capsys):
    paths, v = files
    out = str(tmp_path / "ens")
    flags = ["--task", "series", "--data", paths["train"], "--column", "sales,price", "--target", "sales"]
    flags += ["--hidden", "8", "--steps", "20", "--eval-every", "10", "--batch-size", "8", "--seq-len", "30"]
    assert main(["train", *flags, "--dtype", "float64", "--seeds", "2", "--out", out]) == 0
    capsys.readouterr()
    assert main(["evaluate", out, "--data", paths["next"], "--warmup", "2"]) == 0
    said = capsys.readouterr().out
    each = [one_step(load_run(os.path.join(out, f"seed-{s}")), v[378:])[2:] for s in (0, 1)]
    truth = v[378 + 2 + 2 :, 0]  # rows p + 1 + warm-up on
    want = ser.nmse(np.mean(each, axis=0), truth)
    assert "by the mean of 2 members (after a warm-up of 2 and the 1 row the differences start from)" in said
    assert f"NMSE {want:.4f}" in said, said
    assert f"members' NMSE: seed-0 {ser.nmse(each[0], truth):.4f}, seed-1 {ser.nmse(each[1], truth):.4f}" in said


def test_a_resumed_ensemble_refuses_other_columns_before_writing(files, tmp_path, capsys):
    paths, _ = files
    out = str(tmp_path / "ens")
    flags = ["--task", "series", "--data", paths["train"], "--column", "sales,price", "--target", "sales"]
    flags += ["--hidden", "4", "--steps", "4", "--eval-every", "2", "--batch-size", "4", "--seq-len", "20"]
    assert main(["train", *flags, "--seeds", "2", "--out", out]) == 0
    capsys.readouterr()
    before = open(os.path.join(out, "ensemble.json")).read()
    for argv in (["--column", "price,sales"], ["--seasonal-diff", "4"]):
        assert main(["train", "--resume", out, "--steps", "6", *argv]) == 2
        said = capsys.readouterr()
        assert said.err.count("\n") == 1 and "== member" not in said.out, said
    assert open(os.path.join(out, "ensemble.json")).read() == before


def test_a_one_column_run_resumes_on_a_file_whose_column_has_another_name(files, tmp_path):
    paths, v = files
    a = Trainer(small(tmp_path / "one", paths["train"], column="sales", target="", steps=4, eval_every=2), log=quiet)
    a.run()
    other = tmp_path / "other.csv"
    other.write_text("units\n" + "".join(f"{x:.5f}\n" for x in v[:, 0]))
    res = Trainer(resume=str(tmp_path / "one"), overrides={"steps": 6, "data": str(other), "column": ""}, log=quiet)
    assert res.run().step == 6
