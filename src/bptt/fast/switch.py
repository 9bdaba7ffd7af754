"""Whether the compiled kernels (and, within them, the whole scans) are used: BPTT_FAST in the
environment, `bptt.fast.use(...)` in code.

    BPTT_FAST=0      nothing of bptt.fast: the NumPy reference everywhere (also: off, numpy)
    BPTT_FAST=steps  the per-step kernels with Python time loops (no whole scans)

(BPTT_KERNELS, the earlier name, is read too.)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ..machine import fast_mode, fast_off

MODE = fast_mode()
OFF = fast_off()
_kernels = not OFF
_scans = MODE != "steps"


def kernels_on() -> bool:
    return _kernels


def scans_on() -> bool:
    return _kernels and _scans


@contextmanager
def use(on: bool, scans: bool | None = None) -> Iterator[None]:
    """Within the block, the float32 kernels on or off (off: the cells' NumPy code, as with
    BPTT_FAST=0), and with `scans` the whole compiled scans within them (tests compare paths)."""
    global _kernels, _scans
    old = _kernels, _scans
    _kernels = bool(on)
    _scans = old[1] if scans is None else bool(scans)
    try:
        yield
    finally:
        _kernels, _scans = old
