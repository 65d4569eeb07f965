"""RL end to end on a toy task a random tiny model solves half the time: tasks and graders, rollouts
(prompt tokens never trained), learning in the right direction (and the wrong one when the grader's
sign is flipped), `minigpt rl` with a kill -9 and an exact --resume."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from minigpt.model import GPT, GPTConfig
from minigpt.posttrain.policy import token_logprobs
from minigpt.posttrain.rl import RLSettings, evaluate, rl_train
from minigpt.posttrain.rollout import micro_batches, rollout, sequence
from minigpt.posttrain.tasks import (Task, grade_exact, grade_numeric, hash_split, load_task, python_grader,
                                     read_problems)
from minigpt.tokenizer import Tokenizer
from minigpt.tokenizer.chat import IM_END, add_chat_tokens

HERE = os.path.dirname(os.path.abspath(__file__))


def ascii_start(messages, completion):
    """The toy grader (also used by the CLI test as test_rl:ascii_start): 1 when the reply starts
    with an ASCII character. A random byte-level model does so about half the time."""
    return float(len(completion) > 0 and ord(completion[0]) < 128)


def toy(n=60):
    problems = [{"messages": [{"role": "user", "content": f"say something {i}"}], "answer": ""} for i in range(n)]
    return problems[: n // 2], problems[n // 2:]


@pytest.fixture(scope="module")
def tok():
    t = Tokenizer.train("", vocab_size=256)
    add_chat_tokens(t)
    return t


def tiny_model(tok, seed=0):
    cfg = GPTConfig(block_size=64, vocab_size=tok.n_vocab, n_layer=1, n_head=2, n_embd=16)
    return GPT(cfg, backend="c", seed=seed, threads=1)


def settings(**kw):
    base = dict(base="unused", steps=15, problems=4, group=8, max_new_tokens=3, lr=3e-2, warmup=0, eval_every=100,
                eval_problems=30, eval_samples=8, plot=False, micro_batch=16)
    return RLSettings(**{**base, **kw})


# --------------------------------------------------------------------------------------------------
# tasks and graders


def test_graders():
    p = {"messages": [], "answer": "42"}
    assert grade_exact(p, "6 * 7 = 42\n#### 42") == 1.0
    assert grade_exact(p, "#### 42\nthen\n#### 41") == 0.0      # the last #### counts
    assert grade_exact(p, " 42 ") == 1.0                       # no ####: the whole reply
    assert grade_numeric(p, "#### 42.0") == 1.0 and grade_exact(p, "#### 42.0") == 0.0
    assert grade_numeric(p, "#### forty-two") == 0.0 and grade_numeric(p, "#### nan") == 0.0
    g = python_grader("test_rl:ascii_start")
    assert g(p, "a") == 1.0 and g(p, "\u00e9") == 0.0
    for bad in ("nomodule", "no_such_module_xyz:f", "test_rl:no_such_function"):
        with pytest.raises(ValueError, match="grader"):
            python_grader(bad)


def test_jsonl_task_split_is_disjoint_and_errors_name_the_line(tmp_path):
    path = tmp_path / "t.jsonl"
    lines = [{"messages": [{"role": "user", "content": f"{i} + 1?"}], "answer": str(i + 1)} for i in range(200)]
    lines.append(lines[0])  # a duplicate prompt: one side only
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    task = load_task(str(path), "numeric", test_fraction=0.2)
    train = {json.dumps(p["messages"]) for p in task.train}
    test = {json.dumps(p["messages"]) for p in task.test}
    assert not train & test and len(train | test) == 200 and 20 < len(test) < 60
    assert task.grade(task.test[0], f"#### {task.test[0]['answer']}") == 1.0
    path.write_text(json.dumps(lines[0]) + "\n{\"messages\": []}\n")
    with pytest.raises(ValueError, match=r"t.jsonl:2"):
        read_problems(str(path))
    with pytest.raises(ValueError, match="not a built-in task"):
        load_task(str(tmp_path / "missing"))


def test_builtin_tasks_are_disjoint_and_graded():
    """The built-in split (generated from the seed, as `minigpt sft` splits it): no test prompt in train."""
    cfg = GPTConfig(block_size=128, vocab_size=1033, n_layer=2, n_head=2, n_embd=32)
    for name in ("count", "compare"):
        task = load_task(name, seed=1, config=cfg)
        assert task.train and task.test
        assert not {json.dumps(p["messages"]) for p in task.train} & {json.dumps(p["messages"]) for p in task.test}
        p = task.test[0]
        assert p["messages"][-1]["role"] == "user"
        assert task.grade(p, f"working\n#### {p['answer']}") == 1.0
        assert task.grade(p, "working\n#### 99999") == 0.0
    assert hash_split([{"messages": [{"role": "user", "content": "x"}]}], 0.5) in (
        ([{"messages": [{"role": "user", "content": "x"}]}], []), ([], [{"messages": [{"role": "user", "content": "x"}]}]))


# --------------------------------------------------------------------------------------------------
# rollouts


def test_rollout_layout_trains_only_on_the_reply(tok):
    model = tiny_model(tok)
    train, _ = toy(8)
    task = Task("toy", train, train, lambda p, c: ascii_start(p["messages"], c))
    samples = rollout(model, tok, task, train[:3], 4, 5, seed=3)
    assert len(samples) == 12 and [s.problem for s in samples] == [i // 4 for i in range(12)]
    end = tok.special_tokens[IM_END]
    for s in samples:
        assert len(s.reply) <= 5 and (s.ended or len(s.reply) == 5)
        x, y = sequence(s, end)
        P = len(s.prompt)
        assert x[:P] == s.prompt and all(t == -1 for t in y[:P - 1])       # the prompt is context only
        assert y[P - 1:] == s.reply + ([end] if s.ended else [])           # every reply token, and the end
    values = np.arange(12.0)
    for x, y, rows, v in micro_batches(samples, end, 5, values):
        for r, i in enumerate(rows):
            n = len(sequence(samples[i], end)[0])
            assert (y[r, n:] == -1).all() and np.all(v[r, :n] == values[i])
    # the same seed samples the same replies
    again = rollout(model, tok, task, train[:3], 4, 5, seed=3)
    assert [s.reply for s in again] == [s.reply for s in samples]


# --------------------------------------------------------------------------------------------------
# learning, and unlearning with the grader's sign flipped


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_rl_moves_pass1_the_way_the_reward_points(tok, tmp_path, sign):
    train, test = toy()
    task = Task("toy", train, test, lambda p, c: sign * ascii_start(p["messages"], c))
    judge = Task("toy", train, test, lambda p, c: ascii_start(p["messages"], c))  # the true grader
    s = settings()
    model = tiny_model(tok)
    before = evaluate(model, tok, judge, s, seed=5)["pass1"]
    rl_train(model, tok, task, s, str(tmp_path), {}, log=lambda *a: None)
    after = evaluate(model, tok, judge, s, seed=5)["pass1"]
    assert 0.3 < before < 0.7
    if sign > 0:
        assert after > before + 0.2, (before, after)
    else:
        assert after < before - 0.2, (before, after)


def test_rejection_sampling_and_ppo_epochs_with_kl_learn(tok, tmp_path):
    train, test = toy()
    task = Task("toy", train, test, lambda p, c: ascii_start(p["messages"], c))
    for i, kw in enumerate([dict(algo="rs"), dict(epochs=3, kl_coef=0.05, std_normalize=True)]):
        s = settings(**kw)
        model, ref = tiny_model(tok), tiny_model(tok)
        before = evaluate(model, tok, task, s, seed=5)["pass1"]
        summary = rl_train(model, tok, task, s, str(tmp_path / str(i)), {}, ref=ref if s.kl_coef else None)
        assert summary["pass1_after"] > before + 0.2, (kw, before, summary)
        rows = [json.loads(x) for x in open(tmp_path / str(i) / "log.jsonl")]
        steps = [r for r in rows if "reward" in r]
        assert len(steps) == s.steps and all(0 <= r["zero_spread"] <= 1 for r in steps)
        if s.epochs > 1:
            assert any(r["clipped"] > 0 for r in steps) and any(r["kl"] > 0 for r in steps)


# --------------------------------------------------------------------------------------------------
# the command: kill -9 and --resume continue exactly


def make_base(tok, path):
    path.mkdir()
    tiny_model(tok).save(str(path / "ckpt_000000.bin"))
    tok.save(str(path / "tokenizer.model"))
    train, test = toy()
    (path / "train.jsonl").write_text("".join(json.dumps(p) + "\n" for p in train + test))


def cli(*args, **kw):
    env = dict(os.environ, PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "minigpt", "rl", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def test_cli_kill_and_resume_is_exact(tok, tmp_path):
    base = tmp_path / "base"
    make_base(tok, base)
    common = ["--base", str(base), "--task", str(base / "train.jsonl"), "--grader", "test_rl:ascii_start",
              "--steps", "8", "--problems", "4", "--group", "8", "--max-new-tokens", "3", "--lr", "1e-2",
              "--eval-every", "4", "--eval-problems", "10", "--eval-samples", "4", "--checkpoint-every", "2",
              "--micro-batch", "16", "--no-plot", "--threads", "1", "--backend", "c"]
    whole = cli(*common, "--out", str(tmp_path / "whole"))
    out = whole.communicate(timeout=300)[0]
    assert whole.returncode == 0, out
    summary = json.loads(out.strip().splitlines()[-1])
    assert {"pass1_before", "pass1_after", "passk_before", "passk_after"} <= set(summary)

    cut = tmp_path / "cut"
    p = cli(*common, "--out", str(cut))
    deadline = time.time() + 300
    while not (cut / "ckpt_000004.state").exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.communicate()
    assert not (cut / "ckpt_000008.state").exists(), "the run ended before it could be killed"
    r = cli("--resume", str(cut), "--no-plot")
    out2 = r.communicate(timeout=300)[0]
    assert r.returncode == 0, out2
    assert (cut / "ckpt_000008.bin").read_bytes() == (tmp_path / "whole" / "ckpt_000008.bin").read_bytes()
    timing = ("rollout_s", "update_s", "sample_tok_s")

    def records(run):
        return [{k: v for k, v in json.loads(x).items() if k not in timing} for x in open(run / "log.jsonl")]
    assert records(cut) == records(tmp_path / "whole")
    assert json.loads(out2.strip().splitlines()[-1]) == summary | {"rollout_share": json.loads(
        out2.strip().splitlines()[-1])["rollout_share"], "sample_tok_s": json.loads(out2.strip().splitlines()[-1])["sample_tok_s"]}


def test_cli_bad_input_is_one_line(tok, tmp_path):
    base = tmp_path / "base"
    make_base(tok, base)
    for args, msg in [(["--task", "count"], "--base"),
                      (["--base", str(tmp_path / "nope")], "no such run directory"),
                      (["--base", str(base), "--task", "nosuch"], "not a built-in task"),
                      (["--base", str(base), "--group", "0"], "group must be")]:
        p = cli(*args, "--out", str(tmp_path / "o"))
        out = p.communicate(timeout=120)[0]
        assert p.returncode == 2 and msg in out and "Traceback" not in out, out


def test_generate_per_prompt_seeds(tok):
    """generate(seed=[...]): prompt i samples from (seeds[i], j), the same alone as in the batch, and
    two prompts with different seeds do not share their random draws."""
    from minigpt.inference.generate import generate
    model = tiny_model(tok)
    prompts = [[1, 2, 3], [1, 2, 3], [4, 5]]
    both = generate(model, prompts, 6, temperature=1.0, seed=[7, 8, 9], n=2)
    for i, p in enumerate(prompts):
        assert generate(model, p, 6, temperature=1.0, seed=7 + i, n=2) == both[2 * i:2 * i + 2]
    assert both[0:2] != both[2:4]  # the same prompt, its own seed: other samples
    with pytest.raises(ValueError, match="one per prompt"):
        generate(model, prompts, 2, seed=[1, 2])
