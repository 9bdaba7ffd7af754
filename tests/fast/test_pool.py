"""The buffer pool (bptt.fast.pool): scratch arrays come back only when nothing else holds
them, so gradients, outputs and tapes a caller keeps are never overwritten by a later step."""

import numpy as np
import pytest

import bptt
from bptt import full_bptt
from bptt.cells import make_cell
from bptt.fast.pool import BufferPool, buffers
from bptt.scan import scan_backward, scan_forward


def test_pool_reuses_only_unreferenced_arrays():
    pool = BufferPool(size=4, min_bytes=0)
    a = pool.empty((3, 4), np.float32)
    b = pool.empty((3, 4), np.float32)
    assert a is not b and a.shape == (3, 4) and a.dtype == np.float32
    first = id(a)
    del a
    c = pool.empty((3, 4), np.float32)
    assert id(c) == first  # a was dropped: its memory comes back
    view = c[1:]
    del c
    d = pool.empty((3, 4), np.float32)
    assert id(d) != first  # a live view holds its base
    assert not np.shares_memory(d, view) and not np.shares_memory(d, b)
    del view
    assert id(pool.empty((3, 4), np.float32)) == first
    assert pool.empty((4, 3), np.float32).shape == (4, 3)  # another shape: another array
    assert pool.empty((3, 4), np.float64).dtype == np.float64


def test_pool_leaves_small_arrays_to_malloc_and_keeps_at_most_size():
    pool = BufferPool(size=3, min_bytes=1000)
    small = pool.empty((10,), np.float32)  # 40 bytes
    del small
    assert len(pool._arrays) == 0
    held = [pool.empty((300,), np.float32) for _ in range(5)]  # all referenced: 5 distinct arrays
    assert len({id(a) for a in held}) == 5 and len(pool._arrays) == 3
    del held[:]
    kept = {id(a) for a in pool._arrays}
    assert id(pool.empty((300,), np.float32)) in kept  # now unreferenced: reused
    pool.clear()
    assert pool._arrays == []


def test_outputs_and_tapes_held_by_the_caller_are_not_overwritten():
    """A caller keeps a scan's outputs and tape across later scans of the same shapes: none of
    them is handed out again (the pool's buffers hold the compiled scans' tapes too)."""
    rng = np.random.default_rng(0)
    for kind in ("elman", "gru", "lstm", "jordan"):
        cell = make_cell(kind, 3, 40)
        p = cell.init_params(rng, np.float32)
        xp = cell.project(p, rng.standard_normal((50, 8, 3)).astype(np.float32))
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(buffers, "min_bytes", 0)  # pool every array in this test
            state = cell.zero_state(8, np.float32)
            outs1, _, tape1 = scan_forward(cell, p, xp, state)
            work1 = None if tape1.aux is None else tape1.aux[0]
            kept_outs, kept_work = outs1.copy(), None if work1 is None else work1.copy()
            for _ in range(3):
                outs2, _, tape2 = scan_forward(cell, p, xp[::-1].copy(), state)
                grads = {k: np.zeros_like(v) for k, v in p.items()}
                scan_backward(cell, p, tape2, np.ones_like(outs2), cell.zero_state(8, np.float32), grads, consume=True)
                del outs2, tape2
            np.testing.assert_array_equal(outs1, kept_outs)
            if kept_work is not None:
                np.testing.assert_array_equal(work1, kept_work)


def test_repeated_training_steps_give_identical_gradients():
    model = bptt.Model(20, [bptt.Recurrent("lstm", 64), bptt.Recurrent("gru", 48), bptt.Dense(20)], tokens=True)
    params = model.init_params(np.random.default_rng(1), np.float32)
    rng = np.random.default_rng(2)
    x, y = rng.integers(0, 20, (120, 32)), rng.integers(0, 20, (120, 32))  # 120*32*256*4 B: pooled
    first = full_bptt(model, params, x, y)
    for _ in range(2):
        again = full_bptt(model, params, x, y)
        assert again.loss == first.loss
        for k in first.grads:
            np.testing.assert_array_equal(again.grads[k], first.grads[k])


def test_results_held_by_the_caller_survive_later_steps():
    """Gradients, logits and loss gradients come from the pool too (every array pooled here):
    what a caller keeps is never handed out again, whatever runs after it."""
    model = bptt.Model(
        5,
        [
            bptt.Dense(12, "tanh"),
            bptt.Recurrent("lstm", 16),
            bptt.Recurrent("gru", 8, bidirectional=True),
            bptt.Dense(7),
        ],
    )
    params = model.init_params(np.random.default_rng(3), np.float32)
    rng = np.random.default_rng(4)
    batches = [
        (rng.standard_normal((30, 6, 5)).astype(np.float32), rng.integers(0, 7, (30, 6)), rng.random((30, 6)) < 0.8)
        for _ in range(3)
    ]
    for _x, _y, m in batches:
        m[0] = True
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(buffers, "min_bytes", 0)
        kept = [full_bptt(model, params, x, y, mask=m) for x, y, m in batches[:2]]
        copies = [{k: v.copy() for k, v in g.grads.items()} for g in kept]
        logits = model.forward(params, batches[0][0])[0]
        logits_copy = logits.copy()
        dy = model.loss_fn.value_and_grad(logits, batches[0][1], batches[0][2])[1]
        dy_copy = dy.copy()
        for _ in range(2):
            full_bptt(model, params, *batches[2][:2], mask=batches[2][2])
            model.forward(params, batches[1][0])
            model.loss_fn.value_and_grad(logits * 2, batches[1][1], batches[1][2])
        for g, c in zip(kept, copies):
            for k in c:
                np.testing.assert_array_equal(g.grads[k], c[k])
        assert any(not np.array_equal(copies[0][k], copies[1][k]) for k in copies[0])
        np.testing.assert_array_equal(logits, logits_copy)
        np.testing.assert_array_equal(dy, dy_copy)


def test_pool_lends_the_front_of_a_larger_idle_array():
    """A request no idle array of its shape meets takes the front of the smallest larger idle
    one of its dtype (held while the view lives); busy or other-dtype arrays are not lent."""
    pool = BufferPool(size=8, min_bytes=0)
    big, small = pool.empty((10, 4), np.float32), pool.empty((6, 4), np.float32)
    ids = id(big), id(small)
    del big, small
    v = pool.empty((5, 4), np.float32)
    assert v.base is not None and id(v.base) == ids[1] and v.shape == (5, 4)  # the smallest that holds it
    w = pool.empty((8, 4), np.float32)
    assert id(w.base) == ids[0]
    assert not np.shares_memory(v, w)
    x = pool.empty((2, 4), np.float32)  # both lent: a new array
    assert x.base is None and not np.shares_memory(x, v) and not np.shares_memory(x, w)
    assert pool.empty((2, 4), np.float64).dtype == np.float64
    del v
    assert id(pool.empty((6,), np.float32).base) == ids[1]


def test_pool_limit_drops_idle_arrays_before_a_new_one_passes_it():
    pool = BufferPool(size=8, min_bytes=0)
    a, b = pool.empty((100,), np.float32), pool.empty((100,), np.float32)  # 400 bytes each
    del a
    pool.set_limit(500)  # b in use, 500 spare: the idle 400 stay (900 in all)
    assert len(pool._arrays) == 2 and pool.limit == 900
    c = pool.empty((200,), np.float32)  # 800 more: the idle one goes first, then still beyond: allocated anyway
    assert len(pool._arrays) == 2 and all(np.shares_memory(arr, b) or np.shares_memory(arr, c) for arr in pool._arrays)
    del c
    pool.set_limit(0)  # b in use, nothing spare: the idle 800 go now
    assert len(pool._arrays) == 1 and pool.limit == 400 and np.shares_memory(pool._arrays[0], b)
    pool.set_limit(None)
    d = pool.empty((300,), np.float32)
    assert len(pool._arrays) == 2 and d.nbytes == 1200
    del d
    pool.clear()
    assert len(pool._arrays) == 1  # b is someone's


def test_pool_drops_idle_arrays_too_small_for_a_new_one():
    """Without a limit, a request no idle array holds drops the idle arrays of its dtype that
    are smaller (steps of growing lengths would keep every length's arrays), not those in use
    or of another dtype: steps of lengths 20 to 200 hold what one 200-step step holds."""
    pool = BufferPool(size=32, min_bytes=0)
    held = pool.empty((50,), np.float32)
    other = pool.empty((10,), np.float64)
    del other
    for n in range(100, 1000, 100):  # growing: each new array finds only smaller idle ones
        a = pool.empty((n,), np.float32)
        del a
    dtypes = sorted((arr.dtype.name, arr.size) for arr in pool._arrays)
    assert dtypes == [("float32", 50), ("float32", 900), ("float64", 10)], dtypes
    assert np.shares_memory(pool._arrays[0], held) or any(np.shares_memory(arr, held) for arr in pool._arrays)
