"""Spiking cells (LIF, ALIF, the leaky readout): BPTT through the surrogate against PyTorch
autograd on the same network with a custom autograd function for the spike (float64), against
snntorch's Leaky on the same weights, and the smooth parts (leak, adaptation, readout) by
central differences with the spikes held fixed."""

import itertools

import numpy as np
import pytest

import bptt
from bptt.cells.spiking import SURROGATES
from bptt.errors import BpttError

D, H, K, B, T = 3, 6, 4, 5, 14


def spiking_model(kind: str, loss_at: str = "every", **options):
    if kind == "alif":  # a threshold that rises little and decays fast within T steps: the neurons keep firing
        options = {"adapt_strength": np.linspace(0.1, 0.4, H), "adapt_decay": 0.8, **options}
    return bptt.Model(D, [bptt.Recurrent(kind, H, **options), bptt.Recurrent("leaky", K, decay=0.8)], at=loss_at)


def problem(model, seed: int, refractory: int = 0):
    """Random weights scaled so that neurons fire (a third to a half of the time), random
    non-zero biases, and a random initial state: membranes, spikes, adaptation, refractory
    counts."""
    rng = np.random.default_rng(seed)
    params = model.init_params(rng, np.float64)
    for k in params:
        if k.startswith(model.levels[0].name + ".") and k.endswith(("W_ih", "W_hh")):
            params[k] = params[k] * 3.0
    x = rng.standard_normal((T, B, D))
    lead = (T, B) if model.loss_fn.at == "every" else (B,)
    y = rng.integers(0, K, lead)
    state0, _ = model.initial_state(params, B)
    level = model.levels[0].name
    st = state0[level]
    fields = {f: getattr(st, f) for f in st._fields}
    fields["v"] = rng.uniform(-0.5, 1.5, (B, H))
    fields["z"] = (rng.random((B, H)) < 0.4).astype(np.float64)
    if "a" in fields:
        fields["a"] = rng.uniform(0, 0.5, (B, H))
    fields["r"] = rng.integers(0, refractory + 1, (B, H)).astype(np.float64) if refractory else fields["r"]
    state0[level] = type(st)(**fields)
    ro = model.levels[1].name
    state0[ro] = type(state0[ro])(rng.standard_normal((B, K)))
    return params, x, y, state0


def torch_reference(model, params, x, y, state0):
    """The same network in torch: the spike a custom autograd function whose backward is the
    surrogate; returns the loss and the gradients (parameters and initial state)."""
    torch = pytest.importorskip("torch")
    lv, ro = model.levels
    cell = lv.directions[0].cell
    name, k, scale = cell.surrogate, cell.slope, cell.surrogate_scale

    class Spike(torch.autograd.Function):
        @staticmethod
        def forward(ctx, u):
            ctx.save_for_backward(u)
            return (u > 0).to(u.dtype)

        @staticmethod
        def backward(ctx, g):
            (u,) = ctx.saved_tensors
            if name == "fast_sigmoid":
                psi = 1 / (1 + k * u.abs()) ** 2
            elif name == "arctan":
                psi = (k / 2) / (1 + (torch.pi * k / 2 * u) ** 2)
            else:
                psi = k * torch.clamp(1 - k * u.abs(), min=0)
            return g * psi * scale

    P = {n: torch.tensor(v, requires_grad=True) for n, v in params.items()}
    S = {key: {f: torch.tensor(getattr(s, f), requires_grad=f != "r") for f in s._fields} for key, s in state0.items()}
    p = lambda n: P[f"{lv.name}.{n}"]  # noqa: E731
    xs = torch.tensor(x)
    s = S[lv.name]
    v, z, r = s["v"], s["z"], s["r"]
    a = s.get("a")
    theta = torch.tensor(cell.threshold)
    alpha = torch.sigmoid(p("decay_logit")) if cell.learn_decay else torch.tensor(cell.decay)
    outs = []
    for t in range(len(xs)):
        bias = p("b_ih") + p("b_hh") if cell.recurrent else p("b_ih")
        current = xs[t] @ p("W_ih").T + bias
        if cell.recurrent:
            current = current + z @ p("W_hh").T
        reset = z.detach() if cell.detach_reset else z
        if cell.reset == "subtract":
            v = alpha * v + current - theta * reset
        else:
            v = alpha * v * (1 - reset) + current
        A = theta
        if cell.adaptive:
            a = torch.tensor(cell.rho) * a + z
            A = theta + torch.tensor(cell.beta) * a
        spikes = Spike.apply(v - A)
        if cell.refractory:
            r = torch.where(z > 0, torch.full_like(r, cell.refractory), torch.clamp(r - 1, min=0))
            spikes = spikes * (r == 0).to(spikes.dtype)
        z = spikes
        outs.append(z)
    q = lambda n: P[f"{ro.name}.{n}"]  # noqa: E731
    yv = S[ro.name]["y"]
    kappa = torch.tensor(ro.directions[0].cell.decay)
    logits = []
    for t in range(len(xs)):
        yv = kappa * yv + (outs[t] @ q("W_ih").T + q("b_ih"))
        logits.append(yv)
    logits = torch.stack(logits)
    if model.loss_fn.at == "every":
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, K), torch.tensor(y).reshape(-1))
    else:  # the last W steps, each with the sequence's target
        W = model.loss_fn.window
        loss = torch.nn.functional.cross_entropy(logits[-W:].reshape(-1, K), torch.tensor(np.tile(y, W)))
    loss.backward()
    grads = {n: t.grad.numpy() for n, t in P.items()}
    dstate = {key: {f: t.grad.numpy() for f, t in fs.items() if t.grad is not None} for key, fs in S.items()}
    return loss.item(), grads, dstate, float(torch.stack(outs).detach().mean())


def assert_matches_torch(model, params, x, y, state0, tol=1e-10):
    g = bptt.full_bptt(model, params, x, y, state0=state0)
    loss, grads, dstate, rate = torch_reference(model, params, x, y, state0)
    assert 0.05 < rate < 0.95, rate  # the neurons fire: the surrogate path is exercised
    assert g.loss == pytest.approx(loss, rel=1e-12)
    for k, ref in grads.items():
        scale = max(np.abs(ref).max(), 1e-12)
        assert np.abs(g.grads[k] - ref).max() <= tol * scale, (k, np.abs(g.grads[k] - ref).max(), scale)
        assert np.abs(ref).max() > 0, k  # (every parameter gets a gradient here)
    for key, fields in dstate.items():
        for f, ref in fields.items():
            got = getattr(g.dstate0[key], f)
            assert np.abs(got - ref).max() <= tol * max(np.abs(ref).max(), 1e-12), (key, f)


@pytest.mark.parametrize(
    "reset,surrogate,detach", list(itertools.product(["subtract", "zero"], SURROGATES, [False, True]))
)
@pytest.mark.parametrize("kind", ["lif", "alif"])
def test_bptt_through_the_surrogate_equals_torch_autograd(kind, reset, surrogate, detach):
    slope = {"fast_sigmoid": 5.0, "arctan": 2.0, "triangle": 0.5}[surrogate]
    model = spiking_model(kind, reset=reset, surrogate=surrogate, slope=slope, detach_reset=detach)
    for seed in (0, 1):
        assert_matches_torch(model, *problem(model, seed))


@pytest.mark.parametrize("kind", ["lif", "alif"])
@pytest.mark.parametrize(
    "options",
    [
        dict(refractory=2),
        dict(learn_decay=True, decay=np.linspace(0.5, 0.95, H)),
        dict(recurrent=False, threshold=np.linspace(0.5, 1.5, H), surrogate_scale=0.3),
        dict(refractory=1, reset="zero", learn_decay=True, surrogate="triangle", slope=0.7),
    ],
    ids=["refractory", "learned-decay", "feed-forward", "all"],
)
@pytest.mark.parametrize("at", ["every", "last"])
def test_options_equal_torch_autograd(kind, options, at):
    model = spiking_model(kind, loss_at=at, **options)
    assert_matches_torch(model, *problem(model, 3, refractory=options.get("refractory", 0)))


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("learn", [False, True])
def test_lif_equals_snntorch_leaky(reset, learn):
    """snntorch's Leaky (reset a step after the spike, the reset's gradient stopped) fed by a
    Linear, then a Linear readout of the spikes summed over time (the leaky readout with kappa = 1):
    the same loss and gradients on the same weights."""
    torch = pytest.importorskip("torch")
    snn = pytest.importorskip("snntorch")
    from snntorch import surrogate

    beta = np.linspace(0.6, 0.95, H)
    model = bptt.Model(
        D,
        [
            bptt.Recurrent("lif", H, recurrent=False, decay=beta, learn_decay=learn, reset=reset, detach_reset=True),
            bptt.Recurrent("leaky", K, decay=1.0),
        ],
        at="last",
    )
    rng = np.random.default_rng(7)
    params = model.init_params(rng, np.float64)
    params["lif0.W_ih"] *= 4
    x = rng.standard_normal((T, B, D))
    y = rng.integers(0, K, B)
    g = bptt.full_bptt(model, params, x, y)

    fc1, fc2 = torch.nn.Linear(D, H).double(), torch.nn.Linear(H, K).double()
    with torch.no_grad():
        fc1.weight.copy_(torch.tensor(params["lif0.W_ih"]))
        fc1.bias.copy_(torch.tensor(params["lif0.b_ih"]))
        fc2.weight.copy_(torch.tensor(params["leaky1.W_ih"]))
        fc2.bias.copy_(torch.tensor(params["leaky1.b_ih"]))
    lif = snn.Leaky(
        beta=torch.tensor(beta), learn_beta=learn, spike_grad=surrogate.fast_sigmoid(slope=25), reset_mechanism=reset
    )
    mem = lif.init_leaky()
    total, spikes = 0, []
    for t in range(T):
        spk, mem = lif(fc1(torch.tensor(x[t])), mem)
        spikes.append(spk)
        total = total + fc2(spk.double())  # the leaky readout with kappa = 1: the sum over time
    loss = torch.nn.functional.cross_entropy(total, torch.tensor(y))
    loss.backward()
    rate = float(torch.stack(spikes).detach().mean())
    assert 0.05 < rate < 0.95, rate
    assert g.loss == pytest.approx(loss.item(), rel=1e-12)
    pairs = [("lif0.W_ih", fc1.weight), ("lif0.b_ih", fc1.bias), ("leaky1.W_ih", fc2.weight), ("leaky1.b_ih", fc2.bias)]
    # snntorch's spike is a float32 tensor whatever the network's dtype ((u > 0).float()), so the
    # gradients reaching through it carry float32 rounding: 1e-6 here, 1e-10 against torch above
    for k, ref in pairs:
        r = ref.grad.numpy()
        np.testing.assert_allclose(g.grads[k], r, rtol=1e-6, atol=1e-6 * np.abs(r).max(), err_msg=k)
    if learn:  # d/d logit = d/d beta * beta (1 - beta)
        r = lif.beta.grad.numpy() * beta * (1 - beta)
        np.testing.assert_allclose(g.grads["lif0.decay_logit"], r, rtol=1e-6, atol=1e-6 * np.abs(r).max())


@pytest.mark.parametrize("kind", ["lif", "alif"])
@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_smooth_parts_by_central_differences_with_the_spikes_held(kind, reset):
    """With a surrogate of slope 1e9 (psi ~ 0 away from the threshold) BPTT gives the gradient
    of the loss with every spike held where it is; central differences of the real network
    agree wherever no spike flips between the two evaluations (checked): the leak, the learned
    decay and the readout (the adaptation acts through the spikes alone: the torch tests)."""
    model = spiking_model(kind, reset=reset, learn_decay=True, slope=1e9, decay=np.linspace(0.5, 0.95, H))
    params, x, y, state0 = problem(model, 5)
    g = bptt.full_bptt(model, params, x, y, state0=state0)

    first = model.levels[0]
    alone = bptt.Recurrent(kind, H, name=first.name, **first.cell_options)
    spiking = bptt.Model(D, [alone])  # the spiking level alone: its output, the spikes

    def spikes(p):
        sub = {n: v for n, v in p.items() if n.startswith(model.levels[0].name + ".")}
        return spiking.forward_levels(sub, x, None, {model.levels[0].name: state0[model.levels[0].name]}, keep=False)[0]

    checked = 0
    eps = 1e-6
    rng = np.random.default_rng(0)
    for k in ("lif0.decay_logit", "alif0.decay_logit", "leaky1.W_ih", "leaky1.b_ih", "lif0.W_ih", "alif0.W_ih"):
        if k not in params:
            continue
        for idx in [tuple(rng.integers(0, n) for n in params[k].shape) for _ in range(4)]:
            hi, lo = {n: v.copy() for n, v in params.items()}, {n: v.copy() for n, v in params.items()}
            hi[k][idx] += eps
            lo[k][idx] -= eps
            same = np.array_equal(spikes(hi), spikes(lo))
            if not same:
                continue
            lh, ll = (bptt.full_bptt(model, q, x, y, state0=state0).loss for q in (hi, lo))
            numeric = (lh - ll) / (2 * eps)
            assert g.grads[k][idx] == pytest.approx(numeric, rel=1e-6, abs=1e-9), (k, idx)
            checked += 1
    assert checked >= 8, checked


def test_spiking_options_are_validated_loudly():
    with pytest.raises(BpttError, match=r"decay: expected values in \(0, 1\), received 1.0"):
        bptt.Model(D, [bptt.Recurrent("lif", H, decay=1.0)])
    with pytest.raises(
        BpttError, match=r"decay: expected a number or one value per neuron \(shape \(6,\)\), received shape \(5,\)"
    ):
        bptt.Model(D, [bptt.Recurrent("lif", H, decay=np.full(5, 0.9))])
    with pytest.raises(BpttError, match="threshold: expected values in"):
        bptt.Model(D, [bptt.Recurrent("alif", H, threshold=-1)])
    with pytest.raises(BpttError, match="surrogate: expected one of"):
        bptt.Model(D, [bptt.Recurrent("lif", H, surrogate="sigmoid")])
    with pytest.raises(BpttError, match="reset: expected one of"):
        bptt.Model(D, [bptt.Recurrent("lif", H, reset="none")])
    with pytest.raises(BpttError, match="refractory: expected a whole number"):
        bptt.Model(D, [bptt.Recurrent("lif", H, refractory=1.5)])
    with pytest.raises(BpttError, match=r"adapt_decay: expected values in \(0, 1\)"):
        bptt.Model(D, [bptt.Recurrent("alif", H, adapt_decay=np.r_[np.full(H - 1, 0.9), 2.0])])


@pytest.mark.parametrize("kind", ["lif", "alif"])
def test_every_gradient_algorithm_runs_on_spiking_cells_unchanged(kind):
    """Memory-budgeted BPTT at its smallest budget and ARTBP with no cut equal full BPTT on a
    spiking network (a loss over a window of the last steps); TBPTT with k1 = k2 = T too (a
    loss at every step, which TBPTT needs)."""
    from bptt.algorithms import make
    from bptt.algorithms.budget import measure_storage

    model = spiking_model(kind, loss_at="last", refractory=1, learn_decay=True)
    model.loss_fn.window = 4
    params, x, y, state0 = problem(model, 2, refractory=1)
    full = bptt.full_bptt(model, params, x, y, state0=state0)
    st = measure_storage(model, params, B)
    runs = {
        "budget": make("budget", budget=st.leaf(1), policy="mixed")(model, params, x, y, state0=state0),
        "artbp": make("artbp", c=0.0, rng=np.random.default_rng(0))(model, params, x, y, state0=state0),
    }
    every = spiking_model(kind, refractory=1, learn_decay=True)  # (TBPTT: losses at every step)
    ys = np.random.default_rng(9).integers(0, K, (T, B))
    runs["tbptt"] = make("tbptt", k1=T, k2=T)(every, params, x, ys, state0=state0)
    fulls = {"tbptt": bptt.full_bptt(every, params, x, ys, state0=state0)}
    for name, g in runs.items():
        ref = fulls.get(name, full)
        assert g.loss == pytest.approx(ref.loss, rel=1e-13), name
        for k in ref.grads:
            np.testing.assert_allclose(g.grads[k], ref.grads[k], rtol=1e-12, atol=1e-14, err_msg=f"{name} {k}")


def test_a_loss_over_the_last_steps_window_equals_torch():
    """at='last' with window=W: cross-entropy on each of the last W readout steps with the
    sequence's target, averaged over the W B positions (torch on the same network)."""
    model = spiking_model("alif", loss_at="last")
    model.loss_fn.window = 5
    assert_matches_torch(model, *problem(model, 4))


def test_rate_regularizer_adds_the_gradient_of_its_penalty():
    """A RateRegularizer between a smooth recurrent level and the readout: the gradient with it
    minus the gradient without it is the gradient of its penalty R = s/2 sum_j (rate_j -
    target)^2 (central differences of R on the level's outputs); its output is its input."""
    rng = np.random.default_rng(0)
    plain = bptt.Model(D, [bptt.Recurrent("gru", H), bptt.Dense(K)])
    reg = bptt.RateRegularizer(target=0.3, strength=2.0)
    model = bptt.Model(D, [bptt.Recurrent("gru", H, name="gru0"), reg, bptt.Dense(K, name="dense1")])
    params = plain.init_params(rng)
    x, y = rng.standard_normal((T, B, D)), rng.integers(0, K, (T, B))
    g0, g1 = bptt.full_bptt(plain, params, x, y), bptt.full_bptt(model, params, x, y)
    assert g1.loss == g0.loss

    def penalty(p):
        out = bptt.Model(D, [bptt.Recurrent("gru", H, name="gru0")])
        hs, _ = out.forward({k: v for k, v in p.items() if k.startswith("gru0.")}, x)
        return reg.penalty(hs)

    for k, idx in (("gru0.W_hh", (1, 2)), ("gru0.b_ih", (4,)), ("gru0.W_ih", (0, 1))):
        hi, lo = ({n: v.copy() for n, v in params.items()} for _ in range(2))
        hi[k][idx] += 1e-6
        lo[k][idx] -= 1e-6
        numeric = (penalty(hi) - penalty(lo)) / 2e-6
        assert g1.grads[k][idx] - g0.grads[k][idx] == pytest.approx(numeric, rel=1e-6, abs=1e-10), k
    np.testing.assert_array_equal(g1.grads["dense1.W"], g0.grads["dense1.W"])
    with pytest.raises(BpttError, match=r"target: expected spikes per step in \[0, 1\], received 2"):
        bptt.RateRegularizer(target=2)


@pytest.mark.parametrize("kind", ["lif", "alif"])
def test_the_final_state_does_not_share_the_callers_arrays(kind):
    """Without a refractory period the refractory counter passed through: the final state's r
    was state0's array, and editing one edited the other."""
    import bptt

    m = bptt.Model(2, [bptt.rnn(kind, 3), bptt.Dense(2)], loss="mse")
    p = m.init_params(0)
    s0, _ = m.initial_state(p, 1)
    x = np.random.default_rng(0).standard_normal((4, 1, 2))
    _, final, _ = m.forward_levels(p, x, None, s0, keep=False)
    key = f"{kind}0"
    assert all(not np.shares_memory(a, b) for a, b in zip(final[key], s0[key]))


def test_adapt_strength_says_zero_is_allowed():
    """The bound read "(-1e-300, inf)" for ">= 0"; 0 (no adaptation) is allowed."""
    bptt.Model(2, [bptt.rnn("alif", 3, adapt_strength=0.0), bptt.Dense(2)], loss="mse")
    with pytest.raises(BpttError, match=r"adapt_strength: expected values in \[0, inf\), received -0.1"):
        bptt.Model(2, [bptt.rnn("alif", 3, adapt_strength=-0.1), bptt.Dense(2)], loss="mse")
    with pytest.raises(
        BpttError, match=r"decay: expected a number or one value per neuron \(shape \(3,\)\), received None"
    ):
        bptt.Model(2, [bptt.rnn("lif", 3, decay=None), bptt.Dense(2)], loss="mse")
