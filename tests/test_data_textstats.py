"""csrc/textstats.c (Gopher repetition's n-gram statistics) against its Python twins in filters.py."""
from hypothesis import example, given, settings
from hypothesis import strategies as st

from minigpt.data import filters as F

TOP, DUP = [1, 2, 3, 4], [1, 2, 5, 6, 7, 8, 9, 10]
# few distinct words so n-grams repeat; pieces that glue into the same "".join ("ab" + "c" = "a" + "bc")
word = st.one_of(st.sampled_from(["a", "b", "ab", "c", "bc", "é", "日本", "😀", "the", "x" * 300]),
                 st.text(min_size=1, max_size=6).filter(lambda w: "\0" not in w))


def twins(words):
    return [F.top_ngram_chars(words, n) for n in TOP], [F.duplicated_ngram_chars(words, n) for n in DUP]


@settings(max_examples=300)
@given(words=st.lists(word, max_size=80))
@example(words=[])                                    # empty
@example(words=["one"])                               # one word
@example(words=["ab", "c", "a", "bc", "ab", "c"] * 3)  # equal joins from different words
@example(words=["long"] * 5000)                       # a huge line of one repeated word
def test_c_ngram_stats_equal_python_twins(words):
    assert F.ngram_stats(words, TOP, DUP) == twins(words)


@settings(max_examples=100)
@given(text=st.text(max_size=400).filter(lambda t: "\0" not in t))
def test_c_ngram_stats_on_split_text(text):
    words = F.split_into_words(text)
    assert F.ngram_stats(words, TOP, DUP) == twins(words)
