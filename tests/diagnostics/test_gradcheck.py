"""Full BPTT against float64 central differences on every case of the sweep."""

import numpy as np
import pytest

import bptt
from bptt.cli import main
from bptt.diagnostics import numeric_grad, relative_error, run_case, standard_cases, variant_cases

CASES = standard_cases() + variant_cases()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case_matches_central_differences(case):
    # 8 random entries of every array (all of them for small arrays) keep the suite fast;
    # `bptt gradcheck` checks every entry.
    res, _ = run_case(case, seed=7, max_entries=8)
    assert res.errors, "nothing was checked"
    assert any(k.startswith("state0:") for k in res.errors) or case.variant.startswith("learned")
    assert res.max_error <= 1e-6, (res.worst, res.max_error)


def test_numeric_grad_of_a_known_function():
    w = np.array([0.3, -1.2, 2.0])
    got = numeric_grad(lambda: float(np.sum(np.sin(w) * w**2)), {"w": w})
    want = np.cos(w) * w**2 + 2 * w * np.sin(w)
    np.testing.assert_allclose(got["w"][1], want, rtol=1e-11)
    np.testing.assert_array_equal(w, [0.3, -1.2, 2.0])  # restored


def test_relative_error_scale():
    assert relative_error(np.array([1.0, 2.0]), np.array([1.0, 2.0 + 2e-6])) == pytest.approx(1e-6, rel=1e-3)
    assert relative_error(np.zeros(3), np.zeros(3)) == 0.0


def test_gradcheck_detects_a_wrong_gradient(monkeypatch):
    """Halve the LSTM cell state gradient sent to the step before: the check must fail."""
    original = bptt.LSTM.step_back

    def broken(self, params, cache, dstate, dout, grads):
        d, dxp = original(self, params, cache, dstate, dout, grads)
        return type(d)(d.h, 0.5 * d.c), dxp

    case = next(c for c in CASES if c.cell == "lstm" and not c.masked and c.layers == 1 and not c.bidirectional)
    assert run_case(case, max_entries=4)[0].passed
    monkeypatch.setattr(bptt.LSTM, "step_back", broken)
    res, _ = run_case(case, max_entries=4)
    assert not res.passed and res.max_error > 1e-3


def test_cli_gradcheck_exit_codes(capsys, monkeypatch):
    assert main(["gradcheck", "--cells", "elman", "--no-variants", "--max-entries", "3"]) == 0
    out = capsys.readouterr().out
    assert "worst relative error" in out and out.count(" ok ") == 32

    original = bptt.Elman.step_back

    def broken(self, params, cache, dstate, dout, grads):
        d, delta = original(self, params, cache, dstate, dout, grads)
        return d, delta * 1.01

    monkeypatch.setattr(bptt.Elman, "step_back", broken)
    assert main(["gradcheck", "--cells", "elman", "--no-variants", "--max-entries", "3"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_cli_rejects_unknown_cell(capsys):
    assert main(["gradcheck", "--cells", "elman,foo"]) == 2
    err = capsys.readouterr().err
    assert "expected" in err and "foo" in err


def test_a_nan_error_fails_wherever_it_stands():
    """max() over errors with a NaN that is not first dropped it: a NaN gradient passed."""
    from bptt.diagnostics.gradcheck import GradcheckResult

    for errors in ({"a": 1e-11, "b": float("nan")}, {"b": float("nan"), "a": 1e-11}):
        r = GradcheckResult(errors)
        assert not r.passed and r.max_error == float("inf") and r.worst == "b"
    assert GradcheckResult({"a": 1e-11, "b": 3e-9}).passed


def test_cli_gradcheck_cells_limit_the_variants_too(capsys):
    assert main(["gradcheck", "--cells", "elman,", "--max-entries", "1"]) == 0
    out = capsys.readouterr().out
    assert "35 cases" in out.splitlines()[0], out.splitlines()[0]
    assert "jordan" not in out and "lstm" not in out and "gru" not in out
