"""The compiled float32 kernels (bptt.fast) against the NumPy reference: elementwise functions,
steps, whole scans (and their consumed backward, with one weight product) against the Python
time loops, whole models against NumPy float32 and float64."""

import os
import subprocess
import sys

import numpy as np
import pytest

import bptt
import bptt.fast.blas
from bptt import fast, full_bptt, ops
from bptt.algorithms import TBPTTStream, randomized_bptt
from bptt.algorithms.randomized import truncation_factors
from bptt.cells import make_cell
from bptt.diagnostics import random_problem, relative_error, standard_cases
from bptt.fast import rows
from bptt.fast.cells import StepCaches, implementation
from bptt.scan import scan_backward, scan_forward

needs_numba = pytest.mark.skipif(not fast.available()["kernels"], reason="numba is not installed")
CELLS = ["elman", "gru", "lstm"]


@needs_numba
def test_tanh32_is_float32_accurate():
    x = np.concatenate([np.linspace(-12, 12, 400_001), [0.0, 1e-30, -1e-30, 1e-6, 50.0, -50.0, 1e30]])
    x = x.astype(np.float32)
    y = np.empty_like(x)
    rows.tanh_(x, y)
    ref = np.tanh(x.astype(np.float64))
    err = np.abs(y - ref)
    assert err.max() <= 4e-7  # a few float32 ulp of 1
    small = np.abs(x) < 1e-3
    assert (err[small] <= 4e-7 * np.abs(ref[small]) + 1e-37).all()  # relative near 0
    assert (y[x == 0] == 0).all()
    assert np.array_equal(np.sign(y), np.sign(x))


@needs_numba
def test_exp32_is_float32_accurate():
    x = np.concatenate([np.linspace(-87, 0, 400_001), -np.logspace(-30, 1.9, 2001), [0.0, -1e-30]]).astype(np.float32)
    y = np.empty_like(x)
    rows.exp_(x, y)
    ref = np.exp(x.astype(np.float64))
    assert (np.abs(y / ref - 1) <= 3e-7).all(), np.abs(y / ref - 1).max()
    assert (y[x == 0] == 1).all()
    far = np.array([-87.5, -100.0, -1e4, -np.inf], np.float32)  # clamped: exp(-87), nothing beside a 1
    out = np.empty_like(far)
    rows.exp_(far, out)
    assert ((out > 0) & (out <= 2e-38)).all()


@needs_numba
@pytest.mark.parametrize("spread", [0.1, 3.0, 300.0])
@pytest.mark.parametrize("where", ["every", "mask", "last"])
def test_softmax_xent_kernel_equals_numpy(spread, where):
    """The compiled float32 cross-entropy == NumPy's float32 path == float64, to float32
    rounding, with flat and very peaked logits, masks and last-step losses."""
    from bptt.losses import Loss

    rng = np.random.default_rng(7)
    T, B, K = 9, 6, 13
    y = (spread * rng.standard_normal((T, B, K))).astype(np.float32)
    y[0, 0, 3] = y[0, 0].max() + 80.0  # a row whose other probabilities underflow
    mask = rng.random((T, B)) < 0.7 if where == "mask" else None
    if mask is not None:
        mask[0] = True
    loss = Loss("ce", at="last" if where == "last" else "every")
    t = rng.integers(0, K, size=(B,) if where == "last" else (T, B))
    t[..., 0] = 3
    with fast.use(True):
        l32, d32 = loss.value_and_grad(y, t, mask)
        v32 = loss.value(y, t, mask)
    with fast.use(False):
        lnp, dnp = loss.value_and_grad(y, t, mask)
    l64, d64 = loss.value_and_grad(y.astype(np.float64), t, mask)
    assert d32.dtype == np.float32 and d32.shape == y.shape
    assert v32 == l32
    for got in (l32, lnp):
        assert abs(got - l64) <= 1e-6 * max(1.0, abs(l64))
    n = 1.0 / np.abs(d64).max()  # the gradients are O(1/N)
    assert np.abs(d32 - d64).max() * n <= 1e-6
    assert np.abs(dnp - d64).max() * n <= 1e-6
    if mask is not None:
        assert (d32[~mask] == 0).all()


@needs_numba
@pytest.mark.parametrize("K", [1, 15, 16, 17, 33, 65, 100, 1000])
def test_softmax_xent_rows_of_every_width(K):
    """The kernel's row maximum (running maxima, folded in halves) is the maximum wherever it
    lies (first place, in a block, in the remainder): the loss and gradients are a plain
    maximum's: float64's to float32 rounding."""
    rng = np.random.default_rng(K)
    N = 40
    y = (3.0 * rng.standard_normal((N, K))).astype(np.float32)
    for n in range(N):  # the largest logit at places from the first to the last, some far above the rest
        y[n, round(n * (K - 1) / (N - 1))] = y[n].max() + (50.0 if n % 3 == 0 else 0.5)
    t = rng.integers(0, K, N)
    d = np.empty_like(y)
    total = rows.softmax_xent(y, t, np.float32(0.25), d)
    y64 = y.astype(np.float64)
    l64 = np.log(np.exp(y64 - y64.max(1, keepdims=True)).sum(1)) + y64.max(1) - y64[np.arange(N), t]
    assert abs(total - l64.sum()) <= 1e-6 * abs(l64.sum())
    p64 = np.exp(y64 - y64.max(1, keepdims=True))
    p64 /= p64.sum(1, keepdims=True)
    p64[np.arange(N), t] -= 1.0
    assert np.abs(d - 0.25 * p64).max() <= 1e-6  # (a wrong maximum: exp clamped at 0, far off)


@needs_numba
@pytest.mark.parametrize("at", [0, 7, 16, 40, 64])
def test_softmax_xent_keeps_nan_and_inf_anywhere_in_a_wide_row(at):
    y = np.zeros((3, 65), np.float32)
    y[0, at], y[1, at], y[2, at] = np.nan, np.inf, -np.inf
    t = np.array([3, 3, 3])
    d = np.empty_like(y)
    assert np.isnan(rows.softmax_xent(y[:1], t[:1], np.float32(1), d[:1])) and np.isnan(d[0]).all()
    assert np.isnan(rows.softmax_xent(y[1:2], t[1:2], np.float32(1), d[1:2]))  # inf - inf
    assert np.isfinite(rows.softmax_xent(y[2:], t[2:], np.float32(1), d[2:]))  # exp(-inf) = 0


def _step_inputs(kind, B=5, H=7, D=4, seed=0):
    rng = np.random.default_rng(seed)
    cell = make_cell(kind, D, H)
    p = {k: v.astype(np.float32) for k, v in cell.init_params(rng).items()}
    for k in p:
        p[k] += rng.uniform(-0.5, 0.5, p[k].shape).astype(np.float32)  # non-zero biases, larger weights
    state = cell.State(*(rng.standard_normal((B, n)).astype(np.float32) for n in cell.state_sizes().values()))
    xp = (2 * rng.standard_normal((B, cell.gates * H))).astype(np.float32)
    dstate = cell.State(*(rng.standard_normal((B, n)).astype(np.float32) for n in cell.state_sizes().values()))
    dout = rng.standard_normal((B, H)).astype(np.float32)
    return cell, p, state, xp, dstate, dout


def _close(a, b, tol=2e-6):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert np.abs(a - b).max() <= tol * max(1.0, np.abs(b).max()), np.abs(a - b).max()


@pytest.mark.parametrize("t", [1, 2, 1000])
def test_adam_in_one_pass_gives_numpys_numbers_bit_for_bit(t):
    """ops.adam on the kernels (one pass in float32) equals the NumPy expressions bit for bit:
    gradients over 20 orders of magnitude, zeros, a NaN and infinities among them."""
    import math

    fast.load()
    rng = np.random.default_rng(t)
    g = (rng.standard_normal(5000) * 10.0 ** rng.uniform(-12, 8, 5000)).astype(np.float32)
    g[:4] = [0.0, np.nan, np.inf, -np.inf]
    mu = rng.standard_normal(5000).astype(np.float32)
    nu = np.abs(rng.standard_normal(5000) * 10.0 ** rng.uniform(-10, 4, 5000)).astype(np.float32)
    b1, b2, eps = 0.9, 0.999, 1e-8
    c1, c2 = 1.0 / (1.0 - b1**t), 1.0 / math.sqrt(1.0 - b2**t)
    assert ops.adam is not ops.DEFAULTS["adam"]
    for shape in [(5000,), (100, 50)]:
        args = [a.reshape(shape) for a in (g, mu, nu)]
        got = ops.adam(*args, b1, b2, c1, c2, eps)
        with np.errstate(invalid="ignore"):  # (inf / inf: NaN, as the kernel gives silently)
            want = ops.DEFAULTS["adam"](*args, b1, b2, c1, c2, eps)
        for a, b in zip(got, want):
            assert a.dtype == np.float32 and a.shape == shape
            np.testing.assert_array_equal(a, b)


@needs_numba
@pytest.mark.parametrize("kind", CELLS)
def test_kernel_step_equals_numpy_step(kind):
    """One forward and backward step on the kernels == the cell's own NumPy step."""
    cell, p, state, xp, dstate, dout = _step_inputs(kind)
    impl = implementation(cell, np.float32)
    assert impl is not cell and implementation(cell, np.float64) is cell
    out = {}
    for name, run in (("kernels", impl), ("numpy", cell)):
        new, y, cache = run.step(p, state, xp)
        grads = {k: np.zeros_like(v) for k, v in p.items()}
        dprev, dxp = run.step_back(p, cache, dstate, dout, grads)
        out[name] = (new, y, dprev, dxp, grads)
    (n1, y1, d1, x1, g1), (n0, y0, d0, x0, g0) = out["kernels"], out["numpy"]
    for a, b in zip(n1 + (y1,) + d1 + (x1,), n0 + (y0,) + d0 + (x0,)):
        assert a.dtype == np.float32
        _close(a, b)
    for k in g0:
        _close(g1[k], g0[k])


@needs_numba
@pytest.mark.parametrize("H", [1, 5, 7, 8, 9, 15, 16, 64, 131])
def test_lstm_cells_in_one_pass_equal_the_gate_by_gate_pass_in_place(H):
    """The split scans' one-pass LSTM cells (gates into their own arrays) and the step kernels'
    gate-by-gate pass (gates over the product) give the same gates and c bit for bit, and h
    within 4 ulp: with the kernels' fast-math flags the compiler may contract h = o tanh(c)
    differently in the two loops' vector remainders (seen on AMD Zen 4: up to 2 ulp at H = 5 ..
    15, the same bits at 1 .. 3 and 16 and up; H = 7 gave the same bits on an Intel Xeon)."""
    import numba as nb

    from bptt.fast.jit import FLAGS
    from bptt.fast.rows import _lstm_cells, _lstm_cells_inplace

    @nb.njit(fastmath=FLAGS, error_model="numpy")
    def both(x, a, cp, w, c1, h1, c2, h2):
        n = cp.shape[0]
        xi, xf, xg, xo = x[:n], x[n : 2 * n], x[2 * n : 3 * n], x[3 * n :]
        ai, af, ag, ao = a[:n], a[n : 2 * n], a[2 * n : 3 * n], a[3 * n :]
        _lstm_cells(xi, xf, xg, xo, ai, af, ag, ao, w[:n], w[n : 2 * n], w[2 * n : 3 * n], w[3 * n :], cp, c1, h1)
        _lstm_cells_inplace(xi, xf, xg, xo, ai, af, ag, ao, cp, c2, h2)

    rng = np.random.default_rng(H)
    x, a = (rng.normal(0, 4, 4 * H).astype(np.float32) for _ in range(2))
    cp = rng.normal(0, 2, H).astype(np.float32)
    w, c1, h1, c2, h2 = np.empty(4 * H, np.float32), *(np.empty(H, np.float32) for _ in range(4))
    gates = a.copy()
    both(x, gates, cp, w, c1, h1, c2, h2)
    assert np.array_equal(w, gates) and np.array_equal(c1, c2)
    assert np.abs(h1.view(np.int32).astype(np.int64) - h2.view(np.int32)).max() <= 4  # (same signs: |h| < 1)
    assert not np.array_equal(gates, a)  # (the gates were written over the product)


def test_a_users_subclass_keeps_its_own_math():
    from bptt.cells.lstm import LSTM

    class MyLSTM(LSTM):
        pass

    assert implementation(MyLSTM(3, 4), np.float32).__class__ is MyLSTM
    assert implementation(make_cell("elman", 3, 4, activation="relu"), np.float32).__class__.__name__ == "Elman"


@needs_numba
@pytest.mark.parametrize(
    "case",
    [c for c in standard_cases() if c.cell in CELLS and c.loss == "ce" and c.at == "every"],
    ids=lambda c: c.name,
)
def test_float32_kernels_equal_float32_numpy_and_float64(case):
    """Whole gradients (masks, stacks, bidirectional): compiled float32, with the compiled time
    loops and with Python loops over the step kernels, == NumPy float32 to float32 rounding,
    and all match float64."""
    model = case.build()
    p = random_problem(model, np.random.default_rng(3), masked=case.masked)
    p64 = full_bptt(model, p.params, p.x, p.targets, mask=p.mask, state0=p.state0)
    p32 = {k: v.astype(np.float32) for k, v in p.params.items()}
    x32 = p.x if p.x.dtype.kind == "i" else p.x.astype(np.float32)
    s32 = {k: type(s)(*(a.astype(np.float32) for a in s)) for k, s in p.state0.items()}
    res = {}
    for mode, on, scans in (("numpy", False, False), ("steps", True, False), ("scans", True, True)):
        with fast.use(on, scans=scans):
            res[mode] = full_bptt(model, p32, x32, p.targets, mask=p.mask, state0=s32)
    for mode in ("steps", "scans"):
        for k in p64.grads:
            assert res[mode].grads[k].dtype == np.float32
            assert relative_error(res[mode].grads[k], res["numpy"].grads[k]) < 2e-5, (mode, k)
            assert relative_error(res[mode].grads[k], p64.grads[k]) < 1e-4, (mode, k)
        for k in p64.dstate0:
            for a, b in zip(res[mode].dstate0[k], res["numpy"].dstate0[k]):
                _close(a, b, 2e-5)
        assert res[mode].loss == pytest.approx(p64.loss, rel=1e-5)


@pytest.mark.parametrize("case", [c for c in standard_cases() if c.cell in CELLS], ids=lambda c: c.name)
def test_full_bptt_leaves_its_float64_tapes_reusable(case):
    """float64 (the reference): full BPTT's gradients == a backward over the same tapes, twice
    (the reference backward never writes into a tape)."""
    model = case.build()
    p = random_problem(model, np.random.default_rng(4), masked=case.masked)
    g = full_bptt(model, p.params, p.x, p.targets, mask=p.mask, state0=p.state0)
    b = model.check_batch(p.params, p.x, p.targets, p.mask, p.state0)
    y, _, tapes = model.forward_levels(p.params, b.x, b.mask, b.state0, keep=True)
    _, dy = model.loss_fn.value_and_grad(y, b.targets, b.mask)
    for _ in range(2):
        grads = model.zero_grads(p.params)
        dstate0 = model.backward_levels(p.params, tapes, dy, None, grads)
        model.add_init_grads(grads, dstate0, b.given)
        for k in grads:
            np.testing.assert_allclose(g.grads[k], grads[k], rtol=1e-11, atol=1e-14, err_msg=k)
        for k in dstate0:
            for a, c in zip(g.dstate0[k], dstate0[k]):
                np.testing.assert_allclose(a, c, rtol=1e-11, atol=1e-14)


@pytest.mark.skipif(not fast.available()["scans"], reason="no compiled scans")
def test_consumed_compiled_tape_is_released():
    cell = make_cell("lstm", 3, 4)
    rng = np.random.default_rng(0)
    p = {k: v.astype(np.float32) for k, v in cell.init_params(rng).items()}
    xp = rng.standard_normal((6, 2, 16)).astype(np.float32)
    _, _, tape = scan_forward(cell, p, xp, cell.zero_state(2, np.float32))
    work = tape.aux[0]
    assert work.shape == (6, 2, 16) and all(c is not None for c in tape.caches)
    grads = {k: np.zeros_like(v) for k, v in p.items()}
    dxp, _ = scan_backward(
        cell,
        p,
        tape,
        rng.standard_normal((6, 2, 4)).astype(np.float32),
        cell.zero_state(2, np.float32),
        grads,
        consume=True,
    )
    assert all(c is None for c in tape.caches)
    assert np.shares_memory(dxp, work)  # the gradients live where the gates were


LAYOUTS = {  # rows of index_sums as the cells pass them, and others
    "contiguous": lambda a: a[:, :6].copy(),
    "first columns of wider rows (GRU's dxp)": lambda a: a[:, :6],
    "inner columns of wider rows": lambda a: a[:, 3:9],
    "every other column": lambda a: a[:, ::2][:, :6],
    "transposed": lambda a: np.asfortranarray(a[:, :6]),
    "rows reversed": lambda a: a[::-1, 2:8],
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scatter_add_equals_add_at(dtype, layout):
    rng = np.random.default_rng(1)
    idx = rng.integers(0, 9, 500)
    rows = LAYOUTS[layout](rng.standard_normal((500, 13)).astype(dtype))
    for on in (True, False):
        with fast.use(on):
            got = np.ones((6, 9), dtype).T  # a transposed view, as the cells pass it
            got += ops.index_sums(idx, rows, 9)
        ref = np.ones((9, 6), dtype)
        np.add.at(ref, idx, rows)
        np.testing.assert_allclose(
            got, ref, rtol=1e-4 if dtype == np.float32 else 1e-12, atol=1e-5 if dtype == np.float32 else 0
        )


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("n", [0, 1, 500])
def test_add_column_sums_equals_numpy(layout, n):
    from bptt.fast import rows as kernels

    rng = np.random.default_rng(2)
    rows = LAYOUTS[layout](rng.standard_normal((n, 13)).astype(np.float32))
    out = rng.standard_normal(8).astype(np.float32)[1:7]  # a contiguous view, as a bias gradient's block
    ref = out + rows.sum(axis=0)
    kernels.add_column_sums(out, rows)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_environment_switches_fast_off():
    """BPTT_FAST=0: the NumPy reference everywhere (bptt.ops keeps its defaults)."""
    code = (
        "import numpy as np, bptt; from bptt import ops; "
        "m = bptt.Model(3, [bptt.rnn('lstm', 4), bptt.Dense(2)]); "
        "print(bptt.fast.kernels_on(), ops.current() == ops.DEFAULTS)"
    )
    for var in ("BPTT_FAST", "BPTT_KERNELS"):
        env = {k: v for k, v in os.environ.items() if k not in ("BPTT_FAST", "BPTT_KERNELS")}
        env[var] = "0"
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.split() == ["False", "True"], (var, out.stdout)


def test_kernels_leave_float64_exact_path_alone(monkeypatch):
    """float64 steps must not reach the compiled kernels (they would be float32-accurate)."""
    if not fast.available()["kernels"]:
        pytest.skip("numba is not installed")

    def boom(*a, **k):
        raise AssertionError("float64 reached a float32 kernel")

    for name in ("lstm_fwd", "lstm_bwd", "gru_fwd", "gru_bwd", "elman_fwd", "elman_bwd"):
        monkeypatch.setattr(rows, name, boom)
    case = next(c for c in standard_cases() if c.cell == "lstm")
    model = case.build()
    p = random_problem(model, np.random.default_rng(0), masked=case.masked)
    full_bptt(model, p.params, p.x, p.targets, mask=p.mask, state0=p.state0)
    m = bptt.Model(5, [bptt.Recurrent("gru", 4), bptt.Recurrent("elman", 3), bptt.Dense(5)], tokens=True)
    params = m.init_params(0)
    full_bptt(m, params, np.zeros((3, 2), int), np.zeros((3, 2), int))


# ---- compiled whole scans ---------------------------------------------------------------------

needs_scans = pytest.mark.skipif(
    not fast.available()["scans"], reason="no compiled scans (numba or NumPy's OpenBLAS missing)"
)


def test_scans_found_with_numpys_openblas():
    """Where NumPy ships its ILP64 OpenBLAS (PyPI wheels), the whole scans must be on."""
    blas = np.__config__.CONFIG.get("Build Dependencies", {}).get("blas", {})
    if not (fast.available()["kernels"] and blas.get("name") == "scipy-openblas"):
        pytest.skip(f"NumPy's BLAS is {blas.get('name')!r}")
    assert bptt.fast.blas.find_sgemm() is not None
    assert fast.available()["scans"] and fast.scans_on()


def _scan_problem(kind, tokens, T=7, B=3, H=5, D=4, seed=0):
    cell, p, _, _, _, _ = _step_inputs(kind, B, H, D, seed)
    rng = np.random.default_rng(seed + 1)
    state = cell.State(*(rng.standard_normal((B, n)).astype(np.float32) for n in cell.state_sizes().values()))
    x = rng.integers(0, D, (T, B)) if tokens else rng.standard_normal((T, B, D)).astype(np.float32)
    return cell, p, state, cell.project(p, x)


@needs_scans
@pytest.mark.parametrize("tokens", [False, True], ids=["dense", "tokens"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("kind", CELLS)
def test_compiled_scan_equals_step_loop(kind, reverse, tokens):
    """Forward (outputs, final state, every cache) and consumed backward (dxp, W_hh/b_hh grads,
    initial-state gradient) of the compiled scan == the Python time loop over the same kernels."""
    cell, p, state, xp = _scan_problem(kind, tokens)
    T, B = xp.shape[:2]
    rng = np.random.default_rng(9)
    douts = rng.standard_normal((T, B, cell.hidden_size)).astype(np.float32)
    dT = cell.State(*(rng.standard_normal(a.shape).astype(np.float32) for a in state))
    res = {}
    for scans in (True, False):
        with fast.use(True, scans=scans):
            outs, final, tape = scan_forward(cell, p, xp, state, reverse=reverse)
            assert (tape.aux is not None) == scans
            caches = [tuple(np.array(a) for a in c) for c in tape.caches]
            grads = {k: np.zeros_like(v) for k, v in p.items()}
            dxp, d0 = scan_backward(cell, p, tape, douts, dT, grads, consume=True)
            assert all(c is None for c in tape.caches) == scans  # a compiled tape is consumed
            res[scans] = (outs, final, caches, np.array(dxp), d0, grads)
    (o1, f1, c1, x1, d1, g1), (o0, f0, c0, x0, d0, g0) = res[True], res[False]
    _close(o1, o0)
    for a, b in zip(f1 + d1, f0 + d0):
        assert a.dtype == np.float32
        _close(a, b)
    for a, b in zip(c1, c0):
        for u, v in zip(a, b):
            _close(u, v)
    _close(x1, x0)
    for k in g0:
        _close(g1[k], g0[k])


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_the_weight_gradient_pairs_each_step_with_the_state_before_it(reverse):
    """_prev_pairs: for every range of steps a .. b-1, the pairs cover each step once, with the
    output of the step before it in the scan's order (h0 for its first step)."""
    from bptt.fast.cells import _prev_pairs

    T, B = 6, 2
    work = np.arange(T, dtype=np.float32)[:, None, None] + np.zeros((T, B, 3), np.float32)  # step t holds t
    outs = 100 + work[..., :2]  # the output of step t holds 100 + t
    h0 = np.full((B, 2), -1.0, np.float32)
    for a in range(T):
        for b in range(a + 1, T + 1):
            seen = {}
            for w, h in _prev_pairs(work, outs, h0, reverse, a, b):
                assert w.shape[:2] == h.shape[:2]
                for wt, ht in zip(w, h):
                    seen[int(wt[0, 0])] = float(ht[0, 0])
            first = T - 1 if reverse else 0
            want = {t: -1.0 if t == first else 100.0 + (t + 1 if reverse else t - 1) for t in range(a, b)}
            assert seen == want, (a, b)


@needs_scans
@pytest.mark.parametrize("kind", CELLS)
def test_a_consumed_backward_scan_makes_no_copy_of_the_states(kind, monkeypatch):
    """The weight gradient reads h_{t-1} where the forward scan left it: the consumed backward
    scan asks the pool for no (T, B, H) array."""
    from bptt.fast import pool

    cell, p, state, xp = _scan_problem(kind, True, T=40, B=4, H=64)
    T, B, H = xp.shape[0], xp.shape[1], cell.hidden_size
    douts = np.random.default_rng(5).standard_normal((T, B, H)).astype(np.float32)
    asked = []
    empty = pool.buffers.empty

    def record(shape, dtype):
        asked.append(tuple(shape))
        return empty(shape, dtype)

    with fast.use(True, scans=True):
        _, _, tape = scan_forward(cell, p, xp, state)
        monkeypatch.setattr(pool.buffers, "empty", record)
        grads = {k: np.zeros_like(v) for k, v in p.items()}
        scan_backward(cell, p, tape, douts, cell.zero_state(B, np.float32), grads, consume=True)
    assert (T, B, H) not in asked and all(np.isfinite(g).all() for g in grads.values())


@needs_scans
@pytest.mark.parametrize("kind", CELLS)
def test_compiled_scan_tapes_serve_truncated_and_randomized_backward(kind):
    """Tapes of compiled scans read step by step (TBPTT k1 < k2) and consumed with scaled
    messages (randomized truncation) give the gradients of the Python loops."""
    model = bptt.Model(6, [bptt.Recurrent(kind, 5), bptt.Dense(6)], tokens=True)
    params = model.init_params(np.random.default_rng(2), np.float32)
    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 6, (12, 3)), rng.integers(0, 6, (12, 3))
    factors = truncation_factors(12, 3, 0.2, np.random.default_rng(4))
    res = {}
    for scans in (True, False):
        with fast.use(True, scans=scans):
            algo = TBPTTStream(model, 4, 7)
            tb = [algo(params, x[t : t + 4], y[t : t + 4]).grads for t in range(0, 12, 4)]
            rb = randomized_bptt(model, params, x, y, 0.2, None, factors=factors).grads
            res[scans] = tb + [rb]
    for a, b in zip(res[True], res[False]):
        for k in a:
            assert relative_error(a[k], b[k]) < 2e-5, k


@needs_scans
def test_step_caches_read_like_a_list():
    cell, p, state, xp = _scan_problem("lstm", True, T=5)
    _, _, tape = scan_forward(cell, p, xp, state)
    caches = tape.caches
    assert isinstance(caches, StepCaches) and len(caches) == 5
    np.testing.assert_array_equal(caches[0].h_prev, state.h)
    np.testing.assert_array_equal(caches[-1].c_prev, caches[3].c)
    assert [c.gates.shape for c in caches[1:3]] == [(3, 20), (3, 20)] and len(list(caches)) == 5
    with pytest.raises(IndexError):
        caches[5]
    caches.release()
    assert all(c is None for c in caches)


def test_environment_keeps_step_kernels_without_scans():
    code = "import bptt; print(bptt.fast.kernels_on(), bptt.fast.scans_on())"
    env = dict(os.environ, BPTT_FAST="steps")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False"]


def test_softmax_xent_rejects_class_ids_out_of_range():
    from bptt.losses import Loss

    y = np.zeros((3, 2, 4), np.float32)
    for bad in (4, -1):
        t = np.zeros((3, 2), np.int64)
        t[1, 1] = bad
        for on in (True, False):
            with fast.use(on), pytest.raises(ValueError, match="class ids"):
                Loss("ce").value_and_grad(y, t, None)


def test_float64_never_loads_the_kernels_and_import_loads_nothing():
    code = (
        "import sys, numpy as np, bptt; print('numba' in sys.modules, bptt.ops.matmul.__module__); "
        "m = bptt.Model(3, [bptt.rnn('lstm', 4), bptt.Dense(2)], loss='mse'); p = m.init_params(0); "
        "x = np.zeros((5, 2, 3)); bptt.full_bptt(m, p, x, np.zeros((5, 2, 2))); "
        "print('kernels' in bptt.fast._state, bptt.ops.matmul.__module__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "bptt.ops", "False", "bptt.fast.pool"], out.stdout


@needs_numba
def test_an_interrupted_first_load_of_the_kernels_is_tried_again():
    """Ctrl-C during the first compile (KeyboardInterrupt out of warm.ensure) reaches the
    caller, and the next float32 step loads the kernels: they are not left off for the process."""
    code = (
        "import numpy as np, bptt; from bptt import fast; from bptt.fast import warm; real = warm.ensure\n"
        "def once(*a, **k):\n"
        "    warm.ensure = real\n"
        "    raise KeyboardInterrupt\n"
        "warm.ensure = once\n"
        "m = bptt.Model(3, [bptt.rnn('lstm', 4), bptt.Dense(2)], loss='mse'); p = m.init_params(0, np.float32)\n"
        "x, y = np.zeros((5, 2, 3), np.float32), np.zeros((5, 2, 2), np.float32)\n"
        "try:\n"
        "    bptt.full_bptt(m, p, x, y)\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted')\n"
        "bptt.full_bptt(m, p, x, y); print(fast.available()['kernels'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["interrupted", "True"], out.stdout + out.stderr


@needs_numba
@pytest.mark.parametrize("kind", ["elman", "gru", "lstm", "lif"])
@pytest.mark.parametrize("bad", ["xp", "state", "douts", "dstate", "tokens"])
def test_the_compiled_scans_refuse_what_they_would_read_or_write_outside(kind, bad):
    """A compiled scan works by address: a projection of another width, a state or state
    gradient of another shape, output gradients of another shape, or a token past the table
    read or wrote outside the arrays (garbage, or the process ended). Each is now one BpttError
    before the scan runs."""
    H, B, T, D = 8, 2, 4, 3
    cell = make_cell(kind, D, H)
    p = cell.init_params(np.random.default_rng(0), np.float32)
    rng = np.random.default_rng(1)
    s = cell.zero_state(B, np.float32)
    with fast.use(True):
        if bad == "tokens":
            from bptt.cells.base import TokenRows

            table = rng.standard_normal((5, cell.gates * H)).astype(np.float32)
            with pytest.raises(bptt.BpttError, match=r"x: expected token ids in \[0, 5\), received ids from 0 to 9"):
                bptt.scan_forward(cell, p, TokenRows(table, np.array([[0, 9]] * T)), s)
            return
        xp = cell.project(p, rng.standard_normal((T, B, D)).astype(np.float32))
        if bad == "xp":
            with pytest.raises(bptt.BpttError, match="xp: expected"):
                bptt.scan_forward(cell, p, xp[..., : cell.gates * H // 2], s)
            return
        if bad == "state":
            wrong = type(s)(*(np.zeros((B, H - 3), np.float32) for _ in s))
            with pytest.raises(bptt.BpttError, match=r"state\.\w+: expected shape"):
                bptt.scan_forward(cell, p, xp, wrong)
            return
        _, _, tape = bptt.scan_forward(cell, p, xp, s)
        g = {k: np.zeros_like(v) for k, v in p.items()}
        douts = np.zeros((T, B, H - 3 if bad == "douts" else H), np.float32)
        dT = type(s)(*(np.zeros((B, H - 3 if bad == "dstate" else H), np.float32) for _ in s))
        with pytest.raises(bptt.BpttError, match=f"{bad}"):
            bptt.scan_backward(cell, p, tape, douts, dT, g, consume=True)
