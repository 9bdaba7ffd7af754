"""Series of several columns: lists of columns, targets, missing values (error, drop,
interpolate), the per-column normaliser and metrics."""

import numpy as np
import pytest

from bptt.data.series import (
    MISSING,
    Normalizer,
    column_metrics,
    nmse,
    parse_columns,
    random_windows,
    read_series,
    read_table,
)
from bptt.errors import BpttError


def write(tmp_path, text, name="s.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_parse_columns():
    assert parse_columns("") == [] and parse_columns("  ") == []
    assert parse_columns("temp,humidity,load") == ["temp", "humidity", "load"]
    assert parse_columns(" temp , 2 ,-1") == ["temp", "2", "-1"]
    assert parse_columns("load") == ["load"]
    with pytest.raises(BpttError, match=r"column: expected column names .* received 'a,,b' \(an empty name\)"):
        parse_columns("a,,b")
    with pytest.raises(BpttError, match=r"target: expected distinct columns, received 'a' twice in 'a,b,a'"):
        parse_columns("a,b,a", "target")


TABLE = "t,temp,humidity,load\n0,10,50,1\n1,11,51,2\n2,12,52,3\n3,13,53,4\n"


def test_inputs_and_targets_by_name_and_index(tmp_path):
    p = write(tmp_path, TABLE)
    t = read_table(p, ["temp", "humidity", "load"], ["load"])
    assert t.names == ("temp", "humidity", "load") and t.index == (1, 2, 3)
    assert t.n_inputs == 3 and t.targets == (2,) and t.target_names == ["load"]
    np.testing.assert_array_equal(t.values[:, 2], [1, 2, 3, 4])
    # the targets default to the inputs; a target that is not an input comes after them
    assert read_table(p, ["1", "-2"]).targets == (0, 1)
    u = read_table(p, ["temp", "humidity"], ["load", "temp"])
    assert u.names == ("temp", "humidity", "load") and u.targets == (2, 0) and u.n_inputs == 2
    np.testing.assert_array_equal(u.values, [[10, 50, 1], [11, 51, 2], [12, 52, 3], [13, 53, 4]])
    # one column: what read_series always returned
    v, name = read_series(p)
    assert v.tolist() == [1, 2, 3, 4] and name == "load"
    with pytest.raises(BpttError, match="column: expected distinct columns, received 'temp' and '1', both column 1"):
        read_table(p, ["temp", "1"])
    with pytest.raises(BpttError, match=r"target: expected one of t, temp, humidity, load, received 'lod'"):
        read_table(p, ["temp"], ["lod"])
    with pytest.raises(BpttError, match=r"target: expected an index in \[-4, 4\), received '4'"):
        read_table(p, ["temp"], ["4"])


@pytest.mark.parametrize("cell", list(MISSING) + ["NAN", "-nan"])
def test_a_missing_value_is_an_error_naming_its_row_and_column(tmp_path, cell):
    p = write(tmp_path, f"a,b\n1,2\n3,{cell}\n5,6\n7,8\n")
    with pytest.raises(BpttError) as e:
        read_table(p, ["a", "b"])
    msg = str(e.value)
    assert "\n" not in msg
    assert f"row 3, column 1: expected a finite number, received {cell!r} (a missing value in 'b';" in msg
    assert "--missing drop or interpolate" in msg
    # a missing value in a column the run does not use is no matter
    assert read_table(p, ["a"]).values[:, 0].tolist() == [1, 3, 5, 7]


def test_what_is_not_missing_stays_an_error(tmp_path):
    p = write(tmp_path, "a,b\n1,2\n3,inf\n5,x\n7,8\n")
    for rule in ("drop", "interpolate"):
        with pytest.raises(BpttError, match=r"row 4, column 1: expected a number, received 'x'"):
            read_table(p, ["b"], missing=rule)
    q = write(tmp_path, "a,b\n1,2\n3,inf\n5,6\n7,8\n", "q.csv")
    with pytest.raises(BpttError, match=r"row 3, column 1: expected a finite number, received 'inf'$"):
        read_table(q, ["b"], missing="interpolate")
    with pytest.raises(BpttError, match="missing: expected one of error, drop, interpolate, received 'skip'"):
        read_table(q, ["b"], missing="skip")


def test_a_first_row_with_a_missing_value_is_data_not_a_header(tmp_path):
    p = write(tmp_path, "NA,2\n3,4\n5,6\n7,8\n")
    t = read_table(p, ["0", "1"], missing="drop")
    assert t.names == ("column 0", "column 1") and t.dropped == 1 and t.values.tolist() == [[3, 4], [5, 6], [7, 8]]
    with pytest.raises(BpttError, match=r"row 1, column 0: expected a finite number, received 'NA' \(a missing value;"):
        read_table(p, ["0", "1"])


def test_drop_removes_the_rows_with_a_missing_value_in_the_columns_used(tmp_path):
    p = write(tmp_path, "a,b,c\n1,10,?\n2,,x\n3,30,\n,40,5\n5,50,6\n6,NA,7\n7,70,8\n")
    t = read_table(p, ["a", "b"], missing="drop")  # c is not used: its '?', 'x' and '' are no matter
    assert t.dropped == 3 and t.filled == 0
    assert t.values.tolist() == [[1, 10], [3, 30], [5, 50], [7, 70]]
    assert t.note() == "--missing drop: 3 row(s) with a missing value dropped"
    q = write(tmp_path, "a\n1\nNA\n?\n4\n", "q.csv")
    with pytest.raises(BpttError, match=r"expected at least 3 values, received 2 \(after dropping 2 rows"):
        read_table(q, ["a"], missing="drop")


def test_interpolate_fills_linearly_and_the_ends_with_the_nearest_value(tmp_path):
    p = write(tmp_path, "a,b\n?,1\n,2\n4,NA\n5,\n6,8\n,9\n10,nan\n,?\n")
    t = read_table(p, ["a", "b"], missing="interpolate")
    # a: rows 0, 1 before its first value (4): 4; row 5 between 6 and 10: 8; row 7 after the last: 10
    assert t.values[:, 0].tolist() == [4, 4, 4, 5, 6, 8, 10, 10]
    # b: rows 2, 3 between 2 (row 1) and 8 (row 4): 4 and 6; row 6 between 9 and nothing: 9, row 7: 9
    assert t.values[:, 1].tolist() == [1, 2, 4, 6, 8, 9, 9, 9]
    assert t.filled == 8 and t.dropped == 0
    assert t.note() == "--missing interpolate: 8 missing value(s) filled in"
    assert read_table(p, ["b"], missing="interpolate").filled == 4  # only the columns used are counted
    q = write(tmp_path, "a,b\n1,?\n2,\n3,NA\n", "q.csv")
    with pytest.raises(BpttError, match="column 1: expected at least one value to interpolate from, received 3"):
        read_table(q, ["a", "b"], missing="interpolate")


def test_the_default_rule_changes_nothing_for_a_complete_file(tmp_path):
    p = write(tmp_path, TABLE)
    for rule in ("error", "drop", "interpolate"):
        t = read_table(p, ["temp", "load"], missing=rule)
        assert t.values.tolist() == [[10, 1], [11, 2], [12, 3], [13, 4]] and t.dropped == t.filled == 0
    assert read_table(p, ["temp"]).note() == ""


def test_the_normaliser_per_column_is_each_columns_own():
    rng = np.random.default_rng(0)
    v = rng.normal([1.0, -5.0, 100.0], [2.0, 0.1, 30.0], size=(50, 3))
    v[:, 1] = 7.0  # a constant column: std 1 (as for one series)
    n = Normalizer.fit(v)
    assert n.columns == 3 and isinstance(n.mean, tuple)
    for j in range(3):
        one = Normalizer.fit(v[:, j])
        assert n.mean[j] == one.mean and n.std[j] == one.std  # bitwise the one-column fit
        np.testing.assert_array_equal(n(v)[:, j], one(v[:, j]))
    assert n.std[1] == 1.0
    np.testing.assert_allclose(n.inverse(n(v)), v, rtol=1e-13)
    m = n.take([2, 0])
    assert m.mean == (n.mean[2], n.mean[0]) and m.std == (n.std[2], n.std[0])
    back = Normalizer(**n.as_dict())  # through JSON's lists
    assert back == n and back.as_dict() == {"mean": list(n.mean), "std": list(n.std)}
    # one series: numbers, as before
    s = Normalizer.fit(v[:, 0])
    assert s.columns is None and isinstance(s.mean, float) and s.as_dict() == {"mean": s.mean, "std": s.std}
    assert s(np.ones(3, np.float32)).dtype == np.float32  # a number keeps the array's dtype


def test_column_metrics_by_hand():
    truth = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0]])
    pred = truth + np.array([[1.0, 0.0], [-1.0, 0.0], [1.0, 10.0], [-1.0, -10.0]])
    m = column_metrics(pred, truth, ["a", "b"])
    assert m["mse.a"] == 1.0 and m["nmse.a"] == pytest.approx(1.0 / 1.25)
    assert m["mse.b"] == 50.0 and m["nmse.b"] == pytest.approx(50.0 / 125.0)
    assert m["nmse"] == m["loss"] == pytest.approx((0.8 + 0.4) / 2) and m["mse"] == pytest.approx(25.5)
    assert m["nmse.a"] == nmse(pred[:, 0], truth[:, 0])


def test_windows_of_rows():
    z = np.arange(40.0).reshape(20, 2)
    x, y = random_windows(z, 3, 5, np.random.default_rng(0))
    assert x.shape == y.shape == (5, 3, 2)
    np.testing.assert_array_equal(y, x + 2)  # the next row
    x1, _ = random_windows(z[:, 0], 3, 5, np.random.default_rng(0))
    np.testing.assert_array_equal(x1[..., 0], x[..., 0])  # the same draws as one column
