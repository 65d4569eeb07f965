"""`minigpt chat`: talk to a chat model in the terminal, or ask one question with -p.

    minigpt chat --checkpoint runs/sft                 # the run's newest checkpoint and its tokenizer
    minigpt chat --checkpoint runs/sft -p "Who are you?" --temperature 0   # prints only the reply

Replies stream as they are sampled; the history stays in the model's context until it fills, then
the oldest exchanges are dropped with a notice. Commands: /clear /temperature T /top_k K /top_p P
/help /quit (or Ctrl-D).
"""
import glob
import os
import sys

from .. import kvcache
from ..tokenizer import Tokenizer
from .session import ChatSession

HELP = """commands:
  /clear          forget the conversation (the system prompt stays)
  /temperature T  sampling temperature (0 = greedy)
  /top_k K        sample from the K likeliest tokens (off: all)
  /top_p P        nucleus sampling (off: 1)
  /help           this list
  /quit           leave (Ctrl-D too)"""


def resolve(checkpoint, tokenizer):
    """(checkpoint file, tokenizer file): a run directory means its newest ckpt_*.bin and tokenizer.model."""
    if os.path.isdir(checkpoint):
        found = sorted(glob.glob(os.path.join(checkpoint, "ckpt_*.bin")))
        if not found:
            raise FileNotFoundError(f"{checkpoint}: no ckpt_*.bin checkpoints in this directory")
        checkpoint = found[-1]
    tokenizer = tokenizer or os.path.join(os.path.dirname(checkpoint), "tokenizer.model")
    if not os.path.exists(tokenizer):
        raise FileNotFoundError(f"tokenizer not found: {tokenizer} (give --tokenizer)")
    return checkpoint, tokenizer


def add_arguments(p):
    p.add_argument("--checkpoint", required=True, help="an SFT run directory or its ckpt_*.bin")
    p.add_argument("--tokenizer", default=None, help="minigpt tokenizer with the chat tokens "
                                                     "(default: tokenizer.model beside the checkpoint)")
    p.add_argument("-p", "--prompt", default=None, help="one question: print only the reply and exit")
    p.add_argument("--system", default=None, help="system prompt")
    p.add_argument("--temperature", "-t", type=float, default=0.7, help="0 = greedy (default 0.7)")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-new-tokens", "-n", type=int, default=256, help="longest reply")
    p.add_argument("--kernels", choices=["c", "numpy"], default=None)


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


def run(args):
    checkpoint, tokenizer = resolve(args.checkpoint, args.tokenizer)
    weights = kvcache.DecodeWeights.load(checkpoint)
    tok = Tokenizer.load(tokenizer)
    out, err = sys.stdout, sys.stderr
    session = ChatSession(weights, tok, system=args.system, temperature=args.temperature, top_k=args.top_k,
                          top_p=args.top_p, seed=args.seed, max_new_tokens=args.max_new_tokens,
                          kernels=args.kernels, on_notice=lambda m: err.write(f"\n[{m}]\n"))
    if args.prompt is not None:
        for piece in session.send(args.prompt):
            out.write(piece)
            out.flush()
        out.write("\n")
        return 0
    out.write(f"minigpt chat: {os.path.basename(checkpoint)}, {weights.config.block_size}-token context. "
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
                out.write(piece)
                out.flush()
        except KeyboardInterrupt:
            out.write(" [interrupted]")
        except ValueError as e:
            out.write(f"[{e}]")
        out.write("\n")
