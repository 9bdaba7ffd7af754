"""Command-line argument types: each value parsed and range-checked, with a sentence saying what
was expected and what was received (argparse shows it as the error of that flag)."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable

from ..errors import BpttError


def integer(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer >= lo (and <= hi)."""
    want = (
        "an integer"
        if lo is None
        else {0: "a non-negative integer", 1: "a positive integer"}.get(lo, f"an integer >= {lo}")
    )
    if hi is not None:
        want += f" of at most {hi:,}"

    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {want}, received {s!r}") from None
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"expected {want}, received {s!r}")
        return v

    parse.__name__ = "int"
    return parse


def number(
    lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = True
) -> Callable[[str], float]:
    """An argparse type: a finite float in the interval from lo to hi (open or closed ends)."""
    if lo is None and hi is None:
        want = "a finite number"
    elif hi is None:
        want = f"a finite number {'>' if lo_open else '>='} {lo:g}"
    else:
        want = f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"

    def parse(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {want}, received {s!r}") from None
        ok = math.isfinite(v)
        if ok and lo is not None:
            ok = v > lo if lo_open else v >= lo
        if ok and hi is not None:
            ok = v < hi if hi_open else v <= hi
        if not ok:
            raise argparse.ArgumentTypeError(f"expected {want}, received {s!r}")
        return v

    parse.__name__ = "float"
    return parse


def output_file(flag: str, path: str) -> str:
    """A file to write: its folder must exist and be writable, and it must not be a folder."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise BpttError(f"{flag}: expected a file to write, received {path!r}, which is a folder")
    if not os.path.isdir(folder):
        raise BpttError(f"{flag}: expected a file in an existing folder, received {path!r} (no folder {folder!r})")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise BpttError(f"{flag}: expected a file in a folder this user can write, received {path!r}")
    return path
