"""`bptt train --tensorboard [DIR]`: the event files hold the numbers of metrics.jsonl (float32),
a text sample at each evaluation, no step twice after a resume; without tensorboardX, one line.

The event files are read here on their own (TFRecord framing with its CRCs checked, tensorboardX's
protobuf messages), not through bptt.train.tb's reader."""

import json
import os
import shutil
import signal
import struct
import sys

import numpy as np
import pytest
from tensorboardX.proto.event_pb2 import Event, SessionLog
from tensorboardX.record_writer import masked_crc32c

from bptt.cli import main
from bptt.errors import BpttError
from bptt.generate import sample_text
from bptt.train import TrainConfig, Trainer
from bptt.train.diagnose import clip_rates
from bptt.train.runs import load_run

WORDS = "the cat sat on a mat while a dog ran to the big red barn and the bird sang ".split()
TRAIN_KEYS = ("loss", "lr", "grad_norm", "tokens_per_s")


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    p = tmp_path_factory.mktemp("data") / "words.txt"
    p.write_text(" ".join(rng.choice(WORDS, size=4000)) + "\n")
    return str(p)


@pytest.fixture(scope="module")
def series_file(tmp_path_factory):
    t = np.arange(400)
    p = tmp_path_factory.mktemp("series") / "train.dat"
    np.savetxt(p, np.sin(2 * np.pi * t / 23.0) + 0.5 * np.sin(2 * np.pi * t / 7.0))
    return str(p)


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
        threads=1,
    )
    return TrainConfig(**{**base, **kw})


def records(path):
    """Every record of one event file, each CRC checked; the file must end on a whole record."""
    data, out, i = open(path, "rb").read(), [], 0
    while i < len(data):
        head = data[i : i + 8]
        assert struct.unpack("<I", data[i + 8 : i + 12])[0] == masked_crc32c(head), (path, i)
        (n,) = struct.unpack("<Q", head)
        body = data[i + 12 : i + 12 + n]
        assert len(body) == n and struct.unpack("<I", data[i + 12 + n : i + 16 + n])[0] == masked_crc32c(body)
        out.append(Event.FromString(body))
        i += 16 + n
    return out


def read_dir(folder):
    """(files, [(tag, step, value)] of every summary value: simple_value for scalars, the string
    for text) over all event files, in TensorBoard's order (by name)."""
    names = sorted(n for n in os.listdir(folder) if "tfevents" in n)
    values = []
    for n in names:
        for e in records(os.path.join(folder, n)):
            for v in e.summary.value:
                if v.HasField("tensor"):
                    values.append((v.tag, e.step, v.tensor.string_val[0].decode()))
                else:
                    values.append((v.tag, e.step, v.simple_value))
    return names, values


def expected(rows, clip):
    """What the event files must hold for these metrics.jsonl rows: {(tag, step): float32}."""
    out = {}
    for r in rows:
        if r["split"] == "train":
            for k in TRAIN_KEYS:
                if r.get(k) is not None:
                    out[f"train/{k}", r["step"]] = np.float32(r[k])
        elif r["split"] == "val":
            for k, v in r.items():
                if k not in ("step", "split") and v is not None:
                    out[f"val/{k}", r["step"]] = np.float32(v)
    for c in clip_rates(rows, clip) if clip else []:
        out["train/clip_rate", c["step"]] = np.float32(c["clip_rate"])
    return out


def check_scalars(values, rows, clip):
    scalars = [(tag, step, v) for tag, step, v in values if not isinstance(v, str)]
    pairs = [(tag, step) for tag, step, _ in scalars]
    assert len(pairs) == len(set(pairs)), "a (tag, step) written twice"
    got = {(tag, step): np.float32(v) for tag, step, v in scalars}
    want = expected(rows, clip)
    assert set(got) == set(want)
    for key, v in want.items():
        assert got[key] == v, (key, got[key], v)
    return got


def test_text_run_events_equal_metrics_and_hold_a_sample_per_evaluation(tmp_path, text_file):
    run = tmp_path / "run"
    cfg = small(run, data=text_file, sample_length=40, clip=0.32, tensorboard="{run}/tensorboard")
    res = Trainer(cfg, log=lambda s: None).run()
    assert res.step == 12
    names, values = read_dir(run / "tensorboard")
    assert len(names) == 1 and names[0].endswith(".bptt")
    rows = [json.loads(ln) for ln in open(run / "metrics.jsonl")]
    got = check_scalars(values, rows, 0.32)
    # every figure asked for is there: losses, bits/char, lr, gradient norm, clip rate, tokens/s
    for tag in ("train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s"):
        assert sorted(s for t, s in got if t == tag) == list(range(1, 13)), tag
    for tag in ("val/loss", "val/bpc", "train/clip_rate"):
        assert sorted(s for t, s in got if t == tag) == [4, 8, 12], tag
    rates = [got["train/clip_rate", s] for s in (4, 8, 12)]
    assert any(0 < r < 1 for r in rates), rates  # the threshold cuts through the norms
    texts = [(step, v) for tag, step, v in values if isinstance(v, str)]
    assert [s for s, _ in texts] == [4, 8, 12] and {t for t, _, v in values if isinstance(v, str)} == {
        "sample/text_summary"
    }
    last = load_run(str(run), "last")  # the weights of the last evaluation (step 12)
    want = sample_text(last.model, last.params, last.vocab, length=40, temperature=0.8, rng=np.random.default_rng(0))
    shown = "\n".join(line[4:] for line in texts[-1][1].split("\n"))
    assert shown == want and len(want) == 40


def test_series_run_through_the_command_line_default_folder(tmp_path, series_file, capsys):
    run = tmp_path / "srun"
    argv = ["train", "--task", "series", "--data", series_file, "--hidden", "8", "--steps", "6", "--eval-every", "3"]
    argv += ["--batch-size", "4", "--seq-len", "20", "--no-progress", "--threads", "1", "--out", str(run)]
    assert main(argv + ["--tensorboard"]) == 0
    assert "tensorboard --logdir" in capsys.readouterr().out
    assert json.load(open(run / "config.json"))["config"]["tensorboard"] == "{run}/tensorboard"
    _, values = read_dir(run / "tensorboard")
    rows = [json.loads(ln) for ln in open(run / "metrics.jsonl")]
    got = check_scalars(values, rows, 1.0)
    assert sorted(s for t, s in got if t == "val/nmse") == [3, 6]
    assert not any(isinstance(v, str) for _, _, v in values)  # a series run has no text sample


def test_resume_drops_the_events_after_the_checkpoint_and_writes_no_step_twice(tmp_path, text_file):
    """A run 'killed' at step 12 whose last checkpoint is step 8 (and whose event file ends in a
    torn record): the resumed run writes steps 9-12 again, each once, in a new file that starts
    with TensorBoard's SessionLog START at step 9; the events still equal metrics.jsonl."""
    board = tmp_path / "board"  # outside the run folder: the run's own by its saved config
    kw = dict(data=text_file, sample_length=20, tensorboard=str(board))
    a = Trainer(small(tmp_path / "a", **{**kw, "tensorboard": ""}), log=lambda s: None).run()
    run = tmp_path / "b"
    kept = tmp_path / "checkpoint-step-8.npz"

    def keep_step_8(step, loss):
        if step == 9:  # checkpoint.npz holds step 8 (the evaluation's)
            shutil.copy(run / "checkpoint.npz", kept)

    Trainer(small(run, **kw), log=lambda s: None).run(on_step=keep_step_8)
    shutil.copy(kept, run / "checkpoint.npz")  # as if killed at step 12, after the checkpoint of step 8
    (first,) = [n for n in os.listdir(board) if "tfevents" in n]
    _, before = read_dir(board)
    assert max(step for _, step, _ in before) == 12
    with open(board / first, "ab") as f:
        f.write(struct.pack("<Q", 100) + b"\x00\x00")  # a record torn by the kill
    logged = []
    c = Trainer(resume=str(run), log=logged.append).run()
    assert c.step == 12
    assert any("tensorboard:" in m and "dropped" in m and "after step 8" in m for m in logged), logged
    names, values = read_dir(board)  # every record whole again: the torn one is gone
    assert len(names) == 2 and names[0] == first
    assert max(e.step for e in records(board / first)) == 8
    second = records(board / names[1])
    assert second[0].file_version == "brain.Event:2"
    assert second[1].session_log.status == SessionLog.START and second[1].step == 9
    assert min(e.step for e in second[2:]) == 9
    rows = [json.loads(ln) for ln in open(run / "metrics.jsonl")]
    assert [r["step"] for r in rows if r["split"] == "train"] == list(range(1, 13))
    got = check_scalars(values, rows, 1.0)
    texts = [step for tag, step, v in values if isinstance(v, str)]
    assert texts == [4, 8, 12]
    # the resumed steps are those of an unbroken run (the resume is bitwise)
    unbroken = [json.loads(ln) for ln in open(tmp_path / "a" / "metrics.jsonl")]
    for r in unbroken:
        if r["split"] == "train":
            assert got["train/loss", r["step"]] == np.float32(r["loss"])
    assert a.step == 12


def test_a_new_run_refuses_a_folder_with_event_files(tmp_path, text_file):
    board = tmp_path / "shared"
    Trainer(small(tmp_path / "one", data=text_file, steps=2, eval_every=2, tensorboard=str(board))).run()
    with pytest.raises(BpttError, match="expected a folder without event files"):
        Trainer(small(tmp_path / "two", data=text_file, steps=2, eval_every=2, tensorboard=str(board)))
    assert not (tmp_path / "two").exists()


def test_without_tensorboardX_one_line_and_exit_2_before_anything_is_written(tmp_path, text_file, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # `import tensorboardX` raises ImportError
    toml = tmp_path / "run.toml"
    toml.write_text(f'data = "{text_file}"\nsteps = 2\nhidden = 8\ntensorboard = "{{run}}/tb"\n')
    rc = main(["train", "--config", str(toml), "--out", str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert err.startswith("bptt train: tensorboard: expected the tensorboardX package") and (
        "pip install 'bptt[tensorboard]'" in err
    ), err
    assert not (tmp_path / "r").exists()
    assert main(["train", "--data", text_file, "--out", str(tmp_path / "f"), "--tensorboard", "x"]) == 2
    assert not (tmp_path / "f").exists() and not (tmp_path / "x").exists()


def test_an_interrupted_and_resumed_run_counts_the_clip_rate_across_the_break(tmp_path, text_file):
    """Ctrl-C at step 6 (a checkpoint between evaluations): the resumed run's clip rate at step 8
    counts steps 5-8, as `bptt diagnose` does from metrics.jsonl."""
    run = tmp_path / "i"
    cfg = small(run, data=text_file, clip=0.32, tensorboard="{run}/tensorboard")

    def interrupt_at_6(step, loss):
        if step == 6:
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C

    assert Trainer(cfg, log=lambda s: None).run(on_step=interrupt_at_6).stopped == "interrupted"
    Trainer(resume=str(run), log=lambda s: None).run()
    names, values = read_dir(run / "tensorboard")
    assert len(names) == 2
    rows = [json.loads(ln) for ln in open(run / "metrics.jsonl")]
    got = check_scalars(values, rows, 0.32)
    assert [c["updates"] for c in clip_rates(rows, 0.32)] == [4, 4, 4]
    assert 0 < got["train/clip_rate", 8] < 1
