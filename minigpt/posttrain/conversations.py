"""Conversation files: JSONL in the OpenAI / Hugging Face `messages` format, one conversation a line.

    {"messages": [{"role": "system", "content": "..."}, {"role": "user", "content": "..."},
                  {"role": "assistant", "content": "..."}]}

Other keys on a line are kept (the built-in set adds "task" and "answer", which graders read).
A bad line (not JSON, no messages, a message without a known role or string content, or no
assistant reply to learn from) is skipped and counted; with strict=True it is an error. Either way
the message names the file and line.
"""
import json
import os

from ..fileio import atomic_write
from ..tokenizer.chat import check_messages


class ConversationError(ValueError):
    """A conversation file is unreadable or (strict) has a bad line: the message names file and line."""


def check_conversation(obj):
    """obj as a conversation dict, or a ValueError saying what is wrong with it."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object with \"messages\", found {type(obj).__name__}")
    if "messages" not in obj:
        raise ValueError(f"no \"messages\" key (keys: {sorted(obj)[:5]})")
    check_messages(obj["messages"])
    if not any(m["role"] == "assistant" for m in obj["messages"]):
        raise ValueError("no assistant message: nothing to learn from")
    return obj


def read_jsonl(paths, strict=False, log=None):
    """-> (conversations, skipped): every good line of every file, and the number of bad lines.
    log(message) hears about each skipped line (default: the first 5 are printed)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    conversations, skipped = [], 0
    for path in paths:
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise ConversationError(f"{path}: no such conversation file")
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                try:
                    obj = json.loads(raw.decode("utf-8"))
                    conversations.append(check_conversation(obj))
                except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as e:
                    why = f"{path}:{lineno}: {'not UTF-8: ' if isinstance(e, UnicodeDecodeError) else ''}{e}"
                    if strict:
                        raise ConversationError(why) from None
                    skipped += 1
                    if log is not None:
                        log(f"skipped {why}")
                    elif skipped <= 5:
                        print(f"skipped {why}")
    if not conversations:
        raise ConversationError(f"{', '.join(map(os.fspath, paths))}: no usable conversation "
                                f"({skipped} bad lines skipped)")
    return conversations, skipped


def write_jsonl(path, conversations):
    """One JSON object per line, UTF-8, written atomically."""
    text = "".join(json.dumps(c, ensure_ascii=False) + "\n" for c in conversations)
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
