"""A small multiple-choice set made by code from the built-in corpus, so `minigpt eval` runs offline.

The corpus (minigpt/corpus.py) lists every documented standard-library function as its signature
followed by its docstring. Two tasks, four endings each, in HellaSwag's form:

    docstring      which summary line belongs to this signature?
                   ctx "json.dumps(obj, *, skipkeys=False, ...)\\n", the real first line of its
                   docstring against the first lines of three other functions
    continuation   which is the real rest of this docstring's first line?
                   ctx the signature and the line's first half (cut between words), the real
                   second half against the second halves of three other lines

A model trained on the corpus has seen most of these texts (the split into train and val is by
document): the set measures what it took in, and a random model scores 1/4. The same seed gives the
same set for a given Python install. `minigpt eval --write-builtin FILE` writes it as JSONL.
"""
import functools
import json
import random

from ..fileio import atomic_write
from ..pretrain.corpus import docstring_entries, parse_module, stdlib_sources


@functools.lru_cache(maxsize=1)
def summaries():
    """(signature, first line of its docstring) of every documented function with a one-line
    summary of 4 to 30 words, each summary once."""
    seen, out = set(), []
    for module, source in stdlib_sources():
        tree = parse_module(source)
        if tree is None:
            continue
        for head, doc in docstring_entries(tree, module):
            line = doc.split("\n", 1)[0].strip()
            if head.startswith("class ") or line in seen or not 4 <= len(line.split()) <= 30:
                continue
            seen.add(line)
            out.append((head, line))
    return out


def pick(rng, pool, exclude, k):
    """k items of pool, none equal to exclude, distinct."""
    chosen = []
    while len(chosen) < k:
        item = rng.choice(pool)
        if item != exclude and item not in chosen:
            chosen.append(item)
    return chosen


def example(rng, ctx, real, others):
    endings = others + [real]
    rng.shuffle(endings)
    return {"ctx": ctx, "endings": endings, "label": endings.index(real)}


def docstring_task(entries, n, k, rng):
    lines = [line for _, line in entries]
    return [dict(example(rng, head + "\n", line, pick(rng, lines, line, k - 1)), task="docstring")
            for head, line in rng.sample(entries, n)]


def continuation_task(entries, n, k, rng):
    """Lines of 10 or more words, cut in the middle: the halves are the endings."""
    long = [(head, line.split()) for head, line in entries if len(line.split()) >= 10]
    halves = [" ".join(words[len(words) // 2:]) for _, words in long]
    out = []
    for i in rng.sample(range(len(long)), n):
        head, words = long[i]
        ctx = head + "\n" + " ".join(words[:len(words) // 2])
        out.append(dict(example(rng, ctx, halves[i], pick(rng, halves, halves[i], k - 1)), task="continuation"))
    return out


def builtin_choices(n=100, k=4, seed=0):
    """n examples of each task, k endings each: a list of {"ctx", "endings", "label", "task"}."""
    entries = summaries()
    if len(entries) < 2 * n + k:
        raise ValueError(f"the built-in corpus has {len(entries)} documented functions here: too few for "
                         f"{n} examples per task (this Python install may lack its standard library sources)")
    rng = random.Random(seed)
    return docstring_task(entries, n, k, rng) + continuation_task(entries, n, k, rng)


def write_jsonl(path, examples):
    body = "".join(json.dumps(ex) + "\n" for ex in examples).encode("utf-8")
    atomic_write(path, lambda f: f.write(body))
