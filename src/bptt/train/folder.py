"""A run folder: where a run writes, with one writer at a time.

    config.json     every setting, the data, vocabulary or normalisation, the BLAS threads
    checkpoint.npz  the latest state (parameters, optimizer, carried state, RNG, trackers)
    best.npz        the parameters of the best validation loss
    metrics.jsonl   one JSON object per update and per evaluation
    loss.png, sample.txt (text) or prediction.png (series), .lock

`RunFolder.new` makes (or takes) a new run's folder and `RunFolder.existing` opens a run to
continue; both take the folder's lock (lock.py) before reading or writing anything in it, and
refuse a file, a path under a file, a folder that cannot be written or (for a new run) one
that already holds a run. All writes are atomic (checkpoint.atomic_write).
"""

from __future__ import annotations

import json
import os
from typing import Any

from ..errors import BpttError
from . import checkpoint as ckpt
from .lock import LOCK_NAME, RunLock

FILES = ("checkpoint.npz", "best.npz", "config.json", "metrics.jsonl", "loss.png", "prediction.png", "sample.txt")


class RunFolder:
    def __init__(self, path: str, lock: RunLock, created: bool) -> None:
        self.path, self.lock, self._created = path, lock, created
        self._lock_made = False  # (new: whether this set-up made the .lock, to remove it if refused)

    @classmethod
    def new(cls, out: str) -> RunFolder:
        if not out:
            raise BpttError("--out: expected a folder for the run, received ''")
        p = os.path.abspath(out)
        if os.path.islink(p) and not os.path.exists(p):
            raise BpttError(f"--out: expected a folder for the run, received {out!r}, a link to nothing")
        if os.path.exists(p) and not os.path.isdir(p):
            raise BpttError(f"--out: expected a folder for the run, received {out!r}, which is a file")
        parent = p
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent):
            raise BpttError(f"--out: expected a path under folders, received {out!r}, under the file {parent!r}")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise BpttError(
                f"--out: expected a folder this user can write in, received {out!r} ({parent!r} is not writable)"
            )
        created = not os.path.isdir(p)
        if created:
            os.makedirs(p)
        folder = cls(out, RunLock(out), created)
        folder._lock_made = not os.path.lexists(folder.file(LOCK_NAME))
        try:
            folder.lock.acquire("--out")
            if os.path.exists(folder.file("checkpoint.npz")):
                raise BpttError(
                    f"--out: expected a new run folder, received {out!r} which already holds a run "
                    f"(continue it with --resume {out}, or choose another --out)"
                )
            left = [n for n in FILES if os.path.lexists(folder.file(n))]
            if left:  # (a run's files without its checkpoint: best.npz would stand for the new run's weights)
                raise BpttError(
                    f"--out: expected a new run folder, received {out!r} which holds {', '.join(left)} of another "
                    "run (choose another --out, or remove them)"
                )
        except BaseException:
            folder.close(failed=True)
            raise
        return folder

    @classmethod
    def existing(cls, path: str) -> RunFolder:
        if not os.path.isfile(os.path.join(path, "checkpoint.npz")):
            raise BpttError(f"--resume: expected a run folder with checkpoint.npz, received {path!r}")
        if not os.access(path, os.W_OK | os.X_OK):
            raise BpttError(f"--resume: expected a run folder this user can write in, received {path!r} (not writable)")
        folder = cls(path, RunLock(path), False)
        folder.lock.acquire("--resume")
        # what a run killed while writing left (even one killed after its last checkpoint, which a
        # resume then refuses to train further) goes now: the lock is held, no writer is alive
        folder._stale = ckpt.remove_stale_temps(path, FILES)
        return folder

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    @property
    def held(self) -> bool:
        return self.lock.held

    def start(self, log) -> None:
        """The run begins writing: record who holds the folder, clean what a killed run left."""
        self.lock.record()
        removed = getattr(self, "_stale", []) + ckpt.remove_stale_temps(self.path, FILES)
        if removed:
            log(f"removed {len(removed)} temporary file(s) a killed run left in {self.path}")

    def close(self, failed: bool = False) -> None:
        """Release the folder; after a failed set-up, remove it if this run made it and wrote
        nothing there."""
        self.lock.release()
        if failed and (self._created or self._lock_made):
            try:
                os.unlink(self.file(LOCK_NAME))  # (a lock this set-up made: a refused run leaves nothing)
                if self._created:
                    os.rmdir(self.path)
            except OSError:
                pass
            self._created = self._lock_made = False

    # ---- metrics.jsonl ---------------------------------------------------------------------
    def fresh_metrics(self) -> None:
        if os.path.exists(self.file("metrics.jsonl")):
            os.unlink(self.file("metrics.jsonl"))

    def truncate_metrics(self, step: int) -> int:
        """Keep only the metrics up to `step` (a resumed run rewrites what came after); a line
        torn by a killed run is dropped. Returns the number of torn lines dropped."""
        path = self.file("metrics.jsonl")
        if not os.path.isfile(path):
            return 0
        keep, torn = [], 0
        with open(path, "rb") as f:
            for raw in f:
                try:
                    row = json.loads(raw.decode())
                    s = row["step"]
                except (ValueError, KeyError, TypeError):
                    torn += bool(raw.strip())
                    continue
                if isinstance(s, int) and s <= step:
                    keep.append(raw if raw.endswith(b"\n") else raw + b"\n")
        ckpt.atomic_write(path, lambda f: f.write(b"".join(keep)))
        return torn

    def write_json(self, name: str, obj: Any) -> None:
        ckpt.write_json(self.file(name), obj)


class Follower:
    """The run folder as a rank other than 0 of a data-parallel run sees it (dist.py): the same
    paths; it takes no lock and writes nothing (rank 0 does both)."""

    def __init__(self, path: str) -> None:
        self.path, self._open = path, True

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    @property
    def held(self) -> bool:
        return self._open

    def start(self, log) -> None:
        pass

    def close(self, failed: bool = False) -> None:
        self._open = False

    def fresh_metrics(self) -> None:
        pass

    def truncate_metrics(self, step: int) -> int:
        return 0

    def write_json(self, name: str, obj: Any) -> None:
        pass
