"""bptt experiment compare: every algorithm on one problem, its agreement with full BPTT; the
learning curves of the algorithms training one model online (--curves)."""

import json

import numpy as np

from bptt.algorithms import make
from bptt.cli import main
from bptt.errors import BpttError
from bptt.experiments.compare import compare, curves, plot_curves, recall_stream, table
from bptt.layers import Dense, rnn
from bptt.model import Model


def test_compare_rows_agree_where_they_must(capsys):
    rows = {r.name: r for r in compare("lstm", hidden=3, batch=2, length=10, repeats=1)}
    assert set(rows) == {"full", "tbptt k1=k2=2", "artbp c=0.1", "budget 10% (mixed)", "rtrl", "uoro"}
    for name in ("full", "budget 10% (mixed)", "rtrl"):  # exact: the same gradient
        assert rows[name].rel_error < 1e-12 and abs(rows[name].cosine - 1) < 1e-12, rows[name]
    assert rows["tbptt k1=k2=2"].rel_error > 1e-3  # truncated: another gradient
    assert all(r.seconds > 0 and r.peak_bytes > 0 for r in rows.values())
    assert "| rtrl |" in table(list(rows.values()))
    assert main(["experiment", "compare", "--hidden", "3", "--length", "8", "--repeats", "1"]) == 0
    assert "cosine with full BPTT" in capsys.readouterr().out


# ---- learning curves ----------------------------------------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n"
TINY = dict(hidden=3, batch=2, delay=2, segment=4, evals=4, eval_length=10, eval_batch=2)


def test_recall_stream_targets_are_the_delayed_inputs():
    x, y = recall_stream(20, 3, 4, np.random.default_rng(0))
    assert x.shape == y.shape == (20, 3, 1) and set(np.unique(x)) == {-1.0, 1.0}
    assert np.all(y[:4] == 0) and np.array_equal(y[4:], x[:-4])


def test_rtrl_follows_full_bptt_until_its_carried_sensitivities_matter():
    """Same initial weights, same stream, same optimizer. Update 1: both start a fresh stream from
    the zero state and the segment is the whole history, so RTRL's gradient is full BPTT's: the
    same loss and (to rounding) the same weights after it. Update 2: both run the segment from the
    same carried state (computed with the same weights) with the same weights, so its loss is the
    same too; but RTRL's gradient also reaches into segment 1 through the sensitivities it
    carried, full BPTT's stops at the segment's start (the carried state is a constant to it).
    So from update 3 on the losses differ: that is checked too (a reset RTRL would agree)."""
    r = curves(updates=3, algorithms=("full", "rtrl"), **TINY)
    full, rtrl = ({c["algorithm"]: c for c in r["curves"]}[k] for k in ("full", "rtrl"))
    assert [u for u, _ in full["train"]] == [u for u, _ in rtrl["train"]] == [1, 2, 3]
    for (_, a), (_, b) in zip(full["train"][:2], rtrl["train"][:2]):
        assert abs(a - b) <= 1e-9 * abs(a), (a, b)
    assert [u for u, _ in full["eval"]] == [0, 1, 2, 3]
    for (_, a), (_, b) in zip(full["eval"][:2], rtrl["eval"][:2]):  # the initial weights, those after update 1
        assert abs(a - b) <= 1e-9 * abs(a), (a, b)
    a, b = full["train"][2][1], rtrl["train"][2][1]
    assert abs(a - b) > 1e-6 * abs(a), (a, b)


def test_full_bptt_learns_the_delayed_recall():
    r = curves(hidden=8, batch=2, updates=150, evals=3, eval_length=60, eval_batch=4, algorithms=("full",))
    (c,) = r["curves"]
    losses = np.array([loss for _, loss in c["train"]])
    assert len(losses) == 150 and np.all(np.isfinite(losses)) and c["seconds"] > 0
    first, last = losses[1:16].mean(), losses[-15:].mean()  # (update 1's segment has 5 targets of 0)
    assert last < 0.5 * first, (first, last)
    assert c["eval"][-1][1] < 0.5 * c["eval"][0][1], c["eval"]


def test_eprop_only_where_it_takes_the_model():
    model = Model(1, [*rnn("gru", 3), Dense(1)], loss="mse")
    x, y = recall_stream(4, 2, 2, np.random.default_rng(0))
    try:
        make("eprop", signal="online")(model, model.init_params(0), x, y)
        takes = True
    except BpttError:
        takes = False
    r = curves(cell="gru", updates=1, algorithms=("full", "eprop"), **TINY)
    assert [c["algorithm"] for c in r["curves"]] == ["full"] + ["eprop"] * takes


def test_plot_curves_writes_a_png(tmp_path):
    r = curves(updates=4, algorithms=("full", "tbptt", "uoro"), **TINY)
    assert [c["name"] for c in r["curves"]] == ["full BPTT (per segment)", "TBPTT k1=k2=2", "UORO"]
    out = tmp_path / "curves.png"
    plot_curves(r, str(out))
    assert out.read_bytes()[:8] == PNG and out.stat().st_size > 10000


def test_cli_curves(tmp_path, capsys):
    png, js = tmp_path / "c.png", tmp_path / "c.json"
    args = ["experiment", "compare", "--curves", str(png), "--curve-updates", "2", "--hidden", "3", "--json", str(js)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "delayed recall" in text and f"plot: {png}" in text and "RTRL" in text
    assert png.read_bytes()[:8] == PNG
    data = json.loads(js.read_text())
    names = [c["algorithm"] for c in data["curves"]]
    assert names[:5] == ["full", "tbptt", "artbp", "rtrl", "uoro"] and data["settings"]["hidden"] == 3
    assert all(len(c["train"]) == 2 for c in data["curves"])
    missing = tmp_path / "nowhere" / "c.png"
    assert main(["experiment", "compare", "--curves", str(missing), "--curve-updates", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--curves: expected a file in an existing folder" in err and not missing.exists()
    assert main(["experiment", "compare", "--curves", str(png), "--length", "5"]) == 2
    assert "--length: expected --length only without --curves" in capsys.readouterr().err
    assert main(["experiment", "compare", "--curve-updates", "5"]) == 2
    assert "--curve-updates: expected it with --curves" in capsys.readouterr().err
