"""Word-level runs (--tokens word): the vocabulary from the training part, the validation and
test figures (nats/word, perplexity) recomputed from the best weights by hand, evaluate on
another file, sampling, and export / import with the word list."""

import contextlib
import io
import json
import math
import os

import numpy as np
import pytest

from bptt.cli import main
from bptt.data import text as txt
from bptt.train.runs import load_run

WORDS = "the cat sat on a mat while a dog ran to the big red barn and the bird sang".split()


def _run(argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        rc = main(argv)
    return rc, out.getvalue()


@pytest.fixture(scope="module")
def word_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("words")
    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(WORDS, size=rng.integers(3, 12))) + rng.choice([".", "!", ","]) for _ in range(500)]
    lines[-3] = "zebra quagga the end."  # words of the held-out parts alone
    (d / "t.txt").write_text("\n".join(lines) + "\n")
    out = str(d / "run")
    argv = ["train", "--data", str(d / "t.txt"), "--tokens", "word", "--vocab-size", "12", "--out", out]
    argv += ["--hidden", "16", "--steps", "40", "--eval-every", "20", "--batch-size", "4", "--seq-len", "10"]
    argv += ["--test-fraction", "0.1", "--sample-length", "15", "--dtype", "float64", "--no-progress"]
    rc, text = _run(argv)
    assert rc == 0, text
    return str(d / "t.txt"), out, text


def _loss(run, ids, B):
    """Mean next-word loss over B streams of ids, computed here: one forward pass each, softmax."""
    streams = txt.batchify(ids, B)
    z, _ = run.model.forward(run.params, streams[:-1])
    z = z - z.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return -np.mean(np.take_along_axis(logp, streams[1:, :, None], -1))


def test_vocabulary_and_figures(word_run):
    path, out, text = word_run
    run = load_run(out)
    tokens = txt.words(open(path).read())
    n_train = txt.split_sizes(len(tokens), 0.1, 0.1)[0]
    assert isinstance(run.meta["vocab"], list) and len(run.meta["vocab"]) == 12 and "<unk>" in run.meta["vocab"]
    assert "zebra" not in run.meta["vocab"] and "zebra" not in tokens[:n_train]
    ids, unknown = run.vocab.encode_tokens(tokens)
    counts = {w: tokens[:n_train].count(w) for w in set(tokens[:n_train])}
    kept = sorted(counts, key=lambda w: (-counts[w], w))[:11]
    assert set(run.meta["vocab"]) == {*kept, "<unk>"}
    assert f"{unknown:,} as <unk>" in text and "nats/word" in text and "bits/char" not in text
    # the best validation and the test part, recomputed from best.npz
    val, test = ids[n_train : n_train + round(0.1 * len(ids))], ids[n_train + round(0.1 * len(ids)) :]
    B = max(1, min(4, len(val) // 20))
    best = json.loads([ln for ln in open(os.path.join(out, "metrics.jsonl")) if '"val"' in ln][-1])
    figures = json.load(open(os.path.join(out, "test.json")))
    assert figures["loss"] == pytest.approx(_loss(run, test, max(1, min(4, len(test) // 20))), rel=1e-10)
    assert figures["ppl"] == pytest.approx(math.exp(figures["loss"]), rel=1e-12) and "bpc" not in figures
    assert best["ppl"] == pytest.approx(math.exp(best["loss"]), rel=1e-12)
    assert min(
        r["loss"] for r in map(json.loads, open(os.path.join(out, "metrics.jsonl"))) if r["split"] == "val"
    ) == pytest.approx(_loss(run, val, B), rel=1e-10)


def test_evaluate_sample_export_import(word_run, tmp_path):
    path, out, _ = word_run
    run = load_run(out)
    other = tmp_path / "other.txt"
    other.write_text("the cat sat on the zebra.\nthe dog ran to a barn!\n")
    rc, said = _run(["evaluate", out, "--data", str(other)])
    assert rc == 0, said
    ids, unknown = run.vocab.encode(other.read_text())
    loss = _loss(run, ids, 1)
    assert f"{len(ids) - 1:,} predictions, {loss:.4f} nats/word, perplexity {math.exp(loss):.2f}" in said
    assert f"{unknown:,} unknown words as <unk>" in said and unknown >= 2
    rc, sample = _run(["sample", out, "--prime", "the cat", "--length", "12", "--seed", "3"])
    assert rc == 0 and sample.startswith("the cat ")
    drawn = sample[len("the cat ") :].split()  # (decoded: words joined by spaces, <eos> as line breaks)
    assert len(drawn) >= 6 and all(w in run.meta["vocab"] for w in drawn)
    w = str(tmp_path / "w.npz")
    assert _run(["export", out, "--out", w])[0] == 0
    assert json.load(open(w + ".json"))["vocab"] == run.meta["vocab"]
    back = str(tmp_path / "back")
    rc, said = _run(["import", w, "--out", back])
    assert rc == 0, said
    again = load_run(back)
    assert again.cfg.tokens == "word" and again.meta["vocab"] == run.meta["vocab"]
    assert "a vocabulary of 12 words" in said
