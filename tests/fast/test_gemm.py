"""bptt's blocked product (bptt.fast.gemm.gemm), used for a step's big float32 products where
NumPy's BLAS runs narrower vectors than the CPU has (machine.own_products): equal to float64
products for every layout and edge, rows independent of each other (a split by rows or columns
is bitwise the whole), and whole float32 gradients through it equal to NumPy's."""

import os
import subprocess
import sys

import numpy as np
import pytest

from bptt import fast, full_bptt, machine
from bptt.diagnostics import random_problem, relative_error, standard_cases
from bptt.fast import engine, pool

needs_scans = pytest.mark.skipif(
    fast.OFF or not fast.available()["scans"], reason="no compiled scans (BPTT_FAST=0, or numba or OpenBLAS missing)"
)
f4 = np.float32


def _layouts(rng, M, K):
    """A (M, K) as stored: C order, a transposed array, a column slice of a wider one."""
    return {
        "C": rng.standard_normal((M, K)).astype(f4),
        "T": rng.standard_normal((K, M)).astype(f4).T,
        "slice": rng.standard_normal((M, K + 3)).astype(f4)[:, 2 : K + 2],
    }


@needs_scans
@pytest.mark.parametrize(
    "M,K,N",
    [
        (1, 1, 1),
        (3, 5, 2),
        (8, 256, 32),
        (9, 257, 33),
        (37, 300, 45),
        (130, 600, 65),
        (257, 40, 100),
        (5, 0, 7),
        (40, 300, 64),
        (17, 200, 128),
    ],
)
def test_blocked_product_equals_float64(M, K, N):
    """Tiles of 8 (or 4 with 8 lanes), 4 and 1 rows, packed tiles with their last rows cut,
    partial panels (last panels of 1 and 2 vectors written directly, as stored and packed),
    more than one KC block and MC block; written and added; the columns around a strided
    result untouched."""
    from bptt.fast import gemm

    rng = np.random.default_rng(M * 1000 + K + N)
    Bs = {"C": rng.standard_normal((K, N)).astype(f4), "T": rng.standard_normal((N, K)).astype(f4).T}
    for an, A in _layouts(rng, M, K).items():
        for bn, B in Bs.items():
            ref = A.astype(np.float64) @ B.astype(np.float64)
            scale = max(1.0, np.abs(A).max(initial=0) * np.abs(B).max(initial=0) * np.sqrt(max(K, 1)))
            C = np.full((M, N + 5), np.nan, f4)[:, 2 : N + 2]
            gemm.product(A, B, C, False)
            assert np.abs(C - ref).max() <= 2e-6 * scale, (an, bn)
            C0 = C.copy()
            gemm.product(A, B, C, True)
            assert np.abs(C - (C0 + ref)).max() <= 4e-6 * scale, (an, bn)
            assert np.isnan(C.base[:, :2]).all() and np.isnan(C.base[:, N + 2 :]).all()


@needs_scans
def test_rows_and_columns_do_not_depend_on_the_others():
    """Each element is its own fused multiply-adds over k in order: a block of rows or of
    columns is bitwise the same block of the whole product (what a split between threads
    relies on)."""
    from bptt.fast import gemm

    rng = np.random.default_rng(5)
    A, B = rng.standard_normal((600, 131)).astype(f4).T, rng.standard_normal((600, 77)).astype(f4)
    whole = np.empty((131, 77), f4)
    gemm.product(A, B, whole, False)
    for rows in (slice(0, 13), slice(13, 131), slice(64, 72)):
        part = np.empty((rows.stop - rows.start, 77), f4)
        gemm.product(A[rows], B, part, False)
        np.testing.assert_array_equal(part, whole[rows])
    part = np.empty((131, 40), f4)
    gemm.product(A, B[:, 37:], part, False)
    np.testing.assert_array_equal(part, whole[:, 37:])


@pytest.fixture
def own_products(monkeypatch):
    """Every float32 product of a step through bptt's kernel, counted."""
    from functools import partial

    from bptt.fast import gemm

    fast.load()
    calls = []
    product = partial(gemm.product, empty=pool.empty)
    monkeypatch.setattr(pool, "own_gemm", lambda *a: calls.append(a[0].shape) or product(*a))
    monkeypatch.setattr(pool, "OWN_MACS", 0)
    return calls


@needs_scans
@pytest.mark.parametrize("P", [1, 2])
def test_pool_products_through_the_own_kernel(own_products, P, monkeypatch):
    """pool.matmul and pool.matmul_add in the own kernel, split between P parts by rows (or by
    columns where the rows are fewer than a tile a part): equal to NumPy's, bitwise the
    unsplit product."""
    monkeypatch.setattr(engine, "SPLIT_MACS", 0)
    rng = np.random.default_rng(P)
    for M, K, N in ((300, 70, 90), (6, 300, 200)):
        a = rng.standard_normal((K, M)).astype(f4).T
        b = rng.standard_normal((K, N)).astype(f4)
        out0 = rng.standard_normal((M, N)).astype(f4)
        with engine.split(P):
            got = pool.matmul(a, b).copy()
            out = out0.copy()
            pool.matmul_add(a, b, out)
        whole = np.empty((M, N), f4)
        from bptt.fast import gemm

        gemm.product(a, b, whole, False)
        np.testing.assert_array_equal(got, whole)
        want = out0 + a.astype(np.float64) @ b.astype(np.float64)
        assert np.abs(out - want).max() <= 1e-5 * np.abs(want).max()
    assert len(own_products) >= 4 * P  # (every product, in every part, went through it)


@needs_scans
def test_read_only_and_odd_layouts(own_products):
    """Read-only factors (a memory map opened for reading, a broadcast view) go through the own
    kernel; rows whose stride is not whole floats go to NumPy (the kernel's leading dimensions
    are in floats), and every result is the product."""
    rng = np.random.default_rng(7)
    M, K, N = 64, 128, 160
    a, b = rng.standard_normal((M, K)).astype(f4), rng.standard_normal((K, N)).astype(f4)
    want = a.astype(np.float64) @ b.astype(np.float64)
    ra, rb = a.copy(), np.broadcast_to(b[:1], (K, N))
    ra.flags.writeable = False
    np.testing.assert_allclose(pool.matmul(ra, b), want, rtol=0, atol=1e-4 * np.abs(want).max())
    got = np.zeros((M, N), f4)
    pool.matmul_add(a, rb, got)
    np.testing.assert_allclose(got, a @ rb, rtol=0, atol=1e-4 * np.abs(want).max())
    assert len(own_products) == 2
    raw = np.zeros(M * (K * 4 + 2), np.uint8)  # (rows 2 bytes apart from whole floats, unaligned)
    odd = np.ndarray((M, K), f4, buffer=raw, strides=(K * 4 + 2, 4))
    odd[:] = a
    np.testing.assert_allclose(pool.matmul(odd, b), want, rtol=0, atol=1e-4 * np.abs(want).max())
    raw = np.zeros(M * (N * 4 + 2), np.uint8)
    out = np.ndarray((M, N), f4, buffer=raw, strides=(N * 4 + 2, 4))
    out[:] = 0
    pool.matmul_add(a, b, out)  # (out += a @ b: the product in the own kernel, the sum in NumPy)
    np.testing.assert_allclose(out, want, rtol=0, atol=1e-4 * np.abs(want).max())
    assert len(own_products) == 3


@needs_scans
def test_read_only_inputs_train(own_products):
    """A read-only batch (np.load with mmap_mode='r' gives one) through the own products."""
    import bptt

    model = bptt.Model(16, [bptt.rnn("lstm", 32), bptt.Dense(16)], loss="mse")
    params = model.init_params(np.random.default_rng(0), np.float32)
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((20, 8, 16)).astype(f4), rng.standard_normal((20, 8, 16)).astype(f4)
    x.flags.writeable = False
    got = full_bptt(model, params, x, y)
    assert own_products
    with fast.use(False):
        ref = full_bptt(model, params, x, y)
    for k in ref.grads:
        assert relative_error(got.grads[k], ref.grads[k]) < 2e-5, k


@needs_scans
@pytest.mark.parametrize(
    "case",
    [c for c in standard_cases() if c.cell in ("elman", "gru", "lstm") and c.loss == "ce" and c.at == "every"][:6],
    ids=lambda c: c.name,
)
def test_whole_gradients_with_the_own_products_equal_numpys(case, own_products):
    """Full BPTT in float32 with every big product in bptt's kernel == NumPy float32 to float32
    rounding, and float64."""
    model = case.build()
    p = random_problem(model, np.random.default_rng(3), masked=case.masked)
    p64 = full_bptt(model, p.params, p.x, p.targets, mask=p.mask, state0=p.state0)
    p32 = {k: v.astype(f4) for k, v in p.params.items()}
    x32 = p.x if p.x.dtype.kind == "i" else p.x.astype(f4)
    s32 = {k: type(s)(*(a.astype(f4) for a in s)) for k, s in p.state0.items()}
    with fast.use(False):
        ref = full_bptt(model, p32, x32, p.targets, mask=p.mask, state0=s32)
    assert not own_products
    got = full_bptt(model, p32, x32, p.targets, mask=p.mask, state0=s32)
    assert own_products  # (the products went through it)
    for k in p64.grads:
        assert got.grads[k].dtype == f4
        assert relative_error(got.grads[k], ref.grads[k]) < 2e-5, k
        assert relative_error(got.grads[k], p64.grads[k]) < 1e-4, k
    assert got.loss == pytest.approx(p64.loss, rel=1e-5)


@pytest.mark.parametrize(
    "env,family,lanes,want",
    [
        ("", "haswell", 16, True),
        ("auto", "zen", 16, True),
        ("", "skylakex", 16, False),
        ("", "sapphirerapids", 16, False),
        ("", "haswell", 8, False),
        ("", None, 16, False),
        ("own", "skylakex", 8, True),
        ("", "haswell", 16, "AVX2"),  # (BPTT_LANES=16 on an AVX2 CPU: Haswell's kernels are its own)
        ("blas", "haswell", 16, False),
        ("", "haswell", 16, "Zen 4"),  # (AVX-512 on 256-bit units: Haswell's kernels are as wide)
        ("own", "haswell", 16, "Zen 4 own"),
    ],
)
def test_own_products_where_the_blas_runs_narrower_vectors(monkeypatch, env, family, lanes, want):
    monkeypatch.delenv("BPTT_FAST", raising=False)
    monkeypatch.delenv("BPTT_KERNELS", raising=False)
    monkeypatch.setenv("BPTT_GEMM", env)
    monkeypatch.setattr(machine, "_numpy_blas_family", lambda: family)
    monkeypatch.setattr(machine, "lanes", lambda: lanes)
    isa = want if want == "AVX2" else "AVX-512"
    monkeypatch.setattr(machine, "vector_isa", lambda: isa)
    zen4 = isinstance(want, str) and want.startswith("Zen 4")
    cpu = {"vendor_id": "AuthenticAMD", "cpu family": "25" if zen4 else "26"}
    monkeypatch.setattr(machine, "_cpuinfo", lambda: cpu)
    assert machine.avx512_on_256_bit_units() is zen4
    want = want == "Zen 4 own" if zen4 else want
    want = False if isinstance(want, str) else want
    assert machine.own_products() is want
    monkeypatch.setenv("BPTT_FAST", "0")  # (the kernels off: NumPy's BLAS, whatever is asked)
    assert machine.own_products() is False


def test_numpys_openblas_family_is_found():
    family = machine._numpy_blas_family()
    assert family is None or family.isalnum() and family == family.lower()


@pytest.mark.skipif(os.environ.get("BPTT_FAST") == "0", reason="the compiled kernels are off (BPTT_FAST=0)")
def test_the_pin_chooses_the_own_products_and_the_bench_header_says_so():
    """Under OPENBLAS_CORETYPE=Haswell on a CPU with full-width AVX-512 units the products go to
    bptt's kernel (on AMD Zen 4, NumPy's BLAS), and the bench header names which code ran them."""
    code = (
        "from bptt.bench.harness import _kernels_line\nfrom bptt.fast import pool\n"
        "line = _kernels_line()\nprint(pool.own_gemm is not None)\nprint(line)"
    )
    env = {**os.environ, "OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_NUM_THREADS": "1"}
    env.pop("BPTT_GEMM", None)
    env.pop("BPTT_LANES", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    own, line = out.stdout.strip().splitlines()
    assert own == str(machine.vector_isa() == "AVX-512" and not machine.avx512_on_256_bit_units())
    assert line.endswith("big products: " + ("bptt's packed kernel" if own == "True" else "NumPy's BLAS"))


@needs_scans
@pytest.mark.parametrize(
    "K,n,order", [(1, 1, "up"), (5, 31, "up"), (64, 32, "down"), (65, 33, "mixed"), (300, 100, "mixed")]
)
def test_pack_rows_packs_the_selected_rows_transposed(K, n, order):
    """pack_rows(W, rows) is pack_panels(W[rows].T) bit for bit: full and partial panels, rows
    in any order and repeated, zeros past the last row."""
    from bptt.fast import gemm

    rng = np.random.default_rng(K + n)
    W = rng.standard_normal((n + 7, K)).astype(f4)
    rows = {"up": np.arange(n), "down": np.arange(n)[::-1].copy(), "mixed": rng.integers(0, n + 7, n)}[order]
    want = np.full((-(-n // gemm.PANEL), K, gemm.PANEL), np.nan, f4)
    got = want.copy()
    gemm.pack_panels(W[rows].T, want)
    gemm.pack_rows(W, rows.astype(np.int64), got)
    np.testing.assert_array_equal(got, want)
    assert not np.isnan(got).any()


@needs_scans
@pytest.mark.parametrize("N", [1, 15, 16, 17, 47, 48, 49, 96, 128, 130])
@pytest.mark.parametrize("layout", ["rows", "strided rows", "columns"])
def test_pack_panels_packs_any_layout(N, layout):
    """pack_panels(B) holds B's columns PANEL at a time, zeros past the last, whatever B's
    layout: rows of unit stride (copied a vector at a time, whole vectors and the rest), rows
    of a wider array, and a transposed array (element by element)."""
    from bptt.fast import gemm

    K = 7
    rng = np.random.default_rng(N)
    B = {
        "rows": lambda: rng.standard_normal((K, N)).astype(f4),
        "strided rows": lambda: rng.standard_normal((K, N + 21)).astype(f4)[:, 3 : 3 + N],
        "columns": lambda: rng.standard_normal((N, K)).astype(f4).T,
    }[layout]()
    panels = -(-N // gemm.PANEL)
    want = np.zeros((K, panels * gemm.PANEL), f4)
    want[:, :N] = B
    want = want.reshape(K, panels, gemm.PANEL).transpose(1, 0, 2)
    got = np.full((panels, K, gemm.PANEL), np.nan, f4)
    gemm.pack_panels(B, got)
    np.testing.assert_array_equal(got, want)


@needs_scans
@pytest.mark.parametrize("M", [1, 7, 8, 9, 17, 65])
@pytest.mark.parametrize("layout", ["transposed", "rows"])
def test_pack_tiles_packs_any_layout(M, layout):
    """pack_tiles(A) holds A's rows TILE at a time along k, zeros past the last row and in
    tiles beyond them: a transposed array (whole tiles copied at once) and one of rows."""
    from bptt.fast import gemm

    K, T = 5, 10  # (tiles: more than M's)
    rng = np.random.default_rng(M)
    A = rng.standard_normal((K, M)).astype(f4).T if layout == "transposed" else rng.standard_normal((M, K)).astype(f4)
    want = np.zeros((T * gemm.TILE, K), f4)
    want[:M] = A
    want = want.reshape(T, gemm.TILE, K).transpose(0, 2, 1)
    got = np.full((T, K, gemm.TILE), np.nan, f4)
    gemm.pack_tiles(A, got)
    np.testing.assert_array_equal(got, want)
