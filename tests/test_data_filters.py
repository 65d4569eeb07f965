"""Each FineWeb filter on crafted texts just inside and just outside each threshold."""
import random

import pytest

from minigpt.data import filters as F
from minigpt.data.pii import anonymise


def unique_words(n, seed=0, lo=4, hi=8):
    """n distinct lowercase words of lo..hi letters (no stop words, no repeats)."""
    rng = random.Random(seed)
    out, seen = [], set(F.STOP_WORDS)
    while len(out) < n:
        w = "".join(rng.choice("bcdfghjklmnpqrstvwxz") for _ in range(rng.randint(lo, hi)))
        if w not in seen:
            seen.add(w)
            out.append(w)
    return out


# ------------------------------------------------------------------------------------------------
# Gopher quality

def test_word_split_like_treebank():
    # nltk.word_tokenize's answer (Punkt with default parameters, then Treebank): quotes become `` and ''
    assert F.split_into_words('He said "don\'t" (twice), e.g. 3,000 times... Done.') == [
        "He", "said", "``", "do", "n't", "''", "(", "twice", ")", ",", "e.g", ".", "3,000", "times", "...",
        "Done", "."]


def test_gopher_min_words():
    base = ["the", "and"] + unique_words(47)
    assert F.gopher_quality(" ".join(base)) == "gopher_short_doc"           # 49 words
    assert F.gopher_quality(" ".join(base + ["extra"])) is None             # 50 words


def test_gopher_max_words():
    words = ["the", "and"] + ["word"] * 99_998
    assert F.gopher_quality(" ".join(words)) is None                        # 100,000
    assert F.gopher_quality(" ".join(words + ["word"])) == "gopher_long_doc"


def test_gopher_mean_word_length():
    three = ["the", "and"] + ["cat"] * 48                                   # mean exactly 3
    assert F.gopher_quality(" ".join(three)) is None
    assert F.gopher_quality(" ".join(three[:-1] + ["at"])) == "gopher_below_avg_threshold"
    ten = ["the", "and"] + ["abcdefghij"] * 47 + ["a" * 24]                  # 500 chars / 50 words
    assert F.gopher_quality(" ".join(ten)) is None
    assert F.gopher_quality(" ".join(ten[:-1] + ["a" * 25])) == "gopher_above_avg_threshold"


@pytest.mark.parametrize("symbol, reason", [("#", "gopher_too_many_hashes"), ("...", "gopher_too_many_ellipsis")])
def test_gopher_symbol_ratio(symbol, reason):
    words = ["the", "and"] + unique_words(88)                               # 90 words
    # k symbols among 90 + k tokens: 10/100 = 0.1 is allowed, 11/101 is not
    assert F.gopher_quality(" ".join(words + [symbol] * 10 + ["end"])) is None
    assert F.gopher_quality(" ".join(words + [symbol] * 11 + ["end"])) == reason


def test_gopher_bullet_and_ellipsis_lines():
    lines = [" ".join(["the", "and"] + unique_words(8, seed=i)) for i in range(10)]
    nine = ["- " + x for x in lines[:9]] + lines[9:]
    assert F.gopher_quality("\n".join(nine)) is None                        # 9/10 bullets
    assert F.gopher_quality("\n".join("• " + x for x in lines)) == "gopher_too_many_bullets"
    three = [x + " …" for x in lines[:3]] + lines[3:]
    assert F.gopher_quality("\n".join(three)) is None                       # 3/10 end in an ellipsis
    four = [x + " …" for x in lines[:4]] + lines[4:]
    assert F.gopher_quality("\n".join(four)) == "gopher_too_many_end_ellipsis"


def test_gopher_alpha_words_and_stop_words():
    alpha = ["the", "and"] + unique_words(78)
    assert F.gopher_quality(" ".join(alpha + ["123"] * 20)) is None         # 80/100 with a letter
    assert F.gopher_quality(" ".join(alpha[:-1] + ["123"] * 21)) == "gopher_below_alpha_threshold"
    assert F.gopher_quality(" ".join(["the"] + unique_words(60))) == "gopher_enough_stop_words"
    assert F.gopher_quality(" ".join(["the", "with"] + unique_words(60))) is None


# ------------------------------------------------------------------------------------------------
# Gopher repetition

def paragraphs(n, seed, words=12):
    return [" ".join(unique_words(words, seed=seed * 1000 + i)) for i in range(n)]


def test_repetition_duplicate_paragraph_fraction():
    uniq = paragraphs(6, seed=1, words=40)
    ok = "\n\n".join(uniq + ["ok"] * 4)                                     # 3 repeats / 10 = 0.30
    assert F.gopher_repetition(ok) is None
    bad = "\n\n".join(uniq + ["ok"] * 5)                                    # 4 / 11
    assert F.gopher_repetition(bad) == "dup_para_frac"


def test_repetition_duplicate_line_fraction():
    uniq = paragraphs(7, seed=2, words=40)
    assert F.gopher_repetition("\n".join(uniq + ["ok"] * 4)) is None       # 3 / 10 lines
    assert F.gopher_repetition("\n".join(uniq + ["ok"] * 5)) == "dup_line_frac"


def boundary(make, ratio, threshold):
    """Smallest n with ratio(make(n)) > threshold; checks n-1 is at or below it."""
    n = 1
    while ratio(make(n)) <= threshold:
        n += 1
        assert n < 5000, "the crafted family never crosses the threshold"
    assert ratio(make(n - 1)) <= threshold
    return make(n - 1), make(n)


def test_repetition_duplicate_paragraph_chars():
    rep = " ".join(unique_words(20, seed=5))                                # one paragraph, twice
    fill = unique_words(2000, seed=6)

    def make(n):  # shrinking the unique filler raises the duplicated share
        return "\n\n".join([rep, " ".join(fill[: 2000 - n])] + [rep])

    def ratio(t):
        return len(rep) / len(t)
    inside, outside = boundary(make, ratio, 0.2)
    only = dict(dup_para_frac=1.0, dup_line_frac=1.0, top_ngrams=(), dup_ngrams=())  # this rule alone
    assert F.gopher_repetition(inside, **only) is None
    assert F.gopher_repetition(outside, **only) == "dup_para_char_frac"


def test_repetition_duplicate_line_chars():
    rep = " ".join(unique_words(20, seed=15))                               # one line, twice
    fill = unique_words(2000, seed=16)

    def make(n):
        return "\n".join([rep, " ".join(fill[: 2000 - n]), rep])

    def ratio(t):
        return len(rep) / len(t)
    inside, outside = boundary(make, ratio, 0.2)
    only = dict(dup_para_frac=1.0, dup_para_char_frac=1.0, dup_line_frac=1.0, top_ngrams=(), dup_ngrams=())
    assert F.gopher_repetition(inside, **only) is None
    assert F.gopher_repetition(outside, **only) == "dup_line_char_frac"


@pytest.mark.parametrize("n, threshold", [(2, 0.20), (3, 0.18), (4, 0.16)])
def test_repetition_top_ngram(n, threshold):
    gram = " ".join(unique_words(n, seed=70 + n))
    fill = unique_words(400, seed=7)

    def make(k):
        return " ".join(fill + [gram] * k)

    def ratio(t):
        return len(gram) * t.count(gram) / len(t)
    inside, outside = boundary(make, ratio, threshold)
    only = dict(top_ngrams=((n, threshold),), dup_ngrams=())  # the other n see the same repeat
    assert F.gopher_repetition(inside, **only) is None
    assert F.gopher_repetition(outside, **only) == f"top_{n}_gram"


@pytest.mark.parametrize("n, threshold", [(5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10)])
def test_repetition_duplicated_ngrams(n, threshold):
    # one n-gram repeated back to back k + 1 times: every repeat after the first counts
    gram = unique_words(n, seed=80 + n)
    fill = unique_words(600, seed=9)

    def make(k):
        return " ".join(fill + gram * (k + 1))

    def ratio(t):
        return len("".join(gram)) * (t.count(" ".join(gram)) - 1) / len(t)
    inside, outside = boundary(make, ratio, threshold)
    only = dict(top_ngrams=(), dup_ngrams=((n, threshold),))  # other lengths see the same repeat
    assert F.gopher_repetition(inside, **only) is None
    assert F.gopher_repetition(outside, **only) == f"duplicated_{n}_n_grams"


# ------------------------------------------------------------------------------------------------
# C4

def sentences(n, seed=0):
    return [" ".join(unique_words(6, seed=seed * 100 + i)).capitalize() + "." for i in range(n)]


def test_c4_min_sentences_and_line_rules():
    five = sentences(5)
    reason, text = F.c4_quality("\n".join(five))
    assert reason is None and text == "\n".join(five)
    assert F.c4_quality("\n".join(five[:4]))[0] == "too_few_sentences"
    # the noise lines go, the document stays
    noisy = five + ["Short line.", "Please enable JavaScript to view this page now.",
                    "This site uses cookies for analytics today.", "Read our privacy policy here please."]
    reason, text = F.c4_quality("\n".join(noisy))
    assert reason is None and text == "\n".join(five)
    # two sentences on one line count as two
    assert F.c4_quality("\n".join(five[:3] + [five[3] + " " + five[4]]))[0] is None


def test_c4_whole_document_rules_and_citations():
    five = sentences(5)
    assert F.c4_quality("\n".join(five + ["Lorem ipsum dolor sit amet."]))[0] == "lorem_ipsum"
    assert F.c4_quality("\n".join(five + ["function f() { return 1; }"]))[0] == "curly_bracket"
    reason, text = F.c4_quality("\n".join(five[:4] + ["A cited claim here[1] and more[citation needed]."]))
    assert reason is None and text.endswith("A cited claim here and more.")


# ------------------------------------------------------------------------------------------------
# FineWeb quality

def test_fineweb_line_punctuation():
    long_lines = [" ".join(unique_words(8, seed=i)) for i in range(100)]
    ok = [x + "." for x in long_lines[:12]] + long_lines[12:]
    assert F.fineweb_quality("\n".join(ok)) is None                         # 12/100 end in punctuation
    bad = [x + "." for x in long_lines[:11]] + long_lines[11:]
    assert F.fineweb_quality("\n".join(bad)) == "line_punct_ratio"


def test_fineweb_short_lines():
    lines = [" ".join(unique_words(8, seed=i)) + "." for i in range(100)]
    short = [f"Line {i:03d} is short." for i in range(100)]                 # 21 chars
    assert F.fineweb_quality("\n".join(short[:67] + lines[67:])) is None  # 0.67
    assert F.fineweb_quality("\n".join(short[:68] + lines[68:])) == "short_line_ratio"


def test_fineweb_duplicate_chars_and_newlines():
    lines = [" ".join(unique_words(10, seed=i)) + "." for i in range(60)]
    text = "\n".join(lines)
    dup = "Same line."
    # duplicated characters (repeats after the first) over non-newline characters: 0.01
    def make(k):
        return text + "\n" + "\n".join([dup] * (k + 1))

    def ratio(t):
        return len(dup) * (t.count(dup) - 1) / len(t.replace("\n", ""))
    inside, outside = boundary(make, ratio, 0.01)
    assert F.fineweb_quality(inside) is None
    assert F.fineweb_quality(outside) == "char_dup_ratio"
    # newlines per word: 0.3; lines of two long words and a period (> 30 chars, so not "short")
    long = unique_words(400, seed=99, lo=16, hi=20)
    tail = " ".join(long[300:320]) + "."

    def make(n):
        return "\n".join([f"{a} {b}." for a, b in zip(long[:2 * n:2], long[1:2 * n:2])] + [tail])

    def ratio(t):
        return t.count("\n") / len(F.split_into_words(t))
    inside, outside = boundary(make, ratio, 0.3)
    assert F.fineweb_quality(inside) is None
    assert F.fineweb_quality(outside) == "list_ratio"


# ------------------------------------------------------------------------------------------------
# URL filter and PII

def test_url_filter():
    block = frozenset({"bad.example", "http://ok.example/one-page"})
    assert F.url_filter("https://www.bad.example/x", block) == "domain"
    assert F.url_filter("https://bad.example", block) == "domain"
    assert F.url_filter("https://notbad.example/", block) is None
    assert F.url_filter("http://ok.example/one-page", block) == "url"
    assert F.url_filter("http://ok.example/other", block) is None
    assert F.url_filter("http://x.org/casino-night", banned_words=frozenset({"casino"})) == "hard_blacklisted"
    soft = frozenset({"hot", "deals"})
    assert F.url_filter("http://x.org/hot-stuff", soft_banned_words=soft) is None      # 1 soft word
    assert F.url_filter("http://x.org/hot-deals", soft_banned_words=soft) == "soft_blacklisted"


def test_pii():
    text = "Mail john.doe+x@mail.co.uk or 8.8.8.8; LAN 192.168.1.5, loopback 127.0.0.1, not 999.1.1.1."
    out, n_email, n_ip = anonymise(text)
    assert n_email == 1 and n_ip == 1
    assert "john.doe" not in out and "8.8.8.8" not in out
    assert "email@example.com" in out and "22.214.171.124" in out
    assert "192.168.1.5" in out and "127.0.0.1" in out and "999.1.1.1" in out


# ------------------------------------------------------------------------------------------------
# the fast n-gram counts against the plain loops they replace

from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "c", "dd", "eee", "the", "x", "ab", "bc"]), max_size=60), st.integers(1, 10))
def test_fast_ngram_counts_match_reference(words, n):
    # the C statistics (csrc/textstats.c) against the plain loops, "".join merges included
    assert F.ngram_stats(words, [n], [n]) == ([F.top_ngram_chars(words, n)], [F.duplicated_ngram_chars(words, n)])
