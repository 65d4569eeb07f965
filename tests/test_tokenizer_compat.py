"""Compatibility: our GPT-2 ids equal tiktoken's; the C scanners split exactly as the `regex` patterns."""

import pytest
from hypothesis import given, settings, strategies as st

from minigpt.tokenizer import Tokenizer, fast, pretokenize
from minigpt.tokenizer.files import read_tiktoken

tiktoken = pytest.importorskip("tiktoken", reason="tiktoken (the oracle) is in the test extra")

from conftest import GPT2_RANKS, SHAKESPEARE
needs_c = pytest.mark.skipif(not fast.available(), reason="C extension minigpt._bpe not built")

# text that stresses the split patterns: letters of many scripts, emoji (ZWJ sequences too),
# combining marks, digits, contractions, runs of spaces and newlines, "\r\n", odd whitespace
PIECES = ["a", "Z", "é", "e\u0301", "ß", "ſ", "ﬁ", "我", "東京", "한", "ا", "Ω", "😀", "👩\u200d👩\u200d👧", "🇫🇷",
          "0", "7", "١", "²", "½", "Ⅻ", "'", "'s", "'S", "'ll", "'LL", "'ve", "'re", "'d", "'m", "'t", "'ſ", " ",
          "  ", "\t", "\n", "\r\n", "\r", "\u00a0", "\u3000", "\u2028", "\x0b", "\x1c", "\x85", ".", ",", "!?",
          "...", "-", "$", "(", "\\", "\u200b", "\ufeff", "\U0001f3fb", "\U000e0001", "\x00"]
unicode_text = st.one_of(
    st.lists(st.sampled_from(PIECES), max_size=40).map("".join),
    st.text(st.characters(codec="utf-8"), max_size=60),
    st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=4), st.from_regex(r"[0-9]{1,12}", fullmatch=True)),
             max_size=25).map("".join),
)


@pytest.fixture(scope="module")
def gpt2():
    ranks = read_tiktoken(GPT2_RANKS)
    enc = tiktoken.Encoding(name="gpt2-offline", pat_str=pretokenize.GPT2_PATTERN,
                            mergeable_ranks={t: i for i, t in enumerate(ranks)},
                            special_tokens={"<|endoftext|>": 50256})
    ours = Tokenizer.from_tiktoken(GPT2_RANKS, pattern="gpt2", special_tokens={"<|endoftext|>": 50256})
    return ours, enc


def test_gpt2_shakespeare_equals_tiktoken(gpt2):
    ours, enc = gpt2
    with open(SHAKESPEARE, encoding="utf-8") as f:
        text = f.read()
    ids = ours.encode_ordinary(text)
    assert len(ids) == 338_025
    assert ids == enc.encode_ordinary(text)
    assert ours.decode(ids) == text
    docs = text.split("\n\n")
    assert ours.encode_ordinary_batch(docs, num_threads=2) == enc.encode_ordinary_batch(docs, num_threads=2)
    assert ours.n_vocab == enc.n_vocab == 50257 and ours.eot == enc.eot_token


@settings(max_examples=300, deadline=None)
@given(unicode_text)
def test_gpt2_unicode_equals_tiktoken(gpt2, s):
    ours, enc = gpt2
    ids = ours.encode_ordinary(s)
    assert ids == enc.encode_ordinary(s)
    assert ours.decode(ids) == s
    assert ours.encode(s + "<|endoftext|>" + s, allowed_special="all") == \
        enc.encode(s + "<|endoftext|>" + s, allowed_special="all")


@settings(max_examples=60, deadline=None)
@given(unicode_text)
def test_gpt2_python_reference_equals_c(gpt2, s):
    ours, _ = gpt2
    if ours.backend != "c":
        pytest.skip("C extension minigpt._bpe not built")
    ref = _python_twin(ours)
    assert ref.encode_ordinary(s) == ours.encode_ordinary(s)


_TWIN = {}


def _python_twin(tok):
    if id(tok) not in _TWIN:
        _TWIN[id(tok)] = Tokenizer(tok.vocab, tok.pattern, tok.special_tokens, backend="python")
    return _TWIN[id(tok)]


@needs_c
@settings(max_examples=400, deadline=None)
@given(unicode_text)
def test_c_scanner_equals_regex(s):
    for pattern in ("gpt2", "gpt4"):
        assert fast.split(s, pattern) == pretokenize.split(s, pattern), pattern


@needs_c
def test_c_scanner_on_every_code_point():
    # every code point (bar surrogates) after a space, a letter, a digit and an apostrophe
    every = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000)
    for pattern in ("gpt2", "gpt4"):
        for glue in (" ", "a", "1", "'", "\n", " \r\n"):
            text = glue.join(every[i:i + 3] for i in range(0, 60_000, 3)) + glue.join(every[60_000::37])
            assert fast.split(text, pattern) == pretokenize.split(text, pattern), (pattern, glue)


@needs_c
def test_gpt4_pattern_equals_tiktoken_split_with_trained_vocab():
    # a vocabulary trained here and handed to tiktoken encodes the same: our ranks are real ranks
    text = "Hello world!  It's 2024; we're    testing\r\n\r\n  東京 😀 12345678 ſ 'S\n\n\tend  "
    tok = Tokenizer.train([text * 3, "the quick brown fox " * 10], vocab_size=300, pattern="gpt4")
    enc = tiktoken.Encoding(name="ours", pat_str=pretokenize.GPT4_PATTERN,
                            mergeable_ranks={t: i for i, t in enumerate(tok.vocab)},
                            special_tokens=tok.special_tokens)
    for s in (text, text[::-1], "the quick brown fox jumps"):
        assert tok.encode(s) == enc.encode(s)


def test_lone_surrogates_replaced_like_tiktoken(gpt2):
    ours, enc = gpt2
    s = "a\ud800b \udfff"
    assert ours.encode_ordinary(s) == enc.encode_ordinary(s)


@settings(max_examples=30, deadline=None)
@given(st.sampled_from([" ", "\n", "a", "ab", "😀", "1", "!", " \n"]), st.integers(60, 700), st.sampled_from(["", "x", " y"]))
def test_long_chunks_equal_tiktoken(gpt2, unit, n, tail):
    # chunks over 64 bytes take the O(n log n) heap merge in C instead of the quadratic one
    ours, enc = gpt2
    s = unit * n + tail
    assert ours.encode_ordinary(s) == enc.encode_ordinary(s)
