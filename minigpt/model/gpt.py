"""GPT-2, forward and backward written out by hand (no autograd), as llm.c's train_gpt2.c.

All parameters live in one flat buffer, and so do their gradients; `model.params["qkvw"]` is a NumPy
view into it, in llm.c's names and order. Activations are named buffers too (`model.acts["att"]` is
every layer's attention pattern, (L, B, NH, T, T)), allocated for a (B, T) on first use.

The ops come from a backend: "numpy" (minigpt/model/ops.py, the specification) or the compiled ones.
Every backend exposes the same functions with the same arguments, so this one file drives them all.
"""
import math

import numpy as np

from ..config import MATRIX_NAMES, PARAM_NAMES, act_shapes, carve, num_parameters, param_shapes
from ..fileio import read_checkpoint, write_checkpoint
from . import backend as backends


class GPT:
    # a backend whose model keeps its state elsewhere registers its class here: CudaGPT (GPU memory,
    # minigpt/model/gpt_cuda.py) for "cuda", so GPT(cfg, backend="cuda") is a CudaGPT
    BACKEND_CLASSES = {}

    def __new__(cls, config=None, backend=None, *args, **kwargs):
        if cls is GPT and config is not None:
            cls = GPT.BACKEND_CLASSES.get(backend or backends.default(), GPT)
        return super().__new__(cls)

    def __init__(self, config, backend=None, seed=0, dtype=np.float32, threads=None, dropout=0.0):
        self.config = config
        self.dtype = np.dtype(dtype)
        self.backend = backends.get(backend, dtype=self.dtype, threads=threads)
        self.k = self.backend.ops  # the kernels: encoder_forward, layernorm_forward, ...
        n = num_parameters(config)
        self.params_memory = np.zeros(n, dtype=self.dtype)
        self.params = carve(self.params_memory, param_shapes(config))
        self.grads_memory = np.zeros(n, dtype=self.dtype)
        self.grads = carve(self.grads_memory, param_shapes(config))
        self.m_memory = self.v_memory = None  # AdamW moments, allocated on the first update
        self.acts = self.grad_acts = None     # allocated per (B, T) on first use
        self.B = self.T = 0
        self.inputs = self.targets = None
        self.loss = None
        # dropout (off by default): zero each activation with probability `dropout` while training, on the
        # embeddings and on each attention / MLP output before it joins the residual stream (nanoGPT's
        # places, except inside attention, which is the kernels' business). Masks come from this RNG,
        # so a seed reproduces them and a checkpoint can save its state.
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.dropout, self.training = dropout, True
        self.dropout_rng = np.random.default_rng(seed)
        self.masks = None
        if seed is not None:
            self.init_weights(seed)

    @property
    def num_parameters(self):
        return self.params_memory.size

    def init_weights(self, seed):
        """GPT-2's init: N(0, 0.02), residual projections scaled by 1/sqrt(2L), LN (1, 0), biases 0."""
        rng = np.random.default_rng(seed)
        cfg, p = self.config, self.params
        self.params_memory[:] = 0
        for name in MATRIX_NAMES:
            std = 0.02
            if name in ("attprojw", "fcprojw"):  # these add into the residual stream, once per layer each
                std /= math.sqrt(2 * cfg.n_layer)
            p[name][...] = rng.normal(0.0, std, size=p[name].shape)
        p["wte"][cfg.vocab_size:] = 0  # padded rows: never a token, never any probability
        for name in ("ln1w", "ln2w", "lnfw"):
            p[name][...] = 1.0

    # ----------------------------------------------------------------------------------------------
    # forward

    def _alloc(self, B, T):
        if (B, T) == (self.B, self.T):
            return
        shapes = act_shapes(self.config, B, T)
        size = sum(math.prod(s) for s in shapes.values())
        self.acts = carve(np.zeros(size, dtype=self.dtype), shapes)
        self.grad_acts = None  # re-allocated by the next backward
        self.B, self.T = B, T

    def _check_inputs(self, idx, targets):
        cfg = self.config
        idx = np.asarray(idx)
        if idx.ndim != 2:
            raise ValueError(f"idx must be a (B, T) array of token ids, found shape {idx.shape}")
        B, T = idx.shape
        if not 1 <= T <= cfg.block_size:
            raise ValueError(f"sequence length T={T} must be in [1, block_size={cfg.block_size}]")
        if idx.size and (idx.min() < 0 or idx.max() >= cfg.vocab_size):
            raise ValueError(f"token ids must be in [0, vocab_size={cfg.vocab_size}), "
                             f"found range [{idx.min()}, {idx.max()}]")
        if targets is not None:
            targets = np.asarray(targets)
            if targets.shape != idx.shape:
                raise ValueError(f"targets shape {targets.shape} must equal idx shape {idx.shape}")
            if targets.size and (targets.min() < -1 or targets.max() >= cfg.vocab_size):
                raise ValueError(f"targets must be in [-1, vocab_size={cfg.vocab_size}) (-1: ignored), "
                                 f"found range [{targets.min()}, {targets.max()}]")
            targets = targets.astype(np.int64)
        return idx.astype(np.int64), targets

    def forward(self, idx, targets=None, weights=None):
        """Run the model on idx (B, T). With targets (B, T; -1 = ignored) returns the mean loss over
        the targets that count, each token's loss times its weight (default 1). self.logits keeps
        this pass's logits (B, T, Vp)."""
        k, cfg, p = self.k, self.config, self.params
        idx, targets = self._check_inputs(idx, targets)
        B, T = idx.shape
        L, C, NH, V, Vp = cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.vocab_size, cfg.padded_vocab_size
        self._alloc(B, T)
        a = self.acts
        self.inputs, self.targets = idx, targets

        k.encoder_forward(a["encoded"], idx, p["wte"], p["wpe"], B, T, C)  # (B, T, C)
        self.masks = self._dropout_masks(B, T) if self.dropout > 0 and self.training else None
        if self.masks:
            a["encoded"] *= self.masks["encoded"]
        for l in range(L):
            residual = a["encoded"] if l == 0 else a["residual3"][l - 1]  # (B, T, C)
            k.layernorm_forward(a["ln1"][l], a["ln1_mean"][l], a["ln1_rstd"][l], residual,
                                p["ln1w"][l], p["ln1b"][l], B, T, C)
            k.matmul_forward(a["qkv"][l], a["ln1"][l], p["qkvw"][l], p["qkvb"][l], B, T, C, 3 * C)
            k.attention_forward(a["atty"][l], a["preatt"][l], a["att"][l], a["qkv"][l], B, T, C, NH)
            k.matmul_forward(a["attproj"][l], a["atty"][l], p["attprojw"][l], p["attprojb"][l], B, T, C, C)
            if self.masks:
                a["attproj"][l] *= self.masks["attproj"][l]
            k.residual_forward(a["residual2"][l], residual, a["attproj"][l], B * T * C)
            k.layernorm_forward(a["ln2"][l], a["ln2_mean"][l], a["ln2_rstd"][l], a["residual2"][l],
                                p["ln2w"][l], p["ln2b"][l], B, T, C)
            k.matmul_forward(a["fch"][l], a["ln2"][l], p["fcw"][l], p["fcb"][l], B, T, C, 4 * C)
            k.gelu_forward(a["fch_gelu"][l], a["fch"][l], B * T * 4 * C)
            k.matmul_forward(a["fcproj"][l], a["fch_gelu"][l], p["fcprojw"][l], p["fcprojb"][l],
                             B, T, 4 * C, C)
            if self.masks:
                a["fcproj"][l] *= self.masks["fcproj"][l]
            k.residual_forward(a["residual3"][l], a["residual2"][l], a["fcproj"][l], B * T * C)
        k.layernorm_forward(a["lnf"], a["lnf_mean"], a["lnf_rstd"], a["residual3"][L - 1],
                            p["lnfw"], p["lnfb"], B, T, C)
        k.matmul_forward(a["logits"], a["lnf"], p["wte"], None, B, T, C, Vp)  # tied: wte is the LM head

        if targets is None:
            self.loss = None
            return None
        k.softmax_crossentropy_forward(a["losses"], a["probs"], a["logits"], targets, B, T, V, Vp)
        return self.reweight(weights)

    def reweight(self, weights=None):
        """Set the per-token loss weights of the last forward (default 1): loss = sum(w * token loss) /
        number of counted targets, and backward() follows. Objectives whose weights depend on the
        token losses themselves (DPO, PPO) read acts["losses"] first, then call this."""
        B, T, targets = self.B, self.T, self.targets
        n_valid = int((targets >= 0).sum())
        w = np.ones((B, T), dtype=self.dtype) if weights is None else np.asarray(weights, self.dtype)
        if w.shape != (B, T):
            raise ValueError(f"weights shape {w.shape} must equal idx shape {(B, T)}")
        self.dlosses = np.where(targets >= 0, w, 0).astype(self.dtype) / max(n_valid, 1)  # (B, T)
        self.loss = float((self.acts["losses"].astype(np.float64) * self.dlosses).sum())
        return self.loss

    def _dropout_masks(self, B, T):
        """Inverted dropout: keep with probability 1 - p and scale by 1 / (1 - p), so eval needs no change."""
        L, C, p = self.config.n_layer, self.config.n_embd, self.dropout
        shapes = {"encoded": (B, T, C), "attproj": (L, B, T, C), "fcproj": (L, B, T, C)}
        return {name: (self.dropout_rng.random(shape) >= p).astype(self.dtype) * self.dtype.type(1.0 / (1.0 - p))
                for name, shape in shapes.items()}

    @property
    def logits(self):
        return None if self.acts is None else self.acts["logits"]

    # ----------------------------------------------------------------------------------------------
    # backward

    def zero_grad(self):
        self.grads_memory[:] = 0

    def backward(self, dlnf=None):
        """Accumulate d(loss)/d(params) into self.grads (call zero_grad() first to start afresh).

        With dlnf (B, T, C), the gradient of some other objective with respect to the final
        LayerNorm's output (a reward model's head reads it there) flows down the trunk instead of the
        language-model loss's: the LM head is skipped, and forward needs no targets."""
        if dlnf is None and self.loss is None:
            raise RuntimeError("backward() needs a forward(idx, targets) with targets first")
        if self.acts is None:
            raise RuntimeError("backward() needs a forward() first")
        k, cfg, p, g, a = self.k, self.config, self.params, self.grads, self.acts
        B, T = self.B, self.T
        L, C, NH, V, Vp = cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.vocab_size, cfg.padded_vocab_size
        if self.grad_acts is None:
            shapes = act_shapes(cfg, B, T)
            size = sum(math.prod(s) for s in shapes.values())
            self.grad_acts = carve(np.zeros(size, dtype=self.dtype), shapes)
        d = self.grad_acts
        for buf in d.values():  # the backward kernels accumulate, so activation grads start at 0
            buf[...] = 0

        if dlnf is None:  # the LM head: softmax cross-entropy, then the tied wte
            k.softmax_crossentropy_backward(d["logits"], self.dlosses, a["probs"], self.targets, B, T, V, Vp)
            k.matmul_backward(d["lnf"], g["wte"], None, d["logits"], a["lnf"], p["wte"], B, T, C, Vp)
        else:
            d["lnf"][...] = dlnf  # (B, T, C)
        k.layernorm_backward(d["residual3"][L - 1], g["lnfw"], g["lnfb"], d["lnf"], a["residual3"][L - 1],
                             p["lnfw"], a["lnf_mean"], a["lnf_rstd"], B, T, C)
        for l in reversed(range(L)):
            residual = a["encoded"] if l == 0 else a["residual3"][l - 1]   # (B, T, C)
            dresidual = d["encoded"] if l == 0 else d["residual3"][l - 1]  # (B, T, C)
            k.residual_backward(d["residual2"][l], d["fcproj"][l], d["residual3"][l], B * T * C)
            if self.masks:  # through the dropout of the forward: the same mask
                d["fcproj"][l] *= self.masks["fcproj"][l]
            k.matmul_backward(d["fch_gelu"][l], g["fcprojw"][l], g["fcprojb"][l], d["fcproj"][l],
                              a["fch_gelu"][l], p["fcprojw"][l], B, T, 4 * C, C)
            k.gelu_backward(d["fch"][l], a["fch"][l], d["fch_gelu"][l], B * T * 4 * C)
            k.matmul_backward(d["ln2"][l], g["fcw"][l], g["fcb"][l], d["fch"][l], a["ln2"][l], p["fcw"][l],
                              B, T, C, 4 * C)
            k.layernorm_backward(d["residual2"][l], g["ln2w"][l], g["ln2b"][l], d["ln2"][l], a["residual2"][l],
                                 p["ln2w"][l], a["ln2_mean"][l], a["ln2_rstd"][l], B, T, C)
            k.residual_backward(dresidual, d["attproj"][l], d["residual2"][l], B * T * C)
            if self.masks:
                d["attproj"][l] *= self.masks["attproj"][l]
            k.matmul_backward(d["atty"][l], g["attprojw"][l], g["attprojb"][l], d["attproj"][l],
                              a["atty"][l], p["attprojw"][l], B, T, C, C)
            k.attention_backward(d["qkv"][l], d["preatt"][l], d["att"][l], d["atty"][l], a["qkv"][l],
                                 a["att"][l], B, T, C, NH)
            k.matmul_backward(d["ln1"][l], g["qkvw"][l], g["qkvb"][l], d["qkv"][l], a["ln1"][l], p["qkvw"][l],
                              B, T, C, 3 * C)
            k.layernorm_backward(dresidual, g["ln1w"][l], g["ln1b"][l], d["ln1"][l], residual,
                                 p["ln1w"][l], a["ln1_mean"][l], a["ln1_rstd"][l], B, T, C)
        if self.masks:
            d["encoded"] *= self.masks["encoded"]
        k.encoder_backward(g["wte"], g["wpe"], d["encoded"], self.inputs, B, T, C)

    # ----------------------------------------------------------------------------------------------
    # optimizer

    def update(self, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, t=1):
        """One AdamW step over every tensor; weight decay applies to the weight matrices only."""
        if self.m_memory is None:
            self.m_memory = np.zeros_like(self.params_memory)
            self.v_memory = np.zeros_like(self.params_memory)
        shapes = param_shapes(self.config)
        m, v = carve(self.m_memory, shapes), carve(self.v_memory, shapes)
        for name in PARAM_NAMES:
            wd = weight_decay if name in MATRIX_NAMES else 0.0
            x = self.params[name].reshape(-1)
            self.k.adamw_update(x, self.grads[name].reshape(-1), m[name].reshape(-1), v[name].reshape(-1),
                                x.size, lr, beta1, beta2, eps, wd, t)

    # ----------------------------------------------------------------------------------------------
    # files

    def save(self, path):
        write_checkpoint(path, self.config, self.params_memory)

    @classmethod
    def load(cls, path, backend=None, dtype=np.float32, threads=None):
        config, params = read_checkpoint(path)
        model = cls(config, backend=backend, seed=None, dtype=dtype, threads=threads)
        model.params_memory[:] = params
        return model
