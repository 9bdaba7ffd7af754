"""Optimizers: each against its published rule on a hand-worked step, and against torch.optim
over several steps on the same gradients."""

import math

import numpy as np
import pytest

from bptt import optim


def run(t, w, grads):
    params = {"w": np.array(w, dtype=float)}
    state = t.init(params)
    out = []
    for g in grads:
        u, state = t.update({"w": np.array(g, dtype=float)}, state, params)
        params = optim.apply_updates(params, u)
        out.append(params["w"].copy())
    return out, state


def test_sgd_and_momentum_by_hand():
    assert run(optim.sgd(0.1), [1.0], [[0.5]])[0][0] == pytest.approx([0.95])
    # v1 = 1, w = 1 - 0.1;  v2 = 0.9 + 1 = 1.9, w = 0.9 - 0.19
    ws, _ = run(optim.sgd(0.1, momentum=0.9), [1.0], [[1.0], [1.0]])
    assert [w[0] for w in ws] == pytest.approx([0.9, 0.71])
    # Nesterov: u1 = 1 + 0.9 * 1 = 1.9;  v2 = 1.9, u2 = 1 + 0.9 * 1.9 = 2.71
    ws, _ = run(optim.sgd(0.1, momentum=0.9, nesterov=True), [1.0], [[1.0], [1.0]])
    assert [w[0] for w in ws] == pytest.approx([0.81, 0.539])


def test_adaptive_rules_by_hand():
    # Adagrad: s = 4, u = 2 / 2 = 1
    assert run(optim.adagrad(0.1), [1.0], [[2.0]])[0][0][0] == pytest.approx(0.9)
    # RMSProp: s = 0.01 * 4 = 0.04, u = 2 / 0.2 = 10
    assert run(optim.rmsprop(0.1), [1.0], [[2.0]])[0][0][0] == pytest.approx(1 - 0.1 * 2 / (0.2 + 1e-8), abs=1e-15)
    # Adam, first step: m^ = g, v^ = g^2, u = g / |g| = 1 for any g
    assert run(optim.adam(0.1), [1.0], [[123.0]])[0][0][0] == pytest.approx(0.9)
    # second step with g = 0: m = 0.9*0.1*123, v = 0.999*0.001*123^2
    m, v = 0.9 * 0.1 * 123, 0.999 * 0.001 * 123**2
    u2 = (m / (1 - 0.81)) / (math.sqrt(v) / math.sqrt(1 - 0.999**2) + 1e-8)
    assert run(optim.adam(0.1), [1.0], [[123.0], [0.0]])[0][1][0] == pytest.approx(0.9 - 0.1 * u2)


def test_rprop_by_hand():
    # step 0.01; same sign -> step * 1.2; sign change -> step * 0.5 and no move; then plain step
    ws, state = run(optim.rprop(0.01), [1.0], [[1.0], [1.0], [-1.0], [-1.0]])
    assert [w[0] for w in ws] == pytest.approx([0.99, 0.978, 0.978, 0.984])
    assert state.step["w"][0] == pytest.approx(0.006)


def test_quickprop_by_hand():
    # E = (w - 3)^2, slope S = 2 (w - 3); lr 0.1, mu 1.75 (shrink factor mu / (1 + mu) = 0.636)
    # 1: no previous step: dw = -0.1 * -4 = 0.4                                 -> w = 1.4
    # 2: S = -3.2 <= 0.636 * -4: maximum step 1.75 * 0.4, plus -0.1 * S = 0.32 -> w = 2.42
    # 3: S = -1.16: parabola jump -1.16 / (-3.2 + 1.16) * 1.02 = 0.58, plus 0.116 -> w = 3.116
    # 4: S = 0.232 (minimum crossed: no gradient term), jump 0.232 / -1.392 * 0.696 -> w = 3
    quad = lambda w: [2 * (w - 3)]
    for w0, expected in [(1.0, [1.4, 2.42, 3.116, 3.0]), (5.0, [4.6, 3.58, 2.884, 3.0])]:
        t = optim.quickprop(0.1, mu=1.75)
        params = {"w": np.array([w0])}
        state, ws = t.init(params), []
        for _ in range(4):
            u, state = t.update({"w": np.array(quad(params["w"][0]))}, state, params)
            params = optim.apply_updates(params, u)
            ws.append(params["w"][0])
        assert ws == pytest.approx(expected, abs=1e-12)
    # decay adds decay * w to the slope: first step -lr * (g + decay * w)
    t = optim.quickprop(0.1, decay=0.5)
    u, _ = t.update({"w": np.array([1.0])}, t.init({"w": np.array([2.0])}), {"w": np.array([2.0])})
    assert u["w"][0] == pytest.approx(-0.1 * (1.0 + 0.5 * 2.0))
    # equal slopes (no parabola): the maximum step mu * dw_prev, plus the gradient term
    t = optim.quickprop(0.1, mu=1.75)
    p = {"w": np.array([0.0])}
    u, s = t.update({"w": np.array([-1.0])}, t.init(p), p)
    u, s = t.update({"w": np.array([-1.0])}, s, p)
    assert u["w"][0] == pytest.approx(1.75 * 0.1 + 0.1)


def test_clipping_and_guards():
    t = optim.clip_by_global_norm(1.0)
    g = {"a": np.array([3.0]), "b": np.array([4.0])}
    u, s = t.update(g, t.init(g), g)
    assert s.norm == pytest.approx(5.0) and s.clipped == 1
    assert [u["a"][0], u["b"][0]] == pytest.approx([3 / (5 + 1e-6), 4 / (5 + 1e-6)])
    u, s = t.update({"a": np.array([0.3]), "b": np.array([0.4])}, s, g)
    assert u["a"][0] == 0.3 and s.clipped == 1
    u, _ = optim.clip_by_value(0.5).update({"a": np.array([-2.0, 0.1, 3.0])}, (), g)
    assert u["a"].tolist() == [-0.5, 0.1, 0.5]

    t = optim.skip_nonfinite(optim.sgd(0.1, momentum=0.9))
    p = {"w": np.array([1.0, 2.0])}
    s = t.init(p)
    u, s = t.update({"w": np.array([1.0, 1.0])}, s, p)
    trace_before = optim.find_states(s, optim.transforms.TraceState)[0].trace["w"].copy()
    u, s = t.update({"w": np.array([np.nan, 1.0])}, s, p)
    assert s.skipped == 1 and s.last_skipped and not u["w"].any()
    np.testing.assert_array_equal(optim.find_states(s, optim.transforms.TraceState)[0].trace["w"], trace_before)


def test_float32_stays_float32():
    p = {"w": np.ones(3, np.float32)}
    for t in [
        optim.sgd(0.1, 0.9, True),
        optim.adagrad(0.1),
        optim.rmsprop(0.1),
        optim.adam(0.1),
        optim.rprop(0.1),
        optim.quickprop(0.1),
        optim.make_optimizer("adam", optim.warmup_cosine(1e-3, 2, 10), clip=1.0),
    ]:
        s = t.init(p)
        for _ in range(3):
            u, s = t.update({"w": np.array([0.5, -1.0, 2.0], np.float32)}, s, p)
            assert u["w"].dtype == np.float32
            p = optim.apply_updates(p, u)
            assert p["w"].dtype == np.float32


def test_schedules():
    assert optim.constant(0.3)(1000) == 0.3
    s = optim.warmup_cosine(1.0, 4, 14, end=0.1)
    assert [s(n) for n in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert s(4) == pytest.approx(1.0)
    assert s(9) == pytest.approx(0.55)  # half way down the cosine
    assert s(14) == pytest.approx(0.1) and s(100) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="expected 0 <= warmup < total"):
        optim.warmup_cosine(1.0, 10, 10)


def test_state_round_trip():
    t = optim.make_optimizer("adam", 0.01, clip=1.0)
    p = {"a": np.ones((2, 3)), "b": np.zeros(4)}
    s = t.init(p)
    s = t.update({"a": np.ones((2, 3)), "b": np.ones(4)}, s, p)[1]
    flat = optim.flatten_state(s)
    back = optim.unflatten_state(t.init(p), flat)
    assert optim.flatten_state(back).keys() == flat.keys()
    for k in flat:
        np.testing.assert_array_equal(optim.flatten_state(back)[k], flat[k])
    bad = dict(flat)
    bad[next(k for k in flat if k.endswith("/a"))] = np.ones((3, 2))
    with pytest.raises(ValueError, match="expected float64"):
        optim.unflatten_state(t.init(p), bad)


def test_make_optimizer_rejects_unknown():
    with pytest.raises(ValueError, match="expected one of .* received 'adamw'"):
        optim.make_optimizer("adamw", 0.1)


# ---- against torch.optim ---------------------------------------------------------------------
torch = pytest.importorskip("torch")


@pytest.mark.parametrize(
    "ours,theirs",
    [
        (lambda: optim.sgd(0.05), lambda p: torch.optim.SGD(p, lr=0.05)),
        (lambda: optim.sgd(0.05, 0.9), lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)),
        (lambda: optim.sgd(0.05, 0.9, True), lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True)),
        (lambda: optim.adagrad(0.05), lambda p: torch.optim.Adagrad(p, lr=0.05)),
        (lambda: optim.rmsprop(0.01), lambda p: torch.optim.RMSprop(p, lr=0.01)),
        (lambda: optim.adam(0.01), lambda p: torch.optim.Adam(p, lr=0.01)),
        (lambda: optim.adam(0.01, weight_decay=0.1), lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1)),
        (lambda: optim.rprop(0.01), lambda p: torch.optim.Rprop(p, lr=0.01)),
    ],
    ids=["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw", "rprop"],
)
def test_matches_torch_optim(ours, theirs):
    rng = np.random.default_rng(0)
    params = {"a": rng.standard_normal((3, 4)), "b": rng.standard_normal(5)}
    tparams = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in params.items()}
    opt_t = theirs(list(tparams.values()))
    t = ours()
    state = t.init(params)
    for step in range(8):
        # alternate signs now and then so that Rprop's sign logic is exercised
        grads = {k: rng.standard_normal(v.shape) * (1 if step % 3 else -1) for k, v in params.items()}
        u, state = t.update(grads, state, params)
        params = optim.apply_updates(params, u)
        for k, tp in tparams.items():
            tp.grad = torch.tensor(grads[k])
        opt_t.step()
        for k in params:
            np.testing.assert_allclose(params[k], tparams[k].detach().numpy(), rtol=1e-12, atol=1e-14)


def test_clip_matches_torch():
    rng = np.random.default_rng(1)
    g = {"a": rng.standard_normal((3, 4)) * 3, "b": rng.standard_normal(5)}
    tp = [
        torch.zeros(3, 4, dtype=torch.float64, requires_grad=True),
        torch.zeros(5, dtype=torch.float64, requires_grad=True),
    ]
    tp[0].grad, tp[1].grad = torch.tensor(g["a"]), torch.tensor(g["b"])
    norm = torch.nn.utils.clip_grad_norm_(tp, 2.0)
    t = optim.clip_by_global_norm(2.0)
    u, s = t.update(g, t.init(g), g)
    assert s.norm == pytest.approx(norm.item(), rel=1e-14)
    np.testing.assert_allclose(u["a"], tp[0].grad.numpy(), rtol=1e-14)


def test_reduce_on_plateau_cuts_one_value_before_torchs_and_refuses_patience_zero():
    """optax's rule: the scale is cut at every patience-th value in a row without a new lowest
    one, one value before torch's ReduceLROnPlateau (mode 'min', threshold 0) of the same
    patience, i.e. as torch's with patience + 1; patience 0 is refused where it is built (it
    divided by zero at the first such value)."""
    torch = pytest.importorskip("torch")
    from bptt.errors import BpttError
    from bptt.optim.transforms import reduce_on_plateau

    values = [1.0, 0.9] + [0.95] * 6 + [0.8, 0.9, 0.9, 0.9]
    for n in (1, 2, 3):
        t = reduce_on_plateau(0.5, n)
        state, ours = t.init({}), []
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, "min", factor=0.5, patience=n - 1, threshold=0.0)
        theirs = []
        for v in values:
            state = t.observe(state, v)
            ours.append(state.scale)
            sched.step(v)
            theirs.append(opt.param_groups[0]["lr"])
        assert ours == theirs, (n, ours, theirs)
    with pytest.raises(BpttError, match="patience: expected an integer >= 1, received 0"):
        reduce_on_plateau(0.5, 0)


def test_global_norm_of_float32_arrays_that_overflow_float32_is_summed_again_in_float64():
    """A float32 gradient whose squares overflow float32 (3e19: 9e38 > 3.4e38) has its norm
    summed again in float64, without a warning (a float32 dot gave inf, and clipping then left
    a non-finite state a checkpoint could not hold); a norm that fits float32 is BLAS's own."""
    import warnings

    from bptt.optim.base import global_norm

    g = {"w": np.full(4, 3e19, np.float32), "b": np.ones(2, np.float32)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert global_norm(g) == pytest.approx(6e19, rel=1e-6)
    small = {"w": np.arange(5, dtype=np.float32)}
    assert global_norm(small) == float(np.sqrt(float(np.dot(small["w"], small["w"]))))
