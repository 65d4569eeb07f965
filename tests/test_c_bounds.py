"""#12: every compiled entry point checks sizes, indices and alignment before C touches memory.
Run under ASan + UBSan by .ci/sanitize: before the checks, these calls were heap overflows
(kv_write, attention_cached, a short bias), a SEGV (encoder ids past the rows C implies) and a
misaligned load (a float view at an odd byte offset)."""
import numpy as np
import pytest

from minigpt.model import backend

pytestmark = pytest.mark.skipif("c" not in backend.available(), reason="the C kernels are not built")

N, C, NH, maxT, S = 2, 8, 2, 4, 3   # rows, channels, heads, cache length, streams


def f32(*shape):
    return np.zeros(shape, np.float32)


def misaligned(n):
    """n float32s at an odd byte offset: a legal NumPy view that C must not read as float*."""
    raw = np.zeros(4 * n + 1, np.uint8)
    return np.frombuffer(raw.data, dtype=np.float32, count=n, offset=1).reshape(n)


@pytest.fixture
def dec():
    from minigpt.model import ops_decode_c
    return ops_decode_c


def cache():
    return f32(S, NH, maxT, C // NH), f32(S, NH, maxT, C // NH)


@pytest.mark.parametrize("streams, positions, match", [
    ([0, S], [0, 0], "streams"), ([-1, 0], [0, 0], "streams"),
    ([0, 1], [0, maxT], "positions"), ([0, 1], [-1, 0], "positions"),
    ([0], [0], "streams: expected 2"), ([0, 1], [0, 1, 2], "positions: expected 2")])
def test_cache_indices_are_checked(dec, streams, positions, match):
    k, v = cache()
    st, po = np.array(streams, np.int32), np.array(positions, np.int32)
    with pytest.raises(ValueError, match=match):
        dec.kv_write(k, v, f32(N, 3 * C), st, po, N, C, NH, maxT)
    with pytest.raises(ValueError, match=match):
        dec.attention_cached(f32(N, C), f32(N, 3 * C), k, v, st, po, N, C, NH, maxT)


def test_cache_sizes_are_checked(dec):
    k, v = cache()
    st, po = np.zeros(N, np.int32), np.zeros(N, np.int32)
    with pytest.raises(ValueError, match="qkv"):
        dec.kv_write(k, v, f32(N, C), st, po, N, C, NH, maxT)             # qkv too short
    with pytest.raises(ValueError, match="vcache"):
        dec.kv_write(k, f32(1, NH, maxT, C // NH), f32(N, 3 * C), st, po, N, C, NH, maxT)
    with pytest.raises(ValueError, match="out"):
        dec.attention_cached(f32(N - 1, C), f32(N, 3 * C), k, v, st, po, N, C, NH, maxT)
    with pytest.raises(ValueError, match="divisible"):
        dec.kv_write(k, v, f32(N, 3 * C), st, po, N, C, 3, maxT)
    with pytest.raises(ValueError, match="sizes must be >= 0"):
        dec.kv_write(k, v, f32(N, 3 * C), st, po, -1, C, NH, maxT)
    # the same call with consistent sizes runs
    dec.kv_write(k, v, np.ones((N, 3 * C), np.float32), st, np.arange(N, dtype=np.int32), N, C, NH, maxT)
    assert k[0, :, :N].sum() == N * C


def test_small_kernels_check_sizes(dec):
    with pytest.raises(ValueError, match="bias"):
        dec.matvec_forward(f32(N, 3), f32(N, C), f32(3, C), f32(2), N, C, 3)    # a short bias
    with pytest.raises(ValueError, match="bias"):
        dec.matvec_forward_bf16(f32(N, 3), f32(N, C), np.zeros((3, C), np.uint16), f32(1), N, C, 3)
    with pytest.raises(ValueError, match="w: expected"):
        dec.layernorm_cached(f32(N, C), f32(N, C), f32(C - 1), f32(C), N, C)
    with pytest.raises(ValueError, match="inp"):
        dec.layernorm_cached(f32(N, C), f32(N, C - 1), f32(C), f32(C), N, C)
    with pytest.raises(ValueError, match="out"):
        dec.gelu_forward(f32(3), f32(5), 5)
    with pytest.raises(ValueError, match="sizes must be >= 0"):
        dec.gelu_forward(f32(3), f32(3), -3)
    with pytest.raises(ValueError, match="read-only"):
        out = f32(3)
        out.flags.writeable = False
        dec.gelu_forward(out, f32(3), 3)


def test_misaligned_views(dec):
    from minigpt.model import ops_c
    x = misaligned(16)
    x[:] = np.linspace(-2, 2, 16, dtype=np.float32)
    assert not x.flags.aligned
    # an input is copied to an aligned buffer: the result equals the aligned call's
    out, want = f32(16), f32(16)
    dec.gelu_forward(out, x, 16)
    dec.gelu_forward(want, x.copy(), 16)
    np.testing.assert_array_equal(out, want)
    ops_c.gelu_forward(out, x, 16)
    np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-7)
    # an output is refused: a copy would not be the caller's array
    with pytest.raises(ValueError, match="aligned"):
        dec.gelu_forward(misaligned(16), x.copy(), 16)
    with pytest.raises(ValueError, match="aligned"):
        ops_c.gelu_forward(misaligned(16), x.copy(), 16)
    # the GEMM on misaligned views of a and b
    a, b = misaligned(12).reshape(3, 4), misaligned(8).reshape(4, 2)
    a[:] = np.arange(12).reshape(3, 4)
    b[:] = np.arange(8).reshape(4, 2)
    out = f32(3, 2)
    ops_c.gemm(out, a, b)
    np.testing.assert_allclose(out, a.copy() @ b.copy())


def test_encoder_ids_against_the_rows_c_reads():
    """C reads row id of C floats from wte: an id is checked against wte.size // C, not against
    wte.shape[0] (a (Vp, 2C) array holds twice as many C-rows, a (2, ...) view fewer)."""
    from minigpt.model import ops_c
    B, T, Cc = 1, 2, 4
    wte = f32(3 * Cc, 1)     # 3 rows of C as C sees them, but shape[0] is 12
    wpe = f32(T, Cc)
    with pytest.raises(ValueError, match=r"ids must be in \[0, 3\)"):
        ops_c.encoder_forward(f32(B, T, Cc), np.array([[0, 11]]), wte, wpe, B, T, Cc)
    with pytest.raises(ValueError, match="wte"):
        ops_c.encoder_forward(f32(B, T, Cc), np.array([[0, 1]]), f32(3 * Cc + 1), wpe, B, T, Cc)
    ops_c.encoder_forward(f32(B, T, Cc), np.array([[0, 2]]), wte, wpe, B, T, Cc)
