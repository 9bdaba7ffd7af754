"""A padded, masked batch computes what its sequences compute one by one."""

import numpy as np
import pytest

from bptt import Dense, Model, full_bptt, rnn
from bptt.diagnostics import random_problem

LENGTHS = np.array([7, 3, 1, 5])
T, B = 7, 4


@pytest.mark.parametrize("loss,at", [("ce", "every"), ("mse", "every"), ("ce", "last"), ("mse", "last")])
@pytest.mark.parametrize("cell", ["elman", "jordan", "gru", "lstm"])
def test_padded_batch_equals_one_by_one(cell, loss, at):
    opts = {"output_size": 3} if cell == "jordan" else {}
    model = Model(3, [rnn(cell, 5, 2, True, **opts), Dense(4)], loss=loss, at=at)
    p = random_problem(model, np.random.default_rng(11), T=T, B=B)
    mask = np.arange(T)[:, None] < LENGTHS[None, :]
    # garbage beyond each sequence's end must not matter
    p.x[~mask] = 1e3
    if loss == "ce" and at == "every":
        p.targets[~mask] = -1
    g = full_bptt(model, p.params, p.x, p.targets, mask=mask, state0=p.state0)

    # the loss averages over counted positions: weight sequence b by its count n_b
    n = LENGTHS if at == "every" else np.ones(B, int)
    loss_sum = 0.0
    grads_sum = {k: np.zeros_like(v) for k, v in p.params.items()}
    for b in range(B):
        L = LENGTHS[b]
        t_b = p.targets[:L, b : b + 1] if at == "every" else p.targets[b : b + 1]
        s_b = {k: type(s)(*(a[b : b + 1] for a in s)) for k, s in p.state0.items()}
        gb = full_bptt(model, p.params, p.x[:L, b : b + 1], t_b, mask=None, state0=s_b)
        loss_sum += n[b] * gb.loss
        for k in grads_sum:
            grads_sum[k] += n[b] * gb.grads[k]
        for k in s_b:  # initial-state gradient rows and final states
            for a, c in zip(g.dstate0[k], gb.dstate0[k]):
                np.testing.assert_allclose(a[b : b + 1] * n.sum(), c * n[b], rtol=1e-10, atol=1e-13)
            for a, c in zip(g.final_state[k], gb.final_state[k]):
                np.testing.assert_allclose(a[b : b + 1], c, rtol=1e-12, atol=1e-14)
    assert g.loss == pytest.approx(loss_sum / n.sum(), rel=1e-12)
    for k in grads_sum:
        np.testing.assert_allclose(g.grads[k], grads_sum[k] / n.sum(), rtol=1e-9, atol=1e-13, err_msg=k)
