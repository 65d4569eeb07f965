"""The decode kernels in NumPy: one new token per row, keys and values from a KV cache.

The specification of csrc/decode.c (minigpt/model/ops_decode_c.py wraps it, same names and
arguments). Training runs whole sequences (ops.py); decoding runs N new rows, each token
tokens[r] of stream streams[r] at position positions[r], against a cache of the keys and values
that stream's earlier tokens left (minigpt/inference/kvcache.py drives these). The weights may be
fp32 or bf16 (uint16 bit patterns): bf16 halves the bytes decoding must read per token.
"""
import math

import numpy as np

from ..config import GELU_CUBIC, GELU_SCALE, LN_EPS
from ..fileio import bf16_to_f32


def layernorm_cached(out, inp, w, b, N, C):
    # out inp (N, C), w b (C,)
    m = inp.mean(axis=-1, keepdims=True)              # (N, 1)
    xc = inp - m                                      # (N, C)
    var = (xc * xc).mean(axis=-1, keepdims=True)      # (N, 1)
    out[...] = xc / np.sqrt(var + LN_EPS) * w + b     # (N, C)


def matvec_forward(out, inp, w, bias, N, C, OC):
    # out (N, OC) = inp (N, C) @ w.T (C, OC) + bias (OC,); N is a handful of rows when decoding
    np.matmul(inp, w.T, out=out)                      # (N, OC)
    if bias is not None:
        out += bias


def matvec_forward_bf16(out, inp, w, bias, N, C, OC):
    # the same with w (OC, C) as bf16 bit patterns: widen to fp32, then as above
    matvec_forward(out, inp, bf16_to_f32(w), bias, N, C, OC)


def kv_write(kcache, vcache, qkv, streams, positions, N, C, NH, maxT):
    # kcache vcache (B, NH, maxT, hs) one layer's cache; qkv (N, 3C) = [q k v] of the new rows
    hs = C // NH
    k = qkv[:, C:2 * C].reshape(N, NH, hs)            # (N, NH, hs)
    v = qkv[:, 2 * C:].reshape(N, NH, hs)             # (N, NH, hs)
    kcache[streams, :, positions] = k                 # each row's key at (its stream, :, its position)
    vcache[streams, :, positions] = v


def attention_cached(out, qkv, kcache, vcache, streams, positions, N, C, NH, maxT):
    # out (N, C); row r's query attends over its stream's cached positions 0..positions[r]
    hs = C // NH
    q = qkv[:, :C].reshape(N, NH, hs)                 # (N, NH, hs)
    for r in range(N):
        b, p = streams[r], positions[r]
        K = kcache[b, :, :p + 1]                      # (NH, p+1, hs)
        V = vcache[b, :, :p + 1]                      # (NH, p+1, hs)
        scores = (K @ q[r][:, :, None])[..., 0] / math.sqrt(hs)  # (NH, p+1)
        e = np.exp(scores - scores.max(axis=-1, keepdims=True))  # (NH, p+1)
        att = e / e.sum(axis=-1, keepdims=True)       # (NH, p+1) rows sum to 1
        out[r] = (att[:, None, :] @ V)[:, 0].reshape(C)  # (NH, hs) -> (C,)


def gelu_forward(out, inp, N):
    x = inp
    out[...] = 0.5 * x * (1.0 + np.tanh(GELU_SCALE * (x + GELU_CUBIC * x ** 3)))
