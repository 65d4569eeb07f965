"""#12 for `minigpt data`: every record a reader can produce is counted, never raised; the same input
named twice is read once; a rerun with another --shard-tokens leaves no stale shard."""
import json
import os
import shutil
import socket
from collections import Counter

import numpy as np
import pytest

from minigpt.cli import main
from minigpt.data import pipeline as P
from minigpt.data.readers import list_inputs, read_documents
from minigpt.fileio import read_shard
from minigpt.tokenizer import Tokenizer

# no fastText, no MinHash-free shortcuts: the stages that run are the cheap ones
SKIP = ("language", "gopher_repetition", "gopher_quality", "c4", "fineweb")
_rng = np.random.default_rng(0)
TEXTS = [" ".join("".join(_rng.choice(list("abcdefghijklmnopqrstuvwxyz"), 6)) for _ in range(40)) for i in range(6)]


def write_jsonl(path, records):
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")


def read(path):
    errors = Counter()
    return list(read_documents(str(path), errors)), errors


def test_wrong_field_types_are_counted(tmp_path):
    path = tmp_path / "mixed.jsonl"
    write_jsonl(path, [{"text": "good one", "url": "http://a.example/"},
                       {"text": "url is a number", "url": 12345},
                       {"text": 7},
                       {"text": ["a", "list"]},
                       {"text": "id is a dict", "id": {"x": 1}},
                       '{"text": "lone surrogate \\ud800 here"}',
                       "5", "null", '"text"', "[1, 2]",
                       "[" * 100000])
    docs, errors = read(path)
    assert [d["text"] for d in docs] == ["good one", "id is a dict"]
    assert all(isinstance(d["id"], str) and isinstance(d["url"], str) for d in docs)
    assert errors == {"bad_field": 3, "bad_text": 1, "bad_json": 5}


def test_parquet_wrong_types_and_schema_are_counted(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"text": [1, 2, None], "url": ["u", "v", "w"]}), tmp_path / "ints.parquet")
    docs, errors = read(tmp_path / "ints.parquet")
    assert docs == [] and errors == {"bad_field": 2, "bad_row": 1}
    pq.write_table(pa.table({"text": ["ok", "fine"], "url": [1, None]}), tmp_path / "urls.parquet")
    docs, errors = read(tmp_path / "urls.parquet")
    assert [d["text"] for d in docs] == ["fine"] and errors == {"bad_field": 1}
    pq.write_table(pa.table({"body": ["no text column"]}), tmp_path / "schema.parquet")
    docs, errors = read(tmp_path / "schema.parquet")
    assert docs == [] and errors == {"no_text_column": 1}


def test_directory_entries_that_are_not_regular_files(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    write_jsonl(d / "a.jsonl", [{"text": t} for t in TEXTS[:2]])
    os.mkfifo(d / "fifo.jsonl")                           # opening it would block forever
    os.symlink(d / "missing.jsonl", d / "broken.jsonl")   # a dangling link
    os.mkdir(d / "subdir.jsonl")                          # a directory with a reader's suffix
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(d / "sock.txt"))
    unreadable = d / "secret.txt"
    unreadable.write_text("hidden")
    unreadable.chmod(0)
    try:
        s = P.run_pipeline(list_inputs([str(d)]), str(tmp_path / "out"), P.default_config(skip=SKIP),
                           progress=False)
    finally:
        sock.close()
        unreadable.chmod(0o600)
    root = os.geteuid() == 0  # root reads a mode-0 file
    assert s["documents_out"] == 2 + root
    kinds = s["errors_by_kind"]
    assert kinds["not_a_regular_file"] == 2, kinds                  # the FIFO and the socket
    assert kinds["unreadable"] == (1 if root else 2), kinds  # the broken link (+ mode 0 unless root)
    # named directly on the command line, a FIFO is one clear line, not a hang
    with pytest.raises(ValueError, match="not a regular file"):
        list_inputs([str(d / "fifo.jsonl")])


def test_same_input_twice_is_read_once(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    write_jsonl(d / "a.jsonl", [{"text": t} for t in TEXTS])
    os.symlink(d / "a.jsonl", tmp_path / "link.jsonl")
    inputs = [str(d), str(d / "a.jsonl"), str(tmp_path / "link.jsonl"), str(d) + "/"]
    assert list_inputs(inputs) == [str(d / "a.jsonl")]
    s = P.run_pipeline(list_inputs(inputs), str(tmp_path / "out"), P.default_config(skip=SKIP), progress=False,
                       workers=2)
    assert s["documents_in"] == s["documents_out"] == len(TEXTS)


def test_rerun_with_other_shard_tokens_leaves_no_stale_shards(tmp_path, capsys):
    d = tmp_path / "in"
    d.mkdir()
    write_jsonl(d / "a.jsonl", [{"text": t} for t in TEXTS])
    tok = tmp_path / "bytes.model"
    Tokenizer.train("", vocab_size=256).save(str(tok))
    out = tmp_path / "out"
    base = ["data", str(d), "--out", str(out), "--tokenizer", str(tok), "--skip", ",".join(SKIP), "--no-progress",
            "--workers", "1"]
    assert main(base + ["--shard-tokens", "200"]) == 0
    many = sorted(os.listdir(out / "shards"))
    assert len(many) > 3
    assert main(base + ["--shard-tokens", "100000"]) == 0
    few = sorted(os.listdir(out / "shards"))
    assert few == ["data_train_000001.bin", "data_val_000000.bin"]
    tokens = np.concatenate([read_shard(str(out / "shards" / n)) for n in few])
    assert (tokens == 256).sum() == len(TEXTS)  # each document once: one <|endoftext|> each
    assert not [n for n in os.listdir(out) if n.endswith((".tmp", ".old"))]


def test_a_tokenizer_too_large_for_shards_is_refused_up_front(tmp_path, capsys):
    import base64
    d = tmp_path / "in"
    d.mkdir()
    write_jsonl(d / "a.jsonl", [{"text": t} for t in TEXTS])
    ranks = tmp_path / "big.tiktoken"   # 70000 ranks: ids past uint16
    toks = [bytes([i]) for i in range(256)] + [i.to_bytes(3, "big") + b"x" for i in range(70000 - 256)]
    ranks.write_text("".join(f"{base64.b64encode(t).decode()} {i}\n" for i, t in enumerate(toks)))
    assert main(["data", str(d), "--out", str(tmp_path / "out"), "--tokenizer", str(ranks), "--skip",
                 ",".join(SKIP), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "do not fit uint16" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_damaged_markers_rerun_their_input(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    write_jsonl(d / "a.jsonl", [{"text": t} for t in TEXTS])
    out = tmp_path / "out"
    cfg = P.default_config(skip=SKIP)
    first = P.run_pipeline(list_inputs([str(d)]), str(out), cfg, progress=False)
    marker = next((out / "parts").glob("*.done.json"))
    for damage in (b"{not json", b"[1, 2]", b'{"kept": "six"}', b"\xff\xfe"):
        marker.write_bytes(damage)
        again = P.run_pipeline(list_inputs([str(d)]), str(out), cfg, progress=False)
        assert again["documents_out"] == first["documents_out"] == len(TEXTS)
    sig = next((out / "parts").glob("*.sig.npy"))
    sig.write_bytes(b"garbage")
    shutil.rmtree(out / "dedup")  # the dedup stages are done and skipped on a rerun: make them read it again
    with pytest.raises(ValueError, match="delete its .done.json"):
        P.run_pipeline(list_inputs([str(d)]), str(out), cfg, progress=False)
