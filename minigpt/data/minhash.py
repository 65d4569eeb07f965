"""MinHash near-duplicate removal, FineWeb's settings and datatrove's arithmetic: word 5-grams,
14 buckets x 8 hashes.

For two documents with Jaccard similarity J between their 5-gram sets, one MinHash value agrees
with probability J; a bucket of 8 agrees with probability J^8, and the pair becomes a candidate
when any of 14 buckets agrees: P = 1 - (1 - J^8)^14 (0.5 at J ~ 0.72, 0.92 at J = 0.8).

Between J ~ 0.6 and 0.85 whether a pair is caught is a coin flip decided by the hash functions,
so two implementations with different hashes disagree on such pairs however correct both are.
These are datatrove's (MinhashConfig with sha1 and 64-bit precision, seed 1): its text
simplification, its word split of the simplified text, SHA-1 of " ".join(5 words), permutations
(a*h + b) mod 2^61-1 from NumPy's RandomState(1), the products wrapping at 2^64 first as in its
uint64 arithmetic; pairs found within each bucket in signature order, clusters by union by size.
So a document is dropped here exactly when datatrove drops it. csrc/textstats.c computes the
signature (SHA-1 and all); `signature_reference` is its NumPy twin.

Pipeline: signature per document (in the per-file workers) -> bucket keys -> union-find over all
documents that share a key -> keep one document per cluster (the root datatrove keeps).
"""
import hashlib
import struct
import unicodedata

import numpy as np
import regex

from minigpt._data import ffi, lib  # csrc/build_data.py

from . import words as W
from .filters import PUNCTUATION

N_GRAM, N_BUCKETS, HASHES_PER_BUCKET = 5, 14, 8
PRIME = np.uint64((1 << 61) - 1)  # a Mersenne prime
NO_SIGNATURE = np.iinfo(np.uint64).max  # the row of a document with fewer than 5 words: never a duplicate


def hash_params(n_hashes=N_BUCKETS * HASHES_PER_BUCKET, seed=1):
    """a, b of the permutations h(x) = (a*x + b) mod p, the same in every worker (datatrove's draw)."""
    gen = np.random.RandomState(seed)
    a = gen.randint(1, int(PRIME), dtype=np.uint64, size=(1, n_hashes))
    b = gen.randint(0, int(PRIME), dtype=np.uint64, size=(1, n_hashes))
    return np.ascontiguousarray(a.ravel()), np.ascontiguousarray(b.ravel())


# ------------------------------------------------------------------------------------------------
# text -> simplified words -> 5-gram hashes

NUMBER_RE = regex.compile(r"\p{Nd}+([.,،٫⎖⎗⎘]\p{Nd}+)?")
MARKS_RE = regex.compile(r"\p{Mn}+")  # nonspacing marks: the accents NFD splits off
PUNCT_TABLE = str.maketrans({c: " " for c in PUNCTUATION})
SPACES_RE = regex.compile(r"\s+", regex.V0)


def simplify(text):
    """datatrove's simplify_text: lowercase, numbers -> 0, punctuation -> space, whitespace runs ->
    one space, diacritics stripped."""
    text = NUMBER_RE.sub("0", text.lower()).translate(PUNCT_TABLE)
    text = " ".join(text.split())  # (str.split's whitespace is re's \s)
    if not text.isascii():
        text = MARKS_RE.sub("", unicodedata.normalize("NFD", text))
    return text.strip()


def normalise(text):
    """The words MinHash shingles: datatrove's English word split of the simplified text."""
    return W.split_words(simplify(text))


def shingle_hash(gram):
    return struct.unpack("<Q", hashlib.sha1(gram.encode("utf-8", "surrogatepass")).digest()[:8])[0]


def shingles(words, n=N_GRAM):
    """(n_shingles,) uint64: the hash of every run of n words (repeats included, none under n words)."""
    return np.array([shingle_hash(" ".join(words[i:i + n])) for i in range(len(words) - n + 1)], dtype=np.uint64)


def signature(shingle_hashes, params):
    """(n_hashes,) uint64: the minimum of each permutation over the document's shingles."""
    a, b = params
    if len(shingle_hashes) == 0:
        return np.full(len(a), NO_SIGNATURE, dtype=np.uint64)
    out = np.full(len(a), NO_SIGNATURE, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for start in range(0, len(shingle_hashes), 4096):  # bounded memory for long documents
            x = np.asarray(shingle_hashes[start:start + 4096], dtype=np.uint64)[:, None]
            np.minimum(out, ((x * a + b) % PRIME).min(axis=0), out=out)  # (n_shingles, n_hashes) -> (n_hashes,)
    return out


def signature_reference(words, params):
    """The twin of csrc/textstats.c's minhash_signature."""
    return signature(shingles(words), params)


def words_signature(words, params):
    """signature(shingles(words)) in one C pass (csrc/textstats.c); a word holding a NUL (the
    C side's separator) sends the document through the NumPy twin."""
    a, b = params
    buf = ("\0".join(words) + "\0").encode("utf-8", "surrogatepass")
    if not words or buf.count(b"\0") != len(words):
        return signature_reference(words, params)
    out = np.full(len(a), NO_SIGNATURE, dtype=np.uint64)
    p = lambda t, x: ffi.cast(t, ffi.from_buffer(x))  # noqa: E731
    if lib.minhash_signature(buf, len(buf), N_GRAM, p("uint64_t *", a), p("uint64_t *", b), len(a),
                             p("uint64_t *", out)) < 0:
        raise MemoryError("minhash_signature: out of memory")
    return out


def text_signature(text, params):
    return words_signature(normalise(text), params)


def jaccard_estimate(sig1, sig2):
    return float(np.mean(sig1 == sig2))


# ------------------------------------------------------------------------------------------------
# signatures of all documents -> clusters -> which to drop

def find_parent(parent, x):
    root = x
    while parent[root] != root:
        root = parent[root]
    while parent[x] != root:  # path compression
        parent[x], x = root, parent[x]
    return root


def union(parent, size, x, y):
    """datatrove's union by size: the smaller cluster joins the larger; on a tie x's root stays."""
    rx, ry = find_parent(parent, x), find_parent(parent, y)
    if rx != ry:
        if size[rx] < size[ry]:
            rx, ry = ry, rx
        parent[ry] = rx
        size[rx] += size[ry]


def bucket_pairs(band, has_sig):
    """One bucket's candidate pairs, as datatrove's bucket step makes them: the documents' rows of
    this band sorted by (key, index), and each equal neighbour pair joined. (k, 2) int64."""
    rows = sorted((tuple(band[i].tolist()), int(i)) for i in np.flatnonzero(has_sig))
    pairs = [(i, j) for (key_a, i), (key_b, j) in zip(rows, rows[1:]) if key_a == key_b]
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


def clusters(n, pairs_by_bucket):
    """Each document's cluster root: union by size over the buckets' pairs, bucket by bucket in
    order (datatrove's rule, so the same member of a cluster survives as in datatrove)."""
    parent, size = list(range(n)), [1] * n
    for pairs in pairs_by_bucket:
        for i, j in pairs.tolist():
            union(parent, size, i, j)
    return np.array([find_parent(parent, i) for i in range(n)], dtype=np.int64)


def duplicates(signatures, n_buckets=N_BUCKETS, hashes_per_bucket=HASHES_PER_BUCKET):
    """signatures: (N, n_buckets * hashes_per_bucket) uint64, one row per document in input order.
    Returns (drop, cluster): a bool mask of the documents to drop (every member of a cluster but
    its root) and each document's cluster root index. The one-process form of the dedup stages of
    minigpt/data/dedup.py, which give the same result over any number of tasks."""
    sigs = np.ascontiguousarray(signatures, dtype=np.uint64)
    n = len(sigs)
    has_sig = sigs[:, 0] != NO_SIGNATURE if n else np.zeros(0, dtype=bool)
    bands = (sigs[:, b * hashes_per_bucket:(b + 1) * hashes_per_bucket] for b in range(n_buckets))
    cluster = clusters(n, (bucket_pairs(band, has_sig) for band in bands))
    return cluster != np.arange(n), cluster
