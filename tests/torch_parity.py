"""The PyTorch-parity check, shared by every backend's tests: a model against the fp32 run stored in
tests/fixtures/gpt2_torch.npz (written by tests/fixtures/make_torch_fixture.py; torch not needed here)."""
import os

import numpy as np
import pytest

from minigpt.config import GPTConfig
from minigpt.config import PARAM_NAMES

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "gpt2_torch.npz")


def load_fixture():
    f = np.load(FIXTURE)
    maxT, V, L, NH, C = (int(x) for x in f["config"])
    return GPTConfig(block_size=maxT, vocab_size=V, n_layer=L, n_head=NH, n_embd=C), f


def assert_matches_torch(model, f, logits_rtol, logits_atol, loss_rel, grad_rtol, grad_atol, steps_rtol):
    """Logits, loss and all 16 gradients from the fixture's weights, then 10 AdamW steps of losses.
    grad_atol is relative to the largest gradient."""
    V = model.config.vocab_size
    model.params_memory[:] = f["params"]
    loss = model.forward(f["idx"], f["targets"])
    np.testing.assert_allclose(model.logits[..., :V], f["logits"], rtol=logits_rtol, atol=logits_atol)
    assert loss == pytest.approx(float(f["loss"]), rel=loss_rel)
    model.zero_grad()
    model.backward()
    g = f["grads"]
    scale, offset = np.abs(g).max(), 0
    for name in PARAM_NAMES:
        ours = model.grads[name]
        theirs = g[offset:offset + ours.size].reshape(ours.shape)
        offset += ours.size
        np.testing.assert_allclose(ours, theirs, rtol=grad_rtol, atol=grad_atol * scale, err_msg=name)

    lr, b1, b2, eps, wd = (float(x) for x in f["adamw"])
    model.params_memory[:] = f["params"]
    losses = []
    for step in range(1, 11):
        losses.append(model.forward(f["idx"], f["targets"]))
        model.zero_grad()
        model.backward()
        model.update(lr, b1, b2, eps, wd, t=step)
    np.testing.assert_allclose(losses, f["losses"], rtol=steps_rtol)
