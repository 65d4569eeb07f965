"""Documents -> llm.c token shards: <|endoftext|> before every document (as llm.c's fineweb.py
does, so it separates them), uint16 tokens, the 20240520 v1 header (minigpt/fileio.py's write_shard).
The one shard writer: `minigpt data` and `minigpt prepare` both write through it.

Shards hold `shard_tokens` tokens each and a document may continue into the next shard. The first
shard is the validation split and the rest are training, llm.c's convention; when everything fits
in a single shard it is split 10% / 90% so there is always one of each.
"""
import os

import numpy as np

from ..fileio import write_shard


def write_shards(docs, eot, out_dir, shard_tokens=100_000_000, val_tokens=None):
    """Write documents (each an iterable of token ids) into shards, <|endoftext|> (eot) before each;
    memory holds one shard. The validation split: the first val_tokens tokens in shards of their
    own, or (val_tokens=None) llm.c's convention above. Returns the shard paths written."""
    if not 0 <= eot < 2**16:
        raise ValueError(f"token shards store uint16: the <|endoftext|> id {eot} does not fit")
    if shard_tokens < 2:
        raise ValueError(f"shard_tokens must be at least 2, found {shard_tokens}")
    os.makedirs(out_dir, exist_ok=True)
    buf = np.empty(shard_tokens, dtype=np.uint16)
    fill, paths = 0, []
    val_left = val_tokens  # tokens still owed to the val split (None: llm.c's first-shard rule)

    def flush(tokens, split=None):
        split = split or ("val" if not paths else "train")
        path = os.path.join(out_dir, f"data_{split}_{len(paths):06d}.bin")
        write_shard(path, tokens)  # atomic (temp file, then rename): a shard on disk is always whole
        paths.append(path)

    for ids in docs:
        ids = np.asarray([eot] + list(ids), dtype=np.int64)
        if ids.min() < 0 or ids.max() >= 2**16:
            raise ValueError(f"token id {int(ids.max())} does not fit the uint16 shard format")
        ids = ids.astype(np.uint16)
        while len(ids):
            room = shard_tokens - fill if not val_left else min(shard_tokens - fill, val_left)
            take = min(room, len(ids))
            buf[fill:fill + take] = ids[:take]
            fill, ids = fill + take, ids[take:]
            if val_left:
                val_left -= take
                if val_left == 0 or fill == shard_tokens:
                    flush(buf[:fill].copy(), "val")
                    fill = 0
            elif fill == shard_tokens:
                flush(buf, "val" if val_tokens is None and not paths else "train")
                fill = 0
    if fill:
        if val_tokens is None and not paths:  # everything fits in one shard: split it into val and train
            n_val = max(1, fill // 10)
            flush(buf[:n_val].copy(), "val")
            if fill > n_val:
                flush(buf[n_val:fill].copy(), "train")
        else:
            flush(buf[:fill].copy(), "val" if val_left else "train")
    return paths
