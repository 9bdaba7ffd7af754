"""Print every case of the bad-input catalogue with the message bptt gives, into docs/errors.md.

    python scripts/errors_catalogue.py [--out docs/errors.md]

The cases are those of tests/bad_inputs.py (tests/train/test_bad_inputs.py checks each one); they run
in a temporary workspace of data files, small runs and crafted checkpoints.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "train"))

from bad_inputs import CASES, build_workspace, run_case  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(HERE, "..", "docs", "errors.md"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as ws:
        build_workspace(ws)
        rows, groups = [], []
        for case in CASES:
            got, message = run_case(case, ws)
            message = " ".join(message.split()).replace(ws, "WS")
            how = ("bptt " + " ".join(case.argv)) if case.argv is not None else "Python API"
            status = f"exit {got}" if case.argv is not None else got
            if case.group not in groups:
                groups.append(case.group)
            rows.append((case.group, case.what, how, status, message))
    lines = [
        "# Errors: what bptt says when an input is wrong",
        "",
        f"Every case of the catalogue in tests/train/bad_inputs.py ({len(rows)} cases), each a test in",
        "tests/train/test_bad_inputs.py: one line on stderr and exit status 2 (from the Python API, a",
        "`bptt.BpttError`, a `ValueError`), saying what was expected and what was received; nothing in a",
        "run folder changes. `--debug` (or BPTT_DEBUG=1) shows the traceback instead. Written by",
        "`python scripts/errors_catalogue.py`; the commands run in a workspace of small files and runs",
        "(`words.txt`, `series.csv`, `runs/text`, `crafted/...`).",
        "",
    ]
    for g in groups:
        lines += [f"## {g}", "", "| case | command | result | message |", "| --- | --- | --- | --- |"]
        for group, what, how, status, message in rows:
            if group == g:
                cell = lambda s: s.replace("|", "\\|")  # noqa: E731
                lines.append(f"| {cell(what)} | `{cell(how)}` | {status} | {cell(message)} |")
        lines.append("")
    with open(args.out, "w") as f:
        f.write("\n".join(lines))
    print(f"{len(rows)} cases -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
