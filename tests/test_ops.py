"""Each op's backward against central finite differences, in float64, on hypothesis-drawn shapes.

For an op out = f(x) we check the vector-Jacobian product: with a random G, the scalar
loss = sum(f(x) * G) has d loss / d x = backward(dout=G). Every element of every input is perturbed.
"""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from minigpt.model import ops

EPS = 1e-6


def numerical_grad(loss, x):
    """d loss / d x by central differences, perturbing x in place."""
    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + EPS
        up = loss()
        flat[i] = old - EPS
        down = loss()
        flat[i] = old
        gflat[i] = (up - down) / (2 * EPS)
    return g


def assert_close(analytic, numeric, rtol=1e-5, atol=1e-7):
    np.testing.assert_allclose(analytic, numeric, rtol=rtol, atol=atol)


small = st.integers(1, 4)


@settings(max_examples=15)
@given(B=small, T=small, C=small, V=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_encoder(B, T, C, V, seed):
    rng = np.random.default_rng(seed)
    maxT = T + 2
    inp = rng.integers(0, V, size=(B, T))
    wte, wpe = rng.standard_normal((V, C)), rng.standard_normal((maxT, C))
    G = rng.standard_normal((B, T, C))
    out = np.zeros((B, T, C))

    def loss():
        ops.encoder_forward(out, inp, wte, wpe, B, T, C)
        return (out * G).sum()
    dwte, dwpe = np.zeros_like(wte), np.zeros_like(wpe)
    ops.encoder_backward(dwte, dwpe, G, inp, B, T, C)
    assert_close(dwte, numerical_grad(loss, wte))
    assert_close(dwpe, numerical_grad(loss, wpe))


@settings(max_examples=15)
@given(B=small, T=small, C=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_layernorm(B, T, C, seed):
    rng = np.random.default_rng(seed)
    inp = rng.standard_normal((B, T, C))
    w, b = rng.standard_normal(C), rng.standard_normal(C)
    G = rng.standard_normal((B, T, C))
    out, mean, rstd = np.zeros((B, T, C)), np.zeros((B, T)), np.zeros((B, T))

    def loss():
        ops.layernorm_forward(out, mean, rstd, inp, w, b, B, T, C)
        return (out * G).sum()
    loss()
    dinp, dw, db = np.zeros_like(inp), np.zeros_like(w), np.zeros_like(b)
    ops.layernorm_backward(dinp, dw, db, G, inp, w, mean, rstd, B, T, C)
    # C == 1 makes x - mean identically 0: the output is b and every gradient but db is 0
    assert_close(dinp, numerical_grad(loss, inp), atol=1e-6)
    assert_close(dw, numerical_grad(loss, w), atol=1e-6)
    assert_close(db, numerical_grad(loss, b))


@settings(max_examples=15)
@given(B=small, T=small, C=st.integers(1, 7), OC=st.integers(1, 7), bias=st.booleans(),
       seed=st.integers(0, 2**16))
def test_matmul(B, T, C, OC, bias, seed):
    rng = np.random.default_rng(seed)
    inp, w = rng.standard_normal((B, T, C)), rng.standard_normal((OC, C))
    b = rng.standard_normal(OC) if bias else None
    G = rng.standard_normal((B, T, OC))
    out = np.zeros((B, T, OC))

    def loss():
        ops.matmul_forward(out, inp, w, b, B, T, C, OC)
        return (out * G).sum()
    dinp, dw = np.zeros_like(inp), np.zeros_like(w)
    db = np.zeros(OC) if bias else None
    ops.matmul_backward(dinp, dw, db, G, inp, w, B, T, C, OC)
    assert_close(dinp, numerical_grad(loss, inp))
    assert_close(dw, numerical_grad(loss, w))
    if bias:
        assert_close(db, numerical_grad(loss, b))


@settings(max_examples=15)
@given(B=st.integers(1, 2), T=st.integers(1, 5), NH=st.integers(1, 3), hs=st.integers(1, 3),
       seed=st.integers(0, 2**16))
def test_attention(B, T, NH, hs, seed):
    rng = np.random.default_rng(seed)
    C = NH * hs
    inp = rng.standard_normal((B, T, 3 * C))
    G = rng.standard_normal((B, T, C))
    out, preatt, att = np.zeros((B, T, C)), np.zeros((B, NH, T, T)), np.zeros((B, NH, T, T))

    def loss():
        ops.attention_forward(out, preatt, att, inp, B, T, C, NH)
        return (out * G).sum()
    loss()
    np.testing.assert_allclose(att.sum(-1), 1.0)                 # softmax rows sum to 1
    assert np.all(att[..., np.triu_indices(T, 1)[0], np.triu_indices(T, 1)[1]] == 0)  # causal
    dinp, dpreatt, datt = np.zeros_like(inp), np.zeros_like(att), np.zeros_like(att)
    ops.attention_backward(dinp, dpreatt, datt, G, inp, att, B, T, C, NH)
    assert_close(dinp, numerical_grad(loss, inp))


@settings(max_examples=10)
@given(N=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_gelu(N, seed):
    rng = np.random.default_rng(seed)
    inp = 3 * rng.standard_normal(N)
    G = rng.standard_normal(N)
    out = np.zeros(N)

    def loss():
        ops.gelu_forward(out, inp, N)
        return (out * G).sum()
    dinp = np.zeros(N)
    ops.gelu_backward(dinp, inp, G, N)
    assert_close(dinp, numerical_grad(loss, inp))


def test_gelu_values():
    # the tanh approximation at a few known points (PyTorch's gelu(approximate="tanh"))
    x = np.array([-3.0, -1.0, 0.0, 0.5, 1.0, 3.0])
    out = np.zeros_like(x)
    ops.gelu_forward(out, x, x.size)
    expected = [-0.0036373920817729943, -0.15880800939172324, 0.0, 0.34571400982514394,
                0.8411919906082768, 2.996362607918227]  # torch float64
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-15)


@settings(max_examples=10)
@given(N=st.integers(1, 30), seed=st.integers(0, 2**16))
def test_residual(N, seed):
    rng = np.random.default_rng(seed)
    a, b, G = rng.standard_normal(N), rng.standard_normal(N), rng.standard_normal(N)
    out = np.zeros(N)

    def loss():
        ops.residual_forward(out, a, b, N)
        return (out * G).sum()
    da, db = np.zeros(N), np.zeros(N)
    ops.residual_backward(da, db, G, N)
    assert_close(da, numerical_grad(loss, a))
    assert_close(db, numerical_grad(loss, b))


@settings(max_examples=20)
@given(B=small, T=small, V=st.integers(1, 7), pad=st.integers(0, 3), seed=st.integers(0, 2**16))
def test_softmax_crossentropy(B, T, V, pad, seed):
    rng = np.random.default_rng(seed)
    Vp = V + pad
    logits = 2 * rng.standard_normal((B, T, Vp))
    targets = rng.integers(-1, V, size=(B, T))                   # some -1: ignored
    dlosses = rng.standard_normal((B, T))                        # per-token weights
    losses, probs = np.zeros((B, T)), np.zeros((B, T, Vp))

    def loss():
        ops.softmax_crossentropy_forward(losses, probs, logits, targets, B, T, V, Vp)
        return (losses * dlosses).sum()
    loss()
    np.testing.assert_allclose(probs.sum(-1), 1.0)
    assert np.all(probs[..., V:] == 0)                           # padded columns: no probability
    assert np.all(losses[targets < 0] == 0)                      # ignored: no loss
    dlogits = np.zeros_like(logits)
    ops.softmax_crossentropy_backward(dlogits, dlosses, probs, targets, B, T, V, Vp)
    assert np.all(dlogits[..., V:] == 0)                         # padded columns: no gradient
    assert np.all(dlogits[targets < 0] == 0)                     # ignored: no gradient
    assert_close(dlogits, numerical_grad(loss, logits))


def test_crossentropy_extreme_logits_are_finite():
    # a target whose probability underflows to 0 in float32 still gets a finite, exact loss
    logits = np.array([[[0.0, 200.0, -200.0]]], dtype=np.float32)
    losses, probs = np.zeros((1, 1), np.float32), np.zeros((1, 1, 3), np.float32)
    ops.softmax_crossentropy_forward(losses, probs, logits, np.array([[2]]), 1, 1, 3, 3)
    np.testing.assert_allclose(losses[0, 0], 400.0, rtol=1e-6)


@settings(max_examples=10)
@given(N=st.integers(1, 50), seed=st.integers(0, 2**16))
def test_backward_accumulates(N, seed):
    # the contract: backward kernels add into their gradient buffers; twice gives double
    rng = np.random.default_rng(seed)
    x, G = rng.standard_normal(N), rng.standard_normal(N)
    once, twice = np.zeros(N), np.zeros(N)
    ops.gelu_backward(once, x, G, N)
    ops.gelu_backward(twice, x, G, N)
    ops.gelu_backward(twice, x, G, N)
    np.testing.assert_allclose(twice, 2 * once)


def test_adamw_matches_formula():
    # two steps written out by hand, llm.c's and PyTorch's AdamW
    rng = np.random.default_rng(0)
    p0, g1, g2 = rng.standard_normal(7), rng.standard_normal(7), rng.standard_normal(7)
    lr, b1, b2, eps, wd = 1e-2, 0.9, 0.95, 1e-8, 0.1
    p, m, v = p0.copy(), np.zeros(7), np.zeros(7)
    ops.adamw_update(p, g1, m, v, 7, lr, b1, b2, eps, wd, 1)
    ops.adamw_update(p, g2, m, v, 7, lr, b1, b2, eps, wd, 2)
    q, mm, vv = p0.copy(), np.zeros(7), np.zeros(7)
    for t, g in ((1, g1), (2, g2)):
        mm = b1 * mm + (1 - b1) * g
        vv = b2 * vv + (1 - b2) * g ** 2
        q = q * (1 - lr * wd) - lr * (mm / (1 - b1 ** t)) / (np.sqrt(vv / (1 - b2 ** t)) + eps)
    np.testing.assert_allclose(p, q, rtol=1e-12)
    np.testing.assert_allclose(m, mm, rtol=1e-12)
