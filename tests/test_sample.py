"""Sampling and generation: samplers draw from the truncated distribution, greedy equals the
no-cache argmax loop, batches equal single streams, seeds reproduce, stop tokens, bad input, the CLI."""
import io
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minigpt.model import backend
from minigpt.model import GPT, GPTConfig
from minigpt.inference.generate import StreamDecoder, generate
from minigpt.inference.sampling import filtered_probs, sample_token
from minigpt.tokenizer import load_tokenizer
from minigpt.tokenizer.files import LlmcTokenizer, write_llmc_table

KERNELS = ["numpy"] + (["c"] if ("c" in backend.available()) else [])


def make_model(V=50, maxT=16, seed=0):
    cfg = GPTConfig(block_size=maxT, vocab_size=V, n_layer=2, n_head=2, n_embd=16)
    model = GPT(cfg, backend="numpy", seed=seed)
    rng = np.random.default_rng(seed + 1)
    model.params["wte"][:V] *= 40  # peaked distributions: greedy margins far above rounding
    model.params["qkvw"][...] += 0.1 * rng.standard_normal(model.params["qkvw"].shape)
    return model


MODEL = make_model()


# --------------------------------------------------------------------------------------------------
# samplers


def test_filtered_probs_truncate_and_renormalise():
    logits = np.log(np.array([0.05, 0.4, 0.1, 0.3, 0.15]))
    np.testing.assert_allclose(filtered_probs(logits), [0.05, 0.4, 0.1, 0.3, 0.15])
    np.testing.assert_allclose(filtered_probs(logits, top_k=2), [0, 0.4 / 0.7, 0, 0.3 / 0.7, 0])
    # top-p 0.75: 0.4, then 0.3 (mass so far 0.4 < 0.75), then 0.15 (0.7 < 0.75); not 0.1 (0.85)
    np.testing.assert_allclose(filtered_probs(logits, top_p=0.75), [0, 0.4 / 0.85, 0, 0.3 / 0.85, 0.15 / 0.85])
    np.testing.assert_allclose(filtered_probs(logits, top_p=0.7), [0, 0.4 / 0.7, 0, 0.3 / 0.7, 0])
    np.testing.assert_allclose(filtered_probs(logits, top_p=0.01), [0, 1, 0, 0, 0])
    hot = filtered_probs(logits, temperature=2.0)
    np.testing.assert_allclose(hot, np.sqrt([0.05, 0.4, 0.1, 0.3, 0.15]) / np.sqrt([0.05, 0.4, 0.1, 0.3, 0.15]).sum())


@pytest.mark.parametrize("top_k, top_p", [(None, None), (3, None), (None, 0.8), (4, 0.6)])
def test_sampler_empirical_frequencies(top_k, top_p):
    """Draw many tokens; their frequencies match the truncated, renormalised distribution."""
    rng_l = np.random.default_rng(7)
    logits = rng_l.standard_normal(8)
    want = filtered_probs(logits, 0.9, top_k, top_p)
    rng = np.random.default_rng(0)
    n = 20000
    counts = np.bincount([sample_token(logits, 0.9, top_k, top_p, rng) for _ in range(n)], minlength=8)
    assert np.all(counts[want == 0] == 0)  # never outside the kept set
    # within 5 binomial standard deviations of the expected count
    np.testing.assert_array_less(np.abs(counts - n * want), 5 * np.sqrt(n * want * (1 - want)) + 1)


def test_greedy_is_argmax():
    logits = np.array([0.1, 3.0, -1.0, 2.9])
    assert sample_token(logits, 0, None, None, None) == 1


# --------------------------------------------------------------------------------------------------
# generation


@pytest.mark.parametrize("kern", KERNELS)
def test_greedy_equals_no_cache_argmax_loop(kern):
    """The KV-cache engine's greedy tokens equal re-running the full forward on the growing sequence."""
    model = MODEL
    prompt = [3, 14, 15, 9]
    ours = generate(model, prompt, max_new_tokens=10, temperature=0, kernels=kern)[0]
    seq = list(prompt)
    for _ in range(10):
        model.forward(np.array([seq]))
        seq.append(int(np.argmax(model.logits[0, -1, :model.config.vocab_size])))
    assert ours == seq[len(prompt):]


@pytest.mark.parametrize("kern", KERNELS)
@pytest.mark.parametrize("temperature, top_k, top_p", [(0, None, None), (1.0, None, None), (0.8, 5, 0.9)])
def test_batch_equals_one_stream_at_a_time(kern, temperature, top_k, top_p):
    model = MODEL
    prompts = [[1, 2, 3, 4, 5, 6], [7], [8, 9, 10]]
    kw = dict(max_new_tokens=7, temperature=temperature, top_k=top_k, top_p=top_p, seed=3, n=2, kernels=kern)
    batched = generate(model, prompts, **kw)
    alone = [s for p in prompts for s in generate(model, p, **kw)]
    assert batched == alone
    assert len(batched) == 6 and all(len(s) == 7 for s in batched)


def test_seeds_reproduce_and_differ():
    model = MODEL
    a = generate(model, [1, 2], max_new_tokens=10, seed=5, n=3)
    assert a == generate(model, [1, 2], max_new_tokens=10, seed=5, n=3)
    assert a != generate(model, [1, 2], max_new_tokens=10, seed=6, n=3)
    assert len({tuple(s) for s in a}) > 1  # the n samples are different draws


def test_stop_tokens_max_tokens_and_full_context():
    model = MODEL
    free = generate(model, [1, 2, 3], max_new_tokens=8, temperature=0)[0]
    stop = free[3]
    out = generate(model, [1, 2, 3], max_new_tokens=8, temperature=0, stop=stop)[0]
    assert out == free[:free.index(stop)]  # ends before the stop token, which is not included
    assert generate(model, [1, 2, 3], max_new_tokens=8, temperature=0, stop=[stop, 999])[0] == out
    assert generate(model, [1, 2, 3], max_new_tokens=0) == [[]]
    # the context holds block_size=16 tokens: 13 prompt tokens leave room to feed 3, so 4 come out
    long = generate(model, list(range(13)), max_new_tokens=50, temperature=0)[0]
    assert len(long) == 4


def test_bad_input():
    model = MODEL
    with pytest.raises(ValueError, match="block_size"):
        generate(model, list(range(17)))
    with pytest.raises(ValueError, match="vocab_size"):
        generate(model, [1, 50])
    with pytest.raises(ValueError, match="vocab_size"):
        generate(model, [1, -1])
    with pytest.raises(ValueError, match="empty"):
        generate(model, [])
    with pytest.raises(ValueError, match="temperature"):
        generate(model, [1], temperature=-1)
    with pytest.raises(ValueError, match="top_p"):
        generate(model, [1], top_p=0)
    with pytest.raises(ValueError, match="unknown backend"):
        generate(model, [1], kernels="tpu")


# --------------------------------------------------------------------------------------------------
# tokenizer files, incremental decoding, the CLI


def byte_tokenizer(path):
    write_llmc_table(path, [bytes([i]) for i in range(256)] + [b"<|endoftext|>"], 256)
    return path


def test_llmc_tokenizer_and_stream_decoder(tmp_path):
    tok = load_tokenizer(byte_tokenizer(tmp_path / "tok.bin"))
    assert isinstance(tok, LlmcTokenizer) and tok.eot == 256 and tok.n_vocab == 257
    ids = tok.encode("héllo €")
    assert tok.decode(ids) == "héllo €"
    dec = StreamDecoder(tok)
    pieces = [dec.push([i]) for i in ids]  # one byte at a time: multi-byte characters wait
    assert pieces[1] == "" and pieces[2] == "é" and "".join(pieces) + dec.flush() == "héllo €"
    with pytest.raises(FileNotFoundError, match="tokenizer file not found"):
        load_tokenizer(tmp_path / "nope.bin")
    bad = tmp_path / "bad.bin"
    bad.write_bytes((20240328).to_bytes(4, "little") + (2).to_bytes(4, "little")
                    + (300).to_bytes(4, "little") + bytes(1012) + b"\x05ab")
    with pytest.raises(ValueError, match="runs past the end of the file"):
        load_tokenizer(bad)


def test_cli_streams_greedy_text(tmp_path, monkeypatch):
    from minigpt import cli
    cfg = GPTConfig(block_size=32, vocab_size=257, n_layer=1, n_head=2, n_embd=16)
    model = GPT(cfg, backend="numpy", seed=1)
    model.params["wte"][:257] *= 40
    ck = tmp_path / "m.bin"
    model.save(ck)
    tok = byte_tokenizer(tmp_path / "tok.bin")
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    rc = cli.main(["sample", str(ck), "--tokenizer", str(tok), "--prompt", "Hi",
                   "--max-new-tokens", "12", "--temperature", "0"])
    assert rc == 0
    want = generate(model, list(b"Hi"), 12, temperature=0)[0]
    assert out.getvalue() == "Hi" + bytes(want).decode("utf-8", errors="replace") + "\n"
    monkeypatch.setattr(sys, "stderr", err := io.StringIO())
    assert cli.main(["sample", str(ck), "--tokenizer", str(tmp_path / "x.bin"), "--prompt", "a"]) == 2
    assert "tokenizer file not found" in err.getvalue()
    assert cli.main(["sample", str(tmp_path / "none.bin"), "--prompt-ids", "1"]) == 2
    assert "no such run directory or checkpoint file" in err.getvalue()
    small = GPT(GPTConfig(block_size=32, vocab_size=200, n_layer=1, n_head=2, n_embd=16), backend="numpy")
    small.save(tmp_path / "small.bin")                                # 200 ids: not the tokenizer's 257
    assert cli.main(["sample", str(tmp_path / "small.bin"), "--tokenizer", str(tok), "--prompt", "a"]) == 2
    assert "they do not belong together" in err.getvalue()


@settings(max_examples=40, deadline=None)
@given(B=st.integers(1, 9), V=st.integers(1, 70), temperature=st.sampled_from([0, 0.5, 1.0, 1.7]),
       top_k=st.sampled_from([None, 3]), seed=st.integers(0, 2 ** 31))
def test_sample_tokens_equals_sample_token_row_by_row(B, V, temperature, top_k, seed):
    """The batched sampler (every stream of a decode step at once) draws exactly what the per-row
    one draws from the same generators."""
    from minigpt.inference.sampling import sample_tokens
    logits = np.random.default_rng(seed).normal(0, 3, (B, V)).astype(np.float32)
    rows = [sample_token(logits[b], temperature, top_k, None, np.random.default_rng([seed, b])) for b in range(B)]
    batched = sample_tokens(logits, temperature, top_k, None, [np.random.default_rng([seed, b]) for b in range(B)])
    assert batched == rows
