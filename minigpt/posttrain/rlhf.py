"""`minigpt rlhf`: optimise the SFT policy against a reward model, held back by a KL penalty, stopped early.

    minigpt rlhf --base runs/sft --reward runs/reward --out runs/rlhf

Each step:
    1. take --prompts training requests (prefgen.py's train topics; which: a function of seed and step)
    2. rollout: --group replies to each from the policy at --temperature (rollout.py)
    3. proxy reward: the reward model's score of (request + reply); gold reward: the labeller's
       gold_score of the same reply, LOGGED ONLY (never enters training: it stands for what people
       would say if asked again)
    4. update: advantage = proxy - its group's mean (the RLOO / GRPO baseline), plus the KL penalty
       to the frozen SFT reference per token (k3, coefficient --kl-coef), both as per-token loss
       weights (policy.pg_weights); --epochs > 1 adds PPO's clipped ratio

Every --eval-every steps the held-out requests (topics no training request mentions) are answered
(--eval-samples each, the same seed every time): held-out proxy, gold (mean and spread) and the
per-token KL to the reference. Early stopping: the checkpoint with the best held-out gold is kept as
RUN/best.bin; the run stops once held-out gold has not improved for --patience evaluations or the
held-out KL passes --kl-budget. --kl-coef 0 --no-early-stop is the over-optimisation ablation.
Checkpoints, --resume, log.jsonl and the progress bar are rl.py's; ends with one JSON line.
"""
import json
import math
import os
import time
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from .. import settings
from ..fileio import TOKENIZER_FILE, write_json
from ..model import GPT
from ..model.backend import RuntimeSettings
from ..plot import pyplot, save
from ..pretrain import checkpoint
from ..pretrain.train import append_log, clip_grad_norm, lr_at, settings_from, truncate_log
from ..tokenizer.chat import IM_END
from .policy import group_advantages, k3, pg_weights, token_logprobs, weights_for_model
from .preferences import Pair, gold_score
from .prefgen import requests
from .reward import RewardModel
from .rl import open_base
from .rollout import micro_batches, rollout
from .train_reward import conversation_rows


@dataclass
class RLHFSettings:
    base: str = None             # the SFT run directory (policy start and KL reference)
    reward: str = None           # the reward model: a `minigpt reward` run directory or its ckpt_N.bin (+ .head)
    out: str = None              # run directory (default: runs/rlhf-<date-time>)
    steps: int = 60              # RL steps (rollout + update)
    prompts: int = 8             # requests per step
    group: int = 4               # replies per request (the baseline is the group's mean)
    temperature: float = 1.0     # sampling temperature of rollouts and held-out evaluation
    max_new_tokens: int = 40     # longest reply
    kl_coef: float = 0.05        # weight of the per-token k3 KL penalty to the SFT reference (0: none)
    clip_eps: float = 0.2        # PPO ratio clipping, from the second epoch on
    epochs: int = 1              # updates per batch of rollouts
    lr: float = 1e-4             # learning rate (constant after warmup)
    warmup: int = 5              # steps of linear warmup
    grad_clip: float = 1.0       # clip the global gradient norm (0: off)
    micro_batch: int = 64        # sequences per forward/backward
    eval_every: int = 5          # steps between held-out evaluations
    eval_prompts: int = 64       # held-out requests per evaluation (the first ones)
    eval_samples: int = 2        # replies per held-out request
    early_stop: bool = True      # stop when held-out gold stops improving or KL passes the budget
    patience: int = 3            # evaluations without a better held-out gold before stopping
    kl_budget: float = 0.5       # held-out mean per-token KL (k3, nats) beyond which the run stops
    keep: int = 2                # newest checkpoints to keep
    seed: int = 1337             # requests and samples are functions of (seed, step)
    plot: bool = True            # draw rlhf.png (proxy and gold against step and KL) at the end

    def __post_init__(self):
        for name in ("steps", "prompts", "group", "max_new_tokens", "epochs", "micro_batch", "eval_every",
                     "eval_prompts", "eval_samples", "patience", "keep"):
            settings.check_range(self, name, 1)
        for name in ("temperature", "lr"):
            settings.check_range(self, name, 0, lo_open=True)
        for name in ("kl_coef", "clip_eps", "warmup", "grad_clip", "kl_budget", "seed"):
            settings.check_range(self, name, 0)


CLASSES = (RLHFSettings, RuntimeSettings)


class GoldTask:
    """rollout.py's task interface with gold_score as the grade: Sample.reward is the gold reward."""
    name = "rlhf"

    def grade(self, problem, text):
        return gold_score(problem["messages"][-1]["content"], text)


def proxy_rewards(rm, tok, problems, samples, batch=64):
    """The reward model's score of each sample's whole conversation (request + reply + <|im_end|>)."""
    pairs = [Pair(problems[x.problem]["messages"], x.text, x.text) for x in samples]
    out = []
    for i in range(0, len(pairs), batch):
        x, lengths = conversation_rows(tok, pairs[i:i + batch], rm.model.config.block_size)
        out += list(rm.forward(x[:len(x) // 2], lengths[:len(x) // 2]).astype(np.float64))
    return np.array(out)


def policy_kl(model, ref, samples, end, micro_batch):
    """Mean per-token k3 KL(policy || reference) over the samples' reply tokens."""
    total, n = 0.0, 0
    for x, y, _, _ in micro_batches(samples, end, micro_batch, np.zeros(len(samples))):
        mask = y >= 0
        total += float((k3(token_logprobs(model, x, y), token_logprobs(ref, x, y)) * mask).sum())
        n += int(mask.sum())
    return total / max(n, 1)


def evaluate(model, ref, rm, tok, s, seed):
    """Held-out proxy and gold (mean, spread), per-token KL and reply length; the same seed every time."""
    problems = [{"messages": m} for m in requests("test")[:s.eval_prompts]]
    samples = rollout(model, tok, GoldTask(), problems, s.eval_samples, s.max_new_tokens, s.temperature, seed=seed)
    gold = np.array([x.reward for x in samples])
    proxy = proxy_rewards(rm, tok, problems, samples)
    return {"val_gold": float(gold.mean()), "val_gold_std": float(gold.std()), "val_proxy": float(proxy.mean()),
            "val_kl": policy_kl(model, ref, samples, tok.special_tokens[IM_END], s.micro_batch),
            "val_length": float(np.mean([len(x.reply) for x in samples])), "sample": samples[0].text}


def update(model, ref, samples, adv, s, lr, t0, end):
    """--epochs AdamW steps on policy.py's objective (group advantages, k3 KL to the reference)."""
    batches = micro_batches(samples, end, s.micro_batch, adv)
    masks = [(y >= 0).astype(np.float64) for _, y, _, _ in batches]
    n_tokens = max(1.0, sum(float(m.sum()) for m in masks))
    refs = [token_logprobs(ref, x, y) for x, y, _, _ in batches]
    olds, figures = [None] * len(batches), {}
    for epoch in range(s.epochs):
        model.zero_grad()
        kl = 0.0
        for b, ((x, y, _, a), mask) in enumerate(zip(batches, masks)):
            lp = token_logprobs(model, x, y)
            if epoch == 0:
                olds[b] = lp
            kl += float((k3(lp, refs[b]) * mask).sum()) / n_tokens
            w = pg_weights(lp, a, mask, n_tokens, None if epoch == 0 else olds[b], refs[b],
                           s.clip_eps if epoch > 0 else None, s.kl_coef)
            model.reweight(weights_for_model(w, y))
            model.backward()
        norm = clip_grad_norm(model.grads_memory, s.grad_clip)
        if not math.isfinite(norm):
            raise RuntimeError(f"the gradient norm is {norm}: lower --lr (now {s.lr})")
        model.update(lr, 0.9, 0.95, 1e-8, 0.0, t=t0 + epoch + 1)
        if epoch == 0:
            figures.update(kl=kl, norm=norm)
    return figures


def rlhf_train(model, ref, rm, tok, s, run_dir, saved, start=0, state=None, log=print):
    """Steps start .. s.steps-1 with held-out evaluations, early stopping and checkpoints; returns the
    summary. state: {"best_gold", "best_step", "since_best"} carried over a resume."""
    end = tok.special_tokens[IM_END]
    log_path = os.path.join(run_dir, "log.jsonl")
    best_path = os.path.join(run_dir, "best.bin")
    state = state or {"best_gold": -math.inf, "best_step": None, "since_best": 0, "stopped_at": None}
    train = [{"messages": m} for m in requests("train")]
    eval_seed = s.seed * 7919 + 1

    def validate(step):
        record = {"step": step, **evaluate(model, ref, rm, tok, s, eval_seed)}
        append_log(log_path, record)
        if record["val_gold"] > state["best_gold"]:
            state.update(best_gold=record["val_gold"], best_step=step, since_best=0)
            model.save(best_path)
        else:
            state["since_best"] += 1
        bar.write(f"step {step}: held-out gold {record['val_gold']:.3f} +- {record['val_gold_std']:.3f}, "
                  f"proxy {record['val_proxy']:.3f}, KL {record['val_kl']:.4f}; {record['sample'][:60]!r}")
        return record

    def should_stop(record):
        return s.early_stop and (state["since_best"] >= s.patience or record["val_kl"] > s.kl_budget)

    bar = tqdm(total=s.steps, initial=start, unit="step", dynamic_ncols=True, disable=None)
    step = start
    for step in range(start, s.steps):
        if step % s.eval_every == 0:  # on a resume too: the checkpoint's state predates this evaluation
            if should_stop(validate(step)):
                state["stopped_at"] = step
                break
        t0 = time.perf_counter()
        rng = np.random.default_rng([s.seed, step])
        problems = [train[i] for i in rng.choice(len(train), min(s.prompts, len(train)), replace=False)]
        samples = rollout(model, tok, GoldTask(), problems, s.group, s.max_new_tokens, s.temperature,
                          seed=s.seed * 1_000_003 + step)
        proxy = proxy_rewards(rm, tok, problems, samples)                       # (P * G,)
        gold = np.array([x.reward for x in samples])                            # (P * G,) logged only
        adv = group_advantages(proxy.reshape(-1, s.group)).reshape(-1)          # (P * G,)
        lr = lr_at(step, s.lr, s.lr, s.warmup, s.steps, "constant")
        figures = update(model, ref, samples, adv, s, lr, step * s.epochs, end)
        record = {"step": step, "proxy": float(proxy.mean()), "gold": float(gold.mean()),
                  "length": float(np.mean([len(x.reply) for x in samples])), "lr": lr, **figures,
                  "step_s": time.perf_counter() - t0}
        append_log(log_path, record)
        bar.set_postfix(proxy=f"{record['proxy']:.2f}", gold=f"{record['gold']:.2f}", kl=f"{figures['kl']:.3f}",
                        refresh=False)
        bar.update(1)
        if (step + 1) % s.eval_every == 0 or step + 1 == s.steps:
            checkpoint.save(run_dir, step + 1, model, {"settings": saved, "rlhf": state}, keep=s.keep)
    else:
        step = s.steps
        if not any(r.get("step") == s.steps and "val_gold" in r for r in read_log(log_path)):
            validate(s.steps)
    bar.close()
    return summarize(log_path, state, step)


def read_log(path):
    return [json.loads(line) for line in open(path) if line.strip()] if os.path.exists(path) else []


def summarize(log_path, state, last_step):
    """Before = the step-0 held-out evaluation; after = the kept (best) one with early stopping, else the last."""
    evals = [r for r in read_log(log_path) if "val_gold" in r]
    first = evals[0]
    kept = next(r for r in evals if r["step"] == state["best_step"]) if state["stopped_at"] is not None else evals[-1]
    return {"gold_before": first["val_gold"], "gold_before_std": first["val_gold_std"], "gold_after": kept["val_gold"],
            "gold_after_std": kept["val_gold_std"], "proxy_before": first["val_proxy"], "proxy_after": kept["val_proxy"],
            "kl_after": kept["val_kl"], "after_step": kept["step"], "best_step": state["best_step"],
            "best_gold": state["best_gold"], "stopped_at": state["stopped_at"], "steps_run": last_step}


def plot_rlhf(log_path, png_path):
    """Proxy and gold reward against step (train batches and held-out), and held-out both against KL."""
    plt = pyplot()
    if plt is None:
        print("plot skipped: matplotlib is not installed (pip install 'minigpt[plot]')")
        return None
    rows = read_log(log_path)
    tr, ev = [r for r in rows if "proxy" in r], [r for r in rows if "val_gold" in r]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for key, name in (("proxy", "proxy (reward model)"), ("gold", "gold (labeller, not trained on)")):
        a.plot([r["step"] for r in tr], [r[key] for r in tr], lw=0.8, alpha=0.5, label=f"train {name}")
        a.plot([r["step"] for r in ev], [r["val_" + key] for r in ev], "o-", ms=3, label=f"held-out {name}")
        b.plot([r["val_kl"] for r in ev], [r["val_" + key] for r in ev], "o-", ms=3, label=f"held-out {name}")
    a.set_xlabel("step")
    b.set_xlabel("held-out KL to the SFT model (nats per token)")
    a.legend(fontsize=7)
    b.legend(fontsize=7)
    fig.tight_layout()
    return save(fig, png_path)


def add_arguments(p):
    p.add_argument("--config", help="settings file: JSON or nanoGPT-style `name = value` lines")
    p.add_argument("--resume", nargs="?", const="auto", default=None,
                   help="continue a run: a run directory or ckpt_*.state (bare --resume: --out)")
    settings.add_arguments(p, *CLASSES)


def load_reward(path, backend):
    """A reward model from a run directory (its newest checkpoint with a .head) or a ckpt_N.bin."""
    if os.path.isdir(path):
        heads = sorted(f for f in os.listdir(path) if f.startswith("ckpt_") and f.endswith(".head"))
        if not heads:
            raise FileNotFoundError(f"--reward {path}: no reward checkpoint (ckpt_N.head; train one with `minigpt reward`)")
        path = os.path.join(path, heads[-1][:-5] + ".bin")
    return RewardModel.load(path, backend=backend)


def run(args):
    if args.resume == "auto" and not args.out:
        raise ValueError("--resume: name the run directory (--resume RUN or --out RUN)")
    (s, rt), resume = settings_from(args, CLASSES)
    base_ckpt, tok = open_base(s)
    if not s.reward:
        raise ValueError("--reward: name the reward model run (minigpt reward) to optimise against")
    rm = load_reward(s.reward, rt.backend)
    run_dir = s.out or os.path.join("runs", time.strftime("rlhf-%Y%m%d-%H%M%S"))
    os.makedirs(run_dir, exist_ok=True)
    if not resume and checkpoint.list_steps(run_dir):
        raise FileExistsError(f"{run_dir} already holds checkpoints: add --resume to continue, or another --out")
    s.out, state = run_dir, None
    if resume:
        state_path, info, m, v = resume
        model = GPT.load(os.path.join(run_dir, info["model_file"]), backend=rt.backend, threads=rt.threads)
        checkpoint.set_moments(model, m, v)
        start, state = info["step"], info.get("rlhf")
        truncate_log(os.path.join(run_dir, "log.jsonl"), start)
        print(f"resuming {run_dir} at step {start} from {state_path}")
    else:
        model, start = GPT.load(base_ckpt, backend=rt.backend, threads=rt.threads), 0
        if os.path.exists(os.path.join(run_dir, "log.jsonl")):
            os.unlink(os.path.join(run_dir, "log.jsonl"))
    ref = GPT.load(base_ckpt, backend=rt.backend, threads=rt.threads)
    if tok.n_vocab != model.config.vocab_size or rm.model.config.vocab_size != model.config.vocab_size:
        raise ValueError("the tokenizer, the policy and the reward model must share one vocabulary")
    saved = settings.as_dict(s, rt)
    write_json(os.path.join(run_dir, "settings.json"), saved)
    tok.save(os.path.join(run_dir, TOKENIZER_FILE))
    print(f"rlhf: base {base_ckpt}, reward {s.reward}, {model.num_parameters:,} parameters; {s.prompts} requests x "
          f"{s.group} replies per step, kl-coef {s.kl_coef}, early stop {s.early_stop}; run dir {run_dir}")
    summary = rlhf_train(model, ref, rm, tok, s, run_dir, saved, start, state)
    write_json(os.path.join(run_dir, "rlhf.json"), summary)
    if s.plot:
        png = plot_rlhf(os.path.join(run_dir, "log.jsonl"), os.path.join(run_dir, "rlhf.png"))
        if png:
            print(f"plot: {png}")
    print(json.dumps(summary))
    return 0
