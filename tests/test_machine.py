"""The machine in words: the widest vector instruction set from the CPU's flags, the BLAS
library with its kernel family, a forced OpenBLAS core type said so; the train header and the
bench header carry them."""

import pytest

from bptt import machine


@pytest.mark.parametrize(
    "flags,isa",
    [
        ({"flags": "fpu sse4_2 avx avx2 avx512f avx512bw"}, "AVX-512"),
        ({"flags": "fpu sse4_2 avx avx2 fma"}, "AVX2"),
        ({"flags": "fpu sse4_2"}, "SSE4.2"),
        ({"Features": "fp asimd evtstrm aes"}, "NEON"),
    ],
)
def test_vector_isa_from_the_flags(monkeypatch, flags, isa):
    monkeypatch.setattr(machine, "_cpuinfo", lambda: {"model name": "Some CPU", **flags})
    assert machine.vector_isa() == isa
    assert machine.cpu().startswith(f"Some CPU ({isa}), ")


def test_blas_names_its_kernels_and_a_forced_core_type(monkeypatch):
    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
    text = machine.blas()
    assert "openblas" in text.lower() or "mkl" in text.lower() or text == "no BLAS found"
    assert "OPENBLAS_CORETYPE" not in text
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    assert machine.blas().endswith("(OPENBLAS_CORETYPE=Haswell)")


def test_the_headers_say_it():
    from bptt.bench.harness import _machine
    from bptt.train.runtime import blas_threads

    limiter, words = blas_threads(1)
    limiter.restore_original_limits()
    assert words.startswith("1 BLAS thread (") and machine.vector_isa() in words
    assert "BLAS: " in _machine() and machine.vector_isa() in _machine()
