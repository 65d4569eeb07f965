"""The training loop's pieces: schedule, clipping, accumulation, dropout, checkpoints, NaN stop, prepare."""
import json
import math
import os

import numpy as np
import pytest

from minigpt.model import GPT, GPTConfig
from minigpt.pretrain import checkpoint
from minigpt.pretrain.dataloader import DataLoader
from minigpt.fileio import FileFormatError, write_shard
from minigpt.config import PARAM_NAMES
from minigpt.inference.sampling import SamplingSettings
from minigpt.pretrain.prepare import load_tokenizer, prepare, read_texts
from minigpt.pretrain.train import CLASSES, TrainSettings, clip_grad_norm, lr_at, sample_text, train_step
from minigpt.settings import build, read_config


def tiny(V=40, L=2, NH=2, C=16, maxT=16):
    return GPTConfig(block_size=maxT, vocab_size=V, n_layer=L, n_head=NH, n_embd=C)


# --------------------------------------------------------------------------------------------------
# schedule and clipping


def test_lr_schedule_values():
    lr, lo, warm, total = 1e-3, 1e-4, 10, 110
    assert lr_at(0, lr, lo, warm, total) == pytest.approx(lr * 1 / 11)   # nanoGPT: (it+1)/(warmup+1)
    assert lr_at(9, lr, lo, warm, total) == pytest.approx(lr * 10 / 11)
    assert lr_at(10, lr, lo, warm, total) == pytest.approx(lr)           # the peak right after warmup
    assert lr_at(60, lr, lo, warm, total) == pytest.approx((lr + lo) / 2)  # cosine: halfway is the middle
    assert lr_at(35, lr, lo, warm, total) == pytest.approx(lo + (lr - lo) * 0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_at(110, lr, lo, warm, total) == pytest.approx(lo)
    assert lr_at(500, lr, lo, warm, total) == pytest.approx(lo)          # the floor after the end
    assert lr_at(35, lr, lo, warm, total, "linear") == pytest.approx(lr - 0.25 * (lr - lo))
    assert lr_at(99, lr, lo, warm, total, "constant") == lr
    values = [lr_at(s, lr, lo, warm, total) for s in range(warm, total + 1)]
    assert all(a >= b for a, b in zip(values, values[1:]))               # decays monotonically
    with pytest.raises(ValueError, match="decay"):
        lr_at(50, lr, lo, warm, total, "step")


def test_clip_grad_norm():
    rng = np.random.default_rng(0)
    g = rng.standard_normal(1001).astype(np.float32)
    norm = float(np.linalg.norm(g.astype(np.float64)))
    c = g.copy()
    assert clip_grad_norm(c, 2 * norm) == pytest.approx(norm)
    np.testing.assert_array_equal(c, g)                                   # under the limit: untouched
    assert clip_grad_norm(c, 1.0) == pytest.approx(norm)
    assert np.linalg.norm(c.astype(np.float64)) == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(c, g / norm, rtol=1e-5)                    # same direction
    c = g.copy()
    clip_grad_norm(c, 0)                                                  # 0: off
    np.testing.assert_array_equal(c, g)


# --------------------------------------------------------------------------------------------------
# gradient accumulation and dropout


def test_accumulated_micro_batches_equal_one_big_batch(tmp_path):
    cfg, B, T, k = tiny(), 2, 8, 3
    path = str(tmp_path / "train_000000.bin")
    write_shard(path, np.random.default_rng(1).integers(0, cfg.vocab_size, 400))
    small = GPT(cfg, backend="numpy", dtype=np.float64, seed=0)
    big = GPT(cfg, backend="numpy", dtype=np.float64, seed=0)
    loss_small = train_step(small, DataLoader([path], B, T), grad_accum=k)
    loss_big = train_step(big, DataLoader([path], k * B, T), grad_accum=1)
    assert loss_small == pytest.approx(loss_big, rel=1e-12)
    np.testing.assert_allclose(small.grads_memory, big.grads_memory, rtol=1e-9, atol=1e-13)
    assert np.abs(big.grads_memory).max() > 0


def test_dropout_gradient_check_and_switches():
    cfg = tiny(V=11, C=8, maxT=8)
    model = GPT(cfg, backend="numpy", dtype=np.float64, seed=0, dropout=0.3)
    rng = np.random.default_rng(2)
    idx, targets = rng.integers(0, 11, (2, 5)), rng.integers(0, 11, (2, 5))
    state = model.dropout_rng.bit_generator.state

    def loss():  # the same masks every time: restore the RNG first
        model.dropout_rng.bit_generator.state = state
        return model.forward(idx, targets)
    loss()
    for name in ("encoded", "attproj", "fcproj"):
        kept = model.masks[name] != 0
        assert 0.4 < kept.mean() < 0.95, name
        np.testing.assert_allclose(model.masks[name][kept], 1 / 0.7)
    model.zero_grad()
    model.backward()
    eps = 1e-6
    for name in PARAM_NAMES:
        flat_p, flat_g = model.params[name].reshape(-1), model.grads[name].reshape(-1)
        rows = cfg.vocab_size * cfg.n_embd if name == "wte" else flat_p.size
        for i in rng.choice(rows, size=min(3, rows), replace=False):
            old = flat_p[i]
            flat_p[i] = old + eps
            up = loss()
            flat_p[i] = old - eps
            down = loss()
            flat_p[i] = old
            assert flat_g[i] == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-9), (name, i)
    # evaluation mode and p = 0 are exactly the model without dropout
    plain = GPT(cfg, backend="numpy", dtype=np.float64, seed=0)
    model.training = False
    assert model.forward(idx, targets) == plain.forward(idx, targets)
    model.training, model.dropout = True, 0.0
    assert model.forward(idx, targets) == plain.forward(idx, targets)
    with pytest.raises(ValueError, match="dropout"):
        GPT(cfg, backend="numpy", dropout=1.0)


# --------------------------------------------------------------------------------------------------
# checkpoints


def test_checkpoint_round_trip_and_corruption(tmp_path):
    model = GPT(tiny(), backend="numpy", seed=0)
    model.m_memory = np.random.default_rng(0).standard_normal(model.num_parameters).astype(np.float32)
    model.v_memory = np.abs(model.m_memory) * 0.5
    for step in (1, 2, 3):
        mpath, spath = checkpoint.save(str(tmp_path), step, model, {"loader": {"epoch": 0}}, keep=2)
    assert checkpoint.list_steps(str(tmp_path)) == [2, 3]           # keep the newest 2
    assert checkpoint.resolve(str(tmp_path)) == spath
    info, m, v = checkpoint.load_state(spath)
    assert info["step"] == 3 and info["loader"] == {"epoch": 0}
    np.testing.assert_array_equal(m, model.m_memory)
    np.testing.assert_array_equal(v, model.v_memory)
    np.testing.assert_array_equal(GPT.load(mpath, backend="numpy").params_memory, model.params_memory)

    def damaged(path, offset):
        data = bytearray(open(path, "rb").read())
        data[offset] ^= 0x40
        open(path, "wb").write(bytes(data))

    damaged(spath, os.path.getsize(spath) - 5)                        # a flipped bit in v
    with pytest.raises(FileFormatError, match="corrupted training state"):
        checkpoint.load_state(spath)
    _, spath2 = checkpoint.paths(str(tmp_path), 2)
    damaged(checkpoint.paths(str(tmp_path), 2)[0], 2000)              # a flipped bit in the model's weights
    with pytest.raises(FileFormatError, match="corrupted model checkpoint"):
        checkpoint.load_state(spath2)
    with open(spath2, "r+b") as f:                                    # cut short
        f.truncate(3000)
    with pytest.raises(FileFormatError, match="truncated"):
        checkpoint.load_state(spath2)


# --------------------------------------------------------------------------------------------------
# prepare and settings


def test_prepare_writes_shards_with_eot_between_documents(tmp_path):
    (tmp_path / "a.txt").write_text("hello world")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "second doc"}) + "\n\n" + json.dumps({"text": "x" * 50}) + "\n")
    docs = read_texts([str(tmp_path)])
    assert docs == ["hello world", "second doc", "x" * 50]
    meta = prepare(docs, str(tmp_path / "out"), vocab_size=256, val_fraction=0.2, shard_tokens=30, log=lambda *a: None)
    from minigpt.fileio import read_shard
    stream = np.concatenate([read_shard(str(tmp_path / "out" / n)) for n in meta["val"] + meta["train"]])
    assert meta["tokens"] == len(stream) == sum(len(d) for d in docs) + 3
    assert (stream == meta["eot"]).sum() == 3 and stream[0] == meta["eot"]
    assert len(meta["train"]) >= 2                                    # cut at 30 tokens per shard
    text = load_tokenizer(str(tmp_path / "out"), meta).decode(stream.tolist())
    assert sorted(text.split("<|endoftext|>")[1:]) == sorted(docs)  # every document, whole, once
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"body": "no text field"}\n' + json.dumps({"text": "kept"}) + "\n")
    said = []
    assert read_texts([str(bad)], log=said.append) == ["kept"]       # a broken record is counted, not fatal
    assert said == ["skipped unreadable records: {'bad_json': 1}"]


def test_config_file_formats(tmp_path):
    p = tmp_path / "c.py"
    p.write_text("# nanoGPT style\nn_layer = 4\nlr = 1e-3  # peak\ndecay = 'linear'\nmodel = small\n")
    assert read_config(str(p), *CLASSES) == {"n_layer": 4, "lr": 1e-3, "decay": "linear", "model": "small"}
    p.write_text(json.dumps({"steps": 5, "dropout": 0.1, "temperature": 0.5}))
    assert read_config(str(p), *CLASSES) == {"steps": 5, "dropout": 0.1, "temperature": 0.5}
    p.write_text("learning_rate = 3\n")
    with pytest.raises(ValueError, match="unknown settings"):
        read_config(str(p), *CLASSES)
    for text in ("5", "null", "[1, 2]"):                              # JSON that is not an object
        p.write_text(text)
        with pytest.raises(ValueError, match="must be an object"):
            read_config(str(p), *CLASSES)


@pytest.mark.parametrize("values, message", [
    ({"steps": 2e3}, "steps must be an int, found 2000.0"),
    ({"steps": "300"}, "steps must be an int, found '300'"),
    ({"batch_size": 0}, r"batch_size must be in \[1, any, found 0"),
    ({"lr": float("nan")}, "lr must be a finite number"),
    ({"dropout": 1.0}, r"dropout must be in \[0, 1\), found 1.0"),
    ({"dropout": -0.5}, r"dropout must be in \[0, 1\)"),
    ({"model": "huge"}, "model must be one of"),
    ({"keep": -5}, r"keep must be in \[1, any"),
])
def test_settings_are_checked_once_with_one_line(values, message):
    with pytest.raises(ValueError, match=message):
        build(TrainSettings, values)


def test_samples_come_from_the_kv_cache_engine():
    class Bytes:  # a byte-level tokenizer: what sample_text needs of one
        eot = 0

        def decode(self, ids):
            return bytes(ids).decode("utf-8", "replace")
    cfg = tiny()
    model = GPT(cfg, backend="numpy", seed=3)
    gen = SamplingSettings(max_new_tokens=10_000, temperature=0.8, top_k=5)
    text = sample_text(model, Bytes(), gen, seed=5, n=2)
    assert text.count("--- sample") == 2
    assert text == sample_text(model, Bytes(), gen, seed=5, n=2)    # reproducible at a step
    assert model.training                                              # restored afterwards
