"""Forward-mode products of one step (cells' `step_jvp`, bptt.jvp.step_jvp).

- Every cell (all options that change its backward step): the dot-product test <u, JVP v> =
  <VJP u, v> with VJP = step_back, float64, random non-zero biases and states, within 1e-12
  relative; spikes, surrogates and refractory steps non-trivial (the surrogate is the same).
- The smooth maps by central differences (independent of step_back): a dropped term fails.
- The model: jvp.step_jvp(model, ...) v = A v, A = dS(t)/dS(t-1) built row by row from the
  model's one-step VJPs as bptt.algorithms.forward's `_Step.jacobians` does, for stacked levels
  (feed-forward levels between them, tokens, spiking levels), with and without a mask, float64
  (1e-12) and float32 (1e-5; bptt.fast's tapes where the kernels are on).
"""

from __future__ import annotations

import numpy as np
import pytest

import bptt
from bptt import jvp
from bptt.algorithms.forward import _Flat, _Step
from bptt.cells import make_cell
from bptt.cells.spiking import LIF
from bptt.errors import BpttError
from bptt.tape import Tape

D, H, B = 3, 5, 4

SPIKE_OPTIONS = [
    {"reset": r, "detach_reset": d, "refractory": n}
    for r in ("subtract", "zero")
    for d in (False, True)
    for n in (0, 2)
]
CELL_CASES = [
    *(("elman", {"activation": a}) for a in ("tanh", "relu", "sigmoid", "identity")),
    ("jordan", {"output_size": 4}),
    ("jordan", {"output_size": 4, "out_activation": "sigmoid", "context_decay": 0.5}),
    ("gru", {}),
    ("lstm", {}),
    *(("lif", o) for o in SPIKE_OPTIONS),
    ("lif", {"recurrent": False}),
    ("lif", {"learn_decay": True, "surrogate": "triangle", "surrogate_scale": 0.3}),
    ("lif", {"surrogate": "arctan", "reset": "zero"}),
    *(("alif", {"adapt_strength": 0.4, "adapt_decay": 0.8, **o}) for o in SPIKE_OPTIONS),
    ("alif", {"surrogate": "triangle", "learn_decay": True, "refractory": 1}),
    ("leaky", {}),
    ("leaky", {"decay": 1.0}),
]
IDS = [f"{k}-{'-'.join(f'{n}={v}' for n, v in o.items())}" for k, o in CELL_CASES]


def cell_problem(cell, seed: int):
    """Random parameters (non-zero biases), a random state (spiking: membranes around the
    threshold, spikes, refractory counts), projection, and random tangents v = (state, xp) and
    cotangents u = (state, out)."""
    rng = np.random.default_rng(seed)
    params = {k: rng.uniform(-0.6, 0.6, v.shape) for k, v in cell.init_params(rng).items()}
    fields = {}
    for f, n in cell.state_sizes().items():
        if f == "z":
            fields[f] = (rng.random((B, n)) < 0.4).astype(np.float64)
        elif f == "r":
            fields[f] = rng.integers(0, getattr(cell, "refractory", 0) + 1, (B, n)).astype(np.float64)
        elif f == "v":
            fields[f] = rng.uniform(-0.5, 1.5, (B, n))
        else:
            fields[f] = rng.uniform(-0.8, 0.8, (B, n))
    state = cell.State(**fields)
    xp = rng.uniform(-1, 1, (B, cell.gates * cell.hidden_size))
    v = (cell.State(*(rng.standard_normal(a.shape) for a in state)), rng.standard_normal(xp.shape))
    u = (cell.State(*(rng.standard_normal(a.shape) for a in state)), rng.standard_normal((B, cell.output_size)))
    return params, state, xp, v, u


def _dot(a, b) -> tuple[float, float]:
    """<a, b> over lists of arrays, and the sum of |products| (the scale its rounding is relative to)."""
    p = [x * y for x, y in zip(a, b)]
    return float(sum(q.sum() for q in p)), float(sum(np.abs(q).sum() for q in p))


def _nontrivial(cell, state, cache, new) -> None:
    """The paths the test must exercise are exercised: some spikes and some silences, the
    surrogate both taken and (triangle) vanishing where it may, held neurons; ReLU's kink."""
    if isinstance(cell, LIF):
        assert 0 < new.z.mean() < 1 and 0 < state.z.mean() < 1
        if cell.refractory:
            assert 0 < cache.free.mean() < 1
    if getattr(cell, "activation", None) is not None and cell.activation.name == "relu":
        assert 0 < (new.h > 0).mean() < 1


@pytest.mark.parametrize(("kind", "options"), CELL_CASES, ids=IDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_step_jvp_is_the_transpose_of_step_back(kind, options, seed):
    cell = make_cell(kind, D, H, **options)
    params, state, xp, (vs, vx), (us, uo) = cell_problem(cell, seed)
    new, _, cache = cell.step(params, state, xp)
    _nontrivial(cell, state, cache, new)
    ds, dout = cell.step_jvp(params, cache, vs, vx)
    grads = {k: np.zeros_like(p) for k, p in params.items()}
    gs, gx = cell.step_back(params, cache, us, uo, grads)
    lhs, s1 = _dot([*us, uo], [*ds, dout])
    rhs, s2 = _dot([*gs, gx], [*vs, vx])
    assert abs(lhs - rhs) <= 1e-12 * max(s1, s2), (lhs, rhs, s1)
    assert abs(lhs) > 1e-3 * s1  # not a cancellation to nothing
    # each output field and the output depend on the tangent (r, refractory counts: none)
    for name, d in zip((*cell.State._fields, "out"), (*ds, dout)):
        assert (np.abs(d).max() == 0) == (name == "r"), name
    # dxp=None is a zero tangent of xp
    (a, ao), (b, bo) = cell.step_jvp(params, cache, vs, None), cell.step_jvp(params, cache, vs, np.zeros_like(vx))
    for x, y in zip((*a, ao), (*b, bo)):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize(("kind", "options"), CELL_CASES, ids=IDS)
def test_step_jvp_owns_its_memory(kind, options):
    cell = make_cell(kind, D, H, **options)
    params, state, xp, (vs, vx), _ = cell_problem(cell, 2)
    _, _, cache = cell.step(params, state, xp)
    ins = [a for a in (cache or ()) if a is not None] + list(vs) + [vx]
    before = [np.array(a, copy=True) for a in ins]
    ds, dout = cell.step_jvp(params, cache, vs, vx)
    for a, b in zip(before, ins):
        np.testing.assert_array_equal(a, b)
    for d in (*ds, dout):
        assert not any(np.shares_memory(d, a) for a in ins)


SMOOTH = [(k, o) for k, o in CELL_CASES if k in ("elman", "jordan", "gru", "lstm", "leaky")]
SMOOTH += [
    (k, {"reset": r, **extra})
    for k, extra in (("lif", {}), ("alif", {"adapt_strength": 0.4, "adapt_decay": 0.8}))
    for r in ("subtract", "zero")
]


@pytest.mark.parametrize(("kind", "options"), SMOOTH, ids=[f"{k}-{o}" for k, o in SMOOTH])
def test_step_jvp_equals_central_differences(kind, options):
    """Independent of step_back: (step(s + eps v, xp + eps w) - step(s - eps v, xp - eps w)) /
    2 eps. Spiking cells (no detached reset, no refractory steps): the membrane and adaptation,
    smooth in the previous v, z and a (the spike itself has the surrogate, not a derivative)."""
    cell = make_cell(kind, D, H, **options)
    params, state, xp, (vs, vx), _ = cell_problem(cell, 3)
    if "r" in cell.State._fields:
        vs = vs._replace(r=np.zeros_like(vs.r))
    _, _, cache = cell.step(params, state, xp)
    ds, dout = cell.step_jvp(params, cache, vs, vx)
    eps = 1e-6
    up = cell.step(params, cell.State(*(a + eps * b for a, b in zip(state, vs))), xp + eps * vx)
    down = cell.step(params, cell.State(*(a - eps * b for a, b in zip(state, vs))), xp - eps * vx)
    smooth = [f for f in cell.State._fields if f not in ("z", "r")]
    pairs = [(f, getattr(ds, f), (getattr(up[0], f) - getattr(down[0], f)) / (2 * eps)) for f in smooth]
    if not isinstance(cell, LIF):
        pairs.append(("out", dout, (up[1] - down[1]) / (2 * eps)))
    for name, got, want in pairs:
        assert np.abs(want).max() > 1e-3, name
        assert np.abs(got - want).max() <= 1e-7 * np.abs(want).max(), (name, np.abs(got - want).max())


# ---- the model ------------------------------------------------------------------------------
def _models():
    return {
        "gru x 2": lambda: bptt.Model(D, [bptt.rnn("gru", 4, 2), bptt.Dense(2)], loss="mse"),
        "lstm under elman": lambda: bptt.Model(
            D, [bptt.Recurrent("lstm", 4), bptt.Recurrent("elman", 3), bptt.Dense(2)], loss="mse"
        ),
        "jordan, dense(tanh), elman": lambda: bptt.Model(
            D,
            [
                bptt.Recurrent("jordan", 4, output_size=3, context_decay=0.5),
                bptt.Dense(4, activation="tanh"),
                bptt.Recurrent("elman", 3, activation="relu"),
                bptt.Dense(2),
            ],
            loss="mse",
        ),
        "tokens: embedding, gru, lstm": lambda: bptt.Model(
            7, [bptt.Embedding(3), bptt.Recurrent("gru", 4), bptt.Recurrent("lstm", 3), bptt.Dense(7)], tokens=True
        ),
        "tokens into elman, jordan": lambda: bptt.Model(
            7, [bptt.Recurrent("elman", 4), bptt.Recurrent("jordan", 3, output_size=7)], tokens=True
        ),
        "lif under leaky": lambda: bptt.Model(
            D, [bptt.Recurrent("lif", 5, refractory=1, learn_decay=True), bptt.Recurrent("leaky", 3, decay=0.8)]
        ),
        "alif (zero reset, detached), rate, leaky": lambda: bptt.Model(
            D,
            [
                bptt.Recurrent("alif", 5, reset="zero", detach_reset=True, adapt_strength=0.4, adapt_decay=0.8),
                bptt.RateRegularizer(0.1, 0.5),
                bptt.Recurrent("leaky", 3, decay=0.8),
            ],
        ),
    }


MODELS = _models()
MASKS = {"no mask": None, "held sequence": [True, False, True], "all held": [False, False, False]}


def model_problem(model, dtype, seed: int = 0, Bm: int = 3):
    """Random parameters (non-zero biases), one step's input, a random state (spiking levels:
    membranes near the threshold, spikes, refractory counts; their inputs scaled so they fire),
    and a random tangent of the state."""
    rng = np.random.default_rng(seed)
    params = model.init_params(rng, dtype)
    for k, v in params.items():
        local = k.rsplit(".", 1)[1]
        if local.startswith("b"):
            v[...] = rng.uniform(-0.5, 0.5, v.shape)
        elif local == "W_ih" and k.startswith(("lif", "alif")):
            v *= 3
    x = rng.integers(0, model.input_size, (1, Bm)) if model.tokens else rng.standard_normal((1, Bm, D)).astype(dtype)
    state, _ = model.initial_state(params, Bm)
    dstate = {}
    for key, st in state.items():
        fields = {}
        for f, a in zip(st._fields, st):
            if f == "z":
                fields[f] = (rng.random(a.shape) < 0.4).astype(dtype)
            elif f == "r":
                fields[f] = rng.integers(0, 2, a.shape).astype(dtype)
            elif f == "v":
                fields[f] = rng.uniform(-0.5, 1.5, a.shape).astype(dtype)
            else:
                fields[f] = rng.uniform(-0.8, 0.8, a.shape).astype(dtype)
        state[key] = type(st)(**fields)
        dstate[key] = type(st)(*(rng.standard_normal(a.shape).astype(dtype) for a in st))
    return params, x, state, dstate


def _row(state, b: int):
    return {k: type(v)(*(a[b : b + 1] for a in v)) for k, v in state.items()}


def jacobian(model, params, flat, x_t, m_t, state) -> np.ndarray:
    """A = dS(t)/dS(t-1) of one sequence (B = 1), as `_Step.jacobians` builds it, less the
    VJP at zero (a RateRegularizer's backward adds its penalty's gradient, which is not part of
    A: zero wherever there is none)."""
    step = _Step(model, params, flat, x_t, m_t, state)
    A, _ = step.jacobians(params=False)
    return A - step.vjp(None, np.zeros(flat.n))[0][None, :]


@pytest.mark.parametrize("mask", MASKS, ids=list(MASKS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", MODELS, ids=list(MODELS))
def test_model_step_jvp_equals_the_jacobian_from_vjps(name, dtype, mask):
    model = MODELS[name]()
    params, x, state, dstate = model_problem(model, dtype)
    m = None if MASKS[mask] is None else np.array([MASKS[mask]])
    _, _, tapes = model.forward_levels(params, x, m, state, keep=True)
    got = jvp.step_jvp(model, params, tapes, dstate)
    assert sorted(got) == sorted(model.state_keys())
    flat = _Flat(model, params)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    for b in range(x.shape[1]):
        A = jacobian(model, params, flat, x[:, b : b + 1], None if m is None else m[:, b : b + 1], _row(state, b))
        v = flat.state_vec(_row(dstate, b)).astype(np.float64)
        want, scale = A @ v, (np.abs(A) @ np.abs(v)).max()
        have = flat.state_vec(_row(got, b)).astype(np.float64)
        assert all(a.dtype == dtype for s in got.values() for a in s)
        assert np.abs(have - want).max() <= tol * scale, (b, np.abs(have - want).max(), scale)
        if m is not None and not m[0, b]:  # held: the tangent passes unchanged
            np.testing.assert_array_equal(have, v)
        else:
            assert np.abs(want).max() > 0.1 * scale  # not a cancellation to nothing


def test_model_step_jvp_with_missing_keys_is_a_zero_tangent():
    model = MODELS["lstm under elman"]()
    params, x, state, dstate = model_problem(model, np.float64)
    _, _, tapes = model.forward_levels(params, x, None, state, keep=True)
    lower = model.state_keys()[0]
    got = jvp.step_jvp(model, params, tapes, {lower: dstate[lower]})
    zero = {k: type(v)(*(np.zeros_like(a) for a in v)) for k, v in dstate.items()}
    zero[lower] = dstate[lower]
    want = jvp.step_jvp(model, params, tapes, zero)
    for k in want:
        for a, b in zip(got[k], want[k]):
            np.testing.assert_array_equal(a, b)
    assert np.abs(got[model.state_keys()[1]].h).max() > 0  # the lower level's tangent reaches the upper one
    assert all(np.abs(a).max() == 0 for s in jvp.step_jvp(model, params, tapes, {}).values() for a in s)


def test_model_step_jvp_refuses_what_it_cannot_do():
    model = bptt.Model(D, [bptt.rnn("gru", 4, bidirectional=True), bptt.Dense(2)], loss="mse")
    params, x, state, dstate = model_problem(model, np.float64)
    _, _, tapes = model.forward_levels(params, x, None, state, keep=True)
    with pytest.raises(BpttError, match="step_jvp: expected a unidirectional model, received a bidirectional one"):
        jvp.step_jvp(model, params, tapes, dstate)
    model = MODELS["gru x 2"]()
    params, x, state, dstate = model_problem(model, np.float64)
    _, _, tapes = model.forward_levels(params, np.concatenate([x, x]), None, state, keep=True)
    with pytest.raises(BpttError, match=r"tapes\[0\]: expected the tape of one time step, received 2 steps"):
        jvp.step_jvp(model, params, tapes, dstate)
    _, _, tapes = model.forward_levels(params, x, None, state, keep=True)
    released = [(tapes[0][0], [Tape([None], None, False, aux=())]), *tapes[1:]]
    with pytest.raises(BpttError, match=r"tapes\[0\]: expected the step's caches, received a tape .* released"):
        jvp.step_jvp(model, params, released, dstate)
    with pytest.raises(BpttError, match=r"dstate: expected keys among \['gru0', 'gru1'\], received \['lstm0'\]"):
        jvp.step_jvp(model, params, tapes, {"lstm0": dstate["gru0"]})
    with pytest.raises(BpttError, match=r"dstate\['gru0'\]\.h: expected shape \(3, 4\), received \(1, 4\)"):
        jvp.step_jvp(model, params, tapes, {"gru0": _row(dstate, 0)["gru0"]})
    with pytest.raises(BpttError, match=r"tapes: expected one part per level \(3, forward_levels with keep=True\)"):
        jvp.step_jvp(model, params, tapes[:1], dstate)
