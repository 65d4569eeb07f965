"""The search tool: BM25 over a local document collection, so facts arrive in the context window.

    index = SearchIndex.build(documents)            # documents: [(doc_id, text), ...]
    index.search("what does os.path.join do", k=3)  # -> [(score, doc_id, passage), ...]
    snippets(index, query, k=3, budget=120, count=len)  # the text the engine puts into the stream

Documents are cut into passages of about PASSAGE_WORDS words (on paragraph boundaries where it
can), so a result is a paragraph, not a whole file. A passage's score for a query is BM25
(Robertson et al.; the form Lucene uses):

    score = sum over query words w of  idf(w) * f (k1 + 1) / (f + k1 (1 - b + b |p| / avg|p|))
    idf(w) = ln(1 + (N - n_w + 0.5) / (n_w + 0.5))

with f the count of w in the passage, |p| its length in words, N passages, n_w of them holding w.
Ties are broken by passage order, so results are deterministic. The index is plain JSON (no pickle),
cached on disk under a hash of the collection, and only ever reads the collection it was built from.
"""
import hashlib
import json
import math
import os
import re
from collections import Counter

from ..fileio import write_json

WORD = re.compile(r"\w+", re.UNICODE)
PASSAGE_WORDS = 80
K1, B = 1.5, 0.75
MAX_QUERY_CHARS = 500


def words(text):
    return WORD.findall(text.lower())


def passages(doc_id, text, size=PASSAGE_WORDS):
    """Cut a document into passages of about `size` words, keeping paragraphs whole where they fit."""
    out, current = [], []
    for para in re.split(r"\n\s*\n", text):
        n = len(para.split())
        if current and sum(len(p.split()) for p in current) + n > size:
            out.append("\n\n".join(current))
            current = []
        if n > 2 * size:  # a very long paragraph: cut it by words
            tokens = para.split()
            out += [" ".join(tokens[i:i + size]) for i in range(0, len(tokens), size)]
        elif para.strip():
            current.append(para.strip())
    if current:
        out.append("\n\n".join(current))
    return [(doc_id, p) for p in out]


class SearchIndex:
    def __init__(self, passages, postings, lengths):
        self.passages = passages    # [(doc_id, text)]
        self.postings = postings    # word -> [[passage index, count], ...]
        self.lengths = lengths      # words per passage
        self.avg = sum(lengths) / max(len(lengths), 1)

    @classmethod
    def build(cls, documents):
        cut = [p for doc_id, text in documents for p in passages(doc_id, text)]
        postings, lengths = {}, []
        for i, (_, text) in enumerate(cut):
            counts = Counter(words(text))
            lengths.append(sum(counts.values()))
            for w, c in counts.items():
                postings.setdefault(w, []).append([i, c])
        return cls(cut, postings, lengths)

    def search(self, query, k=3):
        """The k best passages for the query: [(score, doc_id, text)], best first."""
        N, scores = len(self.passages), Counter()
        for w in set(words(query[:MAX_QUERY_CHARS])):
            hits = self.postings.get(w, ())
            idf = math.log(1 + (N - len(hits) + 0.5) / (len(hits) + 0.5))
            for i, f in hits:
                norm = K1 * (1 - B + B * self.lengths[i] / self.avg)
                scores[i] += idf * f * (K1 + 1) / (f + norm)
        best = sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:k]
        return [(score, *self.passages[i]) for i, score in best]

    def save(self, path):
        write_json(path, {"passages": self.passages, "postings": self.postings, "lengths": self.lengths})

    @classmethod
    def load(cls, path):
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return cls([tuple(p) for p in data["passages"]], data["postings"], data["lengths"])


def cached_index(documents, cache_dir):
    """The index of a collection, built once and kept in cache_dir under the collection's hash."""
    documents = list(documents)
    digest = hashlib.sha256()
    for doc_id, text in documents:
        digest.update(f"{len(doc_id)}:{doc_id}{len(text)}:".encode() + text.encode("utf-8", "replace"))
    path = os.path.join(cache_dir, f"search-{digest.hexdigest()[:16]}.json")
    if os.path.exists(path):
        try:
            return SearchIndex.load(path)
        except (ValueError, KeyError, OSError):  # a damaged cache is rebuilt, never trusted
            pass
    index = SearchIndex.build(documents)
    os.makedirs(cache_dir, exist_ok=True)
    index.save(path)
    return index


def snippets(index, query, k=3, budget=200, count=lambda s: len(s.split())):
    """The top-k passages as one text of at most `budget` units of `count` (words by default; pass a
    tokenizer's token count to budget tokens), each passage cut to what still fits."""
    if not isinstance(query, str) or not query.strip():
        return "error: empty search query"
    out, used = [], 0
    for _, doc_id, text in index.search(query, k):
        piece = f"[{doc_id}] {text}"
        room = budget - used
        if room <= 0:
            break
        if count(piece) > room:  # cut by words until it fits
            cut = piece.split()
            lo, hi = 0, len(cut)
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if count(" ".join(cut[:mid])) <= room:
                    lo = mid
                else:
                    hi = mid - 1
            piece = " ".join(cut[:lo])
        if piece:
            out.append(piece)
            used += count(piece)
    return "\n".join(out) if out else "no results"
