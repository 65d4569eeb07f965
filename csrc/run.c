/*
 * run.c: generate text with a GPT-2 checkpoint, in C, no Python. A model is two files: the
 * parameters (an llm.c checkpoint, fp32 version 3 or bf16 version 5) and this program.
 *
 *   gcc -O3 -march=native -fopenmp -o run csrc/run.c -lm
 *   ./run model.bin -z tokenizer.bin -i "Once upon a time" -n 256 -t 0.8 -p 0.9 -s 42
 *
 * The kernels are csrc/decode.c (included below), the same ones the Python engine calls through
 * cffi, so run.c's greedy output equals `minigpt sample --temperature 0`. The forward pass mirrors
 * forward_cached in minigpt/inference/kvcache.py: prefill the prompt in one pass, then one token at a time
 * from a KV cache, stopping at -n tokens or when the context (block_size) is full.
 *
 * The tokenizer .bin: llm.c's version 2 is a decode table with no merges, so with it a text prompt
 * is encoded byte by byte (exact for a byte-level vocabulary; or pass ids with -I "id id id").
 * minigpt's version 3 adds the merges, the pre-split pattern and its Unicode classes: run.c then
 * encodes text exactly as minigpt's Tokenizer does (csrc/pretokenize.h's scanners, tiktoken's
 * merge rule), and chats (-m chat): the chat template, replies that stop at <|im_end|>, as
 * llama2.c's run.c.
 *
 *   ./run sft/ckpt.bin -z sft/tokenizer.bin -m chat -y "You are helpful." -t 0
 */
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "decode.c"
#include "pretokenize.h"  // the GPT-2 / GPT-4 pre-split scanners (header only; shared with csrc/bpe.c)

const uint8_t *g_cls = NULL;  // pretokenize.h's Unicode class table: from a version-3 tokenizer file

static void die(const char *msg, const char *path) {
    fprintf(stderr, "run: %s%s%s\n", path ? path : "", path ? ": " : "", msg);
    exit(1);
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) die("out of memory", NULL);
    return p;
}

// ------------------------------------------------------------------------------------------------
// the model: llm.c's header and 16 tensors, in its order

typedef struct {
    int maxT, V, L, NH, C, Vp;
} Config;

enum { WTE, WPE, LN1W, LN1B, QKVW, QKVB, ATTPROJW, ATTPROJB, LN2W, LN2B, FCW, FCB, FCPROJW, FCPROJB,
       LNFW, LNFB, NTENSORS };
// the matrices stay as stored (fp32 or bf16); the small tensors are always fp32 in memory
static const int IS_MATRIX[NTENSORS] = {1, 1, 0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 1, 0, 0, 0};

typedef struct {
    Config cfg;
    int half;                 // 1: matrices are bf16 (a version-5 checkpoint)
    void *t[NTENSORS];        // each tensor: float* or (matrices of a bf16 checkpoint) uint16_t*
    void *blob;               // the file's parameters
    float *small;             // bf16 checkpoint: the small tensors widened to fp32
} Model;

// a * b into *out, or 0 if it does not fit a size_t
static int mul_ok(size_t a, size_t b, size_t *out) { return !__builtin_mul_overflow(a, b, out); }

// Check every header field before any size is computed from it: positive sizes, Vp >= V, C
// divisible by NH, every tensor and every kernel's index range within an int (the kernels index
// with int), and sizes multiplied with overflow checks (a crafted header must not wrap the size
// check and place the tensors outside the buffer). Returns the number of parameters.
static size_t check_header(const Config *c, size_t esize, long file_size, size_t *n, const char *path) {
    if (c->maxT <= 0 || c->V <= 0 || c->L <= 0 || c->NH <= 0 || c->C <= 0 || c->Vp < c->V || c->C % c->NH) {
        fprintf(stderr, "run: %s: bad checkpoint header sizes: maxT=%d V=%d L=%d NH=%d C=%d Vp=%d (expected "
                "positive sizes, Vp >= V, C divisible by NH)\n", path, c->maxT, c->V, c->L, c->NH, c->C, c->Vp);
        exit(1);
    }
    size_t L = c->L, C = c->C, T = c->maxT, Vp = c->Vp, t4C, total = 0;
    const size_t f[NTENSORS][3] = {{Vp, C, 1}, {T, C, 1}, {L, C, 1}, {L, C, 1}, {L, 3 * C, C}, {L, 3 * C, 1},
                                   {L, C, C}, {L, C, 1}, {L, C, 1}, {L, C, 1}, {L, 4 * C, C}, {L, 4 * C, 1},
                                   {L, 4 * C, C}, {L, C, 1}, {C, 1, 1}, {C, 1, 1}};  // each tensor's shape
    int ok = mul_ok(T, 4 * C, &t4C) && t4C <= INT_MAX;  // the MLP activations of a full context
    for (int i = 0; ok && i < NTENSORS; i++)
        ok = mul_ok(f[i][0], f[i][1], &n[i]) && mul_ok(n[i], f[i][2], &n[i]) && n[i] <= INT_MAX &&
             !__builtin_add_overflow(total, n[i], &total);
    size_t bytes;
    if (!ok || !mul_ok(total, esize, &bytes) || bytes > (size_t)LONG_MAX - 1024) {
        fprintf(stderr, "run: %s: bad checkpoint header: maxT=%d V=%d L=%d NH=%d C=%d Vp=%d give tensors too "
                "large to index\n", path, c->maxT, c->V, c->L, c->NH, c->C, c->Vp);
        exit(1);
    }
    if (file_size != (long)(1024 + bytes)) {
        fprintf(stderr, "run: %s: expected %zu bytes from the header, found %ld\n", path, 1024 + bytes, file_size);
        exit(1);
    }
    return total;
}

static void load_model(Model *m, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) die("cannot open model checkpoint", path);
    int h[256];
    if (fread(h, sizeof(int), 256, f) != 256) die("truncated model checkpoint: no 1024-byte header", path);
    if (h[0] != 20240326) die("not an llm.c model checkpoint (bad magic number)", path);
    if (h[1] != 3 && h[1] != 5) die("unsupported checkpoint version: expected 3 (fp32) or 5 (bf16)", path);
    Config c = {h[2], h[3], h[4], h[5], h[6], h[7]};
    m->cfg = c;
    m->half = h[1] == 5;
    size_t n[NTENSORS], esize = m->half ? 2 : 4;
    if (fseek(f, 0, SEEK_END) != 0) die("cannot seek in the model checkpoint", path);
    size_t total = check_header(&c, esize, ftell(f), n, path);
    fseek(f, 1024, SEEK_SET);
    m->blob = xmalloc(total * esize);
    if (fread(m->blob, esize, total, f) != total) die("read error", path);
    fclose(f);
    size_t nsmall = 0;
    for (int i = 0; i < NTENSORS; i++) if (!IS_MATRIX[i]) nsmall += n[i];
    m->small = m->half ? (float *)xmalloc(nsmall * sizeof(float)) : NULL;
    char *at = (char *)m->blob;
    float *small_at = m->small;
    for (int i = 0; i < NTENSORS; i++) {
        if (m->half && !IS_MATRIX[i]) {  // widen LayerNorm gains and biases once
            for (size_t j = 0; j < n[i]; j++) small_at[j] = bf16_to_f32(((uint16_t *)at)[j]);
            m->t[i] = small_at;
            small_at += n[i];
        } else {
            m->t[i] = at;
        }
        at += n[i] * esize;
    }
}

// ------------------------------------------------------------------------------------------------
// the forward pass over N rows of one stream (stream 0): prefill is N = prompt length, decode N = 1

typedef struct {
    float *x, *h, *qkv, *y, *f, *xf, *logits;  // activations for up to maxT rows; logits (Vp,)
    float *kcache, *vcache;                    // (L, 1, NH, maxT, hs)
    int *streams, *positions;
} State;

static void alloc_state(State *s, const Config *c) {
    size_t T = c->maxT, C = c->C;
    s->x = xmalloc(T * C * 4); s->h = xmalloc(T * C * 4); s->y = xmalloc(T * C * 4);
    s->qkv = xmalloc(T * 3 * C * 4); s->f = xmalloc(T * 4 * C * 4);
    s->xf = xmalloc(C * 4); s->logits = xmalloc((size_t)c->Vp * 4);
    s->kcache = calloc((size_t)c->L * T * C, 4); s->vcache = calloc((size_t)c->L * T * C, 4);
    s->streams = calloc(T, sizeof(int)); s->positions = xmalloc(T * sizeof(int));
    if (!s->kcache || !s->vcache || !s->streams) die("out of memory", NULL);
}

static float w_elem(const Model *m, int t, size_t i) {
    return m->half ? bf16_to_f32(((const uint16_t *)m->t[t])[i]) : ((const float *)m->t[t])[i];
}

static void matvec(const Model *m, float *out, const float *inp, int t, size_t layer_off, const float *bias,
                   int N, int C, int OC) {
    if (m->half) matvec_forward_bf16(out, inp, (const uint16_t *)m->t[t] + layer_off, bias, N, C, OC);
    else matvec_forward(out, inp, (const float *)m->t[t] + layer_off, bias, N, C, OC);
}

// feed tokens[0..N) at positions pos0..pos0+N-1; leave the last row's logits in s->logits
static void forward(const Model *m, State *s, const int *tokens, int pos0, int N) {
    const Config *c = &m->cfg;
    int C = c->C, NH = c->NH, T = c->maxT;
    float **t = (float **)m->t;
    for (int r = 0; r < N; r++) {
        s->positions[r] = pos0 + r;
        for (int i = 0; i < C; i++)
            s->x[(size_t)r * C + i] = w_elem(m, WTE, (size_t)tokens[r] * C + i) + w_elem(m, WPE, (size_t)(pos0 + r) * C + i);
    }
    for (int l = 0; l < c->L; l++) {
        size_t kv = (size_t)l * T * C;
        layernorm_cached(s->h, s->x, t[LN1W] + l * C, t[LN1B] + l * C, N, C);
        matvec(m, s->qkv, s->h, QKVW, (size_t)l * 3 * C * C, t[QKVB] + l * 3 * C, N, C, 3 * C);
        kv_write(s->kcache + kv, s->vcache + kv, s->qkv, s->streams, s->positions, N, C, NH, T);
        attention_cached(s->y, s->qkv, s->kcache + kv, s->vcache + kv, s->streams, s->positions, N, C, NH, T);
        matvec(m, s->h, s->y, ATTPROJW, (size_t)l * C * C, t[ATTPROJB] + l * C, N, C, C);
        for (size_t i = 0; i < (size_t)N * C; i++) s->x[i] += s->h[i];
        layernorm_cached(s->h, s->x, t[LN2W] + l * C, t[LN2B] + l * C, N, C);
        matvec(m, s->f, s->h, FCW, (size_t)l * 4 * C * C, t[FCB] + l * 4 * C, N, C, 4 * C);
        gelu_forward(s->f, s->f, N * 4 * C);
        matvec(m, s->h, s->f, FCPROJW, (size_t)l * 4 * C * C, t[FCPROJB] + l * C, N, 4 * C, C);
        for (size_t i = 0; i < (size_t)N * C; i++) s->x[i] += s->h[i];
    }
    layernorm_cached(s->xf, s->x + (size_t)(N - 1) * C, t[LNFW], t[LNFB], 1, C);
    matvec(m, s->logits, s->xf, WTE, 0, NULL, 1, C, c->Vp);  // the LM head is wte (tied)
}

// ------------------------------------------------------------------------------------------------
// sampling: greedy, or temperature + top-p (nucleus) with a seeded xorshift generator

static uint64_t rng_state;
static float random_f32(void) {  // xorshift64*, top 24 bits -> [0, 1)
    rng_state ^= rng_state >> 12; rng_state ^= rng_state << 25; rng_state ^= rng_state >> 27;
    return (float)((rng_state * 0x2545F4914F6CDD1Dull) >> 40) / 16777216.0f;
}

typedef struct { float p; int i; } ProbIndex;
static int by_prob_desc(const void *a, const void *b) {
    float pa = ((const ProbIndex *)a)->p, pb = ((const ProbIndex *)b)->p;
    if (isnan(pa) != isnan(pb)) return isnan(pa) ? 1 : -1;  // NaN last: qsort needs a total order
    return pa > pb ? -1 : pa < pb ? 1 : ((const ProbIndex *)a)->i - ((const ProbIndex *)b)->i;
}

static int sample(const float *logits, int V, float temperature, float top_p, ProbIndex *buf) {
    int best = 0;
    for (int i = 1; i < V; i++) if (logits[i] > logits[best]) best = i;
    if (temperature == 0.0f) return best;
    double sum = 0.0;
    for (int i = 0; i < V; i++) { buf[i].p = expf((logits[i] - logits[best]) / temperature); buf[i].i = i; sum += buf[i].p; }
    for (int i = 0; i < V; i++) buf[i].p /= (float)sum;
    int n = V;
    if (top_p > 0.0f && top_p < 1.0f) {  // keep the most likely tokens while the mass before each is < p
        qsort(buf, V, sizeof(ProbIndex), by_prob_desc);
        double before = 0.0;
        for (n = 0; n < V && before < top_p; n++) before += buf[n].p;
    }
    double mass = 0.0;
    for (int i = 0; i < n; i++) mass += buf[i].p;
    double u = random_f32() * mass, cdf = 0.0;
    for (int i = 0; i < n; i++) { cdf += buf[i].p; if (u < cdf) return buf[i].i; }
    return buf[n - 1].i;
}

// ------------------------------------------------------------------------------------------------
// the tokenizer: llm.c's decode table

typedef struct {
    int n, eot;
    unsigned char **tok;
    unsigned char *len;
    int byte_id[256];  // the single-byte token of each byte, -1 if none
    // version 3 only: what encoding needs
    int bpe, pattern;  // bpe: the file has merges; pattern: 0 none, 1 gpt2, 2 gpt4 (csrc/bpe.h)
    int n_special, n_pairs;
    int *special;      // the special token ids
    int *pairs;        // (left, right, merged) triples sorted by (left, right)
    uint8_t *classes;  // one class byte per code point (0x110000)
} Tokenizer;

static void load_bpe(Tokenizer *t, FILE *f, const int *h, const char *path);

static void load_tokenizer(Tokenizer *t, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) die("cannot open tokenizer file", path);
    int h[256];
    if (fread(h, sizeof(int), 256, f) != 256) die("truncated tokenizer: no 1024-byte header", path);
    if (h[0] != 20240328 || (h[1] != 2 && h[1] != 3))
        die("not an llm.c tokenizer (expected magic 20240328, version 2, or minigpt's version 3)", path);
    t->n = h[2]; t->eot = h[3];
    // every token takes at least 2 bytes (a length and a byte): bound n by the file before allocating
    if (fseek(f, 0, SEEK_END) != 0) die("cannot seek in the tokenizer file", path);
    long size = ftell(f);
    if (t->n <= 0 || (size - 1024) / 2 < t->n) {
        fprintf(stderr, "run: %s: bad tokenizer header: %d tokens cannot fit in a %ld-byte file\n", path, t->n, size);
        exit(1);
    }
    if (t->eot < 0 || t->eot >= t->n) {
        fprintf(stderr, "run: %s: bad tokenizer header: EOT id %d is outside [0, %d)\n", path, t->eot, t->n);
        exit(1);
    }
    fseek(f, 1024, SEEK_SET);
    t->tok = xmalloc(t->n * sizeof(unsigned char *)); t->len = xmalloc(t->n);
    for (int b = 0; b < 256; b++) t->byte_id[b] = -1;
    for (int i = 0; i < t->n; i++) {
        if (fread(&t->len[i], 1, 1, f) != 1 || t->len[i] == 0) die("truncated or bad tokenizer table", path);
        t->tok[i] = xmalloc(t->len[i]);
        if (fread(t->tok[i], 1, t->len[i], f) != t->len[i]) die("truncated tokenizer table", path);
        if (t->len[i] == 1 && i != t->eot && t->byte_id[t->tok[i][0]] < 0) t->byte_id[t->tok[i][0]] = i;
    }
    if (h[1] == 3) load_bpe(t, f, h, path);
    fclose(f);
}

// ------------------------------------------------------------------------------------------------
// BPE encoding (version-3 tokenizer files), the same as minigpt's Tokenizer.encode_ordinary

static void read_ints(int *dst, size_t n, FILE *f, const char *path) {
    if (fread(dst, sizeof(int), n, f) != n) die("truncated tokenizer: a version-3 section is cut short", path);
}

static void load_bpe(Tokenizer *t, FILE *f, const int *h, const char *path) {
    t->pattern = h[4]; t->n_special = h[5]; t->n_pairs = h[6];
    int n_runs = h[7];
    if (t->pattern < 0 || t->pattern > 2 || t->n_special < 0 || t->n_pairs < 0 || n_runs <= 0 || n_runs > 0x110000)
        die("bad version-3 tokenizer header", path);
    // the three sections fill the rest of the file exactly: check that before allocating for them
    long here = ftell(f), end = (fseek(f, 0, SEEK_END) == 0) ? ftell(f) : -1;
    if (here < 0 || end < 0 || fseek(f, here, SEEK_SET) != 0) die("cannot seek in the tokenizer file", path);
    uint64_t need = 4 * ((uint64_t)t->n_special + 3 * (uint64_t)t->n_pairs + 2 * (uint64_t)n_runs);
    if ((uint64_t)(end - here) < need) die("truncated tokenizer: a version-3 section is cut short", path);
    if ((uint64_t)(end - here) > need) die("bytes left after the version-3 sections", path);
    t->special = xmalloc((size_t)t->n_special * sizeof(int));
    t->pairs = xmalloc((size_t)t->n_pairs * 3 * sizeof(int));
    int *runs = xmalloc((size_t)n_runs * 2 * sizeof(int));
    read_ints(t->special, t->n_special, f, path);
    read_ints(t->pairs, (size_t)t->n_pairs * 3, f, path);
    read_ints(runs, (size_t)n_runs * 2, f, path);
    if (fgetc(f) != EOF) die("bytes left after the version-3 sections", path);
    for (int i = 0; i < t->n_special; i++)
        if (t->special[i] < 0 || t->special[i] >= t->n) die("a special token id is out of range", path);
    for (int i = 0; i < t->n_pairs * 3; i++)
        if (t->pairs[i] < 0 || t->pairs[i] >= t->n) die("a merge names a token id out of range", path);
    t->classes = xmalloc(0x110000);  // runs of (first code point, class) -> one byte per code point
    for (int r = 0; r < n_runs; r++) {
        int lo = runs[2 * r], hi = r + 1 < n_runs ? runs[2 * r + 2] : 0x110000;
        if (lo < 0 || hi > 0x110000 || lo >= hi || (r == 0 && lo != 0)) die("bad Unicode class runs", path);
        memset(t->classes + lo, runs[2 * r + 1], (size_t)(hi - lo));
    }
    free(runs);
    g_cls = t->classes;
    t->bpe = 1;
}

// the id of the special token named `name`, or -1
static int special_id(const Tokenizer *t, const char *name) {
    size_t k = strlen(name);
    for (int i = 0; i < t->n_special; i++) {
        int id = t->special[i];
        if (t->len[id] == k && memcmp(t->tok[id], name, k) == 0) return id;
    }
    return -1;
}

// the token that merging the adjacent pair (a, b) makes (its id is its rank), or INT32_MAX if none
static int merged(const Tokenizer *t, int a, int b) {
    int lo = 0, hi = t->n_pairs - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        const int *p = t->pairs + 3 * (size_t)mid;
        if (p[0] == a && p[1] == b) return p[2];
        if (p[0] < a || (p[0] == a && p[1] < b)) lo = mid + 1; else hi = mid - 1;
    }
    return INT32_MAX;
}

// ids of text as ordinary text (special-token text stays text); out needs strlen(text) slots.
// Each pre-split chunk starts as single bytes; the adjacent pair whose merge has the lowest rank
// merges first (leftmost on ties) until no pair merges: tiktoken's rule, minigpt's csrc/bpe.c.
static int encode_text(const Tokenizer *t, const char *text, int *out) {
    const uint8_t *s = (const uint8_t *)text;
    int64_t n = (int64_t)strlen(text);
    int count = 0;
    if (!t->bpe) {  // a version-2 table: byte by byte
        for (int64_t i = 0; i < n; i++) {
            if (t->byte_id[s[i]] < 0) die("the tokenizer has no single-byte token for a prompt byte", NULL);
            out[count++] = t->byte_id[s[i]];
        }
        return count;
    }
    for (int64_t i = 0; i < n;) {
        int64_t j = bpe_next_chunk(t->pattern, s, n, i);
        int *part = out + count, m = 0;
        for (int64_t k = i; k < j; k++) {
            if (t->byte_id[s[k]] < 0) die("the tokenizer has no single-byte token for a byte", NULL);
            part[m++] = t->byte_id[s[k]];
        }
        while (m > 1) {
            int best = -1, rank = INT32_MAX;
            for (int k = 0; k + 1 < m; k++) {
                int r = merged(t, part[k], part[k + 1]);
                if (r < rank) { rank = r; best = k; }
            }
            if (best < 0) break;
            part[best] = rank;
            memmove(part + best + 1, part + best + 2, (size_t)(m - best - 2) * sizeof(int));
            m--;
        }
        count += m;
        i = j;
    }
    return count;
}

// ------------------------------------------------------------------------------------------------
// chat mode: the chat template of minigpt/tokenizer/chat.py, one KV cache for the whole conversation

static int read_line(char *buf, int size) {  // a line of stdin without its newline; 0 at the end
    if (!fgets(buf, size, stdin)) return 0;
    size_t k = strlen(buf);
    while (k && (buf[k - 1] == '\n' || buf[k - 1] == '\r')) buf[--k] = 0;
    return 1;
}

// <|im_start|>ROLE<|im_sep|>CONTENT<|im_end|> appended at out; returns the new count
static int render_message(const Tokenizer *t, const int *marks, const char *role, const char *content, int *out) {
    int n = 0;
    out[n++] = marks[0];
    n += encode_text(t, role, out + n);
    out[n++] = marks[1];
    n += encode_text(t, content, out + n);
    out[n++] = marks[2];
    return n;
}

// Turns: the user's text (the first from -i, the rest from stdin, one line each), then the reply,
// sampled until <|im_end|> (or EOT, or -n tokens). Each turn feeds only its new tokens: the closing
// <|im_end|> of the last reply, [the system message], the user message, `<|im_start|>assistant<|im_sep|>`.
// A turn that no longer fits in the context ends the conversation, with a notice.
static void chat(const Model *m, State *s, const Tokenizer *t, const char *system, const char *first, int steps,
                 float temperature, float top_p, ProbIndex *buf) {
    int marks[3] = {special_id(t, "<|im_start|>"), special_id(t, "<|im_sep|>"), special_id(t, "<|im_end|>")};
    if (!t->bpe || marks[0] < 0 || marks[1] < 0 || marks[2] < 0)
        die("chat mode needs a version-3 tokenizer with the chat tokens (the tokenizer.bin that `minigpt sft` writes)", NULL);
    int maxT = m->cfg.maxT, interactive = isatty(0), pos = 0, close = 0;
    static char line[1 << 16];
    size_t cap = 2 * sizeof(line) + (system ? strlen(system) : 0) + (first ? strlen(first) : 0) + 64;
    int *toks = xmalloc(cap * sizeof(int));
    for (int turn = 0;; turn++) {
        const char *user = turn == 0 && first ? first : NULL;
        if (!user) {
            if (interactive) { printf("user: "); fflush(stdout); }
            if (!read_line(line, sizeof(line))) break;
            user = line;
        }
        int n = 0;
        if (close) toks[n++] = marks[2];  // the last reply's <|im_end|>: sampled, not yet fed
        if (turn == 0 && system) n += render_message(t, marks, "system", system, toks + n);
        n += render_message(t, marks, "user", user, toks + n);
        toks[n++] = marks[0];
        n += encode_text(t, "assistant", toks + n);
        toks[n++] = marks[1];
        if (pos + n >= maxT) {
            fprintf(stderr, "run: the context is full (%d of %d tokens): the conversation ends here\n", pos, maxT);
            break;
        }
        forward(m, s, toks, pos, n);
        pos += n;
        if (interactive) { printf("assistant: "); fflush(stdout); }
        for (int generated = 0; generated < steps; generated++) {
            int next = sample(s->logits, m->cfg.V, temperature, top_p, buf);
            if (next == marks[2] || next == t->eot) break;
            fwrite(t->tok[next], 1, t->len[next], stdout);
            fflush(stdout);
            if (pos >= maxT) break;
            forward(m, s, &next, pos, 1);
            pos++;
        }
        close = 1;
        printf("\n");
        fflush(stdout);
        if (pos >= maxT) {
            fprintf(stderr, "run: the context is full (%d tokens): the conversation ends here\n", maxT);
            break;
        }
    }
    free(toks);
}

// ------------------------------------------------------------------------------------------------

static void usage(void) {
    fprintf(stderr,
            "usage: run model.bin [options]\n"
            "  -z PATH   tokenizer .bin (llm.c format); without it token ids are printed\n"
            "  -i TEXT   prompt text (BPE with a version-3 tokenizer, else byte by byte); in chat mode the first user message\n"
            "  -I IDS    prompt token ids, space or comma separated (default: the EOT token)\n"
            "  -n INT    new tokens to generate (default 256)\n"
            "  -t FLOAT  temperature, 0 = greedy (default 1.0)\n"
            "  -p FLOAT  top-p (default 1.0: off)\n"
            "  -s INT    random seed (default: time)\n"
            "  -x        stop at the EOT token\n"
            "  -o ids    print generated token ids instead of text\n"
            "  -m MODE   generate (default) or chat: the chat template, replies stop at <|im_end|>;\n"
            "            user turns from -i, then one line of stdin each; encode: print the ids of -i\n"
            "  -y TEXT   chat mode: the system prompt\n");
    exit(1);
}

// strict flag values: the whole text must be a number in range (atoi("abc") is 0, and
// strtol("4294967296") wraps when cast to int), and a float must be finite (NaN compares false)
static void bad_value(char opt, const char *v, const char *expected) {
    fprintf(stderr, "run: -%c: expected %s, found '", opt, expected);
    for (int i = 0; v[i] && i < 40; i++) {  // printable, one line: a value may hold a newline or escapes
        unsigned char c = (unsigned char)v[i];
        if (c >= 32 && c < 127 && c != '\\') fputc(c, stderr); else fprintf(stderr, "\\x%02x", c);
    }
    fprintf(stderr, "%s'\n", strlen(v) > 40 ? "..." : "");
    exit(1);
}

static long parse_long(char opt, const char *v, long lo, long hi, const char *expected) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (end == v || *end || errno || x < lo || x > hi) bad_value(opt, v, expected);
    return x;
}

static float parse_float(char opt, const char *v, float lo, float hi, const char *expected) {
    char *end;
    errno = 0;
    float x = strtof(v, &end);
    if (end == v || *end || errno || !isfinite(x) || x < lo || x > hi) bad_value(opt, v, expected);
    return x;
}

static uint64_t parse_seed(const char *v) {
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (end == v || *end || errno || v[0] == '-') bad_value('s', v, "an integer in [0, 2^64)");
    return (uint64_t)x;
}

int main(int argc, char **argv) {
    // OpenMP threads that spin while they wait starve the working thread whenever the cores are
    // shared (5-10x slower on a busy machine). libgomp reads OMP_WAIT_POLICY before main runs, so
    // if the user has not chosen, choose sleeping and restart once (Linux; elsewhere carry on).
    if (!getenv("OMP_WAIT_POLICY")) {
        setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
        execv("/proc/self/exe", argv);
    }
    if (argc < 2 || argv[1][0] == '-') usage();
    const char *model_path = argv[1], *tok_path = NULL, *text = NULL, *ids = NULL, *out_mode = "text";
    const char *mode = "generate", *system = NULL;
    int steps = 256, stop_eot = 0;
    float temperature = 1.0f, top_p = 1.0f;
    uint64_t seed = (uint64_t)time(NULL);
    for (int i = 2; i < argc; i++) {
        if (argv[i][0] != '-' || strlen(argv[i]) != 2) usage();
        char o = argv[i][1];
        if (o == 'x') { stop_eot = 1; continue; }
        if (i + 1 >= argc) usage();
        const char *v = argv[++i];
        switch (o) {
            case 'z': tok_path = v; break;
            case 'i': text = v; break;
            case 'I': ids = v; break;
            case 'n': steps = (int)parse_long('n', v, 0, INT_MAX, "an integer in [0, 2^31)"); break;
            case 't': temperature = parse_float('t', v, 0.0f, FLT_MAX, "a finite number >= 0"); break;
            case 'p': top_p = parse_float('p', v, 1e-30f, 1.0f, "a number in (0, 1]"); break;
            case 's': seed = parse_seed(v); break;
            case 'o':
                if (strcmp(v, "ids") && strcmp(v, "text")) bad_value('o', v, "ids or text");
                out_mode = v;
                break;
            case 'm':
                if (strcmp(v, "generate") && strcmp(v, "chat") && strcmp(v, "encode")) bad_value('m', v, "generate, chat or encode");
                mode = v;
                break;
            case 'y': system = v; break;
            default: usage();
        }
    }
    rng_state = seed ? seed : 0x9E3779B97F4A7C15ull;  // xorshift needs a non-zero state

    Model m;
    load_model(&m, model_path);
    Config *c = &m.cfg;
    Tokenizer tok = {0};
    if (tok_path) load_tokenizer(&tok, tok_path);
    int eot = tok_path ? tok.eot : -1;

    if (strcmp(mode, "chat") == 0) {
        if (!tok_path) die("chat mode needs a tokenizer (-z)", NULL);
        if (tok.n < c->V) die("the tokenizer has fewer tokens than the model's vocabulary", tok_path);
        State cs;
        alloc_state(&cs, c);
        ProbIndex *cbuf = xmalloc((size_t)c->V * sizeof(ProbIndex));
        chat(&m, &cs, &tok, system, text, steps, temperature, top_p, cbuf);
        return 0;
    }
    if (strcmp(mode, "encode") == 0) {  // the ids of -i's text, one line: to check against minigpt's encoder
        if (!tok_path || !text) die("-m encode needs -z and -i", NULL);
        int *out = xmalloc((strlen(text) + 1) * sizeof(int)), k = encode_text(&tok, text, out);
        for (int i = 0; i < k; i++) printf(i ? " %d" : "%d", out[i]);
        printf("\n");
        return 0;
    }
    if (strcmp(mode, "generate") != 0) die("-m must be generate, chat or encode", NULL);
    int *prompt = xmalloc(((text ? strlen(text) : 0) + (ids ? strlen(ids) : 0) + 1) * sizeof(int)), P = 0;
    if (ids) {
        for (const char *s = ids; *s;) {
            while (*s == ' ' || *s == ',') s++;
            if (!*s) break;
            char *end;
            errno = 0;
            long id = strtol(s, &end, 10);
            if (end == s || (*end && *end != ' ' && *end != ',')) bad_value('I', ids, "token ids separated by spaces or commas");
            if (errno || id < 0 || id > INT_MAX) bad_value('I', ids, "token ids in [0, vocab_size)");
            prompt[P++] = (int)id;
            s = end;
        }
    } else if (text) {
        if (!tok_path) die("-i needs a tokenizer (-z), or give ids with -I", NULL);
        P = encode_text(&tok, text, prompt);
    } else if (eot >= 0) {
        prompt[P++] = eot;
    }
    if (P == 0) die("empty prompt: give -i or -I (or a tokenizer, to start from EOT)", NULL);
    if (P > c->maxT) die("the prompt is longer than the model's block_size", NULL);
    for (int i = 0; i < P; i++)
        if (prompt[i] < 0 || prompt[i] >= c->V) die("a prompt token id is outside [0, vocab_size)", NULL);
    if (tok_path && tok.n < c->V) die("the tokenizer has fewer tokens than the model's vocabulary", tok_path);

    State s;
    alloc_state(&s, c);
    ProbIndex *buf = xmalloc((size_t)c->V * sizeof(ProbIndex));
    int text_out = tok_path && strcmp(out_mode, "ids") != 0;
    if (text_out && text) { fputs(text, stdout); fflush(stdout); }

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    forward(&m, &s, prompt, 0, P);  // prefill: the whole prompt in one pass
    int pos = P, generated = 0;
    while (generated < steps) {
        int next = sample(s.logits, c->V, temperature, top_p, buf);
        if (stop_eot && next == eot) break;
        generated++;
        if (text_out) fwrite(tok.tok[next], 1, tok.len[next], stdout);
        else printf("%d ", next);
        fflush(stdout);
        if (generated == steps || pos >= c->maxT) break;  // done, or the context is full
        forward(&m, &s, &next, pos, 1);
        pos++;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("\n");
    double secs = (t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec);
    fprintf(stderr, "%d prompt + %d new tokens in %.2f s (%.1f tok/s, %d threads, %s weights)\n", P, generated,
            secs, generated / secs, decode_get_threads(), m.half ? "bf16" : "fp32");
    return 0;
}
