"""The engine's threads (bptt.fast.engine): split scans and products equal the whole ones, the
engine sets and restores BLAS's thread count, and parts that fail or lose each other raise."""

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import bptt
from bptt import fast, full_bptt, ops
from bptt.algorithms import randomized_bptt
from bptt.algorithms.randomized import truncation_factors
from bptt.cells import make_cell
from bptt.diagnostics import relative_error
from bptt.fast import cells as fast_cells
from bptt.fast import engine, gemm
from bptt.fast.pool import matmul
from bptt.scan import scan_backward, scan_forward

needs_split = pytest.mark.skipif(
    not fast.available()["split"], reason="no split scans (numba or NumPy's OpenBLAS missing)"
)
f4 = np.float32


def _close(a, b, tol=2e-6):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    assert np.abs(a - b).max() <= tol * max(1.0, np.abs(b).max()), np.abs(a - b).max()


@needs_split
@pytest.mark.parametrize("M,K,N", [(32, 128, 256), (5, 7, 3), (9, 33, 40), (1, 16, 16), (4, 0, 17), (13, 64, 31)])
def test_packed_product_equals_matmul(M, K, N):
    """The scans' packed product (4 x 16 tiles, edge rows and columns), written and added,
    == NumPy's, also for strided factors and results."""
    rng = np.random.default_rng(M * 100 + N)
    A = rng.standard_normal((M, K)).astype(f4)
    for B in (rng.standard_normal((K, N)).astype(f4), rng.standard_normal((N + 3, K)).astype(f4)[1 : N + 1].T):
        ref = A.astype(np.float64) @ B.astype(np.float64)
        C = np.full((M, N + 5), np.nan, f4)[:, 2 : N + 2]  # a strided view: the columns around must stay
        gemm.mm_panels(A, gemm.panels(B), C, np.empty((4, gemm.PANEL), f4), False)
        _close(C, ref, 1e-6)
        gemm.mm_panels(A, gemm.panels(B), C, np.empty((4, gemm.PANEL), f4), True)  # C += A @ B
        _close(C, 2 * ref, 1e-6)
        assert np.isnan(C.base[:, :2]).all() and np.isnan(C.base[:, N + 2 :]).all()


def _problem(kind, H, B, T=6, D=4, tokens=True, seed=0):
    cell = make_cell(kind, D, H)
    rng = np.random.default_rng(seed)
    p = cell.init_params(rng, f4)
    for k in p:  # random non-zero biases
        if k.startswith("b"):
            p[k] = rng.uniform(-0.6, 0.6, p[k].shape).astype(f4)
    state = cell.State(*(rng.standard_normal((B, H)).astype(f4) for _ in cell.state_sizes()))
    x = rng.integers(0, D, (T, B)) if tokens else rng.standard_normal((T, B, D)).astype(f4)
    douts = rng.standard_normal((T, B, H)).astype(f4)
    dT = cell.State(*(rng.standard_normal((B, H)).astype(f4) for _ in cell.state_sizes()))
    return cell, p, state, cell.project(p, x), douts, dT


def _scan(cell, p, state, xp, douts, dT, reverse, scale):
    outs, final, tape = scan_forward(cell, p, xp, state, reverse=reverse)
    assert tape.aux is not None  # the compiled scan ran
    outs = np.array(outs)
    grads = {k: np.zeros_like(v) for k, v in p.items()}
    dxp, d0 = scan_backward(cell, p, tape, douts, dT, grads, scale=scale, consume=True)
    return [outs, *final, np.array(dxp), *d0, *grads.values()]


@needs_split
@pytest.mark.parametrize("P", [1, 2, 3])
@pytest.mark.parametrize("H,B", [(37, 5), (64, 8)])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("scaled", [False, True], ids=["plain", "scaled"])
@pytest.mark.parametrize("kind", ["elman", "gru", "lstm"])
def test_split_scans_equal_whole_scans(kind, P, H, B, reverse, scaled):
    """Forward (outputs, final state) and consumed backward (dxp, dL/dstate_0, W_hh and bias
    gradients) of the scans split into P parts by hidden units (packed products, one barrier
    per step) == the whole compiled scans (BLAS products), for uneven shares, batches not a
    multiple of the tile, and randomized-truncation factors on the messages."""
    cell, p, state, xp, douts, dT = _problem(kind, H, B)
    scale = truncation_factors(6, B, 0.3, np.random.default_rng(5)).astype(f4) if scaled else None
    whole = _scan(cell, p, state, xp, douts, dT, reverse, scale)
    with engine.split(P):
        parts = _scan(cell, p, state, xp, douts, dT, reverse, scale)
    for a, b in zip(parts, whole):
        _close(a, b)


@needs_split
def test_engine_step_equals_unsplit_step(monkeypatch):
    """A Dense -> LSTM -> bidirectional GRU -> Elman -> Dense model's full-BPTT and
    randomized-truncation gradients with the step split in two (scans and big products) ==
    unsplit, to float32 rounding."""
    model = bptt.Model(
        11,
        [
            bptt.Dense(8, "tanh"),
            bptt.Recurrent("lstm", 40),
            bptt.Recurrent("gru", 36, bidirectional=True),
            bptt.Recurrent("elman", 33),
            bptt.Dense(11),
        ],
    )
    params = model.init_params(np.random.default_rng(2), f4)
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((30, 6, 11)).astype(f4), rng.integers(0, 11, (30, 6))
    factors = truncation_factors(30, 6, 0.1, np.random.default_rng(4))
    monkeypatch.setattr(engine, "SPLIT_MACS", 1)  # split every product
    res = []
    for P in (1, 2):
        with engine.split(P):
            res.append(
                [full_bptt(model, params, x, y), randomized_bptt(model, params, x, y, 0.1, None, factors=factors)]
            )
    for a, b in zip(res[1], res[0]):
        assert abs(a.loss - b.loss) <= 1e-6 * abs(b.loss)
        for k in b.grads:
            assert relative_error(a.grads[k], b.grads[k]) < 2e-5, k


@needs_split
@pytest.mark.parametrize("shape", [(300, 40, 200), (40, 300, 200)], ids=["rows", "columns"])
def test_split_matmul_equals_matmul(shape):
    M, K, N = shape
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((K, M)).astype(f4).T, rng.standard_normal((K, N)).astype(f4)  # a transposed view
    whole = matmul(a, b).copy()
    with engine.split(2):
        split = matmul(a, b)
    _close(split, whole, 1e-6)


@needs_split
def test_engine_sets_and_restores_blas_threads(monkeypatch):
    monkeypatch.setattr(engine, "COLD_S", float("inf"))  # split steps (cold ones run serially)
    get = engine._threads[0]
    model = bptt.Model(5, [bptt.Recurrent("lstm", 32), bptt.Dense(5)], tokens=True)
    p32, p64 = model.init_params(0, f4), model.init_params(0, np.float64)
    cells = [model.recurrent_levels[0].directions[0].cell]
    with threadpool_limits(2, user_api="blas"):
        assert get() == 2
        splits32, splits64 = fast_cells.splits(f4), fast_cells.splits(np.float64)
        assert not engine.ready(cells, None, splits64)  # float64: the NumPy path
        assert not engine.ready(cells, np.ones((3, 2), bool), splits32)  # masks: the Python loops
        assert not engine.ready([make_cell("elman", 4, 64, activation="relu")], None, splits32)  # no split scans
        assert engine.ready([make_cell("lstm", 4, 31)], None, splits32) == 1  # under 16 units a part: one part
        assert engine.ready(cells, None, splits32) == 2
        with ops.step_context(model, p32, None):
            assert get() == 1 and engine.parts() == 2
            assert engine.run([lambda: engine.parts()] * 2) == [2, 1]  # parts do not split again
        assert get() == 2 and engine.parts() == 1
        with ops.step_context(model, p64, None):
            assert get() == 2 and not engine.engaged()
        with pytest.raises(ZeroDivisionError):
            with engine.engine(2):
                1 / 0  # noqa: B018
        assert get() == 2 and not engine.engaged()
    assert get() == 1


def test_run_waits_for_every_part_and_raises_the_first_error():
    done = []

    def slow():
        import time

        time.sleep(0.05)
        done.append(1)
        return 1

    def fail():
        raise ValueError("part failed")

    with pytest.raises(ValueError, match="part failed"):
        engine.run([fail, slow, slow])
    assert done == [1, 1]
    assert engine.run([lambda: 3, lambda: 4]) == [3, 4]


@needs_split
def test_a_part_left_alone_gives_up_and_raises(monkeypatch):
    """A split scan whose other part never runs returns -1 after the yield limit: an error,
    not a hang."""
    cell, p, state, xp, douts, dT = _problem("lstm", 32, 4)
    monkeypatch.setattr(engine, "_YIELDS", 1000)
    monkeypatch.setattr(engine, "run", lambda calls: [calls[0]()])  # part 1 never starts
    with engine.split(2), pytest.raises(RuntimeError, match="lost each other"):
        scan_forward(cell, p, xp, state)


@needs_split
def test_steps_from_two_threads_at_once():
    """Two Python threads training at once: each thread's engine is its own, the parts'
    results never mix, and BLAS's thread count is restored when the last one leaves."""
    import threading

    model = bptt.Model(7, [bptt.Recurrent("lstm", 48), bptt.Dense(7)], tokens=True)
    params = model.init_params(np.random.default_rng(0), f4)
    rng = np.random.default_rng(1)
    batches = [(rng.integers(0, 7, (20, 5)), rng.integers(0, 7, (20, 5))) for _ in range(2)]
    with threadpool_limits(1):
        want = [full_bptt(model, params, x, y).grads for x, y in batches]
    got: dict = {}
    with threadpool_limits(2, user_api="blas"):

        def train(i):
            got[i] = [full_bptt(model, params, *batches[i]).grads for _ in range(15)]

        threads = [threading.Thread(target=train, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert engine._threads[0]() == 2
    for i in range(2):
        assert len(got[i]) == 15
        for g in got[i]:
            for k in g:
                assert relative_error(g[k], want[i][k]) < 2e-5, k


@needs_split
def test_engine_threads_hold_no_arrays_after_a_step(monkeypatch):
    """Once a step on the engine returns and its result is dropped, every pooled array is free
    again: the engine's threads keep no reference to a job's arrays (a kept one made the pool
    allocate a fresh tape every step)."""
    from bptt.fast.pool import buffers

    model = bptt.Model(9, [bptt.Recurrent("lstm", 64), bptt.Recurrent("gru", 48), bptt.Dense(9)], tokens=True)
    params = model.init_params(np.random.default_rng(0), f4)
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 9, (200, 8)), rng.integers(0, 9, (200, 8))
    monkeypatch.setattr(engine, "SPLIT_MACS", 1)
    with engine.split(2):
        g = full_bptt(model, params, x, y)
        n = len(buffers._arrays)
        assert n > 0
        del g
        assert all(buffers._free(i) for i in range(n))


@needs_split
def test_a_part_that_fails_releases_the_others(monkeypatch):
    """A part whose set-up raises (here: its packed weights) sets the abort flag: the other
    part stops waiting at once and the error reaches the caller."""
    import time

    cell, p, state, xp, douts, dT = _problem("gru", 32, 4)
    real = fast_cells.FastGRU._panels

    def broken(self, params, part, P, forward):
        if part == 0:
            raise MemoryError("no room for the panels")
        return real(self, params, part, P, forward)

    monkeypatch.setattr(fast_cells.FastGRU, "_panels", broken)
    t0 = time.perf_counter()
    with engine.split(2), pytest.raises(MemoryError, match="no room"):
        scan_forward(cell, p, xp, state)
    assert time.perf_counter() - t0 < 5  # not the ~10 s a lost part waits


@needs_split
@pytest.mark.parametrize("P", [0, 1, 2, 3])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("tokens", [True, False], ids=["tokens", "dense"])
@pytest.mark.parametrize("T", [1, 2, 3, 7])
@pytest.mark.parametrize("kind", ["elman", "gru", "lstm"])
def test_a_scan_run_for_its_final_state_alone_equals_the_whole_scan(kind, T, tokens, reverse, P):
    """scan_forward(keep=False, outputs=False) runs the compiled scans in rings of two steps'
    buffers (whole, P = 0, or split into P parts): the same final state, bitwise, and no
    outputs."""
    cell, p, state, xp, _, _ = _problem(kind, 37, 5, T=T, tokens=tokens)
    impl = ops.implementation(cell, f4)
    with engine.split(P) if P else threadpool_limits(1):
        _, whole, _ = scan_forward(cell, p, xp, state, reverse=reverse)
        fused = impl.forward_scan(p, xp, state, reverse, ring=True)
        assert fused is not None and fused[0] is None and fused[2] is None
        outs, final, tape = scan_forward(cell, p, xp, state, reverse=reverse, keep=False, outputs=False)
    assert outs is None and tape is None
    for a, b, c in zip(final, fused[1], whole):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, c)


@needs_split
def test_packed_weights_are_kept_for_a_step_and_no_longer():
    """Within a split (a step on the engine), a scan packs each part's recurrent weights once
    and later scans use them; outside, and in the next step, nothing is kept."""
    cell, p, state, xp, _, _ = _problem("lstm", 37, 5)
    calls = []
    real = gemm.panels
    try:
        gemm.panels = lambda W: calls.append(1) or real(W)
        with engine.split(2):
            for _ in range(3):
                scan_forward(cell, p, xp, state)
            assert len(calls) == 2 and len(engine.memo()) == 2
        assert engine.memo() == {}
        with engine.split(2):
            scan_forward(cell, p, xp, state)
        assert len(calls) == 4
    finally:
        gemm.panels = real


@needs_split
@pytest.mark.parametrize("kind", ["elman", "gru", "lstm"])
def test_a_cold_step_runs_serially_with_the_split_steps_numbers(kind, monkeypatch):
    """A step after the engine idled (COLD_S) runs its parts one after the other on the calling
    thread, waking the workers meanwhile; its loss and gradients equal a split step's bitwise
    (scans in one part, the products in the same chunks), for stacked levels, readout and all."""
    model = bptt.Model(9, [bptt.Recurrent(kind, 64), bptt.Recurrent(kind, 48), bptt.Dense(9)], tokens=True)
    params = model.init_params(np.random.default_rng(0), f4)
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 9, (60, 16)), rng.integers(0, 9, (60, 16))
    monkeypatch.setattr(engine, "SPLIT_MACS", 1)  # every product split (or chunked)
    woken, seen = [], []
    wake = engine._wake
    monkeypatch.setattr(engine, "_wake", lambda: (woken.append(1), wake()))
    real_run = engine.run
    monkeypatch.setattr(engine, "run", lambda calls: (seen.append(engine.serial()), real_run(calls))[1])
    out = {}
    with threadpool_limits(2, user_api="blas"):
        for cold in (False, True, False):
            monkeypatch.setattr(engine, "COLD_S", -1.0 if cold else float("inf"))
            seen.clear()
            g = full_bptt(model, params, x, y)
            assert seen and all(s == cold for s in seen)  # every hand-off of the step in that mode
            out.setdefault(cold, []).append(g)
    assert len(woken) == 1
    split, serial = out[False][0], out[True][0]
    assert split.loss == serial.loss == out[False][1].loss
    for k in params:
        np.testing.assert_array_equal(serial.grads[k], split.grads[k], err_msg=k)
