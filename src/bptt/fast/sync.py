"""Meeting points for the threads of a split scan: atomics, a spin-then-yield barrier.

The parts of a split scan (split.py) meet once per step at a counter in shared memory and claim
their tasks by compare-and-swap: atomic add, load and compare-and-swap, and x86's pause, are
written as Numba intrinsics in LLVM IR; a part waiting for the others spins `_SPINS` pauses
(51 us on AMD Zen 4), then yields its core (sched_yield, another part may share it), and
gives up after a number of yields (~10 s) or when another part raised its abort flag. `spin_until` keeps an engine thread awake between jobs (engine.py).

AVAILABLE is False where sched_yield is not found (the split scans are then off).
"""

from __future__ import annotations

import platform

from . import blas, scans
from .jit import inline, jit

YIELD = blas.find_sched_yield() if scans.AVAILABLE else None
AVAILABLE = YIELD is not None

if AVAILABLE:
    from llvmlite import ir
    from numba import types as nt
    from numba.core import cgutils
    from numba.extending import intrinsic

    scans.llvm.add_symbol("bptt_sched_yield", YIELD)
    _sched_yield = nt.ExternalFunction("bptt_sched_yield", nt.int32())
    _X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")

    def _i64_at(builder, address):
        return builder.inttoptr(address, ir.PointerType(ir.IntType(64)))

    @intrinsic
    def _atomic_add(typingctx, address, value):
        """*address += value, atomically (sequentially consistent); returns the old value."""

        def codegen(context, builder, sig, args):
            return builder.atomic_rmw("add", _i64_at(builder, args[0]), args[1], "seq_cst")

        return nt.int64(nt.uintp, nt.int64), codegen

    @intrinsic
    def _atomic_cas(typingctx, address, expected, value):
        """*address = value if it holds expected, atomically (sequentially consistent);
        whether it did."""

        def codegen(context, builder, sig, args):
            pair = builder.cmpxchg(_i64_at(builder, args[0]), args[1], args[2], "seq_cst", "seq_cst")
            return builder.extract_value(pair, 1)

        return nt.boolean(nt.uintp, nt.int64, nt.int64), codegen

    @intrinsic
    def _atomic_load(typingctx, address):
        """*address, read atomically (never hoisted out of a spin loop)."""

        def codegen(context, builder, sig, args):
            return builder.load_atomic(_i64_at(builder, args[0]), "seq_cst", 8)

        return nt.int64(nt.uintp), codegen

    @intrinsic
    def _spin_pause(typingctx):
        """x86's pause (a spin-wait hint to the core); nothing elsewhere."""

        def codegen(context, builder, sig, args):
            if _X86:
                fn = cgutils.get_or_insert_function(
                    builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause"
                )
                builder.call(fn, [])
            return context.get_dummy_value()

        return nt.void(), codegen

    _SPINS = 2000  # pauses before yielding the core (51 us on AMD Zen 4)

    @inline
    def _wait(bar, target):
        """Until the counter at bar reaches target: spin, then yield the core (another part
        may share it). bar points at int64 (counter, abort flag, most yields); False if
        another part gave up, or after that many yields (a part never came: ~10 s)."""
        n = 0
        while _atomic_load(bar) < target:
            if _atomic_load(bar + 8) != 0:
                return False
            n += 1
            if n < _SPINS:
                _spin_pause()
            elif n < _SPINS + _atomic_load(bar + 16):
                _sched_yield()
            else:
                _atomic_add(bar + 8, 1)
                return False
        return True

    @jit
    def spin_until(at, count, spins):
        """Spin (pausing) until the int64 at `at` exceeds count, at most `spins` times: an
        engine thread between jobs stays awake for a while (waking a sleeping one costs
        ~0.1 ms on a virtual machine). True if it did."""
        for _ in range(spins):
            if _atomic_load(at) > count:
                return True
            _spin_pause()
        return False
