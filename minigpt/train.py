"""`minigpt train`: pretrain a GPT-2 on token shards, as plain functions in the order they run.

    settings      presets (tiny .. GPT-2 350M), a config file, flags; a resumed run's saved settings
    data          a `minigpt prepare` directory (meta.json + shards), or the built-in corpus by default
    schedule      lr_at: linear warmup, then cosine (or linear) decay to a floor (nanoGPT's formula)
    one step      train_step: k micro-batches accumulate gradients; clip_grad_norm; AdamW (model.update)
    feedback      evaluate (fixed val batches), samples (model.generate), a tqdm bar, log.jsonl, loss.png
    checkpoints   minigpt/checkpoint.py: the model in llm.c format + a side file; --resume is bit-exact

With no arguments it prepares the built-in corpus (pydoc topics + stdlib docstrings), trains a tiny
model for a few minutes, prints samples and leaves everything under runs/.
"""
import ast
import json
import math
import os
import sys
import time

import numpy as np

from . import checkpoint
from .dataloader import DataLoader
from .fileio import atomic_write
from .flops import flops_per_token, peak_flops
from .model import GPT, GPTConfig

# model sizes: (n_layer, n_head, n_embd, block_size)
PRESETS = {
    "tiny": dict(n_layer=4, n_head=4, n_embd=128, block_size=128),     # ~1M weights: minutes on a laptop
    "small": dict(n_layer=6, n_head=6, n_embd=384, block_size=256),    # nanoGPT's shakespeare_char
    "124M": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024),  # GPT-2 small
    "350M": dict(n_layer=24, n_head=16, n_embd=1024, block_size=1024), # GPT-2 medium
}

# every setting and its default; flags, a config file and a resumed run all set these names
DEFAULTS = dict(
    data=None, vocab_size=None, out=None,
    model="tiny", n_layer=None, n_head=None, n_embd=None, block_size=None,
    batch_size=16, seq_len=None, grad_accum=1, sampling="epoch", steps=300,
    lr=1e-3, min_lr=None, warmup=30, decay="cosine", weight_decay=0.1, beta1=0.9, beta2=0.95, eps=1e-8,
    grad_clip=1.0, dropout=0.0,
    eval_every=100, eval_batches=20, sample_every=None, sample_tokens=200, temperature=0.8, top_k=None,
    checkpoint_every=None, keep=2, seed=1337, backend=None, threads=None, plot=True, dtype="fp32",
)
HELP = dict(
    data="a `minigpt prepare` directory, or a folder/glob of llm.c shards (*train*.bin, *val*.bin) "
         "(default: the built-in corpus)",
    vocab_size="vocabulary for shards without meta.json; for the built-in corpus, the BPE size to train",
    out="run directory for checkpoints, log.jsonl, loss.png (default: runs/<date-time>)",
    model=f"size preset: {', '.join(PRESETS)}",
    seq_len="T of the training windows (default: block_size)",
    grad_accum="micro-batches per step: the step sees batch_size x grad_accum sequences",
    sampling="epoch: every window once per epoch, shuffled | random: random offsets (nanoGPT)",
    steps="optimizer steps in all", min_lr="floor of the decay (default lr / 10)",
    decay="cosine | linear | constant", grad_clip="clip the global gradient norm to this (0: off)",
    dropout="probability (training only; 0 = off)", sample_every="default: eval_every",
    checkpoint_every="default: eval_every (and always at the end)", keep="checkpoints to keep",
    backend="numpy | c | cuda (default: the fastest built)", top_k="sample from the k likeliest only",
    dtype="fp32 | bf16: bf16 rounds every GEMM operand to bf16 and sums in fp32 (AVX512-BF16 where the "
          "CPU has it); weights, gradients and AdamW stay fp32. C backend only",
)


# --------------------------------------------------------------------------------------------------
# settings


def read_config(path):
    """A config file: JSON, or nanoGPT-style `name = value` lines (Python literals, # comments)."""
    with open(path) as f:
        text = f.read()
    try:
        values = json.loads(text)
    except json.JSONDecodeError:
        values = {}
        for lineno, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            if "=" not in line:
                raise ValueError(f"{path}:{lineno}: expected `name = value`, found {line!r}")
            name, value = (s.strip() for s in line.split("=", 1))
            try:
                values[name] = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                values[name] = value  # a bare word: a string
    unknown = sorted(set(values) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"{path}: unknown settings {unknown}; known: {sorted(DEFAULTS)}")
    return values


def model_config(s, vocab_size):
    if s["model"] not in PRESETS:
        raise ValueError(f"unknown model preset {s['model']!r}: expected one of {list(PRESETS)}")
    sizes = {k: (s[k] if s[k] is not None else v) for k, v in PRESETS[s["model"]].items()}
    return GPTConfig(vocab_size=vocab_size, **sizes)


# --------------------------------------------------------------------------------------------------
# data


def builtin_data(vocab_size):
    """runs/data/builtin-V: the built-in corpus, prepared once and reused."""
    from .prepare import prepare
    if vocab_size is None:
        vocab_size = 1024  # small: a tiny model learns it in minutes
    out = os.path.join("runs", "data", f"builtin-{vocab_size}")
    if not os.path.exists(os.path.join(out, "meta.json")):
        from .corpus import builtin_documents
        print(f"preparing the built-in corpus (pydoc topics + stdlib docstrings) into {out}")
        prepare(builtin_documents(), out, vocab_size=vocab_size)
    return out


def open_data(s):
    """-> (train shard paths, val shard paths, vocab size, tokenizer or None)."""
    import glob
    data = s["data"] or builtin_data(s["vocab_size"])
    if os.path.exists(os.path.join(data, "meta.json")):
        from .prepare import load_tokenizer, read_meta
        meta = read_meta(data)
        return ([os.path.join(data, n) for n in meta["train"]], [os.path.join(data, n) for n in meta["val"]],
                meta["vocab_size"], load_tokenizer(data, meta))
    files = sorted(glob.glob(os.path.join(data, "*.bin") if os.path.isdir(data) else data))
    train, val = [f for f in files if "train" in os.path.basename(f)], [f for f in files if "val" in os.path.basename(f)]
    if not train or not val:
        raise FileNotFoundError(f"{data}: expected meta.json, or shards named *train*.bin and *val*.bin; "
                                f"found {len(train)} train and {len(val)} val shards")
    if not s["vocab_size"]:
        raise ValueError(f"{data} has no meta.json: say the vocabulary with --vocab-size (GPT-2: 50257)")
    return train, val, s["vocab_size"], None


# --------------------------------------------------------------------------------------------------
# the schedule and one optimizer step


def lr_at(step, lr, min_lr, warmup, total, decay="cosine"):
    """Learning rate of update `step` (from 0): linear warmup over `warmup` steps, then decay from lr
    to min_lr at step `total` (cosine, linear, or none), min_lr after that. nanoGPT's get_lr."""
    if step < warmup:
        return lr * (step + 1) / (warmup + 1)
    if decay == "constant":
        return lr
    if step >= total:
        return min_lr
    progress = (step - warmup) / max(1, total - warmup)   # 0 -> 1
    if decay == "cosine":
        coeff = 0.5 * (1.0 + math.cos(math.pi * progress))  # 1 -> 0
    elif decay == "linear":
        coeff = 1.0 - progress
    else:
        raise ValueError(f"decay must be cosine, linear or constant, got {decay!r}")
    return min_lr + coeff * (lr - min_lr)


def clip_grad_norm(grads, max_norm):
    """Scale the flat gradient so its global L2 norm is at most max_norm (PyTorch's clip_grad_norm_:
    factor max_norm / (norm + 1e-6) when that is below 1). Returns the norm before clipping."""
    # summed in float64, and not with np.dot: that is OpenBLAS's multithreaded ddot, whose worker thread
    # then spins for ~0.1 s on the core the next step's OpenMP kernels need (it doubled a small step)
    norm = math.sqrt(float(np.square(grads, dtype=np.float64).sum()))
    if max_norm and max_norm > 0 and norm > max_norm:
        grads *= grads.dtype.type(max_norm / (norm + 1e-6))
    return norm


def train_step(model, loader, grad_accum=1):
    """Gradients of the mean loss over grad_accum micro-batches, accumulated in model.grads: each
    micro-batch's tokens weigh 1/grad_accum, so k micro-batches of B equal one batch of kB.
    Returns the mean loss."""
    model.zero_grad()
    loss = 0.0
    for _ in range(grad_accum):
        x, y = loader.next_batch()
        w = None if grad_accum == 1 else np.full(x.shape, 1.0 / grad_accum)
        loss += model.forward(x, y, weights=w)
        model.backward()
    return loss


# --------------------------------------------------------------------------------------------------
# evaluation and samples


def evaluate(model, loader, batches):
    """Mean loss over the first `batches` batches of the val shards: the same tokens every time."""
    loader.reset()
    model.training = False
    try:
        return float(np.mean([model.forward(*loader.next_batch()) for _ in range(batches)]))
    finally:
        model.training = True


# --------------------------------------------------------------------------------------------------
# the log


def append_log(path, record):
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def truncate_log(path, step):
    """Keep only the records before `step`: a resumed run writes the rest again."""
    if not os.path.exists(path):
        return
    lines = []
    with open(path) as f:
        for ln in f:
            try:
                if json.loads(ln).get("step", 0) < step:
                    lines.append(ln)
            except json.JSONDecodeError:  # a line cut short by a kill: it is rewritten anyway
                pass
    atomic_write(path, lambda f: f.write("".join(lines).encode()))


# --------------------------------------------------------------------------------------------------
# the loop


class Diverged(RuntimeError):
    pass


def train(model, s, train_loader, val_loader, run_dir, tok=None, start_step=0, log=print):
    """Run updates start_step .. s["steps"]-1, evaluating, sampling and checkpointing on the way.
    Returns the last val loss. Raises Diverged (with a message naming the last good checkpoint) if a
    loss or the gradient norm stops being finite."""
    from tqdm import tqdm
    steps, B, T, accum = s["steps"], s["batch_size"], s["seq_len"], s["grad_accum"]
    eval_every = s["eval_every"]
    sample_every = s["sample_every"] or eval_every
    ckpt_every = s["checkpoint_every"] or eval_every
    min_lr = s["min_lr"] if s["min_lr"] is not None else s["lr"] / 10
    eval_batches = max(1, min(s["eval_batches"], val_loader.num_windows() // B))
    tokens_per_step = B * T * accum
    flops_per_step = flops_per_token(model.config, T) * tokens_per_step
    peak = peak_flops(s["threads"])
    log_path = os.path.join(run_dir, "log.jsonl")
    last_good = checkpoint.list_steps(run_dir)
    last_good = checkpoint.paths(run_dir, last_good[-1])[0] if last_good else None
    val_loss = None

    def save(step):
        nonlocal last_good
        info = {"settings": s, "loader": train_loader.state(), "val_loss": val_loss,
                "dropout_rng": model.dropout_rng.bit_generator.state}
        last_good = checkpoint.save(run_dir, step, model, info, keep=s["keep"])[0]

    def stop(what, value, step):
        where = f"the last good checkpoint is {last_good}" if last_good else "no checkpoint was written yet"
        raise Diverged(f"{what} is {value} at step {step}: training diverged and stopped; {where}. "
                       f"Try a lower --lr (now {s['lr']}), a longer --warmup (now {s['warmup']}) "
                       f"or --grad-clip (now {s['grad_clip']}).")

    bar = tqdm(total=steps, initial=start_step, unit="step", dynamic_ncols=True, disable=None)
    for step in range(start_step, steps):
        if step % eval_every == 0:
            val_loss = evaluate(model, val_loader, eval_batches)
            append_log(log_path, {"step": step, "val_loss": val_loss})
            bar.write(f"step {step}: val loss {val_loss:.4f}")
            if not math.isfinite(val_loss):
                stop("the val loss", val_loss, step)
        if tok is not None and step > 0 and step % sample_every == 0:
            bar.write(sample_text(model, tok, s, step))

        lr = lr_at(step, s["lr"], min_lr, s["warmup"], steps, s["decay"])
        t0 = time.perf_counter()
        loss = train_step(model, train_loader, accum)
        if not math.isfinite(loss):
            stop("the loss", loss, step)
        norm = clip_grad_norm(model.grads_memory, s["grad_clip"])
        if not math.isfinite(norm):
            stop("the gradient norm", norm, step)
        model.update(lr, s["beta1"], s["beta2"], s["eps"], s["weight_decay"], t=step + 1)
        dt = time.perf_counter() - t0
        tok_s, mfu = tokens_per_step / dt, flops_per_step / dt / peak
        append_log(log_path, {"step": step, "loss": loss, "lr": lr, "norm": norm, "dt": dt,
                              "tok_s": tok_s, "mfu": mfu})
        bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tok_s:,.0f}", mfu=f"{100 * mfu:.1f}%", refresh=False)
        bar.update(1)
        if (step + 1) % ckpt_every == 0 or step + 1 == steps:
            save(step + 1)
    bar.close()
    if steps > start_step:
        val_loss = evaluate(model, val_loader, eval_batches)
        append_log(log_path, {"step": steps, "val_loss": val_loss})
        log(f"step {steps}: val loss {val_loss:.4f}")
    return val_loss


def sample_text(model, tok, s, step, n=1):
    """n samples from <|endoftext|> with the KV-cache engine (minigpt/sample.py), at most the context
    length; the seed is a function of the step, so there is no sampler state to checkpoint."""
    new = min(s["sample_tokens"], model.config.block_size - 1)
    model.training = False
    try:
        samples = model.generate([tok.eot], new, temperature=s["temperature"], top_k=s["top_k"],
                                 seed=s["seed"] * 1_000_003 + step, n=n)
    finally:
        model.training = True
    return "\n".join(f"--- sample {i + 1} at step {step} ---\n{tok.decode(ids)}" for i, ids in enumerate(samples))


# --------------------------------------------------------------------------------------------------
# the subcommand


def add_arguments(p):
    p.add_argument("--config", help="settings file: JSON or nanoGPT-style `name = value` lines")
    p.add_argument("--resume", nargs="?", const="auto", default=None,
                   help="continue a run: a run directory or ckpt_*.state (bare --resume: --out, or the newest run)")
    for name, default in DEFAULTS.items():
        flag = "--" + name.replace("_", "-")
        if name == "plot":
            p.add_argument("--no-plot", dest="plot", action="store_const", const=False, default=None,
                           help="skip the loss-curve PNG")
            continue
        kind = {int: int, float: float}.get(type(default), str)
        if name in ("min_lr", "dropout", "temperature"):
            kind = float
        elif name in ("n_layer", "n_head", "n_embd", "block_size", "seq_len", "vocab_size", "threads",
                      "sample_every", "checkpoint_every", "top_k"):
            kind = int
        choices = {"model": list(PRESETS), "decay": ["cosine", "linear", "constant"],
                   "sampling": ["epoch", "random"], "backend": ["numpy", "c", "cuda"],
                   "dtype": ["fp32", "bf16"]}.get(name)
        shown = "" if default is None else f" (default {default})"
        p.add_argument(flag, type=kind, default=None, choices=choices, help=(HELP.get(name, "") + shown).strip())


def newest_run(root="runs"):
    runs = [os.path.join(root, d) for d in os.listdir(root)] if os.path.isdir(root) else []
    runs = [d for d in runs if os.path.isdir(d) and checkpoint.list_steps(d)]
    if not runs:
        raise FileNotFoundError(f"--resume: no run with checkpoints under {root}/; name one with --out")
    return max(runs, key=os.path.getmtime)


def settings_from(args):
    """DEFAULTS < config file < a resumed run's saved settings < flags given now."""
    s = dict(DEFAULTS)
    if args.config:
        s.update(read_config(args.config))
    resume = None
    if args.resume:
        where = args.resume if args.resume != "auto" else (args.out or newest_run())
        state_path = checkpoint.resolve(where)
        info, m, v = checkpoint.load_state(state_path)
        s.update(info["settings"])
        resume = (state_path, info, m, v)
    s.update({k: v for k, v in vars(args).items() if k in DEFAULTS and v is not None})
    if resume:
        s["out"] = os.path.dirname(resume[0])
    if s["seq_len"] is None:
        s["seq_len"] = s["block_size"] or PRESETS.get(s["model"], {}).get("block_size")
    return s, resume


def run(args):
    try:
        return run_training(args)
    except (OSError, ValueError) as e:  # bad settings, missing or damaged files: a message, not a traceback
        print(f"minigpt train: error: {e}", file=sys.stderr)
        return 2


def run_training(args):
    s, resume = settings_from(args)
    train_paths, val_paths, vocab_size, tok = open_data(s)
    cfg = model_config(s, vocab_size)
    if s["seq_len"] > cfg.block_size:
        raise ValueError(f"--seq-len {s['seq_len']} exceeds the model's block_size {cfg.block_size}")
    run_dir = s["out"] or os.path.join("runs", time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(run_dir, exist_ok=True)
    if not resume and checkpoint.list_steps(run_dir):
        raise FileExistsError(f"{run_dir} already holds checkpoints: add --resume to continue that run, "
                              f"or give another --out")
    s["out"] = run_dir

    train_loader = DataLoader(train_paths, s["batch_size"], s["seq_len"], seed=s["seed"], sampling=s["sampling"])
    val_loader = DataLoader(val_paths, s["batch_size"], s["seq_len"], seed=None)
    if resume:
        state_path, info, m, v = resume
        model = GPT.load(os.path.join(run_dir, info["model_file"]), backend=s["backend"], threads=s["threads"])
        if model.config != cfg:
            raise ValueError(f"{state_path}: its model {model.config} differs from the settings' {cfg}")
        checkpoint.set_moments(model, m, v)
        model.dropout = s["dropout"]
        model.dropout_rng.bit_generator.state = info["dropout_rng"]
        train_loader.load_state(info["loader"])
        start = info["step"]
        truncate_log(os.path.join(run_dir, "log.jsonl"), start)
        print(f"resuming {run_dir} at step {start} from {state_path}")
    else:
        model = GPT(cfg, backend=s["backend"], seed=s["seed"], threads=s["threads"])
        model.dropout = s["dropout"]
        start = 0
        atomic_write(os.path.join(run_dir, "settings.json"), lambda f: f.write(json.dumps(s, indent=1).encode()))
    if s["dtype"] not in ("fp32", "bf16"):
        raise ValueError(f"--dtype must be fp32 or bf16, found {s['dtype']!r}")
    if s["dtype"] == "bf16" and model.backend.name != "c":
        raise ValueError(f"--dtype bf16 runs on the C backend only, not {model.backend.name!r}")
    if model.backend.name == "c":  # process-wide in the C kernels: set it either way
        model.backend.ops.set_gemm_dtype(s["dtype"])
    if model.dropout > 0 and model.backend.name == "cuda":
        raise ValueError("--dropout is not implemented in the CUDA backend's forward (minigpt/gpt_cuda.py); "
                         "use --dropout 0 or a CPU backend")
    print(f"model: {s['model']} L={cfg.n_layer} H={cfg.n_head} C={cfg.n_embd} T={s['seq_len']} "
          f"V={cfg.vocab_size}, {model.num_parameters:,} parameters, backend {model.backend.name}; "
          f"{len(train_paths)} train shards ({train_loader.num_windows() * s['seq_len']:,} tokens); "
          f"run dir {run_dir}")
    try:
        train(model, s, train_loader, val_loader, run_dir, tok=tok, start_step=start)
    except Diverged as e:
        print(f"error: {e}")
        return 1
    if tok is not None:
        print(sample_text(model, tok, s, s["steps"], n=2))
    if s["plot"]:
        from .plot import plot_log
        png = plot_log(os.path.join(run_dir, "log.jsonl"), os.path.join(run_dir, "loss.png"))
        if png:
            print(f"loss curve: {png}")
    print(f"checkpoint: {checkpoint.paths(run_dir, s['steps'])[0]}")
    return 0
