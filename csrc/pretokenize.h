/* Step 1 of byte-level BPE in C: the regex pre-split as hand-written scanners (minigpt._bpe).
 * A header of static inline functions, so the scanners inline into the encoder's and the
 * trainer's loops (as separate functions they cost the encoder 10% of its speed).
 *
 * The reference is minigpt/tokenizer/pretokenize.py, i.e. the `regex` module running tiktoken's
 * GPT-2 and GPT-4 patterns; tests check the scanners against it on drawn text and on every code
 * point. Scanning by hand instead of running a regex engine is where the C encoder beats tiktoken.
 */
#ifndef MINIGPT_PRETOKENIZE_H
#define MINIGPT_PRETOKENIZE_H
#include <stddef.h>
#include <stdint.h>

#include "bpe.h"

/* ------------------------------------------------------------------------------------------ */
/* Unicode classes. The table (one byte per code point, 0x110000 of them) is computed by Python  */
/* from the `regex` module itself, so \p{L}, \p{N} and \s mean exactly what they mean there.     */

enum { CL_L = 1, CL_N = 2, CL_S = 4 };
extern const uint8_t *g_cls;  /* the class table, set by bpe_set_classes (defined in bpe.c) */


/* class of the code point starting at s[i] (i < n); its byte length goes to *len.
 * Input is valid UTF-8 (Python's str.encode); a stray byte is read as one "other" code point. */
static inline int cls_at(const uint8_t *s, int64_t n, int64_t i, int *len) {
    uint32_t c = s[i];
    if (c < 0x80) { *len = 1; return g_cls[c]; }
    int L = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    if (L == 1 || i + L > n) { *len = 1; return 0; }
    uint32_t cp = c & (0x7F >> L);
    for (int k = 1; k < L; k++) {
        if ((s[i + k] & 0xC0) != 0x80) { *len = 1; return 0; }
        cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    *len = L;
    return cp < 0x110000 ? g_cls[cp] : 0;
}

#define IS_OTHER(c) (!((c) & (CL_L | CL_N | CL_S)))

/* Whitespace run starting at i (s[i] is whitespace). The tail of both patterns:
 *   \s++$ | [\s*[\r\n] (gpt4 only)] | \s+(?!\S) | \s                                          */
static inline int64_t whitespace_tail(const uint8_t *s, int64_t n, int64_t i, int newline_rule) {
    int64_t j = i, last = i, last_nl = -1;
    while (j < n) {
        int l, c = cls_at(s, n, j, &l);
        if (!(c & CL_S)) break;
        if (s[j] == '\r' || s[j] == '\n') last_nl = j;
        last = j;
        j += l;
    }
    if (j == n) return n;                              /* \s++$ : all of it, at the end     */
    if (newline_rule && last_nl >= 0) return last_nl + 1; /* \s*[\r\n] : up to the last newline */
    if (last > i) return last;                         /* \s+(?!\S) : all but the last one  */
    return j;                                          /* \s : the single whitespace char   */
}

/* GPT-2 (tiktoken r50k):
 * '(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s */
static inline int64_t next_gpt2(const uint8_t *s, int64_t n, int64_t i) {
    if (s[i] == '\'' && i + 1 < n) {
        uint8_t c = s[i + 1];
        if (c == 's' || c == 'd' || c == 'm' || c == 't') return i + 2;
        if (i + 2 < n) {
            uint8_t d = s[i + 2];
            if ((c == 'l' && d == 'l') || (c == 'v' && d == 'e') || (c == 'r' && d == 'e')) return i + 3;
        }
    }
    int l, c = cls_at(s, n, i, &l);
    int64_t j = i;
    if (s[i] == ' ' && i + 1 < n) {                    /* the optional leading space */
        int l1, c1 = cls_at(s, n, i + 1, &l1);
        if (!(c1 & CL_S)) { j = i + 1; c = c1; l = l1; }
    }
    if (!(c & CL_S)) {                                 /* a run of letters, digits or others */
        int kind = c & (CL_L | CL_N);
        j += l;
        while (j < n) {
            int lj, cj = cls_at(s, n, j, &lj);
            if (kind ? !(cj & kind) : !IS_OTHER(cj)) break;
            j += lj;
        }
        return j;
    }
    return whitespace_tail(s, n, i, 0);
}

/* GPT-4 (tiktoken cl100k):
 * '(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+
 * |\s++$|\s*[\r\n]|\s+(?!\S)|\s                                                            */
static inline int lower(uint8_t c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

static inline int64_t next_gpt4(const uint8_t *s, int64_t n, int64_t i) {
    if (s[i] == '\'' && i + 1 < n) {
        int c = lower(s[i + 1]);
        if (c == 's' || c == 'd' || c == 'm' || c == 't') return i + 2;
        /* case-insensitive 's' also matches U+017F (long s, UTF-8 C5 BF), as in `regex` */
        if (s[i + 1] == 0xC5 && i + 2 < n && s[i + 2] == 0xBF) return i + 3;
        if (i + 2 < n) {
            int d = lower(s[i + 2]);
            if ((c == 'l' && d == 'l') || (c == 'v' && d == 'e') || (c == 'r' && d == 'e')) return i + 3;
        }
    }
    int l, c = cls_at(s, n, i, &l);
    int64_t j;
    /* [^\r\n\p{L}\p{N}]?+\p{L}++ */
    j = -1;
    if (c & CL_L) j = i;
    else if (!(c & CL_N) && s[i] != '\r' && s[i] != '\n' && i + l < n) {
        int l1, c1 = cls_at(s, n, i + l, &l1);
        if (c1 & CL_L) j = i + l;
    }
    if (j >= 0) {
        while (j < n) {
            int lj, cj = cls_at(s, n, j, &lj);
            if (!(cj & CL_L)) break;
            j += lj;
        }
        return j;
    }
    /* \p{N}{1,3}+ */
    if (c & CL_N) {
        j = i + l;
        for (int k = 1; k < 3 && j < n; k++) {
            int lj, cj = cls_at(s, n, j, &lj);
            if (!(cj & CL_N)) break;
            j += lj;
        }
        return j;
    }
    /*  ?[^\s\p{L}\p{N}]++[\r\n]*+ */
    j = i;
    if (s[i] == ' ' && i + 1 < n) {
        int l1, c1 = cls_at(s, n, i + 1, &l1);
        if (IS_OTHER(c1)) { j = i + 1; c = c1; l = l1; }
    }
    if (IS_OTHER(c)) {
        j += l;
        while (j < n) {
            int lj, cj = cls_at(s, n, j, &lj);
            if (!IS_OTHER(cj)) break;
            j += lj;
        }
        while (j < n && (s[j] == '\r' || s[j] == '\n')) j++;
        return j;
    }
    return whitespace_tail(s, n, i, 1);
}

/* end of the chunk that starts at i; pattern 0 = no split (the whole text is one chunk) */
static inline int64_t bpe_next_chunk(int pattern, const uint8_t *s, int64_t n, int64_t i) {
    if (pattern == BPE_GPT2) return next_gpt2(s, n, i);
    if (pattern == BPE_GPT4) return next_gpt4(s, n, i);
    return n;
}

#endif
