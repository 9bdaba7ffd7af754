"""The machine a run or a benchmark runs on, in words: the CPU, its widest vector instructions,
and the BLAS library NumPy calls with the kernels it chose (OpenBLAS names its kernel family,
e.g. Haswell for AVX2 or SkylakeX for AVX-512; OPENBLAS_CORETYPE can force one). Stated in
`bptt train`'s header and config.json and in every `bptt bench` header, since timings depend
on them."""

from __future__ import annotations

import importlib.util
import os
import platform


def _cpuinfo() -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "flags", "Features", "vendor_id", "cpu family") and key not in out:
                    out[key] = value.strip()
    except OSError:
        pass
    return out


def vector_isa() -> str:
    """The widest vector instruction set the CPU reports: AVX-512, AVX2, AVX, SSE4.2, NEON/ASIMD,
    or the machine's name where none is known."""
    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    for name, flag in (("AVX-512", "avx512f"), ("AVX2", "avx2"), ("AVX", "avx"), ("SSE4.2", "sse4_2")):
        if flag in flags:
            return name
    if flags & {"asimd", "neon"}:
        return "NEON"
    return platform.machine() or "unknown"


def avx512_on_256_bit_units() -> bool:
    """Whether the CPU runs its AVX-512 instructions on 256-bit units, two halves each (AMD Zen
    4: family 25 with AVX-512), so that 16-float vectors do no more work a cycle than 8-float
    ones. (Zen 5, family 26, has full-width units in its server parts.)"""
    info = _cpuinfo()
    return vector_isa() == "AVX-512" and info.get("vendor_id") == "AuthenticAMD" and info.get("cpu family") == "25"


def lanes() -> int:
    """The float32 kernels' vector width in floats: BPTT_LANES (8 or 16) where it is set, else
    16 where the CPU has AVX-512 and 8 elsewhere. A BPTT_LANES of another value is one line."""
    given = os.environ.get("BPTT_LANES", "")
    if not given:
        return 16 if vector_isa() == "AVX-512" else 8
    if given.strip() not in ("8", "16"):
        from .errors import BpttError

        raise BpttError(f"BPTT_LANES: expected 8 or 16, received {given!r}")
    return int(given)


# OpenBLAS's kernel families with AVX-512 (threadpoolctl's "architecture", lower case)
_AVX512_BLAS = ("skylakex", "cooperlake", "sapphirerapids")


def numpy_openblas() -> list[dict]:
    """threadpoolctl's records of NumPy's own OpenBLAS (the library in numpy/ or numpy.libs/
    beside it; another OpenBLAS in the process, scipy's or torch's, is not it): filepath,
    architecture, ...; [] where NumPy links another BLAS."""
    import numpy as np
    from threadpoolctl import threadpool_info

    home = os.path.realpath(os.path.dirname(np.__file__))
    return [
        i
        for i in threadpool_info()
        if i.get("internal_api") == "openblas" and os.path.realpath(i.get("filepath") or "").startswith(home)
    ]


def _numpy_blas_family() -> str | None:
    """The kernel family of NumPy's OpenBLAS (e.g. 'haswell'), or None where NumPy's BLAS is
    another library or does not say."""
    for i in numpy_openblas():
        if i.get("architecture"):
            return str(i["architecture"]).lower()
    return None


def fast_mode() -> str:
    """BPTT_FAST (or BPTT_KERNELS, its earlier name) as given, lower case: bptt.fast.switch."""
    return (os.environ.get("BPTT_FAST") or os.environ.get("BPTT_KERNELS") or "").strip().lower()


def fast_off() -> bool:
    """Whether BPTT_FAST turns bptt's float32 kernels off (0, off, numpy, no, false)."""
    return fast_mode() in ("0", "off", "numpy", "no", "false")


def own_products() -> bool:
    """Whether a step's big float32 products (readouts, weight gradients; bptt.fast.pool) go to
    bptt's own packed kernel instead of NumPy's BLAS (never where the kernels are off:
    BPTT_FAST=0, or no Numba). BPTT_GEMM=own or blas where it is set;
    else own where the kernel's vectors are AVX-512's 16 floats on full-width units and NumPy's
    OpenBLAS runs a kernel family without AVX-512 (OPENBLAS_CORETYPE=Haswell, or a build that
    lacks them): measured on an AVX-512 Xeon, one thread, the products of the benchmark steps
    ran 1.2-1.8x faster in bptt's kernel than in OpenBLAS's Haswell kernels, and 0.75-0.8x as
    fast as in its SkylakeX kernels. On AMD Zen 4 (AVX-512 on 256-bit units) OpenBLAS's Haswell
    kernels are as wide as the CPU's units: whole steps with them under the pin took 0.96-0.98x
    the time with bptt's on one thread, 0.97-1.02x on two, so there NumPy's BLAS keeps them.
    A BPTT_GEMM of another value is one line."""
    given = os.environ.get("BPTT_GEMM", "").strip().lower()
    if given not in ("", "auto", "own", "blas"):
        from .errors import BpttError

        raise BpttError(f"BPTT_GEMM: expected own, blas or auto, received {os.environ['BPTT_GEMM']!r}")
    if fast_off() or importlib.util.find_spec("numba") is None:  # (no kernels: NumPy's BLAS)
        return False
    if given in ("own", "blas"):
        return given == "own"
    family = _numpy_blas_family()
    wide = vector_isa() == "AVX-512" and lanes() == 16 and not avx512_on_256_bit_units()
    return wide and family is not None and family not in _AVX512_BLAS


def cpu() -> str:
    """'<model> (<vector ISA>), <n> CPUs'."""
    model = _cpuinfo().get("model name") or platform.processor() or platform.machine() or "unknown CPU"
    return f"{model} ({vector_isa()}), {os.cpu_count()} CPUs"


def blas() -> str:
    """NumPy's BLAS: library, version and kernel family (threadpoolctl), e.g. 'openblas 0.3.31,
    Haswell kernels'; with OPENBLAS_CORETYPE set, said so."""
    from threadpoolctl import threadpool_info

    libs = []
    for i in threadpool_info():
        if i.get("user_api") != "blas":
            continue
        words = f"{i.get('internal_api', '?')} {i.get('version') or ''}".strip()
        if i.get("architecture"):
            words += f", {i['architecture']} kernels"
        libs.append(words)
    forced = os.environ.get("OPENBLAS_CORETYPE")
    text = "; ".join(sorted(set(libs))) or "no BLAS found"
    return text + (f" (OPENBLAS_CORETYPE={forced})" if forced else "")
