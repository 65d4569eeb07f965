"""The C sgemm (csrc/gemm.c) against NumPy's `@` (OpenBLAS sgemm) on GPT-2 124M's matmul shapes.

B=4, T=64 (M = B*T = 256 rows), C=768, Vp=50304: the three products of each linear layer
(forward out = inp W^T, backward dinp = dout W and dW = dout^T inp) with the operands laid out as
the model has them, so both sides do their transposes their own way. Same thread count on both
sides (OMP_NUM_THREADS, else all cores; OpenBLAS gets it through OPENBLAS_NUM_THREADS).
With one thread (OMP_NUM_THREADS=1) both sides run in the calling thread, and the bench times that
thread's CPU time: immune to other processes on a shared machine, so it measures the kernels alone.
With more threads it times the wall clock, takes turns between the two sides, and keeps the best
of the rounds (the least disturbed one); the spread is printed as the noise. Each turn is a run of
consecutive calls after a pause: OpenBLAS's worker threads spin for a while after a call returns,
and a C call started at once would be racing them for the second core (and OpenMP's threads would
race OpenBLAS in turn): each library is timed in its own steady state, as a model step sees it.

Two classes of CPU on one machine: by default each side runs its best kernel for this CPU (OpenBLAS
its own pick, with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE cleared for this process: set for older
OpenBLAS builds on some machines, they slow a current one); --avx2 forces both sides to their AVX2
kernels (MINIGPT_KERNEL=avx2, OPENBLAS_CORETYPE=Haswell), the comparison an AVX2 machine would see.
The JSON line names the kernel each side ran (OpenBLAS's through threadpoolctl).
Usage: python benches/bench_gemm.py [--quick] [--avx2]
"""
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import blas, emit, table, threads  # noqa: E402

N_THREADS = threads()
AVX2 = "--avx2" in sys.argv
os.environ.pop("OPENBLAS_L2_SIZE", None)  # before NumPy loads OpenBLAS: see above
if AVX2:
    os.environ["OPENBLAS_CORETYPE"] = "Haswell"
    os.environ["MINIGPT_KERNEL"] = "avx2"
else:
    os.environ.pop("OPENBLAS_CORETYPE", None)
os.environ.setdefault("OPENBLAS_NUM_THREADS", str(N_THREADS))  # before NumPy loads OpenBLAS
os.environ.setdefault("OMP_NUM_THREADS", str(N_THREADS))
# every OpenMP runtime in the process (ours, PyTorch's) sleeps when idle rather than spinning: the
# same policy on both sides, and the one that holds up on a shared machine (see minigpt/model/ops_c.py)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

from minigpt.model import ops_c  # noqa: E402

M, C, VP = 4 * 64, 768, 50304
LAYERS = {"qkv": (C, 3 * C), "attproj": (C, C), "fc": (C, 4 * C), "fcproj": (4 * C, C), "lmhead": (C, VP)}


def cases():
    """(name, out, a, b) with out = a @ b; a and b are views of the model-layout arrays."""
    rng = np.random.default_rng(0)
    for layer, (cin, cout) in LAYERS.items():
        inp = rng.standard_normal((M, cin), dtype=np.float32)
        w = rng.standard_normal((cout, cin), dtype=np.float32) * 0.02   # (OC, C) as llm.c stores it
        dout = rng.standard_normal((M, cout), dtype=np.float32)
        yield f"{layer} fwd", np.empty((M, cout), np.float32), inp, w.T      # inp @ w^T
        yield f"{layer} dinp", np.empty((M, cin), np.float32), dout, w       # dout @ w
        yield f"{layer} dw", np.empty((cout, cin), np.float32), dout.T, inp  # dout^T @ inp


PAUSE_S = 0.3  # longer than OpenBLAS's spin-wait timeout (2^28 cycles, ~0.1 s here)


def best_of(fns, rounds, run=3):
    """Each fn timed `rounds` turns of `run` consecutive calls, taking turns, a pause before each
    turn; per fn the best call time and the spread (max-min)/min of the turns' best times."""
    clock = time.thread_time if N_THREADS == 1 else time.perf_counter
    times = [[] for _ in fns]
    for fn in fns:
        fn()  # warm-up
    for _ in range(rounds):
        for ts, fn in zip(times, fns):
            if N_THREADS > 1:
                time.sleep(PAUSE_S)
            fn()  # wakes the library's threads
            best = float("inf")
            for _ in range(run):
                t0 = clock()
                fn()
                best = min(best, clock() - t0)
            ts.append(best)
    return [(min(ts), (max(ts) - min(ts)) / min(ts)) for ts in times]


def main():
    quick = "--quick" in sys.argv
    ops_c.set_threads(N_THREADS)
    rows, ratios = [], []
    noise = []
    for name, out, a, b in cases():
        if quick and "lmhead" in name:
            continue
        m, k = a.shape
        n = b.shape[1]
        flop = 2.0 * m * n * k
        ref = np.matmul(a, b)
        ops_c.gemm(out, a, b)
        err = float(np.abs(out - ref).max() / (np.abs(ref).max() + 1e-30))
        reps = 3 if "lmhead" in name else 5
        (t_c, n_c), (t_np, n_np) = best_of([lambda: ops_c.gemm(out, a, b), lambda: np.matmul(a, b, out=out)], reps)
        ratio = t_np / t_c
        ratios.append(ratio)
        noise += [n_c, n_np]
        rows.append([name, f"{m}x{k}x{n}", flop / t_c / 1e9, flop / t_np / 1e9, ratio, f"{err:.1e}"])
    clock = "thread CPU time" if N_THREADS == 1 else "wall clock"
    print(f"sgemm GFLOP/s, {N_THREADS} threads ({clock}, best of rounds), micro-kernel {ops_c.KERNEL}, "
          f"NumPy: {blas()}")
    table(rows, ["product", "MxKxN", "C GF/s", "numpy GF/s", "gemm_vs_blas", "max rel err"])
    print(f"timing noise (max-min)/min per measurement: median {100 * statistics.median(noise):.0f}%, "
          f"max {100 * max(noise):.0f}%")
    emit({"threads": N_THREADS, "kernel": ops_c.KERNEL,
          "gemm_vs_blas_min": round(min(ratios), 3), "gemm_vs_blas_median": round(statistics.median(ratios), 3),
          "per_shape": {r[0]: round(r[4], 3) for r in rows}})


if __name__ == "__main__":
    main()
