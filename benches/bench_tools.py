"""Tool use, measured: the same base model fine-tuned on the same questions with the tools and
without them, then asked held-out questions (new numbers, towns it never read about).

    minigpt train --out runs/base                      # ~4 min on 2 idle cores (the tiny preset)
    python benches/bench_tools.py --base runs/base --out runs/tools     # 500 + 700 steps of SFT, each run

1. The data (minigpt/posttrain/tool_chats.py): multi-digit multiplication, two-step word problems,
   and questions about invented towns whose documents are only in the search collection. Each
   question twice: with tool calls (the calculator, search) and with the answer written out.
2. Two `minigpt sft` runs from the base, the same settings and steps: with and without; then each
   goes on from its own weights for --more-steps with a fresh schedule (copying digits, which every
   tool call needs, starts to work only after ~500 steps at this size).
3. Both answer the held-out questions greedily through the engine with tools
   (minigpt/posttrain/tool_eval.py); exact match after `####`.

Measured here (README): 500 + 700 steps give multiplication 0.36 with the tool vs 0.00 without; a third
stage of 1000 steps for the tool model (`minigpt sft --base OUT/sft_with2 --data OUT/train_with.jsonl
--steps 1000 --lr 2e-3`) 0.38. Prints a table, writes OUT/tools.json and the held-out replies (OUT/replies_*.jsonl); the last line
is one JSON object of the figures.
"""
import argparse
import json
import os
import subprocess
import sys
import time

from minigpt.fileio import write_json
from minigpt.inference.sample import open_model
from minigpt.inference.search import cached_index
from minigpt.inference.tools import ToolBox
from minigpt.posttrain.conversations import write_jsonl
from minigpt.posttrain.tool_chats import fact_documents, tool_conversations
from minigpt.posttrain.tool_eval import score, tool_replies
from minigpt.tokenizer import load_tokenizer

SEARCH_K, SEARCH_BUDGET = 1, 56


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", default="runs/base", help="a `minigpt train` run directory")
    p.add_argument("--out", default="runs/tools")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--lr", type=float, default=1.5e-3)
    p.add_argument("--more-steps", type=int, default=700, help="a second fine-tuning from the first (0: none)")
    p.add_argument("--more-lr", type=float, default=2e-3)
    p.add_argument("--n", type=int, default=2000, help="problems per arithmetic task")
    p.add_argument("--towns", type=int, default=600)
    p.add_argument("--eval", type=int, default=0, help="held-out questions per task to answer (0: all)")
    p.add_argument("--skip-train", action="store_true", help="evaluate the runs already in --out")
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    tok = load_tokenizer(os.path.join(a.base, "tokenizer.model"))
    docs = fact_documents(a.towns)
    index = cached_index(docs, a.out)
    count = lambda text: len(tok.encode_ordinary(text))  # noqa: E731
    sets = tool_conversations(n_mult=a.n, n_multistep=a.n, n_towns=a.towns, index=index, count=count,
                              search_k=SEARCH_K, search_budget=SEARCH_BUDGET)
    write_jsonl(os.path.join(a.out, "documents.jsonl"), [{"id": d, "text": t} for d, t in docs])
    figures, runs = {}, {}
    for kind in ("with", "without"):  # both fine-tunings at once: two processes share the cores
        train, test = sets[kind]
        data, runs[kind] = os.path.join(a.out, f"train_{kind}.jsonl"), os.path.join(a.out, f"sft_{kind}")
        write_jsonl(data, train)
        write_jsonl(os.path.join(a.out, f"test_{kind}.jsonl"), test)
    if not a.skip_train:
        t0, procs = time.time(), []
        for kind in ("with", "without"):
            cmd = [sys.executable, "-m", "minigpt", "sft", "--base", a.base, "--data",
                   os.path.join(a.out, f"train_{kind}.jsonl"), "--out", runs[kind], "--steps", str(a.steps),
                   "--lr", str(a.lr), "--val-fraction", "0.02", "--graded-every", "0", "--graded", "0",
                   "--eval-every", str(max(a.steps // 4, 1)), "--no-plot", "--threads", "1"]
            print(" ".join(cmd), flush=True)
            procs.append(subprocess.Popen(cmd, stdout=open(runs[kind] + ".log", "w"), stderr=subprocess.STDOUT))
        if any(p.wait() for p in procs):
            sys.exit(f"a fine-tuning failed: see {runs['with']}.log and {runs['without']}.log")
        figures["sft_s"] = round(time.time() - t0, 1)
    if a.more_steps:  # stage 2: the same data again from stage 1's weights, a fresh schedule
        first = dict(runs)
        runs = {kind: first[kind] + "2" for kind in first}
        if not a.skip_train:
            t0, procs = time.time(), []
            for kind in ("with", "without"):
                cmd = [sys.executable, "-m", "minigpt", "sft", "--base", first[kind], "--data",
                       os.path.join(a.out, f"train_{kind}.jsonl"), "--out", runs[kind], "--steps", str(a.more_steps),
                       "--lr", str(a.more_lr), "--warmup", "20", "--val-fraction", "0.02", "--graded-every", "0",
                       "--graded", "0", "--eval-every", str(max(a.more_steps // 4, 1)), "--no-plot", "--threads", "1"]
                print(" ".join(cmd), flush=True)
                procs.append(subprocess.Popen(cmd, stdout=open(runs[kind] + ".log", "w"), stderr=subprocess.STDOUT))
            if any(p.wait() for p in procs):
                sys.exit(f"a fine-tuning failed: see {runs['with']}.log and {runs['without']}.log")
            figures["sft2_s"] = round(time.time() - t0, 1)
    for kind in ("with", "without"):
        test = sets[kind][1]
        weights, chat_tok, _ = open_model(runs[kind])
        box = ToolBox(chat_tok, index=index, search_k=SEARCH_K, search_budget=SEARCH_BUDGET)
        if a.eval:
            by_task = {}
            for e in test:
                by_task.setdefault(e["task"], []).append(e)
            test = [e for es in by_task.values() for e in es[:a.eval]]
        t0 = time.time()
        replies = tool_replies(weights, chat_tok, test, box)
        figures[f"eval_{kind}_s"] = round(time.time() - t0, 1)
        write_jsonl(os.path.join(a.out, f"replies_{kind}.jsonl"),
                    [{"question": e["messages"][0]["content"], "answer": e["answer"], "task": e["task"], **r}
                     for e, r in zip(test, replies)])
        figures[kind] = score(test, replies)
    print(f"\n{'task':<10} {'n':>5} {'with tools':>11} {'without':>9} {'calls/reply (with)':>19}")
    for task in ("mult", "multistep", "facts", "all"):
        w, o = figures["with"][task], figures["without"][task]
        print(f"{task:<10} {w['n']:>5} {w['accuracy']:>11.3f} {o['accuracy']:>9.3f} {w['calls_per_reply']:>19.2f}")
    write_json(os.path.join(a.out, "tools.json"), figures)
    print(json.dumps({"steps": a.steps + a.more_steps, **{f"{k}_{t}": figures[k][t]["accuracy"]
                                           for k in ("with", "without") for t in ("mult", "multistep", "facts")},
                      **{k: v for k, v in figures.items() if k.endswith("_s")}}))


if __name__ == "__main__":
    main()
