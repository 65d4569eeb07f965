/* sgemm: C (+)= A B for any sizes and strides, the GotoBLAS / BLIS way.
 *
 * The three products of a linear layer (out = inp W^T, dinp = dout W, dW += dout^T inp) are one
 * routine with different strides. The work is cut in three levels so each operand sits in a cache:
 *
 *   tile   (MT x NT of C)      one OpenMP task; tiles never overlap, so no locks and no races
 *   pc     (KC of the K sum)   pack B's KC x NT block, panel by panel
 *   ic     (MC rows)           pack A's MC x KC block (L2)
 *   jr, ir (MR x NR)           the micro-kernel: an MR x NR block of C held in registers, fed per p
 *                              by one NR-wide row of packed B and MR broadcasts of packed A
 *                              (AVX-512 12 x 32 in 24 zmm, AVX2 6 x 16 in 12 ymm, chosen at run time)
 *
 * Packing copies A into MR-row panels (A[p][r] contiguous) and B into NR-column panels, zero-padding
 * the ragged edges, so the micro-kernel never checks bounds; a transposed operand is transposed here,
 * during a copy we make anyway. Edge blocks of C go through a small buffer.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MINIGPT_X86 1
#else
#define MINIGPT_X86 0
#endif
#include "gemm.h"

/* the micro-tile, MR x NR, is the kernel's (6 x 16 for AVX2, 12 x 32 for AVX-512): see below */
#define KC 256   /* depth of one packed block: A panel 6-12 KB, B panel 16-32 KB stay in L1 (Zen 4: 32 KB) */
#define MC 144   /* rows of a packed A block (a multiple of every MR): 144 x 256 floats = 144 KB, in L2 */
#define MT_MAX 576  /* tile rows (a tile is one OpenMP task; its A blocks are packed MC rows at a time) */
#define NT_MAX 1024 /* tile columns: packed B block 256 x 1024 floats = 1 MB, from L3 */

/* ---------------------------------------------------------------------------------------------- */
/* the naive kernel, to read: one dot product per output element */

void sgemm_naive(int M, int N, int K, const float *A, long rsa, long csa, const float *B, long rsb,
                 long csb, float *C, long ldc, int accumulate) {
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) {
            float s = 0.0f;
            for (int p = 0; p < K; p++) s += A[i * rsa + p * csa] * B[p * rsb + j * csb];
            C[i * ldc + j] = accumulate ? C[i * ldc + j] + s : s;
        }
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* packing */

/* Both loops run p outside and the panel's width inside, so each packed row of the panel is written
 * in one contiguous run and the source is read as MR (or NR) parallel streams, whatever the strides:
 * each source cache line then serves 16 consecutive p from L1. The widths are compile-time constants
 * at every call (see pack_A_as / pack_B_as), so the inner loops unroll. */

/* A rows [i0, i0+mc) x cols [p0, p0+kc) -> panels of MR rows: dst[panel][p][r] */
static inline __attribute__((always_inline)) void pack_A(float *dst, const float *A, long rsa, long csa, int i0,
                                                         int mc, int p0, int kc, const int MR) {
    for (int ir = 0; ir < mc; ir += MR) {
        int mr = mc - ir < MR ? mc - ir : MR;
        const float *a = A + (long)(i0 + ir) * rsa + (long)p0 * csa;
        if (mr == MR) {
            for (int p = 0; p < kc; p++)
                for (int r = 0; r < MR; r++) dst[p * MR + r] = a[p * csa + r * rsa];
        } else {  /* the ragged last panel: zero rows below the edge */
            for (int p = 0; p < kc; p++)
                for (int r = 0; r < MR; r++) dst[p * MR + r] = r < mr ? a[p * csa + r * rsa] : 0.0f;
        }
        dst += (long)MR * kc;
    }
}

/* one element of B, stored as fp32 or as bf16 (the top half of an fp32: widening is a shift);
 * `half` is a constant at every call, so the test disappears */
static inline __attribute__((always_inline)) float b_at(const void *B, long i, const int half) {
    if (!half) return ((const float *)B)[i];
    uint32_t u = (uint32_t)((const uint16_t *)B)[i] << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

#if MINIGPT_X86
/* B = W^T with W row-major (rsb = 1): an NR-column panel is NR rows of W, transposed. Scalar, that
 * is one load and one store per float; here 8 x 8 blocks go through registers (8 loads, 24
 * shuffles, 8 stores), which made the forward's packing ~3x cheaper. kc % 8 == 0 and NR % 8 == 0. */
__attribute__((target("avx2"))) static inline __m256 load8_avx2(const void *W, long i, const int half) {
    if (!half) return _mm256_loadu_ps((const float *)W + i);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)W + i));  /* bf16: widen by a shift */
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

__attribute__((target("avx2"))) static inline __attribute__((always_inline)) void
pack_Wt_avx2(float *dst, const void *W, long ldw, int kc, int NR, const int half) {
    for (int p = 0; p < kc; p += 8) {
        for (int c = 0; c < NR; c += 8) {
            long w = (long)c * ldw + p;
            __m256 r0 = load8_avx2(W, w, half), r1 = load8_avx2(W, w + ldw, half),
                   r2 = load8_avx2(W, w + 2 * ldw, half), r3 = load8_avx2(W, w + 3 * ldw, half),
                   r4 = load8_avx2(W, w + 4 * ldw, half), r5 = load8_avx2(W, w + 5 * ldw, half),
                   r6 = load8_avx2(W, w + 6 * ldw, half), r7 = load8_avx2(W, w + 7 * ldw, half);
            __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3),
                   t3 = _mm256_unpackhi_ps(r2, r3), t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
                   t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
            __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE),
                   u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE),
                   u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE),
                   u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
            float *d = dst + (long)p * NR + c;  /* row i of the block: p + i, columns c..c+7 */
            _mm256_storeu_ps(d + 0 * NR, _mm256_permute2f128_ps(u0, u4, 0x20));
            _mm256_storeu_ps(d + 1 * NR, _mm256_permute2f128_ps(u1, u5, 0x20));
            _mm256_storeu_ps(d + 2 * NR, _mm256_permute2f128_ps(u2, u6, 0x20));
            _mm256_storeu_ps(d + 3 * NR, _mm256_permute2f128_ps(u3, u7, 0x20));
            _mm256_storeu_ps(d + 4 * NR, _mm256_permute2f128_ps(u0, u4, 0x31));
            _mm256_storeu_ps(d + 5 * NR, _mm256_permute2f128_ps(u1, u5, 0x31));
            _mm256_storeu_ps(d + 6 * NR, _mm256_permute2f128_ps(u2, u6, 0x31));
            _mm256_storeu_ps(d + 7 * NR, _mm256_permute2f128_ps(u3, u7, 0x31));
        }
    }
}

__attribute__((target("avx2"))) static void pack_Wt_avx2_f32(float *dst, const float *W, long ldw, int kc, int NR) {
    pack_Wt_avx2(dst, W, ldw, kc, NR, 0);
}

__attribute__((target("avx2"))) static void pack_Wt_avx2_bf16(float *dst, const uint16_t *W, long ldw, int kc, int NR) {
    pack_Wt_avx2(dst, W, ldw, kc, NR, 1);
}
#endif

/* B rows [p0, p0+kc) x cols [j0, j0+nc) -> panels of NR columns: dst[panel][p][c] */
static inline __attribute__((always_inline)) void pack_B(float *dst, const void *B, long rsb, long csb, int p0,
                                                         int kc, int j0, int nc, const int NR, const int half) {
    for (int jr = 0; jr < nc; jr += NR) {
        int nr = nc - jr < NR ? nc - jr : NR;
        long b = (long)p0 * rsb + (long)(j0 + jr) * csb;
        if (nr == NR && csb == 1) {  /* row-major B: NR contiguous floats per p, a straight copy */
            for (int p = 0; p < kc; p++)
                for (int c = 0; c < NR; c++) dst[p * NR + c] = b_at(B, b + p * rsb + c, half);
        } else if (nr == NR) {       /* B = W^T, W row-major: NR rows of W read side by side */
            for (int p = 0; p < kc; p++)
                for (int c = 0; c < NR; c++) dst[p * NR + c] = b_at(B, b + c * csb + p * rsb, half);
        } else {                     /* the ragged last panel: zero columns past the edge */
            for (int p = 0; p < kc; p++)
                for (int c = 0; c < NR; c++) dst[p * NR + c] = c < nr ? b_at(B, b + c * csb + p * rsb, half) : 0.0f;
        }
        dst += (long)NR * kc;
    }
}

static void pack_A_as(float *dst, const float *A, long rsa, long csa, int i0, int mc, int p0, int kc, int MR) {
    if (MR == 12) pack_A(dst, A, rsa, csa, i0, mc, p0, kc, 12);
    else pack_A(dst, A, rsa, csa, i0, mc, p0, kc, 6);
}

static void pack_B_as(float *dst, const void *B, long rsb, long csb, int p0, int kc, int j0, int nc, int NR,
                      int half, int simd) {
#if MINIGPT_X86
    if (simd && rsb == 1 && csb != 1 && kc % 8 == 0) {  /* W^T: whole panels by 8 x 8 transposes */
        int full = nc / NR * NR;
        for (int jr = 0; jr < full; jr += NR) {
            long at = p0 + (long)(j0 + jr) * csb;
            if (half) pack_Wt_avx2_bf16(dst + (long)jr * kc, (const uint16_t *)B + at, csb, kc, NR);
            else pack_Wt_avx2_f32(dst + (long)jr * kc, (const float *)B + at, csb, kc, NR);
        }
        if (full == nc) return;
        dst += (long)full * kc;  /* the ragged last panel below */
        j0 += full;
        nc -= full;
    }
#else
    (void)simd;
#endif
    if (half && NR == 32) pack_B(dst, B, rsb, csb, p0, kc, j0, nc, 32, 1);
    else if (half) pack_B(dst, B, rsb, csb, p0, kc, j0, nc, 16, 1);
    else if (NR == 32) pack_B(dst, B, rsb, csb, p0, kc, j0, nc, 32, 0);
    else pack_B(dst, B, rsb, csb, p0, kc, j0, nc, 16, 0);
}

/* ---------------------------------------------------------------------------------------------- */
/* the micro-kernels: c[mr x nr] (+)= a-panel (kc x mr) times b-panel (kc x nr)
 *
 * One build carries every kernel its compiler can emit; each SIMD kernel is compiled for its own
 * instruction set by a target attribute, and the one to run is chosen once, at run time, from what
 * the CPU reports (cpuid). So a build made on an AVX2 laptop uses AVX-512 on a server, and a build
 * made without -march=native still gets the SIMD kernels. MINIGPT_KERNEL=avx512|avx2|portable
 * forces one (the tests use it to keep every path tested on one machine). */

typedef void (*ukernel_fn)(int kc, const float *a, const float *b, float *c, long ldc, int accumulate);
typedef struct {
    const char *name, *label;  /* "avx512": what MINIGPT_KERNEL names; "avx512f 12x32": what KERNEL says */
    int mr, nr;                /* the micro-tile: mr rows broadcast from A, nr columns of B as vectors */
    ukernel_fn fn;
} Ukernel;

/* portable: plain C with GCC/Clang vector types, which the compiler maps onto whatever SIMD the
 * target has (SSE2 on any x86-64, NEON on ARM), four lanes at a time */
typedef float v4f __attribute__((vector_size(16)));

static void kernel_portable(int kc, const float *a, const float *b, float *c, long ldc, int accumulate) {
    enum { PR = 6, PC = 16 };
    v4f acc[PR][PC / 4];
    memset(acc, 0, sizeof(acc));
    for (int p = 0; p < kc; p++) {
        v4f bv[PC / 4];
        memcpy(bv, b, sizeof(bv));
        for (int r = 0; r < PR; r++) {
            v4f ar = {a[r], a[r], a[r], a[r]};
            for (int j = 0; j < PC / 4; j++) acc[r][j] += ar * bv[j];
        }
        a += PR;
        b += PC;
    }
    for (int r = 0; r < PR; r++) {
        float out[PC];
        memcpy(out, acc[r], sizeof(out));
        for (int j = 0; j < PC; j++) c[r * ldc + j] = accumulate ? c[r * ldc + j] + out[j] : out[j];
    }
}

#if MINIGPT_X86
/* AVX2 + FMA, 6 x 16: 12 accumulators in 12 of the 16 ymm registers, fed per p by one 16-wide row
 * of packed B (2 loads) and 6 broadcasts of packed A */
__attribute__((target("avx2,fma")))
static void kernel_avx2(int kc, const float *a, const float *b, float *c, long ldc, int accumulate) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
           c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (int r = 0; r < 6; r++) _mm_prefetch((const char *)(c + r * ldc), _MM_HINT_T0);
    #pragma GCC unroll 4
    for (int p = 0; p < kc; p++) {
        __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8), ar;
        ar = _mm256_broadcast_ss(a + 0); c00 = _mm256_fmadd_ps(ar, b0, c00); c01 = _mm256_fmadd_ps(ar, b1, c01);
        ar = _mm256_broadcast_ss(a + 1); c10 = _mm256_fmadd_ps(ar, b0, c10); c11 = _mm256_fmadd_ps(ar, b1, c11);
        ar = _mm256_broadcast_ss(a + 2); c20 = _mm256_fmadd_ps(ar, b0, c20); c21 = _mm256_fmadd_ps(ar, b1, c21);
        ar = _mm256_broadcast_ss(a + 3); c30 = _mm256_fmadd_ps(ar, b0, c30); c31 = _mm256_fmadd_ps(ar, b1, c31);
        ar = _mm256_broadcast_ss(a + 4); c40 = _mm256_fmadd_ps(ar, b0, c40); c41 = _mm256_fmadd_ps(ar, b1, c41);
        ar = _mm256_broadcast_ss(a + 5); c50 = _mm256_fmadd_ps(ar, b0, c50); c51 = _mm256_fmadd_ps(ar, b1, c51);
        a += 6;
        b += 16;
    }
    __m256 acc[6][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    for (int r = 0; r < 6; r++) {
        float *cr = c + r * ldc;
        if (accumulate) {
            acc[r][0] = _mm256_add_ps(acc[r][0], _mm256_loadu_ps(cr));
            acc[r][1] = _mm256_add_ps(acc[r][1], _mm256_loadu_ps(cr + 8));
        }
        _mm256_storeu_ps(cr, acc[r][0]);
        _mm256_storeu_ps(cr + 8, acc[r][1]);
    }
}

/* AVX-512, 12 x 32: 24 accumulators in 24 of the 32 zmm registers, 2 for the row of packed B, the
 * rest for broadcasts (which the compiler folds into the FMA as a {1to16} memory operand). Per p:
 * 2 loads and 12 broadcasts feed 24 FMAs, so the FMA units, not the loads, set the pace. */
#define ROW512(r)                                                                                  \
    ar = _mm512_set1_ps(a[r]);                                                                     \
    c##r##_0 = _mm512_fmadd_ps(ar, b0, c##r##_0);                                                  \
    c##r##_1 = _mm512_fmadd_ps(ar, b1, c##r##_1);
#define STORE512(r)                                                                                \
    {                                                                                              \
        float *cr = c + (r) * ldc;                                                                 \
        if (accumulate) {                                                                          \
            c##r##_0 = _mm512_add_ps(c##r##_0, _mm512_loadu_ps(cr));                               \
            c##r##_1 = _mm512_add_ps(c##r##_1, _mm512_loadu_ps(cr + 16));                          \
        }                                                                                          \
        _mm512_storeu_ps(cr, c##r##_0);                                                            \
        _mm512_storeu_ps(cr + 16, c##r##_1);                                                       \
    }

__attribute__((target("avx512f")))
static void kernel_avx512(int kc, const float *a, const float *b, float *c, long ldc, int accumulate) {
    __m512 c0_0 = _mm512_setzero_ps(), c0_1 = c0_0, c1_0 = c0_0, c1_1 = c0_0, c2_0 = c0_0, c2_1 = c0_0,
           c3_0 = c0_0, c3_1 = c0_0, c4_0 = c0_0, c4_1 = c0_0, c5_0 = c0_0, c5_1 = c0_0,
           c6_0 = c0_0, c6_1 = c0_0, c7_0 = c0_0, c7_1 = c0_0, c8_0 = c0_0, c8_1 = c0_0,
           c9_0 = c0_0, c9_1 = c0_0, c10_0 = c0_0, c10_1 = c0_0, c11_0 = c0_0, c11_1 = c0_0;
    for (int r = 0; r < 12; r++) _mm_prefetch((const char *)(c + r * ldc), _MM_HINT_T0);
    #pragma GCC unroll 2
    for (int p = 0; p < kc; p++) {
        __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16), ar;
        _mm_prefetch((const char *)(b + 8 * 32), _MM_HINT_T0);
        ROW512(0) ROW512(1) ROW512(2) ROW512(3) ROW512(4) ROW512(5)
        ROW512(6) ROW512(7) ROW512(8) ROW512(9) ROW512(10) ROW512(11)
        a += 12;
        b += 32;
    }
    STORE512(0) STORE512(1) STORE512(2) STORE512(3) STORE512(4) STORE512(5)
    STORE512(6) STORE512(7) STORE512(8) STORE512(9) STORE512(10) STORE512(11)
}
#undef ROW512
#undef STORE512

/* bf16 operands (mixed-precision training): AVX512-BF16's vdpbf16ps multiplies pairs of bf16 and adds
 * both products into one fp32 lane, so a 12 x 32 tile takes half the instructions of the fp32 one.
 * Packed panels hold bf16 pairs along K: A as [p/2][r][2] (one 32-bit broadcast per row and pair),
 * B as [p/2][c][2] (two zmm of 16 columns x 2 per pair); kc here counts pairs. */
#define ROWBF(r)                                                                                   \
    ar = _mm512_set1_epi32(a[r]);                                                                  \
    c##r##_0 = _mm512_dpbf16_ps(c##r##_0, (__m512bh)ar, (__m512bh)b0);                             \
    c##r##_1 = _mm512_dpbf16_ps(c##r##_1, (__m512bh)ar, (__m512bh)b1);
#define STOREBF(r)                                                                                 \
    {                                                                                              \
        float *cr = c + (r) * ldc;                                                                 \
        if (accumulate) {                                                                          \
            c##r##_0 = _mm512_add_ps(c##r##_0, _mm512_loadu_ps(cr));                               \
            c##r##_1 = _mm512_add_ps(c##r##_1, _mm512_loadu_ps(cr + 16));                          \
        }                                                                                          \
        _mm512_storeu_ps(cr, c##r##_0);                                                            \
        _mm512_storeu_ps(cr + 16, c##r##_1);                                                       \
    }

__attribute__((target("avx512f,avx512bf16")))
static void kernel_dpbf16(int kp, const uint32_t *a, const uint32_t *b, float *c, long ldc, int accumulate) {
    __m512 c0_0 = _mm512_setzero_ps(), c0_1 = c0_0, c1_0 = c0_0, c1_1 = c0_0, c2_0 = c0_0, c2_1 = c0_0,
           c3_0 = c0_0, c3_1 = c0_0, c4_0 = c0_0, c4_1 = c0_0, c5_0 = c0_0, c5_1 = c0_0,
           c6_0 = c0_0, c6_1 = c0_0, c7_0 = c0_0, c7_1 = c0_0, c8_0 = c0_0, c8_1 = c0_0,
           c9_0 = c0_0, c9_1 = c0_0, c10_0 = c0_0, c10_1 = c0_0, c11_0 = c0_0, c11_1 = c0_0;
    for (int r = 0; r < 12; r++) _mm_prefetch((const char *)(c + r * ldc), _MM_HINT_T0);
    #pragma GCC unroll 2
    for (int p = 0; p < kp; p++) {
        __m512i b0 = _mm512_load_si512(b), b1 = _mm512_load_si512(b + 16), ar;
        ROWBF(0) ROWBF(1) ROWBF(2) ROWBF(3) ROWBF(4) ROWBF(5)
        ROWBF(6) ROWBF(7) ROWBF(8) ROWBF(9) ROWBF(10) ROWBF(11)
        a += 12;
        b += 32;
    }
    STOREBF(0) STOREBF(1) STOREBF(2) STOREBF(3) STOREBF(4) STOREBF(5)
    STOREBF(6) STOREBF(7) STOREBF(8) STOREBF(9) STOREBF(10) STOREBF(11)
}
#undef ROWBF
#undef STOREBF
#endif

/* fp32 -> bf16, round to nearest, ties to even (NaN stays NaN): the rounding of the NumPy reference */
static inline uint16_t to_bf16(float f) {  /* branch-free, so the packing loops vectorise */
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16, quiet = (u >> 16) | 0x40;
    return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? quiet : rounded);
}

static inline float bf16_round(float f) {  /* f rounded to the nearest bf16, as an fp32 */
    uint32_t u = (uint32_t)to_bf16(f) << 16;
    memcpy(&f, &u, 4);
    return f;
}

/* A rows [i0, i0+mc) x cols [p0, p0+kc) -> bf16 pair panels of 12 rows: dst[panel][p/2][r][2].
 * Whole panels and pairs take the constant-size loops (which the compiler vectorises, to_bf16
 * being branch-free); the ragged last row panel and an odd last p pad with zeros. */
static void pack_A_pairs(uint16_t *dst, const float *A, long rsa, long csa, int i0, int mc, int p0, int kc) {
    int kp = (kc + 1) / 2;
    for (int ir = 0; ir < mc; ir += 12) {
        int mr = mc - ir < 12 ? mc - ir : 12;
        const float *a = A + (long)(i0 + ir) * rsa + (long)p0 * csa;
        int p = 0;
        if (mr == 12)
            for (; p + 2 <= kc; p += 2)
                for (int r = 0; r < 12; r++) {
                    dst[(p / 2 * 12 + r) * 2] = to_bf16(a[p * csa + r * rsa]);
                    dst[(p / 2 * 12 + r) * 2 + 1] = to_bf16(a[(p + 1) * csa + r * rsa]);
                }
        for (; p < 2 * kp; p++)
            for (int r = 0; r < 12; r++)
                dst[((p >> 1) * 12 + r) * 2 + (p & 1)] = r < mr && p < kc ? to_bf16(a[p * csa + r * rsa]) : 0;
        dst += 24L * kp;
    }
}

/* B rows [p0, p0+kc) x cols [j0, j0+nc) -> bf16 pair panels of 32 columns: dst[panel][p/2][c][2];
 * bf16 weights are bf16 already and are copied as they are */
static inline __attribute__((always_inline)) void pack_B_pairs_as(uint16_t *dst, const void *B, long rsb,
                                                                  long csb, int p0, int kc, int j0, int nc,
                                                                  const int half) {
    int kp = (kc + 1) / 2;
    for (int jr = 0; jr < nc; jr += 32) {
        int nr = nc - jr < 32 ? nc - jr : 32;
        long b = (long)p0 * rsb + (long)(j0 + jr) * csb;
#define B16(i) (half ? ((const uint16_t *)B)[i] : to_bf16(((const float *)B)[i]))
        int p = 0;
        if (nr == 32)
            for (; p + 2 <= kc; p += 2)
                for (int c = 0; c < 32; c++) {
                    dst[(p / 2 * 32 + c) * 2] = B16(b + c * csb + p * rsb);
                    dst[(p / 2 * 32 + c) * 2 + 1] = B16(b + c * csb + (p + 1) * rsb);
                }
        for (; p < 2 * kp; p++)
            for (int c = 0; c < 32; c++)
                dst[((p >> 1) * 32 + c) * 2 + (p & 1)] = c < nr && p < kc ? B16(b + c * csb + p * rsb) : 0;
#undef B16
        dst += 64L * kp;
    }
}

#if MINIGPT_X86
/* B = W^T, fp32 W row-major: a panel's pairs (W[c][p], W[c][p+1]) are adjacent in W's row c, so
 * vcvtneps2bf16 turns 16 floats of a row into 8 pairs in place, and 8 x 8 blocks of pairs, as
 * 32-bit lanes, are transposed as pack_Wt_avx2 does floats. kc % 16 == 0. (The conversion rounds
 * to nearest even like to_bf16, and flushes denormals, as vdpbf16ps itself does.) */
__attribute__((target("avx512f,avx512bf16,avx512vl")))
static void pack_Wt_pairs(uint16_t *dst16, const float *W, long ldw, int kc) {
    uint32_t *dst = (uint32_t *)dst16;  /* [p/2][32 columns], one pair per 32-bit lane */
    for (int q = 0; q < kc / 2; q += 8) {
        for (int c = 0; c < 32; c += 8) {
            const float *w = W + (long)c * ldw + 2 * q;
            __m256 r[8];
            for (int i = 0; i < 8; i++)
                r[i] = _mm256_castsi256_ps((__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(w + i * ldw)));
            __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]),
                   t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]),
                   t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]),
                   t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
            __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE),
                   u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE),
                   u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE),
                   u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
            float *d = (float *)(dst + (long)q * 32 + c);
            _mm256_storeu_ps(d + 0 * 32, _mm256_permute2f128_ps(u0, u4, 0x20));
            _mm256_storeu_ps(d + 1 * 32, _mm256_permute2f128_ps(u1, u5, 0x20));
            _mm256_storeu_ps(d + 2 * 32, _mm256_permute2f128_ps(u2, u6, 0x20));
            _mm256_storeu_ps(d + 3 * 32, _mm256_permute2f128_ps(u3, u7, 0x20));
            _mm256_storeu_ps(d + 4 * 32, _mm256_permute2f128_ps(u0, u4, 0x31));
            _mm256_storeu_ps(d + 5 * 32, _mm256_permute2f128_ps(u1, u5, 0x31));
            _mm256_storeu_ps(d + 6 * 32, _mm256_permute2f128_ps(u2, u6, 0x31));
            _mm256_storeu_ps(d + 7 * 32, _mm256_permute2f128_ps(u3, u7, 0x31));
        }
    }
}
#endif

#if MINIGPT_X86
/* B row-major fp32 (csb = 1): a pair is (B[p][c], B[p+1][c]), two rows side by side: each row's 16
 * floats become 16 bf16, and the two are interleaved 16 bits at a time. kc even. */
__attribute__((target("avx512f,avx512bf16,avx512vl")))
static void pack_B_rows_pairs(uint16_t *dst16, const float *B, long ldb, int kc) {
    uint32_t *dst = (uint32_t *)dst16;
    for (int q = 0; q < kc / 2; q++) {
        const float *b0 = B + 2L * q * ldb, *b1 = b0 + ldb;
        for (int c = 0; c < 32; c += 16) {
            __m256i x = (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(b0 + c));
            __m256i y = (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(b1 + c));
            __m256i lo = _mm256_unpacklo_epi16(x, y), hi = _mm256_unpackhi_epi16(x, y);  /* per 128-bit lane */
            _mm256_storeu_si256((__m256i *)(dst + (long)q * 32 + c), _mm256_permute2x128_si256(lo, hi, 0x20));
            _mm256_storeu_si256((__m256i *)(dst + (long)q * 32 + c + 8), _mm256_permute2x128_si256(lo, hi, 0x31));
        }
    }
}
#endif

static void pack_B_pairs(uint16_t *dst, const void *B, int half, long rsb, long csb, int p0, int kc, int j0,
                         int nc) {
#if MINIGPT_X86  /* only called where the CPU has AVX512-BF16 (the dpbf16 path) */
    if (!half && rsb == 1 && csb != 1 && kc % 16 == 0) {  /* W^T: whole panels through registers */
        int full = nc / 32 * 32;
        for (int jr = 0; jr < full; jr += 32)
            pack_Wt_pairs(dst + (long)jr * kc, (const float *)B + p0 + (long)(j0 + jr) * csb, csb, kc);
        if (full == nc) return;
        dst += (long)full * kc;  /* the ragged last panel below */
        j0 += full;
        nc -= full;
    }
    if (!half && csb == 1 && kc % 2 == 0) {  /* row-major B: two rows at a time */
        int full = nc / 32 * 32;
        for (int jr = 0; jr < full; jr += 32)
            pack_B_rows_pairs(dst + (long)jr * kc, (const float *)B + (long)p0 * rsb + j0 + jr, rsb, kc);
        if (full == nc) return;
        dst += (long)full * kc;
        j0 += full;
        nc -= full;
    }
#endif
    if (half) pack_B_pairs_as(dst, B, rsb, csb, p0, kc, j0, nc, 1);
    else pack_B_pairs_as(dst, B, rsb, csb, p0, kc, j0, nc, 0);
}

static const Ukernel KERNELS[] = {
#if MINIGPT_X86
    {"avx512", "avx512f 12x32", 12, 32, kernel_avx512},
    {"avx2", "avx2-fma 6x16", 6, 16, kernel_avx2},
#endif
    {"portable", "portable 6x16", 6, 16, kernel_portable},
};
#define N_KERNELS ((int)(sizeof(KERNELS) / sizeof(KERNELS[0])))
#define MR_MAX 12
#define NR_MAX 32

static int kernel_supported(const Ukernel *k) {
#if MINIGPT_X86
    if (k->fn == kernel_avx512) return __builtin_cpu_supports("avx512f");
    if (k->fn == kernel_avx2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    return 1;
}

static const Ukernel *active;  /* chosen on first use; sgemm_use_kernel changes it */

/* the kernel called `name` (NULL: the best this CPU runs), and why not: 1 no such kernel, 2 not here */
static const Ukernel *find_kernel(const char *name, int *why) {
    *why = 1;
    for (int i = 0; i < N_KERNELS; i++) {
        if (name && strcmp(name, KERNELS[i].name) != 0) continue;
        if (kernel_supported(&KERNELS[i])) return &KERNELS[i];
        *why = 2;
    }
    return NULL;
}

int sgemm_kernel_check(const char *name) {
    int why;
    return find_kernel(name, &why) ? 0 : why;
}

int sgemm_use_kernel(const char *name) {
    int why;
    const Ukernel *k = find_kernel(name, &why);
    if (!k) return why;
    __atomic_store_n(&active, k, __ATOMIC_RELEASE);
    return 0;
}

/* the kernel in use: MINIGPT_KERNEL's if it names one this CPU runs, else the best it runs */
static const Ukernel *ukernel(void) {
    const Ukernel *k = __atomic_load_n(&active, __ATOMIC_ACQUIRE);
    if (k) return k;
    const char *forced = getenv("MINIGPT_KERNEL");
    if (!(forced && *forced && sgemm_use_kernel(forced) == 0)) sgemm_use_kernel(NULL);
    return __atomic_load_n(&active, __ATOMIC_ACQUIRE);
}

const char *sgemm_kernel_name(void) { return ukernel()->label; }

/* bf16 operands: every product rounds A and B to bf16 (round to nearest even) as it packs them and
 * sums in fp32: what mixed-precision training asks of a GEMM. With the AVX-512 kernel on a CPU with
 * AVX512-BF16 that is vdpbf16ps; elsewhere the packed fp32 blocks are rounded in place and the fp32
 * kernel runs: the same products (a bf16 x bf16 product is exact in fp32), at fp32 speed. */
static int bf16_operands;

void sgemm_set_bf16(int on) { __atomic_store_n(&bf16_operands, on != 0, __ATOMIC_RELEASE); }
int sgemm_get_bf16(void) { return __atomic_load_n(&bf16_operands, __ATOMIC_ACQUIRE); }

static int use_dpbf16(const Ukernel *uk) {
#if MINIGPT_X86
    return uk->fn == kernel_avx512 && __builtin_cpu_supports("avx512bf16");
#else
    (void)uk;
    return 0;
#endif
}

static void round_bf16(float *x, long n) {
    for (long i = 0; i < n; i++) x[i] = bf16_round(x[i]);
}

static int ceil_div(int a, int b) { return (a + b - 1) / b; }

/* one tile of C: rows [i0, i0+mt), cols [j0, j0+nt). B's KC x nt block is packed once per K block
 * and then used by every MC-row block of A (packed in turn, small enough to stay in L2) */
static void gemm_tile(int K, const float *A, long rsa, long csa, const void *B, int half, long rsb, long csb,
                      float *C, long ldc, int accumulate, int i0, int mt, int j0, int nt,
                      float *pa, float *pb, const Ukernel *uk, int bf16) {
    /* bf16: 0 fp32 operands; 1 rounded to bf16 in the packed fp32 blocks; 2 bf16 pairs for vdpbf16ps */
    const int MR = uk->mr, NR = uk->nr;
    float edge[MR_MAX * NR_MAX] __attribute__((aligned(64)));
    for (int p0 = 0; p0 < K; p0 += KC) {
        int kc = K - p0 < KC ? K - p0 : KC;
        int acc = accumulate || p0 > 0;  /* later K-blocks add to what the first one wrote */
        int kstep = bf16 == 2 ? (kc + 1) / 2 * 2 : kc;  /* floats of packed depth per row or column */
        if (bf16 == 2) pack_B_pairs((uint16_t *)pb, B, half, rsb, csb, p0, kc, j0, nt);
        else pack_B_as(pb, B, rsb, csb, p0, kc, j0, nt, NR, half, uk->fn != kernel_portable);
        if (bf16 == 1) round_bf16(pb, (long)ceil_div(nt, NR) * NR * kc);
        for (int ic = 0; ic < mt; ic += MC) {
            int mc = mt - ic < MC ? mt - ic : MC;
            if (bf16 == 2) pack_A_pairs((uint16_t *)pa, A, rsa, csa, i0 + ic, mc, p0, kc);
            else pack_A_as(pa, A, rsa, csa, i0 + ic, mc, p0, kc, MR);
            if (bf16 == 1) round_bf16(pa, (long)ceil_div(mc, MR) * MR * kc);
            for (int jr = 0; jr < nt; jr += NR) {  /* one B micro-panel (L1) against all of A's (L2) */
                int nr = nt - jr < NR ? nt - jr : NR;
                /* in bf16 pairs a panel is half the bytes: kstep bf16 = kstep / 2 floats per row */
                const float *bp = bf16 == 2 ? pb + (long)jr * kstep / 2 : pb + (long)jr * kc;
                for (int ir = 0; ir < mc; ir += MR) {
                    int mr = mc - ir < MR ? mc - ir : MR;
                    const float *ap = bf16 == 2 ? pa + (long)ir * kstep / 2 : pa + (long)ir * kc;
                    float *c = C + (long)(i0 + ic + ir) * ldc + (j0 + jr);
                    /* a ragged edge: compute the full micro-tile aside, keep the valid part */
                    int full = mr == MR && nr == NR;
                    float *out = full ? c : edge;
                    long ld = full ? ldc : NR;
#if MINIGPT_X86
                    if (bf16 == 2) kernel_dpbf16(kstep / 2, (const uint32_t *)ap, (const uint32_t *)bp, out, ld, full && acc);
                    else
#endif
                    uk->fn(kc, ap, bp, out, ld, full && acc);
                    if (!full)
                        for (int r = 0; r < mr; r++)
                            for (int j = 0; j < nr; j++)
                                c[r * ldc + j] = acc ? c[r * ldc + j] + edge[r * NR + j] : edge[r * NR + j];
                }
            }
        }
    }
}

static void gemm(int M, int N, int K, const float *A, long rsa, long csa, const void *B, int half, long rsb,
                 long csb, float *C, long ldc, int accumulate, int parallel) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {  /* an empty sum: C = 0, or C unchanged */
        if (!accumulate)
            for (int i = 0; i < M; i++) memset(C + (long)i * ldc, 0, sizeof(float) * N);
        return;
    }
    /* tiles: at most MT_MAX x NT_MAX, and with several threads at least 2 per thread where the sizes
     * allow: on a shared machine a thread that loses its core for a while then holds up a smaller
     * share of the work. Not below 144 x 256: each tile packs its own A and B, and smaller tiles
     * pay for it (4 per thread down to 96 x 128 cost 7% of the CPU time on the model's shapes) */
    const Ukernel *uk = ukernel();
    const int MR = uk->mr, NR = uk->nr;
    int bf16 = sgemm_get_bf16() ? (use_dpbf16(uk) ? 2 : 1) : 0;
    int nth = 1;
#ifdef _OPENMP
    if (parallel) nth = omp_get_max_threads();
#endif
    int pm = ceil_div(M, MT_MAX), pn = ceil_div(N, NT_MAX);
    while (nth > 1 && pm * pn < 2 * nth) {
        int can_m = M / (pm + 1) >= 144, can_n = N / (pn + 1) >= 256;
        if (can_n && (!can_m || N / pn >= M / pm)) pn++;
        else if (can_m) pm++;
        else break;
    }
    /* then a tile count that the threads share evenly, where the size limits allow: 3 tiles on 2
     * threads leave one thread idle a third of the time (N = 768 gave 0.6x OpenBLAS; 2 tiles, 0.9x) */
    while (nth > 1 && pm * pn > nth && (pm * pn) % nth != 0) {
        if (pn > 1 && ceil_div(N, pn - 1) <= NT_MAX) pn--;
        else if (pm > 1 && ceil_div(M, pm - 1) <= MT_MAX) pm--;
        else break;
    }
    int mt = ceil_div(ceil_div(M, pm), MR) * MR, nt = ceil_div(ceil_div(N, pn), NR) * NR;
    int tm = ceil_div(M, mt), tn = ceil_div(N, nt), tiles = tm * tn;
    #pragma omp parallel if (parallel && tiles > 1 && (double)M * N * K > 1e6)
    {
        /* each thread's packing buffers, 64-byte aligned for the micro-kernel's aligned loads,
         * sized for this call's tiles (a small product packs a small block) */
        int mc = mt < MC ? mt : MC, kc = K < KC ? K : KC;
        size_t sa = ((sizeof(float) * mc * kc + 63) / 64) * 64, sb = ((sizeof(float) * nt * kc + 63) / 64) * 64;
        float *pa = aligned_alloc(64, sa), *pb = aligned_alloc(64, sb);
        if (!pa || !pb) abort();  /* at most 1.1 MB: out of memory here is not recoverable */
        #pragma omp for schedule(dynamic, 1)
        for (int t = 0; t < tiles; t++) {
            int i0 = (t % tm) * mt, j0 = (t / tm) * nt;  /* neighbouring tasks share a B block */
            gemm_tile(K, A, rsa, csa, B, half, rsb, csb, C, ldc, accumulate,
                      i0, M - i0 < mt ? M - i0 : mt, j0, N - j0 < nt ? N - j0 : nt, pa, pb, uk, bf16);
        }
        free(pa);
        free(pb);
    }
}

void sgemm(int M, int N, int K, const float *A, long rsa, long csa, const float *B, long rsb, long csb,
           float *C, long ldc, int accumulate) {
    gemm(M, N, K, A, rsa, csa, B, 0, rsb, csb, C, ldc, accumulate, 1);
}

void sgemm_serial(int M, int N, int K, const float *A, long rsa, long csa, const float *B, long rsb,
                  long csb, float *C, long ldc, int accumulate) {
    gemm(M, N, K, A, rsa, csa, B, 0, rsb, csb, C, ldc, accumulate, 0);
}

void sgemm_bf16b(int M, int N, int K, const float *A, long rsa, long csa, const uint16_t *B, long rsb,
                 long csb, float *C, long ldc, int accumulate) {
    gemm(M, N, K, A, rsa, csa, B, 1, rsb, csb, C, ldc, accumulate, 1);
}
