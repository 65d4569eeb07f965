"""#12 for `minigpt train` and `minigpt prepare`: --resume with another --out branches and leaves the
source alone; resuming an older checkpoint sets the abandoned timeline aside; --keep bounds; stale
temp files; a finished run keeps its last log line; a damaged newest checkpoint names the older
valid one; a failed prepare leaves the old folder whole; meta.json is checked."""
import json
import os

import pytest

from minigpt.cli import main
from minigpt.pretrain import checkpoint
from minigpt.pretrain import prepare as prepare_mod
from minigpt.pretrain.prepare import prepare

TINY = ["--n-layer", "1", "--n-head", "1", "--n-embd", "16", "--block-size", "16", "--batch-size", "2",
        "--eval-batches", "1", "--max-new-tokens", "2", "--no-plot", "--seed", "3", "--threads", "1",
        "--backend", "numpy"]
DOCS = [f"Document {i}: the quick brown fox jumps over the lazy dog, again and again. " * 8 for i in range(30)]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("data") / "prepared")
    prepare(DOCS, out, vocab_size=256, log=lambda *a: None)
    return out


def train(data, out, *args):
    return main(["train", *TINY, "--data", data, "--out", out, *args])


def read(path):
    with open(path, "rb") as f:
        return f.read()


def log_lines(run):
    """The log's records without the timings (dt, tok/s, MFU differ from run to run)."""
    with open(os.path.join(run, "log.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if k not in ("dt", "tok_s", "mfu")} for line in f]


def test_resume_into_another_out_branches(tmp_path, data, capsys):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert train(data, a, "--steps", "4", "--checkpoint-every", "2", "--eval-every", "2", "--keep", "5") == 0
    before = {n: read(os.path.join(a, n)) for n in os.listdir(a)}
    assert main(["train", "--resume", checkpoint.paths(a, 2)[1], "--out", b]) == 0
    assert {n: read(os.path.join(a, n)) for n in os.listdir(a)} == before   # A untouched
    assert checkpoint.list_steps(b) == [2, 4]
    assert read(checkpoint.paths(b, 4)[0]) == before["ckpt_000004.bin"]  # the same timeline, bit for bit
    assert log_lines(b) == log_lines(a)
    assert os.path.exists(os.path.join(b, "tokenizer.model"))
    # a --out that already has checkpoints is refused, not overwritten
    capsys.readouterr()
    assert main(["train", "--resume", checkpoint.paths(a, 2)[1], "--out", b]) == 2
    err = capsys.readouterr().err
    assert "already holds checkpoints" in err and err.count("\n") == 1


def test_resume_from_an_older_checkpoint_sets_the_later_ones_aside(tmp_path, data, capsys):
    a = str(tmp_path / "a")
    assert train(data, a, "--steps", "6", "--checkpoint-every", "2", "--eval-every", "2", "--keep", "5") == 0
    old6 = read(checkpoint.paths(a, 6)[0])
    # a new timeline from step 2 with another learning rate, keeping only its newest checkpoint
    assert main(["train", "--resume", checkpoint.paths(a, 2)[1], "--lr", "3e-3", "--steps", "4", "--keep", "1"]) == 0
    out = capsys.readouterr().out
    aside = os.path.join(a, "abandoned-after-000002")
    assert aside in out
    assert checkpoint.list_steps(a) == [4]                          # the new timeline's, not the old 6
    assert sorted(os.listdir(aside)) == ["ckpt_000004.bin", "ckpt_000004.state", "ckpt_000006.bin",
                                         "ckpt_000006.state", "log.jsonl"]
    assert read(os.path.join(aside, "ckpt_000006.bin")) == old6       # nothing of the old timeline lost
    assert max(r["step"] for r in log_lines(a)) == 4
    # a bare --resume continues the new timeline
    assert main(["train", "--resume", "--out", a, "--steps", "6"]) == 0
    assert f"at step 4 from {checkpoint.paths(a, 4)[1]}" in capsys.readouterr().out


@pytest.mark.parametrize("keep", ["-5", "0", "nan", "1.5"])
def test_keep_bounds(tmp_path, data, capsys, keep):
    assert train(data, str(tmp_path / "r"), "--steps", "2", "--keep", keep) == 2
    err = capsys.readouterr().err
    assert "keep" in err and err.count("\n") == 1
    assert not os.path.exists(tmp_path / "r")


def test_stale_temps_finished_run_and_damaged_newest(tmp_path, data, capsys):
    a = str(tmp_path / "a")
    assert train(data, a, "--steps", "4", "--checkpoint-every", "2", "--eval-every", "2", "--keep", "5") == 0
    lines = log_lines(a)
    assert lines[-1]["step"] == 4 and "val_loss" in lines[-1]
    stale = os.path.join(a, "ckpt_000006.state.x1y2z3.tmp")
    open(stale, "wb").write(b"half a file")
    # resuming a finished run: nothing to do, the last log line (the final val loss) stays
    assert main(["train", "--resume", a]) == 0
    assert log_lines(a) == lines
    assert not os.path.exists(stale)
    assert "removed" in capsys.readouterr().out
    # a damaged newest checkpoint: the message names the older one that loads
    state4 = checkpoint.paths(a, 4)[1]
    raw = bytearray(read(state4))
    raw[-3] ^= 0xFF
    open(state4, "wb").write(bytes(raw))
    assert main(["train", "--resume", a]) == 2
    err = capsys.readouterr().err
    assert "corrupted training state" in err and f"--resume {checkpoint.paths(a, 2)[1]}" in err
    assert err.count("\n") == 1


def test_failed_prepare_leaves_the_old_folder_whole(tmp_path, monkeypatch, capsys):
    out = str(tmp_path / "p")
    prepare(DOCS, out, vocab_size=300, log=lambda *a: None)
    before = {n: read(os.path.join(out, n)) for n in os.listdir(out)}

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device", os.path.join(out, "data_val_000000.bin"))
    monkeypatch.setattr(prepare_mod, "write_shards", full_disk)
    src = tmp_path / "in.txt"
    src.write_text("other text entirely " * 200)
    assert main(["prepare", str(src), "--out", out, "--vocab-size", "260"]) == 2
    err = capsys.readouterr().err
    assert "No space left" in err and "data_val_000000.bin" in err
    assert {n: read(os.path.join(out, n)) for n in os.listdir(out)} == before
    assert sorted(os.listdir(tmp_path)) == ["in.txt", "p"]  # no temp folder left behind
    monkeypatch.undo()
    # a folder with files prepare did not write is refused before any work
    (tmp_path / "p" / "notes.txt").write_text("mine")
    assert main(["prepare", str(src), "--out", out, "--vocab-size", "260"]) == 2
    assert "notes.txt" in capsys.readouterr().err
    assert main(["prepare", str(src), "--out", out, "--vocab-size", "70000"]) == 2
    assert "vocab_size" in capsys.readouterr().err


@pytest.mark.parametrize("change, message", [
    ({"vocab_size": "257"}, "vocab_size must be an integer"),
    ({"vocab_size": 257.0}, "vocab_size must be an integer"),
    ({"vocab_size": 10**7}, "vocab_size must be an integer"),
    ({"vocab_size": 300}, "do not belong together"),
    ({"eot": 5}, "do not belong together"),
    ({"eot": True}, "eot must be"),
    ({"train": "data_train_000001.bin"}, "train must be a non-empty list"),
    (301, "expected a JSON object"),
    (b"\xff\xfe", "not a JSON meta file"),
    (b'{"vocab_size": ', "not a JSON meta file"),
])
def test_meta_json_is_checked(tmp_path, data, capsys, change, message):
    import shutil
    d = str(tmp_path / "d")
    shutil.copytree(data, d)
    path = os.path.join(d, "meta.json")
    if isinstance(change, dict):
        meta = json.load(open(path))
        meta.update(change)
        open(path, "w").write(json.dumps(meta))
    else:
        open(path, "wb").write(change if isinstance(change, bytes) else json.dumps(change).encode())
    assert train(d, str(tmp_path / "r"), "--steps", "1") == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "meta.json" in err + path
