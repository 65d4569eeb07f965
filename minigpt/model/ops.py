"""Every op of GPT-2, forward and backward, in NumPy: the specification the C and CUDA kernels follow.

The contract is llm.c's (the README's kernel contract): outputs first, then inputs, then sizes. Forward functions
write their outputs in place; backward functions ACCUMULATE (+=) into their gradient buffers, so a
tensor used twice (the tied embedding wte, the residual stream) simply receives both contributions.
The sizes B, T, C, ... are redundant in NumPy but kept so the three implementations read alike.

    B batch, T time (sequence length), C channels, NH heads, hs = C // NH head size,
    OC output channels, V vocabulary, Vp padded vocabulary (a multiple of 128).

Everything works in float32 and float64 (the gradient checks run in float64).
"""
import math

import numpy as np

from ..config import GELU_CUBIC, GELU_SCALE, LN_EPS

# --------------------------------------------------------------------------------------------------
# encoder: token embedding + position embedding


def encoder_forward(out, inp, wte, wpe, B, T, C):
    # out (B, T, C), inp (B, T) token ids, wte (Vp, C), wpe (maxT, C)
    out[...] = wte[inp] + wpe[:T]                     # (B, T, C)


def encoder_backward(dwte, dwpe, dout, inp, B, T, C):
    # a token that appears several times receives the sum of its gradients: np.add.at, not +=
    np.add.at(dwte, inp.reshape(-1), dout.reshape(-1, C))   # (Vp, C) += scatter of (B*T, C)
    dwpe[:T] += dout.sum(axis=0)                      # (T, C)


# --------------------------------------------------------------------------------------------------
# layernorm: normalise each (b, t) row over its C channels, then scale and shift


def layernorm_forward(out, mean, rstd, inp, w, b, B, T, C):
    # out (B, T, C), mean rstd (B, T) cached for the backward, inp (B, T, C), w b (C,)
    m = inp.mean(axis=-1, keepdims=True)              # (B, T, 1)
    xc = inp - m                                      # (B, T, C)
    var = (xc * xc).mean(axis=-1, keepdims=True)      # (B, T, 1) biased variance, as PyTorch
    s = 1.0 / np.sqrt(var + LN_EPS)                   # (B, T, 1)
    out[...] = xc * s * w + b                         # (B, T, C)
    mean[...] = m[..., 0]                             # (B, T)
    rstd[...] = s[..., 0]                             # (B, T)


def layernorm_backward(dinp, dw, db, dout, inp, w, mean, rstd, B, T, C):
    norm = (inp - mean[..., None]) * rstd[..., None]  # (B, T, C) the normalised input, recomputed
    db += dout.sum(axis=(0, 1))                       # (C,)
    dw += (dout * norm).sum(axis=(0, 1))              # (C,)
    dnorm = dout * w                                  # (B, T, C)
    # d/dx of (x - mean) * rstd: subtract the mean of dnorm and the part along norm
    dinp += rstd[..., None] * (dnorm
                               - dnorm.mean(axis=-1, keepdims=True)
                               - norm * (dnorm * norm).mean(axis=-1, keepdims=True))  # (B, T, C)


# --------------------------------------------------------------------------------------------------
# bf16 operands: mixed-precision training rounds each GEMM operand to bf16 (nearest, ties to even)
# and sums the products in fp32; weights, gradients and AdamW state stay fp32


def bf16_round(x):
    """x rounded to the nearest bf16 (ties to even; NaN stays NaN), as float32: 8 mantissa bits."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    return np.where(nan, ((u >> 16) | 0x40) << 16, rounded).astype(np.uint32).view(np.float32).reshape(np.shape(x))


def matmul_bf16(a, b):
    """a @ b with bf16 operands: the products a bf16 GEMM makes (exact in fp32), summed in float64 here."""
    return bf16_round(a).astype(np.float64) @ bf16_round(b).astype(np.float64)


# --------------------------------------------------------------------------------------------------
# matmul: a linear layer; weights are stored (out, in) as in llm.c and PyTorch


def matmul_forward(out, inp, w, bias, B, T, C, OC):
    # out (B, T, OC) = inp (B, T, C) @ w.T (C, OC) + bias (OC,)
    np.matmul(inp, w.T, out=out)                      # (B, T, OC)
    if bias is not None:
        out += bias


def matmul_backward(dinp, dw, dbias, dout, inp, w, B, T, C, OC):
    dinp += dout @ w                                  # (B, T, OC) @ (OC, C) -> (B, T, C)
    dw += dout.reshape(-1, OC).T @ inp.reshape(-1, C)  # (OC, B*T) @ (B*T, C) -> (OC, C)
    if dbias is not None:
        dbias += dout.sum(axis=(0, 1))                # (OC,)


# --------------------------------------------------------------------------------------------------
# attention: causal multi-head self-attention on the fused qkv activation


def split_heads(x, B, T, NH):
    # (B, T, C) -> (B, NH, T, hs)
    return x.reshape(B, T, NH, -1).transpose(0, 2, 1, 3)


def attention_forward(out, preatt, att, inp, B, T, C, NH):
    # out (B, T, C); preatt att (B, NH, T, T) kept for inspection and the backward; inp (B, T, 3C) = [q k v]
    hs = C // NH
    q = split_heads(inp[:, :, 0 * C:1 * C], B, T, NH)  # (B, NH, T, hs)
    k = split_heads(inp[:, :, 1 * C:2 * C], B, T, NH)  # (B, NH, T, hs)
    v = split_heads(inp[:, :, 2 * C:3 * C], B, T, NH)  # (B, NH, T, hs)
    scores = (q @ k.transpose(0, 1, 3, 2)) * (1.0 / math.sqrt(hs))  # (B, NH, T, T)
    future = np.triu(np.ones((T, T), dtype=bool), k=1)  # (T, T) True where t2 > t: not visible to t
    scores[..., future] = -np.inf
    preatt[...] = scores                              # (B, NH, T, T), -inf above the diagonal
    # softmax over t2 <= t, stable: subtract the row max (the diagonal is always finite)
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))  # (B, NH, T, T), 0 where masked
    att[...] = e / e.sum(axis=-1, keepdims=True)      # (B, NH, T, T), rows sum to 1
    y = att @ v                                       # (B, NH, T, hs)
    out[...] = y.transpose(0, 2, 1, 3).reshape(B, T, C)  # (B, T, C) heads side by side


def attention_backward(dinp, dpreatt, datt, dout, inp, att, B, T, C, NH):
    # dinp (B, T, 3C), dpreatt datt (B, NH, T, T), dout (B, T, C)
    hs = C // NH
    q = split_heads(inp[:, :, 0 * C:1 * C], B, T, NH)  # (B, NH, T, hs)
    k = split_heads(inp[:, :, 1 * C:2 * C], B, T, NH)
    v = split_heads(inp[:, :, 2 * C:3 * C], B, T, NH)
    dy = split_heads(dout, B, T, NH)                  # (B, NH, T, hs)
    dv = att.transpose(0, 1, 3, 2) @ dy               # (B, NH, T, hs)
    da = dy @ v.transpose(0, 1, 3, 2)                 # (B, NH, T, T)
    datt += da
    # softmax backward, row by row: dpre = att * (datt - <datt, att>)
    dpre = att * (da - (da * att).sum(axis=-1, keepdims=True))  # (B, NH, T, T), 0 where masked
    dpreatt += dpre
    dq = (dpre @ k) * (1.0 / math.sqrt(hs))                    # (B, NH, T, hs)
    dk = (dpre.transpose(0, 1, 3, 2) @ q) * (1.0 / math.sqrt(hs))  # (B, NH, T, hs)
    for i, d in enumerate((dq, dk, dv)):
        dinp[:, :, i * C:(i + 1) * C] += d.transpose(0, 2, 1, 3).reshape(B, T, C)


# --------------------------------------------------------------------------------------------------
# gelu: the tanh approximation GPT-2 was trained with



def gelu_forward(out, inp, N):
    # out, inp: any shape with N elements
    x = inp
    out[...] = 0.5 * x * (1.0 + np.tanh(GELU_SCALE * (x + GELU_CUBIC * x ** 3)))


def gelu_backward(dinp, inp, dout, N):
    x = inp
    u = GELU_SCALE * (x + GELU_CUBIC * x ** 3)          # the tanh argument
    th = np.tanh(u)
    du = GELU_SCALE * (1.0 + 3.0 * GELU_CUBIC * x * x)  # du/dx
    sech2 = 1.0 - th * th                             # d tanh(u) / du
    dinp += dout * (0.5 * (1.0 + th) + 0.5 * x * sech2 * du)


# --------------------------------------------------------------------------------------------------
# residual: the skip connection


def residual_forward(out, a, b, N):
    out[...] = a + b


def residual_backward(da, db, dout, N):
    da += dout
    db += dout


# --------------------------------------------------------------------------------------------------
# softmax + cross-entropy, fused: probs over the real vocabulary V only; the Vp - V padded columns
# get probability 0 and gradient 0. A target of -1 is ignored: no loss, no gradient.


def softmax_crossentropy_forward(losses, probs, logits, targets, B, T, V, Vp):
    # losses (B, T), probs (B, T, Vp), logits (B, T, Vp), targets (B, T) in [-1, V)
    z = logits[..., :V]                               # (B, T, V) the padded columns play no part
    zmax = z.max(axis=-1, keepdims=True)              # (B, T, 1) for a stable exp
    e = np.exp(z - zmax)                              # (B, T, V)
    s = e.sum(axis=-1, keepdims=True)                 # (B, T, 1)
    probs[..., :V] = e / s
    probs[..., V:] = 0.0
    valid = targets >= 0                              # (B, T)
    t = np.where(valid, targets, 0)                   # (B, T) any index where ignored
    zt = np.take_along_axis(z, t[..., None], axis=-1)[..., 0]  # (B, T) the target's logit
    # -log p[target] = log(sum exp) - (z_target - zmax): exact even where p underflows
    losses[...] = np.where(valid, np.log(s[..., 0]) - (zt - zmax[..., 0]), 0.0)


def softmax_crossentropy_backward(dlogits, dlosses, probs, targets, B, T, V, Vp):
    # dlogits (B, T, Vp) += dlosses (B, T) * (probs - onehot(target)); per-token weights (SFT masks,
    # RL advantages) come in through dlosses
    valid = targets >= 0                              # (B, T)
    w = np.where(valid, dlosses, 0.0)[..., None]      # (B, T, 1)
    d = probs[..., :V] * w                            # (B, T, V)
    bb, tt = np.nonzero(valid)
    d[bb, tt, targets[bb, tt]] -= w[bb, tt, 0]
    dlogits[..., :V] += d


# --------------------------------------------------------------------------------------------------
# AdamW, as llm.c and PyTorch do it: bias-corrected moments, decoupled weight decay


def adamw_update(params, grads, m, v, N, lr, beta1, beta2, eps, weight_decay, t):
    # params grads m v: flat (N,); t: the step number, from 1
    m *= beta1
    m += (1.0 - beta1) * grads                        # first moment: running mean of g
    v *= beta2
    v += (1.0 - beta2) * grads * grads                # second moment: running mean of g^2
    m_hat = m / (1.0 - beta1 ** t)                    # bias correction: the moments start at 0
    v_hat = v / (1.0 - beta2 ** t)
    params -= lr * (m_hat / (np.sqrt(v_hat) + eps) + weight_decay * params)
