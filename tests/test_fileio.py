"""llm.c file formats: bit-exact round trips, and a clear error for every kind of damage."""
import os

import numpy as np
import pytest

from minigpt.model import GPT, GPTConfig
from minigpt.fileio import (HEADER_BYTES, FileFormatError, atomic_write, read_checkpoint, read_shard,
                            write_shard)


def small_model():
    cfg = GPTConfig(block_size=8, vocab_size=130, n_layer=1, n_head=2, n_embd=8)
    return GPT(cfg, backend="numpy", seed=3)


def test_checkpoint_roundtrip_bit_exact(tmp_path):
    model = small_model()
    path = tmp_path / "model.bin"
    model.save(path)
    header = np.fromfile(path, dtype="<i4", count=8)
    assert list(header) == [20240326, 3, 8, 130, 1, 2, 8, 256]
    back = GPT.load(path, backend="numpy")
    assert back.config == model.config
    assert back.params_memory.tobytes() == model.params_memory.tobytes()
    assert os.path.getsize(path) == HEADER_BYTES + 4 * model.num_parameters
    assert os.listdir(tmp_path) == ["model.bin"]  # no temp file left behind


def test_shard_roundtrip_bit_exact(tmp_path):
    tokens = np.random.default_rng(0).integers(0, 65536, size=1001)
    path = tmp_path / "x.bin"
    write_shard(path, tokens)
    assert list(np.fromfile(path, dtype="<i4", count=3)) == [20240520, 1, 1001]
    np.testing.assert_array_equal(read_shard(path), tokens)
    np.testing.assert_array_equal(read_shard(path, mmap=True), tokens)
    write_shard(path, [])
    assert read_shard(path).size == 0


def test_shard_rejects_ids_that_do_not_fit(tmp_path):
    with pytest.raises(ValueError, match="uint16"):
        write_shard(tmp_path / "x.bin", [0, 65536])
    with pytest.raises(ValueError, match="uint16"):
        write_shard(tmp_path / "x.bin", [-1])


def damage(path, offset=None, value=None, truncate=None, append=None):
    data = bytearray(open(path, "rb").read())
    if offset is not None:
        data[offset:offset + 4] = np.int32(value).tobytes()
    if truncate is not None:
        data = data[:truncate]
    if append is not None:
        data += append
    open(path, "wb").write(bytes(data))


@pytest.mark.parametrize("how, message", [
    (dict(offset=0, value=1234), "expected magic number 20240326, found 1234"),
    (dict(offset=4, value=4), r"version: expected one of \[3, 5\], found 4"),  # 5 is bf16 (minigpt.kvcache)
    (dict(truncate=100), "expected a 1024-byte header, found a 100-byte file"),
    (dict(truncate=HEADER_BYTES + 40), "truncated model checkpoint"),
    (dict(append=b"xx"), "oversized model checkpoint"),
    (dict(offset=24, value=7), "C divisible by NH"),
    (dict(offset=16, value=0), "positive sizes"),
])
def test_checkpoint_damage_is_named(tmp_path, how, message):
    path = tmp_path / "model.bin"
    small_model().save(path)
    damage(path, **how)
    with pytest.raises(FileFormatError, match=message) as e:
        read_checkpoint(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("how, message", [
    (dict(offset=0, value=20240326), "expected magic number 20240520, found 20240326"),
    (dict(offset=4, value=2), "version"),
    (dict(truncate=HEADER_BYTES + 9), "truncated token shard: expected 1224 bytes from its header, found 1033"),
    (dict(offset=8, value=-5), "negative"),
])
def test_shard_damage_is_named(tmp_path, how, message):
    path = tmp_path / "x.bin"
    write_shard(path, np.arange(100))
    damage(path, **how)
    with pytest.raises(FileFormatError, match=message):
        read_shard(path)


def test_crash_mid_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "model.bin"
    open(path, "wb").write(b"the good old checkpoint")

    def crash(f):
        f.write(b"half a new")
        raise KeyboardInterrupt  # the process dies mid-write
    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, crash)
    assert open(path, "rb").read() == b"the good old checkpoint"
    assert os.listdir(tmp_path) == ["model.bin"]
