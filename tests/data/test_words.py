"""--tokens word: the word rule, a vocabulary of the training part's most frequent words with
<unk>, encoding and decoding."""

import numpy as np
import pytest

from bptt.data import text as txt


@pytest.mark.parametrize(
    "line, tokens",
    [
        ("Hello, world!", ["Hello", ",", "world", "!", "<eos>"]),
        ("Don't stop o'clock", ["Don't", "stop", "o'clock", "<eos>"]),
        ("it's 3.14 -- ok", ["it's", "3", ".", "14", "-", "-", "ok", "<eos>"]),
        ("snake_case ’quoted’", ["snake", "_", "case", "’", "quoted", "’", "<eos>"]),
        ("Straße café", ["Straße", "café", "<eos>"]),
        ("   ", ["<eos>"]),
    ],
)
def test_the_word_rule(line, tokens):
    assert txt.words(line + "\n") == tokens


def test_lines_end_with_eos_and_a_last_line_without_a_break_counts():
    assert txt.words("a b\n\nc") == ["a", "b", "<eos>", "<eos>", "c", "<eos>"]
    assert txt.words("a b\n\nc\n") == ["a", "b", "<eos>", "<eos>", "c", "<eos>"]


def test_vocabulary_keeps_the_most_frequent_and_unk():
    toks = "a a a b b c d d d d e".split()
    v = txt.WordVocab.from_tokens(toks, 4)  # 3 words + <unk>
    assert set(v.words) == {"d", "a", "b", "<unk>"}
    v2 = txt.WordVocab.from_tokens("x y z".split(), 3)  # a tie of counts: by the token's text
    assert set(v2.words) == {"x", "y", "<unk>"}
    ids, unknown = v.encode_tokens("a c e d <unk>".split())
    assert unknown == 3  # c, e and the literal <unk>
    assert v.decode(ids) == "a <unk> <unk> d <unk>"
    big = txt.WordVocab.from_tokens(toks, 100)
    assert len(big) == 6 and big.encode_tokens(toks)[1] == 0


def test_decode_joins_with_spaces_and_breaks_lines():
    text = "To be, or not to be:\nthat is the question.\n"
    v = txt.WordVocab.from_tokens(txt.words(text), 1000)
    ids, unknown = v.encode(text)
    assert unknown == 0 and ids.dtype == np.int32
    assert v.decode(ids) == "To be , or not to be :\nthat is the question .\n"
    assert v.words[v.start()] == "<eos>"
    assert txt.vocab_from_meta("word", v.meta()) == v
    assert txt.vocab_from_meta("char", "abc") == txt.Vocab("abc")
