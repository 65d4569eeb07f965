"""`minigpt probe`: find what a chat model does not know, and teach it to say so.

    minigpt probe runs/NAME-sft --out runs/probe          # writes probe.jsonl, refusals.jsonl, probe.json
    minigpt sft --base runs/NAME-sft --data runs/probe/refusals.jsonl --out runs/NAME-refuse

1. Questions with known answers: the facts the model was taught (the invented towns of
   tool_chats.py's train split: founding year, population, river). Each is asked `samples` times
   at `temperature` and each reply graded (exact match after `####`, grade.py).
2. Questions whose right answer is a refusal: functions that do not exist (real module, invented
   name: "What does json.quenify do?") and towns nobody wrote about.
3. Verdicts: an answerable question is "known" when at least one sample is right, "unknown" when
   every sample is wrong (the model makes something up consistently); a made-up question is
   "hallucinated" when a sample answers it instead of refusing.
4. New training conversations (refusals.jsonl): a refusal for every unknown and every made-up
   question of the train part, and the true answer again for every known one (so the model keeps
   answering what it knows); `--keep FILE` adds the model's earlier training set.

A refusal is a reply that says "I don't know" (`is_refusal`). The files are JSONL a reader can open:
probe.jsonl has each question, its answer, every sample, its grade and the verdict.
"""
import hashlib
import json
import os
import re
from dataclasses import dataclass

import numpy as np

from .. import settings
from ..fileio import write_json
from ..inference.engine import Engine
from ..inference.sample import open_model
from ..inference.tools import ToolBox, generate_with_tools
from ..model.backend import RuntimeSettings, set_threads
from ..tokenizer.chat import IM_END, render_prompt
from .conversations import read_jsonl, write_jsonl
from .grade import grade_final
from .tool_chats import ATTRIBUTES, held_out, plain_turn, town_names, towns

REFUSAL = "I don't know that."
REFUSED = re.compile(r"\bi (do not|don't) know\b", re.I)
MODULES = ["os", "os.path", "json", "math", "re", "random", "string", "shutil", "textwrap", "heapq", "bisect"]
FAKE_WORDS = ["quen", "frob", "zarn", "plim", "vesk", "dorb", "trell", "glim", "snor", "brax", "kwel", "mip"]
FAKE_ENDS = ["ify", "ate", "ize", "le", "er", "ish", "ant", "ode"]
ASK_FUNCTION = ["What does {f} do?", "What is {f} for?", "Explain {f}.", "What does the {f} function do?"]


def is_refusal(reply):
    return bool(REFUSED.search(reply))


def made_up_questions(n_towns, seed=0, n=400):
    """[(key, question)] about things that do not exist: invented functions in real modules and towns
    outside the collection (names drawn after the real towns', so never one of them)."""
    rng = np.random.default_rng([seed, 11])
    out, seen = [], set()
    while len(out) < n // 2:
        f = f"{MODULES[int(rng.integers(len(MODULES)))]}.{FAKE_WORDS[int(rng.integers(len(FAKE_WORDS)))]}" \
            f"{FAKE_ENDS[int(rng.integers(len(FAKE_ENDS)))]}"
        if f not in seen:
            seen.add(f)
            out.append((f"fn:{f}", ASK_FUNCTION[int(rng.integers(len(ASK_FUNCTION)))].format(f=f)))
    real = {t["name"] for t in towns(n_towns, seed)}
    ghosts = [t for t in town_names(n_towns + n, np.random.default_rng([seed, 7]))[n_towns:] if t not in real]
    for t in ghosts[:n - len(out)]:
        asks, _ = ATTRIBUTES[list(ATTRIBUTES)[int(rng.integers(len(ATTRIBUTES)))]]
        out.append((f"ghost:{t}", asks[int(rng.integers(len(asks)))].format(t=t)))
    return out


def probe_set(n_towns, seed=0, test_fraction=0.1, n_made_up=400):
    """(answerable, made_up): answerable = [{question, answer, key}] about the train towns; made_up =
    [{question, key, split}] with split "train" (becomes training data) or "test" (held out)."""
    answerable = []
    for t in towns(n_towns, seed):
        if held_out(f"town:{t['name']}", test_fraction):
            continue  # the test towns were never taught: they are the held-out unknowns (see bench)
        for attribute, (asks, _) in ATTRIBUTES.items():
            answerable.append({"key": f"town:{t['name']}:{attribute}", "question": asks[0].format(t=t["name"]),
                               "answer": t[attribute]})
    made_up = [{"key": k, "question": q, "split": "test" if held_out(k, 0.5) else "train"}
               for k, q in made_up_questions(n_towns, seed, n_made_up)]
    return answerable, made_up


def ask(weights, tok, questions, samples=1, temperature=0.0, max_new_tokens=32, seed=0, slots=32, kernels=None):
    """[[reply text] * samples] for each question, asked as a one-message chat."""
    prompts = [render_prompt(tok, [{"role": "user", "content": q}]) for q in questions for _ in range(samples)]
    outs = generate_with_tools(Engine(weights, slots=slots, kernels=kernels), ToolBox(tok), prompts, max_new_tokens=max_new_tokens,
                               temperature=temperature, seed=seed, stop=[tok.special_tokens[IM_END]])
    texts = [tok.decode(tokens) for tokens, _, _ in outs]
    return [texts[i * samples:(i + 1) * samples] for i in range(len(questions))]


def probe(weights, tok, answerable, made_up, samples=4, temperature=1.0, seed=0, kernels=None):
    """The probe records: every question with its samples, grades and verdict."""
    records = []
    replies = ask(weights, tok, [a["question"] for a in answerable], samples, temperature, seed=seed, kernels=kernels)
    for a, rs in zip(answerable, replies):
        grades = [grade_final(r, a["answer"]) for r in rs]
        records.append({**a, "kind": "answerable", "samples": rs, "grades": grades,
                        "verdict": "known" if any(grades) else "unknown"})
    replies = ask(weights, tok, [m["question"] for m in made_up], samples, temperature, seed=seed + 1,
                  kernels=kernels)
    for m, rs in zip(made_up, replies):
        refused = [is_refusal(r) for r in rs]
        records.append({**m, "kind": "made_up", "samples": rs, "refused": refused,
                        "verdict": "refused" if all(refused) else "hallucinated"})
    return records


def new_examples(records):
    """Training conversations from the probe: refusals where the model does not (or cannot) know,
    the true answer where it does."""
    out = []
    for r in records:
        if r["kind"] == "answerable":
            reply = f"#### {r['answer']}" if r["verdict"] == "known" else REFUSAL
            out.append({"messages": plain_turn(r["question"], reply), "task": "refusal" if reply == REFUSAL else "facts",
                        "answer": r["answer"] if reply != REFUSAL else ""})
        elif r["split"] == "train":
            out.append({"messages": plain_turn(r["question"], REFUSAL), "task": "refusal", "answer": ""})
    return out


@dataclass
class ProbeSettings:
    out: str = "runs/probe"      # directory for probe.jsonl, refusals.jsonl and probe.json
    towns: int = 600             # invented towns in the fact collection (as bench_tools / tool_chats)
    made_up: int = 400           # questions about things that do not exist (half held out)
    samples: int = 4             # samples per question
    temperature: float = 1.0     # sampling temperature of the probe
    keep: str = None             # a conversation JSONL (the model's SFT set) to add to refusals.jsonl
    repeat: int = 2              # copies of each probe-made example in refusals.jsonl
    seed: int = 0

    def __post_init__(self):
        for name in ("towns", "made_up", "samples", "repeat"):
            settings.check_range(self, name, 1)
        settings.check_range(self, "temperature", 0)


CLASSES = (ProbeSettings, RuntimeSettings)


def add_arguments(p):
    p.add_argument("model", help="a chat model: an SFT run directory or checkpoint")
    p.add_argument("--tokenizer", help="tokenizer file (default: the run directory's tokenizer.model)")
    settings.add_arguments(p, *CLASSES)


def run(args):
    s, rt = (settings.build(cls, settings.from_args(args, cls)) for cls in CLASSES)
    if rt.threads:
        set_threads(rt.threads)
    weights, tok, ckpt = open_model(args.model, args.tokenizer)
    if tok is None or IM_END not in tok.special_tokens:
        raise ValueError(f"{args.model}: a chat model with its tokenizer is needed (an SFT run)")
    answerable, made_up = probe_set(s.towns, s.seed, n_made_up=s.made_up)
    records = probe(weights, tok, answerable, made_up, s.samples, s.temperature, s.seed, rt.backend)
    examples = new_examples(records) * s.repeat
    if s.keep:
        examples += read_jsonl(s.keep)[0]
    order = np.random.default_rng(s.seed).permutation(len(examples))
    os.makedirs(s.out, exist_ok=True)
    write_jsonl(os.path.join(s.out, "probe.jsonl"), records)
    write_jsonl(os.path.join(s.out, "refusals.jsonl"), [examples[i] for i in order])
    count = lambda kind, verdict: sum(r["kind"] == kind and r["verdict"] == verdict for r in records)  # noqa: E731
    summary = {"model": ckpt, "answerable": len(answerable), "known": count("answerable", "known"),
               "unknown": count("answerable", "unknown"), "made_up": len(made_up),
               "hallucinated": count("made_up", "hallucinated"), "refused": count("made_up", "refused"),
               "examples": len(examples),
               "digest": hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest()[:16]}
    write_json(os.path.join(s.out, "probe.json"), summary)
    print(f"probed {ckpt}: {summary['known']} of {len(answerable)} answerable questions known "
          f"(a right answer in {s.samples} samples), {summary['hallucinated']} of {len(made_up)} made-up "
          f"questions answered instead of refused; {len(examples)} training conversations in "
          f"{os.path.join(s.out, 'refusals.jsonl')}")
    print(json.dumps({"probe": summary}))
    return 0
