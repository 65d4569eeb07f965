"""ggml's block formats, bit for bit as llama.cpp's own gguf package reads and writes them."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from minigpt import quant

gguf = pytest.importorskip("gguf")  # the oracle: llama.cpp's gguf-py (the test extra)

TYPES = [quant.F32, quant.F16, quant.BF16, quant.Q8_0, quant.Q4_0, quant.Q4_1]
# finite float32 values over many magnitudes, with ties and repeated values
values = st.one_of(st.floats(-1e4, 1e4, width=32), st.sampled_from([0.0, -0.0, 0.5, -0.5, 1.0, 7.5]),
                   st.floats(-2.0**-10, 2.0**-10, width=32),
                   st.floats(-2.0**-120, 2.0**-120, width=32))  # scales so small that 1/d is inf


def oracle_quantize(x, t):
    return np.asarray(gguf.quants.quantize(x, gguf.GGMLQuantizationType(t))).reshape(-1).view(np.uint8)


def oracle_dequantize(raw, t, shape):
    rows = raw.reshape(shape[0], -1)
    return np.asarray(gguf.quants.dequantize(rows, gguf.GGMLQuantizationType(t)), dtype=np.float32).reshape(shape)


def test_constants_match_ggml():
    for t in TYPES:
        block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(t)]
        assert quant.TYPES[t][1:] == (block, size)
        assert quant.TYPES[t][0] == gguf.GGMLQuantizationType(t).name
    for t, (name, block, size) in quant.TYPES.items():
        assert gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(t)] == (block, size), name


@settings(max_examples=60)
@given(st.sampled_from(TYPES), st.integers(1, 3), st.integers(1, 3), st.data())
def test_quantize_bit_exact(t, rows, blocks, data):
    x = data.draw(hnp.arrays(np.float32, (rows, 32 * blocks), elements=values))
    ours = quant.quantize(x, t)
    assert ours.dtype == np.uint8 and ours.size == quant.nbytes_of(t, x.shape)
    assert ours.tobytes() == oracle_quantize(x, t).tobytes()


# the NumPy specification, and the C fast path (csrc/quant.c) where it is built
DEQUANTIZERS = [quant.dequantize_numpy, pytest.param(quant.dequantize, marks=pytest.mark.skipif(
    quant._lib is None, reason="minigpt._quant is not built (python csrc/build_quant.py)"), id="c")]


@pytest.mark.parametrize("dequantize", DEQUANTIZERS)
@settings(max_examples=60)
@given(st.sampled_from(TYPES), st.integers(1, 3), st.integers(1, 3), st.data())
def test_dequantize_bit_exact_on_any_bytes(dequantize, t, rows, blocks, data):
    shape = (rows, 32 * blocks)
    raw = np.frombuffer(data.draw(st.binary(min_size=quant.nbytes_of(t, shape),
                                            max_size=quant.nbytes_of(t, shape))), np.uint8)
    ours, theirs = dequantize(raw, t, shape), oracle_dequantize(raw, t, shape)
    assert ours.dtype == np.float32 and ours.shape == shape
    assert ours.view(np.uint32).tobytes() == theirs.view(np.uint32).tobytes()  # NaNs too, bit for bit


@pytest.mark.skipif(quant._lib is None, reason="minigpt._quant is not built")
def test_c_checks_its_sizes_itself():
    out = np.zeros(64, np.float32)
    raw = np.zeros(68, np.uint8)
    lib, ffi = quant._lib, quant._ffi
    f, r = ffi.from_buffer("float[]", out), ffi.from_buffer("uint8_t[]", raw)
    assert lib.dequantize_row(f, r, quant.Q8_0, 64, 68) == 0
    for t, n, nbytes in [(quant.Q8_0, 64, 67), (quant.Q8_0, 48, 51), (quant.Q4_1, -32, -20), (14, 256, 210)]:
        assert lib.dequantize_row(f, r, t, n, nbytes) == -1


def test_layout_of_a_q4_0_block():
    # byte j holds element j in its low nibble and j + 16 in its high one; w = d * (q - 8)
    raw = np.zeros(18, np.uint8)
    raw[0:2] = np.array([0.5], "<f2").view(np.uint8)
    raw[2] = 0x9F  # element 0: code 15 -> 3.5, element 16: code 9 -> 0.5
    w = quant.dequantize(raw, quant.Q4_0, (32,))
    assert w[0] == 3.5 and w[16] == 0.5 and w[1] == -4.0


def test_roundtrip_error_bounded():
    x = np.random.default_rng(0).standard_normal((4, 256)).astype(np.float32)
    # half a step of amax/127, of (max-min)/15 <= 2 amax/15; Q4_0's +amax side is clipped from 16 to 15
    for t, tol in [(quant.Q8_0, 1 / 254), (quant.Q4_0, 1 / 8), (quant.Q4_1, 1 / 15)]:
        y = quant.dequantize(quant.quantize(x, t), t, x.shape)
        amax = np.abs(x.reshape(-1, 32)).max(axis=1, keepdims=True)
        err = np.abs((y - x).reshape(-1, 32)) / amax
        assert err.max() <= tol * (1 + 1e-3), quant.type_name(t)


def test_refuses_partial_blocks_and_unsupported_types():
    with pytest.raises(ValueError, match="not whole blocks of 32"):
        quant.quantize(np.zeros((2, 48), np.float32), quant.Q8_0)
    with pytest.raises(ValueError, match="cannot dequantize Q6_K"):
        quant.dequantize(np.zeros(210, np.uint8), 14, (256,))
    with pytest.raises(ValueError, match="expected 34 bytes"):
        quant.dequantize(np.zeros(33, np.uint8), quant.Q8_0, (32,))
