"""minigpt: a complete, inspectable large-language-model stack in Python, NumPy and C.

Read in pipeline order: data/ -> tokenizer/ -> ops.py, model.py -> train.py -> sample.py -> chat/ ...
"""
import os

# Idle OpenMP threads sleep instead of spinning. On a shared machine a spinning thread holds a core
# that the thread everyone waits for at the next barrier needs: on 2 busy cores a small model's step
# took 2.8 s with spinning and 0.26 s without, and decoding (~80 short parallel regions per token)
# 5-10x longer. libgomp reads this once, when it loads, so it is set here, before any C module is
# imported. On a dedicated machine `export OMP_WAIT_POLICY=ACTIVE` first.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
__all__ = ["GPT", "GPTConfig"]


def __getattr__(name):
    # `from minigpt import GPT` loads the model lazily, so `import minigpt.tokenizer` stays light
    if name in __all__:
        from . import model
        return getattr(model, name)
    raise AttributeError(f"module 'minigpt' has no attribute {name!r}")
