"""Thin wrappers over the C module minigpt._bpe (csrc/bpe.c): same results as bpe.py, fast.

cffi releases the GIL during each C call, so threads encoding different texts run in parallel;
each thread keeps its own chunk cache (the rank tables are shared and read-only).
"""
import threading

import numpy as np

from .pretokenize import PATTERNS, unicode_classes

try:
    from minigpt._bpe import ffi, lib
except ImportError:  # not compiled: `pip install -e .` or `python csrc/build_bpe.py`
    ffi = lib = None

_classes_lock = threading.Lock()
_classes_set = False


def available():
    return lib is not None


def _ensure_classes():
    global _classes_set
    if not _classes_set:
        with _classes_lock:
            if not _classes_set:
                table = unicode_classes()            # cached for the process: C keeps the pointer
                lib.bpe_set_classes(ffi.from_buffer("uint8_t[]", table), len(table))
                _classes_set = True


def _ptr(ctype, arr):
    return ffi.from_buffer(ctype, arr)


def split(text, pattern):
    """The C scanner's chunks of text (for checking it against the regex)."""
    _ensure_classes()
    data = text.encode("utf-8")
    ends = np.empty(max(len(data), 1), dtype=np.int64)
    n = lib.bpe_split(PATTERNS[pattern][1], data, len(data), _ptr("int64_t[]", ends))
    starts = [0] + ends[:n - 1].tolist()
    return [data[s:e].decode("utf-8") for s, e in zip(starts, ends[:n].tolist())]


class Encoder:
    """A vocabulary (list of token bytes, id = rank) compiled into C hash tables."""

    def __init__(self, vocab):
        _ensure_classes()
        blob = b"".join(vocab)
        offsets = np.zeros(len(vocab) + 1, dtype=np.int64)
        np.cumsum([len(t) for t in vocab], out=offsets[1:])
        err = ffi.new("int *")
        b = lib.bpe_new(blob, _ptr("int64_t[]", offsets), len(vocab), err)
        if b == ffi.NULL:
            why = {1: "out of memory", 2: "two tokens have the same bytes",
                   3: "not every single byte is a token", 4: "a token is empty"}[err[0]]
            raise ValueError(f"cannot build the BPE tables: {why}")
        self._b = ffi.gc(b, lib.bpe_free)
        self._local = threading.local()

    def _cache(self):
        c = getattr(self._local, "cache", None)
        if c is None:
            c = ffi.gc(lib.bpe_cache_new(), lib.bpe_cache_free)
            if c == ffi.NULL:
                raise MemoryError("cannot allocate the BPE chunk cache")
            self._local.cache = c
        return c

    def encode(self, data, pattern):
        """ids (int32 array) of UTF-8 bytes `data`."""
        out = np.empty(max(len(data), 1), dtype=np.int32)
        n = lib.bpe_encode(self._b, self._cache(), PATTERNS[pattern][1], data, len(data),
                           _ptr("int32_t[]", out))
        if n < 0:
            raise MemoryError("out of memory while encoding")
        return out[:n]

    def encode_many(self, datas, pattern):
        """ids of many byte strings in one C call: (ids int32 array, offsets int64 array)."""
        blob = b"".join(datas)
        offs = np.zeros(len(datas) + 1, dtype=np.int64)
        np.cumsum([len(d) for d in datas], out=offs[1:])
        out = np.empty(max(len(blob), 1), dtype=np.int32)
        out_offs = np.empty(len(datas) + 1, dtype=np.int64)
        n = lib.bpe_encode_many(self._b, self._cache(), PATTERNS[pattern][1], blob,
                                _ptr("int64_t[]", offs), len(datas), _ptr("int32_t[]", out),
                                _ptr("int64_t[]", out_offs))
        if n < 0:
            raise MemoryError("out of memory while encoding")
        return out[:n], out_offs


class ChunkCounter:
    """Distinct chunks and their counts over a stream of documents, held in C."""

    def __init__(self, pattern):
        _ensure_classes()
        self.pattern = pattern
        c = lib.bpe_counter_new()
        if c == ffi.NULL:
            raise MemoryError("cannot allocate the chunk counter")
        self._c = ffi.gc(c, lib.bpe_counter_free)

    def add(self, text):
        data = text.encode("utf-8", "replace") if isinstance(text, str) else text
        if lib.bpe_counter_add(self._c, PATTERNS[self.pattern][1], data, len(data)) != 0:
            raise MemoryError("out of memory while counting chunks")

    def __len__(self):
        return lib.bpe_counter_size(self._c)

    def to_dict(self):
        n, nbytes = len(self), lib.bpe_counter_bytes(self._c)
        blob = bytearray(max(nbytes, 1))
        ends = np.empty(max(n, 1), dtype=np.int64)
        counts = np.empty(max(n, 1), dtype=np.int64)
        lib.bpe_counter_dump(self._c, _ptr("uint8_t[]", blob), _ptr("int64_t[]", ends),
                             _ptr("int64_t[]", counts))
        starts = [0] + ends[:n - 1].tolist()
        return {bytes(blob[s:e]): c for s, e, c in zip(starts, ends[:n].tolist(), counts[:n].tolist())}

    def train(self, vocab_size):
        """Merges [(left, right, new_id)] and vocab [bytes per id]; see bpe.train."""
        out = ffi.new("int32_t **")
        n = lib.bpe_train(self._c, vocab_size, out)
        if n < 0:
            raise MemoryError("out of memory while training")
        try:
            flat = ffi.unpack(out[0], 3 * n) if n else []
        finally:
            lib.bpe_free_ints(out[0])
        merges = [tuple(flat[i:i + 3]) for i in range(0, len(flat), 3)]
        vocab = [bytes([i]) for i in range(256)]
        for a, b, t in merges:
            if t == len(vocab):
                vocab.append(vocab[a] + vocab[b])
        return merges, vocab
