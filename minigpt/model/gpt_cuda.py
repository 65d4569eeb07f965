"""GPT-2 on the GPU: GPT(cfg, backend="cuda") is a CudaGPT, as llm.c's train_gpt2.cu.

Parameters, gradients, AdamW moments and activations stay in GPU memory; a training step moves the
tokens (and targets, and loss weights if any) in and one float64, the loss, out. forward and
backward below are gpt.py's, line for line, on DeviceArrays: the same kernels in the same order.

Two differences from the CPU model, both for memory (GPT-2 124M at B=16, T=1024 needs ~40 GB):
  - preatt (the attention scores before the softmax) is scratch for one layer, not kept per layer:
    acts["att"] (L, B, NH, T, T) is kept and is what the backward needs;
  - the activation gradients are scratch for one layer, reused down the stack (as llm.c).

The host copies: model.params / params_memory / grads / grads_memory are NumPy arrays. Reading one
copies the GPU's values over (when the GPU's are newer) and marks the host copy as the current one,
so writes through it are uploaded before the next GPU op. A view kept across a training step is a
snapshot: read model.params again after stepping. model.acts and model.logits download on access.
"""
import math
from collections.abc import Mapping

import numpy as np

from . import ops_cuda
from ..config import MATRIX_NAMES, PARAM_NAMES, act_shapes, param_shapes
from .gpt import GPT
from .ops_cuda import DeviceArray, carve


def _mirror(attr, key):
    """A property for a host copy of params or grads, synced with the GPU's as the docstring says."""

    def get(self):
        if self._current.get(key) == "device":
            getattr(self, "d_" + key).download(out=self.__dict__["_params_memory" if key == "params"
                                                                   else "_grads_memory"])
        self._current[key] = "host"  # the caller may write through what it gets
        return self.__dict__[attr]

    def set(self, value):
        self.__dict__[attr] = value

    return property(get, set)


class DeviceActs(Mapping):
    """model.acts on the GPU: each activation is downloaded when it is looked up."""

    def __init__(self, views):
        self.views = views

    def __getitem__(self, name):
        if name == "preatt":
            raise KeyError("preatt is not kept per layer on the GPU (scratch for one layer, to save "
                           "memory); acts['att'] holds every layer's attention pattern")
        return self.views[name].download()

    def __iter__(self):
        return (name for name in self.views if not name.startswith("_") and name != "preatt")

    def __len__(self):
        return sum(1 for _ in self)


class CudaGPT(GPT):
    params_memory = _mirror("_params_memory", "params")
    params = _mirror("_params", "params")
    grads_memory = _mirror("_grads_memory", "grads")
    grads = _mirror("_grads", "grads")

    def __init__(self, config, backend="cuda", seed=0, dtype=np.float32, threads=None):
        reason = ops_cuda.unavailable_reason()
        if reason:
            raise RuntimeError(f"backend 'cuda' is not available: {reason}")
        self._current = {"params": "host", "grads": "host"}  # which copy, host or device, is current
        self._dacts = self._dgrad = None
        super().__init__(config, backend="cuda", seed=None, dtype=dtype)  # host copies, self.k = ops_cuda
        shapes = param_shapes(config)
        n = self._params_memory.size
        self.d_params, self.d_grads = DeviceArray((n,)), DeviceArray((n,))
        self.d_grads.zero()
        self._current["grads"] = "device"
        self.dp, self.dg = carve(self.d_params, shapes), carve(self.d_grads, shapes)
        self.d_m = self.d_v = None  # AdamW moments, allocated on the first update
        if seed is not None:
            self.init_weights(seed)  # on the host copy: uploaded before the first GPU op

    @property
    def num_parameters(self):
        return self._params_memory.size

    def _to_device(self, key):
        if self._current[key] == "host":
            getattr(self, "d_" + key).upload(self.__dict__["_" + key + "_memory"])
            self._current[key] = "device"

    # activations: model.acts downloads on demand; GPT.__init__ sets None, which is all it may set
    @property
    def acts(self):
        return None if self._dacts is None else DeviceActs(self._dacts)

    @acts.setter
    def acts(self, value):
        assert value is None, "CudaGPT's activations live on the GPU"

    @property
    def logits(self):
        return None if self._dacts is None else self._dacts["logits"].download()

    def _alloc(self, B, T):
        if (B, T) == (self.B, self.T):
            return
        cfg = self.config
        NH = cfg.n_head
        self._dacts = self._dgrad = None  # free the old buffers before asking for new ones
        shapes = dict(act_shapes(cfg, B, T))
        shapes["preatt"] = (B, NH, T, T)  # one layer's scratch, see the module docstring
        shapes["_dlosses"] = (B, T)
        shapes["_weights"] = (B, T)
        size = sum(math.prod(s) for s in shapes.values())
        self._dacts = carve(DeviceArray((size,)), shapes)
        self.d_idx, self.d_targets = DeviceArray((B, T), np.int32), DeviceArray((B, T), np.int32)
        self.d_loss = DeviceArray((1,), np.float64)
        self.B, self.T = B, T

    # ----------------------------------------------------------------------------------------------
    # forward: model.py's, on the GPU

    def forward(self, idx, targets=None, weights=None):
        k, cfg, p = self.k, self.config, self.dp
        idx, targets = self._check_inputs(idx, targets)
        B, T = idx.shape
        L, C, NH, V, Vp = cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.vocab_size, cfg.padded_vocab_size
        if targets is not None and weights is not None:
            weights = np.asarray(weights, np.float32)
            if weights.shape != (B, T):
                raise ValueError(f"weights shape {weights.shape} must equal idx shape {(B, T)}")
        self._alloc(B, T)
        self._to_device("params")
        a = self._dacts
        self.d_idx.upload(idx.astype(np.int32))
        self.inputs, self.targets, self.loss = idx, targets, None

        k.encoder_forward(a["encoded"], self.d_idx, p["wte"], p["wpe"], B, T, C)  # (B, T, C)
        for l in range(L):
            residual = a["encoded"] if l == 0 else a["residual3"][l - 1]  # (B, T, C)
            k.layernorm_forward(a["ln1"][l], a["ln1_mean"][l], a["ln1_rstd"][l], residual,
                                p["ln1w"][l], p["ln1b"][l], B, T, C)
            k.matmul_forward(a["qkv"][l], a["ln1"][l], p["qkvw"][l], p["qkvb"][l], B, T, C, 3 * C)
            k.attention_forward(a["atty"][l], a["preatt"], a["att"][l], a["qkv"][l], B, T, C, NH)
            k.matmul_forward(a["attproj"][l], a["atty"][l], p["attprojw"][l], p["attprojb"][l], B, T, C, C)
            k.residual_forward(a["residual2"][l], residual, a["attproj"][l], B * T * C)
            k.layernorm_forward(a["ln2"][l], a["ln2_mean"][l], a["ln2_rstd"][l], a["residual2"][l],
                                p["ln2w"][l], p["ln2b"][l], B, T, C)
            k.matmul_forward(a["fch"][l], a["ln2"][l], p["fcw"][l], p["fcb"][l], B, T, C, 4 * C)
            k.gelu_forward(a["fch_gelu"][l], a["fch"][l], B * T * 4 * C)
            k.matmul_forward(a["fcproj"][l], a["fch_gelu"][l], p["fcprojw"][l], p["fcprojb"][l],
                             B, T, 4 * C, C)
            k.residual_forward(a["residual3"][l], a["residual2"][l], a["fcproj"][l], B * T * C)
        k.layernorm_forward(a["lnf"], a["lnf_mean"], a["lnf_rstd"], a["residual3"][L - 1],
                            p["lnfw"], p["lnfb"], B, T, C)
        k.matmul_forward(a["logits"], a["lnf"], p["wte"], None, B, T, C, Vp)  # tied: wte is the LM head

        if targets is None:
            return None
        self.d_targets.upload(targets.astype(np.int32))
        k.softmax_crossentropy_forward(a["losses"], a["probs"], a["logits"], self.d_targets, B, T, V, Vp)
        # the mean over the targets that count, each weighted; as model.py, but on the GPU
        n_valid = int((targets >= 0).sum())
        if weights is not None:
            a["_weights"].upload(weights)
        k.loss_weights(a["_dlosses"], self.d_targets, a["_weights"] if weights is not None else None,
                       B * T, float(max(n_valid, 1)))
        k.weighted_loss(self.d_loss, a["losses"], a["_dlosses"], B * T)
        self.loss = float(self.d_loss.download()[0])  # the one number that leaves the GPU
        return self.loss

    # ----------------------------------------------------------------------------------------------
    # backward: model.py's, with one layer of activation-gradient scratch reused down the stack

    def zero_grad(self):
        self.d_grads.zero()
        self._current["grads"] = "device"

    def _alloc_grad_scratch(self):
        cfg, B, T = self.config, self.B, self.T
        C, NH, Vp = cfg.n_embd, cfg.n_head, cfg.padded_vocab_size
        shapes = {
            "logits": (B, T, Vp), "lnf": (B, T, C), "stream": (B, T, C), "stream_below": (B, T, C),
            # one layer's activation gradients: consecutive, so one memset clears them all
            "residual2": (B, T, C), "fcproj": (B, T, C), "fch_gelu": (B, T, 4 * C), "fch": (B, T, 4 * C),
            "ln2": (B, T, C), "attproj": (B, T, C), "atty": (B, T, C), "preatt": (B, NH, T, T),
            "att": (B, NH, T, T), "qkv": (B, T, 3 * C), "ln1": (B, T, C),
        }
        size = sum(math.prod(s) for s in shapes.values())
        memory = DeviceArray((size,))
        self._dgrad = carve(memory, shapes)
        start = sum(math.prod(s) for s in list(shapes.values())[:4])
        self._dgrad_layer = memory.view((size - start,), start)

    def backward(self):
        """Accumulate d(loss)/d(params) into the GPU's gradients (zero_grad() first to start afresh)."""
        if self.loss is None:
            raise RuntimeError("backward() needs a forward(idx, targets) with targets first")
        k, cfg, p, g, a = self.k, self.config, self.dp, self.dg, self._dacts
        B, T = self.B, self.T
        L, C, NH, V, Vp = cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.vocab_size, cfg.padded_vocab_size
        self._to_device("params")
        self._to_device("grads")
        if self._dgrad is None:
            self._alloc_grad_scratch()
        d = self._dgrad
        for name in ("logits", "lnf", "stream"):
            d[name].zero()
        stream, below = d["stream"], d["stream_below"]  # d(loss)/d(residual stream) above and below a layer

        k.softmax_crossentropy_backward(d["logits"], a["_dlosses"], a["probs"], self.d_targets, B, T, V, Vp)
        k.matmul_backward(d["lnf"], g["wte"], None, d["logits"], a["lnf"], p["wte"], B, T, C, Vp)
        k.layernorm_backward(stream, g["lnfw"], g["lnfb"], d["lnf"], a["residual3"][L - 1],
                             p["lnfw"], a["lnf_mean"], a["lnf_rstd"], B, T, C)
        for l in reversed(range(L)):
            residual = a["encoded"] if l == 0 else a["residual3"][l - 1]  # (B, T, C)
            self._dgrad_layer.zero()  # the backward kernels accumulate: this layer's grads start at 0
            below.zero()
            k.residual_backward(d["residual2"], d["fcproj"], stream, B * T * C)
            k.matmul_backward(d["fch_gelu"], g["fcprojw"][l], g["fcprojb"][l], d["fcproj"],
                              a["fch_gelu"][l], p["fcprojw"][l], B, T, 4 * C, C)
            k.gelu_backward(d["fch"], a["fch"][l], d["fch_gelu"], B * T * 4 * C)
            k.matmul_backward(d["ln2"], g["fcw"][l], g["fcb"][l], d["fch"], a["ln2"][l], p["fcw"][l],
                              B, T, C, 4 * C)
            k.layernorm_backward(d["residual2"], g["ln2w"][l], g["ln2b"][l], d["ln2"], a["residual2"][l],
                                 p["ln2w"][l], a["ln2_mean"][l], a["ln2_rstd"][l], B, T, C)
            k.residual_backward(below, d["attproj"], d["residual2"], B * T * C)
            k.matmul_backward(d["atty"], g["attprojw"][l], g["attprojb"][l], d["attproj"],
                              a["atty"][l], p["attprojw"][l], B, T, C, C)
            k.attention_backward(d["qkv"], d["preatt"], d["att"], d["atty"], a["qkv"][l],
                                 a["att"][l], B, T, C, NH)
            k.matmul_backward(d["ln1"], g["qkvw"][l], g["qkvb"][l], d["qkv"], a["ln1"][l], p["qkvw"][l],
                              B, T, C, 3 * C)
            k.layernorm_backward(below, g["ln1w"][l], g["ln1b"][l], d["ln1"], residual,
                                 p["ln1w"][l], a["ln1_mean"][l], a["ln1_rstd"][l], B, T, C)
            stream, below = below, stream  # this layer's input gradient feeds the layer beneath
        k.encoder_backward(g["wte"], g["wpe"], stream, self.d_idx, B, T, C)

    # ----------------------------------------------------------------------------------------------
    # optimizer

    def update(self, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, t=1):
        """One AdamW step on the GPU; weight decay on the weight matrices only (as model.py)."""
        self._to_device("params")
        self._to_device("grads")
        if self.d_m is None:
            n = self._params_memory.size
            self.d_m, self.d_v = DeviceArray((n,)), DeviceArray((n,))
            self.d_m.zero()
            self.d_v.zero()
        shapes = param_shapes(self.config)
        m, v = carve(self.d_m, shapes), carve(self.d_v, shapes)
        for name in PARAM_NAMES:
            wd = weight_decay if name in MATRIX_NAMES else 0.0
            self.k.adamw_update(self.dp[name], self.dg[name], m[name], v[name], self.dp[name].size,
                                lr, beta1, beta2, eps, wd, t)



GPT.BACKEND_CLASSES["cuda"] = CudaGPT
