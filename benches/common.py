"""Shared by the benches: timing, the machine's thread count, the table and the JSON last line."""
import json
import os
import statistics
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


def emit(figures):
    """The last line of every bench: one JSON object of its figures."""
    print(json.dumps(figures, sort_keys=True))


def torch_or_none(nthreads):
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(nthreads)
    return torch
