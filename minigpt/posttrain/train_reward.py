"""`minigpt reward`: train a reward model on preference pairs (the first half of RLHF).

    minigpt reward --base runs/sft --data prefs.jsonl --out runs/reward

The trunk starts as the base (SFT) model; the head starts at zero, so every reply scores the same
at first (held-out accuracy 0.5). Each step takes `batch_size` pairs, scores the chosen and the
rejected conversation in one (2P, T) batch, and follows the Bradley-Terry gradient (reward.py).
Schedule, clipping, AdamW, checkpoints that resume exactly, log.jsonl and the progress bar are
pretraining's (pretrain/train.py, pretrain/checkpoint.py). Held out: `val_fraction` of the pairs,
never trained on; accuracy = share of those pairs the model ranks as the file does. The run ends
with one JSON line: {"rm_accuracy": ..., "rm_accuracy_before": ..., "val_pairs": ...}.
"""
import json
import math
import os
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from .. import settings
from ..fileio import resolve_model, write_json
from ..model import GPT
from ..model.backend import RuntimeSettings
from ..plot import plot_log
from ..pretrain import checkpoint
from ..pretrain.train import append_log, lr_at, truncate_log
from ..tokenizer import load_tokenizer
from ..tokenizer.chat import IM_END, render, special_id
from .prefgen import make_preferences
from .preferences import batch_indices, gold_agreement, gold_score, read_preferences, write_preferences
from .reward import RewardModel, bradley_terry, head_path


@dataclass
class RewardSettings:
    base: str = None             # the model to start from: a run directory (its newest checkpoint) or a .bin
    data: str = None             # preference pairs, TRL's JSONL (default: built-in, sampled from --base, prefgen.py)
    pairs: int = 768             # built-in data: training pairs to sample (held out: pairs / 4, on held-out topics)
    max_new_tokens: int = 48     # built-in data: longest sampled reply
    out: str = None              # run directory (default: runs/reward)
    steps: int = 200             # optimizer steps
    batch_size: int = 16         # pairs per step
    lr: float = 3e-4             # peak learning rate (the head and the trunk)
    warmup: int = 10             # steps of linear warmup, then cosine decay to lr / 10
    weight_decay: float = 0.0    # AdamW's weight decay on the matrices
    grad_clip: float = 1.0       # clip the global gradient norm (trunk and head together) to this
    val_fraction: float = 0.2    # share of the pairs held out for accuracy
    eval_every: int = 50         # steps between held-out accuracies
    keep: int = 2                # newest checkpoints to keep
    seed: int = 1337             # pair order and the train / val split

    def __post_init__(self):
        for name in ("steps", "batch_size", "eval_every", "keep", "pairs", "max_new_tokens"):
            settings.check_range(self, name, 1)
        for name in ("warmup", "weight_decay", "grad_clip", "seed"):
            settings.check_range(self, name, 0)
        settings.check_range(self, "lr", 0, lo_open=True)
        settings.check_range(self, "val_fraction", 0, 1, lo_open=True, hi_open=True)


def conversation_rows(tok, pairs, T):
    """Each pair as two token rows (the whole conversation with the chosen, then with the rejected
    reply, ending at its <|im_end|>), padded to T: (x (2P, T), lengths (2P,)). Conversations longer
    than T are cut from the left (the reply and its end survive)."""
    end = special_id(tok, IM_END)
    rows = []
    for side in ("chosen", "rejected"):
        for p in pairs:
            ids, _ = render(tok, p.prompt + [{"role": "assistant", "content": getattr(p, side)}])
            assert ids[-1] == end
            rows.append(ids[-T:])
    x = np.full((len(rows), T), end, np.int64)
    for i, ids in enumerate(rows):
        x[i, :len(ids)] = ids
    return x, np.array([len(r) for r in rows])


def accuracy(rm, tok, pairs, T, batch=32):
    """Share of pairs whose chosen reply the model scores higher (a tie counts half)."""
    if not pairs:
        return float("nan")
    wins = []
    for i in range(0, len(pairs), batch):
        x, lengths = conversation_rows(tok, pairs[i:i + batch], T)
        r = rm.forward(x, lengths)
        P = len(r) // 2
        wins += list((r[:P] > r[P:]) + 0.5 * (r[:P] == r[P:]))
    return float(np.mean(wins))


def clip_all(arrays, max_norm):
    """clip_grad_norm over several gradient arrays as one vector; returns the norm before clipping."""
    norm = math.sqrt(sum(float(np.square(a, dtype=np.float64).sum()) for a in arrays))
    if max_norm and norm > max_norm:
        for a in arrays:
            a *= a.dtype.type(max_norm / (norm + 1e-6))
    return norm


def add_arguments(p):
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    settings.add_arguments(p, RewardSettings, RuntimeSettings)


def run(args):
    s = settings.build(RewardSettings, settings.from_args(args, RewardSettings))
    rt = settings.build(RuntimeSettings, settings.from_args(args, RuntimeSettings))
    if not s.base:
        raise ValueError("give --base (an SFT run directory or checkpoint) and --data (preference JSONL) or none (built-in)")
    summary = train_reward(s, rt, resume=args.resume)
    print(json.dumps(summary))
    return 0


def preference_split(s, rt, ckpt, tok, run_dir, log=print):
    """(train pairs, held-out pairs, skipped lines). From --data: a seeded val_fraction held out. Without:
    built-in pairs sampled from the base (prefgen.py), held out = pairs on held-out topics, both written
    once to RUN/prefs.jsonl and RUN/prefs_val.jsonl (a resumed run reads them back)."""
    if s.data:
        pairs, skipped = read_preferences(s.data)
        if len(pairs) < 4:
            raise ValueError(f"{s.data}: {len(pairs)} readable pairs ({skipped} skipped): too few to train on")
        order = np.random.default_rng(s.seed).permutation(len(pairs))
        n_val = max(1, int(len(pairs) * s.val_fraction))
        return [pairs[i] for i in order[n_val:]], [pairs[i] for i in order[:n_val]], skipped
    paths = [os.path.join(run_dir, f) for f in ("prefs.jsonl", "prefs_val.jsonl")]
    if not all(os.path.exists(p) for p in paths):
        base = GPT.load(ckpt, backend=rt.backend, threads=rt.threads)
        log(f"built-in preferences: sampling {s.pairs} + {s.pairs // 4} pairs from {ckpt}")
        for path, n, split in zip(paths, (s.pairs, max(4, s.pairs // 4)), ("train", "test")):
            os.makedirs(run_dir, exist_ok=True)
            write_preferences(path, make_preferences(base, tok, n, s.max_new_tokens, s.seed, split=split))
    (train, _), (val, _) = (read_preferences(p, strict=True) for p in paths)
    return train, val, 0


def gold_accuracy(rm, tok, pairs, T, batch=32):
    """Share of pairs the model orders as gold_score does (pairs gold scores equal are left out):
    how well the reward model recovered what the labeller's noise hides."""
    r = []
    for i in range(0, len(pairs), batch):
        x, lengths = conversation_rows(tok, pairs[i:i + batch], T)
        s = rm.forward(x, lengths).astype(np.float64)
        r += list(s[:len(s) // 2] - s[len(s) // 2:])
    d = np.array([gold_score(p.prompt[-1]["content"], p.chosen) - gold_score(p.prompt[-1]["content"], p.rejected)
                  for p in pairs])
    keep = d != 0
    return float(np.mean(np.sign(np.array(r)[keep]) == np.sign(d[keep]))) if keep.any() else float("nan")


def train_reward(s, rt, resume=False, log=print):
    ckpt, tok_path = resolve_model(s.base)
    if tok_path is None:
        raise FileNotFoundError(f"{s.base}: no tokenizer.model beside the checkpoint: give an SFT run directory")
    tok = load_tokenizer(tok_path)
    run_dir = s.out or os.path.join("runs", "reward")
    train, val, skipped = preference_split(s, rt, ckpt, tok, run_dir, log)
    resumed = checkpoint.open_run(run_dir, resume)
    if resumed:
        info, m, v = resumed
        rm = RewardModel.load(os.path.join(run_dir, info["model_file"]), backend=rt.backend)
        checkpoint.set_moments(rm.model, m, v)
        rm.m, rm.v = (np.array(info["head_moments"][k], rm.w.dtype) for k in ("m", "v"))
        start, batches = info["step"], info["batches"]
        truncate_log(os.path.join(run_dir, "log.jsonl"), start)
        log(f"resuming {run_dir} at step {start}")
    else:
        rm = RewardModel(GPT.load(ckpt, backend=rt.backend, threads=rt.threads))
        start, batches = 0, 0
        tok.save(os.path.join(run_dir, "tokenizer.model"))
        write_json(os.path.join(run_dir, "settings.json"), settings.as_dict(s, rt))
    T = rm.model.config.block_size
    log(f"reward model: {rm.model.num_parameters:,} trunk parameters + a head of {rm.w.size + 1}; "
        f"{len(train)} train pairs, {len(val)} held out ({skipped} lines skipped)")
    before = accuracy(rm, tok, val, T) if start == 0 else None
    log_path = os.path.join(run_dir, "log.jsonl")
    acc = before
    bar = tqdm(total=s.steps, initial=start, unit="step", dynamic_ncols=True, disable=None)
    for step in range(start, s.steps):
        if step % s.eval_every == 0 and step > start:
            acc = accuracy(rm, tok, val, T)
            append_log(log_path, {"step": step, "val_accuracy": acc})
            bar.write(f"step {step}: held-out accuracy {acc:.3f}")
        # the pairs of this step: a fixed function of (seed, batch number), so a resume continues exactly
        pick = batch_indices(s.seed, batches, len(train), s.batch_size)
        batches += 1
        x, lengths = conversation_rows(tok, [train[i] for i in pick], T)
        rm.zero_grad()
        r = rm.forward(x, lengths)
        P = len(r) // 2
        loss, dr_c, dr_r, train_acc = bradley_terry(r[:P], r[P:])
        if not math.isfinite(loss):
            raise RuntimeError(f"the loss is {loss} at step {step}: lower --lr (now {s.lr})")
        rm.backward(np.concatenate([dr_c, dr_r]))
        norm = clip_all([rm.model.grads_memory, rm.dw, rm.db], s.grad_clip)
        lr = lr_at(step, s.lr, s.lr / 10, s.warmup, s.steps)
        rm.update(lr, 0.9, 0.95, 1e-8, s.weight_decay, t=step + 1)
        append_log(log_path, {"step": step, "loss": loss, "train_accuracy": train_acc, "lr": lr, "norm": norm})
        bar.set_postfix(loss=f"{loss:.4f}", acc=f"{train_acc:.2f}", refresh=False)
        bar.update(1)
        if (step + 1) % s.eval_every == 0 or step + 1 == s.steps:
            info = {"settings": settings.as_dict(s, rt), "batches": batches,
                    "head_moments": {"m": rm.m.tolist(), "v": rm.v.tolist()}}
            model_path, _ = checkpoint.save(run_dir, step + 1, rm.model, info, keep=s.keep)
            rm.save_head(model_path)
            for old in os.listdir(run_dir):  # heads of checkpoints that `keep` removed
                if old.endswith(".head") and not os.path.exists(os.path.join(run_dir, old[:-5] + ".bin")):
                    os.unlink(os.path.join(run_dir, old))
    bar.close()
    acc = accuracy(rm, tok, val, T)
    append_log(log_path, {"step": s.steps, "val_accuracy": acc})
    plot_log(log_path, os.path.join(run_dir, "loss.png"))
    final = checkpoint.paths(run_dir, s.steps)[0]
    log(f"reward model: {final} (+ {os.path.basename(head_path(final))}); held-out accuracy "
        f"{'' if before is None else f'{before:.3f} -> '}{acc:.3f}")
    gold = gold_accuracy(rm, tok, val, T)
    log(f"held-out: the labeller agrees with gold on {gold_agreement(val):.3f} of pairs, the reward model on {gold:.3f}")
    return {"rm_accuracy": acc, "rm_accuracy_before": before, "gold_agreement": gold,
            "labeller_gold_agreement": gold_agreement(val), "val_pairs": len(val), "train_pairs": len(train),
            "steps": s.steps, "checkpoint": final}
