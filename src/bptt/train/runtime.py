"""What a run needs from the process it runs in: BLAS threads, and Ctrl-C."""

from __future__ import annotations

import os
import signal
import threading


def default_threads() -> int:
    """The BLAS thread count a run uses unless told: the cores this process may use, at most 2.
    Measured on the default job (char-LSTM, 2-core machine otherwise idle): 2 threads train
    1.37x faster than 1 (28.4K vs 20.8K tokens/s); more than 2 were not measured. OpenBLAS
    threads busy-wait, so on a machine shared with another busy process use --threads 1."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        n = os.cpu_count() or 1
    return max(1, min(2, n))


def blas_threads(n: int):
    """Context manager limiting BLAS threads to n (threadpoolctl), and a description."""
    from threadpoolctl import threadpool_limits

    from .. import machine

    limiter = threadpool_limits(limits=n, user_api="blas")
    return limiter, f"{n} BLAS thread{'s' if n > 1 else ''} ({machine.blas()}); {machine.cpu()}"


class Interrupt:
    """First Ctrl-C: ask the loop to stop after the current step. Second: stop now."""

    def __init__(self) -> None:
        self.requested = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False
