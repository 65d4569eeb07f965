"""`minigpt prepare`: text -> a trained tokenizer + llm.c token shards, ready for `minigpt train`.

    documents (.txt/.md files, JSONL with a "text" field, Parquet, directories of them)
      -> shuffle the documents (fixed seed), train a byte-level BPE tokenizer on them
      -> encode, each document preceded by <|endoftext|> (as llm.c's fineweb.py does)
      -> the first val_fraction of the tokens are val, the rest train (minigpt/data/shards.py)
      -> OUT/data_val_000000.bin, OUT/data_train_000001.bin ..., OUT/tokenizer.model, OUT/meta.json

meta.json records the vocabulary size, the <|endoftext|> id and the shard names; the trainer reads it.
"""
import fnmatch
import json
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np

from .. import settings
from ..data.readers import input_kind, list_inputs, read_documents
from ..data.shards import write_shards
from ..fileio import TOKENIZER_FILE, new_dir_beside, replace_dir, write_json
from ..tokenizer import Tokenizer
from .corpus import builtin_documents


@dataclass
class PrepareSettings:
    out: str = None              # output directory (default: runs/data/<name of the first input>)
    vocab_size: int = 4096       # tokenizer vocabulary, 256 = bytes; shards store uint16 ids, so at most 65536
    pattern: str = "gpt4"        # pre-split regex: gpt2 | gpt4
    val_fraction: float = 0.1    # share of tokens held out for validation
    shard_tokens: int = 100_000_000  # tokens per shard (1e8, as llm.c)
    text_key: str = "text"       # JSONL field holding the text
    seed: int = 0                # document shuffle seed

    CHOICES = {"pattern": ("gpt2", "gpt4")}

    def __post_init__(self):
        settings.check_choice(self, "pattern")
        # the whole vocabulary, <|endoftext|> included, must fit uint16 shards: refused before training
        settings.check_range(self, "vocab_size", 256, 65535)
        settings.check_range(self, "val_fraction", 0, 1, lo_open=True, hi_open=True)
        settings.check_range(self, "shard_tokens", 2, 2**31 - 1)
        settings.check_range(self, "seed", 0, 2**63 - 1)


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


def save_tokenizer(tok, out_dir, log=print):
    """Write the tokenizer beside the shards, and llm.c's decode table (for run.c and llm.c) when
    the vocabulary fits it; returns its file name for meta.json."""
    tok.save(os.path.join(out_dir, TOKENIZER_FILE))
    try:
        tok.save_llmc(os.path.join(out_dir, "tokenizer.bin"))
    except ValueError as e:  # a token longer than llm.c's 255 bytes: the shards are still good
        log(f"no tokenizer.bin for run.c / llm.c: {e}")
    return TOKENIZER_FILE


# what a previous `minigpt prepare` leaves in its folder: only these may be replaced
OUTPUTS = ("meta.json", TOKENIZER_FILE, "tokenizer.vocab", "tokenizer.bin", "data_*.bin", "*.tmp")


def check_out_dir(out_dir):
    """A new folder, or one that holds only an earlier prepare's outputs (it is replaced whole)."""
    if not os.path.lexists(out_dir):
        return
    if not os.path.isdir(out_dir):
        raise FileExistsError(f"--out {out_dir}: exists and is not a directory")
    other = sorted(n for n in os.listdir(out_dir) if not any(fnmatch.fnmatch(n, p) for p in OUTPUTS))
    if other:
        raise FileExistsError(f"--out {out_dir}: holds files that `minigpt prepare` did not write "
                              f"({', '.join(other[:3])}{', ...' if len(other) > 3 else ''}); it replaces its "
                              f"output folder as a whole, so give a new or empty --out")


def load_tokenizer(data_dir, meta=None):
    """The data's tokenizer, checked against meta.json: a vocabulary that disagrees would size the
    model wrongly or decode the shards into the wrong text."""
    meta = meta or read_meta(data_dir)
    path = os.path.join(data_dir, meta["tokenizer"])
    tok = Tokenizer.load(path)
    if tok.n_vocab != meta["vocab_size"] or tok.special_tokens.get("<|endoftext|>") != meta["eot"]:
        raise ValueError(f"{path}: the tokenizer has {tok.n_vocab} ids and <|endoftext|> = "
                         f"{tok.special_tokens.get('<|endoftext|>')}, but {os.path.join(data_dir, 'meta.json')} "
                         f"says vocab_size {meta['vocab_size']} and eot {meta['eot']}: they do not belong together")
    return tok


# --------------------------------------------------------------------------------------------------
# tokens -> shards


def read_meta(data_dir):
    """meta.json, every field checked: it sizes the model, so a wrong type or value is an error
    that names the file, never a model built from it."""
    path = os.path.join(data_dir, "meta.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{data_dir}: no meta.json here; make one with `minigpt prepare`")
    try:
        with open(path, "rb") as f:
            meta = json.loads(f.read().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"{path}: not a JSON meta file written by `minigpt prepare` ({e})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a JSON object, found {type(meta).__name__}")
    for key in ("vocab_size", "eot", "tokenizer", "train", "val"):
        if key not in meta:
            raise ValueError(f"{path}: missing key {key!r} (found {sorted(meta)})")

    def is_int(x):
        return isinstance(x, int) and not isinstance(x, bool)
    V, eot = meta["vocab_size"], meta["eot"]
    if not is_int(V) or not 1 <= V <= 65536:
        raise ValueError(f"{path}: vocab_size must be an integer in [1, 65536] (uint16 shards), found {V!r}")
    if not is_int(eot) or not 0 <= eot < V:
        raise ValueError(f"{path}: eot must be an integer in [0, vocab_size={V}), found {eot!r}")
    if not isinstance(meta["tokenizer"], str) or not meta["tokenizer"]:
        raise ValueError(f"{path}: tokenizer must be a file name, found {meta['tokenizer']!r}")
    for key in ("train", "val"):
        names = meta[key]
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"{path}: {key} must be a non-empty list of shard file names, found {names!r:.80}")
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
    check_out_dir(out_dir)
    # everything goes to a temp folder that replaces out_dir at the end: a run that fails half-way
    # leaves the old tokenizer, meta.json and shards together, never a new tokenizer beside old shards
    tmp = new_dir_beside(out_dir)
    try:
        meta = _prepare_into(tmp, docs, vocab_size, pattern, val_fraction, shard_tokens, seed, log)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, out_dir)
    return meta


def _prepare_into(out_dir, docs, vocab_size, pattern, val_fraction, shard_tokens, seed, log):
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
        "vocab_size": int(tok.n_vocab), "eot": int(tok.eot), "tokenizer": save_tokenizer(tok, out_dir, log),
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
    settings.add_arguments(p, PrepareSettings)


def run(args):
    s = settings.build(PrepareSettings, settings.from_args(args, PrepareSettings))  # checked before any work
    if args.inputs:
        name = os.path.splitext(os.path.basename(os.path.normpath(args.inputs[0])))[0]
    else:
        name = "builtin"
    out = s.out or os.path.join("runs", "data", name)
    check_out_dir(out)
    docs = read_texts(args.inputs, s.text_key) if args.inputs else builtin_documents()
    meta = prepare(docs, out, vocab_size=s.vocab_size, pattern=s.pattern, val_fraction=s.val_fraction,
                   shard_tokens=s.shard_tokens, seed=s.seed)
    print(f"wrote {out}: {len(meta['train'])} train + {len(meta['val'])} val shards, "
          f"{meta['tokens']:,} tokens, vocabulary {meta['vocab_size']}")
    return 0
