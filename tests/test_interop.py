"""Renaming parameters and states to and from PyTorch's conventions (no torch needed)."""

import numpy as np
import pytest

from bptt import Dense, Model, rnn
from bptt.interop import from_torch, state_to_torch, to_torch, torch_names


def test_names_and_round_trip():
    model = Model(3, [rnn("lstm", 4, 2, True), Dense(5)])
    p = model.init_params(0)
    names = torch_names(model)
    assert names["lstm0.W_ih"] == "rnn.weight_ih_l0"
    assert names["lstm1.reverse.b_hh"] == "rnn.bias_hh_l1_reverse"
    assert names["dense2.W"] == "linear.weight"
    t = to_torch(model, p)
    assert t["rnn.weight_ih_l1"].shape == (16, 8)  # layer 2 reads both directions
    back = from_torch(model, t)
    assert set(back) == set(p)
    for k in p:
        np.testing.assert_array_equal(back[k], p[k])


def test_state_order_is_layer_major_forward_first():
    model = Model(3, [rnn("gru", 4, 2, True), Dense(5)])
    s, _ = model.initial_state(model.init_params(0), 2)
    for i, k in enumerate(["gru0", "gru0.reverse", "gru1", "gru1.reverse"]):
        s[k].h[...] = i
    h, c = state_to_torch(model, s)
    assert c is None and h.shape == (4, 2, 4)
    assert [h[i, 0, 0] for i in range(4)] == [0, 1, 2, 3]


@pytest.mark.parametrize(
    "levels",
    [
        [rnn("jordan", 4), Dense(5)],
        [rnn("lstm", 4), rnn("gru", 4), Dense(5)],
        [rnn("lstm", 4), Dense(5, "tanh")],
        [rnn("lstm", 4)],
    ],
)
def test_models_torch_cannot_express_are_refused(levels):
    model = Model(3, levels)
    with pytest.raises(ValueError, match="expected a model of N identical"):
        torch_names(model)
