/* Step 2 of byte-level BPE in C: encoding with a pair table plus a chunk cache (minigpt._bpe).
 * csrc/pretokenize.h splits the text into chunks first; csrc/bpe_train.c learns the merges.
 *
 * The pure-Python reference is minigpt/tokenizer/bpe.py and pretokenize.py; tests check that the
 * two agree exactly. Read those first: this file is the same algorithms, made fast.
 *
 * Semantics (the same as tiktoken's):
 *   - a chunk that is itself a token encodes to that one token;
 *   - otherwise start from single bytes and repeatedly merge the adjacent pair whose concatenation
 *     has the lowest rank (id), leftmost on ties, until no adjacent concatenation is a token.
 * "Concatenation is a token" is answered by a pair table: for every token t and every split
 * t = x + y where x and y are both tokens, (id x, id y) -> id t. Same answer, one hash probe.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bpe.h"
#include "hashmap.h"
#include "pretokenize.h"

/* Unicode classes (see pretokenize.h). */
const uint8_t *g_cls = NULL;

int bpe_set_classes(const uint8_t *table, int64_t n) {
    if (n != 0x110000) return -1;
    g_cls = table;
    return 0;
}

/* the chunk ends of s, as pretokenize.py's split() (tests compare the two) */
int64_t bpe_split(int pattern, const uint8_t *s, int64_t n, int64_t *ends) {
    if (!g_cls) return -1;
    int64_t k = 0;
    for (int64_t i = 0; i < n;) { i = bpe_next_chunk(pattern, s, n, i); ends[k++] = i; }
    return k;
}

/* ------------------------------------------------------------------------------------------ */
/* The encoder: vocabulary, pair table, byte ids.                                             */

struct bpe_t {
    int32_t n_vocab;
    int32_t byte_id[256];
    bmap vocab;        /* token bytes -> id (v0) */
    u64map pairs;      /* (left id << 32 | right id) -> merged id */
};

void bpe_free(bpe_t *b) {
    if (!b) return;
    bmap_free(&b->vocab);
    u64map_free(&b->pairs);
    free(b);
}


/* tokens: n_vocab byte strings, token i is blob[offsets[i] : offsets[i+1]]; ids are ranks.
 * Returns NULL with *err set: 1 out of memory, 2 duplicate token, 3 a single byte missing, 4 empty token */
bpe_t *bpe_new(const uint8_t *blob, const int64_t *offsets, int32_t n_vocab, int *err) {
    bpe_t *b = calloc(1, sizeof(bpe_t));
    *err = 1;
    if (!b) return NULL;
    b->n_vocab = n_vocab;
    if (bmap_init(&b->vocab, n_vocab) || u64map_init(&b->pairs, 4 * (int64_t)n_vocab)) goto fail;
    for (int i = 0; i < 256; i++) b->byte_id[i] = -1;
    for (int32_t t = 0; t < n_vocab; t++) {
        const uint8_t *k = blob + offsets[t];
        int64_t n = offsets[t + 1] - offsets[t];
        if (n <= 0) { *err = 4; goto fail; }
        uint64_t h = hash_bytes(k, n);
        if (bmap_find(&b->vocab, k, n, h)) { *err = 2; goto fail; }
        bentry *e = bmap_insert(&b->vocab, k, n, h);
        if (!e) goto fail;
        e->v0 = t;
        if (n == 1) b->byte_id[k[0]] = t;
    }
    for (int i = 0; i < 256; i++) if (b->byte_id[i] < 0) { *err = 3; goto fail; }
    /* every split of every token into two tokens */
    for (int32_t t = 0; t < n_vocab; t++) {
        const uint8_t *k = blob + offsets[t];
        int64_t n = offsets[t + 1] - offsets[t];
        for (int64_t s = 1; s < n; s++) {
            bentry *x = bmap_find(&b->vocab, k, s, hash_bytes(k, s));
            if (!x) continue;
            bentry *y = bmap_find(&b->vocab, k + s, n - s, hash_bytes(k + s, n - s));
            if (!y) continue;
            int64_t *v = u64map_slot(&b->pairs, pair_key((int32_t)x->v0, (int32_t)y->v0), t);
            if (!v) goto fail;
        }
    }
    *err = 0;
    return b;
fail:
    bpe_free(b);
    return NULL;
}

/* merged id of the adjacent pair (a, b), or INT32_MAX when a + b is not a token */
static inline int32_t pair_rank(const bpe_t *b, int32_t x, int32_t y) {
    return (int32_t)u64map_get(&b->pairs, pair_key(x, y), INT32_MAX);
}

/* BPE of one chunk, quadratic: fine for the short chunks the patterns make */
static int64_t merge_short(const bpe_t *b, const uint8_t *s, int64_t n, int32_t *out) {
    int32_t ranks[64];
    for (int64_t i = 0; i < n; i++) out[i] = b->byte_id[s[i]];
    for (int64_t i = 0; i + 1 < n; i++) ranks[i] = pair_rank(b, out[i], out[i + 1]);
    int64_t m = n;
    while (m > 1) {
        int64_t best = -1;
        int32_t br = INT32_MAX;
        for (int64_t i = 0; i + 1 < m; i++) if (ranks[i] < br) { br = ranks[i]; best = i; }
        if (best < 0) break;
        out[best] = br;
        memmove(out + best + 1, out + best + 2, (size_t)(m - best - 2) * sizeof(int32_t));
        memmove(ranks + best + 1, ranks + best + 2, (size_t)(m - best - 3 > 0 ? m - best - 3 : 0) * sizeof(int32_t));
        m--;
        if (best > 0) ranks[best - 1] = pair_rank(b, out[best - 1], out[best]);
        if (best + 1 < m) ranks[best] = pair_rank(b, out[best], out[best + 1]);
    }
    return m;
}

/* BPE of one long chunk in O(n log n): a linked list of parts and a min-heap of (rank, position).
 * Same result as merge_short: lowest rank first, leftmost on ties. */
typedef struct { int32_t rank; int64_t pos; } hitem;
static inline int hless(hitem a, hitem b) { return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos); }
static void hpush(hitem *h, int64_t *n, hitem x) {
    int64_t i = (*n)++;
    while (i > 0) { int64_t p = (i - 1) / 2; if (!hless(x, h[p])) break; h[i] = h[p]; i = p; }
    h[i] = x;
}
static hitem hpop(hitem *h, int64_t *n) {
    hitem top = h[0], x = h[--(*n)];
    int64_t i = 0;
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && hless(h[c + 1], h[c])) c++;
        if (!hless(h[c], x)) break;
        h[i] = h[c]; i = c;
    }
    if (*n > 0) h[i] = x;
    return top;
}

static int64_t merge_long(const bpe_t *b, const uint8_t *s, int64_t n, int32_t *out) {
    int32_t *tok = malloc((size_t)n * sizeof(int32_t));
    int64_t *nxt = malloc((size_t)n * sizeof(int64_t)), *prv = malloc((size_t)n * sizeof(int64_t));
    hitem *h = malloc((size_t)(3 * n + 1) * sizeof(hitem));
    int64_t hn = 0, m = 0;
    if (!tok || !nxt || !prv || !h) { m = -1; goto done; }
    for (int64_t i = 0; i < n; i++) { tok[i] = b->byte_id[s[i]]; nxt[i] = i + 1 < n ? i + 1 : -1; prv[i] = i - 1; }
    for (int64_t i = 0; i + 1 < n; i++) {
        int32_t r = pair_rank(b, tok[i], tok[i + 1]);
        if (r != INT32_MAX) hpush(h, &hn, (hitem){r, i});
    }
    while (hn > 0) {
        hitem it = hpop(h, &hn);
        int64_t i = it.pos, j = nxt[i];
        if (tok[i] < 0 || j < 0 || pair_rank(b, tok[i], tok[j]) != it.rank) continue;  /* stale */
        tok[i] = it.rank;
        tok[j] = -1;
        nxt[i] = nxt[j];
        if (nxt[j] >= 0) prv[nxt[j]] = i;
        if (prv[i] >= 0) {
            int32_t r = pair_rank(b, tok[prv[i]], tok[i]);
            if (r != INT32_MAX) hpush(h, &hn, (hitem){r, prv[i]});
        }
        if (nxt[i] >= 0) {
            int32_t r = pair_rank(b, tok[i], tok[nxt[i]]);
            if (r != INT32_MAX) hpush(h, &hn, (hitem){r, i});
        }
    }
    for (int64_t i = 0; i >= 0; i = nxt[i]) out[m++] = tok[i];
done:
    free(tok); free(nxt); free(prv); free(h);
    return m;
}

/* ------------------------------------------------------------------------------------------ */
/* The chunk cache (one per thread): chunk bytes -> its ids. Text repeats its words.          */

#define CACHE_MAX_CHUNK 64          /* longer chunks are rare; not worth caching */
#define CACHE_MAX_ENTRIES (1 << 20) /* then start over: memory stays bounded */

struct bpe_cache_t { bmap map; int32_t *ids; int64_t ids_len, ids_cap; };

bpe_cache_t *bpe_cache_new(void) {
    bpe_cache_t *c = calloc(1, sizeof(bpe_cache_t));
    if (!c) return NULL;
    c->ids_cap = 1 << 16;
    c->ids = malloc((size_t)c->ids_cap * sizeof(int32_t));
    if (!c->ids || bmap_init(&c->map, 1 << 14)) { bpe_cache_free(c); return NULL; }
    return c;
}
void bpe_cache_free(bpe_cache_t *c) {
    if (!c) return;
    bmap_free(&c->map);
    free(c->ids);
    free(c);
}

/* ids of one chunk into out (room for n ids); returns the count, -1 on out-of-memory */
static int64_t encode_chunk(const bpe_t *b, bpe_cache_t *c, const uint8_t *s, int64_t n, int32_t *out) {
    if (n == 1) { out[0] = b->byte_id[s[0]]; return 1; }
    uint64_t h = hash_bytes(s, n);
    bentry *e = bmap_find(&b->vocab, s, n, h);
    if (e) { out[0] = (int32_t)e->v0; return 1; }          /* the whole chunk is a token */
    if (n > CACHE_MAX_CHUNK || !c) return n < 64 ? merge_short(b, s, n, out) : merge_long(b, s, n, out);
    e = bmap_find(&c->map, s, n, h);
    if (e) { memcpy(out, c->ids + e->v0, (size_t)e->v1 * sizeof(int32_t)); return e->v1; }
    int64_t m = merge_short(b, s, n, out);
    if (c->map.size >= CACHE_MAX_ENTRIES) { bmap_clear(&c->map); c->ids_len = 0; }
    if (c->ids_len + m > c->ids_cap) {
        int32_t *p = realloc(c->ids, (size_t)c->ids_cap * 2 * sizeof(int32_t));
        if (!p) return m;                                    /* just don't cache it */
        c->ids = p; c->ids_cap *= 2;
    }
    e = bmap_insert(&c->map, s, n, h);
    if (!e) return m;
    memcpy(c->ids + c->ids_len, out, (size_t)m * sizeof(int32_t));
    e->v0 = c->ids_len; e->v1 = m;
    c->ids_len += m;
    return m;
}

int64_t bpe_encode(const bpe_t *b, bpe_cache_t *c, int pattern, const uint8_t *s, int64_t n, int32_t *out) {
    if (!g_cls) return -2;
    int64_t k = 0;
    for (int64_t i = 0; i < n;) {
        int64_t j = bpe_next_chunk(pattern, s, n, i);
        int64_t m = encode_chunk(b, c, s + i, j - i, out + k);
        if (m < 0) return -1;
        k += m;
        i = j;
    }
    return k;
}

/* many texts at once: text d is s[offs[d] : offs[d+1]]; its ids land at out[out_offs[d] : out_offs[d+1]] */
int64_t bpe_encode_many(const bpe_t *b, bpe_cache_t *c, int pattern, const uint8_t *s, const int64_t *offs,
                        int64_t n_docs, int32_t *out, int64_t *out_offs) {
    int64_t k = 0;
    out_offs[0] = 0;
    for (int64_t d = 0; d < n_docs; d++) {
        int64_t m = bpe_encode(b, c, pattern, s + offs[d], offs[d + 1] - offs[d], out + k);
        if (m < 0) return m;
        k += m;
        out_offs[d + 1] = k;
    }
    return k;
}
