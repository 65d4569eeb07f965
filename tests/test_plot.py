"""The pictures: attention maps (and the loss curve, in test_train.py) are real PNGs of the right data."""
import numpy as np
import pytest

from minigpt.model import GPT, GPTConfig
from minigpt.cli import main

pytest.importorskip("matplotlib")

from minigpt.plot import plot_attention  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def test_attention_map_draws_the_models_own_weights(tmp_path):
    cfg = GPTConfig(block_size=16, vocab_size=50, n_layer=2, n_head=3, n_embd=12)
    model = GPT(cfg, backend="numpy", seed=0)
    ids = [3, 1, 4, 1, 5, 9, 2, 6]
    path, att = plot_attention(model, ids, str(tmp_path / "att.png"), labels=[str(i) for i in ids], layer=-1)
    assert open(path, "rb").read(8) == PNG
    assert att.shape == (3, 8, 8)                                   # (NH, T, T) of the last layer
    np.testing.assert_allclose(att.sum(-1), 1.0, rtol=1e-5)         # each position's weights sum to 1
    assert np.all(att[:, np.triu_indices(8, 1)[0], np.triu_indices(8, 1)[1]] == 0)  # no future
    model.forward(np.array([ids]))
    np.testing.assert_array_equal(att, model.acts["att"][1, 0])


def test_sample_cli_writes_an_attention_map(tmp_path, capsys):
    cfg = GPTConfig(block_size=32, vocab_size=60, n_layer=1, n_head=2, n_embd=8)
    GPT(cfg, backend="numpy", seed=1).save(tmp_path / "model.bin")
    png = tmp_path / "att.png"
    assert main(["sample", str(tmp_path / "model.bin"), "--prompt-ids", "1 2 3",
                 "--max-new-tokens", "5", "--temperature", "0", "--attention", str(png)]) == 0
    assert png.read_bytes()[:8] == PNG
    assert "attention map" in capsys.readouterr().err
