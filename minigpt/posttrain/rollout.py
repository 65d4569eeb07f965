"""Rollouts: ask each problem G times, grade every reply, and lay the replies out for training.

    rollout      P problems -> P x G replies from the batched KV-cache generator (every prompt
                 prefilled once, its G streams decoded together), each graded
    sequences    reply i as prompt + reply (+ <|im_end|> when the model ended it), with targets -1 on
                 the prompt: prompt tokens are never trained on
    micro_batches the sequences, sorted by length, cut into (x, y, rows) batches padded to their own
                 longest sequence (so a batch of short replies is short)

A reply that hit --max-new-tokens without <|im_end|> is trained on as it stands, without an end.
With tools (a ToolBox, minigpt/inference/tools.py) the replies come from the engine with tools: a
call's output is forced into the reply, marked in Sample.forced, and never trained on (target -1).
"""
from dataclasses import dataclass

import numpy as np

from ..inference import kvcache
from ..inference.engine import Engine
from ..inference.generate import generate
from ..inference.tools import generate_with_tools
from ..tokenizer.chat import IM_END, render_prompt


@dataclass
class Sample:
    problem: int      # index of its problem in the rollout
    prompt: list      # token ids of the rendered prompt
    reply: list       # token ids the model wrote (without the stop token)
    ended: bool       # the model closed its reply with <|im_end|>
    text: str         # the reply, decoded
    reward: float
    forced: list = None  # per reply token: True where a tool's output was forced (tools only)


def reply_caps(prompts, block_size, max_new_tokens):
    """For each prompt, the most tokens generate() can give it: max_new_tokens, or fewer when the
    batch's cache (min(block_size, longest prompt + max_new_tokens) positions) fills first."""
    maxT = min(block_size, max(map(len, prompts)) + max_new_tokens)
    return [min(max_new_tokens, maxT - len(p) + 1) for p in prompts]


def rollout(model, tok, task, problems, G, max_new_tokens, temperature=1.0, seed=0, top_k=None, batch=None,
            tools=None):
    """G graded samples of each problem -> list of P * G Samples (problem-major). Prompts are cut
    to their last block_size - 1 tokens. batch: problems decoded together (default: all)."""
    end = tok.special_tokens[IM_END]
    T = model.config.block_size
    prompts = [render_prompt(tok, p["messages"])[-(T - 1):] for p in problems]
    if tools is not None:
        return tool_rollout(model, tok, task, problems, prompts, G, max_new_tokens, temperature, seed, top_k, tools)
    batch = batch or len(prompts)
    out = []
    for i in range(0, len(prompts), batch):
        group = prompts[i:i + batch]
        # problem j samples from seeds (seed, j, sample): independent of the other problems, and the
        # same whether decoded alone or in a batch
        replies = generate(model, group, max_new_tokens, temperature=temperature, top_k=top_k,
                           seed=[seed * 65536 + j for j in range(i, i + len(group))], n=G, stop=[end])
        caps = reply_caps(group, T, max_new_tokens)
        for k, ids in enumerate(replies):
            j = i + k // G
            text = tok.decode(ids)
            out.append(Sample(j, prompts[j], ids, len(ids) < caps[k // G], text,
                              task.grade(problems[j], text)))
    return out


def tool_rollout(model, tok, task, problems, prompts, G, max_new_tokens, temperature, seed, top_k, tools):
    """rollout with tools: the P * G streams decode as continuous-batching streams of one engine;
    stream (problem j, sample g) samples with seed (seed, j * G + g)."""
    end = tok.special_tokens[IM_END]
    engine = Engine(kvcache.DecodeWeights.from_model(model), slots=min(len(prompts) * G, 64))
    streams = [prompts[j] for j in range(len(prompts)) for _ in range(G)]
    outs = generate_with_tools(engine, tools, streams, max_new_tokens, temperature, top_k, seed=seed, stop=[end])
    samples = []
    for k, (ids, forced, finish) in enumerate(outs):
        j = k // G
        text = tok.decode(ids)
        samples.append(Sample(j, prompts[j], ids, finish == "stop", text, task.grade(problems[j], text), forced))
    return samples


def sequence(sample, end):
    """(ids, targets) of one sample for next-token training: targets -1 on the prompt and on the
    tokens a tool forced."""
    ids = sample.prompt + sample.reply + ([end] if sample.ended else [])
    targets = [-1] * (len(sample.prompt) - 1) + ids[len(sample.prompt):]
    for i, f in enumerate(sample.forced or ()):
        if f:
            targets[len(sample.prompt) - 1 + i] = -1
    return ids[:-1], targets


def micro_batches(samples, end, rows, values):
    """[(x (B, T), y (B, T), index of each row's sample, v (B, T) per-token values)]: samples sorted
    by length and cut `rows` at a time; `values` (one per sample: its advantage) spread over its tokens."""
    seqs = [sequence(s, end) for s in samples]
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]))
    out = []
    for k in range(0, len(order), rows):
        idx = order[k:k + rows]
        T = max(len(seqs[i][0]) for i in idx)
        x = np.zeros((len(idx), T), np.int64)                # (B, T) padding: any token, never a target
        y = np.full((len(idx), T), -1, np.int64)             # (B, T)
        v = np.zeros((len(idx), T))                          # (B, T)
        for r, i in enumerate(idx):
            ids, targets = seqs[i]
            x[r, :len(ids)], y[r, :len(ids)] = ids, targets
            v[r, :len(ids)] = values[i]
        out.append((x, y, np.array(idx), v))
    return out
