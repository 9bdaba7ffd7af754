"""One contender alone in this process: `python -m bptt.bench.memory CELL SIZE NAME THREADS STEPS`
prints {"baseline_mib", "peak_mib", "above_mib"}: resident memory after the imports (and bptt's
compiled kernels loaded from Numba's disk cache, as importing torch loads its libraries), the peak
(VmHWM) after building and STEPS training steps, and their difference."""

from __future__ import annotations

import json
import sys


def _status(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0  # kB -> MiB
    raise RuntimeError(f"{field} not in /proc/self/status")


def main(argv: list[str]) -> int:
    cell, size, name, threads, steps = argv[0], argv[1], argv[2], int(argv[3]), int(argv[4])
    from .harness import _blas_limit, set_threads

    set_threads(threads)
    from .cases import Case
    from .contenders import BUILDERS, case_params

    if name == "torch":
        import torch

        torch.set_num_threads(threads)
    elif name == "jax":
        import jax  # noqa: F401
    elif name == "bptt":  # its compiled kernels, from the disk cache (as torch's import loads its own)
        from ..fast import warm

        warm.ensure(verbose=False)
    case = Case(cell, size)
    x, y = case.data()
    params = case_params(case)
    with _blas_limit(threads):
        base = _status("VmRSS")
        c = BUILDERS[name](case, params, x, y)
        for _ in range(steps):
            c.step()
        peak = _status("VmHWM")
    print(json.dumps({"baseline_mib": base, "peak_mib": peak, "above_mib": peak - base}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
