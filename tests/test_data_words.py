"""words.py (Punkt with default parameters + Treebank, cached per chunk, fast paths) against NLTK
itself on drawn text, and the skipping cascade against the full one."""
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from minigpt.data import words as W

PIECES = ["word", "Word", "J.", "3.", "e.g.", "etc.", "...", ". . .", "--", "---", "-", "—", "–", ",", ",,", ":",
          "::", "3,000", "a:b", ";", "?", "!", "?!", "(", ")", "[", "]", "{", "}", "<", ">", "\"", "''", "``", "'",
          "'s", "n't", "don't", "cannot", "gonna", "wanna", "'tis", "“", "”", "‘", "’", "«", "»", "„", "*", "@", "#",
          "$", "%", "&", "…", "x.y", "U.S.A.", "1.", "é", "日本語", "😀", "_", "/", "\u2012", "\u00a0", "word:",
          "word,", "word.", "(word)", "word;", "4:5", "word?", "a,b"]
SPACES = [" ", " ", " ", "  ", "\n", "\n\n", "\t", "\u00a0", "\u2003", ""]
drawn = st.one_of(
    st.lists(st.tuples(st.sampled_from(PIECES), st.sampled_from(SPACES)), max_size=30).map(
        lambda parts: "".join(p + s for p, s in parts)),
    st.text(max_size=120),                                                  # any Unicode, empty included
    st.text(alphabet=st.sampled_from(list("ab .,:'\"()?!-\n")), max_size=80),
    st.text(alphabet=st.sampled_from(list("ab1 .,:;()?!-\n")), max_size=80),  # no quotes: the fast paths
)


@pytest.fixture(scope="module")
def nltk_tokenizers():
    pytest.importorskip("nltk")
    from nltk.tokenize import NLTKWordTokenizer
    from nltk.tokenize.punkt import PunktSentenceTokenizer
    return PunktSentenceTokenizer(), NLTKWordTokenizer()


def nltk_words(tok, text):
    punkt, treebank = tok
    return [w.strip() for s in punkt.tokenize(text) for w in treebank.tokenize(s) if w.strip()]


@settings(max_examples=400)
@given(text=drawn)
@example(text="")
@example(text="word")                                                       # one word
@example(text="'¼")                                     # a word character to re's \w, not to regex's (NLTK's)
@example(text="He said \"don't\" (twice), e.g. 3,000 times... Done.")
@example(text="Very bad acting!!! I promise. J. Bach wrote 3. it. (Sent1.) Sent2. foo. )")
@example(text=" \"lead\n\"quote ''x'' a' 'b c'")
@example(text="The cat sat on the mat, and then it slept. " * 400)        # a huge line
def test_words_and_sentences_equal_nltk(nltk_tokenizers, text):
    W.clear_caches()
    assert W.sentence_spans(text) == list(nltk_tokenizers[0].span_tokenize(text))
    assert W.split_words(text) == nltk_words(nltk_tokenizers, text)
    assert W.split_words(text) == nltk_words(nltk_tokenizers, text)         # again, from warm caches


@settings(max_examples=400)
@given(text=drawn)
def test_skipping_cascade_equals_full_cascade(text):
    assert W.treebank_words(text) == W.treebank_words_reference(text)


@settings(max_examples=300)
@given(text=drawn)
def test_chunked_sentence_equals_cascade(text):
    sentence = text.strip()
    assert W.sentence_words(sentence) == W.treebank_words_reference(sentence)
