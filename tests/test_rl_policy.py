"""The policy gradient (minigpt/posttrain/policy.py): its weights give the gradient of the objective,
checked against finite differences in float64; zero-spread groups give no update; pass@k."""
import math
from itertools import combinations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minigpt.config import PARAM_NAMES
from minigpt.model import GPT, GPTConfig
from minigpt.posttrain.policy import (group_advantages, k3, pass_at_k, pg_objective, pg_weights, token_logprobs,
                                      weights_for_model)


def small_model(seed=0):
    cfg = GPTConfig(block_size=8, vocab_size=11, n_layer=2, n_head=2, n_embd=8)
    model = GPT(cfg, backend="numpy", dtype=np.float64, seed=seed)
    rng = np.random.default_rng(seed + 1)
    for name in PARAM_NAMES:  # LayerNorm gains and biases away from 1 and 0: every path carries signal
        model.params[name][...] += 0.1 * rng.standard_normal(model.params[name].shape)
    model.params["wte"][cfg.vocab_size:] = 0
    return model


def rollout_batch(cfg, rng, B=4, T=7):
    """Sequences whose first tokens are a prompt (target -1) and some replies padded at the end."""
    x = rng.integers(0, cfg.vocab_size, (B, T))
    y = rng.integers(0, cfg.vocab_size, (B, T))
    for b in range(B):
        prompt, end = int(rng.integers(1, 3)), int(rng.integers(4, T + 1))
        y[b, :prompt] = -1   # prompt tokens are not trained on
        y[b, end:] = -1      # padding after the reply
    adv = np.repeat(rng.normal(0, 1, (B, 1)), T, axis=1)  # one advantage per reply, on each of its tokens
    return x, y, adv


def perturbed_logprobs(model, x, y, scale, seed):
    """Log-probs under a copy of the model with noise on its weights (an older policy, a reference)."""
    saved = model.params_memory.copy()
    model.params_memory += scale * np.random.default_rng(seed).standard_normal(saved.shape)
    lp = token_logprobs(model, x, y)
    model.params_memory[:] = saved
    return lp


@pytest.mark.parametrize("clip_eps,kl_coef,scale", [(None, 0.0, 0.0), (None, 0.1, 0.0), (0.2, 0.0, 0.3),
                                                     (0.2, 0.05, 0.3)])
def test_gradient_matches_finite_differences(clip_eps, kl_coef, scale):
    """REINFORCE, + KL (k3), PPO's clipped ratio to an older policy, both: the weights' gradient
    through model.reweight + backward = central differences of J, on parameters of all 16 tensors."""
    model = small_model()
    rng = np.random.default_rng(7)
    x, y, adv = rollout_batch(model.config, rng)
    mask = (y >= 0).astype(np.float64)
    N = mask.sum() + 3  # token-level normalisation over the whole batch (here: as if more micro-batches)
    # the sampling policy's log-probs are constants (REINFORCE: the policy itself, frozen, r = 1 here)
    old = perturbed_logprobs(model, x, y, scale, seed=11)
    ref = perturbed_logprobs(model, x, y, 0.2, seed=12) if kl_coef else None

    def J():
        return pg_objective(token_logprobs(model, x, y), adv, mask, N, old, ref, clip_eps, kl_coef)[0]

    lp = token_logprobs(model, x, y)
    if scale:  # no ratio on a kink of the clip, and some tokens on each side of it
        ratio = np.exp(lp - old)[mask > 0]
        assert np.abs(np.abs(ratio - 1) - clip_eps).min() > 1e-3
        assert pg_objective(lp, adv, mask, N, old, ref, clip_eps, kl_coef)[1]["clipped"] > 0.1
    w = pg_weights(lp, adv, mask, N, old, ref, clip_eps, kl_coef)
    model.reweight(weights_for_model(w, y))
    model.zero_grad()
    model.backward()
    eps = 1e-6
    pick = np.random.default_rng(3)
    for name in PARAM_NAMES:
        p, g = model.params[name].reshape(-1), model.grads[name].reshape(-1)
        rows = model.config.vocab_size * model.config.n_embd if name == "wte" else p.size
        for i in pick.choice(rows, size=min(3, rows), replace=False):
            keep = p[i]
            p[i] = keep + eps
            up = J()
            p[i] = keep - eps
            down = J()
            p[i] = keep
            assert g[i] == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-10), (name, i)


def test_micro_batches_add_up_to_the_batch():
    """Token-level normalisation over the whole batch: two halves accumulated = the batch at once."""
    model = small_model()
    x, y, adv = rollout_batch(model.config, np.random.default_rng(5), B=4)
    mask = (y >= 0).astype(np.float64)
    N = mask.sum()

    def grads(parts):
        model.zero_grad()
        for sl in parts:
            lp = token_logprobs(model, x[sl], y[sl])
            model.reweight(weights_for_model(pg_weights(lp, adv[sl], mask[sl], N), y[sl]))
            model.backward()
        return model.grads_memory.copy()

    np.testing.assert_allclose(grads([slice(0, 2), slice(2, 4)]), grads([slice(0, 4)]), rtol=1e-10, atol=1e-14)


def test_zero_spread_groups_give_zero_update():
    """All right or all wrong: advantage 0 on every token, gradient exactly 0 (with or without std)."""
    for rewards in ([[1, 1, 1, 1], [0, 0, 0, 0]], [[0.5] * 3]):
        for std in (False, True):
            assert np.all(group_advantages(rewards, std) == 0)
    model = small_model()
    x, y, _ = rollout_batch(model.config, np.random.default_rng(2))
    adv = np.zeros(x.shape)
    lp = token_logprobs(model, x, y)
    model.reweight(weights_for_model(pg_weights(lp, adv, y >= 0, 10), y))
    model.zero_grad()
    model.backward()
    assert not model.grads_memory.any()


def test_advantages():
    a = group_advantages([[1, 0, 0, 1], [1, 0, 0, 0]])
    np.testing.assert_allclose(a, [[0.5, -0.5, -0.5, 0.5], [0.75, -0.25, -0.25, -0.25]])
    g = group_advantages([[1, 0, 0, 1], [1, 0, 0, 0]], normalize_std=True)
    np.testing.assert_allclose(g.std(axis=1), [1, 1], rtol=1e-5)  # GRPO: unit spread per group
    np.testing.assert_allclose(g.mean(axis=1), [0, 0], atol=1e-12)


def test_k3_is_nonnegative_and_zero_at_equality():
    lp = np.linspace(-5, 0, 11)
    assert np.all(k3(lp, lp) == 0)
    assert np.all(k3(lp, lp[::-1]) >= 0)
    # unbiased: E_pi[k3] = KL(pi || ref) for a categorical pi
    pi, ref = np.array([0.5, 0.3, 0.2]), np.array([0.2, 0.2, 0.6])
    assert (pi * k3(np.log(pi), np.log(ref))).sum() == pytest.approx((pi * np.log(pi / ref)).sum())


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 12), data=st.data())
def test_pass_at_k_is_the_chance_over_subsets(n, data):
    """The estimator equals the share of k-subsets of the n samples holding a right one."""
    c = data.draw(st.integers(0, n))
    k = data.draw(st.integers(1, n))
    right = [True] * c + [False] * (n - c)
    subsets = list(combinations(range(n), k))
    exact = sum(any(right[i] for i in s) for s in subsets) / len(subsets)
    assert pass_at_k(n, c, k) == pytest.approx(exact)
    assert pass_at_k(n, c, 1) == pytest.approx(c / n)


def test_pass_at_k_bad_input():
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)
    assert math.isclose(pass_at_k(16, 0, 16), 0.0)
