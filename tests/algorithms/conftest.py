import tracemalloc

import pytest

import bptt
from bptt import ops


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


def _allocated_peak(algo, model, params, x, y) -> int:
    """The bytes a step of `algo` allocates at their peak (tracemalloc, over a second call: the
    first plans and loads kernels; the buffer pool emptied between), less the weight-sized
    arrays a step holds whatever its budget (the gradients; the recurrent weights packed forward
    and backward, and their gradient's product)."""
    algo(model, params, x, y)
    ops.release()
    tracemalloc.start()
    try:
        algo(model, params, x, y)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak - sum(v.nbytes for v in params.values()) - 3 * sum(v.nbytes for k, v in params.items() if "W_hh" in k)


@pytest.fixture
def allocated_peak():
    """`_allocated_peak`: what a budgeted step allocates beside its weights, to hold to its budget."""
    return _allocated_peak
