"""Deduplication as its own stages over every task's MinHash signatures, as datatrove runs it:

    signatures (per input, in the files stage: parts/KEY.sig.npy)
    -> buckets   each bucket's candidate pairs over all documents      (split over the tasks)
    -> clusters  union-find over all pairs: one root per cluster        (one task)
    -> filter    keep the roots, anonymise (PII), write documents/      (per input, split over the tasks)

The pairs of each bucket and the union order (bucket by bucket, union by size) are datatrove's and do
not depend on how the work was split, so any number of tasks keeps exactly what one process keeps
(minhash.duplicates), and the same member of each cluster that datatrove keeps. Every output is
written atomically, a .json marker last, and a rerun skips what has a marker.
"""
import hashlib
import json
import os
import time

import numpy as np

from ..fileio import AtomicWriter, write_json
from . import minhash
from .pii import anonymise


def jsonl(obj):
    return json.dumps(obj, ensure_ascii=False) + "\n"


def iter_jsonl(path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def dedup_dir(out_dir, keys):
    """Where the dedup stages of this set of inputs write: named by a hash of the inputs' keys, so a
    rerun over other inputs starts its dedup afresh instead of reusing stale clusters."""
    return os.path.join(out_dir, "dedup", hashlib.sha1("\n".join(keys).encode()).hexdigest()[:12])


def buckets_stage(file_stats, out_dir, cfg, tasks=1, task=0):
    """Dedup stage 1 (after the signatures): this task's buckets b = task, task + tasks, ...; each
    bucket's candidate pairs over ALL documents in input order -> DEDUP/bucket_BB.npy (+ .json, last)."""
    d = dedup_dir(out_dir, [s["key"] for s in file_stats])
    width = minhash.HASHES_PER_BUCKET
    for b in range(task, minhash.N_BUCKETS, tasks):
        marker = os.path.join(d, f"bucket_{b:02d}.json")
        if os.path.exists(marker):
            continue  # finished by an earlier run
        t0 = time.perf_counter()
        if "minhash" in cfg["skip"]:
            pairs = np.zeros((0, 2), dtype=np.int64)
        else:
            sigs = [np.load(os.path.join(out_dir, "parts", s["key"] + ".sig.npy"), mmap_mode="r")
                     for s in file_stats]
            sigs = [a for a in sigs if len(a)]
            sigs = np.concatenate(sigs) if sigs else np.zeros((0, minhash.N_BUCKETS * width), np.uint64)
            pairs = minhash.bucket_pairs(sigs[:, b * width:(b + 1) * width], sigs[:, 0] != minhash.NO_SIGNATURE)
        w = AtomicWriter(os.path.join(d, f"bucket_{b:02d}.npy"), "wb")
        np.save(w.f, pairs)
        w.commit()
        write_json(marker, {"pairs": len(pairs), "seconds": round(time.perf_counter() - t0, 3)})


def clusters_stage(file_stats, out_dir):
    """Dedup stage 2 (one task): union by size over every bucket's pairs, bucket by bucket
    (minhash.clusters). -> DEDUP/clusters.npy (each document's root) and DEDUP/clusters.json (the ids
    of the roots that have duplicates, seconds), written last."""
    keys = [s["key"] for s in file_stats]
    d = dedup_dir(out_dir, keys)
    if os.path.exists(os.path.join(d, "clusters.json")):
        return
    t0 = time.perf_counter()
    n = sum(s["kept"] for s in file_stats)
    seconds = 0.0
    for b in range(minhash.N_BUCKETS):
        with open(os.path.join(d, f"bucket_{b:02d}.json")) as f:
            seconds += json.load(f)["seconds"]
    cluster = minhash.clusters(n, (np.load(os.path.join(d, f"bucket_{b:02d}.npy")) for b in range(minhash.N_BUCKETS)))
    roots = set(cluster[cluster != np.arange(n)].tolist())
    root_ids, i = {}, 0  # the id each duplicate is kept in favour of
    for k, s in zip(keys, file_stats):
        if any(i <= r < i + s["kept"] for r in roots):
            for j, doc in enumerate(iter_jsonl(os.path.join(out_dir, "parts", k + ".jsonl"))):
                if i + j in roots:
                    root_ids[str(i + j)] = doc["id"]
        i += s["kept"]
    w = AtomicWriter(os.path.join(d, "clusters.npy"), "wb")
    np.save(w.f, cluster)
    w.commit()
    write_json(os.path.join(d, "clusters.json"),
               {"root_ids": root_ids, "seconds": round(seconds + time.perf_counter() - t0, 3)})


def filter_stage(file_stats, out_dir, cfg, tasks=1, task=0):
    """Dedup stage 3, then PII: this task's files (every tasks-th, as in the files stage) keep the
    documents that are their cluster's root and anonymise them -> documents/KEY.jsonl,
    removed/minhash/KEY.jsonl; DEDUP/filter_KEY.json (the stage statistics) is written last."""
    keys = [s["key"] for s in file_stats]
    d = dedup_dir(out_dir, keys)
    cluster = np.load(os.path.join(d, "clusters.npy"))
    with open(os.path.join(d, "clusters.json")) as f:
        root_ids = json.load(f)["root_ids"]
    offsets = np.cumsum([0] + [s["kept"] for s in file_stats])
    for n, k in enumerate(keys):
        marker = os.path.join(d, f"filter_{k}.json")
        if n % tasks != task or os.path.exists(marker):
            continue
        stages = {s: {"in": 0, "removed": 0, "seconds": 0.0} for s in ("minhash", "pii")}
        docs_w = AtomicWriter(os.path.join(out_dir, "documents", k + ".jsonl"), "w")
        rem_w = AtomicWriter(os.path.join(out_dir, "removed", "minhash", k + ".jsonl"), "w")
        for i, doc in enumerate(iter_jsonl(os.path.join(out_dir, "parts", k + ".jsonl")), start=int(offsets[n])):
            stages["minhash"]["in"] += 1
            if cluster[i] != i:
                stages["minhash"]["removed"] += 1
                rem_w.write(jsonl({"id": doc["id"], "url": doc["url"], "reason": "duplicate",
                                   "duplicate_of": root_ids[str(int(cluster[i]))], "text": doc["text"]}))
                continue
            stages["pii"]["in"] += 1
            if "pii" not in cfg["skip"]:
                t1 = time.perf_counter()
                doc["text"], n_email, n_ip = anonymise(doc["text"])
                stages["pii"]["seconds"] += time.perf_counter() - t1
            docs_w.write(jsonl(doc))
        docs_w.commit()
        if stages["minhash"]["removed"]:
            rem_w.commit()
        else:
            rem_w.f.close()
            os.remove(rem_w.tmp)
        write_json(marker, stages)


def dedup_stats(file_stats, out_dir):
    """The global stages' statistics, summed over the filter stage's markers (+ bucket/cluster time)."""
    keys = [s["key"] for s in file_stats]
    d = dedup_dir(out_dir, keys)
    stages = {s: {"in": 0, "removed": 0, "seconds": 0.0} for s in ("minhash", "pii")}
    with open(os.path.join(d, "clusters.json")) as f:
        stages["minhash"]["seconds"] += json.load(f)["seconds"]
    for k in keys:
        with open(os.path.join(d, f"filter_{k}.json")) as f:
            for s, st in json.load(f).items():
                for field in ("in", "removed", "seconds"):
                    stages[s][field] += st[field]
    stages["minhash"]["seconds"] = round(stages["minhash"]["seconds"], 3)
    return stages, [os.path.join(out_dir, "documents", k + ".jsonl") for k in keys]


def dedup_and_anonymise(file_stats, out_dir, cfg):
    """The three dedup stages and PII in one process (the single-task run)."""
    buckets_stage(file_stats, out_dir, cfg)
    clusters_stage(file_stats, out_dir)
    filter_stage(file_stats, out_dir, cfg)
    return dedup_stats(file_stats, out_dir)
