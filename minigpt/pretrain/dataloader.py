"""Batches of (B, T+1) token windows from memory-mapped llm.c shards, resumable from a recorded position.

A shard of n tokens is cut into windows of T+1 tokens at stride T (each window's last token is the next
window's first), as llm.c's loader does: inputs are window[:-1], targets window[1:]. Windows never span
two shards. One epoch visits every window of every shard once; a batch is the next B windows, so it
may take windows from two shards.

Without a seed the order is the file order: the loader then yields exactly the shards' tokens.
With a seed, every epoch has its own shard order, its own window order per shard, and shifts each
shard's window grid by a random offset in [0, T), so successive epochs see different cuts of the text.
All of it is a function of (seed, epoch, shard), so the position (epoch, shard, window) is all a
checkpoint needs to continue exactly.

sampling="random" is nanoGPT's get_batch instead: every window starts at a uniformly random token
(any shard, any offset), drawn independently for each batch from (seed, batch number); the position
is the number of batches drawn so far.

Data-parallel training (minigpt/pretrain/distributed.py): B is the GLOBAL batch and rows=(lo, hi)
the rows of it that this rank reads. Every rank walks the same positions (so the position is the
same on all of them), but copies only its own windows out of the shards.
"""
import glob
import os

import numpy as np

from ..fileio import read_shard


def shard_paths(pattern):
    """The shard files of a glob pattern, a list of paths, or a directory's `*.bin`, sorted."""
    if isinstance(pattern, (list, tuple)):
        paths = [os.fspath(p) for p in pattern]
    elif os.path.isdir(pattern):
        paths = sorted(glob.glob(os.path.join(pattern, "*.bin")))
    else:
        paths = sorted(glob.glob(pattern))
    if not paths:
        raise FileNotFoundError(f"no token shards match {pattern!r}")
    return paths


class DataLoader:
    def __init__(self, shards, B, T, seed=None, sampling="epoch", rows=None):
        if sampling not in ("epoch", "random"):
            raise ValueError(f"sampling must be 'epoch' or 'random', got {sampling!r}")
        if sampling == "random" and seed is None:
            raise ValueError("sampling='random' needs a seed")
        self.paths = shard_paths(shards)
        self.B, self.T, self.seed, self.sampling = B, T, seed, sampling
        self.rows = slice(*rows) if rows is not None else slice(0, B)  # this rank's rows of each batch
        if not 0 <= self.rows.start < self.rows.stop <= B:
            raise ValueError(f"rows {rows} must be a non-empty part of a batch of {B}")
        self.tokens = [read_shard(p, mmap=True) for p in self.paths]  # memory-mapped: no copy
        if all(len(t) < T + 1 for t in self.tokens):
            sizes = [len(t) for t in self.tokens]
            raise ValueError(f"every shard is shorter than one window of T+1={T + 1} tokens "
                             f"(shard sizes {sizes}): use a smaller sequence length or more data")
        self.epoch = self.shard = self.window = 0  # the position: next window to read
        self.batches = 0                            # the position for sampling="random"
        # random sampling: window starts 0 .. n-T-1 of every shard, numbered one after the other
        self._starts_cum = np.cumsum([max(0, len(t) - T) for t in self.tokens])
        self._plan()

    # the order of one epoch: a pure function of (seed, epoch)
    def _plan(self):
        n = len(self.paths)
        if self.seed is None:
            self.shard_order = np.arange(n)
        else:
            self.shard_order = np.random.default_rng([self.seed, self.epoch]).permutation(n)
        self._windows = None

    def _shard_windows(self):
        """(start offsets of the windows in the current shard, in visiting order)."""
        if self._windows is None:
            s = int(self.shard_order[self.shard])
            n = len(self.tokens[s])
            if self.seed is None:
                offset, rng = 0, None
            else:
                rng = np.random.default_rng([self.seed, self.epoch, s])
                offset = int(rng.integers(0, self.T)) if n - 1 >= 2 * self.T else 0
            starts = np.arange(offset, n - self.T, self.T)  # window [start, start + T + 1) fits in n
            self._windows = starts if rng is None else rng.permutation(starts)
        return self._windows

    def next_window(self):
        while True:
            starts = self._shard_windows()
            if self.window < len(starts):
                s = int(self.shard_order[self.shard])
                start = int(starts[self.window])
                self.window += 1
                return self.tokens[s][start:start + self.T + 1]
            self.shard, self.window, self._windows = self.shard + 1, 0, None
            if self.shard == len(self.paths):
                self.epoch, self.shard = self.epoch + 1, 0
                self._plan()

    def random_windows(self):
        rng = np.random.default_rng([self.seed, self.batches])
        self.batches += 1
        picks = rng.integers(0, self._starts_cum[-1], size=self.B)       # (B,) over all shards' starts
        shards = np.searchsorted(self._starts_cum, picks, side="right")  # which shard each falls in
        starts = picks - np.concatenate([[0], self._starts_cum])[shards]
        return [self.tokens[s][i:i + self.T + 1] for s, i in zip(shards, starts)]

    def next_batch(self):
        """(x, y): int64 arrays (B, T), y the next tokens of x (this rank's rows of them)."""
        windows = (self.random_windows() if self.sampling == "random"
                   else [self.next_window() for _ in range(self.B)])  # views into the shards: no copy yet
        buf = np.stack(windows[self.rows]).astype(np.int64)  # (hi - lo, T+1): only these rows are read
        return buf[:, :-1], buf[:, 1:]

    def num_windows(self):
        """Windows in one epoch (at offset 0)."""
        return sum(max(0, (len(t) - 1) // self.T) for t in self.tokens)

    # position, for checkpoints
    def state(self):
        return {"epoch": self.epoch, "shard": self.shard, "window": self.window, "batches": self.batches}

    def load_state(self, state):
        self.epoch, self.shard, self.window = int(state["epoch"]), int(state["shard"]), int(state["window"])
        self.batches = int(state.get("batches", 0))
        self._plan()
        if not 0 <= self.shard < len(self.paths):
            raise ValueError(f"data position {state} does not fit {len(self.paths)} shards")

    def reset(self):
        self.load_state({"epoch": 0, "shard": 0, "window": 0})
