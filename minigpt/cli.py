"""The `minigpt` command: one subcommand per pipeline stage.

Each stage's module owns its subcommand by defining two functions:
    add_arguments(parser)   fill in an argparse sub-parser
    run(args) -> int        do the work, return an exit code
and is listed in SUBCOMMANDS below, in pipeline order. Modules are imported only when their
subcommand runs, so `minigpt train` never pays for the data pipeline's imports.
"""
import argparse
import importlib
import os
import sys

# name -> (module, one-line help), in pipeline order
SUBCOMMANDS = {
    "data": ("minigpt.data.cli", "web pages (WARC/JSONL/Parquet) -> filtered, deduplicated documents and shards"),
    "prepare": ("minigpt.prepare", "text files / JSONL -> trained tokenizer + llm.c token shards"),
    "train": ("minigpt.train", "pretrain a GPT-2 on token shards (no arguments: a built-in corpus)"),
    "sample": ("minigpt.sample", "generate text from a checkpoint, streaming"),
    "sft": ("minigpt.posttrain.sft", "supervised fine-tuning: a pretrained run -> a chat model (no arguments: built-in conversations)"),
    "chat": ("minigpt.chat.terminal", "talk to a chat (SFT) model in the terminal, or ask one question with -p"),
}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="minigpt", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in SUBCOMMANDS:
        parser.print_help() if not argv else parser.parse_args(argv)
        return 0 if not argv else 2
    module = importlib.import_module(SUBCOMMANDS[argv[0]][0])
    p = argparse.ArgumentParser(prog=f"minigpt {argv[0]}", description=SUBCOMMANDS[argv[0]][1])
    module.add_arguments(p)
    args = p.parse_args(argv[1:])
    try:
        return module.run(args)
    except (OSError, ValueError) as e:
        # bad input (a missing or damaged file, an id out of range, ...): the message says what is
        # wrong, so print it, not a traceback; MINIGPT_DEBUG=1 shows where it came from
        if os.environ.get("MINIGPT_DEBUG"):
            raise
        print(f"minigpt {argv[0]}: {e}", file=sys.stderr)
        return 2
