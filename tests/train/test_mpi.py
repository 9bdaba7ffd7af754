"""Data-parallel training on MPI (bptt.train.dist): `mpiexec -n 2` against one process with the
same global batch, float64, parameters within 1e-12 (relative to each array's largest entry).

One launch of 2 ranks runs every case (a driver calling bptt.cli.main and Trainer); the
references run here, in one process. Skipped, with one line, only where MPI cannot start."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from bptt._version import __version__
from bptt.train import TrainConfig, Trainer
from bptt.train import checkpoint as ckpt

WORDS = "the cat sat on a mat while a dog ran to the big red barn and the bird sang ".split()
MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
ENV = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_", "MPI_", "HYDRA_"))}
ENV.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
TOL = 1e-12

DRIVER = textwrap.dedent(
    """
    import json, sys
    from bptt.cli import main
    from bptt.train import TrainConfig, Trainer

    for job in json.load(open(sys.argv[1])):
        if "cli" in job:
            assert main(job["cli"]) == 0
        elif "resume" in job:
            Trainer(resume=job["resume"], overrides={"steps": job["steps"]}).run()
        else:
            Trainer(TrainConfig(**job["cfg"])).run()
    """
)


def small(data, out, **kw):
    base = dict(
        data=str(data) if data else None,
        hidden=8,
        steps=6,
        eval_every=100,  # (an evaluation at the last step)
        batch_size=4,
        seq_len=10,
        dtype="float64",
        out=str(out),
        progress=False,
        sample_length=0,
        warmup=2,
    )
    base.update(kw)
    for k in [k for k, v in base.items() if v is None]:
        del base[k]
    return base


@pytest.fixture(scope="module")
def mpi():
    """mpiexec of this Python's environment (the `mpich` wheel's), once it has started 2 ranks."""
    if MPIEXEC is None:
        pytest.skip("MPI cannot start: no mpiexec next to this Python or on PATH (pip install 'bptt[mpi]')")
    probe = [MPIEXEC, "-n", "2", sys.executable, "-c", "from mpi4py import MPI; assert MPI.COMM_WORLD.Get_size() == 2"]
    try:
        r = subprocess.run(probe, capture_output=True, text=True, timeout=120, env=ENV)
    except subprocess.TimeoutExpired:
        pytest.skip("MPI cannot start: mpiexec -n 2 did not finish a hello-world in 120 s")
    if r.returncode:
        why = (r.stderr.strip().splitlines() or [f"exit status {r.returncode}"])[-1]
        pytest.skip(f"MPI cannot start: mpiexec -n 2 python (mpi4py) failed: {why}")
    return MPIEXEC


def launch(mpiexec, *args, timeout=300):
    return subprocess.run(
        [mpiexec, "-n", "2", sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=ENV
    )


CONSTANT = dict(schedule="constant", warmup=None)  # (a cosine schedule's length is the run's --steps)
CASES = {  # name: settings beside small()'s
    "tbptt-budget": dict(algorithm="tbptt", k1=5, k2=23, memory_budget="60KB"),
    "artbp": dict(algorithm="artbp", truncation_prob=0.2),
    "rtrl": dict(algorithm="rtrl", hidden=3, steps=2, update_every=10, seq_len=None),
    "adding": dict(task="adding", seq_len=20, cell="gru", algorithm="full"),
    "reber": dict(task="embedded-reber", seq_len=None, cell="elman", batch_size=6),
    "batch": dict(update="batch", steps=3, **CONSTANT),
}
RESUMED = {  # name: (settings, ranks of the first half, ranks of the second)
    "tbptt-2to1": (dict(algorithm="tbptt", k2=25, **CONSTANT), 2, 1),
    "uoro-1to2": (dict(algorithm="uoro", hidden=3, steps=4, update_every=10, seq_len=None, **CONSTANT), 1, 2),
    "eprop-2to1": (
        dict(algorithm="eprop", eprop_feedback="random", hidden=4, steps=4, update_every=10, seq_len=None, **CONSTANT),
        2,
        1,
    ),
}


@pytest.fixture(scope="module")
def runs(mpi, tmp_path_factory):
    """Every case trained by 2 ranks (one launch) and by one process; the resumed cases half by
    each. Returns {name: (folder of the 2-rank or mixed run, folder of the one-process run)}."""
    d = tmp_path_factory.mktemp("mpi")
    rng = np.random.default_rng(0)
    words = d / "words.txt"
    words.write_text(" ".join(rng.choice(WORDS, size=3000)) + "\n")
    short = d / "short.txt"  # --update batch: a pass over these is one update
    short.write_text(" ".join(rng.choice(WORDS, size=120)) + "\n")
    jobs, out, halves = [], {}, {}
    jobs.append({"cli": ["train", *_flags(small(words, d / "full-2"))]})
    out["full"] = (d / "full-2", small(words, d / "full-1"))
    for name, kw in CASES.items():
        data = short if name == "batch" else None if "task" in kw else words
        jobs.append({"cfg": small(data, d / f"{name}-2", **kw)})
        out[name] = (d / f"{name}-2", small(data, d / f"{name}-1", **kw))
    for name, (kw, first, second) in RESUMED.items():
        cfg = small(words, d / f"{name}-mixed", **kw)
        half = dict(cfg, steps=cfg["steps"] // 2)
        if first == 1:
            halves[name] = Trainer(TrainConfig(**half)).run().params
        else:
            jobs.append({"cfg": half})
        if second == 2:
            jobs.append({"resume": half["out"], "steps": cfg["steps"]})
        out[name] = (d / f"{name}-mixed", dict(cfg, out=str(d / f"{name}-1")))
    (d / "jobs.json").write_text(json.dumps(jobs, default=str))
    (d / "driver.py").write_text(DRIVER)
    r = launch(mpi, str(d / "driver.py"), str(d / "jobs.json"))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    for name, (_, _, second) in RESUMED.items():
        if second == 1:
            halves[name] = ckpt.load(os.path.join(out[name][0], "checkpoint.npz")).params
            Trainer(resume=str(out[name][0]), overrides={"steps": out[name][1]["steps"]}).run()
    folders = {}
    for name, (parallel, cfg) in out.items():
        Trainer(TrainConfig(**cfg)).run()
        folders[name] = (str(parallel), cfg["out"])
    return folders, r.stdout, halves


def relative(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


@pytest.mark.parametrize("name", ["full", *CASES, *RESUMED])
def test_two_ranks_reach_the_parameters_of_one_process(runs, name):
    folders, _, halves = runs
    parallel, single = folders[name]
    a, b = ckpt.load(os.path.join(parallel, "checkpoint.npz")), ckpt.load(os.path.join(single, "checkpoint.npz"))
    assert a.meta["step"] == b.meta["step"] > 0
    worst = max(relative(a.params[k], b.params[k]) for k in b.params)
    assert worst <= TOL, f"{name}: parameters differ by {worst:.3g} (relative)"
    if name in halves:  # the second half trained (on the other number of ranks)
        assert max(relative(halves[name][k], b.params[k]) for k in b.params) > 1e-6
    assert sorted(a.opt) == sorted(b.opt)
    assert max(relative(a.opt[k], b.opt[k]) for k in b.opt if b.opt[k].size and b.opt[k].dtype.kind == "f") <= TOL
    assert a.meta["rng"] == b.meta["rng"]  # the same draws, in the same order
    for k, fields in b.state.items():  # the carried state of every stream, gathered by rank 0
        for f, v in fields.items():
            assert a.state[k][f].shape == v.shape and relative(a.state[k][f], v) <= TOL
    assert sorted(a.extra or {}) == sorted(b.extra or {})  # an algorithm's history: every stream's
    for k, v in (b.extra or {}).items():
        assert a.extra[k].shape == v.shape
        if v.dtype.kind == "f" and v.size:
            assert relative(a.extra[k], v) <= 1e-10


@pytest.mark.parametrize("name", ["full", "tbptt-budget", "artbp"])
def test_rank_0_alone_writes_the_folder(runs, name):
    folders, _, _ = runs
    parallel, single = folders[name]
    rows = [json.loads(line) for line in open(os.path.join(parallel, "metrics.jsonl"))]
    ref = [json.loads(line) for line in open(os.path.join(single, "metrics.jsonl"))]
    assert [(r["step"], r["split"]) for r in rows] == [(r["step"], r["split"]) for r in ref]  # each row once
    for r, q in zip(rows, ref):
        assert r["loss"] == pytest.approx(q["loss"], rel=1e-12, abs=1e-12)
    assert sorted(os.listdir(parallel)) == sorted(os.listdir(single))  # no temporary or extra files
    assert json.load(open(os.path.join(parallel, "config.json")))["mpi_ranks"] == 2


def test_rank_0_alone_logs(runs):
    """Every run of the launch (the CLI's and the API's) said its header once, with the split."""
    folders, stdout, _ = runs
    n = len(folders)  # the launch's runs: one per case (the 2-rank half or second half of a resumed one)
    assert stdout.count(f"bptt {__version__} | ") == stdout.count("data-parallel: 2 MPI ranks x ") == n
    assert stdout.count("data-parallel: 2 MPI ranks x 2 streams of the batch of 4 (MPI") >= 1


@pytest.mark.parametrize(
    "kw, said",
    [
        (
            dict(batch_size=5),
            "batch_size: expected a multiple of the 2 MPI ranks (each rank takes batch_size / 2 streams of the "
            "global batch), received 5",
        ),
        (
            dict(task="cue-accumulation", cell="lif", seq_len=None),
            "model: expected a loss whose gradient is a sum over the streams for 2 MPI ranks, received the "
            "firing-rate penalty 'rate' (a function of the whole batch's mean rate); run it in one process",
        ),
    ],
    ids=["batch-does-not-split", "rate-penalty"],
)
def test_what_ranks_cannot_split_is_one_line_and_status_2(mpi, tmp_path, kw, said):
    words = tmp_path / "w.txt"
    words.write_text("the cat sat on the mat " * 100)
    cfg = small(None if "task" in kw else words, tmp_path / "run", **kw)
    r = launch(mpi, "-m", "bptt", "train", *_flags(cfg), timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["bptt train: " + said]
    assert not os.path.exists(tmp_path / "run")


def _flags(cfg):
    return [f"--{k.replace('_', '-')}={v}" for k, v in cfg.items() if k != "progress"] + ["--no-progress"]
