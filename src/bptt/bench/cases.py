"""The benchmark cases: one training step (forward, cross-entropy at every step, full BPTT) of a
token-input recurrent network with a linear readout, float32.

FLOP count (matrix products only, dense equivalent; the token input is a gather and counts 0):
forward, each step: h W_hh^T (2 B G H) and the readout (2 B H V); backward: two products of the
same size for each (the input gradient and the weight gradient), so

    flops = 3 * 2 * T * B * (G * H * H + H * V),    G = 1 (Elman), 3 (GRU), 4 (LSTM).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import one_of

GATES = {"elman": 1, "gru": 3, "lstm": 4}
SIZES = {  # name: (D = vocabulary, H, B, T)
    "small": (65, 128, 32, 100),
    "medium": (65, 512, 32, 100),
    "long": (16, 128, 16, 1000),
}


@dataclass(frozen=True)
class Case:
    cell: str
    size: str

    @property
    def dims(self) -> tuple[int, int, int, int]:
        return SIZES[self.size]

    @property
    def name(self) -> str:
        D, H, B, T = self.dims
        return f"{self.cell} {self.size} (D={D}, H={H}, B={B}, T={T})"

    @property
    def tokens(self) -> int:
        _, _, B, T = self.dims
        return B * T

    @property
    def flops(self) -> float:
        D, H, B, T = self.dims
        return 6.0 * T * B * (GATES[self.cell] * H * H + H * D)

    def data(self, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) token ids (T, B): the same for every contender."""
        D, _, B, T = self.dims
        rng = np.random.default_rng(seed)
        x = rng.integers(0, D, size=(T, B))
        return x, np.roll(x, -1, axis=0)


def all_cases(cells=("elman", "gru", "lstm"), sizes=("small", "medium", "long")) -> list[Case]:
    for c in cells:
        if c not in GATES:
            raise one_of("--cells", c, GATES)
    for s in sizes:
        if s not in SIZES:
            raise one_of("--sizes", s, SIZES)
    return [Case(c, s) for s in sizes for c in cells]
