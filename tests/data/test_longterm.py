"""The long-term dependency tasks: seeded, shaped as the model's losses expect, and each one's
stated no-memory baseline is what a memoryless predictor actually scores on its data."""

import numpy as np
import pytest

from bptt.data import longterm as L
from bptt.errors import BpttError


def test_every_task_is_seeded():
    for name, make in L.TASKS.items():
        a, b = make(np.random.default_rng(3), 4), make(np.random.default_rng(3), 4)
        c = make(np.random.default_rng(4), 4)
        assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y), name
        assert not (np.array_equal(a.x, c.x) and np.array_equal(a.y, c.y)), name


def test_adding_baseline_is_what_predicting_one_scores():
    p = L.adding(np.random.default_rng(0), 20000, length=50)
    assert p.x.shape == (50, 20000, 2) and p.y.shape == (20000, 1)
    assert (p.x[:, :, 1].sum(axis=0) == 2).all() and (p.x[:25, :, 1].sum(axis=0) == 1).all()
    mse = np.mean((1.0 - p.y) ** 2)
    assert abs(mse - 1 / 6) < 0.005 and abs(0.5 * mse - p.baseline) < 0.003
    marked = p.x[:, :, 0] * p.x[:, :, 1]
    np.testing.assert_allclose(marked.sum(axis=0), p.y[:, 0])


def test_copy_memory_baseline_is_the_best_memoryless_loss():
    p = L.copy_memory(np.random.default_rng(0), 5000, delay=30)
    T = 30 + 20
    assert p.x.shape == p.y.shape == (T, 5000)
    np.testing.assert_array_equal(p.y[-10:], p.x[:10])
    assert (p.x[39] == 9).all() and (p.y[:-10] == 8).all()
    # memoryless: the right blank everywhere, uniform over the 8 symbols in the recall steps
    assert p.baseline == pytest.approx(10 * np.log(8) / T)
    counts = np.bincount(p.y[-10:].ravel(), minlength=8)[:8] / p.y[-10:].size
    assert np.abs(counts - 1 / 8).max() < 0.01


def test_temporal_xor_every_third_bit_is_determined():
    p = L.temporal_xor(np.random.default_rng(0), 7, triples=50)
    x, y = p.x, p.y
    np.testing.assert_array_equal(y[:-1], x[1:])  # the target is the next bit
    t = np.nonzero(p.scored[:, 0])[0]
    assert (t % 3 == 1).all() and len(t) == 50
    np.testing.assert_array_equal(y[t], x[t - 1] ^ x[t])
    other = ~p.scored
    assert abs(y[other].mean() - 0.5) < 0.1  # coin flips there
    assert p.baseline == pytest.approx(np.log(2))


def test_letters_follow_elmans_words():
    p = L.letters(np.random.default_rng(1), 3, length=400)
    for b in range(3):
        s = "".join(L.LETTERS[i] for i in np.concatenate([p.x[:, b], p.y[-1:, b]]))
        words = s.replace("ba", " ").replace("dii", " ").replace("guuu", " ")
        assert set(words[:-4].strip()) <= {" "}, s[:60]
    vowels = p.y >= 3
    np.testing.assert_array_equal(p.scored, vowels)
    assert abs((~vowels).mean() - 1 / 3) < 0.05
    # the no-memory baseline: the next letter's entropy given the current one, measured
    big = L.letters(np.random.default_rng(2), 40, length=2000)
    x, y = big.x.ravel(), big.y.ravel()
    H = 0.0
    for c in range(6):
        nxt = np.bincount(y[x == c], minlength=6) / max(1, (x == c).sum())
        H += (x == c).mean() * -sum(q * np.log(q) for q in nxt if q > 0)
    assert H == pytest.approx(p.baseline, abs=0.01) and p.baseline == pytest.approx(0.7324, abs=1e-4)


def _parse_reber(s: str) -> bool:
    state = 0
    for ch in s:
        nxt = dict(L._REBER.get(state, []))
        if ch not in nxt:
            return False
        state = nxt[ch]
    return state == 5


def test_embedded_reber_strings_and_targets_follow_the_grammar():
    p = L.embedded_reber(np.random.default_rng(0), 200)
    lengths = p.mask.sum(axis=0)
    assert (p.mask == (np.arange(p.x.shape[0])[:, None] < lengths)).all()  # right-padded
    for b in range(200):
        s = "".join(L.REBER[i] for i in p.x[: lengths[b], b])
        assert s[0] == "B" and s[1] in "TP" and s[2] == "B" and s[-1] == s[1] and s[-2] == "E"
        assert _parse_reber(s[3:-2]), s
        allowed = ["".join(L.REBER[i] for i in np.nonzero(p.y[t, b])[0]) for t in range(lengths[b])]
        assert allowed[0] == "TP" and allowed[1] == "B" and allowed[-2] == s[1] and allowed[-1] == "E"
    # a model that outputs the targets is right on every string; flipping one step's set is not
    out = p.y.copy()
    assert L.reber_correct(out, p).all()
    out[1, 0] = 1 - out[1, 0]
    assert not L.reber_correct(out, p)[0] and L.reber_correct(out, p)[1:].all()


def test_add_task_targets_follow_their_probabilities():
    rng = np.random.default_rng(0)
    p = L.add_task(rng, 8, length=20000, t1=5, t2=9)
    x, y = p.x, p.y
    for a in (0, 1):
        for b in (0, 1):
            sel = (x[9 - 5 : -5] == a) & (x[:-9] == b)
            assert abs(y[9:][sel].mean() - (0.5 + 0.5 * a - 0.25 * b)) < 0.02
    none, first, both = L.add_task_levels()
    assert (round(none, 2), round(first, 2), round(both, 2)) == (0.66, 0.52, 0.45)
    assert p.baseline == none
    with pytest.raises(BpttError, match="t2: expected a lag longer than t1 = 5, received 3"):
        L.add_task(rng, 2, t1=5, t2=3)
