"""Every case of the bad-input catalogue (tests/bad_inputs.py): one line, exit status 2 (or
bptt's exception from the API), the expected/received wording and the case's own words, no
traceback, and nothing in the workspace (its run folders above all) created, changed or removed."""

import pytest
from bad_inputs import CASES, build_workspace, run_case, snapshot

from bptt.errors import BpttError


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("ws"))
    build_workspace(d)
    return d


def test_the_catalogue_has_at_least_80_cases_with_distinct_names():
    assert len(CASES) >= 80 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, ws):
    before = snapshot(ws)
    got, message = run_case(case, ws)
    if case.argv is not None:
        assert got == case.code, (got, message)
        assert message.endswith("\n") and message.count("\n") == 1, message
        assert message.startswith("bptt"), message
    else:
        assert got in (BpttError.__name__, "TypeError"), (got, message)
        assert "\n" not in message
    assert "Traceback" not in message
    assert "expected" in message and "received" in message, message
    for fragment in case.expect:
        assert fragment in message, (fragment, message)
    assert snapshot(ws) == before
    assert not any(name.endswith("PWNED") for name in before)
