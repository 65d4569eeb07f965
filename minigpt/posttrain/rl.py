"""`minigpt rl`: reinforcement learning on problems with checkable answers.

Each step (nanochat's RL, TRL's GRPO as options):
    1. take --problems train problems (which ones: a function of the seed and the step)
    2. rollout: --group samples of each at --temperature (rollout.py), graded by the task (tasks.py)
    3. advantages: reward - its group's mean (--std-normalize: / the group's std, GRPO); with
       --algo rs (rejection sampling) 1 for a right reply and 0 otherwise: fine-tune on the right ones
    4. update: --epochs passes over the batch, each one AdamW step of the objective in policy.py
       (token-level normalised; clipped ratio to the sampling policy after the first pass; k3 KL to
       the base model with --kl-coef), its gradient put in as per-token loss weights

Every --eval-every steps (and at the start and the end) the test split is sampled --eval-samples
times per problem: pass@1 and pass@k (the unbiased estimator), the greedy accuracy, the reply length.
Checkpoints, --resume (bit-exact: problems and samples are functions of the seed and the step), the
log and the progress bar are pretraining's (minigpt/pretrain/). Ends with one JSON line.
"""
import json
import math
import os
import time
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from .. import settings
from ..fileio import TOKENIZER_FILE, resolve_model, write_json
from ..inference.tools import ToolBox
from ..model import GPT
from ..model.backend import RuntimeSettings
from ..plot import pyplot, save
from ..pretrain import checkpoint
from ..tokenizer.tokenizer import load_tokenizer
from ..pretrain.train import append_log, clip_grad_norm, lr_at, settings_from, truncate_log
from ..tokenizer.chat import IM_END
from .policy import group_advantages, pass_at_k, pg_objective, pg_weights, token_logprobs, weights_for_model
from .rollout import micro_batches, rollout
from .tasks import BUILTIN, load_task


@dataclass
class RLSettings:
    base: str = None             # the SFT run directory (its newest checkpoint and tokenizer) or a checkpoint .bin
    task: str = "count"          # built-in: count | letters | compare | arithmetic | spell; or a JSONL of {"messages", "answer"}
    grader: str = "exact"        # a JSONL task's grader: exact | numeric | module:function (f(messages, reply) -> reward)
    test_data: str = None        # a JSONL task's test problems (default: --test-fraction of its problems, by prompt hash)
    test_fraction: float = 0.1   # share of a JSONL task's problems held out for testing
    out: str = None              # run directory (default: runs/rl-<date-time>)
    algo: str = "pg"             # pg: policy gradient, reward - group mean | rs: rejection sampling, fine-tune on right replies
    steps: int = 100             # RL steps (rollout + update)
    problems: int = 8            # problems per step
    group: int = 16              # samples per problem (G)
    temperature: float = 1.0     # sampling temperature of the rollouts and of the pass@k evaluation
    max_new_tokens: int = 64     # longest reply
    tools: bool = False          # rollouts with the calculator: calls run, their outputs forced and never trained on
    std_normalize: bool = False  # divide advantages by the group's std (GRPO); nanochat does not
    kl_coef: float = 0.0         # weight of the k3 KL penalty to the base model (TRL's PPO: 0.05; GRPO, nanochat: 0)
    clip_eps: float = 0.2        # PPO ratio clipping, used from the second epoch on (TRL: 0.2)
    epochs: int = 1              # updates per batch of rollouts (1: on-policy, as nanochat)
    lr: float = 1e-4             # peak learning rate (a crude check here: 5e-4 with fresh moments collapsed a model)
    min_lr: float = None         # floor of the decay (default lr)
    warmup: int = 10             # steps of linear warmup (AdamW's moments start at zero)
    decay: str = "constant"      # constant | cosine | linear, from lr to min_lr over the steps
    weight_decay: float = 0.0    # AdamW's decoupled weight decay
    beta1: float = 0.9           # AdamW's first-moment decay
    beta2: float = 0.95          # AdamW's second-moment decay
    eps: float = 1e-8            # AdamW's epsilon
    grad_clip: float = 1.0       # clip the global gradient norm (0: off)
    micro_batch: int = 64        # sequences per forward/backward
    eval_every: int = 25         # steps between evaluations on the test split
    eval_problems: int = 200     # test problems per evaluation (the first ones; all if fewer)
    eval_samples: int = 16       # samples per test problem: pass@1 and pass@k for k = this
    checkpoint_every: int = None # steps between checkpoints (default: eval_every, and always at the end)
    keep: int = 2                # newest checkpoints to keep
    seed: int = 1337             # seed of the problem order and the samples (and the built-in split if regenerated)
    plot: bool = True            # draw rl.png (reward, pass@k, reply length over steps) at the end

    CHOICES = {"algo": ("pg", "rs"), "decay": ("constant", "cosine", "linear")}

    def __post_init__(self):
        for name in ("algo", "decay"):
            settings.check_choice(self, name)
        for name in ("steps", "problems", "group", "max_new_tokens", "epochs", "micro_batch", "eval_every",
                     "eval_problems", "eval_samples", "checkpoint_every", "keep"):
            settings.check_range(self, name, 1)
        for name in ("temperature", "lr"):
            settings.check_range(self, name, 0, lo_open=True)
        for name in ("kl_coef", "clip_eps", "warmup", "weight_decay", "grad_clip", "min_lr", "seed"):
            settings.check_range(self, name, 0)
        for name in ("beta1", "beta2", "test_fraction"):
            settings.check_range(self, name, 0, 1, hi_open=True)


CLASSES = (RLSettings, RuntimeSettings)


# --------------------------------------------------------------------------------------------------
# evaluation


def toolbox(s, tok):
    return ToolBox(tok) if s.tools else None


def evaluate(model, tok, task, s, seed=0):
    """pass@1 and pass@k (k = eval_samples, unbiased estimator), the greedy accuracy and the mean
    reply length on the first eval_problems test problems. The same seed every time: evaluations
    differ only by the model."""
    problems = task.test[:s.eval_problems]
    samples = rollout(model, tok, task, problems, s.eval_samples, s.max_new_tokens, s.temperature, seed=seed,
                      batch=max(1, 1024 // s.eval_samples), tools=toolbox(s, tok))
    right = np.array([x.reward > 0 for x in samples]).reshape(len(problems), s.eval_samples)
    n, k = s.eval_samples, s.eval_samples
    greedy = rollout(model, tok, task, problems, 1, s.max_new_tokens, temperature=0, tools=toolbox(s, tok))
    return {"pass1": float(np.mean([pass_at_k(n, int(c), 1) for c in right.sum(1)])),
            "passk": float(np.mean([pass_at_k(n, int(c), k) for c in right.sum(1)])), "k": k,
            "greedy": float(np.mean([x.reward > 0 for x in greedy])),
            "test_length": float(np.mean([len(x.reply) for x in samples]))}


# --------------------------------------------------------------------------------------------------
# one step


def step_problems(task, s, step):
    """The step's problems: a function of (seed, step), so a resumed run asks the same ones."""
    rng = np.random.default_rng([s.seed, step])
    return [task.train[i] for i in rng.choice(len(task.train), size=min(s.problems, len(task.train)), replace=False)]


def advantages(samples, s):
    rewards = np.array([x.reward for x in samples]).reshape(-1, s.group)   # (P, G)
    if s.algo == "rs":
        return (rewards > 0).astype(np.float64).reshape(-1)
    return group_advantages(rewards, s.std_normalize).reshape(-1)


def update(model, ref, samples, adv, s, lr, t0, end):
    """--epochs AdamW steps on the objective over these samples (end: the <|im_end|> id closing an
    ended reply); returns figures for the log."""
    batches = micro_batches(samples, end, s.micro_batch, adv)
    mask_of = [(y >= 0).astype(np.float64) for _, y, _, _ in batches]
    # token-level normalisation over the batch (rejection sampling: over the kept replies' tokens)
    n_tokens = max(1.0, sum(float((m * (a != 0)).sum()) if s.algo == "rs" else float(m.sum())
                            for m, (_, _, _, a) in zip(mask_of, batches)))
    refs = [token_logprobs(ref, x, y) for x, y, _, _ in batches] if s.kl_coef else [None] * len(batches)
    olds = [None] * len(batches)
    figures = {}
    for epoch in range(s.epochs):
        model.zero_grad()
        J, kl, clipped = 0.0, 0.0, 0.0
        for b, ((x, y, _, a), mask) in enumerate(zip(batches, mask_of)):
            lp = token_logprobs(model, x, y)
            if epoch == 0:
                olds[b] = lp  # the policy that sampled (up to the cache's rounding)
            old = None if epoch == 0 else olds[b]
            clip = s.clip_eps if epoch > 0 else None
            j, parts = pg_objective(lp, a, mask, n_tokens, old, refs[b], clip, s.kl_coef)
            w = pg_weights(lp, a, mask, n_tokens, old, refs[b], clip, s.kl_coef)
            model.reweight(weights_for_model(w, y))
            model.backward()
            J, kl = J + j, kl + parts["kl"]
            clipped += parts["clipped"] * mask.sum()
        norm = clip_grad_norm(model.grads_memory, s.grad_clip)
        if not math.isfinite(norm):
            raise RuntimeError(f"the gradient norm is {norm}: lower --lr (now {s.lr})")
        model.update(lr, s.beta1, s.beta2, s.eps, s.weight_decay, t=t0 + epoch + 1)
        if epoch == 0:
            figures.update(objective=J, norm=norm, kl=kl)
    figures["clipped"] = clipped / max(1.0, sum(m.sum() for m in mask_of))  # last epoch's share
    return figures


# --------------------------------------------------------------------------------------------------
# the loop


def rl_train(model, tok, task, s, run_dir, saved, start=0, ref=None, log=print):
    """RL steps start .. s.steps-1 with evaluations and checkpoints; returns the summary dict."""
    end = tok.special_tokens[IM_END]
    os.makedirs(run_dir, exist_ok=True)
    log_path = os.path.join(run_dir, "log.jsonl")
    ckpt_every = s.checkpoint_every or s.eval_every
    min_lr = s.min_lr if s.min_lr is not None else s.lr
    eval_seed = s.seed * 7919 + 1

    def validate(step):
        record = {"step": step, **evaluate(model, tok, task, s, eval_seed)}
        append_log(log_path, record)
        bar.write(f"step {step}: test pass@1 {record['pass1']:.3f}, pass@{record['k']} {record['passk']:.3f}, "
                  f"greedy {record['greedy']:.3f}, reply length {record['test_length']:.1f}")
        return record

    bar = tqdm(total=s.steps, initial=start, unit="step", dynamic_ncols=True, disable=None)
    for step in range(start, s.steps):
        if step % s.eval_every == 0:
            validate(step)
        t0 = time.perf_counter()
        problems = step_problems(task, s, step)
        samples = rollout(model, tok, task, problems, s.group, s.max_new_tokens, s.temperature,
                          seed=s.seed * 1_000_003 + step, tools=toolbox(s, tok))
        t1 = time.perf_counter()
        adv = advantages(samples, s)
        rewards = np.array([x.reward for x in samples]).reshape(-1, s.group)   # (P, G)
        lr = lr_at(step, s.lr, min_lr, s.warmup, s.steps, s.decay)
        figures = update(model, ref, samples, adv, s, lr, step * s.epochs, end)
        t2 = time.perf_counter()
        sampled = sum(len(x.reply) for x in samples)
        record = {"step": step, "reward": float(rewards.mean()), "pass1": float((rewards > 0).mean()),
                  "length": sampled / len(samples), "zero_spread": float((rewards.std(1) == 0).mean()),
                  "lr": lr, **figures, "rollout_s": t1 - t0, "update_s": t2 - t1, "sample_tok_s": sampled / (t1 - t0)}
        append_log(log_path, record)
        bar.set_postfix(reward=f"{record['reward']:.3f}", len=f"{record['length']:.1f}",
                        zero=f"{record['zero_spread']:.2f}", refresh=False)
        bar.update(1)
        if (step + 1) % ckpt_every == 0 or step + 1 == s.steps:
            checkpoint.save(run_dir, step + 1, model, {"settings": saved}, keep=s.keep)
    last = validate(s.steps) if s.steps > start or not os.path.exists(log_path) else None
    bar.close()
    return summarize(log_path, last)


def summarize(log_path, last=None):
    """pass@1 / pass@k before (the step-0 evaluation) and after (the last one), from the log."""
    evals, steps = [], []
    with open(log_path) as f:
        for line in f:
            r = json.loads(line)
            (evals if "passk" in r else steps).append(r)
    first, last = evals[0], last or evals[-1]
    out = {"pass1_before": first["pass1"], "pass1_after": last["pass1"], "passk_before": first["passk"],
           "passk_after": last["passk"], "k": last["k"], "greedy_before": first["greedy"],
           "greedy_after": last["greedy"], "length_before": first["test_length"], "length_after": last["test_length"],
           "steps": last["step"]}
    if steps:
        roll, upd = sum(r["rollout_s"] for r in steps), sum(r["update_s"] for r in steps)
        out.update(rollout_share=roll / (roll + upd), sample_tok_s=float(np.median([r["sample_tok_s"] for r in steps])))
    return out


def plot_rl(log_path, png_path):
    """Reward per step and test pass@1 / pass@k; reply length per step and on the test split."""
    plt = pyplot()
    if plt is None:
        print("plot skipped: matplotlib is not installed (pip install 'minigpt[plot]')")
        return None
    rows = [json.loads(line) for line in open(log_path) if line.strip()]
    tr = [r for r in rows if "reward" in r]
    ev = [r for r in rows if "passk" in r]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot([r["step"] for r in tr], [r["reward"] for r in tr], lw=0.8, alpha=0.6, label="train reward (mean of the group samples)")
    a.plot([r["step"] for r in ev], [r["pass1"] for r in ev], "o-", ms=3, label="test pass@1")
    if ev:
        a.plot([r["step"] for r in ev], [r["passk"] for r in ev], "s-", ms=3, label=f"test pass@{ev[0]['k']}")
        a.plot([r["step"] for r in ev], [r["greedy"] for r in ev], "^--", ms=3, label="test greedy")
    a.set_xlabel("step")
    a.set_ylim(-0.02, 1.02)
    a.legend(fontsize=8)
    b.plot([r["step"] for r in tr], [r["length"] for r in tr], lw=0.8, alpha=0.6, label="train replies")
    b.plot([r["step"] for r in ev], [r["test_length"] for r in ev], "o-", ms=3, label="test replies")
    b.set_xlabel("step")
    b.set_ylabel("reply length (tokens)")
    b.legend(fontsize=8)
    fig.tight_layout()
    return save(fig, png_path)


# --------------------------------------------------------------------------------------------------
# the subcommand


def add_arguments(p):
    p.add_argument("--config", help="settings file: JSON or nanoGPT-style `name = value` lines")
    p.add_argument("--resume", nargs="?", const="auto", default=None,
                   help="continue a run: a run directory or ckpt_*.state (bare --resume: --out)")
    settings.add_arguments(p, *CLASSES)


def open_base(s):
    """(base checkpoint path, tokenizer) of --base, which must be a chat model."""
    if not s.base:
        raise ValueError("--base: name the SFT run directory (or checkpoint) to start from")
    ckpt, tok_path = resolve_model(s.base)
    if tok_path is None:
        raise ValueError(f"--base {s.base}: no {TOKENIZER_FILE} beside the checkpoint")
    tok = load_tokenizer(tok_path)
    if IM_END not in tok.special_tokens:
        raise ValueError(f"--base {s.base}: its tokenizer has no chat tokens: RL starts from an SFT run (minigpt sft)")
    return ckpt, tok


def run(args):
    if args.resume == "auto" and not args.out:
        raise ValueError("--resume: name the run directory (--resume RUN or --out RUN)")
    (s, rt), resume = settings_from(args, CLASSES)
    base_ckpt, tok = open_base(s)
    run_dir = s.out or os.path.join("runs", time.strftime("rl-%Y%m%d-%H%M%S"))
    os.makedirs(run_dir, exist_ok=True)
    if not resume and checkpoint.list_steps(run_dir):
        raise FileExistsError(f"{run_dir} already holds checkpoints: add --resume to continue, or another --out")
    s.out = run_dir
    base_dir = os.path.dirname(os.path.abspath(base_ckpt))
    if resume:
        state_path, info, m, v = resume
        model = GPT.load(os.path.join(run_dir, info["model_file"]), backend=rt.backend, threads=rt.threads)
        checkpoint.set_moments(model, m, v)
        start = info["step"]
        truncate_log(os.path.join(run_dir, "log.jsonl"), start)
        print(f"resuming {run_dir} at step {start} from {state_path}")
    else:
        model, start = GPT.load(base_ckpt, backend=rt.backend, threads=rt.threads), 0
        if os.path.exists(os.path.join(run_dir, "log.jsonl")):
            os.unlink(os.path.join(run_dir, "log.jsonl"))
    if tok.n_vocab != model.config.vocab_size:
        raise ValueError(f"the tokenizer has {tok.n_vocab} ids, the model {model.config.vocab_size}")
    task = load_task(s.task, s.grader, s.test_data, s.test_fraction, base_dir if s.task in BUILTIN else None,
                     s.seed, model.config)
    ref = GPT.load(base_ckpt, backend=rt.backend, threads=rt.threads) if s.kl_coef else None
    saved = settings.as_dict(s, rt)
    write_json(os.path.join(run_dir, "settings.json"), saved)
    tok.save(os.path.join(run_dir, TOKENIZER_FILE))
    print(f"rl: task {task.name} ({len(task.train)} train, {len(task.test)} test problems), base {base_ckpt}, "
          f"{model.num_parameters:,} parameters; {s.problems} problems x {s.group} samples per step, "
          f"algo {s.algo}, lr {s.lr}; run dir {run_dir}")
    summary = rl_train(model, tok, task, s, run_dir, saved, start, ref)
    summary = {"task": task.name, "algo": s.algo, **summary}
    write_json(os.path.join(run_dir, "rl.json"), summary)
    if s.plot:
        png = plot_rl(os.path.join(run_dir, "log.jsonl"), os.path.join(run_dir, "rl.png"))
        if png:
            print(f"plot: {png}")
    print(f"checkpoint: {checkpoint.paths(run_dir, s.steps)[0]}")
    print(json.dumps(summary))
    return 0

