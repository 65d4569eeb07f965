/* Byte-level BPE in C: the regex pre-split as hand-written scanners, encoding with a pair table
 * plus a chunk cache, and training with incremental pair counts.
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

/* ------------------------------------------------------------------------------------------ */
/* Unicode classes. The table (one byte per code point, 0x110000 of them) is computed by Python  */
/* from the `regex` module itself, so \p{L}, \p{N} and \s mean exactly what they mean there.     */

enum { CL_L = 1, CL_N = 2, CL_S = 4 };
static const uint8_t *g_cls = NULL;

int bpe_set_classes(const uint8_t *table, int64_t n) {
    if (n != 0x110000) return -1;
    g_cls = table;
    return 0;
}

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
static int64_t whitespace_tail(const uint8_t *s, int64_t n, int64_t i, int newline_rule) {
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
static int64_t next_gpt2(const uint8_t *s, int64_t n, int64_t i) {
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

static int64_t next_gpt4(const uint8_t *s, int64_t n, int64_t i) {
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
static inline int64_t next_chunk(int pattern, const uint8_t *s, int64_t n, int64_t i) {
    if (pattern == BPE_GPT2) return next_gpt2(s, n, i);
    if (pattern == BPE_GPT4) return next_gpt4(s, n, i);
    return n;
}

int64_t bpe_split(int pattern, const uint8_t *s, int64_t n, int64_t *ends) {
    if (!g_cls) return -1;
    int64_t k = 0;
    for (int64_t i = 0; i < n;) { i = next_chunk(pattern, s, n, i); ends[k++] = i; }
    return k;
}

/* ------------------------------------------------------------------------------------------ */
/* Hash maps: open addressing, linear probing, power-of-two capacity.                         */

static inline uint64_t mix64(uint64_t h) {
    h ^= h >> 33; h *= 0xff51afd7ed558ccdULL; h ^= h >> 33; h *= 0xc4ceb9fe1a85ec53ULL; h ^= h >> 33;
    return h;
}

static inline uint64_t hash_bytes(const uint8_t *p, int64_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ (uint64_t)n;
    while (n >= 8) {
        uint64_t v; memcpy(&v, p, 8);
        h = (h ^ v) * 0xbf58476d1ce4e5b9ULL; h ^= h >> 31;
        p += 8; n -= 8;
    }
    uint64_t v = 0; memcpy(&v, p, (size_t)n);
    return mix64(h ^ v);
}

/* u64 key -> int64 value; key UINT64_MAX marks an empty slot */
typedef struct { uint64_t *keys; int64_t *vals; int64_t cap, size; } u64map;

static int u64map_init(u64map *m, int64_t want) {
    int64_t cap = 16;
    while (cap < want * 2) cap <<= 1;
    m->keys = malloc((size_t)cap * sizeof(uint64_t));
    m->vals = malloc((size_t)cap * sizeof(int64_t));
    if (!m->keys || !m->vals) return -1;
    memset(m->keys, 0xFF, (size_t)cap * sizeof(uint64_t));
    m->cap = cap; m->size = 0;
    return 0;
}
static void u64map_free(u64map *m) { free(m->keys); free(m->vals); m->keys = NULL; m->vals = NULL; }

static inline int64_t u64map_get(const u64map *m, uint64_t key, int64_t missing) {
    uint64_t mask = (uint64_t)m->cap - 1;
    for (uint64_t i = mix64(key) & mask;; i = (i + 1) & mask) {
        if (m->keys[i] == key) return m->vals[i];
        if (m->keys[i] == UINT64_MAX) return missing;
    }
}
static int u64map_grow(u64map *m);
/* slot for key, inserting it with value `init` if absent; returns NULL on out-of-memory */
static int64_t *u64map_slot(u64map *m, uint64_t key, int64_t init) {
    if ((m->size + 1) * 2 > m->cap && u64map_grow(m)) return NULL;
    uint64_t mask = (uint64_t)m->cap - 1;
    for (uint64_t i = mix64(key) & mask;; i = (i + 1) & mask) {
        if (m->keys[i] == key) return &m->vals[i];
        if (m->keys[i] == UINT64_MAX) { m->keys[i] = key; m->vals[i] = init; m->size++; return &m->vals[i]; }
    }
}
static int u64map_grow(u64map *m) {
    u64map b;
    if (u64map_init(&b, m->cap)) { u64map_free(&b); return -1; }
    for (int64_t i = 0; i < m->cap; i++)
        if (m->keys[i] != UINT64_MAX) *u64map_slot(&b, m->keys[i], m->vals[i]) = m->vals[i];
    u64map_free(m);
    *m = b;
    return 0;
}

/* byte-string key -> (v0, v1); keys live in a growing arena */
typedef struct { uint64_t hash; int64_t off; int64_t len; int64_t v0, v1; } bentry;
typedef struct {
    bentry *e; int64_t cap, size;   /* e[i].len < 0 marks an empty slot */
    uint8_t *arena; int64_t arena_len, arena_cap;
} bmap;

static int bmap_init(bmap *m, int64_t want) {
    int64_t cap = 16;
    while (cap < want * 2) cap <<= 1;
    m->e = malloc((size_t)cap * sizeof(bentry));
    m->arena = malloc(4096);
    if (!m->e || !m->arena) return -1;
    for (int64_t i = 0; i < cap; i++) m->e[i].len = -1;
    m->cap = cap; m->size = 0; m->arena_len = 0; m->arena_cap = 4096;
    return 0;
}
static void bmap_free(bmap *m) { free(m->e); free(m->arena); m->e = NULL; m->arena = NULL; }
static void bmap_clear(bmap *m) {
    for (int64_t i = 0; i < m->cap; i++) m->e[i].len = -1;
    m->size = 0; m->arena_len = 0;
}

static inline bentry *bmap_find(const bmap *m, const uint8_t *k, int64_t n, uint64_t h) {
    uint64_t mask = (uint64_t)m->cap - 1;
    for (uint64_t i = h & mask;; i = (i + 1) & mask) {
        bentry *e = &m->e[i];
        if (e->len < 0) return NULL;
        if (e->hash == h && e->len == n && memcmp(m->arena + e->off, k, (size_t)n) == 0) return e;
    }
}
static int bmap_grow(bmap *m) {
    int64_t cap = m->cap * 2;
    bentry *e = malloc((size_t)cap * sizeof(bentry));
    if (!e) return -1;
    for (int64_t i = 0; i < cap; i++) e[i].len = -1;
    for (int64_t i = 0; i < m->cap; i++) {
        if (m->e[i].len < 0) continue;
        uint64_t j = m->e[i].hash & (uint64_t)(cap - 1);
        while (e[j].len >= 0) j = (j + 1) & (uint64_t)(cap - 1);
        e[j] = m->e[i];
    }
    free(m->e);
    m->e = e; m->cap = cap;
    return 0;
}
/* insert a key known to be absent; returns the entry or NULL on out-of-memory */
static bentry *bmap_insert(bmap *m, const uint8_t *k, int64_t n, uint64_t h) {
    if ((m->size + 1) * 2 > m->cap && bmap_grow(m)) return NULL;
    if (m->arena_len + n > m->arena_cap) {
        int64_t c = m->arena_cap;
        while (m->arena_len + n > c) c *= 2;
        uint8_t *a = realloc(m->arena, (size_t)c);
        if (!a) return NULL;
        m->arena = a; m->arena_cap = c;
    }
    memcpy(m->arena + m->arena_len, k, (size_t)n);
    uint64_t mask = (uint64_t)m->cap - 1, i = h & mask;
    while (m->e[i].len >= 0) i = (i + 1) & mask;
    bentry *e = &m->e[i];
    e->hash = h; e->off = m->arena_len; e->len = n; e->v0 = 0; e->v1 = 0;
    m->arena_len += n; m->size++;
    return e;
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

static inline uint64_t pair_key(int32_t a, int32_t b) { return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b; }

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
        int64_t j = next_chunk(pattern, s, n, i);
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

/* ------------------------------------------------------------------------------------------ */
/* Training, streaming: first count distinct chunks across all documents (memory grows with   */
/* the number of distinct chunks, not the corpus), then merge on the chunk counts.            */

struct bpe_counter_t { bmap map; int64_t total; };   /* chunk bytes -> count (v0) */

bpe_counter_t *bpe_counter_new(void) {
    bpe_counter_t *c = calloc(1, sizeof(bpe_counter_t));
    if (!c) return NULL;
    if (bmap_init(&c->map, 1 << 12)) { bpe_counter_free(c); return NULL; }
    return c;
}
void bpe_counter_free(bpe_counter_t *c) { if (c) { bmap_free(&c->map); free(c); } }
int64_t bpe_counter_size(const bpe_counter_t *c) { return c->map.size; }
int64_t bpe_counter_bytes(const bpe_counter_t *c) { return c->map.arena_len; }

int bpe_counter_add_chunk(bpe_counter_t *c, const uint8_t *s, int64_t n, int64_t count) {
    uint64_t h = hash_bytes(s, n);
    bentry *e = bmap_find(&c->map, s, n, h);
    if (!e && !(e = bmap_insert(&c->map, s, n, h))) return -1;
    e->v0 += count;
    c->total += count;
    return 0;
}

/* split one document and count its chunks */
int bpe_counter_add(bpe_counter_t *c, int pattern, const uint8_t *s, int64_t n) {
    if (!g_cls) return -2;
    for (int64_t i = 0; i < n;) {
        int64_t j = next_chunk(pattern, s, n, i);
        if (bpe_counter_add_chunk(c, s + i, j - i, 1)) return -1;
        i = j;
    }
    return 0;
}

/* the distinct chunks, for inspection and tests: bytes into blob, ends into ends, counts */
void bpe_counter_dump(const bpe_counter_t *c, uint8_t *blob, int64_t *ends, int64_t *counts) {
    int64_t k = 0, off = 0;
    for (int64_t i = 0; i < c->map.cap; i++) {
        const bentry *e = &c->map.e[i];
        if (e->len < 0) continue;
        memcpy(blob + off, c->map.arena + e->off, (size_t)e->len);
        off += e->len;
        ends[k] = off; counts[k] = e->v0; k++;
    }
}

/* One record per distinct adjacent pair: its count over all words (weighted by word count) and
 * the words it may occur in (appended when it appears; may hold stale or repeated entries). */
typedef struct { int32_t a, b; int64_t count; int32_t *words; int64_t nw, cw; int64_t touched; } pairrec;
typedef struct { int64_t count; int32_t a, b; } tentry;  /* heap entry: max count, then min (a, b) */

static inline int tbefore(tentry x, tentry y) {
    if (x.count != y.count) return x.count > y.count;
    if (x.a != y.a) return x.a < y.a;
    return x.b < y.b;
}

typedef struct {
    u64map index; pairrec *p; int64_t np, cp;
    tentry *heap; int64_t nh, ch;
    int64_t *touched; int64_t nt, ct;
} pairs_t;

static int64_t pair_get(pairs_t *P, int32_t a, int32_t b) {
    int64_t *v = u64map_slot(&P->index, pair_key(a, b), -1);
    if (!v) return -1;
    if (*v >= 0) return *v;
    if (P->np == P->cp) {
        int64_t cp = P->cp ? 2 * P->cp : 1024;
        pairrec *q = realloc(P->p, (size_t)cp * sizeof(pairrec));
        if (!q) return -1;
        P->p = q; P->cp = cp;
    }
    P->p[P->np] = (pairrec){a, b, 0, NULL, 0, 0, -1};
    *v = P->np;
    return P->np++;
}

static int heap_push(pairs_t *P, tentry x) {
    if (P->nh == P->ch) {
        int64_t c = P->ch ? 2 * P->ch : 1024;
        tentry *q = realloc(P->heap, (size_t)c * sizeof(tentry));
        if (!q) return -1;
        P->heap = q; P->ch = c;
    }
    int64_t i = P->nh++;
    while (i > 0) { int64_t p = (i - 1) / 2; if (!tbefore(x, P->heap[p])) break; P->heap[i] = P->heap[p]; i = p; }
    P->heap[i] = x;
    return 0;
}
static tentry heap_pop(pairs_t *P) {
    tentry top = P->heap[0], x = P->heap[--P->nh];
    int64_t i = 0, n = P->nh;
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && tbefore(P->heap[c + 1], P->heap[c])) c++;
        if (!tbefore(P->heap[c], x)) break;
        P->heap[i] = P->heap[c]; i = c;
    }
    if (n > 0) P->heap[i] = x;
    return top;
}

/* add delta to pair (a, b) seen in word w; stamp marks it for a heap push after this merge */
static int pair_add(pairs_t *P, int32_t a, int32_t b, int64_t delta, int32_t w, int64_t stamp) {
    int64_t k = pair_get(P, a, b);
    if (k < 0) return -1;
    pairrec *r = &P->p[k];
    r->count += delta;
    if (delta > 0 && (r->nw == 0 || r->words[r->nw - 1] != w)) {
        if (r->nw == r->cw) {
            int64_t c = r->cw ? 2 * r->cw : 4;
            int32_t *q = realloc(r->words, (size_t)c * sizeof(int32_t));
            if (!q) return -1;
            r->words = q; r->cw = c;
        }
        r->words[r->nw++] = w;
    }
    if (r->touched != stamp) {
        r->touched = stamp;
        if (P->nt == P->ct) {
            int64_t c = P->ct ? 2 * P->ct : 1024;
            int64_t *q = realloc(P->touched, (size_t)c * sizeof(int64_t));
            if (!q) return -1;
            P->touched = q; P->ct = c;
        }
        P->touched[P->nt++] = k;
    }
    return 0;
}

/* Train on the counted chunks until the vocabulary (256 bytes + merges) has vocab_size tokens.
 * Each step merges the most frequent adjacent pair; ties go to the smallest (left id, right id).
 * A merge whose bytes already form a token reuses that token's id (as HF tokenizers does), so
 * every id has distinct bytes and the result is a valid tiktoken rank table.
 * *merges_out gets a malloc'ed array of (left, right, new id) triples: free it with bpe_free_ints.
 * Returns the number of merges, or -1 on out-of-memory. */
void bpe_free_ints(int32_t *p) { free(p); }

int64_t bpe_train(const bpe_counter_t *C, int32_t vocab_size, int32_t **merges_out) {
    int64_t max_merges = 1024;
    int32_t *merges = malloc((size_t)max_merges * 3 * sizeof(int32_t));
    *merges_out = NULL;
    int64_t nwords = C->map.size, nsym = C->map.arena_len, n_merges = 0, result = -1;
    int64_t *woff = malloc((size_t)(nwords + 1) * sizeof(int64_t));
    int64_t *wlen = malloc((size_t)(nwords + 1) * sizeof(int64_t));
    int64_t *wcnt = malloc((size_t)(nwords + 1) * sizeof(int64_t));
    int64_t *wstamp = malloc((size_t)(nwords + 1) * sizeof(int64_t));
    int32_t *sym = malloc((size_t)(nsym + 1) * sizeof(int32_t));
    int64_t maxlen = 1;
    pairs_t P = {0};
    bmap vocab = {0};
    int64_t *voff = malloc((size_t)(vocab_size + 1) * sizeof(int64_t));  /* token bytes: vocab arena */
    int64_t *vlen = malloc((size_t)(vocab_size + 1) * sizeof(int64_t));
    int32_t *buf = NULL; int64_t *newpos = NULL;
    int32_t n_vocab = 256;
    if (!merges || !woff || !wlen || !wcnt || !wstamp || !sym || !voff || !vlen) goto done;
    if (u64map_init(&P.index, 1 << 16) || bmap_init(&vocab, vocab_size)) goto done;
    for (int i = 0; i < 256; i++) {
        uint8_t byte = (uint8_t)i;
        bentry *e = bmap_insert(&vocab, &byte, 1, hash_bytes(&byte, 1));
        if (!e) goto done;
        e->v0 = i; voff[i] = e->off; vlen[i] = 1;
    }
    /* the words: each distinct chunk as a list of byte ids, with its count */
    {
        int64_t w = 0, off = 0;
        for (int64_t i = 0; i < C->map.cap; i++) {
            const bentry *e = &C->map.e[i];
            if (e->len < 0) continue;
            woff[w] = off; wlen[w] = e->len; wcnt[w] = e->v0; wstamp[w] = -1;
            for (int64_t j = 0; j < e->len; j++) sym[off + j] = C->map.arena[e->off + j];
            if (e->len > maxlen) maxlen = e->len;
            off += e->len; w++;
        }
    }
    buf = malloc((size_t)maxlen * sizeof(int32_t));
    newpos = malloc((size_t)maxlen * sizeof(int64_t));
    if (!buf || !newpos) goto done;
    for (int64_t w = 0; w < nwords; w++)
        for (int64_t j = 0; j + 1 < wlen[w]; j++)
            if (pair_add(&P, sym[woff[w] + j], sym[woff[w] + j + 1], wcnt[w], (int32_t)w, 0)) goto done;
    for (int64_t k = 0; k < P.np; k++)
        if (P.p[k].count > 0 && heap_push(&P, (tentry){P.p[k].count, P.p[k].a, P.p[k].b})) goto done;
    P.nt = 0;

    for (int64_t stamp = 1; n_vocab < vocab_size && P.nh > 0; stamp++) {
        tentry top = heap_pop(&P);
        int64_t k = u64map_get(&P.index, pair_key(top.a, top.b), -1);
        if (k < 0 || P.p[k].count != top.count || top.count <= 0) { stamp--; continue; }  /* stale */
        int32_t a = top.a, b = top.b, t;
        /* the new token's bytes, appended to the vocab arena; reuse an existing id if present */
        {
            int64_t la = vlen[a], lb = vlen[b], n = la + lb;
            uint8_t *tmp = malloc((size_t)n);
            if (!tmp) goto done;
            memcpy(tmp, vocab.arena + voff[a], (size_t)la);
            memcpy(tmp + la, vocab.arena + voff[b], (size_t)lb);
            uint64_t h = hash_bytes(tmp, n);
            bentry *e = bmap_find(&vocab, tmp, n, h);
            if (e) t = (int32_t)e->v0;
            else {
                e = bmap_insert(&vocab, tmp, n, h);
                if (!e) { free(tmp); goto done; }
                t = n_vocab++;
                e->v0 = t; voff[t] = e->off; vlen[t] = n;
            }
            free(tmp);
        }
        if (n_merges == max_merges) {
            int32_t *q = realloc(merges, (size_t)max_merges * 2 * 3 * sizeof(int32_t));
            if (!q) goto done;
            merges = q; max_merges *= 2;
        }
        merges[3 * n_merges] = a; merges[3 * n_merges + 1] = b; merges[3 * n_merges + 2] = t;
        n_merges++;
        /* apply the merge to every word holding the pair; update counts only around the merges:
         * old pairs touching a merged position go, new pairs touching a new token come */
        int64_t nw = P.p[k].nw;
        for (int64_t q = 0; q < nw; q++) {
            int32_t w = P.p[k].words[q];          /* re-read: pair_add may move this array */
            if (wstamp[w] == stamp) continue;
            wstamp[w] = stamp;
            int32_t *s = sym + woff[w];
            int64_t L = wlen[w], m = 0, nn = 0, last_removed = -1;
            int64_t c = wcnt[w];
            for (int64_t i = 0; i < L;) {
                if (i + 1 < L && s[i] == a && s[i + 1] == b) {
                    for (int64_t j = i - 1; j <= i + 1; j++)
                        if (j > last_removed && j >= 0 && j + 1 < L) {
                            if (pair_add(&P, s[j], s[j + 1], -c, w, stamp)) goto done;
                            last_removed = j;
                        }
                    newpos[nn++] = m;
                    buf[m++] = t;
                    i += 2;
                } else buf[m++] = s[i++];
            }
            if (nn == 0) continue;
            int64_t last_added = -1;
            for (int64_t r = 0; r < nn; r++)
                for (int64_t j = newpos[r] - 1; j <= newpos[r]; j++)
                    if (j > last_added && j >= 0 && j + 1 < m) {
                        if (pair_add(&P, buf[j], buf[j + 1], c, w, stamp)) goto done;
                        last_added = j;
                    }
            memcpy(s, buf, (size_t)m * sizeof(int32_t));
            wlen[w] = m;
        }
        for (int64_t r = 0; r < P.nt; r++) {
            pairrec *p = &P.p[P.touched[r]];
            if (p->count > 0 && heap_push(&P, (tentry){p->count, p->a, p->b})) goto done;
        }
        P.nt = 0;
    }
    result = n_merges;
    *merges_out = merges;
    merges = NULL;
done:
    free(merges);
    for (int64_t k = 0; k < P.np; k++) free(P.p[k].words);
    free(P.p); free(P.heap); free(P.touched); u64map_free(&P.index); bmap_free(&vocab);
    free(woff); free(wlen); free(wcnt); free(wstamp); free(sym); free(voff); free(vlen);
    free(buf); free(newpos);
    return result;
}
