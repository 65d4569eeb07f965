"""RLHF on tiny models: built-in preferences, the reward entering the update, the KL term pulling the
policy back, early stopping keeping the best checkpoint, and an exact resume."""
import json
import shutil

import numpy as np
import pytest

from minigpt.cli import main
from minigpt.fileio import TOKENIZER_FILE
from minigpt.model import GPT, GPTConfig
from minigpt.posttrain import prefgen, rlhf
from minigpt.posttrain.preferences import read_preferences
from minigpt.posttrain.reward import RewardModel
from minigpt.tokenizer import Tokenizer
from minigpt.tokenizer.chat import IM_END, add_chat_tokens

CFG = dict(block_size=48, n_layer=1, n_head=2, n_embd=16)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A run directory (random tiny GPT + chat tokenizer) and a reward run with a random head."""
    d = tmp_path_factory.mktemp("rlhf")
    tok = Tokenizer.train("thanks for asking about the weather and json. please. no. " * 20, vocab_size=300)
    add_chat_tokens(tok)
    tok.save(d / TOKENIZER_FILE)
    model = GPT(GPTConfig(vocab_size=tok.n_vocab, **CFG), backend="numpy", seed=0)
    model.save(d / "ckpt_000000.bin")
    rm = RewardModel(GPT(GPTConfig(vocab_size=tok.n_vocab, **CFG), backend="numpy", seed=1),
                     w=np.random.default_rng(2).normal(size=16), b=0.0)
    (d / "reward").mkdir()
    rm.save(d / "reward" / "ckpt_000001.bin")
    return d, tok


def settings(**kw):
    return rlhf.RLHFSettings(**{"prompts": 2, "group": 3, "max_new_tokens": 6, "eval_prompts": 3, "lr": 1e-2,
                                "warmup": 0, **kw})


def test_requests_split_by_topic():
    train, test = prefgen.requests("train"), prefgen.requests("test")
    assert train and test
    texts = {"train": {m[0]["content"] for m in train}, "test": {m[0]["content"] for m in test}}
    for topic in prefgen.TOPICS:  # every request of a topic on one side
        asks = {tpl.format(x=topic) for tpl in prefgen.TEMPLATES}
        assert asks <= texts["train"] or asks <= texts["test"]
        assert not (asks & texts["train"] and asks & texts["test"])


def test_reward_without_data_samples_its_own_pairs(base, tmp_path, capsys):
    d, _ = base
    assert main(["reward", "--base", str(d), "--out", str(tmp_path / "rm"), "--steps", "2", "--pairs", "8",
                 "--max-new-tokens", "4", "--eval-every", "1", "--backend", "numpy"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"rm_accuracy", "gold_agreement"} <= summary.keys() and summary["train_pairs"] == 8
    pairs, skipped = read_preferences(tmp_path / "rm" / "prefs.jsonl", strict=True)
    assert len(pairs) == 8 and skipped == 0
    held = {p.prompt[0]["content"] for p in read_preferences(tmp_path / "rm" / "prefs_val.jsonl")[0]}
    assert held <= {m[0]["content"] for m in prefgen.requests("test")}


def test_proxy_reward_is_the_reward_models_score(base):
    d, tok = base
    rm = rlhf.load_reward(str(d / "reward"), "numpy")
    model = GPT.load(d / "ckpt_000000.bin", backend="numpy")
    problems = [{"messages": m} for m in prefgen.requests("train")[:2]]
    samples = rlhf.rollout(model, tok, rlhf.GoldTask(), problems, 3, 6, seed=0)
    proxy = rlhf.proxy_rewards(rm, tok, problems, samples)
    from minigpt.tokenizer.chat import render
    ids, _ = render(tok, problems[1]["messages"] + [{"role": "assistant", "content": samples[4].text}])
    assert np.isclose(proxy[4], rm.forward(np.array([ids]), [len(ids)])[0], atol=1e-5)
    assert np.ptp(proxy) > 0


def changed(model, ref):
    return float(np.abs(model.params_memory - ref.params_memory).max())


def test_the_reward_enters_the_update(base):
    """Equal rewards (a zero head) and no KL: every advantage is 0, the weights do not move. A real
    head: they do."""
    d, tok = base
    ref = GPT.load(d / "ckpt_000000.bin", backend="numpy")
    end = tok.special_tokens[IM_END]
    problems = [{"messages": m} for m in prefgen.requests("train")[:2]]
    for head, moves in ((0.0, False), (1.0, True)):
        rm = rlhf.load_reward(str(d / "reward"), "numpy")
        rm.w *= head
        model = GPT.load(d / "ckpt_000000.bin", backend="numpy")
        samples = rlhf.rollout(model, tok, rlhf.GoldTask(), problems, 3, 6, seed=0)
        adv = rlhf.group_advantages(rlhf.proxy_rewards(rm, tok, problems, samples).reshape(-1, 3)).reshape(-1)
        rlhf.update(model, ref, samples, adv, settings(kl_coef=0.0), 1e-2, 0, end)
        assert (changed(model, ref) > 0) == moves


def test_the_kl_term_pulls_the_policy_back_to_the_reference(base):
    """Advantages 0, the policy moved off the reference: the KL gradient alone lowers the KL."""
    d, tok = base
    ref = GPT.load(d / "ckpt_000000.bin", backend="numpy")
    model = GPT.load(d / "ckpt_000000.bin", backend="numpy")
    model.params_memory += np.random.default_rng(0).normal(0, 0.05, model.params_memory.shape).astype(model.dtype)
    end = tok.special_tokens[IM_END]
    problems = [{"messages": m} for m in prefgen.requests("train")[:2]]
    samples = rlhf.rollout(model, tok, rlhf.GoldTask(), problems, 3, 6, seed=0)
    before = rlhf.policy_kl(model, ref, samples, end, 64)
    zero = np.zeros(len(samples))
    still = GPT.load(d / "ckpt_000000.bin", backend="numpy")
    still.params_memory[...] = model.params_memory
    rlhf.update(still, ref, samples, zero, settings(kl_coef=0.0), 1e-3, 0, end)
    assert changed(still, model) == 0                    # no reward signal, no KL: nothing to follow
    for _ in range(3):
        figures = rlhf.update(model, ref, samples, zero, settings(kl_coef=1.0), 1e-3, _, end)
    assert figures["kl"] > 0
    assert rlhf.policy_kl(model, ref, samples, end, 64) < before


def run_rlhf(d, out, *extra):
    return main(["rlhf", "--base", str(d), "--reward", str(d / "reward"), "--out", str(out), "--prompts", "2",
                 "--group", "3", "--max-new-tokens", "6", "--eval-prompts", "3", "--lr", "3e-2", "--warmup", "0",
                 "--backend", "numpy", "--no-plot", *extra])


def test_early_stopping_keeps_the_best_checkpoint(base, tmp_path, capsys):
    d, _ = base
    assert run_rlhf(d, tmp_path / "r", "--steps", "12", "--eval-every", "1", "--patience", "2", "--keep", "20") == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    evals = [json.loads(x) for x in open(tmp_path / "r" / "log.jsonl") if "val_gold" in x]
    golds = {r["step"]: r["val_gold"] for r in evals}
    assert summary["stopped_at"] is not None and summary["stopped_at"] < 12
    assert summary["best_step"] == max(golds, key=lambda k: (golds[k], -k))   # the first best
    assert summary["stopped_at"] - summary["best_step"] == 2                  # patience 2 evaluations
    assert summary["gold_after"] == golds[summary["best_step"]]
    kept = tmp_path / "r" / "best.bin"
    if summary["best_step"] > 0:
        assert kept.read_bytes() == (tmp_path / "r" / f"ckpt_{summary['best_step']:06d}.bin").read_bytes()
    else:
        assert kept.read_bytes() == (d / "ckpt_000000.bin").read_bytes()
    # killed just before the best evaluation: the resumed run finds the same best and stops at the same step
    shutil.copytree(tmp_path / "r", tmp_path / "again")
    for f in (tmp_path / "again").glob("ckpt_*"):
        if int(f.stem[5:]) > max(summary["best_step"], 1):
            f.unlink()
    assert run_rlhf(d, tmp_path / "again", "--steps", "12", "--eval-every", "1", "--patience", "2", "--keep", "20",
                    "--resume") == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == summary
    assert (tmp_path / "again" / "best.bin").read_bytes() == kept.read_bytes()


def test_no_early_stop_runs_on_and_resumes_exactly(base, tmp_path, capsys):
    d, _ = base
    args = ("--steps", "6", "--eval-every", "2", "--kl-coef", "0", "--no-early-stop", "--keep", "10")
    assert run_rlhf(d, tmp_path / "whole", *args) == 0
    whole = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert whole["stopped_at"] is None and whole["steps_run"] == 6
    shutil.copytree(tmp_path / "whole", tmp_path / "parts")
    for f in [*(tmp_path / "parts").glob("ckpt_000006.*"), *(tmp_path / "parts").glob("ckpt_000004.*")]:
        f.unlink()
    assert run_rlhf(d, tmp_path / "parts", *args, "--resume") == 0
    parts = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert parts == whole
    for name in ("ckpt_000006.bin", "best.bin"):
        assert (tmp_path / "parts" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()


def test_dpo_without_data_samples_its_own_pairs(base, tmp_path, capsys):
    d, _ = base
    assert main(["dpo", "--base", str(d), "--out", str(tmp_path / "dpo"), "--steps", "2", "--pairs", "8",
                 "--max-new-tokens", "4", "--eval-every", "1", "--backend", "numpy"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(read_preferences(tmp_path / "dpo" / "prefs.jsonl", strict=True)[0]) == 8


def test_early_stopping_on_a_scripted_gold_curve_and_its_resume(base, tmp_path, capsys, monkeypatch):
    """Held-out gold 0, .1, .3, .2, .25, ...: the best is step 2, patience 2 stops at step 4, best.bin
    is the step-2 model; killed right after the step-2 checkpoint, the resumed run agrees."""
    d, _ = base
    curve = [0.0, 0.1, 0.3, 0.2, 0.25, 0.4, 0.5]

    def scripted(model, ref, rm, tok, s, seed):
        step = len([x for x in open(log_path()) if "val_gold" in x]) if log_path().exists() else 0
        return {"val_gold": curve[step], "val_gold_std": 0.0, "val_proxy": float(step), "val_kl": 0.0,
                "val_length": 1.0, "sample": ""}

    out = tmp_path / "s"
    log_path = lambda: out / "log.jsonl"  # noqa: E731
    monkeypatch.setattr(rlhf, "evaluate", scripted)
    assert run_rlhf(d, out, "--steps", "6", "--eval-every", "1", "--patience", "2", "--keep", "20") == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["best_step"], summary["stopped_at"], summary["gold_after"]) == (2, 4, 0.3)
    assert (out / "best.bin").read_bytes() == (out / "ckpt_000002.bin").read_bytes()
    for f in out.glob("ckpt_00000[34].*"):
        f.unlink()
    (out / "best.bin").write_bytes((out / "ckpt_000001.bin").read_bytes())   # the best before step 2's evaluation
    assert run_rlhf(d, out, "--steps", "6", "--eval-every", "1", "--patience", "2", "--keep", "20", "--resume") == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == summary
    assert (out / "best.bin").read_bytes() == (out / "ckpt_000002.bin").read_bytes()
