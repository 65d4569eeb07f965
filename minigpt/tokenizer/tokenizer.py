"""Step 4: the Tokenizer, tying pre-split, BPE and special tokens together (tiktoken's semantics).

    tok = Tokenizer.train(docs, vocab_size=4096, pattern="gpt4")
    tok = Tokenizer.from_tiktoken("gpt2.tiktoken", pattern="gpt2", special_tokens={"<|endoftext|>": 50256})
    ids = tok.encode("hello world<|endoftext|>", allowed_special="all");  tok.decode(ids)

A tokenizer is its vocabulary (token bytes per id; the id is the rank: lower merges first), its
split pattern, and its special tokens (str -> id, ids after the vocabulary, added at any time).
"""
import os
from concurrent.futures import ThreadPoolExecutor

import regex

from . import bpe, fast, files
from .pretokenize import check_pattern

EOT = "<|endoftext|>"


def _utf8(text):
    """text as UTF-8; lone surrogates (not encodable) become U+FFFD, as tiktoken does."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode("utf-8")


class Tokenizer:
    def __init__(self, vocab, pattern="gpt4", special_tokens=None, merges=None, backend=None):
        self.pattern = check_pattern(pattern)
        self.vocab = list(vocab)                     # id -> token bytes
        self.merges = merges                         # [(left, right, new id)] when trained here
        self.special_tokens = {}
        if backend is None:
            backend = "c" if fast.available() else "python"
        if backend not in ("c", "python"):
            raise ValueError(f"backend must be 'c' or 'python', got {backend!r}")
        if backend == "c" and not fast.available():
            raise RuntimeError("the C extension minigpt._bpe is not built: run `pip install -e .`")
        self.backend = backend
        self._ranks = {tok: i for i, tok in enumerate(self.vocab)}
        if len(self._ranks) != len(self.vocab):
            raise ValueError("two token ids have the same bytes; a BPE vocabulary needs distinct tokens")
        missing = [b for b in range(256) if bytes([b]) not in self._ranks]
        if missing:
            raise ValueError(f"the vocabulary lacks {len(missing)} single bytes (e.g. {bytes([missing[0]])!r}); "
                             "byte-level BPE needs all 256")
        self._encoder = fast.Encoder(self.vocab) if backend == "c" else None
        self._special_re = None
        self._decoder = list(self.vocab)
        for name, i in (special_tokens or {}).items():
            self._add_special(name, i)

    # ---------------------------------------------------------------------------------- building
    @classmethod
    def train(cls, text_or_docs, vocab_size=4096, pattern="gpt4", special_tokens=(EOT,), backend=None,
              verbose=False):
        """Learn vocab_size - 256 merges (fewer if the text runs out of pairs) from a str or an
        iterable of str documents, streamed once; then add special_tokens after them."""
        pattern = check_pattern(pattern)
        if not isinstance(vocab_size, int) or vocab_size < 256:
            raise ValueError(f"vocab_size must be an int of at least 256 (the single bytes), got {vocab_size!r}")
        docs = [text_or_docs] if isinstance(text_or_docs, str) else text_or_docs
        backend = backend or ("c" if fast.available() else "python")

        def checked(docs):
            for i, doc in enumerate(docs):
                if not isinstance(doc, str):
                    raise TypeError(f"training documents must be str, document {i} is {type(doc).__name__}")
                yield doc

        if backend == "c":
            counter = fast.ChunkCounter(pattern)
            for doc in checked(docs):
                counter.add(_utf8(doc))
            merges, vocab = counter.train(vocab_size)
        else:
            merges, vocab = bpe.train(bpe.count_chunks(checked(docs), pattern), vocab_size)
        if verbose:
            print(f"trained {len(merges)} merges, vocabulary {len(vocab)}")
        tok = cls(vocab, pattern, merges=merges, backend=backend)
        tok.add_special_tokens(list(special_tokens))
        return tok

    @classmethod
    def from_tiktoken(cls, path, pattern="gpt2", special_tokens=None, backend=None):
        """Load a tiktoken rank file (`base64(token) rank` per line). special_tokens defaults to
        {"<|endoftext|>": number of ranks}, which is GPT-2's 50256 for gpt2.tiktoken."""
        vocab = files.read_tiktoken(path)
        if special_tokens is None:
            special_tokens = {EOT: len(vocab)}
        return cls(vocab, pattern, special_tokens, backend=backend)

    def save(self, path):
        files.save(self, path)

    @classmethod
    def load(cls, path, backend=None):
        return cls(**files.load(path), backend=backend)

    def save_tiktoken(self, path):
        files.write_tiktoken(self.vocab, path)

    def save_llmc(self, path):
        files.write_llmc(self, path)

    # ---------------------------------------------------------------------------- special tokens
    def _add_special(self, name, i):
        if not isinstance(name, str) or not name:
            raise ValueError(f"a special token must be a non-empty str, got {name!r}")
        if not isinstance(i, int) or i < len(self.vocab):
            raise ValueError(f"special token {name!r} needs an id after the {len(self.vocab)} vocabulary ids, got {i!r}")
        if i in self.special_tokens.values():
            raise ValueError(f"special token id {i} is already taken")
        self.special_tokens[name] = i
        while len(self._decoder) <= i:
            self._decoder.append(None)               # a gap: no token has this id
        self._decoder[i] = name.encode("utf-8")
        # longest first, so a special that is a prefix of another never wins
        names = sorted(self.special_tokens, key=len, reverse=True)
        self._special_re = regex.compile("|".join(regex.escape(s) for s in names))

    def add_special_tokens(self, tokens):
        """Give each new special token (str) the next free id; returns their ids. Already present: kept."""
        if isinstance(tokens, str):
            tokens = [tokens]
        for name in tokens:
            if name not in self.special_tokens:
                self._add_special(name, self.n_vocab)
        return [self.special_tokens[name] for name in tokens]

    @property
    def n_vocab(self):
        """Number of ids, special tokens included (largest id + 1)."""
        return max([len(self.vocab)] + [i + 1 for i in self.special_tokens.values()])

    @property
    def eot(self):
        if EOT not in self.special_tokens:
            raise ValueError(f"this tokenizer has no {EOT} special token; add it with add_special_tokens")
        return self.special_tokens[EOT]

    # ---------------------------------------------------------------------------------- encoding
    def encode_ordinary(self, text):
        """ids of text; special-token text is ordinary text here."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects str, got {type(text).__name__}")
        if self._encoder is not None:
            return memoryview(self._encoder.encode(_utf8(text), self.pattern)).tolist()  # faster than ndarray.tolist
        return bpe.encode_ordinary(_utf8(text).decode("utf-8"), self._ranks, self.pattern)

    def _allowed(self, allowed_special):
        """(allowed set, raise on the others?) from tiktoken-style allowed_special."""
        if allowed_special == "all":
            return set(self.special_tokens), False
        if allowed_special == "none":
            return set(), False
        if allowed_special == "none_raise":
            return set(), True
        if isinstance(allowed_special, (set, frozenset, list, tuple)):
            unknown = set(allowed_special) - set(self.special_tokens)
            if unknown:
                raise ValueError(f"allowed_special names unknown special tokens {sorted(unknown)}; "
                                 f"this tokenizer has {sorted(self.special_tokens)}")
            return set(allowed_special), True
        raise ValueError(f"allowed_special must be 'all', 'none', 'none_raise' or a set of special tokens, "
                         f"got {allowed_special!r}")

    def encode(self, text, allowed_special="none_raise"):
        """ids of text. Special-token text in the input (as tiktoken): encoded as the special token
        if allowed; a ValueError if not allowed ("none_raise", or a set that lacks it); ordinary
        text with "none"."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects str, got {type(text).__name__}")
        allowed, strict = self._allowed(allowed_special)
        if self._special_re is None or (not allowed and not strict):
            return self.encode_ordinary(text)
        ids, start = [], 0
        for m in self._special_re.finditer(text):
            name = m.group()
            if name not in allowed:
                if strict:
                    raise ValueError(
                        f"the text contains the special token {name!r} at character {m.start()}, which is not "
                        f"allowed: pass allowed_special={{{name!r}}} (or 'all') to encode it as a special token, "
                        "or allowed_special='none' to encode it as ordinary text")
                continue
            ids.extend(self.encode_ordinary(text[start:m.start()]))
            ids.append(self.special_tokens[name])
            start = m.end()
        ids.extend(self.encode_ordinary(text[start:]))
        return ids

    def _batch(self, texts, num_threads, work):
        texts = list(texts)
        num_threads = num_threads or os.cpu_count() or 1
        if num_threads <= 1 or len(texts) <= 1:
            return work(texts)
        groups, size = [], -(-sum(len(t) for t in texts) // num_threads)   # about equal text per group
        cur, n = [], 0
        for t in texts:
            cur.append(t)
            n += len(t)
            if n >= size:
                groups.append(cur)
                cur, n = [], 0
        if cur:
            groups.append(cur)
        with ThreadPoolExecutor(min(num_threads, len(groups))) as pool:
            return [ids for part in pool.map(work, groups) for ids in part]

    def encode_ordinary_batch(self, texts, num_threads=None):
        """encode_ordinary of each text, spread over num_threads threads (default: all cores)."""
        def work(group):
            if self._encoder is None:
                return [self.encode_ordinary(t) for t in group]
            for t in group:
                if not isinstance(t, str):
                    raise TypeError(f"encode expects str, got {type(t).__name__}")
            flat, offs = self._encoder.encode_many([_utf8(t) for t in group], self.pattern)
            flat, offs = memoryview(flat).tolist(), offs.tolist()
            return [flat[offs[i]:offs[i + 1]] for i in range(len(group))]
        return self._batch(texts, num_threads, work)

    def encode_batch(self, texts, num_threads=None, allowed_special="none_raise"):
        """encode of each text, spread over num_threads threads (default: all cores)."""
        allowed, strict = self._allowed(allowed_special)
        if not allowed and not strict:
            return self.encode_ordinary_batch(texts, num_threads)
        return self._batch(texts, num_threads, lambda g: [self.encode(t, allowed_special) for t in g])

    # ---------------------------------------------------------------------------------- decoding
    def decode_bytes(self, ids):
        """The exact bytes of ids (a token may be part of a UTF-8 character)."""
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        if ids and (min(ids) < 0 or max(ids) >= len(self._decoder)):
            bad = next(i for i in ids if not 0 <= i < len(self._decoder))
            raise ValueError(f"unknown token id {bad}: this tokenizer has ids 0..{len(self._decoder) - 1}")
        try:
            return b"".join([self._decoder[i] for i in ids])
        except TypeError:                             # None: an id in a gap between special tokens
            bad = next(i for i in ids if self._decoder[i] is None)
            raise ValueError(f"unknown token id {bad}: no token has this id") from None

    def decode(self, ids):
        """Text of ids; bytes that are not valid UTF-8 become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def __repr__(self):
        return (f"Tokenizer(pattern={self.pattern!r}, vocab={len(self.vocab)}, "
                f"special_tokens={self.special_tokens}, backend={self.backend!r})")


def load_tokenizer(path, backend=None):
    """Any tokenizer file minigpt reads: its own format, llm.c's .bin (by its magic number), or a
    tiktoken rank file (.tiktoken: GPT-2's ranks, <|endoftext|> after them)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"tokenizer file not found: {path}")
    with open(path, "rb") as f:
        head = f.read(4)
    if len(head) == 4 and int.from_bytes(head, "little", signed=True) == files.LLMC_MAGIC:
        return files.LlmcTokenizer(path)
    if path.endswith(".tiktoken"):
        return Tokenizer.from_tiktoken(path, pattern="gpt2", backend=backend)
    return Tokenizer.load(path, backend=backend)
