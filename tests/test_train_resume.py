"""Whole runs of `minigpt train`: kill -9 then --resume equals an uninterrupted run bit-exactly;
a NaN loss stops the run keeping the last good checkpoint; a normal run leaves samples, log and plot."""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from minigpt.model import backend
from minigpt.pretrain import checkpoint
from minigpt.cli import main
from minigpt.pretrain.corpus import pydoc_topics
from minigpt.pretrain.prepare import prepare

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPU_BACKENDS = [b for b in backend.available() if b != "cuda"]
SMALL = ["--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "32", "--batch-size", "4",
         "--max-new-tokens", "8", "--no-plot", "--seed", "5", "--threads", "1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    docs = pydoc_topics()[:40] or ["The quick brown fox jumps over the lazy dog. " * 50] * 40
    out = str(tmp_path_factory.mktemp("data"))
    prepare(docs, out, vocab_size=256, log=lambda *a: None)
    return out


def one_thread_env():
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def train_cmd(*args):
    return [sys.executable, "-m", "minigpt", "train", *args]


def read_log(run_dir):
    with open(os.path.join(run_dir, "log.jsonl")) as f:
        records = [json.loads(line) for line in f]
    return ([(r["step"], r["loss"]) for r in records if "loss" in r],
            [(r["step"], r["val_loss"]) for r in records if "val_loss" in r])


@pytest.mark.parametrize("be", CPU_BACKENDS)
def test_kill_9_then_resume_equals_uninterrupted_run(tmp_path, data, be):
    common = SMALL + ["--data", data, "--steps", "120", "--eval-every", "25", "--checkpoint-every", "10",
                      "--keep", "2", "--dropout", "0.1", "--grad-accum", "2", "--backend", be]
    env = one_thread_env()
    whole, broken = str(tmp_path / "whole"), str(tmp_path / "broken")
    subprocess.run(train_cmd(*common, "--out", whole), env=env, check=True, capture_output=True, timeout=300)

    proc = subprocess.Popen(train_cmd(*common, "--out", broken), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        steps = checkpoint.list_steps(broken) if os.path.isdir(broken) else []
        if steps and steps[-1] >= 40:
            proc.send_signal(signal.SIGKILL)  # mid-step, as a power cut would
            break
        time.sleep(0.005)
    assert proc.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed"
    assert not os.path.exists(checkpoint.paths(broken, 120)[0])
    killed_at = checkpoint.list_steps(broken)[-1]
    assert 40 <= killed_at < 120

    r = subprocess.run(train_cmd("--resume", "--out", broken), env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"resuming {broken} at step {killed_at}" in r.stdout
    assert read_log(broken) == read_log(whole)   # every loss, train and val, bit for bit
    with open(checkpoint.paths(whole, 120)[0], "rb") as a, open(checkpoint.paths(broken, 120)[0], "rb") as b:
        assert a.read() == b.read()
    ia, ma, va = checkpoint.load_state(checkpoint.paths(whole, 120)[1])
    ib, mb, vb = checkpoint.load_state(checkpoint.paths(broken, 120)[1])
    np.testing.assert_array_equal(ma, mb)
    np.testing.assert_array_equal(va, vb)
    assert ia["loader"] == ib["loader"] and ia["dropout_rng"] == ib["dropout_rng"]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, data, capsys, monkeypatch):
    from minigpt.pretrain import train as train_mod
    real, calls = train_mod.train_step, []

    def poisoned(*args, **kwargs):
        calls.append(1)
        loss = real(*args, **kwargs)
        return float("nan") if len(calls) == 7 else loss
    monkeypatch.setattr(train_mod, "train_step", poisoned)
    out = str(tmp_path / "run")
    rc = main(["train", *SMALL, "--data", data, "--steps", "20", "--checkpoint-every", "3", "--eval-every", "5",
               "--backend", "numpy", "--out", out])
    assert rc == 1
    msg = capsys.readouterr().err
    assert "the loss is nan at step 6" in msg and "training diverged" in msg
    assert f"last good checkpoint is {checkpoint.paths(out, 6)[0]}" in msg
    assert checkpoint.list_steps(out) == [3, 6]
    info, _, _ = checkpoint.load_state(checkpoint.paths(out, 6)[1])  # intact and loadable
    assert info["step"] == 6


def test_a_whole_run_leaves_samples_log_plot_and_refuses_to_overwrite(tmp_path, data, capsys):
    out = str(tmp_path / "run")
    args = [a for a in SMALL if a != "--no-plot"] + ["--data", data, "--steps", "12", "--eval-every", "5",
                                                      "--backend", "numpy", "--out", out]
    assert main(["train", *args]) == 0
    text = capsys.readouterr().out
    assert "samples at step 12:\n--- sample 1 ---" in text and "val loss" in text
    train_losses, val_losses = read_log(out)
    assert [s for s, _ in train_losses] == list(range(12))
    assert [s for s, _ in val_losses] == [0, 5, 10, 12]
    assert os.path.getsize(os.path.join(out, "loss.png")) > 1000
    assert main(["train", *args]) == 2
    err = capsys.readouterr().err
    assert "already holds checkpoints" in err and "--resume" in err
    assert main(["train", "--resume", str(tmp_path / "nowhere")]) == 2
    assert "no such training state" in capsys.readouterr().err
    # resuming a finished run with more steps continues it
    assert main(["train", "--resume", out, "--steps", "14", "--no-plot"]) == 0
    assert [s for s, _ in read_log(out)[0]] == list(range(14))
    assert sorted(glob.glob(os.path.join(out, "ckpt_*.bin")))[-1].endswith("ckpt_000014.bin")


def test_resume_on_the_cuda_backend_host_emulation(tmp_path, data, monkeypatch, capsys):
    """CudaGPT keeps AdamW's moments on the device: a checkpoint must carry them there and back.
    Runs on the host emulation of the CUDA library from tests/test_cuda.py (no GPU needed)."""
    test_cuda = pytest.importorskip("test_cuda")
    from minigpt.model import ops_cuda
    host = test_cuda.HostLib()
    monkeypatch.setattr(ops_cuda, "lib", host)
    monkeypatch.setattr(ops_cuda, "ffi", host.ffi)
    monkeypatch.setattr(ops_cuda, "_device_count", 1)
    # a schedule that does not depend on --steps, so 3 steps + 3 resumed equal 6 in one go
    args = SMALL + ["--data", data, "--backend", "cuda", "--decay", "constant", "--warmup", "0",
                    "--eval-every", "3", "--checkpoint-every", "3"]
    whole, parts = str(tmp_path / "whole"), str(tmp_path / "parts")
    assert main(["train", *args, "--steps", "6", "--out", whole]) == 0
    assert main(["train", *args, "--steps", "3", "--out", parts]) == 0
    assert main(["train", "--resume", parts, "--steps", "6"]) == 0
    assert "backend cuda" in capsys.readouterr().out
    assert read_log(parts) == read_log(whole)
    _, ma, va = checkpoint.load_state(checkpoint.paths(whole, 6)[1])
    _, mb, vb = checkpoint.load_state(checkpoint.paths(parts, 6)[1])
    assert np.abs(ma).max() > 0
    np.testing.assert_array_equal(ma, mb)
    np.testing.assert_array_equal(va, vb)
