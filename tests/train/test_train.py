"""The trainer and the CLI: runs, checkpoints, resume, interruption, learning."""

import json
import math
import os
import signal

import numpy as np
import pytest

from bptt.cli import main
from bptt.train import TrainConfig, Trainer
from bptt.train import checkpoint as ckpt
from bptt.train.runs import load_run

WORDS = "the cat sat on a mat while a dog ran to the big red barn and the bird sang ".split()


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    p = tmp_path_factory.mktemp("data") / "words.txt"
    p.write_text(" ".join(rng.choice(WORDS, size=4000)) + "\n")
    return str(p)


@pytest.fixture(scope="module")
def series_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("series")
    t = np.arange(460)
    v = np.sin(2 * np.pi * t / 23.0) + 0.5 * np.sin(2 * np.pi * t / 7.0)
    np.savetxt(d / "train.dat", v[:400])
    np.savetxt(d / "cont.dat", v[400:])
    return str(d / "train.dat"), str(d / "cont.dat")


def small(out, **kw):
    base = dict(
        hidden=16,
        steps=12,
        eval_every=4,
        batch_size=4,
        seq_len=20,
        dtype="float64",
        out=str(out),
        progress=False,
        sample_length=0,
        warmup=2,
    )
    base.update(kw)
    if base.get("schedule") == "constant":
        del base["warmup"]  # only the cosine schedule warms up (bptt refuses a setting it would ignore)
    return TrainConfig(**base)


def interrupt_at(n):
    def on_step(step, loss):
        if step == n:
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C

    return on_step


@pytest.mark.parametrize(
    "kind",
    [
        "text-stream",
        "series-window",
        "text-tbptt-overlap",
        "text-tbptt-budget",
        "text-artbp",
        "text-batch-update",
        "text-rtrl",
        "text-uoro",
        "text-eprop",
        "text-dropout",
        "text-words-tied",
        "text-recurrent-dropout",
        "text-zoneout-tbptt-budget",
        "text-tbptt-overlap-dropouts",
        "text-tbptt-overlap-zoneout",
        "series-input-noise",
    ],
)
def test_resume_reaches_the_uninterrupted_parameters_bitwise(tmp_path, text_file, series_files, kind):
    """Also for TBPTT with k1 < k2 (the caches its next windows reach are in the checkpoint),
    random truncation (its draws come from the saved generator), batch updates, and online RTRL
    and UORO (their carried sensitivities are in the checkpoint; UORO's signs come from the
    saved generator), and online e-prop (its eligibility traces and random feedback are in the
    checkpoint)."""
    extra = {
        "text-stream": dict(data=text_file, plateau_patience=1),
        "series-window": dict(data=series_files[0], task="series", cell="gru", optimizer="momentum", lr=0.05),
        "text-tbptt-overlap": dict(data=text_file, algorithm="tbptt", k1=5, k2=23, cell="gru"),
        "text-tbptt-budget": dict(
            data=text_file, algorithm="tbptt", k1=5, k2=23, cell="lstm", memory_budget="60KB", memory_policy="mixed"
        ),
        "text-artbp": dict(data=text_file, algorithm="artbp", truncation_prob=0.2),
        "text-batch-update": dict(data=text_file, update="batch", batch_size=32, cell="elman"),
        "text-rtrl": dict(data=text_file, algorithm="rtrl", cell="gru", hidden=5, seq_len=6, batch_size=2),
        "text-uoro": dict(data=text_file, algorithm="uoro", cell="elman", hidden=5, update_every=3, batch_size=1),
        "text-eprop": dict(
            data=text_file, algorithm="eprop", eprop_feedback="random", hidden=5, seq_len=6, batch_size=2
        ),
        "text-dropout": dict(data=text_file, dropout=0.3, layers=2),
        "text-words-tied": dict(data=text_file, tokens="word", vocab_size=12, embed=16, tie=True),
        "text-recurrent-dropout": dict(data=text_file, recurrent_dropout=0.3, dropout=0.1, layers=2),
        "text-zoneout-tbptt-budget": dict(
            data=text_file, algorithm="tbptt", k1=5, k2=5, zoneout=0.2, zoneout_cell=0.4, memory_budget="60KB"
        ),
        # TBPTT k2 > k1 keeps caches that met their batch's masks: they go into the checkpoint
        "text-tbptt-overlap-dropouts": dict(
            data=text_file,
            algorithm="tbptt",
            k1=5,
            k2=12,
            dropout=0.2,
            recurrent_dropout=0.3,
            input_dropout=0.1,
            embed=6,
        ),
        "text-tbptt-overlap-zoneout": dict(
            data=text_file, algorithm="tbptt", k1=5, k2=12, zoneout=0.2, zoneout_cell=0.3
        ),
        "series-input-noise": dict(data=series_files[0], task="series", input_noise=0.1),
    }[kind]
    a = Trainer(small(tmp_path / "a", **extra)).run()
    b = Trainer(small(tmp_path / "b", **extra)).run(on_step=interrupt_at(6))
    assert b.stopped == "interrupted" and b.step == 6
    c = Trainer(resume=str(tmp_path / "b"), log=lambda s: None).run()
    assert a.step == c.step == 12 and c.stopped == "done"
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], c.params[k], err_msg=k)
    # the metrics of the resumed run continue the interrupted one's without duplicates
    rows = [json.loads(ln) for ln in open(tmp_path / "b" / "metrics.jsonl")]
    steps = [r["step"] for r in rows if r["split"] == "train"]
    assert steps == list(range(1, 13))
    if kind in ("text-rtrl", "text-uoro", "text-eprop"):
        name = kind[5:]
        saved = ckpt.load(str(tmp_path / "b" / "checkpoint.npz"))
        assert f"{name}_history" in saved.meta and any(k.startswith(f"alg/{name}/") for k in saved.extra)
    if kind == "text-uoro":  # --update-every 3 with one stream: an update every 3 characters
        saved_cfg = json.load(open(tmp_path / "b" / "config.json"))["config"]
        assert saved_cfg["seq_len"] == saved_cfg["update_every"] == 3 and saved_cfg["batch_size"] == 1


def test_same_seed_same_run_other_seed_other_run(tmp_path, text_file):
    p1 = Trainer(small(tmp_path / "1", data=text_file, steps=3)).run().params
    p2 = Trainer(small(tmp_path / "2", data=text_file, steps=3)).run().params
    p3 = Trainer(small(tmp_path / "3", data=text_file, steps=3, seed=1)).run().params
    assert all((p1[k] == p2[k]).all() for k in p1)
    assert not all((p1[k] == p3[k]).all() for k in p1)


def test_checkpoint_files(tmp_path, text_file):
    Trainer(small(tmp_path / "r", data=text_file, steps=4)).run()
    folder = tmp_path / "r"
    names = sorted(os.listdir(folder))
    assert names == [".lock", "best.npz", "checkpoint.npz", "config.json", "loss.png", "metrics.jsonl"]
    with np.load(folder / "checkpoint.npz", allow_pickle=False) as z:
        assert any(k.startswith("opt/") for k in z.files) and any(k.startswith("state/") for k in z.files)
    c = ckpt.load(str(folder / "checkpoint.npz"))
    assert c.meta["step"] == 4 and c.meta["config"]["hidden"] == 16 and "vocab" in c.meta
    cfg = json.load(open(folder / "config.json"))
    assert cfg["config"]["data"] == text_file and "BLAS" in cfg["threads"]
    from bptt import fast

    if (
        cfg["config"]["dtype"] == "float32" and not fast.OFF and fast.available()["kernels"]
    ):  # (what ran, not the policy)
        assert cfg["threads"].endswith(f"-float vectors; big products: {fast.products()}"), cfg["threads"]
    else:
        assert "big products" not in cfg["threads"]


def test_corrupted_or_truncated_checkpoints(tmp_path, text_file, capsys):
    Trainer(small(tmp_path / "r", data=text_file, steps=4)).run()
    for name in ("best.npz", "checkpoint.npz"):
        path = tmp_path / "r" / name
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(ValueError, match="corrupted or truncated"):
            ckpt.load(str(path))
    assert main(["sample", str(tmp_path / "r")]) == 2
    assert "corrupted or truncated" in capsys.readouterr().err
    path.write_bytes(b"PK\x03\x04" + os.urandom(200))
    with pytest.raises(ValueError, match="corrupted or truncated"):
        ckpt.load(str(path))


def test_atomic_write_leaves_nothing_half_written(tmp_path):
    target = tmp_path / "x.json"
    ckpt.write_json(str(target), {"a": 1})

    def boom(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        ckpt.atomic_write(str(target), boom)
    assert json.load(open(target)) == {"a": 1} and os.listdir(tmp_path) == ["x.json"]


def test_divergence_stops_with_a_message(tmp_path, text_file, monkeypatch):
    import bptt.algorithms.full as full

    real = full.full_bptt

    def nan_grads(*a, **k):
        g = real(*a, **k)
        return g._replace(loss=math.nan, grads={n: v * np.nan for n, v in g.grads.items()})

    monkeypatch.setattr(full, "full_bptt", nan_grads)
    logs = []
    res = Trainer(small(tmp_path / "d", data=text_file, steps=40, eval_every=100), log=logs.append).run()
    assert res.stopped == "diverged" and res.step == 20 and res.extra["skipped"] == 20
    assert any("diverged" in s for s in logs)
    first = load_run(str(tmp_path / "d"), "last").params
    assert all(np.isfinite(v).all() for v in first.values())  # the NaN never reached the weights


def test_text_learns(tmp_path, text_file):
    res = Trainer(
        small(tmp_path / "t", data=text_file, steps=150, eval_every=50, dtype="float32", hidden=32, lr=0.01)
    ).run()
    text = open(text_file).read()
    counts = np.unique(list(text), return_counts=True)[1]
    unigram = float(-(counts / counts.sum() * np.log(counts / counts.sum())).sum())
    assert res.best["loss"] < 0.7 * unigram, (res.best, unigram)


def test_series_learns_and_forecasts(tmp_path, series_files, capsys):
    run = str(tmp_path / "s")
    rc = main(
        [
            "train",
            "--task",
            "series",
            "--data",
            series_files[0],
            "--cell",
            "gru",
            "--hidden",
            "16",
            "--steps",
            "300",
            "--seq-len",
            "40",
            "--batch-size",
            "8",
            "--lr",
            "0.01",
            "--eval-every",
            "100",
            "--out",
            run,
            "--no-progress",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    nmse = float(out.split("one-step NMSE: ")[1].split()[0])
    assert nmse < 0.02, out
    assert os.path.isfile(os.path.join(run, "prediction.png"))
    assert main(["forecast", run, "--data", series_files[1]]) == 0
    out = capsys.readouterr().out
    assert float(out.split("NMSE ")[1].split()[0]) < 0.5, out  # predicting the mean scores 1
    assert os.path.isfile(os.path.join(run, "forecast.png"))
    assert main(["evaluate", run, "--data", series_files[1], "--warmup", "10"]) == 0
    assert "NMSE" in capsys.readouterr().out


def test_cli_train_sample_evaluate(tmp_path, text_file, capsys):
    run = str(tmp_path / "c")
    toml = tmp_path / "c.toml"
    toml.write_text('hidden = 12\nsteps = 8\nseq_len = 16\nbatch_size = 4\ncell = "gru"\n')
    rc = main(
        [
            "train",
            "--config",
            str(toml),
            "--data",
            text_file,
            "--steps",
            "6",
            "--eval-every",
            "3",
            "--out",
            run,
            "--no-progress",
            "--sample-length",
            "30",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "sample (temperature 0.8)" in out and "run folder" in out
    saved = json.load(open(os.path.join(run, "config.json")))["config"]
    assert saved["hidden"] == 12 and saved["cell"] == "gru" and saved["steps"] == 6  # the flag overrides the file
    assert len(open(os.path.join(run, "sample.txt")).read()) == 30
    assert main(["sample", run, "--prime", "the ", "--length", "25", "--top-k", "3", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("the ") and len(out.rstrip("\n")) == 29
    assert main(["evaluate", run, "--data", text_file]) == 0
    assert "bits/char" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (["train", "--hidden", "-3"], "hidden: expected a positive integer, received -3"),
        (["train", "--cell", "cnn"], "cell: expected one of"),
        (["train", "--task", "series"], "expected a series file"),
        (["train", "--data", "/nonexistent/file.txt"], "expected an existing file"),
        (["train", "--optimizer", "adamax"], "optimizer: expected one of"),
        (["sample", "/nonexistent/run"], "expected a run folder"),
        (["train", "--resume", "/nonexistent/run"], "expected a run folder with checkpoint.npz"),
    ],
)
def test_cli_errors_are_sentences(argv, fragment, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err


def test_toml_errors(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("hidden = 12\nlearning_rate = 0.1\n")
    assert main(["train", "--config", str(bad)]) == 2
    assert "received unknown 'learning_rate'" in capsys.readouterr().err
    bad.write_text("hidden = 'big'\n")
    assert main(["train", "--config", str(bad)]) == 2
    assert "hidden: expected an integer, received 'big'" in capsys.readouterr().err
    bad.write_text("hidden = = 1\n")
    assert main(["train", "--config", str(bad)]) == 2
    assert "expected valid TOML" in capsys.readouterr().err


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("gradcheck", "train", "sample", "forecast", "evaluate"):
        assert cmd in out


# ---- gradient algorithms in the trainer --------------------------------------------------------
def test_tbptt_chunks_are_the_full_algorithm(tmp_path, text_file, series_files):
    """TBPTT(k, k) on streams is what full BPTT over carried-state batches computes: whole runs
    end with bitwise-equal parameters. (ARTBP at c = 0 would be full BPTT too; the trainer
    refuses c = 0 for it, and the algorithm's own tests check that case.)"""
    log = lambda s: None  # noqa: E731
    for extra in (dict(data=text_file), dict(data=series_files[0], task="series", cell="gru")):
        ref = Trainer(small(tmp_path / f"full{len(extra)}", **extra), log=log).run()
        for name, alg in [("tb", dict(algorithm="tbptt", k1=20))]:
            run = Trainer(small(tmp_path / f"{name}{len(extra)}", **extra, **alg), log=log).run()
            for k in ref.params:
                np.testing.assert_array_equal(run.params[k], ref.params[k], err_msg=f"{name} {k}")


def test_tbptt_overlapping_windows_train_and_are_recorded(tmp_path, text_file):
    cfg = small(tmp_path / "r", data=text_file, algorithm="tbptt", k1=5, k2=15, steps=40, lr=0.01)
    res = Trainer(cfg, log=lambda s: None).run()
    saved = json.load(open(tmp_path / "r" / "config.json"))["config"]
    assert (saved["algorithm"], saved["k1"], saved["k2"], saved["seq_len"]) == ("tbptt", 5, 15, 5)
    losses = [json.loads(line)["loss"] for line in open(tmp_path / "r" / "metrics.jsonl") if '"train"' in line]
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 0.3
    assert res.step == 40


@pytest.mark.parametrize(
    "kw,msg",
    [
        (dict(algorithm="tbtt"), "algorithm: expected one of"),
        (dict(algorithm="tbptt", k1=10, k2=5), "k2: expected a number >= k1 = 10"),
        (dict(k1=5), "k1: expected only with --algorithm tbptt, received 5 with algorithm 'full'"),
        (dict(truncation_prob=0.1), "truncation_prob: expected only with --algorithm random or artbp"),
        (dict(algorithm="artbp", truncation_prob=1.0), r"truncation_prob: expected a number in \[0, 1\)"),
    ],
)
def test_algorithm_options_are_checked(tmp_path, kw, msg):
    with pytest.raises(ValueError, match=msg):
        small(tmp_path / "x", **kw).validate()


@pytest.mark.parametrize("alg", [dict(), dict(algorithm="tbptt", k1=5, k2=15)])
def test_batch_update_is_one_step_with_the_whole_pass_gradient(tmp_path, text_file, alg):
    """--update batch (SNNS's BBPTT): one update per pass, with the gradient of the pass's
    average loss: TBPTT over the whole stream with the weights fixed, state carried between
    segments (k1 = k2 = seq_len for full BPTT per batch)."""
    from bptt.algorithms import tbptt

    cfg = small(
        tmp_path / "b",
        data=text_file,
        update="batch",
        optimizer="sgd",
        schedule="constant",
        lr=0.5,
        clip=0.0,
        steps=1,
        **alg,
    )
    tr = Trainer(cfg, log=lambda s: None)
    p0 = tr._fresh().params
    res = tr.run()
    s = tr.task.streams
    k = tr.cfg.seq_len
    _, g = tbptt(tr.model, p0, s[:-1], s[1:], k, tr.cfg.k2 or k)
    assert tr.batches_per_update == len(tr.task.segs) > 10
    for name in p0:
        np.testing.assert_allclose(res.params[name], p0[name] - 0.5 * g.grads[name], rtol=1e-12, atol=1e-14)
    losses = [json.loads(line) for line in open(tmp_path / "b" / "metrics.jsonl")]
    assert losses[0]["loss"] == pytest.approx(g.loss, rel=1e-12)


@pytest.mark.parametrize(
    "how",
    [
        dict(update="batch", optimizer="quickprop", lr=0.05, steps=25, batch_size=16),  # SNNS QPTT
        dict(
            update="batch", optimizer="momentum", lr=0.5, momentum=0.9, steps=25, batch_size=16
        ),  # SNNS BBPTT (+ momentum)
        dict(algorithm="tbptt", k1=10, k2=20, optimizer="momentum", lr=0.5, momentum=0.9, steps=80),  # SNNS BPTT
    ],
)
def test_snns_update_modes_learn(tmp_path, text_file, how):
    cfg = small(tmp_path / "r", data=text_file, schedule="constant", clip=0.0, eval_every=1000, **how)
    res = Trainer(cfg, log=lambda s: None).run()
    rows = [json.loads(line) for line in open(tmp_path / "r" / "metrics.jsonl") if '"train"' in line]
    assert res.step == how["steps"] and len(rows) == how["steps"]
    first, last = rows[0]["loss"], np.mean([r["loss"] for r in rows[-3:]])
    assert last < first - 0.5, (first, last)


def test_batch_update_needs_streams(tmp_path, series_files):
    with pytest.raises(ValueError, match="update: 'batch' .* expected --batching stream, received 'window'"):
        small(tmp_path / "x", data=series_files[0], task="series", update="batch").validate()
    with pytest.raises(ValueError, match="update: expected one of"):
        small(tmp_path / "x", update="epoch").validate()


def test_stored_structures_rebuild_only_bptt_classes():
    from bptt._treeio import decode, encode
    from bptt.cells.lstm import LSTMState
    from bptt.tape import Tape

    tree = {"h": [(3, [Tape([LSTMState(np.ones((2, 3)) * i, np.zeros((2, 3))) for i in range(4)], None, False)], None)]}
    arrays = {}
    desc = encode(tree, arrays, "alg/")
    assert len(arrays) == 2  # the per-step caches are stacked, one array per field
    back = decode(json.loads(json.dumps(desc)), arrays)
    tape = back["h"][0][1][0]
    assert isinstance(tape, Tape) and len(tape.caches) == 4 and back["h"][0][0] == 3
    np.testing.assert_array_equal(tape.caches[2].h, np.full((2, 3), 2.0))
    with pytest.raises(ValueError, match="expected the name of a stored class"):
        decode({"nt": "os:system", "f": []}, {})


SHARED = os.environ.get("BPTT_SHARED_DATA") or os.path.join(
    os.path.dirname(__file__), "..", "..", "..", "shared", "data"
)
SHAKESPEARE = os.path.join(SHARED, "tinyshakespeare", "input.txt")


@pytest.mark.skipif(not os.path.isfile(SHAKESPEARE), reason="tiny Shakespeare not found beside the repository")
def test_cli_tbptt_char_lstm_on_tiny_shakespeare_beats_the_unigram_baseline(tmp_path, capsys):
    """`bptt train --algorithm tbptt --k1 k --k2 k`: 32 streams carried across batches; after
    200 updates the validation loss is below the training text's unigram entropy."""
    out = tmp_path / "ts"
    assert (
        main(
            [
                "train",
                "--data",
                SHAKESPEARE,
                "--algorithm",
                "tbptt",
                "--k1",
                "25",
                "--k2",
                "25",
                "--hidden",
                "64",
                "--steps",
                "200",
                "--eval-every",
                "200",
                "--lr",
                "0.01",
                "--no-progress",
                "--sample-length",
                "0",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    log = capsys.readouterr().out
    unigram = float(log.split("unigram entropy ")[1].split()[0])
    assert 3.2 < unigram < 3.4  # about 4.77 bits per character
    cfg = json.load(open(out / "config.json"))["config"]
    assert (cfg["algorithm"], cfg["k1"], cfg["k2"], cfg["batching"] or "stream") == ("tbptt", 25, 25, "stream")
    val = [json.loads(ln) for ln in open(out / "metrics.jsonl") if '"val"' in ln][-1]["loss"]
    assert val < unigram - 0.5, (val, unigram)


def test_a_memory_budget_trains_like_full_bptt(tmp_path, text_file, capsys):
    """float64, same seed: the losses of a run within a small budget (mixed, and revolve) and of
    one without agree to 1e-11 (the gradients differ in summation order only), and the run
    says how it trains."""
    runs = {}
    for name, extra in (
        ("full", {}),
        ("mixed", dict(memory_budget="60KB", memory_policy="mixed")),
        ("revolve", dict(memory_budget="60KB")),
    ):
        trainer = Trainer(small(tmp_path / name, data=text_file, steps=15, eval_every=5, **extra))
        trainer.run()
        if extra:  # the budget holds less than full BPTT's tapes: the plan recomputes
            (made,) = trainer.algorithm._plans[trainer.model].values()
            assert made.policy == extra.get("memory_policy", "revolve") and made.recomputed > 0, made
        runs[name] = [json.loads(ln)["loss"] for ln in open(tmp_path / name / "metrics.jsonl") if '"train"' in ln]
    for name in ("mixed", "revolve"):
        np.testing.assert_allclose(runs[name], runs["full"], rtol=1e-11)
    assert "within 60KB (mixed)" in capsys.readouterr().out
    # TBPTT(10, 10) on streams, each window within a budget: the same run as without
    for name, extra in (("tbptt", {}), ("tbptt-budget", dict(memory_budget="60KB"))):
        trainer = Trainer(small(tmp_path / name, data=text_file, steps=15, algorithm="tbptt", k1=10, **extra))
        trainer.run()
        if extra:
            assert trainer.algorithm.stream(trainer.model).budget.stats["forward_steps"] > 10  # recomputed
        runs[name] = [json.loads(ln)["loss"] for ln in open(tmp_path / name / "metrics.jsonl") if '"train"' in ln]
    np.testing.assert_allclose(runs["tbptt-budget"], runs["tbptt"], rtol=1e-11)
    assert "TBPTT(k1=10, k2=10), each window within 60KB (revolve)" in capsys.readouterr().out
    assert main(["train", "--data", text_file, "--memory-budget", "1KB", "--out", str(tmp_path / "x")]) == 2
    assert "memory budget: expected at least" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_a_spiking_network_learns_cue_accumulation_from_the_command_line(tmp_path, capsys):
    """bptt train --task cue-accumulation --cell alif: fresh generated batches, a validation
    accuracy in the log and metrics, far above chance after a short run (seeded), and a raster
    of the spikes in the run folder."""
    out = tmp_path / "cues"
    argv = ["train", "--task", "cue-accumulation", "--cell", "alif", "--hidden", "40", "--batch-size", "32"]
    argv += ["--steps", "120", "--eval-every", "60", "--lr", "0.01", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "generated cue-accumulation: sequences of 170 steps x 40 input channels" in text
    vals = [json.loads(ln) for ln in open(out / "metrics.jsonl") if '"val"' in ln]
    assert len(vals) == 2 and vals[-1]["accuracy"] >= 0.8, vals
    assert 2 < vals[-1]["rate_hz.alif0"] < 50, vals  # (regularised toward 10 Hz)
    assert f"accuracy {vals[-1]['accuracy']:.1%}" in text
    assert (out / "spikes.png").stat().st_size > 10_000


def test_online_eprop_trains_a_spiking_network_from_the_command_line(tmp_path, capsys):
    """bptt train --algorithm eprop (online signal, symmetric feedback) on cue accumulation:
    far above chance after 60 steps (measured 87.6%), the log says how it trains."""
    out = tmp_path / "ep"
    argv = ["train", "--task", "cue-accumulation", "--cell", "alif", "--hidden", "40", "--batch-size", "32"]
    argv += ["--steps", "60", "--eval-every", "60", "--lr", "0.01", "--algorithm", "eprop", "--no-progress"]
    assert main([*argv, "--out", str(out)]) == 0
    assert "e-prop (online signal, symmetric feedback)" in capsys.readouterr().out
    val = [json.loads(ln) for ln in open(out / "metrics.jsonl") if '"val"' in ln][-1]
    assert val["accuracy"] >= 0.7, val


def test_an_lstm_learns_the_embedded_reber_grammar_from_the_command_line(tmp_path, capsys):
    """bptt train --task embedded-reber: strings of varying length in masked batches, the share
    of held-out strings with every next-symbol set right in the log and metrics; an LSTM gets
    all of them right within 1,000 steps of 16 strings (seeded; measured 100% at step 500)."""
    out = tmp_path / "reber"
    argv = ["train", "--task", "embedded-reber", "--cell", "lstm", "--hidden", "32", "--batch-size", "16"]
    argv += ["--steps", "1000", "--eval-every", "500", "--lr", "0.01", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "generated embedded-reber: sequences of" in text and "validation: 500 fixed sequences" in text
    vals = [json.loads(ln) for ln in open(out / "metrics.jsonl") if '"val"' in ln]
    assert vals[-1]["accuracy"] >= 0.95 and vals[0]["loss"] > 10 * vals[-1]["loss"], vals
    assert f"accuracy {vals[-1]['accuracy']:.1%}" in text


@pytest.mark.parametrize("task", ["adding", "copy-memory", "temporal-xor", "letters", "add-task"])
def test_the_long_term_tasks_run_and_report_their_figures(tmp_path, capsys, task):
    """Each long-term task trains a few steps from the command line (its --seq-len as T) and
    reports its loss beside the no-memory baseline and its own figure; a resumed run is bitwise
    the unbroken one (the generated batches come from the saved generator)."""
    argv = ["train", "--task", task, "--cell", "gru", "--hidden", "8", "--batch-size", "4", "--seq-len", "12"]
    argv += ["--steps", "6", "--eval-every", "3", "--no-progress", "--dtype", "float64"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    text = capsys.readouterr().out
    figure = {"adding": "mean square error", "copy-memory": "accuracy", "add-task": "no memory: 0.6616"}
    assert "no memory:" in text and figure.get(task, "determined steps") in text
    cfg = dict(task=task, cell="gru", hidden=8, batch_size=4, seq_len=12, steps=6)
    a = Trainer(small(tmp_path / "a2", **cfg)).run()
    b = Trainer(small(tmp_path / "b", **cfg)).run(on_step=interrupt_at(3))
    assert b.stopped == "interrupted"
    c = Trainer(resume=str(tmp_path / "b"), log=lambda s: None).run()
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], c.params[k], err_msg=k)


def test_diagnose_every_records_the_flow_and_bptt_diagnose_reports_it(tmp_path, capsys):
    """--diagnose-every N writes a 'flow' row of metrics.jsonl at update 0 and every N updates
    (the same figures bptt.diagnostics.flow gives for those weights on the diagnostic batch:
    checked for the last one against the checkpoint); bptt diagnose RUN writes diagnose.json
    with them, the checkpoint's flow, gradient norms and clip rates, and draws flow.png
    (--data: the JSON only)."""
    from bptt.diagnostics import flow
    from bptt.train.runs import load_run
    from bptt.train.tasks import make_task

    out = tmp_path / "d"
    argv = ["train", "--task", "temporal-xor", "--cell", "elman", "--hidden", "6", "--batch-size", "4"]
    argv += ["--seq-len", "12", "--steps", "8", "--eval-every", "4", "--diagnose-every", "4", "--clip", "0.05"]
    assert main([*argv, "--dtype", "float64", "--no-progress", "--out", str(out)]) == 0
    rows = [json.loads(ln) for ln in open(out / "metrics.jsonl")]
    flows = [r for r in rows if r["split"] == "flow"]
    assert [r["step"] for r in flows] == [0, 4, 8]
    run = load_run(str(out), "last")
    x, y, mask = make_task(run.cfg, run.meta).diagnostic_batch()
    f = flow(run.model, run.params, x, y, mask=mask, max_lag=x.shape[0] - 1)
    np.testing.assert_allclose(flows[-1]["error"], f.error, rtol=1e-12)
    np.testing.assert_allclose(flows[-1]["lag"], f.lag, rtol=1e-12)
    assert flows[0]["by_lag_norm"] != flows[-1]["by_lag_norm"]
    capsys.readouterr()
    assert main(["diagnose", str(out), "--data"]) == 0
    assert not (out / "flow.png").exists()
    data = json.load(open(out / "diagnose.json"))
    assert len(data["recorded"]) == 3 and data["checkpoint"]["error"] == flows[-1]["error"]
    norms = [r["grad_norm"] for r in rows if r["split"] == "train"]
    assert [r["clip_rate"] for r in data["clip_rates"]] == [
        np.mean(np.array(norms[:4]) > 0.05),
        np.mean(np.array(norms[4:]) > 0.05),
    ]
    assert main(["diagnose", str(out)]) == 0
    text = capsys.readouterr().out
    assert "3 flow rows recorded" in text and "clip rate per evaluation" in text
    assert (out / "flow.png").stat().st_size > 10_000
    # rows of the wrong types (a hand-edited metrics.jsonl) are left out, not a traceback
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 9, "split": "train", "grad_norm": "b"}) + "\n")
        f.write(json.dumps({"step": 9, "split": "flow"}) + "\n")
    assert main(["diagnose", str(out), "--data"]) == 0
    assert len(json.load(open(out / "diagnose.json"))["recorded"]) == 3


def test_a_plateau_rule_does_not_make_updates_skips(tmp_path, text_file):
    """reduce_on_plateau's best loss starts at +inf (no evaluation yet); the guard against
    non-finite optimizer states counts only entries that became non-finite, so the updates
    before the first evaluation train, and a NaN that appears is still caught."""
    res = Trainer(small(tmp_path / "p", data=text_file, steps=4, plateau_patience=1)).run()
    rows = [json.loads(ln) for ln in open(tmp_path / "p" / "metrics.jsonl") if '"train"' in ln]
    assert len(rows) == 4 and not any("skipped" in r for r in rows)
    init = res.model.init_params(np.random.default_rng(0), "float64")  # what the run started from (seed 0)
    assert any(not np.array_equal(res.params[k], init[k]) for k in res.params)  # it trained
    from bptt.train.state import _stays_finite

    inf, nan = np.array(np.inf), np.array(np.nan)
    assert _stays_finite({"best": inf}, {"best": inf})
    assert not _stays_finite({"best": inf}, {"best": nan}) and not _stays_finite(
        {"m": np.zeros(2)}, {"m": np.array([0, np.inf])}
    )


def test_a_run_of_epochs_goes_on_with_steps(tmp_path, text_file):
    """--steps on resuming a run of --epochs was ignored (the saved epochs won), and the refusal
    told the user to give --steps."""
    first = Trainer(small(tmp_path / "r", data=text_file, steps=0, epochs=0.02)).run()
    assert first.step > 0
    more = Trainer(resume=str(tmp_path / "r"), overrides={"steps": first.step + 3}).run()
    assert more.step == first.step + 3
    from bptt.errors import BpttError

    with pytest.raises(BpttError, match=rf"give --steps N > {first.step + 3} to train on"):
        Trainer(resume=str(tmp_path / "r"), overrides={"steps": 2})


def test_a_run_saved_with_patience_and_no_validation_resumes_with_patience_0(tmp_path, text_file, monkeypatch):
    """A run saved before the check with --patience and --val-fraction 0 (made here with the
    check off) is refused on resume with a message that names --patience 0, changes nothing in
    the run, and resumes with --patience 0."""
    import bptt.train.trainer as trainer

    run = str(tmp_path / "r")
    common = ["--data", text_file, "--hidden", "8", "--seq-len", "10", "--batch-size", "4", "--no-progress"]
    with monkeypatch.context() as m:
        m.setattr(trainer, "_check_watched", lambda cfg, task: None)
        argv = ["train", *common, "--sample-length", "0", "--val-fraction", "0", "--patience", "2", "--steps", "4"]
        assert main([*argv, "--out", run]) == 0
    before = {f: open(os.path.join(run, f), "rb").read() for f in sorted(os.listdir(run))}
    assert main(["train", "--resume", run, "--steps", "8"]) == 2
    assert {f: open(os.path.join(run, f), "rb").read() for f in sorted(os.listdir(run))} == before
    assert main(["train", "--resume", run, "--steps", "8", "--patience", "0"]) == 0
    assert load_run(run).meta["step"] == 8


def test_a_start_killed_before_its_first_checkpoint_starts_again(tmp_path, text_file):
    """A process killed (os._exit, as kill -9) as it would write the step-0 checkpoint leaves
    none of the run's files, so the same command starts the run again (config.json, written
    before the checkpoint, made the folder refuse both a new start and --resume)."""
    import subprocess
    import sys

    run = str(tmp_path / "r")
    argv = ["train", "--data", text_file, "--hidden", "8", "--seq-len", "10", "--batch-size", "4"]
    argv += ["--no-progress", "--sample-length", "0", "--steps", "4", "--out", run]
    killer = (
        "import os, sys\n"
        "import bptt.train.trainer as t\n"
        "save = t.Trainer._save\n"
        "def _save(self, name, s, best=False):\n"
        "    if name == 'checkpoint.npz' and s.step == 0:\n"
        "        os._exit(9)\n"
        "    save(self, name, s, best)\n"
        "t.Trainer._save = _save\n"
        "from bptt.cli import main\n"
        "main(sys.argv[1:])\n"
    )
    p = subprocess.run([sys.executable, "-c", killer, *argv], capture_output=True, text=True)
    assert p.returncode == 9
    assert not [f for f in os.listdir(run) if f in ("config.json", "metrics.jsonl", "checkpoint.npz", "best.npz")]
    assert main(argv) == 0
    assert load_run(run).meta["step"] == 4
