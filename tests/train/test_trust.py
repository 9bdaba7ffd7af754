"""Files from outside are data, never code; a run folder has one writer; a diverging run never
saves NaN weights or a NaN "best"; leftovers of a killed run are cleaned up."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from bptt.cli import main
from bptt.errors import BpttError
from bptt.train import TrainConfig, Trainer
from bptt.train import checkpoint as ckpt
from bptt.train.lock import RunLock
from bptt.train.runs import load_run

WORDS = "the cat sat on a mat while a dog ran to the big red barn and the bird sang ".split()
QUIET = dict(log=lambda s: None)


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("data") / "words.txt"
    p.write_text(" ".join(np.random.default_rng(0).choice(WORDS, size=3000)) + "\n")
    return str(p)


def small(out, data, **kw):
    base = dict(
        data=data,
        hidden=12,
        steps=8,
        eval_every=4,
        batch_size=4,
        seq_len=10,
        dtype="float64",
        out=str(out),
        progress=False,
        sample_length=0,
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def tbptt_run(tmp_path_factory, text_file):
    """A run whose checkpoint holds TBPTT's window history (k1 < k2): bptt classes by name."""
    out = tmp_path_factory.mktemp("runs") / "tb"
    Trainer(small(out, text_file, algorithm="tbptt", k1=5, k2=12, cell="gru"), **QUIET).run()
    return str(out)


def read_arrays(path):
    return ckpt._read_npz(path)


def write_checkpoint(path, arrays, meta, fix_checksum=True):
    """What an attacker can do: any arrays, any record, a checksum that matches them."""
    old_sum = arrays.get("checksum")
    arrays = {k: v for k, v in arrays.items() if k not in ("meta", "checksum")}
    meta_json = json.dumps(meta)
    if fix_checksum:
        arrays["checksum"] = np.array(ckpt.checksum(meta_json, arrays))
    elif old_sum is not None:
        arrays["checksum"] = old_sum
    arrays["meta"] = np.array(meta_json)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def snapshot(folder):
    out = {}
    for root, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(root, f)
            st = os.stat(p)
            out[os.path.relpath(p, folder)] = (st.st_size, st.st_mtime_ns, open(p, "rb").read())
    return out


def _copy_run(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return str(dst)


# ---- loading runs nothing a file names -----------------------------------------------------------
PAYLOADS = {
    "os.system via a bptt module": lambda marker: {"nt": "bptt.train.checkpoint:os.system", "f": [f"touch {marker}"]},
    "os.system": lambda marker: {"nt": "os:system", "f": [f"touch {marker}"]},
    "builtins.eval": lambda marker: {"nt": "builtins:eval", "f": [f"open({str(marker)!r}, 'w')"]},
    "builtins.exec via a stack": lambda marker: {"stack": "builtins:exec", "n": 2, "f": [None]},
    "importlib path": lambda marker: {"nt": "importlib:import_module", "f": ["antigravity"]},
    "subprocess via bptt.cli": lambda marker: {"nt": "bptt.cli:os.system", "f": [f"touch {marker}"]},
}


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_crafted_class_names_are_refused_and_run_nothing(tmp_path, tbptt_run, name, capsys):
    run = _copy_run(tbptt_run, tmp_path / "run")
    path = os.path.join(run, "checkpoint.npz")
    arrays = read_arrays(path)
    meta = json.loads(str(arrays["meta"]))
    marker = tmp_path / "PWNED"
    assert "tbptt_history" in meta
    meta["tbptt_history"]["d"]["history"]["l"][0] = PAYLOADS[name](marker)
    write_checkpoint(path, arrays, meta)
    before = snapshot(run)
    assert main(["train", "--resume", run, "--steps", "12"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "expected" in err and "received" in err, err
    assert not marker.exists()
    assert snapshot(run) == before
    with pytest.raises(BpttError):
        Trainer(resume=run, overrides={"steps": 12}, **QUIET)
    assert not marker.exists()


def test_object_arrays_and_other_dtypes_are_never_loaded(tmp_path, tbptt_run):
    run = _copy_run(tbptt_run, tmp_path / "run")
    path = os.path.join(run, "checkpoint.npz")
    good = read_arrays(path)
    meta = json.loads(str(good["meta"]))

    class Boom:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'PWNED'}",))

    for _name, arr in [
        ("pickle", np.array([Boom()], dtype=object)),
        ("structured", np.zeros(2, "i4,f8")),
        ("text", np.array(["x", "y"])),
        ("complex", np.zeros(2, complex)),
    ]:
        arrays = dict(good)
        arrays["param/gru0.W_hh"] = arr
        with open(path, "wb") as f:
            arrays2 = {k: v for k, v in arrays.items() if k not in ("meta", "checksum")}
            np.savez(f, meta=np.array(json.dumps(meta)), checksum=np.array("0" * 64), **arrays2)
        with pytest.raises(BpttError, match="expected arrays of booleans, integers or floats|expected a numeric array"):
            ckpt.load(path)
    assert not (tmp_path / "PWNED").exists()


def test_format_version_and_checksum_are_checked(tmp_path, tbptt_run):
    run = _copy_run(tbptt_run, tmp_path / "run")
    path = os.path.join(run, "checkpoint.npz")
    arrays = read_arrays(path)
    meta = json.loads(str(arrays["meta"]))
    write_checkpoint(path, arrays, dict(meta, format="bptt-checkpoint-9"))
    with pytest.raises(BpttError, match="format: expected 'bptt-checkpoint-2', received 'bptt-checkpoint-9'"):
        ckpt.load(path)
    write_checkpoint(path, arrays, dict(meta, step=3), fix_checksum=False)  # a changed record, the old checksum
    with pytest.raises(BpttError, match="do not match its checksum"):
        ckpt.load(path)
    changed = dict(arrays)
    changed["param/gru0.W_hh"] = arrays["param/gru0.W_hh"] + 1e-12
    write_checkpoint(path, changed, meta, fix_checksum=False)
    with pytest.raises(BpttError, match="do not match its checksum"):
        ckpt.load(path)


def test_a_checkpoint_of_format_1_still_loads(tmp_path, tbptt_run):
    """bptt 0.1's checkpoints (no checksum, class names by module path) load through the same
    registry and continue bitwise."""
    run = _copy_run(tbptt_run, tmp_path / "run")
    path = os.path.join(run, "checkpoint.npz")
    arrays = read_arrays(path)
    meta = json.loads(str(arrays["meta"]))
    old = {k: v for k, v in arrays.items() if k != "checksum"}
    old["meta"] = np.array(json.dumps(dict(meta, format="bptt-checkpoint-1")))
    with open(path, "wb") as f:
        np.savez(f, **old)
    c = ckpt.load(path)
    assert c.meta["format"] == "bptt-checkpoint-1" and c.meta["step"] == 8


def test_mutated_checkpoints_never_load_as_valid(tbptt_run):
    """Reduced form of scripts/mutate_checkpoints.py (10,000 there): random byte changes,
    insertions, deletions and truncations of a valid checkpoint either raise bptt's error or load
    exactly the original content (a change in a part of the zip nobody reads)."""
    from fuzzing import mutate_and_load

    counts = mutate_and_load(os.path.join(tbptt_run, "checkpoint.npz"), n=300, seed=0)
    assert counts["other_exception"] == 0 and counts["loaded_changed"] == 0, counts
    assert counts["refused"] >= 250, counts


# ---- one writer per run folder -------------------------------------------------------------------
def test_a_second_trainer_on_the_same_folder_is_refused(tmp_path, text_file):
    first = Trainer(small(tmp_path / "r", text_file), **QUIET)
    with pytest.raises(
        BpttError, match=r"--out: expected a run folder no other process is writing, received .*held by"
    ):
        Trainer(small(tmp_path / "r", text_file, hidden=20), **QUIET)
    res = first.run()
    assert res.stopped == "done" and res.step == 8
    assert load_run(str(tmp_path / "r")).cfg.hidden == 12  # the first is unharmed
    with pytest.raises(BpttError, match="run: expected a Trainer that has not run"):
        first.run()


def _start_writer(folder, data, steps=400):
    code = "import sys; from bptt.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            code,
            "train",
            "--data",
            data,
            "--hidden",
            "12",
            "--steps",
            str(steps),
            "--eval-every",
            "50",
            "--seq-len",
            "10",
            "--batch-size",
            "4",
            "--dtype",
            "float64",
            "--no-progress",
            "--sample-length",
            "0",
            "--out",
            folder,
            "--threads",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_lock_record(folder, proc, timeout=60):
    t0 = time.time()
    while time.time() - t0 < timeout:
        p = os.path.join(folder, ".lock")
        if os.path.exists(p) and open(p).read().strip() and os.path.exists(os.path.join(folder, "checkpoint.npz")):
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("the writer did not start")


def test_a_second_process_is_told_who_holds_the_folder(tmp_path, text_file, capsys):
    folder = str(tmp_path / "r")
    proc = _start_writer(folder, text_file)
    try:
        _wait_for_lock_record(folder, proc)
        assert main(["train", "--data", text_file, "--hidden", "30", "--out", folder, "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert f"held by pid {proc.pid}" in err and err.count("\n") == 1, err
        assert main(["train", "--resume", folder, "--steps", "1000"]) == 2
        assert f"held by pid {proc.pid}" in capsys.readouterr().err
    finally:
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    run = load_run(folder, "last")
    assert run.cfg.hidden == 12 and json.load(open(os.path.join(folder, "config.json")))["config"]["hidden"] == 12
    steps = [json.loads(ln)["step"] for ln in open(os.path.join(folder, "metrics.jsonl")) if '"train"' in ln]
    assert steps == list(range(1, 401))


def test_the_lock_of_a_killed_run_is_free_and_its_temp_files_go(tmp_path, text_file):
    folder = str(tmp_path / "r")
    proc = _start_writer(folder, text_file, steps=100000)
    _wait_for_lock_record(folder, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    stale = os.path.join(folder, ".tmp-abc123checkpoint.npz")
    open(stale, "wb").write(b"half")
    keep = os.path.join(folder, ".tmp-notes.txt")  # not a file of the run's: left alone
    open(keep, "w").write("mine")
    logs = []
    res = Trainer(resume=folder, overrides={"steps": 1000000}, log=logs.append)
    res.cfg.max_seconds = 0.5
    res.run()
    assert not os.path.exists(stale) and os.path.exists(keep)
    assert any("removed 1 temporary file" in s for s in logs), logs


def test_a_run_killed_after_its_last_checkpoint_is_cleaned_by_a_refused_resume(tmp_path, text_file, capsys):
    """Killed while writing its final plot (after the last checkpoint), a run leaves a temp
    file; `bptt train --resume` then refuses to train further (nothing left to do) but, holding
    the lock, removes what the killed writer left."""
    folder = tmp_path / "r"
    Trainer(small(folder, text_file), **QUIET).run()
    stale = folder / ".tmp-k3y9loss.png"
    stale.write_bytes(b"half a png")
    assert main(["train", "--resume", str(folder), "--no-progress"]) == 2
    assert "expected more than the" in capsys.readouterr().err and not stale.exists()


def test_a_torn_metrics_line_is_dropped_on_resume(tmp_path, text_file):
    folder = tmp_path / "r"
    Trainer(small(folder, text_file), **QUIET).run()
    with open(folder / "metrics.jsonl", "ab") as f:
        f.write(b'{"step": 9, "split": "tr')
    logs = []
    Trainer(resume=str(folder), overrides={"steps": 12}, log=logs.append).run()
    rows = [json.loads(ln) for ln in open(folder / "metrics.jsonl")]
    assert [r["step"] for r in rows if r["split"] == "train"] == list(range(1, 13))
    assert any("dropped 1 torn line" in s for s in logs), logs


# ---- divergence --------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_huge_learning_rate_stops_with_the_last_good_checkpoint_intact(tmp_path, text_file, capsys, dtype, optimizer):
    folder = str(tmp_path / "r")
    rc = main(
        [
            "train",
            "--data",
            text_file,
            "--hidden",
            "12",
            "--steps",
            "80",
            "--eval-every",
            "10",
            "--seq-len",
            "10",
            "--batch-size",
            "4",
            "--no-progress",
            "--sample-length",
            "0",
            "--out",
            folder,
            "--lr",
            "1e6",
            "--dtype",
            dtype,
            "--optimizer",
            optimizer,
            "--clip",
            "0",
            "--schedule",
            "constant",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 1
    assert "training diverged" in out and "the last good checkpoint is" in out, out
    c = ckpt.load(os.path.join(folder, "checkpoint.npz"))
    assert all(np.isfinite(v).all() for v in c.params.values())
    if os.path.exists(os.path.join(folder, "best.npz")):
        b = ckpt.load(os.path.join(folder, "best.npz"))
        assert math.isfinite(b.meta["trackers"]["best"]["loss"])
    # the run can go on from there with a sane rate
    assert main(["train", "--resume", folder, "--lr", "0.003", "--steps", str(c.meta["step"] + 10)]) == 0


def test_nan_weights_never_become_best_or_checkpoint(tmp_path, text_file, monkeypatch):
    """Updates that would leave NaN weights are dropped: the weights stay those before them."""
    import bptt.train.trainer as tr

    real = tr.optim.apply_updates
    calls = {"n": 0}

    def poisoned(params, updates):
        calls["n"] += 1
        out = real(params, updates)
        if calls["n"] >= 5:
            out = {k: v * np.nan for k, v in out.items()}
        return out

    monkeypatch.setattr(tr.optim, "apply_updates", poisoned)
    logs = []
    res = Trainer(small(tmp_path / "n", text_file, steps=40, eval_every=4, diverge_after=6), log=logs.append).run()
    assert res.stopped == "diverged" and res.step == 10 and res.extra["skipped"] == 6
    assert any("non-finite weights after the update" in s for s in logs)
    for name in ("checkpoint.npz", "best.npz"):
        c = ckpt.load(str(tmp_path / "n" / name))
        assert all(np.isfinite(v).all() for v in c.params.values()) and c.meta["step"] == 4
    rows = [json.loads(ln) for ln in open(tmp_path / "n" / "metrics.jsonl")]
    assert [r.get("skipped") is not None for r in rows if r["split"] == "train"] == [False] * 4 + [True] * 6


def test_a_nan_validation_loss_is_never_best(tmp_path, text_file, monkeypatch):
    import bptt.train.tasks as tasks

    monkeypatch.setattr(
        tasks.TextTask, "evaluate", lambda self, m, p: {"loss": math.nan, "bpc": math.nan, "ppl": math.nan}
    )
    res = Trainer(small(tmp_path / "v", text_file), **QUIET).run()
    assert res.best is None and not os.path.exists(tmp_path / "v" / "best.npz")
    rows = [json.loads(ln) for ln in open(tmp_path / "v" / "metrics.jsonl") if '"val"' in ln]
    assert rows and all(r["loss"] is None for r in rows)


def test_resuming_from_a_checkpoint_with_nan_weights_is_refused(tmp_path, text_file, capsys):
    folder = tmp_path / "r"
    Trainer(small(folder, text_file), **QUIET).run()
    path = str(folder / "checkpoint.npz")
    arrays = read_arrays(path)
    meta = json.loads(str(arrays["meta"]))
    arrays["param/lstm0.W_hh"] = arrays["param/lstm0.W_hh"] * np.nan
    write_checkpoint(path, arrays, meta)
    for argv in (
        ["train", "--resume", str(folder), "--steps", "20"],
        ["sample", str(folder), "--checkpoint", "last"],
        ["evaluate", str(folder), "--data", text_file, "--checkpoint", "last"],
    ):
        assert main(argv) == 2
        assert "param/lstm0.W_hh: expected finite floats, received NaN or inf" in capsys.readouterr().err


def test_every_user_mistake_can_show_its_traceback_with_debug(tmp_path):
    with pytest.raises(BpttError, match="hidden: expected a positive integer"):
        main(["train", "--hidden", "0", "--debug"])
    with pytest.raises(BpttError):
        main(["sample", str(tmp_path / "none"), "--debug"])


def test_lock_records_its_holder(tmp_path):
    lock = RunLock(str(tmp_path)).acquire()
    lock.record()
    d = json.load(open(tmp_path / ".lock"))
    assert d["pid"] == os.getpid() and d["started"]
    with pytest.raises(BpttError, match=f"held by pid {os.getpid()}"):
        RunLock(str(tmp_path)).acquire()
    lock.release()
    RunLock(str(tmp_path)).acquire().release()


def test_a_checkpoint_written_by_bptt_0_1_resumes_bitwise(tmp_path):
    """tests/train/data/tbptt-0.1-checkpoint.npz was written by bptt 0.1 (format 1, TBPTT(5, 12)
    with its window history, the tape class under its old module path, float64 GRU, 8 steps):
    today's code trains the same 8 steps to the same parameters (to float64 rounding: 1e-12),
    and the old checkpoint loads and resumes (its window history included). The old run had
    BPTT_KERNELS=numpy."""
    import shutil

    here = os.path.join(os.path.dirname(__file__), "data")
    words = str(tmp_path / "words.txt")
    shutil.copy(os.path.join(here, "tbptt-0.1-words.txt"), words)
    run = tmp_path / "old"
    run.mkdir()
    arrays = read_arrays(os.path.join(here, "tbptt-0.1-checkpoint.npz"))
    meta = json.loads(str(arrays.pop("meta")))
    assert meta["format"] == "bptt-checkpoint-1" and "bptt.algorithms.scan:Tape" in json.dumps(meta["tbptt_history"])
    meta["config"]["data"] = words  # (format 1 has no checksum: the record may be edited)
    meta["config"]["out"] = str(run)
    from bptt import fast

    with fast.use(False):  # as the old run (BPTT_KERNELS=numpy: token gradients summed by NumPy)
        fresh = Trainer(TrainConfig(**dict(meta["config"], out=str(tmp_path / "new"))), **QUIET).run()
    # float64 sums and products round by the CPU's vector width (NumPy's and OpenBLAS's kernels
    # are chosen per CPU: on an AVX-512 machine 11 of gru0.W_ih's 384 entries differ in the last
    # bit), so across machines the same 8 steps agree to rounding; resumes on one machine are
    # checked bitwise elsewhere (kill -9 tests)
    for k in fresh.params:
        np.testing.assert_allclose(fresh.params[k], arrays[f"param/{k}"], rtol=1e-12, atol=1e-15, err_msg=k)
    with open(run / "checkpoint.npz", "wb") as f:
        np.savez(f, meta=np.array(json.dumps(meta)), **arrays)
    logs = []
    resumed = Trainer(resume=str(run), overrides={"steps": 12}, log=logs.append).run()
    assert resumed.step == 12 and all(np.isfinite(v).all() for v in resumed.params.values())
    assert any("resumed at step 8" in s for s in logs)
