"""Loss and bits per byte of a model on text or token shards.

The loss is the mean negative log-likelihood, in nats, of each token given the ones before it. It
depends on the tokenizer: a vocabulary with longer tokens has fewer, harder tokens per text. Bits per
byte does not: the text's total surprise in bits, divided by its length in UTF-8 bytes,

    bpb = (loss in nats x tokens) / bytes / ln 2

so models with different tokenizers compare on the same text. Special tokens (<|endoftext|> between
documents) are not text: they are left out of both the sum and the bytes (nanochat's convention);
the plain loss still counts them, as training's val loss does.

Long inputs are cut into windows of block_size + 1 tokens at stride block_size (the shards' own
cut): every token but the first is predicted exactly once, from the tokens of its window before it.
"""
import math
from contextlib import contextmanager

import numpy as np

from ..config import act_shapes
from ..fileio import read_shard
from ..pretrain.dataloader import shard_paths


@contextmanager
def eval_mode(model):
    """No dropout while evaluating (model.training is a flag the forward reads)."""
    was = getattr(model, "training", False)
    model.training = False
    try:
        yield model
    finally:
        model.training = was


def token_losses(model, x, y):
    """Each token's loss, -log p(y | x), as float64 (B, T); 0 where y is -1. Reads the loss kernel's
    own per-token output (the GPU backend downloads it on lookup)."""
    with eval_mode(model):
        model.forward(x, y)
    return np.array(model.acts["losses"], dtype=np.float64)  # (B, T)


def rows_per_batch(cfg, T, budget=2e9, most=64):
    """How many rows of T tokens fit a forward pass's activations (model.act_shapes, fp32) in
    `budget` bytes: GPT-2 124M at T=1024 keeps ~2.3 GB per row (attention alone is L x NH x T x T)."""
    per_row = 4 * sum(math.prod(s) for s in act_shapes(cfg, 1, T).values())
    return int(max(1, min(most, budget // per_row)))


def sequence_losses(model, ids, batch_size=8):
    """The loss of predicting ids[1:] from what precedes each, in windows of the model's block_size:
    float64 (len(ids) - 1,)."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size < 2:
        raise ValueError(f"need at least 2 tokens to predict one, found {ids.size}")
    T = min(model.config.block_size, ids.size - 1)
    starts = list(range(0, ids.size - 1, T))
    out = np.empty(ids.size - 1, dtype=np.float64)
    for b in range(0, len(starts), batch_size):
        rows = starts[b:b + batch_size]
        x = np.zeros((len(rows), T), dtype=np.int64)    # (B, T)
        y = np.full((len(rows), T), -1, dtype=np.int64)  # (B, T) -1: padding of the last window
        for r, s in enumerate(rows):
            w = ids[s:s + T + 1]
            x[r, :w.size - 1], y[r, :w.size - 1] = w[:-1], w[1:]
        losses = token_losses(model, x, y)            # (B, T)
        for r, s in enumerate(rows):
            n = min(T, ids.size - 1 - s)
            out[s:s + n] = losses[r, :n]
    return out


def encode_text(tok, text):
    """Text as ordinary tokens (special-token names stay text); llm.c's tokenizer encodes bytes."""
    return list(tok.encode_ordinary(text) if hasattr(tok, "encode_ordinary") else tok.encode(text))


def special_ids(tok):
    """Ids of the tokenizer's special tokens: minigpt's Tokenizer lists them; llm.c's has EOT only."""
    specials = getattr(tok, "special_tokens", None)
    return set(specials.values()) if specials else {tok.eot}


def token_byte_lengths(tok, V):
    """UTF-8 bytes of each token id below V (special tokens: 0 bytes, they are not text)."""
    specials = special_ids(tok)
    n = min(V, tok.n_vocab)
    lengths = np.zeros(V, dtype=np.int64)
    lengths[:n] = [0 if i in specials else len(tok.decode_bytes([i])) for i in range(n)]
    return lengths


def loss_and_bpb(model, tok, ids, batch_size=8, byte_lengths=None):
    """Predict ids[1:]: {"loss": mean nats per predicted token, "tokens", "bytes", "bpb"}."""
    ids = np.asarray(ids, dtype=np.int64)
    losses = sequence_losses(model, ids, batch_size)  # (n,)
    if byte_lengths is None:
        byte_lengths = token_byte_lengths(tok, model.config.vocab_size)
    nbytes = byte_lengths[ids[1:]]                    # (n,) 0 for special tokens
    text = nbytes > 0
    total_bytes = int(nbytes.sum())
    bpb = float(losses[text].sum() / total_bytes / math.log(2)) if total_bytes else float("nan")
    return {"loss": float(losses.mean()), "tokens": int(losses.size), "bytes": total_bytes, "bpb": bpb}


def text_bpb(model, tok, text, batch_size=8):
    """A text's loss and bpb. It is read as a document: <|endoftext|> first (context, not scored),
    then every token of the text is predicted, so the bytes are exactly the text's UTF-8 bytes."""
    if not text:
        raise ValueError("the text is empty: nothing to score")
    ids = [tok.eot] + encode_text(tok, text)
    return loss_and_bpb(model, tok, ids, batch_size)


def shards_bpb(model, tok, pattern, max_tokens=None, batch_size=8):
    """Loss and bpb over llm.c token shards (a glob, a folder or a list), each shard on its own,
    at most max_tokens tokens of each; the figures are summed over shards."""
    lengths = token_byte_lengths(tok, model.config.vocab_size)
    nats = total_bytes = tokens = 0.0
    text_nats = 0.0
    for path in shard_paths(pattern):
        ids = np.asarray(read_shard(path, mmap=True)[:max_tokens], dtype=np.int64)
        if ids.size < 2:
            continue
        if ids.max() >= model.config.vocab_size:
            raise ValueError(f"{path}: token id {int(ids.max())} is outside the model's vocabulary "
                             f"({model.config.vocab_size}): wrong model or shards?")
        r = loss_and_bpb(model, tok, ids, batch_size, lengths)
        nats += r["loss"] * r["tokens"]
        tokens += r["tokens"]
        total_bytes += r["bytes"]
        text_nats += r["bpb"] * r["bytes"] * math.log(2) if r["bytes"] else 0.0
    if not tokens:
        raise ValueError(f"{pattern}: no shard holds 2 or more tokens")
    return {"loss": nats / tokens, "tokens": int(tokens), "bytes": int(total_bytes),
            "bpb": text_nats / total_bytes / math.log(2) if total_bytes else float("nan")}
