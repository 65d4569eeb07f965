"""`minigpt dpo`: learn from preference pairs directly, with no reward model (dpo.py has the maths).

    minigpt dpo --base runs/sft --data prefs.jsonl --out runs/dpo --beta 0.1

The policy starts as the base (SFT) model and the reference stays that model, frozen: its
log-probabilities of every pair are computed once, before training (as TRL's
precompute_ref_log_probs). Each step takes `batch_size` pairs. Held out: `val_fraction` of the
pairs, never trained on, on which the implicit reward's accuracy is measured; and the replies the
policy writes to the held-out prompts (greedy), scored by the built-in labeller's gold score when
--gold is on (for pairs the simulated labeller made). Ends with one JSON line:
{"dpo_accuracy_before", "dpo_accuracy", "gold_before", "gold_after", ...}.
"""
import json
import math
import os
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from .. import settings
from ..fileio import resolve_model, write_json
from ..inference.generate import generate
from ..model import GPT
from ..model.backend import RuntimeSettings
from ..plot import plot_log
from ..pretrain import checkpoint
from ..pretrain.train import append_log, clip_grad_norm, lr_at, truncate_log
from ..tokenizer import load_tokenizer
from ..tokenizer.chat import IM_END, render_prompt, special_id
from .dpo import dpo_loss, dpo_step, pair_rows, sequence_logps
from .preferences import batch_indices, gold_score
from .train_reward import preference_split


@dataclass
class DPOSettings:
    base: str = None             # the SFT model: a run directory (its newest checkpoint) or a .bin; also the reference
    data: str = None             # preference pairs, TRL's JSONL (default: built-in, sampled from --base, prefgen.py)
    pairs: int = 768             # built-in data: training pairs to sample (held out: pairs / 4, on held-out topics)
    out: str = None              # run directory (default: runs/dpo)
    steps: int = 100             # optimizer steps
    batch_size: int = 8          # pairs per step
    beta: float = 0.1            # how far from the reference the policy may move (TRL's default)
    lr: float = 1e-4             # peak learning rate
    warmup: int = 10             # steps of linear warmup, then cosine decay to lr / 10
    grad_clip: float = 1.0       # clip the global gradient norm to this
    val_fraction: float = 0.2    # share of the pairs held out
    eval_every: int = 25         # steps between held-out accuracies
    gold: bool = False           # also score greedy replies to the held-out prompts with the built-in gold score
    max_new_tokens: int = 48     # reply length for the gold score
    keep: int = 2                # newest checkpoints to keep
    seed: int = 1337             # pair order and the split

    def __post_init__(self):
        for name in ("steps", "batch_size", "eval_every", "keep", "max_new_tokens", "pairs"):
            settings.check_range(self, name, 1)
        for name in ("warmup", "grad_clip", "seed"):
            settings.check_range(self, name, 0)
        for name in ("lr", "beta"):
            settings.check_range(self, name, 0, lo_open=True)
        settings.check_range(self, "val_fraction", 0, 1, lo_open=True, hi_open=True)


def token_pairs(tok, pairs):
    """Each Pair as (prompt ids ending in the generation prompt, chosen ids, rejected ids); each
    reply ends with <|im_end|>, as SFT taught the model to end."""
    end = special_id(tok, IM_END)
    return [(render_prompt(tok, p.prompt), tok.encode_ordinary(p.chosen) + [end],
             tok.encode_ordinary(p.rejected) + [end]) for p in pairs]


def fit(tpairs, T):
    """Keep the pairs that fit in the context (prompt + reply - 1 <= T); returns (kept, dropped)."""
    kept = [p for p in tpairs if len(p[0]) + max(len(p[1]), len(p[2])) - 1 <= T]
    return kept, len(tpairs) - len(kept)


def implicit_accuracy(model, tpairs, ref_logp, beta, T, batch=16):
    wins = []
    for i in range(0, len(tpairs), batch):
        part = tpairs[i:i + batch]
        x, y = pair_rows(part, T)
        P = len(part)
        ref = np.concatenate([ref_logp[0][i:i + P], ref_logp[1][i:i + P]])
        wins.append(dpo_loss(sequence_logps(model, x, y), ref, beta)[2] * P)
    return float(sum(wins) / len(tpairs))


def reference_logps(model, tpairs, T, batch=16):
    """(chosen, rejected) log-probs under the model, (P,) each."""
    c, r = [], []
    for i in range(0, len(tpairs), batch):
        part = tpairs[i:i + batch]
        x, y = pair_rows(part, T)
        lp = sequence_logps(model, x, y)
        c.append(lp[:len(part)])
        r.append(lp[len(part):])
    return np.concatenate(c), np.concatenate(r)


def mean_gold(model, tok, pairs, max_new_tokens):
    """Mean and spread of the gold score of the model's greedy replies to the pairs' prompts."""
    end = special_id(tok, IM_END)
    prompts = [render_prompt(tok, p.prompt) for p in pairs]
    replies = generate(model, prompts, max_new_tokens, temperature=0, stop=[end])
    scores = [gold_score(p.prompt[-1]["content"], tok.decode(ids)) for p, ids in zip(pairs, replies)]
    return float(np.mean(scores)), float(np.std(scores)), [tok.decode(ids) for ids in replies[:3]]


def add_arguments(p):
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    settings.add_arguments(p, DPOSettings, RuntimeSettings)


def run(args):
    s = settings.build(DPOSettings, settings.from_args(args, DPOSettings))
    rt = settings.build(RuntimeSettings, settings.from_args(args, RuntimeSettings))
    if not s.base:
        raise ValueError("give --base (an SFT run directory or checkpoint) and --data (preference JSONL) or none (built-in)")
    print(json.dumps(train_dpo(s, rt, resume=args.resume)))
    return 0


def train_dpo(s, rt, resume=False, log=print):
    ckpt, tok_path = resolve_model(s.base)
    if tok_path is None:
        raise FileNotFoundError(f"{s.base}: no tokenizer.model beside the checkpoint: give an SFT run directory")
    tok = load_tokenizer(tok_path)
    train_pairs, val_pairs, skipped = preference_split(s, rt, ckpt, tok, s.out or os.path.join("runs", "dpo"), log)
    reference = GPT.load(ckpt, backend=rt.backend, threads=rt.threads)
    T = reference.config.block_size
    train, dropped = fit(token_pairs(tok, train_pairs), T)
    val, dropped_val = fit(token_pairs(tok, val_pairs), T)
    if len(train) < 2 or not val:
        raise ValueError(f"{s.data or 'built-in pairs'}: {len(train)} train and {len(val)} held-out pairs fit the context of {T} "
                         f"tokens ({skipped} lines skipped): too few")
    ref_train, ref_val = reference_logps(reference, train, T), reference_logps(reference, val, T)
    run_dir = s.out or os.path.join("runs", "dpo")
    resumed = checkpoint.open_run(run_dir, resume)
    if resumed:
        info, m, v = resumed
        model = GPT.load(os.path.join(run_dir, info["model_file"]), backend=rt.backend, threads=rt.threads)
        checkpoint.set_moments(model, m, v)
        start, batches = info["step"], info["batches"]
        truncate_log(os.path.join(run_dir, "log.jsonl"), start)
    else:
        model = GPT.load(ckpt, backend=rt.backend, threads=rt.threads)
        start, batches = 0, 0
        tok.save(os.path.join(run_dir, "tokenizer.model"))
        write_json(os.path.join(run_dir, "settings.json"), settings.as_dict(s, rt))
    log(f"DPO: {model.num_parameters:,} parameters, beta {s.beta}; {len(train)} train pairs, {len(val)} held out "
        f"({dropped + dropped_val} longer than the context dropped, {skipped} lines skipped)")
    summary = {"dpo_accuracy_before": implicit_accuracy(model, val, ref_val, s.beta, T) if start == 0 else None}
    if s.gold and start == 0:
        summary["gold_before"], summary["gold_before_std"], _ = mean_gold(model, tok, val_pairs, s.max_new_tokens)
    log_path = os.path.join(run_dir, "log.jsonl")
    bar = tqdm(total=s.steps, initial=start, unit="step", dynamic_ncols=True, disable=None)
    for step in range(start, s.steps):
        if step % s.eval_every == 0 and step > start:
            acc = implicit_accuracy(model, val, ref_val, s.beta, T)
            append_log(log_path, {"step": step, "val_accuracy": acc})
            bar.write(f"step {step}: held-out implicit-reward accuracy {acc:.3f}")
        pick = batch_indices(s.seed, batches, len(train), s.batch_size)
        batches += 1
        x, y = pair_rows([train[i] for i in pick], T)
        ref = np.concatenate([ref_train[0][pick], ref_train[1][pick]])
        loss, acc = dpo_step(model, x, y, ref, s.beta)
        if not math.isfinite(loss):
            raise RuntimeError(f"the loss is {loss} at step {step}: lower --lr (now {s.lr})")
        norm = clip_grad_norm(model.grads_memory, s.grad_clip)
        lr = lr_at(step, s.lr, s.lr / 10, s.warmup, s.steps)
        model.update(lr, 0.9, 0.95, 1e-8, 0.0, t=step + 1)
        append_log(log_path, {"step": step, "loss": loss, "train_accuracy": acc, "lr": lr, "norm": norm})
        bar.set_postfix(loss=f"{loss:.4f}", acc=f"{acc:.2f}", refresh=False)
        bar.update(1)
        if (step + 1) % s.eval_every == 0 or step + 1 == s.steps:
            info = {"settings": settings.as_dict(s, rt), "batches": batches}
            checkpoint.save(run_dir, step + 1, model, info, keep=s.keep)
    bar.close()
    summary["dpo_accuracy"] = implicit_accuracy(model, val, ref_val, s.beta, T)
    append_log(log_path, {"step": s.steps, "val_accuracy": summary["dpo_accuracy"]})
    if s.gold:
        summary["gold_after"], summary["gold_after_std"], samples = mean_gold(model, tok, val_pairs, s.max_new_tokens)
        log("held-out replies after DPO:\n" + "\n".join(f"  {t!r}" for t in samples))
    plot_log(log_path, os.path.join(run_dir, "loss.png"))
    summary.update(val_pairs=len(val), train_pairs=len(train), steps=s.steps,
                   checkpoint=checkpoint.paths(run_dir, s.steps)[0])
    return summary
