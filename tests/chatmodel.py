"""A small stand-in chat model for the server's tests and bench: a BPE tokenizer trained on a few
sentences (multi-byte characters included) with the chat tokens added, and a random GPT of that
vocabulary. It cannot chat, but it exercises every path: prompts, sampling, stops, streaming."""
import os

import numpy as np

from minigpt.config import PARAM_NAMES
from minigpt.model import GPT, GPTConfig
from minigpt.tokenizer import Tokenizer
from minigpt.tokenizer.chat import add_chat_tokens

TEXT = ("The quick brown fox jumps over the lazy dog. Café, naïve, déjà vu: ünïcödé wörds. "
        "日本語のテキスト、中文文本。Emoji 🙂🚀 and Ελληνικά and русский текст. " * 20)


def make_chat_model(folder, block_size=256, n_layer=2, n_head=4, n_embd=64, vocab=320, seed=0, never_stop=True):
    """Write folder/model.bin and folder/tokenizer.model; return their paths. never_stop: the special
    tokens get logit ~ -100, so replies run to max_tokens and tests can count on their length."""
    tok = Tokenizer.train(TEXT, vocab_size=vocab)
    add_chat_tokens(tok)
    cfg = GPTConfig(block_size=block_size, vocab_size=tok.n_vocab, n_layer=n_layer, n_head=n_head, n_embd=n_embd)
    model = GPT(cfg, backend="numpy", seed=seed)
    rng = np.random.default_rng(seed)  # larger random weights: varied text, not the last token repeated
    for name in PARAM_NAMES:
        model.params[name][...] += 0.3 * rng.standard_normal(model.params[name].shape)
    model.params["wte"][tok.n_vocab:] = 0
    if never_stop:  # channel 0 of the final LayerNorm's output is always 10; specials read it as -10
        model.params["lnfw"][0], model.params["lnfb"][0] = 0.0, 10.0
        model.params["wte"][:, 0] = 0.0
        model.params["wte"][sorted(tok.special_tokens.values()), 0] = -10.0
    ckpt, tok_path = os.path.join(folder, "model.bin"), os.path.join(folder, "tokenizer.model")
    model.save(ckpt)
    tok.save(tok_path)
    return ckpt, tok_path
