"""Levels a model is composed of: feed-forward levels applied at every time step, and recurrent
levels (one cell, or two for a bidirectional layer) whose time loop a gradient algorithm runs.

A level is declared with its output size only; `Model` builds it with its input size and a name,
which prefixes its parameters: 'lstm1.W_ih', 'lstm1.reverse.W_hh', 'dense2.W'.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from . import _checks, ops
from .activations import get_activation
from .cells import Cell, cell_class, make_cell
from .cells.base import Params
from .cells.recurrent_dropout import RecurrentDropout, keep_mask
from .cells.zoneout import Zoneout
from .errors import BpttError


class Level:
    """Common parts: a name, sizes, and the map from local to global parameter names."""

    kind: str = "level"
    recurrent: bool = False
    # whether each batch row's outputs and gradients depend on that row alone, so that runs of
    # rows may go through the level apart (memory-budgeted BPTT's runs of rows). A class says so
    # itself: a subclass (a user's Dense that looks across the batch) is not row-wise until it
    # sets it again (__init_subclass__)
    rowwise: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "rowwise" not in cls.__dict__:
            cls.rowwise = False

    def __init__(self, size: int, name: str | None = None) -> None:
        self.size = _checks.positive_int(f"{self.kind} size", size)
        self.name = name
        self.input_size: int | None = None

    def build(self, input_size: int, name: str, tokens: bool) -> None:
        self.input_size = input_size
        self.name = self.name or name

    @property
    def output_size(self) -> int:
        return self.size

    def local_shapes(self) -> dict[str, tuple[int, ...]]:
        raise NotImplementedError

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {f"{self.name}.{k}": s for k, s in self.local_shapes().items()}

    def sub(self, params: Params, prefix: str = "") -> Params:
        """The level's parameters under their local names (same arrays, no copies)."""
        keys = self.__dict__.setdefault("_sub_keys", {})  # (memory-budgeted BPTT asks thousands of times a step)
        pairs = keys.get((self.name, prefix))
        if pairs is None:
            head = f"{self.name}.{prefix}"
            pairs = keys[self.name, prefix] = [(k, head + k) for k in self._local_names(prefix)]
        return {k: params[full] for k, full in pairs}

    def _local_names(self, prefix: str) -> list[str]:
        return list(self.local_shapes())

    def forward_jvp(self, p: Params, cache: Any, dx: np.ndarray) -> np.ndarray:
        """The tangent of a feed-forward level's output given its input's tangent dx (shaped as
        its input), the parameters held, at the point its forward `cache` records (bptt.jvp)."""
        raise NotImplementedError(
            f"{type(self).__name__}.forward_jvp: this level has no forward-mode product; implement "
            "forward_jvp(p, cache, dx) -> dy to place it between recurrent levels in bptt.jvp"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.size}, name={self.name!r})"


class Embedding(Level):
    """Token lookup: y[t, b] = W[x[t, b]], W (vocab, size). Its gradient is a scatter-add of
    dy into the looked-up rows; no one-hot matrix is ever formed."""

    rowwise = True

    kind = "embed"

    def __init__(self, size: int, name: str | None = None) -> None:
        super().__init__(size, name)
        self.readout: Dense | None = None  # a Dense level whose W this W is (Dense(V, tie=...))

    def build(self, input_size: int, name: str, tokens: bool) -> None:
        if not tokens:
            raise BpttError(
                "Embedding: expected integer token inputs (Model(..., tokens=True)), received a model with float inputs"
            )
        super().build(input_size, name, tokens)

    def local_shapes(self):
        return {"W": (self.input_size, self.size)}

    def init_params(self, rng: np.random.Generator, dtype: Any) -> Params:
        if self.readout is not None:  # tied: drawn as the readout's own weights would be (torch's Linear)
            k = 1.0 / np.sqrt(self.size)
            return {"W": rng.uniform(-k, k, size=(self.input_size, self.size)).astype(dtype)}
        return {"W": rng.standard_normal((self.input_size, self.size)).astype(dtype)}

    def forward(self, p: Params, x: np.ndarray):
        return p["W"][x], x  # (T, B, E); cache: the tokens

    def backward(self, p: Params, x: np.ndarray, dy: np.ndarray, g: Params, need_dx: bool):
        g["W"] += ops.index_sums(x.reshape(-1), dy.reshape(-1, self.size), g["W"].shape[0])  # a gather's gradient
        return None


class Dense(Level):
    """Time-distributed affine map y = f(x W^T + b), W (size, input_size), applied to all
    (T, B) positions as one matrix product. With f = identity and the model's last level this
    is the readout W (hidden -> output) of the classic notation."""

    rowwise = True

    kind = "dense"

    def __init__(
        self, size: int, activation: str = "identity", name: str | None = None, tie: Embedding | None = None
    ) -> None:
        super().__init__(size, name)
        self.activation = get_activation(activation)
        if tie is not None and not isinstance(tie, Embedding):
            raise BpttError(f"Dense tie: expected an Embedding level of the same model, received {type(tie).__name__}")
        self.tie = tie  # weight tying (Press & Wolf 2017; Inan et al. 2017): W is the embedding's (V, E) table

    def build(self, input_size: int, name: str, tokens: bool) -> None:
        if tokens:
            raise BpttError(
                "Dense: expected float inputs (a model on integer tokens starts with an "
                "Embedding or a Recurrent level), received a model with tokens=True as its input"
            )
        super().build(input_size, name, tokens)
        if self.tie is not None:
            e = self.tie
            if e.input_size is None or (e.input_size, e.size) != (self.size, input_size):
                got = "an embedding not built before it" if e.input_size is None else f"({e.input_size}, {e.size})"
                raise BpttError(
                    f"Dense tie: expected an earlier Embedding of shape ({self.size}, {input_size}) (the readout's "
                    f"outputs by its inputs), received {got}"
                )
            e.readout = self

    def local_shapes(self):
        if self.tie is not None:  # W is the embedding's parameter, counted (and updated) there once
            return {"b": (self.size,)}
        return {"W": (self.size, self.input_size), "b": (self.size,)}

    def sub(self, params: Params, prefix: str = "") -> Params:
        """Its parameters under local names; a tied level's W is the embedding's array (also in a
        dict of gradients, where both levels add to it)."""
        p = super().sub(params, prefix)
        if self.tie is not None:
            p["W"] = params[f"{self.tie.name}.W"]
        return p

    def init_params(self, rng: np.random.Generator, dtype: Any) -> Params:
        k = 1.0 / np.sqrt(self.input_size)  # torch.nn.Linear's default
        return {n: rng.uniform(-k, k, size=s).astype(dtype) for n, s in self.local_shapes().items()}

    def forward(self, p: Params, x: np.ndarray):
        T, B, D = x.shape
        a = ops.matmul(x.reshape(T * B, D), p["W"].T)  # (TB, size)
        a += p["b"]
        y = self.activation.forward(a).reshape(T, B, -1)
        return y, (x, y)

    def backward(self, p: Params, cache, dy: np.ndarray, g: Params, need_dx: bool):
        x, y = cache
        T, B, D = x.shape
        d = self.activation.backward(y, dy).reshape(T * B, -1)  # (TB, size)
        weight = lambda: ops.matmul_add(d.T, x.reshape(T * B, D), g["W"])  # noqa: E731
        dx = ops.both(weight, lambda: ops.matmul(d, p["W"]).reshape(T, B, D))[1] if need_dx else weight()
        g["b"] += d.sum(axis=0)
        return dx

    def forward_jvp(self, p: Params, cache, dx: np.ndarray) -> np.ndarray:
        """dy = f'(.) * (dx W^T)."""
        return self.activation.backward(cache[1], dx @ p["W"].T)

    def __repr__(self) -> str:
        tie = f", tie={self.tie.name!r}" if self.tie is not None else ""
        return f"Dense({self.size}, activation={self.activation.name!r}, name={self.name!r}{tie})"


class _Passing(Level):
    """A level without parameters whose output has its input's size."""

    @property
    def output_size(self) -> int:
        return self.input_size if self.input_size is not None else self.size

    def local_shapes(self):
        return {}

    def init_params(self, rng: np.random.Generator, dtype: Any) -> Params:
        return {}

    def build(self, input_size: int, name: str, tokens: bool) -> None:
        if tokens:  # (it would pass token ids through, or scale them by its masks)
            raise BpttError(
                f"{type(self).__name__}: expected float inputs (a level after an Embedding or a Recurrent level), "
                "received a model with tokens=True as its input"
            )
        super().build(input_size, name, tokens)


class RateRegularizer(_Passing):
    """Firing-rate regularisation of the level below (spikes), as spiking networks are trained
    (Bellec et al. 2020): its output is its input unchanged, and its backward adds the gradient
    of R = strength/2 sum_j (rate_j - target)^2, rate_j the mean of unit j's output over the
    (T, B) positions of the segment it sees (the whole sequence in full BPTT), so that units
    are pulled toward `target` spikes per step. R is not part of the loss a gradient algorithm
    reports (that stays the task's); `penalty(y)` gives it."""

    kind = "rate"

    def __init__(self, target: float = 0.01, strength: float = 1.0, name: str | None = None) -> None:
        super().__init__(1, name)
        for key, v in (("target", target), ("strength", strength)):
            if not np.isfinite(_checks.real(key, v, "a finite number >= 0")) or v < 0:
                raise BpttError(f"{key}: expected a finite number >= 0, received {v!r}")
        if target > 1:
            raise BpttError(f"target: expected spikes per step in [0, 1], received {target!r}")
        self.target, self.strength = float(target), float(strength)

    def penalty(self, y: np.ndarray) -> float:
        rate = y.reshape(-1, y.shape[-1]).mean(axis=0)
        return 0.5 * self.strength * float(((rate - self.target) ** 2).sum())

    def forward(self, p: Params, x: np.ndarray):
        return x, x

    def backward(self, p: Params, x: np.ndarray, dy: np.ndarray, g: Params, need_dx: bool):
        n = x.shape[0] * x.shape[1]
        rate = x.reshape(n, -1).mean(axis=0)  # (H,)
        return dy + (self.strength / n) * (rate - self.target).astype(dy.dtype)

    def forward_jvp(self, p: Params, x: np.ndarray, dx: np.ndarray) -> np.ndarray:
        """The output is the input: its tangent too (the penalty is not part of the output)."""
        return dx.copy()

    def __repr__(self) -> str:
        return f"RateRegularizer(target={self.target!r}, strength={self.strength!r}, name={self.name!r})"


class Dropout(_Passing):
    """Variational dropout of the level below's outputs (Gal & Ghahramani 2016): while a batch
    is trained, sequence b keeps unit j with probability 1 - rate, the same at every time step,
    its kept values scaled by 1 / (1 - rate); otherwise (no masks drawn: evaluation, sampling,
    forecasting) the level is the identity. `draw(rng, B, dtype)` draws a batch's masks and
    `clear()` drops them (Model.dropout does both around a step). With its masks held the level
    is linear, so every gradient algorithm's gradient is exactly that of the masked network,
    and a segment run again (memory-budgeted BPTT) meets the same masks."""

    kind = "dropout"

    def __init__(self, rate: float, name: str | None = None) -> None:
        super().__init__(1, name)
        if not 0 <= _checks.real("dropout rate", rate, "a number in [0, 1)") < 1:
            raise BpttError(f"dropout rate: expected a number in [0, 1), received {rate!r}")
        self.rate = float(rate)
        self.mask: np.ndarray | None = None  # (B, D): 0 or 1 / (1 - rate)

    def draw(self, rng: np.random.Generator, batch: int, dtype: Any) -> None:
        self.mask = keep_mask(rng, batch, self.output_size, self.rate, dtype)

    def clear(self) -> None:
        self.mask = None

    @property
    def held(self) -> bool:
        """Whether masks are held (within Model.dropout)."""
        return self.mask is not None

    @property
    def rowwise(self) -> bool:  # type: ignore[override]
        return self.mask is None  # (held masks are the whole batch's)

    def _apply(self, x: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        if mask is None:
            return x
        if x.shape[-2:] != mask.shape[-2:]:
            raise BpttError(
                f"{self.name}: expected a batch of {mask.shape[-2]} sequences (its masks), received shape {x.shape}"
            )
        return x * mask

    def forward(self, p: Params, x: np.ndarray):
        # the cache is the masks the steps met, (T, B, D) (a broadcast view): a tape kept past
        # its batch (TBPTT with k2 > k1) goes back through that batch's masks, not those held now
        y = self._apply(x, self.mask)
        return y, None if self.mask is None else np.broadcast_to(self.mask, x.shape)

    def backward(self, p: Params, cache: Any, dy: np.ndarray, g: Params, need_dx: bool):
        return self._apply(dy, cache)

    def forward_jvp(self, p: Params, cache: Any, dx: np.ndarray) -> np.ndarray:
        return self._apply(dx, cache).copy()

    def __repr__(self) -> str:
        return f"Dropout({self.rate!r}, name={self.name!r})"


class Direction(NamedTuple):
    key: str  # the state's key in a model state dict: 'lstm1' or 'lstm1.reverse'
    prefix: str  # parameter prefix within the level: '' or 'reverse.'
    reverse: bool
    cell: Cell


class Recurrent(Level):
    """A recurrent layer: one cell ('elman', 'jordan', 'gru', 'lstm'), or two for a
    bidirectional layer (forward and time-reversed, outputs concatenated [fwd, rev] as in
    torch). With `learn_init`, the initial state is a learned parameter '<name>.h0' (and
    '.c0' for LSTM) broadcast over the batch; otherwise it is zeros unless given."""

    rowwise = True

    recurrent = True

    def __init__(
        self,
        cell: str,
        size: int,
        bidirectional: bool = False,
        learn_init: bool = False,
        name: str | None = None,
        recurrent_dropout: float = 0.0,
        zoneout: float = 0.0,
        zoneout_cell: float = 0.0,
        **cell_options: Any,
    ) -> None:
        self.cell_type = cell_class(cell)  # a name, or a Cell subclass of one's own
        self.kind = self.cell_type.kind
        super().__init__(size, name)
        self.bidirectional = bool(bidirectional)
        self.learn_init = bool(learn_init)
        self.recurrent_dropout = recurrent_dropout  # (cells/recurrent_dropout.py; checked when built)
        self.zoneout = {"h": zoneout, "c": zoneout_cell}  # (cells/zoneout.py; checked when built)
        self.cell_options = cell_options
        self.directions: list[Direction] = []

    def build(self, input_size: int, name: str, tokens: bool) -> None:
        super().build(input_size, name, tokens)
        dirs = [("", False)] + ([("reverse.", True)] if self.bidirectional else [])

        zoned = {f: z for f, z in self.zoneout.items() if z}
        if zoned and self.recurrent_dropout:
            raise BpttError(
                f"{name}: expected recurrent dropout or zoneout, received both ({self.recurrent_dropout}, {zoned})"
            )

        def cell() -> Any:
            c = make_cell(self.cell_type, input_size, self.size, **self.cell_options)
            if zoned:
                return Zoneout(c, zoned)
            return RecurrentDropout(c, self.recurrent_dropout) if self.recurrent_dropout else c

        self.directions = [Direction(self.name + ("." + p[:-1] if p else ""), p, rev, cell()) for p, rev in dirs]

    @property
    def output_size(self) -> int:
        return sum(d.cell.output_size for d in self.directions) if self.directions else self.size

    def local_shapes(self):
        shapes = {}
        for d in self.directions:
            shapes.update({d.prefix + k: s for k, s in d.cell.param_shapes().items()})
            if self.learn_init:
                shapes.update({f"{d.prefix}{f}0": (n,) for f, n in d.cell.state_sizes().items()})
        return shapes

    def _local_names(self, prefix: str) -> list[str]:
        d = next(d for d in self.directions if d.prefix == prefix)
        names = list(d.cell.param_shapes())
        if self.learn_init:
            names += [f"{f}0" for f in d.cell.state_sizes()]
        return names

    def init_params(self, rng: np.random.Generator, dtype: Any) -> Params:
        p = {}
        for d in self.directions:
            p.update({d.prefix + k: v for k, v in d.cell.init_params(rng, dtype).items()})
            if self.learn_init:
                p.update({f"{d.prefix}{f}0": np.zeros(n, dtype) for f, n in d.cell.state_sizes().items()})
        return p

    def __repr__(self) -> str:
        opts = "".join(f", {k}={v!r}" for k, v in self.cell_options.items())
        if self.recurrent_dropout:
            opts += f", recurrent_dropout={self.recurrent_dropout!r}"
        opts += "".join(f", {k}={v!r}" for k, v in zip(("zoneout", "zoneout_cell"), self.zoneout.values()) if v)
        return (
            f"Recurrent({self.kind!r}, {self.size}, bidirectional={self.bidirectional}, "
            f"learn_init={self.learn_init}{opts}, name={self.name!r})"
        )


def rnn(cell: str, size: int, layers: int = 1, bidirectional: bool = False, **options: Any) -> list[Recurrent]:
    """`layers` stacked recurrent levels, like torch.nn.RNN/GRU/LSTM(num_layers=layers)."""
    n = _checks.positive_int("layers", layers)
    return [Recurrent(cell, size, bidirectional=bidirectional, **options) for _ in range(n)]
