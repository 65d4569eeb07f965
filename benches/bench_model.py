"""Forward + backward time per step of the NumPy reference backend, against PyTorch CPU.

GPT-2 124M shapes at B=4, T=64 and a small config; PyTorch (when installed) runs the same model,
same weights, same thread count, in the same process. Usage: python benches/bench_model.py
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import emit, table, threads, timeit, torch_or_none  # noqa: E402

from minigpt.model import GPT, GPTConfig  # noqa: E402

CONFIGS = {
    "gpt2-124M": (GPTConfig(), 4, 64),
    "small (L4 H4 C128)": (GPTConfig(block_size=64, vocab_size=256, n_layer=4, n_head=4, n_embd=128), 12, 64),
}


def main():
    n = threads()
    torch = torch_or_none(n)
    rows, figures = [], {"threads": n}
    for label, (cfg, B, T) in CONFIGS.items():
        rng = np.random.default_rng(0)
        idx = rng.integers(0, cfg.vocab_size, (B, T))
        targets = rng.integers(0, cfg.vocab_size, (B, T))
        model = GPT(cfg, backend="numpy", seed=0)

        def step():
            model.forward(idx, targets)
            model.zero_grad()
            model.backward()
        t_np, noise_np = timeit(step, repeat=3 if cfg.n_layer > 4 else 10)
        row = [label, f"{B}x{T}", 1e3 * t_np, f"{100 * noise_np:.0f}%"]
        key = "numpy_step_ms" if label == "gpt2-124M" else "small_numpy_step_ms"
        figures[key] = round(1e3 * t_np, 2)
        if torch is not None:
            from torch_gpt2 import TorchGPT2
            tm = TorchGPT2(model)
            ti, tt = torch.tensor(idx), torch.tensor(targets)

            def tstep():
                tm.zero_grad(set_to_none=False)
                tm(ti, tt)[1].backward()
            t_t, noise_t = timeit(tstep, repeat=3 if cfg.n_layer > 4 else 10)
            row += [1e3 * t_t, f"{100 * noise_t:.0f}%", t_t / t_np]
            if label == "gpt2-124M":
                figures.update(torch_step_ms=round(1e3 * t_t, 2), numpy_vs_torch=round(t_t / t_np, 3))
            else:
                figures["small_numpy_vs_torch"] = round(t_t / t_np, 3)
        else:
            row += ["skipped", "", ""]
            figures["torch"] = "skipped: not installed"
        rows.append(row)
    print(f"forward + backward per step, {n} threads")
    table(rows, ["config", "BxT", "numpy ms", "noise", "torch ms", "noise", "numpy_vs_torch"])
    emit(figures)


if __name__ == "__main__":
    main()
