"""Generative tasks: sample answers, grade them, report pass@k and greedy accuracy.

A grader is any callable grade(prompt, completion) -> float (the post-training stages bring theirs;
exact_match below compares a final answer). A sample passes when its grade reaches `threshold`
(default 1.0: full marks, so partial credit such as a format bonus is not a pass).

pass@k is the chance that at least one of k samples passes. Drawing exactly k samples per problem
estimates it with high variance; Chen et al. (2021, the Codex paper) draw n >= k, count the c that
pass, and use the unbiased estimator

    pass@k = 1 - C(n - c, k) / C(n, k)

(the chance that k of the n, chosen without replacement, are not all failures): pass_at_k, the one
RL reports too (minigpt/posttrain/policy.py).

Greedy: one completion per prompt at temperature 0, graded the same way (with exact_match, the
exact-match accuracy).
"""
import json
import os

import numpy as np

from ..inference.generate import generate
from ..inference.kvcache import DecodeWeights
from ..posttrain.grade import normalize
from ..posttrain.policy import pass_at_k
from ..posttrain.tasks import reply_answer
from ..tokenizer.chat import IM_END, check_messages, render_prompt
from .loss import encode_text


def final_answer(text):
    """The answer a completion gives, normalised for comparison: the text after its last `#### `
    line marker (GSM8K's convention), else the whole completion (posttrain/tasks.py's rule, the one
    RL trains with), in lower case, without thousands separators or a closing full stop."""
    return normalize(reply_answer(text))


def exact_match(answers):
    """A grader: 1.0 when the completion's final answer equals the prompt's reference answer.
    answers: {prompt: answer}."""
    def grade(prompt, completion):
        return float(final_answer(completion) == final_answer(str(answers[prompt])))
    return grade


def prompt_ids(tok, prompt):
    """Token ids for a prompt: a string is continued as text; a list of messages is a chat, which
    asks for the assistant's reply (the chat template's generation prompt)."""
    if isinstance(prompt, str):
        return [tok.eot] + encode_text(tok, prompt)
    return render_prompt(tok, check_messages(prompt))


def evaluate_generative(model, tok, prompts, grader, n=1, k=(1,), temperature=1.0, max_new_tokens=128,
                        top_k=None, top_p=None, seed=0, threshold=1.0, greedy=True):
    """Sample n completions of each prompt (a string, or a list of chat messages), grade each with
    grader(prompt, completion), and report {"prompts", "n", "pass@K" for each K in k, "mean_grade",
    "greedy" (the greedy pass rate), "per_prompt": [...]}. A chat prompt's key for the grader is its
    messages as JSON. All prompts decode as one batch; a completion ends at <|endoftext|>, at
    <|im_end|> (chat), after max_new_tokens, or when the context (block_size) is full."""
    k = [k] if isinstance(k, int) else list(k)
    if not prompts:
        raise ValueError("no prompts to evaluate")
    if n < 1 or any(not 1 <= kk <= n for kk in k):
        raise ValueError(f"every k must be in [1, n={n}] (n samples per prompt), found {k}")
    ids = [prompt_ids(tok, p) for p in prompts]
    keys = [p if isinstance(p, str) else json.dumps(p) for p in prompts]
    for i, p in enumerate(ids):
        if len(p) >= model.config.block_size:  # no sliding window: the context must hold the answer too
            raise ValueError(f"prompt {i} has {len(p)} tokens: no room for an answer in "
                             f"block_size={model.config.block_size}")
    stop = [tok.eot] + ([tok.special_tokens[IM_END]] if any(not isinstance(p, str) for p in prompts) else [])
    weights = DecodeWeights.from_model(model) if not isinstance(model, DecodeWeights) else model
    samples = generate(weights, ids, max_new_tokens, temperature, top_k, top_p, seed, n, stop)  # P * n lists
    if greedy:
        best = generate(weights, ids, max_new_tokens, 0.0, None, None, 0, 1, stop)
    per_prompt, passes = [], {kk: [] for kk in k}
    for i, key in enumerate(keys):
        texts = [tok.decode(s) for s in samples[i * n:(i + 1) * n]]
        grades = [float(grader(key, t)) for t in texts]
        c = sum(g >= threshold for g in grades)
        row = {"prompt": key, "passed": int(c), "grades": grades, "samples": texts}
        if greedy:
            text = tok.decode(best[i])
            row["greedy"], row["greedy_grade"] = text, float(grader(key, text))
        for kk in k:
            passes[kk].append(pass_at_k(n, c, kk))
        per_prompt.append(row)
    out = {"prompts": len(prompts), "n": n, "temperature": temperature}
    out.update({f"pass@{kk}": float(np.mean(v)) for kk, v in passes.items()})
    out["mean_grade"] = float(np.mean([g for r in per_prompt for g in r["grades"]]))
    if greedy:
        out["greedy"] = float(np.mean([r["greedy_grade"] >= threshold for r in per_prompt]))
    out["per_prompt"] = per_prompt
    return out


def read_tasks(path):
    """Generative tasks, JSONL: {"prompt": "..."} or {"messages": [...]} (a chat; the last message
    is the user's), each with "answer": -> (prompts, {prompt key: answer})."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"task file not found: {path}")
    prompts, answers = [], {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                task = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not JSON ({e.msg})") from None
            if not isinstance(task, dict) or "answer" not in task or ("prompt" in task) == ("messages" in task):
                raise ValueError(f"{path}:{lineno}: expected {{\"prompt\": ..., \"answer\": ...}} or "
                                 f"{{\"messages\": [...], \"answer\": ...}}")
            prompt = task["prompt"] if "prompt" in task else check_messages(task["messages"])
            if not isinstance(prompt, (str, list)) or not prompt:
                raise ValueError(f"{path}:{lineno}: the prompt must be a non-empty string")
            prompts.append(prompt)
            answers[prompt if isinstance(prompt, str) else json.dumps(prompt)] = task["answer"]
    if not prompts:
        raise ValueError(f"{path}: no tasks")
    return prompts, answers
