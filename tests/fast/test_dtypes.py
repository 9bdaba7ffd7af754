"""float32 stays float32 end to end, and agrees with float64 to float32 rounding."""

import numpy as np
import pytest

from bptt import full_bptt
from bptt.diagnostics import random_problem, relative_error, standard_cases, variant_cases

CASES = [c for c in standard_cases() if c.layers == 2 and c.masked] + variant_cases()


def cast(p, dtype):
    p.params = {k: v.astype(dtype) for k, v in p.params.items()}
    if p.x.dtype.kind == "f":
        p.x = p.x.astype(dtype)
    if p.targets.dtype.kind == "f":
        p.targets = p.targets.astype(dtype)
    p.state0 = {k: type(s)(*(a.astype(dtype) for a in s)) for k, s in p.state0.items()}
    return p


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_float32_matches_float64(case):
    model = case.build()
    p64 = random_problem(model, np.random.default_rng(2), masked=case.masked)
    p32 = cast(random_problem(model, np.random.default_rng(2), masked=case.masked), np.float32)
    g64 = full_bptt(model, p64.params, p64.x, p64.targets, mask=p64.mask, state0=p64.state0)
    g32 = full_bptt(model, p32.params, p32.x, p32.targets, mask=p32.mask, state0=p32.state0)
    y32, s32 = model.forward(p32.params, p32.x, mask=p32.mask, state0=p32.state0)
    assert y32.dtype == np.float32
    for tree in (g32.grads, g32.dstate0, g32.final_state, s32):
        for v in tree.values():
            for a in v if isinstance(v, tuple) else (v,):
                assert a.dtype == np.float32
    assert g32.loss == pytest.approx(g64.loss, rel=1e-5)
    for k in g64.grads:
        assert relative_error(g32.grads[k], g64.grads[k]) < 1e-4, k
