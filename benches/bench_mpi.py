"""Data-parallel training over MPI: `minigpt train` on 1 rank against `mpirun -np 2`, one thread per
rank, the SAME global batch (strong scaling), on a small model and on GPT-2 124M (few steps, small
B*T). Figures from each run's log.jsonl, the first step (warm-up) left out:

    tok/s         global batch tokens / step time (rank 0's clock; every rank waits in the all-reduce)
    comm share    seconds in the gradient all-reduce (and ZeRO-1's gather) / step time; on this machine
                  that includes the wait for the slower rank
    efficiency    tok/s(2 ranks) / (2 x tok/s(1 rank)): 1.0 is perfect scaling

The sides take turns (1, 2, 1, 2, ...) so load from elsewhere hits both; medians over rounds, and
the spread of the per-round efficiencies as the noise.
Usage: python benches/bench_mpi.py [--rounds N] [--quick (small model only)]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import emit, table  # noqa: E402

import numpy as np  # noqa: E402

from minigpt.fileio import write_shard  # noqa: E402

MODELS = {  # name: (flags, steps, global batch B, T)
    "small": (["--n-layer", "4", "--n-head", "4", "--n-embd", "128", "--block-size", "128"], 12, 8, 128),
    "124M": (["--model", "124M"], 4, 2, 64),
}


def synthetic_data(root, vocab, n=200_000):
    rng = np.random.default_rng(0)
    for name in ("data_train_000000.bin", "data_val_000000.bin"):
        write_shard(os.path.join(root, name), rng.integers(0, vocab, n).astype(np.uint16))
    return root


def run(ranks, flags, out, data, vocab, steps, B, T):
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    cmd = [sys.executable, "-m", "minigpt", "train", *flags, "--data", data, "--vocab-size", str(vocab),
           "--batch-size", str(B), "--seq-len", str(T), "--steps", str(steps), "--eval-every", str(10 * steps),
           "--eval-batches", "1", "--warmup", "0", "--threads", "1", "--backend", "c", "--no-plot",
           "--out", out]
    if ranks > 1:
        mpirun = shutil.which("mpirun", path=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
        cmd = [mpirun, "-np", str(ranks), "--oversubscribe", *cmd]
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=1800)
    with open(os.path.join(out, "log.jsonl")) as f:
        recs = [r for r in map(json.loads, f) if "loss" in r][1:]  # the first step warms up
    shutil.rmtree(out)
    dt = statistics.median(r["dt"] for r in recs)
    comm = statistics.median(r.get("comm", 0.0) for r in recs)
    return B * T / dt, comm / dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    print(f"CPU: {cpu}, {os.cpu_count()} cores; 1 thread per rank; Open MPI over shared memory")
    rows, figures = [], {}
    tmp = tempfile.mkdtemp(prefix="bench_mpi_")
    try:
        for name, (flags, steps, B, T) in MODELS.items():
            if args.quick and name != "small":
                continue
            vocab = 50257 if name == "124M" else 1024
            data = synthetic_data(os.path.join(tmp, f"data-{name}"), vocab)
            per = {1: [], 2: []}
            for r in range(args.rounds):
                for ranks in (1, 2):
                    per[ranks].append(run(ranks, flags, os.path.join(tmp, f"run-{name}-{ranks}-{r}"), data, vocab,
                                          steps, B, T))
            eff = [two[0] / (2 * one[0]) for one, two in zip(per[1], per[2])]
            tok1 = statistics.median(t for t, _ in per[1])
            tok2 = statistics.median(t for t, _ in per[2])
            comm2 = statistics.median(c for _, c in per[2])
            rows.append([name, f"B={B} T={T}", tok1, tok2, f"{100 * comm2:.0f}%", statistics.median(eff),
                         f"{min(eff):.2f}-{max(eff):.2f}"])
            figures[name] = {"tok_s_1": tok1, "tok_s_2": tok2, "comm_share_2": comm2,
                             "efficiency": statistics.median(eff), "efficiency_min": min(eff),
                             "efficiency_max": max(eff)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    table(rows, ["model", "global batch", "tok/s 1 rank", "tok/s 2 ranks", "comm share", "efficiency",
                 "spread"])
    emit(figures)


if __name__ == "__main__":
    main()
