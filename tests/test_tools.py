"""The tools a model calls during generation: the calculator is exact and survives hostile input;
search ranks by BM25, is deterministic, respects its budget and caches its index on disk."""
import json
import math
import time
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigpt.inference.calculator import calculate
from minigpt.inference.search import SearchIndex, cached_index, snippets


# --------------------------------------------------------------------------------------------------
# calculator


@pytest.mark.parametrize("expr, want", [
    ("(123*456)+7", "56095"), ("123456789*987654321", "121932631112635269"), ("0.1+0.2", "0.3"),
    ("10/4", "2.5"), ("-7/2", "-3.5"), ("7//2", "3"), ("-7//2", "-4"), ("7%3", "1"), ("2**10", "1024"),
    ("2**-3", "0.125"), ("1/3", "0.333333333333"), ("2/3", "0.666666666667"), ("1/7*7", "1"),
    ("(1+2)*(3+4)", "21"), ("-(3)", "-3"), ("+5", "5"), ("1e3", "1000"), ("1_000*2", "2000"),
    ("  12 * 12  ", "144"), ("100000/3", "33333.3333333"),
])
def test_exact_arithmetic(expr, want):
    assert calculate(expr) == want


@settings(max_examples=200)
@given(st.integers(-10**12, 10**12), st.integers(-10**12, 10**12), st.sampled_from("+-*"))
def test_integer_results_are_exact(a, b, op):
    want = {"+": a + b, "-": a - b, "*": a * b}[op]
    assert calculate(f"({a}){op}({b})") == str(want)


@settings(max_examples=200)
@given(st.integers(-10**6, 10**6), st.integers(1, 10**6))
def test_division_is_the_exact_fraction_rounded(a, b):
    got = calculate(f"{a}/{b}")
    assert abs(Fraction(got) - Fraction(a, b)) <= Fraction(1, 10**11) * max(1, abs(Fraction(a, b)))


@pytest.mark.parametrize("expr, message", [
    ("__import__('os')", "found Call"), ("os.system", "found Attribute"), ("x", "found Name"),
    ("lambda: 1", "found Lambda"), ("9**9**9", "exponent 387420489 is too large"), ("2**0.5", "integers"),
    ("2**5000", "too large"), ("(2**4000)*(2**4000)", "too large"), ("1/0", "division by zero"),
    ("5%0", "division by zero"), ("0**-1", "division by zero"), ("'a'*3", "only numbers"),
    ("True+1", "only numbers"), ("1<2", "found Compare"), ("[1, 2]", "found List"), ("", "empty"),
    ("1+", "not an arithmetic expression"), ("(" * 10_000 + "1" + ")" * 10_000, "too long"),
    ("1" * 1_000_000, "too long"), ("(" * 40 + "1" + ")" * 40, "nested too deeply"),
    ("-" * 200 + "1", "nested too deeply"), ("1j", "only numbers"), (None, "must be text"),
])
def test_hostile_input_is_a_quick_clear_error(expr, message):
    t0 = time.perf_counter()
    got = calculate(expr)
    assert got.startswith("error: ") and message in got
    assert time.perf_counter() - t0 < 5  # not a timing assertion on speed: a guard against a hang


@settings(max_examples=300)
@given(st.text(max_size=80))
def test_any_text_gives_a_result_or_an_error_never_an_exception(text):
    got = calculate(text)
    assert isinstance(got, str) and got


# --------------------------------------------------------------------------------------------------
# search

DOCS = [
    ("os.path.join", "join(a, *p)\n\nJoin two or more pathname components, inserting '/' as needed."),
    ("math.gcd", "gcd(*integers)\n\nGreatest Common Divisor of the integers."),
    ("json.dumps", "dumps(obj)\n\nSerialize obj to a JSON formatted str."),
    ("textwrap.fill", "fill(text, width=70)\n\nFill a single paragraph of text, returning a new string."),
]


def test_bm25_ranks_the_document_that_holds_the_words():
    index = SearchIndex.build(DOCS)
    assert index.search("greatest common divisor")[0][1] == "math.gcd"
    assert index.search("join pathname components")[0][1] == "os.path.join"
    assert index.search("zebra") == []


def test_bm25_matches_the_formula():
    index = SearchIndex.build([("a", "cat cat dog"), ("b", "dog bird"), ("c", "fish")])
    N, avg = 3, (3 + 2 + 1) / 3
    idf = math.log(1 + (N - 1 + 0.5) / (1 + 0.5))          # "cat" is in one passage of three
    want = idf * 2 * (1.5 + 1) / (2 + 1.5 * (1 - 0.75 + 0.75 * 3 / avg))
    (score, doc, _), = index.search("cat")
    assert doc == "a" and score == pytest.approx(want)


def test_search_is_deterministic_and_ties_keep_collection_order():
    index = SearchIndex.build([("x", "same words"), ("y", "same words")])
    assert [d for _, d, _ in index.search("same", k=2)] == ["x", "y"]


def test_snippets_stay_within_the_budget():
    long = " ".join(f"word{i}" for i in range(500))
    index = SearchIndex.build(DOCS + [("long", "divisor " + long)])
    text = snippets(index, "divisor", k=3, budget=30)
    assert len(text.split()) <= 30 and "math.gcd" in text
    assert snippets(index, "   ") == "error: empty search query"
    assert snippets(index, "zebra") == "no results"


def test_index_is_cached_on_disk_as_json(tmp_path):
    first = cached_index(DOCS, tmp_path)
    (path,) = tmp_path.iterdir()
    json.loads(path.read_text())                             # plain JSON, no pickle
    again = cached_index(DOCS, tmp_path)
    assert again.search("json")[0][1] == first.search("json")[0][1] == "json.dumps"
    path.write_text("{ damaged")                             # a damaged cache is rebuilt
    assert cached_index(DOCS, tmp_path).search("gcd")[0][1] == "math.gcd"
    cached_index(DOCS[:2], tmp_path)                         # another collection, another file
    assert len(list(tmp_path.iterdir())) == 2
