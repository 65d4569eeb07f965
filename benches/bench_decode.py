"""Decode and prefill speed of the KV-cache engine (C kernels), fp32 and bf16 weights, against
PyTorch CPU running the same GPT-2 124M weights with its own KV-cache loop, in the same process.

    decode   tokens per second at batch 1 and 16: each step feeds every stream one token
    prefill  prompt tokens per second: a 64-token prompt per stream, in one pass

Random weights are fine (the arithmetic does not depend on them). Batch-1 decoding reads every
weight once per token, so memory bandwidth bounds it: bf16 weights halve the bytes. The bench
measures that bound itself, in every round: a plain streaming read (ops_decode_c.stream_read, all
threads) of a buffer the size of the fp32 weights; decode is reported as a share of it.
Usage: python benches/bench_decode.py [--steps N]
"""
import argparse
import os
import sys
import time

# both sides' OpenMP threads sleep, not spin, while they wait (see minigpt/ops_decode_c.py): set
# before minigpt or torch loads an OpenMP runtime, so the two run under the same policy
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import emit, table, threads, torch_or_none  # noqa: E402

from minigpt.inference import kvcache
from minigpt.model import backend  # noqa: E402
from minigpt.model import GPT, GPTConfig  # noqa: E402

PROMPT = 64


class TorchKV:
    """GPT-2 inference in PyTorch with a preallocated KV cache: what a PyTorch user would write."""

    def __init__(self, torch, model, B, maxT, dtype):
        self.torch, self.F = torch, torch.nn.functional
        cfg = model.config
        self.L, self.NH, self.C, self.V = cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.vocab_size
        self.p = {k: torch.from_numpy(np.ascontiguousarray(v)).to(dtype) for k, v in model.params.items()}
        hs = self.C // self.NH
        self.k = torch.zeros(self.L, B, self.NH, maxT, hs, dtype=dtype)
        self.v = torch.zeros(self.L, B, self.NH, maxT, hs, dtype=dtype)

    def forward(self, idx, pos0):
        """idx (B, T) at positions pos0.. -> logits of the last position (B, V)."""
        torch, F, p, C, NH = self.torch, self.F, self.p, self.C, self.NH
        B, T = idx.shape
        x = p["wte"][idx] + p["wpe"][pos0:pos0 + T]
        for l in range(self.L):
            h = F.layer_norm(x, (C,), p["ln1w"][l], p["ln1b"][l], eps=1e-5)
            q, k, v = (t.view(B, T, NH, C // NH).transpose(1, 2)
                       for t in F.linear(h, p["qkvw"][l], p["qkvb"][l]).split(C, dim=2))
            self.k[l, :, :, pos0:pos0 + T] = k
            self.v[l, :, :, pos0:pos0 + T] = v
            K, V = self.k[l, :, :, :pos0 + T], self.v[l, :, :, :pos0 + T]
            y = F.scaled_dot_product_attention(q, K, V, is_causal=T > 1 and pos0 == 0)
            x = x + F.linear(y.transpose(1, 2).reshape(B, T, C), p["attprojw"][l], p["attprojb"][l])
            h = F.layer_norm(x, (C,), p["ln2w"][l], p["ln2b"][l], eps=1e-5)
            h = F.gelu(F.linear(h, p["fcw"][l], p["fcb"][l]), approximate="tanh")
            x = x + F.linear(h, p["fcprojw"][l], p["fcprojb"][l])
        x = F.layer_norm(x[:, -1], (C,), p["lnfw"], p["lnfb"], eps=1e-5)
        return F.linear(x, p["wte"])[:, :self.V]


def ours(weights, B, steps, kern):
    cfg = weights.config
    cache = kvcache.KVCache(cfg, B, PROMPT + steps)
    prompts = [list(range(1, PROMPT + 1))] * B

    def prefill():
        cache.lengths[:] = 0
        kvcache.prefill(weights, cache, prompts, kern)

    def decode():
        cache.lengths[:] = PROMPT
        tok = [1] * B
        for _ in range(steps):
            logits = kvcache.decode_step(weights, cache, tok, range(B), kern)
            tok = logits[:, :cfg.vocab_size].argmax(-1)  # greedy: the engine, not the sampler
    prefill()
    return prefill, decode


def theirs(torch, model, B, steps, dtype):
    tk = TorchKV(torch, model, B, PROMPT + steps, dtype)
    prompt = torch.arange(1, PROMPT + 1).repeat(B, 1)

    def prefill():
        with torch.inference_mode():
            tk.forward(prompt, 0)

    def decode():
        with torch.inference_mode():
            tok = torch.ones(B, 1, dtype=torch.long)
            for i in range(steps):
                tok = tk.forward(tok, PROMPT + i).argmax(-1, keepdim=True)
    prefill()
    return prefill, decode


def spread(ts):
    return f"{100 * (max(ts) - min(ts)) / min(ts):.0f}%"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=16, help="decode steps per timing")
    ap.add_argument("--repeat", type=int, default=4, help="interleaved rounds")
    args = ap.parse_args()
    n = threads()
    if not ("c" in backend.available()):
        print("minigpt._decode is not built (pip install -e .): nothing to measure")
        emit({"skipped": "minigpt._decode not built"})
        return
    from minigpt.model import ops_decode_c
    ops_decode_c.set_threads(n)
    kern = backend.decode_kernels("c")
    torch = torch_or_none(n)
    cfg = GPTConfig()  # GPT-2 124M
    model = GPT(cfg, backend="numpy", seed=0)
    sides = {"minigpt fp32": kvcache.DecodeWeights.from_model(model),
             "minigpt bf16": kvcache.DecodeWeights.from_model(model, half=True)}

    per_param = {"fp32": 4, "bf16": 2}
    n_read = model.num_parameters - cfg.block_size * cfg.n_embd  # all but wpe: one row of it per token
    nbytes = {k: v * n_read for k, v in per_param.items()}
    rows, res = [], {}
    probe = np.ones(n_read, np.float32)  # the fp32 weights' size: no cache holds it
    bandwidth = []  # GB/s, one reading per round of each batch size
    for B in (1, 16):
        steps = args.steps if B == 1 else max(args.steps // 4, 2)
        runs = {name: ours(w, B, steps, kern) for name, w in sides.items()}
        if torch is not None:
            runs["torch fp32"] = theirs(torch, model, B, steps, torch.float32)
            if B == 1:  # PyTorch with bf16 weights, for reference (CPUs without bf16 units emulate it)
                runs["torch bf16"] = theirs(torch, model, B, steps, torch.bfloat16)
        # rounds interleave the engines, so a burst of load from other processes hits all of them;
        # each figure is its best round, the noise its spread (max - min) / min
        times = {name: ([], []) for name in runs}
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            ops_decode_c.stream_read(probe)
            bandwidth.append(probe.nbytes / (time.perf_counter() - t0) / 1e9)
            for name, (prefill, decode) in runs.items():
                for fn, ts in zip((prefill, decode), times[name]):
                    t0 = time.perf_counter()
                    fn()
                    ts.append(time.perf_counter() - t0)
        for name, (t_pre, t_dec) in times.items():
            res[name, B] = (B * PROMPT / min(t_pre), B * steps / min(t_dec))
            # bytes of weights a decode step streams (every matrix once, wpe aside), per second
            gbs = nbytes[name.split()[1]] * steps / min(t_dec) / 1e9
            res[name, B] += (gbs,)
            rows.append([name, B, res[name, B][1], spread(t_dec), gbs, res[name, B][0], spread(t_pre)])
        del runs
    bw = max(bandwidth)  # the best round, as for the engines
    print(f"GPT-2 124M, {n} threads, prompt {PROMPT} tokens, greedy decode, "
          f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}; streaming read {bw:.1f} GB/s "
          f"(best of {len(bandwidth)}, spread {spread([1 / b for b in bandwidth])})")
    for r in rows:
        r.insert(5, f"{100 * r[4] / bw:.0f}%")
    table(rows, ["engine", "batch", "decode tok/s", "noise", "weights GB/s", "of read BW", "prefill tok/s", "noise"])

    fig = {"threads": n, "omp_wait_policy": os.environ["OMP_WAIT_POLICY"], "kernel": ops_decode_c.gemm_kernel(),
           "fp32_tok_s": round(res["minigpt fp32", 1][1], 2), "half_tok_s": round(res["minigpt bf16", 1][1], 2),
           "fp32_b16_tok_s": round(res["minigpt fp32", 16][1], 2),
           "half_b16_tok_s": round(res["minigpt bf16", 16][1], 2),
           "prefill_tok_s": round(res["minigpt fp32", 1][0], 1),
           "fp32_weight_gb_s": round(res["minigpt fp32", 1][2], 2),
           "half_weight_gb_s": round(res["minigpt bf16", 1][2], 2),
           "half_prefill_tok_s": round(res["minigpt bf16", 1][0], 1),
           "read_bw_gb_s": round(bw, 2), "fp32_share_of_bw": round(res["minigpt fp32", 1][2] / bw, 3),
           "half_share_of_bw": round(res["minigpt bf16", 1][2] / bw, 3)}
    if torch is None:
        fig["torch"] = "skipped: not installed"
    else:
        t1, t16 = res["torch fp32", 1], res["torch fp32", 16]
        fig.update(torch_tok_s=round(t1[1], 2), torch_weight_gb_s=round(t1[2], 2), torch_b16_tok_s=round(t16[1], 2),
                   torch_prefill_tok_s=round(t1[0], 1), torch_bf16_tok_s=round(res["torch bf16", 1][1], 2),
                   fp32_vs_torch=round(res["minigpt fp32", 1][1] / t1[1], 3),
                   half_vs_torch=round(res["minigpt bf16", 1][1] / t1[1], 3),
                   half_vs_torch_bf16=round(res["minigpt bf16", 1][1] / res["torch bf16", 1][1], 3),
                   fp32_b16_vs_torch=round(res["minigpt fp32", 16][1] / t16[1], 3),
                   half_b16_vs_torch=round(res["minigpt bf16", 16][1] / t16[1], 3),
                   prefill_vs_torch=round(res["minigpt fp32", 1][0] / t1[0], 3),
                   b16_prefill_vs_torch=round(res["minigpt fp32", 16][0] / t16[0], 3))
    emit(fig)


if __name__ == "__main__":
    main()
