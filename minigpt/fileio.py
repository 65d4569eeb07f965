"""llm.c's file formats: model checkpoints and token shards.

Every file starts with a header of 256 little-endian int32s: a magic number, a version, then sizes.
Readers check all of it (magic, version, sizes, the exact file length) and raise FileFormatError
naming the file, what was expected and what was found. Writers go through a temp file and a rename,
so a crash mid-write never leaves a half-written file under the real name.

    checkpoint   [0]=20240326 [1]=3 (fp32) [2]=maxT [3]=V [4]=L [5]=NH [6]=C [7]=Vp   then the 16 tensors, fp32
                 [1]=5 (bf16, as llm.c): same header, the 16 tensors as bf16 (half the bytes)
    token shard  [0]=20240520 [1]=1 [2]=number of tokens                          then uint16 tokens
"""
import os
import tempfile

import numpy as np

HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
CHECKPOINT_MAGIC, CHECKPOINT_VERSION_FP32 = 20240326, 3
CHECKPOINT_VERSION_BF16 = 5  # llm.c's number for bf16 parameters
SHARD_MAGIC, SHARD_VERSION = 20240520, 1


class FileFormatError(ValueError):
    """A file is not what its reader expects: wrong magic, version, sizes or length."""


def atomic_write(path, write):
    """Call write(f) on a temp file beside `path`, then rename it over `path` (atomic on POSIX)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
    from .model import GPTConfig, num_parameters  # the model defines the tensor shapes

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
