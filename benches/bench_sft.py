"""SFT throughput against pretraining's, on the same model, in the same process.

One optimizer step of each (minigpt/pretrain/train.py's train_step, clip_grad_norm, AdamW), the tiny preset
(block_size 128) with the chat tokens added: pretraining on the built-in corpus's token windows,
SFT on the built-in conversations packed into rows (minigpt/posttrain/packing.py). Tokens/s counts
real tokens only: every input of a pretraining window, the non-padding inputs of a packed row, so
the ratio is the cost of padding plus anything the SFT path adds (the masks, the weights).

The two take turns, round after round, so load from elsewhere hits both; each figure is a median
over rounds and sft_vs_pretrain is the median of the per-round ratios (min and max show the noise).
With OMP_NUM_THREADS=1 steps are timed in process CPU time (steady on a busy shared machine).
Usage: python benches/bench_sft.py [--rounds N] [--steps K]
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import emit, table, threads  # noqa: E402

N_THREADS = threads()
os.environ.setdefault("OPENBLAS_NUM_THREADS", str(N_THREADS))
os.environ.setdefault("OMP_NUM_THREADS", str(N_THREADS))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from minigpt.model import GPT  # noqa: E402
from minigpt.pretrain.dataloader import DataLoader  # noqa: E402
from minigpt.posttrain.builtin_chats import builtin_conversations, model_facts  # noqa: E402
from minigpt.posttrain.packing import PackedLoader, tokenize  # noqa: E402
from minigpt.pretrain.prepare import load_tokenizer, read_meta  # noqa: E402
from minigpt.tokenizer.chat import add_chat_tokens  # noqa: E402
from minigpt.config import PRESETS, GPTConfig  # noqa: E402
from minigpt.pretrain.train import builtin_data, clip_grad_norm, train_step  # noqa: E402


def clock():
    return time.process_time() if N_THREADS == 1 else time.perf_counter()


def steps(model, loader, k, t0):
    """k optimizer steps; returns (seconds, real input tokens)."""
    real = 0
    start = clock()
    for i in range(k):
        train_step(model, loader)
        clip_grad_norm(model.grads_memory, 1.0)
        model.update(1e-4, 0.9, 0.95, 1e-8, 0.0, t=t0 + i + 1)
        real += getattr(loader, "last_real", loader.B * loader.T)
    return clock() - start, real


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10, help="steps of each side per round")
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    data = builtin_data(1024)
    meta = read_meta(data)
    tok = load_tokenizer(data, meta)
    add_chat_tokens(tok)
    cfg = GPTConfig(vocab_size=tok.n_vocab, **PRESETS["tiny"])
    model = GPT(cfg, seed=0, threads=N_THREADS)
    B, T = args.batch_size, cfg.block_size
    pre = DataLoader([os.path.join(data, n) for n in meta["train"]], B, T, seed=0)
    train, _ = builtin_conversations(model_facts(cfg), seed=0)
    sft = PackedLoader(tokenize(tok, train), B, T, seed=0)
    steps(model, pre, 2, 0)   # warm up both paths (allocation, first-touch)
    steps(model, sft, 2, 2)
    rows, ratios, t = [], [], 4
    for r in range(args.rounds):
        dt_p, n_p = steps(model, pre, args.steps, t)
        dt_s, n_s = steps(model, sft, args.steps, t + args.steps)
        t += 2 * args.steps
        ratios.append((n_s / dt_s) / (n_p / dt_p))
        rows.append([r, n_p / dt_p, n_s / dt_s, n_s / (args.steps * B * T), ratios[-1]])
    print(f"tiny preset, V={cfg.vocab_size}, B={B}, T={T}, backend {model.backend.name}, {N_THREADS} threads; "
          f"packing {100 * sft.efficiency:.1f}% real tokens, {sft.too_long} conversations too long (dropped)")
    table(rows, ["round", "pretrain tok/s", "sft real tok/s", "real share", "sft_vs_pretrain"])
    emit({"sft_vs_pretrain": statistics.median(ratios), "sft_vs_pretrain_min": min(ratios),
          "sft_vs_pretrain_max": max(ratios), "packing_efficiency": sft.efficiency,
          "pretrain_tok_s": statistics.median(r[1] for r in rows), "sft_real_tok_s": statistics.median(r[2] for r in rows),
          "threads": N_THREADS})


if __name__ == "__main__":
    main()
