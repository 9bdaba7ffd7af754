"""The big float32 products of the benchmark steps: bptt's blocked kernel (bptt.fast.gemm)
against NumPy's OpenBLAS with its own kernels and with OPENBLAS_CORETYPE=Haswell (the AVX2
kernels), one thread. OpenBLAS reads its core type when it loads, so each setting runs in a
process of its own; within a process the kernel and OpenBLAS are alternated, medians of
--repeats. Prints GFLOP/s and which code bptt chooses under each setting (machine.own_products).

    python benchmarks/products.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

# name: (A's shape as stored, transposed?, B's shape, B transposed?): the products of one step
SHAPES = {
    "LSTM 512 dW_hh: (2048, 3200) @ (3200, 512)": ((3200, 2048), True, (3200, 512), False),
    "Elman 512 dW_hh: (512, 3200) @ (3200, 512)": ((3200, 512), True, (3200, 512), False),
    "LSTM 128 dW_hh: (512, 3200) @ (3200, 128)": ((3200, 512), True, (3200, 128), False),
    "readout: (3200, 512) @ (512, 65)": ((3200, 512), False, (65, 512), True),
    "readout dH: (3200, 65) @ (65, 512)": ((3200, 65), False, (65, 512), False),
    "readout dV: (65, 3200) @ (3200, 512)": ((3200, 65), True, (3200, 512), False),
}


def _measure(repeats: int) -> dict:
    import numpy as np
    from threadpoolctl import threadpool_limits

    from bptt import machine
    from bptt.fast import gemm

    threadpool_limits(1)
    rng = np.random.default_rng(0)
    out = {"blas": machine.blas(), "own chosen": machine.own_products(), "rows": {}}
    for name, (sa, ta, sb, tb) in SHAPES.items():
        a = rng.standard_normal(sa, dtype=np.float32)
        b = rng.standard_normal(sb, dtype=np.float32)
        a, b = (a.T if ta else a), (b.T if tb else b)
        c1, c2 = np.empty((a.shape[0], b.shape[1]), np.float32), np.empty((a.shape[0], b.shape[1]), np.float32)
        flops = 2.0 * a.shape[0] * a.shape[1] * b.shape[1]
        own, blas = [], []
        for _ in range(repeats + 2):
            t = time.perf_counter()
            gemm.product(a, b, c1, False)
            own.append(time.perf_counter() - t)
            t = time.perf_counter()
            np.matmul(a, b, out=c2)
            blas.append(time.perf_counter() - t)
        err = float(np.abs(c1 - c2).max() / np.abs(c2).max())
        out["rows"][name] = [flops / statistics.median(own[2:]) / 1e9, flops / statistics.median(blas[2:]) / 1e9, err]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_measure(args.repeats)))
        return 0
    from bptt import machine

    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "BPTT_GEMM")}
    res = {}
    for setting, extra in (("native", {}), ("pinned", {"OPENBLAS_CORETYPE": "Haswell"})):
        cmd = [sys.executable, __file__, "--child", "--repeats", str(args.repeats)]
        done = subprocess.run(cmd, env={**env, **extra}, capture_output=True, text=True, check=True)
        res[setting] = json.loads(done.stdout)
    print(f"{machine.cpu()}; 1 thread; medians of {args.repeats}; GFLOP/s")
    for s in ("native", "pinned"):
        chosen = "bptt's kernel" if res[s]["own chosen"] else "BLAS"
        print(f"{s}: BLAS {res[s]['blas']}; bptt chooses {chosen}")
    print("\n| product | bptt's kernel | OpenBLAS, native | OpenBLAS, Haswell | largest difference |")
    print("| --- | --- | --- | --- | --- |")
    for name in SHAPES:
        n, p = res["native"]["rows"][name], res["pinned"]["rows"][name]
        print(f"| {name} | {n[0]:.1f} / {p[0]:.1f} | {n[1]:.1f} | {p[1]:.1f} | {max(n[2], p[2]):.1e} |")
    print("\n(bptt's kernel: as measured in the native process / in the pinned one)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
