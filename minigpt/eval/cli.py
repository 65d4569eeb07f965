"""`minigpt eval`: a checkpoint's figures on text, shards, multiple choice and generative tasks.

    minigpt eval --checkpoint ckpt.bin --tokenizer tokenizer.model          # the built-in choice set
    minigpt eval ... --text book.txt --shards 'data/val_*.bin'             # loss and bits per byte
    minigpt eval ... --choice hellaswag_val.jsonl --choice hellaswag_val.bin   # llm.c's scoring
    minigpt eval ... --choice builtin --chat                                # a chat model: answer letters
    minigpt eval ... --generative tasks.jsonl --samples 16 --k 1,4,16       # pass@k, greedy exact match

A table, or with --json one JSON object (--out FILE writes it too; --details adds every example's
prediction and every sample).
"""
import json
import os
import sys

from ..fileio import atomic_write
from ..model import GPT
from ..sample import load_tokenizer
from . import builtin, choice, generative, loss


def add_arguments(p):
    p.add_argument("--checkpoint", required=True, help="llm.c checkpoint (fp32 v3 or bf16 v5)")
    p.add_argument("--tokenizer", required=True, help="minigpt tokenizer file or llm.c tokenizer .bin")
    p.add_argument("--text", action="append", default=[], metavar="FILE", help="a UTF-8 text file: loss and bpb")
    p.add_argument("--shards", action="append", default=[], metavar="GLOB", help="llm.c token shards: loss and bpb")
    p.add_argument("--max-tokens", type=int, default=None, help="score at most this many tokens of each text or shard")
    p.add_argument("--choice", action="append", default=[], metavar="FILE",
                   help="multiple choice: HellaSwag-style JSONL, llm.c's eval .bin, or 'builtin' "
                        "(the default when no task is given)")
    p.add_argument("--chat", action="store_true", help="multiple choice as a chat: compare the answer letters' logits")
    p.add_argument("--max-examples", type=int, default=None,
                   help="the first N examples of each choice file (builtin: N/2 per task; default 100 per task)")
    p.add_argument("--generative", action="append", default=[], metavar="FILE",
                   help='JSONL of {"prompt" or "messages", "answer"}: sampled pass@k and greedy exact match')
    p.add_argument("--samples", type=int, default=8, help="samples per prompt for pass@k (default 8)")
    p.add_argument("--k", default="1", help="comma-separated k of pass@k (default 1)")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=None,
                   help="rows per forward pass (default: as many as fit 2 GB of activations, at most 64)")
    p.add_argument("--backend", choices=["numpy", "c", "cuda"], default=None)
    p.add_argument("--write-builtin", metavar="FILE", help="write the built-in choice set as JSONL and stop")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--out", metavar="FILE", help="also write the JSON to this file")
    p.add_argument("--details", action="store_true", help="keep every prediction and sample in the JSON")


def builtin_set(max_examples):
    return builtin.builtin_choices(n=max(1, max_examples // 2) if max_examples else 100)


def choice_results(model, tok, name, args):
    examples = builtin_set(args.max_examples) if name == "builtin" else choice.read_examples(name)
    if args.max_examples and name != "builtin":
        examples = examples[:args.max_examples]
    score = choice.score_chat if args.chat else choice.score_completion
    r = score(model, tok, examples, args.batch_size)
    # the built-in set's tasks, each on its own, by the headline metric
    metric, pred = ("acc", "pred") if args.chat else ("acc_norm", "pred_norm")
    right, total = {}, {}
    for ex, p in zip(examples, r["predictions"]):
        if "task" in ex:
            total[ex["task"]] = total.get(ex["task"], 0) + 1
            right[ex["task"]] = right.get(ex["task"], 0) + (p[pred] == p["label"])
    if total:
        r["tasks"] = {task: right[task] / total[task] for task in sorted(total)}
        r["tasks_metric"] = metric
    return r


def evaluate(args):
    model = GPT.load(args.checkpoint, backend=args.backend)
    tok = load_tokenizer(args.tokenizer)
    if args.batch_size is None:
        args.batch_size = loss.rows_per_batch(model.config, model.config.block_size)
    elif args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, found {args.batch_size}")
    if not (args.text or args.shards or args.choice or args.generative):
        args.choice = ["builtin"]
    results = {"checkpoint": args.checkpoint, "params": model.num_parameters, "loss": {}, "choice": {},
               "generative": {}}
    for path in args.text:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if args.max_tokens:
            ids = [tok.eot] + loss.encode_text(tok, text)[:args.max_tokens]
            results["loss"][path] = loss.loss_and_bpb(model, tok, ids, args.batch_size)
        else:
            results["loss"][path] = loss.text_bpb(model, tok, text, args.batch_size)
    for pattern in args.shards:
        results["loss"][pattern] = loss.shards_bpb(model, tok, pattern, args.max_tokens, args.batch_size)
    for name in args.choice:
        results["choice"][name + (" (chat)" if args.chat else "")] = choice_results(model, tok, name, args)
    k = [int(x) for x in args.k.split(",") if x.strip()]
    for path in args.generative:
        prompts, answers = generative.read_tasks(path)
        results["generative"][path] = generative.evaluate_generative(
            model, tok, prompts, generative.exact_match(answers), args.samples, k, args.temperature,
            args.max_new_tokens, seed=args.seed)
    if not args.details:
        for r in list(results["choice"].values()) + list(results["generative"].values()):
            r.pop("predictions", None)
            r.pop("per_prompt", None)
    return results


def format_table(results):
    rows = [("task", "metric", "value", "over")]
    for name, r in results["loss"].items():
        rows.append((name, "loss", f"{r['loss']:.4f}", f"{r['tokens']:,} tokens"))
        rows.append(("", "bits per byte", f"{r['bpb']:.4f}", f"{r['bytes']:,} bytes"))
    for name, r in results["choice"].items():
        for i, metric in enumerate(m for m in ("acc_norm", "acc") if m in r):
            rows.append((name if i == 0 else "", metric, f"{r[metric]:.4f}",
                         f"{r['n']:,} examples (chance {r['chance']:.3f})"))
        for task, acc in r.get("tasks", {}).items():
            rows.append((f"  {task}", r["tasks_metric"], f"{acc:.4f}", ""))
    for name, r in results["generative"].items():
        metrics = [m for m in r if m.startswith("pass@")] + [m for m in ("mean_grade", "greedy") if m in r]
        for i, metric in enumerate(metrics):
            over = f"{r['prompts']} prompts" + ("" if metric == "greedy" else f" x {r['n']} samples")
            rows.append((name if i == 0 else "", metric, f"{r[metric]:.4f}", over))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return f"{results['checkpoint']} ({results['params']:,} parameters)\n" + "\n".join(lines)


def run(args):
    if args.write_builtin:
        examples = builtin_set(args.max_examples)
        builtin.write_jsonl(args.write_builtin, examples)
        print(f"wrote {len(examples)} examples to {args.write_builtin}")
        return 0
    for path in args.text + [c for c in args.choice if c != "builtin"] + args.generative:
        if not os.path.exists(path):
            raise FileNotFoundError(f"not found: {path}")
    results = evaluate(args)
    text = json.dumps(results)
    if args.out:
        atomic_write(args.out, lambda f: f.write((text + "\n").encode("utf-8")))
    sys.stdout.write((text if args.json else format_table(results)) + "\n")
    return 0
