// fastText supervised prediction (lid.176.ftz) for one line of UTF-8 text: the hot loop of
// minigpt/data/langid.py, which reads the model and holds the NumPy twin of every function here.
//
// The arithmetic is fastText's own, in its order, so the scores are the same floats:
//   words split on ' ' \t \v \f \r \0, "</s>" appended; each word contributes its input rows (its
//   own row when in the vocabulary, then the rows of its character n-grams, minn..maxn over UTF-8
//   characters of "<word>", FNV-1a hashed into `bucket` and mapped through the pruning index);
//   hidden = float32 sum of the rows in that order, times float32(1 / rows);
//   hierarchical softmax: a depth-first walk of the Huffman tree, the sigmoid of each node's dot
//   product, log(p + 1e-5) summed down the path; the best leaf wins.
// The speed comes from doing it without strings or maps: n-grams are hashed in place, the
// vocabulary is an open-addressing table and the pruning index a dense array. Build with -ffp-contract=off so no
// multiply-add is fused where fastText rounds twice.
#include <math.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    int dim, nwords, minn, maxn;
    uint32_t bucket;
    const float *rows;          // (nrows, dim) decoded input matrix
    const int32_t *prune;       // (bucket,) n-gram bucket -> row offset past nwords, or -1 (pruned away)
    // vocabulary as an open-addressing table of size mask + 1 keyed by the FNV-1a hash of the word
    const int32_t *table;       // slot -> word index or -1
    const uint32_t *word_hash;  // (nwords + nlabels,)
    const int64_t *word_off;    // (nwords + nlabels + 1,) offsets into word_bytes
    const uint8_t *word_bytes;
    uint32_t mask;
} lid_model;

static uint32_t fnv1a(const uint8_t *s, int64_t n) {
    uint32_t h = 2166136261u;
    for (int64_t i = 0; i < n; i++) {
        h ^= (uint32_t)(int8_t)s[i];  // fastText hashes chars as signed bytes
        h *= 16777619u;
    }
    return h;
}

static int64_t lid_find(const lid_model *m, const uint8_t *w, int64_t n, uint32_t h) {
    uint32_t slot = h & m->mask;
    for (;;) {
        int32_t id = m->table[slot];
        if (id < 0) return -1;
        if (m->word_hash[id] == h && m->word_off[id + 1] - m->word_off[id] == n &&
            memcmp(m->word_bytes + m->word_off[id], w, (size_t)n) == 0)
            return id;
        slot = (slot + 1) & m->mask;
    }
}

static void add_row(const lid_model *m, float *hidden, int64_t row) {
    const float *r = m->rows + row * m->dim;
    for (int j = 0; j < m->dim; j++) hidden[j] += r[j];
}

// n-grams of "<" word ">" (bw: that string, n bytes): fastText's computeSubwords
static int64_t add_ngrams(const lid_model *m, float *hidden, const uint8_t *bw, int64_t n) {
    int64_t count = 0;
    for (int64_t i = 0; i < n; i++) {
        if ((bw[i] & 0xC0) == 0x80) continue;
        int64_t j = i;
        for (int k = 1; j < n && k <= m->maxn; k++) {
            j++;
            while (j < n && (bw[j] & 0xC0) == 0x80) j++;
            if (k >= m->minn && !(k == 1 && (i == 0 || j == n))) {
                uint32_t b = fnv1a(bw + i, j - i) % m->bucket;
                int32_t row = m->prune[b];
                if (row >= 0) {
                    add_row(m, hidden, (int64_t)m->nwords + row);
                    count++;
                }
            }
        }
    }
    return count;
}

static int is_space(uint8_t c) {
    return c == ' ' || c == '\n' || c == '\r' || c == '\t' || c == '\v' || c == '\f' || c == 0;
}

// hidden (dim,) <- the float32 sum of the line's input rows; returns how many rows were added.
// scratch: at least n + 2 bytes. A word that is a label (or looks like one) adds nothing.
int64_t lid_hidden_sum(const lid_model *m, const uint8_t *text, int64_t n, float *hidden, uint8_t *scratch) {
    memset(hidden, 0, sizeof(float) * (size_t)m->dim);
    int64_t rows = 0, i = 0;
    for (;;) {
        while (i < n && is_space(text[i])) i++;
        int last = i >= n;
        const uint8_t *w = last ? (const uint8_t *)"</s>" : text + i;
        int64_t len = 4;
        if (!last) {
            int64_t s = i;
            while (i < n && !is_space(text[i])) i++;
            len = i - s;
        }
        uint32_t h = fnv1a(w, len);
        int64_t id = lid_find(m, w, len, h);
        int eos = len == 4 && memcmp(w, "</s>", 4) == 0;
        if (id >= 0 && id < m->nwords) {  // a vocabulary word: its own row, then its n-grams ("</s>" has none)
            add_row(m, hidden, id);
            rows++;
        }
        if ((id >= 0 && id < m->nwords && !eos) || (id < 0 && !(len >= 9 && memcmp(w, "__label__", 9) == 0))) {
            scratch[0] = '<';
            memcpy(scratch + 1, w, (size_t)len);
            scratch[len + 1] = '>';
            rows += add_ngrams(m, hidden, scratch, len + 2);
        }
        if (last || eos) break;  // fastText's getLine ends at "</s>"
    }
    return rows;
}

static float std_log(float x) { return (float)log(x + 1e-5); }

typedef struct {
    const float *out;        // (nlabels, dim) output rows of the internal nodes
    const int32_t *left, *right;  // (2 * nlabels - 1,) Huffman tree, -1 at leaves
    int nlabels, dim;
    const float *hidden;
    float best;
    int best_leaf;
} hs_walk;

static void hs_dfs(hs_walk *w, int node, float score) {
    if (score < std_log(0.0f)) return;
    if (w->best_leaf >= 0 && score < w->best) return;
    if (w->left[node] == -1 && w->right[node] == -1) {
        if (w->best_leaf < 0 || score >= w->best) {  // fastText's k = 1 heap keeps the later of equal scores
            w->best = score;
            w->best_leaf = node;
        }
        return;
    }
    const float *r = w->out + (int64_t)(node - w->nlabels) * w->dim;
    float d = 0.0f;
    for (int j = 0; j < w->dim; j++) d += r[j] * w->hidden[j];
    float f = (float)(1.0 / (double)(1.0f + expf(-d)));  // fastText 0.9.2's dfs: the exact sigmoid, in float
    hs_dfs(w, w->left[node], score + std_log(1.0f - f));
    hs_dfs(w, w->right[node], score + std_log(f));
}

// the best label of a hidden vector (already scaled to the mean); returns it, *score = its log-probability
int lid_hs_best(const float *out, const int32_t *left, const int32_t *right, int nlabels, int dim,
                const float *hidden, float *score) {
    hs_walk w = {out, left, right, nlabels, dim, hidden, 0.0f, -1};
    hs_dfs(&w, 2 * nlabels - 2, 0.0f);
    *score = w.best;
    return w.best_leaf;
}
