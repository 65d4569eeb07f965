"""`minigpt sft`: supervised fine-tuning, a pretrained model to a chat model.

    minigpt sft                                  # the newest `minigpt train` run, the built-in conversations
    minigpt sft --base runs/NAME --data chats.jsonl --out runs/NAME-sft --steps 1000
    minigpt sft --resume --out runs/NAME-sft     # continues exactly, as `minigpt train --resume`

1. The base: a pretraining run's newest checkpoint (or a checkpoint) and the run's tokenizer. The
   chat (and tool) special tokens are added to the tokenizer and the model's vocabulary grows to
   match (minigpt/model/vocab.py: new rows are the mean embedding, old logits unchanged).
2. The data: conversations (messages JSONL, or the built-in set, generated for this model's own
   config), rendered with the chat template and packed into rows of block_size with their loss
   masks (packing.py): the loss is on the assistant's replies only.
3. The loop is pretraining's (minigpt/pretrain/train.py: AdamW, schedule, clipping, accumulation,
   resumable checkpoints, log.jsonl, loss curve); validation is the masked loss on the test split
   plus a few held-out prompts answered greedily and graded (chat_eval.py), at every evaluation.
4. At the end, --graded held-out prompts are answered and graded per task: eval.json.

The run directory holds the checkpoints, tokenizer.model (with the chat tokens), tokenizer.bin
(version 3: csrc/run.c encodes and chats with it), train.jsonl / test.jsonl, sft.json, eval.json.
"""
import json
import os
import sys
from dataclasses import dataclass

import numpy as np

from .. import settings
from ..fileio import TOKENIZER_FILE, read_checkpoint, resolve_model, write_json
from ..model import GPT
from ..model.backend import RuntimeSettings
from ..model.vocab import grow_vocab
from ..plot import plot_log
from ..pretrain import checkpoint
from ..pretrain.train import Diverged, TrainSettings, settings_from, start_run, train
from ..tokenizer import load_tokenizer
from ..tokenizer.chat import add_chat_tokens
from ..tokenizer.files import write_llmc
from . import chat_eval
from .builtin_chats import builtin_conversations, model_facts
from .conversations import read_jsonl, write_jsonl
from .packing import PackedLoader, tokenize


@dataclass
class SFTSettings(TrainSettings):
    base: str = None             # a `minigpt train` run directory or checkpoint (default: the newest pretraining run under runs/)
    tokenizer: str = None        # the base's tokenizer (default: the base run directory's tokenizer.model)
    data: str = None             # messages JSONL file(s), comma-separated (default: the built-in conversation set)
    val_fraction: float = 0.05   # share of --data conversations held out for validation
    too_long: str = "drop"       # conversations longer than block_size: drop | truncate (counted either way)
    steps: int = 1500            # optimizer steps in all (tiny preset: about 20 minutes on 2 cores)
    lr: float = 1e-3             # peak learning rate
    warmup: int = 20             # steps of linear warmup
    weight_decay: float = 0.0    # AdamW's decoupled weight decay (none: fine-tuning starts from trained weights)
    graded_every: int = 60       # held-out prompts answered and graded at each evaluation (0: none)
    graded: int = 300            # held-out prompts answered and graded at the end (0: none)
    reply_tokens: int = 64       # the longest graded reply

    CHOICES = {**TrainSettings.CHOICES, "too_long": ("drop", "truncate")}

    def __post_init__(self):
        super().__post_init__()
        settings.check_choice(self, "too_long")
        settings.check_range(self, "val_fraction", 0, 1, lo_open=True, hi_open=True)
        for name in ("graded_every", "graded", "reply_tokens"):
            settings.check_range(self, name, 0)


CLASSES = (SFTSettings, RuntimeSettings)
# pretraining's settings that mean nothing here: the model is the base's, batches are packed rows
NOT_FOR_SFT = ("vocab_size", "model", "n_layer", "n_head", "n_embd", "block_size", "seq_len", "sampling",
               "dropout", "sample_every")


# --------------------------------------------------------------------------------------------------
# the base and the data

def is_sft_run(d):
    return os.path.exists(os.path.join(d, "sft.json"))


def newest_pretraining_run(root="runs"):
    runs = [os.path.join(root, d) for d in (os.listdir(root) if os.path.isdir(root) else [])]
    runs = [d for d in runs if os.path.isdir(d) and checkpoint.list_steps(d) and not is_sft_run(d)]
    if not runs:
        raise FileNotFoundError(f"no pretraining run under {root}/: run `minigpt train` first, or give --base")
    return max(runs, key=os.path.getmtime)


def open_base(s, rt):
    """(base GPT, its tokenizer) from --base / --tokenizer; they must belong together."""
    ckpt, run_tok = resolve_model(s.base or newest_pretraining_run())
    tok_path = s.tokenizer or run_tok
    if not tok_path or not os.path.exists(tok_path):
        raise FileNotFoundError(f"{ckpt}: no tokenizer.model beside it: give --tokenizer")
    tok = load_tokenizer(tok_path)
    if not hasattr(tok, "add_special_tokens"):
        raise ValueError(f"{tok_path}: an llm.c decode table cannot take new tokens: give minigpt's tokenizer file")
    base = GPT.load(ckpt, backend=rt.backend, threads=rt.threads)
    if tok.n_vocab != base.config.vocab_size:
        raise ValueError(f"{tok_path} has {tok.n_vocab} ids but {ckpt} has vocab_size {base.config.vocab_size}: "
                         f"not the base's tokenizer")
    s.base, s.tokenizer = ckpt, tok_path
    return base, tok


def conversations(s, config):
    """(train, test) conversation lists: --data files split by --val-fraction, or the built-in set."""
    if not s.data:
        return builtin_conversations(model_facts(config), seed=s.seed)
    paths = [p.strip() for p in s.data.split(",") if p.strip()]
    convs, skipped = read_jsonl(paths)
    if skipped:
        print(f"skipped {skipped} bad lines of {', '.join(paths)}")
    held = np.random.default_rng(s.seed).random(len(convs)) < s.val_fraction
    train_set = [c for c, h in zip(convs, held) if not h]
    test_set = [c for c, h in zip(convs, held) if h]
    if not train_set or not test_set:
        raise ValueError(f"{len(convs)} conversations cannot make both a train and a test split "
                         f"with --val-fraction {s.val_fraction}")
    return train_set, test_set


# --------------------------------------------------------------------------------------------------
# the subcommand

def add_arguments(p):
    p.add_argument("--config", help="settings file: JSON or nanoGPT-style `name = value` lines")
    p.add_argument("--resume", nargs="?", const="auto", default=None,
                   help="continue an SFT run: its directory or ckpt_*.state (bare --resume: --out)")
    settings.add_arguments(p, *CLASSES, skip=NOT_FOR_SFT)


def run(args):
    try:
        return run_sft(args)
    except Diverged as e:
        print(f"minigpt sft: {e}", file=sys.stderr)
        return 1


def run_sft(args):
    (s, rt), resume = settings_from(args, CLASSES)
    if resume:
        run_dir = s.out
        tok = load_tokenizer(os.path.join(run_dir, TOKENIZER_FILE))
        cfg = read_checkpoint(os.path.join(run_dir, resume[1]["model_file"]))[0]
        run_dir, model, start = start_run(s, cfg, rt, resume, None)
    else:
        base, tok = open_base(s, rt)
        add_chat_tokens(tok)
        cfg, params = grow_vocab(base.config, base.params_memory, tok.n_vocab)
        del base
        run_dir, model, start = start_run(s, cfg, rt, None, tok)
        model.params_memory[:] = params  # the base's weights, grown (start_run made a fresh model of cfg)
        write_llmc(tok, os.path.join(run_dir, "tokenizer.bin"), version=3)  # over start_run's v2: run.c chats
    s.seq_len = cfg.block_size
    saved = settings.as_dict(s, rt)
    train_set, test_set = conversations(s, cfg)
    train_loader = PackedLoader(tokenize(tok, train_set), s.batch_size, s.seq_len, seed=s.seed, too_long=s.too_long)
    val_loader = PackedLoader(tokenize(tok, test_set), s.batch_size, s.seq_len, seed=None, too_long=s.too_long)
    summary = {"base": s.base, "conversations": len(train_set), "test": len(test_set),
               "packing": train_loader.efficiency, "too_long": train_loader.too_long, "too_long_rule": s.too_long}
    if resume:
        train_loader.load_state(resume[1]["loader"])
    else:
        write_json(os.path.join(run_dir, "settings.json"), saved)
        write_jsonl(os.path.join(run_dir, "train.jsonl"), train_set)
        write_jsonl(os.path.join(run_dir, "test.jsonl"), test_set)
        write_json(os.path.join(run_dir, "sft.json"), summary)
    print(f"SFT of {s.base}: L={cfg.n_layer} C={cfg.n_embd} T={cfg.block_size} V={cfg.vocab_size} (chat tokens "
          f"added), {model.num_parameters:,} parameters, backend {model.backend.name}; {len(train_set)} train / "
          f"{len(test_set)} test conversations packed into {train_loader.num_windows()} rows at "
          f"{100 * train_loader.efficiency:.1f}% real tokens; {train_loader.too_long} longer than the context "
          f"({s.too_long}); run dir {run_dir}")

    probe = chat_eval.held_out(test_set, s.graded_every) if s.graded_every else []

    def graded(step):  # the loop's evaluate_more: a few held-out prompts, answered and graded
        if not probe:
            return {}
        model.training = False
        try:
            g = chat_eval.score(probe, chat_eval.chat_replies(model, tok, probe, s.reply_tokens))["all"]
        finally:
            model.training = True
        return {"graded_accuracy": g["accuracy"], "ends_with_im_end": g["ends_with_im_end"]}

    val_loss = train(model, s, train_loader, val_loader, run_dir, saved, start_step=start, evaluate_more=graded)
    if s.plot:
        png = plot_log(os.path.join(run_dir, "log.jsonl"), os.path.join(run_dir, "loss.png"))
        if png:
            print(f"loss curve: {png}")
    result = None
    if s.graded:
        examples = chat_eval.held_out(test_set, s.graded)
        result = chat_eval.score(examples, chat_eval.chat_replies(model, tok, examples, s.reply_tokens))
        print(f"{len(examples)} held-out prompts, greedy:\n{chat_eval.table({'sft': result})}")
        write_json(os.path.join(run_dir, "eval.json"), result)
    print(f"checkpoint: {checkpoint.paths(run_dir, s.steps)[0]}")
    print(f"talk to it: minigpt chat {run_dir}")
    print(json.dumps({"sft": run_dir, "val_loss": val_loss, "packing": train_loader.efficiency,
                      "too_long": train_loader.too_long, "graded": result}))
    return 0
