"""Words and sentences exactly as datatrove splits English: NLTK's Punkt + Treebank, re-implemented.

datatrove's English word tokenizer is nltk.word_tokenize: Punkt splits the text into sentences,
NLTK's improved Treebank tokenizer splits each sentence into words; its sentence tokenizer is
Punkt alone. The Gopher, C4 and FineWeb rules count those words and sentences, so a different
split decides some pages differently (a word count 0.2% off moves a page across the 80%
alphabetic-words line). This module gives the same answers, faster:

- Punkt with default parameters (no trained abbreviation, collocation or sentence-starter lists:
  the bench runs NLTK's PunktSentenceTokenizer() that way, as offline datatrove does). Every
  candidate end (. ? ! followed by punctuation or by whitespace and a token) is decided by Punkt's
  two annotation passes over the few tokens around it, which with empty parameters reduce to:
  a token ending in a period breaks unless it is an ellipsis, or an initial ("J.") or a number
  ("3.") followed by punctuation or a lowercase word, or an initial followed by an uppercase word.
- Treebank: its regex cascade, applied to each whitespace-separated chunk of a sentence with the
  context the cascade can see (first / last chunk of the sentence, the whitespace around it), and
  cached per chunk: words repeat, so most chunks are a dictionary hit instead of 25 substitutions.
  A sentence whose head (all but its last chunk) holds only characters with context-free rules is
  split in one pass; the rare shapes the chunk framing cannot see run the whole cascade.
tests/test_data_words.py checks all of it against NLTK itself on drawn text.
"""
from functools import lru_cache

import regex as re  # the engine NLTK compiles its rules with (nltk.redos): its \w and \s are Unicode's, not re's

# ------------------------------------------------------------------------------------------------
# Treebank (NLTK's NLTKWordTokenizer), the cascade for one string

TB_STARTING_QUOTES = [
    (re.compile("([«“‘„]|[`]+)"), r" \1 "),
    (re.compile(r'^"'), r"``"),
    (re.compile(r"(``)"), r" \1 "),
    (re.compile(r"([ \(\[{<])(\"|\'{2})"), r"\1 `` "),
    (re.compile(r"(?i)(?<!\w)(')(?!(?:re|ve|ll|m|t|s|d|n)\b)(?=\w)"), r"\1 "),
]
TB_PUNCTUATION = [
    (re.compile(r"([^\.])(\.)([\]\)}>\"\'»”’ ]*+)\s*$"), r"\1 \2 \3 "),
    (re.compile(r"([:,])([^\d])"), r" \1 \2"),
    (re.compile(r"([:,])$"), r" \1 "),
    (re.compile(r"\.{2,}"), r" \g<0> "),
    (re.compile(r"[;@#$%&]"), r" \g<0> "),
    (re.compile("[\u2012-\u2015]"), r" \g<0> "),
    (re.compile(r"([^\.])(\.)([\]\)}>\"\']*)\s*$"), r"\1 \2\3 "),
    (re.compile(r"[?!]"), r" \g<0> "),
    (re.compile(r"([^'])' "), r"\1 ' "),
    (re.compile(r"[*]"), r" \g<0> "),
    (re.compile(r"[\]\[\(\)\{\}\<\>]"), r" \g<0> "),
    (re.compile(r"--"), r" -- "),
]
TB_ENDING_QUOTES = [
    (re.compile("([»”’])"), r" \1 "),
    (re.compile(r"''"), " '' "),
    (re.compile(r'"'), " '' "),
    (re.compile(r"\s+"), " "),
    (re.compile(r"([^' ])('[sS]|'[mM]|'[dD]|') "), r"\1 \2 "),
    (re.compile(r"([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) "), r"\1 \2 "),
]
TB_CONTRACTIONS = [re.compile(p) for p in (
    r"(?i)\b(can)(not)\b", r"(?i)\b(d)('ye)\b", r"(?i)\b(gim)(me)\b", r"(?i)\b(gon)(na)\b",
    r"(?i)\b(got)(ta)\b", r"(?i)\b(lem)(me)\b", r"(?i)\b(more)('n)\b", r"(?i)\b(wan)(na)(?=\s)",
    r"(?i) ('t)(is)\b", r"(?i) ('t)(was)\b")]


# the characters without which each rule cannot match (the cascade only ever adds spaces, and
# `` or '' where a " was): a rule whose triggers are absent is skipped, the same result faster
def _triggers(chars):
    return frozenset(chars)


TB_TRIGGERS = [_triggers(t) for t in (
    "«“‘„`", '"', '"`', "\"'", "'",                                          # starting quotes
    ".", ":,", ":,", ".", ";@#$%&", "\u2012\u2013\u2014\u2015", ".", "?!", "'", "*", "[](){}<>", "-",
    "»”’", "'\"", '"', " \t\n\r\x0b\x0c", "'", "'")]                      # ending quotes
CONTRACTION_HINT = re.compile(r"(?i)cannot|gimme|gonna|gotta|lemme|wanna|'")


def treebank_words(text):
    """NLTK's improved Treebank tokenizer on one sentence: every rule in order, skipping a rule
    only when a character it needs is absent."""
    chars = set(text) | {" "}
    if '"' in chars:
        chars |= {"`", "'"}
    rules = TB_STARTING_QUOTES + TB_PUNCTUATION
    for (regexp, sub), trig in zip(rules, TB_TRIGGERS):
        if not trig.isdisjoint(chars):
            text = regexp.sub(sub, text)
    text = " " + text + " "
    if "'" in chars:  # the ending rules look at quotes (and \s+ only matters to them)
        for (regexp, sub), trig in zip(TB_ENDING_QUOTES, TB_TRIGGERS[len(rules):]):
            if not trig.isdisjoint(chars):
                text = regexp.sub(sub, text)
    elif not {"»", "”", "’"}.isdisjoint(chars):
        text = TB_ENDING_QUOTES[0][0].sub(TB_ENDING_QUOTES[0][1], text)
    if CONTRACTION_HINT.search(text):
        for regexp in TB_CONTRACTIONS:
            text = regexp.sub(r" \1 \2 ", text)
    return text.split()


def treebank_words_reference(text):
    """The cascade with no rule skipped (the specification treebank_words is tested against)."""
    for regexp, sub in TB_STARTING_QUOTES + TB_PUNCTUATION:
        text = regexp.sub(sub, text)
    text = " " + text + " "
    for regexp, sub in TB_ENDING_QUOTES:
        text = regexp.sub(sub, text)
    for regexp in TB_CONTRACTIONS:
        text = regexp.sub(r" \1 \2 ", text)
    return text.split()


SENTINEL = "\x01"  # stands for "more text follows" after a chunk that is not the sentence's last


# a chunk made only of characters no rule looks at (and no "--", no "cannot"-like word) is one word
PLAIN_RE = re.compile("[^\"'`«“‘„»”’.,:;@#$%&\u2012-\u2015?!*\\[\\](){}<>]+")
CONTRACTION_WORD = re.compile(r"(?i)cannot|gimme|gonna|gotta|lemme|wanna")
MID_CACHE = {}  # chunk -> its words, for chunks inside a sentence with spaces either side (most chunks)


@lru_cache(maxsize=1 << 18)
def chunk_words(chunk, first, last, before, after):
    """Treebank's words of one whitespace-free chunk of a sentence. before / after: the whitespace
    character beside it (" " or another; only a literal space matters to the cascade), ignored at
    the sentence's first / last chunk. The rules that look past a chunk only test that neighbour
    or the string's ends, so the chunk alone, so framed, gives the words it gives in the sentence."""
    if is_plain(chunk):
        return (chunk,)
    if last and len(chunk) > 1 and chunk[-1] == "." and chunk[-2] != "." and is_plain(chunk[:-1]):
        return (chunk[:-1], ".")                                # the sentence's final period
    s = (("" if first else before) + chunk + ("" if last else after + SENTINEL))
    words = treebank_words(s)
    return tuple(words[:-1] if not last else words)


def is_plain(c):
    return PLAIN_RE.fullmatch(c) is not None and "--" not in c and CONTRACTION_WORD.search(c) is None


def mid_chunk_words(c):
    if len(MID_CACHE) >= 1 << 18:
        MID_CACHE.clear()
    words = MID_CACHE[c] = chunk_words(c, False, False, " ", " ")
    return words


def clear_caches():
    MID_CACHE.clear()
    chunk_words.cache_clear()


# The sentence's head (all but its last chunk) in one go when it holds only characters whose
# rules split them off wherever they are: brackets, ; @ # $ % & ? ! *, figure dashes, the curly
# quotes and guillemets, runs of two or more dots, "--"; and , or : when whitespace follows (then the
# Treebank rule is the same). The rules touch disjoint characters and only insert spaces, so one
# pass equals the cascade's passes. A single . inside a sentence is no rule's business.
QUOTES_RE = re.compile("[\"'`]")
ALWAYS_SPLIT = str.maketrans({c: f" {c} " for c in ";@#$%&?!*[](){}<>\u2012\u2013\u2014\u2015«“‘„»”’"})
RUNS_RE = re.compile(r"\.{2,}|--")
COMMA_BEFORE_SPACE_RE = re.compile(r"[:,](?=\s)")
COMMA_ELSE_RE = re.compile(r"[:,][^\s\d]|[:,]$")
GENERAL_HEAD_RE = re.compile(  # any of these in a head sends it to the general path
    "|".join([QUOTES_RE.pattern, COMMA_ELSE_RE.pattern, CONTRACTION_WORD.pattern.removeprefix("(?i)")]),
    re.IGNORECASE)
CLOSERS_RE = re.compile("[\\]\\)}>\"'»”’]+")  # a last chunk of these lets the final-period rule reach back


def head_words(head):
    """Treebank's words of a sentence's head, or None when it needs the general path."""
    if GENERAL_HEAD_RE.search(head):
        return None
    head = head.translate(ALWAYS_SPLIT)
    if ".." in head or "--" in head:
        head = RUNS_RE.sub(r" \g<0> ", head)
    if head.isprintable():  # the only whitespace is " ": plain replaces do the , and : rule
        return head.replace(", ", " , ").replace(": ", " : ").split()
    return COMMA_BEFORE_SPACE_RE.sub(r" \g<0>", head).split()


def sentence_words(sentence):
    """treebank_words(sentence), from the head in one go or the cached chunks."""
    chunks = sentence.split()
    n = len(chunks)
    if n == 0:
        return []
    last = chunks[-1]
    if (n > 1 and CLOSERS_RE.fullmatch(last)) or sentence[0].isspace():  # rare: the cascade itself
        return treebank_words(sentence)
    if '"' not in sentence and "'" not in sentence:  # only quotes care which whitespace is beside them
        if n == 1:
            return list(chunk_words(last, True, True, " ", " "))
        if sentence.endswith(last):
            head = head_words(sentence[:len(sentence) - len(last)])
            if head is not None:
                return head + list(chunk_words(last, False, True, " ", " "))
        out = list(chunk_words(chunks[0], True, False, " ", " "))
        get = MID_CACHE.get
        for k in range(1, n - 1):
            c = chunks[k]
            words = get(c)
            out += words if words is not None else mid_chunk_words(c)
        out += chunk_words(last, False, True, " ", " ")
        return out
    spans = [(m.start(), m.end()) for m in CHUNK_RE.finditer(sentence)]
    out = []
    for k, (s, e) in enumerate(spans):
        before = sentence[s - 1] if s > 0 else " "
        after = sentence[e] if e < len(sentence) else " "
        out += chunk_words(sentence[s:e], k == 0, k == len(spans) - 1, before, after)
    return out


CHUNK_RE = re.compile(r"\S+")

# ------------------------------------------------------------------------------------------------
# Punkt with default parameters

NON_WORD = r"""(?:[)";}\]\*:@'\({\[‘’“”«»?!])"""
MULTI_CHAR = r"(?:\-{2,}|\.{2,}|(?:\.\s){2,}\.)"
WORD_START = r"""[^\("\`{\[:;&\#\*@\)}\]\-,]"""
PUNKT_WORD_RE = re.compile(
    rf"({MULTI_CHAR}|(?={WORD_START})\S+?(?=\s|$|{NON_WORD}|{MULTI_CHAR}|,(?=$|\s|{NON_WORD}|{MULTI_CHAR}))|\S)")
PERIOD_CONTEXT_RE = re.compile(rf"[.?!](?=(?P<after_tok>{NON_WORD}|\s+(?P<next_tok>\S+)))")
REALIGN_RE = re.compile(r"[\"')\]}\u2018\u2019\u201c\u201d\xab\xbb]+?(?:\s+|(?=--)|$)", re.MULTILINE)
NUMBER_RE = re.compile(r"^-?[\.,]?\d[\d,\.-]*\.?$")
INITIAL_RE = re.compile(r"[^\W\d]\.$")
ELLIPSIS_RE = re.compile(r"\.\.+$")
ASCII_SPACE = " \t\n\r\x0b\x0c"  # Punkt looks back for these (string.whitespace), not Unicode spaces


def punkt_tokens(text):
    return [t for line in text.split("\n") if line.strip() for t in PUNKT_WORD_RE.findall(line)]


def is_break(tok, nxt):
    """Punkt's verdict on one token, given the next (None at the end), with empty parameters."""
    if tok in (".", "?", "!"):
        return True
    if ELLIPSIS_RE.match(tok) or not tok.endswith(".") or tok.endswith(".."):
        return False
    if nxt is None:
        return True
    initial = INITIAL_RE.match(tok) is not None
    if initial or NUMBER_RE.sub("##number##", tok.lower()) == "##number##":
        if nxt in (";", ":", ",", ".", "!", "?") or nxt[0].islower():
            return False                                     # the orthographic heuristic says: no start
        if initial and nxt[0].isupper():
            return False                                     # "J. Bach"
    return True


def contains_break(context):
    toks = punkt_tokens(context)
    return any(is_break(toks[i], toks[i + 1]) for i in range(len(toks) - 1))


def end_contexts(text):
    """Punkt's candidate sentence ends with the text around each (the word before, the match, and
    what follows); a candidate whose word overlaps the next candidate's is dropped."""
    prev_stop, prev_start, prev = 0, 0, None
    for m in PERIOD_CONTEXT_RE.finditer(text):
        before = text[prev_stop:m.start()]
        i = len(before) - 1
        while i >= 0 and before[i] not in ASCII_SPACE:
            i -= 1
        start = i + prev_stop + 1 if i > 0 else prev_start  # (a space at index 0 counts as none, as in NLTK)
        if prev is not None and prev_stop <= start:
            yield prev, text[prev_start:prev_stop] + prev.group() + prev.group("after_tok")
        prev, prev_start, prev_stop = m, start, m.start()
    if prev is not None:
        yield prev, text[prev_start:prev_stop] + prev.group() + prev.group("after_tok")


def sentence_spans(text):
    """(start, end) of each sentence: Punkt's span_tokenize with boundary realignment."""
    slices, last = [], 0
    for m, context in end_contexts(text):
        if contains_break(context):
            slices.append((last, m.end()))
            last = m.start("next_tok") if m.group("next_tok") else m.end()
    slices.append((last, len(text.rstrip())))
    out, realign = [], 0
    for k, (s1, e1) in enumerate(slices):
        s1 += realign
        if k + 1 == len(slices):
            if s1 < e1:
                out.append((s1, e1))
            continue
        s2, e2 = slices[k + 1]
        m = REALIGN_RE.match(text[s2:e2])
        if m:
            out.append((s1, s2 + len(m.group(0).rstrip())))
            realign = m.end()
        else:
            realign = 0
            if s1 < e1:
                out.append((s1, e1))
    return out


NO_SENTENCE_END_RE = re.compile(r"[.?!]")


def split_sentences(text):
    """datatrove's English sent_tokenize: Punkt's sentences, stripped, empty ones dropped."""
    return [s for s in (text[a:b].strip() for a, b in sentence_spans(text)) if s]


def split_words(text):
    """datatrove's English word_tokenize: Treebank's words of each Punkt sentence."""
    if not NO_SENTENCE_END_RE.search(text):  # no . ? ! at all: Punkt sees one sentence
        sentence = text[:len(text.rstrip())]
        return sentence_words(sentence) if sentence else []
    out = []
    for a, b in sentence_spans(text):
        out += sentence_words(text[a:b])
    return out
