"""minigpt: a complete, inspectable large-language-model stack in Python, NumPy and C.

Read in pipeline order (the README's table lists every file), bottom to top; imports run only
downward (tests/test_layout.py checks it):

    fileio.py, config.py, settings.py, plot.py   file formats, the model's shape, settings, pictures
    tokenizer/    byte-level BPE, special tokens, the chat template
    data/         web pages -> clean documents -> token shards (FineWeb's pipeline)
    model/        the ops (NumPy, C, CUDA) and the GPT, forward and backward by hand
    inference/    KV cache, sampling, the generation engine, `minigpt sample`
    pretrain/     the built-in corpus, shards, the training loop, checkpoints
    posttrain/    conversations, SFT, tools, RL, RLHF
    eval/         losses, bits per byte, multiple choice, pass@k, model sizes
    chat/         the terminal chat and the OpenAI-compatible server
    cli.py        the `minigpt` command
"""
import os

# Idle OpenMP threads sleep instead of spinning. On a shared machine a spinning thread holds a core
# that the thread everyone waits for at the next barrier needs: on 2 busy cores a small model's step
# took 2.8 s with spinning and 0.26 s without, and decoding (~80 short parallel regions per token)
# 5-10x longer. libgomp reads this once, when it loads, so it is set here, before any C module is
# imported. On a dedicated machine `export OMP_WAIT_POLICY=ACTIVE` first.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.2.0"
