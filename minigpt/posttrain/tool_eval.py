"""Held-out questions answered with the tools at hand, graded: the numbers behind tool use.

    replies = tool_replies(weights, tok, examples, box)     # [{"text", "calls", "forced", "finish"}]
    scores = score(examples, replies)                       # per task: accuracy, calls per reply

Each example's prompt (its messages up to the first assistant message) is rendered with the chat
template and answered greedily by the engine with tools (minigpt/inference/tools.py): a call the
model writes is run and its output forced into the stream, as in `minigpt chat` and the server. A
model trained without tools is asked in the same way; it simply never calls one. The reply's final
answer is the line after the last `####` of what the model wrote itself (`own_text`: the forced
outputs left out), so an answer it did not write never counts.
"""
from collections import defaultdict

from ..inference.engine import Engine
from ..inference.tools import generate_with_tools
from ..tokenizer.chat import IM_END, OUTPUT_START, render_prompt
from .grade import grade_final


def question(example):
    """The messages before the first assistant message."""
    messages = example["messages"]
    first = min(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return messages[:first]


def tool_replies(weights, tok, examples, box, max_new_tokens=96, slots=32, kernels=None):
    """Greedy replies with tools, continuous-batched over `slots` streams."""
    prompts = [render_prompt(tok, question(e)) for e in examples]
    engine = Engine(weights, slots=slots, kernels=kernels)
    outs = generate_with_tools(engine, box, prompts, max_new_tokens=max_new_tokens, temperature=0.0,
                               stop=[tok.special_tokens[IM_END]])
    replies = []
    for tokens, forced, finish in outs:
        calls = sum(1 for t, f in zip(tokens, forced) if f and t == box.ids[OUTPUT_START])
        replies.append({"text": tok.decode(tokens), "own": own_text(tok, tokens, forced), "calls": calls,
                        "forced": sum(forced), "finish": finish})
    return replies


def own_text(tok, tokens, forced):
    """What the model wrote itself: its sampled tokens, a line break where a tool's output was forced
    (so `#### X` right after an output starts a line, as grade.py reads it)."""
    parts, run = [], []
    for t, f in zip(tokens, forced):
        if f:
            if run:
                parts.append(tok.decode(run))
            run = []
        else:
            run.append(t)
    parts.append(tok.decode(run))
    return "\n".join(parts)


def score(examples, replies):
    """{task: {"n", "accuracy", "calls_per_reply"}} and "all"."""
    by = defaultdict(lambda: {"n": 0, "right": 0, "calls": 0})
    for e, r in zip(examples, replies):
        for key in (e["task"], "all"):
            by[key]["n"] += 1
            by[key]["right"] += int(grade_final(r["own"] if "own" in r else r["text"], e["answer"]) > 0)
            by[key]["calls"] += r["calls"]
    return {k: {"n": v["n"], "accuracy": v["right"] / v["n"], "calls_per_reply": v["calls"] / v["n"]}
            for k, v in by.items()}
