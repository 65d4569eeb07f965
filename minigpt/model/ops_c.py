"""The C backend: every op of minigpt/model/ops.py, same names and arguments, run by csrc/ through cffi.

    from minigpt.model import ops_c
    ops_c.matmul_forward(out, inp, w, bias, B, T, C, OC)   # as ops.matmul_forward, in C

Arrays must be float32 and C-contiguous (the model's buffers and their views are): an output that is
not would have to be copied, and the copy would silently not be the caller's array, so we refuse it
with a clear error instead. Token ids may be any integer dtype; they become int32 (a copy of an input
is harmless). Sizes are checked against the arrays before C touches memory.

Thread count: OMP_NUM_THREADS at start-up, or set_threads(n) (GPT(cfg, backend="c", threads=n)).
"""

import os

import numpy as np

from .._kernels import ffi, lib  # OMP_WAIT_POLICY: see minigpt/__init__.py; ImportError when not built: minigpt.backend then leaves "c" out

__all__ = ["encoder_forward", "encoder_backward", "layernorm_forward", "layernorm_backward",
           "matmul_forward", "matmul_backward", "attention_forward", "attention_backward",
           "gelu_forward", "gelu_backward", "residual_forward", "residual_backward",
           "softmax_crossentropy_forward", "softmax_crossentropy_backward", "adamw_update",
           "available", "set_threads", "get_threads", "gemm", "gemm_naive", "KERNEL", "KERNELS",
           "kernels_supported", "use_kernel", "kernel_name", "kernel_name_of", "set_gemm_dtype",
           "get_gemm_dtype"]

# The GEMM micro-kernels this build carries; csrc/gemm.c picks one at run time from the CPU's
# features (cpuid), or the one the environment variable MINIGPT_KERNEL names.
KERNELS = ("avx512", "avx2", "portable")


def kernel_name():
    """The micro-kernel in use, as "avx512f 12x32", "avx2-fma 6x16" or "portable 6x16"."""
    return ffi.string(lib.sgemm_kernel_name()).decode()


def _kernel_error(name, rc):
    if rc == 1:
        return ValueError(f"unknown GEMM kernel {name!r}: expected one of {', '.join(KERNELS)}")
    return ValueError(f"GEMM kernel {name!r} needs instructions this CPU lacks")


def use_kernel(name=None):
    """Run every GEMM on micro-kernel `name` (one of KERNELS), or on the best this CPU has (None)."""
    global KERNEL
    rc = lib.sgemm_use_kernel(ffi.NULL if name is None else str(name).encode())
    if rc:
        raise _kernel_error(name, rc)
    KERNEL = kernel_name()


def set_gemm_dtype(dtype):
    """"bf16": every GEMM of the C backend (linear layers, attention) rounds its operands to bf16 and
    sums in fp32 (mixed-precision training; AVX512-BF16 where the CPU has it); "fp32": plain fp32.
    Process-wide: the C kernels keep one setting."""
    if dtype not in ("fp32", "bf16"):
        raise ValueError(f"GEMM dtype must be 'fp32' or 'bf16', not {dtype!r}")
    lib.sgemm_set_bf16(int(dtype == "bf16"))


def get_gemm_dtype():
    return "bf16" if lib.sgemm_get_bf16() else "fp32"


def kernels_supported():
    """The names in KERNELS that this CPU can run (the tests run each of them)."""
    return [name for name in KERNELS if lib.sgemm_kernel_check(name.encode()) == 0]


def kernel_name_of(name):
    """The label kernel_name() gives for the kernel that MINIGPT_KERNEL calls `name`."""
    return {"avx512": "avx512f 12x32", "avx2": "avx2-fma 6x16", "portable": "portable 6x16"}[name]


if os.environ.get("MINIGPT_KERNEL"):  # C quietly ignores a name it cannot run: say so here instead
    _rc = lib.sgemm_kernel_check(os.environ["MINIGPT_KERNEL"].encode())
    if _rc:
        raise _kernel_error(os.environ["MINIGPT_KERNEL"], _rc)
KERNEL = kernel_name()  # the one in use at import


def available():
    return True


def set_threads(n):
    if int(n) < 1:
        raise ValueError(f"threads must be >= 1, found {n}")
    lib.set_threads(int(n))


def get_threads():
    return lib.get_threads()


_F32 = np.dtype(np.float32)


def _f(a, name, size, writable=False):
    """float* into a float32 C-contiguous array of `size` elements (checked; an output is never
    copied; an input that is not 4-byte aligned, a view at an odd byte offset, is copied: C reads
    floats only from aligned addresses)."""
    if not isinstance(a, np.ndarray) or a.dtype != _F32:
        found = a.dtype if isinstance(a, np.ndarray) else type(a).__name__
        raise TypeError(f"{name}: expected a float32 NumPy array, found {found}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name}: expected a C-contiguous array, found strides {a.strides} for shape "
                         f"{a.shape}; the C backend works in place and will not copy it")
    if a.size != size:
        raise ValueError(f"{name}: expected {size} elements from the sizes given, found shape {a.shape}")
    if writable and not a.flags.writeable:
        raise ValueError(f"{name}: the output array is read-only")
    if not a.flags.aligned:
        if writable:
            raise ValueError(f"{name}: the output array is not 4-byte aligned (a view at an odd byte offset); "
                             f"the C backend works in place and will not copy it")
        a = a.copy()  # an aligned copy of an input; from_buffer keeps it alive
    return ffi.from_buffer("float[]", a)  # 10x cheaper than a.ctypes.data; no copy


def _opt(a, name, size, writable=False):
    return ffi.NULL if a is None else _f(a, name, size, writable)


def _ids(a, name, size, lo, hi):
    """int32 copy of token ids (any integer dtype), every id checked in [lo, hi)."""
    a = np.asarray(a)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integer token ids, found {a.dtype}")
    if a.size != size:
        raise ValueError(f"{name}: expected {size} ids from the sizes given, found shape {a.shape}")
    if size and (a.min() < lo or a.max() >= hi):
        raise ValueError(f"{name}: ids must be in [{lo}, {hi}), found range [{a.min()}, {a.max()}]")
    a = np.ascontiguousarray(a, dtype=np.int32)
    return a, ffi.from_buffer("int[]", a)


def _sizes(**kw):
    for k, v in kw.items():
        if int(v) < 1:
            raise ValueError(f"{k} must be >= 1, found {v}")


# --------------------------------------------------------------------------------------------------
# the ops, in the order of minigpt/model/ops.py


def encoder_forward(out, inp, wte, wpe, B, T, C):
    _sizes(B=B, T=T, C=C)
    if not isinstance(wte, np.ndarray) or wte.size % C:
        raise ValueError(f"wte: expected (Vp, C={C}) elements, found {getattr(wte, 'shape', type(wte).__name__)}")
    ids, pi = _ids(inp, "inp", B * T, 0, wte.size // C)  # C reads row id of C floats: the rows C implies
    if wpe.size < T * C:
        raise ValueError(f"wpe: expected at least T*C = {T * C} elements, found shape {wpe.shape}")
    lib.encoder_forward(_f(out, "out", B * T * C, True), pi, _f(wte, "wte", wte.size),
                        _f(wpe, "wpe", wpe.size), B, T, C)


def encoder_backward(dwte, dwpe, dout, inp, B, T, C):
    _sizes(B=B, T=T, C=C)
    if dwte.size % C or dwpe.size < T * C:
        raise ValueError(f"dwte, dwpe: expected (Vp, {C}) and at least ({T}, {C}), found {dwte.shape}, {dwpe.shape}")
    ids, pi = _ids(inp, "inp", B * T, 0, dwte.size // C)
    lib.encoder_backward(_f(dwte, "dwte", dwte.size, True), _f(dwpe, "dwpe", dwpe.size, True),
                         _f(dout, "dout", B * T * C), pi, B, T, C)


def layernorm_forward(out, mean, rstd, inp, w, b, B, T, C):
    _sizes(B=B, T=T, C=C)
    lib.layernorm_forward(_f(out, "out", B * T * C, True), _f(mean, "mean", B * T, True),
                          _f(rstd, "rstd", B * T, True), _f(inp, "inp", B * T * C),
                          _f(w, "w", C), _f(b, "b", C), B, T, C)


def layernorm_backward(dinp, dw, db, dout, inp, w, mean, rstd, B, T, C):
    _sizes(B=B, T=T, C=C)
    lib.layernorm_backward(_f(dinp, "dinp", B * T * C, True), _f(dw, "dw", C, True), _f(db, "db", C, True),
                           _f(dout, "dout", B * T * C), _f(inp, "inp", B * T * C), _f(w, "w", C),
                           _f(mean, "mean", B * T), _f(rstd, "rstd", B * T), B, T, C)


def matmul_forward(out, inp, w, bias, B, T, C, OC):
    _sizes(B=B, T=T, C=C, OC=OC)
    lib.matmul_forward(_f(out, "out", B * T * OC, True), _f(inp, "inp", B * T * C), _f(w, "w", OC * C),
                       _opt(bias, "bias", OC), B, T, C, OC)


def matmul_backward(dinp, dw, dbias, dout, inp, w, B, T, C, OC):
    _sizes(B=B, T=T, C=C, OC=OC)
    lib.matmul_backward(_f(dinp, "dinp", B * T * C, True), _f(dw, "dw", OC * C, True),
                        _opt(dbias, "dbias", OC, True), _f(dout, "dout", B * T * OC),
                        _f(inp, "inp", B * T * C), _f(w, "w", OC * C), B, T, C, OC)


def _heads(C, NH):
    _sizes(NH=NH)
    if C % NH:
        raise ValueError(f"C ({C}) must be divisible by NH ({NH})")


def attention_forward(out, preatt, att, inp, B, T, C, NH):
    _sizes(B=B, T=T, C=C)
    _heads(C, NH)
    lib.attention_forward(_f(out, "out", B * T * C, True), _f(preatt, "preatt", B * NH * T * T, True),
                          _f(att, "att", B * NH * T * T, True), _f(inp, "inp", B * T * 3 * C), B, T, C, NH)


def attention_backward(dinp, dpreatt, datt, dout, inp, att, B, T, C, NH):
    _sizes(B=B, T=T, C=C)
    _heads(C, NH)
    n = B * NH * T * T
    lib.attention_backward(_f(dinp, "dinp", B * T * 3 * C, True), _f(dpreatt, "dpreatt", n, True),
                           _f(datt, "datt", n, True), _f(dout, "dout", B * T * C),
                           _f(inp, "inp", B * T * 3 * C), _f(att, "att", n), B, T, C, NH)


def gelu_forward(out, inp, N):
    lib.gelu_forward(_f(out, "out", N, True), _f(inp, "inp", N), N)


def gelu_backward(dinp, inp, dout, N):
    lib.gelu_backward(_f(dinp, "dinp", N, True), _f(inp, "inp", N), _f(dout, "dout", N), N)


def residual_forward(out, a, b, N):
    lib.residual_forward(_f(out, "out", N, True), _f(a, "a", N), _f(b, "b", N), N)


def residual_backward(da, db, dout, N):
    lib.residual_backward(_f(da, "da", N, True), _f(db, "db", N, True), _f(dout, "dout", N), N)


def softmax_crossentropy_forward(losses, probs, logits, targets, B, T, V, Vp):
    _sizes(B=B, T=T, V=V)
    if Vp < V:
        raise ValueError(f"Vp ({Vp}) must be >= V ({V})")
    tg, pt = _ids(targets, "targets", B * T, -1, V)
    lib.softmax_crossentropy_forward(_f(losses, "losses", B * T, True), _f(probs, "probs", B * T * Vp, True),
                                     _f(logits, "logits", B * T * Vp), pt, B, T, V, Vp)


def softmax_crossentropy_backward(dlogits, dlosses, probs, targets, B, T, V, Vp):
    _sizes(B=B, T=T, V=V)
    if Vp < V:
        raise ValueError(f"Vp ({Vp}) must be >= V ({V})")
    tg, pt = _ids(targets, "targets", B * T, -1, V)
    lib.softmax_crossentropy_backward(_f(dlogits, "dlogits", B * T * Vp, True), _f(dlosses, "dlosses", B * T),
                                      _f(probs, "probs", B * T * Vp), pt, B, T, V, Vp)


def adamw_update(params, grads, m, v, N, lr, beta1, beta2, eps, weight_decay, t):
    if int(t) < 1:
        raise ValueError(f"t is the step number from 1, found {t}")
    lib.adamw_update(_f(params, "params", N, True), _f(grads, "grads", N), _f(m, "m", N, True),
                     _f(v, "v", N, True), N, lr, beta1, beta2, eps, weight_decay, int(t))


# --------------------------------------------------------------------------------------------------
# the GEMM itself, for tests and benches: out (M, N) (+)= a (M, K) @ b (K, N), any strides of a and b


def _strided(x, name):
    """An input matrix as (array, row stride, column stride) in floats; a view that is not 4-byte
    aligned or whose strides are not whole floats is copied (the caller keeps the copy alive)."""
    if not isinstance(x, np.ndarray) or x.dtype != _F32 or x.ndim != 2:
        raise TypeError(f"{name}: expected a 2-D float32 array")
    s = x.strides
    if not x.flags.aligned or s[0] % 4 or s[1] % 4 or s[0] < 0 or s[1] < 0:
        x = np.array(x, order="C")  # aligned, positive strides
        s = x.strides
    return x, s[0] // 4, s[1] // 4


def _gemm(fn, out, a, b, accumulate):
    a, rsa, csa = _strided(a, "a")
    b, rsb, csb = _strided(b, "b")
    M, K = a.shape
    if not isinstance(out, np.ndarray) or b.shape[0] != K or out.shape != (M, b.shape[1]):
        raise ValueError(f"shapes do not chain: a {a.shape} @ b {b.shape} -> out {getattr(out, 'shape', None)}")
    pa, pb = ffi.cast("float *", a.ctypes.data), ffi.cast("float *", b.ctypes.data)  # a, b stay alive here
    fn(M, out.shape[1], K, pa, rsa, csa, pb, rsb, csb, _f(out, "out", out.size, True), out.shape[1],
       1 if accumulate else 0)


def gemm(out, a, b, accumulate=False):
    """out = a @ b (or out += a @ b): the packed, blocked sgemm. a, b may be transposed views."""
    _gemm(lib.sgemm, out, a, b, accumulate)


def gemm_naive(out, a, b, accumulate=False):
    """The same product by the textbook triple loop (csrc/gemm.c: sgemm_naive)."""
    _gemm(lib.sgemm_naive, out, a, b, accumulate)
