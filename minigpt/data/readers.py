"""Readers: one input file -> a stream of documents, one record at a time (memory stays flat).

A document is a dict: {"id", "url", "text"} for inputs that already hold text (JSONL, Parquet,
plain text), or {"id", "url", "html", "charset"} for WARC responses (html is raw bytes; the
extract stage turns it into text). A record that cannot be read is counted in `errors`
(a Counter of kind -> n) and skipped; a stream that breaks (truncated gzip, a malformed header)
ends the file there, keeping every record read before it.
"""
import gzip
import json
import os
import re
import zlib

WARC_SUFFIXES = (".warc", ".warc.gz", ".arc", ".arc.gz")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)
TEXT_SUFFIXES = (".txt", ".md", ".rst", ".text")
STREAM_ERRORS = (OSError, EOFError, zlib.error, ValueError, UnicodeDecodeError)


def input_kind(path):
    name = path.lower()
    for kind, suffixes in (("warc", WARC_SUFFIXES), ("jsonl", JSONL_SUFFIXES),
                           ("parquet", PARQUET_SUFFIXES), ("text", TEXT_SUFFIXES)):
        if name.endswith(suffixes):
            return kind
    return None


def list_inputs(paths):
    """Expand files and directories into a sorted list of readable input files."""
    files = []
    for p in paths:
        if os.path.isdir(p):
            for root, dirs, names in os.walk(p):
                dirs.sort()
                files += [os.path.join(root, n) for n in sorted(names) if input_kind(n)]
        elif os.path.isfile(p):
            if input_kind(p) is None:
                raise ValueError(f"{p}: expected a .warc[.gz], .jsonl[.gz], .parquet or .txt file "
                                 f"(or a directory of them), found suffix {os.path.splitext(p)[1]!r}")
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or directory")
    return files


def read_documents(path, errors, text_key="text"):
    kind = input_kind(path)
    if kind == "jsonl":
        return read_jsonl(path, errors, text_key)
    reader = {"warc": read_warc, "parquet": read_parquet, "text": read_text}[kind]
    return reader(path, errors)


# ------------------------------------------------------------------------------------------------
# WARC (warcio)

CHARSET_RE = re.compile(rb"charset\s*=\s*[\"']?([a-zA-Z0-9_\-.:]+)", re.I)


def _warc_document(record, errors):
    """A response record -> an HTML document, or None (not HTML, or broken)."""
    http = record.http_headers
    if http is None:
        errors["broken_http"] += 1
        return None
    ctype = (http.get_header("Content-Type") or "").lower()
    if ctype and "html" not in ctype:
        return None  # images, PDFs, ...: not documents for this pipeline, and not errors
    body = record.content_stream().read()
    if record.raw_stream.limit > 0:  # fewer bytes than Content-Length: the stream was cut
        errors["truncated_record"] += 1
        return None
    m = CHARSET_RE.search(ctype.encode())
    return {"id": record.rec_headers.get_header("WARC-Record-ID") or "",
            "url": record.rec_headers.get_header("WARC-Target-URI") or "",
            "html": body, "charset": m.group(1).decode() if m else None}


def read_warc(path, errors):
    from warcio.archiveiterator import ArchiveIterator
    from warcio.exceptions import ArchiveLoadFailed

    with open(path, "rb") as f:
        it = ArchiveIterator(f)
        # a record is only good once the reader has found the next record where its
        # Content-Length said (warcio counts a miss in err_count); so hold one record back
        pending, err_before = None, 0
        while True:
            try:
                record = next(it)
            except StopIteration:
                break
            except (ArchiveLoadFailed, *STREAM_ERRORS):
                errors["broken_stream"] += 1
                pending = None if it.err_count > err_before else pending
                break
            if pending is not None:
                if it.err_count > err_before:
                    errors["bad_record_length"] += 1
                else:
                    yield pending
            pending, err_before = None, it.err_count
            if record.rec_type != "response":
                continue
            try:
                pending = _warc_document(record, errors)
            except (ArchiveLoadFailed, *STREAM_ERRORS):
                errors["broken_record"] += 1
                break
        if pending is not None:
            if it.err_count > err_before:
                errors["bad_record_length"] += 1
            else:
                yield pending


# ------------------------------------------------------------------------------------------------
# JSONL, Parquet, plain text

def read_jsonl(path, errors, text_key="text"):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        line_no = 0
        while True:
            try:
                line = f.readline()
            except STREAM_ERRORS:
                errors["broken_stream"] += 1
                return
            if not line:
                return
            line_no += 1
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                text = obj[text_key]
                if not isinstance(text, str):
                    raise TypeError
            except (ValueError, KeyError, TypeError):
                errors["bad_json"] += 1
                continue
            yield {"id": str(obj.get("id", f"{os.path.basename(path)}:{line_no}")),
                   "url": obj.get("url") or "", "text": text}


def read_parquet(path, errors):
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception:  # pyarrow raises ArrowInvalid / OSError for a broken footer
        errors["broken_stream"] += 1
        return
    names = set(pf.schema_arrow.names)
    if "text" not in names:
        raise ValueError(f"{path}: expected a 'text' column (FineWeb's schema), found {sorted(names)}")
    columns = ["text"] + [c for c in ("id", "url") if c in names]
    n = 0
    try:
        for batch in pf.iter_batches(batch_size=1024, columns=columns):
            cols = batch.to_pydict()
            for i, text in enumerate(cols["text"]):
                n += 1
                if text is None:
                    errors["bad_row"] += 1
                    continue
                yield {"id": str(cols["id"][i]) if "id" in cols else f"{os.path.basename(path)}:{n}",
                       "url": (cols["url"][i] or "") if "url" in cols else "", "text": text}
    except OSError:
        errors["broken_stream"] += 1


def read_text(path, errors):
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError:
        errors["undecodable"] += 1
        return
    yield {"id": path, "url": "", "text": text}
