"""MinHash: the Jaccard estimate is unbiased with the binomial spread theory predicts; LSH catches
pairs above ~0.75 and not those far below; union-find keeps exactly one per cluster; the C
signature equals its NumPy twin, and both equal datatrove's own when it is installed."""
import numpy as np
from hypothesis import example, given, settings, strategies as st

from minigpt.data import minhash as M


def pair_with_jaccard(rng, j, size=400):
    """Two sets of shingle hashes with |A & B| / |A | B| = j exactly."""
    union = rng.choice(int(M.PRIME), size=size, replace=False).astype(np.uint64)
    both = int(round(j * size))
    only = size - both
    a = np.concatenate([union[:both], union[both:both + only // 2]])
    b = np.concatenate([union[:both], union[both + only // 2:]])
    return a, b, both / size


def test_jaccard_estimate_within_theory():
    params = M.hash_params()
    k = len(params[0])                       # 112 hashes: the estimate is Binomial(k, J) / k
    rng = np.random.default_rng(0)
    errors, sds = [], []
    for j in np.linspace(0.05, 0.95, 40):
        a, b, true_j = pair_with_jaccard(rng, j)
        est = M.jaccard_estimate(M.signature(np.unique(a), params), M.signature(np.unique(b), params))
        sd = np.sqrt(true_j * (1 - true_j) / k)
        assert abs(est - true_j) <= 4.5 * sd + 1 / k, (true_j, est)
        errors.append(est - true_j)
        sds.append(sd)
    # unbiased: the mean error over 40 pairs is within 3 standard errors of 0
    assert abs(np.mean(errors)) <= 3 * np.sqrt(np.mean(np.square(sds)) / len(errors))
    # and the spread matches the binomial: the normalised errors have variance ~1 (loose bounds)
    z = np.array(errors) / np.array(sds)
    assert 0.3 < np.var(z) < 2.5


def test_lsh_catches_near_duplicates_only():
    params = M.hash_params()
    rng = np.random.default_rng(1)
    sigs = []
    for j in [0.95] * 10 + [0.3] * 10:
        a, b, _ = pair_with_jaccard(rng, j)
        sigs += [M.signature(np.unique(a), params), M.signature(np.unique(b), params)]
    drop, cluster = M.duplicates(np.array(sigs))
    # P(caught) = 1 - (1 - J^8)^14: 0.9999+ at 0.95, 0.0009 at 0.3
    assert drop[1:20:2].all() and not drop[0:20:2].any()
    assert not drop[20:].any()


def test_text_signature_normalises():
    params = M.hash_params()
    t1 = "The Quick brown fox, jumped over 12 lazy dogs!  Then it slept in the sun for 3 hours."
    t2 = "the quick brown fox jumped over 99 lazy dogs then it slept in the sun for 7 hours"
    assert np.array_equal(M.text_signature(t1, params), M.text_signature(t2, params))
    assert M.jaccard_estimate(M.text_signature(t1, params), M.text_signature("something else entirely here now", params)) < 0.1


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 29), st.integers(0, 29)), max_size=40))
def test_union_find_clusters_match_connected_components(edges):
    # documents i and j share a bucket key exactly when an edge joins them; compare with a
    # plain graph search, and check one survivor per component
    n = 30
    sigs = np.arange(n * M.N_BUCKETS * M.HASHES_PER_BUCKET, dtype=np.uint64).reshape(n, -1)
    for e, (i, j) in enumerate(edges):
        bucket = e % M.N_BUCKETS
        sl = slice(bucket * M.HASHES_PER_BUCKET, (bucket + 1) * M.HASHES_PER_BUCKET)
        sigs[j, sl] = sigs[i, sl] = 10**9 + e
        # an edge claims a whole band; an earlier edge's band on i/j may be overwritten, so
        # recompute the true edges from the final signatures below
    adj = {i: set() for i in range(n)}
    for b in range(M.N_BUCKETS):
        sl = slice(b * M.HASHES_PER_BUCKET, (b + 1) * M.HASHES_PER_BUCKET)
        for i in range(n):
            for j in range(i + 1, n):
                if np.array_equal(sigs[i, sl], sigs[j, sl]):
                    adj[i].add(j)
                    adj[j].add(i)
    comp = {}
    for s in range(n):
        if s in comp:
            continue
        stack, comp[s] = [s], s
        while stack:
            for v in adj[stack.pop()]:
                if v not in comp:
                    comp[v] = s
                    stack.append(v)
    drop, cluster = M.duplicates(sigs)
    # the same partition; one survivor per component (the root datatrove's union by size leaves),
    # which is every member's cluster id
    same = lambda i, j: comp[i] == comp[j]  # noqa: E731
    assert all((cluster[i] == cluster[j]) == same(i, j) for i in range(n) for j in range(n))
    for i in range(n):
        assert same(i, int(cluster[i])) and not drop[int(cluster[i])]
    assert int((~drop).sum()) == len(set(comp.values()))


# ------------------------------------------------------------------------------------------------
# the C signature (csrc/textstats.c) against its NumPy twin


@settings(max_examples=200)
@given(words=st.lists(st.one_of(st.sampled_from(["a", "b", "é", "日本", "😀", "the"]),
                                st.text(min_size=1, max_size=8)), max_size=60))
@example(words=[])                       # empty: no shingle, no signature
@example(words=["one"])                  # one word: fewer than 5, no shingle either
@example(words=["w\0rd", "x"])           # a NUL inside a word: the twin answers
@example(words=["long"] * 20000)         # a huge document of one repeated word
def test_c_signature_equals_numpy_twin(words):
    params = M.hash_params()
    assert np.array_equal(M.words_signature(words, params), M.signature_reference(words, params))


def test_signature_equals_datatrove():
    """The same 112 values as datatrove's MinhashDedupSignature (sha1, 64-bit) on real-looking text."""
    import pytest
    pytest.importorskip("datatrove")
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature
    from datatrove.utils.hashing import HashConfig
    from datatrove.utils.word_tokenizers import WordTokenizer
    from minigpt.data import words as W

    class Words(WordTokenizer):  # NLTK's algorithms without the punkt download (words.py is checked against NLTK)
        def word_tokenize(self, text):
            return W.split_words(text)

        def sent_tokenize(self, text):
            return W.split_sentences(text)

        def span_tokenize(self, text):
            return W.sentence_spans(text)

    config = MinhashConfig(hash_config=HashConfig(precision=64, hash_fc="sha1"))
    step = MinhashDedupSignature("/tmp/unused", config=config, language=Words("en"))
    text = ("Café owners said: the 12 cats, 3.5 dogs & one élan cannot wait. They're gonna stay!\n"
            "Another line -- with “quotes” and e.g. abbreviations... done.") * 3
    theirs = np.array([h for bucket in step.get_signature(step.get_shingles(text)) for h in bucket], dtype=np.uint64)
    assert np.array_equal(M.text_signature(text, M.hash_params()), theirs)
