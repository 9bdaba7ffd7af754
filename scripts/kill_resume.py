"""kill -9 at random moments, then resume: every checkpoint left loads, every resumed run ends
bitwise equal to an unbroken one, and no temporary file remains.

    python scripts/kill_resume.py [--kills 20] [--seed 0] [--data FILE]

Three float64 runs (full BPTT, TBPTT with k1 < k2, ARTBP) are trained once unbroken, then again
as separate processes killed with SIGKILL at random moments (uniform over the unbroken run's wall
time) and resumed with `bptt train --resume` until they finish; the kills are spread over the
three. After each kill, every checkpoint in the folder must load; at the end, the parameters, the
optimizer state and the training losses must equal the unbroken run's bit for bit, and no
`.tmp-*` file may be left. Exits 1 on any difference.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

from bptt.train import checkpoint as ckpt

CONFIGS = {
    "full": [],
    "tbptt k1=5 k2=17": ["--algorithm", "tbptt", "--k1", "5", "--k2", "17", "--seq-len", "5"],
    "artbp c=0.1": ["--algorithm", "artbp", "--truncation-prob", "0.1"],
}
STARTUP = 1.0  # seconds from the start of a process to its first step, about (imports, data)
BASE = [
    "--hidden",
    "24",
    "--steps",
    "240",
    "--eval-every",
    "8",
    "--seq-len",
    "10",
    "--batch-size",
    "8",
    "--dtype",
    "float64",
    "--threads",
    "1",
    "--no-progress",
    "--sample-length",
    "0",
    "--cell",
    "gru",
]


def _bptt(args: list[str]) -> subprocess.Popen:
    code = "import sys; from bptt.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def _train_rows(folder: str) -> list[tuple[int, float | None]]:
    rows = []
    for line in open(os.path.join(folder, "metrics.jsonl")):
        r = json.loads(line)
        if r["split"] == "train":
            rows.append((r["step"], r["loss"]))
    return rows


def _same(a: str, b: str) -> str | None:
    ca, cb = ckpt.load(os.path.join(a, "checkpoint.npz")), ckpt.load(os.path.join(b, "checkpoint.npz"))
    for name, x, y in (("params", ca.params, cb.params), ("optimizer state", ca.opt, cb.opt)):
        if x.keys() != y.keys() or any(not np.array_equal(x[k], y[k]) for k in x):
            return f"{name} differ"
    if ca.meta["step"] != cb.meta["step"]:
        return f"steps {ca.meta['step']} and {cb.meta['step']}"
    if _train_rows(a) != _train_rows(b):
        return "training losses differ"
    return None


def _check_loadable(folder: str) -> list[str]:
    bad = []
    for name in ("checkpoint.npz", "best.npz"):
        p = os.path.join(folder, name)
        if os.path.exists(p):
            try:
                ckpt.load(p)
            except Exception as e:  # noqa: BLE001 - reported
                bad.append(f"{name}: {e}")
    return bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", help="text file (default: a generated one)")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    failures = total_kills = 0
    with tempfile.TemporaryDirectory() as d:
        data = args.data
        if not data:
            data = os.path.join(d, "words.txt")
            words = "the cat sat on a mat while a dog ran to the big red barn and the bird sang".split()
            open(data, "w").write(" ".join(rng.choice(words, 6000)))
        names = list(CONFIGS)
        share = [args.kills // len(names) + (i < args.kills % len(names)) for i in range(len(names))]
        for name, kills in zip(names, share):
            extra = ["--data", data, *BASE, *CONFIGS[name]]
            ref = os.path.join(d, f"ref-{names.index(name)}")
            t0 = time.perf_counter()
            p = _bptt(["train", *extra, "--out", ref])
            _, err = p.communicate()
            wall = time.perf_counter() - t0
            assert p.returncode == 0, err
            done_kills, chain = 0, 0
            while done_kills < kills or chain == 0:  # chains of kill and resume until all kills are used
                chain += 1
                out = os.path.join(d, f"killed-{names.index(name)}-{chain}")
                chain_kills, starts = 0, 0
                while True:
                    resume = os.path.exists(os.path.join(out, "checkpoint.npz"))
                    step = ckpt.load(os.path.join(out, "checkpoint.npz")).meta["step"] if resume else 0
                    if step >= 240:  # killed after its last checkpoint (or finished): a resume is refused,
                        if done_kills and chain_kills:  # and cleans what the killed writer left
                            _bptt(["train", "--resume", out]).communicate()
                        break
                    p = _bptt(["train", "--resume", out] if resume else ["train", *extra, "--out", out])
                    starts += 1
                    if done_kills < kills:
                        # a moment anywhere in what is left of the run, its start-up included
                        time.sleep(float(rng.uniform(0.05, STARTUP + (wall - STARTUP) * (1 - step / 240))))
                        if p.poll() is None:
                            os.kill(p.pid, signal.SIGKILL)
                            p.communicate()
                            done_kills += 1
                            chain_kills += 1
                            bad = _check_loadable(out)
                            if bad:
                                failures += 1
                                print(f"  {name}: after a kill: {bad}")
                            continue
                    _, err = p.communicate()
                    if p.returncode != 0:
                        failures += 1
                        print(f"  {name}: exit {p.returncode}: {err.strip()}")
                        break
                temps = [f for f in os.listdir(out) if f.startswith(ckpt.TMP_PREFIX)]
                diff = _same(ref, out)
                ok = diff is None and not temps
                failures += not ok
                print(
                    f"{name}: {chain_kills} kills over {starts} starts (unbroken run {wall:.1f} s): "
                    + (
                        "bitwise equal to the unbroken run, no temp file left"
                        if ok
                        else f"FAILED: {diff or ''} {temps or ''}"
                    ),
                    flush=True,
                )
            total_kills += done_kills
    print(
        f"{total_kills} kills: "
        + ("every checkpoint loaded, every run bitwise equal" if not failures else f"{failures} failures")
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
