"""The whole model: gradient check, invariants, PyTorch parity, overfitting, on every CPU backend."""
import math

import numpy as np
import pytest

from minigpt.model import GPT, GPTConfig, backend
from minigpt.config import PARAM_NAMES
from torch_parity import assert_matches_torch, load_fixture

CPU_BACKENDS = [b for b in backend.available() if b != "cuda"]


def tiny(V=11, L=2, NH=2, C=8, maxT=8):
    return GPTConfig(block_size=maxT, vocab_size=V, n_layer=L, n_head=NH, n_embd=C)


def batch(cfg, B, T, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, cfg.vocab_size, (B, T)), rng.integers(0, cfg.vocab_size, (B, T))


def randomize(model, seed=1):
    # non-trivial LayerNorm gains and biases, so every path of the backward carries signal
    rng = np.random.default_rng(seed)
    for name in PARAM_NAMES:
        model.params[name][...] += 0.1 * rng.standard_normal(model.params[name].shape)
    model.params["wte"][model.config.vocab_size:] = 0


def test_gradient_check_float64():
    """Central differences on parameters sampled from all 16 tensors, float64."""
    cfg = tiny()
    model = GPT(cfg, backend="numpy", dtype=np.float64, seed=0)
    randomize(model)
    idx, targets = batch(cfg, 2, 5)
    targets[1, 2] = -1
    weights = np.random.default_rng(3).uniform(0.5, 2.0, size=idx.shape)
    model.forward(idx, targets, weights)
    model.zero_grad()
    model.backward()
    rng = np.random.default_rng(4)
    eps = 1e-6
    for name in PARAM_NAMES:
        flat_p, flat_g = model.params[name].reshape(-1), model.grads[name].reshape(-1)
        rows = cfg.vocab_size * cfg.n_embd if name == "wte" else flat_p.size  # real vocab rows
        for i in rng.choice(rows, size=min(4, rows), replace=False):
            old = flat_p[i]
            flat_p[i] = old + eps
            up = model.forward(idx, targets, weights)
            flat_p[i] = old - eps
            down = model.forward(idx, targets, weights)
            flat_p[i] = old
            numeric = (up - down) / (2 * eps)
            assert flat_g[i] == pytest.approx(numeric, rel=1e-5, abs=1e-9), (name, i)


@pytest.mark.parametrize("be", CPU_BACKENDS)
def test_causality(be):
    cfg = tiny(V=50, maxT=10)
    model = GPT(cfg, backend=be, seed=0)
    idx, _ = batch(cfg, 2, 10)
    model.forward(idx)
    before = model.logits.copy()
    idx2 = idx.copy()
    idx2[:, 6:] = (idx2[:, 6:] + 1) % cfg.vocab_size  # change every token after position 5
    model.forward(idx2)
    np.testing.assert_array_equal(model.logits[:, :6], before[:, :6])
    assert not np.allclose(model.logits[:, 6:], before[:, 6:])


@pytest.mark.parametrize("be", CPU_BACKENDS)
def test_init_loss_and_probs(be):
    cfg = GPTConfig(block_size=16, vocab_size=1000, n_layer=2, n_head=2, n_embd=32)
    model = GPT(cfg, backend=be, seed=0)
    idx, targets = batch(cfg, 4, 16)
    loss = model.forward(idx, targets)
    assert loss == pytest.approx(math.log(cfg.vocab_size), abs=0.05)  # init predicts ~uniformly
    probs = model.acts["probs"]
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    assert np.all(probs[..., cfg.vocab_size:] == 0)             # padded vocab: no probability
    model.zero_grad()
    model.backward()
    assert np.all(model.grads["wte"][cfg.vocab_size:] == 0)    # ... and no gradient
    assert model.acts["att"].shape == (2, 4, 2, 16, 16)          # (L, B, NH, T, T) for inspection


@pytest.mark.parametrize("be", CPU_BACKENDS)
def test_ignored_targets_and_weights(be):
    cfg = tiny(V=20)
    model = GPT(cfg, backend=be, seed=0)
    idx, targets = batch(cfg, 2, 6)

    def grads(targets, weights=None):
        loss = model.forward(idx, targets, weights)
        model.zero_grad()
        model.backward()
        return loss, model.grads_memory.copy()

    # an ignored target contributes nothing: same as a weight of 0, with the mean over the rest
    ignored = targets.copy()
    ignored[0, 2] = ignored[1, 5] = -1
    w0 = np.ones(idx.shape)
    w0[0, 2] = w0[1, 5] = 0
    loss_i, g_i = grads(ignored)
    loss_w, g_w = grads(targets, w0 * idx.size / (idx.size - 2))
    assert loss_i == pytest.approx(loss_w, rel=1e-5)
    np.testing.assert_allclose(g_i, g_w, rtol=1e-4, atol=1e-7)
    # per-token weights scale the gradient linearly
    rng = np.random.default_rng(5)
    wa, wb = rng.standard_normal(idx.shape), rng.standard_normal(idx.shape)
    _, ga = grads(targets, wa)
    _, gb = grads(targets, wb)
    _, gab = grads(targets, 2.0 * wa - 3.0 * wb)
    np.testing.assert_allclose(gab, 2.0 * ga - 3.0 * gb, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("be", CPU_BACKENDS)
def test_pytorch_parity(be):
    """Logits, loss, all 16 gradients and 10 AdamW steps against PyTorch fp32 (see torch_parity.py)."""
    cfg, f = load_fixture()
    assert_matches_torch(GPT(cfg, backend=be, seed=None), f, logits_rtol=1e-5, logits_atol=2e-6,
                         loss_rel=1e-6, grad_rtol=1e-4, grad_atol=1e-6, steps_rtol=1e-5)


@pytest.mark.parametrize("be", CPU_BACKENDS)
def test_overfit_one_batch(be):
    cfg = GPTConfig(block_size=16, vocab_size=64, n_layer=2, n_head=4, n_embd=32)
    model = GPT(cfg, backend=be, seed=0)
    idx, targets = batch(cfg, 4, 16)
    for step in range(1, 301):
        loss = model.forward(idx, targets)
        model.zero_grad()
        model.backward()
        model.update(3e-3, t=step)
        if loss < 0.05:
            break
    assert loss < 0.05, f"loss {loss} after {step} steps"


def test_backends_agree_float64_vs_float32():
    cfg = tiny(V=40)
    m64 = GPT(cfg, backend="numpy", dtype=np.float64, seed=0)
    m32 = GPT(cfg, backend="numpy", dtype=np.float32, seed=0)
    idx, targets = batch(cfg, 2, 8)
    assert m32.forward(idx, targets) == pytest.approx(m64.forward(idx, targets), rel=1e-5)


def test_bad_inputs():
    cfg = tiny(V=10)
    model = GPT(cfg, backend="numpy", seed=0)
    with pytest.raises(ValueError, match="vocab_size"):
        model.forward(np.array([[1, 10]]))
    with pytest.raises(ValueError, match="block_size"):
        model.forward(np.zeros((1, cfg.block_size + 1), dtype=int))
    with pytest.raises(ValueError, match="targets"):
        model.forward(np.zeros((1, 3), dtype=int), np.array([[0, -2, 1]]))
    with pytest.raises(ValueError, match="shape"):
        model.forward(np.zeros((1, 3), dtype=int), np.zeros((1, 4), dtype=int))
    with pytest.raises(RuntimeError, match="backward"):
        GPT(cfg, backend="numpy").backward()
    with pytest.raises(ValueError, match="unknown backend"):
        GPT(cfg, backend="tpu")


def test_gpt2_124M_size():
    from minigpt.config import num_parameters
    assert num_parameters(GPTConfig()) == 124_475_904
    assert num_parameters(GPTConfig(padded_vocab_size=50257)) == 124_439_808
