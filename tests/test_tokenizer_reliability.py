"""#12 for tokenizers: a huge "word" no longer makes BPE training quadratic, hostile files (a huge
token, a special id of 10^13, a header that lies) are refused with a message that names the file,
and `minigpt sample` refuses a tokenizer that does not fit the model before generating."""
import struct

import numpy as np
import pytest

from minigpt.cli import main
from minigpt.model import GPT, GPTConfig
from minigpt.tokenizer import Tokenizer, fast, load_tokenizer
from minigpt.tokenizer import bpe
from minigpt.tokenizer.files import MAGIC, write_llmc_table

BYTES = [bytes([i]) for i in range(256)]


@pytest.mark.parametrize("backend", ["python"] + (["c"] if fast.available() else []))
def test_long_words_are_counted_in_pieces(backend):
    """Each merge rewrites every word that holds its pair, so a 200 KB word cost 45 s: chunks are
    counted in pieces of at most 255 bytes (which also fits every token in llm.c's .bin)."""
    rng = np.random.default_rng(0)
    word = "".join(rng.choice(list("abcd"), 3000))
    docs = ["some ordinary words " + word + " and " + "z" * 1000]
    if backend == "c":
        counter = fast.ChunkCounter("gpt4")
        counter.add(docs[0])
        chunks = counter.to_dict()
    else:
        chunks = bpe.count_chunks(docs, "gpt4")
    assert max(map(len, chunks)) == 255 and sum(len(c) * n for c, n in chunks.items()) == len(docs[0])
    tok = Tokenizer.train(docs, vocab_size=400, backend=backend)
    assert max(map(len, tok.vocab)) <= 255
    assert tok.decode(tok.encode(docs[0])) == docs[0]


def test_c_and_python_training_agree_on_long_words():
    if not fast.available():
        pytest.skip("the C tokenizer is not built")
    docs = ["ab" * 700 + " cd" * 50, "x" * 600]
    a = Tokenizer.train(docs, vocab_size=320, backend="c")
    b = Tokenizer.train(docs, vocab_size=320, backend="python")
    assert a.merges == b.merges and a.vocab == b.vocab


def test_trained_tokens_always_fit_llmc(tmp_path):
    tok = Tokenizer.train(["a" * 5000] * 3, vocab_size=300)
    tok.save_llmc(str(tmp_path / "t.bin"))        # raised "token is 256+ bytes" before the cap
    assert load_tokenizer(str(tmp_path / "t.bin")).n_vocab == tok.n_vocab


def our_file(vocab, specials=(("<|endoftext|>", None),)):
    import base64
    lines = [MAGIC, 'pattern "gpt4"', f"vocab {len(vocab)}", f"special {len(specials)}"]
    lines += [f'"{n}" {len(vocab) if i is None else i}' for n, i in specials]
    lines += ["merges 0"] + [base64.b64encode(t).decode() for t in vocab]
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.parametrize("content, message", [
    (our_file(BYTES + [b"x" * 2_000_000]), "at most 1024"),                      # loading was quadratic in it
    (our_file(BYTES, [("<|endoftext|>", 10**13)]), "needs an id in"),            # allocated 10^13 slots
    (our_file(BYTES, [("<|endoftext|>", True)]), "malformed tokenizer file"),
    (our_file(BYTES)[:-200], "truncated tokenizer file"),
    (our_file(BYTES).replace(b"vocab 256", b"vocab 99999999999"), "truncated tokenizer file"),
    (our_file(BYTES).replace(b"vocab 256", b"vocab " + b"9" * 5000), "malformed tokenizer file"),
    (our_file(BYTES).replace(b'pattern "gpt4"', b'pattern "\xff\xfe"'), "not a UTF-8 tokenizer file"),
    (struct.pack("<256i", 20240326, 3, *[1] * 254), "not a minigpt tokenizer file"),   # a model checkpoint
    (b"", "not a minigpt tokenizer file"),
])
def test_hostile_tokenizer_files(tmp_path, content, message):
    path = tmp_path / "tok.model"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as e:
        load_tokenizer(str(path))
    assert str(path) in str(e.value)


@pytest.mark.parametrize("n, eot, message", [(2**31 - 1, 0, "cannot fit"), (-1, 0, "cannot fit"),
                                             (257, 257, "EOT id 257"), (257, -5, "EOT id -5")])
def test_llmc_header_that_lies(tmp_path, n, eot, message):
    good = tmp_path / "good.bin"
    write_llmc_table(str(good), BYTES + [b"<|endoftext|>"], 256)
    data = bytearray(good.read_bytes())
    data[8:16] = struct.pack("<2i", n, eot)
    bad = tmp_path / "bad.bin"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=message):
        load_tokenizer(str(bad))


@pytest.fixture(scope="module")
def model_257(tmp_path_factory):
    d = tmp_path_factory.mktemp("m")
    GPT(GPTConfig(block_size=8, vocab_size=257, n_layer=1, n_head=1, n_embd=8), backend="numpy").save(str(d / "m.bin"))
    return d


def test_sample_refuses_tokenizers_that_do_not_fit(model_257, capsys):
    d = model_257
    short = d / "short.bin"
    write_llmc_table(str(short), BYTES[:200], 0)    # fewer tokens than the model: an IndexError mid-stream
    for tok, message in ((short, "do not belong together"), (d / "m.bin", "not a minigpt tokenizer file")):
        assert main(["sample", str(d / "m.bin"), "--tokenizer", str(tok), "--max-new-tokens", "3"]) == 2
        out = capsys.readouterr()
        assert message in out.err and str(tok) in out.err and out.err.count("\n") == 1 and out.out == ""
    for t in ("nan", "inf", "-1"):
        assert main(["sample", str(d / "m.bin"), "--temperature", t, "--prompt-ids", "1"]) == 2
        assert "temperature" in capsys.readouterr().err


def test_sample_layer_is_checked_before_generating(model_257, tmp_path, capsys):
    png = tmp_path / "att.png"
    assert main(["sample", str(model_257 / "m.bin"), "--prompt-ids", "1", "--attention", str(png),
                 "--layer", "99", "--max-new-tokens", "3"]) == 2
    out = capsys.readouterr()
    assert "--layer 99 is out of range" in out.err and out.out == "" and not png.exists()
