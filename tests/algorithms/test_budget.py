"""Memory-budgeted BPTT: plans (revolve's closed form, the mixed program against exhaustive
search), and the executor against full BPTT on every unidirectional case, every budget down to
the smallest, both policies."""

import contextlib
import heapq
from functools import cache
from math import comb

import numpy as np
import pytest

import bptt
from bptt.algorithms import make
from bptt.algorithms.budget import measure_storage, parse_bytes
from bptt.algorithms.plan import (
    Leaf,
    Split,
    Storage,
    count,
    expand,
    measure,
    plan,
    revolve_advances,
    revolve_split,
    runs,
)
from bptt.diagnostics import random_problem, standard_cases, variant_cases
from bptt.errors import BpttError


# ---- revolve -------------------------------------------------------------------------------------
@cache
def t_recursion(l, s):
    """Griewank's recursion: advances to reverse l steps with s states held at once."""
    if l == 1:
        return 0
    if s == 1:
        return l * (l - 1) // 2
    return min(m + t_recursion(l - m, s - 1) + t_recursion(m, s) for m in range(1, l))


@pytest.mark.parametrize("s", range(1, 8))
def test_revolve_closed_form_and_split_are_the_recursions_optimum(s):
    for l in range(1, 90):
        assert revolve_advances(l, s) == t_recursion(l, s), (l, s)
        if s >= 2 and l >= 2:
            m = revolve_split(l, s)
            assert m + t_recursion(l - m, s - 1) + t_recursion(m, s) == t_recursion(l, s), (l, s, m)


STORAGE = Storage(state=100, step=350, segment=50)


@pytest.mark.parametrize("T", [1, 2, 7, 50, 333, 1000])
@pytest.mark.parametrize("frac", [0.0, 0.02, 0.1, 0.5])
def test_revolve_plans_count_what_the_closed_form_says(T, frac):
    budget = max(STORAGE.leaf(1), int(frac * STORAGE.leaf(T)))
    p = plan(T, budget, STORAGE)
    assert count(p.root) == p.forward_steps
    assert measure(p.root, STORAGE) == (p.peak_bytes, p.states) and p.peak_bytes <= budget
    if p.policy == "revolve":
        s = 1 + (budget - STORAGE.leaf(1)) // STORAGE.state
        assert p.forward_steps == revolve_advances(T, min(s, T)) + T


def test_revolve_plans_are_lazy_and_the_smallest_budget_is_named():
    """A revolve plan of any length is its closed form and a root expanded on demand (planning
    time is a benchmark's figure, not a test's: `bptt plan` prints it)."""
    from bptt.algorithms.plan import Revolve

    p = plan(100_000, 2 * 10**9, Storage(8192, 28672, 8192))
    assert isinstance(p.root, Revolve) and p.forward_steps > 100_000
    with pytest.raises(
        BpttError, match=r"memory budget: expected at least 0.00 MiB \(400 bytes: one step's caches\), received"
    ):
        plan(10, 399, STORAGE)
    assert plan(10, STORAGE.leaf(10), STORAGE).policy == "full"


# ---- the mixed program against exhaustive search ----------------------------------------------------
RUNS = 1000  # more than any small plan's runs


def exhaustive(T: int, M: int, st: Storage) -> tuple[int, int]:
    """The fewest forward steps, and then the fewest runs (advances and recorded segments),
    over every strategy of the executor's memory model, found by Dijkstra: from a stored state
    (or the initial one) advance and store another state, or advance and record the steps up
    to the backward frontier and backpropagate them (the stored states and the recorded steps
    must fit in M). Costs are steps * RUNS + runs."""
    start = (T, frozenset())
    dist = {start: 0}
    heap = [(0, T, ())]
    while heap:
        d, b, S = heapq.heappop(heap)
        S = frozenset(S)
        if b == 0:
            return divmod(d, RUNS)
        if dist.get((b, S), 1 << 60) < d:
            continue
        held = len(S) * st.state
        for s in [0, *S]:
            if s >= b:
                continue
            for q in range(s, b):  # record [q, b) after advancing s -> q
                if held + st.leaf(b - q) <= M:
                    key = (q, frozenset(x for x in S if x < q))
                    nd = d + ((q - s) + (b - q)) * RUNS + (q > s) + 1
                    if nd < dist.get(key, 1 << 60):
                        dist[key] = nd
                        heapq.heappush(heap, (nd, q, tuple(sorted(key[1]))))
            for q in range(s + 1, b):  # store the state at q
                if q not in S and held + st.state + st.leaf(1) <= M:
                    key = (b, S | {q})
                    nd = d + (q - s) * RUNS + 1
                    if nd < dist.get(key, 1 << 60):
                        dist[key] = nd
                        heapq.heappush(heap, (nd, b, tuple(sorted(key[1]))))
    raise AssertionError("no strategy")


@pytest.mark.parametrize("st", [Storage(1, 2), Storage(2, 3, 1), Storage(1, 4)], ids=str)
def test_mixed_plans_are_the_exhaustive_optimum_on_small_T(st):
    for T in range(1, 8):
        for M in range(st.leaf(1), st.leaf(T) + 2):
            p = plan(T, M, st, "mixed")
            assert (p.forward_steps, runs(p.root)) == exhaustive(T, M, st), (T, M)
            assert count(p.root) == p.forward_steps and measure(p.root, st)[0] <= M


def test_mixed_never_needs_more_than_revolve_or_equal_segments():
    """Nor more than segments of one length k with the state stored at each (a remainder
    first): 2T - k forward steps for the longest k that fits."""
    st = Storage(8192, 28672, 8192)
    for T in (40, 300, 1000):
        for frac in (0.01, 0.04, 0.2):
            budget = max(st.leaf(1), int(frac * st.leaf(T)))
            p = plan(T, budget, st, "mixed")
            assert p.forward_steps <= plan(T, budget, st, "revolve").forward_steps
            fits = [k for k in range(1, T) if max(-(-T // k) - 2, 0) * st.state + st.leaf(k) <= budget]
            if fits:
                assert p.forward_steps <= 2 * T - max(fits), (T, frac)
            assert p.peak_bytes <= budget and count(p.root) == p.forward_steps


def test_a_budget_under_a_block_of_the_program_still_plans():
    """Above MIXED_BLOCKS steps the program records blocks of T / 256 steps or more; a budget
    under one such block (it used to make the program's tables negative) gets revolve's plan
    or segments of one length, whichever runs fewer forward steps."""
    st = Storage(32768, 153187, 477253)
    for T, budget in ((100_000, 15_000_000), (20_000, 2_000_000), (1_000, st.leaf(1))):
        p, r = plan(T, budget, st, "mixed"), plan(T, budget, st, "revolve")
        assert p.peak_bytes <= budget and p.forward_steps <= r.forward_steps


# ---- the executor against full BPTT ------------------------------------------------------------------
CASES = [c for c in standard_cases() + variant_cases() if not c.bidirectional and not c.build().bidirectional]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name + (f"[{c.variant}]" if c.variant else ""))
@pytest.mark.parametrize("policy", ["revolve", "mixed"])
def test_budgeted_gradients_equal_full_bptt(case, policy):
    """Every budget from the smallest feasible (one step's tapes) to more than full BPTT's:
    float64 gradients within 1e-15 relative of full BPTT's (the top level's recurrent weights
    bitwise), the executed forward steps those planned, the stored bytes within the budget."""
    model = case.build()
    p = random_problem(model, np.random.default_rng(0), masked=case.masked)
    T = p.x.shape[0]
    full = bptt.full_bptt(model, p.params, p.x, p.targets, mask=p.mask, state0=p.state0)
    st = measure_storage(model, p.params, p.x.shape[1], p.mask is not None)
    top = [lv for lv in model.recurrent_levels][-1].name
    for budget in sorted(
        {st.leaf(1), st.leaf(1) + st.state, st.leaf(2) + 2 * st.state, max(st.leaf(T) // 2, st.leaf(1)), st.leaf(T) + 1}
    ):
        algo = make("budget", budget=budget, policy=policy)
        g = algo(model, p.params, p.x, p.targets, mask=p.mask, state0=p.state0)
        assert algo.stats["forward_steps"] == algo.stats["planned_forward_steps"]
        assert algo.stats["peak_bytes"] <= budget
        assert g.loss == pytest.approx(full.loss, rel=1e-14)
        for k in full.grads:
            err = np.abs(g.grads[k] - full.grads[k]).max() / max(np.abs(full.grads[k]).max(), 1e-300)
            assert err <= 1e-15 * 2, (budget, k, err)
            if k.startswith(top + ".") and k.endswith("W_hh") and model.loss_fn.kind == "mse":
                np.testing.assert_array_equal(g.grads[k], full.grads[k], err_msg=k)
        for k in full.dstate0:
            for a, b in zip(g.dstate0[k], full.dstate0[k]):
                assert np.abs(a - b).max() <= 2e-15 * np.abs(b).max(), (budget, k)
        for k in full.final_state:
            for a, b in zip(g.final_state[k], full.final_state[k]):
                np.testing.assert_array_equal(a, b)


def test_float32_on_the_compiled_scans_agrees_with_full_bptt():
    model = bptt.Model(9, [bptt.rnn("lstm", 32), bptt.rnn("gru", 16), bptt.Dense(9)], tokens=True)
    params = model.init_params(np.random.default_rng(1), np.float32)
    rng = np.random.default_rng(2)
    x, y = rng.integers(0, 9, (60, 4)), rng.integers(0, 9, (60, 4))
    full = bptt.full_bptt(model, params, x, y)
    st = measure_storage(model, params, 4)
    for policy in ("revolve", "mixed"):
        g = make("budget", budget=st.leaf(60) // 10, policy=policy)(model, params, x, y)
        for k in full.grads:
            assert np.abs(g.grads[k] - full.grads[k]).max() <= 2e-5 * max(1.0, np.abs(full.grads[k]).max()), k


@pytest.mark.parametrize("policy", ["revolve", "mixed"])
def test_a_chain_of_advances_runs_as_one_scan_with_the_same_numbers(monkeypatch, policy):
    """On the compiled float32 scans, advances that store a state and go on from it (a plan's
    right spine) run as one scan keeping the states at the store points: several times fewer
    advance calls than store points, and the gradient bitwise the walk's without chains."""
    from bptt.algorithms import budget as executor

    model = bptt.Model(9, [bptt.rnn("lstm", 32), bptt.Dense(9)], tokens=True)
    params = model.init_params(np.random.default_rng(1), np.float32)
    rng = np.random.default_rng(2)
    x, y = rng.integers(0, 9, (200, 4)), rng.integers(0, 9, (200, 4))
    budget = measure_storage(model, params, 4).leaf(200) // 25
    calls = []
    real = model.forward_levels
    monkeypatch.setattr(model, "forward_levels", lambda *a, **k: calls.append(k) or real(*a, **k))
    walk = executor.walk
    got = {}
    for chains in (True, False):
        calls.clear()
        monkeypatch.setattr(executor, "walk", lambda *a, chains=None, _c=chains, **k: walk(*a, chains=_c, **k))
        algo = make("budget", budget=budget, policy=policy)
        got[chains] = algo(model, params, x, y)
        assert algo.stats["forward_steps"] == algo.stats["planned_forward_steps"]
        got[chains, "advances"] = sum(not k["keep"] for k in calls)
        got[chains, "stops"] = sum(len(k.get("stops", ())) for k in calls)
    assert got[False, "stops"] == 0 and got[True, "stops"] >= 10
    assert got[True, "advances"] * 2 <= got[False, "advances"], (got[True, "advances"], got[False, "advances"])
    assert got[True].loss == got[False].loss
    for k in got[False].grads:
        np.testing.assert_array_equal(got[True].grads[k], got[False].grads[k], err_msg=k)


def test_budget_errors():
    model = bptt.Model(3, [bptt.rnn("lstm", 4), bptt.Dense(2)], loss="mse")
    params = model.init_params(0)
    x, y = np.zeros((10, 2, 3)), np.zeros((10, 2, 2))
    with pytest.raises(
        BpttError, match=r"memory budget: expected at least .* one step's caches\), received 0.00 MiB \(10 bytes\)"
    ):
        make("budget", budget=10)(model, params, x, y)
    bi = bptt.Model(3, [bptt.rnn("lstm", 4, bidirectional=True), bptt.Dense(2)], loss="mse")
    with pytest.raises(BpttError, match=r"memory budget: expected at least .* for a bidirectional model, received"):
        make("budget", budget=10)(bi, bi.init_params(0), x, y)
    with pytest.raises(BpttError, match="memory policy: expected one of revolve, mixed, received 'mix'"):
        make("budget", budget="1MB", policy="mix")


def test_parse_bytes():
    assert parse_bytes("64MB") == 64 * 10**6 and parse_bytes("1.5GiB") == int(1.5 * 2**30)
    assert parse_bytes("800kb") == 800_000 and parse_bytes(4096) == 4096 and parse_bytes("512") == 512
    for bad in ("lots", "-3MB", 0, "1.5TB"):
        with pytest.raises(BpttError, match="memory budget: expected"):
            parse_bytes(bad)


def test_plans_walk_like_their_trees():
    p = plan(50, STORAGE.leaf(50) // 5, STORAGE, "mixed")
    leaves, stack = [], [p.root]
    while stack:
        n = expand(stack.pop())
        if isinstance(n, Leaf):
            leaves.append((n.a, n.b))
        else:
            assert isinstance(n, Split) and n.a <= n.y < n.b
            stack.append(n.right)
            if n.left is not None:
                stack.append(n.left)
    assert sorted(leaves) == sorted(set(leaves)) and sum(b - a for a, b in leaves) == 50  # each step recorded once
    assert comb(4, 2) == 6  # (math.comb, as the closed form uses)


@pytest.mark.parametrize(
    "policy,tokens,rows",
    [
        ("revolve", True, False),
        ("revolve", False, False),
        ("mixed", True, False),
        ("mixed", False, False),
        ("mixed", True, True),
    ],
)
def test_what_a_budgeted_step_allocates_stays_within_its_plan(policy, tokens, rows, monkeypatch, allocated_peak):
    """The arrays a float32 step allocates at their peak (tracemalloc; the buffer pool emptied
    first), less the weight-sized arrays the step holds whatever the budget (the gradients;
    the recurrent weights packed forward and backward, and their gradient's product), stay
    within the plan's peak bytes and six steps' worth (measured: -2.4 to +2.3 steps; the
    Python objects and small arrays), for
    budgets from 3% to 30% of full BPTT's; and the executor's own count of stored states and
    tapes within the plan's. rows: on two threads with every long segment in runs of batch rows
    side by side (their second gradient within the budget: the plan is made without it)."""
    split = contextlib.nullcontext
    if rows:
        _needs_split()
        from bptt.fast import cells as fast_cells
        from bptt.fast import engine

        monkeypatch.setattr(fast_cells, "LEAF_ROWS_MACS", 0)
        split = lambda: engine.split(2)  # noqa: E731

    D, H, B, T = 11, 128, 16, 300
    model = bptt.Model(D, [bptt.rnn("lstm", H), bptt.rnn("gru", 64), bptt.Dense(D)], tokens=tokens)
    params = model.init_params(np.random.default_rng(3), np.float32)
    rng = np.random.default_rng(4)
    x = rng.integers(0, D, (T, B)) if tokens else rng.standard_normal((T, B, D)).astype(np.float32)
    y = rng.integers(0, D, (T, B))
    st = measure_storage(model, params, B)
    for frac in (0.03, 0.1, 0.3):
        algo = make("budget", budget=int(frac * st.leaf(T)), policy=policy)
        with split():
            allocated = allocated_peak(algo, model, params, x, y)
        planned = algo.stats["planned_peak_bytes"]
        assert algo.stats["peak_bytes"] <= planned <= frac * st.leaf(T)
        if rows:  # (at 3% the plan less a gradient advances over ROW_STEPS times more: whole)
            assert (algo.stats["row_segments"] > 0) == (frac > 0.05), frac
            planned += sum(v.nbytes for v in params.values())  # (the second run's gradient)
        assert allocated <= planned + 6 * st.step, (frac, (allocated - planned) / st.step)


def test_a_plan_counts_what_each_stored_state_holds():
    """A stored state holds its Python objects and the walk's entries for it beside its
    arrays (0.7 KiB; LSTM 64 at B = 8: 4 KiB of arrays): a revolve plan that stores hundreds
    of states stays within its peak and one step's working memory (what full BPTT over one
    step allocates at its peak; tracemalloc, the buffer pool emptied first), give or take a
    tenth of a state for each state stored (the many calls' small objects: 0.04 measured;
    counting the arrays alone, 0.2 over)."""
    import tracemalloc

    from bptt import ops
    from bptt.algorithms.full import full_bptt

    model = bptt.Model(5, [bptt.rnn("lstm", 64), bptt.Dense(5)], tokens=True)
    params = model.init_params(np.random.default_rng(3), np.float32)
    rng = np.random.default_rng(4)
    T, B = 2000, 8
    x, y = rng.integers(0, 5, (T, B)), rng.integers(0, 5, (T, B))
    st = measure_storage(model, params, B)
    budget = st.leaf(1) + 400 * st.state
    states = plan(T, budget, st).states
    assert states >= 300

    def traced(run):
        run()  # (plans, loads kernels)
        ops.release()
        tracemalloc.start()
        try:
            run()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            ops.release()

    algo = make("budget", budget=budget)
    peak = traced(lambda: algo(model, params, x, y))
    one = traced(lambda: full_bptt(model, params, x[:1], y[:1]))
    over = (peak - algo.stats["planned_peak_bytes"] - one) / st.state  # in states
    assert over <= 0.1 * states, over


# ---- runs of batch rows side by side ------------------------------------------------------------
def _needs_split():
    from bptt import fast

    if not fast.available()["split"]:
        pytest.skip("no split scans (numba or NumPy's OpenBLAS missing)")


def _row_problem(kind, learn_init=False, B=19, T=120):
    """A float32 two-level token model (kind, then LSTM 24, readout), a batch and a random
    initial state."""
    D = 9
    model = bptt.Model(D, [bptt.rnn(kind, 32, learn_init=learn_init), bptt.rnn("lstm", 24), bptt.Dense(D)], tokens=True)
    params = model.init_params(np.random.default_rng(1), np.float32)
    rng = np.random.default_rng(2)
    x, y = rng.integers(0, D, (T, B)), rng.integers(0, D, (T, B))
    state0, _ = model.initial_state(params, B)
    if not learn_init:
        state0 = {k: type(s)(*(rng.standard_normal(a.shape).astype(np.float32) for a in s)) for k, s in state0.items()}
    return model, params, x, y, state0


@pytest.mark.parametrize("kind,learn_init", [("lstm", False), ("gru", False), ("elman", True)])
def test_mixed_segments_run_by_rows_side_by_side_give_full_bptts_gradient(kind, learn_init, monkeypatch):
    """With two parts, the mixed policy records and backpropagates each segment as runs of
    batch rows side by side (B = 19: rows 0-7 and 8-18), each into a gradient of its own:
    loss, gradients, initial-state gradients and final state those of full BPTT to float32
    rounding, every forward step the plan's, the plan within the budget less the second run's
    gradient, and the numbers bitwise the same from one step to the next (whichever thread ran
    which run)."""
    _needs_split()
    from bptt.fast import cells as fast_cells
    from bptt.fast import engine

    monkeypatch.setattr(fast_cells, "LEAF_ROWS_MACS", 0)  # (segments of these small cells are short)
    model, params, x, y, state0 = _row_problem(kind, learn_init)
    T, B = x.shape
    full = bptt.full_bptt(model, params, x, y, state0=None if learn_init else state0)
    budget = measure_storage(model, params, B).leaf(T) // 6
    algo = make("budget", budget=budget, policy="mixed")
    with engine.split(2):
        g = algo(model, params, x, y, state0=None if learn_init else state0)
        again = algo(model, params, x, y, state0=None if learn_init else state0)
    stats = algo.stats
    assert stats["row_segments"] >= 3, stats
    assert stats["forward_steps"] == stats["planned_forward_steps"]
    gradient = sum(v.nbytes for v in params.values())
    assert stats["planned_peak_bytes"] <= budget - gradient
    assert abs(g.loss - full.loss) <= 1e-6 * abs(full.loss)
    for k in full.grads:
        assert np.abs(g.grads[k] - full.grads[k]).max() <= 2e-5 * max(1.0, np.abs(full.grads[k]).max()), k
        np.testing.assert_array_equal(again.grads[k], g.grads[k], err_msg=k)
    for k in full.dstate0:
        for a, b in zip(g.dstate0[k], full.dstate0[k]):
            assert np.abs(a - b).max() <= 2e-5 * max(1.0, np.abs(b).max()), k
    for k in full.final_state:
        for a, b in zip(g.final_state[k], full.final_state[k]):
            assert a.shape == b.shape and np.abs(a - b).max() <= 1e-5, k
    # the threshold between the segments' lengths: the longest segments by rows, the others whole
    from bptt.algorithms.plan import Leaf, nodes

    every = stats["row_segments"]
    with engine.split(2):
        b = model.check_batch(params, x, y, None, None)
        q, _ = algo.by_rows(model, params, b, algo.plan_for(model, params, T, B))
    steps = sorted(n.b - n.a for n in nodes(q.root) if isinstance(n, Leaf))
    assert steps[0] < steps[-1], steps
    macs = B * sum(v.size for k, v in params.items() if k.endswith("W_hh"))
    monkeypatch.setattr(fast_cells, "LEAF_ROWS_MACS", steps[-1] * macs)
    with engine.split(2):
        some = algo(model, params, x, y, state0=None if learn_init else state0)
    assert 0 < algo.stats["row_segments"] < every, (algo.stats, every)
    for k in full.grads:
        assert np.abs(some.grads[k] - full.grads[k]).max() <= 2e-5 * max(1.0, np.abs(full.grads[k]).max()), k


def test_segments_run_whole_where_rows_do_not_apply(monkeypatch, centred):
    """No runs of rows with one part, with the revolve policy (segments of one step), with a
    level that sees the whole batch (dropout's masks held; a user's subclass of Dense that
    centres over the batch), or with a mask (through the algorithm, and given to execute
    directly with runs of rows): the same gradient as full BPTT, every segment whole."""
    _needs_split()
    from bptt.algorithms.budget import execute
    from bptt.fast import cells as fast_cells
    from bptt.fast import engine

    monkeypatch.setattr(fast_cells, "LEAF_ROWS_MACS", 0)
    model, params, x, y, _ = _row_problem("lstm")
    T, B = x.shape
    budget = measure_storage(model, params, B).leaf(T) // 6
    mask = np.ones((T, B), bool)
    mask[100:, 3] = False
    dropped = bptt.Model(9, [bptt.rnn("lstm", 32), bptt.Dropout(0.3), bptt.Dense(9)], tokens=True)
    dparams = dropped.init_params(np.random.default_rng(1), np.float32)
    centred_model = bptt.Model(9, [bptt.rnn("lstm", 32), centred(9)], tokens=True)
    cparams = centred_model.init_params(np.random.default_rng(1), np.float32)
    assert bptt.Dense.rowwise and not centred.rowwise
    cases = [
        (1, "mixed", model, params, None),
        (2, "revolve", model, params, None),
        (2, "mixed", model, params, mask),
        (2, "mixed", dropped, dparams, None),
        (2, "mixed", centred_model, cparams, None),
    ]
    for P, policy, m, p, msk in cases:
        algo = make("budget", budget=budget, policy=policy)
        with m.dropout(np.random.default_rng(5), B, np.float32) if m is dropped else contextlib.nullcontext():
            with engine.split(P):
                g = algo(m, p, x, y, mask=msk)
            full = bptt.full_bptt(m, p, x, y, mask=msk)
        assert algo.stats["row_segments"] == 0, (P, policy)
        for k in full.grads:
            assert np.abs(g.grads[k] - full.grads[k]).max() <= 2e-5 * max(1.0, np.abs(full.grads[k]).max()), k
    algo = make("budget", budget=budget, policy="mixed")
    b = model.check_batch(params, x, y, mask, None)
    with engine.split(2):
        g, stats = execute(model, params, b, algo.plan_for(model, params, T, B, True), rows=[(0, 8), (8, B)])
    full = bptt.full_bptt(model, params, x, y, mask=mask)
    assert stats["row_segments"] == 0
    for k in full.grads:
        assert np.abs(g.grads[k] - full.grads[k]).max() <= 2e-5 * max(1.0, np.abs(full.grads[k]).max()), k


def test_a_budget_plans_for_each_model_apart():
    """One Budget used for several models keeps each model's plans apart and no longer than
    the model: a model garbage-collected leaves none behind (a plan keyed by id() went to the
    next model at that address), and a bidirectional model too big for the budget is refused
    even after a small one with the same level names was planned."""
    import gc

    rng = np.random.default_rng(0)
    T, B, D = 30, 4, 5
    x, y = rng.integers(0, D, (T, B)), rng.integers(0, D, (T, B))
    algo = make("budget", budget=60_000, policy="mixed")
    small = bptt.Model(D, [bptt.rnn("lstm", 4), bptt.Dense(D)], tokens=True)
    algo(small, small.init_params(np.random.default_rng(1)), x, y)
    assert len(algo._plans) == 1
    del small
    gc.collect()
    assert len(algo._plans) == 0
    bi = bptt.Model(D, [bptt.rnn("lstm", 4, bidirectional=True), bptt.Dense(D)], tokens=True)
    algo(bi, bi.init_params(np.random.default_rng(1)), x, y)
    big = bptt.Model(D, [bptt.rnn("lstm", 64, bidirectional=True), bptt.Dense(D)], tokens=True)
    with pytest.raises(BpttError, match="memory budget: expected at least"):
        make("budget", budget=60_000, policy="mixed")(big, big.init_params(np.random.default_rng(1)), x, y)
    with pytest.raises(BpttError, match="memory budget: expected at least"):
        algo(big, big.init_params(np.random.default_rng(1)), x, y)


def test_a_bidirectional_model_is_held_to_its_budget_at_every_call():
    """The plans of a bidirectional model are made for the budget left after the levels' held
    arrays, which a Dropout level's held masks change: a budget between the least without and
    the least with masks held runs without them and is refused with them (the first call's
    plans would run over it), however the calls come; and a sequence of 15 steps never needs
    more than one of 16 (a step's memory measured on 16 steps, not on a whole 4-step segment)."""
    model = bptt.Model(
        3,
        [*bptt.rnn("lstm", 6, bidirectional=True), bptt.Dropout(0.5), *bptt.rnn("gru", 6, bidirectional=True)]
        + [bptt.Dense(2)],
        loss="mse",
    )
    rng = np.random.default_rng(0)
    params = model.init_params(rng)
    T, B = 40, 4
    x, y = rng.standard_normal((T, B, 3)), rng.standard_normal((T, B, 2))

    def least(held):
        with model.dropout(np.random.default_rng(1), B, np.float64) if held else contextlib.nullcontext():
            with pytest.raises(BpttError, match="memory budget: expected at least") as e:
                make("budget", budget=1)(model, params, x, y)
        return int(str(e.value).split("(")[1].split(" bytes")[0].replace(",", ""))

    lo, hi = least(False), least(True)
    assert lo < hi
    algo = make("budget", budget=(lo + hi) // 2)
    algo(model, params, x, y)
    assert algo.stats["peak_bytes"] <= algo.budget
    with model.dropout(np.random.default_rng(1), B, np.float64), pytest.raises(BpttError, match="expected at least"):
        algo(model, params, x, y)
    # the least budget grows with T
    mins = {}
    for n in (15, 16):
        with pytest.raises(BpttError, match="expected at least") as e:
            make("budget", budget=1)(model, params, x[:n], y[:n])
        mins[n] = int(str(e.value).split("(")[1].split(" bytes")[0].replace(",", ""))
    assert mins[15] <= mins[16], mins
