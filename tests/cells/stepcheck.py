"""One step of a cell, checked on its own (tests/cells/test_<cell>.py use these):

- `check_step_back`: step_back is the vector-Jacobian product of step: against float64 central
  differences of L = <a, state_t> + <b, out_t> with respect to xp_t, every state field and every
  parameter the step uses; random non-zero biases and states.
- `check_owns_its_memory`: step_back writes neither into the cache nor into the incoming
  gradients (a derivation's lines can be reordered without breaking anything else).
- `check_against_torch`: the step's new state equals torch's cell (nn.RNNCell, GRUCell, LSTMCell)
  on the same weights.
- `model_problem`: random non-zero weights, float inputs, targets and initial states for a model.
- `check_central_differences`: gradients of a whole loss (a function of the parameters, edited in
  place) against float64 central differences.
"""

from __future__ import annotations

import numpy as np


def problem(cell, seed=0, B=3):
    rng = np.random.default_rng(seed)
    params = {k: rng.uniform(-0.6, 0.6, v.shape) for k, v in cell.init_params(rng).items()}
    state = cell.State(*(rng.uniform(-0.8, 0.8, (B, n)) for n in cell.state_sizes().values()))
    xp = rng.uniform(-1, 1, (B, cell.gates * cell.hidden_size))
    a = cell.State(*(rng.standard_normal(f.shape) for f in state))
    b = rng.standard_normal((B, cell.output_size))
    return params, state, xp, a, b


def _loss(cell, params, state, xp, a, b):
    new, out, _ = cell.step(params, state, xp)
    return sum(float((x * y).sum()) for x, y in zip(new, a)) + float((out * b).sum())


def check_step_back(cell, seed=0, eps=1e-6, tol=1e-7):
    params, state, xp, a, b = problem(cell, seed)
    _, _, cache = cell.step(params, state, xp)
    grads = {k: np.zeros_like(v) for k, v in params.items()}
    dprev, dxp = cell.step_back(params, cache, a, b, grads)

    def numeric(array, f):
        g = np.zeros_like(array)
        for i in np.ndindex(array.shape):
            old = array[i]
            array[i] = old + eps
            up = f()
            array[i] = old - eps
            down = f()
            array[i] = old
            g[i] = (up - down) / (2 * eps)
        return g

    f = lambda: _loss(cell, params, state, xp, a, b)  # noqa: E731
    checks = [("xp", dxp, numeric(xp, f))]
    checks += [(f"state.{n}", d, numeric(s, f)) for n, d, s in zip(state._fields, dprev, state)]
    used = {k for k in params if k != "W_ih" and k != "b_ih"}  # the projection's are the level's
    checks += [(k, grads[k], numeric(params[k], f)) for k in sorted(used)]
    for name, got, want in checks:
        err = np.abs(got - want).max() / max(np.abs(want).max(), 1e-12)
        assert err < tol, (name, err)


def check_owns_its_memory(cell, seed=1):
    params, state, xp, a, b = problem(cell, seed)
    _, _, cache = cell.step(params, state, xp)
    before = [np.array(x, copy=True) for x in cache] + [np.array(x, copy=True) for x in a] + [b.copy()]
    grads = {k: np.zeros_like(v) for k, v in params.items()}
    dprev, dxp = cell.step_back(params, cache, a, b, grads)
    after = list(cache) + list(a) + [b]
    for x, y in zip(before, after):
        np.testing.assert_array_equal(x, y)
    for d in (*dprev, dxp):  # and what it returns is its own
        assert not any(np.shares_memory(d, x) for x in after)


def check_against_torch(cell, torch_cell):
    """torch_cell: nn.RNNCell / GRUCell / LSTMCell(D, H) whose weights are set from the cell's."""
    import torch

    params, state, _, _, _ = problem(cell, 2)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((state[0].shape[0], cell.input_size))
    with torch.no_grad():
        for name, t in (("W_ih", "weight_ih"), ("W_hh", "weight_hh"), ("b_ih", "bias_ih"), ("b_hh", "bias_hh")):
            getattr(torch_cell, t).copy_(torch.from_numpy(params[name]))
    xp = cell.project(params, x[None])[0]
    new, _, _ = cell.step(params, state, np.asarray(xp))
    hx = tuple(torch.from_numpy(s) for s in state)
    got = torch_cell(torch.from_numpy(x), hx if len(hx) > 1 else hx[0])
    got = got if isinstance(got, tuple) else (got,)
    for ours, theirs in zip(new, got):
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-13, atol=1e-14)


def check_central_differences(loss, params, grads, eps=1e-6, rtol=1e-6, atol=1e-8):
    """grads[k] against (loss(p + eps) - loss(p - eps)) / 2 eps, entry by entry of params[k]
    (changed in place and put back)."""
    for k, p in params.items():
        num = np.zeros_like(p)
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + eps
            up = loss()
            p[i] = old - eps
            down = loss()
            p[i] = old
            num[i] = (up - down) / (2 * eps)
        np.testing.assert_allclose(grads[k], num, rtol=rtol, atol=atol, err_msg=k)


def model_problem(model, seed=0, T=6, B=3, dtype=np.float64):
    """(params, x (T, B, D), class targets (T, B), state0) with every weight, bias and initial
    state random and non-zero."""
    rng = np.random.default_rng(seed)
    params = {k: rng.uniform(-0.6, 0.6, v.shape).astype(dtype) for k, v in model.init_params(0).items()}
    x = rng.normal(size=(T, B, model.input_size)).astype(dtype)
    y = rng.integers(0, model.output_size, (T, B))
    state0, _ = model.initial_state(params, B)
    state0 = {k: type(s)(*(rng.normal(size=a.shape).astype(dtype) * 0.5 for a in s)) for k, s in state0.items()}
    return params, x, y, state0
