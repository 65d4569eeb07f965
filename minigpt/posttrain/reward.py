"""The reward model: a GPT trunk and a scalar head that reads the last token, trained on preferences.

People (or here, a simulated labeller) say which of two replies is better; the reward model learns a
score r(conversation) such that the better one scores higher. Its shape, as InstructGPT's:

    h = the final LayerNorm's output at the sequence's last token        (C,)
    r = h . w + b                                                          a number

and its loss, Bradley-Terry's: the probability that chosen beats rejected is sigmoid(r_c - r_r),

    loss = mean over pairs of  -log sigmoid(r_c - r_r) = softplus(r_r - r_c)
    dloss/dr_c = -sigmoid(r_r - r_c) / P,   dloss/dr_r = +sigmoid(r_r - r_c) / P

The head's backward is written out like every other op: dw = sum_b dr_b h_b, db = sum_b dr_b, and
dh_b = dr_b w flows into the trunk at (b, last_b) through model.backward(dlnf=...).

Files: the trunk is an llm.c checkpoint (RUN/ckpt_N.bin), the head sits beside it in
RUN/ckpt_N.head: a 256-int32 header [20251130, 1, C] then w (C floats) and b (1 float), fp32.
"""
import os

import numpy as np

from ..fileio import HEADER_BYTES, FileFormatError, atomic_write, check_length, make_header, read_header
from ..model import GPT

HEAD_MAGIC, HEAD_VERSION = 20251130, 1


def softplus(x):
    return np.logaddexp(0.0, x)


def sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow warnings for large |x|


# --------------------------------------------------------------------------------------------------
# the head, forward and backward


def reward_head_forward(r, lnf, last, w, b, B, T, C):
    # r (B,) = lnf[b, last[b]] (C,) . w (C,) + b
    h = lnf[np.arange(B), last]                       # (B, C)
    r[...] = h @ w + b                                # (B,)


def reward_head_backward(dlnf, dw, db, dr, lnf, last, w, B, T, C):
    # accumulates: dlnf (B, T, C) at (b, last[b]) += dr[b] w; dw (C,) += sum_b dr[b] h_b; db += sum dr
    h = lnf[np.arange(B), last]                       # (B, C)
    dlnf[np.arange(B), last] += dr[:, None] * w       # (B, C)
    dw += dr @ h                                      # (C,)
    db += dr.sum()                                    # (1,)


def bradley_terry(r_chosen, r_rejected):
    """(mean loss, dloss/dr_chosen, dloss/dr_rejected, accuracy = share with r_chosen > r_rejected,
    a tie counting half)."""
    margin = r_chosen - r_rejected                    # (P,)
    P = margin.size
    loss = float(softplus(-margin.astype(np.float64)).mean())
    g = sigmoid(-margin) / P                          # (P,)
    return loss, -g, g, float((margin > 0).mean() + 0.5 * (margin == 0).mean())


# --------------------------------------------------------------------------------------------------
# the model


class RewardModel:
    """model: a GPT (the trunk, with its own params/grads/AdamW); the head's w, b and their grads."""

    def __init__(self, model, w=None, b=0.0, seed=0):
        if model.backend.name == "cuda":
            raise ValueError("the reward model runs on the numpy and c backends (CudaGPT has no backward(dlnf))")
        C, dtype = model.config.n_embd, model.dtype
        self.model = model
        self.w = (np.zeros(C, dtype) if w is None else np.asarray(w, dtype).copy())
        self.b = np.array([b], dtype)
        self.dw, self.db = np.zeros(C, dtype), np.zeros(1, dtype)
        self.m = self.v = None  # the head's AdamW moments
        self.last = None

    def forward(self, idx, lengths):
        """Rewards (B,) of sequences idx (B, T) whose real lengths are lengths (B,): each read at its
        last real token (causal attention: padding after it changes nothing)."""
        idx = np.asarray(idx)
        B, T = idx.shape
        lengths = np.asarray(lengths)
        if lengths.shape != (B,) or lengths.min() < 1 or lengths.max() > T:
            raise ValueError(f"lengths must be (B,) = ({B},) in [1, T={T}], found {lengths}")
        self.model.forward(idx)
        self.last = lengths.astype(np.int64) - 1
        r = np.empty(B, self.model.dtype)
        reward_head_forward(r, self.model.acts["lnf"], self.last, self.w, self.b[0], B, T, self.model.config.n_embd)
        return r

    def zero_grad(self):
        self.model.zero_grad()
        self.dw[...] = 0
        self.db[...] = 0

    def backward(self, dr):
        """Accumulate d(objective)/d(params) given dr (B,) = d(objective)/d(rewards)."""
        m = self.model
        B, T, C = m.B, m.T, m.config.n_embd
        dlnf = np.zeros((B, T, C), m.dtype)
        reward_head_backward(dlnf, self.dw, self.db, np.asarray(dr, m.dtype), m.acts["lnf"], self.last, self.w, B, T, C)
        m.backward(dlnf=dlnf)

    def update(self, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, t=1):
        """AdamW on the trunk (as in pretraining) and on the head (w decayed, b not)."""
        self.model.update(lr, beta1, beta2, eps, weight_decay, t)
        if self.m is None:
            self.m, self.v = np.zeros(self.w.size + 1, self.w.dtype), np.zeros(self.w.size + 1, self.w.dtype)
        for x, g, sl, wd in ((self.w, self.dw, slice(0, -1), weight_decay), (self.b, self.db, slice(-1, None), 0.0)):
            m, v = self.m[sl], self.v[sl]
            m[...] = beta1 * m + (1 - beta1) * g
            v[...] = beta2 * v + (1 - beta2) * g * g
            m_hat, v_hat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)
            x -= lr * (m_hat / (np.sqrt(v_hat) + eps) + wd * x)

    def grads_flat(self):
        """Every gradient, trunk then head, as one vector (for clipping)."""
        return np.concatenate([self.model.grads_memory, self.dw, self.db])

    # ---------------------------------------------------------------------------------- files

    def save(self, model_path):
        """The trunk as an llm.c checkpoint at model_path, the head beside it (.head)."""
        self.model.save(model_path)
        self.save_head(model_path)

    def save_head(self, model_path):
        header = make_header(HEAD_MAGIC, HEAD_VERSION, self.w.size)
        body = np.concatenate([self.w, self.b]).astype("<f4")
        atomic_write(head_path(model_path), lambda f: f.write(header.tobytes() + body.tobytes()))

    @classmethod
    def load(cls, model_path, backend=None):
        model = GPT.load(model_path, backend=backend)
        path = head_path(model_path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no reward head beside {model_path} (is it a reward model run?)")
        header = read_header(path, HEAD_MAGIC, {HEAD_VERSION}, "reward head")
        C = int(header[2])
        if C != model.config.n_embd:
            raise FileFormatError(f"{path}: a head for C={C}, but the trunk has C={model.config.n_embd}")
        check_length(path, HEADER_BYTES + 4 * (C + 1), "reward head")
        body = np.fromfile(path, dtype="<f4", count=C + 1, offset=HEADER_BYTES)
        return cls(model, body[:C], float(body[C]))


def head_path(model_path):
    return os.path.splitext(os.fspath(model_path))[0] + ".head"
