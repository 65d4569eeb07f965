"""The model stage: GPT-2 written out by hand. Read in this order:

    ops.py         every op of GPT-2 in NumPy, forward and backward, llm.c's names and arguments:
                   the specification the C and CUDA kernels follow
    ops_decode.py  the KV-cache decode ops in NumPy (one new token per row)
    ops_c.py       the same ops in C (csrc/gemm.c, csrc/kernels.c); ops_decode_c.py: csrc/decode.c
    ops_cuda.py    the same ops in CUDA (csrc/cuda/)
    backend.py     which of those runs, on how many threads
    gpt.py         GPT: one flat parameter buffer, named activations, forward / backward / AdamW
    gpt_cuda.py    CudaGPT: the same model resident in GPU memory (GPT(cfg, backend="cuda"))
    flops.py       FLOPs per token and the machine's peak, for MFU

GPTConfig and the tensor layout are one level down, in minigpt/config.py.
"""
from ..config import GPTConfig
from .gpt import GPT
from .gpt_cuda import CudaGPT

__all__ = ["GPT", "GPTConfig", "CudaGPT"]
