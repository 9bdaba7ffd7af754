"""Benchmarks of the training step against PyTorch and JAX (`bptt bench`)."""

from .cases import Case, all_cases
from .harness import markdown, run_bench

__all__ = ["Case", "all_cases", "markdown", "run_bench"]
