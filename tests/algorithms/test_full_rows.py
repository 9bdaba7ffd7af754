"""Full BPTT as runs of batch rows side by side (bptt.algorithms.rows): with two parts on the
engine and cells whose scans split by rows, each thread runs the whole step (forward, loss,
backward) on its rows into a gradient of its own, the gradients added in a fixed order."""

import contextlib

import numpy as np
import pytest

import bptt
from bptt import fast
from bptt.algorithms import rows
from bptt.diagnostics import relative_error

pytestmark = pytest.mark.skipif(
    not fast.available()["split"], reason="no split scans (numba or NumPy's OpenBLAS missing)"
)
f4 = np.float32


@pytest.fixture
def counted(monkeypatch):
    """Every step's work worth running by rows (the threshold is for steps far bigger than
    these); returns the list of the runs of rows each step by rows took."""
    from bptt.fast import cells as fast_cells

    monkeypatch.setattr(fast_cells, "LEAF_ROWS_MACS", 0)
    taken: list = []
    real = rows.side_by_side

    def side_by_side(model, params, b, a, e, spans, *args, **kw):
        taken.append((a, e, list(spans)))
        return real(model, params, b, a, e, spans, *args, **kw)

    monkeypatch.setattr(rows, "side_by_side", side_by_side)
    return taken


def _problem(case):
    """(model, params, x, targets, state0) of a float32 model: stacked LSTM/GRU/Elman on tokens
    with a random initial state; a learned initial state; a bidirectional GRU on real inputs
    with the loss at the last step; B = 19 (runs of 8 and 11 rows)."""
    rng = np.random.default_rng(7)
    T, B, D = 23, 19, 6
    if case == "stacked":
        levels = [bptt.Recurrent("lstm", 24), bptt.Recurrent("gru", 20), bptt.Recurrent("elman", 16), bptt.Dense(D)]
        model = bptt.Model(D, levels, tokens=True)
    elif case == "learned":
        model = bptt.Model(D, [bptt.Recurrent("elman", 24, learn_init=True), bptt.Dense(D)], tokens=True)
    else:
        model = bptt.Model(D, [bptt.Recurrent("gru", 16, bidirectional=True), bptt.Dense(3)], at="last")
    params = model.init_params(np.random.default_rng(1), f4)
    params = {k: (v + 0.1 * rng.standard_normal(v.shape)).astype(f4) for k, v in params.items()}  # (biases non-zero)
    if model.tokens:
        x, y = rng.integers(0, D, (T, B)), rng.integers(0, D, (T, B))
    else:
        x, y = rng.standard_normal((T, B, D)).astype(f4), rng.integers(0, 3, B)
    state0 = None
    if case != "learned":
        s, _ = model.initial_state(params, B)
        state0 = {k: type(v)(*(rng.standard_normal(a.shape).astype(f4) for a in v)) for k, v in s.items()}
    return model, params, x, y, state0


def _close(a, b, tol):
    assert a.shape == b.shape
    assert np.abs(np.asarray(a, np.float64) - b).max() <= tol * max(1.0, np.abs(b).max()), np.abs(a - b).max()


@pytest.mark.parametrize("case", ["stacked", "learned", "bidirectional-last"])
def test_full_bptt_by_rows_equals_the_whole_step(case, counted):
    """Two parts: the step runs by rows (once, over all T steps, in runs of 8 and 11 rows);
    loss, gradients, initial-state gradients and final state those of the step on one part to
    float32 rounding and of float64 full BPTT to float32 accuracy; the same numbers bit for bit
    from one step to the next (whichever thread ran which run)."""
    from bptt.fast import engine

    model, params, x, y, state0 = _problem(case)
    T, B = x.shape[:2]
    with engine.split(1):
        one = bptt.full_bptt(model, params, x, y, state0=state0)
    assert counted == []
    with engine.split(2):
        two = bptt.full_bptt(model, params, x, y, state0=state0)
        again = bptt.full_bptt(model, params, x, y, state0=state0)
    assert counted == [(0, T, [(0, 8), (8, B)])] * 2
    p64 = {k: v.astype(np.float64) for k, v in params.items()}
    s64 = None if state0 is None else {k: type(v)(*(a.astype(np.float64) for a in v)) for k, v in state0.items()}
    ref = bptt.full_bptt(model, p64, x if model.tokens else x.astype(np.float64), y, state0=s64)
    assert abs(two.loss - one.loss) <= 1e-6 * abs(one.loss)
    assert abs(two.loss - ref.loss) <= 1e-5 * abs(ref.loss)
    for k in one.grads:
        assert two.grads[k].dtype == f4
        _close(two.grads[k], one.grads[k], 2e-6)
        assert relative_error(two.grads[k], ref.grads[k]) < 1e-4, k
        np.testing.assert_array_equal(again.grads[k], two.grads[k], err_msg=k)
    assert again.loss == two.loss
    for k in one.dstate0:
        for a, b in zip(two.dstate0[k], one.dstate0[k]):
            _close(a, b, 2e-6)
    for k in one.final_state:
        for a, b in zip(two.final_state[k], one.final_state[k]):
            _close(a, b, 2e-6)


def test_full_bptt_runs_whole_where_rows_do_not_apply(counted, centred):
    """No runs of rows with one part, a mask, a level that sees the whole batch (dropout's
    masks; a readout centred over the batch), a batch under a product tile a part (B = 15), or
    too little work (the threshold): the whole step, the one part's gradient."""
    from bptt.fast import cells as fast_cells
    from bptt.fast import engine

    model, params, x, y, state0 = _problem("stacked")
    T, B = x.shape
    mask = np.ones((T, B), bool)
    mask[15:, 3] = False
    dropped = bptt.Model(6, [bptt.Recurrent("lstm", 24), bptt.Dropout(0.3), bptt.Dense(6)], tokens=True)
    centred_model = bptt.Model(6, [bptt.Recurrent("lstm", 24), centred(6)], tokens=True)
    cases = [
        (model, dict(mask=mask)),
        (dropped, {}),
        (centred_model, {}),
        (model, dict(rows=15)),
        (model, dict(threshold=True)),
    ]
    for m, kw in cases:
        p = params if m is model else m.init_params(np.random.default_rng(1), f4)
        xb, yb = (x[:, : kw["rows"]], y[:, : kw["rows"]]) if "rows" in kw else (x, y)
        if kw.get("threshold"):
            macs = B * T * sum(v.size for k, v in p.items() if k.endswith("W_hh"))
            fast_cells.LEAF_ROWS_MACS = macs + 1  # (monkeypatched by `counted`: restored after)
        results = []
        for P in (1, 2):
            held = m.dropout(np.random.default_rng(5), xb.shape[1], f4) if m is dropped else contextlib.nullcontext()
            with held, engine.split(P):
                results.append(bptt.full_bptt(m, p, xb, yb, mask=kw.get("mask")))
        assert counted == [], kw
        for k in results[0].grads:
            _close(results[1].grads[k], results[0].grads[k], 2e-6)
        fast_cells.LEAF_ROWS_MACS = 0


def test_a_step_by_rows_builds_each_token_table_once(counted, monkeypatch):
    """The runs share their step's memo: a recurrent level's token table (a token input's
    projection, the only use of its folded bias here) is built once a step, by whichever run
    comes first, not once a run."""
    import threading
    import time

    from bptt.cells.base import Cell
    from bptt.fast import engine

    model, params, x, y, state0 = _problem("learned")  # (one recurrent level, on tokens)
    built: list = []
    real = Cell._folded_bias

    def slow(self, p):  # (slow enough that both runs reach the table before either has built it)
        built.append(threading.get_ident())
        time.sleep(0.05)
        return real(self, p)

    monkeypatch.setattr(Cell, "_folded_bias", slow)
    with engine.split(2):
        bptt.full_bptt(model, params, x, y, state0=state0)
    assert len(counted) == 1
    assert len(built) == 1, built
