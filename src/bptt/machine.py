"""The machine a run or a benchmark runs on, in words: the CPU, its widest vector instructions,
and the BLAS library NumPy calls with the kernels it chose (OpenBLAS names its kernel family,
e.g. Haswell for AVX2 or SkylakeX for AVX-512; OPENBLAS_CORETYPE can force one). Stated in
`bptt train`'s header and config.json and in every `bptt bench` header, since timings depend
on them."""

from __future__ import annotations

import os
import platform


def _cpuinfo() -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "flags", "Features") and key not in out:
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
