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
// MinHash signature as datatrove computes it (minigpt/data/minhash.py has the twin):
//   a shingle = " ".join of 5 consecutive words; its hash = the first 8 bytes of its SHA-1,
//   little-endian; for each permutation (a, b): min over shingles of (a * h + b) mod (2^61 - 1),
//   the product wrapping at 2^64 first, exactly as datatrove's uint64 NumPy expression does.
// A document with fewer than 5 words has no shingle (datatrove writes no signature for it).

static uint32_t rol32(uint32_t x, int r) { return (x << r) | (x >> (32 - r)); }

// SHA-1 (FIPS 180-4) of n bytes; writes the 20-byte digest
static void sha1(const uint8_t *msg, int64_t n, uint8_t *digest) {
    uint32_t h[5] = {0x67452301u, 0xEFCDAB89u, 0x98BADCFEu, 0x10325476u, 0xC3D2E1F0u};
    uint8_t block[64];
    int64_t total = ((n + 8) / 64 + 1) * 64;  // message + 0x80 + zeros + 8-byte length
    for (int64_t off = 0; off < total; off += 64) {
        for (int i = 0; i < 64; i++) {
            int64_t k = off + i;
            uint8_t c;
            if (k < n) c = msg[k];
            else if (k == n) c = 0x80;
            else if (k >= total - 8) c = (uint8_t)(((uint64_t)n * 8) >> (8 * (total - 1 - k)));
            else c = 0;
            block[i] = c;
        }
        uint32_t w[80];
        for (int i = 0; i < 16; i++)
            w[i] = (uint32_t)block[4 * i] << 24 | (uint32_t)block[4 * i + 1] << 16 |
                   (uint32_t)block[4 * i + 2] << 8 | block[4 * i + 3];
        for (int i = 16; i < 80; i++) w[i] = rol32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
        for (int i = 0; i < 80; i++) {
            uint32_t f, k;
            if (i < 20) { f = (b & c) | (~b & d); k = 0x5A827999u; }
            else if (i < 40) { f = b ^ c ^ d; k = 0x6ED9EBA1u; }
            else if (i < 60) { f = (b & c) | (b & d) | (c & d); k = 0x8F1BBCDCu; }
            else { f = b ^ c ^ d; k = 0xCA62C1D6u; }
            uint32_t t = rol32(a, 5) + f + e + k + w[i];
            e = d; d = c; c = rol32(b, 30); b = a; a = t;
        }
        h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e;
    }
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 4; j++) digest[4 * i + j] = (uint8_t)(h[i] >> (24 - 8 * j));
}

// exposed for the test against hashlib
void sha1_digest(const uint8_t *msg, int64_t n, uint8_t *digest) { sha1(msg, n, digest); }

#define MERSENNE61 ((1ULL << 61) - 1)

// buf: words each ended by a 0 byte. out: (n_hashes,) uint64. Returns the number of shingles
// (0: no signature, out untouched), or -1 when out of memory.
int64_t minhash_signature(const uint8_t *buf, int64_t nbytes, int n, const uint64_t *a, const uint64_t *b,
                          int n_hashes, uint64_t *out) {
    int64_t N = 0;
    for (int64_t i = 0; i < nbytes; i++) N += buf[i] == 0;
    if (N < n) return 0;
    int64_t *start = malloc(sizeof(int64_t) * (size_t)(N + 1));
    uint8_t *gram = malloc((size_t)nbytes + 1);
    if (!start || !gram) {
        free(start); free(gram);
        return -1;
    }
    int64_t w = 0;
    start[0] = 0;
    for (int64_t i = 0; i < nbytes; i++)
        if (buf[i] == 0) start[++w] = i + 1;  // word w spans [start[w], start[w + 1] - 1)
    for (int k = 0; k < n_hashes; k++) out[k] = UINT64_MAX;
    uint8_t digest[20];
    for (int64_t i = 0; i + n <= N; i++) {
        int64_t len = start[i + n] - start[i] - 1;  // the words with their 0 bytes, less the last
        memcpy(gram, buf + start[i], (size_t)len);
        for (int64_t k = 0; k < len; k++)
            if (gram[k] == 0) gram[k] = ' ';
        sha1(gram, len, digest);
        uint64_t h = 0;
        for (int k = 7; k >= 0; k--) h = h << 8 | digest[k];
        for (int k = 0; k < n_hashes; k++) {
            uint64_t v = (h * a[k] + b[k]) % MERSENNE61;
            if (v < out[k]) out[k] = v;
        }
    }
    free(start); free(gram);
    return N - n + 1;
}
