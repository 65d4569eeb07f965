"""`minigpt reward` end to end on a tiny model: it learns a preference the data holds (courteous
replies win), reports held-out accuracy before and after, and resumes exactly."""
import json
import shutil

import numpy as np
import pytest

from minigpt.cli import main
from minigpt.fileio import TOKENIZER_FILE
from minigpt.model import GPT, GPTConfig
from minigpt.posttrain.preferences import Pair, write_preferences
from minigpt.posttrain.reward import RewardModel
from minigpt.tokenizer import Tokenizer
from minigpt.tokenizer.chat import add_chat_tokens

TOPICS = ["the weather", "a poem", "my code", "the news", "a recipe", "the time", "music", "a book"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A run directory: a small random GPT and a tokenizer with the chat tokens."""
    d = tmp_path_factory.mktemp("sft")
    tok = Tokenizer.train("thanks for asking about the weather and a poem. no. " * 20, vocab_size=300)
    add_chat_tokens(tok)
    tok.save(d / TOKENIZER_FILE)
    GPT(GPTConfig(block_size=48, vocab_size=tok.n_vocab, n_layer=1, n_head=2, n_embd=16), backend="numpy",
        seed=0).save(d / "ckpt_000000.bin")
    return d


@pytest.fixture(scope="module")
def prefs(tmp_path_factory):
    rng = np.random.default_rng(0)
    pairs = []
    for i in range(80):
        topic = TOPICS[i % len(TOPICS)]
        prompt = [{"role": "user", "content": f"Tell me about {topic}."}]
        pairs.append(Pair(prompt, f"Thanks for asking about {topic}!", f"No. {topic}" if rng.random() < 0.5 else "No."))
    path = tmp_path_factory.mktemp("prefs") / "prefs.jsonl"
    write_preferences(path, pairs)
    return path


def run_reward(base, prefs, out, steps, *extra):
    return main(["reward", "--base", str(base), "--data", str(prefs), "--out", str(out), "--steps", str(steps),
                 "--batch-size", "8", "--lr", "3e-3", "--warmup", "2", "--eval-every", "5", "--backend", "numpy",
                 *extra])


def test_reward_model_learns_the_preference_and_resumes_exactly(base, prefs, tmp_path, capsys):
    assert run_reward(base, prefs, tmp_path / "whole", 20, "--keep", "10") == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["rm_accuracy_before"] == 0.5          # a zero head scores every reply the same
    assert summary["rm_accuracy"] >= 0.9 and summary["val_pairs"] == 16
    # as if killed after step 10: the later checkpoints gone, then --resume
    shutil.copytree(tmp_path / "whole", tmp_path / "parts")
    for f in [*(tmp_path / "parts").glob("ckpt_000015.*"), *(tmp_path / "parts").glob("ckpt_000020.*")]:
        f.unlink()
    assert run_reward(base, prefs, tmp_path / "parts", 20, "--resume") == 0
    whole = RewardModel.load(tmp_path / "whole" / "ckpt_000020.bin")
    parts = RewardModel.load(tmp_path / "parts" / "ckpt_000020.bin")
    np.testing.assert_array_equal(whole.model.params_memory, parts.model.params_memory)
    np.testing.assert_array_equal(whole.w, parts.w)
    assert run_reward(base, prefs, tmp_path / "whole", 20) == 2   # refuses to overwrite
    assert "already holds checkpoints" in capsys.readouterr().err


def test_reward_needs_its_inputs(base, tmp_path, capsys):
    assert main(["reward", "--data", "prefs.jsonl"]) == 2   # without --data the pairs are built in
    assert "give --base" in capsys.readouterr().err
    (tmp_path / "few.jsonl").write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n{oops\n')
    assert main(["reward", "--base", str(base), "--data", str(tmp_path / "few.jsonl")]) == 2
    assert "1 readable pairs (1 skipped)" in capsys.readouterr().err


def test_dpo_learns_the_preference_and_moves_the_replies(base, prefs, tmp_path, capsys):
    argv = ["dpo", "--base", str(base), "--data", str(prefs), "--out", str(tmp_path / "dpo"), "--steps", "12",
            "--batch-size", "8", "--lr", "3e-3", "--warmup", "2", "--eval-every", "6", "--beta", "0.5",
            "--gold", "--max-new-tokens", "6", "--backend", "numpy"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["dpo_accuracy_before"] == 0.5                  # the policy is the reference: every pair a tie
    assert summary["dpo_accuracy"] >= 0.9
    assert {"gold_before", "gold_after", "gold_before_std"} <= set(summary)
    assert (tmp_path / "dpo" / "ckpt_000012.bin").exists()
