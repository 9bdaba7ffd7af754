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

assert gemm.LANES == int(sys.argv[2]) and gemm.PANEL == 2 * gemm.LANES
out = {}
rng = np.random.default_rng(0)
for M, K, N in ((32, 128, 256), (7, 33, 70), (1, 5, 3)):
    A = rng.standard_normal((M, K)).astype(np.float32)
    B = rng.standard_normal((K, N)).astype(np.float32)
    C = np.zeros((M, N), np.float32)
    gemm.mm_panels(A, gemm.panels(B), C, np.empty((gemm.TILE, gemm.PANEL), np.float32), False)
    out[f"mm{M}x{K}x{N}"] = C
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
