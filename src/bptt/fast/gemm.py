"""bptt's own matrix products: a packed-panel kernel in LLVM IR, for the split scans and, where
NumPy's BLAS runs narrower vectors than the CPU has, for a step's big products.

The recurrent product of a part: (B, K) @ (K, N) with the (K, N) factor packed once per scan
into panels of PANEL columns (`pack_panels`: 3 x LANES with AVX-512, 2 x LANES with AVX2), so
that no step repacks it (OpenBLAS packs its operands at every call: at B = 32 half its time).
The inner kernel is written in LLVM IR with LANES-float vectors (8 for AVX2, 16 for AVX-512): a
TILE x PANEL tile of the result in registers (TILE = 4 rows with AVX2, 8 with AVX-512's 32
registers), one pass over K with one fused multiply-add per register and step (8 lanes, measured
on one Zen 3 core: (32, 128) @ (128, 256) 30 us = 71 GFLOP/s, OpenBLAS 44 us; (32, 512) @
(512, 1024) 77 vs 58 GFLOP/s). Tested against float64 products, and 16 lanes bitwise against 8.

`gemm` blocks the same kernel for the products over a segment's T * B rows (readouts, weight
gradients; bptt.fast.pool, where machine.own_products() chooses it): one Intel Xeon core with
AVX-512, 16 lanes, against OpenBLAS 0.3.31's Haswell kernels (OPENBLAS_CORETYPE=Haswell) and its
SkylakeX kernels, GFLOP/s, medians of 9 (benchmarks/products.py): LSTM 512's weight gradient
(2048, 3200) @ (3200, 512) 121 / 79 / 142; Elman 512's 114 / 73 / 136; the readout (3200, 512)
@ (512, 65) 99 / 68 / 107 (2-vector panels, 256 rows of B a block: 120 / 80 / 136, 124 / 79 /
141, 91 / 68 / 105 in the same hour).
"""

from __future__ import annotations

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types as nt
from numba.core import cgutils
from numba.extending import intrinsic

from .jit import CACHE, FLAGS, LANES, inline, jit
from .rows import _ZERO

# The vector width: LANES floats a register (jit.py: 16 with AVX-512, else 8, or BPTT_LANES;
# LLVM splits a wider vector into what the target has, so either is correct on any CPU, ARM's
# NEON included). The width changes the tiles, not the sums: every element is the same fused
# multiply-adds over k in the same order (tests: bitwise).
# A panel is _VECTORS vectors wide: 3 with 16 lanes (a tile of 8 rows keeps 24 accumulators of
# AVX-512's 32 registers, 3 for the panel's row and 1 for A's value; each panel row loaded then
# serves 24 fused multiply-adds, not 16), 2 with 8 (8 of AVX2's 16). Measured on one core of an
# Intel Xeon (AVX-512), two runs alternated, GFLOP/s with 3 vectors against 2: (32, 512) @ (512,
# 1536) 104.5 / 98.8 and 86.8 / 74.2, @ (512, 3072) 109.6 / 99.1 and 86.1 / 74.2, (32, 2048) @
# (2048, 768) 110.2 / 115.2 and 94.9 / 80.0, (32, 128) @ (128, 384) 128.7 / 121.1 and 113.6 /
# 97.9.
_VECTORS = 3 if LANES == 16 else 2
_PANEL = _VECTORS * LANES
PANEL = _PANEL
# Rows of the result a tile keeps in registers: 8 with 16 lanes, 4 with 8. More rows per pass
# over a panel load each panel row once for more fused multiply-adds; measured on one core of an
# Intel Xeon (AVX-512), (32, 128) @ (128, 512), three runs alternated: 142-146 GFLOP/s with 8
# rows against 88-131 with 4 (panels of 2 vectors).
_ROWS = 8 if LANES == 16 else 4
TILE = _ROWS


def _tile_kernel(rows, add, trans=False, vectors=_VECTORS):
    """An intrinsic: C[r, :V] (+)= sum_k A[r, k] P[k, :V] for r < rows and V = vectors * LANES
    columns (a panel's first ones: a last panel needs fewer), += if `add` (byte addresses,
    strides in floats; P's rows PANEL floats apart); A[r, k] at A + r lda + k, or with `trans`
    at A + k lda + r (a transposed array: a weight gradient's error rows)."""
    f32, i64, i32 = ir.FloatType(), ir.IntType(64), ir.IntType(32)
    L = LANES
    v8 = ir.VectorType(f32, L)

    def codegen(context, builder, sig, args):
        a_at, lda, p_at, K, c_at, ldc = args
        fp, vp = f32.as_pointer(), v8.as_pointer()
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v8, [v8, v8, v8]), f"llvm.fmuladd.v{L}f32")
        A, P, C = (builder.inttoptr(x, fp) for x in (a_at, p_at, c_at))
        zero, undef = ir.Constant(v8, None), ir.Constant(v8, ir.Undefined)
        splat = ir.Constant(ir.VectorType(i32, L), [0] * L)
        rows_at = [builder.gep(C, [builder.mul(ir.Constant(i64, r), ldc)]) for r in range(rows)]
        at = [
            builder.bitcast(builder.gep(rows_at[r], [ir.Constant(i64, L * h)]), vp)
            for r in range(rows)
            for h in range(vectors)
        ]
        first = [builder.load(a, align=4) for a in at] if add else [zero] * (vectors * rows)
        start = builder.block
        loop, done = builder.function.append_basic_block("tile.k"), builder.function.append_basic_block("tile.done")
        builder.cbranch(builder.icmp_signed(">", K, ir.Constant(i64, 0)), loop, done)
        builder.position_at_end(loop)
        k = builder.phi(i64)
        acc = [builder.phi(v8) for _ in range(vectors * rows)]
        pk = builder.gep(P, [builder.mul(k, ir.Constant(i64, _PANEL))])
        b = [
            builder.load(builder.bitcast(builder.gep(pk, [ir.Constant(i64, L * h)]), vp), align=4)
            for h in range(vectors)
        ]
        new = []
        ak = builder.mul(k, lda) if trans else k
        for r in range(rows):
            step = ir.Constant(i64, r) if trans else builder.mul(ir.Constant(i64, r), lda)
            a = builder.load(builder.gep(A, [builder.add(step, ak)]), align=4)
            a = builder.shuffle_vector(builder.insert_element(undef, a, ir.Constant(i32, 0)), undef, splat)
            new += [builder.call(fma, [a, b[h], acc[vectors * r + h]]) for h in range(vectors)]
        k1 = builder.add(k, ir.Constant(i64, 1))
        end = builder.block
        k.add_incoming(ir.Constant(i64, 0), start)
        k.add_incoming(k1, end)
        for phi, v, v0 in zip(acc, new, first):
            phi.add_incoming(v0, start)
            phi.add_incoming(v, end)
        builder.cbranch(builder.icmp_signed("<", k1, K), loop, done)
        builder.position_at_end(done)
        out = []
        for v, v0 in zip(new, first):
            phi = builder.phi(v8)
            phi.add_incoming(v0, start)
            phi.add_incoming(v, end)
            out.append(phi)
        for v, a in zip(out, at):
            builder.store(v, a, align=4)
        return context.get_dummy_value()

    def typer(typingctx, a_at, lda, p_at, K, c_at, ldc):
        return nt.void(nt.uintp, nt.int64, nt.uintp, nt.int64, nt.uintp, nt.int64), codegen

    return intrinsic(typer)


# the tile kernels: _ROWS rows of A as stored (_kR<vectors>) or of A's packed tiles
# (_kT<vectors>), 1 to 3 vectors of a panel wide (a last panel may need fewer; a: adding into
# C); a panel's full width for 4 rows and 1 row (their partial panels go through the edge
# scratch). The packed tiles' narrow kernels: a weight gradient's last panel of H = 128 (32
# columns) computed 48 through the edge scratch; with them, one Intel Xeon core (AVX-512, 16
# lanes), two runs alternated, GFLOP/s: (512, 3200) @ (3200, 128) 82.7 -> 93.0 and 84.6 -> 94.1,
# (128, 3200) @ (3200, 128) 75.0 -> 83.6 and 75.4 -> 81.5, (2048, 3200) @ (3200, 512) 122.1 ->
# 128.3 and 117.2 -> 118.7; the same numbers bit for bit.
_kR1, _kR2, _kR3 = (_tile_kernel(_ROWS, False, False, v) for v in (1, 2, 3))
_kR1a, _kR2a, _kR3a = (_tile_kernel(_ROWS, True, False, v) for v in (1, 2, 3))
_kT1, _kT2, _kT3 = (_tile_kernel(_ROWS, False, True, v) for v in (1, 2, 3))
_kT1a, _kT2a, _kT3a = (_tile_kernel(_ROWS, True, True, v) for v in (1, 2, 3))
_k4, _k4a, _k1, _k1a = (_tile_kernel(r, add) for r in (4, 1) for add in (False, True))


@inline
def _vectors(r, packed, v):
    """The vectors a tile of r rows computes of a panel whose columns need v: v for _ROWS rows
    (as stored or packed), else the panel's full width."""
    return v if r == _ROWS else _VECTORS


@inline
def _tile(r, v, packed, add, a, lda, p, K, at, ld):
    """One tile of the product, _vectors(r, packed, v) vectors of a panel wide: r (_ROWS, 4
    or 1) rows of A as stored, or _ROWS of its packed tiles (`packed`); += if `add`."""
    if packed:
        if add:
            if v == 3 and _VECTORS == 3:
                _kT3a(a, _ROWS, p, K, at, ld)
            elif v == 2:
                _kT2a(a, _ROWS, p, K, at, ld)
            else:
                _kT1a(a, _ROWS, p, K, at, ld)
        elif v == 3 and _VECTORS == 3:
            _kT3(a, _ROWS, p, K, at, ld)
        elif v == 2:
            _kT2(a, _ROWS, p, K, at, ld)
        else:
            _kT1(a, _ROWS, p, K, at, ld)
    elif r == _ROWS:
        if add:
            if v == 3 and _VECTORS == 3:
                _kR3a(a, lda, p, K, at, ld)
            elif v == 2:
                _kR2a(a, lda, p, K, at, ld)
            else:
                _kR1a(a, lda, p, K, at, ld)
        elif v == 3 and _VECTORS == 3:
            _kR3(a, lda, p, K, at, ld)
        elif v == 2:
            _kR2(a, lda, p, K, at, ld)
        else:
            _kR1(a, lda, p, K, at, ld)
    elif r == 4:
        if add:
            _k4a(a, lda, p, K, at, ld)
        else:
            _k4(a, lda, p, K, at, ld)
    elif add:
        _k1a(a, lda, p, K, at, ld)
    else:
        _k1(a, lda, p, K, at, ld)


@inline
def _rows(left):
    """The rows of the next tile when `left` rows remain: _ROWS, then 4, then 1."""
    return _ROWS if left >= _ROWS else (4 if left >= 4 else 1)


def _copier(n):
    """An intrinsic: n floats (one vector) from byte address src to byte address dst, any
    alignment (the packing's copies: a loop over a row of an array of run-time strides ran at
    2-3 floats a nanosecond, element by element)."""
    vec = ir.VectorType(ir.FloatType(), n)

    def codegen(context, builder, sig, args):
        src, dst = (builder.inttoptr(a, vec.as_pointer()) for a in args)
        builder.store(builder.load(src, align=4), dst, align=4)
        return context.get_dummy_value()

    def typer(typingctx, src, dst):
        return nt.void(nt.uintp, nt.uintp), codegen

    return intrinsic(typer)


_copy_vector, _copy_tile_row = _copier(LANES), _copier(_ROWS)


@jit
def pack_panels(B, out):
    """out[j, k, c] = B[k, PANEL j + c] (zero beyond B's N columns): the (K, N) factor of a
    product as ceil(N / PANEL) panels (ceil(N / PANEL), K, PANEL); B may be any strided view.
    Row by row of B (each read from start to end: a big product's B comes from memory, and
    reading many rows a little at a time waited on each). Rows of unit stride are copied a
    vector at a time (one Intel Xeon core, AVX-512, a weight gradient's B (3200, 128) in blocks
    of KC rows: 228 -> 112 us); the same numbers, copied."""
    K, N = B.shape
    if B.strides[1] != 4:
        for k in range(K):
            for j in range(out.shape[0]):
                for c in range(_PANEL):
                    n = j * _PANEL + c
                    out[j, k, c] = B[k, n] if n < N else _ZERO
        return
    vectors = N // LANES  # (whole vectors of B's row; the rest element by element, then zeros)
    at, to = B.ctypes.data, out.ctypes.data
    sb, sj, sk = B.strides[0], out.strides[0], out.strides[1]
    for k in range(K):
        row = at + k * sb
        for v in range(vectors):
            j, c = divmod(v * LANES, _PANEL)
            _copy_vector(row + v * LANES * 4, to + j * sj + k * sk + c * 4)
        for n in range(vectors * LANES, out.shape[0] * _PANEL):
            j, c = divmod(n, _PANEL)
            out[j, k, c] = B[k, n] if n < N else _ZERO


@jit
def pack_rows(W, rows, out):
    """out[j, k, c] = W[rows[PANEL j + c], k] (zero beyond len(rows)): the (K, N) factor
    W[rows].T packed as pack_panels packs it, for a C-contiguous W (a forward scan's W_hh^T).
    Each panel row gathers one value from each of the panel's PANEL rows of W and is written
    as a whole; pack_panels read the transposed view a column at a time (LSTM 512: 5.4 ms
    against 1 ms so, and 0.5 ms for the backward scan's columns, read as stored)."""
    K, n = W.shape[1], rows.shape[0]
    flat = W.ravel()
    at = np.empty(_PANEL, np.int64)  # where each of the panel's rows starts in flat, -1 past n
    for j in range(out.shape[0]):
        for c in range(_PANEL):
            m = j * _PANEL + c
            at[c] = rows[m] * K if m < n else -1
        if (j + 1) * _PANEL <= n:
            for k in range(K):
                o = out[j, k]
                for c in range(_PANEL):
                    o[c] = flat[at[c] + k]
        else:
            for k in range(K):
                o = out[j, k]
                for c in range(_PANEL):
                    o[c] = flat[at[c] + k] if at[c] >= 0 else _ZERO


@inline
def _edge(edge, C, i, c0, rows, cols, into):
    """A partial tile of C, rows x cols from (i, c0), copied into the edge scratch (`into`) or
    back from it."""
    for q in range(rows):
        for c in range(cols):
            if into:
                edge[q, c] = C[i + q, c0 + c]
            else:
                C[i + q, c0 + c] = edge[q, c]


@inline
def _mm_panels(A, P, C, edge, add, rev):
    """C = A @ B (C += A @ B if add) for B packed by pack_panels; A and C rows with unit
    inner stride; edge (TILE, PANEL) scratch for the tiles of a last, partial panel that do
    not write C directly (a tile of _ROWS rows computes only the vectors the panel's columns
    need, and writes C itself where they end with a vector; tiles of 4 and 1 rows compute the
    panel's full width). The panels from the last to the first if `rev`: a scan alternates the
    order step by step, so that where its panels overflow the core's second-level cache a step
    begins with the panels the last one ended with, still there (in one order every step, the
    least recently used is next each time, and almost every panel comes from the third level).
    Each column's sums are the same either way. Measured on one Intel Xeon core (AVX-512), 200
    products in a row, two runs: (32, 2048) @ (2048, 256) (2.25 MiB of panels) 294 -> 275 and
    293 -> 269 us, (32, 512) @ (512, 2048) 572 -> 550 and 561 -> 540 us, (32, 2048) @ (2048,
    192) (1.5 MiB) 199 -> 192 and 189 -> 186 us."""
    M, K = A.shape
    N = C.shape[1]
    sa, sc = A.strides[0], C.strides[0]
    n = P.shape[0]
    for jj in range(n):
        j = n - 1 - jj if rev else jj
        p = P.ctypes.data + j * P.strides[0]
        c0 = j * _PANEL
        w = min(_PANEL, N - c0)
        v = -(-w // LANES)
        i = 0
        while i < M:  # tiles of _ROWS rows, then of 4, then single rows
            r = _rows(M - i)
            whole = w == _vectors(r, False, v) * LANES  # (else through the edge scratch)
            if whole:
                at, ld = C.ctypes.data + i * sc + c0 * 4, sc // 4
            else:
                at, ld = edge.ctypes.data, _PANEL
                if add:
                    _edge(edge, C, i, c0, r, w, True)
            _tile(r, v, False, add, A.ctypes.data + i * sa, sa // 4, p, K, at, ld)
            if not whole:
                _edge(edge, C, i, c0, r, w, False)
            i += r


@jit
def mm_panels(A, P, C, edge, add, rev=False):
    """C (+)= A @ B, B packed by pack_panels (the scans' inner product, for tests)."""
    _mm_panels(A, P, C, edge, add, rev)


def panels(b: np.ndarray) -> np.ndarray:
    """The (K, N) float32 factor b of a product packed for the split scans (pack_panels)."""
    K, N = b.shape
    out = np.empty((-(-N // _PANEL), K, _PANEL), np.float32)
    pack_panels(b, out)
    return out


# The blocked product (`gemm`) for the big products of a step, where NumPy's BLAS runs narrower
# vectors than this CPU's (policy: bptt.fast.pool): B packed KC rows at a time, so that a panel
# (KC x PANEL: 30 KiB with 16 lanes, 16 KiB with 8) stays in the first-level cache while A's tiles go by; A's
# rows MC at a time (a block of MC x KC floats, 80 KiB, in the second-level cache), packed into tiles when A is
# a transposed array (a weight gradient's error rows: A[r, k] then read 8 floats at a time).
KC = 160 if _PANEL > 32 else 256
MC = 128


@jit
def pack_tiles(A, out):
    """out[t, k, r] = A[TILE t + r, k] (zero beyond A's M rows): A's rows as tiles, each read
    TILE floats at a time along k. A transposed array's (A[:, k] of unit stride) whole tiles are
    copied TILE floats at once (one Intel Xeon core, AVX-512: (512, 3200) in blocks of MC x KC,
    810 -> 383 us); the same numbers, copied."""
    M, K = A.shape
    whole = M // _ROWS if A.strides[0] == 4 else 0
    at, to = A.ctypes.data, out.ctypes.data
    sa, st, sk = A.strides[1], out.strides[0], out.strides[1]
    for k in range(K):  # (A[:, k] a row of the transposed array, read from start to end)
        for t in range(whole):
            _copy_tile_row(at + k * sa + t * _ROWS * 4, to + t * st + k * sk)
        for t in range(whole, out.shape[0]):
            for r in range(_ROWS):
                i = t * _ROWS + r
                out[t, k, r] = A[i, k] if i < M else _ZERO


def _gemm(A, B, C, panels, tiles, edge, add):
    """C (+)= A @ B (+= if add) for float32 A (M, K) with a unit stride along either axis, B
    (K, N) of any strides and C (M, N) with unit-stride rows. Scratch: panels (ceil(N / PANEL),
    KC, PANEL), tiles (MC / TILE, KC, TILE), edge (TILE, PANEL). Each element is fused
    multiply-adds over k in order, so a row's numbers do not depend on the other rows (a split
    by rows between threads gives the same numbers bit for bit)."""
    M, K = A.shape
    N = C.shape[1]
    s0, s1 = A.strides
    pack = s1 != 4  # (A's rows are not unit-strided: read from its packed tiles)
    sc = C.strides[0]
    if K == 0 and not add:
        C[:, :] = _ZERO
    k0 = 0
    while k0 < K:
        kc = min(KC, K - k0)
        pack_panels(B[k0 : k0 + kc], panels[:, :kc])
        addk = add or k0 > 0
        i0 = 0
        while i0 < M:
            mc = min(MC, M - i0)
            if pack:
                pack_tiles(A[i0 : i0 + mc, k0 : k0 + kc], tiles[:, :kc])
            for j in range(panels.shape[0]):
                p = panels.ctypes.data + j * panels.strides[0]
                c0 = j * _PANEL
                w = min(_PANEL, N - c0)
                v = -(-w // LANES)
                i = i0
                while i < i0 + mc:
                    left = i0 + mc - i
                    r = _rows(left)
                    if pack:
                        a, n = tiles.ctypes.data + ((i - i0) // _ROWS) * tiles.strides[0], min(_ROWS, left)
                        r = _ROWS
                    else:
                        a, n = A.ctypes.data + i * s0 + k0 * 4, r
                    whole = w == _vectors(r, pack, v) * LANES and n == r  # (else through the edge scratch)
                    if whole:
                        at, ld = C.ctypes.data + i * sc + c0 * 4, sc // 4
                    else:
                        at, ld = edge.ctypes.data, _PANEL
                        if addk:
                            _edge(edge, C, i, c0, n, w, True)
                    _tile(r, v, pack, addk, a, s0 // 4, p, kc, at, ld)
                    if not whole:
                        _edge(edge, C, i, c0, n, w, False)
                    i += n
            i0 += mc
        k0 += kc


# one signature for arrays of any layout (a C-contiguous or transposed array is taken as it
# is), compiled, or loaded from the disk cache, once: not once per combination of layouts
# (A and B read-only in the signature: a writable array passes as one, and so does a memory map
# opened for reading or a broadcast view)
_IN, _ANY, _C3 = nt.Array(nt.float32, 2, "A", readonly=True), nt.float32[:, :], nt.float32[:, :, ::1]
gemm = nb.njit(
    nt.void(_IN, _IN, _ANY, _C3, _C3, nt.float32[:, ::1], nt.boolean),
    fastmath=FLAGS,
    error_model="numpy",
    cache=CACHE,
    nogil=True,
)(_gemm)


def product(a: np.ndarray, b: np.ndarray, out: np.ndarray, add: bool, empty=np.empty) -> None:
    """out (+)= a @ b in `gemm` (float32; a with a unit stride along one axis, out's rows
    unit-strided), its scratch from `empty` (the buffer pool's, in a step)."""
    f, N = np.float32, b.shape[1]
    panels = empty((-(-N // _PANEL), KC, _PANEL), f)
    gemm(a, b, out, panels, empty((MC // _ROWS, KC, _ROWS), f), empty((_ROWS, _PANEL), f), add)
