"""One writer per run folder: an exclusive advisory lock held for the whole life of a trainer.

The lock is `flock` on RUN/.lock (POSIX). The kernel drops it when its holder exits, however it
exits (kill -9 included), so a lock left by a killed run is simply free for the next one: there
is no stale lock to break. The holder writes its pid, command and start time into the file so
that a second writer can be told who holds the folder.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sys

from ..errors import BpttError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

LOCK_NAME = ".lock"


class RunLock:
    """Exclusive lock on a run folder; `acquire` raises BpttError naming the holder if taken."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.path = os.path.join(folder, LOCK_NAME)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, flag: str = "--out") -> RunLock:
        if self._fd is not None:
            return self
        if fcntl is None:  # pragma: no cover - not POSIX: no guard against a second writer
            return self
        if os.path.islink(self.path) or (os.path.lexists(self.path) and not os.path.isfile(self.path)):
            raise BpttError(  # (opened, a link's target would be overwritten with the lock's record)
                f"{flag}: expected {LOCK_NAME} in {self.folder!r} to be a regular file, received "
                f"{'a symbolic link' if os.path.islink(self.path) else 'something else'}"
            )
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as e:
            raise BpttError(
                f"{flag}: expected a run folder this process can write, received {self.folder!r} ({e.strerror.lower()})"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(os.pread(fd, 4096, 0))
            os.close(fd)
            raise BpttError(
                f"{flag}: expected a run folder no other process is writing, received {self.folder!r}, "
                f"held by {holder} (wait for it to end, or choose another folder)"
            ) from None
        except OSError as e:  # pragma: no cover - a file system without locks
            os.close(fd)
            raise BpttError(
                f"{flag}: expected a folder on a file system with file locks, received "
                f"{self.folder!r} ({e.strerror.lower()})"
            ) from None
        self._fd = fd
        return self

    def record(self) -> None:
        """Write who holds the lock (call once the run is really starting)."""
        if self._fd is None:
            return
        info = json.dumps(
            {
                "pid": os.getpid(),
                "started": _dt.datetime.now().isoformat(timespec="seconds"),
                "command": " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:300],
            }
        )
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, (info + "\n").encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the descriptor drops the flock

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


def _describe(raw: bytes) -> str:
    try:
        d = json.loads(raw.decode())
        return f"pid {int(d['pid'])} (started {d['started']}: {d['command']})"
    except Exception:  # the holder has not written its record yet
        return "another process"
