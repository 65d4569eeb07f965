"""ggml's tensor types, as llama.cpp defines them: NumPy is the specification.

A quantized row is cut into blocks of 32 weights; each block stores a scale (and for Q4_1 a
minimum) in fp16 beside small integer codes:

    Q8_0  34 bytes: d (fp16), 32 x int8 q              w = d * q
    Q4_0  18 bytes: d (fp16), 16 bytes of 4-bit codes  w = d * (q - 8)
    Q4_1  20 bytes: d, m (fp16), 16 bytes of codes     w = d * q + m

In the 16 code bytes, byte j holds element j in its low nibble and element j + 16 in its high
nibble. quantize() rounds as ggml's reference quantizers do (ggml-quants.c, quantize_row_*_ref),
so a tensor written here is the one llama.cpp would have written.
"""
import numpy as np

from .fileio import bf16_to_f32, f32_to_bf16

try:  # the C fast path, csrc/quant.c (python csrc/build_quant.py)
    from ._quant import ffi as _ffi, lib as _lib
except ImportError:
    _ffi = _lib = None

F32, F16, Q4_0, Q4_1, Q8_0, BF16 = 0, 1, 2, 3, 8, 30
QK = 32  # weights per block of the 32-block types

# type id -> (name, weights per block, bytes per block). Every type ggml defines is listed, so a
# file's sizes can be checked and its tensors named even where dequantize() cannot read them.
TYPES = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292), 16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98), 19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
    26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66), 39: ("MXFP4", 32, 17),
}
SUPPORTED = (F32, F16, BF16, Q8_0, Q4_0, Q4_1)  # what dequantize() and quantize() read and write


def type_name(t):
    return TYPES[t][0] if t in TYPES else f"type {t}"


def row_bytes(ggml_type, n):
    """Bytes of n weights of this type (n a multiple of its block size)."""
    _, block, nbytes = TYPES[ggml_type]
    if n % block:
        raise ValueError(f"{type_name(ggml_type)}: {n} weights are not whole blocks of {block}")
    return n // block * nbytes


def nbytes_of(ggml_type, shape):
    """Bytes of a tensor of this type and NumPy shape (its last axis is ggml's ne[0], the rows)."""
    n = 1
    for s in shape:
        n *= int(s)
    row = int(shape[-1]) if len(shape) else 1
    return row_bytes(ggml_type, row) * (n // row if row else 0)


def _check(ggml_type, what):
    if ggml_type not in SUPPORTED:
        raise ValueError(f"cannot {what} {type_name(ggml_type)} tensors (minigpt reads "
                         f"{', '.join(type_name(t) for t in SUPPORTED)})")


def _checked(raw, ggml_type, shape):
    _check(ggml_type, "dequantize")
    shape = tuple(int(s) for s in shape)
    raw = np.ascontiguousarray(raw, dtype=np.uint8).reshape(-1)
    if raw.size != nbytes_of(ggml_type, shape):
        raise ValueError(f"{type_name(ggml_type)} {shape}: expected {nbytes_of(ggml_type, shape)} "
                         f"bytes, got {raw.size}")
    return raw, shape


def dequantize(raw, ggml_type, shape):
    """raw bytes (uint8) of a tensor of this type -> float32 array of `shape`: in C (csrc/quant.c)
    where it is built, else dequantize_numpy; the two agree bit for bit."""
    raw, shape = _checked(raw, ggml_type, shape)
    if _lib is None:
        return dequantize_numpy(raw, ggml_type, shape)
    out = np.empty(shape, np.float32)
    rc = _lib.dequantize_row(_ffi.from_buffer("float[]", out, require_writable=True),
                             _ffi.from_buffer("uint8_t[]", raw), ggml_type, out.size, raw.size)
    if rc != 0:  # cannot happen: the sizes were checked above, and C checks them again
        raise ValueError(f"{type_name(ggml_type)} {shape}: the C dequantizer refused the sizes")
    return out


def dequantize_numpy(raw, ggml_type, shape):
    """The specification: raw bytes (uint8) of this type -> float32 array of `shape`."""
    raw, shape = _checked(raw, ggml_type, shape)
    with np.errstate(invalid="ignore", over="ignore"):  # a stored inf or NaN scale gives NaN, as in ggml
        return _dequantize(raw, ggml_type, shape)


def _dequantize(raw, ggml_type, shape):
    if ggml_type == F32:
        return raw.view("<f4").astype(np.float32).reshape(shape)
    if ggml_type == F16:
        return raw.view("<f2").astype(np.float32).reshape(shape)
    if ggml_type == BF16:
        return bf16_to_f32(raw.view("<u2")).reshape(shape)
    blocks = raw.reshape(-1, TYPES[ggml_type][2])                    # (nb, bytes per block)
    d = blocks[:, 0:2].copy().view("<f2").astype(np.float32)         # (nb, 1)
    if ggml_type == Q8_0:
        q = blocks[:, 2:].view(np.int8).astype(np.float32)           # (nb, 32)
        return (q * d).reshape(shape)
    codes = blocks[:, -16:]                                          # (nb, 16)
    q = np.concatenate([codes & 0x0F, codes >> 4], axis=1)           # (nb, 32) elements j, j+16
    if ggml_type == Q4_0:
        return (d * (q.astype(np.int8) - np.int8(8)).astype(np.float32)).reshape(shape)
    m = blocks[:, 2:4].copy().view("<f2").astype(np.float32)         # (nb, 1)
    return (d * q.astype(np.float32) + m).reshape(shape)             # Q4_1


def _roundf(x):
    """C's roundf: halves away from zero (np.round rounds them to even). floor(|x| + 0.5) would
    round 0.49999997 up, as the sum rounds to 1 in float32; the fraction |x| - floor(|x|) is exact."""
    a = np.abs(x)
    whole = np.floor(a)
    return np.sign(x) * (whole + (a - whole >= np.float32(0.5)))


def _int_codes(q):
    """A scale so small (subnormal) that 1/d is inf makes codes inf or NaN; C's (int) cast of those
    is undefined, and x86 gives 0x80000000, whose low byte is the 0 ggml stores (gguf-py too)."""
    return np.where(np.isfinite(q), q, 0)


def _inverse(d):
    with np.errstate(divide="ignore"):
        return np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)


def quantize(x, ggml_type):
    """float array -> its bytes (uint8) in this type, rounded as ggml's reference quantizers."""
    with np.errstate(over="ignore", invalid="ignore"):  # subnormal scales: see _int_codes
        return _quantize(x, ggml_type)


def _quantize(x, ggml_type):
    _check(ggml_type, "quantize")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if ggml_type == F32:
        return x.astype("<f4").reshape(-1).view(np.uint8)
    if ggml_type == F16:
        return x.astype("<f2").reshape(-1).view(np.uint8)
    if ggml_type == BF16:
        return f32_to_bf16(x).astype("<u2").reshape(-1).view(np.uint8)
    row_bytes(ggml_type, x.shape[-1] if x.ndim else 1)  # whole blocks per row, or a clear error
    b = x.reshape(-1, QK)                                            # (nb, 32)
    if ggml_type == Q8_0:
        d = np.abs(b).max(axis=1, keepdims=True) / np.float32(127)   # (nb, 1)
        q = _int_codes(_roundf(b * _inverse(d))).astype(np.int8)     # (nb, 32)
        return np.concatenate([d.astype("<f2").view(np.uint8), q.view(np.uint8)], axis=1).reshape(-1)
    if ggml_type == Q4_0:
        # the signed value of largest magnitude maps to -8, so the full code range 0..15 is used
        imax = np.abs(b).argmax(axis=1)[:, None]                     # (nb, 1) first of the largest
        d = np.take_along_axis(b, imax, axis=1) / np.float32(-8)     # (nb, 1)
        q = np.trunc(b * _inverse(d) + np.float32(8.5))              # (nb, 32)
        head = [d.astype("<f2").view(np.uint8)]
    else:  # Q4_1: min and max span the 16 codes
        lo, hi = b.min(axis=1, keepdims=True), b.max(axis=1, keepdims=True)  # (nb, 1)
        d = (hi - lo) / np.float32(15)                               # (nb, 1)
        q = np.trunc((b - lo) * _inverse(d) + np.float32(0.5))       # (nb, 32)
        head = [d.astype("<f2").view(np.uint8), lo.astype("<f2").view(np.uint8)]
    q = np.clip(_int_codes(q), 0, 15).astype(np.uint8)               # (nb, 32)
    codes = q[:, :16] | (q[:, 16:] << np.uint8(4))                   # (nb, 16)
    return np.concatenate(head + [codes], axis=1).reshape(-1)
