"""Refusals, measured: probe a chat model, fine-tune it on what the probe found, and count the
confident made-up answers to unanswerable questions before and after.

    python benches/bench_tools.py ...                       # makes runs/tools/sft_without2 (the model)
    python benches/bench_refusals.py --model runs/tools/sft_without2 --keep runs/tools/train_without.jsonl

1. `minigpt probe`: the taught towns' facts asked 4 times each at temperature 1 (known = right at
   least once), questions about invented functions and towns (half of them held out); refusals.jsonl
   holds a refusal for each unknown and each train made-up question, the answer for each known one,
   and (--keep) the model's SFT set again.
2. `minigpt sft` from the model on refusals.jsonl.
3. Before and after, greedy: on held-out unanswerable questions (the held-out made-up questions and
   every question about the towns held out of training, which a model without search cannot know)
   the share of replies that answer instead of refusing; on the answerable questions, accuracy.
"""
import argparse
import json
import os
import subprocess
import sys

from minigpt.fileio import write_json
from minigpt.inference.sample import open_model
from minigpt.posttrain.conversations import write_jsonl
from minigpt.posttrain.grade import grade_final
from minigpt.posttrain.probe import ask, is_refusal, probe_set
from minigpt.posttrain.tool_chats import ATTRIBUTES, held_out, towns


def unanswerable(n_towns, made_up, seed=0):
    """Held-out questions with no answer the model could know."""
    out = [m["question"] for m in made_up if m["split"] == "test"]
    for t in towns(n_towns, seed):
        if held_out(f"town:{t['name']}", 0.1):
            out += [asks[0].format(t=t["name"]) for asks, _ in ATTRIBUTES.values()]
    return out


def measure(run, answerable, unknown):
    weights, tok, _ = open_model(run)
    a = [r[0] for r in ask(weights, tok, [q["question"] for q in answerable])]
    u = [r[0] for r in ask(weights, tok, unknown)]
    acc = sum(grade_final(r, q["answer"]) for r, q in zip(a, answerable)) / len(answerable)
    made_up = sum(not is_refusal(r) for r in u) / len(u)
    refused_known = sum(is_refusal(r) for r in a) / len(a)
    return {"answerable_accuracy": acc, "made_up_answer_share": made_up, "answerable_refused": refused_known}, a, u


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="runs/tools/sft_without2")
    p.add_argument("--keep", default="runs/tools/train_without.jsonl")
    p.add_argument("--out", default="runs/refusals")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--towns", type=int, default=600)
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    probe_dir, after = os.path.join(a.out, "probe"), os.path.join(a.out, "sft_refuse")
    cmd = [sys.executable, "-m", "minigpt", "probe", a.model, "--out", probe_dir, "--towns", str(a.towns)]
    if a.keep:
        cmd += ["--keep", a.keep]
    subprocess.run(cmd, check=True)
    subprocess.run([sys.executable, "-m", "minigpt", "sft", "--base", a.model, "--data",
                    os.path.join(probe_dir, "refusals.jsonl"), "--out", after, "--steps", str(a.steps), "--lr", str(a.lr),
                    "--warmup", "10", "--val-fraction", "0.02", "--graded-every", "0", "--graded", "0",
                    "--eval-every", str(max(a.steps // 2, 1)), "--no-plot"], check=True, stdout=subprocess.DEVNULL)
    answerable, made_up = probe_set(a.towns)
    unknown = unanswerable(a.towns, made_up)
    figures = {"answerable": len(answerable), "unanswerable": len(unknown)}
    for name, run in (("before", a.model), ("after", after)):
        figures[name], ra, ru = measure(run, answerable, unknown)
        write_jsonl(os.path.join(a.out, f"replies_{name}.jsonl"),
                    [{"question": q["question"], "answer": q["answer"], "reply": r} for q, r in zip(answerable, ra)]
                    + [{"question": q, "answer": None, "reply": r, "refused": is_refusal(r)} for q, r in zip(unknown, ru)])
    b, f = figures["before"], figures["after"]
    print(f"\n{'':<34} {'before':>8} {'after':>8}")
    print(f"{'made-up answers (unanswerable)':<34} {b['made_up_answer_share']:>8.3f} {f['made_up_answer_share']:>8.3f}")
    print(f"{'accuracy (answerable)':<34} {b['answerable_accuracy']:>8.3f} {f['answerable_accuracy']:>8.3f}")
    print(f"{'refused (answerable)':<34} {b['answerable_refused']:>8.3f} {f['answerable_refused']:>8.3f}")
    write_json(os.path.join(a.out, "refusals.json"), figures)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
