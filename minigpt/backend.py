"""Which implementation of the ops runs the model.

    "numpy"  minigpt/ops.py: the specification, any float dtype
    "c"      csrc/ through cffi (minigpt/_kernels), float32, OpenMP; the default once built
    "cuda"   csrc/cuda/ through cffi, when built with nvcc and a GPU is present

Each backend is a module with the same functions (encoder_forward, ..., adamw_update) taking the
same arguments, so minigpt/model.py is written once. Choose with GPT(cfg, backend=...) or the
MINIGPT_BACKEND environment variable.
"""
import importlib
import os
from types import SimpleNamespace

import numpy as np

# name -> module that provides the ops, and the float dtypes it computes in
BACKENDS = {
    "numpy": ("minigpt.ops", None),
    "c": ("minigpt.ops_c", (np.float32,)),
    "cuda": ("minigpt.ops_cuda", (np.float32,)),
}


def _load(name):
    try:
        module = importlib.import_module(BACKENDS[name][0])
    except ImportError:
        return None
    ready = getattr(module, "available", lambda: True)  # a compiled backend can say it is not usable
    return module if ready() else None


def available():
    """The names of the backends that are built and usable here, fastest first."""
    return [name for name in ("cuda", "c", "numpy") if name in BACKENDS and _load(name) is not None]


def default(dtype=np.float32):
    env = os.environ.get("MINIGPT_BACKEND")
    if env:
        return env
    dtype = np.dtype(dtype)
    if dtype == np.float32 and _load("c") is not None:
        return "c"
    return "numpy"


def get(name=None, dtype=np.float32, threads=None):
    """A backend as a namespace with .name and .ops (the kernel module)."""
    name = name or default(dtype)
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}: expected one of {sorted(BACKENDS)}")
    module = _load(name)
    if module is None:
        raise RuntimeError(f"backend {name!r} is not available here (built: {available()}); "
                           f"`pip install -e .` builds the C backend")
    dtypes = BACKENDS[name][1]
    if dtypes is not None and np.dtype(dtype) not in [np.dtype(d) for d in dtypes]:
        raise ValueError(f"backend {name!r} computes in {[np.dtype(d).name for d in dtypes]}, "
                         f"not {np.dtype(dtype).name}; use backend='numpy' for that")
    if threads is not None and hasattr(module, "set_threads"):
        module.set_threads(threads)
    return SimpleNamespace(name=name, ops=module)
