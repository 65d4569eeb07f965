"""The C decode kernels (csrc/decode.c through cffi), with the signatures of ops_decode.py.

Each wrapper checks, before C touches memory, what ops_c._f checks elsewhere: every array
C-contiguous, of the kernel's dtype and of the size the sizes given imply (outputs writable and
4-byte aligned; a misaligned input is copied), and every stream and position index inside the
cache. Then it passes pointers. backend.decode_kernels("c") returns this module.
"""

import numpy as np

from .._decode import ffi, lib  # OMP_WAIT_POLICY is set in minigpt/__init__.py, before libgomp loads


def _ptr(a, ctype, dtype, name, size=None, out=False):
    if not isinstance(a, np.ndarray) or a.dtype != dtype or not a.flags.c_contiguous:
        found = f"{a.dtype} contiguous={a.flags.c_contiguous}" if isinstance(a, np.ndarray) else type(a).__name__
        raise TypeError(f"{name}: expected a C-contiguous {np.dtype(dtype).name} array, found {found}")
    if size is not None and a.size != size:
        raise ValueError(f"{name}: expected {size} elements from the sizes given, found shape {a.shape}")
    flags = a.flags
    if not flags.aligned:
        if out:
            raise ValueError(f"{name}: the output array is not aligned (a view at an odd byte offset)")
        a = a.copy()  # an aligned copy of an input; from_buffer keeps it alive for the call
    if out and not flags.writeable:
        raise ValueError(f"{name}: the output array is read-only")
    return ffi.from_buffer(ctype, a)


def _f(a, name, size, out=False):
    return _ptr(a, "float[]", np.float32, name, size, out)


def _i(a, name, size):
    return _ptr(a, "int[]", np.int32, name, size)


def _dims(*sizes):
    # a non-int is refused by cffi itself (TypeError); a negative size would read backwards
    if min(sizes) < 0:
        raise ValueError(f"sizes must be >= 0, found {sizes}")


_rows_ok = None  # the last (S, maxT, streams, positions) found inside the cache: every layer passes the same


def _cache(kcache, vcache, streams, positions, N, C, NH, maxT, write):
    """Check a layer's cache (S, NH, maxT, hs) and every row's (stream, position) inside it; returns
    the C pointers of kcache, vcache, streams, positions."""
    global _rows_ok
    _dims(N, C, maxT)
    if NH < 1 or C % NH:
        raise ValueError(f"C ({C}) must be divisible by NH ({NH}) >= 1")
    per_stream = NH * maxT * (C // NH)
    S = kcache.size // per_stream if isinstance(kcache, np.ndarray) and per_stream else 0
    pk, pv = _f(kcache, "kcache", S * per_stream, write), _f(vcache, "vcache", S * per_stream, write)
    ps, pp = _i(streams, "streams", N), _i(positions, "positions", N)
    key = (S, maxT, streams.tobytes(), positions.tobytes())  # by content: a changed array is checked again
    if N and key != _rows_ok:
        # as unsigned, a negative index is huge: one reduction per array checks both ends
        if streams.view(np.uint32).max() >= S:
            raise ValueError(f"streams must be in [0, {S}) (the cache's streams), found "
                             f"[{streams.min()}, {streams.max()}]")
        if positions.view(np.uint32).max() >= maxT:
            raise ValueError(f"positions must be in [0, maxT={maxT}), found [{positions.min()}, {positions.max()}]")
        _rows_ok = key
    return pk, pv, ps, pp


def set_threads(n):
    if int(n) < 1:
        raise ValueError(f"threads must be >= 1, found {n}")
    lib.decode_set_threads(int(n))


def get_threads():
    return lib.decode_get_threads()


def _bias(bias, OC):
    return ffi.NULL if bias is None else _f(bias, "bias", OC)


def matvec_forward(out, inp, w, bias, N, C, OC):
    _dims(N, C, OC)
    lib.matvec_forward(_f(out, "out", N * OC, True), _f(inp, "inp", N * C), _f(w, "w", OC * C),
                       _bias(bias, OC), N, C, OC)


def matvec_forward_bf16(out, inp, w, bias, N, C, OC):
    _dims(N, C, OC)
    lib.matvec_forward_bf16(_f(out, "out", N * OC, True), _f(inp, "inp", N * C),
                            _ptr(w, "uint16_t[]", np.uint16, "w (bf16)", OC * C), _bias(bias, OC), N, C, OC)


def layernorm_cached(out, inp, w, b, N, C):
    _dims(N, C)
    lib.layernorm_cached(_f(out, "out", N * C, True), _f(inp, "inp", N * C), _f(w, "w", C), _f(b, "b", C), N, C)


def kv_write(kcache, vcache, qkv, streams, positions, N, C, NH, maxT):
    pk, pv, ps, pp = _cache(kcache, vcache, streams, positions, N, C, NH, maxT, True)
    lib.kv_write(pk, pv, _f(qkv, "qkv", N * 3 * C), ps, pp, N, C, NH, maxT)


def attention_cached(out, qkv, kcache, vcache, streams, positions, N, C, NH, maxT):
    pk, pv, ps, pp = _cache(kcache, vcache, streams, positions, N, C, NH, maxT, False)
    lib.attention_cached(_f(out, "out", N * C, True), _f(qkv, "qkv", N * 3 * C), pk, pv, ps, pp, N, C, NH, maxT)


def gelu_forward(out, inp, N):
    _dims(N)
    lib.gelu_forward(_f(out, "out", N, True), _f(inp, "inp", N), N)


def stream_read(x):
    """The sum of float32 array x, read once by every thread: the bench's memory-bandwidth probe."""
    return lib.stream_read(_f(x, "x", x.size), x.size)


def gemm_kernel():
    """The micro-kernel prefill's GEMM runs on (csrc/gemm.c, chosen by cpuid or MINIGPT_KERNEL)."""
    return ffi.string(lib.sgemm_kernel_name()).decode()
