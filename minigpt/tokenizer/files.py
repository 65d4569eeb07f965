"""Step 3: tokenizer files (the formats; tokenizer.py builds a Tokenizer from them).

  our model file   text: header, special tokens, then one base64 token per id and the merges
  .vocab listing   human-readable, one token per line (as minbpe's), written beside the model file
  tiktoken ranks   `base64(token) rank` per line: OpenAI's format, in and out
  llm.c .bin       decode table for llm.c's C runner: 256 x int32 header [20240328, 2, n_vocab,
                   eot], then per token a uint8 length and its bytes
  .bin version 3   minigpt's: the same table, then what encoding needs, so csrc/run.c encodes text
                   as this tokenizer does: header [20240328, 3, n_ids, eot, pattern (0 none, 1 gpt2,
                   2 gpt4), n_special, n_pairs, n_runs]; after the table, int32s: the special ids;
                   the merges as (left, right, merged) triples sorted by (left, right), every way
                   a token splits into two tokens (tiktoken's rule: merge the adjacent pair whose
                   concatenation is the lowest-ranked token); the Unicode classes of the pre-split
                   (bit 1 \\p{L}, 2 \\p{N}, 4 \\s) as (first code point, class) runs

Every writer writes a temp file and renames it, so a crash never leaves half a file.
"""
import base64
import binascii
import json
import os
import struct

import numpy as np

from ..fileio import atomic_write
from .pretokenize import PATTERNS, unicode_classes

MAGIC = "minigpt-bpe v1"
LLMC_MAGIC, LLMC_VERSION = 20240328, 2
LLMC_VERSION_BPE = 3  # minigpt's: version 2 plus the merges, the pattern and the Unicode classes


def write_bytes(path, data):
    atomic_write(path, lambda f: f.write(data))


def _b64(tok):
    return base64.b64encode(tok).decode("ascii")


def _unb64(s, where):
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{where}: {s[:40]!r} is not base64") from None


# ---------------------------------------------------------------------------- tiktoken rank files
def read_tiktoken(path):
    """Token bytes per rank from a tiktoken file; ranks must be 0..n-1, tokens distinct."""
    with open(path, "rb") as f:
        lines = f.read().decode("ascii", errors="replace").splitlines()
    vocab, seen = {}, {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}, line {n}"
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{where}: expected 'base64 rank', found {len(parts)} fields: {line[:60]!r}")
        tok = _unb64(parts[0], where)
        try:
            rank = int(parts[1])
        except ValueError:
            raise ValueError(f"{where}: rank {parts[1][:20]!r} is not an integer") from None
        if not tok:
            raise ValueError(f"{where}: empty token")
        if rank < 0 or rank in vocab:
            raise ValueError(f"{where}: rank {rank} is negative or repeated")
        if tok in seen:
            raise ValueError(f"{where}: token {tok!r} already has rank {seen[tok]}")
        vocab[rank], seen[tok] = tok, rank
    if not vocab:
        raise ValueError(f"{path}: no ranks found (expected lines of 'base64 rank')")
    if max(vocab) != len(vocab) - 1:
        gap = next(i for i in range(len(vocab)) if i not in vocab)
        raise ValueError(f"{path}: ranks must be 0..{len(vocab) - 1} without gaps; rank {gap} is missing")
    return [vocab[i] for i in range(len(vocab))]


def write_tiktoken(vocab, path):
    write_bytes(path, "".join(f"{_b64(tok)} {i}\n" for i, tok in enumerate(vocab)).encode("ascii"))


# ------------------------------------------------------------------------------ our model file
def save(tok, path):
    """Write tok to path (our format) and a .vocab listing beside it (path with suffix .vocab)."""
    merges = tok.merges or []
    lines = [MAGIC, f"pattern {json.dumps(tok.pattern)}", f"vocab {len(tok.vocab)}",
             f"special {len(tok.special_tokens)}"]
    lines += [f"{json.dumps(name)} {i}" for name, i in tok.special_tokens.items()]
    lines.append(f"merges {len(merges)}")
    lines += [_b64(t) for t in tok.vocab]
    lines += [f"{a} {b} {t}" for a, b, t in merges]
    write_bytes(path, ("\n".join(lines) + "\n").encode("utf-8"))
    write_bytes(os.path.splitext(os.fspath(path))[0] + ".vocab", vocab_listing(tok).encode("utf-8"))


def load(path):
    """Read our model file: {"vocab", "pattern", "special_tokens", "merges"} for Tokenizer(...)."""
    with open(path, "rb") as f:
        lines = f.read().decode("utf-8").split("\n")
    pos = 0

    def take(key):
        nonlocal pos
        if pos >= len(lines):
            raise ValueError(f"{path}: file ends early, expected a line '{key} ...' at line {pos + 1}")
        line = lines[pos]
        pos += 1
        if key is None:
            return line
        if not line.startswith(key + " "):
            raise ValueError(f"{path}, line {pos}: expected '{key} ...', found {line[:60]!r}")
        return line[len(key) + 1:]

    first = take(None)
    if first != MAGIC:
        raise ValueError(f"{path}: not a minigpt tokenizer file: expected first line {MAGIC!r}, found {first[:60]!r}")
    try:
        pattern = json.loads(take("pattern"))
        n_vocab = int(take("vocab"))
        specials = {}
        for _ in range(int(take("special"))):
            name, i = take(None).rsplit(" ", 1)
            specials[json.loads(name)] = int(i)
        n_merges = int(take("merges"))
        vocab = [_unb64(take(None), f"{path}, line {pos}") for _ in range(n_vocab)]
        merges = [tuple(int(x) for x in take(None).split()) for _ in range(n_merges)]
    except (json.JSONDecodeError, ValueError) as e:
        raise ValueError(f"{path}, line {pos}: malformed tokenizer file ({e})") from None
    if any(len(m) != 3 for m in merges):
        raise ValueError(f"{path}: a merge line does not have 3 ids (left right new)")
    if any(line.strip() for line in lines[pos:]):
        raise ValueError(f"{path}, line {pos + 1}: unexpected content after the {n_merges} merges")
    return {"vocab": vocab, "pattern": pattern, "special_tokens": specials, "merges": merges or None}


def render(tok):
    """Token bytes as readable text: invalid UTF-8 as U+FFFD, control characters escaped."""
    s = tok.decode("utf-8", errors="replace")
    return "".join(c if c.isprintable() or c == " " else f"\\u{ord(c):04x}" for c in s)


def vocab_listing(tok):
    """minbpe-style .vocab: `[left][right] -> [token] id` for merged tokens, `[token] id` otherwise."""
    made = {}
    for a, b, t in tok.merges or []:
        made.setdefault(t, (a, b))
    out = []
    for i, t in enumerate(tok.vocab):
        if i in made:
            a, b = made[i]
            out.append(f"[{render(tok.vocab[a])}][{render(tok.vocab[b])}] -> [{render(t)}] {i}")
        else:
            out.append(f"[{render(t)}] {i}")
    out += [f"[{name}] {i} (special)" for name, i in tok.special_tokens.items()]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------ llm.c decode table
def write_llmc(tok, path, version=LLMC_VERSION):
    """llm.c's tokenizer .bin (version 2), for its C runner to print generated tokens; version 3
    adds the merges, the pattern and the Unicode classes, for run.c to encode text too."""
    if version not in (LLMC_VERSION, LLMC_VERSION_BPE):
        raise ValueError(f"tokenizer .bin version must be {LLMC_VERSION} or {LLMC_VERSION_BPE}, got {version!r}")
    tokens = [tok._decoder[i] for i in range(tok.n_vocab)]
    if version == LLMC_VERSION:
        return write_llmc_table(path, tokens, tok.eot)
    specials = sorted(tok.special_tokens.values())
    pairs = merge_pairs(tok.vocab)
    runs = class_runs(unicode_classes())
    header = struct.pack("<256i", LLMC_MAGIC, LLMC_VERSION_BPE, len(tokens), tok.eot, PATTERNS[tok.pattern][1],
                         len(specials), len(pairs), len(runs), *([0] * 248))
    tail = np.concatenate([np.asarray(specials, dtype="<i4"), np.asarray(pairs, dtype="<i4").reshape(-1),
                           np.asarray(runs, dtype="<i4").reshape(-1)]).astype("<i4")
    write_bytes(path, header + llmc_table(tokens) + tail.tobytes())


def write_llmc_table(path, tokens, eot):
    """The .bin (version 2) from a decode table: tokens[i] = the bytes of id i."""
    header = struct.pack("<256i", LLMC_MAGIC, LLMC_VERSION, len(tokens), eot, *([0] * 252))
    write_bytes(path, header + llmc_table(tokens))


def llmc_table(tokens):
    """Per token a uint8 length, then its bytes."""
    n, body = len(tokens), []
    for i in range(n):
        t = tokens[i]
        if t is None:
            raise ValueError(f"id {i} has no token (a gap before a special token); llm.c needs every id 0..{n - 1}")
        if not 1 <= len(t) <= 255:
            raise ValueError(f"token {i} is {len(t)} bytes; llm.c's format stores lengths 1..255")
        body.append(struct.pack("<B", len(t)) + t)
    return b"".join(body)


def merge_pairs(vocab):
    """[(left id, right id, merged id)] sorted: every split of every token into two tokens."""
    ranks = {t: i for i, t in enumerate(vocab)}
    pairs = []
    for i, t in enumerate(vocab):
        for k in range(1, len(t)):
            a, b = ranks.get(t[:k]), ranks.get(t[k:])
            if a is not None and b is not None:
                pairs.append((a, b, i))
    return sorted(pairs)


def class_runs(table):
    """[(first code point, class)] of each run of equal classes in a per-code-point table."""
    table = np.asarray(table)
    starts = np.concatenate([[0], np.flatnonzero(np.diff(table)) + 1])
    return np.stack([starts, table[starts]], axis=1).tolist()


def read_llmc(path, full=False):
    """(token bytes per id, eot id) from an llm.c tokenizer .bin (version 2 or 3); checks magic,
    version and length. full=True: a dict with, for version 3, specials, pattern, pairs and runs too."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 1024:
        raise ValueError(f"{path}: {len(data)} bytes, shorter than the 1024-byte header")
    magic, version, n, eot, pattern, n_special, n_pairs, n_runs = struct.unpack_from("<8i", data)
    if magic != LLMC_MAGIC:
        raise ValueError(f"{path}: magic {magic}, expected {LLMC_MAGIC} (llm.c tokenizer)")
    if version not in (LLMC_VERSION, LLMC_VERSION_BPE):
        raise ValueError(f"{path}: version {version}, expected {LLMC_VERSION} or {LLMC_VERSION_BPE}")
    pos, toks = 1024, []
    for i in range(n):
        if pos >= len(data):
            raise ValueError(f"{path}: ends after {i} of {n} tokens")
        k = data[pos]
        if pos + 1 + k > len(data):
            raise ValueError(f"{path}: token {i} runs past the end of the file")
        toks.append(data[pos + 1:pos + 1 + k])
        pos += 1 + k
    out = {"tokens": toks, "eot": eot, "version": version}
    if version == LLMC_VERSION_BPE:
        if min(n_special, n_pairs, n_runs) < 0:
            raise ValueError(f"{path}: negative section sizes {n_special, n_pairs, n_runs} in the header")
        want = 4 * (n_special + 3 * n_pairs + 2 * n_runs)
        if len(data) - pos != want:
            raise ValueError(f"{path}: {len(data) - pos} bytes after the {n} tokens, expected {want} "
                             f"({n_special} special ids, {n_pairs} merges, {n_runs} class runs)")
        ints = np.frombuffer(data, dtype="<i4", offset=pos)
        out.update(pattern=pattern, specials=ints[:n_special].tolist(),
                   pairs=ints[n_special:n_special + 3 * n_pairs].reshape(-1, 3).tolist(),
                   runs=ints[n_special + 3 * n_pairs:].reshape(-1, 2).tolist())
        pos = len(data)
    if pos != len(data):
        raise ValueError(f"{path}: {len(data) - pos} bytes left after the {n} tokens")
    return out if full else (toks, eot)


class LlmcTokenizer:
    """llm.c's tokenizer .bin as a tokenizer: a decode table, no merges. Encoding maps each byte to
    its single-byte token: exact for a byte-level vocabulary, a valid (not BPE-canonical) encoding
    for a BPE one. For checkpoints that come from llm.c."""

    def __init__(self, path):
        self.tokens, self.eot = read_llmc(path)
        self.byte_id = {t[0]: i for i, t in enumerate(self.tokens) if len(t) == 1 and i != self.eot}
        self.n_vocab = len(self.tokens)
        self.special_tokens = {"<|endoftext|>": self.eot}

    def decode_bytes(self, ids):
        ids = list(ids)
        bad = [i for i in ids if not 0 <= i < self.n_vocab]
        if bad:
            raise ValueError(f"unknown token id {bad[0]}: this tokenizer has ids 0..{self.n_vocab - 1}")
        return b"".join(self.tokens[i] for i in ids)

    def decode(self, ids):
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def encode(self, text, **_):
        data = text.encode("utf-8")
        missing = sorted({b for b in data if b not in self.byte_id})
        if missing:
            raise ValueError(f"this tokenizer has no single-byte token for bytes {missing[:5]}")
        return [self.byte_id[b] for b in data]

    encode_ordinary = encode
