"""FineWeb-style data pipeline: WARC / JSONL / Parquet in; filtered, deduplicated, anonymised
documents and llm.c token shards out. Files in pipeline order:

    readers.py   WARC, JSONL, Parquet, text -> documents (streaming, bad records counted)
    extract.py   HTML -> main text (resiliparse); language ID (fastText lid.176)
    filters.py   URL filter, Gopher repetition, Gopher quality, C4, FineWeb quality
    minhash.py   MinHash signatures, LSH buckets, union-find near-duplicate clusters
    pii.py       e-mail and public IPv4 addresses -> placeholders
    dedup.py     dedup as stages over every task's signatures: buckets, clusters, filter (+ PII)
    shards.py    documents -> llm.c token shards
    pipeline.py  the stages in order, parallel over files, as one process or N tasks, resumable, summary.json
    cli.py       `minigpt data`
"""
