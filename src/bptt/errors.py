"""bptt's own error: a user mistake or a bad file, told in one sentence.

Every message says what was expected and what was received (and, for a misspelt name, what
was probably meant). `BpttError` is a `ValueError`, so `except ValueError` keeps working; the
command line prints it as one line and exits with status 2, and shows the traceback only with
`--debug` (or BPTT_DEBUG=1). Anything else that escapes is a bug in bptt, and keeps its
traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class BpttError(ValueError):
    """A user mistake or a bad input file; the message is the whole story."""


def did_you_mean(received: str, names: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest of `names`, or '' when none is close."""
    close = difflib.get_close_matches(str(received), [str(n) for n in names], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def one_of(key: str, received: object, names: Iterable[str]) -> BpttError:
    """The error for a name that is not among `names`."""
    names = list(names)
    return BpttError(
        f"{key}: expected one of {', '.join(map(str, names))}, received {received!r}{did_you_mean(str(received), names)}"
    )
