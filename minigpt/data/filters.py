"""The quality filters of FineWeb, as plain functions on a document's text.

Each filter returns None to keep the document, or a short reason string to drop it (the reason
names the rule, as datatrove does, so a "removed" file says why). c4_quality also rewrites the
text (it drops lines), so it returns (reason, new_text).

The rules and thresholds are datatrove's (GopherRepetitionFilter, GopherQualityFilter,
C4QualityFilter with FineWeb's filter_no_terminal_punct=False, FineWebQualityFilter), which come
from the Gopher paper (Rae et al. 2021, table A1), C4 (Raffel et al. 2020) and FineWeb
(Penedo et al. 2024). Words and sentences are split as datatrove splits English (NLTK's Punkt and
Treebank tokenizers, re-implemented in words.py), so the counts the rules compare are the same.
"""
import re
from collections import Counter
from functools import lru_cache

import regex

from minigpt._data import ffi, lib  # csrc/build_data.py

from . import words

# ------------------------------------------------------------------------------------------------
# words and sentences

@lru_cache(maxsize=4)  # the Gopher filters and FineWeb ask for the same document's words in turn
def split_into_words(text):
    """datatrove's English words: NLTK's Punkt sentences, then Treebank's words (words.py)."""
    return words.split_words(text)


def count_sentences(text):
    """datatrove's English sentence count: Punkt's sentences (words.py)."""
    return len(words.split_sentences(text))


# datatrove's punctuation (utils/text.py): ASCII and CJK marks plus control characters, and its
# sentence terminals, which are Unicode's Sentence_Terminal property plus three Khmer signs
# (the two lists differ only by a few characters added in newer Unicode versions).
# A "symbol word" is made only of these; a line "ends in punctuation" when its last char is a terminal.
PUNCTUATION = set(
    "!/—”:％１〈&(、━\\【#%「」，】；+^]~“《„';’{|∶´[=-`*．（–？！：$～«〉,><》)?）。…@_.\"}►»"
    + "".join(chr(x) for a, b in ((0, 9), (11, 13), (13, 32), (127, 160)) for x in range(a, b))
)
_TERMINAL = r"\p{Sentence_Terminal}\u17d6\u17d9\u17da"
SYMBOL_WORD_RE = regex.compile("[" + "".join(regex.escape(c) for c in sorted(PUNCTUATION)) + _TERMINAL + "]+")
ENDS_TERMINAL_RE = regex.compile("[" + _TERMINAL + "]$")


def is_symbol_word(word):
    return SYMBOL_WORD_RE.fullmatch(word) is not None


# ------------------------------------------------------------------------------------------------
# Gopher repetition (Rae et al. 2021, table A1)

def find_duplicates(items):
    """Number of items that repeat an earlier item, and the characters in those repeats."""
    seen, dup_items, dup_chars = set(), 0, 0
    for x in items:
        if x in seen:
            dup_items += 1
            dup_chars += len(x)
        else:
            seen.add(x)
    return dup_items, dup_chars


def top_ngram_chars(words, n):
    """Characters covered by the most frequent n-gram: len(" ".join(ngram)) * count (ties: the
    n-gram seen first, as Counter.most_common does)."""
    counts = Counter(" ".join(words[i:i + n]) for i in range(len(words) - n + 1))
    if not counts:
        return 0
    gram, count = counts.most_common(1)[0]
    return len(gram) * count


def duplicated_ngram_chars(words, n):
    """Characters in n-grams that repeat an earlier n-gram; a repeat jumps over its n words so
    overlapping repeats are not counted twice (datatrove's find_all_duplicate)."""
    seen, chars, i = set(), 0, 0
    while i < len(words) - n + 1:
        gram = "".join(words[i:i + n])
        if gram in seen:
            chars += len(gram)
            i += n
        else:
            seen.add(gram)
            i += 1
    return chars


# The same two quantities for every n at once, in C (csrc/textstats.c): words become ids, n-grams
# are hashed, nothing is joined. The functions above are its twins (and the path for a text
# holding a NUL character, which the C side uses as its word separator).

def ngram_stats(words, top_n, dup_n):
    """([top_ngram_chars(words, n) for n in top_n], [duplicated_ngram_chars(words, n) for n in dup_n])."""
    if not words:
        return [0] * len(top_n), [0] * len(dup_n)
    buf = ("\0".join(words) + "\0").encode("utf-8", "surrogatepass")
    top, dup = ffi.new("int64_t[]", max(1, len(top_n))), ffi.new("int64_t[]", max(1, len(dup_n)))
    if lib.gopher_ngram_stats(buf, len(buf), list(top_n), len(top_n), top, list(dup_n), len(dup_n), dup) != 0:
        raise MemoryError("gopher_ngram_stats: out of memory")
    return list(top)[:len(top_n)], list(dup)[:len(dup_n)]


PARAGRAPH_SPLIT = re.compile(r"\n{2,}")
LINE_SPLIT = re.compile(r"\n+")


def gopher_repetition(text, dup_line_frac=0.3, dup_para_frac=0.3, dup_line_char_frac=0.2,
                      dup_para_char_frac=0.2, top_ngrams=((2, 0.20), (3, 0.18), (4, 0.16)),
                      dup_ngrams=((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))):
    if not text:
        return "empty"
    # (a threshold of 1.0 switches a rule off: no fraction exceeds it)
    paragraphs = PARAGRAPH_SPLIT.split(text.strip())
    dups, chars = find_duplicates(paragraphs)
    if dups / len(paragraphs) > dup_para_frac:
        return "dup_para_frac"
    if chars / len(text) > dup_para_char_frac:
        return "dup_para_char_frac"
    lines = LINE_SPLIT.split(text)
    dups, chars = find_duplicates(lines)
    if dups / len(lines) > dup_line_frac:
        return "dup_line_frac"
    if chars / len(text) > dup_line_char_frac:
        return "dup_line_char_frac"
    words = split_into_words(text)
    if "\0" in text:  # the C side separates words with NUL: the Python twins take this rare text
        top = [top_ngram_chars(words, n) for n, _ in top_ngrams]
        dup = [duplicated_ngram_chars(words, n) for n, _ in dup_ngrams]
    else:
        top, dup = ngram_stats(words, [n for n, _ in top_ngrams], [n for n, _ in dup_ngrams])
    for (n, frac), chars in zip(top_ngrams, top):
        if chars / len(text) > frac:
            return f"top_{n}_gram"
    for (n, frac), chars in zip(dup_ngrams, dup):
        if chars / len(text) > frac:
            return f"duplicated_{n}_n_grams"
    return None


# ------------------------------------------------------------------------------------------------
# Gopher quality

STOP_WORDS = frozenset(["the", "be", "to", "of", "and", "that", "have", "with"])


def gopher_quality(text, min_words=50, max_words=100_000, min_mean_word_len=3, max_mean_word_len=10,
                   max_symbol_word_ratio=0.1, max_bullet_lines=0.9, max_ellipsis_lines=0.3,
                   min_alpha_words=0.8, min_stop_words=2, stop_words=STOP_WORDS):
    words = split_into_words(text)
    n_words = len(words)
    vocab = Counter(words)  # each distinct word is classified once
    # (an ASCII letters-and-digits word holds no punctuation: the regex is only asked about the rest)
    symbol_only = {w for w in vocab if not (w.isascii() and w.isalnum()) and is_symbol_word(w)}
    n_content = n_words - sum(vocab[w] for w in symbol_only)               # pure-symbol tokens do not count
    if n_content < min_words:
        return "gopher_short_doc"
    if n_content > max_words:
        return "gopher_long_doc"
    mean_len = sum(len(w) * c for w, c in vocab.items() if w not in symbol_only) / n_content
    if mean_len < min_mean_word_len:
        return "gopher_below_avg_threshold"
    if mean_len > max_mean_word_len:
        return "gopher_above_avg_threshold"
    if text.count("#") / n_words > max_symbol_word_ratio:
        return "gopher_too_many_hashes"
    if (text.count("...") + text.count("…")) / n_words > max_symbol_word_ratio:
        return "gopher_too_many_ellipsis"
    lines = text.splitlines()
    if sum(s.lstrip().startswith(("•", "-")) for s in lines) / len(lines) > max_bullet_lines:
        return "gopher_too_many_bullets"
    if sum(s.rstrip().endswith(("...", "…")) for s in lines) / len(lines) > max_ellipsis_lines:
        return "gopher_too_many_end_ellipsis"
    if sum(c for w, c in vocab.items() if w.isalpha() or any(ch.isalpha() for ch in w)) / n_words < min_alpha_words:
        return "gopher_below_alpha_threshold"
    if len(stop_words.intersection(vocab)) < min_stop_words:
        return "gopher_enough_stop_words"
    return None


# ------------------------------------------------------------------------------------------------
# C4 (line-level cleaning; FineWeb runs it without the terminal-punctuation rule)

CITATION_RE = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
POLICY_SUBSTRINGS = ("terms of use", "privacy policy", "cookie policy", "uses cookies",
                     "use of cookies", "use cookies")


def c4_quality(text, min_words_per_line=3, max_word_length=1000, min_sentences=5,
               terminal_punct=False):
    """Returns (reason, cleaned_text): reason None keeps the document with the cleaned text."""
    kept, n_sentences = [], 0
    for line in text.splitlines():
        line = line.strip()
        words = line.split()
        if any(len(w) > max_word_length for w in words):
            continue
        line = CITATION_RE.sub("", line)
        if terminal_punct and (not line.endswith((".", "?", "!", '"', "'")) or line.endswith("...")):
            continue
        if len(words) < min_words_per_line:
            continue
        low = line.lower()
        if "lorem ipsum" in low:
            return "lorem_ipsum", text
        if "javascript" in low:
            continue
        if "{" in line:
            return "curly_bracket", text
        if any(p in low for p in POLICY_SUBSTRINGS):
            continue
        if n_sentences < min_sentences:  # only "at least min_sentences?" matters: stop counting there
            n_sentences += count_sentences(line)
        kept.append(line)
    if n_sentences < min_sentences:
        return "too_few_sentences", text
    return None, "\n".join(kept).strip()


# ------------------------------------------------------------------------------------------------
# FineWeb quality

def fineweb_quality(text, line_punct_thr=0.12, short_line_thr=0.67, short_line_length=30,
                    char_dup_ratio=0.01, new_line_ratio=0.3):
    lines = [line for line in text.split("\n") if line.strip()]
    if not lines:
        return "empty"
    if sum(ENDS_TERMINAL_RE.search(line) is not None for line in lines) / len(lines) < line_punct_thr:
        return "line_punct_ratio"
    if sum(len(line) <= short_line_length for line in lines) / len(lines) > short_line_thr:
        return "short_line_ratio"
    if find_duplicates(lines)[1] / max(1, len(text.replace("\n", ""))) > char_dup_ratio:
        return "char_dup_ratio"
    # every whitespace-separated chunk gives at least one word, so when the ratio is fine against
    # the chunk count it is fine against the word count, and the text need not be split
    newlines = text.count("\n")
    if newlines / max(1, len(text.split())) > new_line_ratio and \
            newlines / max(1, len(split_into_words(text))) > new_line_ratio:
        return "list_ratio"
    return None


# ------------------------------------------------------------------------------------------------
# URL filter: a user-given block list of domains / URLs, banned words, soft-banned words

URL_WORD_SPLIT = re.compile(r"[^a-zA-Z0-9]+")


def read_word_list(path):
    """One entry per line; blank lines and lines starting with # (then a space or nothing) skipped."""
    if path is None:
        return set()
    with open(path, encoding="utf-8") as f:
        return {line.strip().lower() for line in f if line.strip() and not line.startswith("# ")}


def url_host(url):
    m = re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://(?:[^@/]*@)?([^/:?#]+)", url or "")
    return m.group(1).lower().rstrip(".") if m else ""


def url_filter(url, blocklist=frozenset(), banned_words=frozenset(), soft_banned_words=frozenset(),
               soft_threshold=2):
    """blocklist holds domains (blocking every subdomain too) and full URLs."""
    if not url:
        return None
    if url in blocklist:
        return "url"
    host = url_host(url)
    parts = host.split(".")
    for i in range(len(parts) - 1):  # a.b.example.com, b.example.com, example.com
        if ".".join(parts[i:]) in blocklist:
            return "domain"
    words = set(URL_WORD_SPLIT.split(url.lower()))
    if words & banned_words:
        return "hard_blacklisted"
    if len(words & soft_banned_words) >= soft_threshold:
        return "soft_blacklisted"
    return None
