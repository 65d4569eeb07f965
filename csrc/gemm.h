/* gemm.c's interface: the packed sgemm, its micro-kernels, and the bf16-weight variant. Kept apart
 * from minigpt.h so csrc/decode.c (the inference kernels, and run.c through it) can include gemm.c
 * without the training kernels' declarations. */
#ifndef MINIGPT_GEMM_H
#define MINIGPT_GEMM_H
#include <stdint.h>

/* ---- gemm.c: C (M x N, row stride ldc) (+)= A (M x K) B (K x N) ----
 * A(i, p) = A[i*rsa + p*csa] and B(p, j) = B[p*rsb + j*csb]: a transposed operand is just other
 * strides, so the three products of a linear layer need no transposing copy (packing does it).
 * accumulate = 0 overwrites C, 1 adds into it. */
void sgemm(int M, int N, int K, const float *A, long rsa, long csa, const float *B, long rsb, long csb,
           float *C, long ldc, int accumulate);
/* the same on the calling thread only: for callers that are themselves one task of a parallel loop */
void sgemm_serial(int M, int N, int K, const float *A, long rsa, long csa, const float *B, long rsb,
                  long csb, float *C, long ldc, int accumulate);
/* the same with B stored as bf16 (widened to fp32 as it is packed): prefill on bf16 weights */
void sgemm_bf16b(int M, int N, int K, const float *A, long rsa, long csa, const uint16_t *B, long rsb,
                 long csb, float *C, long ldc, int accumulate);
/* mixed precision: on (1), every sgemm in the process rounds A and B to bf16 (nearest even) and sums in
 * fp32 (AVX512-BF16 vdpbf16ps where the CPU has it, else the fp32 kernel on rounded operands) */
void sgemm_set_bf16(int on);
int sgemm_get_bf16(void);
/* the textbook triple loop, same contract: to read, and the reference in tests */
void sgemm_naive(int M, int N, int K, const float *A, long rsa, long csa, const float *B, long rsb,
                 long csb, float *C, long ldc, int accumulate);
const char *sgemm_kernel_name(void); /* "avx512f 12x32", "avx2-fma 6x16" or "portable 6x16" */
/* force a micro-kernel by name ("avx512", "avx2", "portable"; NULL: the best this CPU runs).
 * 0: done; 1: no such kernel in this build; 2: this CPU lacks its instructions. The default is
 * MINIGPT_KERNEL's if it names one this CPU runs, else the best. */
int sgemm_use_kernel(const char *name);
int sgemm_kernel_check(const char *name); /* the same codes, changing nothing */

#endif
