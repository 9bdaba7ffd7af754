"""Writing a file so that a crash never leaves it half-written, and cleaning up after one that did."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from typing import Any

TMP_PREFIX = ".tmp-"


def atomic_write(path: str, write: Callable) -> None:
    """Call write(file object) on a temp file beside `path`, fsync, then rename over `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=os.path.basename(path), dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str, obj: Any) -> None:
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()))


def remove_stale_temps(folder: str, names: tuple[str, ...]) -> list[str]:
    """Delete temp files that a killed writer of `names` in `folder` left (call it only while
    holding the folder's lock, so that no live writer's file goes); returns what was removed."""
    gone = []
    for f in os.listdir(folder):
        if f.startswith(TMP_PREFIX) and f.endswith(names):
            try:
                os.unlink(os.path.join(folder, f))
                gone.append(f)
            except FileNotFoundError:  # pragma: no cover - removed meanwhile
                pass
    return gone
