"""Continuous batching: many generations share one KV cache and one forward pass per step.

A server cannot wait for a batch to finish before it starts the next request, so the batch is a
fixed pool of B slots (streams of one kvcache.KVCache) that requests join and leave between steps:

    add(prompt, ...)   prefill the prompt into a free slot; its next-token logits wait there
    step()             every live stream samples one token from its logits (its own settings, its
                       own RNG) and returns it; those that go on are fed back in ONE decode_step
                       of S rows, run at the start of the next step (or force), so a token
                       reaches its client before the forward pass that it feeds
    cancel(stream)     free the slot now (a client went away, a stop string was seen)
    force(stream, ids) append ids to the stream's context unsampled (a tool's output), one
                       forward pass of len(ids) rows that also gives the logits after them

So the first token of a new request costs its prefill plus one step, whatever the others are doing
(and whatever is left of the step in flight when it arrives).
A stream ends at one of its stop tokens (not emitted; reason "stop"), after max_new_tokens sampled
tokens, or when its slot's cache is full (reason "length"). Each stream draws from its own
generator and the C decode kernels give every row the same bits whatever else is in the batch, so
a stream's tokens do not depend on its neighbours (tests/test_engine.py checks this against
generate.generate). The samplers and the forward pass are those of sampling.py and kvcache.py.
"""
from dataclasses import dataclass

import numpy as np

from ..model import backend
from . import kvcache
from .sampling import check_sampling, sample_token


@dataclass
class Stream:
    slot: int                  # its row of the KV cache
    logits: np.ndarray         # (V,) the next token's logits, set by prefill / the last step / force
    rng: np.random.Generator   # its own: tokens do not depend on the other streams
    temperature: float
    top_k: int | None
    top_p: float | None
    max_new_tokens: int
    stop: frozenset            # token ids that end it (not emitted)
    produced: int = 0          # sampled tokens so far (forced ones do not count)


class Engine:
    """B stream slots over one KV cache of maxT positions (default: the model's block_size)."""

    def __init__(self, weights, slots=8, maxT=None, kernels=None):
        if slots < 1:
            raise ValueError(f"the engine needs at least one slot, found {slots}")
        self.weights = weights
        self.kern = backend.decode_kernels(kernels) if kernels is None or isinstance(kernels, str) else kernels
        self.cache = kvcache.KVCache(weights.config, slots, maxT)
        self.V = weights.config.vocab_size
        self.streams = {}                              # stream id -> Stream, the live ones
        self.pending = []                              # (stream id, token) sampled, not yet fed
        self.free = list(range(slots - 1, -1, -1))     # free slots, the lowest on top
        self.next_id = 0

    @property
    def maxT(self):
        return self.cache.maxT

    def add(self, prompt_ids, temperature=1.0, top_k=None, top_p=None, seed=None, max_new_tokens=64, stop=()):
        """Prefill prompt_ids into a free slot; returns the new stream's id. seed: an int, a tuple of
        ints (sample j of request r: (seed, j), as sample.generate draws) or None (fresh entropy)."""
        parts = seed if isinstance(seed, (tuple, list)) else [0 if seed is None else seed]
        for part in parts:
            check_sampling(temperature, top_k, top_p, part)
        if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an int >= 1, found {max_new_tokens!r}")
        ids = [int(t) for t in prompt_ids]
        if not 1 <= len(ids) <= self.maxT:
            raise ValueError(f"a prompt needs 1..{self.maxT} tokens (the cache length), found {len(ids)}")
        if not self.free:
            raise RuntimeError(f"all {self.cache.B} slots are busy: wait for a stream to finish")
        slot = self.free.pop()
        self.cache.lengths[slot] = 0                   # the slot's old keys are overwritten as it fills
        try:
            logits = kvcache.prefill(self.weights, self.cache, [ids], self.kern, streams=[slot])  # (1, Vp)
        except ValueError:
            self.free.append(slot)
            raise
        sid, self.next_id = self.next_id, self.next_id + 1
        rng = np.random.default_rng(None if seed is None else [int(p) for p in parts])
        self.streams[sid] = Stream(slot, logits[0, :self.V], rng, temperature, top_k, top_p,
                                   int(max_new_tokens), frozenset(int(t) for t in stop))
        return sid

    def step(self):
        """One token for every live stream. Returns [(stream id, token or None, finish)] where finish
        is None (it goes on), "stop" (token is None: a stop token, not emitted) or "length"."""
        self.flush()
        out = []
        for sid, s in list(self.streams.items()):
            t = sample_token(s.logits, s.temperature, s.top_k, s.top_p, s.rng)
            if t in s.stop:
                out.append((sid, None, "stop"))
                self.cancel(sid)
                continue
            s.produced += 1
            full = self.cache.lengths[s.slot] >= self.maxT  # no position left to feed t into
            if s.produced >= s.max_new_tokens or full:
                out.append((sid, t, "length"))
                self.cancel(sid)
            else:
                out.append((sid, t, None))
                self.pending.append((sid, t))
        return out

    def flush(self):
        """Feed the tokens the last step sampled, one row per stream still live, in one forward."""
        feed = [(self.streams[sid], t) for sid, t in self.pending if sid in self.streams]
        self.pending = []
        if feed:
            tokens = [t for _, t in feed]
            slots = [s.slot for s, _ in feed]
            logits = kvcache.decode_step(self.weights, self.cache, tokens, slots, self.kern)  # (S, Vp)
            for row, (s, _) in enumerate(feed):
                s.logits = logits[row, :self.V]

    def force(self, sid, ids):
        """Append ids to stream sid's context as if it had produced them, without sampling; its next
        token is then sampled after them."""
        s = self.streams.get(sid)
        if s is None:
            raise KeyError(f"no live stream {sid}")
        self.flush()  # the sampled token goes in before the forced ones
        ids = [int(t) for t in ids]
        start = int(self.cache.lengths[s.slot])
        if not ids or start + len(ids) > self.maxT:
            raise ValueError(f"stream {sid} has {start} of {self.maxT} positions filled: cannot force "
                             f"{len(ids)} tokens")
        n = len(ids)
        logits = kvcache.forward_cached(self.weights, self.cache, ids, [s.slot] * n,
                                        np.arange(start, start + n), self.kern, logit_rows=[n - 1])  # (1, Vp)
        s.logits = logits[0, :self.V]

    def cancel(self, sid):
        """End stream sid and free its slot (a no-op for a stream that has already ended)."""
        s = self.streams.pop(sid, None)
        if s is not None:
            self.free.append(s.slot)

    def context_length(self, sid):
        """Positions of the stream's slot filled so far: prompt, sampled and forced tokens."""
        self.flush()
        return int(self.cache.lengths[self.streams[sid].slot])
