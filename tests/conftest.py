"""Test settings: one BLAS thread (OpenBLAS threads busy-wait and slow down by 10-50x when
another process holds a core), and torch on one thread when the reference is used."""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

threadpool_limits(1)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
