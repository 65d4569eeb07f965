"""Tokenizer speed against real peers, same process, same inputs.

  encode: tinyshakespeare.txt with GPT-2's ranks, MB/s, vs tiktoken (one thread, then all cores on
          the file's paragraphs as a batch); ids are checked equal before timing
  train:  vocab 4096 on the same file, GPT-2 split, vs HF `tokenizers` (ByteLevel BPE, same merges count)

Prints a table, then one JSON line: X_vs_Y is X's throughput over Y's (> 1: X faster).
    python benches/bench_tokenizer.py [--repeat 5]
"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from minigpt.tokenizer import Tokenizer, pretokenize  # noqa: E402
from minigpt.tokenizer.files import read_tiktoken  # noqa: E402

DATA = os.path.join(HERE, "..", "..", "shared", "data")


def best(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    text_path, ranks_path = os.path.join(DATA, "tinyshakespeare.txt"), os.path.join(DATA, "gpt2.tiktoken")
    if not (os.path.exists(text_path) and os.path.exists(ranks_path)):
        print(json.dumps({"skipped": "../shared/data/tinyshakespeare.txt or gpt2.tiktoken absent"}))
        return
    text = open(text_path, encoding="utf-8").read()
    mb = len(text.encode("utf-8")) / 1e6
    docs = text.split("\n\n")
    cores = os.cpu_count() or 1
    res, rows = {"cores": cores, "mb": round(mb, 3)}, []

    t = time.perf_counter()
    tok = Tokenizer.from_tiktoken(ranks_path, pattern="gpt2")
    tok.encode_ordinary("warm up: builds the Unicode class table once")
    res["load_s"] = round(time.perf_counter() - t, 3)
    cold = time.perf_counter()
    ids = tok.encode_ordinary(text)                              # first pass: empty chunk cache
    cold = time.perf_counter() - cold
    ours_1 = best(lambda: tok.encode_ordinary(text), args.repeat)
    ours_n = best(lambda: tok.encode_ordinary_batch(docs, num_threads=cores), args.repeat)
    res.update(encode_1t_cold_mbps=round(mb / cold, 2), encode_1t_mbps=round(mb / ours_1, 2),
               encode_all_mbps=round(mb / ours_n, 2))
    rows += [("encode 1 thread, cold cache", "minigpt", mb / cold), ("encode 1 thread", "minigpt", mb / ours_1),
             (f"encode {cores} threads (batch)", "minigpt", mb / ours_n)]
    try:
        import tiktoken
        enc = tiktoken.Encoding(name="gpt2-offline", pat_str=pretokenize.GPT2_PATTERN,
                                mergeable_ranks={t: i for i, t in enumerate(read_tiktoken(ranks_path))},
                                special_tokens={"<|endoftext|>": 50256})
        assert enc.encode_ordinary(text) == ids, "ids differ from tiktoken's"
        tt_1 = best(lambda: enc.encode_ordinary(text), args.repeat)
        tt_n = best(lambda: enc.encode_ordinary_batch(docs, num_threads=cores), args.repeat)
        res.update(tiktoken_1t_mbps=round(mb / tt_1, 2), tiktoken_all_mbps=round(mb / tt_n, 2),
                   encode_vs_tiktoken=round(tt_1 / ours_1, 2), encode_cold_vs_tiktoken=round(tt_1 / cold, 2),
                   encode_all_vs_tiktoken=round(tt_n / ours_n, 2))
        rows += [("encode 1 thread", "tiktoken", mb / tt_1), (f"encode {cores} threads (batch)", "tiktoken", mb / tt_n)]
    except ImportError:
        res["tiktoken"] = "skipped: not installed"

    vocab = 4096
    ours_t = best(lambda: Tokenizer.train(text, vocab_size=vocab, pattern="gpt2"), max(1, args.repeat // 2))
    res["train_s"] = round(ours_t, 3)
    rows.append((f"train vocab {vocab} (s)", "minigpt", ours_t))
    try:
        from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers

        def hf_train():
            hf = HFTokenizer(models.BPE())
            hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            hf.decoder = decoders.ByteLevel()
            trainer = trainers.BpeTrainer(vocab_size=vocab + 1, special_tokens=["<|endoftext|>"], show_progress=False,
                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), min_frequency=0)
            hf.train_from_iterator([text], trainer=trainer)
            return hf
        hf_t = best(hf_train, max(1, args.repeat // 2))
        res.update(hf_train_s=round(hf_t, 3), train_vs_hf=round(hf_t / ours_t, 2))
        rows.append((f"train vocab {vocab} (s)", "HF tokenizers", hf_t))
    except ImportError:
        res["hf_tokenizers"] = "skipped: not installed"

    print(f"{'what':32s} {'who':14s} {'MB/s or s':>10s}")
    for what, who, v in rows:
        print(f"{what:32s} {who:14s} {v:10.3f}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
