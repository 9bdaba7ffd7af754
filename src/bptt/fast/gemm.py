"""bptt's own small matrix product for the split scans: a packed-panel kernel in LLVM IR.

The recurrent product of a part: (B, K) @ (K, N) with the (K, N) factor packed once per scan
into panels of 2 x LANES columns (`pack_panels`), so that no step repacks it (OpenBLAS packs its
operands at every call: at B = 32 half its time). The inner kernel is written in LLVM IR with
LANES-float vectors (8 for AVX2, 16 for AVX-512): a TILE x 2 LANES tile of the result in
registers (TILE = 4 rows with AVX2, 8 with AVX-512's 32 registers), one pass over K with one
fused multiply-add per register and step (8 lanes, measured
on one Zen 3 core: (32, 128) @ (128, 256) 30 us = 71 GFLOP/s, OpenBLAS 44 us; (32, 512) @
(512, 1024) 77 vs 58 GFLOP/s). Tested against float64 products, and 16 lanes bitwise against 8.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types as nt
from numba.core import cgutils
from numba.extending import intrinsic

from .jit import LANES, inline, jit
from .rows import _ZERO

# The vector width: LANES floats a register (jit.py: 16 with AVX-512, else 8, or BPTT_LANES;
# LLVM splits a wider vector into what the target has, so either is correct on any CPU, ARM's
# NEON included). A panel is two vectors wide. The width changes the tiles, not the sums: every
# element is the same fused multiply-adds over k in the same order (tests: bitwise).
_PANEL = 2 * LANES
PANEL = _PANEL
# Rows of the result a tile keeps in registers: 8 with 16 lanes (16 accumulators of AVX-512's 32
# registers), 4 with 8 (8 of AVX2's 16). More rows per pass over a panel load each panel row once
# for more fused multiply-adds; measured on one core of an Intel Xeon (AVX-512), (32, 128) @
# (128, 512), three runs alternated: 142-146 GFLOP/s with 8 rows against 88-131 with 4.
_ROWS = 8 if LANES == 16 else 4
TILE = _ROWS


def _tile_kernel(rows, add):
    """An intrinsic: C[r, :PANEL] (+)= sum_k A[r, k] P[k, :PANEL] for r < rows, += if `add`
    (byte addresses, strides in floats)."""
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
            builder.bitcast(builder.gep(rows_at[r], [ir.Constant(i64, L * h)]), vp) for r in range(rows) for h in (0, 1)
        ]
        first = [builder.load(a, align=4) for a in at] if add else [zero] * (2 * rows)
        start = builder.block
        loop, done = builder.function.append_basic_block("tile.k"), builder.function.append_basic_block("tile.done")
        builder.cbranch(builder.icmp_signed(">", K, ir.Constant(i64, 0)), loop, done)
        builder.position_at_end(loop)
        k = builder.phi(i64)
        acc = [builder.phi(v8) for _ in range(2 * rows)]
        pk = builder.gep(P, [builder.mul(k, ir.Constant(i64, _PANEL))])
        b = [builder.load(builder.bitcast(builder.gep(pk, [ir.Constant(i64, L * h)]), vp), align=4) for h in (0, 1)]
        new = []
        for r in range(rows):
            a = builder.load(builder.gep(A, [builder.add(builder.mul(ir.Constant(i64, r), lda), k)]), align=4)
            a = builder.shuffle_vector(builder.insert_element(undef, a, ir.Constant(i32, 0)), undef, splat)
            new += [builder.call(fma, [a, b[h], acc[2 * r + h]]) for h in (0, 1)]
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


_tileR, _tile4, _tile1 = (_tile_kernel(r, False) for r in (_ROWS, 4, 1))
_tileR_add, _tile4_add, _tile1_add = (_tile_kernel(r, True) for r in (_ROWS, 4, 1))


@jit
def pack_panels(B, out):
    """out[j, k, c] = B[k, PANEL j + c] (zero beyond B's N columns): the (K, N) factor of a
    product as ceil(N / PANEL) panels (ceil(N / PANEL), K, PANEL); B may be any strided view."""
    K, N = B.shape
    for j in range(out.shape[0]):
        for k in range(K):
            for c in range(_PANEL):
                n = j * _PANEL + c
                out[j, k, c] = B[k, n] if n < N else _ZERO


@inline
def _mm_panels(A, P, C, edge, add):
    """C = A @ B (C += A @ B if add) for B packed by pack_panels; A and C rows with unit
    inner stride; edge (TILE, PANEL) scratch for the last, partial panel."""
    M, K = A.shape
    N = C.shape[1]
    sa, sc = A.strides[0], C.strides[0]
    for j in range(P.shape[0]):
        p = P.ctypes.data + j * P.strides[0]
        c0 = j * _PANEL
        w = min(_PANEL, N - c0)
        i = 0
        while i < M:  # tiles of _ROWS rows, then of 4, then single rows
            r = _ROWS if M - i >= _ROWS else (4 if M - i >= 4 else 1)
            if w == _PANEL:
                at, ld = C.ctypes.data + i * sc + c0 * 4, sc // 4
            else:
                at, ld = edge.ctypes.data, _PANEL
                if add:
                    for q in range(r):
                        for c in range(w):
                            edge[q, c] = C[i + q, c0 + c]
            a = A.ctypes.data + i * sa
            if r == _ROWS:
                if add:
                    _tileR_add(a, sa // 4, p, K, at, ld)
                else:
                    _tileR(a, sa // 4, p, K, at, ld)
            elif r == 4:
                if add:
                    _tile4_add(a, sa // 4, p, K, at, ld)
                else:
                    _tile4(a, sa // 4, p, K, at, ld)
            elif add:
                _tile1_add(a, sa // 4, p, K, at, ld)
            else:
                _tile1(a, sa // 4, p, K, at, ld)
            if w < _PANEL:
                for q in range(r):
                    for c in range(w):
                        C[i + q, c0 + c] = edge[q, c]
            i += r


@jit
def mm_panels(A, P, C, edge, add):
    """C (+)= A @ B, B packed by pack_panels (the scans' inner product, for tests)."""
    _mm_panels(A, P, C, edge, add)


def panels(b: np.ndarray) -> np.ndarray:
    """The (K, N) float32 factor b of a product packed for the split scans (pack_panels)."""
    K, N = b.shape
    out = np.empty((-(-N // _PANEL), K, _PANEL), np.float32)
    pack_panels(b, out)
    return out
