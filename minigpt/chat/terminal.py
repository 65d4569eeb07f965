"""`minigpt chat`: talk to a chat model in the terminal, or ask one question with -p.

    minigpt chat runs/NAME-sft                         # the run's newest checkpoint and its tokenizer
    minigpt chat runs/NAME-sft -p "Who are you?" --temperature 0       # prints only the reply

With --tools the model may call the calculator (and search, with --search-docs FILE.jsonl of
{"id", "text"} documents, or `--search-docs builtin` for the built-in corpus): the call is shown dimmed
and the tool's output in cyan (plain brackets when the output is not a terminal).
Replies stream as they are sampled; the history stays in the model's context until it fills, then
the oldest exchanges are dropped with a notice. Commands: /clear /temperature T /top_k K /top_p P
/help /quit (or Ctrl-D).
"""
import json
import os
import sys
from dataclasses import dataclass

from .. import settings
from ..inference.sample import open_model
from ..inference.sampling import SamplingSettings
from ..model.backend import RuntimeSettings, set_threads
from ..inference.search import cached_index
from ..inference.tools import ToolBox
from ..pretrain.corpus import builtin_documents
from .session import ChatSession


@dataclass
class ChatSettings:
    prompt: str = None      # one question (-p): print only the reply and exit
    system: str = None      # system prompt: the conversation's first message
    tools: bool = True      # run the tool calls the model writes (calculator; search with --search-docs)
    search_docs: str = None # the search tool's collection: a JSONL of {"id", "text"}, or "builtin" (the corpus)


HELP = """commands:
  /clear          forget the conversation (the system prompt stays)
  /temperature T  sampling temperature (0 = greedy)
  /top_k K        sample from the K likeliest tokens (off: all)
  /top_p P        nucleus sampling (off: 1)
  /help           this list
  /quit           leave (Ctrl-D too)"""


def add_arguments(p):
    p.add_argument("model", help="an SFT run directory (its newest checkpoint) or a checkpoint .bin")
    p.add_argument("--tokenizer", help="tokenizer with the chat tokens (default: the run directory's tokenizer.model)")
    p.add_argument("-p", dest="prompt", default=None, help="the same as --prompt")
    settings.add_arguments(p, ChatSettings, SamplingSettings, RuntimeSettings)


def command(session, line, out):
    """Run a /command; returns False to quit."""
    name, _, arg = line.partition(" ")
    arg = arg.strip()
    try:
        if name == "/quit":
            return False
        if name == "/help":
            out.write(HELP + "\n")
        elif name == "/clear":
            session.clear()
            out.write("(conversation cleared)\n")
        elif name == "/temperature":
            session.set_sampling(float(arg), session.top_k, session.top_p)
            out.write(f"(temperature {session.temperature})\n")
        elif name == "/top_k":
            session.set_sampling(None, None if arg in ("off", "0") else int(arg), session.top_p)
            out.write(f"(top_k {session.top_k or 'off'})\n")
        elif name == "/top_p":
            session.set_sampling(None, session.top_k, None if arg in ("off", "1") else float(arg))
            out.write(f"(top_p {session.top_p or 'off'})\n")
        else:
            out.write(f"unknown command {name}: /help lists them\n")
    except ValueError as e:
        out.write(f"{name}: {e if str(e) else 'expected a number'}\n")
    return True


def show(piece, out):
    """A reply piece as the terminal shows it: tool calls dim, tool outputs cyan."""
    kind = getattr(piece, "kind", None)
    if kind is None:
        return piece
    if out.isatty():
        return f"\033[2m{piece}\033[0m" if kind == "call" else f"\033[36m -> {piece}\033[0m\n"
    return f"[{piece}]" if kind == "call" else f" -> [{piece}]\n"


def toolbox(c, tok):
    if not c.tools:
        return None
    index = None
    if c.search_docs == "builtin":
        index = cached_index([(f"doc{i}", d) for i, d in enumerate(builtin_documents())],
                             os.path.join("runs", "search"))
    elif c.search_docs:
        index = cached_index(read_documents(c.search_docs), os.path.join("runs", "search"))
    return ToolBox(tok, index=index)


def read_documents(path):
    """[(id, text)] of a JSONL of {"id", "text"} objects; a bad line is an error naming it."""
    docs = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    d = json.loads(line)
                    docs.append((str(d.get("id", n)), d["text"]))
                except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
                    raise ValueError(f"{path}:{n}: expected a JSON object with a \"text\" string") from None
    return docs


def run(args):
    c = settings.build(ChatSettings, settings.from_args(args, ChatSettings))
    gen = settings.build(SamplingSettings, settings.from_args(args, SamplingSettings))
    rt = settings.build(RuntimeSettings, settings.from_args(args, RuntimeSettings))
    if rt.threads:
        set_threads(rt.threads)
    weights, tok, ckpt = open_model(args.model, args.tokenizer)
    if tok is None:
        raise ValueError(f"{ckpt}: no tokenizer beside it: give --tokenizer")
    out, err = sys.stdout, sys.stderr
    session = ChatSession(weights, tok, system=c.system, temperature=gen.temperature, top_k=gen.top_k,
                          top_p=gen.top_p, seed=gen.seed, max_new_tokens=gen.max_new_tokens, kernels=rt.backend,
                          on_notice=lambda m: err.write(f"\n[{m}]\n"), tools=toolbox(c, tok))
    if c.prompt is not None:
        for piece in session.send(c.prompt):
            out.write(show(piece, out))
            out.flush()
        out.write("\n")
        return 0
    out.write(f"minigpt chat: {os.path.basename(ckpt)}, {weights.config.block_size}-token context. "
              f"/help for commands, /quit to leave.\n")
    while True:
        try:
            line = input("you> ")
        except EOFError:
            out.write("\n")
            return 0
        except KeyboardInterrupt:
            out.write("\n")
            continue
        if not line.strip():
            continue
        if line.startswith("/"):
            if not command(session, line.strip(), out):
                return 0
            continue
        out.write("assistant> ")
        try:
            for piece in session.send(line):
                out.write(show(piece, out))
                out.flush()
        except KeyboardInterrupt:
            out.write(" [interrupted]")
        except ValueError as e:
            out.write(f"[{e}]")
        out.write("\n")
