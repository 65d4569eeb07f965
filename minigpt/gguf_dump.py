"""minigpt gguf FILE: what a GGUF holds (header, metadata, tensor table), checked as it is read.

Long arrays and strings are summarised (their first items and their length), in the table and in
--json alike; the whole values are a read_gguf() away.
"""
import collections
import json
import os

import numpy as np

from . import quant
from .gguf import ARRAY, VALUE_NAMES, read_gguf

HEAD_ITEMS = 6      # items of a long array shown
MAX_TEXT = 100      # characters of a long string shown


def type_label(g, key):
    t = g.types[key]
    return f"array[{VALUE_NAMES[g.array_types[key]]}]" if t == ARRAY else VALUE_NAMES[t]


def summary(value):
    """A metadata value for people and JSON: long arrays cut to their first items, with a count."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, list):
        head = [summary(v) for v in value[:HEAD_ITEMS]]
        return head if len(value) <= HEAD_ITEMS else {"count": len(value), "first": head}
    if isinstance(value, str) and len(value) > MAX_TEXT:
        return {"chars": len(value), "first": value[:MAX_TEXT]}
    return value


def describe(g):
    """The whole file as one JSON-ready dict."""
    return {
        "path": g.path, "version": g.version, "alignment": g.alignment, "data_offset": g.data_offset,
        "size": os.path.getsize(g.path), "n_tensors": len(g.tensors), "n_kv": len(g.metadata),
        "metadata": {k: {"type": type_label(g, k), "value": summary(v)} for k, v in g.metadata.items()},
        "tensors": [{"name": t.name, "type": quant.type_name(t.ggml_type), "shape": list(t.shape),
                     "offset": t.offset, "bytes": t.nbytes} for t in g.tensors.values()],
    }


def safe(name):
    """A key or tensor name from the file, escaped if it holds anything a terminal would act on."""
    return name if name.isprintable() else ascii(name)


def show(value):
    if isinstance(value, dict) and "count" in value:
        return f"[{', '.join(show(v) for v in value['first'])}, ...] ({value['count']} items)"
    if isinstance(value, dict):
        return f"{value['first']!r}... ({value['chars']} characters)"
    if isinstance(value, list):
        return "[" + ", ".join(show(v) for v in value) + "]"
    return repr(value) if isinstance(value, str) else str(value)


def print_text(d):
    print(f"{d['path']}: GGUF version {d['version']}, {d['size']:,} bytes, alignment {d['alignment']}, "
          f"{d['n_kv']} metadata keys, {d['n_tensors']} tensors (data at {d['data_offset']:,})")
    print("\nmetadata:")
    width = max((len(safe(k)) for k in d["metadata"]), default=0)
    for k, m in d["metadata"].items():
        print(f"  {safe(k):<{width}}  {m['type']:<14} {show(m['value'])}")
    print("\ntensors:")
    width = max((len(safe(t["name"])) for t in d["tensors"]), default=0)
    for t in d["tensors"]:
        shape = str(tuple(t["shape"]))
        print(f"  {safe(t['name']):<{width}}  {t['type']:<6} {shape:<14} {t['bytes']:>12,}")
    counts = collections.Counter(t["type"] for t in d["tensors"])
    total = sum(t["bytes"] for t in d["tensors"])
    print(f"\n{total:,} bytes of tensors: " + ", ".join(f"{n} {t}" for t, n in counts.most_common()))


def add_arguments(p):
    p.add_argument("file", help="a .gguf file")
    p.add_argument("--json", action="store_true", help="print it as JSON, for scripts")


def run(args):
    d = describe(read_gguf(args.file))
    if args.json:
        print(json.dumps(d, indent=1))
    else:
        print_text(d)
    return 0
