/* Step 3 of byte-level BPE in C: training with incremental pair counts (minigpt._bpe).
 *
 * The reference is minigpt/tokenizer/bpe.py's train(): same merges, same tie-breaking (most frequent
 * pair, then the smallest (left id, right id)); tests check the two agree exactly. Where the Python
 * recounts every pair after every merge, this updates only the counts around each merge.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bpe.h"
#include "hashmap.h"
#include "pretokenize.h"

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

/* split one document and count its chunks; a chunk longer than BPE_MAX_CHUNK bytes is counted as
 * pieces of at most that length: each merge rewrites every word that holds its pair, so one huge
 * "word" (200 KB of letters) made training quadratic in its length. It also bounds every learned
 * token to 255 bytes, what llm.c's tokenizer .bin can store. (minigpt/tokenizer/bpe.py: the same.) */
#define BPE_MAX_CHUNK 255
int bpe_counter_add(bpe_counter_t *c, int pattern, const uint8_t *s, int64_t n) {
    if (!g_cls) return -2;
    for (int64_t i = 0; i < n;) {
        int64_t j = bpe_next_chunk(pattern, s, n, i);
        for (int64_t k = i; k < j; k += BPE_MAX_CHUNK)
            if (bpe_counter_add_chunk(c, s + k, j - k < BPE_MAX_CHUNK ? j - k : BPE_MAX_CHUNK, 1)) return -1;
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
