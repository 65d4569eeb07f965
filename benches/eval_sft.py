"""The end-to-end check of SFT: a `minigpt sft` run's chat model against its base model on the held-out
split (test.jsonl in the run directory), graded per task (minigpt/posttrain/grade.py).

The chat model gets each prompt through the chat template and replies greedily until <|im_end|>;
the base model (no chat tokens) gets the same question after as many same-task question/answer
examples from the train split as fit in its context with room for a 40-token reply (few-shot: the
shortest of the task's examples), and its reply is cut at the next "Question:". Prints a markdown table (accuracy per task, share of chat replies that end with
<|im_end|>) and, last, a JSON line.
Usage: python benches/eval_sft.py runs/NAME-sft [--n N] [--reply-tokens K]
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import emit  # noqa: E402

from minigpt.fileio import resolve_model  # noqa: E402
from minigpt.model import GPT  # noqa: E402
from minigpt.posttrain import chat_eval  # noqa: E402
from minigpt.posttrain.conversations import read_jsonl  # noqa: E402
from minigpt.tokenizer import load_tokenizer  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run", help="a `minigpt sft` run directory")
    ap.add_argument("--n", type=int, default=None, help="held-out prompts (default: every graded one)")
    ap.add_argument("--reply-tokens", type=int, default=64)
    args = ap.parse_args()
    with open(os.path.join(args.run, "settings.json")) as f:
        s = json.load(f)
    ckpt, tok_path = resolve_model(args.run)
    chat, tok = GPT.load(ckpt), load_tokenizer(tok_path)
    base, base_tok = GPT.load(s["base"]), load_tokenizer(s["tokenizer"])
    test, _ = read_jsonl(os.path.join(args.run, "test.jsonl"))
    train, _ = read_jsonl(os.path.join(args.run, "train.jsonl"))
    examples = chat_eval.held_out(test, args.n)
    rows = {
        "sft": chat_eval.score(examples, chat_eval.chat_replies(chat, tok, examples, args.reply_tokens)),
        "base few-shot": chat_eval.score(examples, chat_eval.fewshot_replies(base, base_tok, examples, train,
                                                                             min(args.reply_tokens, 40))),
    }
    print(f"{ckpt} against its base {s['base']}; {len(examples)} held-out prompts, greedy")
    print(chat_eval.table(rows))
    emit({"sft": rows["sft"], "base_fewshot": rows["base few-shot"], "checkpoint": ckpt})


if __name__ == "__main__":
    main()
