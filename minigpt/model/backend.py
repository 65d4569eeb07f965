"""Which implementation of the ops runs the model, and on how many threads: the one registry.

    "numpy"  minigpt/model/ops.py (training) and ops_decode.py (KV-cache decoding): the specification,
             any float dtype
    "c"      csrc/ through cffi: minigpt/model/ops_c.py (minigpt._kernels) and ops_decode_c.py
             (minigpt._decode), float32, OpenMP; the default once built
    "cuda"   csrc/cuda/ through cffi (minigpt/model/ops_cuda.py), when built with nvcc and a GPU is
             present; training only (decoding then uses the C kernels)

Each backend is a pair of modules with the same functions as the NumPy ones (encoder_forward, ...,
adamw_update; layernorm_cached, ..., matvec_forward), so minigpt/model/gpt.py and
minigpt/inference/kvcache.py are written once. Choose with GPT(cfg, backend=...), the `--backend`
setting, or the MINIGPT_BACKEND environment variable; set_threads(n) sets every C module's threads.
"""
import importlib
import os
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

# name -> (training ops module, decode ops module, the float dtypes it computes in)
BACKENDS = {
    "numpy": ("minigpt.model.ops", "minigpt.model.ops_decode", None),
    "c": ("minigpt.model.ops_c", "minigpt.model.ops_decode_c", (np.float32,)),
    "cuda": ("minigpt.model.ops_cuda", "minigpt.model.ops_decode_c", (np.float32,)),
}


@dataclass
class RuntimeSettings:
    backend: str = None  # numpy | c | cuda: which kernels run the model (default: the fastest built)
    threads: int = None  # threads for the C kernels (default: OMP_NUM_THREADS, else every core)

    CHOICES = {"backend": tuple(BACKENDS)}

    def __post_init__(self):
        if self.backend is not None and self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {list(BACKENDS)}, found {self.backend!r}")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise ValueError(f"threads must be an int >= 1, found {self.threads!r}")


def _load(module_name):
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    ready = getattr(module, "available", lambda: True)  # a compiled backend can say it is not usable
    return module if ready() else None


def available():
    """The names of the backends that are built and usable here, fastest first."""
    return [name for name in ("cuda", "c", "numpy") if _load(BACKENDS[name][0]) is not None]


def default(dtype=np.float32):
    env = os.environ.get("MINIGPT_BACKEND")
    if env:
        return env
    if np.dtype(dtype) == np.float32 and _load(BACKENDS["c"][0]) is not None:
        return "c"
    return "numpy"


def _module(name, which):
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}: expected one of {sorted(BACKENDS)}")
    module = _load(BACKENDS[name][which])
    if module is None:
        raise RuntimeError(f"backend {name!r} is not available here (built: {available()}); "
                           f"`pip install -e .` builds the C backend")
    return module


def get(name=None, dtype=np.float32, threads=None):
    """The training kernels of a backend, as a namespace with .name and .ops (the kernel module)."""
    name = name or default(dtype)
    module = _module(name, 0)
    dtypes = BACKENDS[name][2]
    if dtypes is not None and np.dtype(dtype) not in [np.dtype(d) for d in dtypes]:
        raise ValueError(f"backend {name!r} computes in {[np.dtype(d).name for d in dtypes]}, "
                         f"not {np.dtype(dtype).name}; use backend='numpy' for that")
    if threads is not None:
        set_threads(threads)
    return SimpleNamespace(name=name, ops=module)


def decode_kernels(name=None):
    """The KV-cache decode kernels of a backend (default: as get(): C when built, else NumPy)."""
    return _module(name or default(), 1)


def set_threads(n):
    """Threads for every built C module (training and decode kernels alike)."""
    RuntimeSettings(threads=n)  # validates
    for name in ("c",):
        for module_name in BACKENDS[name][:2]:
            module = _load(module_name)
            if module is not None:
                module.set_threads(n)
