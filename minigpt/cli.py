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

from . import __version__

# name -> (module, one-line help), in pipeline order
SUBCOMMANDS = {
    "pull": ("minigpt.pull", "fetch open weights (smollm2: SmolLM2-135M-Instruct, GGUF) into the model cache"),
    "gguf": ("minigpt.gguf_dump", "what a GGUF file holds: header, metadata, tensor table (--json for scripts)"),
    "data": ("minigpt.data.cli", "web pages (WARC/JSONL/Parquet) -> filtered, deduplicated documents and shards"),
    "prepare": ("minigpt.pretrain.prepare", "text files / JSONL -> trained tokenizer + llm.c token shards"),
    "train": ("minigpt.pretrain.train", "pretrain a GPT-2 on token shards (no arguments: a built-in corpus)"),
    "sample": ("minigpt.inference.sample", "generate text from a run directory or checkpoint, streaming"),
    "sft": ("minigpt.posttrain.sft", "supervised fine-tuning: a pretrained run -> a chat model (no arguments: built-in conversations)"),
    "probe": ("minigpt.posttrain.probe", "ask a chat model questions with known answers; refusals for what it does not know"),
    "rl": ("minigpt.posttrain.rl", "reinforcement learning on problems with checkable answers (pass@1 up)"),
    "chat": ("minigpt.chat.terminal", "talk to a chat (SFT) model in the terminal, or ask one question with -p"),
    "reward": ("minigpt.posttrain.train_reward", "train a reward model on preference pairs (RLHF, part 1)"),
    "rlhf": ("minigpt.posttrain.rlhf", "optimise a chat model against a reward model, KL-held and stopped early (RLHF, part 2)"),
    "dpo": ("minigpt.posttrain.train_dpo", "fine-tune on preference pairs directly, no reward model (DPO)"),
    "eval": ("minigpt.eval.cli", "loss, bits per byte, multiple choice and pass@k of a checkpoint"),
    "size": ("minigpt.eval.size", "parameters, memory, FLOPs and training time of a model shape"),
    "serve": ("minigpt.chat.server", "an OpenAI-compatible chat server and a web chat page"),
    "speedrun": ("minigpt.speedrun", "the whole recipe on built-in data in one command, then a report card"),
}


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (exit 2) instead of the whole usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def main(argv=None):
    parser = Parser(prog="minigpt", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"minigpt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in SUBCOMMANDS:
        if not argv:
            parser.print_help()
            return 0
        try:
            parser.parse_args(argv)  # --help, --version, or an unknown command (exits 2)
        except SystemExit as e:
            return e.code
    module = importlib.import_module(SUBCOMMANDS[argv[0]][0])
    p = Parser(prog=f"minigpt {argv[0]}", description=SUBCOMMANDS[argv[0]][1])
    module.add_arguments(p)
    try:
        args = p.parse_args(argv[1:])  # a bad flag: argparse prints one usage line + the error, exit 2
    except SystemExit as e:
        return e.code
    try:
        return module.run(args)
    except (OSError, ValueError, RuntimeError, MemoryError) as e:
        # bad input (a missing or damaged file, an id out of range, sizes that do not fit in
        # memory, ...): the message says what is wrong, so print it, not a traceback;
        # MINIGPT_DEBUG=1 shows where it came from
        if os.environ.get("MINIGPT_DEBUG"):
            raise
        what = str(e) if not isinstance(e, MemoryError) or str(e) else "out of memory for the sizes asked for"
        print(f"minigpt {argv[0]}: {what}", file=sys.stderr)
        return 2
