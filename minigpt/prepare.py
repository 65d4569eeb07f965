"""`minigpt prepare`: text -> a trained tokenizer + llm.c token shards, ready for `minigpt train`.

    documents (.txt/.md files, a directory of them, JSONL with a "text" field)
      -> shuffle the documents (fixed seed), train a byte-level BPE tokenizer on them
      -> encode, each document preceded by <|endoftext|> (as llm.c's fineweb.py does)
      -> the first (1 - val_fraction) of the tokens are train, the rest val
      -> OUT/train_000000.bin ..., OUT/val_000000.bin ..., OUT/tokenizer.model, OUT/meta.json

meta.json records the vocabulary size, the <|endoftext|> id and the shard names; the trainer reads it.
"""
import glob
import json
import os
import time

import numpy as np

from .fileio import atomic_write, write_shard
from .tokenizer import Tokenizer

TEXT_SUFFIXES = (".txt", ".md", ".rst", ".text")
JSONL_SUFFIXES = (".jsonl", ".json")


# --------------------------------------------------------------------------------------------------
# reading documents


def read_documents(paths, text_key="text"):
    """Yield the documents (str) in text files, JSONL files ({"text": ...} per line) and directories
    of them (recursively, sorted), in order."""
    for path in paths:
        if os.path.isdir(path):
            files = sorted(p for p in glob.glob(os.path.join(path, "**", "*"), recursive=True)
                           if p.endswith(TEXT_SUFFIXES + JSONL_SUFFIXES) and os.path.isfile(p))
            if not files:
                raise ValueError(f"{path}: no {'/'.join(TEXT_SUFFIXES + JSONL_SUFFIXES)} files in this directory")
            yield from read_documents(files, text_key)
        elif path.endswith(JSONL_SUFFIXES):
            with open(path, encoding="utf-8") as f:
                for lineno, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{path}:{lineno}: expected one JSON object per line: {e}") from None
                    if not isinstance(record, dict) or not isinstance(record.get(text_key), str):
                        found = sorted(record) if isinstance(record, dict) else type(record).__name__
                        raise ValueError(f"{path}:{lineno}: expected an object with a string {text_key!r} "
                                         f"field, found {found}")
                    yield record[text_key]
        elif os.path.isfile(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                yield f.read()
        else:
            raise FileNotFoundError(f"{path}: no such file or directory")


# --------------------------------------------------------------------------------------------------
# the tokenizer


def train_tokenizer(docs, vocab_size, pattern="gpt4"):
    """A BPE tokenizer with vocab_size - 256 merges and <|endoftext|> after them (vocab_size=256: plain
    bytes, ids 0..255, <|endoftext|> = 256)."""
    return Tokenizer.train(docs, vocab_size=vocab_size, pattern=pattern)


def save_tokenizer(tok, out_dir):
    """Write the tokenizer beside the shards, and llm.c's decode table (for run.c and llm.c);
    returns its file name for meta.json."""
    tok.save(os.path.join(out_dir, "tokenizer.model"))
    tok.save_llmc(os.path.join(out_dir, "tokenizer.bin"))
    return "tokenizer.model"


def load_tokenizer(data_dir, meta=None):
    meta = meta or read_meta(data_dir)
    return Tokenizer.load(os.path.join(data_dir, meta["tokenizer"]))


# --------------------------------------------------------------------------------------------------
# tokens -> shards


def encode_documents(tok, docs):
    """One uint16 token stream: <|endoftext|> then the document's tokens, for every document."""
    if tok.n_vocab > 65536:
        raise ValueError(f"token shards hold uint16 ids: a vocabulary of {tok.n_vocab} does not fit")
    pieces = []
    for ids in tok.encode_ordinary_batch(list(docs)):
        pieces.append(np.array([tok.eot] + ids, dtype=np.uint16))
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.uint16)


def write_shards(tokens, out_dir, split, shard_tokens):
    """Cut a token stream into shards of at most shard_tokens; returns their file names."""
    names = []
    for i, start in enumerate(range(0, max(len(tokens), 1), shard_tokens)):
        name = f"{split}_{i:06d}.bin"
        write_shard(os.path.join(out_dir, name), tokens[start:start + shard_tokens])
        names.append(name)
    return names


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
    t0 = time.time()
    tokens = encode_documents(tok, docs)
    n_val = max(1, int(len(tokens) * val_fraction))
    log(f"encoded {len(docs)} documents, {sum(len(d) for d in docs):,} chars -> {len(tokens):,} tokens "
        f"({time.time() - t0:.1f}s)")
    meta = {
        "vocab_size": int(tok.n_vocab), "eot": int(tok.eot), "tokenizer": save_tokenizer(tok, out_dir),
        "documents": len(docs), "tokens": int(len(tokens)), "seed": seed,
        "train": write_shards(tokens[:-n_val], out_dir, "train", shard_tokens),
        "val": write_shards(tokens[-n_val:], out_dir, "val", shard_tokens),
    }
    atomic_write(os.path.join(out_dir, "meta.json"), lambda f: f.write(json.dumps(meta, indent=1).encode()))
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
        docs = list(read_documents(args.inputs, args.text_key))
        name = os.path.splitext(os.path.basename(os.path.normpath(args.inputs[0])))[0]
    else:
        from .corpus import builtin_documents
        docs, name = builtin_documents(), "builtin"
    out = args.out or os.path.join("runs", "data", name)
    meta = prepare(docs, out, vocab_size=args.vocab_size, pattern=args.pattern, val_fraction=args.val_fraction,
                   shard_tokens=args.shard_tokens, seed=args.seed)
    print(f"wrote {out}: {len(meta['train'])} train + {len(meta['val'])} val shards, "
          f"{meta['tokens']:,} tokens, vocabulary {meta['vocab_size']}")
    return 0
