"""`minigpt train`: pretrain a GPT-2 on token shards, as plain functions in the order they run.

    settings      presets (tiny .. GPT-2 350M), a config file, flags; a resumed run's saved settings
    data          a `minigpt prepare` directory (meta.json + shards), or the built-in corpus by default
    schedule      lr_at: linear warmup, then cosine (or linear) decay to a floor (nanoGPT's formula)
    one step      train_step: k micro-batches accumulate gradients; clip_grad_norm; AdamW (model.update)
    feedback      evaluate (fixed val batches), samples (minigpt/inference/), a tqdm bar, log.jsonl, loss.png
    checkpoints   checkpoint.py: the model in llm.c format + a side file; --resume is bit-exact
    many ranks    distributed.py: `mpirun -np N minigpt train ...` is the same run on N processes

The loop (`train`) takes any loader whose next_batch() gives (x, y) or (x, y, weights): SFT and RL
reuse it with their own batches and loss weights.

With no arguments it prepares the built-in corpus (pydoc topics + stdlib docstrings), trains a tiny
model for a few minutes, prints samples and leaves everything under runs/.
"""
import glob
import json
import math
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from .. import settings
from ..config import PRESETS, GPTConfig
from ..fileio import TOKENIZER_FILE, atomic_write, write_json
from ..inference.generate import generate
from ..inference.sampling import SamplingSettings
from ..model import GPT
from ..model.backend import RuntimeSettings
from ..model.flops import flops_per_token, peak_flops
from ..plot import plot_log
from . import checkpoint
from . import distributed as dist
from .corpus import builtin_documents
from .dataloader import DataLoader
from .prepare import load_tokenizer, prepare, read_meta


@dataclass
class TrainSettings:
    data: str = None             # a `minigpt prepare` directory or a folder/glob of llm.c shards (default: the built-in corpus)
    vocab_size: int = None       # vocabulary of shards without meta.json; for the built-in corpus, the BPE size to train (1024)
    out: str = None              # run directory for checkpoints, log.jsonl, loss.png (default: runs/<date-time>)
    model: str = "tiny"          # size preset (minigpt/config.py); tiny: ~1 min / 100 steps on 2 cores
    n_layer: int = None          # layers (default: the preset's)
    n_head: int = None           # attention heads (default: the preset's)
    n_embd: int = None           # channels (default: the preset's)
    block_size: int = None       # context length of the model (default: the preset's)
    batch_size: int = 16         # sequences per micro-batch, over all MPI ranks together (each reads its share)
    seq_len: int = None          # T of the training windows (default: block_size)
    grad_accum: int = 1          # micro-batches per step: a step sees batch_size x grad_accum sequences
    sampling: str = "epoch"      # epoch: every window once per epoch, shuffled | random: random offsets (nanoGPT)
    steps: int = 300             # optimizer steps in all
    lr: float = 1e-3             # peak learning rate
    min_lr: float = None         # floor of the decay (default lr / 10)
    warmup: int = 30             # steps of linear warmup
    decay: str = "cosine"        # cosine | linear | constant, from lr to min_lr over the steps
    weight_decay: float = 0.1    # AdamW's decoupled weight decay, on the weight matrices only
    beta1: float = 0.9           # AdamW's first-moment decay
    beta2: float = 0.95          # AdamW's second-moment decay
    eps: float = 1e-8            # AdamW's epsilon
    grad_clip: float = 1.0       # clip the global gradient norm to this (0: off)
    dropout: float = 0.0         # probability of zeroing an activation while training (0: off)
    eval_every: int = 100        # steps between validation losses
    eval_batches: int = 20       # validation batches per evaluation (always the same ones)
    sample_every: int = None     # steps between printed samples (default: eval_every)
    checkpoint_every: int = None # steps between checkpoints (default: eval_every, and always at the end)
    keep: int = 2                # newest checkpoints to keep
    seed: int = 1337             # seed of the weights, the data order, dropout and the samples
    plot: bool = True            # draw the loss curve (loss.png) at the end
    zero: int = 0                # under mpirun: 0 all-reduces the gradients; 1 (ZeRO-1) also splits AdamW's moments over the ranks

    CHOICES = {"model": tuple(PRESETS), "sampling": ("epoch", "random"), "decay": ("cosine", "linear", "constant"),
               "zero": (0, 1)}

    def __post_init__(self):
        for name in ("model", "sampling", "decay", "zero"):
            settings.check_choice(self, name)
        for name in ("vocab_size",):
            settings.check_range(self, name, 256, 65536)
        for name in ("n_layer", "n_head", "n_embd", "block_size", "batch_size", "seq_len", "grad_accum", "steps",
                     "eval_every", "eval_batches", "sample_every", "checkpoint_every", "keep"):
            settings.check_range(self, name, 1)
        for name in ("warmup", "weight_decay", "grad_clip", "min_lr", "seed"):
            settings.check_range(self, name, 0)
        for name in ("lr", "eps"):
            settings.check_range(self, name, 0, lo_open=True)
        for name in ("beta1", "beta2", "dropout"):
            settings.check_range(self, name, 0, 1, hi_open=True)
        if self.seq_len is not None and self.block_size is not None and self.seq_len > self.block_size:
            raise ValueError(f"seq_len {self.seq_len} exceeds block_size {self.block_size}")


def model_config(s, vocab_size):
    sizes = {k: (getattr(s, k) if getattr(s, k) is not None else v) for k, v in PRESETS[s.model].items()}
    return GPTConfig(vocab_size=vocab_size, **sizes)


# --------------------------------------------------------------------------------------------------
# data


def builtin_data(vocab_size):
    """runs/data/builtin-V: the built-in corpus, prepared once and reused."""
    vocab_size = vocab_size or 1024  # small: a tiny model learns it in minutes
    out = os.path.join("runs", "data", f"builtin-{vocab_size}")
    if not os.path.exists(os.path.join(out, "meta.json")):
        print(f"preparing the built-in corpus (pydoc topics + stdlib docstrings) into {out}")
        prepare(builtin_documents(), out, vocab_size=vocab_size)
    return out


def open_data(s):
    """-> (train shard paths, val shard paths, vocab size, tokenizer or None)."""
    data = s.data or builtin_data(s.vocab_size)
    if os.path.exists(os.path.join(data, "meta.json")):
        meta = read_meta(data)
        return ([os.path.join(data, n) for n in meta["train"]], [os.path.join(data, n) for n in meta["val"]],
                meta["vocab_size"], load_tokenizer(data, meta))
    if not os.path.exists(data) and not glob.has_magic(data):
        raise FileNotFoundError(f"--data {data}: no such directory or file")
    files = sorted(glob.glob(os.path.join(data, "*.bin") if os.path.isdir(data) else data))
    train = [f for f in files if "train" in os.path.basename(f)]
    val = [f for f in files if "val" in os.path.basename(f)]
    if not train or not val:
        raise FileNotFoundError(f"{data}: expected meta.json, or shards named *train*.bin and *val*.bin; "
                                f"found {len(train)} train and {len(val)} val shards")
    if not s.vocab_size:
        raise ValueError(f"{data} has no meta.json: say the vocabulary with --vocab-size (GPT-2: 50257)")
    return train, val, s.vocab_size, None


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
    factor max_norm / (norm + 1e-6) when that is below 1). Returns the norm before clipping.
    (Across ranks: distributed.clip_global_norm, of which this is the one-process case.)"""
    return dist.clip_global_norm(dist.World(), grads, max_norm, sharded=False)


def next_batch(loader):
    """(x, y, w): a loader gives (inputs, targets) or, with per-token loss weights (SFT's masks,
    RL's advantages), (inputs, targets, weights)."""
    batch = loader.next_batch()
    return batch if len(batch) == 3 else (*batch, None)


def train_step(model, loader, grad_accum=1, world=None):
    """Gradients of the mean loss over grad_accum micro-batches, accumulated in model.grads: each
    micro-batch's tokens weigh 1/grad_accum, so k micro-batches of B equal one batch of kB.
    Under MPI the loader gives this rank's rows and the weights make the sum over ranks the global
    mean (distributed.global_weights); the gradients are still this rank's share, to be summed.
    Returns the mean loss of the global batch."""
    world = world or dist.World()
    model.zero_grad()
    loss = 0.0
    for _ in range(grad_accum):
        x, y, w = next_batch(loader)
        w = dist.global_weights(world, y, w, accum=grad_accum)
        loss += model.forward(x, y, weights=w)
        model.backward()
    return float(dist.allreduce_sum(world, [loss])[0]) if world.size > 1 else loss


# --------------------------------------------------------------------------------------------------
# evaluation and samples


def evaluate(model, loader, batches, world=None):
    """Mean loss over the first `batches` batches of the val split: the same tokens every time
    (under MPI each rank its rows, the per-batch losses summed over the ranks in one all-reduce)."""
    world = world or dist.World()
    loader.reset()
    model.training = False
    try:
        losses = [model.forward(x, y, weights=dist.global_weights(world, y, w)) for x, y, w in
                  (next_batch(loader) for _ in range(batches))]
    finally:
        model.training = True
    return float(np.mean(dist.allreduce_sum(world, losses) if world.size > 1 else losses))


def sample_text(model, tok, gen, seed, n=1):
    """n samples from <|endoftext|> with the KV-cache engine (minigpt/inference/); the seed is a
    function of the step, so there is no sampler state to checkpoint."""
    new = min(gen.max_new_tokens, model.config.block_size - 1)
    model.training = False
    try:
        samples = generate(model, [tok.eot], new, temperature=gen.temperature, top_k=gen.top_k,
                           top_p=gen.top_p, seed=seed, n=n)
    finally:
        model.training = True
    return "\n".join(f"--- sample {i + 1} ---\n{tok.decode(ids)}" for i, ids in enumerate(samples))


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


def train(model, s, train_loader, val_loader, run_dir, saved_settings, start_step=0, show_sample=None,
          evaluate_more=None, log=print, world=None):
    """Run updates start_step .. s.steps-1, evaluating, sampling and checkpointing on the way; s is a
    TrainSettings (or a subclass). show_sample(step) -> text to print; evaluate_more(step) -> dict of
    extra validation figures to log (SFT's graded answers). Returns the last val loss. Raises
    Diverged (naming the last good checkpoint) if a loss or the gradient norm stops being finite.
    world (distributed.World): this rank; the loaders give its rows; only rank 0 writes and prints."""
    world = world or dist.World()
    steps, B, T, accum = s.steps, s.batch_size, s.seq_len, s.grad_accum
    sample_every = s.sample_every or s.eval_every
    ckpt_every = s.checkpoint_every or s.eval_every
    min_lr = s.min_lr if s.min_lr is not None else s.lr / 10
    eval_batches = max(1, min(s.eval_batches, val_loader.num_windows() // B))
    tokens_per_step = B * T * accum
    flops_per_step = flops_per_token(model.config, T) * tokens_per_step
    peak = peak_flops(saved_settings.get("threads"))
    log_path = os.path.join(run_dir, "log.jsonl")
    last_good = checkpoint.list_steps(run_dir)
    last_good = checkpoint.paths(run_dir, last_good[-1])[0] if last_good else None
    val_loss = None
    final_eval = steps > start_step or not os.path.exists(log_path)  # decided before rank 0 writes the log

    def validate(step):
        nonlocal val_loss
        val_loss = evaluate(model, val_loader, eval_batches, world)
        record = {"step": step, "val_loss": val_loss, **(evaluate_more(step) if evaluate_more else {})}
        if not world.main:
            return
        append_log(log_path, record)
        bar.write(f"step {step}: " + ", ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in record.items()
                                               if k != "step"))
        if not math.isfinite(val_loss):
            stop("the val loss", val_loss, step)

    def save(step):
        nonlocal last_good
        moments = dist.full_moments(model, world, s.zero)                          # ZeRO-1: gathered on rank 0
        rngs = dist.allgather_json(world, model.dropout_rng.bit_generator.state)  # one per rank
        if world.main:
            info = {"settings": saved_settings, "loader": train_loader.state(), "val_loss": val_loss,
                    "dropout_rng": rngs[0], "dropout_rngs": rngs, "world_size": world.size}
            last_good = checkpoint.save(run_dir, step, model, info, keep=s.keep, moments=moments)[0]

    def stop(what, value, step):
        where = f"the last good checkpoint is {last_good}" if last_good else "no checkpoint was written yet"
        raise Diverged(f"{what} is {value} at step {step}: training diverged and stopped; {where}. "
                       f"Try a lower --lr (now {s.lr}), a longer --warmup (now {s.warmup}) "
                       f"or --grad-clip (now {s.grad_clip}).")

    bar = tqdm(total=steps, initial=start_step, unit="step", dynamic_ncols=True, disable=None if world.main else True)
    for step in range(start_step, steps):
        if step % s.eval_every == 0:
            validate(step)
        if show_sample is not None and step > 0 and step % sample_every == 0:
            bar.write(f"samples at step {step}:\n{show_sample(step)}")

        lr = lr_at(step, s.lr, min_lr, s.warmup, steps, s.decay)
        t0 = time.perf_counter()
        loss = train_step(model, train_loader, accum, world)
        if not math.isfinite(loss):
            stop("the loss", loss, step)
        t1 = time.perf_counter()
        grads = dist.reduce_gradients(model, world, s.zero)  # the summed gradient (this rank's slice, ZeRO-1)
        comm = time.perf_counter() - t1
        norm = dist.clip_global_norm(world, grads, s.grad_clip, sharded=grads.size < model.num_parameters)
        if not math.isfinite(norm):
            stop("the gradient norm", norm, step)
        comm += dist.update(model, world, s.zero, lr, s.beta1, s.beta2, s.eps, s.weight_decay, t=step + 1)
        dt = time.perf_counter() - t0
        tok_s, mfu = tokens_per_step / dt, flops_per_step / dt / peak
        record = {"step": step, "loss": loss, "lr": lr, "norm": norm, "dt": dt, "tok_s": tok_s, "mfu": mfu}
        if world.size > 1:
            record["comm"] = comm  # seconds in the gradient all-reduce (and ZeRO's gather), waits included
        if world.main:
            append_log(log_path, record)
        bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tok_s:,.0f}", mfu=f"{100 * mfu:.1f}%", refresh=False)
        bar.update(1)
        if (step + 1) % ckpt_every == 0 or step + 1 == steps:
            save(step + 1)
    if final_eval:
        validate(steps)
    bar.close()
    return val_loss


# --------------------------------------------------------------------------------------------------
# the subcommand


def add_arguments(p):
    p.add_argument("--config", help="settings file: JSON or nanoGPT-style `name = value` lines")
    p.add_argument("--resume", nargs="?", const="auto", default=None,
                   help="continue a run: a run directory or ckpt_*.state (bare --resume: --out, or the newest run)")
    settings.add_arguments(p, TrainSettings, SamplingSettings, RuntimeSettings)


def newest_run(root="runs"):
    runs = [os.path.join(root, d) for d in os.listdir(root)] if os.path.isdir(root) else []
    runs = [d for d in runs if os.path.isdir(d) and checkpoint.list_steps(d)]
    if not runs:
        raise FileNotFoundError(f"--resume: no run with checkpoints under {root}/; name one with --out")
    return max(runs, key=os.path.getmtime)


CLASSES = (TrainSettings, SamplingSettings, RuntimeSettings)


def settings_from(args, classes=CLASSES):
    """(settings objects, resume) with defaults < config file < a resumed run's settings < flags."""
    layers = [settings.read_config(args.config, *classes) if args.config else {}]
    resume = None
    if args.resume:
        where = args.resume if args.resume != "auto" else (args.out or newest_run())
        state_path = checkpoint.resolve(where)
        info, m, v = checkpoint.load_state(state_path)
        layers.append(info["settings"])
        resume = (state_path, info, m, v)
    layers.append(settings.from_args(args, *classes))
    objs = [settings.build(cls, *layers) for cls in classes]
    if resume:
        objs[0].out = os.path.dirname(resume[0])
    return objs, resume


def run(args):
    world = dist.init()
    try:
        return run_training(args, world)
    except Diverged as e:  # the same global loss on every rank: they all stop here together
        if world.main:
            print(f"minigpt train: {e}", file=sys.stderr)
        return 1
    except BaseException as e:
        if world.size == 1:
            raise
        # maybe this rank's error alone: end the job, or the others wait in the next collective forever
        dist.abort(world, f"minigpt train: {type(e).__name__}: {e}", 2 if isinstance(e, (OSError, ValueError)) else 1)


def start_run(s, cfg, rt, resume, tok, log=print, world=None):
    """The run directory and the model: fresh, or resumed exactly (weights, AdamW moments, dropout
    RNG, data position). Returns (run_dir, model, start step). Under MPI every rank builds the same
    model; only rank 0 writes, and each rank keeps its own dropout RNG."""
    world = world or dist.World()
    run_dir = dist.allgather_json(world, s.out or os.path.join("runs", time.strftime("%Y%m%d-%H%M%S")))[0]
    checkpoint.open_run(run_dir, resume=bool(resume))  # a fresh run never writes over another
    s.out = run_dir
    if resume:
        state_path, info, m, v = resume
        model = GPT.load(os.path.join(run_dir, info["model_file"]), backend=rt.backend, threads=rt.threads)
        if model.config != cfg:
            raise ValueError(f"{state_path}: its model {model.config} differs from the settings' {cfg}")
        saved_world = info.get("world_size", 1)
        if saved_world != world.size and s.dropout > 0:
            raise ValueError(f"{state_path} was written by a run on {saved_world} rank(s) with dropout, whose "
                             f"masks come from one RNG per rank: resume it on {saved_world} (mpirun -np "
                             f"{saved_world}), not {world.size}")
        if world.size == 1:
            checkpoint.set_moments(model, m, v)  # (CudaGPT: onto the device)
        else:  # the saved moments are whole: ZeRO-1 takes this rank's slice, so any rank count can resume
            dist.set_moments(model, world, s.zero, m, v)
        rngs = info.get("dropout_rngs", [info["dropout_rng"]])
        model.dropout_rng.bit_generator.state = rngs[world.rank] if saved_world == world.size else rngs[0]
        start = info["step"]
        if world.main:
            truncate_log(os.path.join(run_dir, "log.jsonl"), start)
        log(f"resuming {run_dir} at step {start} from {state_path}"
            + (f" (written on {saved_world} rank(s), now {world.size})" if saved_world != world.size else ""))
    else:
        model = GPT(cfg, backend=rt.backend, seed=s.seed, threads=rt.threads)
        if world.rank > 0:  # the same weights on every rank, but each its own dropout masks
            model.dropout_rng = np.random.default_rng([s.seed, world.rank])
        start = 0
    if world.size > 1 and model.backend.name == "cuda":
        raise ValueError("MPI training runs on the CPU backends (numpy, c); the CUDA backend would need NCCL")
    model.dropout = s.dropout
    if model.dropout > 0 and model.backend.name == "cuda":
        raise ValueError("--dropout is not implemented in the CUDA backend's forward (minigpt/model/gpt_cuda.py); "
                         "use --dropout 0 or a CPU backend")
    if tok is not None and world.main:  # the run directory carries its tokenizer: sample, chat, eval need only the folder
        tok.save(os.path.join(run_dir, TOKENIZER_FILE))
        try:
            tok.save_llmc(os.path.join(run_dir, "tokenizer.bin"))  # llm.c's decode table, for run.c
        except ValueError as e:  # a token longer than llm.c's 255 bytes: run.c cannot print this vocabulary
            log(f"no tokenizer.bin for run.c: {e}")
    return run_dir, model, start


def run_training(args, world=None):
    world = world or dist.World()
    say = print if world.main else (lambda *a, **k: None)  # one rank prints
    (s, gen, rt), resume = settings_from(args)
    if world.size > 1 and not s.data:  # one rank prepares the built-in corpus, the others wait for it
        if world.main:
            builtin_data(s.vocab_size)
        dist.barrier(world)
    train_paths, val_paths, vocab_size, tok = open_data(s)
    cfg = model_config(s, vocab_size)
    s.seq_len = s.seq_len or cfg.block_size
    if s.seq_len > cfg.block_size:
        raise ValueError(f"--seq-len {s.seq_len} exceeds the model's block_size {cfg.block_size}")
    rows = dist.row_range(s.batch_size, world)  # this rank's rows of every global batch
    run_dir, model, start = start_run(s, cfg, rt, resume, tok, log=say, world=world)
    saved = settings.as_dict(s, gen, rt)
    if not resume and world.main:
        write_json(os.path.join(run_dir, "settings.json"), saved)
    train_loader = DataLoader(train_paths, s.batch_size, s.seq_len, seed=s.seed, sampling=s.sampling, rows=rows)
    val_loader = DataLoader(val_paths, s.batch_size, s.seq_len, seed=None, rows=rows)
    if resume:
        train_loader.load_state(resume[1]["loader"])
    say(f"model: {s.model} L={cfg.n_layer} H={cfg.n_head} C={cfg.n_embd} T={s.seq_len} "
        f"V={cfg.vocab_size}, {model.num_parameters:,} parameters, backend {model.backend.name}; "
        f"{len(train_paths)} train shards ({train_loader.num_windows() * s.seq_len:,} tokens); "
        f"run dir {run_dir}" + (f"; {world.size} MPI ranks, ZeRO-{s.zero}" if world.size > 1 else ""))
    say(f"the loss starts near ln V = ln {cfg.vocab_size} = {math.log(cfg.vocab_size):.2f} (a uniform guess) "
        f"and falls as the model learns")
    show = (lambda step: sample_text(model, tok, gen, s.seed * 1_000_003 + step)) if tok is not None else None
    train(model, s, train_loader, val_loader, run_dir, saved, start_step=start,
          show_sample=show if world.main else None, log=say, world=world)
    if not world.main:
        return 0
    if tok is not None:
        print(f"samples at step {s.steps}:\n{sample_text(model, tok, gen, s.seed * 1_000_003 + s.steps, n=2)}")
    if s.plot:
        png = plot_log(os.path.join(run_dir, "log.jsonl"), os.path.join(run_dir, "loss.png"))
        if png:
            print(f"loss curve: {png}")
    print(f"checkpoint: {checkpoint.paths(run_dir, s.steps)[0]}")
    if tok is not None:
        print(f"talk to it: minigpt sample {run_dir} --prompt \"def \"")
    return 0
