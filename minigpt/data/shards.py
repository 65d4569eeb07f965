"""Documents -> llm.c token shards: <|endoftext|> before every document (as llm.c's fineweb.py
does, so it separates them), uint16 tokens, the 20240520 v1 header (minigpt.fileio.write_shard).

Shards hold `shard_tokens` tokens each and a document may continue into the next shard. The first
shard is the validation split and the rest are training, llm.c's convention; when everything fits
in a single shard it is split 10% / 90% so there is always one of each.
"""
import os

import numpy as np

from minigpt.fileio import write_shard


def shard_path(out_dir, index, prefix="data"):
    split = "val" if index == 0 else "train"
    return os.path.join(out_dir, f"{prefix}_{split}_{index:06d}.bin")


def write_shards(texts, tok, out_dir, shard_tokens=100_000_000):
    """Tokenizes a stream of texts with tok (encode_ordinary, eot) into shards; memory holds one
    shard. Returns the list of shard paths written."""
    if tok.eot >= 2**16:
        raise ValueError(f"token shards store uint16: the tokenizer's <|endoftext|> id {tok.eot} does not fit")
    if shard_tokens < 2:
        raise ValueError(f"shard_tokens must be at least 2, found {shard_tokens}")
    os.makedirs(out_dir, exist_ok=True)
    buf = np.empty(shard_tokens, dtype=np.uint16)
    fill, paths = 0, []

    def flush(tokens):
        path = shard_path(out_dir, len(paths))
        write_shard(path, tokens)  # atomic (temp file, then rename): a shard on disk is always whole
        paths.append(path)

    for text in texts:
        ids = np.asarray([tok.eot] + list(tok.encode_ordinary(text)), dtype=np.int64)
        if ids.max() >= 2**16:
            raise ValueError(f"token id {int(ids.max())} does not fit the uint16 shard format")
        ids = ids.astype(np.uint16)
        while len(ids):
            take = min(shard_tokens - fill, len(ids))
            buf[fill:fill + take] = ids[:take]
            fill, ids = fill + take, ids[take:]
            if fill == shard_tokens:
                flush(buf)
                fill = 0
    if fill:
        if not paths:  # everything fits in one shard: split it into val and train
            n_val = max(1, fill // 10)
            flush(buf[:n_val].copy())
            if fill > n_val:
                flush(buf[n_val:fill].copy())
        else:
            flush(buf[:fill].copy())
    return paths
