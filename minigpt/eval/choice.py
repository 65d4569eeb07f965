"""Multiple choice: which ending of a context does the model find likeliest?

An example is HellaSwag's JSONL form, as llm.c's evaluation reads it:

    {"ctx": "A man is sitting on a roof. he", "endings": ["is using wrap ...", ...], "label": 3}

("context" is accepted for "ctx"). Scored as llm.c scores it (completion style): each row is the
context's tokens followed by one ending's tokens (" " + ending, as GPT-2 text has spaces before
words; no space when the context already ends in whitespace or the ending starts with one). The
model reads every row; the loss of each ending token given all before it is summed over the
ending, and

    acc        the ending with the lowest summed loss is the label
    acc_norm   the ending with the lowest mean loss per token is the label (llm.c's headline figure:
               it does not penalise long endings)

llm.c's binary file of pre-tokenized examples (header 20240522, DESIGN.md) is read too.

A chat model is asked instead (the chat variant): the context and lettered endings go in a user
message, the chat template's generation prompt follows, and the answer is the letter (A, B, C ...)
whose token has the largest logit at the next position.
"""
import json
import os

import numpy as np

from ..fileio import FileFormatError, HEADER_BYTES, read_header
from ..tokenizer.chat import render_prompt
from .loss import encode_text, eval_mode, token_losses

EVAL_MAGIC, EVAL_VERSION = 20240522, 1
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# --------------------------------------------------------------------------------------------------
# reading examples


def check_example(ex, where):
    if not isinstance(ex, dict):
        raise ValueError(f"{where}: expected an object with ctx, endings, label, found {type(ex).__name__}")
    ctx = ex.get("ctx", ex.get("context"))
    endings, label = ex.get("endings"), ex.get("label")
    if not isinstance(ctx, str):
        raise ValueError(f"{where}: 'ctx' (or 'context') must be a string, found {type(ctx).__name__}")
    if not (isinstance(endings, list) and len(endings) >= 2 and all(isinstance(e, str) and e for e in endings)):
        raise ValueError(f"{where}: 'endings' must be a list of 2 or more non-empty strings")
    if isinstance(label, str) and label.isdigit():
        label = int(label)  # HellaSwag's test files write it as a string
    if not (isinstance(label, int) and 0 <= label < len(endings)):
        raise ValueError(f"{where}: 'label' must be an index into the {len(endings)} endings, found {label!r}")
    return {"ctx": ctx, "endings": endings, "label": label}


def read_jsonl(path):
    """Examples of a HellaSwag-style JSONL file, each checked; a bad line names itself."""
    examples = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                ex = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not JSON ({e.msg})") from None
            examples.append(check_example(ex, f"{path}:{lineno}"))
    if not examples:
        raise ValueError(f"{path}: no examples")
    return examples


def read_llmc_eval(path):
    """llm.c's eval .bin: per example 65535, its size in bytes, index, label, number of endings, the
    context (length, tokens), each ending (length, tokens). -> tokenized examples."""
    header = read_header(path, EVAL_MAGIC, {EVAL_VERSION}, "llm.c eval file")
    n = int(header[2])
    data = np.fromfile(path, dtype="<u2", offset=HEADER_BYTES)
    examples, at = [], 0
    for i in range(n):
        if at + 6 > data.size or data[at] != 65535:
            raise FileFormatError(f"{path}: example {i} of {n}: expected the 65535 delimiter at uint16 {at}")
        size, label, k = int(data[at + 1]) // 2, int(data[at + 3]), int(data[at + 4])
        if at + size > data.size:
            raise FileFormatError(f"{path}: example {i} of {n} ({2 * size} bytes) runs past the end of the file")
        body, p = data[at:at + size], 5
        try:
            ctx = body[p + 1:p + 1 + body[p]].tolist()
            p += 1 + body[p]
            endings = []
            for _ in range(k):
                endings.append(body[p + 1:p + 1 + body[p]].tolist())
                p += 1 + body[p]
        except IndexError:
            p = size + 1
        if p != size or not 0 <= label < k:
            raise FileFormatError(f"{path}: example {i}: its lengths do not add up to its size ({size * 2} bytes) "
                                  f"or its label {label} is not one of {k} endings")
        examples.append({"ctx_tokens": ctx, "ending_tokens": endings, "label": label})
        at += size
    if at != data.size:
        raise FileFormatError(f"{path}: {2 * (data.size - at)} bytes after the {n} examples of its header")
    return examples


def read_examples(path):
    if not os.path.exists(path):
        raise FileNotFoundError(f"multiple-choice file not found: {path}")
    with open(path, "rb") as f:
        head = f.read(4)
    if len(head) == 4 and int.from_bytes(head, "little") == EVAL_MAGIC:
        return read_llmc_eval(path)
    return read_jsonl(path)


def tokenize(tok, ex):
    """{"ctx_tokens", "ending_tokens", "label"}: llm.c's rendering (see the module docstring)."""
    if "ctx_tokens" in ex:
        return ex
    ex = check_example(ex, "example")
    ctx = ex["ctx"]
    spaced = [e if not ctx or ctx[-1].isspace() or e[0].isspace() else " " + e for e in ex["endings"]]
    return {"ctx_tokens": encode_text(tok, ctx), "ending_tokens": [encode_text(tok, e) for e in spaced],
            "label": ex["label"]}


# --------------------------------------------------------------------------------------------------
# completion-style scoring (llm.c)


def rows_of(ex, maxT, bos):
    """(tokens, number of context tokens) per ending; the context loses tokens from its start until
    the row fits the model (maxT + 1 tokens: input and shifted target); an empty context is [bos]."""
    ctx = ex["ctx_tokens"] or [bos]
    rows = []
    for end in ex["ending_tokens"]:
        if not 1 <= len(end) <= maxT:
            raise ValueError(f"an ending of {len(end)} tokens: it must have 1 to block_size={maxT} tokens")
        keep = ctx[max(0, len(ctx) + len(end) - maxT - 1):]
        rows.append((list(keep) + list(end), len(keep)))
    return rows


def ending_losses(model, examples, bos, batch_size=16):
    """For every example, every ending's per-token losses (a float64 array per ending)."""
    maxT = model.config.block_size
    flat = [(e, j, row, nctx) for e, ex in enumerate(examples) for j, (row, nctx) in enumerate(rows_of(ex, maxT, bos))]
    out = [[None] * len(ex["ending_tokens"]) for ex in examples]
    for b in range(0, len(flat), batch_size):
        batch = flat[b:b + batch_size]
        T = max(len(row) for _, _, row, _ in batch) - 1
        x = np.zeros((len(batch), T), dtype=np.int64)    # (B, T)
        y = np.full((len(batch), T), -1, dtype=np.int64)  # (B, T) targets only on the ending's tokens
        for r, (_, _, row, nctx) in enumerate(batch):
            x[r, :len(row) - 1] = row[:-1]
            y[r, nctx - 1:len(row) - 1] = row[nctx:]
        losses = token_losses(model, x, y)            # (B, T)
        for r, (e, j, row, nctx) in enumerate(batch):
            out[e][j] = losses[r, nctx - 1:len(row) - 1]
    return out


def score_completion(model, tok, examples, batch_size=16):
    """llm.c's completion-style scoring: {"acc", "acc_norm", "n", "predictions": [...]}."""
    examples = [tokenize(tok, ex) for ex in examples]
    per_example = ending_losses(model, examples, tok.eot, batch_size)
    right = right_norm = 0
    predictions = []
    for ex, losses in zip(examples, per_example):
        sums = np.array([l.sum() for l in losses])
        means = np.array([l.mean() for l in losses])
        pred, pred_norm = int(np.argmin(sums)), int(np.argmin(means))
        right += pred == ex["label"]
        right_norm += pred_norm == ex["label"]
        predictions.append({"label": ex["label"], "pred": pred, "pred_norm": pred_norm,
                            "mean_losses": [round(float(m), 6) for m in means]})
    n = len(examples)
    return {"acc": right / n, "acc_norm": right_norm / n, "n": n, "chance": float(np.mean(
        [1 / len(ex["ending_tokens"]) for ex in examples])), "predictions": predictions}


# --------------------------------------------------------------------------------------------------
# the chat variant: ask, then read the answer letter's logit


def chat_question(ex):
    """The user message: the context, the endings as lettered options, the instruction."""
    if len(ex["endings"]) > len(LETTERS):
        raise ValueError(f"the chat variant letters at most {len(LETTERS)} endings, found {len(ex['endings'])}")
    options = "\n".join(f"{LETTERS[i]}. {e}" for i, e in enumerate(ex["endings"]))
    return (f"Which ending continues the text best?\n\n{ex['ctx']}\n\n{options}\n\n"
            f"Answer with the letter of the ending.")


def letter_ids(tok, k):
    ids = []
    for letter in LETTERS[:k]:
        t = tok.encode_ordinary(letter)
        if len(t) != 1:
            raise ValueError(f"the letter {letter!r} is {len(t)} tokens in this tokenizer; the chat variant needs one")
        ids.append(t[0])
    return ids


def score_chat(model, tok, examples, batch_size=16):
    """The chat variant: {"acc", "n", "predictions"}; needs text examples and the chat tokens."""
    if not getattr(tok, "special_tokens", None):
        raise ValueError("the chat variant needs a minigpt tokenizer with the chat tokens, not llm.c's .bin")
    if any("ctx_tokens" in ex for ex in examples):
        raise ValueError("the chat variant needs examples as text (JSONL), not llm.c's pre-tokenized .bin")
    examples = [check_example(ex, f"example {i}") for i, ex in enumerate(examples)]
    prompts = []
    for ex in examples:
        ids = render_prompt(tok, [{"role": "user", "content": chat_question(ex)}])
        prompts.append(ids[-model.config.block_size:])  # keep the generation prompt, drop the oldest text
    right, predictions = 0, []
    for b in range(0, len(prompts), batch_size):
        batch = prompts[b:b + batch_size]
        T = max(len(p) for p in batch)
        x = np.zeros((len(batch), T), dtype=np.int64)  # (B, T) padding after each prompt: causal, unseen
        for r, p in enumerate(batch):
            x[r, :len(p)] = p
        with eval_mode(model):
            model.forward(x)
        logits = model.logits                          # (B, T, Vp)
        for r, p in enumerate(batch):
            ex = examples[b + r]
            choices = letter_ids(tok, len(ex["endings"]))
            z = np.asarray(logits[r, len(p) - 1, choices], dtype=np.float64)  # (k,) the letters' logits
            pred = int(np.argmax(z))
            right += pred == ex["label"]
            predictions.append({"label": ex["label"], "pred": pred, "letter_logits": [round(float(v), 4) for v in z]})
    return {"acc": right / len(examples), "n": len(examples),
            "chance": float(np.mean([1 / len(ex["endings"]) for ex in examples])), "predictions": predictions}
