"""minigpt: a complete, inspectable large-language-model stack in Python, NumPy and C.

Read in pipeline order: data/ -> tokenizer/ -> ops.py, model.py -> train.py -> sample.py -> chat/ ...
"""
__version__ = "0.1.0"
__all__ = ["GPT", "GPTConfig"]


def __getattr__(name):
    # `from minigpt import GPT` loads the model lazily, so `import minigpt.tokenizer` stays light
    if name in __all__:
        from . import model
        return getattr(model, name)
    raise AttributeError(f"module 'minigpt' has no attribute {name!r}")
