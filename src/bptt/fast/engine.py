"""The engine: one training step's work split between cores by bptt itself.

Why. At the sizes recurrent nets are trained at on a CPU, a step's recurrent product is small
((32, 128) @ (128, 512) for a 128-unit LSTM). OpenBLAS packs both operands at every call (at
B = 32 about half its time), its second thread adds about 5% to such a product, and after
every multi-threaded call its worker spins for about 0.1 s waiting for more. So within a step
on the engine, NumPy's OpenBLAS is set to one thread (its workers get no work and go to sleep)
and bptt splits the work itself into P parts, one per thread:

- the compiled scans by hidden units (split.py's `lstm_scan_part`, ...): each part owns its
  units' rows of W_hh, packed once per scan for bptt's own product kernel, and its slices of
  the gates and states; the parts meet once per step at a counter in shared memory. A small
  cell's scans (recurrent weights that fit a core's cache with room) split by batch rows
  instead (`scan_rows`): chunks of rows that share nothing but the weights, so the threads
  never meet within the scan;
- the big matrix products (pool.py's `matmul`: readouts, input projections, weight gradients) by
  output rows or columns, each part a single-threaded BLAS call into its slice of the result.

P is the thread count NumPy's BLAS had when the step began (threadpoolctl, `--threads`), fewer
where a cell would get under 16 units a part; with one thread the step runs the same packed
scans in one part. The engine takes a step (full BPTT, randomized truncation) only where every
recurrent cell of the model has split scans (the built-in Elman (tanh), GRU and LSTM) on float32
and the batch has no mask; other steps keep OpenBLAS's own threads. Results equal the unsplit
path's to float32 rounding (tests compare them).

Threads. P - 1 daemon threads, started on first use (again after a fork), each with its own
inbox; the calling thread runs part 0. Between jobs a thread spins for ~5 ms on a counter (in
compiled code, without the GIL), then sleeps: the hand-offs within a step stay cheap, and an
idle process leaves its cores alone. A part's exception reaches the caller after all parts have
returned; a scan part that waits on a task another thread took and never finished returns -1
(after ~10 s of waiting), which raises here rather than hanging. The engine's state belongs to
the thread that entered it, so steps from several Python threads take turns on the team; BLAS's
thread count (process-wide) is set by the first thread on the engine and restored by the last.
(So a library in another thread that saves and restores that count during a step, as
threadpoolctl's limits do, may save the step's 1 and leave it: bptt's later steps then run in one
part.) An interrupt (Ctrl-C) anywhere in a step leaves no core held and no count changed for good:
what the step changed is given back at its end or at the calling thread's next step. A child of
os.fork gets new locks and no threads (they start again at its first step).

Late threads. A worker can be late: its core busy with another process, the GIL held by the
caller's Python between products, or (below) its core shared. Nobody waits for a thread that
has not started: a job posted to a worker is claimed by whoever gets to it first, the worker or
the caller once its own call is done (`run`), and within a split scan every step's parts are
claimed one by one (split.py). So a step whose worker is late runs on the calling thread alone
until the worker comes, and then split; the numbers are bitwise the same whoever ran which part
(tests).

Sharing a core. After the process idled, the scheduler tends to put a woken worker on the
core of the thread that woke it (and a step wakes its workers many times: every hand-off of
Python's GIL is one). Measured here after 0.5 s of idle: in about half of the steps the two
parts of a split scan ran on one core for the first 5-10 ms, slower than one thread alone, and
an LSTM step cost 13-15 ms more than a warm one (one thread: 2-3 ms more). So within a step on
the engine the calling thread stays on the core it started on, and a worker that takes one of
its jobs keeps off that core until it goes to sleep (`_affinity`: the threads' allowed cores,
restored afterwards; a worker started within a step takes the caller's cores from before, not
the one core it inherits; all of this where the system says which core a thread is on, glibc's
sched_getcpu). A step's core is held for the step alone: between steps every thread may move.
"""

from __future__ import annotations

import os
import queue
import threading
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
SCAN_ALONE_MACS = SPLIT_MACS  # and scans under as many in their products run on the calling thread


def engaged() -> bool:
    """Whether the calling thread runs a step on the engine (the cells then run their split
    scans, with one part where the engine has one thread). Never in the engine's own threads."""
    return getattr(_local, "parts", 0) > 0


def parts() -> int:
    """Parts the calling thread's work is split into (1 off the engine)."""
    return getattr(_local, "parts", 0) or 1


class _Job:
    """A call posted to a worker; whoever claims it first (the worker, or the caller after its
    own call) runs it."""

    __slots__ = ("fn", "_taken")

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn: Callable[[], Any] | None = fn
        self._taken = threading.Lock()

    def claim(self) -> Callable[[], Any] | None:
        """The call if the calling thread is the first to claim it (the job then holds it no
        longer: its arrays are the caller's again once it returns), else None."""
        if not self._taken.acquire(blocking=False):
            return None
        fn, self.fn = self.fn, None
        return fn


class _Team:
    """size - 1 daemon threads, each with its own inbox and a counter of the jobs posted to it;
    between jobs each spins on its counter for a few milliseconds (in compiled code, without
    the GIL) before it sleeps on the inbox, so the hand-offs within a step stay cheap."""

    def __init__(self, size: int, cores: frozenset) -> None:
        self.pid = os.getpid()
        self.inboxes: list[queue.SimpleQueue] = []
        self.posted = np.zeros((size, 8), np.int64)  # a cache line per thread: jobs posted to it
        self.done: queue.SimpleQueue = queue.SimpleQueue()
        self.lock = threading.Lock()  # one caller at a time
        self.runs = 0
        self.cpu, self.allowed = -1, frozenset()  # the caller's core in its step, and its allowed cores
        self.threads: list[threading.Thread] = []
        for i in range(size - 1):
            box: queue.SimpleQueue = queue.SimpleQueue()
            name = f"bptt-engine-{i + 1}"
            self.threads.append(threading.Thread(target=self._serve, args=(box, i, cores), name=name, daemon=True))
            self.threads[-1].start()
            self.inboxes.append(box)

    def post(self, i: int, job: Any) -> None:
        self.inboxes[i].put(job)
        self.posted[i, 0] += 1

    def _serve(self, box: queue.SimpleQueue, i: int, cores: frozenset) -> None:
        """A worker: `cores` its allowed cores (the creating caller's before it held its own:
        a thread inherits the mask of the thread that starts it)."""
        if cores:
            _affinity(cores)
        at, seen = self.posted[i].ctypes.data, 0
        away = -1  # the caller's core this thread keeps off (-1: none)
        while True:
            if _spin_until is not None and not _spin_until(at, seen, _SPINS) and away >= 0 and cores:
                away = -1 if _affinity(cores) else away  # about to sleep: its cores again
            tag, job = box.get()
            seen += 1
            fn, job = job.claim(), None
            if fn is None:  # the caller ran it
                continue
            off = self.cpu if self.cpu in self.allowed and len(self.allowed) > 1 else -1
            if off != away and (off >= 0 or cores) and _affinity(self.allowed - {off} if off >= 0 else cores):
                away = off
            try:
                result = (tag, True, fn())
            except BaseException as e:  # handed to the caller
                result = (tag, False, e)
            fn = None  # the job's arrays are the caller's again (the buffer pool counts references)
            self.done.put(result)
            result = None


def _affinity(cores: frozenset) -> bool:
    """Let the calling thread run on these cores only (the scheduler moves it at once if it is
    on another); whether it could."""
    try:
        os.sched_setaffinity(0, cores)
        return True
    except (OSError, AttributeError, ValueError):  # pragma: no cover - no affinity calls here
        return False


def _cores() -> frozenset:
    """The calling thread's allowed cores (empty where that cannot be said)."""
    try:
        return frozenset(os.sched_getaffinity(0))
    except (OSError, AttributeError):  # pragma: no cover - no affinity calls here
        return frozenset()


def _hold_core() -> tuple[int, frozenset] | None:
    """Keep the calling thread on the core it runs on: (that core, its allowed cores before),
    or None where that cannot be said or done (one allowed core, no sched_getcpu). What to give
    back is noted (_local.pinned) before the thread is pinned, so that an interrupt at any point
    leaves it to `_let_go` (at the step's end, or at the thread's next step)."""
    allowed, cpu = _cores(), _getcpu() if _getcpu is not None else -1
    if len(allowed) < 2 or cpu not in allowed:
        return None
    _local.pinned = (frozenset({cpu}), allowed)
    if not _affinity(frozenset({cpu})):
        _local.pinned = None
        return None
    return cpu, allowed


def _let_go() -> None:
    """Give the calling thread back the cores it had before `_hold_core` pinned it, unless its
    cores changed since (the user's own setting, e.g. taskset, stays)."""
    pinned = getattr(_local, "pinned", None)
    if pinned is not None:
        if _cores() == pinned[0]:
            _affinity(pinned[1])
        _local.pinned = None


_getcpu = blas.find_getcpu()
_SPINS = 200_000  # pauses an engine thread spins for between jobs (4.9 ms on AMD Zen 4: 25 ns a pause)
_team: _Team | None = None
_team_lock = threading.Lock()


def run(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run calls[0] here and post calls[1:] to the engine's threads; after its own call the
    caller runs, in order, each posted call no thread has claimed yet (once one has raised, it
    claims the rest and drops them). Their results in order. Waits for every call a thread took
    before raising the first exception. Callers from several threads take
    turns; results of a call interrupted while waiting are dropped."""
    global _team
    if len(calls) == 1:
        return [calls[0]()]
    with _team_lock:
        if _team is None or _team.pid != os.getpid() or len(_team.inboxes) < len(calls) - 1:
            held = getattr(_local, "core", (-1, frozenset()))[1]
            _team = _Team(len(calls), held or _cores())  # (again after a fork: threads do not survive it)
        team = _team
    with team.lock:
        team.runs += 1
        run_id = team.runs
        jobs = [_Job(fn) for fn in calls[1:]]
        team.cpu, team.allowed = getattr(_local, "core", (-1, frozenset()))
        for i, job in enumerate(jobs):
            team.post(i, ((run_id, i + 1), job))
        results: list[Any] = [None] * len(calls)
        errors: list[BaseException] = []
        waiting = 0
        for i in range(len(calls)):
            fn = calls[0] if i == 0 else jobs[i - 1].claim()  # (claimed only once the call before is done)
            if fn is None:  # a worker has it
                waiting += 1
                continue
            if errors:  # claimed, so that no worker runs it later, and dropped
                continue
            saved = getattr(_local, "parts", 0)
            _local.parts = saved if i == 0 else 0
            try:  # (a posted call runs as on a worker: off the engine, never split again)
                results[i] = fn()
            except BaseException as e:
                errors.append(e)
            finally:
                _local.parts = saved
            fn = None
        del jobs
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
        for e in errors[1:] if hasattr(errors[0], "add_note") else ():  # (Python 3.11: the others go with it)
            errors[0].add_note(f"bptt: a call run beside it raised {type(e).__name__}: {e}")
        raise errors[0]
    return results


def run_parts(fn: Callable[[int], Any]) -> list[Any]:
    """fn(part) for part = 0 .. parts() - 1, each on its own thread."""
    return run([(lambda p=p: fn(p)) for p in range(parts())])


def share(n: int, part: int, P: int) -> slice:
    """Part `part` of P of range(n) (as split.py's _share)."""
    return slice(part * n // P, (part + 1) * n // P)


def scan_parts(fn: Callable[..., int], *args: Any, macs: int | None = None) -> None:
    """A split compiled scan: fn(*args, me, P, round counter, claims) on P threads, thread me
    claiming its own part of each round first (split.py). A scan of fewer than SCAN_ALONE_MACS
    multiply-adds in its products (`macs`: a step or two of a small cell, as memory-budgeted
    BPTT records and advances them) runs all its parts on the calling thread: the hand-offs
    would cost more than the second thread saves, and the numbers are the same bit for bit."""
    P = parts()
    if macs is not None and macs < SCAN_ALONE_MACS:  # (one claims every part)
        scan_alone(fn, P, *args)
        return
    bar = np.array([0, 0, _YIELDS], np.int64)  # tasks finished, abort flag, most yields
    claims = np.zeros((P, 8), np.int64)  # rounds claimed per part, a cache line each
    at = (bar.ctypes.data, claims.ctypes.data)  # (held alive by bar and claims, in this frame)

    def part(p: int) -> int:
        try:
            return fn(*args, p, P, *at)
        except BaseException:
            bar[1] = 1  # the other parts stop waiting for this one
            raise

    codes = run([(lambda p=p: part(p)) for p in range(P)])
    if any(c != 0 for c in codes):
        raise RuntimeError(f"bptt: the engine's {P} threads lost each other in {fn.__name__} (codes {codes})")


def scan_alone(fn: Callable[..., int], P: int, *args: Any) -> None:
    """A split compiled scan's P parts, all on the calling thread (an engine thread's call
    included; it claims every part of every round): the numbers of scan_parts' bit for bit,
    with no hand-off."""
    bar, claims, at = _alone_counters(P)  # (as scan_parts', the calling thread's own, zeroed)
    if fn(*args, 0, P, *at) != 0:
        raise RuntimeError(f"bptt: {fn.__name__} run alone lost its parts")


def _alone_counters(P: int) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """scan_alone's counters for P parts, zeroed: the calling thread's own, kept between its
    scans (a one-step scan, as memory-budgeted BPTT runs thousands a step, spent a tenth of its
    call making them) with their addresses, one set per part count (a thread alternates: the
    runs of rows scan in one part, the advances between them in two)."""
    sets = getattr(_local, "alone", None)
    if sets is None:
        sets = _local.alone = {}
    kept = sets.get(P)
    if kept is None:
        bar, claims = np.zeros(3, np.int64), np.zeros((P, 8), np.int64)
        kept = sets[P] = (bar, claims, (bar.ctypes.data, claims.ctypes.data))
    bar, claims, _ = kept
    bar[0], bar[1], bar[2] = 0, 0, _YIELDS
    claims.fill(0)
    return kept


def scan_rows(fn: Callable[..., int], spans: list[tuple[int, int]], args_of: Callable[[int], tuple]) -> None:
    """A compiled scan split by batch rows: chunk c runs fn(*args_of(c), (b0, b1)) over its rows
    spans[c] = (b0, b1) as one part alone (all hidden units; split.py). A scan's rows never meet,
    so the threads take chunks one by one, as they come, with no meeting per step: a late thread
    leaves its chunks to the others, and the numbers are the same whoever ran which chunk. One
    chunk runs on the calling thread."""
    if len(spans) == 1:
        scan_alone(fn, 1, *args_of(0), spans[0])
        return
    chunks = iter(range(len(spans)))  # (next() on it is atomic: each chunk is taken once)

    def take() -> None:
        for c in chunks:
            scan_alone(fn, 1, *args_of(c), spans[c])

    run([take] * parts())


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


# Threads on the engine now (their idents: entering and leaving are idempotent, so that an
# interrupt between two lines cannot leave a count that never comes back to 0) and BLAS's thread
# count before the first of them (None: BLAS's count is the user's; it is given back when the
# last leaves, or, after an interrupt that left it set, when the next step's last leaves)
_blas_lock = threading.Lock()
_blas_users: set[int] = set()
_blas_saved: int | None = None


def _after_fork_in_child() -> None:
    """In a child of os.fork (multiprocessing's fork start method) only the forking thread
    lives on: locks another thread held are held for ever, and a step another thread was in
    never ends. So the child gets new locks, no team (its threads are started again), and
    BLAS's thread count as it was before the steps in flight."""
    global _blas_lock, _team_lock, _team, _blas_saved
    _blas_lock, _team_lock, _team = threading.Lock(), threading.Lock(), None
    saved, _blas_saved = _blas_saved, None
    _blas_users.clear()
    if saved is not None and _threads is not None:
        _threads[1](saved)


if hasattr(os, "register_at_fork"):  # (POSIX)
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _blas_threads() -> int:
    """NumPy's BLAS thread count, as it was before any thread went on the engine."""
    with _blas_lock:
        return _blas_saved if _blas_saved is not None else _threads[0]()  # type: ignore[index]


@contextmanager
def split(P: int, memo: dict | None = None) -> Iterator[None]:
    """The calling thread's work split into P parts without touching BLAS's thread count (tests;
    `side_by_side`'s calls, which share their step's `memo`)."""
    old, memo_before = getattr(_local, "parts", 0), getattr(_local, "memo", None)
    _local.parts, _local.memo = P, {} if memo is None else memo
    try:
        yield
    finally:
        _local.parts, _local.memo = old, memo_before


def side_by_side(calls: list[Callable[[], Any]]) -> list[Any]:
    """The calls, each on a thread of the step's engine as one part (the packed one-part scans,
    whole products), sharing the step's memo (its packed weights: packed once); their results
    in order. Off the engine, or with one part, one after the other."""
    if parts() < 2 or len(calls) < 2:
        return [c() for c in calls]
    shared = memo()

    def alone(call: Callable[[], Any]) -> Any:
        with split(1, shared):
            return call()

    return run([(lambda c=c: alone(c)) for c in calls])


def memo() -> dict:
    """What the calling thread's step keeps for its own duration (the packed weights of its
    scans: a step that runs many short segments packs them once); empty off the engine."""
    m = getattr(_local, "memo", None)
    return {} if m is None else m


@contextmanager
def engine(P: int) -> Iterator[None]:
    """Within (if P > 0; see `ready`): NumPy's OpenBLAS at one thread (it is process-wide: the
    first thread on the engine sets it, the last one off restores it) and the calling thread's
    work split into P parts. A KeyboardInterrupt at any point leaves nothing changed for good:
    what a step set is given back at its end or, interrupted there, at the thread's next step."""
    global _blas_saved
    if not P:
        yield
        return
    get, put = _threads  # type: ignore[misc]
    me = threading.get_ident()
    _let_go()  # (a step of this thread interrupted while it gave its core back)
    with _blas_lock:
        if _blas_saved is None:
            _blas_saved = get()
        _blas_users.add(me)
        put(1)
    try:
        held = _hold_core() if P > 1 else None  # (Sharing a core, in the module docstring)
        _local.core = held or (-1, frozenset())
        with split(P):
            yield
    finally:
        _local.core = (-1, frozenset())
        _let_go()
        with _blas_lock:
            _blas_users.discard(me)
            if not _blas_users and _blas_saved is not None:
                put(_blas_saved)
                _blas_saved = None
