"""The data pipeline: input files -> per-file stages (parallel) -> global dedup + PII -> JSONL -> shards.

    url -> extract -> language -> gopher_repetition -> gopher_quality -> c4 -> fineweb   (per file)
    -> minhash (global: signatures from every file, then buckets -> union-find -> keep one, as datatrove)
    -> pii -> documents/*.jsonl -> tokenize -> shards/*.bin

As datatrove runs FineWeb, the work splits into N independent tasks (`--tasks N --task i`, or a
Slurm array / mpirun): task i filters every N-th input and writes its signatures; the dedup stages
then run over ALL tasks' signatures (buckets, split over the tasks; clusters, one task; filter, per
input), so N tasks keep exactly the documents one process keeps (run_pipeline).

Output directory layout (every file is written to a temporary name and renamed when complete):

    parts/KEY.jsonl, parts/KEY.sig.npy   survivors of the per-file stages and their MinHash signatures
    parts/KEY.done.json                  per-file statistics, written last: its presence means the
                                         file is finished, so a rerun skips it (resumable)
    removed/STAGE/KEY.jsonl              every rejected document with its reason
    documents/KEY.jsonl                  the final documents (deduplicated, anonymised)
    shards/data_{val,train}_NNNNNN.bin   llm.c token shards (when a tokenizer is given)
    dedup/HASH/bucket_BB.npy, clusters.npy   the dedup stages' outputs (HASH: of the input set), each with
                                         a .json marker written last; filter_KEY.json per filtered input
    summary.json                         documents_in, documents_out, errors, stages{in, removed, seconds}
"""
import glob
import hashlib
import json
import os
import time
from collections import Counter

import numpy as np

from ..fileio import AtomicWriter, write_json
from . import filters, minhash, words
from .dedup import buckets_stage, clusters_stage, dedup_dir, dedup_stats, filter_stage, iter_jsonl, jsonl
from .readers import read_documents
from .shards import write_shards

STAGES = ["url", "extract", "language", "gopher_repetition", "gopher_quality", "c4", "fineweb",
          "minhash", "pii"]
FILE_STAGES = STAGES[:7]


def default_config(**overrides):
    cfg = dict(languages=["en"], language_threshold=0.65, skip=(), blocklist=frozenset(),
               banned_words=frozenset(), soft_banned_words=frozenset(), minhash_seed=1)
    for k, v in overrides.items():
        if k not in cfg:
            raise TypeError(f"unknown pipeline option {k!r}; expected one of {sorted(cfg)}")
        cfg[k] = v
    unknown = set(cfg["skip"]) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stage(s) {sorted(unknown)} to skip; the stages are {STAGES}")
    return cfg


# ------------------------------------------------------------------------------------------------
# one document through the per-file stages

def run_stage(stage, doc, cfg):
    """Returns None to keep doc (possibly with doc["text"] rewritten), or the reason to drop it."""
    if stage == "url":
        return filters.url_filter(doc["url"], cfg["blocklist"], cfg["banned_words"], cfg["soft_banned_words"])
    if stage == "extract":
        if "html" not in doc:
            return None  # JSONL / Parquet / text inputs already hold text
        from .extract import decode_html, html_to_text
        html = decode_html(doc.pop("html"), doc.pop("charset"))
        if html is None:
            return "undecodable"
        doc["text"] = html_to_text(html)
        return None if doc["text"] else "empty_page"
    if stage == "language":
        from .extract import detect_language
        lang, score = detect_language(doc["text"])
        doc["language"], doc["language_score"] = lang, round(score, 4)
        if score <= cfg["language_threshold"]:
            return f"low_score_{lang}"
        if cfg["languages"] is not None and lang not in cfg["languages"]:
            return f"language_{lang}"
        return None
    if stage == "gopher_repetition":
        return filters.gopher_repetition(doc["text"])
    if stage == "gopher_quality":
        return filters.gopher_quality(doc["text"])
    if stage == "c4":
        reason, doc["text"] = filters.c4_quality(doc["text"])
        return reason
    if stage == "fineweb":
        return filters.fineweb_quality(doc["text"])
    raise ValueError(f"unknown stage {stage!r}")


def filter_documents(docs, cfg, stats, on_removed):
    """Runs the per-file stages over a stream of documents; yields the survivors."""
    stages = [s for s in FILE_STAGES if s not in cfg["skip"]]
    for doc in docs:
        stats["documents_in"] += 1
        for stage in stages:
            st = stats["stages"][stage]
            st["in"] += 1
            t0 = time.perf_counter()
            reason = run_stage(stage, doc, cfg)
            st["seconds"] += time.perf_counter() - t0
            if reason is not None:
                st["removed"] += 1
                on_removed(stage, doc, reason)
                break
        else:
            yield doc


def new_stats():
    return {"documents_in": 0, "errors": Counter(),
            "stages": {s: {"in": 0, "removed": 0, "seconds": 0.0} for s in STAGES}}


def file_key(path):
    """A stable name for an input's outputs: its base name plus a hash of its absolute path."""
    digest = hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:10]
    base = os.path.basename(path).split(".")[0][:40] or "input"
    return f"{base}-{digest}"


# ------------------------------------------------------------------------------------------------
# per-file work (runs in a worker process)

def process_file(path, out_dir, cfg):
    key = file_key(path)
    for stale in glob.glob(os.path.join(glob.escape(out_dir), "**", glob.escape(key) + ".*.tmp"), recursive=True):
        os.remove(stale)  # left by a run that stopped half-way through this file
    stats = new_stats()
    removed = {}

    def on_removed(stage, doc, reason):
        if stage not in removed:
            removed[stage] = AtomicWriter(os.path.join(out_dir, "removed", stage, key + ".jsonl"), "w")
        rec = {"id": doc["id"], "url": doc["url"], "reason": reason}
        if "text" in doc:
            rec["text"] = doc["text"]
        removed[stage].write(jsonl(rec))

    params = minhash.hash_params(seed=cfg["minhash_seed"])
    kept = AtomicWriter(os.path.join(out_dir, "parts", key + ".jsonl"), "w")
    sigs, ids = [], []
    for doc in filter_documents(read_documents(path, stats["errors"]), cfg, stats, on_removed):
        if "minhash" not in cfg["skip"]:
            t0 = time.perf_counter()
            sigs.append(minhash.text_signature(doc["text"], params))
            stats["stages"]["minhash"]["seconds"] += time.perf_counter() - t0
        kept.write(jsonl(doc))
        ids.append(doc["id"])
    kept.commit()
    sig_w = AtomicWriter(os.path.join(out_dir, "parts", key + ".sig.npy"), "wb")
    np.save(sig_w.f, np.array(sigs, dtype=np.uint64).reshape(len(sigs), len(params[0])))
    sig_w.commit()
    for w in removed.values():
        w.commit()
    stats["errors"] = dict(stats["errors"])
    stats.update(path=os.path.abspath(path), key=key, kept=len(ids), ids=ids)  # ids: to name a duplicate's original
    write_json(os.path.join(out_dir, "parts", key + ".done.json"), stats)  # the commit marker
    return stats


def _worker(job):
    path, out_dir, cfg = job
    return process_file(path, out_dir, cfg)


def run_files(paths, out_dir, cfg, workers=1, progress=True):
    """Per-file stages over every input not finished by an earlier run. Returns the stats of all."""
    from tqdm import tqdm

    done, todo = {}, []
    for p in paths:
        marker = os.path.join(out_dir, "parts", file_key(p) + ".done.json")
        if os.path.exists(marker):
            with open(marker) as f:
                done[p] = json.load(f)
        else:
            todo.append(p)
    bar = tqdm(total=len(paths), initial=len(done), unit="file", desc="filter", disable=not progress)
    jobs = [(p, out_dir, cfg) for p in todo]
    if workers <= 1 or len(jobs) <= 1:
        results = map(_worker, jobs)
        pool = None
    else:
        import multiprocessing as mp
        pool = mp.get_context("fork").Pool(min(workers, len(jobs)))
        results = pool.imap_unordered(_worker, jobs)
    try:
        docs = sum(s["documents_in"] for s in done.values())
        for stats in results:
            done[next(p for p in todo if file_key(p) == stats["key"])] = stats
            docs += stats["documents_in"]
            bar.update(1)
            bar.set_postfix(docs=docs)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
        bar.close()
    return [done[p] for p in paths]


# ------------------------------------------------------------------------------------------------
# global stages: MinHash dedup across every file, then PII

# ------------------------------------------------------------------------------------------------
# the whole run, and its summary

def summarise(file_stats, global_stages, documents_out):
    stages = {s: {"in": 0, "removed": 0, "seconds": 0.0} for s in STAGES}
    errors = Counter()
    for fs in file_stats:
        errors.update(fs["errors"])
        for s in FILE_STAGES:
            for f in ("in", "removed", "seconds"):
                stages[s][f] += fs["stages"][s][f]
        stages["minhash"]["seconds"] += fs["stages"]["minhash"]["seconds"]  # signatures, in the workers
    for s, st in global_stages.items():
        for f in ("in", "removed", "seconds"):
            stages[s][f] += st[f]
    for st in stages.values():
        st["seconds"] = round(st["seconds"], 3)
    return {"documents_in": sum(fs["documents_in"] for fs in file_stats),
            "documents_out": documents_out,
            "errors": sum(errors.values()), "errors_by_kind": dict(errors),
            "files": len(file_stats), "stages": stages}


def format_table(summary):
    rows = [("stage", "in", "removed", "kept", "seconds")]
    for s, st in summary["stages"].items():
        rows.append((s, st["in"], st["removed"], st["in"] - st["removed"], f"{st['seconds']:.2f}"))
    widths = [max(len(str(r[i])) for r in rows) for i in range(5)]
    lines = ["  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.append(f"documents in {summary['documents_in']}, out {summary['documents_out']}, "
                 f"errors {summary['errors']} {summary['errors_by_kind'] or ''}".rstrip())
    return "\n".join(lines)


TASK_STAGES = ("files", "buckets", "clusters", "filter", "shards")


def task_inputs(paths, tasks, task):
    """Task `task`'s inputs: every tasks-th one from it, so N tasks split them by a fixed rule."""
    return paths[task::tasks]


def await_files(files, what, wait_seconds):
    """Return once every file exists; poll up to wait_seconds for other tasks to write them (0:
    not at all), then fail naming what is missing, rather than wait forever for a task that died."""
    deadline = time.monotonic() + wait_seconds
    while True:
        missing = [f for f in files if not os.path.exists(f)]
        if not missing:
            return
        if time.monotonic() >= deadline:
            raise RuntimeError(f"{what}: {len(missing)} of {len(files)} outputs of earlier stages are missing "
                               f"(first: {missing[0]}); run that stage for every task first")
        time.sleep(0.5)


def file_markers(paths, out_dir):
    return [os.path.join(out_dir, "parts", file_key(p) + ".done.json") for p in paths]


def read_file_stats(paths, out_dir):
    stats = []
    for marker in file_markers(paths, out_dir):
        with open(marker) as f:
            stats.append(json.load(f))
    return stats


def run_pipeline(paths, out_dir, cfg=None, workers=1, tokenizer=None, shard_tokens=100_000_000,
                 progress=True, tasks=1, task=0, stage="all", wait_seconds=3600):
    """Everything, or one stage of one of `tasks` independent tasks (datatrove's way):

        files     the per-file stages + MinHash signatures of this task's inputs (task_inputs)
        buckets   this task's buckets' candidate pairs, over every task's signatures
        clusters  union-find over all pairs (task 0)
        filter    drop duplicates, PII, documents/ for this task's inputs
        shards    tokenize every document in input order, summary.json (task 0)

    Each stage needs every task's output of the stage before: stage="all" runs them in order and
    waits (wait_seconds) for the other tasks' files; a single stage fails at once if they are
    missing. Finished work is skipped on a rerun. Returns the summary dict (task 0 of the shards
    stage), else None; N tasks give the same documents, shards and counts as one."""
    cfg = cfg or default_config()
    if not 0 <= task < tasks:
        raise ValueError(f"--task {task} must be in [0, --tasks {tasks})")
    if stage != "all" and stage not in TASK_STAGES:
        raise ValueError(f"unknown stage {stage!r}; the stages are all, {', '.join(TASK_STAGES)}")
    os.makedirs(out_dir, exist_ok=True)
    words.clear_caches()  # every run starts cold (so a benchmark's repeats do not warm it)
    wait = wait_seconds if stage == "all" and tasks > 1 else 0
    summary = None
    for st in TASK_STAGES if stage == "all" else (stage,):
        if st == "files":
            run_files(task_inputs(paths, tasks, task), out_dir, cfg, workers=workers, progress=progress)
            continue
        await_files(file_markers(paths, out_dir), f"stage {st}", wait)
        file_stats = read_file_stats(paths, out_dir)
        d = dedup_dir(out_dir, [fs["key"] for fs in file_stats])
        if st == "buckets":
            buckets_stage(file_stats, out_dir, cfg, tasks, task)
        elif st == "clusters" and task == 0:
            await_files([os.path.join(d, f"bucket_{b:02d}.json") for b in range(minhash.N_BUCKETS)], "stage clusters", wait)
            clusters_stage(file_stats, out_dir)
        elif st == "filter":
            await_files([os.path.join(d, "clusters.json")], "stage filter", wait)
            filter_stage(file_stats, out_dir, cfg, tasks, task)
        elif st == "shards" and task == 0:
            await_files([os.path.join(d, f"filter_{fs['key']}.json") for fs in file_stats], "stage shards", wait)
            summary = finish(file_stats, out_dir, tokenizer, shard_tokens)
    return summary


def finish(file_stats, out_dir, tokenizer, shard_tokens):
    """The summary of the whole run, and the token shards of every document in input order."""
    global_stages, doc_files = dedup_stats(file_stats, out_dir)
    documents_out = global_stages["pii"]["in"]
    summary = summarise(file_stats, global_stages, documents_out)
    if tokenizer is not None:
        t0 = time.perf_counter()
        docs = (tokenizer.encode_ordinary(d["text"]) for path in doc_files for d in iter_jsonl(path))
        summary["shards"] = write_shards(docs, tokenizer.eot, os.path.join(out_dir, "shards"), shard_tokens)
        summary["tokenize_seconds"] = round(time.perf_counter() - t0, 3)
    write_json(os.path.join(out_dir, "summary.json"), summary)
    return summary
