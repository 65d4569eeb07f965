"""Learning from preferences: the reward model's scalar head and Bradley-Terry loss, and DPO, each
against central finite differences in float64 on a small model."""
import numpy as np
import pytest

from minigpt.fileio import FileFormatError
from minigpt.model import GPT, GPTConfig
from minigpt.posttrain.dpo import dpo_loss, dpo_step, pair_rows, sequence_logps
from minigpt.posttrain.reward import RewardModel, bradley_terry, head_path

CFG = GPTConfig(block_size=12, vocab_size=23, n_layer=2, n_head=2, n_embd=8)


def f64_model(seed=0):
    model = GPT(CFG, backend="numpy", dtype=np.float64, seed=seed)
    rng = np.random.default_rng(seed + 1)
    model.params_memory[:] += 0.05 * rng.standard_normal(model.params_memory.size)  # LN and biases non-trivial
    return model


def probe_indices(model, rng, per_tensor=3):
    """A few parameters of every tensor, as flat indices into params_memory."""
    out, offset = [], 0
    for name, p in model.params.items():
        real = p if name != "wte" else p[:CFG.vocab_size]
        out += list(offset + rng.choice(real.size, size=min(per_tensor, real.size), replace=False))
        offset += p.size
    return out


def check(objective, analytic, params, indices, eps=1e-6, rtol=1e-5, atol=1e-8):
    for i in indices:
        old = params[i]
        params[i] = old + eps
        up = objective()
        params[i] = old - eps
        down = objective()
        params[i] = old
        numeric = (up - down) / (2 * eps)
        assert analytic[i] == pytest.approx(numeric, rel=rtol, abs=atol), f"parameter {i}"


def pairs_batch(rng, P=3):
    x = rng.integers(0, CFG.vocab_size, (2 * P, 10))
    lengths = rng.integers(3, 11, 2 * P)
    return x, lengths


def test_reward_head_and_bradley_terry_match_finite_differences():
    rng = np.random.default_rng(0)
    rm = RewardModel(f64_model(), w=rng.standard_normal(CFG.n_embd), b=0.3)
    x, lengths = pairs_batch(rng)
    P = x.shape[0] // 2

    def objective():
        r = rm.forward(x, lengths)
        return bradley_terry(r[:P], r[P:])[0]

    rm.zero_grad()
    r = rm.forward(x, lengths)
    _, dr_c, dr_r, _ = bradley_terry(r[:P], r[P:])
    rm.backward(np.concatenate([dr_c, dr_r]))
    check(objective, rm.model.grads_memory.copy(), rm.model.params_memory, probe_indices(rm.model, rng))
    check(objective, rm.dw.copy(), rm.w, range(CFG.n_embd))
    check(objective, rm.db.copy(), rm.b, [0])


def test_reward_reads_the_last_real_token_only():
    rng = np.random.default_rng(1)
    rm = RewardModel(f64_model(), w=rng.standard_normal(CFG.n_embd))
    x, lengths = pairs_batch(rng)
    r = rm.forward(x, lengths)
    x2 = x.copy()
    for b, n in enumerate(lengths):
        x2[b, n:] = rng.integers(0, CFG.vocab_size, x.shape[1] - n)  # other padding after the last token
    np.testing.assert_allclose(rm.forward(x2, lengths), r, rtol=1e-12)


def test_bradley_terry_values():
    loss, dc, dr, acc = bradley_terry(np.array([2.0, 0.0]), np.array([0.0, 0.0]))
    assert loss == pytest.approx((np.log1p(np.exp(-2.0)) + np.log(2)) / 2)
    assert acc == 0.75 and dc[1] == pytest.approx(-0.25) and dr[1] == pytest.approx(0.25)  # a tie counts half


def test_reward_model_files_round_trip_and_refuse_damage(tmp_path):
    rng = np.random.default_rng(2)
    rm = RewardModel(GPT(CFG, backend="numpy", seed=0), w=rng.standard_normal(CFG.n_embd).astype(np.float32), b=1.5)
    path = tmp_path / "ckpt_000010.bin"
    rm.save(path)
    back = RewardModel.load(path, backend="numpy")
    np.testing.assert_array_equal(back.w, rm.w)
    assert back.b[0] == pytest.approx(1.5)
    x, lengths = pairs_batch(rng)
    np.testing.assert_array_equal(back.forward(x, lengths), rm.forward(x, lengths))
    with open(head_path(path), "r+b") as f:
        f.truncate(1024 + 8)
    with pytest.raises(FileFormatError, match="truncated"):
        RewardModel.load(path)


# --------------------------------------------------------------------------------------------------
# DPO


def dpo_pairs(rng, P=3):
    def ids(lo, hi):
        return list(rng.integers(0, CFG.vocab_size, rng.integers(lo, hi)))
    return [(ids(1, 4), ids(1, 5), ids(1, 5)) for _ in range(P)]


def test_dpo_matches_finite_differences():
    rng = np.random.default_rng(3)
    model, ref = f64_model(0), f64_model(7)
    x, y = pair_rows(dpo_pairs(rng), CFG.block_size)
    ref_logp = sequence_logps(ref, x, y)

    def objective():
        return dpo_loss(sequence_logps(model, x, y), ref_logp, beta=0.5)[0]

    dpo_step(model, x, y, ref_logp, beta=0.5)
    check(objective, model.grads_memory.copy(), model.params_memory, probe_indices(model, rng))


def test_dpo_rows_train_only_on_the_replies():
    x, y = pair_rows([([1, 2], [3, 4], [5])], T=6)
    assert x.tolist() == [[1, 2, 3, 0, 0, 0], [1, 2, 0, 0, 0, 0]]
    assert y.tolist() == [[-1, 3, 4, -1, -1, -1], [-1, 5, -1, -1, -1, -1]]
    with pytest.raises(ValueError, match="non-empty"):
        pair_rows([([], [1], [2])], T=6)


def test_policy_equal_to_reference_gives_log2_and_the_gradient_favours_chosen():
    rng = np.random.default_rng(4)
    model = f64_model(0)
    x, y = pair_rows(dpo_pairs(rng, P=2), CFG.block_size)
    ref_logp = sequence_logps(f64_model(0), x, y)
    loss, acc = dpo_step(model, x, y, ref_logp, beta=0.1)
    assert loss == pytest.approx(np.log(2)) and acc == 0.5         # every pair a tie
    before = sequence_logps(model, x, y)
    model.params_memory -= 1e-2 * model.grads_memory             # one plain gradient step
    after = sequence_logps(model, x, y)
    assert (after[:2] - before[:2]).sum() > (after[2:] - before[2:]).sum()  # chosen gained on rejected


def test_reweight_equals_forward_with_weights():
    rng = np.random.default_rng(5)
    model = f64_model(0)
    x = rng.integers(0, CFG.vocab_size, (2, 8))
    y = rng.integers(-1, CFG.vocab_size, (2, 8))
    w = rng.standard_normal((2, 8))
    direct = model.forward(x, y, weights=w)
    model.forward(x, y)
    assert model.reweight(w) == pytest.approx(direct, rel=1e-12)
