"""Renaming parameters and states to and from PyTorch's conventions (torch only where a real
state_dict is read)."""

import numpy as np
import pytest

from bptt import Dense, Model, rnn
from bptt.interop import from_torch, state_from_torch, state_to_torch, to_torch, torch_names


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


def test_from_torch_takes_a_bare_module_state_dict_and_names_what_is_missing():
    """nn.LSTM(...).state_dict() has no 'rnn.' prefix; the readout's nn.Linear state_dict goes
    in `readout`. Missing or misshapen entries are named, not a KeyError."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    lstm, lin = torch.nn.LSTM(3, 4, num_layers=2), torch.nn.Linear(4, 5)
    model = Model(3, [rnn("lstm", 4, 2), Dense(5)])
    p = from_torch(model, lstm.state_dict(), readout=lin.state_dict())
    np.testing.assert_array_equal(p["lstm1.W_hh"], lstm.weight_hh_l1.detach().numpy())
    np.testing.assert_array_equal(p["dense2.b"], lin.bias.detach().numpy())
    with pytest.raises(ValueError, match=r"from_torch: expected the torch entries \['linear.weight', 'linear.bias'\]"):
        from_torch(model, lstm.state_dict())
    bad = dict(lstm.state_dict(), weight_hh_l0=torch.zeros(16, 3))
    with pytest.raises(
        ValueError, match=r"rnn.weight_hh_l0: expected shape \(16, 4\) \(bptt's lstm0.W_hh\), received \(16, 3\)"
    ):
        from_torch(model, bad, readout=lin.state_dict())


def test_state_from_torch_inverts_state_to_torch():
    for kind in ("lstm", "gru", "rnn"):
        model = Model(3, [rnn(kind, 4, 2, True), Dense(5)])
        s, _ = model.initial_state(model.init_params(0), 2)
        for i, k in enumerate(sorted(s)):
            s[k] = type(s[k])(*(np.full_like(a, i + j) for j, a in enumerate(s[k])))
        h, c = state_to_torch(model, s)
        back = state_from_torch(model, h, c)
        for k in s:
            for a, b in zip(s[k], back[k]):
                np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"state_from_torch: expected h0 and c0 of shape \(4, B, H\)"):
        state_from_torch(Model(3, [rnn("lstm", 4, 2, True), Dense(5)]), h)


def test_rnn_is_torchs_name_for_elman():
    model = Model(3, [rnn("rnn", 4), Dense(2)])
    assert model.recurrent_levels[0].kind == "elman" and "elman0.W_hh" in model.param_shapes()
    from bptt.train import TrainConfig

    assert TrainConfig(cell="rnn").validate().cell == "elman"


def test_dropout_levels_are_passed_over_by_every_mapping():
    """A Dropout level after the readout (or first, or between): the names, the spec and the
    round trip are those of the model without it (they took the Dropout as the readout)."""
    from bptt.interop import torch_spec
    from bptt.layers import Dropout

    plain = Model(3, [rnn("lstm", 4), Dense(2)], loss="mse")
    for levels in ([rnn("lstm", 4), Dense(2), Dropout(0.2)], [Dropout(0.1), rnn("lstm", 4), Dense(2)]):
        m = Model(3, levels, loss="mse")
        p = m.init_params(0)
        names = torch_names(m)
        assert sorted(names.values()) == sorted(torch_names(plain).values())
        back = from_torch(m, to_torch(m, p))
        assert back.keys() == p.keys() and all(np.array_equal(back[k], p[k]) for k in p)
        assert torch_spec(m)["torch"] == torch_spec(plain)["torch"]


def test_from_torch_refuses_a_torch_dtype_numpy_lacks():
    torch = pytest.importorskip("torch")
    from bptt.errors import BpttError

    m = Model(3, [rnn("lstm", 4), Dense(2)], loss="mse")
    t = {k: torch.from_numpy(v).to(torch.bfloat16) for k, v in to_torch(m, m.init_params(0)).items()}
    with pytest.raises(BpttError, match="rnn.weight_ih_l0: expected float32 or float64 values, received bfloat16"):
        from_torch(m, t)
    mixed = {k: torch.from_numpy(v) for k, v in to_torch(m, m.init_params(0)).items()}
    mixed["linear.bias"] = mixed["linear.bias"].float()
    with pytest.raises(BpttError, match=r"expected one dtype for all entries, received \['float32', 'float64'\]"):
        from_torch(m, mixed)
