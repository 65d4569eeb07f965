"""The C decode kernels (csrc/decode.c through cffi), with the signatures of ops_decode.py.

Each wrapper checks that arrays are C-contiguous and of the C kernel's dtype (a wrong one would be
read as garbage), then passes pointers. backend.decode_kernels("c") returns this module.
"""

import numpy as np

from .._decode import ffi, lib  # OMP_WAIT_POLICY is set in minigpt/__init__.py, before libgomp loads


def _ptr(a, ctype, dtype, name):
    if not isinstance(a, np.ndarray) or a.dtype != dtype or not a.flags.c_contiguous:
        found = f"{a.dtype} contiguous={a.flags.c_contiguous}" if isinstance(a, np.ndarray) else type(a).__name__
        raise TypeError(f"{name}: expected a C-contiguous {np.dtype(dtype).name} array, found {found}")
    return ffi.from_buffer(ctype, a)


def _f(a, name="array"):
    return _ptr(a, "float[]", np.float32, name)


def _i(a, name="index array"):
    return _ptr(a, "int[]", np.int32, name)


def set_threads(n):
    if int(n) < 1:
        raise ValueError(f"threads must be >= 1, found {n}")
    lib.decode_set_threads(int(n))


def get_threads():
    return lib.decode_get_threads()


def matvec_forward(out, inp, w, bias, N, C, OC):
    _check_sizes(out, inp, w, N, C, OC)
    lib.matvec_forward(_f(out, "out"), _f(inp, "inp"), _f(w, "w"),
                       ffi.NULL if bias is None else _f(bias, "bias"), N, C, OC)


def matvec_forward_bf16(out, inp, w, bias, N, C, OC):
    _check_sizes(out, inp, w, N, C, OC)
    lib.matvec_forward_bf16(_f(out, "out"), _f(inp, "inp"), _ptr(w, "uint16_t[]", np.uint16, "w (bf16)"),
                            ffi.NULL if bias is None else _f(bias, "bias"), N, C, OC)


def _check_sizes(out, inp, w, N, C, OC):
    if out.size != N * OC or inp.size != N * C or w.size != OC * C:
        raise ValueError(f"matvec: expected out {N}x{OC}, inp {N}x{C}, w {OC}x{C}; found sizes "
                         f"{out.size}, {inp.size}, {w.size}")


def layernorm_cached(out, inp, w, b, N, C):
    lib.layernorm_cached(_f(out, "out"), _f(inp, "inp"), _f(w, "w"), _f(b, "b"), N, C)


def kv_write(kcache, vcache, qkv, streams, positions, N, C, NH, maxT):
    lib.kv_write(_f(kcache, "kcache"), _f(vcache, "vcache"), _f(qkv, "qkv"), _i(streams, "streams"),
                 _i(positions, "positions"), N, C, NH, maxT)


def attention_cached(out, qkv, kcache, vcache, streams, positions, N, C, NH, maxT):
    lib.attention_cached(_f(out, "out"), _f(qkv, "qkv"), _f(kcache, "kcache"), _f(vcache, "vcache"),
                         _i(streams, "streams"), _i(positions, "positions"), N, C, NH, maxT)


def gelu_forward(out, inp, N):
    lib.gelu_forward(_f(out, "out"), _f(inp, "inp"), N)


def stream_read(x):
    """The sum of float32 array x, read once by every thread: the bench's memory-bandwidth probe."""
    return lib.stream_read(_f(x, "x"), x.size)


def gemm_kernel():
    """The micro-kernel prefill's GEMM runs on (csrc/gemm.c, chosen by cpuid or MINIGPT_KERNEL)."""
    return ffi.string(lib.sgemm_kernel_name()).decode()
