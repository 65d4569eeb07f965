"""Preference data: pairs of replies where one is better, from a file or from a simulated labeller.

The file format is TRL's (and Anthropic HH's), one JSON object per line:

    {"prompt": [messages...], "chosen": [{"role": "assistant", ...}], "rejected": [{"role": "assistant", ...}]}
    {"chosen": [whole conversation], "rejected": [whole conversation]}      (implicit prompt: the shared start)
    {"prompt": "text", "chosen": "text", "rejected": "text"}                 (plain text: a user turn and replies)

read_preferences gives Pair(prompt messages, chosen reply, rejected reply) and the count of lines it
skipped; a broken line names its file and line.

The labeller stands in for the people who rank replies. `gold_score` is what they would say for the
built-in task, "reply to a request politely, on topic and briefly":

    + 1    the reply is courteous (a thanks, a please, "happy to", "of course", ...: once is enough)
    + 2 x  the share of the request's content words that the reply takes up (on topic)
    - 1 x  each 25 words beyond the first 25 (brief)
    - 3 x  the share of repeated words beyond the first use of each (no babbling)

and `label` ranks two replies the way a noisy person would: a prefers-a probability of
sigmoid((gold(a) - gold(b)) / noise), then a coin. The reward model never sees gold_score, only the
pairs it ranked; that gap is what reward hacking exploits.
"""
import json
import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

from ..fileio import atomic_write
from ..tokenizer.chat import check_messages

COURTESY = ("please", "thank", "thanks", "happy to", "glad", "of course", "sure", "you're welcome", "sorry")
WORD = re.compile(r"[a-z']+")
STOP = {"what", "which", "when", "where", "does", "that", "this", "with", "have", "about", "your", "from",
        "there", "their", "would", "could", "should", "tell", "please", "how", "who", "the", "and", "you"}


@dataclass
class Pair:
    prompt: list      # messages, ending where the reply starts
    chosen: str       # the better reply's text
    rejected: str     # the worse reply's text


def reply_text(value, where):
    """The reply of a chosen/rejected field: a string, or messages whose last one is the assistant's."""
    if isinstance(value, str):
        return value
    check_messages(value)
    if value[-1]["role"] != "assistant":
        raise ValueError(f"{where}: the last message must be the assistant's reply")
    return value[-1]["content"]


def parse_pair(obj, where):
    if not isinstance(obj, dict) or "chosen" not in obj or "rejected" not in obj:
        raise ValueError(f"{where}: expected an object with chosen and rejected")
    prompt = obj.get("prompt")
    chosen, rejected = obj["chosen"], obj["rejected"]
    if prompt is None:  # implicit prompt: the conversations share everything but the last reply
        check_messages(chosen)
        check_messages(rejected)
        if chosen[:-1] != rejected[:-1] or len(chosen) < 2:
            raise ValueError(f"{where}: without a prompt, chosen and rejected must be conversations that "
                             f"differ only in their last (assistant) message")
        prompt = chosen[:-1]
    elif isinstance(prompt, str):
        prompt = [{"role": "user", "content": prompt}]
    try:
        check_messages(prompt)
    except ValueError as e:
        raise ValueError(f"{where}: prompt: {e}") from None
    return Pair(prompt, reply_text(chosen, f"{where}: chosen"), reply_text(rejected, f"{where}: rejected"))


def read_preferences(path, strict=False):
    """(pairs, skipped lines). strict=True raises on the first bad line instead of skipping it."""
    pairs, skipped = [], 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
                if not line.strip():
                    continue
                pairs.append(parse_pair(json.loads(line), where))
            except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as e:
                if strict:
                    raise ValueError(f"{where}: {e}" if not str(e).startswith(str(path)) else str(e)) from None
                skipped += 1
    return pairs, skipped


def write_preferences(path, pairs):
    """TRL's conversational form, one pair a line."""
    lines = [json.dumps({"prompt": p.prompt, "chosen": [{"role": "assistant", "content": p.chosen}],
                         "rejected": [{"role": "assistant", "content": p.rejected}]}, ensure_ascii=False)
             for p in pairs]
    atomic_write(path, lambda f: f.write(("\n".join(lines) + "\n").encode("utf-8")))


def batch_indices(seed, batch, n, size):
    """Which of n pairs batch number `batch` takes: a function of (seed, batch) only, so a resumed run
    draws exactly the batches the uninterrupted one would have."""
    return np.random.default_rng([seed, batch]).choice(n, min(size, n), replace=False)


# --------------------------------------------------------------------------------------------------
# the simulated labeller


def gold_score(request, reply):
    """What a person would say of `reply` to `request` (see the module docstring)."""
    words = WORD.findall(reply.lower())
    text = " ".join(words)
    courteous = 1.0 if any(c in text for c in COURTESY) else 0.0
    topic = {w for w in WORD.findall(request.lower()) if len(w) > 3 and w not in STOP}
    on_topic = len(topic & set(words)) / len(topic) if topic else 0.0
    too_long = max(0, len(words) - 25) / 25
    repeated = (len(words) - len(set(words))) / len(words) if words else 1.0
    return courteous + 2.0 * on_topic - too_long - 3.0 * repeated


def label(request, a, b, rng, noise=0.5):
    """(chosen, rejected): a noisy person's ranking of replies a and b."""
    p_a = 1.0 / (1.0 + np.exp(-(gold_score(request, a) - gold_score(request, b)) / noise))
    return (a, b) if rng.random() < p_a else (b, a)


def gold_agreement(pairs):
    """Share of pairs whose chosen reply has the higher gold score (ties count half)."""
    wins = Counter()
    for p in pairs:
        request = p.prompt[-1]["content"]
        d = gold_score(request, p.chosen) - gold_score(request, p.rejected)
        wins["yes" if d > 0 else "tie" if d == 0 else "no"] += 1
    n = sum(wins.values())
    return (wins["yes"] + 0.5 * wins["tie"]) / n if n else float("nan")
