"""RL rollout throughput against PyTorch CPU, and where an RL step's time goes.

    rollout   P prompts x 16 streams each, temperature 1, a fixed number of new tokens per stream
              (no stop token, so both sides sample exactly as many): minigpt's generate (each prompt
              prefilled once, its 16 streams decoded as one batch over the KV cache) against
              PyTorch running the same weights with its own KV cache (prefill each prompt once,
              repeat its cache over 16 streams, one batched forward per token, torch.multinomial)
    RL step   with --base (an SFT run) a few steps of `minigpt rl` (minigpt/posttrain/rl.py): the
              share of wall time in rollouts vs the update

The sides take turns, round after round, so load from elsewhere hits both; rollout_vs_torch is the
median of the per-round ratios (min and max show the noise). Tokens/s counts sampled tokens.
Usage: python benches/bench_rl.py [--base runs/SFT] [--rounds 5] [--prompts 8] [--new 48]
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_decode import TorchKV  # noqa: E402
from common import emit, table, threads, torch_or_none  # noqa: E402

from minigpt.config import PRESETS  # noqa: E402
from minigpt.fileio import resolve_model  # noqa: E402
from minigpt.inference.generate import generate  # noqa: E402
from minigpt.model import GPT, GPTConfig  # noqa: E402
from minigpt.posttrain.rl import RLSettings, rl_train  # noqa: E402
from minigpt.posttrain.tasks import load_task  # noqa: E402
from minigpt.tokenizer.tokenizer import load_tokenizer  # noqa: E402

G = 16


def torch_rollout(torch, model, prompts, new, seed):
    """P prompts (equal lengths) x G streams, `new` sampled tokens each, with a KV cache."""
    P, T0 = len(prompts), len(prompts[0])
    torch.manual_seed(seed)
    with torch.no_grad():
        kv = TorchKV(torch, model, P * G, T0 + new, torch.float32)
        pre = TorchKV(torch, model, P, T0 + new, torch.float32)
        pre.k, pre.v = kv.k[:, :P], kv.v[:, :P]                                   # views: fill the first P rows
        logits = pre.forward(torch.tensor(prompts), 0)                            # (P, V) one pass per prompt
        kv.k[:, P:], kv.v[:, P:] = kv.k[:, :P].repeat(1, G - 1, 1, 1, 1), kv.v[:, :P].repeat(1, G - 1, 1, 1, 1)
        logits = logits.repeat(G, 1)                                              # (P G, V) stream s: prompt s % P
        out = []
        for t in range(new):
            tok = torch.multinomial(torch.softmax(logits, -1), 1)                 # (P G, 1)
            out.append(tok)
            if t + 1 < new:
                logits = kv.forward(tok, T0 + t)
        return torch.cat(out, 1)


def bench_rollout(model, torch, P, T0, new, rounds):
    rng = np.random.default_rng(0)
    prompts = rng.integers(0, model.config.vocab_size, (P, T0)).tolist()
    ours, theirs, ratios = [], [], []
    n_tok = P * G * new
    for r in range(rounds + 1):  # round 0 warms both up
        t0 = time.perf_counter()
        out = generate(model, prompts, new, temperature=1.0, seed=r, n=G)
        a = time.perf_counter() - t0
        assert sum(map(len, out)) == n_tok
        if torch is not None:
            t0 = time.perf_counter()
            torch_rollout(torch, model, prompts, new, r)
            b = time.perf_counter() - t0
        if r:
            ours.append(n_tok / a)
            if torch is not None:
                theirs.append(n_tok / b)
                ratios.append(b / a)
    return ours, theirs, ratios


def rl_share(base, steps, task):
    """Run `steps` RL steps on the base and return (rollout share, median seconds per step)."""
    ckpt, tok_path = resolve_model(base)
    model, tok = GPT.load(ckpt), load_tokenizer(tok_path)
    s = RLSettings(base=base, task=task, steps=steps, eval_every=10 ** 6, eval_problems=1, eval_samples=1, plot=False)
    task = load_task(task, base_dir=os.path.dirname(ckpt), config=model.config)
    with tempfile.TemporaryDirectory() as d:
        rl_train(model, tok, task, s, d, {}, log=lambda *a: None)
        rows = [json.loads(x) for x in open(os.path.join(d, "log.jsonl")) if "reward" in x]
    roll, upd = sum(r["rollout_s"] for r in rows), sum(r["update_s"] for r in rows)
    return roll / (roll + upd), statistics.median(r["rollout_s"] + r["update_s"] for r in rows), \
        statistics.median(r["sample_tok_s"] for r in rows)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", help="an SFT run directory: its model for the rollouts, and RL steps for the share")
    ap.add_argument("--task", default="letters")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--new", type=int, default=48)
    ap.add_argument("--rl-steps", type=int, default=5)
    args = ap.parse_args()
    n = threads()
    torch = torch_or_none(n)
    if args.base:
        model = GPT.load(resolve_model(args.base)[0], threads=n)
    else:
        cfg = GPTConfig(vocab_size=1033, **PRESETS["tiny"])
        model = GPT(cfg, seed=0, threads=n)
    cfg = model.config
    print(f"model L={cfg.n_layer} H={cfg.n_head} C={cfg.n_embd} V={cfg.vocab_size}, {model.num_parameters:,} "
          f"parameters; {args.prompts} prompts x {G} streams, {args.prompt_len}-token prompts, {args.new} new "
          f"tokens each; {n} threads; torch {'missing: skipped' if torch is None else torch.__version__}")
    ours, theirs, ratios = bench_rollout(model, torch, args.prompts, args.prompt_len, args.new, args.rounds)
    rows = [["minigpt generate", statistics.median(ours), min(ours), max(ours)]]
    figures = {"rollout_tok_s": statistics.median(ours), "threads": n, "streams": args.prompts * G}
    if torch is not None:
        rows.append(["torch KV cache", statistics.median(theirs), min(theirs), max(theirs)])
        figures.update(torch_tok_s=statistics.median(theirs), rollout_vs_torch=statistics.median(ratios),
                       rollout_vs_torch_min=min(ratios), rollout_vs_torch_max=max(ratios))
    table(rows, ["rollout (sampled tokens/s)", "median", "min", "max"])
    if args.base:
        share, per_step, tok_s = rl_share(args.base, args.rl_steps, args.task)
        print(f"RL steps on {args.task}: {100 * share:.0f}% of the wall time in rollouts, "
              f"{100 * (1 - share):.0f}% in the update; {per_step:.1f} s per step; rollouts at {tok_s:,.0f} tok/s")
        figures.update(rl_rollout_share=share, rl_step_s=per_step)
    emit(figures)


if __name__ == "__main__":
    main()
