"""`minigpt serve` under load: total generated tokens per second with 1, 4 and 16 concurrent
streaming clients, and the time to first token of a new request while 15 others decode.

The server is a `minigpt serve` subprocess (16 slots, C decode kernels) on a random model of the
given shape whose special tokens are never sampled, so every reply runs to max_tokens. Clients
are threads in this process, each sending streaming requests back to back over raw HTTP and
counting the tokens that the usage chunk reports. Peers: batching's worth is 16 clients' tokens/s over
one client's, within each round of measurements (goal >= 4); first-token latency is compared with what it should cost, a prefill of
the same prompt on an idle server (ttft_idle) plus one decode step at 16 streams (step_busy).
Usage: python benches/bench_serve.py [--layers 12 --embd 768 --tokens 64 --repeat 3]
"""
import argparse
import http.client
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
from chatmodel import make_chat_model  # noqa: E402
from common import emit, table  # noqa: E402


def stream_request(port, content, max_tokens, seed, marks=None):
    """One streaming chat completion; returns (tokens, seconds to the first token, seconds in all).
    marks, if given, gets the time of every token (the gaps between them are decode steps)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    body = {"messages": [{"role": "user", "content": content}], "stream": True, "max_tokens": max_tokens,
            "seed": seed, "temperature": 1.0, "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    r = conn.getresponse()
    tokens, first = 0, None
    for line in r:
        if not line.startswith(b"data: {"):
            continue
        chunk = json.loads(line[6:])
        if chunk.get("usage"):
            tokens = chunk["usage"]["completion_tokens"]
        # a content chunk is a token, or two when they split a character between them
        if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
            now = time.perf_counter()
            first = first or now - t0
            if marks is not None:
                marks.append(now)
    conn.close()
    return tokens, first, time.perf_counter() - t0


def throughput(port, clients, requests_each, max_tokens):
    """Total generated tokens per second of `clients` threads each sending requests back to back."""
    counts, errors = [0] * clients, []

    def client(i):
        try:
            for k in range(requests_each):
                counts[i] += stream_request(port, f"client {i} request {k}", max_tokens, seed=i * 1000 + k)[0]
        except OSError as e:
            errors.append(e)
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors or sum(counts) != clients * requests_each * max_tokens:
        raise RuntimeError(f"{len(errors)} clients failed ({errors[:1]}); {sum(counts)} tokens of "
                           f"{clients * requests_each * max_tokens}")
    return sum(counts) / (time.perf_counter() - t0)


def first_token(port, prompt, busy):
    """(ttft of a new request, mean gap between the busy streams' tokens) with `busy` streams decoding."""
    marks, done = [], []
    background = [threading.Thread(target=lambda i=i: done.append(
        stream_request(port, f"background {i}", 400, i, marks if i == 0 else None))) for i in range(busy)]
    for t in background:
        t.start()
    if busy:
        while len(marks) < 20:  # every background stream is decoding
            time.sleep(0.005)
    _, ttft, _ = stream_request(port, prompt, 4, seed=99)
    for t in background:
        t.join()
    gaps = [b - a for a, b in zip(marks[1:], marks[2:])]
    return ttft, (statistics.median(gaps) if gaps else None)


def cpu_name():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--embd", type=int, default=768)
    p.add_argument("--tokens", type=int, default=64, help="max_tokens of each request")
    p.add_argument("--requests", type=int, default=2, help="requests per client per measurement")
    p.add_argument("--repeat", type=int, default=3, help="measurements per client count (median, spread)")
    args = p.parse_args()

    folder = tempfile.mkdtemp(prefix="bench_serve_")
    ckpt, tok = make_chat_model(folder, block_size=512, n_layer=args.layers, n_head=args.embd // 64,
                                n_embd=args.embd)
    server = subprocess.Popen([sys.executable, "-m", "minigpt", "serve", "--checkpoint", ckpt, "--tokenizer", tok,
                               "--port", "0", "--slots", "16"], stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline().split()[2].rstrip("/").rsplit(":", 1)[1])
        stream_request(port, "warm up", 8, 0)
        # rounds of (1, 4, 16) clients, interleaved so that the machine's drift hits all three alike;
        # the ratio is taken within each round, then the median over rounds
        runs = {c: [] for c in (1, 4, 16)}
        for _ in range(args.repeat):
            for clients in runs:
                runs[clients].append(throughput(port, clients, args.requests, args.tokens))
        rows, figures = [], {}
        for clients, tps in runs.items():
            med = statistics.median(tps)
            rows.append([f"{clients} clients", med, f"{100 * (max(tps) - min(tps)) / med:.0f}%",
                         f"{statistics.median(a / b for a, b in zip(tps, runs[1])):.2f}"])
            figures[f"tok_s_{clients}"] = round(med, 1)
            figures[f"spread_{clients}"] = round((max(tps) - min(tps)) / med, 3)
        for clients in (4, 16):
            ratios = [a / b for a, b in zip(runs[clients], runs[1])]
            figures[f"clients{clients}_vs_clients1"] = round(statistics.median(ratios), 2)
            figures[f"clients{clients}_vs_clients1_range"] = [round(min(ratios), 2), round(max(ratios), 2)]
        print(f"minigpt serve, {args.layers} layers x {args.embd} channels, {args.tokens} tokens per request, "
              f"{cpu_name()}, {os.cpu_count()} cores, {args.repeat} rounds")
        table(rows, ["streaming clients", "generated tok/s", "spread", "vs 1 client"])

        prompt = "a new request " * 20
        idle = sorted(first_token(port, prompt, 0)[0] for _ in range(args.repeat))
        busy = [first_token(port, prompt, 15) for _ in range(args.repeat)]
        ttft_busy = statistics.median(t for t, _ in busy)
        step_busy = statistics.median(g for _, g in busy)
        ttft_idle = statistics.median(idle)
        print()
        table([["new request, server idle", 1000 * ttft_idle],
               ["new request, 15 streams decoding", 1000 * ttft_busy],
               ["one decode step at 16 streams", 1000 * step_busy],
               ["idle + one step", 1000 * (ttft_idle + step_busy)]], ["time to first token", "ms"])
        figures.update(ttft_idle_ms=round(1000 * ttft_idle, 2), ttft_busy_ms=round(1000 * ttft_busy, 2),
                       step_busy_ms=round(1000 * step_busy, 2),
                       ttft_busy_vs_idle_plus_step=round(ttft_busy / (ttft_idle + step_busy), 2),
                       cpu=cpu_name(), cores=os.cpu_count(), layers=args.layers, embd=args.embd)
        emit(figures)
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
