"""`minigpt size`: parameter counts against known figures and against the model minigpt builds;
memory, KV cache and FLOPs from their definitions; the command line."""
import json
import math

import numpy as np
import pytest

from minigpt.model import GPT, GPTConfig
from minigpt.cli import main
from minigpt.eval.size import (PRESETS, LlamaConfig, count, llama_hidden, parse_amount, shape_for_params,
                               size_report, tensor_shapes)
from minigpt.config import PRESETS as TRAIN_PRESETS
from minigpt.config import act_shapes, num_parameters
from minigpt.inference.kvcache import KVCache
from minigpt.model.flops import flops_per_token


@pytest.mark.parametrize("name, params", [
    ("gpt2-124M", 124_475_904), ("llama2-7B", 6_738_415_616), ("llama2-13B", 13_015_864_320),
    ("llama2-70B", 68_976_648_192)])
def test_known_parameter_counts(name, params):
    assert size_report(PRESETS[name], B=1, T=1)["params"] == params


def test_gpt2_124M_without_the_padded_vocabulary():
    r = size_report(PRESETS["gpt2-124M"], B=1, T=1)
    assert r["params_unpadded_vocab"] == 124_439_808
    assert r["params"] - r["params_unpadded_vocab"] == (50304 - 50257) * 768  # the padded rows of wte


@pytest.mark.parametrize("name", list(TRAIN_PRESETS) + [n for n in PRESETS if n.startswith("gpt2")])
@pytest.mark.parametrize("vocab", [256, 50257])
def test_equals_the_models_own_count(name, vocab):
    sizes = TRAIN_PRESETS.get(name) or {k: getattr(PRESETS[name], k) for k in ("n_layer", "n_head", "n_embd", "block_size")}
    cfg = GPTConfig(vocab_size=vocab, **sizes)
    model = GPT(cfg, backend="numpy", seed=None)  # no init: the zeroed buffers are never touched
    assert size_report(cfg, B=1, T=1)["params"] == model.num_parameters == num_parameters(cfg)


def test_llama_hidden_rule():
    assert (llama_hidden(4096), llama_hidden(5120)) == (11008, 13824)


def test_llama_tensors_written_plainly():
    """7B by hand: embedding + head (untied), per layer 4 attention and 3 MLP matrices and 2 RMSNorm gains."""
    C, L, H, V = 4096, 32, 11008, 32000
    assert count(tensor_shapes(PRESETS["llama2-7B"])) == 2 * V * C + L * (4 * C * C + 3 * C * H + 2 * C) + C
    # GQA: 70B's keys and values have 8 heads of 128, not 64
    assert tensor_shapes(PRESETS["llama2-70B"])["wk"] == (80, 8 * 128, 8192)


def test_memory_and_kv_cache():
    cfg = PRESETS["gpt2-124M"]
    r = size_report(cfg, B=2, T=64)
    N = r["params"]
    assert r["weights_bytes"] == {"fp32": 4 * N, "bf16": 2 * N, "int8": N}
    # a key and a value of C numbers per layer per token; at full context 1024 tokens
    assert r["kv_cache_bytes_per_token"]["fp32"] == 4 * 2 * 12 * 768
    assert r["kv_cache_bytes_full_context"]["bf16"] == 2 * 2 * 12 * 768 * 1024
    acts = sum(math.prod(s) for s in act_shapes(cfg, 2, 64).values())
    t = r["train_bytes"]
    assert t["activations"] == 4 * acts and t["total"] == 16 * N + 8 * acts
    # llama 70B's cache is GQA-sized: 8 of 64 heads
    assert size_report(PRESETS["llama2-70B"], 1, 1)["kv_cache_bytes_per_token"]["bf16"] == 2 * 2 * 80 * 8 * 128


def test_memory_is_what_minigpt_allocates():
    """One training step of a small model allocates exactly the bytes the report names; the KV
    cache for one full-length sequence is the size kvcache.KVCache allocates."""
    cfg = GPTConfig(block_size=16, vocab_size=100, n_layer=2, n_head=2, n_embd=8)
    model = GPT(cfg, backend="numpy")
    x = np.zeros((3, 10), dtype=np.int64)
    model.forward(x, x)
    model.backward()
    model.update(1e-3)
    acts = sum(a.nbytes for a in model.acts.values())
    grad_acts = sum(a.nbytes for a in model.grad_acts.values())
    t = size_report(cfg, B=3, T=10)["train_bytes"]
    assert (t["weights"], t["gradients"]) == (model.params_memory.nbytes, model.grads_memory.nbytes)
    assert t["adamw_m_v"] == model.m_memory.nbytes + model.v_memory.nbytes
    assert (t["activations"], t["activation_grads"]) == (acts, grad_acts)
    cache = KVCache(cfg, 1, cfg.block_size)
    assert size_report(cfg)["kv_cache_bytes_full_context"]["fp32"] == cache.k.nbytes + cache.v.nbytes


def test_flops_and_time():
    cfg = PRESETS["gpt2-124M"]
    r = size_report(cfg, B=1, T=1024, tokens=1e9, flops=1e12, mfu=0.5)
    assert r["flops_per_token"]["train"] == flops_per_token(cfg, 1024)
    assert r["train_time"]["seconds"] == pytest.approx(flops_per_token(cfg, 1024) * 1e9 / 5e11)
    # 6N dominates at short context; attention adds 6 L T C
    llama = PRESETS["llama2-7B"]
    f = size_report(llama, 1, 4096)["flops_per_token"]
    matmul_params = 6_738_415_616 - 32000 * 4096 - 32 * 2 * 4096 - 4096  # not the lookup, not the gains
    assert f["train"] == 6 * matmul_params + 6 * 32 * 4096 * 4096


def test_params_picks_a_plausible_shape():
    assert shape_for_params(7e9, "llama") == PRESETS["llama2-7B"]
    assert (shape_for_params(124e6).n_layer, shape_for_params(124e6).n_embd) == (12, 768)
    for N in (50e6, 3e9, 70e9):  # (below ~10M the GPT-2 vocabulary alone is more)
        for arch in ("gpt2", "llama"):
            got = count(tensor_shapes(shape_for_params(N, arch)))
            assert abs(got - N) / N < 0.2


def test_parse_amount():
    assert parse_amount("7B") == 7e9 and parse_amount("124M") == 124e6 and parse_amount("989e12") == 989e12
    with pytest.raises(ValueError, match="expected a number"):
        parse_amount("seven")


def test_cli_json_and_table(capsys, tmp_path):
    assert main(["size", "llama2-7B", "--json", "--batch-size", "1", "--seq-len", "16"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["params"] == 6_738_415_616 and r["tensors"]["output"]["params"] == 32000 * 4096
    assert main(["size", "--params", "7B", "--arch", "llama", "--seq-len", "8"]) == 0
    assert "6,738,415,616" in capsys.readouterr().out
    assert main(["size", "tiny", "--vocab-size", "256", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["params"] == num_parameters(GPTConfig(vocab_size=256, **TRAIN_PRESETS["tiny"]))
    cfg = GPTConfig(block_size=16, vocab_size=60, n_layer=1, n_head=2, n_embd=8)
    GPT(cfg, backend="numpy").save(tmp_path / "m.bin")
    assert main(["size", "--checkpoint", str(tmp_path / "m.bin"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == num_parameters(cfg)
    (tmp_path / "c.cfg").write_text("model = 'small'\nvocab_size = 1024\n")
    assert main(["size", "--config", str(tmp_path / "c.cfg"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == num_parameters(GPTConfig(vocab_size=1024, **TRAIN_PRESETS["small"]))


@pytest.mark.parametrize("argv, message", [
    (["size", "gpt5"], "unknown preset 'gpt5'"),
    (["size", "--params", "lots"], "expected a number"),
    (["size", "--seq-len", "5000"], "T=5000 must be in [1, block_size=1024]"),
    (["size", "llama2-7B", "--n-kv-head", "5"], "n_head by n_kv_head"),
    (["size", "--checkpoint", "/no/model.bin"], "not found: /no/model.bin"),
    (["size", "gpt2-124M", "--ffn-hidden", "100"], "shape Llama models"),
])
def test_bad_input(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
