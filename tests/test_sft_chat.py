"""`minigpt sft` end to end on a small pretraining run (base found from the run, vocabulary grown,
resume exact, JSONL data with bad lines), and `minigpt chat`: -p one-shot, and the interactive mode
driven through a pseudo-terminal (streaming, commands, the context-full notice)."""
import json
import os
import pty
import select
import subprocess
import sys
import time

import numpy as np
import pytest

from minigpt.cli import main
from minigpt.pretrain.corpus import pydoc_topics
from minigpt.fileio import read_checkpoint
from minigpt.posttrain.conversations import write_jsonl
from minigpt.pretrain.prepare import prepare
from minigpt.tokenizer import Tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "64", "--batch-size", "4",
         "--no-plot", "--seed", "5", "--threads", "1"]
SFT = ["--batch-size", "4", "--no-plot", "--threads", "1", "--eval-every", "3", "--eval-batches", "2",
       "--graded", "6", "--graded-every", "3", "--reply-tokens", "8"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    d = tmp_path_factory.mktemp("sft")
    docs = pydoc_topics()[:30] or ["The quick brown fox jumps over the lazy dog. " * 50] * 30
    prepare(docs, str(d / "data"), vocab_size=300, log=lambda *a: None)
    assert main(["train", "--data", str(d / "data"), "--out", str(d / "base"), "--steps", "3",
                 "--eval-every", "3", "--max-new-tokens", "4", *SMALL]) == 0
    return d


def test_sft_from_a_run_directory_then_chat(base, capsys):
    d = base
    assert main(["sft", "--base", str(d / "base"), "--out", str(d / "chat"), "--steps", "6", *SFT]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["packing"] > 0.5 and summary["graded"]["all"]["n"] == 6
    tok = Tokenizer.load(d / "chat" / "tokenizer.model")
    cfg, _ = read_checkpoint(d / "chat" / "ckpt_000006.bin")
    assert cfg.vocab_size == tok.n_vocab == 301 + 9 and "<|im_end|>" in tok.special_tokens
    base_cfg, base_params = read_checkpoint(d / "base" / "ckpt_000003.bin")
    assert base_cfg.vocab_size == 301 and cfg.padded_vocab_size == base_cfg.padded_vocab_size  # padded rows used
    log = [json.loads(line) for line in open(d / "chat" / "log.jsonl")]
    assert [r["step"] for r in log if "val_loss" in r] == [0, 3, 6]
    assert all(np.isfinite(r.get("loss", 0)) for r in log)
    assert os.path.exists(d / "chat" / "tokenizer.bin") and os.path.exists(d / "chat" / "test.jsonl")
    # one-shot chat prints only the reply
    assert main(["chat", str(d / "chat"), "-p", "Who are you?", "--temperature", "0", "--max-new-tokens", "5"]) == 0
    reply = capsys.readouterr().out
    assert reply.endswith("\n") and reply.count("\n") >= 1 and "you>" not in reply


def test_sft_resume_is_exact(base):
    d = base
    common = ["--base", str(d / "base"), *SFT, "--graded", "0", "--checkpoint-every", "3", "--seed", "2"]
    assert main(["sft", "--out", str(d / "a"), "--steps", "6", *common]) == 0
    assert main(["sft", "--out", str(d / "b"), "--steps", "3", *common]) == 0
    assert main(["sft", "--resume", str(d / "b"), "--steps", "6"]) == 0
    a = read_checkpoint(d / "a" / "ckpt_000006.bin")[1]
    b = read_checkpoint(d / "b" / "ckpt_000006.bin")[1]
    assert np.array_equal(a, b)


def test_sft_on_jsonl_with_bad_lines(base, capsys):
    d = base
    good = [{"messages": [{"role": "user", "content": f"What is {i} + 1?"},
                          {"role": "assistant", "content": f"{i + 1}"}]} for i in range(40)]
    path = d / "chats.jsonl"
    write_jsonl(path, good)
    with open(path, "a") as f:
        f.write("{broken\n")
    assert main(["sft", "--base", str(d / "base"), "--data", str(path), "--out", str(d / "j"), "--steps", "2",
                 *SFT, "--graded", "0"]) == 0
    out = capsys.readouterr().out
    assert f"skipped {path}:41:" in out and "skipped 1 bad lines" in out
    assert main(["sft", "--base", str(d / "nowhere"), "--out", str(d / "x")]) == 2
    assert "no such run directory or checkpoint" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# the terminal, through a pseudo-terminal

def read_until(fd, marker, timeout=60):
    buf, end = b"", time.time() + timeout
    while marker.encode() not in buf:
        left = end - time.time()
        if left <= 0:
            raise AssertionError(f"did not see {marker!r}; got {buf.decode(errors='replace')!r}")
        r, _, _ = select.select([fd], [], [], left)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
    return buf.decode(errors="replace")


def test_interactive_chat_through_a_pty(base):
    d = base
    if not os.path.exists(d / "chat" / "ckpt_000006.bin"):
        assert main(["sft", "--base", str(d / "base"), "--out", str(d / "chat"), "--steps", "6", *SFT]) == 0
    master, slave = pty.openpty()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT, TERM="dumb")
    p = subprocess.Popen([sys.executable, "-m", "minigpt", "chat", str(d / "chat"), "--temperature", "0",
                          "--max-new-tokens", "40", "--system", "Be brief."],
                         stdin=slave, stdout=slave, stderr=slave, env=env, cwd=ROOT, close_fds=True)
    os.close(slave)
    try:
        assert "/help for commands" in read_until(master, "you> ")
        os.write(master, b"/help\n")
        assert "/top_p" in read_until(master, "you> ")
        os.write(master, b"/temperature 0.5\n")
        assert "(temperature 0.5)" in read_until(master, "you> ")
        os.write(master, b"/temperature hot\n")
        assert "/temperature: " in read_until(master, "you> ")
        os.write(master, b"/top_k 5\n")
        assert "(top_k 5)" in read_until(master, "you> ")
        os.write(master, b"/top_p off\n")
        assert "(top_p off)" in read_until(master, "you> ")
        # a 64-token context: long messages fill it, and old turns are dropped with a notice
        seen = ""
        for i in range(4):
            os.write(master, f"Tell me about module {i}.\n".encode())
            seen += read_until(master, "you> ")
        assert seen.count("assistant> ") == 4
        assert "is full: dropped the" in seen
        os.write(master, ("a long message " * 30 + "\n").encode())
        assert "too long for the context" in read_until(master, "you> ")
        os.write(master, b"/clear\n")
        assert "(conversation cleared)" in read_until(master, "you> ")
        os.write(master, b"/quit\n")
        assert p.wait(timeout=30) == 0
    finally:
        if p.poll() is None:
            p.kill()
        os.close(master)
