"""The engine: one training step's work split between cores by bptt itself.

Why. At the sizes recurrent nets are trained at on a CPU, a step's recurrent product is small
((32, 128) @ (128, 512) for a 128-unit LSTM). OpenBLAS packs both operands at every call (at
B = 32 about half its time), its second thread adds about 5% to such a product, and after
every multi-threaded call its worker spins for about 0.1 s waiting for more. So within a step
on the engine, NumPy's OpenBLAS is set to one thread (its workers get no work and go to sleep)
and bptt splits the work itself into P parts, one per thread:

- the compiled scans by hidden units (split.py's `lstm_scan_part`, ...): each part owns its
  units' rows of W_hh, packed once per scan for bptt's own product kernel, and its slices of
  the gates and states; the parts meet once per step at a counter in shared memory;
- the big matrix products (pool.py's `matmul`: readouts, input projections, weight gradients) by
  output rows or columns, each part a single-threaded BLAS call into its slice of the result.

P is the thread count NumPy's BLAS had when the step began (threadpoolctl, `--threads`), fewer
where a cell would get under 16 units a part; with one thread the step runs the same packed
scans in one part. The engine takes a step (full BPTT, randomized truncation) only where every
recurrent cell of the model has split scans (the built-in Elman (tanh), GRU and LSTM) on float32
and the batch has no mask; other steps keep OpenBLAS's own threads. Results equal the unsplit
path's to float32 rounding (tests compare them).

Threads. P - 1 daemon threads, started on first use (again after a fork), each with its own
inbox; the calling thread runs part 0. Between jobs a thread spins for ~6 ms on a counter (in
compiled code, without the GIL), then sleeps: the hand-offs within a step stay cheap, and an
idle process leaves its cores alone. A part's exception reaches the caller after all parts have
returned; a scan part that loses the others returns -1 (after ~10 s of waiting), which raises
here rather than hanging. The engine's state belongs to the thread that entered it, so steps
from several Python threads take turns on the team; BLAS's thread count (process-wide) is set
by the first thread on the engine and restored by the last.

Cold steps. After the engine has been idle (no step for COLD_S), its threads are asleep and,
on a virtual machine, their cores slow to answer for some tens of milliseconds: split steps
then wait at every step's meeting point. So a step that finds the engine idle that long runs
serially on the calling thread (`serial`): the scans in one part, the big products in the same
P chunks one after the other, while the workers spin on their inboxes for a bounded warm-up
(WARM_SPINS pauses) and take the next step split. Serial and split steps give bitwise the
same results: a scan's units do not depend on how they are shared out (tests), and the
products are cut into the same chunks either way.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from . import blas

try:  # spinning between jobs needs the compiled atomics (sync.py)
    from . import sync

    _spin_until = sync.spin_until if sync.AVAILABLE else None
except ImportError:  # pragma: no cover - no numba
    _spin_until = None

_local = threading.local()  # .parts: the engine's parts for the calling thread's step (0: off)
SPLIT_MACS = 1 << 22  # products under ~4M multiply-adds stay whole (a hand-off round trip: 0.08-0.17 ms)


def engaged() -> bool:
    """Whether the calling thread runs a step on the engine (the cells then run their split
    scans, with one part where the engine has one thread). Never in the engine's own threads."""
    return getattr(_local, "parts", 0) > 0


def parts() -> int:
    """Parts the calling thread's work is split into (1 off the engine)."""
    return getattr(_local, "parts", 0) or 1


class _Team:
    """size - 1 daemon threads, each with its own inbox and a counter of the jobs posted to it;
    between jobs each spins on its counter for a few milliseconds (in compiled code, without
    the GIL) before it sleeps on the inbox, so the hand-offs within a step stay cheap."""

    def __init__(self, size: int) -> None:
        self.pid = os.getpid()
        self.inboxes: list[queue.SimpleQueue] = []
        self.posted = np.zeros((size, 8), np.int64)  # a cache line per thread: jobs posted to it
        self.done: queue.SimpleQueue = queue.SimpleQueue()
        self.lock = threading.Lock()  # one caller at a time
        self.runs = 0
        for i in range(size - 1):
            box: queue.SimpleQueue = queue.SimpleQueue()
            threading.Thread(target=self._serve, args=(box, i), name=f"bptt-engine-{i + 1}", daemon=True).start()
            self.inboxes.append(box)

    def post(self, i: int, job: Any) -> None:
        self.inboxes[i].put(job)
        self.posted[i, 0] += 1

    def _serve(self, box: queue.SimpleQueue, i: int) -> None:
        at, seen = self.posted[i].ctypes.data, 0
        while True:
            if _spin_until is not None:
                _spin_until(at, seen, _SPINS)
            tag, fn = box.get()
            seen += 1
            try:
                result = (tag, True, fn())
            except BaseException as e:  # handed to the caller
                result = (tag, False, e)
            fn = None  # the job's arrays are the caller's again (the buffer pool counts references)
            self.done.put(result)
            result = None


_SPINS = 200_000  # pauses an engine thread spins for between jobs (~6 ms measured here)
_team: _Team | None = None
_team_lock = threading.Lock()


COLD_S = 0.05  # a step after this long without one runs serially (the module docstring)
WARM_SPINS = 2_000_000  # pauses a woken worker spins for while a cold step runs (~60 ms here)
_last_step = 0.0  # perf_counter at the end of the last step on the engine (any thread)


def serial() -> bool:
    """Whether the calling thread's step runs its parts one after the other (a cold step)."""
    return getattr(_local, "serial", False)


def run(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run calls[0] here and calls[1:] on the engine's threads, all at once; their results in
    order. Waits for every call before raising the first exception. Callers from several
    threads take turns; results of a call interrupted while waiting are dropped. In a serial
    step, all of them here, in order."""
    global _team
    if len(calls) == 1 or serial():
        return [c() for c in calls]
    with _team_lock:
        if _team is None or _team.pid != os.getpid() or len(_team.inboxes) < len(calls) - 1:
            _team = _Team(len(calls))  # (again after a fork: threads do not survive it)
        team = _team
    with team.lock:
        team.runs += 1
        run_id = team.runs
        for i, fn in enumerate(calls[1:], 1):
            team.post(i - 1, ((run_id, i), fn))
        results: list[Any] = [None] * len(calls)
        errors: list[BaseException] = []
        try:
            results[0] = calls[0]()
        except BaseException as e:
            errors.append(e)
        waiting = len(calls) - 1
        while waiting:
            (rid, i), ok, value = team.done.get()
            if rid != run_id:  # left by an interrupted call
                continue
            waiting -= 1
            if ok:
                results[i] = value
            else:
                errors.append(value)
    if errors:
        raise errors[0]
    return results


def run_parts(fn: Callable[[int], Any]) -> list[Any]:
    """fn(part) for part = 0 .. parts() - 1, each on its own thread."""
    return run([(lambda p=p: fn(p)) for p in range(parts())])


def share(n: int, part: int, P: int) -> slice:
    """Part `part` of P of range(n) (as split.py's _share)."""
    return slice(part * n // P, (part + 1) * n // P)


def scan_parts(fn: Callable[..., int], *args: Any, own: Callable[[int, int], tuple]) -> None:
    """A split compiled scan: fn(*args, part, P, *own(part, P), barrier) on P threads (own
    gives a part's own arrays, made in its thread)."""
    P = 1 if serial() else parts()  # (a serial step's scan in one part: the same numbers)
    bar = np.array([0, 0, _YIELDS], np.int64)  # steps finished (summed over parts), abort flag, most yields

    step_memo = memo()  # the caller's, also in the engine's threads

    def part(p: int) -> int:
        mine = getattr(_local, "memo", None)
        _local.memo = step_memo
        try:
            return fn(*args, p, P, *own(p, P), bar.ctypes.data)
        except BaseException:
            bar[1] = 1  # the other parts stop waiting for this one
            raise
        finally:
            _local.memo = mine

    codes = run([(lambda p=p: part(p)) for p in range(P)])
    if any(c != 0 for c in codes):
        raise RuntimeError(f"bptt: the engine's {P} threads lost each other in {fn.__name__} (codes {codes})")


_YIELDS = 1 << 24  # a part waiting for another gives up after this many yields of its core (~10 s)
_threads = blas.find_threads() if _spin_until is not None else None
AVAILABLE = _threads is not None


def ready(cells: list[Any], mask: Any, splits: Callable[[Any], bool]) -> int:
    """Parts a step over these recurrent cells runs in on the engine, or 0 for none: the engine
    needs split scans for all of them (`splits(cell)`: on this dtype) and no mask; it takes as
    many parts as NumPy's BLAS has threads, fewer where a cell would get under 16 units a part."""
    if _threads is None or engaged() or mask is not None:
        return 0
    if not cells or not all(splits(c) for c in cells):
        return 0
    return max(1, min(_blas_threads(), min(c.hidden_size for c in cells) // 16))


_blas_lock = threading.Lock()
_blas_users = 0  # threads on the engine now
_blas_saved = 0  # BLAS's thread count before the first of them


def _blas_threads() -> int:
    """NumPy's BLAS thread count, as it was before any thread went on the engine."""
    with _blas_lock:
        return _blas_saved if _blas_users else _threads[0]()  # type: ignore[index]


@contextmanager
def split(P: int) -> Iterator[None]:
    """The calling thread's work split into P parts without touching BLAS's thread count (tests)."""
    old, memo = getattr(_local, "parts", 0), getattr(_local, "memo", None)
    _local.parts, _local.memo = P, {}
    try:
        yield
    finally:
        _local.parts, _local.memo = old, memo


def memo() -> dict:
    """What the calling thread's step keeps for its own duration (the packed weights of its
    scans: a step that runs many short segments packs them once); empty off the engine."""
    m = getattr(_local, "memo", None)
    return {} if m is None else m


@contextmanager
def engine(P: int) -> Iterator[None]:
    """Within (if P > 0; see `ready`): NumPy's OpenBLAS at one thread (it is process-wide: the
    first thread on the engine sets it, the last one off restores it) and the calling thread's
    work split into P parts."""
    global _blas_users, _blas_saved
    if not P:
        yield
        return
    get, put = _threads  # type: ignore[misc]
    with _blas_lock:
        if _blas_users == 0:
            _blas_saved = get()
            put(1)
        _blas_users += 1
    global _last_step
    cold = P > 1 and time.perf_counter() - _last_step > COLD_S
    if cold:
        _wake()
    try:
        with split(P):
            _local.serial = cold
            yield
    finally:
        _local.serial = False
        _last_step = time.perf_counter()
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                put(_blas_saved)


def _warm(team: _Team, i: int) -> None:
    """A worker's warm-up: spin until its next job is posted, for WARM_SPINS pauses at most."""
    if _spin_until is not None:
        _spin_until(team.posted[i].ctypes.data, int(team.posted[i, 0]), WARM_SPINS)


def _wake() -> None:
    """Set the team's workers spinning (a cold step runs serially meanwhile); their results,
    tagged with no run, are dropped by `run`."""
    team = _team
    if team is None or team.pid != os.getpid() or not team.lock.acquire(blocking=False):
        return
    try:
        for i in range(len(team.inboxes)):
            team.post(i, ((0, i + 1), lambda i=i: _warm(team, i)))
    finally:
        team.lock.release()
