"""Nested structures of arrays (an algorithm's kept forward caches, say) to flat named arrays and
a JSON description, and back: what a checkpoint (.npz, read without pickle) can hold.

Handled: None, bool, int, float, str, ndarray, list, tuple, dict (str keys) and NamedTuples of
REGISTERED classes. A list of NamedTuples of one class whose fields have one shape each (the
per-step caches of a scan) is stored as one stacked array per field instead of one per step.

Loading runs nothing the file names. A stored NamedTuple is named by a string ('module:Class');
`decode` looks that string up in a fixed registry of classes this process registered (the
built-in cells' states and caches, the scan's Tape; a user cell's own with `register`) and never
imports a module or follows an attribute path. An unregistered name, a description of the wrong
JSON shape or type, a field count that does not fit the class, or a missing array is one
BpttError naming the place in the structure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from .errors import BpttError

_REGISTRY: dict[str, type] = {}


def class_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def register(*classes: type) -> None:
    """Allow these NamedTuple classes in stored structures (a user cell's state or cache, say)."""
    for cls in classes:
        if not (isinstance(cls, type) and issubclass(cls, tuple) and hasattr(cls, "_fields")):
            raise BpttError(f"register: expected NamedTuple classes, received {cls!r}")
        _REGISTRY[class_name(cls)] = cls


def _builtin() -> None:
    if _REGISTRY:
        return
    from .cells.elman import ElmanCache, ElmanState
    from .cells.gru import GRUCache, GRUState
    from .cells.jordan import JordanCache, JordanState
    from .cells.lstm import LSTMCache, LSTMState
    from .cells.recurrent_dropout import MaskedCache
    from .cells.zoneout import ZonedCache
    from .tape import Tape

    register(Tape, ElmanCache, ElmanState, GRUCache, GRUState, JordanCache, JordanState, LSTMCache, LSTMState)
    register(MaskedCache, ZonedCache)  # a masked step's cache: the wrapped cell's and the masks it met
    _LEGACY["bptt.algorithms.scan:Tape"] = (_Tape01, lambda t: Tape(t.caches, t.mask, t.reverse))


class _Tape01(NamedTuple):
    """The tape as bptt 0.1 stored it (in its TBPTT history): read into today's Tape."""

    caches: Any
    mask: Any
    reverse: Any
    work: Any
    aux: Any


_LEGACY: dict[str, tuple[type, Callable[[Any], Any]]] = {}


def _class(name: Any, where: str) -> type:
    _builtin()
    cls = _REGISTRY.get(name) if isinstance(name, str) else None
    if cls is None and name in _LEGACY:
        return _LEGACY[name][0]
    if cls is None:
        raise BpttError(f"{where}: expected the name of a stored class among {sorted(_REGISTRY)}, received {name!r}")
    return cls


def _is_namedtuple(x: Any) -> bool:
    return isinstance(x, tuple) and hasattr(type(x), "_fields")


def _stackable(items: list) -> bool:
    if len(items) < 2 or not all(_is_namedtuple(i) for i in items):
        return False
    cls = type(items[0])
    if any(type(i) is not cls for i in items):
        return False
    for fields in zip(*items):
        if all(f is None for f in fields):
            continue
        if not all(
            isinstance(f, np.ndarray) and f.shape == fields[0].shape and f.dtype == fields[0].dtype for f in fields
        ):
            return False
    return True


def encode(obj: Any, arrays: dict[str, np.ndarray], prefix: str) -> Any:
    """A JSON description of `obj`; its arrays go into `arrays` under keys starting with prefix."""

    def put(a: np.ndarray) -> dict:
        key = f"{prefix}{len(arrays)}"
        arrays[key] = a
        return {"a": key}

    def name(cls: type) -> str:
        _builtin()
        if class_name(cls) not in _REGISTRY:
            raise BpttError(f"cannot store a {cls.__qualname__}: register it with bptt._treeio.register first")
        return class_name(cls)

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
            return {"nt": name(type(x)), "f": [enc(f) for f in x]}
        if isinstance(x, list) and _stackable(x):
            cls = name(type(x[0]))
            fields = [None if all(f is None for f in fs) else put(np.stack(fs)) for fs in zip(*x)]
            return {"stack": cls, "n": len(x), "f": fields}
        if isinstance(x, (list, tuple)):
            return {"l" if isinstance(x, list) else "t": [enc(i) for i in x]}
        if isinstance(x, dict) and all(isinstance(k, str) for k in x):
            return {"d": {k: enc(v) for k, v in x.items()}}
        raise TypeError(f"cannot store a {type(x).__name__}")  # pragma: no cover

    return enc(obj)


_TAGS = {"a": ("a",), "nt": ("nt", "f"), "stack": ("stack", "n", "f"), "l": ("l",), "t": ("t",), "d": ("d",)}


def decode(desc: Any, arrays: dict[str, np.ndarray], where: str = "stored structure") -> Any:
    """The structure `encode` described, rebuilt from `arrays`; BpttError on anything else."""

    def bad(path: str, expected: str, received: Any, shown: str | None = None) -> BpttError:
        return BpttError(f"{where} at {path}: expected {expected}, received {shown or repr(received)[:80]}")

    def get(key: Any, path: str) -> np.ndarray:
        if not isinstance(key, str) or key not in arrays:
            raise bad(path, "the name of an array in the file", key)
        return arrays[key]

    def fields(cls: type, f: Any, path: str) -> list:
        if not isinstance(f, list) or len(f) != len(cls._fields):
            raise bad(path, f"a list of the {len(cls._fields)} fields of {cls.__qualname__}", f)
        return f

    def dec(d: Any, path: str) -> Any:
        if d is None or isinstance(d, (bool, int, float, str)):
            return d
        if not isinstance(d, dict):
            raise bad(path, "a stored value", d)
        tag = next((t for t in _TAGS if t in d), None)
        if tag is None or set(d) != set(_TAGS[tag]):
            raise bad(path, f"an object with one of the key sets {list(_TAGS.values())}", sorted(d))
        if tag == "a":
            return get(d["a"], path)
        if tag == "nt":
            cls = _class(d["nt"], f"{where} at {path}")
            obj = cls(*(dec(f, f"{path}.{n}") for f, n in zip(fields(cls, d["f"], path), cls._fields)))
            return _LEGACY[d["nt"]][1](obj) if cls in (c for c, _ in _LEGACY.values()) else obj
        if tag == "stack":
            cls, n = _class(d["stack"], f"{where} at {path}"), d["n"]
            if isinstance(n, bool) or not isinstance(n, int) or n < 2:
                raise bad(f"{path}.n", "an integer >= 2", n)
            cols = []
            for f, fname in zip(fields(cls, d["f"], path), cls._fields):
                if f is None:
                    cols.append([None] * n)
                    continue
                if not isinstance(f, dict) or set(f) != {"a"}:
                    raise bad(f"{path}.{fname}", "an array reference", f)
                a = get(f["a"], f"{path}.{fname}")
                if a.ndim < 1 or a.shape[0] != n:
                    raise bad(f"{path}.{fname}", f"an array of {n} stacked steps", None, f"one of shape {a.shape}")
                cols.append(list(a))
            return [cls(*fs) for fs in zip(*cols)]
        if tag in ("l", "t"):
            items = d[tag]
            if not isinstance(items, list):
                raise bad(path, "a list", items)
            out = [dec(v, f"{path}[{i}]") for i, v in enumerate(items)]
            return out if tag == "l" else tuple(out)
        items = d["d"]
        if not isinstance(items, dict):
            raise bad(path, "an object", items)
        return {k: dec(v, f"{path}.{k}") for k, v in items.items()}

    return dec(desc, "top")
