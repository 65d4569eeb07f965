"""Step 1 of tokenizing: split text into chunks with a regex, so merges never cross them.

BPE never merges across chunk boundaries, so " dog" and "dog." stay apart and "dog" gets one
token however it is punctuated. The patterns are tiktoken's (GPT-2 = r50k_base, GPT-4 =
cl100k_base); Python's `regex` module is the reference for what they mean. csrc/bpe.c has a
hand-written scanner for each, checked against `regex` by the tests, because running the regex is
where most encoding time goes.
"""
import functools

import numpy as np
import regex

GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
GPT4_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
                r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s""")

# name -> (regex, id of the C scanner in csrc/bpe.h); None means no split: a document is one chunk
PATTERNS = {"gpt2": (GPT2_PATTERN, 1), "gpt4": (GPT4_PATTERN, 2), None: (None, 0)}


def check_pattern(pattern):
    if pattern == "none":
        pattern = None
    if pattern not in PATTERNS:
        raise ValueError(f"pattern must be 'gpt2', 'gpt4' or None, got {pattern!r}")
    return pattern


@functools.lru_cache(maxsize=None)
def compiled(pattern):
    return regex.compile(PATTERNS[pattern][0])


def split(text, pattern):
    """The reference pre-split: the list of chunks (str) of `text`."""
    if not text:
        return []
    if pattern is None:
        return [text]
    return compiled(pattern).findall(text)


@functools.lru_cache(maxsize=None)
def unicode_classes():
    """One byte per code point: bit 1 = \\p{L}, 2 = \\p{N}, 4 = \\s, as the `regex` module sees them.

    Asking `regex` itself (not unicodedata) keeps the C scanner on the reference's Unicode version.
    About 0.2 s, once per process."""
    every = "".join(map(chr, range(0x110000)))
    table = np.zeros(0x110000, dtype=np.uint8)
    for bit, cls in ((1, r"\p{L}+"), (2, r"\p{N}+"), (4, r"\s+")):
        for m in regex.finditer(cls, every):
            table[m.start():m.end()] |= bit
    return table
