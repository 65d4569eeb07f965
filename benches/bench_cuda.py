"""Training throughput of GPT-2 124M on one GPU: minigpt's CUDA backend against PyTorch CUDA.

Both sides run the same model (benches/torch_gpt2.py builds PyTorch's from minigpt's weights), the
same AdamW step, on the same GPU in the same process, in fp32 and with TF32 tensor cores for the
GEMMs (minigpt: cuBLAS math mode; PyTorch: allow_tf32). A batch that does not fit is reported as
OOM. MFU = model FLOPs/s (minigpt/model/flops.py, 6N + attention) over the GPU's dense peak for that
precision (MINIGPT_GPU_PEAK_TFLOPS="fp32,tf32" overrides the built-in table).

    python benches/bench_cuda.py                 # B = 8, 16, 32 at T = 1024
    python benches/bench_cuda.py --B 4 --T 256 --layers 2    # a quick look
Without a GPU (or without a CUDA build of torch for the peer) it says so and reports skipped.
"""
import argparse
import gc
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import emit, table  # noqa: E402

from minigpt.model import GPT, GPTConfig, ops_cuda  # noqa: E402
from minigpt.model.flops import flops_per_token  # noqa: E402

# dense peaks in TFLOP/s (fp32 CUDA cores, TF32 tensor cores), from NVIDIA's data sheets
PEAKS = {"H100": (67.0, 495.0), "H200": (67.0, 495.0), "A100": (19.5, 156.0), "L4": (30.3, 60.0),
         "A10": (31.2, 62.5), "L40S": (91.6, 183.0)}


def gpu_peak(name):
    if os.environ.get("MINIGPT_GPU_PEAK_TFLOPS"):
        fp32, tf32 = (float(x) for x in os.environ["MINIGPT_GPU_PEAK_TFLOPS"].split(","))
        return fp32 * 1e12, tf32 * 1e12
    for key, (fp32, tf32) in PEAKS.items():
        if key in name:
            return fp32 * 1e12, tf32 * 1e12
    return None


def time_steps(step, sync, steps):
    step()  # warm-up: allocations, cuBLAS heuristics
    sync()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    med = float(np.median(times))
    return med, (max(times) - min(times)) / med


def bench_minigpt(cfg, B, T, tf32, steps, rng):
    idx, targets = rng.integers(0, cfg.vocab_size, (2, B, T))
    ops_cuda.set_tf32(tf32)
    model = GPT(cfg, backend="cuda", seed=0)
    t = [0]

    def step():
        t[0] += 1
        model.forward(idx, targets)
        model.zero_grad()
        model.backward()
        model.update(1e-4, t=t[0])

    try:
        return time_steps(step, ops_cuda.synchronize, steps)
    finally:
        del model
        gc.collect()


def bench_torch(torch, cfg, B, T, tf32, steps, rng):
    from torch_gpt2 import TorchGPT2
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    host = GPT(cfg, backend="numpy", seed=0)
    model = TorchGPT2(host).cuda()
    del host
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    idx, targets = (torch.tensor(a, device="cuda") for a in rng.integers(0, cfg.vocab_size, (2, B, T)))

    def step():
        _, loss = model(idx, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    try:
        return time_steps(step, torch.cuda.synchronize, steps)
    finally:
        del model, opt
        gc.collect()
        torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--B", default="8,16,32")
    ap.add_argument("--T", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    reason = ops_cuda.unavailable_reason()
    if reason:
        print(f"minigpt CUDA backend skipped: {reason}")
        emit({"skipped": reason})
        return
    try:
        import torch
        torch_reason = None if torch.cuda.is_available() else "torch has no CUDA here"
    except ImportError:
        torch, torch_reason = None, "torch is not installed"
    cfg = GPTConfig(block_size=max(1024, args.T), vocab_size=50257, n_layer=args.layers, n_head=12, n_embd=768)
    name = ops_cuda.device_name()
    peaks = gpu_peak(name)
    print(f"GPT-2 (L={cfg.n_layer}) training step, T={args.T}, on {name}; cuBLAS: {ops_cuda.has_cublas()}; "
          f"PyTorch: {torch_reason or torch.__version__}")
    rng = np.random.default_rng(0)
    rows, figures = [], {"device": name, "T": args.T, "n_layer": cfg.n_layer}
    for B in (int(b) for b in args.B.split(",")):
        for tf32 in (False, True):
            prec = "tf32" if tf32 else "fp32"
            if tf32 and not ops_cuda.has_cublas():
                continue  # the tiled GEMM has no TF32 path
            toks = {}
            for side in ("minigpt", "torch"):
                if side == "torch" and torch_reason:
                    toks[side] = None
                    continue
                try:
                    sec, noise = (bench_minigpt(cfg, B, args.T, tf32, args.steps, rng) if side == "minigpt"
                                  else bench_torch(torch, cfg, B, args.T, tf32, args.steps, rng))
                    toks[side] = (B * args.T / sec, noise)
                except (MemoryError, RuntimeError) as e:  # torch.cuda.OutOfMemoryError is a RuntimeError
                    if "out of memory" not in str(e).lower() and not isinstance(e, MemoryError):
                        raise
                    toks[side] = "OOM"
            peak = peaks[1 if tf32 else 0] if peaks else None
            row = [B, prec]
            for side in ("minigpt", "torch"):
                v = toks[side]
                if isinstance(v, tuple):
                    mfu = v[0] * flops_per_token(cfg, args.T) / peak if peak else None  # unknown GPU: no MFU
                    row += [f"{v[0]:,.0f}", f"{100 * mfu:.1f}%" if mfu else "n/a", f"{100 * v[1]:.0f}%"]
                    figures[f"{side}_{prec}_B{B}_tok_s"] = round(v[0], 1)
                    if mfu:
                        figures[f"{side}_{prec}_B{B}_mfu"] = round(mfu, 4)
                else:
                    row += [v or "skipped", "", ""]
            if all(isinstance(toks[s], tuple) for s in ("minigpt", "torch")):
                ratio = toks["minigpt"][0] / toks["torch"][0]
                figures[f"cuda_vs_torch_{prec}_B{B}"] = round(ratio, 3)
                row.append(f"{ratio:.2f}")
            else:
                row.append("")
            rows.append(row)
    table(rows, ["B", "precision", "minigpt tok/s", "MFU", "noise", "torch tok/s", "MFU", "noise", "cuda_vs_torch"])
    ratios = [v for key, v in figures.items() if key.startswith("cuda_vs_torch_")]
    if ratios:
        figures["cuda_vs_torch"] = round(float(np.exp(np.mean(np.log(ratios)))), 3)  # geometric mean
    if torch_reason:
        figures["torch_skipped"] = torch_reason
    emit(figures)


if __name__ == "__main__":
    main()
