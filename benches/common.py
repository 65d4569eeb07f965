"""Shared by the benches: timing, the machine's thread count, the table and the JSON last line."""
import json
import os
import statistics
import sys
import time


def threads():
    """The thread count every side of a comparison uses: OMP_NUM_THREADS, else all cores."""
    return int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count())


def timeit(fn, repeat=5, warmup=1):
    """Median wall time of fn() in seconds, and the spread (max-min)/median as the machine noise."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return med, (max(times) - min(times)) / med


def table(rows, headers):
    """Print rows (lists) under headers as an aligned text table."""
    cells = [[str(h) for h in headers]] + [[c if isinstance(c, str) else f"{c:.4g}" for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for i, r in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def cpu():
    """The CPU by name and by the SIMD it has, e.g. "AMD EPYC (avx512f avx512_bf16)"."""
    name, flags = "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    name = value.strip()
                elif key.strip() in ("flags", "Features"):
                    flags = set(value.split())
    except OSError:
        pass
    simd = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "asimd") if f in flags]
    return f"{name} ({' '.join(simd)})"


def blas():
    """NumPy's BLAS and the kernel it picked for this CPU (OpenBLAS: e.g. "openblas SkylakeX")."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (pip install threadpoolctl)"
    libs = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    return ", ".join(f"{i['internal_api']} {i.get('architecture', '')}".strip() for i in libs) or "none loaded"


def emit(figures):
    """The last line of every bench: one JSON object of its figures, with the CPU, minigpt's GEMM
    micro-kernel and NumPy's BLAS kernel, so a figure always says what machine made it."""
    figures = dict(figures, cpu=cpu())
    ops_c = sys.modules.get("minigpt.model.ops_c")  # whatever the bench loaded; nothing new is imported
    if ops_c is not None:
        figures.setdefault("kernel", ops_c.kernel_name())
    if "numpy" in sys.modules:
        figures.setdefault("blas", blas())
    print(json.dumps(figures, sort_keys=True))


def torch_or_none(nthreads):
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(nthreads)
    return torch
