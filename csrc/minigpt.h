/* minigpt C kernels: the same ops, names and argument order as minigpt/model/ops.py (the specification).
 *
 * Outputs first, then inputs, then sizes. Backward kernels ACCUMULATE (+=) into their gradient
 * buffers. All tensors are float32, C-contiguous; token ids are int32. Every kernel is deterministic:
 * each output element is computed by one thread in a fixed order, so 1 and N threads agree bit for bit.
 */
#ifndef MINIGPT_H
#define MINIGPT_H

#include "gemm.h" /* sgemm and its kernels: declared apart, so csrc/decode.c can include gemm.c */

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
