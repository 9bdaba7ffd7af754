"""Data-parallel training on MPI: `mpirun -n N bptt train ...` (README, "Data-parallel training").

Every rank holds the same parameters, optimizer state and random generator, and forms each
batch of the global --batch-size B streams exactly as one process would (the same draws from
the same generator), then keeps its contiguous share: rank r of N takes streams
[r B/N, (r+1) B/N) (B must be a multiple of N), so one process and N ranks see the same
streams, in the same columns. Its gradient algorithm runs on those streams only; what is
carried per stream (the recurrent state, TBPTT's window history, RTRL's and UORO's
sensitivities, e-prop's traces) stays on its rank between updates.

Once per update (`World.combine`) each rank contributes c_r g_r, c_r L_r and c_r, its gradient
and loss (means over its c_r loss positions) times c_r; the update's gradient is their sum over
the ranks divided by the sum of the c_r: the mean over the global batch, as one process
computes it, but for the order of the sums. The reduction is an Allgather of the ranks'
vectors to every rank, summed in rank order in float64 by NumPy: every rank then holds bitwise
the same gradient whatever the MPI library's reduction algorithms are (MPI_Allreduce promises
no rank-independent or size-independent order), so parameters and optimizer states stay
identical without being sent again. It moves N x P numbers to each rank where a ring
all-reduce moves about 2P: for a few ranks and models of up to a few million parameters, well
under the time of one gradient.

Randomness: the batches (random windows, generated tasks) and e-prop's random feedback are
drawn for the global batch on every rank; `Sharded` makes the per-stream draws of `random` and
`artbp` (cuts per step and stream) and of `uoro` (signs per stream and step) those of one
process, each rank keeping its streams' share, so the generators never drift apart. Checkpoints
are written by rank 0 from the gathered per-stream state of all ranks (`join_state`,
`join_history`), so a run resumes on any number of ranks (`split_state`, `split_history`).
Rank 0 alone holds the run folder's lock and writes files, logs and the progress bar; it
evaluates and sends the figures to the others, which act on them as it does.

mpi4py is imported only when the process was started by an MPI launcher (PMI_SIZE,
OMPI_COMM_WORLD_SIZE, MV2_COMM_WORLD_SIZE > 1) or a program imported mpi4py.MPI itself.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import traceback
from typing import Any

import numpy as np

from .._treeio import decode, encode
from ..algorithms import UORO, Gradient, RandomTruncation, truncation_factors
from ..algorithms.forward import _Flat
from ..errors import BpttError
from ..tape import Tape

LAUNCHERS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")  # MPICH/Intel/Slurm PMI, Open MPI, MVAPICH


def launched() -> tuple[str, int] | None:
    """(variable, number of processes) an MPI launcher set for this process, or None."""
    for var in LAUNCHERS:
        v = os.environ.get(var, "")
        if v.isdigit():
            return var, int(v)
    return None


def quiet(_: str) -> None:
    """The log of a rank other than 0."""


class World:
    """The processes of one run: one (`comm` None; every collective is the identity) or the
    ranks of an MPI communicator."""

    def __init__(self, comm: Any = None) -> None:
        self.comm = comm
        self.size = 1 if comm is None else comm.Get_size()
        self.rank = 0 if comm is None else comm.Get_rank()

    @property
    def root(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.size > 1

    # ---- what each rank takes --------------------------------------------------------------
    def streams(self, B: int) -> slice:
        """This rank's contiguous share of B streams."""
        if B % self.size:
            raise BpttError(
                f"batch_size: expected a multiple of the {self.size} MPI ranks (each rank takes batch_size / "
                f"{self.size} streams of the global batch), received {B}"
            )
        n = B // self.size
        return slice(self.rank * n, (self.rank + 1) * n)

    def check(self, model: Any, B: int) -> None:
        """Refuse, before anything runs, what N ranks cannot compute as one process does."""
        if not self.parallel:
            return
        self.streams(B)
        for lv in model.levels:
            if lv.kind == "rate" and lv.strength > 0:
                raise BpttError(
                    f"model: expected a loss whose gradient is a sum over the streams for {self.size} MPI ranks, "
                    f"received the firing-rate penalty {lv.name!r} (a function of the whole batch's mean rate); "
                    "run it in one process"
                )
            what, rate = ("dropout", lv.rate) if lv.kind == "dropout" else ("recurrent dropout", 0.0)
            if lv.recurrent:
                zoned = [z for z in getattr(lv, "zoneout", {}).values() if z]
                what, rate = ("zoneout", zoned[0]) if zoned else (what, getattr(lv, "recurrent_dropout", 0.0))
            if rate:
                raise BpttError(
                    f"{what}: expected none for {self.size} MPI ranks (each rank would need its streams' share of "
                    f"the batch's masks), received {rate} ({lv.name}); run it in one process"
                )

    def shard(self, model: Any, batch: tuple) -> tuple:
        """A task's batch (x, targets, reset[, mask]) cut to this rank's streams."""
        if not self.parallel:
            return batch
        x, y, reset, *rest = batch
        s = self.streams(np.shape(x)[1])
        y = y[:, s] if model.loss_fn.at == "every" else y[s]
        return (x[:, s], y, reset, *(None if m is None else m[:, s] for m in rest))

    # ---- collectives -------------------------------------------------------------------------
    def combine(self, g: Gradient, count: float, params: dict[str, np.ndarray]) -> Gradient:
        """The update's gradient over the global batch from each rank's `g` (means over its
        `count` loss positions): bitwise the same on every rank (module docstring). The final
        state stays this rank's; it is None on every rank if any rank's is not finite."""
        if not self.parallel:
            return g
        keys = sorted(params)
        c = float(count)
        ok = all(np.isfinite(a).all() for s in (g.final_state or {}).values() for a in s)
        local = np.concatenate(
            [(c * np.asarray(g.grads[k], np.float64)).ravel() for k in keys] + [np.array([c * g.loss, c, float(ok)])]
        )
        every = np.empty((self.size, local.size))
        self.comm.Allgather(local, every)
        total = every[0].copy()
        for r in range(1, self.size):  # rank order: the same sum on every rank
            total += every[r]
        C = total[-2]
        grads, i = {}, 0
        for k in keys:
            n = params[k].size
            grads[k] = (total[i : i + n] / C).reshape(params[k].shape).astype(params[k].dtype)
            i += n
        final = g.final_state if every[:, -1].all() else None
        return Gradient(float(total[-3] / C), grads, g.dstate0, final)

    def any(self, *flags: bool) -> tuple[bool, ...]:
        """Each flag true on some rank (so that every rank stops or saves at the same step)."""
        if not self.parallel:
            return tuple(bool(f) for f in flags)
        from mpi4py import MPI

        local = np.array([bool(f) for f in flags], np.int32)
        out = np.empty_like(local)
        self.comm.Allreduce(local, out, op=MPI.MAX)
        return tuple(bool(f) for f in out)

    def bcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        return obj if not self.parallel else self.comm.bcast(obj, root=0)

    def gather(self, obj: Any) -> list | None:
        """Every rank's `obj` in rank order on rank 0 (None on the others)."""
        return [obj] if not self.parallel else self.comm.gather(obj, root=0)

    def barrier(self) -> None:
        if self.parallel:
            self.comm.Barrier()

    def share(self, make: Any) -> Any:
        """`make()` run on rank 0 and its result sent to every rank; its BpttError or OSError is
        raised on rank 0 (any other failure too) and as `Elsewhere` on the others."""
        if not self.parallel:
            return make()
        value, err, said = None, None, None
        if self.root:
            try:
                value = make()
            except BaseException as e:  # (the others wait for this answer)
                err, said = e, str(e)
        value, said = self.comm.bcast((value, said), root=0)
        if err is not None:
            raise err
        if said is not None:
            raise Elsewhere(said)
        return value

    def agree(self, err: BaseException | None) -> None:
        """After a set-up that may have failed on some ranks: return if it failed on none;
        otherwise rank 0 raises (its own error, or the first failing rank's as a BpttError) and
        the other ranks exit with status 2 (rank 0 says why; a bug keeps its traceback)."""
        if not self.parallel:
            if err is not None:
                raise err
            return
        said = None if err is None else ("" if isinstance(err, Elsewhere) else f"{type(err).__name__}: {err}")
        every = self.comm.allgather(said)
        if all(s is None for s in every):
            return
        if err is not None and not isinstance(err, (BpttError, OSError, KeyboardInterrupt)):
            raise err
        if self.root:
            if err is not None and not isinstance(err, Elsewhere):
                raise err
            r = next(i for i, s in enumerate(every) if s)
            raise BpttError(f"rank {r} of {self.size}: {every[r].split(': ', 1)[1]}")
        raise SystemExit(2)

    def abort(self, err: BaseException) -> None:
        """A rank failed during the run, while the others may wait in a collective: say why on
        stderr (one line, or the traceback of a bug) and end every rank (MPI_Abort)."""
        if not self.parallel:
            return
        if isinstance(err, (BpttError, OSError)):
            sys.stderr.write(f"bptt train (rank {self.rank} of {self.size}): {' '.join(str(err).split())}\n")
            code = 2 if isinstance(err, BpttError) else 1
        elif isinstance(err, KeyboardInterrupt):
            sys.stderr.write(f"bptt train (rank {self.rank}): interrupted\n")
            code = 130
        else:
            traceback.print_exc()
            code = 1
        sys.stderr.flush()
        self.comm.Abort(code)

    def check_same(self, params: dict[str, np.ndarray], rng: np.random.Generator) -> None:
        """At a checkpoint: every rank's parameters and generator the same as rank 0's."""
        if not self.parallel:
            return
        h = hashlib.sha256()
        for k in sorted(params):
            h.update(np.ascontiguousarray(params[k]).view(np.uint8))
        every = self.comm.allgather((h.hexdigest(), repr(rng.bit_generator.state)))
        bad = [r for r, e in enumerate(every) if e != every[0]]
        if bad:
            raise BpttError(f"ranks {bad}: expected the parameters and random generator of rank 0, received others")

    # ---- the process ---------------------------------------------------------------------
    def default_threads(self, single: int) -> int:
        """BLAS threads per rank unless told: `single` (one process's default) shared among the
        ranks on this node; 1 for a rank its launcher bound to one core."""
        if not self.parallel:
            return single
        from mpi4py import MPI

        local = self.comm.Split_type(MPI.COMM_TYPE_SHARED).Get_size()
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not on Linux
            cores = os.cpu_count() or 1
        if cores < (os.cpu_count() or cores):  # bound by the launcher: its cores are this rank's alone
            return max(1, min(2, cores))
        return max(1, min(2, cores // local))

    def describe(self, B: int) -> str:
        from mpi4py import MPI

        lib = _library(MPI)
        return (
            f"data-parallel: {self.size} MPI ranks x {B // self.size} streams of the batch of {B} ({lib}); "
            "gradients all-gathered and summed in rank order; rank 0 writes"
        )


class Elsewhere(BpttError):
    """A BpttError raised on rank 0 during set-up, seen from another rank."""


_WORLD: World | None = None


def world() -> World:
    """The processes of this run (detected once; see the module docstring)."""
    global _WORLD
    if _WORLD is None:
        _WORLD = _detect()
    return _WORLD


def _detect() -> World:
    how = launched()
    MPI = sys.modules.get("mpi4py.MPI")
    if MPI is None and (how is None or how[1] <= 1):
        return World()
    if MPI is None:
        try:
            from mpi4py import MPI
        except ImportError:
            raise BpttError(
                f"mpi: expected mpi4py in a process an MPI launcher started ({how[0]}={how[1]}), received none "
                "installed (pip install 'bptt[mpi]', or run without mpirun)"
            ) from None
    comm = MPI.COMM_WORLD
    if how is not None and how[1] != comm.Get_size():
        raise BpttError(
            f"mpi: expected the launcher's {how[1]} processes ({how[0]}) in one MPI world, received a world of "
            f"{comm.Get_size()}: mpi4py uses another MPI library ({_library(MPI)}) "
            "than the mpirun that started it; use that library's mpirun"
        )
    return World(comm) if comm.Get_size() > 1 else World()


def _library(MPI: Any) -> str:
    """The MPI library's name and version, e.g. 'MPICH Version: 5.0.2'."""
    return " ".join(MPI.Get_library_version().strip().splitlines()[0].split())


# ---- the algorithm on a rank's streams ---------------------------------------------------------
class Sharded:
    """The run's algorithm on this rank's streams, drawing from the run's generator what one
    process draws for the global batch: `random`/`artbp` cut factors for all B streams (this
    rank's columns kept), `uoro` signs for all B sequences in its order (this rank's replayed).
    Everything else is the algorithm's own (attributes read and set through)."""

    def __init__(self, inner: Any, world: World, B: int) -> None:
        object.__setattr__(self, "inner", inner)
        object.__setattr__(self, "share", world.streams(B))
        object.__setattr__(self, "B", B)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.inner, name, value)

    def __repr__(self) -> str:
        return repr(self.inner)

    def __call__(self, model, params, x, targets, *, mask=None, state0=None) -> Gradient:
        a, s = self.inner, self.share
        if isinstance(a, RandomTruncation):
            from ..algorithms.randomized import randomized_bptt

            factors = truncation_factors(np.shape(x)[0], self.B, a.c, a.rng, a.reweight)[:, s]
            return randomized_bptt(
                model, params, x, targets, a.c, a.rng, mask=mask, state0=state0, reweight=a.reweight, factors=factors
            )
        if isinstance(a, UORO):
            # bptt.algorithms.forward.uoro draws, sequence after sequence, T + 1 sign vectors of n
            rng, n, T = a.rng, _Flat(model, params).n, np.shape(x)[0]
            signs = [rng.choice(np.array([-1.0, 1.0]), size=n) for _ in range(self.B * (T + 1))]
            replay = _Replay(signs[s.start * (T + 1) : s.stop * (T + 1)])
            a.rng = replay
            try:
                g = a(model, params, x, targets, mask=mask, state0=state0)
            finally:
                a.rng = rng
            replay.done()
            return g
        return a(model, params, x, targets, mask=mask, state0=state0)


class _Replay:
    """Sign vectors drawn beforehand, handed out in order by `choice`."""

    def __init__(self, draws: list) -> None:
        self.draws, self.i = draws, 0

    def choice(self, a: Any, size: int) -> np.ndarray:
        d = self.draws[self.i]
        if d.shape != (size,):
            raise RuntimeError("uoro's draws changed: update bptt.train.dist.Sharded")  # pragma: no cover
        self.i += 1
        return d

    def done(self) -> None:
        if self.i != len(self.draws):
            raise RuntimeError("uoro's draws changed: update bptt.train.dist.Sharded")  # pragma: no cover


def sharded(algorithm: Any, world: World, B: int) -> Any:
    """The algorithm a rank runs: the same one, or `Sharded` where draws are per stream."""
    if world.parallel and isinstance(algorithm, (RandomTruncation, UORO)):
        return Sharded(algorithm, world, B)
    return algorithm


# ---- per-stream state: gathered for a checkpoint, split on resume ----------------------------
def split_state(state: dict | None, s: slice) -> dict | None:
    """A carried state {key: NamedTuple of (B, n)} cut to streams `s`."""
    if state is None:
        return None
    return {k: type(v)(*(a[s] for a in v)) for k, v in state.items()}


def join_state(states: list) -> dict | None:
    """The ranks' carried states (in rank order) as one of all streams."""
    if any(st is None for st in states):
        return None
    first = states[0]
    return {k: type(v)(*(np.concatenate(f) for f in zip(*(st[k] for st in states)))) for k, v in first.items()}


def split_history(name: str, desc: Any, arrays: dict, s: slice, where: str) -> tuple[Any, dict]:
    """A checkpoint's saved history of algorithm `name` (for all B streams) cut to streams `s`."""
    if name == "tbptt":
        tree = decode(desc, arrays, where)
        return _encode_tbptt(_map_tbptt([tree], lambda a, axis: a[0][(slice(None),) * axis + (s,)], where))
    if name in ("rtrl", "uoro"):
        out, n = {}, 0
        for key, a in arrays.items():
            m = _per_sequence(name, key)
            if m is not None and s.start <= m[1] < s.stop:
                out[f"alg/{name}/{m[0]}{m[1] - s.start}"] = a
                n = max(n, m[1] - s.start + 1)
        return {"sequences": n}, out
    if name == "eprop":
        return desc, {k: (a if k == "alg/eprop/feedback" else a[s]) for k, a in arrays.items()}
    raise BpttError(f"{where}: expected the history of tbptt, rtrl, uoro or eprop, received one of {name!r}")


def join_history(name: str, parts: list) -> tuple[Any, dict] | None:
    """The ranks' histories (desc, arrays) of algorithm `name`, in rank order, as one of all
    their streams (what one process would have saved)."""
    if any(p is None for p in parts):
        return None
    where = f"{name} history"
    if name == "tbptt":
        trees = [decode(d, a, where) for d, a in parts]
        return _encode_tbptt(_map_tbptt(trees, lambda arrs, axis: np.concatenate(arrs, axis=axis), where))
    if name in ("rtrl", "uoro"):
        out, base = {}, 0
        for desc, arrays in parts:
            for key, a in arrays.items():
                field, b = _per_sequence(name, key)
                out[f"alg/{name}/{field}{b + base}"] = a
            base += desc["sequences"]
        return {"sequences": base}, out
    if name == "eprop":
        desc, first = parts[0]
        out = {
            k: (a if k == "alg/eprop/feedback" else np.concatenate([p[1][k] for p in parts])) for k, a in first.items()
        }
        return desc, out
    raise BpttError(f"{where}: expected the history of tbptt, rtrl, uoro or eprop, received one of {name!r}")


def _per_sequence(name: str, key: str) -> tuple[str, int] | None:
    m = re.fullmatch(rf"alg/{name}/([A-Za-z_]+)(\d+)", key)
    return None if m is None else (m.group(1), int(m.group(2)))


def _encode_tbptt(tree: dict) -> tuple[Any, dict]:
    arrays: dict[str, np.ndarray] = {}
    return encode(tree, arrays, "alg/tbptt/"), arrays


def _map_tbptt(trees: list, leaf: Any, where: str) -> dict:
    """TBPTT's history ({'history': segments, 'cut': (B,) or None}, one per rank or one to cut)
    rebuilt with `leaf(arrays, axis)` on every per-stream array: time-major arrays (inputs,
    masks, a level's x and y) along axis 1, per-step caches, states and cuts along axis 0.
    A segment is (steps, tapes, cut) or, memory-budgeted, (steps, x, mask, cut, state)."""

    def bad(what: str) -> BpttError:
        return BpttError(f"{where}: expected the same history layout on every rank, received {what}")

    def cut(cs: list) -> Any:
        if all(c is None for c in cs):
            return None
        if any(c is None for c in cs):
            raise bad("a cut on some ranks only")
        return leaf(cs, 0)

    def along(arrs: list, axis: int) -> Any:
        if all(a is None for a in arrs):
            return None
        if any(a is None for a in arrs):
            raise bad("an array on some ranks only")
        return leaf(arrs, axis)

    def part(ps: list) -> Any:
        p = ps[0]
        if p is None:
            return None
        if isinstance(p, Tape):
            caches = []
            for cs in zip(*(q.caches for q in ps)):
                if all(c is None for c in cs):
                    caches.append(None)
                elif any(c is None for c in cs):
                    raise bad("a step held on some ranks only")
                else:
                    caches.append(type(cs[0])(*(along(list(f), 0) for f in zip(*cs))))
            return Tape(caches, along([q.mask for q in ps], 1), p.reverse)
        if isinstance(p, np.ndarray):
            return leaf(ps, 1)
        if isinstance(p, (tuple, list)):
            items = [part([q[i] for q in ps]) for i in range(len(p))]
            return tuple(items) if isinstance(p, tuple) else items
        raise bad(f"a {type(p).__name__}")

    segments = []
    for segs in zip(*(t["history"] for t in trees)):
        seg = segs[0]
        if len(seg) == 3:
            segments.append((seg[0], part([q[1] for q in segs]), cut([q[2] for q in segs])))
        else:
            state = {k: [along(list(f), 0) for f in zip(*(q[4][k] for q in segs))] for k in seg[4]}
            segments.append(
                (
                    seg[0],
                    along([q[1] for q in segs], 1),
                    along([q[2] for q in segs], 1),
                    cut([q[3] for q in segs]),
                    state,
                )
            )
    return {"history": segments, "cut": cut([t["cut"] for t in trees])}
