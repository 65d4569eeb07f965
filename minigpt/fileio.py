"""llm.c's file formats: model checkpoints and token shards.

Every file starts with a header of 256 little-endian int32s: a magic number, a version, then sizes.
Readers check all of it (magic, version, sizes, the exact file length) and raise FileFormatError
naming the file, what was expected and what was found. Writers go through a temp file and a rename,
so a crash mid-write never leaves a half-written file under the real name.

    checkpoint   [0]=20240326 [1]=3 (fp32) [2]=maxT [3]=V [4]=L [5]=NH [6]=C [7]=Vp   then the 16 tensors, fp32
                 [1]=5 (bf16, as llm.c): same header, the 16 tensors as bf16 (half the bytes)
    token shard  [0]=20240520 [1]=1 [2]=number of tokens                          then uint16 tokens
"""
import json
import os
import tempfile

import numpy as np

from .config import GPTConfig, num_parameters

HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
CHECKPOINT_MAGIC, CHECKPOINT_VERSION_FP32 = 20240326, 3
CHECKPOINT_VERSION_BF16 = 5  # llm.c's number for bf16 parameters
SHARD_MAGIC, SHARD_VERSION = 20240520, 1


class FileFormatError(ValueError):
    """A file is not what its reader expects: wrong magic, version, sizes or length."""


class AtomicWriter:
    """A temp file beside `path` (a unique name, so parallel writers never share one); commit()
    flushes it to disk (fsync) and renames it over `path`, atomic on POSIX: a reader, or a run
    killed mid-write, never sees half a file. abort() drops it. The one way minigpt writes files."""

    def __init__(self, path, mode="wb"):
        path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
        self.path = path
        self.f = os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"}))

    def write(self, data):
        return self.f.write(data)

    def commit(self):
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        os.replace(self.tmp, self.path)

    def abort(self):
        self.f.close()
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)


def atomic_write(path, write):
    """Call write(f) on an AtomicWriter's file, then commit it; on any error nothing is replaced."""
    w = AtomicWriter(path)
    try:
        write(w.f)
    except BaseException:
        w.abort()
        raise
    w.commit()


def write_json(path, obj):
    """obj as indented JSON, written atomically."""
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=1) + "\n").encode("utf-8")))


def make_header(*values):
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:len(values)] = values
    return header


def read_header(path, magic, versions, what):
    """Read and check the 256-int header; returns it as a NumPy array."""
    size = os.path.getsize(path)
    if size < HEADER_BYTES:
        raise FileFormatError(f"{path}: truncated {what}: expected a {HEADER_BYTES}-byte header, "
                              f"found a {size}-byte file")
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    if header[0] != magic:
        raise FileFormatError(f"{path}: not a {what}: expected magic number {magic}, found {header[0]}")
    if header[1] not in versions:
        raise FileFormatError(f"{path}: unsupported {what} version: expected one of {sorted(versions)}, "
                              f"found {header[1]}")
    return header


def check_length(path, expected, what):
    found = os.path.getsize(path)
    if found != expected:
        kind = "truncated" if found < expected else "oversized"
        raise FileFormatError(f"{path}: {kind} {what}: expected {expected} bytes from its header, "
                              f"found {found}")


# --------------------------------------------------------------------------------------------------
# token shards


def write_shard(path, tokens):
    """Write token ids (each in [0, 65535]) as an llm.c uint16 shard."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 1:
        raise ValueError(f"write_shard: expected a 1-D array of token ids, found shape {tokens.shape}")
    if tokens.size and (tokens.min() < 0 or tokens.max() > 65535):
        raise ValueError(f"write_shard: token ids must fit uint16 [0, 65535], found range "
                         f"[{tokens.min()}, {tokens.max()}]")
    header = make_header(SHARD_MAGIC, SHARD_VERSION, tokens.size)

    def write(f):
        f.write(header.tobytes())
        f.write(tokens.astype("<u2").tobytes())
    atomic_write(path, write)


def read_shard(path, mmap=False):
    """Read an llm.c token shard; returns uint16 tokens (memory-mapped, read-only, if mmap=True)."""
    header = read_header(path, SHARD_MAGIC, {SHARD_VERSION}, "token shard")
    ntok = int(header[2])
    if ntok < 0:
        raise FileFormatError(f"{path}: bad token shard header: token count {ntok} is negative")
    check_length(path, HEADER_BYTES + 2 * ntok, "token shard")
    if mmap:
        return np.memmap(path, dtype="<u2", mode="r", offset=HEADER_BYTES, shape=(ntok,))
    return np.fromfile(path, dtype="<u2", count=ntok, offset=HEADER_BYTES)


# --------------------------------------------------------------------------------------------------
# model checkpoints


def write_checkpoint(path, config, params_memory):
    """Write a model as llm.c's fp32 checkpoint: header, then the flat parameter buffer."""
    c = config
    header = make_header(CHECKPOINT_MAGIC, CHECKPOINT_VERSION_FP32, c.block_size, c.vocab_size,
                         c.n_layer, c.n_head, c.n_embd, c.padded_vocab_size)

    def write(f):
        f.write(header.tobytes())
        f.write(np.ascontiguousarray(params_memory, dtype="<f4").tobytes())
    atomic_write(path, write)


def read_checkpoint(path):
    """Read an llm.c checkpoint (fp32 v3 or bf16 v5); returns (GPTConfig, flat float32 parameters)."""
    config, params = read_checkpoint_raw(path)
    return config, (bf16_to_f32(params) if params.dtype == np.uint16 else params)


# --------------------------------------------------------------------------------------------------
# 16-bit checkpoints (version 5): every tensor as bf16, the top 16 bits of its fp32. A 7B model
# needs 14 GB, not 28. bf16 keeps fp32's exponent range, so nothing overflows; it keeps 8 bits of
# mantissa (7 stored), a relative rounding error of at most 2^-8.


def f32_to_bf16(x):
    """Round float32 values to bf16 (nearest, ties to even), returned as their uint16 bit patterns."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    return np.where(nan, ((u >> 16) | 0x40).astype(np.uint16), rounded)


def bf16_to_f32(h):
    """bf16 bit patterns (uint16) -> float32: the 16 bits become the top half of the fp32."""
    return (np.asarray(h, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def write_checkpoint_bf16(path, config, params_memory):
    """Write a model as an llm.c version-5 checkpoint: the fp32 header, then every tensor in bf16."""
    c = config
    header = make_header(CHECKPOINT_MAGIC, CHECKPOINT_VERSION_BF16, c.block_size, c.vocab_size,
                         c.n_layer, c.n_head, c.n_embd, c.padded_vocab_size)
    half = f32_to_bf16(params_memory)

    def write(f):
        f.write(header.tobytes())
        f.write(half.astype("<u2").tobytes())
    atomic_write(path, write)


def read_checkpoint_raw(path):
    """Read an llm.c checkpoint as stored: (GPTConfig, flat float32 (v3) or uint16 bf16 (v5) parameters)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"model checkpoint not found: {path}")
    header = read_header(path, CHECKPOINT_MAGIC, {CHECKPOINT_VERSION_FP32, CHECKPOINT_VERSION_BF16},
                         "model checkpoint")
    maxT, V, L, NH, C, Vp = (int(x) for x in header[2:8])
    if min(maxT, V, L, NH, C) <= 0 or Vp < V or C % NH != 0:
        raise FileFormatError(f"{path}: bad model checkpoint header: maxT={maxT} V={V} L={L} NH={NH} "
                              f"C={C} Vp={Vp} (expected positive sizes, Vp >= V, C divisible by NH)")
    config = GPTConfig(block_size=maxT, vocab_size=V, n_layer=L, n_head=NH, n_embd=C)
    if config.padded_vocab_size != Vp:
        # llm.c always pads to a multiple of 128; accept its choice as written
        config.padded_vocab_size = Vp
    n = num_parameters(config)
    dtype = "<f4" if header[1] == CHECKPOINT_VERSION_FP32 else "<u2"
    check_length(path, HEADER_BYTES + np.dtype(dtype).itemsize * n, "model checkpoint")
    params = np.fromfile(path, dtype=dtype, count=n, offset=HEADER_BYTES)
    return config, params.astype(np.float32 if dtype == "<f4" else np.uint16, copy=False)


# --------------------------------------------------------------------------------------------------
# run directories: what `minigpt train` (and sft, rl, ...) leave, and what the other commands accept

CHECKPOINT_NAME = "ckpt_{step:06d}"       # + .bin (the model) and .state (the rest: pretrain/checkpoint.py)
TOKENIZER_FILE = "tokenizer.model"        # the run's tokenizer, copied in when the run starts


def checkpoint_steps(run_dir):
    """Steps that have a model file in run_dir, oldest first."""
    steps = []
    for name in os.listdir(run_dir):
        if name.startswith("ckpt_") and name.endswith(".bin") and name[5:-4].isdigit():
            steps.append(int(name[5:-4]))
    return sorted(steps)


def resolve_model(path):
    """A run directory (its newest checkpoint) or a checkpoint file -> (model path, the run's
    tokenizer path or None). The tokenizer is the run directory's tokenizer.model."""
    path = os.fspath(path)
    if os.path.isdir(path):
        steps = checkpoint_steps(path)
        if not steps:
            raise FileNotFoundError(f"{path}: no checkpoints (ckpt_*.bin) in this directory")
        model = os.path.join(path, CHECKPOINT_NAME.format(step=steps[-1]) + ".bin")
    elif os.path.isfile(path):
        model = path
    else:
        raise FileNotFoundError(f"{path}: no such run directory or checkpoint file")
    tok = os.path.join(os.path.dirname(os.path.abspath(model)), TOKENIZER_FILE)
    return model, (tok if os.path.isfile(tok) else None)
