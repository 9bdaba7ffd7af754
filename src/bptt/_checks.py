"""Input checks for the public entry points.

Every message names what was expected and what was received, so a user mistake reads as a
sentence, not as a broadcasting error from deep inside a time loop.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from .errors import BpttError

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise BpttError(f"{name}: expected a positive integer, received {value!r}")
    return int(value)


def generator(name: str, rng: Any, default: bool = False) -> np.random.Generator:
    """A source of draws: a NumPy Generator as given, a seed (an integer >= 0) made into one,
    or (default=True) None for a fresh one; else one BpttError naming `name`."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None and default:
        return np.random.default_rng()
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool) and rng >= 0:
        return np.random.default_rng(int(rng))
    raise BpttError(f"{name}: expected a numpy Generator or a seed (an integer >= 0), received {rng!r}")


def real(name: str, value: Any, expected: str) -> float:
    """A real number (Python's or NumPy's; not a bool, a string or None) as a float, else one
    BpttError: '{name}: expected {expected}, received {value!r}'."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise BpttError(f"{name}: expected {expected}, received {value!r}")
    return float(value)


def float_dtype(name: str, dtype: Any) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in FLOAT_DTYPES:
        raise BpttError(f"{name}: expected float32 or float64, received {dtype!r}")
    return dt


def array(name: str, x: Any) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise BpttError(f"{name}: expected a NumPy array, received {type(x).__name__}")
    return x


def shape(name: str, x: np.ndarray, expected: tuple, layout: str) -> None:
    """Check x.shape against `expected`, where None entries match any size."""
    ok = x.ndim == len(expected) and all(e is None or e == s for e, s in zip(expected, x.shape))
    if not ok:
        want = "(" + ", ".join("*" if e is None else str(e) for e in expected) + ")"
        raise BpttError(f"{name}: expected shape {layout} = {want}, received {tuple(x.shape)}")


def dtype_is(name: str, x: np.ndarray, dtype: np.dtype) -> None:
    if x.dtype != dtype:
        raise BpttError(
            f"{name}: expected dtype {dtype}, received {x.dtype} "
            f"(convert with .astype(np.{dtype}); bptt never casts silently)"
        )


def integer(name: str, x: np.ndarray) -> None:
    if not np.issubdtype(x.dtype, np.integer):
        raise BpttError(f"{name}: expected an integer array, received dtype {x.dtype}")


def in_range(name: str, x: np.ndarray, n: int, where: np.ndarray | None = None) -> None:
    vals = x if where is None else x[where]
    if vals.size and (vals.min() < 0 or vals.max() >= n):
        bad = vals[(vals < 0) | (vals >= n)][0]
        raise BpttError(f"{name}: expected integers in [0, {n}), received {int(bad)}")


def finite(name: str, x: np.ndarray) -> None:
    if not np.isfinite(x).all():
        raise BpttError(f"{name}: expected finite values, received NaN or inf")
