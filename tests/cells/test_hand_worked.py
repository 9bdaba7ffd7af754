"""Gradients worked by hand on the linear recurrence x(t) = w x(t-1)."""

import numpy as np
import pytest

from bptt import Elman, ElmanState, scan_backward, scan_forward


def linear_recurrence(w, x0, T):
    """An Elman cell with identity activation, one unit, no input: h(t) = w h(t-1)."""
    cell = Elman(1, 1, activation="identity")
    params = {"W_ih": np.zeros((1, 1)), "W_hh": np.array([[w]]), "b_ih": np.zeros(1), "b_hh": np.zeros(1)}
    xp = cell.project(params, np.zeros((T, 1, 1)))
    outs, final, tape = scan_forward(cell, params, xp, ElmanState(np.array([[x0]])))
    return cell, params, outs, tape


def backprop(cell, params, tape, douts):
    grads = {k: np.zeros_like(v) for k, v in params.items()}
    _, d0 = scan_backward(cell, params, tape, douts, ElmanState(np.zeros((1, 1))), grads)
    return grads, d0


def test_loss_at_the_last_step():
    # loss = x(3) = w^3 x(0):  d loss / d w = 3 w^2 x(0) = 3 * 0.04 * 0.9 = 0.108,
    # d loss / d x(0) = w^3 = 0.008
    cell, params, outs, tape = linear_recurrence(0.2, 0.9, 3)
    assert outs[:, 0, 0] == pytest.approx([0.18, 0.036, 0.0072], abs=1e-15)
    douts = np.zeros((3, 1, 1))
    douts[2] = 1.0
    grads, d0 = backprop(cell, params, tape, douts)
    assert grads["W_hh"][0, 0] == pytest.approx(0.108, abs=1e-15)
    assert d0.h[0, 0] == pytest.approx(0.008, abs=1e-15)
    # the weight gradient is the sum over the unrolled copies: at step t the copy of w sees
    # x(t-1) and the error delta(t) = w^(3-t):  x(0) w^2 + x(1) w + x(2) = 3 w^2 x(0)
    assert 0.9 * 0.04 + 0.18 * 0.2 + 0.036 == pytest.approx(0.108, abs=1e-15)


def test_loss_at_every_step():
    # loss = x(1) + x(2) + x(3):  d/dw = x(0) (1 + 2 w + 3 w^2) = 0.9 * 1.52 = 1.368
    cell, params, outs, tape = linear_recurrence(0.2, 0.9, 3)
    grads, d0 = backprop(cell, params, tape, np.ones((3, 1, 1)))
    assert grads["W_hh"][0, 0] == pytest.approx(1.368, abs=1e-14)
    assert d0.h[0, 0] == pytest.approx(0.2 + 0.04 + 0.008, abs=1e-15)
