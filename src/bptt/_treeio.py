"""Nested structures of arrays (an algorithm's kept forward caches, say) to flat named arrays and
a JSON description, and back: what a checkpoint (.npz, read with allow_pickle=False) can hold.

Handled: None, bool, int, float, str, ndarray, list, tuple, dict (str keys) and NamedTuples of bptt's own
classes (rebuilt by name, from bptt modules only). A list of NamedTuples of one class whose
fields have one shape each (the per-step caches of a scan) is stored as one stacked array per
field instead of one array per step.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np


def _is_namedtuple(x: Any) -> bool:
    return isinstance(x, tuple) and hasattr(type(x), "_fields")


def _class_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _class(name: str) -> type:
    module, _, qual = name.partition(":")
    if not (module == "bptt" or module.startswith("bptt.")):
        raise ValueError(f"expected a bptt class in the stored structure, received {name!r}")
    obj: Any = importlib.import_module(module)
    for part in qual.split("."):
        obj = getattr(obj, part)
    return obj


def _stackable(items: list) -> bool:
    if len(items) < 2 or not all(_is_namedtuple(i) for i in items):
        return False
    cls = type(items[0])
    if any(type(i) is not cls for i in items):
        return False
    for fields in zip(*items):
        if all(f is None for f in fields):
            continue
        if not all(isinstance(f, np.ndarray) and f.shape == fields[0].shape and f.dtype == fields[0].dtype for f in fields):
            return False
    return True


def encode(obj: Any, arrays: dict[str, np.ndarray], prefix: str) -> Any:
    """A JSON description of `obj`; its arrays go into `arrays` under keys starting with prefix."""

    def put(a: np.ndarray) -> dict:
        key = f"{prefix}{len(arrays)}"
        arrays[key] = a
        return {"a": key}

    def enc(x: Any) -> Any:
        if x is None or isinstance(x, (bool, str)):
            return x
        if isinstance(x, (int, np.integer)):
            return int(x)
        if isinstance(x, (float, np.floating)):
            return float(x)
        if isinstance(x, np.ndarray):
            return put(x)
        if _is_namedtuple(x):
            return {"nt": _class_name(type(x)), "f": [enc(f) for f in x]}
        if isinstance(x, list) and _stackable(x):
            fields = [None if all(f is None for f in fs) else put(np.stack(fs)) for fs in zip(*x)]
            return {"stack": _class_name(type(x[0])), "n": len(x), "f": fields}
        if isinstance(x, (list, tuple)):
            return {"l" if isinstance(x, list) else "t": [enc(i) for i in x]}
        if isinstance(x, dict) and all(isinstance(k, str) for k in x):
            return {"d": {k: enc(v) for k, v in x.items()}}
        raise TypeError(f"cannot store a {type(x).__name__}")  # pragma: no cover

    return enc(obj)


def decode(desc: Any, arrays: dict[str, np.ndarray]) -> Any:
    """The structure `encode` described, rebuilt from `arrays`."""

    def get(d: dict) -> np.ndarray:
        if d["a"] not in arrays:
            raise ValueError(f"expected array {d['a']!r} in the stored structure, received none")
        return arrays[d["a"]]

    def dec(d: Any) -> Any:
        if not isinstance(d, dict):
            return d
        if "a" in d:
            return get(d)
        if "nt" in d:
            return _class(d["nt"])(*(dec(f) for f in d["f"]))
        if "stack" in d:
            cls, n = _class(d["stack"]), int(d["n"])
            cols = [[None] * n if f is None else list(get(f)) for f in d["f"]]
            return [cls(*fields) for fields in zip(*cols)]
        if "l" in d:
            return [dec(i) for i in d["l"]]
        if "t" in d:
            return tuple(dec(i) for i in d["t"])
        if "d" in d:
            return {k: dec(v) for k, v in d["d"].items()}
        raise ValueError(f"expected a stored structure, received keys {sorted(d)}")

    return dec(desc)
