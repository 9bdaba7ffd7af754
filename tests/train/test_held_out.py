"""--test-fraction: the very end of the data held out for one figure at the end of a run, with
the weights of the best validation; validation is the part before it; no test part, nothing
changes."""

import json
import os

import numpy as np
import pytest

from bptt.train import TrainConfig, Trainer
from bptt.train import checkpoint as ckpt
from bptt.train.tasks import stream_loss, text_metrics


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("held")
    rng = np.random.default_rng(0)
    (d / "t.txt").write_text(" ".join(rng.choice("the cat sat on a mat and a dog ran far".split(), 3000)))
    t = np.arange(600)
    v = np.sin(2 * np.pi * t / 23) + 0.1 * rng.normal(size=600)
    (d / "s.csv").write_text("v\n" + "".join(f"{x:.6f}\n" for x in v))
    return str(d / "t.txt"), str(d / "s.csv"), v


def small(out, **kw):
    base = dict(hidden=16, steps=12, eval_every=4, batch_size=4, seq_len=12, dtype="float64", progress=False)
    base.update(out=str(out), **kw)
    return TrainConfig(**base)


def test_text_holds_out_its_end_and_reports_it_once_with_the_best_weights(files, tmp_path):
    text, _, _ = files
    said = []
    res = Trainer(small(tmp_path / "a", data=text, test_fraction=0.1), log=said.append).run()
    task = res.task
    n = len(open(text).read())
    assert task.n_test == round(0.1 * n) and task.n_val == round(0.1 * n)
    assert task.n_train + task.n_val + task.n_test == n
    rec = json.load(open(tmp_path / "a" / "test.json"))
    best = ckpt.load(str(tmp_path / "a" / "best.npz")).params
    want = text_metrics(stream_loss(res.model, best, task.test_streams, 12)[0])
    assert rec["loss"] == pytest.approx(want["loss"], rel=1e-12) and rec["weights"] == "best"
    assert res.extra["test"]["loss"] == rec["loss"]
    assert sum("test (" in s and f"{rec['loss']:.4f} nats/char" in s for s in said) == 1
    # the validation part is the one before the test part: the same figures as a run whose file ends there
    ids, _ = task.vocab.encode(open(text).read())
    assert np.array_equal(task.test_streams.T.reshape(-1), ids[n - task.n_test :][: task.test_streams.size])
    # without a test part: no figure, no file, the splits as before
    plain = Trainer(small(tmp_path / "b", data=text), log=lambda s: None).run()
    assert plain.task.n_test == 0 and "test" not in plain.extra
    assert not os.path.exists(tmp_path / "b" / "test.json")
    assert plain.task.n_train == n - round(0.1 * n)


def test_a_series_scores_its_test_part_after_the_validation_part(files, tmp_path):
    _, series, _ = files
    said = []
    res = Trainer(small(tmp_path / "s", data=series, task="series", test_fraction=0.1), log=said.append).run()
    task = res.task
    line = next(s for s in said if s.startswith("test ("))
    t = res.extra["test"]
    assert line == f"test (60 held-out values, the best weights): NMSE {t['nmse']:.4f}, MSE {t['mse']:.4g}", line
    assert (task.n_train, task.n_val, task.n_test) == (480, 60, 60)
    best = ckpt.load(str(tmp_path / "s" / "best.npz")).params
    pred, v = task.one_step_predictions(res.model, best), task.values  # (the file's rounded values)
    from bptt.data.series import nmse

    assert res.extra["test"]["nmse"] == pytest.approx(nmse(pred[539:599], v[540:]), rel=1e-12)
    assert res.best["nmse"] == pytest.approx(nmse(pred[479:539], v[480:540]), rel=1e-9)
