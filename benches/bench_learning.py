"""Does minigpt learn as well as it should? nanoGPT's Shakespeare-char CPU run, byte level, against PyTorch.

nanoGPT (config/train_shakespeare_char.py with its CPU overrides): n_layer=4, n_head=4, n_embd=128,
block_size=64, batch_size=12, max_iters=2000, lr 1e-3 cosine-decayed to 1e-4 over 2000 iters after
100 warmup, AdamW betas (0.9, 0.99), weight decay 0.1, grad clip 1.0, dropout 0: val loss about 1.88.
Bytes of tinyshakespeare.txt are its characters (it is ASCII), so vocab 256 with no merges is that task.

Training windows start at uniformly random offsets, as nanoGPT's get_batch (--sampling epoch: minigpt's
default epoch grid instead). Both sides start from the same weights and see the same batches in the same order; PyTorch runs
the same model (benches/torch_gpt2.py) with torch.optim.AdamW and the same schedule and clipping.
Val loss is measured on every window of the val split (the last 10%), not a random sample.

--dtype bf16 trains minigpt with bf16 GEMM operands (fp32 weights and AdamW); --seed and --no-torch
let runs of one dtype with other seeds measure the run-to-run noise that bf16's curve is held to.

Usage: python benches/bench_learning.py [--iters 2000] [--dtype bf16] [--seed N] [--no-torch]
       (about 10 minutes on 2 cores)
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import emit, table, threads, torch_or_none  # noqa: E402

from minigpt.model import GPT, GPTConfig  # noqa: E402
from minigpt.pretrain.dataloader import DataLoader  # noqa: E402
from minigpt.fileio import write_shard  # noqa: E402
from minigpt.config import MATRIX_NAMES  # noqa: E402
from minigpt.pretrain.train import clip_grad_norm, evaluate, lr_at, train_step  # noqa: E402

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "data",
                    "tinyshakespeare.txt")
CFG = GPTConfig(block_size=64, vocab_size=256, n_layer=4, n_head=4, n_embd=128)
B, T = 12, 64
LR, MIN_LR, WARMUP, BETAS, WD, CLIP = 1e-3, 1e-4, 100, (0.9, 0.99), 0.1, 1.0
TARGET = 1.88
SEED = 1337


def shards(folder):
    data = np.frombuffer(open(DATA, "rb").read(), dtype=np.uint8)
    n = int(0.9 * len(data))
    train, val = os.path.join(folder, "train_000000.bin"), os.path.join(folder, "val_000000.bin")
    write_shard(train, data[:n])
    write_shard(val, data[n:])
    return train, val


def train_minigpt(model, train, val, iters, sampling, log, seed=SEED):
    loader = DataLoader([train], B, T, seed=seed, sampling=sampling)
    t0 = time.perf_counter()
    for step in range(iters):
        loss = train_step(model, loader)
        clip_grad_norm(model.grads_memory, CLIP)
        model.update(lr_at(step, LR, MIN_LR, WARMUP, iters), BETAS[0], BETAS[1], 1e-8, WD, t=step + 1)
        if step % 200 == 0 or step == iters - 1:
            log(f"minigpt step {step}: train loss {loss:.4f} ({time.perf_counter() - t0:.0f}s)")
    wall = time.perf_counter() - t0
    val_loader = DataLoader([val], B, T)
    return wall, loss, evaluate(model, val_loader, val_loader.num_windows() // B)


def train_torch(torch, tmodel, train, val, iters, sampling, log, seed=SEED):
    from torch.nn.utils import clip_grad_norm_
    decay = [p for n, p in tmodel.p.items() if n in MATRIX_NAMES]
    no_decay = [p for n, p in tmodel.p.items() if n not in MATRIX_NAMES]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=LR, betas=BETAS, eps=1e-8)
    loader = DataLoader([train], B, T, seed=seed, sampling=sampling)  # the same batches in the same order
    t0 = time.perf_counter()
    for step in range(iters):
        x, y = loader.next_batch()
        for group in opt.param_groups:
            group["lr"] = lr_at(step, LR, MIN_LR, WARMUP, iters)
        opt.zero_grad(set_to_none=True)
        loss = tmodel(torch.from_numpy(x), torch.from_numpy(y))[1]
        loss.backward()
        clip_grad_norm_(tmodel.parameters(), CLIP)
        opt.step()
        if step % 200 == 0 or step == iters - 1:
            log(f"torch   step {step}: train loss {loss.item():.4f} ({time.perf_counter() - t0:.0f}s)")
    wall = time.perf_counter() - t0
    val_loader = DataLoader([val], B, T)
    losses = []
    with torch.no_grad():
        for _ in range(val_loader.num_windows() // B):
            x, y = val_loader.next_batch()
            losses.append(tmodel(torch.from_numpy(x), torch.from_numpy(y))[1].item())
    return wall, loss.item(), float(np.mean(losses))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--backend", default=None, help="minigpt backend (default: the fastest built)")
    ap.add_argument("--sampling", default="random", choices=["random", "epoch"],
                    help="training windows: random offsets as nanoGPT (default), or minigpt's epoch grid")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="minigpt's GEMM operands")
    ap.add_argument("--seed", type=int, default=SEED, help="initial weights and batch order of both sides")
    ap.add_argument("--no-torch", action="store_true", help="minigpt alone")
    args = ap.parse_args()
    n = threads()
    if not os.path.exists(DATA):
        print(f"skipped: {DATA} not found (it lives in the project's shared/data folder)")
        emit({"skipped": "tinyshakespeare.txt not found"})
        return
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    torch = None if args.no_torch else torch_or_none(n)
    with tempfile.TemporaryDirectory() as folder:
        train, val = shards(folder)
        model = GPT(CFG, backend=args.backend, seed=args.seed, threads=n)
        if args.dtype == "bf16" and model.backend.name != "c":
            raise SystemExit("--dtype bf16 needs the C backend")
        if model.backend.name == "c":
            model.backend.ops.set_gemm_dtype(args.dtype)
        tmodel = None
        if torch is not None:
            torch.manual_seed(args.seed)
            from torch_gpt2 import TorchGPT2
            tmodel = TorchGPT2(model)  # the same initial weights
        wall, train_loss, val_loss = train_minigpt(model, train, val, args.iters, args.sampling, log, args.seed)
        figures = {"val_loss": round(val_loss, 4), "wall_s": round(wall, 1), "train_loss": round(train_loss, 4),
                   "iters": args.iters, "threads": n, "sampling": args.sampling, "backend": model.backend.name,
                   "dtype": args.dtype, "seed": args.seed,
                   "target_val_loss": TARGET,
                   "reached_target": bool(val_loss <= TARGET)}
        tokens = args.iters * B * T
        rows = [[f"minigpt ({model.backend.name}, {args.dtype})", train_loss, val_loss, wall, tokens / wall]]
        if tmodel is not None:
            t_wall, t_train, t_val = train_torch(torch, tmodel, train, val, args.iters, args.sampling, log, args.seed)
            rows.append([f"torch {torch.__version__}", t_train, t_val, t_wall, tokens / t_wall])
            figures.update(torch_wall_s=round(t_wall, 1), torch_val_loss=round(t_val, 4),
                           minigpt_vs_torch=round(t_wall / wall, 3))
        else:
            rows.append(["torch", "skipped", "", "", ""])
            figures["torch"] = "skipped: --no-torch" if args.no_torch else "skipped: not installed"
    print(f"Shakespeare, bytes, L4 H4 C128 T64 B12, {args.iters} iters, {n} threads "
          f"{args.sampling} windows (nanoGPT's val loss: {TARGET})")
    table(rows, ["run", "final train loss", "val loss", "wall s", "tokens/s"])
    emit(figures)


if __name__ == "__main__":
    main()
