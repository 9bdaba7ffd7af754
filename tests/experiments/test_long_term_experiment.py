"""bptt experiment long-term, in small: a run trains (the held-out loss falls), each algorithm
and clipping setting runs, the exploding start has spectral radius 1.5, the tables and plots
come out, the Add-task levels are named right; the command refuses unknown parts."""

import numpy as np
import pytest

from bptt.cli import main
from bptt.experiments import longterm as L


def test_a_short_run_learns_and_reports_its_figures():
    r = L.train("embedded-reber", "lstm", 0, hidden=16, batch=16, steps=300, eval_every=100)
    assert r.curve[0][1] > r.curve[-1][1] and 0 <= r.figures["accuracy"] <= 1
    assert len(r.curve) == 3 and r.curve[-1][3] > 0  # (update, loss, figures, median gradient norm)
    table = L.table_reber([r])
    assert table.splitlines()[2].startswith("| lstm | ")


@pytest.mark.parametrize("algo", L.ADD_ALGORITHMS)
@pytest.mark.parametrize("clip", [1.0, 0.0])
def test_every_algorithm_and_clipping_setting_runs(algo, clip):
    r = L.train("add-task", "gru", 0, algo=algo, clip=clip, T=20, hidden=8, batch=4, steps=12, eval_every=6)
    assert np.isfinite(r.loss) and r.algorithm == algo
    assert isinstance(L.level_of(r.loss, 20), str)


def test_the_exploding_start_and_the_levels():
    r = L.train("adding", "elman", 0, T=10, hidden=8, steps=2, init_radius=1.5, keep_params=True, lr=0.0)
    W = r.params["elman0.W_hh"].astype(np.float64)
    assert np.abs(np.linalg.eigvals(W)).max() == pytest.approx(1.5, rel=1e-5)
    none, first, both = L.lt.add_task_levels()
    n64, f64, b64 = L.lt.add_task_levels(64)
    assert n64 == none and round(f64, 3) == 0.530 and round(b64, 3) == 0.475
    assert L.level_of(b64 + 0.001, 64) == "both" and L.level_of((f64 + b64) / 2, 64) == "t - 5, and 50% of t - 9"
    assert L.level_of(both) == "both" and L.level_of(first) == "t - 5" and L.level_of(none) == "none"
    assert (
        L.strings_to_solve(r._replace(curve=[(50, 0.1, {"accuracy": 0.9}, 1), (100, 0, {"accuracy": 1.0}, 1)])) == 1600
    )


def test_plots_and_tables(tmp_path):
    xor = L.train("temporal-xor", "elman", 0, T=30, hidden=8, batch=4, steps=4, eval_every=2, keep_params=True)
    L.plot_xor(xor, str(tmp_path / "x.png"), T=30)
    add = L.train("adding", "lstm", 0, T=12, hidden=6, batch=4, steps=4, keep_params=True)
    prof = L.lag_profiles([add], T=12)
    assert len(prof["lstm"]["lag"]) == 12 and prof["lstm"]["lag"][0] == 1.0
    boom = L.train("adding", "elman", 0, T=10, hidden=8, steps=60, init_radius=2.0, optimizer="sgd", clip=0.0)
    assert len(boom.figures["trace"]) == 60 and boom.figures["trace"][0][2] < 2.0 + 1  # (after the first update)
    assert "| none |" in L.table_exploding([boom])
    L.plot_flow(prof, [boom], str(tmp_path / "f.png"))
    assert (tmp_path / "x.png").stat().st_size > 5000 and (tmp_path / "f.png").stat().st_size > 5000
    assert "| temporal-xor T=30 | elman |" in L.table_simple([xor]) and "| lstm | 12 |" in L.table_adding([add])


def test_parts_run_one_at_a_time_keep_the_others(tmp_path, monkeypatch):
    """run_experiment with --out keeps the parts already in longterm.json and adds the new one;
    the markdown holds the tables of both."""
    tiny = lambda log=None: [L.train("temporal-xor", "elman", 0, T=12, hidden=4, batch=2, steps=4, keep_params=True)]  # noqa: E731
    monkeypatch.setattr(L, "xor_part", tiny)
    monkeypatch.setattr(
        L, "copy_part", lambda log=None: [L.train("copy-memory", "gru", 0, T=5, hidden=4, batch=2, steps=4)]
    )
    L.run_experiment(("xor",), out=str(tmp_path), log=None)
    res = L.run_experiment(("copy",), out=str(tmp_path), log=None)
    assert set(res["runs"]) == {"xor", "copy"}
    md = (tmp_path / "longterm.md").read_text()
    assert "### Temporal XOR" in md and "### Copy memory" in md and (tmp_path / "longterm_xor.png").exists()


def test_the_command_refuses_unknown_parts(capsys):
    assert main(["experiment", "long-term", "--parts", "adding,foo"]) == 2
    assert (
        "--parts: expected one of adding, reber, xor, copy, add-task, flow, received 'foo'" in capsys.readouterr().err
    )


def test_plain_gradient_descent_is_what_it_says():
    """optimizer='sgd', warmup=0 (the exploding part's runs) was Adam with warm-up: the same
    weights as optimizer='adam' after an update. Now they differ, and an unknown name is one line."""
    kw = dict(T=10, hidden=4, steps=1, lr=0.01, clip=0.0, keep_params=True, eval_every=1)
    zero = L.train("adding", "elman", 0, **{**kw, "lr": 0.0})
    gd = L.train("adding", "elman", 0, optimizer="sgd", warmup=0, **kw)
    ad = L.train("adding", "elman", 0, **kw)
    moved = {k: zero.params[k] - gd.params[k] for k in gd.params}
    assert any(np.abs(v).max() > 0 for v in moved.values())
    assert any(not np.allclose(gd.params[k], ad.params[k]) for k in gd.params)
    with pytest.raises(L.BpttError, match="optimizer: expected adam or sgd, received 'rmsprop'"):
        L.train("adding", "elman", 0, optimizer="rmsprop", **kw)


@pytest.mark.parametrize("text", ['{"adding": 5}', "not json", '{"adding": [{"task": "adding"}]}'])
def test_a_foreign_longterm_json_is_one_line(tmp_path, capsys, text):
    (tmp_path / "longterm.json").write_text(text)
    assert main(["experiment", "long-term", "--parts", "", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--out: expected a longterm.json written by bptt experiment long-term" in err and err.count("\n") == 1
    assert (tmp_path / "longterm.json").read_text() == text
