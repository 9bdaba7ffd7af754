"""bptt train --seeds N: members that are the same runs as single runs of those seeds, the
ensemble's figures recomputed from the members' weights by hand (mean of predictions for series,
mean of probabilities for text), evaluate and forecast on the folder, resume."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil

import numpy as np
import pytest

from bptt.cli import main
from bptt.data import series as ser
from bptt.generate import forecast
from bptt.train import ensemble
from bptt.train.runs import load_members, load_run
from bptt.train.tasks import mixture_loss, stream_loss

SMALL = ["--hidden", "8", "--steps", "24", "--eval-every", "8", "--batch-size", "4", "--seq-len", "20"]
SMALL += ["--dtype", "float64", "--no-progress", "--threads", "1"]


def _run(argv: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue() + err.getvalue()


@pytest.fixture(scope="module")
def series_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("ens-series")
    t = np.arange(600)
    v = (
        np.sin(2 * np.pi * t / 31.0)
        + 0.4 * np.sin(2 * np.pi * t / 7.3)
        + 0.05 * np.random.default_rng(3).standard_normal(600)
    )
    np.savetxt(d / "train.dat", v[:500])
    np.savetxt(d / "next.dat", v[500:])
    return str(d / "train.dat"), str(d / "next.dat"), v


@pytest.fixture(scope="module")
def series_ensemble(series_files, tmp_path_factory):
    data, _, _ = series_files
    out = str(tmp_path_factory.mktemp("ens") / "e")
    rc, text = _run(["train", "--task", "series", "--data", data, "--seeds", "2", "--seed", "5", "--out", out, *SMALL])
    assert rc == 0, text
    return out, text


def test_members_are_the_single_runs_of_their_seeds(series_ensemble, series_files, tmp_path):
    out, text = series_ensemble
    doc = json.load(open(os.path.join(out, ensemble.ENSEMBLE)))
    assert doc["seeds"] == [5, 6]
    single = str(tmp_path / "single")
    rc, _ = _run(["train", "--task", "series", "--data", series_files[0], "--seed", "6", "--out", single, *SMALL])
    assert rc == 0
    member = load_run(os.path.join(out, "seed-6"))
    assert member.cfg.seed == 6
    alone = load_run(single)
    for k in alone.params:
        np.testing.assert_array_equal(member.params[k], alone.params[k])
    other = load_run(os.path.join(out, "seed-5"))
    assert any(not np.array_equal(other.params[k], member.params[k]) for k in member.params)


def _one_step(run, values: np.ndarray) -> np.ndarray:
    """A member's one-step predictions of values[1:], computed here from its weights."""
    norm = run.normalizer
    y, _ = run.model.forward(run.params, norm(values)[:-1, None, None])
    return norm.inverse(y[:, 0, 0].astype(np.float64))


def test_the_ensemble_figure_is_the_mean_of_the_members_predictions(series_ensemble, series_files):
    out, text = series_ensemble
    runs = load_members(out)
    assert [os.path.basename(r.folder) for r in runs] == ["seed-5", "seed-6"]
    values = np.loadtxt(series_files[0])
    n_val = round(0.1 * len(values))  # the default validation part
    a = len(values) - n_val
    preds = [_one_step(r, values)[a - 1 :] for r in runs]
    mean = ser.nmse(np.mean(preds, axis=0), values[a:])
    doc = json.load(open(os.path.join(out, ensemble.ENSEMBLE)))
    assert doc["results"]["ensemble"]["validation"]["nmse"] == pytest.approx(mean, rel=1e-10)
    for r, p in zip(runs, preds):  # each member's best figure, from its own weights
        assert doc["results"][os.path.basename(r.folder)]["best"]["nmse"] == pytest.approx(
            ser.nmse(p, values[a:]), rel=1e-10
        )
    assert f"the ensemble (mean of the members' predictions), validation: {mean:.4f}" in text
    members = [doc["results"][f"seed-{s}"]["best"]["nmse"] for s in (5, 6)]
    assert f"members: median {np.median(members):.4f}" in text


def test_evaluate_and_forecast_average_the_members(series_ensemble, series_files):
    out, _ = series_ensemble
    data, nxt, v = series_files
    runs = load_members(out)
    truth = np.loadtxt(nxt)
    rc, text = _run(["evaluate", out, "--data", nxt])
    assert rc == 0, text
    preds = [_one_step(r, truth) for r in runs]
    figure = ser.nmse(np.mean(preds, axis=0), truth[1:])
    assert re.search(rf"by the mean of 2 members .*NMSE {figure:.4f}", text), text
    assert f"seed-5 {ser.nmse(preds[0], truth[1:]):.4f}, seed-6 {ser.nmse(preds[1], truth[1:]):.4f}" in text

    rc, text = _run(["forecast", out, "--data", nxt, "--horizon", "15", "--out", os.path.join(out, "f.png")])
    assert rc == 0, text
    hist = np.loadtxt(data)
    paths = [r.normalizer.inverse(forecast(r.model, r.params, r.normalizer(hist), 15).astype(np.float64)) for r in runs]
    figure = ser.nmse(np.mean(paths, axis=0), truth[:15])
    assert f"by the mean of 2 members: NMSE {figure:.4f}" in text, text
    one = ser.nmse(paths[0], truth[:15])
    assert f"seed-5 {one:.4f}" in text


def test_resume_trains_the_members_not_there_and_leaves_the_finished(series_ensemble, tmp_path):
    src, _ = series_ensemble
    out = str(tmp_path / "e")
    shutil.copytree(src, out)
    before = {s: load_run(os.path.join(out, f"seed-{s}")).params for s in (5, 6)}
    shutil.rmtree(os.path.join(out, "seed-6"))  # as if killed before its member began
    with pytest.raises(Exception, match="without seed-6"):
        load_members(out)
    rc, text = _run(["train", "--resume", out])
    assert rc == 0, text
    for s in (5, 6):
        again = load_run(os.path.join(out, f"seed-{s}")).params
        for k in again:
            np.testing.assert_array_equal(again[k], before[s][k])
    assert "ensemble of 2 seeds" in text and "seed 5, " + os.path.join(out, "seed-5") + ": finished (done)" in text
    rc, text = _run(["train", "--resume", out, "--steps", "30"])  # settings given: every member continues
    assert rc == 0, text
    for s in (5, 6):
        assert json.load(open(os.path.join(out, f"seed-{s}", "config.json")))["config"]["steps"] == 30
    shutil.rmtree(os.path.join(out, "seed-6"))  # a member not begun starts with the settings given too
    rc, text = _run(["train", "--resume", out, "--steps", "32"])
    assert rc == 0, text
    for s in (5, 6):
        assert json.load(open(os.path.join(out, f"seed-{s}", "config.json")))["config"]["steps"] == 32
    assert json.load(open(os.path.join(out, ensemble.ENSEMBLE)))["config"]["steps"] == 32


def _text_members(tmp_path, n: int = 2):
    words = "the cat sat on a mat while a dog ran to the big red barn and the bird sang ".split()
    path = tmp_path / "words.txt"
    path.write_text(" ".join(np.random.default_rng(0).choice(words, size=800)) + "\n")
    out = str(tmp_path / "t")
    rc, text = _run(["train", "--data", str(path), "--seeds", str(n), "--out", out, "--sample-length", "0", *SMALL])
    assert rc == 0, text
    return str(path), out, text


def test_text_mixture_is_the_mean_of_probabilities(tmp_path):
    from bptt.data import text as txt

    path, out, text = _text_members(tmp_path)
    runs = load_members(out)
    ids, _ = runs[0].vocab.encode(txt.read_text(path))
    streams = txt.batchify(ids, 3)
    members = [(r.model, r.params) for r in runs]
    # by hand: one forward pass each over the whole streams, softmax in float64, mean probability
    probs = []
    for m, p in members:
        z, _ = m.forward(p, streams[:-1])
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        probs.append(np.take_along_axis(e / e.sum(-1, keepdims=True), streams[1:, :, None], -1)[..., 0])
    expected = -np.mean(np.log(np.mean(probs, axis=0)))
    mix, each = mixture_loss(members, streams, 7)  # in segments of 7 steps, the state carried
    assert mix == pytest.approx(expected, rel=1e-12)
    for (m, p), e in zip(members, each):
        assert e == pytest.approx(stream_loss(m, p, streams, 7)[0], rel=1e-12)
    assert mix < np.mean(each)  # Jensen: a mixture of different members is better than their mean loss
    one, _ = mixture_loss(members[:1], streams, 7)
    assert one == pytest.approx(stream_loss(*members[0], streams, 7)[0], rel=1e-12)

    rc, said = _run(["evaluate", out, "--data", path])
    assert rc == 0, said
    assert "(the mean of the members' probabilities)" in said and "members' nats/char: seed-0" in said
    assert "the ensemble (mean of the members' probabilities), validation:" in text


def test_a_single_run_folder_is_one_member(series_ensemble):
    out, _ = series_ensemble
    runs = load_members(os.path.join(out, "seed-5"))
    assert len(runs) == 1 and runs[0].cfg.seed == 5
