"""The CUDA backend: nvcc compiles it (no GPU needed), every kernel against the NumPy reference on
hypothesis-drawn shapes, and the device-resident model against PyTorch (the fixture) and over 10
AdamW steps. Without a GPU the kernel and GPU-model tests skip with the reason.

The model driver (minigpt/model/gpt_cuda.py: buffer layout, one-layer gradient scratch, host/device
syncing) is also run on the CPU against HostLib below: minigpt._cuda's C interface implemented by
minigpt/model/ops.py on host memory. That checks the driver everywhere; only the .cu kernels need a GPU.
"""
import importlib.util
import math
import os
import re
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minigpt.model import GPT, GPTConfig, ops
from minigpt.model import ops_cuda as k
from torch_parity import assert_matches_torch, load_fixture

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CUDA_DIR = os.path.join(ROOT, "csrc", "cuda")
NO_GPU = k.unavailable_reason()
gpu = pytest.mark.skipif(NO_GPU is not None, reason=f"needs a CUDA GPU: {NO_GPU}")
GEMMS = ["tiled", "cublas"] if k.has_cublas() else ["tiled"]


def load_build_module():
    spec = importlib.util.spec_from_file_location("build_cuda", os.path.join(CUDA_DIR, "build_cuda.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(shutil.which("nvcc") is None and not os.environ.get("NVCC"),
                    reason="nvcc not found: the CUDA sources cannot be compiled here")
def test_cuda_sources_compile_and_link():
    """Every .cu compiles with warnings as errors and links, with and without cuBLAS (no GPU needed)."""
    assert load_build_module().check() == 0


# --------------------------------------------------------------------------------------------------
# every kernel against minigpt/model/ops.py, on the GPU

def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def close(ours, ref, rtol=1e-4, atol=1e-5):
    np.testing.assert_allclose(ours, ref, rtol=rtol, atol=atol * max(1.0, float(np.abs(ref[np.isfinite(ref)]).max(initial=0))))


@pytest.fixture(params=GEMMS)
def gemm(request):
    if NO_GPU:
        pytest.skip(f"needs a CUDA GPU: {NO_GPU}")
    k.set_gemm(request.param)
    yield request.param
    k.set_gemm(GEMMS[-1])


@gpu
@settings(max_examples=25)
@given(st.integers(0, 1), st.integers(0, 1), st.integers(1, 70), st.integers(1, 70), st.integers(0, 70),
       st.integers(1, 3), st.integers(0, 2), st.sampled_from([0.0, 1.0, -0.5]), st.integers(0, 2**31))
def test_sgemm_tiled_and_cublas(ta, tb, m, n, kk, batch, pad, beta, seed):
    """mg_sgemm's column-major meaning, both GEMMs: odd sizes, k = 0, padded leading dimensions."""
    rng = np.random.default_rng(seed)
    rA, cA = (kk, m) if ta else (m, kk)  # stored column-major: (rows, cols) = (ld..., cols)
    rB, cB = (n, kk) if tb else (kk, n)
    lda, ldb, ldc = max(rA, 1) + pad, max(rB, 1) + pad, m + pad  # cuBLAS: ld >= max(1, rows)
    A, B = rand(rng, batch, cA, lda), rand(rng, batch, cB, ldb)  # column j of A is A[z, j, :]
    C0 = rand(rng, batch, n, ldc)
    opA = [(A[z, :, :rA]).T for z in range(batch)]  # (rA, cA) as stored
    opB = [(B[z, :, :rB]).T for z in range(batch)]
    ref = C0.copy()
    for z in range(batch):
        a = opA[z].T if ta else opA[z]
        b = opB[z].T if tb else opB[z]
        prod = 0.5 * (a.astype(np.float64) @ b)  # (m, n)
        ref[z, :, :m] = (prod + (beta * C0[z, :, :m].T if beta else 0)).T
    for kind in GEMMS:
        k.set_gemm(kind)
        C = C0.copy()
        k.sgemm(ta, tb, m, n, kk, 0.5, A, lda, cA * lda, B, ldb, cB * ldb, beta, C, ldc, n * ldc, batch)
        close(C[:, :, :m], ref[:, :, :m])
        np.testing.assert_array_equal(C[:, :, m:], C0[:, :, m:])  # padding rows untouched


shapes = st.tuples(st.integers(1, 3), st.sampled_from([1, 2, 7, 33, 64]), st.integers(1, 4), st.sampled_from([1, 3, 8, 16]))


@gpu
@settings(max_examples=15)
@given(shapes, st.integers(0, 2**31))
def test_encoder(shape, seed):
    B, T, _, C = shape
    rng = np.random.default_rng(seed)
    V = 7
    inp = rng.integers(0, V, (B, T)).astype(np.int32)  # repeats: the scatter must add them up
    wte, wpe, dout = rand(rng, V, C), rand(rng, T + 2, C), rand(rng, B, T, C)
    out, ref = np.zeros((B, T, C), np.float32), np.zeros((B, T, C), np.float32)
    k.encoder_forward(out, inp, wte, wpe, B, T, C)
    ops.encoder_forward(ref, inp, wte, wpe, B, T, C)
    close(out, ref)
    g = [rand(rng, V, C), rand(rng, T + 2, C)]
    r = [x.copy() for x in g]
    k.encoder_backward(g[0], g[1], dout, inp, B, T, C)
    ops.encoder_backward(r[0], r[1], dout, inp, B, T, C)
    close(g[0], r[0])
    close(g[1], r[1])


@gpu
@settings(max_examples=15)
@given(shapes, st.integers(0, 2**31))
def test_layernorm(shape, seed):
    B, T, _, C = shape
    rng = np.random.default_rng(seed)
    x, w, b, dout = 3 + 2 * rand(rng, B, T, C), rand(rng, C), rand(rng, C), rand(rng, B, T, C)
    outs = [np.zeros((B, T, C), np.float32), np.zeros((B, T), np.float32), np.zeros((B, T), np.float32)]
    refs = [o.copy() for o in outs]
    k.layernorm_forward(*outs, x, w, b, B, T, C)
    ops.layernorm_forward(*refs, x, w, b, B, T, C)
    for o, r in zip(outs, refs):
        close(o, r)
    g = [rand(rng, B, T, C), rand(rng, C), rand(rng, C)]
    gr = [a.copy() for a in g]
    k.layernorm_backward(*g, dout, x, w, refs[1], refs[2], B, T, C)
    ops.layernorm_backward(*gr, dout, x, w, refs[1], refs[2], B, T, C)
    for o, r in zip(g, gr):
        close(o, r, rtol=2e-4, atol=2e-5)


@gpu
@settings(max_examples=15, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shapes, st.integers(1, 70), st.booleans(), st.integers(0, 2**31))
def test_matmul(gemm, shape, OC, with_bias, seed):
    B, T, _, C = shape
    C = C + 31  # cross the 32-wide tiles
    rng = np.random.default_rng(seed)
    x, w, dout = rand(rng, B, T, C), rand(rng, OC, C), rand(rng, B, T, OC)
    bias = rand(rng, OC) if with_bias else None
    out, ref = np.zeros((B, T, OC), np.float32), np.zeros((B, T, OC), np.float32)
    k.matmul_forward(out, x, w, bias, B, T, C, OC)
    ops.matmul_forward(ref, x, w, bias, B, T, C, OC)
    close(out, ref)
    g = [rand(rng, B, T, C), rand(rng, OC, C), rand(rng, OC) if with_bias else None]
    gr = [a.copy() if a is not None else None for a in g]
    k.matmul_backward(*g, dout, x, w, B, T, C, OC)
    ops.matmul_backward(*gr, dout, x, w, B, T, C, OC)
    for o, r in zip(g, gr):
        if o is not None:
            close(o, r)


@gpu
@settings(max_examples=15, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shapes, st.integers(0, 2**31))
def test_attention(gemm, shape, seed):
    B, T, NH, hs = shape
    C = NH * hs
    rng = np.random.default_rng(seed)
    x, dout = rand(rng, B, T, 3 * C), rand(rng, B, T, C)
    outs = [np.zeros((B, T, C), np.float32), np.zeros((B, NH, T, T), np.float32), np.zeros((B, NH, T, T), np.float32)]
    refs = [o.copy() for o in outs]
    k.attention_forward(*outs, x, B, T, C, NH)
    ops.attention_forward(*refs, x, B, T, C, NH)
    for o, r in zip(outs, refs):
        close(o, r)  # preatt's -inf above the diagonal must sit in the same places
    g = [rand(rng, B, T, 3 * C), rand(rng, B, NH, T, T), rand(rng, B, NH, T, T)]
    gr = [a.copy() for a in g]
    k.attention_backward(*g, dout, x, refs[2], B, T, C, NH)
    ops.attention_backward(*gr, dout, x, refs[2], B, T, C, NH)
    for o, r in zip(g, gr):
        close(o, r, rtol=2e-4, atol=2e-5)


@gpu
@settings(max_examples=10)
@given(st.integers(1, 5000), st.integers(0, 2**31))
def test_gelu_residual(N, seed):
    rng = np.random.default_rng(seed)
    x, y, dout = 3 * rand(rng, N), rand(rng, N), rand(rng, N)
    for name, args, outs in [("gelu_forward", (x, N), 1), ("gelu_backward", (x, dout, N), 1),
                             ("residual_forward", (x, y, N), 1), ("residual_backward", (dout, N), 2)]:
        o = [rand(rng, N) for _ in range(outs)]
        r = [a.copy() for a in o]
        getattr(k, name)(*o, *args)
        getattr(ops, name)(*r, *args)
        for a, b in zip(o, r):
            close(a, b, rtol=1e-5, atol=1e-6)


@gpu
@settings(max_examples=15)
@given(st.integers(1, 3), st.integers(1, 9), st.integers(1, 600), st.integers(0, 130), st.integers(0, 2**31))
def test_softmax_crossentropy(B, T, V, pad, seed):
    rng = np.random.default_rng(seed)
    Vp = V + pad
    logits = 4 * rand(rng, B, T, Vp)
    targets = rng.integers(-1, V, (B, T)).astype(np.int32)  # -1: ignored
    dlosses = rand(rng, B, T)
    outs = [np.zeros((B, T), np.float32), rand(rng, B, T, Vp)]
    refs = [o.copy() for o in outs]
    k.softmax_crossentropy_forward(*outs, logits, targets, B, T, V, Vp)
    ops.softmax_crossentropy_forward(*refs, logits, targets, B, T, V, Vp)
    close(outs[0], refs[0])
    close(outs[1], refs[1])
    d = rand(rng, B, T, Vp)
    dr = d.copy()
    k.softmax_crossentropy_backward(d, dlosses, refs[1], targets, B, T, V, Vp)
    ops.softmax_crossentropy_backward(dr, dlosses, refs[1], targets, B, T, V, Vp)
    close(d, dr)


@gpu
@settings(max_examples=10)
@given(st.integers(1, 3000), st.integers(1, 20), st.floats(0.0, 0.1), st.integers(0, 2**31))
def test_adamw(N, t, wd, seed):
    rng = np.random.default_rng(seed)
    p, g, m, v = rand(rng, N), rand(rng, N), 0.1 * rand(rng, N), np.abs(rand(rng, N))
    ours, ref = [a.copy() for a in (p, g, m, v)], [a.copy() for a in (p, g, m, v)]
    k.adamw_update(*ours, N, 1e-3, 0.9, 0.999, 1e-8, wd, t)
    ops.adamw_update(*ref, N, 1e-3, 0.9, 0.999, 1e-8, wd, t)
    for a, b in zip(ours, ref):
        close(a, b, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------------------------------
# HostLib: minigpt._cuda's interface on the CPU, by minigpt/model/ops.py, to test the driver without a GPU

class HostLib:
    """Fresh allocations are filled with NaN bytes, as device memory is not zeroed: a buffer the driver
    forgets to clear poisons the result."""

    def __init__(self):
        import cffi
        header = open(os.path.join(CUDA_DIR, "minigpt_cuda.h")).read()
        decls = header.split("/* cdef-begin */")[1].split("/* cdef-end */")[0]
        decls = re.sub(r"/\*.*?\*/", "", decls, flags=re.S)
        self.ffi = cffi.FFI()
        self.memory, self.strings = {}, {}
        for decl in re.findall(r"[^;]+\(.*?\);", decls, flags=re.S):
            decl = " ".join(decl.split())
            name = re.search(r"(\w+)\s*\(", decl).group(1)
            ctype = decl.replace(name, "", 1).rstrip(";")
            impl = getattr(self, "_" + name, None)
            if impl is not None:
                # a Python exception in a callback returns -1: ops_cuda raises, nothing passes silently
                error = -1 if ctype.startswith("int ") else None
                setattr(self, name, self.ffi.callback(ctype, impl, error=error))

    def arr(self, p, shape, dtype=np.float32):
        n = math.prod(shape) * np.dtype(dtype).itemsize
        return np.frombuffer(self.ffi.buffer(p, n), dtype).reshape(shape)

    def _str(self, text):
        return self.strings.setdefault(text, self.ffi.new("char[]", text.encode()))

    def _mg_device_count(self): return 1
    def _mg_device_name(self): return self._str("host emulation")
    def _mg_error_string(self, code): return self._str(f"error {code}")
    def _mg_has_cublas(self): return 0
    def _mg_set_gemm(self, on): return 0
    def _mg_set_tf32(self, on): return 0
    def _mg_synchronize(self): return 0
    def _mg_release(self): return 0

    def _mg_malloc(self, box, nbytes):
        buf = self.ffi.new("char[]", max(nbytes, 1))
        self.ffi.buffer(buf)[:] = b"\xff" * max(nbytes, 1)  # NaN floats
        self.memory[int(self.ffi.cast("uintptr_t", buf))] = buf
        box[0] = buf
        return 0

    def _mg_free(self, p):
        self.memory.pop(int(self.ffi.cast("uintptr_t", p)))
        return 0

    def _mg_memcpy_h2d(self, dst, src, n):
        self.ffi.memmove(dst, src, n)
        return 0

    _mg_memcpy_d2h = _mg_memcpy_h2d

    def _mg_memset_zero(self, p, n):
        self.ffi.memmove(p, bytes(n), n)
        return 0

    def _encoder_forward(self, out, inp, wte, wpe, B, T, C):
        idx = self.arr(inp, (B, T), np.int32)
        ops.encoder_forward(self.arr(out, (B, T, C)), idx, self.arr(wte, (idx.max() + 1, C)),
                            self.arr(wpe, (T, C)), B, T, C)
        return 0

    def _encoder_backward(self, dwte, dwpe, dout, inp, B, T, C):
        idx = self.arr(inp, (B, T), np.int32)
        ops.encoder_backward(self.arr(dwte, (idx.max() + 1, C)), self.arr(dwpe, (T, C)),
                             self.arr(dout, (B, T, C)), idx, B, T, C)
        return 0

    def _layernorm_forward(self, out, mean, rstd, inp, w, b, B, T, C):
        ops.layernorm_forward(self.arr(out, (B, T, C)), self.arr(mean, (B, T)), self.arr(rstd, (B, T)),
                              self.arr(inp, (B, T, C)), self.arr(w, (C,)), self.arr(b, (C,)), B, T, C)
        return 0

    def _layernorm_backward(self, dinp, dw, db, dout, inp, w, mean, rstd, B, T, C):
        ops.layernorm_backward(self.arr(dinp, (B, T, C)), self.arr(dw, (C,)), self.arr(db, (C,)),
                               self.arr(dout, (B, T, C)), self.arr(inp, (B, T, C)), self.arr(w, (C,)),
                               self.arr(mean, (B, T)), self.arr(rstd, (B, T)), B, T, C)
        return 0

    def _matmul_forward(self, out, inp, w, bias, B, T, C, OC):
        bias = None if bias == self.ffi.NULL else self.arr(bias, (OC,))
        ops.matmul_forward(self.arr(out, (B, T, OC)), self.arr(inp, (B, T, C)), self.arr(w, (OC, C)),
                           bias, B, T, C, OC)
        return 0

    def _matmul_backward(self, dinp, dw, dbias, dout, inp, w, B, T, C, OC):
        dbias = None if dbias == self.ffi.NULL else self.arr(dbias, (OC,))
        ops.matmul_backward(self.arr(dinp, (B, T, C)), self.arr(dw, (OC, C)), dbias, self.arr(dout, (B, T, OC)),
                            self.arr(inp, (B, T, C)), self.arr(w, (OC, C)), B, T, C, OC)
        return 0

    def _attention_forward(self, out, preatt, att, inp, B, T, C, NH):
        ops.attention_forward(self.arr(out, (B, T, C)), self.arr(preatt, (B, NH, T, T)),
                              self.arr(att, (B, NH, T, T)), self.arr(inp, (B, T, 3 * C)), B, T, C, NH)
        return 0

    def _attention_backward(self, dinp, dpreatt, datt, dout, inp, att, B, T, C, NH):
        ops.attention_backward(self.arr(dinp, (B, T, 3 * C)), self.arr(dpreatt, (B, NH, T, T)),
                               self.arr(datt, (B, NH, T, T)), self.arr(dout, (B, T, C)),
                               self.arr(inp, (B, T, 3 * C)), self.arr(att, (B, NH, T, T)), B, T, C, NH)
        return 0

    def _gelu_forward(self, out, inp, N):
        ops.gelu_forward(self.arr(out, (N,)), self.arr(inp, (N,)), N)
        return 0

    def _gelu_backward(self, dinp, inp, dout, N):
        ops.gelu_backward(self.arr(dinp, (N,)), self.arr(inp, (N,)), self.arr(dout, (N,)), N)
        return 0

    def _residual_forward(self, out, a, b, N):
        ops.residual_forward(self.arr(out, (N,)), self.arr(a, (N,)), self.arr(b, (N,)), N)
        return 0

    def _residual_backward(self, da, db, dout, N):
        ops.residual_backward(self.arr(da, (N,)), self.arr(db, (N,)), self.arr(dout, (N,)), N)
        return 0

    def _softmax_crossentropy_forward(self, losses, probs, logits, targets, B, T, V, Vp):
        ops.softmax_crossentropy_forward(self.arr(losses, (B, T)), self.arr(probs, (B, T, Vp)),
                                         self.arr(logits, (B, T, Vp)), self.arr(targets, (B, T), np.int32),
                                         B, T, V, Vp)
        return 0

    def _softmax_crossentropy_backward(self, dlogits, dlosses, probs, targets, B, T, V, Vp):
        ops.softmax_crossentropy_backward(self.arr(dlogits, (B, T, Vp)), self.arr(dlosses, (B, T)),
                                          self.arr(probs, (B, T, Vp)), self.arr(targets, (B, T), np.int32),
                                          B, T, V, Vp)
        return 0

    def _adamw_update(self, params, grads, m, v, N, lr, b1, b2, eps, wd, t):
        ops.adamw_update(*(self.arr(p, (N,)) for p in (params, grads, m, v)), N, lr, b1, b2, eps, wd, t)
        return 0

    def _loss_weights(self, dlosses, targets, weights, N, count):
        t = self.arr(targets, (N,), np.int32)
        w = np.ones(N, np.float32) if weights == self.ffi.NULL else self.arr(weights, (N,))
        self.arr(dlosses, (N,))[:] = np.where(t >= 0, w, 0).astype(np.float32) / np.float32(count)
        return 0

    def _weighted_loss(self, out, losses, dlosses, N):
        self.arr(out, (1,), np.float64)[0] = (self.arr(losses, (N,)).astype(np.float64) * self.arr(dlosses, (N,))).sum()
        return 0


@pytest.fixture(params=["gpu", "host-emulation"])
def cuda_model(request, monkeypatch):
    """GPT(cfg, backend="cuda") factory: on the GPU, or with the host emulation of the library."""
    if request.param == "gpu":
        if NO_GPU:
            pytest.skip(f"needs a CUDA GPU: {NO_GPU}")
    else:
        host = HostLib()
        monkeypatch.setattr(k, "lib", host)
        monkeypatch.setattr(k, "ffi", host.ffi)
        monkeypatch.setattr(k, "_device_count", 1)
    return lambda cfg, **kw: GPT(cfg, backend="cuda", **kw)


def test_cuda_model_pytorch_parity_and_trajectory(cuda_model):
    """Logits, loss, all 16 gradients and 10 AdamW steps against PyTorch fp32 (see torch_parity.py);
    params_memory writes are host writes, uploaded before the next step."""
    cfg, f = load_fixture()
    model = cuda_model(cfg, seed=None)
    assert type(model).__name__ == "CudaGPT"
    assert_matches_torch(model, f, logits_rtol=1e-4, logits_atol=1e-5, loss_rel=1e-5, grad_rtol=1e-3,
                         grad_atol=1e-5, steps_rtol=1e-4)


def test_cuda_model_matches_numpy_model(cuda_model):
    """Weights, ignored targets, two batch shapes, host reads between steps: same as backend numpy."""
    cfg = GPTConfig(block_size=12, vocab_size=50, n_layer=3, n_head=2, n_embd=16)
    ref = GPT(cfg, backend="numpy", seed=3)
    model = cuda_model(cfg, seed=3)
    np.testing.assert_array_equal(model.params_memory, ref.params_memory)
    rng = np.random.default_rng(0)
    for step, (B, T) in enumerate([(2, 12), (3, 5), (3, 5)], start=1):
        idx, targets = rng.integers(0, 50, (B, T)), rng.integers(0, 50, (B, T))
        targets[0, 1] = -1
        w = rng.uniform(0.5, 2.0, (B, T))
        for m in (ref, model):
            m.forward(idx, targets, w)
            m.zero_grad()
            m.backward()
        assert model.loss == pytest.approx(ref.loss, rel=1e-5)
        # atol relative to the largest gradient: some are rounding noise around 0 (the key bias's is
        # exactly 0 in exact arithmetic: softmax ignores a constant added to a row)
        g_ref = ref.grads_memory
        np.testing.assert_allclose(model.grads_memory, g_ref, rtol=1e-3, atol=1e-5 * np.abs(g_ref).max())
        np.testing.assert_allclose(model.acts["att"], ref.acts["att"], rtol=1e-4, atol=1e-6)
        for m in (ref, model):
            m.update(1e-2, weight_decay=0.1, t=step)
        # (AdamW scales those noise gradients up to lr-sized steps, hence an absolute tolerance)
        np.testing.assert_allclose(model.params_memory, ref.params_memory, rtol=1e-4, atol=2e-5)
    # inference: no targets, no loss; logits of the last position
    assert model.forward(idx) is None and model.logits.shape == (B, T, cfg.padded_vocab_size)
    with pytest.raises(KeyError, match="preatt"):
        model.acts["preatt"]


def test_cuda_model_save_load(cuda_model, tmp_path):
    cfg = GPTConfig(block_size=8, vocab_size=30, n_layer=1, n_head=2, n_embd=8)
    model = cuda_model(cfg, seed=1)
    idx = np.arange(8).reshape(1, 8)
    model.forward(idx, idx)
    model.zero_grad()
    model.backward()
    model.update(1e-2)  # params now differ from the host copy made at init
    model.save(tmp_path / "m.bin")
    back = GPT.load(tmp_path / "m.bin", backend="numpy")
    np.testing.assert_array_equal(back.params_memory, model.params_memory)


def test_cuda_unavailable_is_a_clear_error(monkeypatch):
    if k.lib is not None:
        monkeypatch.setattr(k, "_device_count", 0)  # built, but as if no GPU were found
    with pytest.raises(RuntimeError, match="cuda"):
        GPT(GPTConfig(block_size=4, vocab_size=8, n_layer=1, n_head=1, n_embd=4), backend="cuda")
