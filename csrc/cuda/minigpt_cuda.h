/* The CUDA backend's C interface: what minigpt/model/ops_cuda.py calls through cffi.
 *
 * Every kernel has the name and argument order of the README's kernel contract (llm.c's): outputs first, then inputs,
 * then sizes; backward kernels ACCUMULATE (+=) into their gradient buffers. All float and int
 * pointers are DEVICE pointers. Each function launches its work on the default stream and returns
 * 0 or a cudaError_t / cublasStatus_t code (mg_error_string() says what it means); execution errors
 * surface at the next synchronising call (a copy back to the host, mg_synchronize).
 *
 * build_cuda.py hands the text between the cdef markers below to cffi, so this file is the one
 * place the interface is written down.
 */
#ifndef MINIGPT_CUDA_H
#define MINIGPT_CUDA_H
#include <stddef.h>
#ifdef __cplusplus
extern "C" {
#endif

/* cdef-begin */
/* runtime: devices, memory, errors (runtime.cu) */
int mg_device_count(void);                       /* 0 when no driver or no GPU */
const char *mg_error_string(int code);
const char *mg_device_name(void);
int mg_malloc(void **ptr, size_t bytes);         /* *ptr = NULL on failure */
int mg_free(void *ptr);
int mg_memcpy_h2d(void *dst, const void *src, size_t bytes);
int mg_memcpy_d2h(void *dst, const void *src, size_t bytes);
int mg_memset_zero(void *ptr, size_t bytes);
int mg_synchronize(void);
int mg_release(void);                            /* free the workspace and the cuBLAS handle */
int mg_has_cublas(void);                         /* 1 if built with cuBLAS */
int mg_set_gemm(int use_cublas);                 /* 1: cuBLAS, 0: the hand-written tiled kernel */
int mg_set_tf32(int on);                         /* cuBLAS TF32 tensor cores for fp32 GEMMs */

/* C = alpha * op(A) @ op(B) + beta * C for `batch` matrices, column-major as in cuBLAS
 * (trans 0 = N, 1 = T); beta == 0 never reads C. The one GEMM everything else calls. */
int mg_sgemm(int transa, int transb, int m, int n, int k, float alpha,
             const float *A, int lda, long long strideA, const float *B, int ldb, long long strideB,
             float beta, float *C, int ldc, long long strideC, int batch);

/* the ops of the kernel contract (README) */
int encoder_forward(float *out, const int *inp, const float *wte, const float *wpe, int B, int T, int C);
int encoder_backward(float *dwte, float *dwpe, const float *dout, const int *inp, int B, int T, int C);
int layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                      const float *bias, int B, int T, int C);
int layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                       const float *weight, const float *mean, const float *rstd, int B, int T, int C);
int matmul_forward(float *out, const float *inp, const float *weight, const float *bias,
                   int B, int T, int C, int OC);
int matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                    const float *weight, int B, int T, int C, int OC);
int attention_forward(float *out, float *preatt, float *att, const float *inp, int B, int T, int C, int NH);
int attention_backward(float *dinp, float *dpreatt, float *datt, const float *dout, const float *inp,
                       const float *att, int B, int T, int C, int NH);
int gelu_forward(float *out, const float *inp, int N);
int gelu_backward(float *dinp, const float *inp, const float *dout, int N);
int residual_forward(float *out, const float *a, const float *b, int N);
int residual_backward(float *da, float *db, const float *dout, int N);
int softmax_crossentropy_forward(float *losses, float *probs, const float *logits, const int *targets,
                                 int B, int T, int V, int Vp);
int softmax_crossentropy_backward(float *dlogits, const float *dlosses, const float *probs,
                                  const int *targets, int B, int T, int V, int Vp);
int adamw_update(float *params, const float *grads, float *m, float *v, long long N, float lr,
                 float beta1, float beta2, float eps, float weight_decay, int t);

/* the model driver's two extras (crossentropy.cu): per-token loss weights and the mean loss */
int loss_weights(float *dlosses, const int *targets, const float *weights, int N, float count);
int weighted_loss(double *out, const float *losses, const float *dlosses, int N);
/* cdef-end */

#ifdef __cplusplus
}
#endif
#endif
