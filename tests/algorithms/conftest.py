import pytest

import bptt


class _Centred(bptt.Dense):
    """A user's readout that centres its outputs over the batch: each row's output depends on
    every row (a subclass of a row-wise level that is not row-wise itself)."""

    def forward(self, p, x):
        y, cache = super().forward(p, x)
        return y - y.mean(axis=1, keepdims=True), cache

    def backward(self, p, cache, dy, g, need_dx):
        return super().backward(p, cache, dy - dy.mean(axis=1, keepdims=True), g, need_dx)


@pytest.fixture
def centred():
    """The class of a readout that is not row-wise (runs of batch rows must not take it)."""
    return _Centred
