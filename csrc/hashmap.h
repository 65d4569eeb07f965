/* Hash maps for csrc/bpe.c and csrc/bpe_train.c: open addressing, linear probing, power-of-two
 * capacity. u64map: a 64-bit key (a pair of token ids) -> int64; bmap: a byte string -> two int64s. */
#ifndef MINIGPT_HASHMAP_H
#define MINIGPT_HASHMAP_H
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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

static inline int u64map_init(u64map *m, int64_t want) {
    int64_t cap = 16;
    while (cap < want * 2) cap <<= 1;
    m->keys = malloc((size_t)cap * sizeof(uint64_t));
    m->vals = malloc((size_t)cap * sizeof(int64_t));
    if (!m->keys || !m->vals) return -1;
    memset(m->keys, 0xFF, (size_t)cap * sizeof(uint64_t));
    m->cap = cap; m->size = 0;
    return 0;
}
static inline void u64map_free(u64map *m) { free(m->keys); free(m->vals); m->keys = NULL; m->vals = NULL; }

static inline int64_t u64map_get(const u64map *m, uint64_t key, int64_t missing) {
    uint64_t mask = (uint64_t)m->cap - 1;
    for (uint64_t i = mix64(key) & mask;; i = (i + 1) & mask) {
        if (m->keys[i] == key) return m->vals[i];
        if (m->keys[i] == UINT64_MAX) return missing;
    }
}
static inline int u64map_grow(u64map *m);
/* slot for key, inserting it with value `init` if absent; returns NULL on out-of-memory */
static inline int64_t *u64map_slot(u64map *m, uint64_t key, int64_t init) {
    if ((m->size + 1) * 2 > m->cap && u64map_grow(m)) return NULL;
    uint64_t mask = (uint64_t)m->cap - 1;
    for (uint64_t i = mix64(key) & mask;; i = (i + 1) & mask) {
        if (m->keys[i] == key) return &m->vals[i];
        if (m->keys[i] == UINT64_MAX) { m->keys[i] = key; m->vals[i] = init; m->size++; return &m->vals[i]; }
    }
}
static inline int u64map_grow(u64map *m) {
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

static inline int bmap_init(bmap *m, int64_t want) {
    int64_t cap = 16;
    while (cap < want * 2) cap <<= 1;
    m->e = malloc((size_t)cap * sizeof(bentry));
    m->arena = malloc(4096);
    if (!m->e || !m->arena) return -1;
    for (int64_t i = 0; i < cap; i++) m->e[i].len = -1;
    m->cap = cap; m->size = 0; m->arena_len = 0; m->arena_cap = 4096;
    return 0;
}
static inline void bmap_free(bmap *m) { free(m->e); free(m->arena); m->e = NULL; m->arena = NULL; }
static inline void bmap_clear(bmap *m) {
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
static inline int bmap_grow(bmap *m) {
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
static inline bentry *bmap_insert(bmap *m, const uint8_t *k, int64_t n, uint64_t h) {
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

static inline uint64_t pair_key(int32_t a, int32_t b) { return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b; }

#endif
