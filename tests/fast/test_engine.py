"""The engine's threads (bptt.fast.engine): split scans and products equal the whole ones, the
engine sets and restores BLAS's thread count, and parts that fail or lose each other raise."""

import os
import sys
import threading

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
needs_cores = pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2 or engine._getcpu is None,
    reason="needs two allowed cores and sched_getcpu",
)
f4 = np.float32


def _close(a, b, tol=2e-6):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    assert np.abs(a - b).max() <= tol * max(1.0, np.abs(b).max()), np.abs(a - b).max()


@pytest.fixture(autouse=True)
def _scans_split(monkeypatch):
    """Every scan split, however small (as the engine does from SCAN_ALONE_MACS up)."""
    monkeypatch.setattr(engine, "SCAN_ALONE_MACS", 0)


@needs_split
@pytest.mark.parametrize(
    "M,K,N", [(32, 128, 256), (5, 7, 3), (9, 33, 40), (1, 16, 16), (4, 0, 17), (13, 64, 31), (16, 40, 100)]
)
def test_packed_product_equals_matmul(M, K, N):
    """The scans' packed product (tiles of gemm.TILE, 4 and 1 rows, edge rows and columns), written and added,
    == NumPy's, also for strided factors and results."""
    rng = np.random.default_rng(M * 100 + N)
    A = rng.standard_normal((M, K)).astype(f4)
    for B in (rng.standard_normal((K, N)).astype(f4), rng.standard_normal((N + 3, K)).astype(f4)[1 : N + 1].T):
        ref = A.astype(np.float64) @ B.astype(np.float64)
        C = np.full((M, N + 5), np.nan, f4)[:, 2 : N + 2]  # a strided view: the columns around must stay
        gemm.mm_panels(A, gemm.panels(B), C, np.empty((gemm.TILE, gemm.PANEL), f4), False)
        _close(C, ref, 1e-6)
        gemm.mm_panels(A, gemm.panels(B), C, np.empty((gemm.TILE, gemm.PANEL), f4), True)  # C += A @ B
        _close(C, 2 * ref, 1e-6)
        assert np.isnan(C.base[:, :2]).all() and np.isnan(C.base[:, N + 2 :]).all()
        once = C.copy()  # the panels from the last to the first (every other step of a scan): the same bits
        for add in (False, True):
            gemm.mm_panels(A, gemm.panels(B), C, np.empty((gemm.TILE, gemm.PANEL), f4), add, True)
        np.testing.assert_array_equal(C, once)
        assert np.isnan(C.base[:, :2]).all() and np.isnan(C.base[:, N + 2 :]).all()


def _problem(kind, H, B, T=6, D=4, tokens=True, seed=0, dtype=f4):
    cell = make_cell(kind, D, H)
    rng = np.random.default_rng(seed)
    p = cell.init_params(rng, dtype)
    for k in p:  # random non-zero biases
        if k.startswith("b"):
            p[k] = rng.uniform(-0.6, 0.6, p[k].shape).astype(dtype)
    state = cell.State(*(rng.standard_normal((B, H)).astype(dtype) for _ in cell.state_sizes()))
    x = rng.integers(0, D, (T, B)) if tokens else rng.standard_normal((T, B, D)).astype(dtype)
    douts = rng.standard_normal((T, B, H)).astype(dtype)
    dT = cell.State(*(rng.standard_normal((B, H)).astype(dtype) for _ in cell.state_sizes()))
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
                [
                    full_bptt(model, params, x, y),
                    # (reweight=False: the factors as given; the reweighted estimate refuses this stack as biased)
                    randomized_bptt(model, params, x, y, 0.1, None, factors=factors, reweight=False),
                ]
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


@pytest.mark.parametrize("P", [0, 2, 3])
@pytest.mark.parametrize("layout", ["NN", "TN", "NT", "TT", "strided", "float64"])
def test_matmul_add_adds_the_product_into_its_output(layout, P, monkeypatch):
    """pool.matmul_add(a, b, out): out += a @ b, float32 through cblas_sgemm with beta = 1
    (either operand a transposed view), split by rows between P parts; a strided operand or
    float64 through NumPy (unsplit: bitwise out + a @ b)."""
    from bptt.fast.pool import matmul_add

    monkeypatch.setattr(engine, "SPLIT_MACS", 0)  # (every product split)

    M, K, N = 300, 40, 200
    rng = np.random.default_rng(1)
    dtype = np.float64 if layout == "float64" else f4
    a = rng.standard_normal((K, M)).astype(dtype).T if layout[0] == "T" else rng.standard_normal((M, K)).astype(dtype)
    b = rng.standard_normal((N, K)).astype(dtype).T if layout[1:] == "T" else rng.standard_normal((K, N)).astype(dtype)
    if layout == "strided":
        a = rng.standard_normal((M, 2 * K)).astype(dtype)[:, ::2]
    out0 = rng.standard_normal((M, N)).astype(dtype)
    out = out0.copy()
    with engine.split(P) if P else threadpool_limits(1):
        matmul_add(a, b, out)
    want = out0 + a.astype(np.float64) @ b.astype(np.float64)
    if layout in ("strided", "float64") and not P:
        np.testing.assert_array_equal(out, out0 + np.matmul(a, b))
    assert np.abs(out - want).max() <= 1e-5 * np.abs(want).max()


@needs_split
def test_both_runs_two_independent_calls_each_whole(monkeypatch):
    """ops.both(first, second) on the engine: both results, each call's products whole (bitwise
    np.matmul's, though every product would split: a posted call, or the caller's own, never
    splits again; a split inside the caller's call would wait on the run it is part of)."""
    from bptt.fast.pool import matmul, matmul_add

    fast.load()
    monkeypatch.setattr(engine, "SPLIT_MACS", 0)
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((300, 40)).astype(f4), rng.standard_normal((40, 200)).astype(f4)
    out, want = np.zeros((300, 200), f4), np.matmul(a, b)
    with engine.split(2):
        assert ops.both is not ops.DEFAULTS["both"]
        x, y = ops.both(lambda: matmul_add(a, b, out) or "added", lambda: matmul(a, b).copy())
    assert x == "added"
    np.testing.assert_array_equal(y, want)
    _close(out, want, 1e-6)


@needs_split
def test_engine_sets_and_restores_blas_threads(monkeypatch):
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


def test_run_waits_for_every_call_taken_and_raises_the_first_error():
    done = []

    def slow():
        import time

        time.sleep(0.05)
        done.append(1)
        return 1

    def fail():
        raise ValueError("part failed")

    import time

    with pytest.raises(ValueError, match="part failed"):
        engine.run([fail, slow, slow])
    n = len(done)  # the calls a worker had taken ran to the end; the caller dropped the others
    time.sleep(0.15)
    assert len(done) == n  # and none runs after the raise
    assert engine.run([lambda: 3, lambda: 4]) == [3, 4]
    seen = []
    engine.run([lambda: time.sleep(0.1), lambda: seen.append(1)])  # a posted call the caller gets to
    assert seen == [1]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="exception notes are Python 3.11's")
def test_run_raises_the_first_error_with_the_others_noted():
    """Two calls side by side that both raise: the first call's error is raised, and the other's
    goes with it as a note (not lost)."""
    import threading

    both = threading.Barrier(2)

    def first():
        both.wait(timeout=5)  # (the other call is taken by the worker and running)
        raise MemoryError("no room")

    def second():
        both.wait(timeout=5)
        raise KeyError("W_hh")

    with pytest.raises(MemoryError, match="no room") as caught:
        engine.run([first, second])
    assert any("KeyError" in n and "W_hh" in n for n in caught.value.__notes__)


@needs_split
def test_a_part_waiting_on_a_task_never_finished_gives_up():
    """A split scan part waiting for a round whose other task was claimed by a thread that never
    finished it returns -1 after the yield limit (an error, not a hang); the engine raises."""
    from bptt.fast import split

    T, B, H = 3, 2, 32
    src, idx = np.zeros((T * B, H), f4), np.arange(T * B, dtype=np.int64).reshape(T, B)
    panels, offs, _ = fast_cells.FastElman(make_cell("elman", 4, H))._panels({"W_hh": np.zeros((H, H), f4)}, 2, True)
    bar, claims = np.array([0, 0, 1000], np.int64), np.zeros((2, 8), np.int64)
    claims[1, 0] = 1  # round 0 of part 1: taken by a thread that never finishes it
    args = (src, idx, np.zeros((B, H), f4), np.zeros((T, B, H), f4), np.zeros((T, B, H), f4), False)
    args += (np.zeros(0, np.int64), np.zeros((0, 2), np.int64))  # no stops
    edges = np.empty((2, gemm.TILE, gemm.PANEL), f4)
    code = split.elman_scan_part(*args, panels, offs, edges, (0, B), 0, 2, bar.ctypes.data, claims.ctypes.data)
    assert code == -1 and bar[0] == 1 and bar[1] == 1  # its own task done, then the abort flag


def _stacked(kind=None):
    kinds = [kind] * 2 if kind else ["lstm", "gru", "elman"]
    model = bptt.Model(9, [*(bptt.Recurrent(k, 64 - 8 * i) for i, k in enumerate(kinds)), bptt.Dense(9)], tokens=True)
    params = model.init_params(np.random.default_rng(0), f4)
    rng = np.random.default_rng(1)
    return model, params, rng.integers(0, 9, (60, 16)), rng.integers(0, 9, (60, 16))


def _bitwise(a, b):
    assert a.loss == b.loss
    for k in b.grads:
        np.testing.assert_array_equal(a.grads[k], b.grads[k], err_msg=k)


def _by_rows(monkeypatch, on):
    """Full BPTT's steps by runs of batch rows (algorithms/rows.py) if `on`, else each scan and
    product split; the list of the runs of rows the steps took."""
    from bptt.algorithms import rows

    monkeypatch.setattr(fast_cells, "LEAF_ROWS_MACS", 0 if on else 1 << 62)
    taken: list = []
    real = rows.side_by_side
    monkeypatch.setattr(rows, "side_by_side", lambda *a, **k: taken.append(a[5]) or real(*a, **k))
    return taken


@needs_split
@pytest.mark.parametrize("by_rows", [False, True], ids=["split", "rows"])
@pytest.mark.parametrize("kind", ["elman", "gru", "lstm"])
def test_a_worker_that_never_comes_holds_nothing_up(kind, by_rows, monkeypatch):
    """Jobs posted to a worker that never takes them (asleep, its core busy) are run by the
    caller after its own: the step completes on the calling thread alone with bitwise the split
    step's numbers (every part of every scan round claimed by the caller; or, a step by runs of
    rows, the second run), stacked levels, readout and all."""
    model, params, x, y = _stacked(kind)
    taken = _by_rows(monkeypatch, by_rows)
    monkeypatch.setattr(engine, "SPLIT_MACS", 1)  # every product split
    with engine.split(2):
        split = full_bptt(model, params, x, y)
    posted, out = [], []
    monkeypatch.setattr(engine._Team, "post", lambda self, i, job: posted.append(job))  # never delivered

    def step():
        with engine.split(2):
            out.append(full_bptt(model, params, x, y))

    t = threading.Thread(target=step, daemon=True)  # (a caller that waited for the worker would hang)
    t.start()
    t.join(120)
    assert out, "the step waited for a worker that never came"
    assert posted and all(job.fn is None for _, job in posted)  # every one claimed (by the caller)
    _bitwise(out[0], split)
    assert len(taken) == (2 if by_rows else 0)


@needs_split
@pytest.mark.parametrize("by_rows", [False, True], ids=["split", "rows"])
@pytest.mark.parametrize("delay", [0.0005, 0.003])
def test_a_late_worker_joins_the_step_with_the_same_numbers(delay, by_rows, monkeypatch):
    """A worker that gets its jobs late (each delivered `delay` s after it was posted): the
    caller runs what the worker has not claimed, the worker joins when it comes (in a scan,
    part by part from the round it finds; a step by runs of rows, with the second run), and the
    step's loss and gradients equal a split step's bitwise, over LSTM, GRU and Elman levels."""
    import threading

    model, params, x, y = _stacked()
    taken = _by_rows(monkeypatch, by_rows)
    monkeypatch.setattr(engine, "SPLIT_MACS", 1)
    with engine.split(2):
        want = full_bptt(model, params, x, y)
    real = engine._Team.post
    ran: list[str] = []
    claim = engine._Job.claim

    def late(self, i, job):
        threading.Timer(delay, real, (self, i, job)).start()

    def recorded(job):
        fn = claim(job)
        if fn is not None:
            ran.append(threading.current_thread().name)
        return fn

    monkeypatch.setattr(engine._Team, "post", late)
    monkeypatch.setattr(engine._Job, "claim", recorded)
    joins = delay < 0.001  # (a 3 ms delay outlasts every job of this model's steps: the caller runs all)
    for _ in range(30):  # until both the caller and (where it can) the worker ran posted jobs
        with engine.split(2):
            _bitwise(full_bptt(model, params, x, y), want)
        if "MainThread" in ran and (any(n.startswith("bptt-engine") for n in ran) or not joins):
            break
    assert "MainThread" in ran and (any(n.startswith("bptt-engine") for n in ran) or not joins), set(ran)
    assert bool(taken) == by_rows


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
def test_a_part_that_fails_raises_in_the_caller(monkeypatch):
    """A scan part that raises (here: part 0's call, before its kernel) sets the abort flag;
    the error reaches the caller at once, and the engine's next step runs normally."""
    import time

    from bptt.fast import split

    cell, p, state, xp, douts, dT = _problem("gru", 32, 4)
    real = split.gru_scan_part

    def broken(*args):
        if args[-4] == 0:
            raise MemoryError("no room for the scratch")
        return real(*args)

    monkeypatch.setattr(split, "gru_scan_part", broken)
    t0 = time.perf_counter()
    with engine.split(2), pytest.raises(MemoryError, match="no room"):
        scan_forward(cell, p, xp, state)
    assert time.perf_counter() - t0 < 5  # not the ~10 s a lost part waits
    monkeypatch.setattr(split, "gru_scan_part", real)
    with engine.split(2):
        _, final, _ = scan_forward(cell, p, xp, state)
    _, want, _ = scan_forward(cell, p, xp, state)
    _close(final.h, want.h)


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
@pytest.mark.parametrize("P", [0, 1, 2, 3])
@pytest.mark.parametrize("ring", [True, False], ids=["ring", "outputs"])
@pytest.mark.parametrize("kind", ["elman", "gru", "lstm"])
def test_a_scan_keeps_its_states_at_the_stops_bitwise(kind, ring, P):
    """scan_forward(stops=...) on the compiled scans (whole, P = 0, or split into P parts) and
    on the time loop (float64) copies the state after each stop out, each an array of its
    own: bitwise the states of the whole scan at those steps; the scan's final state and
    outputs unchanged."""
    T, stops = 9, [0, 3, 4, 8]
    for dtype in (f4, np.float64):
        cell, p, state, xp, _, _ = _problem(kind, 37, 5, T=T, dtype=dtype)
        with engine.split(P) if P else threadpool_limits(1):
            outs, whole, _ = scan_forward(cell, p, xp, state)
            want = [(outs[s],) if kind != "lstm" else None for s in stops]
            if kind == "lstm":  # c_t from the tape's step caches
                _, _, tape = scan_forward(cell, p, xp, state)
                want = [(outs[s], tape.caches[s].c) for s in stops]
            kept = []
            got_outs, final, _ = scan_forward(cell, p, xp, state, keep=False, outputs=not ring, stops=stops, kept=kept)
        assert len(kept) == len(stops)
        for k, w in zip(kept, want):
            for a, b in zip(k, w):
                assert a.base is None or a.base.size == a.size  # an array of its own
                np.testing.assert_array_equal(a, b)
        for a, b in zip(final, whole):
            np.testing.assert_array_equal(a, b)
        if not ring:
            np.testing.assert_array_equal(got_outs, outs)


@pytest.mark.parametrize("kind", ["elman", "gru", "lstm", "jordan"])
def test_the_token_table_is_built_once_a_step(kind):
    """A token input's projection table (W_ih^T + the folded bias) is built once within a step
    on the engine and used by every segment's scan; a new step (or new weights) builds it
    again; the table is the one built directly."""
    cell = make_cell(kind, 5, 32)
    p = cell.init_params(np.random.default_rng(0), f4)
    x = np.random.default_rng(1).integers(0, 5, (4, 3))
    direct = cell.project(p, x).table
    with engine.split(2):
        first, again = cell.project(p, x).table, cell.project(p, x[:2]).table
        p2 = {**p, "W_ih": p["W_ih"] * 2}
        other = cell.project(p2, x).table
    with engine.split(2):
        later = cell.project(p, x).table
    assert again is first and later is not first and other is not first
    np.testing.assert_array_equal(first, direct)
    np.testing.assert_array_equal(other, cell.project(p2, x).table)


@needs_split
def test_packed_weights_are_kept_for_a_step_and_no_longer():
    """Within a split (a step on the engine), a scan packs each part's recurrent weights once
    and later scans use them; outside, and in the next step, nothing is kept."""
    cell, p, state, xp, _, _ = _problem("lstm", 37, 5)
    calls = []
    real = gemm.pack_rows  # (a forward scan's packer)
    try:
        gemm.pack_rows = lambda W, rows, out: calls.append(1) or real(W, rows, out)
        with engine.split(2):
            for _ in range(3):
                scan_forward(cell, p, xp, state)
            assert len(calls) == 2 and len(engine.memo()) == 1  # both parts, packed once
        assert engine.memo() == {}
        with engine.split(2):
            scan_forward(cell, p, xp, state)
        assert len(calls) == 4
    finally:
        gemm.pack_rows = real


@needs_split
@needs_cores
def test_a_step_holds_its_core_and_its_worker_keeps_off_it():
    """Within a step on the engine (two parts) the calling thread runs on one core only, and a
    worker that takes one of its jobs keeps off that core; the caller's allowed cores are
    restored when the step ends, and the worker's before it sleeps."""
    import time

    before = os.sched_getaffinity(0)
    with threadpool_limits(2, user_api="blas"), engine.engine(2):
        held = os.sched_getaffinity(0)
        assert len(held) == 1 and held <= before
        (core,) = held

        def worker_side():
            return threading.current_thread().name, os.sched_getaffinity(0)

        for _ in range(20):  # until the worker, not the caller, ran the job
            name, cores = engine.run([lambda: time.sleep(0.02), worker_side])[1]
            if name != "MainThread":
                break
        assert name.startswith("bptt-engine") and core not in cores and cores, (name, cores)
    assert os.sched_getaffinity(0) == before
    for _ in range(100):  # the worker, once past its spin, sleeps with its cores back
        time.sleep(0.02)
        name, cores = engine.run([lambda: time.sleep(0.02), worker_side])[1]
        if name.startswith("bptt-engine") and cores == before:
            break
    assert name.startswith("bptt-engine") and cores == before, (name, cores)


@needs_split
@needs_cores
@pytest.mark.parametrize("at", [1, 2], ids=["pinning", "giving back"])
def test_an_interrupted_step_leaves_cores_and_blas_as_they_were(at, monkeypatch):
    """Ctrl-C (KeyboardInterrupt) right after the step pins its core, or right after it gives
    the core back (before BLAS's thread count is restored): the calling thread's cores and BLAS's
    thread count are the user's again, at once or after the next step, and nothing counts the
    interrupted step as still on the engine."""
    get = engine._threads[0]
    model = bptt.Model(5, [bptt.Recurrent("lstm", 32), bptt.Dense(5)], tokens=True)
    p = model.init_params(0, f4)
    x = np.zeros((8, 16), np.int64)
    before, real, calls = os.sched_getaffinity(0), engine._affinity, [0]

    def interrupted(cores):
        ok = real(cores)
        if threading.current_thread() is threading.main_thread():
            calls[0] += 1
            if calls[0] == at:
                raise KeyboardInterrupt
        return ok

    with threadpool_limits(2, user_api="blas"):
        monkeypatch.setattr(engine, "_affinity", interrupted)
        with pytest.raises(KeyboardInterrupt):
            full_bptt(model, p, x, x)
        monkeypatch.setattr(engine, "_affinity", real)
        full_bptt(model, p, x, x)
        assert os.sched_getaffinity(0) == before
        assert get() == 2 and not engine._blas_users and engine._blas_saved is None
        with threadpool_limits(1, user_api="blas"):  # the user's count, not a stale one
            assert engine.ready([model.recurrent_levels[0].directions[0].cell], None, fast_cells.splits(f4)) == 1


@needs_split
@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX's")
def test_a_child_forked_while_another_thread_steps_can_step():
    """os.fork while another thread is in a step (BLAS at one thread, the packing lock held):
    the child gets new locks and BLAS's thread count from before that step, and its own step
    runs (within seconds, not hung on a lock no thread of it will release)."""
    from bptt.fast import pool

    get = engine._threads[0]
    model = bptt.Model(5, [bptt.Recurrent("lstm", 32), bptt.Dense(5)], tokens=True)
    p = model.init_params(0, f4)
    x = np.zeros((8, 16), np.int64)
    inside, leave = threading.Event(), threading.Event()

    def stepping():  # (another thread, in a step: on the engine and holding the packing lock)
        with engine.engine(2), fast_cells._PACKING, pool.buffers._lock:
            inside.set()
            leave.wait(10)

    with threadpool_limits(2, user_api="blas"):
        t = threading.Thread(target=stepping)
        t.start()
        try:
            assert inside.wait(10) and get() == 1
            pid = os.fork()
            if pid == 0:  # the child: one step, then its BLAS count, as its exit status
                import faulthandler

                faulthandler.dump_traceback_later(20, exit=True)
                try:
                    full_bptt(model, p, x, x)
                    os._exit(10 + get())
                finally:
                    os._exit(1)
            _, status = os.waitpid(pid, 0)
        finally:
            leave.set()
            t.join()
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 12, status


@needs_split
@needs_cores
def test_workers_started_within_a_step_do_not_inherit_its_core(monkeypatch):
    """Threads inherit the mask of the thread that starts them: workers started by a caller
    that holds its core take the caller's cores from before, even if they never get a job."""
    import time

    before = os.sched_getaffinity(0)
    monkeypatch.setattr(engine, "_team", None)
    monkeypatch.setattr(engine._Team, "post", lambda self, i, job: None)  # no job ever reaches them
    with threadpool_limits(2, user_api="blas"), engine.engine(2):
        assert len(os.sched_getaffinity(0)) == 1
        assert engine.run([lambda: 1, lambda: 2]) == [1, 2]  # the caller ran both
        (worker,) = engine._team.threads  # the team this step started
        for _ in range(100):
            if os.sched_getaffinity(worker.native_id) == before:
                break
            time.sleep(0.01)
        assert os.sched_getaffinity(worker.native_id) == before
    assert os.sched_getaffinity(0) == before


@needs_split
@pytest.mark.parametrize("kind", ["elman", "gru", "lstm"])
def test_a_small_scan_runs_on_the_calling_thread_with_the_same_numbers(kind, monkeypatch):
    """Under SCAN_ALONE_MACS a step's scans run as one call on the caller, posting nothing to
    the engine's threads (it claims every part of every round), with bitwise the split scans'
    numbers."""
    model, params, x, y = _stacked(kind)
    monkeypatch.setattr(engine, "SPLIT_MACS", 1 << 40)  # the products whole
    monkeypatch.setattr(ops, "both", ops.DEFAULTS["both"])  # (the readout's two products in turn)
    monkeypatch.setattr(fast_cells, "OVERLAP_BYTES", 0)  # (the backward scans split, not overlapped,
    monkeypatch.setattr(fast_cells, "ROWS_BYTES", 0)  # by hidden units)
    with engine.split(2):
        split = full_bptt(model, params, x, y)
    runs = []
    real = engine.run
    monkeypatch.setattr(engine, "run", lambda calls: runs.append(len(calls)) or real(calls))
    with engine.split(2):
        full_bptt(model, params, x, y)
    assert runs and max(runs) == 2  # (the split scans, as measured)
    runs.clear()
    scans = []
    real_alone = engine.scan_alone
    monkeypatch.setattr(engine, "scan_alone", lambda fn, P, *a: scans.append(P) or real_alone(fn, P, *a))
    monkeypatch.setattr(engine, "SCAN_ALONE_MACS", 60 * 16 * 4 * 64 * 64 + 1)  # above each scan's
    with engine.split(2):
        alone = full_bptt(model, params, x, y)
    assert scans and set(scans) == {2} and set(runs) <= {1}  # (every part of two, none posted)
    _bitwise(alone, split)


@needs_split
@pytest.mark.parametrize("kind", ["elman", "lstm"])
def test_a_backward_scan_overlaps_its_weight_gradient_with_the_same_numbers(kind, monkeypatch):
    """With two parts, a backward scan of a small cell runs in chunks from the last, each
    chunk's weight-gradient product on the caller while an engine thread scans the next:
    everything but W_hh's gradient bitwise the split scan's (the scan's numbers are the whole
    scan's), W_hh's to float32 rounding (summed chunk by chunk), and the unsplit step's too."""
    model, params, x, y = _stacked(kind)
    monkeypatch.setattr(fast_cells, "ROWS_BYTES", 0)  # (scans split by units: the overlap's case)
    alone = []
    real = engine.scan_alone
    steps = lambda a: next(v for v in a if getattr(v, "ndim", 0) == 3).shape[0]  # noqa: E731  (the work rows')
    monkeypatch.setattr(engine, "scan_alone", lambda fn, P, *a: alone.append(steps(a)) or real(fn, P, *a))
    with engine.split(2):
        overlapped = full_bptt(model, params, x, y)
    assert alone == [20] * 6  # (two levels of 60 steps: three chunks each)
    monkeypatch.setattr(fast_cells, "OVERLAP_BYTES", 0)
    with engine.split(2):
        split = full_bptt(model, params, x, y)
    with engine.split(1):
        whole = full_bptt(model, params, x, y)
    assert len(alone) == 6
    assert overlapped.loss == split.loss
    for k in split.grads:
        if k.endswith("W_hh"):
            assert relative_error(overlapped.grads[k], split.grads[k]) < 2e-6, k
            assert relative_error(overlapped.grads[k], whole.grads[k]) < 2e-5, k
        else:
            np.testing.assert_array_equal(overlapped.grads[k], split.grads[k], err_msg=k)


@needs_split
@pytest.mark.parametrize("kind", ["elman", "gru", "lstm"])
def test_a_scan_split_by_batch_rows_gives_each_row_the_one_part_numbers(kind, monkeypatch):
    """A small cell's scans on two parts split by batch rows: chunks of whole product tiles,
    each run alone as one part over all hidden units, taken by the threads as they come. Every
    row gets the one-part scan's numbers: loss and gradients bitwise those of the step on one
    part (products whole in both), and to float32 rounding the scans split by hidden units'."""
    model, params, x, y = _stacked(kind)  # (B = 16: two chunks of 8 rows)
    monkeypatch.setattr(engine, "SPLIT_MACS", 1 << 40)  # the products whole
    monkeypatch.setattr(ops, "both", ops.DEFAULTS["both"])
    spans = []
    real = engine.scan_rows
    monkeypatch.setattr(engine, "scan_rows", lambda fn, s, args_of: spans.append(s) or real(fn, s, args_of))
    with engine.split(2):
        rows = full_bptt(model, params, x, y)
    assert spans == [[(0, 8), (8, 16)]] * 4  # (two levels, forward and backward)
    with engine.split(1):
        one = full_bptt(model, params, x, y)
    _bitwise(rows, one)
    monkeypatch.setattr(fast_cells, "ROWS_BYTES", 0)
    monkeypatch.setattr(fast_cells, "OVERLAP_BYTES", 0)
    with engine.split(2):
        units = full_bptt(model, params, x, y)
    assert len(spans) == 4
    assert abs(rows.loss - units.loss) <= 1e-6 * abs(units.loss)
    for k in units.grads:
        assert relative_error(rows.grads[k], units.grads[k]) < 2e-6, k


@needs_split
def test_row_chunks_are_whole_tiles_a_part_at_least():
    """_row_spans: None where the weights are big, the batch has under a tile a part or there
    is one part; one chunk of all rows for a small scan; else ROW_CHUNKS chunks a part at most,
    of whole tiles, covering the batch in order."""
    cell = fast_cells.FastLSTM(make_cell("lstm", 4, 32))
    small, big = {"W_hh": np.zeros((128, 32), f4)}, {"W_hh": np.zeros((4 * 512, 512), f4)}
    macs = engine.SCAN_ALONE_MACS
    T = gemm.TILE
    with engine.split(2):
        assert cell._row_spans(big, 64, macs) is None
        assert cell._row_spans(small, 2 * T - 1, macs) is None
        assert cell._row_spans(small, 64, macs - 1) == [(0, 64)]  # (alone, on the caller)
        assert cell._row_spans(small, 2 * T, macs) == [(0, T), (T, 2 * T)]
        got = cell._row_spans(small, 9 * T + 3, macs)
        assert len(got) == 2 * fast_cells.ROW_CHUNKS
        assert got[0][0] == 0 and got[-1][1] == 9 * T + 3
        assert all(a[1] == b[0] for a, b in zip(got, got[1:]))
        assert all(b0 % T == 0 and b1 - b0 >= T for b0, b1 in got)
        sizes = [b1 - b0 for b0, b1 in got]
        assert max(sizes) - min(sizes) <= T, sizes  # (cut nearest an even share: the last not left the rest)
    with engine.split(1):
        assert cell._row_spans(small, 64, macs) is None


@needs_split
@pytest.mark.parametrize("B", [19, 35])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("scaled", [False, True], ids=["plain", "scaled"])
@pytest.mark.parametrize("kind", ["elman", "gru", "lstm"])
def test_scans_split_by_rows_equal_the_one_part_scans_bitwise(kind, B, reverse, scaled, monkeypatch):
    """Scans split by batch rows into chunks (the last one partial: 19 = 8 + 11 rows, 35 = 8 +
    8 + 8 + 11), forward and consumed backward with randomized-truncation factors, a ring run
    for its final state and the states kept at stops: bitwise the one-part scans' numbers."""
    monkeypatch.setattr(engine, "SCAN_ALONE_MACS", 1)  # (every scan split)
    spans = []
    real = engine.scan_rows
    monkeypatch.setattr(engine, "scan_rows", lambda fn, s, args_of: spans.append(s) or real(fn, s, args_of))
    cell, p, state, xp, douts, dT = _problem(kind, 40, B, T=9)
    scale = truncation_factors(9, B, 0.3, np.random.default_rng(5)).astype(f4) if scaled else None
    stops = [0, 3, 8]
    got = {}
    for P in (1, 2):
        with engine.split(P):
            out = _scan(cell, p, state, xp, douts, dT, reverse, scale)
            kept = []
            _, final, _ = scan_forward(
                cell, p, xp, state, reverse=reverse, keep=False, outputs=False, stops=stops, kept=kept
            )
        got[P] = out + list(final) + [a for k in kept for a in k]
    n = 2 if B == 19 else 4
    assert len(spans) == 3 and all(len(s) == n and s[-1] == (8 * (n - 1), B) for s in spans)
    for a, b in zip(got[2], got[1]):
        np.testing.assert_array_equal(a, b)
