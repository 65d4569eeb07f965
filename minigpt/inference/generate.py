"""Generating text: the generation loop over a KV cache.

    generate(model, prompts, max_new_tokens, temperature, top_k, top_p, seed, n, stop)

1. Every prompt is prefilled once, in one pass (kvcache.py); its n samples copy its cache.
2. Then each step feeds every live stream its last token (one row per stream) and samples the next
   from the logits (sampling.py). A stream ends at a stop token (not included in its output), after
   max_new_tokens, or when its context is full (block_size tokens: no sliding window).

Stream j of a prompt draws from its own generator, seeded (seed, j): the same seed gives the same
text, alone or in a batch. seed may also be a list, one per prompt (RL's rollouts: prompts batched
together but sampled independently, each reproducible alone).
"""
import codecs

import numpy as np

from ..model import backend
from . import kvcache
from .sampling import check_sampling, sample_tokens



def normalize_prompts(prompt_ids, config):
    """One prompt (a list of ints) or a list of prompts -> (list of int lists, was_single)."""
    if isinstance(prompt_ids, np.ndarray):
        prompt_ids = prompt_ids.tolist()
    prompt_ids = list(prompt_ids)
    single = len(prompt_ids) == 0 or isinstance(prompt_ids[0], (int, np.integer))
    prompts = [prompt_ids] if single else [list(p) for p in prompt_ids]
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise ValueError(f"prompt {i} is empty: a prompt needs at least one token "
                             f"(e.g. <|endoftext|>)")
        if len(p) > config.block_size:
            raise ValueError(f"prompt {i} has {len(p)} tokens, more than block_size={config.block_size}: "
                             f"shorten it (there is no sliding window)")
        bad = [t for t in p if not (isinstance(t, (int, np.integer)) and 0 <= t < config.vocab_size)]
        if bad:
            raise ValueError(f"prompt {i}: token ids must be ints in [0, vocab_size={config.vocab_size}), "
                             f"found {bad[:5]}")
    return [[int(t) for t in p] for p in prompts], single


MAX_STREAMS = 4096  # one batch: every stream has a KV cache of its own


def check_counts(n, max_new_tokens):
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= MAX_STREAMS:
        raise ValueError(f"n (samples per prompt) must be an int in [1, {MAX_STREAMS}], found {n!r}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, found {max_new_tokens!r}")


def stream_tokens(weights, prompt_ids, max_new_tokens=64, temperature=1.0, top_k=None, top_p=None,
                  seed=0, n=1, stop=None, kernels=None):
    """Yield, step by step, a list of (stream, token) for the streams that produced one. Stream
    i * n + j is sample j of prompt i. weights: a GPT model or kvcache.DecodeWeights."""
    if not isinstance(weights, kvcache.DecodeWeights):
        weights = kvcache.DecodeWeights.from_model(weights)
    cfg = weights.config
    prompts, _ = normalize_prompts(prompt_ids, cfg)
    seeds = list(seed) if isinstance(seed, (list, tuple, np.ndarray)) else [seed] * len(prompts)
    if len(seeds) != len(prompts):
        raise ValueError(f"seed: one per prompt, found {len(seeds)} seeds for {len(prompts)} prompts")
    for sd in seeds:
        check_sampling(temperature, top_k, top_p, sd)
    check_counts(n, max_new_tokens)
    stop = set() if stop is None else {int(stop)} if isinstance(stop, (int, np.integer)) else set(map(int, stop))
    kern = backend.decode_kernels(kernels) if kernels is None or isinstance(kernels, str) else kernels
    if max_new_tokens == 0:
        return
    P, B = len(prompts), len(prompts) * n
    maxT = min(cfg.block_size, max(len(p) for p in prompts) + max_new_tokens)
    cache = kvcache.KVCache(cfg, B, maxT)
    rngs = [np.random.default_rng([int(seeds[i]), j]) for i in range(P) for j in range(n)]
    V = cfg.vocab_size

    # prefill: prompt i into stream i * n, then its other samples copy that stream's cache
    logits = kvcache.prefill(weights, cache, prompts, kern, streams=[i * n for i in range(P)])  # (P, Vp)
    for i in range(P):
        for j in range(1, n):
            cache.copy_stream(i * n, i * n + j)
    logits = np.repeat(logits, n, axis=0)                # (B, Vp)
    live = list(range(B))
    produced = np.zeros(B, dtype=np.int64)
    while live:
        step, nxt = [], []
        tokens = sample_tokens(logits[:, :V], temperature, top_k, top_p, [rngs[s] for s in live])
        for s, t in zip(live, tokens):
            if t in stop:
                continue
            step.append((s, t))
            produced[s] += 1
            if produced[s] < max_new_tokens and cache.lengths[s] < maxT:
                nxt.append((s, t))
        if step:
            yield step
        live = [s for s, _ in nxt]
        if live:
            logits = kvcache.decode_step(weights, cache, [t for _, t in nxt], live, kern)


def generate(weights, prompt_ids, max_new_tokens=64, temperature=1.0, top_k=None, top_p=None, seed=0,
             n=1, stop=None, kernels=None):
    """New token ids: a list of n lists for one prompt, or n lists per prompt (prompt-major) for a
    list of prompts. See the module docstring."""
    prompts, _ = normalize_prompts(prompt_ids, weights.config)
    check_counts(n, max_new_tokens)  # before allocating n output lists
    out = [[] for _ in range(len(prompts) * n)]
    for step in stream_tokens(weights, prompts, max_new_tokens, temperature, top_k, top_p, seed,
                              n, stop, kernels):
        for s, t in step:
            out[s].append(t)
    return out


class StreamDecoder:
    """Token ids in, text out as soon as it is complete UTF-8: a character split across two tokens
    is held back until its last byte arrives."""

    def __init__(self, tok):
        self.tok = tok
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, ids):
        return self.utf8.decode(self.tok.decode_bytes(ids))

    def flush(self):
        return self.utf8.decode(b"", final=True)
