"""GGUF from strangers: crafted files with one defect each, and a fuzz of a valid one. Each is one
GGUFError line naming the file and the defect, never another exception, a hang or a big allocation
(DESIGN.md, "GGUF from strangers": each check answers a CVE of llama.cpp's reader)."""
import struct
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minigpt import quant
from minigpt.gguf import GGUFError, read_gguf, write_gguf


def s(text):
    b = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(b)) + b


def kv_u32(key, v):
    return s(key) + struct.pack("<II", 4, v)


def info(name, ne, t=0, offset=0):
    return s(name) + struct.pack(f"<I{len(ne)}QIQ", len(ne), *ne, t, offset)


def craft(kvs=(kv_u32("general.x", 1),), infos=(info("w", [8]),), data=b"\0" * 32, version=3,
          magic=b"GGUF", n_kv=None, n_tensors=None, align=32):
    """A GGUF built by hand, so that any one field can be wrong."""
    head = magic + struct.pack("<IQQ", version, len(infos) if n_tensors is None else n_tensors,
                               len(kvs) if n_kv is None else n_kv)
    head += b"".join(kvs) + b"".join(infos)
    return head + b"\0" * (-len(head) % align) + data


def read(folder, blob):
    p = folder / "bad.gguf"
    (folder / "next").write_bytes(blob)
    (folder / "next").replace(p)  # a new file: a mapping of the last one stays valid
    return read_gguf(p)


def refused(tmp_path, blob, match):
    with pytest.raises(GGUFError, match=match) as e:
        read(tmp_path, blob)
    msg = str(e.value)
    assert msg.startswith(str(tmp_path / "bad.gguf") + ": ") and "\n" not in msg
    return msg


def test_the_crafted_base_file_is_valid(tmp_path):
    g = read(tmp_path, craft())
    assert g.metadata == {"general.x": 1} and g.tensor("w").tolist() == [0.0] * 8


GOOD = craft()
HEAD = 24  # magic, version, counts
KV_END = HEAD + len(kv_u32("general.x", 1))
INFO_END = KV_END + len(info("w", [8]))

DEFECTS = [
    ("bad magic", craft(magic=b"GGML"), "not a GGUF file: magic b'GGML'"),
    ("version 1", craft(version=1), "GGUF version 1 is not supported"),
    ("version 99", craft(version=99), "GGUF version 99 is not supported"),
    ("big-endian", craft(version=3 << 24), "big-endian"),
    ("truncated header", GOOD[:HEAD - 3], "truncated header"),
    ("truncated metadata", GOOD[:KV_END - 2], "truncated metadata 'general.x'"),
    ("truncated key", GOOD[:HEAD + 14], "truncated metadata key 0"),
    ("truncated tensor infos", GOOD[:INFO_END - 4], "truncated tensor 'w' offset"),
    ("truncated data", GOOD[:-1], "runs past the end"),
    ("n_kv 2^62", craft(n_kv=2**62), "metadata count 4611686018427387904 cannot fit"),
    ("n_tensors 2^62", craft(n_tensors=2**62), "tensor count 4611686018427387904 cannot fit"),
    ("string length 2^63", craft(kvs=[struct.pack("<Q", 2**63) + b"k"]), "string length 9223372036854775808 is over the 1 GiB"),
    ("string longer than the file", craft(kvs=[struct.pack("<Q", 1000) + b"k"]), "truncated metadata key 0"),
    ("array of 2^62 u64", craft(kvs=[s("a") + struct.pack("<IIQ", 9, 10, 2**62)]), "over the 1 GiB limit"),
    ("array longer than the file", craft(kvs=[s("a") + struct.pack("<IIQ", 9, 4, 1000)]), r"truncated metadata 'a' \(1000 x u32\)"),
    ("string array longer than the file", craft(kvs=[s("a") + struct.pack("<IIQ", 9, 8, 10**6)]), "truncated"),
    ("array of arrays", craft(kvs=[s("a") + struct.pack("<IIQ", 9, 9, 1)]), "an array of arrays"),
    ("unknown value type", craft(kvs=[s("a") + struct.pack("<I", 13)]), "unknown value type 13"),
    ("unknown array element type", craft(kvs=[s("a") + struct.pack("<IIQ", 9, 99, 0)]), "unknown array element type 99"),
    ("bool 2", craft(kvs=[s("a") + struct.pack("<IB", 7, 2)]), "bool byte 2 is neither 0 nor 1"),
    ("empty key", craft(kvs=[kv_u32("", 1)]), "metadata key 0 is empty"),
    ("key not UTF-8", craft(kvs=[kv_u32(b"\xff\xfe", 1)]), "is not UTF-8"),
    ("duplicate key", craft(kvs=[kv_u32("k", 1), kv_u32("k", 2)]), "duplicate metadata key 'k'"),
    ("alignment 48", craft(kvs=[kv_u32("general.alignment", 48)]), "general.alignment 48 .u32. is not a u32 power of two"),
    ("alignment 0", craft(kvs=[kv_u32("general.alignment", 0)]), "is not a u32 power of two"),
    ("alignment as i32", craft(kvs=[s("general.alignment") + struct.pack("<Ii", 5, 32)]), r"\(i32\) is not a u32"),
    ("9 dims", craft(infos=[info("w", [1] * 9)]), "tensor 'w' has 9 dims"),
    ("0 dims", craft(infos=[info("w", [])]), "tensor 'w' has 0 dims"),
    ("a dim of 0", craft(infos=[info("w", [8, 0])]), r"tensor 'w' has a dim of 0: \[8, 0\]"),
    ("dims whose product overflows", craft(infos=[info("w", [2**32, 2**32, 2**32, 2**32])]), "hold more weights than the file"),
    ("type 1000", craft(infos=[info("w", [8], t=1000)]), "tensor 'w' has unknown type 1000"),
    ("partial block", craft(infos=[info("w", [48], t=quant.Q8_0)]), "Q8_0 rows of 48 are not whole blocks of 32"),
    ("offset past the end", craft(infos=[info("w", [8], offset=2**40)]), "runs past the end of the file"),
    ("offset near 2^64", craft(infos=[info("w", [8], offset=2**64 - 32)]), "runs past the end of the file"),
    ("misaligned offset", craft(infos=[info("w", [8], offset=4)], data=b"\0" * 64), "offset 4 is not a multiple of the alignment 32"),
    ("duplicate tensor", craft(infos=[info("w", [8]), info("w", [8], offset=32)], data=b"\0" * 64), "duplicate tensor 'w'"),
    ("overlapping tensors", craft(infos=[info("a", [16]), info("b", [8], offset=32)], data=b"\0" * 96), "tensors 'a' and 'b' overlap"),
    ("name of 64 bytes", craft(infos=[info("w" * 64, [8])]), "a tensor name must be 1 to 63 bytes"),
    ("data start past the end", craft(data=b"")[:INFO_END], "tensor data would start at"),
]


@pytest.mark.parametrize("what,blob,match", DEFECTS, ids=[d[0] for d in DEFECTS])
def test_each_defect_is_one_clear_error(tmp_path, what, blob, match):
    refused(tmp_path, blob, match)


def test_a_hostile_name_stays_on_one_line(tmp_path):
    msg = refused(tmp_path, craft(infos=[info("a\nb" * 20, [8], t=1000)]), "unknown type 1000")
    assert "'a\\nba\\nb" in msg and "..." in msg


def test_unsupported_type_is_named_when_dequantized(tmp_path):
    g = read(tmp_path, craft(infos=[info("w", [256], t=14)], data=b"\0" * 224))  # Q6_K: 210 bytes
    assert g.tensors["w"].nbytes == 210
    with pytest.raises(GGUFError, match="tensor 'w' is Q6_K, which minigpt cannot dequantize"):
        g.tensor("w")


# ---- the fuzz: a small valid file, truncated or with bits flipped

def small_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("fuzz") / "small.gguf"
    x = np.random.default_rng(1).standard_normal((2, 32)).astype(np.float32)
    write_gguf(p, {"general.architecture": "llama", "n": 3, "toks": ["a", "bc", "<s>"],
                   "scores": np.arange(3, dtype=np.float32), "flag": True},
               {"a": (quant.Q4_1, x), "b": (quant.Q8_0, x), "c": x[0]})
    return p.read_bytes()


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    return small_file(tmp_path_factory)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzzed")


def survives(folder, blob):
    """Reading either works (and every tensor then reads) or ends in GGUFError; nothing else."""
    tracemalloc.start()
    try:
        g = read(folder, blob)
        for name in g.tensors:
            g.tensor(name)
    except GGUFError as e:
        assert "\n" not in str(e)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 1 << 20  # never more than the file could hold (it is ~1 KB)


@settings(max_examples=150)
@given(st.data())
def test_fuzz_truncations(folder, valid, data):
    survives(folder, valid[:data.draw(st.integers(0, len(valid) - 1))])


@settings(max_examples=300)
@given(st.data())
def test_fuzz_bit_flips(folder, valid, data):
    blob = bytearray(valid)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i] ^= 1 << data.draw(st.integers(0, 7))
    survives(folder, bytes(blob))


@settings(max_examples=150)
@given(st.data())
def test_fuzz_hostile_words(folder, valid, data):
    # a count, length or offset replaced by a hostile 8-byte value anywhere in the header
    blob = bytearray(valid)
    i = data.draw(st.integers(0, 400))
    v = data.draw(st.sampled_from([2**62, 2**63, 2**64 - 1, 2**32, 2**31, 0, 1, 63, 65]))
    blob[i:i + 8] = struct.pack("<Q", v)
    survives(folder, bytes(blob[:len(valid)]))


def test_cli_names_the_defect_exit_2(tmp_path, capsys):
    from minigpt.cli import main
    for what, blob, match in DEFECTS[::5]:
        p = tmp_path / "bad.gguf"
        p.write_bytes(blob)
        assert main(["gguf", str(p)]) == 2, what
        err = capsys.readouterr().err
        assert err.startswith(f"minigpt gguf: {p}: ") and err.count("\n") == 1, what


def test_version_2_reads_as_3(tmp_path):
    assert read(tmp_path, craft(version=2)).version == 2  # the same layout: v3 only allowed big-endian


def test_no_tensors_and_no_metadata(tmp_path):
    g = read(tmp_path, craft(kvs=[], infos=[], data=b""))
    assert g.metadata == {} and g.tensors == {}
