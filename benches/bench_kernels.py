"""Each op, C (minigpt/model/ops_c.py) against the NumPy reference (minigpt/model/ops.py), at GPT-2 124M's
shapes for B=4, T=64: ms per call, and the ratio c_vs_numpy (NumPy's time over C's).

The matmuls compare whole ops (NumPy's includes its temporaries and the += of the reference); the
GEMM alone is benches/bench_gemm.py. Same thread count on both sides.
Usage: python benches/bench_kernels.py
"""
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import emit, table, threads, timeit  # noqa: E402

N_THREADS = threads()
os.environ.setdefault("OPENBLAS_NUM_THREADS", str(N_THREADS))
os.environ.setdefault("OMP_NUM_THREADS", str(N_THREADS))
# every OpenMP runtime in the process (ours, PyTorch's) sleeps when idle rather than spinning: the
# same policy on both sides, and the one that holds up on a shared machine (see minigpt/model/ops_c.py)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

from minigpt.model import ops, ops_c  # noqa: E402

B, T, C, NH, V, VP = 4, 64, 768, 12, 50257, 50304


def problems(rng):
    """name -> (function name, argument builder): fresh buffers, the same for both sides."""
    r = lambda *s: rng.standard_normal(s, dtype=np.float32)  # noqa: E731
    e = lambda *s: np.zeros(s, np.float32)  # noqa: E731
    ids = rng.integers(0, V, (B, T))
    qkv = r(B, T, 3 * C)
    att = np.empty((B, NH, T, T), np.float32)
    ops_c.attention_forward(e(B, T, C), e(B, NH, T, T), att, qkv, B, T, C, NH)
    logits = r(B, T, VP)
    probs = e(B, T, VP)
    ops_c.softmax_crossentropy_forward(e(B, T), probs, logits, ids, B, T, V, VP)
    mean, rstd = e(B, T), e(B, T)
    x = r(B, T, C)
    ops_c.layernorm_forward(e(B, T, C), mean, rstd, x, r(C), r(C), B, T, C)
    N4 = B * T * 4 * C
    n_adam = 4 * C * C  # one fc weight matrix
    return {
        "encoder_forward": ("encoder_forward", (e(B, T, C), ids, r(VP, C), r(1024, C), B, T, C)),
        "encoder_backward": ("encoder_backward", (e(VP, C), e(1024, C), r(B, T, C), ids, B, T, C)),
        "layernorm_forward": ("layernorm_forward", (e(B, T, C), e(B, T), e(B, T), x, r(C), r(C), B, T, C)),
        "layernorm_backward": ("layernorm_backward",
                               (e(B, T, C), e(C), e(C), r(B, T, C), x, r(C), mean, rstd, B, T, C)),
        "matmul_forward fc": ("matmul_forward", (e(B, T, 4 * C), r(B, T, C), r(4 * C, C), r(4 * C), B, T, C, 4 * C)),
        "matmul_backward fc": ("matmul_backward", (e(B, T, C), e(4 * C, C), e(4 * C), r(B, T, 4 * C), r(B, T, C),
                                                   r(4 * C, C), B, T, C, 4 * C)),
        "matmul_forward lmhead": ("matmul_forward", (e(B, T, VP), r(B, T, C), r(VP, C), None, B, T, C, VP)),
        "matmul_backward lmhead": ("matmul_backward", (e(B, T, C), e(VP, C), None, r(B, T, VP), r(B, T, C),
                                                       r(VP, C), B, T, C, VP)),
        "attention_forward": ("attention_forward", (e(B, T, C), e(B, NH, T, T), e(B, NH, T, T), qkv, B, T, C, NH)),
        "attention_backward": ("attention_backward", (e(B, T, 3 * C), e(B, NH, T, T), e(B, NH, T, T), r(B, T, C),
                                                      qkv, att, B, T, C, NH)),
        "gelu_forward": ("gelu_forward", (e(N4), r(N4), N4)),
        "gelu_backward": ("gelu_backward", (e(N4), r(N4), r(N4), N4)),
        "residual_forward": ("residual_forward", (e(B * T * C), r(B * T * C), r(B * T * C), B * T * C)),
        "residual_backward": ("residual_backward", (e(B * T * C), e(B * T * C), r(B * T * C), B * T * C)),
        "softmax_crossentropy_forward": ("softmax_crossentropy_forward",
                                         (e(B, T), e(B, T, VP), logits, ids, B, T, V, VP)),
        "softmax_crossentropy_backward": ("softmax_crossentropy_backward",
                                          (e(B, T, VP), r(B, T) / (B * T), probs, ids, B, T, V, VP)),
        "adamw_update (fcw)": ("adamw_update", (r(n_adam), r(n_adam), e(n_adam), e(n_adam), n_adam,
                                                1e-4, 0.9, 0.95, 1e-8, 0.1, 1)),
    }


def main():
    ops_c.set_threads(N_THREADS)
    rng = np.random.default_rng(0)
    rows, figures, ratios, noise = [], {}, [], []
    for label, (fn, args) in problems(rng).items():
        reps = 3 if "lmhead" in label or "crossentropy" in label else 10
        t_c, n_c = timeit(lambda: getattr(ops_c, fn)(*args), repeat=reps)
        t_np, n_np = timeit(lambda: getattr(ops, fn)(*args), repeat=reps)
        ratios.append(t_np / t_c)
        noise += [n_c, n_np]
        rows.append([label, 1e3 * t_c, 1e3 * t_np, t_np / t_c])
        figures[label.replace(" ", "_").replace("(", "").replace(")", "") + "_c_vs_numpy"] = round(t_np / t_c, 2)
    print(f"ms per call at GPT-2 124M shapes (B={B}, T={T}), {N_THREADS} threads")
    table(rows, ["op", "C ms", "numpy ms", "c_vs_numpy"])
    print(f"timing noise (max-min)/median: median {100 * statistics.median(noise):.0f}%, max {100 * max(noise):.0f}%")
    figures.update(threads=N_THREADS, c_vs_numpy_min=round(min(ratios), 2),
                   c_vs_numpy_median=round(statistics.median(ratios), 2))
    emit(figures)


if __name__ == "__main__":
    main()
