"""Property-based tests: files and settings from outside never fail with anything but bptt's own
error (BpttError), whatever their bytes or values."""

import json
import os
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bptt.data.series import read_series
from bptt.data.text import read_text
from bptt.errors import BpttError
from bptt.train import TrainConfig, Trainer
from bptt.train import checkpoint as ckpt
from bptt.train.config import load_toml

FUZZ = settings(
    max_examples=int(os.environ.get("BPTT_FUZZ_EXAMPLES", 150)),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
keys = st.sampled_from(TrainConfig.keys() + ["hiden", "", "lr ", "extra", "Cell"])
settings_dicts = st.dictionaries(keys, json_values, max_size=6)
plausible = st.fixed_dictionaries(
    {},
    optional={
        "hidden": st.integers(-2, 40),
        "cell": st.sampled_from(["lstm", "gru", "elman", "jordan", "lsmt", ""]),
        "lr": st.floats(allow_nan=True, allow_infinity=True),
        "algorithm": st.sampled_from(["full", "tbptt", "random", "artbp", "x"]),
        "k1": st.integers(-1, 30),
        "k2": st.integers(-1, 30),
        "truncation_prob": st.floats(-1, 2),
        "optimizer": st.sampled_from(["adam", "sgd", "momentum", "rprop", "adamw"]),
        "momentum": st.floats(-1, 2),
        "schedule": st.sampled_from(["cosine", "constant", "linear"]),
        "warmup": st.integers(-1, 100),
        "task": st.sampled_from(["text", "series", "image"]),
        "column": st.sampled_from(["", "0", "value"]),
        "update": st.sampled_from(["online", "batch"]),
        "batching": st.sampled_from(["", "stream", "window", "x"]),
        "steps": st.integers(-1, 5),
        "epochs": st.floats(-1, 3),
        "val_fraction": st.floats(-0.5, 1.5),
        "embed": st.integers(-1, 8),
        "plateau_factor": st.floats(-1, 2),
        "plateau_patience": st.integers(-1, 3),
        "dtype": st.sampled_from(["float32", "float64", "float16"]),
        "diverge_after": st.integers(-1, 3),
    },
)


def _read(reader, data: bytes, name: str):
    """reader(path) on a file holding `data`; None where it raised BpttError (anything else fails)."""
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, name)
        open(p, "wb").write(data)
        try:
            return reader(p)
        except BpttError:
            return None


@FUZZ
@given(settings_dicts)
def test_any_settings_give_a_config_or_bptts_error(d):
    try:
        TrainConfig.from_dict(d).validate(set(d))
    except BpttError as e:
        assert "expected" in str(e) and "received" in str(e)


@FUZZ
@given(plausible)
def test_plausible_settings_give_a_valid_config_or_bptts_error(d):
    try:
        cfg = TrainConfig.from_dict(d).validate(set(d))
    except BpttError as e:
        assert "expected" in str(e) and "received" in str(e)
        return
    assert cfg.hidden >= 1 and cfg.lr > 0 and np.isfinite(cfg.lr)
    assert cfg.algorithm not in ("random", "artbp") or 0 < cfg.truncation_prob < 1


@FUZZ
@given(st.binary(max_size=400) | st.text(max_size=200).map(str.encode))
def test_any_toml_bytes_give_a_table_or_bptts_error(data):
    table = _read(load_toml, data, "c.toml")
    if table is not None:
        assert isinstance(table, dict)
        try:
            TrainConfig.from_dict(table).validate(set(table))
        except BpttError:
            pass


series_text = st.lists(
    st.lists(
        st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.text('0123456789.-e,ab "', max_size=6)),
        min_size=1,
        max_size=3,
    ),
    max_size=12,
).map(lambda rows: "\n".join(",".join(r) for r in rows))


@FUZZ
@given(st.binary(max_size=300) | series_text.map(str.encode), st.sampled_from([None, "0", "1", "-1", "value", "9"]))
def test_any_series_file_gives_finite_values_or_bptts_error(data, column):
    got = _read(lambda p: read_series(p, column), data, "s.csv")
    if got is not None:
        values = got[0]
        assert values.dtype == np.float64 and len(values) >= 3 and np.isfinite(values).all()


@FUZZ
@given(st.binary(max_size=300) | st.text(max_size=100).map(lambda s: s.encode("utf-8", "surrogatepass")))
def test_any_text_file_gives_text_or_bptts_error(data):
    text = _read(read_text, data, "t.txt")
    assert text is None or (isinstance(text, str) and text.strip())


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory):
    d = tmp_path_factory.mktemp("fz")
    text = d / "w.txt"
    text.write_text(" ".join(np.random.default_rng(0).choice(["ab", "cd", "ef", "gh"], 2000)))
    Trainer(
        TrainConfig(
            data=str(text),
            hidden=6,
            steps=4,
            eval_every=2,
            batch_size=4,
            seq_len=4,
            algorithm="tbptt",
            k1=4,
            k2=9,
            cell="lstm",
            out=str(d / "r"),
            progress=False,
            sample_length=0,
        ),
        log=lambda s: None,
    ).run()
    path = str(d / "r" / "checkpoint.npz")
    return open(path, "rb").read(), ckpt.load(path)


@settings(
    max_examples=2 * FUZZ.max_examples, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_mutated_checkpoints_load_as_the_original_or_give_bptts_error(checkpoint_bytes, data):
    raw, ref = checkpoint_bytes
    n = len(raw)
    i = data.draw(st.integers(0, n - 1), label="position")
    kind = data.draw(st.sampled_from(["set", "insert", "delete", "truncate"]), label="kind")
    chunk = data.draw(st.binary(min_size=1, max_size=16), label="bytes")
    b = bytearray(raw)
    if kind == "set":
        b[i : i + len(chunk)] = chunk[: n - i]
    elif kind == "insert":
        b[i:i] = chunk
    elif kind == "delete":
        del b[i : i + len(chunk)]
    else:
        b = b[:i]
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "checkpoint.npz")
        open(p, "wb").write(bytes(b))
        try:
            got = ckpt.load(p)
        except BpttError:
            return
    assert json.dumps(got.meta, sort_keys=True) == json.dumps(ref.meta, sort_keys=True)
    for a, r in ((got.params, ref.params), (got.opt, ref.opt), (got.extra, ref.extra)):
        assert a.keys() == r.keys() and all(np.array_equal(a[k], r[k]) and a[k].dtype == r[k].dtype for k in a)
