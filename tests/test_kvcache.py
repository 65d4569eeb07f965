"""The KV-cache path: C kernels against the NumPy spec, cached logits against the full forward,
bf16 conversion and version-5 checkpoints, bad input."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigpt.inference import kvcache
from minigpt.model import ops_decode
from minigpt.model import GPT, GPTConfig, backend
from minigpt.fileio import (FileFormatError, bf16_to_f32, f32_to_bf16, read_checkpoint, read_checkpoint_raw,
                            write_checkpoint_bf16)
from minigpt.config import PARAM_NAMES

KERNELS = ["numpy"] + (["c"] if ("c" in backend.available()) else [])
BACKENDS = [b for b in backend.available() if b != "cuda"]  # the full forward: every CPU backend
needs_c = pytest.mark.skipif(not ("c" in backend.available()), reason="minigpt._decode not built (pip install -e .)")


def tiny_model(V=70, L=2, NH=2, C=16, maxT=24, seed=0):
    cfg = GPTConfig(block_size=maxT, vocab_size=V, n_layer=L, n_head=NH, n_embd=C)
    model = GPT(cfg, backend="numpy", seed=seed)
    rng = np.random.default_rng(seed + 1)  # non-trivial LayerNorms and biases
    for name in PARAM_NAMES:
        model.params[name][...] += 0.1 * rng.standard_normal(model.params[name].shape)
    model.params["wte"][V:] = 0
    return model


def full_logits(model, idx, be="numpy"):
    if be != model.backend.name:  # the same weights on another backend
        other = GPT(model.config, backend=be, seed=None)
        other.params_memory[:] = model.params_memory
        model = other
    model.forward(np.asarray(idx)[None, :])
    return model.logits[0].copy()  # (T, Vp)


# --------------------------------------------------------------------------------------------------
# C kernels == NumPy kernels, on sizes that are not multiples of the tile widths (4 rows, 2 inputs, 8 lanes)


@needs_c
@settings(max_examples=40)
@given(N=st.integers(1, 9), C=st.integers(1, 37), OC=st.integers(1, 23), bias=st.booleans(),
       half=st.booleans(), seed=st.integers(0, 2**16))
def test_matvec_c_matches_numpy(N, C, OC, bias, half, seed):
    from minigpt.model import ops_decode_c
    rng = np.random.default_rng(seed)
    inp = rng.standard_normal((N, C)).astype(np.float32)
    w = rng.standard_normal((OC, C)).astype(np.float32)
    if half:
        w = f32_to_bf16(w).reshape(OC, C)
    b = rng.standard_normal(OC).astype(np.float32) if bias else None
    ours, ref = np.empty((N, OC), np.float32), np.empty((N, OC), np.float32)
    fn = "matvec_forward_bf16" if half else "matvec_forward"
    getattr(ops_decode_c, fn)(ours, inp, w, b, N, C, OC)
    getattr(ops_decode, fn)(ref, inp, w, b, N, C, OC)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5 * np.sqrt(C))
    # each output is the same sum whatever the batch: row 0 alone gives the same bits
    alone = np.empty((1, OC), np.float32)
    getattr(ops_decode_c, fn)(alone, inp[:1].copy(), w, b, 1, C, OC)
    np.testing.assert_array_equal(alone[0], ours[0])


@needs_c
@settings(max_examples=20, deadline=None)
@given(n=st.one_of(st.integers(1, 40), st.integers(4090, 9000)), seed=st.integers(0, 2**16))
def test_stream_read_is_a_sum(n, seed):
    from minigpt.model import ops_decode_c
    x = np.random.default_rng(seed).standard_normal(n).astype(np.float32)
    assert abs(ops_decode_c.stream_read(x) - x.astype(np.float64).sum()) <= 1e-6 * n * np.abs(x).max()


@needs_c
@settings(max_examples=15, deadline=None)
@given(N=st.integers(48, 70), C=st.sampled_from([1, 8, 37, 256, 300]), OC=st.integers(1, 45),
       bias=st.booleans(), half=st.booleans(), seed=st.integers(0, 2**16))
def test_prefill_rows_go_through_the_gemm(N, C, OC, bias, half, seed):
    """From 48 rows on (csrc/decode.c GEMM_ROWS) the matvec is the packed GEMM: same reference."""
    from minigpt.model import ops_decode_c
    rng = np.random.default_rng(seed)
    inp = rng.standard_normal((N, C)).astype(np.float32)
    w = rng.standard_normal((OC, C)).astype(np.float32)
    if half:
        w = f32_to_bf16(w).reshape(OC, C)
    b = rng.standard_normal(OC).astype(np.float32) if bias else None
    ours, ref = np.empty((N, OC), np.float32), np.empty((N, OC), np.float32)
    fn = "matvec_forward_bf16" if half else "matvec_forward"
    getattr(ops_decode_c, fn)(ours, inp, w, b, N, C, OC)
    getattr(ops_decode, fn)(ref, inp, w, b, N, C, OC)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5 * np.sqrt(C))


@needs_c
@settings(max_examples=30)
@given(B=st.integers(1, 3), NH=st.integers(1, 3), hs=st.integers(1, 9), maxT=st.integers(1, 12),
       data=st.data())
def test_attention_and_kv_write_c_match_numpy(B, NH, hs, maxT, data):
    from minigpt.model import ops_decode_c
    C = NH * hs
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    # rows: distinct (stream, position) pairs, each stream filled below its rows
    pairs = sorted({(data.draw(st.integers(0, B - 1)), data.draw(st.integers(0, maxT - 1))) for _ in range(4)})
    streams = np.array([s for s, _ in pairs], np.int32)
    positions = np.array([p for _, p in pairs], np.int32)
    N = len(pairs)
    qkv = rng.standard_normal((N, 3 * C)).astype(np.float32)
    caches = [rng.standard_normal((B, NH, maxT, hs)).astype(np.float32) for _ in range(4)]
    k1, v1, k2, v2 = caches[0], caches[1], caches[0].copy(), caches[1].copy()
    ops_decode.kv_write(k1, v1, qkv, streams, positions, N, C, NH, maxT)
    ops_decode_c.kv_write(k2, v2, qkv, streams, positions, N, C, NH, maxT)
    np.testing.assert_array_equal(k1, k2)
    np.testing.assert_array_equal(v1, v2)
    ref, ours = np.empty((N, C), np.float32), np.empty((N, C), np.float32)
    ops_decode.attention_cached(ref, qkv, k1, v1, streams, positions, N, C, NH, maxT)
    ops_decode_c.attention_cached(ours, qkv, k2, v2, streams, positions, N, C, NH, maxT)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)


@needs_c
@settings(max_examples=20)
@given(N=st.integers(1, 5), C=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_layernorm_and_gelu_c_match_numpy(N, C, seed):
    from minigpt.model import ops_decode_c
    rng = np.random.default_rng(seed)
    x = (3 * rng.standard_normal((N, C)) + 1).astype(np.float32)
    w, b = rng.standard_normal(C).astype(np.float32), rng.standard_normal(C).astype(np.float32)
    ref, ours = np.empty_like(x), np.empty_like(x)
    ops_decode.layernorm_cached(ref, x, w, b, N, C)
    ops_decode_c.layernorm_cached(ours, x, w, b, N, C)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)
    ops_decode.gelu_forward(ref, x, N * C)
    ops_decode_c.gelu_forward(ours, x, N * C)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)


@needs_c
def test_c_wrappers_reject_wrong_arrays():
    from minigpt.model import ops_decode_c
    out = np.empty((2, 3), np.float32)
    with pytest.raises(TypeError, match="float32"):
        ops_decode_c.matvec_forward(out, np.zeros((2, 4)), np.zeros((3, 4), np.float32), None, 2, 4, 3)
    with pytest.raises(TypeError, match="contiguous"):
        ops_decode_c.matvec_forward(out, np.zeros((4, 2), np.float32).T, np.zeros((3, 4), np.float32), None, 2, 4, 3)
    with pytest.raises(ValueError, match="w: expected 12 elements"):
        ops_decode_c.matvec_forward(out, np.zeros((2, 4), np.float32), np.zeros((3, 5), np.float32), None, 2, 4, 3)


# --------------------------------------------------------------------------------------------------
# the cached forward equals the full forward at every position


@pytest.mark.parametrize("be", BACKENDS)
@pytest.mark.parametrize("kern", KERNELS)
@settings(max_examples=12)
@given(data=st.data())
def test_cached_logits_equal_full_forward(kern, be, data):
    model = MODEL
    T = data.draw(st.integers(1, model.config.block_size), label="T")
    idx = data.draw(st.lists(st.integers(0, model.config.vocab_size - 1), min_size=T, max_size=T), label="idx")
    split = data.draw(st.integers(1, T), label="prefill length")
    full = full_logits(model, idx, be)
    w = kvcache.DecodeWeights.from_model(model)
    cache = kvcache.KVCache(model.config, 1)
    k = backend.decode_kernels(kern)
    # prefill asking for every row's logits, then decode the rest one token at a time
    pre = kvcache.forward_cached(w, cache, idx[:split], [0] * split, range(split), k)
    steps = [kvcache.decode_step(w, cache, [t], [0], k)[0] for t in idx[split:]]
    cached = np.concatenate([pre] + [s[None] for s in steps])
    np.testing.assert_allclose(cached, full, rtol=1e-4, atol=2e-5)


MODEL = tiny_model()


@pytest.mark.parametrize("kern", KERNELS)
def test_streams_of_different_lengths_in_one_batch(kern):
    """Three streams, prefilled together with their own lengths, then decoded together: each row's
    logits equal that stream's full forward."""
    model, k = MODEL, backend.decode_kernels(kern)
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, 70, n).tolist() for n in (9, 5, 15)]
    w = kvcache.DecodeWeights.from_model(model)
    cache = kvcache.KVCache(model.config, 3)
    last = kvcache.prefill(w, cache, [s[:-4] for s in seqs], k)
    for b, s in enumerate(seqs):
        np.testing.assert_allclose(last[b], full_logits(model, s)[len(s) - 5], rtol=1e-4, atol=2e-5)
    for i in range(4):
        got = kvcache.decode_step(w, cache, [s[len(s) - 4 + i] for s in seqs], [0, 1, 2], k)
        for b, s in enumerate(seqs):
            np.testing.assert_allclose(got[b], full_logits(model, s)[len(s) - 4 + i], rtol=1e-4, atol=2e-5)
    assert cache.lengths.tolist() == [len(s) for s in seqs]


def test_kernel_sets_agree_and_bf16_weights_match_their_spec():
    model = MODEL
    idx = list(range(1, 20))
    for half in (False, True):
        w = kvcache.DecodeWeights.from_model(model, half=half)
        outs = []
        for kern in KERNELS:
            cache = kvcache.KVCache(model.config, 1)
            outs.append(kvcache.forward_cached(w, cache, idx, [0] * 19, range(19), backend.decode_kernels(kern)))
        for o in outs[1:]:
            np.testing.assert_allclose(o, outs[0], rtol=1e-4, atol=2e-5)
        if half:  # bf16 weights are the fp32 model with every parameter rounded to bf16
            rounded = GPT(model.config, backend="numpy", seed=None)
            rounded.params_memory[:] = bf16_to_f32(f32_to_bf16(model.params_memory))
            np.testing.assert_allclose(outs[0], full_logits(rounded, idx), rtol=1e-4, atol=2e-5)
            assert w.t["qkvw"].dtype == np.uint16 and w.nbytes() < 0.6 * model.params_memory.nbytes


def test_bad_rows():
    model = MODEL
    w = kvcache.DecodeWeights.from_model(model)
    cache = kvcache.KVCache(model.config, 2, maxT=8)
    with pytest.raises(ValueError, match="vocab_size"):
        kvcache.forward_cached(w, cache, [70], [0], [0], ops_decode)
    with pytest.raises(ValueError, match="positions"):
        kvcache.forward_cached(w, cache, [1], [0], [8], ops_decode)
    with pytest.raises(ValueError, match="streams"):
        kvcache.forward_cached(w, cache, [1], [2], [0], ops_decode)
    with pytest.raises(ValueError, match="gap"):
        kvcache.forward_cached(w, cache, [1, 2], [0, 0], [0, 2], ops_decode)
    with pytest.raises(ValueError, match="one token per prompt"):
        kvcache.prefill(w, cache, [[1], []], ops_decode)
    with pytest.raises(ValueError, match="block_size"):
        kvcache.KVCache(model.config, 1, maxT=model.config.block_size + 1)


# --------------------------------------------------------------------------------------------------
# bf16 and version-5 checkpoints


def test_bf16_rounding():
    x = np.array([1.0, -2.5, 0.0, -0.0, np.inf, -np.inf, 3.4e38, 1e-40,
                  1.0 + 2**-8,            # exactly halfway between two bf16 values: ties to even (down)
                  1.0 + 3 * 2**-8,        # halfway, rounds up to the even one
                  1.0 + 2**-8 + 2**-20],  # just above halfway: up
                 np.float32)
    h = f32_to_bf16(x)
    back = bf16_to_f32(h)
    assert back[:6].tolist() == x[:6].tolist()
    assert back[8] == 1.0 and back[9] == 1.0 + 4 * 2**-8 and back[10] == 1.0 + 2 * 2**-8
    assert np.isnan(bf16_to_f32(f32_to_bf16(np.array([np.nan], np.float32))))[0]
    r = np.random.default_rng(0).standard_normal(10000).astype(np.float32)
    assert np.all(np.abs(bf16_to_f32(f32_to_bf16(r)) - r) <= np.abs(r) * 2**-8)  # half an ulp: 7 stored mantissa bits
    try:
        import torch
    except ImportError:
        return
    theirs = torch.from_numpy(r).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(f32_to_bf16(r), theirs)


def test_bf16_checkpoint(tmp_path):
    model = MODEL
    path = tmp_path / "m16.bin"
    write_checkpoint_bf16(path, model.config, model.params_memory)
    header = np.fromfile(path, dtype="<i4", count=8)
    assert header[:2].tolist() == [20240326, 5]
    assert path.stat().st_size == 1024 + 2 * model.num_parameters  # half of fp32's bytes
    cfg, raw = read_checkpoint_raw(path)
    assert cfg == model.config and raw.dtype == np.uint16
    _, params = read_checkpoint(path)  # widened for training/evaluation
    np.testing.assert_array_equal(params, bf16_to_f32(f32_to_bf16(model.params_memory)))
    back = GPT.load(path, backend="numpy")
    np.testing.assert_array_equal(back.params_memory, params)
    w = kvcache.DecodeWeights.load(path)  # stays 16-bit in memory
    assert w.half and w.t["fcw"].dtype == np.uint16
    with open(path, "r+b") as f:
        f.truncate(1024 + 2 * model.num_parameters - 2)
    with pytest.raises(FileFormatError, match="truncated"):
        read_checkpoint_raw(path)
    with pytest.raises(FileNotFoundError, match="not found"):
        kvcache.DecodeWeights.load(tmp_path / "missing.bin")
