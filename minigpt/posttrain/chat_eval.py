"""Held-out replies, graded: how SFT is judged beyond its loss, and how a base model compares.

    chat_replies   each held-out prompt rendered with the chat template, greedy reply until <|im_end|>
    fewshot_replies the same questions for a base model (no chat tokens): "Question: ...\\nAnswer: ..."
                   examples of the same task from the train split, as many as fit, then the question
    score          per task: accuracy (grade.py) and, for the chat model, the share of replies that
                   end with <|im_end|> (the model knows when to stop)

All prompts of a call decode together, as one batch of streams over the KV cache (sample.generate).
"""
from collections import defaultdict

from ..inference.generate import generate
from ..tokenizer.chat import IM_END, render_prompt
from .grade import GRADERS, grade_answer, split_example


def held_out(examples, n=None, graded_only=True):
    """Up to n examples, taken evenly across tasks in order (deterministic)."""
    by_task = defaultdict(list)
    for e in examples:
        if not graded_only or e.get("task") in GRADERS:
            by_task[e.get("task")].append(e)
    if n is None:
        return [e for es in by_task.values() for e in es]
    out, i = [], 0
    while len(out) < n and any(i < len(es) for es in by_task.values()):
        out += [es[i] for es in by_task.values() if i < len(es)][:n - len(out)]
        i += 1
    return out


def chat_replies(model, tok, examples, max_new_tokens=96):
    """[(reply text, ended with <|im_end|>)] for each example's prompt (its messages before the last reply)."""
    end = tok.special_tokens[IM_END]
    T = model.config.block_size
    prompts = [render_prompt(tok, split_example(e)[0])[-(T - 1):] for e in examples]
    outs, caps = batched(model, prompts, max_new_tokens, stop=[end])
    return [(tok.decode(ids), len(ids) < cap) for ids, cap in zip(outs, caps)]


def batched(model, prompts, max_new_tokens, stop, batch=64):
    """Greedy replies, and for each the most tokens it could get without a stop token: sample.generate
    ends a stream after max_new_tokens or when the batch's cache (min(block_size, longest prompt +
    max_new_tokens) positions) is full."""
    out, caps = [], []
    for i in range(0, len(prompts), batch):
        group = prompts[i:i + batch]
        maxT = min(model.config.block_size, max(map(len, group)) + max_new_tokens)
        out += generate(model, group, max_new_tokens=max_new_tokens, temperature=0, stop=stop)
        caps += [min(max_new_tokens, maxT - len(p) + 1) for p in group]
    return out, caps


def fewshot_prompt(tok, example, shots, budget):
    """Question/answer text: shots of the same task while they fit in `budget` tokens, then the question."""
    question = split_example(example)[0][-1]["content"]
    tail = f"Question: {question}\nAnswer:"
    text = tail
    for s in shots:
        q, a = split_example(s)[0][-1]["content"], split_example(s)[1]
        more = f"Question: {q}\nAnswer: {a}\n\n" + text
        if len(tok.encode_ordinary(more)) + 1 <= budget:  # [EOT] + text: a shot that does not fit is skipped
            text = more
    return [tok.eot] + tok.encode_ordinary(text)


def fewshot_replies(model, tok, examples, train, max_new_tokens=40):
    """[(reply text, None)] of a base model prompted with same-task examples from the train split
    (the shortest ones, so that a small context holds some)."""
    T = model.config.block_size
    by_task = defaultdict(list)
    for e in train:
        by_task[e.get("task")].append(e)
    shots = {task: sorted(es, key=lambda e: sum(len(m["content"]) for m in e["messages"]))[:8]
             for task, es in by_task.items()}
    prompts = [fewshot_prompt(tok, e, shots[e["task"]], T - max_new_tokens)[-(T - 1):] for e in examples]
    outs, _ = batched(model, prompts, max_new_tokens, stop=[tok.eot])
    return [(tok.decode(ids).split("\nQuestion:")[0].strip(), None) for ids in outs]


def score(examples, replies):
    """{task: {"n", "accuracy", "ends_with_im_end"}} plus "all"; ends_with_im_end is None for a base model."""
    acc, ended = defaultdict(list), defaultdict(list)
    for e, (text, stop) in zip(examples, replies):
        for key in (e["task"], "all"):
            if e["task"] in GRADERS:
                acc[key].append(grade_answer(e["task"], text, e["answer"]))
            if stop is not None:
                ended[key].append(float(stop))
    out = {}
    for key in sorted(set(acc) | set(ended), key=lambda k: (k == "all", k)):
        a, s = acc.get(key, []), ended.get(key, [])
        out[key] = {"n": max(len(a), len(s)), "accuracy": sum(a) / len(a) if a else None,
                    "ends_with_im_end": sum(s) / len(s) if s else None}
    return out


def table(rows):
    """Markdown table of {name: score(...)} side by side, one line per task."""
    names = list(rows)
    tasks = list(dict.fromkeys(k for r in rows.values() for k in r))
    head = "| task | n | " + " | ".join(f"{n} accuracy" for n in names) + " | chat ends with <\\|im_end\\|> |"
    lines = [head, "|" + " --- |" * (3 + len(names))]
    for t in tasks:
        cells = [rows[n].get(t, {}).get("accuracy") for n in names]
        ends = next((rows[n][t]["ends_with_im_end"] for n in names if t in rows[n]
                     and rows[n][t]["ends_with_im_end"] is not None), None)
        fmt = lambda v: "-" if v is None else f"{100 * v:.1f}%"
        n = next(rows[m][t]["n"] for m in names if t in rows[m])
        lines.append(f"| {t} | {n} | " + " | ".join(fmt(c) for c in cells) + f" | {fmt(ends)} |")
    return "\n".join(lines)
