"""Data: text vocabulary, encoding, splits and streams; time series files, normalisation and
windows; clear errors for bad files."""

import numpy as np
import pytest

from bptt.data import (
    Normalizer,
    Vocab,
    batchify,
    bundled_text_path,
    nmse,
    one_step,
    random_windows,
    read_series,
    read_text,
    segments,
    split,
)


def test_vocab_round_trip_and_unknown_rule():
    v = Vocab.from_text("hello world")
    assert v.chars == " dehlorw"
    ids, unknown = v.encode("hold")
    assert v.decode(ids) == "hold" and unknown == 0 and ids.dtype == np.int32
    ids, unknown = v.encode("héllo!")  # é and ! are not in the vocabulary: skipped and counted
    assert v.decode(ids) == "hllo" and unknown == 2


def test_bundled_text():
    text = read_text(bundled_text_path())
    assert text.startswith("BOTCHAN") and len(text) == 254781


def test_split_and_streams():
    ids = np.arange(100)
    tr, va, te = split(ids, 0.1)
    assert tr.tolist() == list(range(90)) and va.tolist() == list(range(90, 100)) and len(te) == 0
    tr, va, te = split(ids, 0.1, 0.2)  # the test part the very end, validation before it
    assert (tr[-1], va.tolist(), te[0], len(te)) == (69, list(range(70, 80)), 80, 20)
    s = batchify(np.arange(23), 4)  # 5 per stream, the last 3 dropped
    assert s.shape == (5, 4) and s[:, 1].tolist() == [5, 6, 7, 8, 9]
    assert segments(s, 2) == [(0, 2), (2, 2)]
    assert segments(batchify(np.arange(24), 4), 4) == [(0, 4), (4, 1)]
    with pytest.raises(ValueError, match="expected at most 5 streams for 10 tokens, received 6"):
        batchify(np.arange(10), 6)
    with pytest.raises(ValueError, match=r"val_fraction: expected a number in \[0, 1\)"):
        split(ids, 1.0)


@pytest.mark.parametrize(
    "content,fragment",
    [
        (b"", "empty file"),
        (b"  \n\n", "empty file"),
        (b"ab\x00cd", "binary"),
        (b"ab\xff\xfecd", "undecodable bytes at offset 2"),
    ],
)
def test_bad_text_files(tmp_path, content, fragment):
    p = tmp_path / "f.txt"
    p.write_bytes(content)
    with pytest.raises(ValueError, match=fragment):
        read_text(p)
    with pytest.raises(ValueError, match="expected an existing file"):
        read_text(tmp_path / "missing.txt")


def test_read_series_formats(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text('"YEAR","SUNACTIVITY"\n1700,5\n1701,11\n1702,16.5\n')
    v, name = read_series(p)
    assert v.tolist() == [5, 11, 16.5] and name == "SUNACTIVITY"
    assert read_series(p, "YEAR")[0].tolist() == [1700, 1701, 1702]
    assert read_series(p, 0)[0].tolist() == [1700, 1701, 1702]
    q = tmp_path / "b.dat"
    q.write_text("1700   5\n1701  11\n\n1702  16\n")
    assert read_series(q)[0].tolist() == [5, 11, 16]
    r = tmp_path / "c.dat"
    r.write_text("86\n141\n95\n41\n")
    v, name = read_series(r)
    assert v.tolist() == [86, 141, 95, 41] and name == "column 0"


@pytest.mark.parametrize(
    "content,column,fragment",
    [
        (b"", None, "empty file"),
        (b"a,b\n", None, "numeric rows after the header"),
        (b"\x00\x01\x02", None, "binary"),
        (b"1\n2\nx3\n4\n", None, r"row 3, column 0: expected a number, received 'x3'"),
        (b"1\n2\nnan\n4\n", None, r"row 3, column 0: expected a finite number, received 'nan'"),
        (b"1,2\n3,4\n5,6\n", 5, r"column: expected an index in \[-2, 2\), received 5"),
        (b"a,b\n1,2\n3,4\n5,6\n", "c", r"column: expected one of a, b, received 'c'"),
        (b"1\n2\n", None, "at least 3 values, received 2"),
        (b"1 2\n3\n4 5\n", None, "row 2: expected at least 2 columns, received 1"),
    ],
)
def test_bad_series_files(tmp_path, content, column, fragment):
    p = tmp_path / "s.txt"
    p.write_bytes(content)
    with pytest.raises(ValueError, match=fragment):
        read_series(p, column)


def test_normalisation_and_windows():
    v = np.arange(10.0)
    n = Normalizer.fit(v[:5])  # the training part only
    assert n.mean == 2.0 and n.std == pytest.approx(np.sqrt(2.0))
    np.testing.assert_allclose(n.inverse(n(v)), v)
    x, y = one_step(v)
    assert x.shape == (9, 1, 1) and (y[:, 0, 0] == v[1:]).all()
    xw, yw = random_windows(v, 3, 4, np.random.default_rng(0))
    assert xw.shape == (4, 3, 1) and (yw == xw + 1).all()
    with pytest.raises(ValueError, match="seq_len: expected less than 9"):
        random_windows(v, 3, 10, np.random.default_rng(0))


def test_nmse():
    t = np.array([1.0, 2.0, 3.0, 4.0])
    assert nmse(np.full(4, t.mean()), t) == pytest.approx(1.0)
    assert nmse(t, t) == 0.0


def test_ar_baseline_recovers_a_known_process():
    from bptt.data.series import ar_predict, fit_ar

    rng = np.random.default_rng(0)
    z = np.zeros(3000)
    for t in range(2, len(z)):  # z(t) = 0.3 + 0.6 z(t-1) - 0.2 z(t-2) + noise
        z[t] = 0.3 + 0.6 * z[t - 1] - 0.2 * z[t - 2] + 0.01 * rng.standard_normal()
    coef = fit_ar(z, 2)
    np.testing.assert_allclose(coef, [0.3, 0.6, -0.2], atol=0.02)
    pred = ar_predict(coef, z)
    assert pred.shape == (len(z) - 2,)
    assert pred[0] == pytest.approx(coef[0] + coef[1] * z[1] + coef[2] * z[0])
    with pytest.raises(ValueError, match="order: expected a positive integer"):
        fit_ar(z, 0)
    with pytest.raises(ValueError, match="at least 8 values"):
        fit_ar(z[:5], 3)
