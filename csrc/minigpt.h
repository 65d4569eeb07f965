/* minigpt C kernels: the same ops, names and argument order as minigpt/ops.py (the specification).
 *
 * Outputs first, then inputs, then sizes. Backward kernels ACCUMULATE (+=) into their gradient
 * buffers. All tensors are float32, C-contiguous; token ids are int32. Every kernel is deterministic:
 * each output element is computed by one thread in a fixed order, so 1 and N threads agree bit for bit.
 */
#ifndef MINIGPT_H
#define MINIGPT_H

/* ---- gemm.c: C (M x N, row stride ldc) (+)= A (M x K) B (K x N) ----
 * A(i, p) = A[i*rsa + p*csa] and B(p, j) = B[p*rsb + j*csb]: a transposed operand is just other
 * strides, so the three products of a linear layer need no transposing copy (packing does it).
 * accumulate = 0 overwrites C, 1 adds into it. */
void sgemm(int M, int N, int K, const float *A, long rsa, long csa, const float *B, long rsb, long csb,
           float *C, long ldc, int accumulate);
/* the same on the calling thread only: for callers that are themselves one task of a parallel loop */
void sgemm_serial(int M, int N, int K, const float *A, long rsa, long csa, const float *B, long rsb,
                  long csb, float *C, long ldc, int accumulate);
/* the textbook triple loop, same contract: to read, and the reference in tests */
void sgemm_naive(int M, int N, int K, const float *A, long rsa, long csa, const float *B, long rsb,
                 long csb, float *C, long ldc, int accumulate);
const char *sgemm_kernel_name(void); /* "avx512f 12x32", "avx2-fma 6x16" or "portable 6x16" */
/* force a micro-kernel by name ("avx512", "avx2", "portable"; NULL: the best this CPU runs).
 * 0: done; 1: no such kernel in this build; 2: this CPU lacks its instructions. The default is
 * MINIGPT_KERNEL's if it names one this CPU runs, else the best. */
int sgemm_use_kernel(const char *name);
int sgemm_kernel_check(const char *name); /* the same codes, changing nothing */

/* ---- kernels.c ---- */
void encoder_forward(float *out, const int *inp, const float *wte, const float *wpe, int B, int T, int C);
void encoder_backward(float *dwte, float *dwpe, const float *dout, const int *inp, int B, int T, int C);
void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w,
                       const float *b, int B, int T, int C);
void layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                        const float *w, const float *mean, const float *rstd, int B, int T, int C);
void matmul_forward(float *out, const float *inp, const float *w, const float *bias,
                    int B, int T, int C, int OC);
void matmul_backward(float *dinp, float *dw, float *dbias, const float *dout, const float *inp,
                     const float *w, int B, int T, int C, int OC);
void attention_forward(float *out, float *preatt, float *att, const float *inp, int B, int T, int C, int NH);
void attention_backward(float *dinp, float *dpreatt, float *datt, const float *dout, const float *inp,
                        const float *att, int B, int T, int C, int NH);
void gelu_forward(float *out, const float *inp, long N);
void gelu_backward(float *dinp, const float *inp, const float *dout, long N);
void residual_forward(float *out, const float *a, const float *b, long N);
void residual_backward(float *da, float *db, const float *dout, long N);
void softmax_crossentropy_forward(float *losses, float *probs, const float *logits, const int *targets,
                                  int B, int T, int V, int Vp);
void softmax_crossentropy_backward(float *dlogits, const float *dlosses, const float *probs,
                                   const int *targets, int B, int T, int V, int Vp);
void adamw_update(float *params, const float *grads, float *m, float *v, long N, double lr, double beta1,
                  double beta2, double eps, double weight_decay, int t);

/* threads: OpenMP's pool size (OMP_NUM_THREADS by default) */
void set_threads(int n);
int get_threads(void);

#endif
