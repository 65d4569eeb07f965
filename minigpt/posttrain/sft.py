"""`minigpt sft`: supervised fine-tuning, a pretrained model to a chat model.

    minigpt sft                                  # the newest `minigpt train` run, the built-in conversations
    minigpt sft --base runs/NAME --data chats.jsonl --out runs/NAME-sft --steps 1000
    minigpt sft --resume --out runs/NAME-sft     # continues exactly, as `minigpt train --resume`

1. The base: its newest checkpoint and the tokenizer it was trained with. The chat (and tool)
   special tokens are added to the tokenizer, and the model's vocabulary grows to match
   (minigpt/vocab.py: new rows are the mean embedding, old logits unchanged).
2. The data: conversations (messages JSONL, or the built-in set, generated for this model's own
   config), rendered with the chat template and packed into rows of block_size with their loss
   masks (packing.py): the loss is on the assistant's replies only.
3. The loop is pretraining's (minigpt/train.py: AdamW, schedule, clipping, accumulation, resumable
   checkpoints, log.jsonl, loss curve); validation is the masked loss on the test split.
4. At the end, held-out prompts are answered greedily and graded per task (chat_eval.py).

The run directory holds the checkpoints, tokenizer.model (with the chat tokens), tokenizer.bin
(version 3: csrc/run.c encodes and chats with it), train.jsonl / test.jsonl, eval.json.
"""
import glob
import json
import os
import sys
import time

import numpy as np

from .. import checkpoint
from ..fileio import atomic_write
from ..model import GPT
from ..tokenizer import Tokenizer
from ..tokenizer.chat import add_chat_tokens
from ..tokenizer.files import write_llmc
from ..train import Diverged, truncate_log, train
from ..vocab import grow_model
from . import chat_eval
from .builtin_chats import builtin_conversations, model_facts
from .conversations import read_jsonl, write_jsonl
from .packing import PackedLoader, tokenize

DEFAULTS = dict(
    base=None, tokenizer=None, data=None, out=None, val_fraction=0.05, too_long="drop",
    steps=800, batch_size=16, grad_accum=1, lr=1e-3, min_lr=None, warmup=20, decay="cosine",
    weight_decay=0.0, beta1=0.9, beta2=0.95, eps=1e-8, grad_clip=1.0,
    eval_every=100, eval_batches=20, checkpoint_every=None, keep=2, graded=300, reply_tokens=64,
    seed=1337, backend=None, threads=None, plot=True,
)
HELP = dict(
    base="a `minigpt train` run directory or a checkpoint (default: the newest pretraining run under runs/)",
    tokenizer="the base's tokenizer (default: the one its run was trained with)",
    data="messages JSONL files (default: the built-in conversation set)",
    val_fraction="share of --data conversations held out for validation",
    too_long="conversations longer than block_size: drop | truncate",
    graded="held-out prompts answered and graded at the end (0: none)",
    reply_tokens="longest graded reply", steps="optimizer steps",
)


# --------------------------------------------------------------------------------------------------
# the base model and its tokenizer

def is_sft_run(d):
    return os.path.exists(os.path.join(d, "sft.json"))


def newest_pretraining_run(root="runs"):
    runs = [os.path.join(root, d) for d in (os.listdir(root) if os.path.isdir(root) else [])]
    runs = [d for d in runs if os.path.isdir(d) and glob.glob(os.path.join(d, "ckpt_*.bin")) and not is_sft_run(d)]
    if not runs:
        raise FileNotFoundError(f"no pretraining run under {root}/: run `minigpt train` first, or give --base")
    return max(runs, key=os.path.getmtime)


def resolve_base(base, tokenizer):
    """(checkpoint path, tokenizer path) of a run directory or a checkpoint file."""
    base = base or newest_pretraining_run()
    if not os.path.exists(base):
        raise FileNotFoundError(f"--base {base}: no such run directory or checkpoint")
    run_dir = base if os.path.isdir(base) else os.path.dirname(base)
    if os.path.isdir(base):
        found = sorted(glob.glob(os.path.join(base, "ckpt_*.bin")))
        if not found:
            raise FileNotFoundError(f"{base}: no ckpt_*.bin checkpoint in this run directory")
        base = found[-1]
    if tokenizer is None:
        settings = os.path.join(run_dir, "settings.json")
        if not os.path.exists(settings):
            raise FileNotFoundError(f"{run_dir} has no settings.json to find the base's tokenizer: give --tokenizer")
        with open(settings) as f:
            s = json.load(f)
        data = s.get("data") or os.path.join("runs", "data", f"builtin-{s.get('vocab_size') or 1024}")
        meta = os.path.join(data, "meta.json")
        if not os.path.exists(meta):
            raise FileNotFoundError(f"the base was trained on {data}, which has no meta.json: give --tokenizer")
        with open(meta) as f:
            tokenizer = os.path.join(data, json.load(f)["tokenizer"])
    return base, tokenizer


# --------------------------------------------------------------------------------------------------
# the data

def conversations(s, config):
    """(train, test) conversation lists: --data files split by --val-fraction, or the built-in set."""
    if not s["data"]:
        return builtin_conversations(model_facts(config), seed=s["seed"])
    convs, skipped = read_jsonl(s["data"])
    if skipped:
        print(f"skipped {skipped} bad lines of {', '.join(s['data'])}")
    rng = np.random.default_rng(s["seed"])
    test = rng.random(len(convs)) < s["val_fraction"]
    return [c for c, t in zip(convs, test) if not t], [c for c, t in zip(convs, test) if t] or convs[:1]


def loaders(tok, train_set, test_set, s, T):
    train_loader = PackedLoader(tokenize(tok, train_set), s["batch_size"], T, seed=s["seed"], too_long=s["too_long"])
    val_loader = PackedLoader(tokenize(tok, test_set), s["batch_size"], T, seed=None, too_long=s["too_long"])
    return train_loader, val_loader


# --------------------------------------------------------------------------------------------------
# the subcommand

def add_arguments(p):
    p.add_argument("--resume", nargs="?", const="auto", default=None,
                   help="continue an SFT run: its directory or ckpt_*.state (bare: --out)")
    for name, default in DEFAULTS.items():
        flag = "--" + name.replace("_", "-")
        if name == "plot":
            p.add_argument("--no-plot", dest="plot", action="store_const", const=False, default=None)
            continue
        if name == "data":
            p.add_argument(flag, nargs="+", default=None, help=HELP["data"])
            continue
        kind = {int: int, float: float}.get(type(default), str)
        kind = float if name == "min_lr" else int if name in ("threads", "checkpoint_every") else kind
        choices = {"decay": ["cosine", "linear", "constant"], "too_long": ["drop", "truncate"],
                   "backend": ["numpy", "c", "cuda"]}.get(name)
        shown = "" if default is None else f" (default {default})"
        p.add_argument(flag, type=kind, default=None, choices=choices, help=(HELP.get(name, "") + shown).strip())


def settings_from(args):
    s = dict(DEFAULTS)
    resume = None
    if args.resume:
        where = args.resume if args.resume != "auto" else args.out
        if not where:
            raise ValueError("--resume needs the run: --resume RUN_DIR or --out RUN_DIR")
        state_path = checkpoint.resolve(where)
        info, m, v = checkpoint.load_state(state_path)
        s.update(info["settings"])
        resume = (state_path, info, m, v)
    s.update({k: v for k, v in vars(args).items() if k in DEFAULTS and v is not None})
    if resume:
        s["out"] = os.path.dirname(resume[0])
    # the pretraining loop's settings that SFT fixes
    s.update(sample_every=None, sample_tokens=0, temperature=0.0, top_k=None, dropout=0.0)
    return s, resume


def run(args):
    try:
        return run_sft(args)
    except (OSError, ValueError) as e:
        print(f"minigpt sft: error: {e}", file=sys.stderr)
        return 2


def run_sft(args):
    s, resume = settings_from(args)
    if resume:
        state_path, info, m, v = resume
        run_dir = s["out"]
        model = GPT.load(os.path.join(run_dir, info["model_file"]), backend=s["backend"], threads=s["threads"])
        checkpoint.set_moments(model, m, v)
        tok = Tokenizer.load(os.path.join(run_dir, "tokenizer.model"))
        start = info["step"]
        truncate_log(os.path.join(run_dir, "log.jsonl"), start)
        print(f"resuming {run_dir} at step {start}")
    else:
        base_path, tok_path = resolve_base(s["base"], s["tokenizer"])
        s["base"], s["tokenizer"] = base_path, tok_path
        run_dir = s["out"] or os.path.join("runs", time.strftime("%Y%m%d-%H%M%S") + "-sft")
        os.makedirs(run_dir, exist_ok=True)
        if checkpoint.list_steps(run_dir):
            raise FileExistsError(f"{run_dir} already holds checkpoints: add --resume, or give another --out")
        s["out"] = run_dir
        base = GPT.load(base_path, backend=s["backend"], threads=s["threads"])
        tok = Tokenizer.load(tok_path)
        if tok.n_vocab != base.config.vocab_size:
            raise ValueError(f"{tok_path} has {tok.n_vocab} ids but {base_path} has vocab_size "
                             f"{base.config.vocab_size}: not the base's tokenizer")
        add_chat_tokens(tok)
        model = grow_model(base, tok.n_vocab, threads=s["threads"])
        tok.save(os.path.join(run_dir, "tokenizer.model"))
        write_llmc(tok, os.path.join(run_dir, "tokenizer.bin"), version=3)
        start = 0
        atomic_write(os.path.join(run_dir, "settings.json"), lambda f: f.write(json.dumps(s, indent=1).encode()))
    cfg = model.config
    s["seq_len"] = cfg.block_size
    train_set, test_set = conversations(s, cfg)
    if not resume:
        write_jsonl(os.path.join(run_dir, "train.jsonl"), train_set)
        write_jsonl(os.path.join(run_dir, "test.jsonl"), test_set)
    train_loader, val_loader = loaders(tok, train_set, test_set, s, cfg.block_size)
    if resume:
        train_loader.load_state(info["loader"])
    summary = {"base": s["base"], "conversations": len(train_set), "test": len(test_set),
               "packing": train_loader.efficiency, "too_long": train_loader.too_long, "too_long_rule": s["too_long"]}
    atomic_write(os.path.join(run_dir, "sft.json"), lambda f: f.write(json.dumps(summary, indent=1).encode()))
    print(f"SFT {cfg.n_layer}L/{cfg.n_embd}C, V={cfg.vocab_size} (chat tokens added), {model.num_parameters:,} "
          f"parameters; {len(train_set)} train / {len(test_set)} test conversations; packed into "
          f"{train_loader.num_windows()} rows of {cfg.block_size + 1} at {100 * train_loader.efficiency:.1f}% real "
          f"tokens; {train_loader.too_long} longer than the context ({s['too_long']}); run dir {run_dir}")
    try:
        val_loss = train(model, s, train_loader, val_loader, run_dir, tok=None, start_step=start)
    except Diverged as e:
        print(f"error: {e}")
        return 1
    if s["plot"]:
        from ..plot import plot_log
        png = plot_log(os.path.join(run_dir, "log.jsonl"), os.path.join(run_dir, "loss.png"))
        if png:
            print(f"loss curve: {png}")
    graded = None
    if s["graded"]:
        examples = chat_eval.held_out(test_set, s["graded"])
        graded = chat_eval.score(examples, chat_eval.chat_replies(model, tok, examples, s["reply_tokens"]))
        print(chat_eval.table({"sft": graded}))
        atomic_write(os.path.join(run_dir, "eval.json"), lambda f: f.write(json.dumps(graded, indent=1).encode()))
    print(f"checkpoint: {checkpoint.paths(run_dir, s['steps'])[0]}")
    print(json.dumps({"sft": run_dir, "val_loss": val_loss, "packing": train_loader.efficiency,
                      "too_long": train_loader.too_long, "graded": graded}))
    return 0
