"""Sampling: from the model's logits for the next token to one token id.

temperature scales the logits (0 = greedy, argmax); top-k keeps the k most likely tokens; top-p
keeps the smallest set of most likely tokens whose probability reaches p (nucleus sampling); what
is kept is renormalised and one token drawn by inverse CDF from the stream's own generator.

SamplingSettings holds these knobs for every command that generates (`sample`, `chat`, `serve`,
`train`'s samples, RL rollouts): the same flag means the same thing everywhere.
"""
from dataclasses import dataclass

import numpy as np


@dataclass
class SamplingSettings:
    temperature: float = 0.8     # softmax temperature; 0 = greedy (always the likeliest token)
    top_k: int = None            # sample from the k likeliest tokens only (default: all)
    top_p: float = None          # nucleus: the smallest set of likeliest tokens with mass >= p (default: all)
    seed: int = 0                # sampling seed: the same seed gives the same text, alone or in a batch
    max_new_tokens: int = 256    # tokens to generate at most (fewer if a stop token or the context ends it)

    def __post_init__(self):
        check_sampling(self.temperature, self.top_k, self.top_p, self.seed)
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be an int >= 0, found {self.max_new_tokens!r}")



def filtered_probs(logits, temperature=1.0, top_k=None, top_p=None):
    """The distribution a sample is drawn from: softmax(logits / temperature), truncated to the
    top-k and/or top-p tokens and renormalised. logits: (V,) -> float64 probabilities (V,)."""
    z = np.asarray(logits, dtype=np.float64) / temperature  # (V,)
    if top_k is not None and top_k < z.size:
        kth = np.partition(z, -top_k)[-top_k]           # the k-th largest logit
        z = np.where(z >= kth, z, -np.inf)              # ties with the k-th are kept
    p = np.exp(z - z.max())
    p /= p.sum()
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-p, kind="stable")           # most likely first
        before = np.cumsum(p[order]) - p[order]         # mass of the tokens ranked above each
        p[order[before >= top_p]] = 0.0                 # keep while the mass so far is < p
        p /= p.sum()
    return p


def sample_token(logits, temperature, top_k, top_p, rng):
    if temperature == 0:
        return int(np.argmax(logits))
    p = filtered_probs(logits, temperature, top_k, top_p)
    cdf = np.cumsum(p)
    return int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), p.size - 1))


def sample_tokens(logits, temperature, top_k, top_p, rngs):
    """One token per row of logits (B, V), row b drawn with rngs[b]: exactly the tokens sample_token
    gives row by row (the same float64 arithmetic, one uniform per row), computed for all rows at
    once when there is no top-k / top-p truncation."""
    if temperature == 0:
        return np.argmax(logits, axis=1).tolist()
    if top_k is not None or top_p is not None:
        return [sample_token(row, temperature, top_k, top_p, rng) for row, rng in zip(logits, rngs)]
    z = np.asarray(logits, dtype=np.float64) / temperature   # (B, V)
    p = np.exp(z - z.max(axis=1, keepdims=True))             # (B, V)
    p /= p.sum(axis=1, keepdims=True)
    cdf = np.cumsum(p, axis=1)                               # (B, V)
    u = np.array([rng.random() for rng in rngs]) * cdf[:, -1]  # (B,)
    tok = (cdf <= u[:, None]).sum(axis=1)                    # (B,) = searchsorted(cdf, u, side="right")
    return np.minimum(tok, z.shape[1] - 1).tolist()


def check_sampling(temperature, top_k, top_p, seed):
    if temperature is None or not temperature >= 0 or temperature == float("inf"):
        raise ValueError(f"temperature must be >= 0 (0 = greedy), found {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 or None, found {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1] or None, found {top_p}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, found {seed!r}")
