"""Byte-level BPE tokenizer (GPT-2 / GPT-4 style), tiktoken-compatible. Read in this order:

    pretokenize.py  split text into chunks (the GPT-2 / GPT-4 regexes)
    bpe.py          train merges and encode chunks: the slow, clear reference
    fast.py         the same through the C module (csrc/bpe.c)
    files.py        our model file, the .vocab listing, tiktoken rank files, llm.c's tokenizer .bin
    tokenizer.py    the Tokenizer: special tokens, encode/decode, batches; load_tokenizer (any file)
    chat.py         the chat template: conversations -> ids and a loss mask, chat and tool tokens
"""
from .pretokenize import GPT2_PATTERN, GPT4_PATTERN
from .tokenizer import EOT, Tokenizer, load_tokenizer

__all__ = ["Tokenizer", "EOT", "GPT2_PATTERN", "GPT4_PATTERN", "load_tokenizer"]
