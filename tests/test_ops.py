"""bptt.ops: the math floor's open operations, their NumPy defaults, and installing others."""

import numpy as np
import pytest

from bptt import ops


@pytest.mark.parametrize("V,N", [(7, 50), (65, 3200), (3, 1), (4, 0)])
def test_index_sums_equals_add_at(V, N):
    rng = np.random.default_rng(0)
    idx = rng.integers(0, V, N)
    rows = rng.standard_normal((N, 5))
    ref = np.zeros((V, 5))
    np.add.at(ref, idx, rows)
    np.testing.assert_allclose(ops.DEFAULTS["index_sums"](idx, rows, V), ref, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(ops.index_sums(idx, rows, V), ref, rtol=1e-13, atol=1e-13)  # whatever is installed


def test_installed_restores_what_was_there():
    calls = []

    def counting_matmul(a, b):
        calls.append(a.shape)
        return a @ b

    before = ops.current()
    with ops.installed({"matmul": counting_matmul}):
        assert ops.matmul(np.ones((2, 3)), np.ones((3, 4))).shape == (2, 4)
    assert calls == [(2, 3)] and ops.current() == before
    with ops.installed(ops.DEFAULTS):
        assert ops.current() == ops.DEFAULTS
    with pytest.raises(ValueError, match="expected names among"):
        ops.install(matmull=counting_matmul)


def test_the_reference_runs_without_anything_installed():
    """With the defaults, a float32 LSTM step is the cells' NumPy code: equal to a float64 run
    to float32 rounding, and its cell runs as itself."""
    import bptt

    model = bptt.Model(7, [bptt.rnn("lstm", 12), bptt.Dense(7)], tokens=True)
    p64 = model.init_params(np.random.default_rng(0), np.float64)
    p32 = {k: v.astype(np.float32) for k, v in p64.items()}
    x = np.random.default_rng(1).integers(0, 7, (9, 3))
    with ops.installed(ops.DEFAULTS):
        cell = model.recurrent_levels[0].directions[0].cell
        assert ops.implementation(cell, np.float32) is cell
        g32 = bptt.full_bptt(model, p32, x, x)
    g64 = bptt.full_bptt(model, p64, x, x)
    for k in g64.grads:
        np.testing.assert_allclose(g32.grads[k], g64.grads[k], rtol=1e-4, atol=1e-6)


def test_a_direct_load_stays_installed_after_the_first_use():
    """bptt.fast.load() called directly (as fast.available() does), then ops' first use: the
    faster operations stay installed (the first use put the defaults back and the load did
    nothing more: every later step ran NumPy's code)."""
    import subprocess
    import sys

    code = (
        "import bptt.fast as fast\nfrom bptt import ops\nfast.load()\nops.current()\n"
        "print(ops.adam is ops.DEFAULTS['adam'], ops.matmul is ops.DEFAULTS['matmul'])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"], out.stdout + out.stderr
