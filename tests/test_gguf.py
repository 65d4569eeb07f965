"""GGUF read and written: SmolLM2's file as DESIGN.md describes it, and the writer's files read back
identically here and in llama.cpp's own gguf package (the oracle)."""
import collections

import numpy as np
import pytest

from minigpt import quant
from minigpt.gguf import F32, I32, U32, GGUFError, read_gguf

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
