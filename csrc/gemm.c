/* sgemm: C (+)= A B for any sizes and strides, the GotoBLAS / BLIS way.
 *
 * The three products of a linear layer (out = inp W^T, dinp = dout W, dW += dout^T inp) are one
 * routine with different strides. The work is cut in three levels so each operand sits in a cache:
 *
 *   tile   (MT x NT of C)      one OpenMP task; tiles never overlap, so no locks and no races
 *   pc     (KC of the K sum)   pack B's KC x NT block, panel by panel
 *   ic     (MC rows)           pack A's MC x KC block (L2)
 *   jr, ir (NR x MR)           the micro-kernel: a 6 x 16 block of C held in 12 AVX2 registers,
 *                              fed by one 16-wide row of packed B and 6 broadcasts of packed A per p
 *
 * Packing copies A into MR-row panels (A[p][r] contiguous) and B into NR-column panels, zero-padding
 * the ragged edges, so the micro-kernel never checks bounds; a transposed operand is transposed here,
 * during a copy we make anyway. Edge blocks of C go through a small buffer.
 */
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef __AVX2__
#include <immintrin.h>
#endif
#include "minigpt.h"

#define MR 6     /* rows of the micro-tile */
#define NR 16    /* columns of the micro-tile: two 8-float AVX registers */
#define KC 256   /* depth of one packed block: A panel 6 KB, B panel 16 KB stay in L1 */
#define MC 144   /* rows of a packed A block: 144 x 256 floats = 144 KB, in L2 with room to spare */
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

/* A rows [i0, i0+mc) x cols [p0, p0+kc) -> panels of MR rows: dst[panel][p][r] */
static void pack_A(float *dst, const float *A, long rsa, long csa, int i0, int mc, int p0, int kc) {
    for (int ir = 0; ir < mc; ir += MR) {
        int mr = mc - ir < MR ? mc - ir : MR;
        const float *a = A + (long)(i0 + ir) * rsa + (long)p0 * csa;
        if (csa == 1) {  /* row-major A: read each row contiguously */
            for (int r = 0; r < mr; r++)
                for (int p = 0; p < kc; p++) dst[p * MR + r] = a[r * rsa + p];
        } else {         /* column-major A (a transposed operand): read each column contiguously */
            for (int p = 0; p < kc; p++)
                for (int r = 0; r < mr; r++) dst[p * MR + r] = a[p * csa + r * rsa];
        }
        for (int r = mr; r < MR; r++)
            for (int p = 0; p < kc; p++) dst[p * MR + r] = 0.0f;
        dst += (long)MR * kc;
    }
}

/* B rows [p0, p0+kc) x cols [j0, j0+nc) -> panels of NR columns: dst[panel][p][c] */
static void pack_B(float *dst, const float *B, long rsb, long csb, int p0, int kc, int j0, int nc) {
    for (int jr = 0; jr < nc; jr += NR) {
        int nr = nc - jr < NR ? nc - jr : NR;
        const float *b = B + (long)p0 * rsb + (long)(j0 + jr) * csb;
        if (csb == 1) {  /* row-major B: 16 contiguous floats per p */
            for (int p = 0; p < kc; p++) {
                for (int c = 0; c < nr; c++) dst[p * NR + c] = b[p * rsb + c];
                for (int c = nr; c < NR; c++) dst[p * NR + c] = 0.0f;
            }
        } else {         /* B = W^T with W row-major: read each row of W contiguously */
            for (int c = 0; c < nr; c++)
                for (int p = 0; p < kc; p++) dst[p * NR + c] = b[c * csb + p * rsb];
            for (int c = nr; c < NR; c++)
                for (int p = 0; p < kc; p++) dst[p * NR + c] = 0.0f;
        }
        dst += (long)NR * kc;
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* the micro-kernel: c[MR x NR] (+)= a-panel (kc x MR) times b-panel (kc x NR) */

#ifdef __AVX2__
static void kernel(int kc, const float *a, const float *b, float *c, long ldc, int accumulate) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
           c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (int r = 0; r < MR; r++) _mm_prefetch((const char *)(c + r * ldc), _MM_HINT_T0);
    #pragma GCC unroll 4
    for (int p = 0; p < kc; p++) {
        __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8), ar;
        ar = _mm256_broadcast_ss(a + 0); c00 = _mm256_fmadd_ps(ar, b0, c00); c01 = _mm256_fmadd_ps(ar, b1, c01);
        ar = _mm256_broadcast_ss(a + 1); c10 = _mm256_fmadd_ps(ar, b0, c10); c11 = _mm256_fmadd_ps(ar, b1, c11);
        ar = _mm256_broadcast_ss(a + 2); c20 = _mm256_fmadd_ps(ar, b0, c20); c21 = _mm256_fmadd_ps(ar, b1, c21);
        ar = _mm256_broadcast_ss(a + 3); c30 = _mm256_fmadd_ps(ar, b0, c30); c31 = _mm256_fmadd_ps(ar, b1, c31);
        ar = _mm256_broadcast_ss(a + 4); c40 = _mm256_fmadd_ps(ar, b0, c40); c41 = _mm256_fmadd_ps(ar, b1, c41);
        ar = _mm256_broadcast_ss(a + 5); c50 = _mm256_fmadd_ps(ar, b0, c50); c51 = _mm256_fmadd_ps(ar, b1, c51);
        a += MR;
        b += NR;
    }
    __m256 acc[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    for (int r = 0; r < MR; r++) {
        float *cr = c + r * ldc;
        if (accumulate) {
            acc[r][0] = _mm256_add_ps(acc[r][0], _mm256_loadu_ps(cr));
            acc[r][1] = _mm256_add_ps(acc[r][1], _mm256_loadu_ps(cr + 8));
        }
        _mm256_storeu_ps(cr, acc[r][0]);
        _mm256_storeu_ps(cr + 8, acc[r][1]);
    }
}
const char *sgemm_kernel_name(void) { return "avx2-fma 6x16"; }
#else
/* portable: the same blocking in plain C with GCC/Clang vector types, which the compiler maps onto
 * whatever SIMD the target has (SSE2 on any x86-64, NEON on ARM), four lanes at a time */
typedef float v4f __attribute__((vector_size(16)));

static void kernel(int kc, const float *a, const float *b, float *c, long ldc, int accumulate) {
    v4f acc[MR][NR / 4];
    memset(acc, 0, sizeof(acc));
    for (int p = 0; p < kc; p++) {
        v4f bv[NR / 4];
        memcpy(bv, b, sizeof(bv));
        for (int r = 0; r < MR; r++) {
            v4f ar = {a[r], a[r], a[r], a[r]};
            for (int j = 0; j < NR / 4; j++) acc[r][j] += ar * bv[j];
        }
        a += MR;
        b += NR;
    }
    for (int r = 0; r < MR; r++) {
        float out[NR];
        memcpy(out, acc[r], sizeof(out));
        for (int j = 0; j < NR; j++) c[r * ldc + j] = accumulate ? c[r * ldc + j] + out[j] : out[j];
    }
}
const char *sgemm_kernel_name(void) { return "portable 6x16"; }
#endif

/* one tile of C: rows [i0, i0+mt), cols [j0, j0+nt). B's KC x nt block is packed once per K block
 * and then used by every MC-row block of A (packed in turn, small enough to stay in L2) */
static void gemm_tile(int K, const float *A, long rsa, long csa, const float *B, long rsb, long csb,
                      float *C, long ldc, int accumulate, int i0, int mt, int j0, int nt,
                      float *pa, float *pb) {
    float edge[MR * NR] __attribute__((aligned(32)));
    for (int p0 = 0; p0 < K; p0 += KC) {
        int kc = K - p0 < KC ? K - p0 : KC;
        int acc = accumulate || p0 > 0;  /* later K-blocks add to what the first one wrote */
        pack_B(pb, B, rsb, csb, p0, kc, j0, nt);
        for (int ic = 0; ic < mt; ic += MC) {
            int mc = mt - ic < MC ? mt - ic : MC;
            pack_A(pa, A, rsa, csa, i0 + ic, mc, p0, kc);
            for (int jr = 0; jr < nt; jr += NR) {  /* one B micro-panel (L1) against all of A's (L2) */
                int nr = nt - jr < NR ? nt - jr : NR;
                const float *bp = pb + (long)jr * kc;
                for (int ir = 0; ir < mc; ir += MR) {
                    int mr = mc - ir < MR ? mc - ir : MR;
                    const float *ap = pa + (long)ir * kc;
                    float *c = C + (long)(i0 + ic + ir) * ldc + (j0 + jr);
                    if (mr == MR && nr == NR) {
                        kernel(kc, ap, bp, c, ldc, acc);
                    } else {  /* a ragged edge: compute the full micro-tile aside, keep the valid part */
                        kernel(kc, ap, bp, edge, NR, 0);
                        for (int r = 0; r < mr; r++)
                            for (int j = 0; j < nr; j++)
                                c[r * ldc + j] = acc ? c[r * ldc + j] + edge[r * NR + j] : edge[r * NR + j];
                    }
                }
            }
        }
    }
}

static int ceil_div(int a, int b) { return (a + b - 1) / b; }

static void gemm(int M, int N, int K, const float *A, long rsa, long csa, const float *B, long rsb,
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
            gemm_tile(K, A, rsa, csa, B, rsb, csb, C, ldc, accumulate,
                      i0, M - i0 < mt ? M - i0 : mt, j0, N - j0 < nt ? N - j0 : nt, pa, pb);
        }
        free(pa);
        free(pb);
    }
}

void sgemm(int M, int N, int K, const float *A, long rsa, long csa, const float *B, long rsb, long csb,
           float *C, long ldc, int accumulate) {
    gemm(M, N, K, A, rsa, csa, B, rsb, csb, C, ldc, accumulate, 1);
}

void sgemm_serial(int M, int N, int K, const float *A, long rsa, long csa, const float *B, long rsb,
                  long csb, float *C, long ldc, int accumulate) {
    gemm(M, N, K, A, rsa, csa, B, rsb, csb, C, ldc, accumulate, 0);
}
