"""The built-in cells on the float32 kernels: implementations with the cell contract.

`implementation(cell, dtype)` (installed as bptt.ops.implementation) gives, for an Elman (tanh),
GRU or LSTM cell of exactly the built-in class on float32 arrays with the kernels on, a stand-in
whose `step` and `step_back` do the elementwise part in one compiled pass (rows.py), and which
offers the time loop (bptt.scan) two more things:

- `forward_scan`: an unmasked forward scan that keeps its tape, as one compiled loop (scans.py),
  or split between the engine's threads (split.py) within a step on the engine: by batch rows
  for a small cell, by hidden units for a large one (`_row_spans`);
  with `ring`, run for its final state alone, in buffers of two steps.
  The tape's caches are read on demand from the scan's buffers (`StepCaches`), so a step-by-step
  backward (TBPTT k1 < k2) uses them unchanged.
- `backward_scan`: the consumed backward scan of such a tape (full BPTT, randomized truncation):
  the gradients overwrite the tape's gate buffer step by step and the recurrent weights'
  gradient is two matrix products afterwards, over the (T - 1) * B rows whose h_{t-1} is the
  level's output one step earlier and the B rows of the first step with h0 (`_prev_pairs`).

Everything else (sizes, parameters, projections) is the cell's own. The cells' NumPy code is
the reference every number here is tested against (tests/fast).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import numpy as np

from ..cells.base import Cell, Params, TokenRows
from ..cells.elman import Elman, ElmanCache, ElmanState
from ..cells.gru import GRU, GRUCache, GRUState
from ..cells.lstm import LSTM, LSTMCache, LSTMState
from ..errors import BpttError
from ..tape import Tape
from . import engine, pool, rows, spiking, switch

try:  # the compiled scans exist only where NumPy's OpenBLAS and a disk cache were found
    from . import scans

    SCANS = scans.AVAILABLE
except ImportError:  # pragma: no cover
    SCANS = False
if SCANS:
    from . import gemm, split


class StepCaches:
    """The per-step caches of a compiled whole scan, built on demand from its buffers (the scan
    keeps no Python object per step). Reads like the list of caches a Python scan returns:
    caches[t], slices, len, iteration; `release()` drops them all."""

    def __init__(self, build: Callable[[int], NamedTuple], T: int) -> None:
        self._build, self._T, self._released = build, T, False

    def __len__(self) -> int:
        return self._T

    def __getitem__(self, t: Any) -> Any:
        if isinstance(t, slice):
            return [self[i] for i in range(*t.indices(self._T))]
        t = range(self._T)[t]  # negative steps, bounds (IndexError)
        return None if self._released else self._build(t)

    def __iter__(self) -> Any:
        return (self[t] for t in range(self._T))

    def release(self) -> None:
        self._released = True


def check_scan(cell: Cell, xp: Any, state: Any) -> None:
    """What a compiled forward scan reads by address, checked first (a wrong shape or a token
    beyond the table read memory outside the arrays, or ended the process): xp (T, B, G) with
    G the cell's projection width, its tokens in the table, the state's fields (B, n)."""
    G = cell.gates * cell.hidden_size
    if len(xp.shape) != 3 or xp.shape[2] != G:
        raise BpttError(f"xp: expected (T, B, {G}) input projections of this cell, received shape {tuple(xp.shape)}")
    if isinstance(xp, TokenRows) and xp.x.size and (xp.x.min() < 0 or xp.x.max() >= xp.table.shape[0]):
        raise BpttError(
            f"x: expected token ids in [0, {xp.table.shape[0]}), received ids from {int(xp.x.min())} to {int(xp.x.max())}"
        )
    _check_state("state", cell, state, xp.shape[1])


def check_scan_back(cell: Cell, douts: np.ndarray, dstate: Any, TB: tuple) -> None:
    """What a compiled backward scan reads and writes by address: douts (T, B, O) of the
    recorded scan's T and B, the state gradient's fields (B, n)."""
    want = (*TB, cell.output_size)
    if tuple(douts.shape) != want:
        raise BpttError(f"douts: expected shape {want} (the scan's steps, sequences, outputs), received {douts.shape}")
    _check_state("dstate", cell, dstate, TB[1])


def _check_state(key: str, cell: Cell, state: Any, B: int) -> None:
    for name, n in cell.state_sizes().items():
        a = getattr(state, name, None)
        if a is not None and np.shape(a) != (B, n):
            raise BpttError(f"{key}.{name}: expected shape {(B, n)}, received {np.shape(a)}")


def scan_rows(xp: Any) -> tuple[np.ndarray, np.ndarray]:
    """(src, idx) with step t's projection rows src[idx[t]], for the compiled scans: the token
    table and the tokens of a `TokenRows`, or a dense (T*B, G) projection and arange(T*B)."""
    if isinstance(xp, TokenRows):
        return xp.table, np.ascontiguousarray(xp.x, dtype=np.int64)
    T, B, G = xp.shape
    return np.ascontiguousarray(xp).reshape(T * B, G), np.arange(T * B, dtype=np.int64).reshape(T, B)


def previous_step(t: int, T: int, reverse: bool) -> int | None:
    """The step a scan visits before step t (None for its first step)."""
    p = t + 1 if reverse else t - 1
    return p if 0 <= p < T else None


_NO_STOPS, _NO_KEPT = np.zeros(0, np.int64), np.zeros((0, 2), np.int64)


def _edges(P: int, dtype: Any) -> np.ndarray:
    return np.empty((P, gemm.TILE, gemm.PANEL), dtype)


class _Fast:
    """A cell's steps on the kernels; every other attribute is the cell's."""

    work: int  # columns of the gate buffer per hidden unit

    def __init__(self, cell: Cell) -> None:
        self.cell = cell

    def __getattr__(self, name: str) -> Any:
        return getattr(self.cell, name)

    @staticmethod
    def _macs(params: Params, T: int, B: int) -> int:
        """Multiply-adds of a scan's recurrent products: T steps of (B, H) @ W_hh^T."""
        return T * B * params["W_hh"].size

    def _panels(self, params: Params, P: int, forward: bool) -> tuple[np.ndarray, np.ndarray, int]:
        """The recurrent weights of a scan split into P parts, packed (gemm.pack_rows forward,
        gemm.pack_panels backward) one part
        after the other, where each part's panels start (P + 1 offsets), and the most panels a
        part has: forward, the transpose of part p's units' rows of every gate block of W_hh
        (H, gates * n); backward, its units' columns of W_hh (gates * H, n)."""
        H = self.cell.hidden_size
        W = params["W_hh"]
        memo, key = engine.memo(), (id(W), P, forward)  # the weights hold still within a step
        with _PACKING:  # (calls side by side share their step's memo: one packs, once)
            if key in memo and memo[key][0] is W:
                return memo[key][1]
            memo[key] = (W, self._pack(W, H, P, forward))
            return memo[key][1]

    def _pack(self, W: np.ndarray, H: int, P: int, forward: bool) -> tuple[np.ndarray, np.ndarray, int]:
        shares = [engine.share(H, p, P) for p in range(P)]
        gates = W.shape[0] // H
        widths = [-(-(gates if forward else 1) * (u.stop - u.start) // gemm.PANEL) for u in shares]
        offs = np.cumsum([0] + widths).astype(np.int64)
        packed = np.empty((int(offs[-1]), H if forward else W.shape[0], gemm.PANEL), np.float32)
        for p, units in enumerate(shares):
            out = packed[offs[p] : offs[p + 1]]
            if forward:  # the transpose of the part's units' rows of every gate block
                rows = (np.arange(gates)[:, None] * H + np.arange(units.start, units.stop)).ravel()
                gemm.pack_rows(W, rows, out)
            else:  # the part's units' columns
                gemm.pack_panels(W[:, units], out)
        return packed, offs, max(widths)

    def _own(
        self, params: Params, B: int, dtype: Any, P: int, copies: int, forward: bool, gates: bool, floats: int = 0
    ) -> tuple[tuple, tuple]:
        """What a split scan takes after its arrays: (the packed weights of P parts and their
        offsets, with `gates` each part's product scratch: P rows of B * its padded gate
        columns), and what each of `copies` runners needs of its own (with `floats`, row
        scratch of that many floats per hidden unit of the largest part; the product kernel's
        edge scratch (TILE, PANEL)), each with `copies` rows."""
        panels, offs, widest = self._panels(params, P, forward)
        shared = (panels, offs)
        if gates:
            shared += (np.empty((P, B * widest * gemm.PANEL), dtype),)
        rows = (np.empty((copies, floats * -(-self.cell.hidden_size // P)), dtype),) if floats else ()
        return shared, (*rows, _edges(copies, dtype))

    def _row_spans(self, params: Params, B: int, macs: int) -> list[tuple[int, int]] | None:
        """The chunks of batch rows a scan on the engine is split into, or None to split it by
        hidden units (or, under SCAN_ALONE_MACS, run it alone). By rows where the recurrent
        weights are at most ROWS_BYTES (each thread then streams all of them from its own core's
        cache, and the threads never meet) and the batch has a product tile of rows for each
        part: chunks of whole tiles, ROW_CHUNKS a part, taken by the threads as they come; a
        scan under SCAN_ALONE_MACS in one chunk of all rows (the same one-part numbers and
        packed weights as the cell's other scans, run on the caller)."""
        P = engine.parts()
        tiles = B // gemm.TILE
        if P < 2 or params["W_hh"].nbytes > ROWS_BYTES or tiles < P:
            return None
        if macs < engine.SCAN_ALONE_MACS:
            return [(0, B)]
        return _tile_runs(B, min(tiles, ROW_CHUNKS * P))

    def _split_scan(
        self, fn: Callable, params: Params, args: tuple, B: int, macs: int, forward: bool, gates: bool, floats: int = 0
    ) -> None:
        """A compiled scan on the engine: fn (split.py) by batch rows (`_row_spans`), else by
        hidden units (engine.scan_parts); args its arrays, up to its packed weights."""
        dtype = np.float32
        spans = self._row_spans(params, B, macs)
        if spans is None:
            P = engine.parts()
            shared, per = self._own(params, B, dtype, P, P, forward, gates, floats)
            engine.scan_parts(fn, *args, *shared, *per, (0, B), macs=macs)
        else:
            shared, per = self._own(params, B, dtype, 1, len(spans), forward, gates, floats)
            engine.scan_rows(fn, spans, lambda c: (*args, *shared, *(a[c : c + 1] for a in per)))

    def _buffers(self, xp: Any, rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The input rows (src, idx) and, from the pool, the gate buffer and the outputs (T rows,
        or a ring of `rows`: scans.py)."""
        src, idx = scan_rows(xp)
        B, H = idx.shape[1], self.cell.hidden_size
        return src, idx, pool.empty((rows, B, self.work * H), xp.dtype), pool.empty((rows, B, H), xp.dtype)

    def _stops(self, stops: Any, B: int, dtype: Any, into: list | None) -> tuple[np.ndarray, np.ndarray]:
        """A forward scan's stops and kept (scans.py's _STOPS), the states they fill (arrays of
        their own) appended to `into`."""
        if not stops:
            return _NO_STOPS, _NO_KEPT
        kept = np.zeros((len(stops), 2), np.int64)
        for k in range(len(stops)):
            state = self.cell.State(*(np.empty((B, n), dtype) for n in self.cell.state_sizes().values()))
            kept[k, : len(state)] = [a.ctypes.data for a in state]
            into.append(state)  # (held there while the scan writes them)
        return np.asarray(stops, np.int64), kept

    @staticmethod
    def _rows(T: int, ring: bool) -> int:
        """Rows of a forward scan's buffers: T, or two for a scan run for its final state."""
        return min(T, 2) if ring else T

    def _weight_grad(
        self, work: np.ndarray, outs: np.ndarray, h0: np.ndarray, reverse: bool, grads: Params, a=0, b=None
    ) -> None:
        """After a consumed backward scan whose work rows hold dL/dxp_t, also the gradient at
        h W_hh^T (Elman, LSTM): dW_hh += sum over steps a .. b-1 (default all) of work_t^T
        h_{t-1}, h_{t-1} read where the forward scan left it (_prev_pairs): one product for
        the steps after the first, one for the first step's rows and h0."""
        for w, h in _prev_pairs(work, outs, h0, reverse, a, work.shape[0] if b is None else b):
            n = w.shape[0] * w.shape[1]
            self._products(w.reshape(n, -1), h.reshape(n, -1), grads)

    def _products(self, w: np.ndarray, h: np.ndarray, grads: Params) -> None:
        """dW_hh += w^T h for rows w (n, work) of the consumed work and h (n, H) the states they
        follow."""
        pool.matmul_add(w.T, h, grads["W_hh"])

    def _overlapped_back(
        self,
        params: Params,
        tape: Tape,
        douts: np.ndarray,
        scale: Any,
        grads: Params,
        chunks: Callable,
        outs: np.ndarray,
        h0: np.ndarray,
    ) -> np.ndarray | None:
        """A consumed backward split scan in chunks of steps from the last, each chunk's weight
        gradient product (dW_hh += work^T h_prev over its rows) formed on the calling thread while
        an engine thread runs the next chunk's scan alone (its parts in turn): on two cores the
        product and the scan overlap, where a split scan of a small cell gains little from its
        second thread. The scan's numbers are the whole scan's bit for bit (a chunk starts from
        the messages the last one left); the weight gradient is summed chunk by chunk (float32
        rounding). chunks() gives chunk(a, b, f, g), which runs steps [a, b) alone; outs and h0
        the forward scan's outputs and initial h (the products' h_{t-1}). Returns dL/dxp (the
        work rows), or None where this does not apply (no compiled scans, a reversed direction,
        a scan of under 32 steps, one part, a scan that splits by rows)."""
        T, B = douts.shape[:2]
        n = min(8, T // 16)
        if not (SCANS and switch.scans_on()) or tape.reverse or n < 2 or engine.parts() < 2 or not engine.engaged():
            return None
        macs = self._macs(params, T, B)
        if macs < engine.SCAN_ALONE_MACS:  # (a small scan stays on the caller)
            return None
        if params["W_hh"].nbytes > OVERLAP_BYTES:  # (its split scan streams half the weights a core)
            return None
        if self._row_spans(params, B, macs) is not None:  # (split by rows: faster)
            return None
        chunk = chunks()
        work = tape.aux[0]
        f, g = self._back_arrays(douts, scale)
        cuts = [T * i // n for i in range(n + 1)]

        def grad(a: int, b: int) -> None:
            with engine.split(1):  # (the caller's own call stays whole: no run within this run)
                self._weight_grad(work, outs, h0, False, grads, a, b)

        done = None
        for a, b in reversed(list(zip(cuts[:-1], cuts[1:]))):
            scan = partial(chunk, a, b, f, g)
            if done is None:
                scan()
            else:
                engine.run([partial(grad, *done), scan])
            done = (a, b)
        a, b = done  # (the first steps' product alone, split between the threads)
        self._weight_grad(work, outs, h0, False, grads, a, b)
        tape.caches.release()
        return work

    @staticmethod
    def _back_arrays(douts: np.ndarray, scale: Any) -> tuple[np.ndarray, np.ndarray]:
        """What a backward kernel takes beside the tape: the message factors (empty: none); the
        output gradients, C-contiguous."""
        f = np.zeros((0, 0), douts.dtype) if scale is None else np.ascontiguousarray(scale, douts.dtype)
        return f, np.ascontiguousarray(douts)

    def _back_scan(
        self, tape: Tape, douts: np.ndarray, scale: Any, run: Callable, outs: np.ndarray, h0: np.ndarray, grads: Params
    ) -> Any:
        """The consumed backward scan run(f, g) (f, g: _back_arrays) and then the weight
        gradient's products; returns what run returns (the initial-state gradient)."""
        dstate = run(*self._back_arrays(douts, scale))
        tape.caches.release()
        self._weight_grad(tape.aux[0], outs, h0, tape.reverse, grads)
        return dstate


class FastLSTM(_Fast):
    work = 4

    def step(self, params: Params, state: LSTMState, xp_t: np.ndarray):
        act = state.h @ params["W_hh"].T  # (B, 4H), becomes [i, f, g, o]
        c, h = np.empty_like(state.c), np.empty_like(state.h)
        rows.lstm_fwd(xp_t, act, state.c, c, h)
        return LSTMState(h, c), h, LSTMCache(state.h, state.c, act, c)

    def step_back(self, params: Params, cache: LSTMCache, dstate: LSTMState, dout, grads: Params):
        h_prev, c_prev, act, c = cache
        da, dc_prev = np.empty_like(act), np.empty_like(c)
        rows.lstm_bwd(act, c_prev, c, dstate.h, dout, dstate.c, da, dc_prev)
        grads["W_hh"] += da.T @ h_prev
        return LSTMState(da @ params["W_hh"], dc_prev), da

    def forward_scan(
        self, params: Params, xp: Any, state: LSTMState, reverse: bool, ring: bool = False, stops=(), kept=None
    ):
        if not (SCANS and switch.scans_on()):
            return None
        check_scan(self.cell, xp, state)
        T, B = xp.shape[:2]
        at = self._stops(stops, B, xp.dtype, kept)  # (first: the states outlive the scan's buffers)
        src, idx, work, outs = self._buffers(xp, self._rows(T, ring))
        h0, c0 = np.ascontiguousarray(state.h), np.ascontiguousarray(state.c)
        cs = pool.empty(outs.shape, xp.dtype)
        if engine.engaged():  # split between the engine's threads
            args = (src, idx, h0, c0, work, cs, outs, reverse, *at)
            self._split_scan(split.lstm_scan_part, params, args, B, self._macs(params, T, B), True, True)
        else:
            scans.lstm_scan(src, idx, np.ascontiguousarray(params["W_hh"]), h0, c0, work, cs, outs, reverse, *at)

        def cache(t):
            p = previous_step(t, T, reverse)
            return LSTMCache(h0, c0, work[t], cs[t]) if p is None else LSTMCache(outs[p], cs[p], work[t], cs[t])

        last = (0 if reverse else T - 1) % outs.shape[0]
        if ring:
            return None, LSTMState(outs[last], cs[last]), None
        return (
            outs,
            LSTMState(outs[last], cs[last]),
            Tape(StepCaches(cache, T), None, reverse, (work, h0, c0, cs, outs)),
        )

    def backward_scan(self, params: Params, tape: Tape, douts, scale, dstate: LSTMState, grads: Params):
        check_scan_back(self.cell, douts, dstate, tape.aux[0].shape[:2])
        work, h0, c0, cs, outs = tape.aux
        dh = np.array(dstate.h, dtype=douts.dtype, order="C")
        dc = np.array(dstate.c, dtype=douts.dtype, order="C")
        B = dh.shape[0]

        def chunks():
            P = engine.parts()
            shared, per = self._own(params, B, dh.dtype, P, P, False, False)

            def chunk(a, b, f, g):
                cp = c0 if a == 0 else cs[a - 1]
                fs = f[a:b] if f.shape[0] else f
                args = (cp, work[a:b], cs[a:b], g[a:b], dh, dc, fs, False)
                engine.scan_alone(split.lstm_scan_back_part, P, *args, *shared, *per, (0, B))

            return chunk

        dxp = self._overlapped_back(params, tape, douts, scale, grads, chunks, outs, h0)
        if dxp is not None:
            return dxp, LSTMState(dh, dc)

        def run(f, g):
            args = (c0, work, cs, g, dh, dc, f, tape.reverse)
            if engine.engaged():
                macs = self._macs(params, *douts.shape[:2])
                self._split_scan(split.lstm_scan_back_part, params, args, B, macs, False, False)
            else:
                scans.lstm_scan_back(np.ascontiguousarray(params["W_hh"]), *args)
            return LSTMState(dh, dc)

        d0 = self._back_scan(tape, douts, scale, run, outs, h0, grads)
        return work, d0


class FastGRU(_Fast):
    work = 4

    def step(self, params: Params, state: GRUState, xp_t: np.ndarray):
        H = self.cell.hidden_size
        h = state.h
        rec = h @ params["W_hh"].T  # (B, 3H)
        work, h_new = np.empty((h.shape[0], 4 * H), dtype=h.dtype), np.empty_like(h)
        rows.gru_fwd(xp_t, rec, params["b_hh"][2 * H :], h, work, h_new)
        return GRUState(h_new), h_new, GRUCache(h, work)

    def step_back(self, params: Params, cache: GRUCache, dstate: GRUState, dout, grads: Params):
        H = self.cell.hidden_size
        h, work = cache
        da, drec, dhz = np.empty_like(work), np.empty((h.shape[0], 3 * H), dtype=h.dtype), np.empty_like(h)
        rows.gru_bwd(work, h, dstate.h, dout, da, drec, dhz)
        grads["W_hh"] += drec.T @ h
        grads["b_hh"][2 * H :] += drec[:, 2 * H :].sum(axis=0)
        return GRUState(dhz + drec @ params["W_hh"]), da[:, : 3 * H]

    def _products(self, w: np.ndarray, h: np.ndarray, grads: Params) -> None:
        """After the consumed scan the work rows hold [da_r, da_z, da_n, da_n r]: the gradient
        at h W_hh^T is [da_r, da_z, da_n r] (dL/dxp is the first three blocks)."""
        H = w.shape[1] // 4
        pool.matmul_add(w[:, : 2 * H].T, h, grads["W_hh"][: 2 * H])
        pool.matmul_add(w[:, 3 * H :].T, h, grads["W_hh"][2 * H :])
        rows.add_column_sums(grads["b_hh"][2 * H :], w[:, 3 * H :])

    def forward_scan(
        self, params: Params, xp: Any, state: GRUState, reverse: bool, ring: bool = False, stops=(), kept=None
    ):
        if not (SCANS and switch.scans_on()):
            return None
        check_scan(self.cell, xp, state)
        T, B = xp.shape[:2]
        at = self._stops(stops, B, xp.dtype, kept)  # (first: the states outlive the scan's buffers)
        src, idx, work, outs = self._buffers(xp, self._rows(T, ring))
        H = self.cell.hidden_size
        h0 = np.ascontiguousarray(state.h)
        b_hn = np.ascontiguousarray(params["b_hh"][2 * H :])
        if engine.engaged():
            args = (src, idx, b_hn, h0, work, outs, reverse, *at)
            self._split_scan(split.gru_scan_part, params, args, B, self._macs(params, T, B), True, True)
        else:
            rec = np.empty((B, 3 * H), dtype=xp.dtype)
            scans.gru_scan(src, idx, np.ascontiguousarray(params["W_hh"]), b_hn, h0, work, outs, rec, reverse, *at)

        def cache(t):
            p = previous_step(t, T, reverse)
            return GRUCache(h0 if p is None else outs[p], work[t])

        if ring:
            return None, GRUState(outs[(0 if reverse else T - 1) % outs.shape[0]]), None
        return (
            outs,
            GRUState(outs[0 if reverse else T - 1]),
            Tape(StepCaches(cache, T), None, reverse, (work, h0, outs)),
        )

    def backward_scan(self, params: Params, tape: Tape, douts, scale, dstate: GRUState, grads: Params):
        check_scan_back(self.cell, douts, dstate, tape.aux[0].shape[:2])
        work, h0, outs = tape.aux
        dh = np.array(dstate.h, dtype=douts.dtype, order="C")
        B, H = dh.shape

        def run(f, g):
            if engine.engaged():
                drec = np.empty((2, B, 3 * H), dtype=dh.dtype)  # shared, alternate halves on alternate steps
                args = (h0, work, outs, g, dh, drec, f, tape.reverse)
                macs = self._macs(params, *douts.shape[:2])
                self._split_scan(split.gru_scan_back_part, params, args, B, macs, False, False)
            else:
                drec = np.empty((B, 3 * H), dtype=dh.dtype)
                scans.gru_scan_back(np.ascontiguousarray(params["W_hh"]), h0, work, outs, g, dh, drec, f, tape.reverse)
            return GRUState(dh)

        d0 = self._back_scan(tape, douts, scale, run, outs, h0, grads)
        return work[..., : 3 * H], d0


class FastElman(_Fast):
    """Elman with tanh (the only activation the kernels have)."""

    work = 1

    def step(self, params: Params, state: ElmanState, xp_t: np.ndarray):
        a = state.h @ params["W_hh"].T  # (B, H), becomes h' = tanh(xp + a)
        rows.elman_fwd(xp_t, a)
        return ElmanState(a), a, ElmanCache(state.h, a)

    def step_back(self, params: Params, cache: ElmanCache, dstate: ElmanState, dout, grads: Params):
        delta = np.empty_like(cache.h)
        rows.elman_bwd(cache.h, dstate.h, dout, delta)
        grads["W_hh"] += delta.T @ cache.h_prev
        return ElmanState(delta @ params["W_hh"]), delta

    def forward_scan(
        self, params: Params, xp: Any, state: ElmanState, reverse: bool, ring: bool = False, stops=(), kept=None
    ):
        if not (SCANS and switch.scans_on()):
            return None
        check_scan(self.cell, xp, state)
        T, B = xp.shape[:2]
        at = self._stops(stops, B, xp.dtype, kept)  # (first: the states outlive the scan's buffers)
        src, idx, work, outs = self._buffers(xp, self._rows(T, ring))
        h0 = np.ascontiguousarray(state.h)
        if engine.engaged():
            args = (src, idx, h0, work, outs, reverse, *at)
            self._split_scan(split.elman_scan_part, params, args, B, self._macs(params, *idx.shape), True, False)
        else:
            scans.elman_scan(src, idx, np.ascontiguousarray(params["W_hh"]), h0, work, outs, reverse, *at)

        def cache(t):
            p = previous_step(t, T, reverse)
            return ElmanCache(h0 if p is None else outs[p], work[t])

        if ring:
            return None, ElmanState(outs[(0 if reverse else T - 1) % outs.shape[0]]), None
        tape = Tape(StepCaches(cache, T), None, reverse, (work, h0, outs))
        return outs, ElmanState(outs[0 if reverse else T - 1]), tape

    def backward_scan(self, params: Params, tape: Tape, douts, scale, dstate: ElmanState, grads: Params):
        check_scan_back(self.cell, douts, dstate, tape.aux[0].shape[:2])
        work, h0, outs = tape.aux
        dh = np.array(dstate.h, dtype=douts.dtype, order="C")
        B = dh.shape[0]

        def chunks():
            P = engine.parts()
            shared, per = self._own(params, B, dh.dtype, P, P, False, False, floats=1)

            def chunk(a, b, f, g):
                fs = f[a:b] if f.shape[0] else f
                args = (work[a:b], g[a:b], dh, fs, False)
                engine.scan_alone(split.elman_scan_back_part, P, *args, *shared, *per, (0, B))

            return chunk

        dxp = self._overlapped_back(params, tape, douts, scale, grads, chunks, outs, h0)
        if dxp is not None:
            return dxp, ElmanState(dh)

        def run(f, g):
            args = (work, g, dh, f, tape.reverse)
            if engine.engaged():
                macs = self._macs(params, *douts.shape[:2])
                self._split_scan(split.elman_scan_back_part, params, args, B, macs, False, False, floats=1)
            else:
                scans.elman_scan_back(np.ascontiguousarray(params["W_hh"]), *args)
            return ElmanState(dh)

        d0 = self._back_scan(tape, douts, scale, run, outs, h0, grads)
        return work, d0


def _prev_pairs(
    work: np.ndarray, outs: np.ndarray, h0: np.ndarray, reverse: bool, a: int, b: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """For the steps a .. b-1 of a scan (work, outs: (T, B, .)), pairs of rows (work_t, h_{t-1})
    that cover them: the state each step started from is the output of the step before (t - 1,
    or t + 1 reversed), which the forward scan left in outs, and h0 for the first step. So the
    weight gradient reads them in place: no (T, B, H) copy of the states is made (7.4-7.7 MiB
    of the 35.7, 59.5 and 67.5 MiB that full BPTT of Elman, GRU and LSTM 128 took at B = 16,
    T = 1000)."""
    T = work.shape[0]
    first = T - 1 if reverse else 0  # (the step that starts from h0)
    pairs = []
    lo, hi = (a, min(b, T - 1)) if reverse else (max(a, 1), b)
    if hi > lo:
        pairs.append((work[lo:hi], outs[lo + 1 : hi + 1] if reverse else outs[lo - 1 : hi - 1]))
    if a <= first < b:
        pairs.append((work[first : first + 1], h0[None]))
    return pairs


_IMPLEMENTATIONS: dict[type, type[_Fast]] = {LSTM: FastLSTM, GRU: FastGRU, Elman: FastElman}

# The backward scans of cells whose recurrent weights are at most this many bytes overlap their
# weight gradient product (_overlapped_back); larger ones split the scan between the threads.
# Measured on the Intel Xeon (2 vCPUs), 7 alternated runs each, step time before -> after: LSTM 128
# (B = 16, T = 1000; 256 KiB) 74.1 -> 64.6 ms, Elman 128 (B = 32, T = 100) 7.6 -> 7.1 ms, LSTM 128
# (B = 32, T = 100) 13.6 -> 14.1 ms; LSTM 512 (4 MiB: a core's share of a split scan fits its L2, the
# whole does not) 138 -> 153 ms, so it does not overlap.
# Where the scans split by batch rows (below) they do not overlap: the split is faster. Where they
# cannot (a batch under a tile a thread), the overlap still pays: B = 8, T = 1000, H = 128, medians
# of 4 alternated processes, LSTM 44.9 against 47.7 ms and Elman 17.8 against 18.9 split by units.
OVERLAP_BYTES = 1 << 19
# The scans of cells whose recurrent weights are at most this many bytes split by batch rows
# (_row_spans) rather than by hidden units: each thread streams all of W_hh from its own core's
# cache, and the threads never meet within the scan. Measured on the Intel Xeon (2 vCPUs), whole
# steps before -> after (medians of 3 alternated processes): LSTM 128 (B = 32, T = 100) 20.3 ->
# 14.2 ms, GRU 17.2 -> 13.1, Elman 8.4 -> 6.3; B = 16, T = 1000: LSTM 75.2 -> 68.9, GRU 87.8 ->
# 60.7, Elman 32.1 -> 21.8 ms. A forward scan of LSTM 256 (1 MiB) split by rows lost to the
# split by units (13.3 against 12.5 ms), so larger cells keep it.
ROWS_BYTES = 1 << 19
# Chunks a part at most (of whole product tiles): the threads take them as they come, so a
# thread that is late or shares its core leaves the rest to the other.
ROW_CHUNKS = 2


# Memory-budgeted BPTT runs a recorded segment's runs of rows side by side (leaf_rows) where its
# recurrent products come to at least this many multiply-adds (24 steps of LSTM 128 at B = 32)
# and every cell's W_hh is at most LEAF_ROWS_BYTES. Measured on the Intel Xeon (2 vCPUs), LSTM 128,
# T = 1000, B = 32, mixed policy, medians of 7-11 steps in processes of their own, alternated
# (this machine's speed moved by 30% from one process to the next): 4% (segments of 12-26 steps
# against 24-36 whole) 150-216 against 196-238 ms, 25% 115-172 against 155-189 ms, 10% 115-158
# against 119-127 ms; at 1.5%, segments of 8 steps by rows took 3.4 times full BPTT, against
# 1.5-2 whole. LSTM 256 (1 MiB) by rows, in one process: 4% 667 against 640 ms, 10% 557 against 598.
LEAF_ROWS_MACS = 12 * engine.SPLIT_MACS
LEAF_ROWS_BYTES = ROWS_BYTES
_PACKING = threading.Lock()  # (a step's weights packed into its memo by one thread at a time)


def _new_packing_lock() -> None:
    """In a child of os.fork, a new lock (another thread may have held the old one)."""
    global _PACKING
    _PACKING = threading.Lock()


if hasattr(os, "register_at_fork"):  # (POSIX)
    os.register_at_fork(after_in_child=_new_packing_lock)


def leaf_rows(weights: list[np.ndarray], B: int, steps: int, P: int) -> list[tuple[int, int]] | None:
    """Runs of batch rows, one for each of P threads, of whole product tiles, for a recorded
    segment of `steps` steps of cells with these recurrent `weights`, where their scans split by
    rows (each at most ROWS_BYTES), each thread gets a tile and the segment's recurrent products
    come to LEAF_ROWS_MACS; else None. Memory-budgeted BPTT records and backpropagates such a
    segment's runs of rows side by side, one a thread."""
    if not SCANS or P < 2 or B < P * gemm.TILE or any(W.nbytes > LEAF_ROWS_BYTES for W in weights):
        return None
    if steps * B * sum(W.size for W in weights) < LEAF_ROWS_MACS:
        return None
    return _tile_runs(B, P)


def _tile_runs(B: int, n: int) -> list[tuple[int, int]]:
    """n <= B // TILE runs of batch rows (b0, b1), each cut at a whole product tile nearest to
    an even share of the rows (the last takes the rows after the last whole tile: B = 47 in two
    runs of 24 and 23, not 16 and 31)."""
    cuts = [gemm.TILE * math.floor(i * B / (n * gemm.TILE) + 0.5) for i in range(n)] + [B]
    return list(zip(cuts[:-1], cuts[1:]))


def _fits(cell: Any) -> bool:
    """Exactly a built-in class (a user's subclass keeps its own math) with the kernels' activation."""
    return type(cell) in _IMPLEMENTATIONS and (type(cell) is not Elman or cell.activation.name == "tanh")


def implementation(cell: Any, dtype: Any) -> Any:
    if dtype != np.float32 or not switch.kernels_on():
        return cell
    if type(cell) in spiking.SPIKING:  # LIF, ALIF: compiled whole scans, the cell's own steps
        return spiking.FastSpiking(cell)
    if not _fits(cell):
        return cell
    return _IMPLEMENTATIONS[type(cell)](cell)


def splits(dtype: Any) -> Callable[[Any], bool]:
    """Whether a cell's steps on `dtype` can run split on the engine."""
    return lambda cell: SCANS and dtype == np.float32 and switch.kernels_on() and switch.scans_on() and _fits(cell)
