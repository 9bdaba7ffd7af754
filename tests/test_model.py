"""Wrong shapes, dtypes or sizes at the public entry points raise ValueError naming what was
expected and what was received."""

import numpy as np
import pytest

from bptt import Dense, Embedding, LSTMState, Model, Recurrent, full_bptt, gradcheck, rnn


def lstm_model(**kw):
    return Model(3, [rnn("lstm", 4), Dense(5)], **kw)


def good(model=None, dtype=np.float64):
    model = model or lstm_model()
    p = model.init_params(0, dtype)
    x = np.zeros((6, 2, 3), dtype)
    t = np.zeros((6, 2), int)
    return model, p, x, t


def raises(fn, *fragments):
    with pytest.raises(ValueError) as e:
        fn()
    msg = str(e.value)
    assert "expected" in msg and "received" in msg, msg
    for f in fragments:
        assert f in msg, (f, msg)
    return msg


@pytest.mark.parametrize(
    "build,fragments",
    [
        (lambda: Model(0, [Dense(2)]), ["input_size", "0"]),
        (lambda: Model(2.5, [Dense(2)]), ["input_size", "2.5"]),
        (lambda: Model(3, [Recurrent("rnnn", 4)]), ["cell", "'rnnn'", "lstm"]),
        (lambda: Model(3, [Recurrent("lstm", -4)]), ["size", "-4"]),
        (lambda: Model(3, [Dense(2)], loss="xent"), ["loss", "'xent'"]),
        (lambda: Model(3, [Dense(2)], at="first"), ["at", "'first'"]),
        (lambda: Model(3, [Dense(2, activation="gelu")]), ["activation", "'gelu'"]),
        (lambda: Model(3, [Dense(2)], tokens=True), ["Dense", "float inputs"]),
        (lambda: Model(3, [Embedding(2)]), ["Embedding", "token"]),
        (lambda: Model(3, []), ["levels"]),
        (lambda: Model(3, ["lstm"]), ["levels", "str"]),
        (lambda: Model(3, [rnn("lstm", 4, layers=0)]), ["layers", "0"]),
        (lambda: Model(3, [Recurrent("elman", 4, activation="softplus")]), ["activation", "softplus"]),
        (lambda: Model(3, [Recurrent("jordan", 4, context_decay=1.5)]), ["context_decay", "1.5"]),
        (lambda: Model(3, [Recurrent("gru", 4, activation="relu")]), ["gru", "activation"]),
        (lambda: Model(3, [Dense(2, name="a"), Dense(2, name="a")]), ["unique name", "'a'"]),
    ],
)
def test_model_construction(build, fragments):
    raises(build, *fragments)


def test_params():
    model, p, x, t = good()
    q = dict(p)
    del q["lstm0.W_hh"]
    raises(lambda: full_bptt(model, q, x, t), "lstm0.W_hh", "missing")
    q = dict(p, **{"lstm0.W_hh": np.zeros((16, 5))})
    raises(lambda: full_bptt(model, q, x, t), "lstm0.W_hh", "(16, 4)", "(16, 5)")
    q = dict(p, **{"dense1.b": p["dense1.b"].astype(np.float32)})
    raises(lambda: full_bptt(model, q, x, t), "dense1.b", "float64", "float32")
    q = {k: v.astype(np.int64) for k, v in p.items()}
    raises(lambda: full_bptt(model, q, x, t), "float32 or float64", "int64")
    raises(lambda: full_bptt(model, list(p.values()), x, t), "dict", "list")


def test_inputs():
    model, p, x, t = good()
    raises(lambda: full_bptt(model, p, x[:, :, :2], t), "(T, B, D)", "(6, 2, 2)")
    raises(lambda: full_bptt(model, p, x[0], t), "(T, B, D)", "(2, 3)")
    raises(lambda: full_bptt(model, p, x.astype(np.float32), t), "float64", "float32")
    raises(lambda: full_bptt(model, p, x.tolist(), t), "NumPy array", "list")
    bad = x.copy()
    bad[2, 1, 0] = np.nan
    raises(lambda: full_bptt(model, p, bad, t), "finite", "NaN")
    raises(lambda: full_bptt(model, p, x[:0], t[:0]), "at least one step", "(0, 2, 3)")


def test_tokens():
    model = Model(10, [rnn("gru", 4), Dense(10)], tokens=True)
    p = model.init_params(0)
    t = np.zeros((6, 2), int)
    raises(lambda: full_bptt(model, p, np.full((6, 2), 10), t), "[0, 10)", "10")
    raises(lambda: full_bptt(model, p, np.full((6, 2), -1), t), "[0, 10)", "-1")
    raises(lambda: full_bptt(model, p, np.zeros((6, 2)), t), "integer", "float64")
    raises(lambda: full_bptt(model, p, np.zeros((6, 2, 10)), t), "(T, B)", "(6, 2, 10)")


def test_targets():
    model, p, x, t = good()
    raises(lambda: full_bptt(model, p, x, t[:5]), "targets", "(6, 2)", "(5, 2)")
    raises(lambda: full_bptt(model, p, x, t.astype(float)), "targets", "integer", "float64")
    raises(lambda: full_bptt(model, p, x, t + 5), "targets", "[0, 5)", "5")
    raises(lambda: full_bptt(model, p, x, None), "targets", "None")
    m = lstm_model(loss="mse")
    p = m.init_params(0)
    raises(lambda: full_bptt(m, p, x, np.zeros((6, 2, 4))), "(T, B, O)", "(6, 2, 5)", "(6, 2, 4)")
    raises(lambda: full_bptt(m, p, x, np.zeros((6, 2, 5), np.float32)), "float64", "float32")
    m = lstm_model(at="last")
    p = m.init_params(0)
    raises(lambda: full_bptt(m, p, x, t), "(B) class indices", "(6, 2)")


def test_mask():
    model, p, x, t = good()
    raises(lambda: full_bptt(model, p, x, t, mask=np.ones((6, 3), bool)), "mask", "(6, 2)", "(6, 3)")
    raises(lambda: full_bptt(model, p, x, t, mask=np.full((6, 2), 0.5)), "mask", "0/1")
    m = np.ones((6, 2), bool)
    m[:, 1] = False
    raises(lambda: full_bptt(model, p, x, t, mask=m), "mask", "sequence 1")


def test_state0():
    model, p, x, t = good()
    z = np.zeros((2, 4))
    raises(lambda: full_bptt(model, p, x, t, state0={"lstm9": LSTMState(z, z)}), "state0", "lstm9")
    raises(lambda: full_bptt(model, p, x, t, state0={"lstm0": (z, z)}), "LSTMState", "tuple")
    raises(lambda: full_bptt(model, p, x, t, state0={"lstm0": LSTMState(z, z[:1])}), "(2, 4)", "(1, 4)")
    raises(
        lambda: full_bptt(model, p, x, t, state0={"lstm0": LSTMState(z, z.astype(np.float32))}),
        "float64",
        "float32",
    )
    raises(lambda: full_bptt(model, p, x, t, state0=[z]), "state0", "list")


def test_init_params_dtype():
    raises(lambda: lstm_model().init_params(0, np.int32), "float32 or float64", "int32")


def test_gradcheck_needs_float64():
    model, p, x, t = good(dtype=np.float32)
    raises(lambda: gradcheck(model, p, x, t), "float64")


def test_one_level_and_numpy_numbers_are_taken():
    """A lone level is a list of one; NumPy numbers are numbers (a np.float32 rate was refused)."""
    import bptt
    from bptt.layers import Dropout, RateRegularizer

    m = bptt.Model(3, bptt.Dense(2), loss="mse")
    assert [lv.name for lv in m.levels] == ["dense0"]
    assert Dropout(np.float32(0.5)).rate == 0.5
    assert RateRegularizer(np.float32(0.1), np.float64(2.0)).strength == 2.0
    with pytest.raises(bptt.BpttError, match="levels: expected a list of Level objects, received int"):
        bptt.Model(3, 5, loss="mse")
    with pytest.raises(
        bptt.BpttError, match=r"rng: expected a numpy Generator or a seed \(an integer >= 0\), received 'a'"
    ):
        m.init_params("a")
