"""RL tasks: problems with checkable answers, split into train and test, and a grader.

A problem is {"messages": [...], "answer": "..."}: the conversation up to the reply the model is to
write (a trailing assistant message, as in an SFT file, is the reference reply and is dropped), and
what the grader checks. A task is (train problems, test problems, grade), where

    grade(problem, completion) -> reward (a float; the built-in graders give 1.0 or 0.0)

Where tasks come from (`--task`):

    count, compare, arithmetic, spell   the built-in set's graded tasks (minigpt/posttrain/builtin_chats.py),
        split as the SFT run split them: RL trains on the SFT train split and is judged on its test
        split, which neither SFT nor RL ever trains on. Read from the base run's train.jsonl/test.jsonl
        (what `minigpt sft` saved), or generated again from --seed when the base has none.
    letters       letter counting with the answers balanced: the built-in count task asks mostly
        about letters that occur once (61% of its answers are 1, so "always 1" scores 61%); here
        each word of a split is asked about every letter it has twice or more, as many letters it
        has once, and as many it lacks: answers 0, 1 and 2+ a third each. Words come from the
        built-in split (train and test words are disjoint), phrasings from a seeded generator.
    FILE.jsonl    your problems, graded by --grader: `exact` (the reply's final answer, the text after
        its last `####`, or the whole reply if it has none, equals the answer as text, ignoring case
        and spacing), `numeric` (both are numbers and equal), or `module:function`, a Python grader
        function(prompt messages, completion) -> float, imported (never eval'd). The test split is
        --test-data FILE.jsonl, or else a share of the problems chosen by a hash of their prompt, so
        a prompt that appears twice is always on one side.
"""
import importlib
import json
import os
import re
import zlib
from dataclasses import dataclass

import numpy as np

from ..tokenizer.chat import check_messages
from .builtin_chats import COUNT, builtin_conversations, chat, count_reply, model_facts
from .grade import GRADERS, as_number, final_answer, grade_answer, normalize

BUILTIN = ("count", "compare", "arithmetic", "spell", "letters")


@dataclass
class Task:
    name: str
    train: list        # problems
    test: list         # problems, disjoint from train in what they ask
    grade_fn: object   # grade_fn(problem, completion) -> float

    def grade(self, problem, completion):
        return float(self.grade_fn(problem, completion))


# --------------------------------------------------------------------------------------------------
# graders


def reply_answer(completion):
    """The final answer: after the last `####`, or the whole reply when it has none."""
    found = final_answer(completion)
    return completion.strip() if found is None else found


def grade_exact(problem, completion):
    return float(normalize(reply_answer(completion)) == normalize(str(problem["answer"])))


def grade_numeric(problem, completion):
    got, want = as_number(normalize(reply_answer(completion))), as_number(normalize(str(problem["answer"])))
    return float(got is not None and want is not None and got.is_finite() and got == want)


def grade_builtin(problem, completion):
    return grade_answer(problem["task"], completion, problem["answer"])


def python_grader(spec):
    """`module:function` -> grade(problem, completion) calling function(prompt messages, completion)."""
    module, _, name = spec.partition(":")
    if not module or not name:
        raise ValueError(f"--grader {spec!r}: expected exact, numeric or module:function")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"--grader {spec}: cannot import it ({e})") from None
    if not callable(fn):
        raise ValueError(f"--grader {spec}: {name} is not a function")
    return lambda problem, completion: fn(problem["messages"], completion)


def make_grader(spec):
    if spec == "exact":
        return grade_exact
    if spec == "numeric":
        return grade_numeric
    return python_grader(spec)


# --------------------------------------------------------------------------------------------------
# problems


def as_problem(obj, need_answer=True):
    """A JSON object -> a problem: the messages before the last assistant reply, and the answer."""
    if not isinstance(obj, dict) or "messages" not in obj:
        raise ValueError("expected a JSON object with \"messages\" (and \"answer\")")
    messages = check_messages(obj["messages"])
    if messages[-1]["role"] == "assistant":
        messages = messages[:-1]  # the reference reply of an SFT-style line
    if not messages:
        raise ValueError("no prompt before the reply")
    if need_answer and not isinstance(obj.get("answer"), (str, int, float)):
        raise ValueError("no \"answer\" (a string or number) for the grader")
    return dict(obj, messages=messages)


def read_problems(path, need_answer=True, keep=None):
    """Problems of a JSONL file; a bad line is an error naming the file and line. keep(obj) filters."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such task file")
    out = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
                if keep is None or keep(obj):
                    out.append(as_problem(obj, need_answer))
            except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as e:
                raise ValueError(f"{path}:{lineno}: {e}") from None
    return out


def prompt_hash(problem):
    return zlib.crc32(json.dumps(problem["messages"], sort_keys=True).encode("utf-8"))


def hash_split(problems, test_fraction):
    """(train, test) by a hash of each prompt: deterministic, and one prompt never on both sides."""
    cut = int(test_fraction * 2 ** 32)
    test = [p for p in problems if prompt_hash(p) < cut]
    return [p for p in problems if prompt_hash(p) >= cut], test


def dedupe(train, test):
    """Drop from train any prompt that is also a test prompt."""
    seen = {prompt_hash(p) for p in test}
    return [p for p in train if prompt_hash(p) not in seen]


def builtin_task(name, base_dir=None, seed=1337, config=None):
    """A task of the built-in set, split as the SFT run split it (module docstring)."""
    keep = lambda obj: obj.get("task") == name  # noqa: E731
    files = [os.path.join(base_dir or "", f) for f in ("train.jsonl", "test.jsonl")]
    if base_dir and all(os.path.isfile(f) for f in files):
        train, test = (read_problems(f, keep=keep) for f in files)
    else:
        if config is None:
            raise ValueError(f"the built-in task {name} needs the base run's train.jsonl/test.jsonl or a model config")
        both = builtin_conversations(model_facts(config), seed=seed)
        train, test = ([as_problem(e) for e in split if keep(e)] for split in both)
    return Task(name, dedupe(train, test), test, grade_builtin)


def split_words(examples):
    """The words of the built-in count/spell conversations (their reference replies spell them)."""
    words = set()
    for ex in examples:
        if ex.get("task") in ("count", "spell"):
            reply = ex["messages"][-1]["content"]
            m = re.search(r"\nSo (\w+) has ", reply)
            words.add(m.group(1) if m else re.sub(r"\(\d+\)", "", reply.split("\n")[0]).replace("-", ""))
    return sorted(w for w in words if w.isalpha())


def balanced_letters(words, rng):
    """Problems counting letters of `words`, answers 0, 1, 2+ in equal numbers per word."""
    out = []
    for w in words:
        many = sorted(c for c in set(w) if w.count(c) >= 2)
        once = sorted(c for c in set(w) if w.count(c) == 1)
        absent = [c for c in "abcdefghijklmnopqrstuvwxyz" if c not in w]
        k = min(len(many), len(once)) or 1
        letters = many[:k] + list(rng.choice(once, size=min(k, len(once)), replace=False)) + \
            list(rng.choice(absent, size=k, replace=False))
        for c in letters:
            reply, answer = count_reply(w, str(c))
            q = COUNT[rng.integers(len(COUNT))].format(l=c, w=w)
            out.append({"messages": chat(q, reply)[:1], "task": "count", "answer": answer})
    return out


def letters_task(base_dir=None, seed=1337, config=None):
    """The balanced letter-counting task (module docstring), on the words of the built-in split."""
    files = [os.path.join(base_dir or "", f) for f in ("train.jsonl", "test.jsonl")]
    if base_dir and all(os.path.isfile(f) for f in files):
        splits = [[json.loads(line) for line in open(f, encoding="utf-8") if line.strip()] for f in files]
    elif config is not None:
        splits = builtin_conversations(model_facts(config), seed=seed)
    else:
        raise ValueError("the built-in task letters needs the base run's train.jsonl/test.jsonl or a model config")
    train_words, test_words = (split_words(x) for x in splits)
    train_words = sorted(set(train_words) - set(test_words))
    train = balanced_letters(train_words, np.random.default_rng([seed, 0]))
    test = balanced_letters(test_words, np.random.default_rng([seed, 1]))
    return Task("letters", dedupe(train, test), test, grade_builtin)


def load_task(spec, grader="exact", test_data=None, test_fraction=0.1, base_dir=None, seed=1337, config=None):
    """--task NAME or FILE.jsonl (+ --grader, --test-data) -> Task. A clear ValueError for bad input."""
    if spec == "letters":
        task = letters_task(base_dir, seed, config)
    elif spec in BUILTIN:
        task = builtin_task(spec, base_dir, seed, config)
    elif spec.endswith(".jsonl") or os.path.isfile(spec):
        problems = read_problems(spec)
        if test_data:
            train, test = dedupe(problems, read_problems(test_data)), read_problems(test_data)
        else:
            train, test = hash_split(problems, test_fraction)
        task = Task(os.path.basename(spec), train, test, make_grader(grader))
    else:
        raise ValueError(f"--task {spec}: not a built-in task ({', '.join(BUILTIN)}) nor a JSONL file")
    if not task.train or not task.test:
        raise ValueError(f"--task {spec}: {len(task.train)} train and {len(task.test)} test problems: "
                         f"both splits need some")
    return task


assert set(BUILTIN) - {"letters"} <= set(GRADERS)
