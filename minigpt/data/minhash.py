"""MinHash near-duplicate removal, FineWeb's settings: word 5-grams, 14 buckets x 8 hashes.

For two documents with Jaccard similarity J between their 5-gram sets, one MinHash value agrees
with probability J; a bucket of 8 agrees with probability J^8, and the pair becomes a candidate
when any of 14 buckets agrees: P = 1 - (1 - J^8)^14 (0.5 at J ~ 0.72, 0.92 at J = 0.8).

Pipeline: signature per document (in the per-file workers) -> bucket keys -> union-find over all
documents that share a key -> keep one document per cluster (the first in input order).
"""
import unicodedata

import numpy as np
import regex

from .filters import PUNCTUATION

N_GRAM, N_BUCKETS, HASHES_PER_BUCKET = 5, 14, 8
PRIME = np.uint64(4294967291)  # largest prime below 2^32: (a*x + b) < 2^64 never overflows


def hash_params(n_hashes=N_BUCKETS * HASHES_PER_BUCKET, seed=1):
    """a, b of the universal permutations h(x) = (a*x + b) mod p, the same in every worker."""
    rng = np.random.default_rng(seed)
    a = rng.integers(1, int(PRIME), size=n_hashes, dtype=np.uint64)
    b = rng.integers(0, int(PRIME), size=n_hashes, dtype=np.uint64)
    return a, b


# ------------------------------------------------------------------------------------------------
# text -> normalised words -> 5-gram hashes

NUMBER_RE = regex.compile(r"\p{Nd}+([.,،٫⎖⎗⎘]\p{Nd}+)?")
PUNCT_TABLE = str.maketrans({c: " " for c in PUNCTUATION})


def normalise(text):
    """datatrove's simplify_text: lowercase, numbers -> 0, punctuation -> space, strip diacritics."""
    text = NUMBER_RE.sub("0", text.lower()).translate(PUNCT_TABLE)
    if not text.isascii():
        text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
    return text.split()


M64 = (1 << 64) - 1


def mix64(h):
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & M64
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & M64
    return h ^ (h >> 33)


def word_hash(word):
    """64-bit hash of a word: FNV-1a over its UTF-8 bytes, then a finalizer that spreads the bits."""
    h = 1469598103934665603
    for c in word.encode("utf-8", "surrogatepass"):
        h = ((h ^ c) * 1099511628211) & M64
    return mix64(h)


def shingles(words, n=N_GRAM):
    """32-bit hashes of the distinct word n-grams (a document shorter than n is one n-gram).

    Each distinct word is hashed once; an n-gram's hash mixes its words' hashes position by
    position (multiply-xorshift in uint64), then is reduced mod p."""
    if not words:
        return np.zeros(0, dtype=np.uint64)
    cache = {}
    wh = np.fromiter((cache[w] if w in cache else cache.setdefault(w, word_hash(w)) for w in words),
                     dtype=np.uint64, count=len(words))
    k = max(1, len(words) - n + 1)
    h = np.full(k, np.uint64(0x9E3779B97F4A7C15))
    with np.errstate(over="ignore"):
        for j in range(min(n, len(words))):
            h = (h ^ wh[j:j + k]) * np.uint64(0xBF58476D1CE4E5B9)  # order-sensitive mixing
            h ^= h >> np.uint64(31)
    return np.unique(h % PRIME)


def signature(shingle_hashes, params):
    """(n_hashes,) uint32: the minimum of each permutation over the document's shingles."""
    a, b = params
    if len(shingle_hashes) == 0:
        return np.full(len(a), int(PRIME), dtype=np.uint32)  # no word at all: empty docs are duplicates of each other
    out = np.full(len(a), np.iinfo(np.uint64).max, dtype=np.uint64)
    for start in range(0, len(shingle_hashes), 4096):  # bounded memory for long documents
        x = shingle_hashes[start:start + 4096, None]
        np.minimum(out, ((a * x + b) % PRIME).min(axis=0), out=out)  # (n_shingles, n_hashes) -> (n_hashes,)
    return out.astype(np.uint32)


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
    from minigpt._data import ffi, lib
    out = np.empty(len(a), dtype=np.uint32)
    p = lambda t, x: ffi.cast(t, ffi.from_buffer(x))  # noqa: E731
    if lib.minhash_signature(buf, len(buf), N_GRAM, p("uint64_t *", a), p("uint64_t *", b), len(a),
                             p("uint32_t *", out)) != 0:
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


def union(parent, x, y):
    rx, ry = find_parent(parent, x), find_parent(parent, y)
    if rx != ry:  # the smaller index (earlier in input order) stays the root: it is the one kept
        parent[max(rx, ry)] = min(rx, ry)


def duplicates(signatures, n_buckets=N_BUCKETS, hashes_per_bucket=HASHES_PER_BUCKET):
    """signatures: (N, n_buckets * hashes_per_bucket) uint32, one row per document in input order.
    Returns (drop, cluster): a bool mask of the documents to drop (every member of a cluster but
    its first) and each document's cluster root index."""
    sigs = np.ascontiguousarray(signatures, dtype=np.uint32)
    n = len(sigs)
    parent = list(range(n))
    for bucket in range(n_buckets):
        band = sigs[:, bucket * hashes_per_bucket:(bucket + 1) * hashes_per_bucket]
        first = {}
        for i, key in enumerate(map(bytes, band)):
            j = first.setdefault(key, i)
            if j != i:
                union(parent, j, i)
    cluster = np.array([find_parent(parent, i) for i in range(n)], dtype=np.int64)
    return cluster != np.arange(n), cluster
