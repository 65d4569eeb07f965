"""`minigpt eval`: a model's figures on text, shards, multiple choice and generative tasks.

    minigpt eval runs/NAME                                         # the built-in choice set
    minigpt eval runs/NAME --text book.txt --shards 'data/val_*.bin'     # loss and bits per byte
    minigpt eval runs/NAME --choice hellaswag_val.jsonl --choice hellaswag_val.bin   # llm.c's scoring
    minigpt eval runs/NAME --choice builtin --chat                 # a chat model: answer letters
    minigpt eval runs/NAME --generative tasks.jsonl --samples 16 --k 1,4,16   # pass@k, greedy exact match
    minigpt eval ckpt_000300.bin --tokenizer tokenizer.model       # a checkpoint file and its tokenizer

A run directory means its newest checkpoint and its tokenizer. A table, or with --json one JSON
object (--out FILE writes it too; --details adds every example's prediction and every sample).
"""
import json
import os
import sys
from dataclasses import dataclass

from .. import settings
from ..fileio import atomic_write, resolve_model
from ..inference.sampling import SamplingSettings
from ..model import GPT
from ..model.backend import RuntimeSettings, set_threads
from ..tokenizer import load_tokenizer
from . import builtin, choice, generative, loss


@dataclass
class EvalSettings:
    max_tokens: int = None      # score at most this many tokens of each text file or shard
    chat: bool = False          # multiple choice as a chat: the answer letters' logits after the chat template
    max_examples: int = None    # the first N examples of each choice file (builtin: N/2 per task; default 100 per task)
    samples: int = 8            # samples per prompt for pass@k
    k: str = "1"                # comma-separated k of pass@k, each at most --samples
    batch_size: int = None      # rows per forward pass (default: as many as fit 2 GB of activations, at most 64)
    write_builtin: str = None   # write the built-in choice set to this JSONL file and stop
    json: bool = False          # print one JSON object instead of the table
    out: str = None             # also write the JSON to this file
    details: bool = False       # keep every example's prediction and every sample in the JSON

    def __post_init__(self):
        for name in ("max_tokens", "max_examples", "samples", "batch_size"):
            settings.check_range(self, name, 1)
        ks = self.ks()
        if not ks or any(not 1 <= k <= self.samples for k in ks):
            raise ValueError(f"k must be comma-separated ints in [1, samples={self.samples}], found {self.k!r}")

    def ks(self):
        try:
            return [int(x) for x in self.k.split(",") if x.strip()]
        except ValueError:
            raise ValueError(f"k must be comma-separated ints, found {self.k!r}") from None


CLASSES = (EvalSettings, SamplingSettings, RuntimeSettings)


def add_arguments(p):
    p.add_argument("model", nargs="?", help="a run directory (its newest checkpoint) or a checkpoint .bin")
    p.add_argument("--tokenizer", help="tokenizer file (default: the run directory's tokenizer.model)")
    p.add_argument("--text", action="append", default=[], metavar="FILE", help="a UTF-8 text file: loss and bpb")
    p.add_argument("--shards", action="append", default=[], metavar="GLOB", help="llm.c token shards: loss and bpb")
    p.add_argument("--choice", action="append", default=[], metavar="FILE",
                   help="multiple choice: HellaSwag-style JSONL, llm.c's eval .bin, or 'builtin' "
                        "(the default when no task is given)")
    p.add_argument("--generative", action="append", default=[], metavar="FILE",
                   help='JSONL of {"prompt" or "messages", "answer"}: sampled pass@k and greedy exact match')
    settings.add_arguments(p, *CLASSES)


def open_model(path, tokenizer, rt):
    """(GPT, tokenizer) for a run directory or a checkpoint; a tokenizer with other ids than the
    model's vocabulary is refused before anything runs."""
    ckpt, run_tok = resolve_model(path)
    model = GPT.load(ckpt, backend=rt.backend, threads=rt.threads)
    tok_path = tokenizer or run_tok
    if tok_path is None:
        raise ValueError(f"{path}: no tokenizer.model beside the checkpoint: give --tokenizer FILE")
    tok = load_tokenizer(tok_path)
    if tok.n_vocab != model.config.vocab_size:
        raise ValueError(f"{tok_path}: the tokenizer has {tok.n_vocab} ids but the model {ckpt} has a "
                         f"vocabulary of {model.config.vocab_size}: they do not belong together")
    return model, tok, ckpt


def builtin_set(max_examples):
    return builtin.builtin_choices(n=max(1, max_examples // 2) if max_examples else 100)


def choice_results(model, tok, name, s):
    examples = builtin_set(s.max_examples) if name == "builtin" else choice.read_examples(name)
    if s.max_examples and name != "builtin":
        examples = examples[:s.max_examples]
    score = choice.score_chat if s.chat else choice.score_completion
    r = score(model, tok, examples, s.batch_size)
    # the built-in set's tasks, each on its own, by the headline metric
    metric, pred = ("acc", "pred") if s.chat else ("acc_norm", "pred_norm")
    right, total = {}, {}
    for ex, p in zip(examples, r["predictions"]):
        if "task" in ex:
            total[ex["task"]] = total.get(ex["task"], 0) + 1
            right[ex["task"]] = right.get(ex["task"], 0) + (p[pred] == p["label"])
    if total:
        r["tasks"] = {task: right[task] / total[task] for task in sorted(total)}
        r["tasks_metric"] = metric
    return r


def evaluate(args, s, gen, rt):
    """Every task the arguments name, as one dict of results."""
    model, tok, ckpt = open_model(args.model, args.tokenizer, rt)
    s.batch_size = s.batch_size or loss.rows_per_batch(model.config, model.config.block_size)
    choices = args.choice or ([] if args.text or args.shards or args.generative else ["builtin"])
    results = {"model": ckpt, "params": model.num_parameters, "loss": {}, "choice": {}, "generative": {}}
    for path in args.text:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if s.max_tokens:
            ids = [tok.eot] + loss.encode_text(tok, text)[:s.max_tokens]
            results["loss"][path] = loss.loss_and_bpb(model, tok, ids, s.batch_size)
        else:
            results["loss"][path] = loss.text_bpb(model, tok, text, s.batch_size)
    for pattern in args.shards:
        results["loss"][pattern] = loss.shards_bpb(model, tok, pattern, s.max_tokens, s.batch_size)
    for name in choices:
        results["choice"][name + (" (chat)" if s.chat else "")] = choice_results(model, tok, name, s)
    for path in args.generative:
        prompts, answers = generative.read_tasks(path)
        results["generative"][path] = generative.evaluate_generative(
            model, tok, prompts, generative.exact_match(answers), s.samples, s.ks(), gen.temperature,
            gen.max_new_tokens, gen.top_k, gen.top_p, gen.seed)
    if not s.details:
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
    return f"{results['model']} ({results['params']:,} parameters)\n" + "\n".join(lines)


def run(args):
    s, gen, rt = (settings.build(cls, settings.from_args(args, cls)) for cls in CLASSES)
    if s.write_builtin:
        examples = builtin_set(s.max_examples)
        builtin.write_jsonl(s.write_builtin, examples)
        print(f"wrote {len(examples)} examples to {s.write_builtin}")
        return 0
    if args.model is None:
        raise ValueError("name the model: a run directory or a checkpoint .bin")
    for path in args.text + [c for c in args.choice if c != "builtin"] + args.generative:
        if not os.path.exists(path):
            raise FileNotFoundError(f"not found: {path}")
    if rt.threads:
        set_threads(rt.threads)
    results = evaluate(args, s, gen, rt)
    text = json.dumps(results)
    if s.out:
        atomic_write(s.out, lambda f: f.write((text + "\n").encode("utf-8")))
    sys.stdout.write((text if s.json else format_table(results)) + "\n")
    return 0
