"""Elementwise activations with derivatives written in terms of their output.

Every backward step in the library multiplies an incoming gradient by f'(a) where a is the
pre-activation. For the functions here f'(a) is a function of y = f(a) alone, so the forward
step caches y and the backward step never recomputes (or stores) the pre-activation:

    tanh:     y' = 1 - y**2
    sigmoid:  y' = y (1 - y)
    relu:     y' = [y > 0]
    identity: y' = 1
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .errors import one_of

__all__ = ["ACTIVATIONS", "Activation", "get_activation", "sigmoid"]


def sigmoid(a: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Logistic function via sigma(a) = (1 + tanh(a / 2)) / 2: one transcendental call,
    no overflow for large |a| (exp(-a) would overflow in float32 for a < -88)."""
    y = np.multiply(a, 0.5, out=out)
    np.tanh(y, out=y)
    y += 1.0
    y *= 0.5
    return y


def _tanh(a: np.ndarray) -> np.ndarray:
    return np.tanh(a)


def _relu(a: np.ndarray) -> np.ndarray:
    return np.maximum(a, 0.0)


def _identity(a: np.ndarray) -> np.ndarray:
    return a


def _d_tanh(y: np.ndarray, g: np.ndarray) -> np.ndarray:
    return g * (1.0 - y * y)


def _d_sigmoid(y: np.ndarray, g: np.ndarray) -> np.ndarray:
    return g * y * (1.0 - y)


def _d_relu(y: np.ndarray, g: np.ndarray) -> np.ndarray:
    return g * (y > 0)


def _d_identity(y: np.ndarray, g: np.ndarray) -> np.ndarray:
    return g


class Activation:
    """An activation f with `backward(y, g) = g * f'(a)` expressed through y = f(a)."""

    def __init__(
        self,
        name: str,
        forward: Callable[[np.ndarray], np.ndarray],
        backward: Callable[[np.ndarray, np.ndarray], np.ndarray],
    ) -> None:
        self.name = name
        self.forward = forward
        self.backward = backward

    def __repr__(self) -> str:
        return f"Activation({self.name!r})"


ACTIVATIONS: dict[str, Activation] = {
    "tanh": Activation("tanh", _tanh, _d_tanh),
    "sigmoid": Activation("sigmoid", sigmoid, _d_sigmoid),
    "relu": Activation("relu", _relu, _d_relu),
    "identity": Activation("identity", _identity, _d_identity),
}


def get_activation(name: str) -> Activation:
    """Look up an activation by name; a ValueError lists the known names."""
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise one_of("activation", name, sorted(ACTIVATIONS)) from None
