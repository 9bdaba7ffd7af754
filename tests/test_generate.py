"""Sampling's probabilities (bptt.generate): a temperature near zero picks the most likely
token without NaN or overflow, with and without top-k."""

import warnings

import numpy as np
import pytest

from bptt.generate import _probabilities


@pytest.mark.parametrize("temperature", [1e-320, 5e-309, 1e-300, 1e-3, 1.0, 1e300])
@pytest.mark.parametrize("top_k", [None, 2])
def test_probabilities_stay_finite_at_any_positive_temperature(temperature, top_k):
    logits = np.array([1.5, -2.0, 3.25, 3.0, -np.inf], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (no overflow warning reaches the user)
        p = _probabilities(logits, temperature, top_k)
    assert np.isfinite(p).all() and abs(p.sum() - 1) < 1e-12 and p[4] == 0
    if temperature <= 1e-3:
        assert p[2] == pytest.approx(1.0)  # the most likely token
    if top_k == 2:
        assert p[0] == p[1] == 0
