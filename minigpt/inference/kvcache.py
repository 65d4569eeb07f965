"""Inference with a KV cache: prefill, then one token at a time.

Training runs the whole sequence at once (minigpt/model/gpt.py). Generating runs one token at a time, and the
keys and values of past tokens never change, so we keep them: a KV cache per layer, shaped
(B, NH, maxT, hs), preallocated once for B streams and the longest sequence they can reach.

    prefill  every prompt token of every stream in one pass: N = the prompts' total length rows
    decode   one new token per stream: N = B rows, each a matrix-vector product with the weights

Both are `forward_cached`: row r is token tokens[r] of stream streams[r] at position positions[r].
Its key and value go into the cache at that position, then it attends over its own stream's
positions 0..positions[r]. Streams have their own lengths; a row never sees another stream.

The kernels are minigpt/model/ops_decode.py (NumPy) or its C twin, csrc/decode.c, chosen by
minigpt/model/backend.py like the training kernels. The weights may be fp32 or bf16 (uint16 bit
patterns; see DecodeWeights); bf16 halves the bytes that decoding must read per token.
"""
import numpy as np

from ..config import carve, param_shapes
from ..fileio import bf16_to_f32, f32_to_bf16, read_checkpoint_raw
from ..model import backend

# --------------------------------------------------------------------------------------------------
# the weights, fp32 or bf16


SMALL = ("ln1w", "ln1b", "qkvb", "attprojb", "ln2w", "ln2b", "fcb", "fcprojb", "lnfw", "lnfb")
MATRICES = ("wte", "wpe", "qkvw", "attprojw", "fcw", "fcprojw")


class DecodeWeights:
    """The parameters as inference reads them: a dict of named tensors plus the config. With
    half=True the matrices are bf16 bit patterns (uint16) and the small tensors (LayerNorm, biases)
    are fp32 holding bf16-rounded values: exactly what a version-5 checkpoint stores."""

    def __init__(self, config, tensors, half):
        self.config, self.t, self.half = config, tensors, half

    @classmethod
    def from_flat(cls, config, flat, half=False):
        flat = np.asarray(flat)
        stored_half = flat.dtype == np.uint16
        t = carve(flat, param_shapes(config))
        if half and not stored_half:
            t = {k: f32_to_bf16(v).reshape(v.shape) for k, v in t.items()}
            stored_half = True
        if stored_half:
            for k in SMALL:
                t[k] = bf16_to_f32(t[k]).reshape(t[k].shape)
        elif flat.dtype != np.float32:
            t = {k: v.astype(np.float32) for k, v in t.items()}
        return cls(config, t, stored_half)

    @classmethod
    def from_model(cls, model, half=False):
        """Views of the model's fp32 parameters (they follow training), or a bf16 copy."""
        return cls.from_flat(model.config, model.params_memory, half)

    @classmethod
    def load(cls, path, half=None):
        """From a checkpoint; a bf16 (v5) one stays 16-bit in memory. half=True rounds an fp32 one."""
        config, flat = read_checkpoint_raw(path)
        if half is False and flat.dtype == np.uint16:
            flat = bf16_to_f32(flat)
        return cls.from_flat(config, flat, bool(half))

    def embed_rows(self, name, rows):
        w = self.t[name][rows]
        return bf16_to_f32(w).reshape(w.shape) if self.half else w

    def nbytes(self):
        return sum(v.nbytes for v in self.t.values())


class KVCache:
    """Keys and values of every layer for B streams, preallocated to maxT positions (the longest a
    stream can reach: block_size by default). lengths[b] = positions of stream b filled so far."""

    def __init__(self, config, B, maxT=None):
        maxT = config.block_size if maxT is None else maxT
        if not 1 <= maxT <= config.block_size:
            raise ValueError(f"KV cache length {maxT} must be in [1, block_size={config.block_size}]")
        L, NH, C = config.n_layer, config.n_head, config.n_embd
        self.B, self.maxT = B, maxT
        self.k = np.zeros((L, B, NH, maxT, C // NH), dtype=np.float32)  # (L, B, NH, maxT, hs)
        self.v = np.zeros((L, B, NH, maxT, C // NH), dtype=np.float32)
        self.lengths = np.zeros(B, dtype=np.int64)

    def copy_stream(self, src, dst):
        """Stream dst becomes a copy of stream src (n samples of one prompt share one prefill)."""
        n = self.lengths[src]
        self.k[:, dst, :, :n] = self.k[:, src, :, :n]
        self.v[:, dst, :, :n] = self.v[:, src, :, :n]
        self.lengths[dst] = n


# --------------------------------------------------------------------------------------------------
# the forward pass over new rows


def forward_cached(weights, cache, tokens, streams, positions, kern=None, logit_rows=None):
    """Run N new tokens through the model, filling the cache; return logits (M, Vp) for the rows
    in logit_rows (default: all N). tokens, streams, positions: (N,) ints."""
    k = backend.decode_kernels() if kern is None else kern  # the kernel set
    cfg, w = weights.config, weights.t
    L, NH, C, Vp = cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.padded_vocab_size
    tokens, streams, positions = (np.ascontiguousarray(a, dtype=np.int32) for a in (tokens, streams, positions))
    N, maxT = tokens.size, cache.maxT
    check_rows(cfg, cache, tokens, streams, positions)
    mv = k.matvec_forward_bf16 if weights.half else k.matvec_forward

    x = weights.embed_rows("wte", tokens) + weights.embed_rows("wpe", positions)  # (N, C)
    x = np.ascontiguousarray(x, dtype=np.float32)
    h = np.empty((N, C), np.float32)        # LayerNorm outputs, then each sublayer's output
    qkv = np.empty((N, 3 * C), np.float32)
    y = np.empty((N, C), np.float32)        # attention output
    f = np.empty((N, 4 * C), np.float32)    # MLP hidden
    for l in range(L):
        k.layernorm_cached(h, x, w["ln1w"][l], w["ln1b"][l], N, C)
        mv(qkv, h, w["qkvw"][l], w["qkvb"][l], N, C, 3 * C)
        k.kv_write(cache.k[l], cache.v[l], qkv, streams, positions, N, C, NH, maxT)
        k.attention_cached(y, qkv, cache.k[l], cache.v[l], streams, positions, N, C, NH, maxT)
        mv(h, y, w["attprojw"][l], w["attprojb"][l], N, C, C)
        x += h                                        # residual
        k.layernorm_cached(h, x, w["ln2w"][l], w["ln2b"][l], N, C)
        mv(f, h, w["fcw"][l], w["fcb"][l], N, C, 4 * C)
        k.gelu_forward(f, f, N * 4 * C)
        mv(h, f, w["fcprojw"][l], w["fcprojb"][l], N, 4 * C, C)
        x += h                                        # residual
    np.maximum.at(cache.lengths, streams, positions + 1)
    if logit_rows is not None:
        x = np.ascontiguousarray(x[np.asarray(logit_rows)])  # only the rows we sample from
    M = x.shape[0]
    xf = np.empty((M, C), np.float32)
    k.layernorm_cached(xf, x, w["lnfw"], w["lnfb"], M, C)
    logits = np.empty((M, Vp), np.float32)
    mv(logits, xf, w["wte"], None, M, C, Vp)          # the LM head is the token embedding (tied)
    return logits


def check_rows(cfg, cache, tokens, streams, positions):
    if not (tokens.shape == streams.shape == positions.shape) or tokens.ndim != 1:
        raise ValueError(f"tokens, streams, positions must be (N,) arrays of one length, found "
                         f"{tokens.shape}, {streams.shape}, {positions.shape}")
    if tokens.size == 0:
        raise ValueError("forward_cached needs at least one row")
    if tokens.min() < 0 or tokens.max() >= cfg.vocab_size:
        raise ValueError(f"token ids must be in [0, vocab_size={cfg.vocab_size}), found range "
                         f"[{tokens.min()}, {tokens.max()}]")
    if streams.min() < 0 or streams.max() >= cache.B:
        raise ValueError(f"streams must be in [0, {cache.B}), found [{streams.min()}, {streams.max()}]")
    if positions.min() < 0 or positions.max() >= cache.maxT:
        raise ValueError(f"positions must be in [0, {cache.maxT}) (the cache length; block_size="
                         f"{cfg.block_size}), found [{positions.min()}, {positions.max()}]")
    # a row may only attend over filled positions: its stream must be filled up to it, by earlier
    # calls or by rows of this call
    seen = {}
    for s, p in zip(streams.tolist(), positions.tolist()):
        seen.setdefault(s, set()).add(p)
    for s, ps in seen.items():
        have = int(cache.lengths[s])
        if set(range(have, max(ps) + 1)) - ps:
            raise ValueError(f"stream {s} has {have} cached positions; rows at positions {sorted(ps)} "
                             f"would leave a gap")


def prefill(weights, cache, prompts, kern=None, streams=None):
    """Every prompt's tokens into its stream (prompts[i] into streams[i], default i) in one pass;
    returns the logits (len(prompts), Vp) at each prompt's last token: the first new token's."""
    lens = [len(p) for p in prompts]
    if min(lens, default=0) < 1:
        raise ValueError(f"prefill needs at least one prompt and one token per prompt, found lengths {lens}")
    streams = range(len(prompts)) if streams is None else streams
    tokens = np.concatenate([np.asarray(p, dtype=np.int32) for p in prompts])
    streams = np.repeat(np.asarray(streams, dtype=np.int32), lens)
    positions = np.concatenate([np.arange(n, dtype=np.int32) for n in lens])
    last = np.cumsum(lens) - 1
    return forward_cached(weights, cache, tokens, streams, positions, kern, logit_rows=last)


def decode_step(weights, cache, tokens, streams, kern=None):
    """One new token per stream in `streams`, at each stream's next position; returns (S, Vp) logits."""
    streams = np.asarray(streams, dtype=np.int32)
    positions = cache.lengths[streams].astype(np.int32)
    return forward_cached(weights, cache, tokens, streams, positions, kern)


