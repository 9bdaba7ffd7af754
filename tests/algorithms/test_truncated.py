"""Truncated BPTT(k1, k2): against full BPTT where they must agree, against a brute-force sum
built from per-step Jacobians (torch autograd on a step function written out here), and against
values worked by hand."""

import numpy as np
import pytest

from bptt import Dense, Model, full_bptt, rnn
from bptt.algorithms.truncated import TBPTTStream, tbptt

CELLS = ["elman", "jordan", "gru", "lstm"]


def rel(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def problem(cell, rng, T=7, B=2, stacked=True, tokens=False):
    if tokens:
        model = Model(6, [rnn(cell, 5), Dense(6)], tokens=True, loss="ce")
        x = rng.integers(0, 6, size=(T, B))
        y = rng.integers(0, 6, size=(T, B))
    else:
        levels = [rnn(cell, 5), Dense(4, "tanh"), rnn(cell, 4), Dense(2)] if stacked else [rnn(cell, 5), Dense(2)]
        model = Model(3, levels, loss="mse")
        x = rng.standard_normal((T, B, 3))
        y = rng.standard_normal((T, B, 2))
    params = model.init_params(rng)
    for k in params:  # non-zero biases everywhere
        if ".b" in k:
            params[k] = rng.uniform(-0.5, 0.5, params[k].shape)
    state0 = {
        k: s._replace(**{f: rng.uniform(-0.5, 0.5, getattr(s, f).shape) for f in s._fields})
        for k, s in model.initial_state(params, B)[0].items()
    }
    return model, params, x, y, state0


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("k1,k2", [(7, 7), (10, 10), (7, 12)])
def test_window_covering_the_sequence_is_full_bptt(cell, k1, k2):
    rng = np.random.default_rng(1)
    model, params, x, y, s0 = problem(cell, rng)
    mask = np.ones((7, 2), bool)
    mask[5:, 1] = False  # a shorter second sequence
    for m in (None, mask):
        g = full_bptt(model, params, x, y, mask=m, state0=s0)
        _, t = tbptt(model, params, x, y, k1, k2, mask=m, state0=s0)
        assert abs(t.loss - g.loss) <= 1e-12 * abs(g.loss)
        for k in params:
            assert rel(t.grads[k], g.grads[k]) <= 1e-12, k


@pytest.mark.parametrize("cell", CELLS)
def test_chunks_are_full_bptt_on_each_chunk_with_the_state_carried(cell):
    rng = np.random.default_rng(2)
    model, params, x, y, s0 = problem(cell, rng, T=8, tokens=cell in ("gru",))
    windows, _ = tbptt(model, params, x, y, 3, 3, mask=None, state0=s0)
    state = s0
    for (s, e), w in zip([(0, 3), (3, 6), (6, 8)], windows):
        g = full_bptt(model, params, x[s:e], y[s:e], mask=None, state0=state)
        state = g.final_state
        assert abs(w.loss - g.loss) <= 1e-12 * abs(g.loss)
        for k in params:
            assert rel(w.grads[k], g.grads[k]) <= 1e-12, k


# ---- brute force from per-step Jacobians ------------------------------------------------------
torch = None


def _torch():
    global torch
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    return torch


def _step_fn(cell, H):
    """s(t) = f(theta, s(t-1), x(t)) in torch's parametrisation, written out; s = h or [h, c]."""

    def split(theta, D):
        G = {"elman": 1, "gru": 3, "lstm": 4}[cell] * H
        sizes = [G * D, G * H, G, G]
        parts = torch.split(theta, sizes)
        return parts[0].reshape(G, D), parts[1].reshape(G, H), parts[2], parts[3]

    def f(theta, s, x):
        W_ih, W_hh, b_ih, b_hh = split(theta, x.shape[0])
        if cell == "elman":
            return torch.tanh(W_ih @ x + b_ih + W_hh @ s + b_hh)
        if cell == "gru":
            gi, gh = W_ih @ x + b_ih, W_hh @ s + b_hh
            r = torch.sigmoid(gi[:H] + gh[:H])
            z = torch.sigmoid(gi[H : 2 * H] + gh[H : 2 * H])
            n = torch.tanh(gi[2 * H :] + r * gh[2 * H :])
            return (1 - z) * n + z * s
        h, c = s[:H], s[H:]
        a = W_ih @ x + b_ih + W_hh @ h + b_hh
        i, fg, g, o = (
            torch.sigmoid(a[:H]),
            torch.sigmoid(a[H : 2 * H]),
            torch.tanh(a[2 * H : 3 * H]),
            torch.sigmoid(a[3 * H :]),
        )
        c2 = fg * c + i * g
        return torch.cat([o * torch.tanh(c2), c2])

    return f


def brute_force(cell, model, params, x, y, s0, k1, k2):
    """Every window's gradient as the explicit double sum over injected errors tau and steps s
    of dE(tau)/ds(tau) . J(tau) ... J(s+1) . d+s(s)/dtheta, per sequence."""
    _torch()
    from torch.func import jacrev

    name, out = model.levels[0].name, model.levels[1].name
    H = model.levels[0].size
    f = _step_fn(cell, H)
    theta = torch.cat([torch.from_numpy(params[f"{name}.{n}"]).reshape(-1) for n in ("W_ih", "W_hh", "b_ih", "b_hh")])
    Wy, by = params[f"{out}.W"], params[f"{out}.b"]
    T, B = x.shape[:2]
    jac = jacrev(f, argnums=(0, 1))
    # states and per-step Jacobians for every sequence
    S, Jt, Js = [], [], []
    for b in range(B):
        s = np.concatenate([s0[name].h[b]] + ([s0[name].c[b]] if cell == "lstm" else []))
        st, jt, js = [s], [], []
        for t in range(T):
            sp, xt = torch.from_numpy(st[-1]), torch.from_numpy(x[t, b])
            a, bb = jac(theta, sp, xt)
            jt.append(a.numpy())
            js.append(bb.numpy())
            st.append(f(theta, sp, xt).detach().numpy())
        S.append(st), Jt.append(jt), Js.append(js)
    windows = []
    for a in range(0, T, k1):
        e = min(T, a + k1)
        n = e - a
        w0 = max(0, a - (k2 - k1))
        g_theta = np.zeros(theta.shape[0])
        g_Wy, g_by = np.zeros_like(Wy), np.zeros_like(by)
        for b in range(B):
            for tau in range(a, e):
                h = S[b][tau + 1][:H]
                r = (Wy @ h + by - y[tau, b]) / (n * B)  # d(1/2 |y - target|^2 / positions)
                g_Wy += np.outer(r, h)
                g_by += r
                v = np.zeros(S[b][0].shape[0])
                v[:H] = Wy.T @ r
                for s in range(tau, w0 - 1, -1):
                    g_theta += v @ Jt[b][s]
                    v = v @ Js[b][s]
        g = {}
        off = 0
        for nme in ("W_ih", "W_hh", "b_ih", "b_hh"):
            size = params[f"{name}.{nme}"].size
            g[f"{name}.{nme}"] = g_theta[off : off + size].reshape(params[f"{name}.{nme}"].shape)
            off += size
        g[f"{out}.W"], g[f"{out}.b"] = g_Wy, g_by
        windows.append(g)
    return windows


@pytest.mark.parametrize("cell", ["elman", "gru", "lstm"])
@pytest.mark.parametrize("k1,k2", [(1, 1), (1, 4), (2, 5), (3, 3), (2, 7), (4, 6), (3, 20)])
def test_matches_brute_force_from_jacobians(cell, k1, k2):
    rng = np.random.default_rng(10 * k1 + k2)
    model, params, x, y, s0 = problem(cell, rng, T=9, B=2, stacked=False)
    ours, _ = tbptt(model, params, x, y, k1, k2, mask=None, state0=s0)
    ref = brute_force(cell, model, params, x, y, s0, k1, k2)
    assert len(ours) == len(ref)
    for w, (g, r) in enumerate(zip(ours, ref)):
        for k in r:
            assert rel(g.grads[k], r[k]) <= 1e-10, (w, k)


def test_by_hand_linear_recurrence():
    """x(t) = w x(t-1), x(0) = 0.9, w = 0.2 (a linear Elman unit, no input), loss
    E(t) = x(t)^2 / 2 at every step, one update per step (k1 = 1), backpropagated k2 = k steps.

    x(1) = 0.18, x(2) = 0.036, x(3) = 0.0072. The error at t is x(t); each of the k steps s
    reached contributes x(t) w^(t-s) x(s-1) = x(t) w^(t-1) x(0):

        t = 1:  x1 x0                       = 0.162                 (for every k)
        t = 2:  k = 1: x2 x1                = 0.00648
                k >= 2: x2 (x1 + w x0)      = 0.01296
        t = 3:  k x3 w^2 x0 = k * 0.0002592 = 0.0002592, 0.0005184, 0.0007776 (k = 1, 2, 3)
    """
    model = Model(1, [rnn("elman", 1, activation="identity"), Dense(1)], loss="mse")
    p = {k: np.zeros_like(v) for k, v in model.init_params(0).items()}
    p["elman0.W_hh"][:] = 0.2
    p["dense1.W"][:] = 1.0
    s0 = {"elman0": model.initial_state(p, 1)[0]["elman0"]._replace(h=np.array([[0.9]]))}
    x, y = np.zeros((3, 1, 1)), np.zeros((3, 1, 1))
    expected = {1: [0.162, 0.00648, 0.0002592], 2: [0.162, 0.01296, 0.0005184], 3: [0.162, 0.01296, 0.0007776]}
    for k, values in expected.items():
        windows, _ = tbptt(model, p, x, y, 1, k, mask=None, state0=s0)
        got = [w.grads["elman0.W_hh"][0, 0] for w in windows]
        assert got == pytest.approx(values, rel=1e-12), k
    # full BPTT of the summed losses is the k = 3 column summed
    g = full_bptt(model, p, x, y, mask=None, state0=s0)
    assert g.grads["elman0.W_hh"][0, 0] * 3 == pytest.approx(sum(expected[3]), rel=1e-12)


def test_reset_cuts_one_stream():
    """Resetting stream 0 mid-stream: its gradients are those of a fresh start, stream 1's those
    of an uninterrupted run (losses average over streams, so the two halves add)."""
    rng = np.random.default_rng(5)
    model, params, x, y, _ = problem("gru", rng, T=10, B=2, stacked=True)
    both, s0, s1 = TBPTTStream(model, 2, 5), TBPTTStream(model, 2, 5), TBPTTStream(model, 2, 5)
    for i, a in enumerate(range(0, 10, 2)):
        if i == 2:
            both.reset(np.array([True, False]))
            s0.reset()
        g = both(params, x[a : a + 2], y[a : a + 2])
        g0 = s0(params, x[a : a + 2, :1], y[a : a + 2, :1])
        g1 = s1(params, x[a : a + 2, 1:], y[a : a + 2, 1:])
        for k in params:
            assert rel(g.grads[k], (g0.grads[k] + g1.grads[k]) / 2) <= 1e-12, (i, k)


def test_clear_errors():
    rng = np.random.default_rng(0)
    model, params, x, y, _ = problem("lstm", rng)
    with pytest.raises(ValueError, match="k2: expected k2 >= k1"):
        TBPTTStream(model, 5, 3)
    with pytest.raises(ValueError, match="k1: expected a positive integer"):
        TBPTTStream(model, 0)
    with pytest.raises(ValueError, match="unidirectional"):
        TBPTTStream(Model(3, [rnn("gru", 4, bidirectional=True), Dense(2)], loss="mse"), 2)
    with pytest.raises(ValueError, match="learn_init"):
        TBPTTStream(Model(3, [rnn("gru", 4, learn_init=True), Dense(2)], loss="mse"), 2)
    algo = TBPTTStream(model, 2, 4)
    algo(params, x[:2], y[:2])
    with pytest.raises(ValueError, match="expected 2 streams .* received 3"):
        algo(params, np.concatenate([x[2:4], x[2:4, :1]], axis=1), np.concatenate([y[2:4], y[2:4, :1]], axis=1))
    with pytest.raises(ValueError, match="at most k2=4 steps, received 5"):
        algo(params, x[:5], y[:5])
    with pytest.raises(ValueError, match=r"streams: expected a \(2,\) boolean array"):
        algo.reset(np.array([1, 0]))
