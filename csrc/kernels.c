/* Every op of GPT-2 in C, forward and backward: the same maths as minigpt/model/ops.py, which is the
 * specification (read it first: the shapes are commented there). OpenMP splits the work so that
 * each output element has exactly one writer in a fixed order: results do not depend on the thread
 * count. Inner loops are written to vectorise (`omp simd`, a branch-free exp), so GELU, LayerNorm and
 * the softmaxes run at AVX2 width when compiled with -march=native. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "minigpt.h"

void set_threads(int n) {
#ifdef _OPENMP
    if (n > 0) omp_set_num_threads(n);
#endif
    (void)n;
}

int get_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

#include "fastmath.h" /* exp_f, tanh_f: branch-free, so the loops over them vectorise */

/* ---------------------------------------------------------------------------------------------- */
/* encoder */

void encoder_forward(float *out, const int *inp, const float *wte, const float *wpe, int B, int T, int C) {
    #pragma omp parallel for collapse(2) if ((long)B * T * C > 32768)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            float *o = out + ((long)b * T + t) * C;
            const float *e = wte + (long)inp[b * T + t] * C, *p = wpe + (long)t * C;
            #pragma omp simd
            for (int c = 0; c < C; c++) o[c] = e[c] + p[c];
        }
}

/* split over channels: each thread owns a slice of columns of dwte and dwpe, and adds every (b, t)
 * into it in order, so a token that appears twice is summed without races (np.add.at's job) */
void encoder_backward(float *dwte, float *dwpe, const float *dout, const int *inp, int B, int T, int C) {
    #pragma omp parallel for
    for (int c0 = 0; c0 < C; c0 += 64) {
        int c1 = c0 + 64 < C ? c0 + 64 : C;
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++) {
                const float *d = dout + ((long)b * T + t) * C;
                float *we = dwte + (long)inp[b * T + t] * C, *wp = dwpe + (long)t * C;
                #pragma omp simd
                for (int c = c0; c < c1; c++) {
                    we[c] += d[c];
                    wp[c] += d[c];
                }
            }
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* layernorm */

void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w,
                       const float *b, int B, int T, int C) {
    long rows = (long)B * T;
    #pragma omp parallel for schedule(dynamic, 4) if (rows * C > 32768)
    for (long i = 0; i < rows; i++) {
        const float *x = inp + i * C;
        float s = 0.0f;
        #pragma omp simd reduction(+:s)
        for (int c = 0; c < C; c++) s += x[c];
        float m = s / C, v = 0.0f;
        #pragma omp simd reduction(+:v)
        for (int c = 0; c < C; c++) v += (x[c] - m) * (x[c] - m);
        float r = 1.0f / sqrtf(v / C + 1e-5f);
        float *o = out + i * C;
        #pragma omp simd
        for (int c = 0; c < C; c++) o[c] = (x[c] - m) * r * w[c] + b[c];
        mean[i] = m;
        rstd[i] = r;
    }
}

void layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                        const float *w, const float *mean, const float *rstd, int B, int T, int C) {
    long rows = (long)B * T;
    /* dinp, row by row: rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm)) */
    #pragma omp parallel for schedule(dynamic, 4) if (rows * C > 32768)
    for (long i = 0; i < rows; i++) {
        const float *x = inp + i * C, *d = dout + i * C;
        float m = mean[i], r = rstd[i], sd = 0.0f, sdn = 0.0f;
        #pragma omp simd reduction(+:sd, sdn)
        for (int c = 0; c < C; c++) {
            float dn = d[c] * w[c];
            sd += dn;
            sdn += dn * (x[c] - m) * r;
        }
        sd /= C;
        sdn /= C;
        float *di = dinp + i * C;
        #pragma omp simd
        for (int c = 0; c < C; c++) di[c] += r * (d[c] * w[c] - sd - (x[c] - m) * r * sdn);
    }
    /* dw, db: sums over rows, split over channels so each has one writer */
    #pragma omp parallel for
    for (int c0 = 0; c0 < C; c0 += 64) {
        int c1 = c0 + 64 < C ? c0 + 64 : C;
        float sw[64] = {0}, sb[64] = {0};
        for (long i = 0; i < rows; i++) {
            const float *x = inp + i * C, *d = dout + i * C;
            float m = mean[i], r = rstd[i];
            #pragma omp simd
            for (int c = c0; c < c1; c++) {
                sb[c - c0] += d[c];
                sw[c - c0] += d[c] * (x[c] - m) * r;
            }
        }
        for (int c = c0; c < c1; c++) {
            db[c] += sb[c - c0];
            dw[c] += sw[c - c0];
        }
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* matmul: three strided products of one sgemm (weights are (OC, C), as in llm.c) */

void matmul_forward(float *out, const float *inp, const float *w, const float *bias,
                    int B, int T, int C, int OC) {
    int M = B * T;
    if (bias) {  /* start from the bias, then add inp @ w^T */
        #pragma omp parallel for if ((long)M * OC > 32768)
        for (int i = 0; i < M; i++) memcpy(out + (long)i * OC, bias, sizeof(float) * OC);
    }
    /* out (M x OC) = inp (M x C) . w^T: B(p, j) = w[j*C + p] */
    sgemm(M, OC, C, inp, C, 1, w, 1, C, out, OC, bias != NULL);
}

void matmul_backward(float *dinp, float *dw, float *dbias, const float *dout, const float *inp,
                     const float *w, int B, int T, int C, int OC) {
    int M = B * T;
    sgemm(M, C, OC, dout, OC, 1, w, C, 1, dinp, C, 1);   /* dinp (M x C) += dout (M x OC) . w (OC x C) */
    sgemm(OC, C, M, dout, 1, OC, inp, C, 1, dw, C, 1);   /* dw (OC x C) += dout^T (OC x M) . inp (M x C) */
    if (dbias) {
        #pragma omp parallel for
        for (int o0 = 0; o0 < OC; o0 += 256) {
            int o1 = o0 + 256 < OC ? o0 + 256 : OC;
            float s[256] = {0};
            for (int i = 0; i < M; i++) {
                const float *d = dout + (long)i * OC;
                #pragma omp simd
                for (int o = o0; o < o1; o++) s[o - o0] += d[o];
            }
            for (int o = o0; o < o1; o++) dbias[o] += s[o - o0];
        }
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* causal self-attention; inp (B, T, 3C) holds q, k, v side by side; head h uses channels h*hs..
 * One (b, h) per task, and per head the maths is matrix products plus a row-wise softmax:
 *     forward   S = Q K^T (T x T),  att = softmax(S / sqrt(hs), causal),  Y = att V
 *     backward  dA = dY V^T,  dS = att * (dA - rowsum(dA * att)),  dQ = dS K, dK = dS^T Q, dV = att^T dY
 * Q, K, V, dY are strided views into inp / dout, so each product is one sgemm_serial (packed, FMA)
 * with no copies. Causal half: from T = 2 * CAUSAL_BLOCK on, the products that meet the mask run
 * in blocks of CAUSAL_BLOCK query rows (or key columns), each over the keys (queries) it can see, so
 * the masked upper triangle is mostly not computed: about half the work at T = 1024. Below that one
 * full-size product is faster than several small ones, and the masked half is exact zeros in att
 * and dS. dA = dY V^T stays full: datt holds it unmasked, as the reference does. One T x T scratch per task. */

#define CAUSAL_BLOCK 96  /* a multiple of both kernels' MR (6 and 12) */

/* C[rows r0..r1) (+)= A[r0..r1) (r x K) B[0..r1) (K x ...): row-blocked, each block only over the
 * first r1 columns (S = Q K^T: keys past the last query of the block are masked) or K terms
 * (Y = att V, dQ = dS K: att and dS are zero there) */
static void causal_rows(int T, int N, int K, int cols_causal, const float *A, long rsa, long csa,
                        const float *B, long rsb, long csb, float *C, long ldc, int accumulate) {
    int step = T >= 2 * CAUSAL_BLOCK ? CAUSAL_BLOCK : T;
    for (int r0 = 0; r0 < T; r0 += step) {
        int r1 = r0 + step < T ? r0 + step : T;
        if (cols_causal)  /* S rows r0..r1 over keys 0..r1 */
            sgemm_serial(r1 - r0, r1, K, A + r0 * rsa, rsa, csa, B, rsb, csb, C + r0 * ldc, ldc, accumulate);
        else              /* rows r0..r1 summing over t2 < r1 only */
            sgemm_serial(r1 - r0, N, r1, A + r0 * rsa, rsa, csa, B, rsb, csb, C + r0 * ldc, ldc, accumulate);
    }
}

/* C[t2 in c0..c1) += sum over t >= c0 of A^T: dK = dS^T Q and dV = att^T dY, whose terms t < t2 are zero */
static void causal_cols(int T, int N, const float *G, long ldg, const float *X, long ldx, float *C, long ldc) {
    int step = T >= 2 * CAUSAL_BLOCK ? CAUSAL_BLOCK : T;
    for (int c0 = 0; c0 < T; c0 += step) {
        int c1 = c0 + step < T ? c0 + step : T;
        /* C[c0..c1) (c x N) += G[c0..T, c0..c1)^T (c x (T-c0)) X[c0..T) ((T-c0) x N) */
        sgemm_serial(c1 - c0, N, T - c0, G + (long)c0 * ldg + c0, 1, ldg, X + (long)c0 * ldx, ldx, 1,
                     C + (long)c0 * ldc, ldc, 1);
    }
}

void attention_forward(float *out, float *preatt, float *att, const float *inp, int B, int T, int C, int NH) {
    int hs = C / NH;
    long C3 = 3L * C;
    float scale = 1.0f / sqrtf((float)hs);
    #pragma omp parallel for collapse(2) schedule(dynamic, 1)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const float *q = inp + (long)b * T * C3 + h * hs, *k = q + C, *v = q + 2 * C;
            float *pre = preatt + ((long)b * NH + h) * T * T, *a = att + ((long)b * NH + h) * T * T;
            causal_rows(T, T, hs, 1, q, C3, 1, k, 1, C3, pre, T, 0);  /* S = Q K^T: B(i, t2) = k[t2][i] */
            for (int t = 0; t < T; t++) {
                float *pr = pre + (long)t * T, *ar = a + (long)t * T, mx = -INFINITY;
                for (int t2 = 0; t2 <= t; t2++) {
                    pr[t2] *= scale;
                    mx = pr[t2] > mx ? pr[t2] : mx;
                }
                float sum = 0.0f;
                #pragma omp simd reduction(+:sum)
                for (int t2 = 0; t2 <= t; t2++) {  /* stable softmax: the row max is subtracted */
                    float e = exp_f(pr[t2] - mx);
                    ar[t2] = e;
                    sum += e;
                }
                float inv = 1.0f / sum;
                #pragma omp simd
                for (int t2 = 0; t2 <= t; t2++) ar[t2] *= inv;
                for (int t2 = t + 1; t2 < T; t2++) {  /* the future: masked, as the reference shows it */
                    pr[t2] = -INFINITY;
                    ar[t2] = 0.0f;
                }
            }
            causal_rows(T, hs, T, 0, a, T, 1, v, C3, 1, out + (long)b * T * C + h * hs, C, 0);  /* Y = att V */
        }
}

void attention_backward(float *dinp, float *dpreatt, float *datt, const float *dout, const float *inp,
                        const float *att, int B, int T, int C, int NH) {
    int hs = C / NH;
    long C3 = 3L * C;
    float scale = 1.0f / sqrtf((float)hs);
    #pragma omp parallel for collapse(2) schedule(dynamic, 1)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const float *q = inp + (long)b * T * C3 + h * hs, *k = q + C, *v = q + 2 * C;
            float *dq = dinp + (long)b * T * C3 + h * hs, *dk = dq + C, *dv = dq + 2 * C;
            const float *dy = dout + (long)b * T * C + h * hs;
            const float *a = att + ((long)b * NH + h) * T * T;
            float *dat = datt + ((long)b * NH + h) * T * T, *dpre = dpreatt + ((long)b * NH + h) * T * T;
            float *g = malloc(sizeof(float) * T * T);  /* dA, then dS * scale, for this head */
            if (!g) abort();
            sgemm_serial(T, T, hs, dy, C, 1, v, 1, C3, g, T, 0);  /* dA = dY V^T (the full T x T, as the reference) */
            for (int t = 0; t < T; t++) {
                float *gr = g + (long)t * T, *datr = dat + (long)t * T, *dpr = dpre + (long)t * T;
                const float *ar = a + (long)t * T;
                float dot = 0.0f;
                #pragma omp simd reduction(+:dot)
                for (int t2 = 0; t2 < T; t2++) {
                    datr[t2] += gr[t2];
                    dot += gr[t2] * ar[t2];  /* att is 0 where masked */
                }
                #pragma omp simd
                for (int t2 = 0; t2 < T; t2++) {  /* softmax backward; 0 where masked (att = 0) */
                    float ds = ar[t2] * (gr[t2] - dot);
                    dpr[t2] += ds;
                    gr[t2] = ds * scale;  /* the scores were q . k * scale */
                }
            }
            causal_rows(T, hs, T, 0, g, T, 1, k, C3, 1, dq, C3, 1);  /* dQ += dS K */
            causal_cols(T, hs, g, T, q, C3, dk, C3);                 /* dK += dS^T Q */
            causal_cols(T, hs, a, T, dy, C, dv, C3);                 /* dV += att^T dY */
            free(g);
        }
}

/* ---------------------------------------------------------------------------------------------- */
/* gelu (tanh approximation), residual */

#define GELU_SCALE 0.7978845608028654f  /* sqrt(2 / pi) */

void gelu_forward(float *out, const float *inp, long N) {
    #pragma omp parallel for simd schedule(dynamic, 16384) if (N > 32768)
    for (long i = 0; i < N; i++) {
        float x = inp[i];
        out[i] = 0.5f * x * (1.0f + tanh_f(GELU_SCALE * (x + 0.044715f * x * x * x)));
    }
}

void gelu_backward(float *dinp, const float *inp, const float *dout, long N) {
    #pragma omp parallel for simd schedule(dynamic, 16384) if (N > 32768)
    for (long i = 0; i < N; i++) {
        float x = inp[i];
        float th = tanh_f(GELU_SCALE * (x + 0.044715f * x * x * x));
        float du = GELU_SCALE * (1.0f + 3.0f * 0.044715f * x * x);
        dinp[i] += dout[i] * (0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * du);
    }
}

void residual_forward(float *out, const float *a, const float *b, long N) {
    #pragma omp parallel for simd schedule(dynamic, 16384) if (N > 32768)
    for (long i = 0; i < N; i++) out[i] = a[i] + b[i];
}

void residual_backward(float *da, float *db, const float *dout, long N) {
    #pragma omp parallel for simd schedule(dynamic, 16384) if (N > 32768)
    for (long i = 0; i < N; i++) {
        da[i] += dout[i];
        db[i] += dout[i];
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* softmax + cross-entropy over the real vocabulary V; padded columns get 0; target -1 is ignored */

void softmax_crossentropy_forward(float *losses, float *probs, const float *logits, const int *targets,
                                  int B, int T, int V, int Vp) {
    long rows = (long)B * T;
    #pragma omp parallel for schedule(dynamic, 4) if (rows * V > 32768)
    for (long i = 0; i < rows; i++) {
        const float *z = logits + i * Vp;
        float *p = probs + i * Vp;
        float mx = -INFINITY;
        #pragma omp simd reduction(max:mx)
        for (int j = 0; j < V; j++) mx = z[j] > mx ? z[j] : mx;
        float s = 0.0f;
        #pragma omp simd reduction(+:s)
        for (int j = 0; j < V; j++) {
            float e = exp_f(z[j] - mx);
            p[j] = e;
            s += e;
        }
        float inv = 1.0f / s;
        #pragma omp simd
        for (int j = 0; j < V; j++) p[j] *= inv;
        for (int j = V; j < Vp; j++) p[j] = 0.0f;
        int tg = targets[i];
        /* -log p[target] = log(sum) - (z_target - max): exact even where p underflows to 0 */
        losses[i] = tg >= 0 ? logf(s) - (z[tg] - mx) : 0.0f;
    }
}

void softmax_crossentropy_backward(float *dlogits, const float *dlosses, const float *probs,
                                   const int *targets, int B, int T, int V, int Vp) {
    long rows = (long)B * T;
    #pragma omp parallel for schedule(dynamic, 4) if (rows * V > 32768)
    for (long i = 0; i < rows; i++) {
        int tg = targets[i];
        if (tg < 0) continue;  /* ignored: no gradient */
        float w = dlosses[i], *d = dlogits + i * Vp;
        const float *p = probs + i * Vp;
        #pragma omp simd
        for (int j = 0; j < V; j++) d[j] += w * p[j];
        d[tg] -= w;
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* AdamW: bias-corrected moments, decoupled weight decay (as PyTorch and llm.c) */

void adamw_update(float *params, const float *grads, float *m, float *v, long N, double lr, double beta1,
                  double beta2, double eps, double weight_decay, int t) {
    float b1 = (float)beta1, b2 = (float)beta2, ob1 = (float)(1.0 - beta1), ob2 = (float)(1.0 - beta2);
    float c1 = (float)(1.0 - pow(beta1, t)), c2 = (float)(1.0 - pow(beta2, t));  /* the corrections */
    float lrf = (float)lr, epsf = (float)eps, wd = (float)weight_decay;
    #pragma omp parallel for simd schedule(dynamic, 16384) if (N > 32768)
    for (long i = 0; i < N; i++) {
        float g = grads[i];
        float mi = b1 * m[i] + ob1 * g, vi = b2 * v[i] + ob2 * g * g;
        m[i] = mi;
        v[i] = vi;
        params[i] -= lrf * ((mi / c1) / (sqrtf(vi / c2) + epsf) + wd * params[i]);
    }
}
