"""Spike-train generators and encoders: shapes, labels that follow from the spikes, rates as
asked, seeded, and mistakes named."""

import numpy as np
import pytest

from bptt.data import spikes
from bptt.errors import BpttError


def test_cue_accumulation_labels_are_the_majority_side_of_the_cues():
    rng = np.random.default_rng(0)
    task = spikes.cue_accumulation(rng, 400, cues=7, cue_steps=10, gap_steps=5, delay=20, recall=15, channels=10)
    T = 7 * 15 + 20 + 15
    assert task.x.shape == (T, 400, 40) and task.x.dtype == np.float32 and task.window == 15
    left, right = task.x[:, :, :10].sum(axis=(0, 2)), task.x[:, :, 10:20].sum(axis=(0, 2))
    # a cue is 10 steps x 10 channels at 0.4: 40 spikes; the side with more spikes is the label nearly always
    agree = np.mean((right > left) == (task.y == 1))
    assert agree > 0.95, agree
    assert 0.4 < task.y.mean() < 0.6
    recall = task.x[-15:, :, 20:30].mean()
    noise = task.x[:, :, 30:].mean()
    assert abs(recall - 0.4) < 0.02 and abs(noise - 0.1) < 0.01
    assert task.x[: T - 15, :, 20:30].sum() == 0  # the recall cue only at the end
    again = spikes.cue_accumulation(np.random.default_rng(0), 400, delay=20)
    np.testing.assert_array_equal(again.x, task.x)


def test_store_recall_asks_for_the_stored_bit():
    rng = np.random.default_rng(1)
    task = spikes.store_recall(rng, 300, steps=60, bit_steps=5, recall=10, channels=5, rate=1.0, noise_rate=0.0)
    x, y = task.x, task.y
    assert x.shape == (70, 300, 25)
    for b in range(300):
        store = np.flatnonzero(x[:60, b, 10:15].any(axis=1))
        assert len(store) == 5 and store[0] % 5 == 0 and store[0] < 30  # one bit, in the first half
        bit = int(x[store[0], b, 5:10].any())
        assert bit == y[b]
    assert x[60:, :, 15:20].all() and not x[:60, :, 15:20].any()


def test_encoders():
    rng = np.random.default_rng(2)
    v = rng.random((3, 50, 4))
    r = spikes.rate_encode(v, rng, steps=400)
    assert r.shape == (1200, 50, 4)
    np.testing.assert_allclose(r.reshape(3, 400, 50, 4).mean(axis=1), v, atol=0.1)
    lat = spikes.latency_encode(np.array([[[1.0, 0.5, 0.0]]]), steps=5)
    assert lat.shape == (5, 1, 3)
    np.testing.assert_array_equal(lat[:, 0].T, [[1, 0, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 0]])


def test_mistakes_are_named():
    rng = np.random.default_rng(0)
    with pytest.raises(BpttError, match="cues: expected an odd number"):
        spikes.cue_accumulation(rng, 4, cues=6)
    with pytest.raises(BpttError, match=r"cue_rate: expected a probability per step in \[0, 1\], received 1.5"):
        spikes.cue_accumulation(rng, 4, cue_rate=1.5)
    with pytest.raises(BpttError, match=r"values: expected values in \[0, 1\]"):
        spikes.rate_encode(np.full((2, 2, 2), 2.0), rng)
    with pytest.raises(BpttError, match=r"values: expected a \(T, B, D\) array"):
        spikes.latency_encode(np.zeros((2, 2)), 3)
