"""Growing a trained model's vocabulary (minigpt/model/vocab.py): old tokens' logits unchanged bit for bit,
new rows the mean embedding, padded rows used first, and the file still an llm.c checkpoint."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minigpt.model import backend as backends
from minigpt.fileio import read_checkpoint
from minigpt.model import GPT, GPTConfig
from minigpt.model.vocab import grow_model, grow_vocab

BACKENDS = [b for b in ("numpy", "c") if b in backends.available()]


def trained_like(V, seed=0, backend="numpy"):
    """A small model whose weights are not at init (LayerNorms and biases non-trivial too)."""
    cfg = GPTConfig(block_size=16, vocab_size=V, n_layer=2, n_head=2, n_embd=16)
    m = GPT(cfg, backend=backend, seed=seed)
    rng = np.random.default_rng(seed)
    m.params_memory += rng.normal(0, 0.05, m.params_memory.size).astype(np.float32)
    m.params["wte"][V:] = 0
    return m


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=12)
@given(V=st.integers(3, 300), extra=st.integers(0, 200), seed=st.integers(0, 9), T=st.integers(1, 16))
def test_old_tokens_logits_are_unchanged(backend, V, extra, seed, T):
    m = trained_like(V, seed, backend)
    g = grow_model(m, V + extra)
    idx = np.random.default_rng(seed).integers(0, V, (2, T))  # old tokens only
    m.forward(idx)
    g.forward(idx)
    assert np.array_equal(g.logits[..., :V], m.logits[..., :V])
    # a new token's logit is the mean of the old ones (its row is the mean row)
    if extra:
        assert np.allclose(g.logits[..., V:V + extra], m.logits[..., :V].mean(-1, keepdims=True), atol=1e-5)
    assert not g.logits[..., V + extra:].any()  # padded rows stay zero


def test_new_rows_use_the_padding_first_then_grow_by_128():
    m = trained_like(100)
    assert m.config.padded_vocab_size == 128
    cfg, p = grow_vocab(m.config, m.params_memory, 128)
    assert cfg.padded_vocab_size == 128 and p.size == m.params_memory.size
    cfg, p = grow_vocab(m.config, m.params_memory, 129)
    assert (cfg.vocab_size, cfg.padded_vocab_size) == (129, 256)
    wte = p[:256 * 16].reshape(256, 16)
    assert np.allclose(wte[100:129], m.params["wte"][:100].mean(0), atol=1e-7)
    assert not wte[129:].any()
    # everything after wte is copied as is
    assert np.array_equal(p[256 * 16:], m.params_memory[128 * 16:])


def test_the_grown_checkpoint_is_an_llmc_checkpoint(tmp_path):
    m = trained_like(250)
    g = grow_model(m, 260)
    path = tmp_path / "grown.bin"
    g.save(path)
    header = np.fromfile(path, dtype="<i4", count=8)
    assert header.tolist() == [20240326, 3, 16, 260, 2, 2, 16, 384]
    cfg, params = read_checkpoint(path)
    assert cfg == g.config and np.array_equal(params, g.params_memory)
    # and the grown model trains on the new ids
    idx = np.array([[1, 255, 259, 7]])
    loss = g.forward(idx, np.array([[255, 259, 7, 258]]))
    assert np.isfinite(loss)


def test_bad_sizes_are_clear_errors():
    m = trained_like(50)
    with pytest.raises(ValueError, match="never removed"):
        grow_vocab(m.config, m.params_memory, 49)
    with pytest.raises(ValueError, match="flat buffer"):
        grow_vocab(m.config, m.params_memory[:-1], 60)
