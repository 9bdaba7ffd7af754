"""The same training step written three ways, on the same weights and tokens: bptt (NumPy, hand-
derived BPTT), PyTorch (nn.RNN/GRU/LSTM + nn.Linear + cross-entropy, loss.backward(), one-hot
inputs as torch's modules take floats) and JAX (lax.scan + value_and_grad under jit, the token
input as a gather). Each builder returns a Contender whose `step()` runs one training step and
whose `grads()` returns (loss, gradients under bptt's names) for the equality check.

PyTorch and JAX are optional (`pip install "bptt[bench]"`); `available()` says which import.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..algorithms.full import full_bptt
from ..cells.base import Params
from ..interop import torch_names
from ..layers import Dense, rnn
from ..model import Model
from .cases import Case

PEERS = ("torch", "jax")


@dataclass
class Contender:
    name: str
    version: str
    step: Callable[[], object]
    grads: Callable[[], tuple[float, dict[str, np.ndarray]]]
    compile_seconds: float | None = None


def available(name: str) -> bool:
    return name == "bptt" or importlib.util.find_spec(name) is not None


def case_model(case: Case) -> Model:
    D, H, _, _ = case.dims
    return Model(D, [rnn(case.cell, H), Dense(D)], tokens=True, loss="ce")


def case_params(case: Case, seed: int = 0) -> Params:
    """float32 weights with non-zero biases, shared by all contenders."""
    return case_model(case).init_params(np.random.default_rng(seed), np.float32)


def make_bptt(case: Case, params: Params, x: np.ndarray, y: np.ndarray) -> Contender:
    from .._version import __version__

    model = case_model(case)

    def grads():
        g = full_bptt(model, params, x, y)
        return g.loss, g.grads

    return Contender("bptt", __version__, lambda: full_bptt(model, params, x, y), grads)


def _torch_setup(case: Case, params: Params, x: np.ndarray, y: np.ndarray) -> tuple:
    """torch's modules on bptt's weights, the one-hot inputs and targets, and the gradient
    reader: (module, linear, xt, yt, plist, grads_of)."""
    import torch
    import torch.nn.functional as F

    D, H, _, _ = case.dims
    module = {"elman": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[case.cell](D, H)
    linear = torch.nn.Linear(H, D)
    names = torch_names(case_model(case))
    owners = {"rnn": module, "linear": linear}
    with torch.no_grad():
        for b, t in names.items():
            owner, pname = t.split(".", 1)
            getattr(owners[owner], pname).copy_(torch.from_numpy(params[b]))
    xt = F.one_hot(torch.from_numpy(x), D).float()  # (T, B, D)
    yt = torch.from_numpy(y).reshape(-1)
    plist = list(module.parameters()) + list(linear.parameters())

    def grads_of(step: Callable[[], Any]) -> tuple[float, dict[str, np.ndarray]]:
        for p in plist:
            p.grad = None
        loss = step()
        got = {}
        for b, t in names.items():
            owner, pname = t.split(".", 1)
            got[b] = getattr(owners[owner], pname).grad.numpy().copy()
        return float(loss.detach()), got

    return module, linear, xt, yt, plist, grads_of


def make_torch(case: Case, params: Params, x: np.ndarray, y: np.ndarray) -> Contender:
    import torch
    import torch.nn.functional as F

    D = case.dims[0]
    module, linear, xt, yt, plist, grads_of = _torch_setup(case, params, x, y)

    def step():
        for p in plist:
            p.grad = None
        out, _ = module(xt)
        loss = F.cross_entropy(linear(out).reshape(-1, D), yt)
        loss.backward()
        return loss

    return Contender("torch", torch.__version__, step, lambda: grads_of(step))


def make_torch_checkpoint(case: Case, params: Params, x: np.ndarray, y: np.ndarray, k: int) -> Contender:
    """torch's own answer to long sequences: torch.utils.checkpoint over segments of k steps
    (each segment's module, readout and loss run again in the backward pass)."""
    import torch
    import torch.nn.functional as F
    from torch.utils.checkpoint import checkpoint

    (D, H, _, _), (T, B) = case.dims, x.shape
    module, linear, xt, yt, plist, grads_of = _torch_setup(case, params, x, y)
    lstm = case.cell == "lstm"

    def segment(xs, ys, *state):
        out, new = module(xs, state if lstm else state[0])
        loss = F.cross_entropy(linear(out).reshape(-1, D), ys, reduction="sum")
        return (loss, *(new if lstm else (new,)))

    def step():
        for p in plist:
            p.grad = None
        state = tuple(torch.zeros(1, B, H) for _ in range(2 if lstm else 1))
        total = 0.0
        for a in range(0, T, k):
            e = min(a + k, T)
            part, *state = checkpoint(segment, xt[a:e], yt[a * B : e * B], *state, use_reentrant=False)
            total = total + part
        loss = total / (T * B)
        loss.backward()
        return loss

    return Contender("torch checkpoint", torch.__version__, step, lambda: grads_of(step))


def make_jax(case: Case, params: Params, x: np.ndarray, y: np.ndarray) -> Contender:
    import jax
    import jax.numpy as jnp

    cell = case.cell
    model = case_model(case)
    rec, out = model.levels[0].name, model.levels[1].name

    def cell_step(p, h, xp):
        gh = h[0] @ p["W_hh"].T + p["b_hh"]
        if cell == "elman":
            n = jnp.tanh(xp + gh)
            return (n,), n
        if cell == "gru":
            xr, xz, xn = jnp.split(xp, 3, axis=-1)
            hr, hz, hn = jnp.split(gh, 3, axis=-1)
            r = jax.nn.sigmoid(xr + hr)
            z = jax.nn.sigmoid(xz + hz)
            n = jnp.tanh(xn + r * hn)
            hn_ = (1 - z) * n + z * h[0]
            return (hn_,), hn_
        i, f, g, o = jnp.split(xp + gh, 4, axis=-1)
        c = jax.nn.sigmoid(f) * h[1] + jax.nn.sigmoid(i) * jnp.tanh(g)
        hn_ = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (hn_, c), hn_

    def loss_fn(p, xs, ys):
        r = {k.split(".", 1)[1]: v for k, v in p.items() if k.startswith(rec + ".")}
        xp = r["W_ih"].T[xs] + r["b_ih"]  # (T, B, G): the token input as a gather
        B = xs.shape[1]
        H = r["W_hh"].shape[1]
        h0 = tuple(jnp.zeros((B, H), jnp.float32) for _ in range(2 if cell == "lstm" else 1))
        _, hs = jax.lax.scan(lambda h, xt: cell_step(r, h, xt), h0, xp)
        logits = hs @ p[out + ".W"].T + p[out + ".b"]  # (T, B, V)
        lse = jax.nn.logsumexp(logits, axis=-1)
        picked = jnp.take_along_axis(logits, ys[..., None], axis=-1)[..., 0]
        return jnp.mean(lse - picked)

    vg = jax.jit(jax.value_and_grad(loss_fn))
    jp = {k: jnp.asarray(v) for k, v in params.items()}
    xs, ys = jnp.asarray(x.astype(np.int32)), jnp.asarray(y.astype(np.int32))
    t0 = time.perf_counter()
    jax.block_until_ready(vg(jp, xs, ys))
    compile_s = time.perf_counter() - t0

    def step():
        return jax.block_until_ready(vg(jp, xs, ys))

    def grads():
        loss, g = step()
        return float(loss), {k: np.asarray(v) for k, v in g.items()}

    return Contender("jax", jax.__version__, step, grads, compile_s)


BUILDERS = {"bptt": make_bptt, "torch": make_torch, "jax": make_jax}
