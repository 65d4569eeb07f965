"""run.c with a version-3 tokenizer: its BPE encoding equals minigpt's on drawn text (GPT-4 and GPT-2
patterns), it reads a checkpoint whose vocabulary was grown for the chat tokens, and its chat mode
gives the same greedy replies as the Python ChatSession (`minigpt chat`), turn after turn."""
import os
import shutil
import subprocess

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minigpt.inference import kvcache
from minigpt.inference.generate import generate
from minigpt.model import backend
from minigpt.chat.session import ChatSession
from minigpt.model import GPT, GPTConfig
from minigpt.posttrain.packing import PackedLoader, tokenize
from minigpt.tokenizer import Tokenizer
from minigpt.tokenizer.chat import add_chat_tokens
from minigpt.tokenizer.files import read_llmc, write_llmc
from minigpt.model.vocab import grow_model

from conftest import GPT2_RANKS, ROOT

TEXT = ("Who are you? I am minigpt, a small model. How many r's are in strawberry? s-t-r(1)-a-w-b-e-r(2)-r(3)-y.\n"
        "Which is bigger, 9.11 or 9.9? 9.9 is bigger. Grüße aus Köln, 日本語のテキスト, emoji 🙂 don't we'll\n") * 30
CONVERSATIONS = [
    [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "I am minigpt."}],
    [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello! How can I help?"},
     {"role": "user", "content": "Which is bigger, 9.11 or 9.9?"}, {"role": "assistant", "content": "9.9 is bigger."}],
]


@pytest.fixture(scope="module")
def run_bin(tmp_path_factory):
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc not found: run.c is built with gcc")
    exe = str(tmp_path_factory.mktemp("runchat") / "run")
    flags = ["-O3", "-march=native", "-fopenmp"]
    if os.environ.get("MINIGPT_SANITIZE"):
        flags += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g"]
    subprocess.run([gcc, *flags, "-Wall", "-Wextra", "-Werror", "-o", exe, os.path.join(ROOT, "csrc", "run.c"), "-lm"],
                   check=True)
    return exe


def run_c(exe, *args, stdin=None, check=True):
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    p = subprocess.run([exe, *map(str, args)], capture_output=True, env=env, input=stdin or b"")
    if check and p.returncode != 0:
        raise AssertionError(f"run.c failed ({p.returncode}): {p.stderr.decode()}")
    return p


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    """A base model (vocabulary without the chat tokens), grown, then taught two conversations."""
    d = tmp_path_factory.mktemp("chatmodel")
    tok = Tokenizer.train(TEXT, vocab_size=400, pattern="gpt4")
    base = GPT(GPTConfig(block_size=128, vocab_size=tok.n_vocab, n_layer=2, n_head=2, n_embd=32),
               backend="c" if "c" in backend.available() else "numpy", seed=0)
    add_chat_tokens(tok)
    model = grow_model(base, tok.n_vocab)
    loader = PackedLoader(tokenize(tok, CONVERSATIONS), B=2, T=63, seed=0)
    for step in range(1, 121):
        x, y, w = loader.next_batch()
        model.forward(x, y, weights=w)
        model.zero_grad()
        model.backward()
        model.update(3e-3, t=step)
    ck, tokbin = str(d / "model.bin"), str(d / "tokenizer.bin")
    model.save(ck)
    write_llmc(tok, tokbin, version=3)
    return dict(tok=tok, model=model, ck=ck, tokbin=tokbin, dir=d)


# --------------------------------------------------------------------------------------------------
# encoding

@pytest.fixture(scope="module")
def tokenizers(chat_model, tmp_path_factory):
    d = tmp_path_factory.mktemp("toks")
    out = {"gpt4": (chat_model["tok"], chat_model["tokbin"])}
    gpt2 = Tokenizer.train(TEXT, vocab_size=350, pattern="gpt2")
    write_llmc(gpt2, d / "gpt2.bin", version=3)
    out["gpt2"] = (gpt2, str(d / "gpt2.bin"))
    real = Tokenizer.from_tiktoken(GPT2_RANKS, pattern="gpt2")  # the real GPT-2 vocabulary (50k tokens)
    write_llmc(real, d / "real.bin", version=3)
    out["gpt2-50k"] = (real, str(d / "real.bin"))
    return out


def encode_c(exe, ck, tokbin, text):
    return list(map(int, run_c(exe, ck, "-z", tokbin, "-m", "encode", "-i", text).stdout.split()))


text_st = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40) | \
    st.sampled_from(["", " ", "  hello  world\n\n", "don't WE'LL it's", "9.11 vs 9.9", "<|im_end|> <|endoftext|>",
                     "\r\n\t x", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "12345678 1,000,000"])


@settings(max_examples=60)
@given(text=text_st)
def test_run_c_bpe_encoding_equals_minigpt(run_bin, chat_model, tokenizers, text):
    for name, (tok, path) in tokenizers.items():
        assert encode_c(run_bin, chat_model["ck"], path, text) == tok.encode_ordinary(text), name


def test_version_3_file_round_trip(chat_model):
    tok = chat_model["tok"]
    d = read_llmc(chat_model["tokbin"], full=True)
    assert d["version"] == 3 and d["pattern"] == 2 and d["eot"] == tok.eot
    assert d["specials"] == sorted(tok.special_tokens.values())
    assert d["tokens"] == [tok.decode_bytes([i]) for i in range(tok.n_vocab)]
    assert all(tok.vocab[a] + tok.vocab[b] == tok.vocab[m] for a, b, m in d["pairs"])
    assert d["runs"][0][0] == 0 and len(d["runs"]) > 100
    toks, eot = read_llmc(chat_model["tokbin"])  # the plain reader still gives the decode table
    assert eot == tok.eot and len(toks) == tok.n_vocab


def test_version_3_damage_is_named(run_bin, chat_model, tmp_path):
    data = open(chat_model["tokbin"], "rb").read()
    bad = tmp_path / "cut.bin"
    bad.write_bytes(data[:-4])
    p = run_c(run_bin, chat_model["ck"], "-z", bad, "-m", "encode", "-i", "x", check=False)
    assert p.returncode != 0 and b"cut short" in p.stderr
    with pytest.raises(ValueError, match="expected"):
        read_llmc(bad)


# --------------------------------------------------------------------------------------------------
# chat

def python_chat(chat_model, turns, system=None, n=40):
    s = ChatSession(kvcache.DecodeWeights.load(chat_model["ck"]), chat_model["tok"], system=system,
                    temperature=0, max_new_tokens=n)
    return [s.ask(t) for t in turns]


def test_run_c_chat_greedy_equals_python(run_bin, chat_model):
    want = python_chat(chat_model, ["Who are you?"])
    assert want == ["I am minigpt."], "the fixture model should have learnt its reply"
    got = run_c(run_bin, chat_model["ck"], "-z", chat_model["tokbin"], "-m", "chat", "-i", "Who are you?",
                "-t", 0, "-n", 40).stdout.decode()
    assert got == "I am minigpt.\n"
    # several turns, the later ones from stdin, with a system prompt
    turns = ["Hi!", "Which is bigger, 9.11 or 9.9?", "Who are you?"]
    want = python_chat(chat_model, turns, system="Be brief.", n=8)
    got = run_c(run_bin, chat_model["ck"], "-z", chat_model["tokbin"], "-m", "chat", "-y", "Be brief.",
                "-i", turns[0], "-t", 0, "-n", 8, stdin="\n".join(turns[1:]).encode() + b"\n").stdout.decode()
    assert got.split("\n")[:-1] == want


def test_run_c_chat_ends_when_the_context_is_full(run_bin, chat_model):
    lines = "\n".join(["Which is bigger, 9.11 or 9.9?"] * 10).encode() + b"\n"
    p = run_c(run_bin, chat_model["ck"], "-z", chat_model["tokbin"], "-m", "chat", "-t", 0, "-n", 30, stdin=lines)
    assert b"context is full" in p.stderr and 1 <= p.stdout.count(b"\n") < 10


def test_run_c_chat_needs_the_chat_tokens(run_bin, chat_model, tmp_path):
    v2 = tmp_path / "v2.bin"
    write_llmc(chat_model["tok"], v2)
    p = run_c(run_bin, chat_model["ck"], "-z", v2, "-m", "chat", "-i", "hi", check=False)
    assert p.returncode != 0 and b"version-3 tokenizer with the chat tokens" in p.stderr


def test_run_c_generates_from_bpe_text(run_bin, chat_model):
    """Generate mode: -i text is BPE-encoded, so the continuation equals Python's from the same ids."""
    tok = chat_model["tok"]
    ids = tok.encode_ordinary("Which is bigger")
    want = generate(kvcache.DecodeWeights.load(chat_model["ck"]), ids, max_new_tokens=10, temperature=0)[0]
    got = run_c(run_bin, chat_model["ck"], "-z", chat_model["tokbin"], "-i", "Which is bigger", "-n", 10, "-t", 0,
                "-o", "ids").stdout.split()
    assert list(map(int, got)) == want
    assert np.all(np.array(want) < chat_model["model"].config.vocab_size)
