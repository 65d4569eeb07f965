"""`minigpt prepare`: text -> a trained tokenizer + llm.c token shards, ready for `minigpt train`.

    documents (.txt/.md files, JSONL with a "text" field, Parquet, directories of them)
      -> shuffle the documents (fixed seed), train a byte-level BPE tokenizer on them
      -> encode, each document preceded by <|endoftext|> (as llm.c's fineweb.py does)
      -> the first val_fraction of the tokens are val, the rest train (minigpt/data/shards.py)
      -> OUT/data_val_000000.bin, OUT/data_train_000001.bin ..., OUT/tokenizer.model, OUT/meta.json

meta.json records the vocabulary size, the <|endoftext|> id and the shard names; the trainer reads it.
"""
import json
import os
import time
from collections import Counter

import numpy as np

from ..data.readers import input_kind, list_inputs, read_documents
from ..data.shards import write_shards
from ..fileio import TOKENIZER_FILE, write_json
from ..tokenizer import Tokenizer
from .corpus import builtin_documents


# --------------------------------------------------------------------------------------------------
# reading documents


def read_texts(paths, text_key="text", log=print):
    """The documents' texts from text files, JSONL ({"text": ...} per line), Parquet, and directories
    of them (minigpt/data/readers.py: the one reader). Unreadable records are counted and skipped."""
    files = list_inputs(paths)
    raw = [f for f in files if input_kind(f) == "warc"]
    if raw:
        raise ValueError(f"{raw[0]}: WARC files hold HTML; run `minigpt data` on them first and prepare "
                         f"its documents/ folder")
    if not files:
        raise ValueError(f"{', '.join(paths)}: no .txt, .md, .jsonl or .parquet files there")
    errors, texts = Counter(), []
    for f in files:
        texts += [doc["text"] for doc in read_documents(f, errors, text_key)]
    if errors:
        log(f"skipped unreadable records: {dict(errors)}")
    return texts


# --------------------------------------------------------------------------------------------------
# the tokenizer


def train_tokenizer(docs, vocab_size, pattern="gpt4"):
    """A BPE tokenizer with vocab_size - 256 merges and <|endoftext|> after them (vocab_size=256: plain
    bytes, ids 0..255, <|endoftext|> = 256)."""
    return Tokenizer.train(docs, vocab_size=vocab_size, pattern=pattern)


def save_tokenizer(tok, out_dir):
    """Write the tokenizer beside the shards, and llm.c's decode table (for run.c and llm.c);
    returns its file name for meta.json."""
    tok.save(os.path.join(out_dir, TOKENIZER_FILE))
    tok.save_llmc(os.path.join(out_dir, "tokenizer.bin"))
    return TOKENIZER_FILE


def load_tokenizer(data_dir, meta=None):
    meta = meta or read_meta(data_dir)
    return Tokenizer.load(os.path.join(data_dir, meta["tokenizer"]))


# --------------------------------------------------------------------------------------------------
# tokens -> shards


def read_meta(data_dir):
    path = os.path.join(data_dir, "meta.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{data_dir}: no meta.json here; make one with `minigpt prepare`")
    with open(path) as f:
        meta = json.load(f)
    for key in ("vocab_size", "eot", "tokenizer", "train", "val"):
        if key not in meta:
            raise ValueError(f"{path}: missing key {key!r} (found {sorted(meta)})")
    return meta


def prepare(docs, out_dir, vocab_size=4096, pattern="gpt4", val_fraction=0.1, shard_tokens=100_000_000,
            seed=0, log=print):
    """The whole stage: returns the meta dict written to out_dir/meta.json."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    docs = [d for d in docs if d]
    if not docs:
        raise ValueError("no documents to prepare (every input was empty)")
    order = np.random.default_rng(seed).permutation(len(docs))  # mix sources before the split
    docs = [docs[i] for i in order]
    os.makedirs(out_dir, exist_ok=True)
    t0 = time.time()
    tok = train_tokenizer(docs, vocab_size, pattern)
    log(f"tokenizer: {tok.n_vocab} ids ({time.time() - t0:.1f}s)")
    if tok.n_vocab > 65536:
        raise ValueError(f"token shards hold uint16 ids: a vocabulary of {tok.n_vocab} does not fit")
    t0 = time.time()
    encoded = tok.encode_ordinary_batch(docs)
    n_tokens = sum(len(ids) + 1 for ids in encoded)  # + the <|endoftext|> before each
    n_val = max(1, int(n_tokens * val_fraction))
    paths = write_shards(encoded, tok.eot, out_dir, shard_tokens, val_tokens=n_val)
    log(f"encoded {len(docs)} documents, {sum(len(d) for d in docs):,} chars -> {n_tokens:,} tokens "
        f"({time.time() - t0:.1f}s)")
    names = [os.path.basename(p) for p in paths]
    meta = {
        "vocab_size": int(tok.n_vocab), "eot": int(tok.eot), "tokenizer": save_tokenizer(tok, out_dir),
        "documents": len(docs), "tokens": int(n_tokens), "seed": seed,
        "train": [n for n in names if "_train_" in n], "val": [n for n in names if "_val_" in n],
    }
    write_json(os.path.join(out_dir, "meta.json"), meta)
    return meta


# --------------------------------------------------------------------------------------------------
# the subcommand


def add_arguments(p):
    p.add_argument("inputs", nargs="*", help="text files, directories, JSONL files (default: the built-in "
                   "corpus: pydoc topics + stdlib docstrings)")
    p.add_argument("--out", default=None, help="output directory (default: runs/data/<name of the first input>)")
    p.add_argument("--vocab-size", type=int, default=4096, help="tokenizer vocabulary, 256 = bytes (default 4096)")
    p.add_argument("--pattern", default="gpt4", choices=["gpt2", "gpt4"], help="pre-split regex (default gpt4)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of tokens held out (default 0.1)")
    p.add_argument("--shard-tokens", type=int, default=100_000_000, help="tokens per shard (default 1e8)")
    p.add_argument("--text-key", default="text", help="JSONL field holding the text (default 'text')")
    p.add_argument("--seed", type=int, default=0, help="document shuffle seed")


def run(args):
    if args.inputs:
        docs = read_texts(args.inputs, args.text_key)
        name = os.path.splitext(os.path.basename(os.path.normpath(args.inputs[0])))[0]
    else:
        docs, name = builtin_documents(), "builtin"
    out = args.out or os.path.join("runs", "data", name)
    meta = prepare(docs, out, vocab_size=args.vocab_size, pattern=args.pattern, val_fraction=args.val_fraction,
                   shard_tokens=args.shard_tokens, seed=args.seed)
    print(f"wrote {out}: {len(meta['train'])} train + {len(meta['val'])} val shards, "
          f"{meta['tokens']:,} tokens, vocabulary {meta['vocab_size']}")
    return 0
