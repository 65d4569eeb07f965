"""Data-parallel training over MPI (minigpt/pretrain/distributed.py), run as `mpirun -np 2` on this
machine (oversubscribed: CI has 2 cores). 2 ranks with half batches equal 1 rank with the whole
batch; ZeRO-1 equals the plain all-reduce; a resumed 2-rank run equals an uninterrupted one (and a 2-rank
checkpoint without dropout goes on on 1 rank); a rank that dies ends the job. Skipped when the mpi extra (mpi4py + Open MPI) is not installed."""
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from minigpt.fileio import read_checkpoint
from minigpt.pretrain import checkpoint
from minigpt.pretrain.corpus import pydoc_topics
from minigpt.pretrain.distributed import World, launched_size, row_range, segments, shard_range
from minigpt.pretrain.prepare import prepare
from minigpt.config import GPTConfig, num_parameters

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPIRUN = shutil.which("mpirun", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
needs_mpi = pytest.mark.skipif(importlib.util.find_spec("mpi4py") is None or MPIRUN is None,
                               reason="the mpi extra is not installed (pip install -e '.[mpi]')")
SMALL = ["--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "32", "--batch-size", "4",
         "--max-new-tokens", "8", "--no-plot", "--seed", "5", "--threads", "1", "--backend", "c"]


def env():
    e = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
             OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")  # CI runs as root
    e["PYTHONPATH"] = ROOT + os.pathsep + e.get("PYTHONPATH", "")
    return e


def mpirun(n, *args):
    return [MPIRUN, "-np", str(n), "--oversubscribe", sys.executable, *args]


def train(n, *args, check=True):
    cmd = mpirun(n, "-m", "minigpt", "train", *args) if n > 1 else [sys.executable, "-m", "minigpt", "train", *args]
    p = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)
    if check:
        assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    return p


def losses(run_dir):
    with open(os.path.join(run_dir, "log.jsonl")) as f:
        return [(r["step"], r["loss"]) for r in map(json.loads, f) if "loss" in r]


def params(run_dir, step):
    return read_checkpoint(checkpoint.paths(run_dir, step)[0])[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("data"))
    prepare(pydoc_topics()[:40], out, vocab_size=256, log=lambda *a: None)
    return out


# ------------------------------------------------------------------------------------------------
# the bookkeeping, without MPI


def test_rows_and_slices_cover_everything_once():
    for n in (1, 2, 3, 5):
        for B in range(n, 12):
            rows = [row_range(B, World(r, n)) for r in range(n)]
            assert rows[0][0] == 0 and rows[-1][1] == B and all(a[1] == b[0] for a, b in zip(rows, rows[1:]))
        for N in (1, 7, 1000):
            if N < n:
                continue
            slices = [shard_range(N, World(r, n))[:2] for r in range(n)]
            assert slices[0][0] == 0 and slices[-1][1] == N and all(a[1] == b[0] for a, b in zip(slices, slices[1:]))
    with pytest.raises(ValueError, match="at least one row"):
        row_range(1, World(0, 2))
    assert launched_size({}) == 1 and launched_size({"OMPI_COMM_WORLD_SIZE": "4"}) == 4


def test_segments_split_a_slice_at_tensor_boundaries():
    cfg = GPTConfig(block_size=8, vocab_size=16, n_layer=1, n_head=1, n_embd=4)
    n = num_parameters(cfg)
    whole = segments(cfg, 0, n)
    assert whole[0][0] == 0 and whole[-1][1] == n and all(a[1] == b[0] for a, b in zip(whole, whole[1:]))
    part = segments(cfg, 5, n - 3)
    assert part[0][0] == 5 and part[-1][1] == n - 3 and part[0][2]  # wte (decayed) comes first


# ------------------------------------------------------------------------------------------------
# whole runs under mpirun


WEIGHTS_SCRIPT = r"""
import numpy as np, sys
from minigpt.config import GPTConfig
from minigpt.model import GPT
from minigpt.pretrain import distributed as dist
world = dist.init()
cfg = GPTConfig(block_size=8, vocab_size=32, n_layer=1, n_head=2, n_embd=8)
rng = np.random.default_rng(0)
x = rng.integers(0, 32, (3, 8)); y = rng.integers(0, 32, (3, 8)); w = rng.random((3, 8))
y[0, 1:] = -1; y[2, :3] = -1        # ranks hold different numbers of counted targets
full = GPT(cfg, backend="numpy", seed=1, dtype=np.float64)
loss_full = full.forward(x, y, weights=w); full.backward()
part = GPT(cfg, backend="numpy", seed=1, dtype=np.float64)
xs, ys, ws = dist.local_rows((x, y, w), world)     # 3 rows over 2 ranks: 1 and 2
loss = part.forward(xs, ys, weights=dist.global_weights(world, ys, ws)); part.backward()
loss = dist.allreduce_sum(world, [loss])[0]
g = dist.reduce_gradients(part, world, zero=0)
assert abs(loss - loss_full) <= 1e-12 * abs(loss_full), (loss, loss_full)
assert np.allclose(g, full.grads_memory, rtol=1e-10, atol=1e-14), np.abs(g - full.grads_memory).max()
print("ok", world.rank)
"""


@needs_mpi
def test_uneven_rows_and_masks_give_the_global_mean(tmp_path):
    script = tmp_path / "weights.py"
    script.write_text(WEIGHTS_SCRIPT)
    p = subprocess.run(mpirun(2, str(script)), env=env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.count("ok") == 2, p.stdout + p.stderr


@needs_mpi
def test_two_ranks_equal_one_rank_and_zero1_equals_allreduce(tmp_path, data):
    common = SMALL + ["--data", data, "--steps", "20", "--eval-every", "10", "--grad-accum", "2"]
    one, two, zero = (str(tmp_path / d) for d in ("one", "two", "zero"))
    train(1, *common, "--out", one)
    p = train(2, *common, "--out", two)
    train(2, *common, "--zero", "1", "--out", zero)
    assert p.stdout.count("checkpoint:") == 1  # rank 0 alone prints
    a, b = losses(one), losses(two)
    assert [s for s, _ in a] == [s for s, _ in b] == list(range(20))
    for (_, la), (_, lb) in zip(a, b):
        assert abs(la - lb) <= 1e-6 * abs(la)
    # only the order of the sums differs (each rank's half, then the all-reduce): float32 round-off
    np.testing.assert_allclose(params(two, 20), params(one, 20), rtol=1e-5, atol=2e-6)
    assert losses(zero) == losses(two)
    np.testing.assert_array_equal(params(zero, 20), params(two, 20))  # a + b = b + a: bit for bit
    _, m2, v2 = checkpoint.load_state(checkpoint.paths(two, 20)[1])
    _, m0, v0 = checkpoint.load_state(checkpoint.paths(zero, 20)[1])
    np.testing.assert_array_equal(m0, m2)  # ZeRO-1's gathered moments are the whole moments
    np.testing.assert_array_equal(v0, v2)

    # without dropout nothing is per rank: the 2-rank ZeRO-1 run's step-10 checkpoint goes on on 1 rank
    for path in checkpoint.paths(zero, 20):
        os.unlink(path)
    p = train(1, "--resume", zero)
    assert "written on 2 rank(s), now 1" in p.stdout
    for (_, la), (_, lz) in zip(losses(one), losses(zero)):
        assert abs(la - lz) <= 1e-6 * abs(la)
    np.testing.assert_allclose(params(zero, 20), params(one, 20), rtol=1e-5, atol=2e-6)


@needs_mpi
def test_resume_in_the_middle_of_a_two_rank_run(tmp_path, data):
    common = SMALL + ["--data", data, "--steps", "20", "--eval-every", "5", "--checkpoint-every", "5",
                      "--keep", "10", "--dropout", "0.1", "--zero", "1"]
    whole, broken = str(tmp_path / "whole"), str(tmp_path / "broken")
    train(2, *common, "--out", whole)
    train(2, *common, "--out", broken)
    for step in (15, 20):  # as if it had stopped after step 10
        for path in checkpoint.paths(broken, step):
            os.unlink(path)
    info = checkpoint.load_state(checkpoint.paths(broken, 10)[1])[0]
    assert info["world_size"] == 2 and len(info["dropout_rngs"]) == 2
    p = train(1, "--resume", broken, check=False)  # one rank cannot continue two ranks' dropout masks
    assert p.returncode == 2 and "resume it on 2" in p.stderr
    train(2, "--resume", broken)
    assert losses(broken) == losses(whole)
    np.testing.assert_array_equal(params(broken, 20), params(whole, 20))


@needs_mpi
def test_a_rank_that_dies_ends_the_job(tmp_path, data):
    out = str(tmp_path / "run")
    cmd = mpirun(2, "-m", "minigpt", "train", *SMALL, "--data", data, "--steps", "100000", "--out", out)
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (os.path.exists(os.path.join(out, "log.jsonl")) and losses(out)):
            assert time.time() < deadline and proc.poll() is None, "the run did not start"
            time.sleep(0.2)
        victim = rank_pid(proc.pid, 1)
        os.kill(victim, signal.SIGKILL)
        _, err = proc.communicate(timeout=60)  # not a hang: mpirun ends the job
        assert proc.returncode != 0 and ("Killed" in err or "signal 9" in err), err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@needs_mpi
def test_a_bad_setting_on_every_rank_is_one_clear_error(tmp_path, data):
    p = train(2, *SMALL, "--data", data, "--batch-size", "1", "--out", str(tmp_path / "r"), check=False)
    assert p.returncode != 0 and "at least one row" in p.stderr


def rank_pid(root, rank):
    """The pid of MPI rank `rank` among the descendants of process `root` (Linux /proc)."""
    todo, seen = [root], []
    while todo:
        pid = todo.pop()
        seen.append(pid)
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    for pid in seen:
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read().split(b"\0")
        except OSError:
            continue
        if f"OMPI_COMM_WORLD_RANK={rank}".encode() in environ:
            return pid
    raise AssertionError(f"no rank {rank} under pid {root}")
