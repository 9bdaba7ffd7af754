"""The baselines beside every series figure: period detection, AR order, each method's one-step
and iterated forecasts by hand, and the lines `bptt train`, `evaluate` and `forecast` print."""

import numpy as np
import pytest

from bptt.cli import main
from bptt.data.baselines import Baselines, choose_order, detect_period, scores, verdict
from bptt.data.series import ar_predict, fit_ar, nmse
from bptt.errors import BpttError


def test_a_season_is_found_under_a_trend_and_noise_is_not():
    rng = np.random.default_rng(0)
    t = np.arange(600)
    x = 0.05 * t + np.sin(2 * np.pi * t / 12) + 0.2 * rng.standard_normal(600)
    assert detect_period(x) == 12
    assert detect_period(rng.standard_normal(600)) is None
    assert detect_period(np.ones(50)) is None


def test_the_order_of_an_ar2_process_is_two():
    rng = np.random.default_rng(1)
    x = np.zeros(3000)
    for i in range(2, 3000):
        x[i] = 0.6 * x[i - 1] - 0.3 * x[i - 2] + rng.standard_normal()
    assert choose_order(x) == 2


def test_one_step_and_iterated_forecasts_by_hand():
    rng = np.random.default_rng(2)
    t = np.arange(200)
    x = np.sin(2 * np.pi * t / 10) + 0.1 * rng.standard_normal(200)
    base = Baselines.fit(x[:150])
    assert base.period == 10 and base.names()[1] == "seasonal naive (period 10)"
    p = base.order
    assert np.array_equal(base.coef, fit_ar(x[:150], p))
    start = 150
    preds = base.one_step(x, start)
    np.testing.assert_array_equal(preds["persistence"], x[149:199])
    np.testing.assert_array_equal(preds["seasonal naive (period 10)"], x[140:190])
    ar = preds[f"AR({p})"]
    hand = [base.coef[0] + sum(base.coef[k] * x[i - k] for k in range(1, p + 1)) for i in range(start, 200)]
    np.testing.assert_allclose(ar, hand, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ar, ar_predict(base.coef, x)[start - p :], rtol=1e-14, atol=1e-14)
    paths = base.iterated(x[:150], 25)
    np.testing.assert_array_equal(paths["persistence"], np.full(25, x[149]))
    np.testing.assert_array_equal(paths["seasonal naive (period 10)"], np.tile(x[140:150], 3)[:25])
    buf = list(x[:150])
    for _ in range(25):
        buf.append(base.coef[0] + sum(base.coef[k] * buf[-k] for k in range(1, p + 1)))
    np.testing.assert_allclose(paths[f"AR({p})"], buf[150:], rtol=1e-12)
    s = scores(preds, x[start:])
    assert s["persistence"] == pytest.approx(nmse(x[149:199], x[150:])) and s[f"AR({p})"] < s["persistence"]
    line = verdict(s["persistence"] * 2, s)
    assert "the network LOSES to persistence" in line and f"AR({p}) " in line
    assert verdict(0.0, s).endswith("the network beats every one")
    with pytest.raises(BpttError, match="start: expected"):
        base.one_step(x, 1)
    with pytest.raises(BpttError, match="baselines: expected a 1-D training part"):
        Baselines.fit(x[:3])


def test_the_commands_print_the_baselines(tmp_path, capsys):
    """A random walk: an untrained network loses to persistence, and every command says so."""
    rng = np.random.default_rng(3)
    data = tmp_path / "walk.csv"
    np.savetxt(data, np.cumsum(rng.standard_normal(400)))
    run = tmp_path / "run"
    argv = ["train", "--task", "series", "--data", str(data), "--steps", "2", "--eval-every", "2", "--hidden", "4"]
    assert main(argv + ["--no-progress", "--seq-len", "20", "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "validation baselines on the same points: persistence" in out and "LOSES to persistence" in out
    assert main(["evaluate", str(run), "--data", str(data)]) == 0
    out = capsys.readouterr().out
    assert "network NMSE" in out and "LOSES to persistence" in out
    assert main(["forecast", str(run), "--data", str(data), "--history", str(data), "--horizon", "10"]) == 0
    assert "iterated from the same history: baselines on the same points: persistence" in capsys.readouterr().out


def test_each_target_column_meets_its_own_baselines(tmp_path, capsys):
    """Two target columns (a random walk and noise): each is scored against the baselines fitted
    on its own training part, with the figures the baselines give by hand."""
    from bptt.data import series as ser

    rng = np.random.default_rng(5)
    walk, noise = np.round(np.cumsum(rng.standard_normal(400)), 4), np.round(rng.standard_normal(400), 4)
    data = tmp_path / "two.csv"
    data.write_text("walk,noise\n" + "".join(f"{a:.4f},{b:.4f}\n" for a, b in zip(walk, noise)))
    run = tmp_path / "run"
    argv = ["train", "--task", "series", "--data", str(data), "--column", "walk,noise", "--steps", "2"]
    assert (
        main(argv + ["--eval-every", "2", "--hidden", "4", "--no-progress", "--seq-len", "20", "--out", str(run)]) == 0
    )
    out = capsys.readouterr().out
    n_train = 360
    for name, v in (("walk", walk), ("noise", noise)):
        base = Baselines.fit(v[:n_train])
        want = scores(base.one_step(v, n_train), v[n_train:])
        line = next(ln for ln in out.splitlines() if ln.startswith(f"validation of {name}: baselines"))
        assert all(f"{k} {x:.4f}" in line for k, x in want.items()), (line, want)
    assert "LOSES to persistence" in next(ln for ln in out.splitlines() if ln.startswith("validation of walk:"))
    assert main(["evaluate", str(run), "--data", str(data)]) == 0
    out = capsys.readouterr().out
    assert out.count("network NMSE") == 2 and "walk: network NMSE" in out and "noise: network NMSE" in out
    assert main(["forecast", str(run), "--data", str(data), "--history", str(data), "--horizon", "10"]) == 0
    out = capsys.readouterr().out
    hist = ser.read_table(str(data), ["walk", "noise"], ()).values
    base = Baselines.fit(walk[:n_train])
    want = scores(base.iterated(hist[:, 0], 10), walk[:10])
    line = next(ln for ln in out.splitlines() if ln.startswith("walk, iterated from the same history"))
    assert all(f"{k} {x:.4f}" in line for k, x in want.items()), (line, want)
    # the run's own file no longer holds its columns: the figures, and the baselines not computed
    copy = tmp_path / "copy.csv"
    copy.write_text(data.read_text())
    data.write_text("walk\n" + "".join(f"{a:.4f}\n" for a in walk))
    assert main(["evaluate", str(run), "--data", str(copy)]) == 0
    out = capsys.readouterr().out
    assert "walk: baselines: not computed" in out and "noise: baselines: not computed" in out, out
