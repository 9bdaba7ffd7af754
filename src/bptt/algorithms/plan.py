"""Planning BPTT under a memory budget: which states to store, which steps to recompute.

Full BPTT keeps every step's caches (what its backward step needs). With less memory, some
steps' starting states are stored instead ("checkpoints") and the steps after them are run
forward again when their backward steps come. The planner gives, for T steps, a budget and the
model's real storage, the plan with the fewest forward steps. Every plan is a tree over time
ranges, executed right to left (bptt.algorithms.budget):

- `Leaf(a, b)`: from the state at a, run steps a .. b-1 forward keeping their caches, then
  backpropagate through them (memory: the segment's caches).
- `Split(a, y, b, right, left)`: from the state at a, run forward to y without caches; keep the
  state at y if `store` (a checkpoint); then the plan `right` for [y, b), then `left` for
  [a, y). Where `right` is a leaf, it is recorded straight after the advance and y need not be
  stored (`store=False`).

Costs are counted in forward steps (one step of the whole model at one time step): full BPTT
runs T; a plan runs T + its recomputations.

Policies.
- `revolve` (the default): hidden-state checkpointing with the binomial optimum of Griewank
  (1992) and Griewank & Walther (2000, "Algorithm 799: revolve"): every step is recorded alone
  right before its backward step, from a stored state; with s states held at once (the initial
  one included) and l steps, the fewest forward advances is
      t(l, s) = r l - C(s + r, s - 1),   r the integer with C(s + r - 1, s) < l <= C(s + r, s)
  (t(l, 1) = l (l - 1) / 2), so the plan runs t(l, s) + l forward steps in all. The first
  checkpoint goes to m = max(C(s + r - 2, s), l - C(s + r - 1, s - 1)) (clipped to 1 .. l-1),
  an optimal split (checked against the recursion in the tests).
- `mixed`: stored states and recorded segments of any length where each pays best (the idea of
  Gruslys et al. 2016, "Memory-efficient backpropagation through time", BPTT-MSM). At depth d
  (d states stored), memory M - d h is left and a segment of up to L_d steps can be recorded
  whole (f + L_d c <= M - d h). The fewest forward steps C(t, d) for t steps:
      C(t, d) = t                                                  if t <= L_d
              = min( t + C(t - L_d, d),                            # advance, record the last L_d
                     min_y  y + C(t - y, d + 1) + C(y, d) )        # store the state at y
  solved by dynamic programming (the tests check it against exhaustive search on small T).
  Among plans with the fewest forward steps it takes one with the fewest runs (recorded
  segments and advances), since each run has a fixed cost; and it is never worse than
  segments of one length with the state stored at each (LSTM 128, T = 1000, at 4% of full
  BPTT's memory: 34 segments of 30 steps, 1970 forward steps; ties had left 44 segments of
  about 23 steps).
  NOTICE: patents US 11,256,990 B2 and EP 3446260 B1 (filed 2017 on Gruslys et al.'s method)
  claim choosing what to store during BPTT from a memory allocation. Griewank's binomial
  checkpointing (1992), which the default follows, is older published work. This mode is
  opt-in; users can judge for their jurisdiction.

Storage (`Storage`) is measured on the model in use: bytes of the carried state (h), of one
step's caches (c) and of a recorded segment's fixed part (f).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Union

import numpy as np

from ..errors import BpttError, one_of

POLICIES = ("revolve", "mixed")


@dataclass(frozen=True)
class Storage:
    """Bytes of what a plan stores, measured on the model: a carried state (all levels; its
    arrays, their Python objects and the executor's entries for it: budget.stored_bytes),
    one recorded step's caches, and a recorded segment's fixed part; and what an advance (a
    forward run for its final state alone) holds per step while it runs."""

    state: int
    step: int
    segment: int = 0
    advance: int = 0

    def leaf(self, n: int) -> int:
        """Bytes of a recorded segment of n steps."""
        return self.segment + n * self.step if n else 0


@dataclass(frozen=True)
class Leaf:
    a: int
    b: int


@dataclass(frozen=True)
class Split:
    a: int
    y: int
    b: int
    store: bool
    right: Node
    left: Node | None  # None: y == a (nothing before the right part)


@dataclass(frozen=True)
class Revolve:
    """The revolve plan of [a, b) holding k states (the one at a included), expanded on demand
    (`expand`), so that planning any T is immediate."""

    a: int
    b: int
    k: int


Node = Union[Leaf, Split, Revolve]


def expand(node: Node) -> Leaf | Split:
    """A node as a Leaf or a Split (a revolve node's optimal first checkpoint)."""
    if not isinstance(node, Revolve):
        return node
    a, b, k = node.a, node.b, node.k
    if b - a == 1:
        return Leaf(a, b)
    y = b - 1 if k == 1 else a + revolve_split(b - a, k)
    store = b - y > 1
    return Split(a, y, b, store, Revolve(y, b, k - 1 if store else k), Revolve(a, y, k))


@dataclass(frozen=True)
class Plan:
    T: int
    policy: str  # 'full', 'revolve' or 'mixed'
    root: Node
    forward_steps: int  # in all, T of them the recorded ones
    peak_bytes: int  # stored states and caches at the worst moment (the initial state not counted)
    states: int  # states stored at once at most (the initial one not counted)
    storage: Storage
    # whether the buffers of its longest recorded segment may stay for the whole walk (the
    # executor then keeps them from one segment and one step to the next): every segment fits
    # the peak beside them with the states stored while it runs (true of full BPTT, revolve and
    # segments of one length)
    keep: bool = True

    @property
    def recomputed(self) -> int:
        return self.forward_steps - self.T

    def describe(self) -> str:
        return (
            f"{self.policy}: {self.forward_steps} forward steps for {self.T} ({self.forward_steps / self.T:.3f} per step), "
            f"peak {_mib(self.peak_bytes)} in {self.states} stored states and recorded caches"
        )


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


# ---- revolve -----------------------------------------------------------------------------------
def _beta(s: int, r: int) -> int:
    return math.comb(s + r, s) if s >= 0 and r >= 0 else 0


def _reps(l: int, s: int) -> int:
    """The repetition number r: C(s + r - 1, s) < l <= C(s + r, s)."""
    r = 0
    while _beta(s, r) < l:
        r += 1
    return r


def revolve_advances(l: int, s: int) -> int:
    """Griewank's t(l, s): the fewest forward advances (without recording) that reverse l steps
    holding s states at once (the first one included), each step recorded once before its
    backward step."""
    if l < 1 or s < 1:
        raise BpttError(f"revolve: expected l >= 1 steps and s >= 1 states, received l={l}, s={s}")
    if l == 1:
        return 0
    if s == 1:
        return l * (l - 1) // 2
    r = _reps(l, s)
    return r * l - _beta(s + 1, r - 1)


def revolve_split(l: int, s: int) -> int:
    """An optimal first checkpoint (steps to advance) for l steps and s >= 2 states."""
    r = _reps(l, s)
    return min(max(1, _beta(s, r - 2), l - _beta(s - 1, r)), l - 1)


# ---- plans -------------------------------------------------------------------------------------
def plan(T: int, budget: int, storage: Storage, policy: str = "revolve") -> Plan:
    """The plan with the fewest forward steps for T steps within `budget` bytes (stored states
    and recorded caches; the initial state and one step's transient work not counted)."""
    if policy not in POLICIES:
        raise one_of("memory policy", policy, POLICIES)
    if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or T < 1:
        raise BpttError(f"T: expected a positive number of steps, received {T!r}")
    T, budget = int(T), int(budget)
    full = storage.leaf(T)
    if budget >= full:
        return Plan(T, "full", Leaf(0, T), T, full, 0, storage)
    smallest = storage.leaf(1)
    if budget < smallest:
        raise BpttError(
            f"memory budget: expected at least {_mib(smallest)} ({smallest:,} bytes: one step's caches), "
            f"received {_mib(budget)} ({budget:,} bytes)"
        )
    if policy == "revolve":
        s = 1 + (budget - smallest) // storage.state  # states held at once, the initial one included
        s = min(s, max(1, T - 1))  # more states than T - 1 are never used
        root = Revolve(0, T, s)
        steps = revolve_advances(T, s) + T
        peak = (s - 1) * storage.state + smallest
        return Plan(T, "revolve", root, steps, peak, s - 1, storage)
    return _mixed(T, budget, storage)


MIXED_BLOCKS = 128  # the mixed program runs on blocks of steps above this T (exact up to it)


def _mixed(T: int, budget: int, storage: Storage) -> Plan:
    """The mixed policy's dynamic program (module docstring), vectorised over the depths.
    Above MIXED_BLOCKS steps it plans blocks of g = ceil(T / MIXED_BLOCKS) steps (each block
    stored or recorded whole), so that T = 100,000 plans in well under a second; the plan's
    forward steps and peak bytes are then counted on the steps themselves. Within the mixed
    policy's space, the plan is never worse than revolve (fewer forward steps, or it is taken),
    nor than segments of one length (fewer forward steps, or as many and fewer runs): whole
    steps where the program has blocks, and one length, so that the executor's buffers for the
    longest segment serve every segment (Plan.keep)."""
    L0 = (budget - storage.segment) // storage.step  # the longest segment that can be recorded whole
    # blocks well under the longest segment, and at most 2 * MIXED_BLOCKS of them
    g = max(1, -(-T // (2 * MIXED_BLOCKS)), min(-(-T // MIXED_BLOCKS), L0 // 8))
    n = -(-T // g)
    unit = Storage(storage.state, storage.step * g, storage.segment)
    best: Plan | None = None
    if budget >= unit.leaf(1):  # (else no block can be recorded whole: revolve or equal segments)
        C, choice, L = _mixed_table(n, budget, unit)
        root = _mixed_tree(n, L, choice)
        best = _planned(T, "mixed", _scale(root, g, T) if g > 1 else root, storage)
    equal = _equal_segments(T, budget, storage)
    if equal is not None:
        other = _planned(T, "mixed", equal, storage)
        if best is None or (other.forward_steps, runs(equal)) < (best.forward_steps, runs(best.root)):
            best = other
    rev = plan(T, budget, storage, "revolve")  # its counts in closed form (its tree is never walked)
    if best is None or rev.forward_steps < best.forward_steps:
        return Plan(T, "mixed", rev.root, rev.forward_steps, rev.peak_bytes, rev.states, storage)
    return best


def _planned(T: int, policy: str, root: Node, storage: Storage) -> Plan:
    peak, depth = measure(root, storage)
    return Plan(T, policy, root, count(root), peak, depth, storage, _keeps(root, storage, peak))


def _keeps(node: Node, storage: Storage, peak: int) -> bool:
    """Whether every recorded segment of the plan, with the states stored while it runs, fits
    `peak` beside the longest segment's bytes (Plan.keep)."""
    if isinstance(node, Revolve):  # every segment one step
        return True
    held, longest, stack = [], 0, [(node, 0)]
    while stack:
        n, h = stack.pop()
        n = expand(n)
        if isinstance(n, Leaf):
            held.append(h)
            longest = max(longest, n.b - n.a)
            continue
        if n.left is not None:
            stack.append((n.left, h))
        stack.append((n.right, h + storage.state if n.store else h))
    return max(held) + storage.leaf(longest) <= peak


def _equal_segments(T: int, budget: int, storage: Storage) -> Node | None:
    """Segments of one length k, the longest whose plan fits the budget: the state stored at
    each segment's start on the way forward, each segment recorded from it, the last one
    straight after its advance; a shorter remainder first, so that the last segment, which
    is never run again, is a whole one (2T - k forward steps). None if no k fits."""
    h = storage.state
    for k in range(min(T, (budget - storage.segment) // storage.step), 0, -1):
        n = -(-T // k)  # segments; n - 2 states stored at once besides the initial one
        if max(n - 2, 0) * h + storage.leaf(k) <= budget:
            break
    else:
        return None
    return _chain([0, *range(T - (n - 1) * k, T, k)] if T % k else list(range(0, T, k)), T)


def _chain(bounds: list[int], T: int) -> Node:
    """Segments [bounds[i], bounds[i+1]) and [bounds[-1], T): the state stored at each
    segment's start on the way forward, each segment recorded from it, the last one straight
    after its advance (its start not stored)."""
    node: Node = Leaf(bounds[-1], T)
    for a, b in zip(reversed(bounds[:-1]), reversed(bounds[1:])):
        node = Split(a, b, T, node != Leaf(b, T), node, Leaf(a, b))
    return node


def _mixed_table(n: int, budget: int, unit: Storage):
    """C[d, t]: the fewest forward steps for t units at depth d, then the fewest runs (each
    recorded segment and each advance is one run of the scans, with a fixed cost of its own),
    as steps * K + runs; choice[d, t]: 0 to record the tail, y > 0 to store the state at y."""
    h, D = unit.state, min((budget - unit.leaf(1)) // unit.state, n)  # deepest depth with a 1-unit leaf
    L = np.array([max(0, (budget - d * h - unit.segment) // unit.step) for d in range(D + 2)], dtype=np.int64)
    L[D + 1 :] = 0
    K = 2 * n + 2  # more than any plan's runs: steps first, runs only between plans of equal steps
    INF = np.iinfo(np.int64).max // 4
    C = np.full((D + 2, n + 1), INF, dtype=np.int64)
    choice = np.zeros((D + 2, n + 1), dtype=np.int64)
    C[:, 0] = 0
    d = np.arange(D + 1)
    for t in range(1, n + 1):  # every depth at once: C[:, t] needs only columns before t
        fits = L[: D + 1] >= t
        tail = np.where(fits, 0, t - np.minimum(L[: D + 1], t))  # (unused where the segment fits)
        # one recorded run where the segment fits, else an advance, a recorded run and the rest
        best = np.where(fits, t * K + 1, t * K + 2 + C[d, tail])
        arg = np.zeros(D + 1, dtype=np.int64)
        if t > 1:  # store the state at y = 1 .. t-1: an advance to y, then both sides (depth D + 1 is INF)
            tot = C[1 : D + 2, t - 1 : 0 : -1] + C[: D + 1, 1:t] + (np.arange(1, t) * K + 1)
            i = np.argmin(tot, axis=1)
            low = tot[d, i]
            better = ~fits & (low < best)
            best, arg = np.where(better, low, best), np.where(better, i + 1, 0)
        C[: D + 1, t], choice[: D + 1, t] = best, arg
    return C, choice, L


def _mixed_tree(T: int, L: np.ndarray, choice: np.ndarray) -> Node:
    """The tree of the mixed plan's choices."""
    out: dict[tuple[int, int, int], Node] = {}
    stack = [(0, T, 0)]
    while stack:
        a, b, d = stack[-1]
        key = (a, b, d)
        if key in out:
            stack.pop()
            continue
        t = b - a
        if t <= L[d]:
            out[key] = Leaf(a, b)
            stack.pop()
            continue
        y = int(choice[d, t])
        if y == 0:  # advance, record the last L_d steps, then the rest
            k = int(L[d])
            lk = (a, b - k, d)
            if lk not in out:
                stack.append(lk)
                continue
            out[key] = Split(a, b - k, b, False, Leaf(b - k, b), out[lk])
            stack.pop()
            continue
        rk, lk = (a + y, b, d + 1), (a, a + y, d)
        missing = [x for x in (rk, lk) if x not in out]
        if missing:
            stack.extend(missing)
            continue
        out[key] = Split(a, a + y, b, True, out[rk], out[lk])
        stack.pop()
    return out[(0, T, 0)]


def _scale(node: Node, g: int, T: int) -> Node:
    """A plan over blocks of g steps as a plan over the T steps."""

    def at(i: int) -> int:
        return min(i * g, T)

    memo: dict[int, Node] = {}
    order, stack = [], [node]
    while stack:  # children before parents
        n = stack.pop()
        order.append(n)
        if isinstance(n, Split):
            stack.append(n.right)
            if n.left is not None:
                stack.append(n.left)
    for n in reversed(order):
        if isinstance(n, Leaf):
            memo[id(n)] = Leaf(at(n.a), at(n.b))
        else:
            memo[id(n)] = Split(
                at(n.a), at(n.y), at(n.b), n.store, memo[id(n.right)], memo[id(n.left)] if n.left is not None else None
            )
    return memo[id(node)]


def measure(node: Node, storage: Storage) -> tuple[int, int]:
    """(peak bytes, most states stored at once) of executing a plan tree."""
    peak, depth = 0, 0
    stack = [(node, 0, 0)]  # node, bytes held by the stored states above it, their number
    while stack:
        n, held, k = stack.pop()
        n = expand(n)
        if isinstance(n, Leaf):
            peak, depth = max(peak, held + storage.leaf(n.b - n.a)), max(depth, k)
            continue
        if n.left is not None:
            stack.append((n.left, held, k))
        stack.append((n.right, held + storage.state, k + 1) if n.store else (n.right, held, k))
    return peak, depth


def segments_plan(T: int, k: int, storage: Storage) -> Plan:
    """Chen et al.'s (2016) segments, for comparison: the state stored every k steps on the way
    forward, each segment recorded whole from its state (the last one straight after the
    advance)."""
    if k < 1:
        raise BpttError(f"segment length: expected at least 1, received {k}")
    return _planned(T, "segments", _chain(list(range(0, T, k)), T), storage)


def nodes(node: Node) -> Iterator[Leaf | Split]:
    """Every node of a plan tree, expanded (a revolve node's split made), by walking it with a
    stack (never recursing T deep)."""
    stack = [node]
    while stack:
        n = expand(stack.pop())
        yield n
        if isinstance(n, Split):
            stack.append(n.right)
            if n.left is not None:
                stack.append(n.left)


def runs(node: Node) -> int:
    """Runs of a plan tree: its recorded segments and its advances (each a call of the scans
    with a fixed cost of its own)."""
    return sum(1 if isinstance(n, Leaf) else n.y > n.a for n in nodes(node))


def longest(p: Plan) -> int:
    """Steps of a plan's longest recorded segment (revolve's are one step each)."""
    if p.policy == "revolve":
        return 1
    return max(n.b - n.a for n in nodes(p.root) if isinstance(n, Leaf))


def count(node: Node) -> int:
    """Forward steps of a plan tree (advances and recordings)."""
    return sum(n.b - n.a if isinstance(n, Leaf) else n.y - n.a for n in nodes(node))
