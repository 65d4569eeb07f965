"""fastText language ID, read and run by minigpt: the lid.176.ftz model, fastText's arithmetic.

fastText's predict spends most of its time on strings: every word of a page becomes a std::string,
its character n-grams more strings, each looked up in hash maps. Here the model file is read once
into arrays (the product-quantised input matrix decoded to float32 rows, the vocabulary as an
open-addressing table, the pruning index a dense array), and csrc/langid.c walks the
page's bytes adding rows. The floats are added in fastText's order, so the scores are fastText's;
tests/test_data_langid.py checks that against the fasttext module on drawn text.

This file is also the reference: `hidden_sum_reference` and `best_label_reference` are the C
routines in plain Python, the twins the tests compare against.

The .ftz format (fastText's FastText::loadModel): magic, version, Args, Dictionary (entries,
pruning index), quantised input matrix, output matrix.
"""
import math
import re
import struct

import numpy as np

from minigpt._data import ffi, lib  # csrc/build_data.py

MAGIC, VERSION = 793712314, 12
LOSS_HS = 1
EOS = "</s>"
LABEL_PREFIX = "__label__"
SPACE_RE = re.compile(r"[ \n\r\t\v\f\x00]+")  # fastText's readWord separators


class Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, fmt):
        vals = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return vals if len(vals) > 1 else vals[0]

    def array(self, dtype, n):
        a = np.frombuffer(self.data, dtype=dtype, count=n, offset=self.pos)
        self.pos += a.nbytes
        return a

    def cstring(self):
        end = self.data.index(b"\0", self.pos)
        s = self.data[self.pos:end]
        self.pos = end + 1
        return s


def read_pq(r):
    """ProductQuantizer: dim, nsubq, dsub, lastdsub, then 256 centroids per sub-quantizer."""
    dim, nsubq, dsub, lastdsub = r.take("4i")
    return dict(dim=dim, nsubq=nsubq, dsub=dsub, lastdsub=lastdsub, centroids=r.array(np.float32, dim * 256))


def pq_decode(pq, codes):
    """codes (m, nsubq) uint8 -> (m, dim) float32 rows (sub-quantizer k covers dims k*dsub...)."""
    dsub, nsubq, cen = pq["dsub"], pq["nsubq"], pq["centroids"]
    parts = []
    for k in range(nsubq):
        d = pq["lastdsub"] if k == nsubq - 1 else dsub
        table = cen[k * 256 * dsub:k * 256 * dsub + 256 * d].reshape(256, d)  # the last block is lastdsub wide
        parts.append(table[codes[:, k]])
    return np.concatenate(parts, axis=1)


def read_matrix(r, quantised):
    if not quantised:
        m, n = r.take("2q")
        return r.array(np.float32, m * n).reshape(m, n)
    qnorm = r.take("?")
    m, n, codesize = r.take("qqi")
    codes = r.array(np.uint8, codesize)
    pq = read_pq(r)
    rows = pq_decode(pq, codes.reshape(m, pq["nsubq"]))
    if qnorm:  # each row is scaled by a quantised norm, multiplied in float32 as fastText does
        norm_codes = r.array(np.uint8, m)
        npq = read_pq(r)
        rows = rows * npq["centroids"][norm_codes][:, None]
    return np.ascontiguousarray(rows, dtype=np.float32)


def fnv1a(b):
    h = 2166136261
    for c in b:
        h = ((h ^ (c - 256 if c >= 128 else c)) * 16777619) & 0xFFFFFFFF  # signed chars, as fastText
    return h


def huffman_tree(counts):
    """fastText's HierarchicalSoftmax tree over labels sorted by count (descending): left, right."""
    osz = len(counts)
    count = list(counts) + [1e15] * (osz - 1)
    left, right = [-1] * (2 * osz - 1), [-1] * (2 * osz - 1)
    leaf, node = osz - 1, osz
    for i in range(osz, 2 * osz - 1):
        mini = []
        for _ in range(2):
            if leaf >= 0 and count[leaf] < count[node]:
                mini.append(leaf)
                leaf -= 1
            else:
                mini.append(node)
                node += 1
        left[i], right[i] = mini
        count[i] = count[mini[0]] + count[mini[1]]
    return np.array(left, dtype=np.int32), np.array(right, dtype=np.int32)


class FastTextModel:
    """A supervised fastText model with hierarchical softmax, as arrays."""

    def __init__(self, path):
        with open(path, "rb") as f:
            r = Reader(f.read())
        magic, version = r.take("2i")
        if magic != MAGIC or version != VERSION:
            raise ValueError(f"{path}: not a fastText v{VERSION} model (magic {magic}, version {version})")
        (self.dim, _ws, _epoch, _min_count, _neg, word_ngrams, loss, _model, self.bucket,
         self.minn, self.maxn, _lr_update) = r.take("12i")
        r.take("d")
        if loss != LOSS_HS or word_ngrams != 1:
            raise ValueError(f"{path}: only hierarchical-softmax models without word n-grams are supported")
        size, self.nwords, self.nlabels = r.take("3i")
        _ntokens, prune_size = r.take("2q")
        self.words, counts = [], []
        for _ in range(size):
            self.words.append(r.cstring())
            count, _kind = r.take("qb")
            counts.append(count)
        pairs = r.array(np.int32, 2 * max(prune_size, 0)).reshape(-1, 2)
        if prune_size < 0:  # not pruned: every bucket is a row
            self.prune = np.arange(self.bucket, dtype=np.int32)
        else:  # n-gram bucket -> row past nwords, -1: pruned away
            self.prune = np.full(self.bucket, -1, dtype=np.int32)
            self.prune[pairs[:, 0]] = pairs[:, 1]
        self.rows = read_matrix(r, r.take("?"))                        # (nwords + n-gram rows, dim)
        self.out = read_matrix(r, r.take("?"))                         # (nlabels, dim)
        self.labels = [w.decode().removeprefix(LABEL_PREFIX) for w in self.words[self.nwords:]]
        self.left, self.right = huffman_tree(counts[self.nwords:])
        self.index = {w: i for i, w in enumerate(self.words)}

    def ngram_rows(self, bw):
        """Rows of the character n-grams of bw ("<word>" as UTF-8): fastText's computeSubwords."""
        rows, n = [], len(bw)
        for i in range(n):
            if bw[i] & 0xC0 == 0x80:
                continue
            j, k = i, 1
            while j < n and k <= self.maxn:
                j += 1
                while j < n and bw[j] & 0xC0 == 0x80:
                    j += 1
                if k >= self.minn and not (k == 1 and (i == 0 or j == n)):
                    row = self.prune[fnv1a(bw[i:j]) % self.bucket]
                    if row >= 0:
                        rows.append(self.nwords + int(row))
                k += 1
        return rows

    def input_rows(self, line):
        """The rows fastText averages for one line, in its order."""
        rows = []
        for w in [t for t in SPACE_RE.split(line) if t] + [EOS]:
            b = w.encode("utf-8", "surrogatepass")
            i = self.index.get(b)
            if i is not None and i < self.nwords:  # its own row, then its n-grams ("</s>" has none)
                rows += [i] + ([] if w == EOS else self.ngram_rows(b"<" + b + b">"))
            elif i is None and not w.startswith(LABEL_PREFIX):
                rows += self.ngram_rows(b"<" + b + b">")
            if w == EOS:  # a literal "</s>" ends the line, as in fastText's getLine
                break
        return rows


def hidden_sum_reference(model, line):
    """The twin of lid_hidden_sum: float32 sum of the line's rows, in order; and how many."""
    rows = model.input_rows(line)
    h = np.zeros(model.dim, dtype=np.float32)
    for i in rows:
        h += model.rows[i]
    return h, len(rows)


def best_label_reference(model, hidden):
    """The twin of lid_hs_best: the best leaf of the Huffman tree and its float32 log-probability."""
    f32 = np.float32
    std_log = lambda p: f32(math.log(float(p) + 1e-5))  # noqa: E731
    best = [None, f32(0)]

    def dfs(node, score):
        if score < std_log(f32(0)) or (best[0] is not None and score < best[1]):
            return
        if model.left[node] == -1 and model.right[node] == -1:
            if best[0] is None or score >= best[1]:
                best[:] = [node, score]
            return
        d = f32(0)
        for a, b in zip(model.out[node - model.nlabels], hidden):
            d = f32(d + f32(a * b))
        f = f32(1.0 / float(f32(1) + np.exp(-d)))
        dfs(model.left[node], f32(score + std_log(f32(1) - f)))
        dfs(model.right[node], f32(score + std_log(f)))

    dfs(2 * model.nlabels - 2, f32(0))
    return best[0], best[1]


def mean_hidden(h, n):
    return h * np.float32(1.0 / n) if n else h


# ------------------------------------------------------------------------------------------------
# the fast path (csrc/langid.c)

class FastLanguageID:
    """model.predict(line) -> (label, probability), fastText's top-1 answer."""

    def __init__(self, path):
        self.ffi, self.lib = ffi, lib
        m = self.model = FastTextModel(path)
        n = len(m.words)
        size = 1 << max(4, (2 * n - 1).bit_length())
        table = np.full(size, -1, dtype=np.int32)
        hashes = np.array([fnv1a(w) for w in m.words], dtype=np.uint32)
        for i, h in enumerate(hashes.tolist()):
            slot = h & (size - 1)
            while table[slot] >= 0:
                slot = (slot + 1) & (size - 1)
            table[slot] = i
        offs = np.zeros(n + 1, dtype=np.int64)
        offs[1:] = np.cumsum([len(w) for w in m.words])
        keep = dict(rows=m.rows, prune=m.prune, table=table, hashes=hashes, offs=offs,
                    blob=np.frombuffer(b"".join(m.words), dtype=np.uint8),
                    out=m.out, left=m.left, right=m.right)
        self.keep = keep  # the arrays must outlive the struct that points into them
        ptr = lambda t, a: ffi.cast(t, ffi.from_buffer(a))  # noqa: E731
        self.c = ffi.new("lid_model *", dict(
            dim=m.dim, nwords=m.nwords, minn=m.minn, maxn=m.maxn, bucket=m.bucket,
            rows=ptr("float *", keep["rows"]), prune=ptr("int32_t *", keep["prune"]),
            table=ptr("int32_t *", table), word_hash=ptr("uint32_t *", hashes), word_off=ptr("int64_t *", offs),
            word_bytes=ptr("uint8_t *", keep["blob"]), mask=size - 1))
        self.hidden = np.zeros(m.dim, dtype=np.float32)
        self.out_p = ptr("float *", m.out)
        self.left_p, self.right_p = ptr("int32_t *", m.left), ptr("int32_t *", m.right)
        self.score = ffi.new("float *")

    def hidden_sum(self, line):
        b = line.encode("utf-8", "surrogatepass")
        scratch = self.ffi.new("uint8_t[]", len(b) + 2)
        n = self.lib.lid_hidden_sum(self.c, b, len(b), self.ffi.cast("float *", self.ffi.from_buffer(self.hidden)),
                                    scratch)
        return self.hidden.copy(), n

    def predict(self, line):
        h, n = self.hidden_sum(line)
        if n == 0:
            return "unknown", 0.0
        h = mean_hidden(h, n)
        leaf = self.lib.lid_hs_best(self.out_p, self.left_p, self.right_p, self.model.nlabels, self.model.dim,
                                    self.ffi.cast("float *", self.ffi.from_buffer(h)), self.score)
        return self.model.labels[leaf], min(1.0, math.exp(self.score[0]))
