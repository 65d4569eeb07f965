/*
 * decode.c: the kernels of GPT-2 inference with a KV cache, in C with OpenMP.
 *
 * The NumPy specification is minigpt/model/ops_decode.py: same function names, same arguments (outputs
 * first, then inputs, then sizes). A "row" is one new token of one stream: row r is token
 * tokens[r] of stream streams[r] at position positions[r]. Decoding is N = batch rows, one per
 * stream; prefill is N = the prompt's tokens. The KV cache of one layer is (B, NH, maxT, hs).
 *
 * At batch 1 decoding is a stream of matrix-vector products: every weight is read once per token,
 * so the speed limit is memory bandwidth. The matvec below therefore
 *   - splits the output rows across threads (each thread streams its own slab of the weights),
 *   - uses AVX2 FMA with 8 independent accumulators (8 weight rows x 1 input row at batch 1,
 *     4 weight rows x 2 input rows for a batch: each weight load then feeds two FMAs),
 *   - reads bf16 weights directly: a bf16 is the top half of an fp32, so widening is a shift,
 *     and half the bytes means about twice the tokens per second.
 * Every output element is one accumulator summed in the same order whatever the tile, batch size
 * or thread count, so a stream decodes to the same bits alone or in a batch.
 *
 * csrc/run.c includes this file: the standalone runner and the Python engine share these kernels.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define DECODE_AVX2 1
#endif
#include "gemm.c"  // the packed sgemm of training: prefill's products go through it
#include "fastmath.h"

void decode_set_threads(int n) {
#ifdef _OPENMP
    if (n > 0) omp_set_num_threads(n);
#else
    (void)n;
#endif
}

int decode_get_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

// ------------------------------------------------------------------------------------------------
// bf16: the top 16 bits of an IEEE fp32 (same sign and exponent, 8 bits of mantissa)

static inline float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t f32_to_bf16(float f) {  // round to nearest, ties to even; NaN stays NaN
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

// ------------------------------------------------------------------------------------------------
// matvec: out (N, OC) = inp (N, C) @ w.T + bias, w (OC, C) in fp32 or bf16

#define INLINE inline __attribute__((always_inline))  // `half` must reach every load as a constant
#define ROWS 8          // weight rows per tile
#define PARALLEL_MIN 65536  // multiply-adds below which waking a second thread costs more than it saves
#define NBLOCK 64       // input rows per block: a block of inputs stays in L2 while the weights stream by

// one weight element / one 8-wide chunk as fp32, from fp32 or bf16 storage; `half` is a
// compile-time constant in each caller, so the branch disappears
static INLINE float w_at(const void *w, size_t i, const int half) {
    return half ? bf16_to_f32(((const uint16_t *)w)[i]) : ((const float *)w)[i];
}

#ifdef DECODE_AVX2
static INLINE __m256 w_load8(const void *w, size_t i, const int half) {
    if (half) {
        __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)w + i));
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    return _mm256_loadu_ps((const float *)w + i);
}

static inline float hsum8(__m256 v) {  // a fixed order, so every tile sums alike
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#endif

// the end of one dot product: the horizontal sum, the scalar tail (C % 8), the bias
static INLINE float dot_finish(float s, const float *x, const void *w, size_t wrow, int c0, int C,
                               const float *bias, int o, const int half) {
    for (int c = c0; c < C; c++) s = fmaf(x[c], w_at(w, wrow + c, half), s);  // fused, as the vector part
    return bias ? s + bias[o] : s;
}

// out[n][o] for one weight row o and one input row n
static INLINE void tile_1x1(float *out, const float *x, const void *w, const float *bias,
                            int o, int C, const int half) {
    size_t r = (size_t)o * C;
    int c = 0;
    float s = 0.0f;
#ifdef DECODE_AVX2
    __m256 a = _mm256_setzero_ps();
    for (; c + 8 <= C; c += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(x + c), w_load8(w, r + c, half), a);
    s = hsum8(a);
#endif
    *out = dot_finish(s, x, w, r, c, C, bias, o, half);
}

// out[n][o..o+3] for 4 weight rows and one input row
static INLINE void tile_4x1(float *out, const float *x, const void *w, const float *bias,
                            int o, int C, const int half) {
    size_t r0 = (size_t)o * C, r1 = r0 + C, r2 = r1 + C, r3 = r2 + C;
    int c = 0;
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
#ifdef DECODE_AVX2
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (; c + 8 <= C; c += 8) {
        __m256 xv = _mm256_loadu_ps(x + c);
        a0 = _mm256_fmadd_ps(xv, w_load8(w, r0 + c, half), a0);
        a1 = _mm256_fmadd_ps(xv, w_load8(w, r1 + c, half), a1);
        a2 = _mm256_fmadd_ps(xv, w_load8(w, r2 + c, half), a2);
        a3 = _mm256_fmadd_ps(xv, w_load8(w, r3 + c, half), a3);
    }
    s0 = hsum8(a0); s1 = hsum8(a1); s2 = hsum8(a2); s3 = hsum8(a3);
#endif
    out[0] = dot_finish(s0, x, w, r0, c, C, bias, o, half);
    out[1] = dot_finish(s1, x, w, r1, c, C, bias, o + 1, half);
    out[2] = dot_finish(s2, x, w, r2, c, C, bias, o + 2, half);
    out[3] = dot_finish(s3, x, w, r3, c, C, bias, o + 3, half);
}

// out[n][o..o+7] for 8 weight rows and one input row: batch-1 decoding, 8 weight streams in flight.
// Eight short rows are eight short streams that the hardware prefetcher barely learns, so while we
// read this tile we prefetch the next one (`next` rows of it), a few cache lines per step: the
// weights then arrive as one long sequential stream.
static INLINE void tile_8x1(float *out, const float *x, const void *w, const float *bias,
                            int o, int C, int next, const int half) {
#ifdef DECODE_AVX2
    size_t r = (size_t)o * C, esize = half ? 2 : 4;
    const char *pf = (const char *)w + (r + 8 * (size_t)C) * esize;  // the next tile
    size_t pf_lines = (size_t)next * C * esize / 64, steps = C / 8 ? C / 8 : 1;
    size_t per_step = (pf_lines + steps - 1) / steps, done = 0;
    __m256 a[8];
    for (int j = 0; j < 8; j++) a[j] = _mm256_setzero_ps();
    int c = 0;
    for (; c + 8 <= C; c += 8) {
        for (size_t k = 0; k < per_step && done < pf_lines; k++, done++) _mm_prefetch(pf + 64 * done, _MM_HINT_T0);
        __m256 xv = _mm256_loadu_ps(x + c);
        for (int j = 0; j < 8; j++) a[j] = _mm256_fmadd_ps(xv, w_load8(w, r + (size_t)j * C + c, half), a[j]);
    }
    for (int j = 0; j < 8; j++) out[j] = dot_finish(hsum8(a[j]), x, w, r + (size_t)j * C, c, C, bias, o + j, half);
#else
    (void)next;
    tile_4x1(out, x, w, bias, o, C, half);
    tile_4x1(out + 4, x, w, bias, o + 4, C, half);
#endif
}

// out[n][o..o+3] and out[n+1][o..o+3]: 4 weight rows x 2 input rows, each weight load used twice
static INLINE void tile_4x2(float *out0, float *out1, const float *x0, const float *x1, const void *w,
                            const float *bias, int o, int C, const int half) {
#ifdef DECODE_AVX2
    size_t r0 = (size_t)o * C, r1 = r0 + C, r2 = r1 + C, r3 = r2 + C;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    int c = 0;
    for (; c + 8 <= C; c += 8) {
        __m256 x0v = _mm256_loadu_ps(x0 + c), x1v = _mm256_loadu_ps(x1 + c), wv;
        wv = w_load8(w, r0 + c, half); a0 = _mm256_fmadd_ps(x0v, wv, a0); b0 = _mm256_fmadd_ps(x1v, wv, b0);
        wv = w_load8(w, r1 + c, half); a1 = _mm256_fmadd_ps(x0v, wv, a1); b1 = _mm256_fmadd_ps(x1v, wv, b1);
        wv = w_load8(w, r2 + c, half); a2 = _mm256_fmadd_ps(x0v, wv, a2); b2 = _mm256_fmadd_ps(x1v, wv, b2);
        wv = w_load8(w, r3 + c, half); a3 = _mm256_fmadd_ps(x0v, wv, a3); b3 = _mm256_fmadd_ps(x1v, wv, b3);
    }
    out0[0] = dot_finish(hsum8(a0), x0, w, r0, c, C, bias, o, half);
    out0[1] = dot_finish(hsum8(a1), x0, w, r1, c, C, bias, o + 1, half);
    out0[2] = dot_finish(hsum8(a2), x0, w, r2, c, C, bias, o + 2, half);
    out0[3] = dot_finish(hsum8(a3), x0, w, r3, c, C, bias, o + 3, half);
    out1[0] = dot_finish(hsum8(b0), x1, w, r0, c, C, bias, o, half);
    out1[1] = dot_finish(hsum8(b1), x1, w, r1, c, C, bias, o + 1, half);
    out1[2] = dot_finish(hsum8(b2), x1, w, r2, c, C, bias, o + 2, half);
    out1[3] = dot_finish(hsum8(b3), x1, w, r3, c, C, bias, o + 3, half);
#else
    tile_4x1(out0, x0, w, bias, o, C, half);
    tile_4x1(out1, x1, w, bias, o, C, half);
#endif
}

// one tile of output rows (ROWS weight rows) for input rows n0..n1
static INLINE void matvec_tile(float *out, const float *inp, const void *w, const float *bias,
                               int n0, int n1, int C, int OC, int t, const int half) {
    int o = t * ROWS;
    if (o + ROWS <= OC) {
        int n = n0;
        for (; n + 2 <= n1; n += 2)
            for (int oo = o; oo < o + ROWS; oo += 4)
                tile_4x2(out + (size_t)n * OC + oo, out + (size_t)(n + 1) * OC + oo,
                         inp + (size_t)n * C, inp + (size_t)(n + 1) * C, w, bias, oo, C, half);
        int next = OC - (o + ROWS) < ROWS ? OC - (o + ROWS) : ROWS;  // rows of the next tile (to prefetch)
        for (; n < n1; n++) tile_8x1(out + (size_t)n * OC + o, inp + (size_t)n * C, w, bias, o, C, next, half);
    } else {  // the last OC % 8 rows
        for (; o < OC; o++)
            for (int n = n0; n < n1; n++)
                tile_1x1(out + (size_t)n * OC + o, inp + (size_t)n * C, w, bias, o, C, half);
    }
}

// Prefill: N rows at once are a matrix product, and the packed GEMM of training (csrc/gemm.c, its
// AVX-512 or AVX2 micro-kernel) runs it near the FMA units' peak, where the matvec tiles reuse each
// weight only 2 times from registers. Its packing copies every weight once per call, which pays
// from a few dozen rows on; below GEMM_ROWS (decoding, small batches) the matvec runs, whose sums
// do not depend on N: a stream decodes to the same bits alone or in a batch of up to GEMM_ROWS-1.
#define GEMM_ROWS 48  // measured on Zen 4: at 32 rows the matvec was as fast, at 64 the GEMM 1.2x

static void bias_rows(float *out, const float *bias, int N, int OC) {  // out[n] = bias (or 0)
    for (int n = 0; n < N; n++) {
        if (bias) memcpy(out + (size_t)n * OC, bias, (size_t)OC * sizeof(float));
        else memset(out + (size_t)n * OC, 0, (size_t)OC * sizeof(float));
    }
}

// The loop is written out in each function (not in a shared helper) so that OpenMP outlines one
// region per weight type, with `half` a constant in it: a shared region would test it per load.
void matvec_forward(float *out, const float *inp, const float *w, const float *bias, int N, int C, int OC) {
    if (N >= GEMM_ROWS) {  // out (N, OC) = bias + inp (N, C) w^T: w^T is w read with swapped strides
        bias_rows(out, bias, N, OC);
        sgemm(N, OC, C, inp, C, 1, w, 1, C, out, OC, 1);
        return;
    }
    for (int n0 = 0; n0 < N; n0 += NBLOCK) {
        int n1 = n0 + NBLOCK < N ? n0 + NBLOCK : N;
#pragma omp parallel for schedule(dynamic, 16) if ((size_t)(n1 - n0) * C * OC > PARALLEL_MIN)
        for (int t = 0; t < (OC + ROWS - 1) / ROWS; t++) matvec_tile(out, inp, w, bias, n0, n1, C, OC, t, 0);
    }
}

void matvec_forward_bf16(float *out, const float *inp, const uint16_t *w, const float *bias,
                         int N, int C, int OC) {
    if (N >= GEMM_ROWS) {  // the weights are widened to fp32 as they are packed
        bias_rows(out, bias, N, OC);
        sgemm_bf16b(N, OC, C, inp, C, 1, w, 1, C, out, OC, 1);
        return;
    }
    for (int n0 = 0; n0 < N; n0 += NBLOCK) {
        int n1 = n0 + NBLOCK < N ? n0 + NBLOCK : N;
#pragma omp parallel for schedule(dynamic, 16) if ((size_t)(n1 - n0) * C * OC > PARALLEL_MIN)
        for (int t = 0; t < (OC + ROWS - 1) / ROWS; t++) matvec_tile(out, inp, w, bias, n0, n1, C, OC, t, 1);
    }
}

// ------------------------------------------------------------------------------------------------
// stream_read: the sum of n floats, read once, split across the threads. Not a model kernel: the
// speed limit of batch-1 decoding, measured (benches/bench_decode.py reads a buffer the size of the
// weights with it, and reports decode as a share of that bandwidth)

double stream_read(const float *x, long n) {
    double total = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : total) if (n > PARALLEL_MIN)
    for (long b = 0; b < (n + 4095) / 4096; b++) {  // blocks of 16 KB, 16 independent float lanes each
        float acc[16] = {0};
        long end = (b + 1) * 4096 < n ? (b + 1) * 4096 : n;
        long i = b * 4096;
        for (; i + 16 <= end; i += 16)
#pragma omp simd
            for (int j = 0; j < 16; j++) acc[j] += x[i + j];
        for (; i < end; i++) acc[0] += x[i];
        for (int j = 0; j < 16; j++) total += acc[j];
    }
    return total;
}

// ------------------------------------------------------------------------------------------------
// layernorm over each row's C channels (no mean/rstd kept: inference has no backward)

void layernorm_cached(float *out, const float *inp, const float *w, const float *b, int N, int C) {
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        float *y = out + (size_t)n * C;
        float m = 0.0f, v = 0.0f;
        for (int c = 0; c < C; c++) m += x[c];
        m /= C;
        for (int c = 0; c < C; c++) v += (x[c] - m) * (x[c] - m);
        v /= C;
        float s = 1.0f / sqrtf(v + 1e-5f);
        for (int c = 0; c < C; c++) y[c] = (x[c] - m) * s * w[c] + b[c];
    }
}

// ------------------------------------------------------------------------------------------------
// KV cache: write each row's key and value at its stream's position; attend over the cache

void kv_write(float *kcache, float *vcache, const float *qkv, const int *streams, const int *positions,
              int N, int C, int NH, int maxT) {
    int hs = C / NH;
    for (int r = 0; r < N; r++) {
        const float *k = qkv + (size_t)r * 3 * C + C, *v = k + C;
        for (int h = 0; h < NH; h++) {
            size_t at = (((size_t)streams[r] * NH + h) * maxT + positions[r]) * hs;
            memcpy(kcache + at, k + h * hs, hs * sizeof(float));
            memcpy(vcache + at, v + h * hs, hs * sizeof(float));
        }
    }
}

void attention_cached(float *out, const float *qkv, const float *kcache, const float *vcache,
                      const int *streams, const int *positions, int N, int C, int NH, int maxT) {
    // out (N, C); qkv (N, 3C), the query is its first C; row r sees its stream's positions 0..p
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
#pragma omp parallel if ((size_t)N * NH * (maxT + 1) * hs > PARALLEL_MIN)
    {
        float *att = (float *)malloc((size_t)maxT * sizeof(float));  // this thread's scores
#pragma omp for collapse(2) schedule(static)
        for (int r = 0; r < N; r++) {
            for (int h = 0; h < NH; h++) {
                const float *q = qkv + (size_t)r * 3 * C + h * hs;
                size_t base = ((size_t)streams[r] * NH + h) * maxT * hs;
                const float *K = kcache + base, *V = vcache + base;
                int p = positions[r];
                float mx = -INFINITY;
                for (int t = 0; t <= p; t++) {
                    float s = 0.0f;
#pragma omp simd reduction(+ : s)
                    for (int i = 0; i < hs; i++) s += q[i] * K[(size_t)t * hs + i];
                    att[t] = s * scale;
                    if (att[t] > mx) mx = att[t];
                }
                float sum = 0.0f;
                for (int t = 0; t <= p; t++) {
                    att[t] = expf(att[t] - mx);
                    sum += att[t];
                }
                float inv = 1.0f / sum;
                float *y = out + (size_t)r * C + h * hs;
                for (int i = 0; i < hs; i++) y[i] = 0.0f;
                for (int t = 0; t <= p; t++) {
                    float a = att[t] * inv;
                    for (int i = 0; i < hs; i++) y[i] += a * V[(size_t)t * hs + i];
                }
            }
        }
        free(att);
    }
}

// ------------------------------------------------------------------------------------------------
// gelu (tanh approximation), elementwise; out may be inp

void gelu_forward(float *out, const float *inp, int N) {
    const float s = 0.7978845608028654f;  // sqrt(2 / pi)
    // tanh_f (csrc/fastmath.h) vectorises where libm's tanhf is a call per element: prefill spent
    // a sixth of its time here
#pragma omp parallel for simd schedule(static) if (N > 4096)
    for (int i = 0; i < N; i++) {
        float x = inp[i];
        out[i] = 0.5f * x * (1.0f + tanh_f(s * (x + 0.044715f * x * x * x)));
    }
}
