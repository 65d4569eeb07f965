"""The C kernels (csrc/, minigpt/model/ops_c.py) against the NumPy reference (minigpt/model/ops.py).

Every kernel on shapes hypothesis draws (size 1, odd sizes, sizes that are not multiples of the
GEMM's 6 x 16 micro-tile or 256-deep K blocks), in float32 against the reference computed in float64
on the same inputs. Backward kernels start from random gradient buffers, so the accumulate (+=)
contract is checked on every example, and once more explicitly (twice = double). Results must not
depend on the thread count: each kernel gives the same bits on 1 and 2 threads.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigpt.model import GPT, GPTConfig, ops

ops_c = pytest.importorskip("minigpt.model.ops_c", reason="the C backend is not built (pip install -e .)")

RTOL, ATOL = 2e-5, 2e-5  # fp32 against fp64: rounding of sums of a few hundred terms


@pytest.fixture
def threads():
    """set_threads(n) for the test, then back to what it was."""
    before = ops_c.get_threads()
    yield ops_c.set_threads
    ops_c.set_threads(before)


def rand(rng, *shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def f64(*arrays):
    return [a.astype(np.float64) for a in arrays]


def close(ours, ref, rtol=RTOL, atol=ATOL, name=""):
    np.testing.assert_allclose(ours, ref, rtol=rtol, atol=atol, err_msg=name)


# --------------------------------------------------------------------------------------------------
# the GEMM: every stride combination, ragged edges, K across several 256-deep blocks

dims = st.one_of(st.integers(1, 40), st.sampled_from([6, 12, 16, 17, 31, 32, 95, 97, 263, 265]))


@settings(max_examples=200)
@given(M=dims, N=dims, K=st.one_of(dims, st.sampled_from([255, 256, 257, 513])),
       ta=st.booleans(), tb=st.booleans(), acc=st.booleans(), seed=st.integers(0, 2**16))
def test_gemm(M, N, K, ta, tb, acc, seed):
    rng = np.random.default_rng(seed)
    a = rand(rng, K, M).T if ta else rand(rng, M, K)  # a transposed view: other strides, no copy
    b = rand(rng, N, K).T if tb else rand(rng, K, N)
    c0 = rand(rng, M, N)
    ref = (c0.astype(np.float64) if acc else 0) + a.astype(np.float64) @ b.astype(np.float64)
    tol = dict(rtol=1e-5, atol=1e-6 * np.sqrt(K) * 4)
    for fn in (ops_c.gemm, ops_c.gemm_naive):
        out = c0.copy()
        fn(out, a, b, accumulate=acc)
        close(out, ref, **tol, name=fn.__name__)


def test_gemm_many_tiles():
    """Bigger than one tile in every direction (tiles are at most 264 x 512, K blocks 256)."""
    rng = np.random.default_rng(0)
    a, b = rand(rng, 601, 530), rand(rng, 530, 1100)
    out = np.empty((601, 1100), np.float32)
    ops_c.gemm(out, a, b)
    close(out, a.astype(np.float64) @ b, rtol=1e-5, atol=1e-4)


# --------------------------------------------------------------------------------------------------
# every op: C against the reference


shapes = st.fixed_dictionaries({
    "B": st.integers(1, 3), "T": st.integers(1, 9), "NH": st.integers(1, 3), "hs": st.integers(1, 9),
    "OC": st.one_of(st.integers(1, 40), st.just(97)), "seed": st.integers(0, 2**16)})


@settings(max_examples=120)
@given(s=shapes)
def test_encoder(s):
    B, T, C = s["B"], s["T"], s["NH"] * s["hs"]
    rng = np.random.default_rng(s["seed"])
    Vp, maxT = 13, 9
    inp = rng.integers(0, 4, (B, T))  # few distinct ids: repeated tokens must sum their gradients
    wte, wpe, dout = rand(rng, Vp, C), rand(rng, maxT, C), rand(rng, B, T, C)
    out = np.empty((B, T, C), np.float32)
    ops_c.encoder_forward(out, inp, wte, wpe, B, T, C)
    ref = np.empty((B, T, C))
    ops.encoder_forward(ref, inp, *f64(wte, wpe), B, T, C)
    close(out, ref)
    dwte, dwpe = rand(rng, Vp, C), rand(rng, maxT, C)
    rwte, rwpe = f64(dwte, dwpe)
    ops_c.encoder_backward(dwte, dwpe, dout, inp, B, T, C)
    ops.encoder_backward(rwte, rwpe, dout.astype(np.float64), inp, B, T, C)
    close(dwte, rwte)
    close(dwpe, rwpe)


@settings(max_examples=120)
@given(s=shapes)
def test_layernorm(s):
    B, T, C = s["B"], s["T"], s["NH"] * s["hs"]
    rng = np.random.default_rng(s["seed"])
    inp = rand(rng, B, T, C) + 3.0  # an offset: the mean must really be subtracted
    w, b, dout = rand(rng, C), rand(rng, C), rand(rng, B, T, C)
    out, mean, rstd = np.empty((B, T, C), np.float32), np.empty((B, T), np.float32), np.empty((B, T), np.float32)
    ops_c.layernorm_forward(out, mean, rstd, inp, w, b, B, T, C)
    r_out, r_mean, r_rstd = np.empty((B, T, C)), np.empty((B, T)), np.empty((B, T))
    ops.layernorm_forward(r_out, r_mean, r_rstd, *f64(inp, w, b), B, T, C)
    close(mean, r_mean)
    close(rstd, r_rstd, rtol=1e-4)  # 1/sqrt(var + eps): for C = 1, var = 0 and rstd = 316
    # x - mean rounds at float32's ulp of |x|, and rstd (up to 316) magnifies it: bound by that
    amp = np.abs(inp).max() * r_rstd.max() * max(1.0, np.abs(w).max())
    close(out, r_out, rtol=1e-4, atol=1e-4 + 1e-6 * amp)
    dinp, dw, db = rand(rng, B, T, C), rand(rng, C), rand(rng, C)
    refs = f64(dinp, dw, db)
    ops_c.layernorm_backward(dinp, dw, db, dout, inp, w, mean, rstd, B, T, C)
    ops.layernorm_backward(*refs, *f64(dout, inp, w, mean, rstd), B, T, C)
    amp *= np.abs(dout).max() * max(1.0, r_rstd.max())  # dinp carries a second factor of rstd
    for ours, ref, name in zip((dinp, dw, db), refs, ("dinp", "dw", "db")):
        close(ours, ref, rtol=1e-4, atol=(1e-3 if C == 1 else 1e-4) + 1e-6 * amp, name=name)


@settings(max_examples=120)
@given(s=shapes, bias=st.booleans())
def test_matmul(s, bias):
    B, T, C, OC = s["B"], s["T"], s["NH"] * s["hs"], s["OC"]
    rng = np.random.default_rng(s["seed"])
    inp, w, dout = rand(rng, B, T, C), rand(rng, OC, C), rand(rng, B, T, OC)
    b = rand(rng, OC) if bias else None
    out = np.empty((B, T, OC), np.float32)
    ops_c.matmul_forward(out, inp, w, b, B, T, C, OC)
    ref = np.empty((B, T, OC))
    ops.matmul_forward(ref, *f64(inp, w), None if b is None else b.astype(np.float64), B, T, C, OC)
    close(out, ref)
    dinp, dw = rand(rng, B, T, C), rand(rng, OC, C)
    dbias = rand(rng, OC) if bias else None
    refs = f64(dinp, dw) + ([dbias.astype(np.float64)] if bias else [None])
    ops_c.matmul_backward(dinp, dw, dbias, dout, inp, w, B, T, C, OC)
    ops.matmul_backward(*refs, *f64(dout, inp, w), B, T, C, OC)
    close(dinp, refs[0])
    close(dw, refs[1])
    if bias:
        close(dbias, refs[2])


@settings(max_examples=120)
@given(s=shapes)
def test_attention(s):
    B, T, NH, C = s["B"], s["T"], s["NH"], s["NH"] * s["hs"]
    rng = np.random.default_rng(s["seed"])
    inp, dout = rand(rng, B, T, 3 * C), rand(rng, B, T, C)
    out = np.empty((B, T, C), np.float32)
    preatt, att = np.empty((B, NH, T, T), np.float32), np.empty((B, NH, T, T), np.float32)
    ops_c.attention_forward(out, preatt, att, inp, B, T, C, NH)
    r_out, r_pre, r_att = np.empty((B, T, C)), np.empty((B, NH, T, T)), np.empty((B, NH, T, T))
    ops.attention_forward(r_out, r_pre, r_att, inp.astype(np.float64), B, T, C, NH)
    close(preatt, r_pre)   # -inf above the diagonal on both sides
    close(att, r_att)
    assert np.all(att[..., np.triu_indices(T, 1)[0], np.triu_indices(T, 1)[1]] == 0)
    close(out, r_out)
    dinp, dpre, datt = rand(rng, B, T, 3 * C), rand(rng, B, NH, T, T), rand(rng, B, NH, T, T)
    refs = f64(dinp, dpre, datt)
    ops_c.attention_backward(dinp, dpre, datt, dout, inp, att, B, T, C, NH)
    ops.attention_backward(*refs, *f64(dout, inp), r_att, B, T, C, NH)
    for ours, ref, name in zip((dinp, dpre, datt), refs, ("dinp", "dpreatt", "datt")):
        close(ours, ref, name=name)


@settings(max_examples=100)
@given(N=st.integers(1, 300), scale=st.sampled_from([0.1, 1.0, 5.0, 30.0]), seed=st.integers(0, 2**16))
def test_gelu_residual(N, scale, seed):
    rng = np.random.default_rng(seed)
    x, y, d = rand(rng, N, scale=scale), rand(rng, N), rand(rng, N)
    out = np.empty(N, np.float32)
    ops_c.gelu_forward(out, x, N)
    ref = np.empty(N)
    ops.gelu_forward(ref, x.astype(np.float64), N)
    close(out, ref, rtol=1e-5, atol=1e-6)
    dinp, rdinp = rand(rng, N), None
    rdinp = dinp.astype(np.float64)
    ops_c.gelu_backward(dinp, x, d, N)
    ops.gelu_backward(rdinp, *f64(x, d), N)
    close(dinp, rdinp, rtol=1e-5, atol=1e-5)
    ops_c.residual_forward(out, x, y, N)
    close(out, x.astype(np.float64) + y)
    da, db = rand(rng, N), rand(rng, N)
    rda, rdb = f64(da, db)
    ops_c.residual_backward(da, db, d, N)
    ops.residual_backward(rda, rdb, d.astype(np.float64), N)
    close(da, rda)
    close(db, rdb)


@settings(max_examples=120)
@given(B=st.integers(1, 3), T=st.integers(1, 5), V=st.integers(1, 300), pad=st.integers(0, 5),
       scale=st.sampled_from([1.0, 10.0, 100.0]), seed=st.integers(0, 2**16))
def test_softmax_crossentropy(B, T, V, pad, scale, seed):
    Vp = V + pad
    rng = np.random.default_rng(seed)
    logits = rand(rng, B, T, Vp, scale=scale)  # scale 100: p underflows; the loss must stay exact
    targets = rng.integers(-1, V, (B, T))      # -1: ignored
    dlosses = rand(rng, B, T)
    losses, probs = np.empty((B, T), np.float32), np.empty((B, T, Vp), np.float32)
    ops_c.softmax_crossentropy_forward(losses, probs, logits, targets, B, T, V, Vp)
    r_losses, r_probs = np.empty((B, T)), np.empty((B, T, Vp))
    ops.softmax_crossentropy_forward(r_losses, r_probs, logits.astype(np.float64), targets, B, T, V, Vp)
    close(probs, r_probs, rtol=1e-5, atol=1e-7)
    assert np.all(probs[..., V:] == 0)
    close(losses, r_losses, rtol=1e-5, atol=1e-5 * scale)
    dlogits = rand(rng, B, T, Vp)
    r_dlogits = dlogits.astype(np.float64)
    ops_c.softmax_crossentropy_backward(dlogits, dlosses, probs, targets, B, T, V, Vp)
    ops.softmax_crossentropy_backward(r_dlogits, dlosses.astype(np.float64), r_probs, targets, B, T, V, Vp)
    close(dlogits, r_dlogits, rtol=1e-5, atol=1e-6)


@settings(max_examples=100)
@given(N=st.integers(1, 200), t=st.integers(1, 1000), wd=st.sampled_from([0.0, 0.1]), seed=st.integers(0, 2**16))
def test_adamw(N, t, wd, seed):
    rng = np.random.default_rng(seed)
    p, g = rand(rng, N), rand(rng, N)
    m, v = rand(rng, N, scale=0.1), np.abs(rand(rng, N, scale=0.1))
    refs = f64(p, g, m, v)
    ops_c.adamw_update(p, g, m, v, N, 1e-3, 0.9, 0.95, 1e-8, wd, t)
    ops.adamw_update(*refs, N, 1e-3, 0.9, 0.95, 1e-8, wd, t)
    for ours, ref, name in zip((p, m, v), (refs[0], refs[2], refs[3]), "pmv"):
        close(ours, ref, rtol=1e-5, atol=1e-6, name=name)


# --------------------------------------------------------------------------------------------------
# accumulate, threads, bad input


def layer_problem(rng, B=2, T=37, NH=3, hs=17, OC=101, Vp=300):
    """Inputs for every backward kernel at sizes that cross tile edges, and a call for each."""
    C = NH * hs
    x = {"inp": rand(rng, B, T, C), "w": rand(rng, OC, C), "dout": rand(rng, B, T, OC),
         "qkv": rand(rng, B, T, 3 * C), "dy": rand(rng, B, T, C), "ids": rng.integers(0, 5, (B, T)),
         "logits": rand(rng, B, T, Vp), "targets": rng.integers(-1, Vp - 3, (B, T))}
    att, probs = np.empty((B, NH, T, T), np.float32), np.empty((B, T, Vp), np.float32)
    ops_c.attention_forward(np.empty((B, T, C), np.float32), np.empty_like(att), att, x["qkv"], B, T, C, NH)
    ops_c.softmax_crossentropy_forward(np.empty((B, T), np.float32), probs, x["logits"], x["targets"],
                                       B, T, Vp - 3, Vp)
    mean, rstd = np.empty((B, T), np.float32), np.empty((B, T), np.float32)
    ops_c.layernorm_forward(np.empty_like(x["inp"]), mean, rstd, x["inp"], x["w"][0], x["w"][1], B, T, C)
    grads = {"mm": [np.zeros((B, T, C), np.float32), np.zeros((OC, C), np.float32), np.zeros(OC, np.float32)],
             "att": [np.zeros((B, T, 3 * C), np.float32), np.zeros_like(att), np.zeros_like(att)],
             "ln": [np.zeros((B, T, C), np.float32), np.zeros(C, np.float32), np.zeros(C, np.float32)],
             "enc": [np.zeros((7, C), np.float32), np.zeros((T, C), np.float32)],
             "ce": [np.zeros((B, T, Vp), np.float32)],
             "gelu": [np.zeros((B, T, OC), np.float32)]}
    dl = rand(rng, B, T)

    def backward():
        ops_c.matmul_backward(*grads["mm"], x["dout"], x["inp"], x["w"], B, T, C, OC)
        ops_c.attention_backward(*grads["att"], x["dy"], x["qkv"], att, B, T, C, NH)
        ops_c.layernorm_backward(*grads["ln"], x["dy"], x["inp"], x["w"][0], mean, rstd, B, T, C)
        ops_c.encoder_backward(*grads["enc"], x["dy"], x["ids"], B, T, C)
        ops_c.softmax_crossentropy_backward(*grads["ce"], dl, probs, x["targets"], B, T, Vp - 3, Vp)
        ops_c.gelu_backward(*grads["gelu"], x["dout"], x["dout"], B * T * OC)
    return grads, backward


def test_backward_accumulates():
    """Calling a backward kernel twice doubles its gradients (they add, never overwrite)."""
    grads, backward = layer_problem(np.random.default_rng(0))
    backward()
    once = {k: [g.copy() for g in v] for k, v in grads.items()}
    backward()
    for k, gs in grads.items():
        for g, g1 in zip(gs, once[k]):
            assert np.abs(g1).max() > 0, k
            np.testing.assert_allclose(g, 2 * g1, rtol=1e-6, atol=1e-6, err_msg=k)


def test_threads_agree(threads):
    """1 and 2 threads: the same bits, forward and backward (each output has one writer, in order)."""
    results = []
    for n in (1, 2):
        threads(n)
        grads, backward = layer_problem(np.random.default_rng(1), B=3, T=64, NH=4, hs=16, OC=600, Vp=700)
        backward()
        results.append(grads)
    for k in results[0]:
        for g1, g2 in zip(results[0][k], results[1][k]):
            np.testing.assert_array_equal(g1, g2, err_msg=k)


def test_bad_inputs():
    x = np.zeros((2, 3, 4), np.float32)
    out = np.zeros((2, 3, 5), np.float32)
    w = np.zeros((5, 4), np.float32)
    with pytest.raises(TypeError, match="float32"):
        ops_c.matmul_forward(out, x.astype(np.float64), w, None, 2, 3, 4, 5)
    with pytest.raises(ValueError, match="C-contiguous"):
        ops_c.matmul_forward(np.zeros((2, 5, 3), np.float32).transpose(0, 2, 1), x, w, None, 2, 3, 4, 5)
    with pytest.raises(ValueError, match="expected 20 elements"):
        ops_c.matmul_forward(out, x, np.zeros((4, 4), np.float32), None, 2, 3, 4, 5)
    with pytest.raises(ValueError, match="ids must be in"):
        ops_c.encoder_forward(x, np.array([[0, 1, 9]] * 2), np.zeros((9, 4), np.float32),
                              np.zeros((3, 4), np.float32), 2, 3, 4)
    with pytest.raises(ValueError, match="divisible"):
        ops_c.attention_forward(x, np.zeros((2, 3, 3, 3), np.float32), np.zeros((2, 3, 3, 3), np.float32),
                                np.zeros((2, 3, 12), np.float32), 2, 3, 4, 3)
    with pytest.raises(ValueError, match="read-only"):
        ro = np.zeros(4, np.float32)
        ro.flags.writeable = False
        ops_c.residual_forward(ro, ro, ro, 4)


# --------------------------------------------------------------------------------------------------
# the whole model


def test_model_trajectory_matches_numpy():
    """10 AdamW steps on backend "c" reproduce the NumPy backend's losses and final weights."""
    cfg = GPTConfig(block_size=32, vocab_size=200, n_layer=2, n_head=4, n_embd=48)
    idx = np.random.default_rng(0).integers(0, cfg.vocab_size, (3, 32))
    targets = np.roll(idx, -1, axis=1)
    targets[0, -5:] = -1
    runs = {}
    for be in ("numpy", "c"):
        model = GPT(cfg, backend=be, seed=0)
        losses = []
        for step in range(1, 11):
            losses.append(model.forward(idx, targets))
            model.zero_grad()
            model.backward()
            model.update(1e-3, weight_decay=0.1, t=step)
        runs[be] = losses, model.params_memory.copy()
    np.testing.assert_allclose(runs["c"][0], runs["numpy"][0], rtol=1e-5)
    assert runs["c"][0][-1] < runs["c"][0][0] - 0.5  # and it learns
    np.testing.assert_allclose(runs["c"][1], runs["numpy"][1], rtol=1e-3, atol=1e-5)


def test_model_threads_agree(threads):
    cfg = GPTConfig(block_size=16, vocab_size=300, n_layer=2, n_head=2, n_embd=32)
    idx = np.random.default_rng(1).integers(0, cfg.vocab_size, (2, 16))
    grads = []
    for n in (1, 2):
        model = GPT(cfg, backend="c", seed=0, threads=n)
        model.forward(idx, idx)
        model.zero_grad()
        model.backward()
        grads.append(model.grads_memory.copy())
    np.testing.assert_array_equal(grads[0], grads[1])
