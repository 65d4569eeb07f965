"""Conversations packed into rows of T+1 tokens with their loss masks, as batches for SFT.

Pretraining cuts one long token stream into windows; conversations are short and of every length,
so each becomes (ids, mask) with the chat template and several go side by side in one row:

    row   <|im_start|>user<|im_sep|>hi<|im_end|><|im_start|>assistant<|im_sep|>hello<|im_end|><|im_start|>user ... pad pad
    mask       0       0     0     0     0          0          0         0       1      1         0      0   ...  0   0

Rows are filled by best-fit decreasing (longest conversation first, into the row it fills most
tightly), so few slots are padding (`efficiency`: the share of real tokens). A batch is
x = row[:-1], y = row[1:], w = mask[1:]: the loss is on the tokens the mask marks (the assistant's
reply and its <|im_end|>); every other target, padding included, is -1, so it costs and teaches
nothing, and a batch with no marked token has loss 0, not 0/0. Attention still crosses the
conversations of a row, as pretraining's windows cross <|endoftext|>.

A conversation longer than T+1 tokens is dropped (or, with too_long="truncate", cut) and counted.
The order of an epoch (which conversations share a row, which rows come first) is a function of
(seed, epoch), so the position (epoch, row) is all a checkpoint needs to continue exactly, as
minigpt/pretrain/dataloader.py's DataLoader.
"""
import numpy as np

from ..tokenizer.chat import render


def tokenize(tok, conversations):
    """[(ids int32, mask uint8)] of each conversation's messages, rendered with the chat template."""
    out = []
    for c in conversations:
        ids, mask = render(tok, c["messages"] if isinstance(c, dict) else c)
        out.append((np.asarray(ids, dtype=np.int32), np.asarray(mask, dtype=np.uint8)))
    return out


def best_fit_decreasing(lengths, capacity):
    """Rows as lists of item indices: items longest first (stable), each into the open row whose
    free space it fills most tightly, or a new row. Every length must be <= capacity."""
    lengths = np.asarray(lengths)
    rows, space = [], []                        # space[r]: free slots of row r
    by_free = [[] for _ in range(capacity + 1)]  # free slots -> rows with exactly that much free
    count = np.zeros(capacity + 1, dtype=np.int64)
    for i in np.argsort(-lengths, kind="stable"):
        n = int(lengths[i])
        fits = np.flatnonzero(count[n:])        # the tightest row with room for n
        if fits.size:
            free = n + int(fits[0])
            r = by_free[free].pop()
            count[free] -= 1
        else:
            r, free = len(rows), capacity
            rows.append([])
            space.append(capacity)
        rows[r].append(int(i))
        space[r] = free - n
        by_free[free - n].append(r)
        count[free - n] += 1
    return rows


class PackedLoader:
    """Batches (x, y, w) of B packed rows of T+1 tokens; see the module docstring."""

    def __init__(self, examples, B, T, seed=None, too_long="drop"):
        if too_long not in ("drop", "truncate"):
            raise ValueError(f"too_long must be 'drop' or 'truncate', got {too_long!r}")
        self.B, self.T, self.seed = B, T, seed
        cap = T + 1
        self.too_long = sum(len(ids) > cap for ids, _ in examples)   # counted, either way
        if too_long == "drop":
            examples = [e for e in examples if len(e[0]) <= cap]
        else:
            examples = [(ids[:cap], mask[:cap]) for ids, mask in examples]
        if not examples:
            raise ValueError(f"every conversation is longer than T+1={cap} tokens: nothing to train on")
        self.examples = examples
        self.lengths = np.array([len(ids) for ids, _ in examples])
        self.epoch = self.row = 0
        self._plan()

    def _plan(self):
        """This epoch's rows: conversations in an order of (seed, epoch), packed, rows shuffled."""
        n = len(self.examples)
        rng = None if self.seed is None else np.random.default_rng([self.seed, self.epoch])
        order = np.arange(n) if rng is None else rng.permutation(n)
        rows = [[int(order[i]) for i in r] for r in best_fit_decreasing(self.lengths[order], self.T + 1)]
        self.rows = rows if rng is None else [rows[i] for i in rng.permutation(len(rows))]

    @property
    def efficiency(self):
        """Real tokens / slots in this epoch's rows."""
        return float(self.lengths.sum()) / (len(self.rows) * (self.T + 1))

    def num_windows(self):
        """Rows in one epoch (DataLoader's name, so the training loop can size its evaluation)."""
        return len(self.rows)

    def next_row(self):
        if self.row == len(self.rows):
            self.epoch, self.row = self.epoch + 1, 0
            self._plan()
        r = self.rows[self.row]
        self.row += 1
        ids = np.zeros(self.T + 1, dtype=np.int64)    # (T+1,) padding: id 0, masked out below
        mask = np.zeros(self.T + 1, dtype=np.uint8)   # (T+1,)
        at = 0
        for i in r:
            e_ids, e_mask = self.examples[i]
            ids[at:at + len(e_ids)], mask[at:at + len(e_ids)] = e_ids, e_mask
            at += len(e_ids)
        return ids, mask, at

    def next_batch(self):
        """(x, y, w): int64 (B, T) inputs and targets (-1 = no loss) and float32 (B, T) loss weights."""
        ids, mask, self.last_real = [], [], 0
        for _ in range(self.B):
            i, m, n = self.next_row()
            ids.append(i)
            mask.append(m)
            self.last_real += min(n, self.T)  # real tokens among the inputs
        ids, mask = np.stack(ids), np.stack(mask)     # (B, T+1)
        x, y, w = ids[:, :-1], ids[:, 1:].copy(), mask[:, 1:].astype(np.float32)  # (B, T)
        y[w == 0] = -1
        return x, y, w

    # position, for checkpoints
    def state(self):
        return {"epoch": self.epoch, "row": self.row}

    def load_state(self, state):
        self.epoch, self.row = int(state["epoch"]), int(state["row"])
        self._plan()
        if not 0 <= self.row <= len(self.rows):
            raise ValueError(f"data position {state} does not fit {len(self.rows)} rows")

    def reset(self):
        self.load_state({"epoch": 0, "row": 0})
