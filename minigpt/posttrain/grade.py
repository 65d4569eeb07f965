"""Graders: is a reply right? One per task of the built-in set, exact answer extraction, no model.

    tasks with working (count, spell, compare, arithmetic): the reply's last `#### ANSWER` line
        (GSM8K's convention) must equal the answer (numbers compared as numbers: "20" == "20.0")
    identity, docs: the reply must contain the answer (a name, a number, a docstring's first sentence),
        compared without case, runs of spaces or thousands separators

For RL, make_grader(examples) gives `grade(prompt, completion) -> reward` (1.0 or 0.0), looking the
prompt's answer up in the examples it was built from (a JSONL of {"messages", "task", "answer"}).
"""
import re
from decimal import Decimal, InvalidOperation

FINAL = re.compile(r"^####[ \t]*(.*?)[ \t]*$", re.M)


def final_answer(completion):
    """The text after the last `####` line's marker, or None when the reply has none."""
    found = FINAL.findall(completion)
    return found[-1] if found else None


def normalize(text):
    """Lower case, one space between words, no thousands separators, no closing full stop."""
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text.lower())
    return " ".join(text.split()).rstrip(".")


def as_number(text):
    try:
        return Decimal(text)
    except InvalidOperation:
        return None


def grade_final(completion, answer):
    """1.0 when the last `#### X` equals answer (as numbers when both are), else 0.0."""
    got = final_answer(completion)
    if got is None:
        return 0.0
    got, want = normalize(got), normalize(answer)
    a, b = as_number(got), as_number(want)
    if a is not None and b is not None:
        return float(a == b)
    return float(got == want)


def grade_contains(completion, answer):
    """1.0 when the reply contains answer (normalised), else 0.0."""
    return float(normalize(answer) in normalize(completion))


GRADERS = {"count": grade_final, "spell": grade_final, "compare": grade_final, "arithmetic": grade_final,
           "identity": grade_contains, "docs": grade_contains,
           # tool use (tool_chats.py) and refusals (probe.py)
           "mult": grade_final, "multistep": grade_final, "facts": grade_final}


def grade_answer(task, completion, answer):
    """The reward of one reply to a task of the built-in set; a ValueError for an ungraded task."""
    if task not in GRADERS:
        raise ValueError(f"no grader for task {task!r}: graded tasks are {sorted(GRADERS)}")
    return GRADERS[task](completion, answer)


def prompt_key(prompt):
    """What identifies a prompt: the messages before the reply, as (role, content) pairs; a plain
    string is one user message."""
    if isinstance(prompt, str):
        return (("user", prompt),)
    return tuple((m["role"], m["content"]) for m in prompt)


def split_example(example):
    """(prompt messages, reference reply) of a conversation: everything before its last assistant
    message, and that message's content."""
    messages = example["messages"]
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return messages[:last], messages[last]["content"]


def make_grader(examples):
    """grade(prompt, completion) -> reward for the graded examples' prompts (messages or a string)."""
    table = {}
    for ex in examples:
        if ex.get("task") in GRADERS:
            table[prompt_key(split_example(ex)[0])] = (ex["task"], ex["answer"])

    def grade(prompt, completion):
        key = prompt_key(prompt)
        if key not in table:
            raise ValueError("this prompt is not one of the grader's examples")
        task, answer = table[key]
        return grade_answer(task, completion, answer)
    return grade
