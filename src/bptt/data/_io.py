"""Reading a user's data file: one clear BpttError for a missing, unreadable or empty path."""

from __future__ import annotations

import os

from ..errors import BpttError


def read_bytes(path: str | os.PathLike) -> bytes:
    path = os.fspath(path)
    if not os.path.isfile(path):
        what = "a folder" if os.path.isdir(path) else "no such file"
        raise BpttError(f"data file: expected an existing file, received {path!r} ({what})")
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise BpttError(f"data file: expected a readable file, received {path!r} ({e.strerror.lower()})") from None
