"""The compiled spiking scans (bptt.fast.spiking) against the cells' NumPy steps, float32: the
same spikes, the same loss and gradients to float32 rounding, for every option; forward and
reversed (bidirectional) scans, token inputs, TBPTT's step-by-step backward from the compiled
tape, and masked batches (which run the NumPy steps)."""

import numpy as np
import pytest

import bptt
from bptt.algorithms import make
from bptt.fast import spiking, switch

pytestmark = pytest.mark.skipif(not spiking.SCANS, reason="no compiled scans here")

OPTIONS = [
    ("lif", {}),
    ("alif", dict(adapt_strength=0.2, adapt_decay=0.9)),
    ("lif", dict(reset="zero", refractory=2, learn_decay=True, surrogate="arctan", slope=2.0)),
    (
        "alif",
        dict(recurrent=False, detach_reset=True, surrogate="triangle", slope=1.0, surrogate_scale=0.3, refractory=1),
    ),
    (
        "alif",
        dict(reset="zero", learn_decay=True, decay=np.linspace(0.5, 0.9, 24), threshold=np.linspace(0.5, 1.5, 24)),
    ),
]


def build(kind, opts, bidirectional=False, tokens=False, at="last"):
    D = 7 if tokens else 10
    model = bptt.Model(
        D,
        [bptt.Recurrent(kind, 24, bidirectional=bidirectional, **opts), bptt.Recurrent("leaky", 3)],
        tokens=tokens,
        at=at,
        window=4 if at == "last" else 1,
    )
    rng = np.random.default_rng(1)
    params = model.init_params(rng, np.float32)
    for k in params:
        if k.endswith("W_ih"):
            params[k] = params[k] * 4
    T, B = 30, 6
    x = rng.integers(0, D, (T, B)) if tokens else (rng.random((T, B, D)) < 0.4).astype(np.float32)
    y = rng.integers(0, 3, (T, B) if at == "every" else B)
    return model, params, x, y


def same(g, r):
    assert g.loss == pytest.approx(r.loss, rel=1e-5)
    for k in r.grads:
        scale = max(float(np.abs(r.grads[k]).max()), 1e-6)
        assert np.abs(g.grads[k] - r.grads[k]).max() <= 1e-4 * scale, k
    for key in r.final_state:
        for a, b in zip(g.final_state[key], r.final_state[key]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind,opts", OPTIONS, ids=lambda o: str(o) if isinstance(o, dict) else o)
@pytest.mark.parametrize("bidirectional", [False, True], ids=["forward", "bidirectional"])
@pytest.mark.parametrize("tokens", [False, True], ids=["spikes", "tokens"])
def test_compiled_scans_equal_the_numpy_steps(kind, opts, bidirectional, tokens):
    model, params, x, y = build(kind, opts, bidirectional, tokens)
    g = bptt.full_bptt(model, params, x, y)
    with switch.use(True, scans=False):
        r = bptt.full_bptt(model, params, x, y)
    spikes_fast, _ = model.forward(params, x)
    with switch.use(False):
        spikes_ref, _ = model.forward(params, x)
    np.testing.assert_allclose(spikes_fast, spikes_ref, rtol=1e-5, atol=1e-5)
    same(g, r)


@pytest.mark.parametrize("kind,opts", OPTIONS[:3], ids=["lif", "alif", "lif-options"])
def test_the_compiled_tape_serves_step_by_step_backward_and_truncation(kind, opts):
    """TBPTT (k1 < k2) reads the compiled scan's caches step by step; ARTBP's truncation factors
    scale the compiled backward's messages: both equal the NumPy steps."""
    model, params, x, y = build(kind, opts, at="every")
    for algo in (lambda: make("tbptt", k1=5, k2=12), lambda: make("artbp", c=0.2, rng=np.random.default_rng(3))):
        g = algo()(model, params, x, y)
        with switch.use(True, scans=False):
            r = algo()(model, params, x, y)
        same(g, r)
    mask = np.ones(x.shape[:2], bool)
    mask[20:, 2] = False  # masked batches run the NumPy steps
    g = bptt.full_bptt(model, params, x, y, mask=mask)
    with switch.use(False):
        r = bptt.full_bptt(model, params, x, y, mask=mask)
    same(g, r)
