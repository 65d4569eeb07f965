"""Tokenizer behaviour: training, round trips, special tokens, files, bad input."""
import struct

import pytest
from hypothesis import given, settings, strategies as st

from minigpt.tokenizer import Tokenizer, bpe, fast
from minigpt.tokenizer.files import read_llmc, read_tiktoken

from conftest import GPT2_RANKS, SHAKESPEARE
needs_c = pytest.mark.skipif(not fast.available(), reason="C extension minigpt._bpe not built")


@pytest.fixture(scope="module")
def shakespeare():
    with open(SHAKESPEARE, encoding="utf-8") as f:
        return f.read()


@pytest.fixture(scope="module")
def shakespeare_tok(shakespeare):
    return Tokenizer.train(shakespeare, vocab_size=1024, pattern="gpt4")


@pytest.mark.parametrize("backend", ["python", pytest.param("c", marks=needs_c)])
def test_aaabdaaabac(backend):
    # Wikipedia's example: aa -> Z, then ab -> Y (ties go to the smallest pair), then ZY -> X
    tok = Tokenizer.train("aaabdaaabac", vocab_size=256 + 3, pattern=None, backend=backend)
    assert tok.merges == [(97, 97, 256), (97, 98, 257), (256, 257, 258)]
    assert tok.vocab[258] == b"aaab"
    assert tok.encode("aaabdaaabac") == [258, ord("d"), 258, ord("a"), ord("c")]
    assert tok.decode(tok.encode("aaabdaaabac")) == "aaabdaaabac"
    assert tok.eot == 259 and tok.n_vocab == 260


def test_train_shakespeare_roundtrip(shakespeare, shakespeare_tok):
    tok = shakespeare_tok
    assert len(tok.vocab) == 1024 and tok.n_vocab == 1025
    ids = tok.encode_ordinary(shakespeare)
    assert tok.decode(ids) == shakespeare
    assert len(ids) < len(shakespeare.encode()) / 2.5          # it does compress
    assert max(ids) < 1024
    # training streams documents, once: a generator gives what a list gives
    docs = shakespeare[:200_000].split("\n\n")
    a = Tokenizer.train((d for d in docs), vocab_size=400, pattern="gpt4")
    b = Tokenizer.train(docs, vocab_size=400, pattern="gpt4")
    assert len(a.merges) == 144 and a.vocab == b.vocab and a.merges == b.merges


def test_save_load_roundtrip(tmp_path, shakespeare, shakespeare_tok):
    tok = shakespeare_tok
    tok2 = Tokenizer.train(shakespeare[:50_000], vocab_size=300, pattern="gpt2")
    tok2.add_special_tokens(["<|im_start|>", "<|im_sep|>", "<|im_end|>"])
    for t in (tok, tok2):
        path = tmp_path / "tok.model"
        t.save(path)
        u = Tokenizer.load(path)
        assert (u.vocab, u.merges, u.special_tokens, u.pattern) == (t.vocab, t.merges, t.special_tokens, t.pattern)
        text = shakespeare[-5000:] + "<|im_start|>user<|im_sep|>hi<|im_end|>"
        assert u.encode(text, allowed_special="all") == t.encode(text, allowed_special="all")
        listing = (tmp_path / "tok.vocab").read_text(encoding="utf-8")
        assert listing.count("\n") == t.n_vocab and "->" in listing
    # tiktoken rank files out and in
    tok.save_tiktoken(tmp_path / "t.tiktoken")
    u = Tokenizer.from_tiktoken(tmp_path / "t.tiktoken", pattern="gpt4")
    assert u.vocab == tok.vocab and u.eot == 1024
    assert u.encode_ordinary(shakespeare[:20000]) == tok.encode_ordinary(shakespeare[:20000])


def test_special_tokens(shakespeare_tok):
    tok = Tokenizer.train("hello world " * 20, vocab_size=260, pattern="gpt4")
    eot = tok.eot
    text = "hi<|endoftext|>there"
    with pytest.raises(ValueError, match="special token '<\\|endoftext\\|>'"):
        tok.encode(text)
    assert tok.encode(text, allowed_special="all") == tok.encode_ordinary("hi") + [eot] + tok.encode_ordinary("there")
    assert tok.encode(text, allowed_special={"<|endoftext|>"}) == tok.encode(text, allowed_special="all")
    assert tok.encode(text, allowed_special="none") == tok.encode_ordinary(text)
    # added after training: ids follow on, the existing ones stay
    ids = tok.add_special_tokens(["<|im_start|>", "<|im_sep|>", "<|im_end|>"])
    assert ids == [eot + 1, eot + 2, eot + 3] and tok.add_special_tokens(["<|im_end|>"]) == [eot + 3]
    chat = "<|im_start|>user<|im_sep|>hello<|im_end|>"
    got = tok.encode(chat, allowed_special={"<|im_start|>", "<|im_sep|>", "<|im_end|>"})
    assert got[0] == eot + 1 and got[-1] == eot + 3 and tok.decode(got) == chat
    with pytest.raises(ValueError, match="not allowed"):
        tok.encode(chat + "<|endoftext|>", allowed_special={"<|im_start|>", "<|im_sep|>", "<|im_end|>"})
    with pytest.raises(ValueError, match="unknown special tokens"):
        tok.encode("x", allowed_special={"<|nope|>"})
    assert tok.encode_batch([chat, "hello"], allowed_special="all", num_threads=2) == \
        [tok.encode(chat, allowed_special="all"), tok.encode("hello")]


def test_decode_bytes_exact_and_replace():
    tok = Tokenizer.train("é€😀" * 50, vocab_size=258, pattern=None)
    ids = tok.encode_ordinary("😀")
    assert tok.decode_bytes(ids) == "😀".encode()
    partial = list(b"\xf0\x9f")                        # first half of an emoji: byte ids are the bytes
    assert tok.decode_bytes(partial) == b"\xf0\x9f"
    assert tok.decode(partial) == "\ufffd"
    assert tok.decode_bytes([]) == b"" and tok.encode("") == []


def test_bad_input(tmp_path):
    tok = Tokenizer.train("abc abc", vocab_size=257, pattern="gpt2")
    for bad in (tok.n_vocab, -1, 10**9):
        with pytest.raises(ValueError, match=f"unknown token id {bad}"):
            tok.decode([1, bad])
    with pytest.raises(ValueError, match="at least 256"):
        Tokenizer.train("abc", vocab_size=255)
    with pytest.raises(ValueError, match="pattern must be"):
        Tokenizer.train("abc", vocab_size=256, pattern="gpt3")
    with pytest.raises(TypeError, match="document 1 is bytes"):
        Tokenizer.train(["abc", b"abc"], vocab_size=256)
    with pytest.raises(TypeError, match="expects str"):
        tok.encode(b"abc")
    cases = {
        "a b c\n": "expected 'base64 rank', found 3 fields",
        "!!!! 0\n": "is not base64",
        "YQ== x\n": "is not an integer",
        "YQ== 0\nYg== 0\n": "negative or repeated",
        "YQ== 0\nYQ== 1\n": "already has rank 0",
        "YQ== 0\nYg== 2\n": "rank 1 is missing",
        "\n": "no ranks found",
        "YQ== 0\n": "lacks 255 single bytes",
    }
    for text, msg in cases.items():
        p = tmp_path / "bad.tiktoken"
        p.write_text(text)
        with pytest.raises(ValueError, match=msg):
            Tokenizer.from_tiktoken(p)
    p = tmp_path / "bad.model"
    p.write_text("something else\n")
    with pytest.raises(ValueError, match="not a minigpt tokenizer file"):
        Tokenizer.load(p)
    tok.save(p)
    lines = p.read_text().split("\n")
    p.write_text("\n".join(lines[:10]))
    with pytest.raises(ValueError, match="ends early"):
        Tokenizer.load(p)


def test_llmc_bin(tmp_path):
    ranks = read_tiktoken(GPT2_RANKS)
    tok = Tokenizer.from_tiktoken(GPT2_RANKS, pattern="gpt2", special_tokens={"<|endoftext|>": 50256})
    tok.save_llmc(tmp_path / "gpt2_tokenizer.bin")
    raw = (tmp_path / "gpt2_tokenizer.bin").read_bytes()
    assert struct.unpack_from("<4i", raw) == (20240328, 2, 50257, 50256)
    toks, eot = read_llmc(tmp_path / "gpt2_tokenizer.bin")
    assert toks[:50256] == ranks and toks[50256] == b"<|endoftext|>" and eot == 50256
    long = Tokenizer.train("x" * 1000, vocab_size=266, pattern=None)
    with pytest.raises(ValueError, match="lengths 1..255"):
        long.save_llmc(tmp_path / "long.bin")


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=200))
def test_roundtrip_any_str_trained(s):
    tok = _small_tok()
    assert tok.decode(tok.encode_ordinary(s)) == s


_SMALL = []


def _small_tok():
    if not _SMALL:
        _SMALL.append(Tokenizer.train(["héllo wörld, 你好世界 😀😀 " * 30, "the cat's hat\r\n\r\n  12345"],
                                      vocab_size=320, pattern="gpt4"))
    return _SMALL[0]


def test_python_reference_agrees_with_c_on_training(shakespeare):
    if not fast.available():
        pytest.skip("C extension minigpt._bpe not built")
    text = shakespeare[:60_000] + "\r\n  \t 😀😀😀 né 東京 1234567 '' ''s  \n\n\n"
    for pattern in ("gpt2", "gpt4", None):
        docs = [text[i:i + 4000] for i in range(0, len(text), 4000)] if pattern is None else [text]
        counts = bpe.count_chunks(docs, pattern)
        c = fast.ChunkCounter(pattern)
        for d in docs:
            c.add(d.encode())
        assert c.to_dict() == counts
        merges_py, vocab_py = bpe.train(counts, 330)
        merges_c, vocab_c = c.train(330)
        assert merges_c == merges_py and vocab_c == vocab_py
        tp = Tokenizer(vocab_py, pattern, backend="python")
        tc = Tokenizer(vocab_c, pattern, backend="c")
        sample = text if pattern else text[-1500:]     # pattern None: one chunk, quadratic in Python
        assert tc.encode_ordinary(sample) == tp.encode_ordinary(sample)


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.binary(min_size=1, max_size=12), st.integers(1, 9), min_size=1, max_size=12),
       st.integers(256, 330))
def test_c_training_equals_python_on_drawn_chunks(counts, vocab_size):
    if not fast.available():
        pytest.skip("C extension minigpt._bpe not built")
    c = fast.ChunkCounter(None)
    for chunk, n in counts.items():
        for _ in range(n):
            c.add(chunk)
    assert c.to_dict() == counts
    merges_c, vocab_c = c.train(vocab_size)
    merges_py, vocab_py = bpe.train(counts, vocab_size)
    assert merges_c == merges_py and vocab_c == vocab_py
    assert len(set(vocab_c)) == len(vocab_c) <= vocab_size
