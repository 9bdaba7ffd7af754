"""bptt experiment compare: every algorithm on one problem, its agreement with full BPTT."""

from bptt.cli import main
from bptt.experiments.compare import compare, table


def test_compare_rows_agree_where_they_must(capsys):
    rows = {r.name: r for r in compare("lstm", hidden=3, batch=2, length=10, repeats=1)}
    assert set(rows) == {"full", "tbptt k1=k2=2", "artbp c=0.1", "budget 10% (mixed)", "rtrl", "uoro"}
    for name in ("full", "budget 10% (mixed)", "rtrl"):  # exact: the same gradient
        assert rows[name].rel_error < 1e-12 and abs(rows[name].cosine - 1) < 1e-12, rows[name]
    assert rows["tbptt k1=k2=2"].rel_error > 1e-3  # truncated: another gradient
    assert all(r.seconds > 0 and r.peak_bytes > 0 for r in rows.values())
    assert "| rtrl |" in table(list(rows.values()))
    assert main(["experiment", "compare", "--hidden", "3", "--length", "8", "--repeats", "1"]) == 0
    assert "cosine with full BPTT" in capsys.readouterr().out
