"""One full training step (forward, backward, AdamW update): backend "c" against PyTorch CPU and the
NumPy reference, on GPT-2 124M (B=4, T=64) and a small config, same weights, same thread count;
and mixed precision: backend "c" with bf16 GEMM operands (--dtype bf16) against PyTorch's bf16 autocast.

The sides take turns, round after round, so a burst of load from elsewhere hits all of them; each
figure is the median over rounds, and c_vs_torch is the median of the per-round ratios (its min and
max show the noise). tok/s = B*T / step time; GFLOP/s from minigpt/model/flops.py (6N + attention per
token); % of peak against peak_flops(threads).
With OMP_NUM_THREADS=1 each step is timed in thread CPU time (steady on a busy shared machine).
Usage: python benches/bench_train_step.py [--rounds N] [--quick (small config only)] [--no-numpy]
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import emit, table, threads  # noqa: E402

N_THREADS = threads()
os.environ.setdefault("OPENBLAS_NUM_THREADS", str(N_THREADS))  # NumPy's BLAS: same thread count
os.environ.setdefault("OMP_NUM_THREADS", str(N_THREADS))
# every OpenMP runtime in the process (ours, PyTorch's) sleeps when idle rather than spinning: the
# same policy on both sides, and the one that holds up on a shared machine (see minigpt/model/ops_c.py)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

from common import torch_or_none  # noqa: E402
from minigpt.model import GPT, GPTConfig, backend  # noqa: E402
from minigpt.model.flops import flops_per_token, peak_flops  # noqa: E402
from minigpt.config import MATRIX_NAMES  # noqa: E402

CONFIGS = {
    "gpt2-124M": (GPTConfig(), 4, 64),
    "small": (GPTConfig(block_size=64, vocab_size=256, n_layer=4, n_head=4, n_embd=128), 12, 64),
}
LR, WD = 1e-4, 0.1


def minigpt_step(cfg, be, idx, targets, gemm_dtype=None):
    model = GPT(cfg, backend=be, seed=0, threads=N_THREADS)
    state = {"t": 0}

    def step():
        if gemm_dtype:  # the C kernels' GEMM precision is process-wide: each side sets its own
            model.backend.ops.set_gemm_dtype(gemm_dtype)
        state["t"] += 1
        model.forward(idx, targets)
        model.zero_grad()
        model.backward()
        model.update(LR, weight_decay=WD, t=state["t"])
    return model, step


def torch_step(torch, model, idx, targets, autocast=False):
    from torch_gpt2 import TorchGPT2
    tm = TorchGPT2(model)
    decay = [p for n, p in tm.p.items() if n in MATRIX_NAMES]
    rest = [p for n, p in tm.p.items() if n not in MATRIX_NAMES]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD}, {"params": rest, "weight_decay": 0.0}],
                            lr=LR)
    ti, tt = torch.tensor(idx), torch.tensor(targets)

    def step():
        opt.zero_grad(set_to_none=False)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):  # bf16 matmuls, fp32 weights
            loss = tm(ti, tt)[1]
        loss.backward()
        opt.step()
    return step


# One thread: every side runs in the calling thread, so its CPU time is the honest figure on a
# shared machine (other processes' load does not count against it). More threads: the wall clock.
CLOCK = time.thread_time if N_THREADS == 1 else time.perf_counter


def timed(fn):
    t0 = CLOCK()
    fn()
    return CLOCK() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-numpy", action="store_true", help="leave out the (slow) NumPy reference side")
    args = ap.parse_args()
    torch = torch_or_none(N_THREADS)
    have_c = "c" in backend.available()
    peak = peak_flops(N_THREADS)
    rows, figures = [], {"threads": N_THREADS, "peak_gflops": round(peak / 1e9, 1)}
    for label, (cfg, B, T) in CONFIGS.items():
        if args.quick and label != "small":
            continue
        rng = np.random.default_rng(0)
        idx = rng.integers(0, cfg.vocab_size, (B, T))
        targets = rng.integers(0, cfg.vocab_size, (B, T))
        sides = {}
        if have_c:
            model, sides["c"] = minigpt_step(cfg, "c", idx, targets, "fp32")
            _, sides["c_bf16"] = minigpt_step(cfg, "c", idx, targets, "bf16")
        nmodel, numpy_step = minigpt_step(cfg, "numpy", idx, targets)  # also the weights PyTorch copies
        if not args.no_numpy:
            sides["numpy"] = numpy_step
        if torch is not None:
            sides["torch"] = torch_step(torch, nmodel, idx, targets)
            sides["torch_bf16"] = torch_step(torch, nmodel, idx, targets, autocast=True)
        times = {k: [] for k in sides}
        for fn in sides.values():  # warm-up: allocation, first-touch, thread pools
            fn()
        rounds = args.rounds if cfg.n_layer <= 4 else max(2, args.rounds // 2)
        for r in range(rounds * (4 if label == "small" else 1)):
            for k, fn in sides.items():
                if k == "numpy" and r >= rounds:  # the slow reference: fewer rounds are enough
                    continue
                times[k].append(timed(fn))
        fpt = flops_per_token(cfg, T, training=True)
        key = "" if label == "gpt2-124M" else "small_"
        for k, ts in times.items():
            med = statistics.median(ts)
            tok_s = B * T / med
            gflops = fpt * tok_s / 1e9
            rows.append([label, k, f"{B}x{T}", 1e3 * med, f"{100 * (max(ts) - min(ts)) / med:.0f}%",
                         tok_s, gflops, f"{100 * gflops * 1e9 / peak:.1f}%"])
            figures[f"{key}{k}_tok_s"] = round(tok_s, 1)
            figures[f"{key}{k}_gflops"] = round(gflops, 2)
        pairs = [("c", "torch"), ("c", "numpy"), ("c_bf16", "c"), ("c_bf16", "torch_bf16"), ("c_bf16", "torch")]
        for ours, peer in pairs:
            if ours in times and peer in times:
                n = min(len(times[ours]), len(times[peer]))
                per_round = [b / a for a, b in zip(times[ours][:n], times[peer][:n])]
                figures[f"{key}{ours}_vs_{peer}"] = round(statistics.median(per_round), 3)
                figures[f"{key}{ours}_vs_{peer}_range"] = [round(min(per_round), 3), round(max(per_round), 3)]
        if torch is None:
            figures[f"{key}torch"] = "skipped: torch not installed"
        if not have_c:
            figures[f"{key}c"] = "skipped: the C backend is not built"
    clock = "thread CPU time" if N_THREADS == 1 else "wall clock"
    print(f"training step (forward + backward + AdamW), {N_THREADS} threads ({clock}, median of rounds), "
          f"peak {peak / 1e9:.0f} GFLOP/s")
    table(rows, ["config", "backend", "BxT", "ms/step", "spread", "tok/s", "GFLOP/s", "% peak"])
    for key in ("", "small_"):
        for ratio in ("c_vs_torch", "c_bf16_vs_c", "c_bf16_vs_torch_bf16"):
            if f"{key}{ratio}" in figures:
                lo, hi = figures[f"{key}{ratio}_range"]
                print(f"{key or 'gpt2-124M '}{ratio}: {figures[f'{key}{ratio}']} (rounds from {lo} to {hi})")
    emit(figures)


if __name__ == "__main__":
    main()
