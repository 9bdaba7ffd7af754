"""The packed product's vector width (8 floats for AVX2, 16 for AVX-512, BPTT_LANES) changes
its tiles, not its sums: products and whole float32 training steps on the split scans are
bitwise the same with either width (each in a process of its own: the width is fixed at import)."""

import os
import subprocess
import sys

import numpy as np
import pytest

SCRIPT = r"""
import sys
import numpy as np
from threadpoolctl import threadpool_limits
import bptt
from bptt.fast import gemm

assert gemm.LANES == int(sys.argv[2]) and gemm.PANEL == (3 if gemm.LANES == 16 else 2) * gemm.LANES
out = {}
rng = np.random.default_rng(0)
for M, K, N in ((32, 128, 256), (7, 33, 70), (1, 5, 3), (16, 40, 96), (9, 300, 33)):  # last panels of 1-3 vectors
    A = rng.standard_normal((M, K)).astype(np.float32)
    B = rng.standard_normal((K, N)).astype(np.float32)
    C = np.zeros((M, N), np.float32)
    gemm.mm_panels(A, gemm.panels(B), C, np.empty((gemm.TILE, gemm.PANEL), np.float32), False)
    out[f"mm{M}x{K}x{N}"] = C
    At = rng.standard_normal((K, M)).astype(np.float32).T  # the blocked product, packed tiles and rows as stored
    for name, a in (("T", At), ("C", A)):
        C = np.zeros((M, N), np.float32)
        gemm.product(a, B, C, False)
        out[f"gemm{name}{M}x{K}x{N}"] = C
with threadpool_limits(2):  # two parts: each part's panels and edges
    for cell, H in (("lstm", 40), ("gru", 72), ("elman", 100)):
        model = bptt.Model(11, [bptt.rnn(cell, H), bptt.Dense(11)], tokens=True)
        params = model.init_params(np.random.default_rng(1), np.float32)
        x, y = rng.integers(0, 11, (25, 6)), rng.integers(0, 11, (25, 6))
        g = bptt.full_bptt(model, params, x, y)
        out[f"{cell}.loss"] = np.array(g.loss)
        for k, v in g.grads.items():
            out[f"{cell}.{k}"] = v
np.savez(sys.argv[1], **out)
"""


@pytest.mark.skipif(os.environ.get("BPTT_FAST") == "0", reason="the compiled kernels are off (BPTT_FAST=0)")
def test_sixteen_lanes_are_bitwise_the_eight(tmp_path):
    res = {}
    for lanes in ("8", "16"):
        path = tmp_path / f"lanes{lanes}.npz"
        env = dict(os.environ, BPTT_LANES=lanes)
        subprocess.run([sys.executable, "-c", SCRIPT, str(path), lanes], check=True, env=env, timeout=600)
        with np.load(path) as z:
            res[lanes] = {k: z[k] for k in z.files}
    assert res["8"].keys() == res["16"].keys() and len(res["8"]) > 10
    for k in res["8"]:
        np.testing.assert_array_equal(res["16"][k], res["8"][k], err_msg=k)
    ref = res["8"]["mm32x128x256"]
    assert np.isfinite(ref).all() and np.abs(ref).max() > 1  # a real product, not zeros


@pytest.mark.parametrize(
    "var,value,expected",
    [("BPTT_LANES", "7", "8 or 16"), ("BPTT_LANES", "abc", "8 or 16"), ("BPTT_GEMM", "fastest", "own, blas or auto")],
)
def test_a_bad_setting_is_one_line_not_kernels_silently_off(var, value, expected, tmp_path):
    """BPTT_LANES other than 8 or 16, BPTT_GEMM other than own, blas or auto: the first float32
    step raises one BpttError (a bad BPTT_LANES left the kernels off for the process, silently,
    on an ImportError), and bptt train refuses before any run folder is made."""
    env = {**os.environ, var: value, "OPENBLAS_NUM_THREADS": "1"}
    env.pop("BPTT_FAST", None)
    code = (
        "import numpy as np, bptt\n"
        "m = bptt.Model(3, [bptt.rnn('lstm', 4), bptt.Dense(2)], loss='mse'); p = m.init_params(0, np.float32)\n"
        "x = np.zeros((3, 2, 3), np.float32)\n"
        "for _ in range(2):\n"
        "    try:\n"
        "        bptt.full_bptt(m, p, x, x[..., :2])\n"
        "    except bptt.BpttError as e:\n"
        "        print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    line = f"{var}: expected {expected}, received {value!r}"
    assert out.stdout.splitlines() == [line, line], (
        out.stdout + out.stderr
    )  # (every step, not the kernels off after one)
    run = tmp_path / "run"
    cli = [sys.executable, "-m", "bptt", "train", "--hidden", "8", "--steps", "2", "--out", str(run)]
    res = subprocess.run(cli, env=env, capture_output=True, text=True)
    assert res.returncode == 2 and f"{var}: expected {expected}" in res.stderr and not run.exists(), res.stderr
