// Gopher repetition's n-gram statistics over a document's words, in one pass per n: the hot part
// of minigpt/data/filters.py (top_ngram_chars and duplicated_ngram_chars are its Python twins).
//
// Input: the words' UTF-8 bytes, each followed by a 0 byte. For n-grams as datatrove forms them:
//   top n-gram (n = 2, 3, 4): " ".join(gram) counted; the most common (ties: seen first) gives
//     len(" ".join(gram)) * count. Words hold no spaces, so equal joins are equal word sequences.
//   duplicated n-grams (n = 5..10): "".join(gram) walked left to right; a gram seen before adds
//     its length and jumps n words, else it is remembered and the walk steps one word.
//     Equal "".join strings are equal byte ranges of the words written back to back.
// Lengths are in characters (code points), as Python's len. Hash tables with linear probing,
// sized to twice the number of n-grams; keys are compared in full, so a hash collision costs
// time, never a wrong answer.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint64_t mix64(uint64_t h) {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

static uint64_t bytes_hash(const uint8_t *s, int64_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (int64_t i = 0; i < n; i++) h = (h ^ s[i]) * 1099511628211ULL;
    return mix64(h);
}

typedef struct {
    int64_t N;             // words
    int64_t *off;          // (N + 1,) byte offsets into cat, the words back to back
    uint8_t *cat;
    int64_t *chars;        // (N,) characters per word
    int32_t *id;           // (N,) word ids: equal words, equal ids
    uint64_t *id_hash;     // (N,) a hash of each word's id
    uint64_t *prefix;      // (total bytes + 1,) polynomial hash of cat's prefixes
    uint64_t *power;       // (total bytes + 1,) BASE^k
} doc_words;

#define BASE 0x100000001b3ULL

static uint64_t range_hash(const doc_words *d, int64_t a, int64_t b) {  // bytes [a, b) of cat
    return d->prefix[b] - d->prefix[a] * d->power[b - a];
}

static int64_t table_size(int64_t n) {
    int64_t s = 16;
    while (s < 2 * n + 2) s <<= 1;
    return s;
}

// words -> ids (first occurrence order) with a table keyed by the word bytes
static int build_words(doc_words *d, const uint8_t *buf, int64_t nbytes) {
    int64_t N = 0;
    for (int64_t i = 0; i < nbytes; i++) N += buf[i] == 0;
    d->N = N;
    d->off = malloc(sizeof(int64_t) * (size_t)(N + 1));
    d->cat = malloc((size_t)(nbytes - N + 1));
    d->chars = malloc(sizeof(int64_t) * (size_t)(N + 1));
    d->id = malloc(sizeof(int32_t) * (size_t)(N + 1));
    d->id_hash = malloc(sizeof(uint64_t) * (size_t)(N + 1));
    d->prefix = malloc(sizeof(uint64_t) * (size_t)(nbytes - N + 2));
    d->power = malloc(sizeof(uint64_t) * (size_t)(nbytes - N + 2));
    int64_t size = table_size(N);
    int32_t *table = malloc(sizeof(int32_t) * (size_t)size);
    if (!d->off || !d->cat || !d->chars || !d->id || !d->id_hash || !d->prefix || !d->power || !table) {
        free(table);
        return -1;
    }
    memset(table, 0xff, sizeof(int32_t) * (size_t)size);
    int64_t w = 0, pos = 0, start = 0;
    int32_t next_id = 0;
    d->prefix[0] = 0;
    d->power[0] = 1;
    for (int64_t i = 0; i < nbytes; i++) {
        if (buf[i] != 0) {
            d->cat[pos] = buf[i];
            d->prefix[pos + 1] = d->prefix[pos] * BASE + buf[i] + 1;
            d->power[pos + 1] = d->power[pos] * BASE;
            pos++;
            continue;
        }
        int64_t len = i - start, chars = 0;
        for (int64_t k = start; k < i; k++) chars += (buf[k] & 0xC0) != 0x80;
        d->off[w] = pos - len;
        d->chars[w] = chars;
        uint64_t h = bytes_hash(buf + start, len);
        int64_t slot = (int64_t)(h & (uint64_t)(size - 1));
        for (;;) {
            int32_t j = table[slot];
            if (j < 0) {
                table[slot] = (int32_t)w;
                d->id[w] = next_id++;
                break;
            }
            int64_t jl = (j + 1 < w ? d->off[j + 1] : pos - len) - d->off[j];
            if (jl == len && memcmp(d->cat + d->off[j], buf + start, (size_t)len) == 0) {
                d->id[w] = d->id[j];
                break;
            }
            slot = (slot + 1) & (size - 1);
        }
        d->id_hash[w] = mix64((uint64_t)d->id[w] + 0x9E3779B97F4A7C15ULL);
        w++;
        start = i + 1;
    }
    d->off[N] = pos;
    free(table);
    return 0;
}

static void free_words(doc_words *d) {
    free(d->off); free(d->cat); free(d->chars); free(d->id); free(d->id_hash); free(d->prefix); free(d->power);
}

static uint64_t gram_id_hash(const doc_words *d, int64_t i, int n) {
    uint64_t h = 0;
    for (int k = 0; k < n; k++) h = mix64(h ^ d->id_hash[i + k]);
    return h;
}

static int same_ids(const doc_words *d, int64_t a, int64_t b, int n) {
    for (int k = 0; k < n; k++)
        if (d->id[a + k] != d->id[b + k]) return 0;
    return 1;
}

// len(" ".join(gram)) * count of the most common n-gram (ties: the one seen first); 0 when N < n
static int64_t top_ngram(const doc_words *d, int n, int64_t *table, int64_t *count) {
    int64_t G = d->N - n + 1;
    if (G <= 0) return 0;
    int64_t size = table_size(G);
    memset(table, 0xff, sizeof(int64_t) * (size_t)size);
    int64_t best = -1, best_count = 0;
    for (int64_t i = 0; i < G; i++) {
        int64_t slot = (int64_t)(gram_id_hash(d, i, n) & (uint64_t)(size - 1)), j;
        for (;;) {
            j = table[slot];
            if (j < 0) {
                table[slot] = i;
                count[i] = 1;
                j = i;
                break;
            }
            if (same_ids(d, j, i, n)) {
                count[j]++;
                break;
            }
            slot = (slot + 1) & (size - 1);
        }
        if (count[j] > best_count || (count[j] == best_count && j < best)) {
            best_count = count[j];
            best = j;
        }
    }
    int64_t chars = n - 1;
    for (int k = 0; k < n; k++) chars += d->chars[best + k];
    return chars * best_count;
}

// datatrove's find_all_duplicate over "".join(gram) strings
static int64_t duplicated_ngrams(const doc_words *d, int n, int64_t *table) {
    int64_t G = d->N - n + 1;
    if (G <= 0) return 0;
    int64_t size = table_size(G);
    memset(table, 0xff, sizeof(int64_t) * (size_t)size);
    int64_t total = 0, i = 0;
    while (i < G) {
        int64_t a = d->off[i], b = d->off[i + n];
        int64_t slot = (int64_t)(mix64(range_hash(d, a, b)) & (uint64_t)(size - 1));
        int seen = 0;
        for (;;) {
            int64_t j = table[slot];
            if (j < 0) {
                table[slot] = i;
                break;
            }
            int64_t ja = d->off[j], jb = d->off[j + n];
            if (jb - ja == b - a && memcmp(d->cat + ja, d->cat + a, (size_t)(b - a)) == 0) {
                seen = 1;
                break;
            }
            slot = (slot + 1) & (size - 1);
        }
        if (seen) {
            for (int k = 0; k < n; k++) total += d->chars[i + k];
            i += n;
        } else {
            i += 1;
        }
    }
    return total;
}

// buf: nbytes of words, each ended by a 0 byte. top[k] for n = top_n[k]; dup[k] for n = dup_n[k].
// Returns 0, or -1 when out of memory.
int gopher_ngram_stats(const uint8_t *buf, int64_t nbytes, const int *top_n, int n_top, int64_t *top,
                       const int *dup_n, int n_dup, int64_t *dup) {
    doc_words d;
    if (build_words(&d, buf, nbytes) != 0) {
        free_words(&d);
        return -1;
    }
    int64_t *table = malloc(sizeof(int64_t) * (size_t)table_size(d.N));
    int64_t *count = malloc(sizeof(int64_t) * (size_t)(d.N + 1));
    if (!table || !count) {
        free(table); free(count); free_words(&d);
        return -1;
    }
    for (int k = 0; k < n_top; k++) top[k] = top_ngram(&d, top_n[k], table, count);
    for (int k = 0; k < n_dup; k++) dup[k] = duplicated_ngrams(&d, dup_n[k], table);
    free(table); free(count); free_words(&d);
    return 0;
}

// ------------------------------------------------------------------------------------------------
// MinHash signature of a document's normalised words (minigpt/data/minhash.py has the twin):
// word hash = mix64(FNV-1a 64 of its bytes); a shingle of n consecutive words mixes their hashes
// position by position, h = mix(h ^ word) with mix(x) = (x * C) ^ ((x * C) >> 31), then h mod p;
// the signature is, for each permutation (a, b), the minimum of (a * h + b) mod p over the
// shingles (a repeated shingle cannot change a minimum, so there is no need to deduplicate).
// A document shorter than n words is one shingle of all its words.
#define MH_PRIME 4294967291ULL

static uint64_t fnv1a64(const uint8_t *s, int64_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (int64_t i = 0; i < n; i++) h = (h ^ s[i]) * 1099511628211ULL;
    return h;
}

// buf: words each ended by a 0 byte (at least one word). out: (n_hashes,) uint32.
int minhash_signature(const uint8_t *buf, int64_t nbytes, int n, const uint64_t *a, const uint64_t *b,
                      int n_hashes, uint32_t *out) {
    int64_t N = 0;
    for (int64_t i = 0; i < nbytes; i++) N += buf[i] == 0;
    uint64_t *wh = malloc(sizeof(uint64_t) * (size_t)(N + 1));
    uint64_t *mins = malloc(sizeof(uint64_t) * (size_t)n_hashes);
    if (!wh || !mins) {
        free(wh); free(mins);
        return -1;
    }
    int64_t w = 0, start = 0;
    for (int64_t i = 0; i < nbytes; i++) {
        if (buf[i] == 0) {
            wh[w++] = mix64(fnv1a64(buf + start, i - start));
            start = i + 1;
        }
    }
    for (int k = 0; k < n_hashes; k++) mins[k] = UINT64_MAX;
    int64_t K = N - n + 1 > 1 ? N - n + 1 : 1;
    int m = N < n ? (int)N : n;
    for (int64_t i = 0; i < K; i++) {
        uint64_t h = 0x9E3779B97F4A7C15ULL;
        for (int j = 0; j < m; j++) {
            h = (h ^ wh[i + j]) * 0xBF58476D1CE4E5B9ULL;
            h ^= h >> 31;
        }
        h %= MH_PRIME;
        for (int k = 0; k < n_hashes; k++) {
            uint64_t v = (a[k] * h + b[k]) % MH_PRIME;
            if (v < mins[k]) mins[k] = v;
        }
    }
    for (int k = 0; k < n_hashes; k++) out[k] = (uint32_t)mins[k];
    free(wh); free(mins);
    return 0;
}
