"""Step 2: byte-pair encoding, the slow clear version (csrc/bpe.c is the same, made fast).

Training. Count the distinct chunks of the corpus (a streaming pass: memory grows with the number
of distinct chunks, not with the corpus). Start every chunk as its bytes, ids 0..255. Then, until
the vocabulary is big enough: count adjacent pairs over all chunks (each weighted by how often the
chunk occurs), merge the most frequent pair everywhere into a new token.
  Tie-breaking: most frequent pair first; among equals, the smallest (left id, right id).
  (minbpe's "first occurrence" rule depends on document order, which a streaming count forgets.)
  If a pair's bytes already form a token (two different pairs can spell the same bytes), the merge
  reuses that token's id, as HF tokenizers does: every id keeps distinct bytes, so the result is a
  valid tiktoken rank table.

Encoding (tiktoken's rule). A chunk that is itself a token is that token. Otherwise start from
its bytes and repeatedly merge the adjacent pair whose concatenation has the lowest rank (= id),
the leftmost on ties, until no adjacent concatenation is a token.
"""
from collections import Counter

from .pretokenize import split


MAX_CHUNK = 255  # bytes: a longer chunk is counted as pieces (csrc/bpe_train.c: BPE_MAX_CHUNK)


def count_chunks(docs, pattern):
    """{chunk bytes: count} over an iterable of str documents. A chunk longer than MAX_CHUNK bytes
    counts as pieces of at most that length: training rewrites every word holding a merged pair,
    so one huge word made it quadratic in that word's length; and no token then exceeds 255 bytes,
    the most llm.c's tokenizer .bin stores."""
    counts = Counter()
    for doc in docs:
        for chunk in split(doc, pattern):
            b = chunk.encode("utf-8")
            counts.update(b[i:i + MAX_CHUNK] for i in range(0, len(b), MAX_CHUNK))
    return counts


def train(chunk_counts, vocab_size):
    """Merges [(left, right, new_id)] and the vocabulary [bytes per id] from chunk counts."""
    words = [list(chunk) for chunk in chunk_counts]           # each chunk as byte ids
    counts = list(chunk_counts.values())
    vocab = [bytes([i]) for i in range(256)]
    ids = {tok: i for i, tok in enumerate(vocab)}
    merges = []
    while len(vocab) < vocab_size:
        stats = Counter()
        for w, c in zip(words, counts):
            for pair in zip(w, w[1:]):
                stats[pair] += c
        if not stats:
            break                                             # every chunk is one token
        a, b = min(stats, key=lambda p: (-stats[p], p))       # most frequent, then smallest ids
        new = vocab[a] + vocab[b]
        if new not in ids:
            ids[new] = len(vocab)
            vocab.append(new)
        t = ids[new]
        merges.append((a, b, t))
        words = [merge(w, a, b, t) for w in words]
    return merges, vocab


def merge(ids, a, b, t):
    """Replace every non-overlapping (a, b) in ids, left to right, with t."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == a and ids[i + 1] == b:
            out.append(t)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def encode_chunk(chunk, ranks):
    """tiktoken's byte-pair merge of one chunk (bytes) given ranks {token bytes: id}."""
    if chunk in ranks:
        return [ranks[chunk]]
    parts = [chunk[i:i + 1] for i in range(len(chunk))]
    while len(parts) > 1:
        best, best_rank = None, None
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and (best_rank is None or r < best_rank):
                best, best_rank = i, r
        if best is None:
            break
        parts[best:best + 2] = [parts[best] + parts[best + 1]]
    return [ranks[p] for p in parts]


def encode_ordinary(text, ranks, pattern):
    """Ids of text, special tokens not recognised: split, then merge each chunk."""
    ids = []
    for chunk in split(text, pattern):
        ids.extend(encode_chunk(chunk.encode("utf-8"), ranks))
    return ids
