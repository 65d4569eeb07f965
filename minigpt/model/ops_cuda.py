"""The CUDA backend: csrc/cuda/*.cu through cffi (minigpt._cuda), built with MINIGPT_CUDA=1 and nvcc.

Every op has the name and arguments of minigpt/model/ops.py (the README's kernel contract) and takes either
    - NumPy arrays: copied to the GPU, run, and the written ones copied back (what the tests use to
      check each kernel against the NumPy reference), or
    - DeviceArray views of GPU memory: nothing is copied (what the model driver, gpt_cuda.py, uses).

    from minigpt.model import ops_cuda as k
    x = k.DeviceArray.from_numpy(np.ones((2, 3), np.float32))
    k.gelu_forward(out_device, x, 6); out_device.download()

GEMMs run cuBLAS when the build found it, else the hand-written tiled kernel (matmul.cu);
set_gemm("tiled") switches to the latter for reading and testing, set_tf32(True) lets cuBLAS use
TF32 tensor cores for fp32 products (faster, ~1e-3 relative error, as PyTorch's allow_tf32).
"""
import atexit
import math

import numpy as np

try:
    from .._cuda import ffi, lib
    _IMPORT_ERROR = None
except ImportError as e:  # not built: available() says why
    ffi = lib = None
    _IMPORT_ERROR = str(e)

_device_count = None


def unavailable_reason():
    """None when the backend can run here, else why not (for skips and error messages)."""
    global _device_count
    if lib is None:
        return (f"minigpt._cuda is not built ({_IMPORT_ERROR}); build it with "
                f"`MINIGPT_CUDA=1 pip install -e .` where nvcc is installed")
    if _device_count is None:
        _device_count = lib.mg_device_count()
        if _device_count > 0:
            atexit.register(lib.mg_release)  # the workspace and cuBLAS handle, for leak checkers
    if _device_count == 0:
        return "no CUDA GPU here (minigpt._cuda is built, but the CUDA runtime finds no device)"
    return None


def available():
    return unavailable_reason() is None


def _check(rc, what):
    if rc != 0:
        raise RuntimeError(f"{what}: CUDA error {rc}: {ffi.string(lib.mg_error_string(rc)).decode()}")


def device_name():
    return ffi.string(lib.mg_device_name()).decode()


def synchronize():
    _check(lib.mg_synchronize(), "synchronize")


def has_cublas():
    return lib is not None and bool(lib.mg_has_cublas())


def set_gemm(kind):
    """"cublas" or "tiled": which GEMM every op uses from now on."""
    if kind not in ("cublas", "tiled"):
        raise ValueError(f"gemm must be 'cublas' or 'tiled', not {kind!r}")
    if kind == "cublas" and not has_cublas():
        raise RuntimeError("minigpt._cuda was built without cuBLAS (its headers were not found)")
    _check(lib.mg_set_gemm(kind == "cublas"), "set_gemm")


def set_tf32(on):
    _check(lib.mg_set_tf32(bool(on)), "set_tf32")


# --------------------------------------------------------------------------------------------------
# device memory

_CTYPES = {np.dtype(np.float32): "float *", np.dtype(np.int32): "int *", np.dtype(np.float64): "double *"}


class _Allocation:
    """One cudaMalloc; freed when the last view of it goes."""

    def __init__(self, nbytes):
        box = ffi.new("void **")
        rc = lib.mg_malloc(box, nbytes)
        if rc != 0:
            raise MemoryError(f"cudaMalloc of {nbytes / 2**20:.1f} MiB failed: "
                              f"{ffi.string(lib.mg_error_string(rc)).decode()}")
        self.ptr = int(ffi.cast("uintptr_t", box[0]))
        self.lib, self.ffi = lib, ffi  # freed by the library that allocated it

    def __del__(self):
        if getattr(self, "ptr", 0):
            self.lib.mg_free(self.ffi.cast("void *", self.ptr))
            self.ptr = 0


class DeviceArray:
    """A C-contiguous typed view of GPU memory: a shape, a dtype and an address. Indexing the first
    axis gives a sub-view (a["qkv"][l]), as for NumPy arrays; the allocation lives while a view does."""

    def __init__(self, shape, dtype=np.float32, _base=None, _offset=0):
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.size = math.prod(self.shape)
        self.nbytes = self.size * self.dtype.itemsize
        self._base = _base if _base is not None else _Allocation(self.nbytes)
        self._addr = self._base.ptr + _offset

    @classmethod
    def from_numpy(cls, array, dtype=None):
        array = np.ascontiguousarray(array, dtype=dtype or array.dtype)
        out = cls(array.shape, array.dtype)
        out.upload(array)
        return out

    def view(self, shape, offset_elements=0):
        """A view of `shape` starting offset_elements into this one."""
        if offset_elements + math.prod(shape) > self.size:
            raise ValueError(f"view of {shape} at {offset_elements} passes the end of {self.shape}")
        return DeviceArray(shape, self.dtype, self._base,
                           self._addr - self._base.ptr + offset_elements * self.dtype.itemsize)

    def __getitem__(self, i):
        if not isinstance(i, (int, np.integer)) or not -self.shape[0] <= i < self.shape[0]:
            raise IndexError(f"DeviceArray index {i!r}: expected an int in [0, {self.shape[0]})")
        i = int(i) % self.shape[0]
        inner = self.shape[1:]
        return self.view(inner, i * math.prod(inner))

    @property
    def cptr(self):
        return ffi.cast(_CTYPES[self.dtype], self._addr)

    def upload(self, array):
        array = np.ascontiguousarray(array, dtype=self.dtype)
        if array.size != self.size:
            raise ValueError(f"upload of {array.shape} into a device array of shape {self.shape}")
        _check(lib.mg_memcpy_h2d(ffi.cast("void *", self._addr), ffi.from_buffer(array), self.nbytes), "upload")

    def download(self, out=None):
        """A NumPy copy (or into `out`, a C-contiguous array of the same size and dtype)."""
        if out is None:
            out = np.empty(self.shape, self.dtype)
        if not (out.flags.c_contiguous and out.dtype == self.dtype and out.size == self.size):
            raise ValueError(f"download into {out.dtype} {out.shape}: expected a C-contiguous "
                             f"{self.dtype} array of {self.size} elements")
        _check(lib.mg_memcpy_d2h(ffi.from_buffer(out), ffi.cast("void *", self._addr), self.nbytes), "download")
        return out

    def zero(self):
        _check(lib.mg_memset_zero(ffi.cast("void *", self._addr), self.nbytes), "zero")

    def __repr__(self):
        return f"DeviceArray(shape={self.shape}, dtype={self.dtype.name})"


def carve(memory, shapes):
    """Consecutive views of one flat DeviceArray, one per named shape (as config.carve for NumPy)."""
    views, offset = {}, 0
    for name, shape in shapes.items():
        views[name] = memory.view(shape, offset)
        offset += math.prod(shape)
    return views


# --------------------------------------------------------------------------------------------------
# the ops: for each C function, the positions of the arguments it writes (copied back for NumPy)

_WRITES = {
    "encoder_forward": (0,), "encoder_backward": (0, 1),
    "layernorm_forward": (0, 1, 2), "layernorm_backward": (0, 1, 2),
    "matmul_forward": (0,), "matmul_backward": (0, 1, 2),
    "attention_forward": (0, 1, 2), "attention_backward": (0, 1, 2),
    "gelu_forward": (0,), "gelu_backward": (0,),
    "residual_forward": (0,), "residual_backward": (0, 1),
    "softmax_crossentropy_forward": (0, 1), "softmax_crossentropy_backward": (0,),
    "adamw_update": (0, 2, 3),
    "loss_weights": (0,), "weighted_loss": (0,),
    "mg_sgemm": (14,),
}
_DTYPES = {"float *": np.float32, "int *": np.int32, "double *": np.float64}


def _run(name, args):
    fn = getattr(lib, name)
    ctypes = [a.cname for a in ffi.typeof(fn).args]
    if len(args) != len(ctypes):
        raise TypeError(f"{name} takes {len(ctypes)} arguments, got {len(args)}")
    cargs, copies = [], []
    for i, (a, ctype) in enumerate(zip(args, ctypes)):
        if a is None:
            cargs.append(ffi.NULL)
        elif isinstance(a, DeviceArray):
            if a.dtype != _DTYPES[ctype]:
                raise TypeError(f"{name} argument {i}: expected {ctype}, found a {a.dtype.name} DeviceArray")
            cargs.append(a.cptr)
        elif isinstance(a, np.ndarray):  # a host array: run on a device copy
            d = DeviceArray.from_numpy(a, _DTYPES[ctype])
            if i in _WRITES[name]:
                copies.append((a, d))
            cargs.append(d.cptr)
        else:
            cargs.append(a)
    _check(fn(*cargs), name)
    for host, d in copies:
        host[...] = d.download().reshape(host.shape)


def _op(name, signature):
    def op(*args):
        _run(name, args)
    op.__name__ = name
    op.__doc__ = f"{name}({signature}): see minigpt/model/ops.py; NumPy arrays or DeviceArrays."
    return op


encoder_forward = _op("encoder_forward", "out, inp, wte, wpe, B, T, C")
encoder_backward = _op("encoder_backward", "dwte, dwpe, dout, inp, B, T, C")
layernorm_forward = _op("layernorm_forward", "out, mean, rstd, inp, w, b, B, T, C")
layernorm_backward = _op("layernorm_backward", "dinp, dw, db, dout, inp, w, mean, rstd, B, T, C")
matmul_forward = _op("matmul_forward", "out, inp, w, bias, B, T, C, OC")
matmul_backward = _op("matmul_backward", "dinp, dw, dbias, dout, inp, w, B, T, C, OC")
attention_forward = _op("attention_forward", "out, preatt, att, inp, B, T, C, NH")
attention_backward = _op("attention_backward", "dinp, dpreatt, datt, dout, inp, att, B, T, C, NH")
gelu_forward = _op("gelu_forward", "out, inp, N")
gelu_backward = _op("gelu_backward", "dinp, inp, dout, N")
residual_forward = _op("residual_forward", "out, a, b, N")
residual_backward = _op("residual_backward", "da, db, dout, N")
softmax_crossentropy_forward = _op("softmax_crossentropy_forward", "losses, probs, logits, targets, B, T, V, Vp")
softmax_crossentropy_backward = _op("softmax_crossentropy_backward",
                                    "dlogits, dlosses, probs, targets, B, T, V, Vp")
adamw_update = _op("adamw_update", "params, grads, m, v, N, lr, beta1, beta2, eps, weight_decay, t")
# the model driver's extras: per-token loss weights (weight / count where the target counts) and
# the mean loss sum(losses * dlosses) in float64, so one number leaves the GPU per step
loss_weights = _op("loss_weights", "dlosses, targets, weights, N, count")
weighted_loss = _op("weighted_loss", "out, losses, dlosses, N")


def sgemm(transa, transb, m, n, k, alpha, A, lda, strideA, B, ldb, strideB, beta, C, ldc, strideC, batch):
    """C = alpha op(A) @ op(B) + beta C, column-major, strided batches: cuBLAS's meaning."""
    _run("mg_sgemm", (int(transa), int(transb), m, n, k, alpha, A, lda, strideA, B, ldb, strideB,
                      beta, C, ldc, strideC, batch))
