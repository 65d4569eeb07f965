"""The inference stage: a trained model writes text. Read in this order:

    kvcache.py    the KV cache, the weights as decoding reads them (fp32 or bf16), prefill and one
                  decode step (forward_cached); the kernels are minigpt/model/ops_decode*.py
    sampling.py   temperature, top-k, top-p: logits -> one token; SamplingSettings
    generate.py   the generation loop: prefill once, then a token per stream per step
    sample.py     `minigpt sample`
    engine.py     continuous batching: requests join and leave one KV cache between steps (serve)
    calculator.py the calculator tool: exact arithmetic by walking Python's ast, bounded
    search.py     the search tool: BM25 over a local collection, snippets within a token budget
    tools.py      tool calls in generation: a call's closing token runs the tool, its output is forced
"""
from .generate import generate, stream_tokens

__all__ = ["generate", "stream_tokens"]
