// attention: causal multi-head self-attention on the fused qkv activation, as llm.c's CUDA version:
// split the heads apart, two batched GEMMs around a stable causal softmax, merge the heads back.
//
//   q k v  (B, NH, T, hs)   split from inp (B, T, 3C)
//   preatt (B, NH, T, T)    = q @ k^T / sqrt(hs), -inf above the diagonal
//   att    (B, NH, T, T)    = softmax over t2 <= t, 0 above the diagonal
//   y      (B, NH, T, hs)   = att @ v, merged into out (B, T, C)
//
// The GEMMs are column-major (mg_sgemm). A row-major (T, T) matrix P read column-major is P^T, so
// "P = X @ Y^T" for row-major X, Y (T, hs) is mg_sgemm(T, N, T, T, hs, Y, X, P): see matmul.cu.
#include "common.cuh"

// dst[b, h, t, :] = src[(b*T + t) * row_stride + h*hs + :]   ((B, T, ...) -> (B, NH, T, hs))
__global__ void split_heads_kernel(float *dst, const float *src, int B, int T, int NH, int hs, int row_stride) {
    i64 N = (i64)B * NH * T * hs;
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < N; i += (i64)gridDim.x * blockDim.x) {
        int d = i % hs, t = (i / hs) % T, h = (i / ((i64)hs * T)) % NH;
        i64 b = i / ((i64)hs * T * NH);
        dst[i] = src[(b * T + t) * row_stride + h * hs + d];
    }
}

// the inverse: dst[(b*T + t) * row_stride + h*hs + :] (+)= src[b, h, t, :]
__global__ void merge_heads_kernel(float *dst, const float *src, int B, int T, int NH, int hs, int row_stride,
                                   int accumulate) {
    i64 N = (i64)B * NH * T * hs;
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < N; i += (i64)gridDim.x * blockDim.x) {
        int d = i % hs, t = (i / hs) % T, h = (i / ((i64)hs * T)) % NH;
        i64 b = i / ((i64)hs * T * NH);
        float *x = &dst[(b * T + t) * row_stride + h * hs + d];
        *x = accumulate ? *x + src[i] : src[i];
    }
}

static int split_heads(float *dst, const float *src, int B, int T, int NH, int hs, int row_stride) {
    i64 N = (i64)B * NH * T * hs;
    split_heads_kernel<<<min(ceil_div(N, 256), 65536), 256>>>(dst, src, B, T, NH, hs, row_stride);
    return launch_status();
}

static int merge_heads(float *dst, const float *src, int B, int T, int NH, int hs, int row_stride, int accumulate) {
    i64 N = (i64)B * NH * T * hs;
    merge_heads_kernel<<<min(ceil_div(N, 256), 65536), 256>>>(dst, src, B, T, NH, hs, row_stride, accumulate);
    return launch_status();
}

// One warp per row (b, h, t) of the (scaled) scores in preatt: mask the future with -inf and write
// att = exp(x - max) / sum over t2 <= t (the diagonal is always visible, so the max is finite).
__global__ void causal_softmax_kernel(float *att, float *preatt, i64 rows, int T) {
    i64 row = blockIdx.x * (i64)(blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows) return;  // a whole warp leaves together: the shuffles below stay full-warp
    int t = row % T;
    float *x = preatt + row * T, *y = att + row * T;
    float maxval = -INFINITY;
    for (int t2 = lane; t2 <= t; t2 += 32) maxval = fmaxf(maxval, x[t2]);
    maxval = warp_max(maxval);
    float sum = 0.0f;
    for (int t2 = lane; t2 <= t; t2 += 32) sum += expf(x[t2] - maxval);
    sum = warp_sum(sum);
    for (int t2 = lane; t2 < T; t2 += 32) {
        if (t2 <= t) {
            y[t2] = expf(x[t2] - maxval) / sum;
        } else {
            y[t2] = 0.0f;
            x[t2] = -INFINITY;
        }
    }
}

// One warp per row: datt += da; dpre = att * (da - <da, att>); dpreatt += dpre; and da := dpre in
// place, for the GEMMs that follow. Each lane reads and writes only its own t2, after the dot.
__global__ void causal_softmax_backward_kernel(float *da, float *datt, float *dpreatt, const float *att,
                                               i64 rows, int T) {
    i64 row = blockIdx.x * (i64)(blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows) return;
    float *g = da + row * T;
    const float *p = att + row * T;
    float dot = 0.0f;
    for (int t2 = lane; t2 < T; t2 += 32) dot += g[t2] * p[t2];  // p is 0 above the diagonal
    dot = warp_sum(dot);
    for (int t2 = lane; t2 < T; t2 += 32) {
        float d = g[t2], dpre = p[t2] * (d - dot);
        datt[row * T + t2] += d;
        dpreatt[row * T + t2] += dpre;
        g[t2] = dpre;
    }
}

extern "C" int attention_forward(float *out, float *preatt, float *att, const float *inp,
                                 int B, int T, int C, int NH) {
    int hs = C / NH, BNH = B * NH;
    i64 BTC = (i64)B * T * C, TT = (i64)T * T, Ths = (i64)T * hs;
    float *ws;
    MG_TRY(workspace(&ws, 4 * BTC));
    float *q = ws, *k = ws + BTC, *v = ws + 2 * BTC, *y = ws + 3 * BTC;  // each (B, NH, T, hs)
    MG_TRY(split_heads(q, inp + 0 * C, B, T, NH, hs, 3 * C));
    MG_TRY(split_heads(k, inp + 1 * C, B, T, NH, hs, 3 * C));
    MG_TRY(split_heads(v, inp + 2 * C, B, T, NH, hs, 3 * C));
    // preatt (T, T) = q @ k^T / sqrt(hs), per (b, h)
    float scale = 1.0f / sqrtf((float)hs);
    MG_TRY(mg_sgemm(1, 0, T, T, hs, scale, k, hs, Ths, q, hs, Ths, 0.0f, preatt, T, TT, BNH));
    i64 rows = (i64)BNH * T;
    causal_softmax_kernel<<<ceil_div(rows, 8), 256>>>(att, preatt, rows, T);  // 8 warps, 8 rows a block
    MG_TRY(launch_status());
    // y (T, hs) = att (T, T) @ v (T, hs)
    MG_TRY(mg_sgemm(0, 0, hs, T, T, 1.0f, v, hs, Ths, att, T, TT, 0.0f, y, hs, Ths, BNH));
    return merge_heads(out, y, B, T, NH, hs, C, 0);
}

extern "C" int attention_backward(float *dinp, float *dpreatt, float *datt, const float *dout, const float *inp,
                                  const float *att, int B, int T, int C, int NH) {
    int hs = C / NH, BNH = B * NH;
    i64 BTC = (i64)B * T * C, TT = (i64)T * T, Ths = (i64)T * hs;
    float *ws;
    MG_TRY(workspace(&ws, 7 * BTC + BNH * TT));
    float *q = ws, *k = ws + BTC, *v = ws + 2 * BTC, *dy = ws + 3 * BTC;  // (B, NH, T, hs)
    float *dq = ws + 4 * BTC, *dk = ws + 5 * BTC, *dv = ws + 6 * BTC;      // (B, NH, T, hs)
    float *da = ws + 7 * BTC;                                              // (B, NH, T, T)
    MG_TRY(split_heads(q, inp + 0 * C, B, T, NH, hs, 3 * C));
    MG_TRY(split_heads(k, inp + 1 * C, B, T, NH, hs, 3 * C));
    MG_TRY(split_heads(v, inp + 2 * C, B, T, NH, hs, 3 * C));
    MG_TRY(split_heads(dy, dout, B, T, NH, hs, C));
    // da (T, T) = dy @ v^T;  dv (T, hs) = att^T @ dy
    MG_TRY(mg_sgemm(1, 0, T, T, hs, 1.0f, v, hs, Ths, dy, hs, Ths, 0.0f, da, T, TT, BNH));
    MG_TRY(mg_sgemm(0, 1, hs, T, T, 1.0f, dy, hs, Ths, att, T, TT, 0.0f, dv, hs, Ths, BNH));
    i64 rows = (i64)BNH * T;
    causal_softmax_backward_kernel<<<ceil_div(rows, 8), 256>>>(da, datt, dpreatt, att, rows, T);
    MG_TRY(launch_status());
    // now da holds dpre: dq = dpre @ k / sqrt(hs);  dk = dpre^T @ q / sqrt(hs)
    float scale = 1.0f / sqrtf((float)hs);
    MG_TRY(mg_sgemm(0, 0, hs, T, T, scale, k, hs, Ths, da, T, TT, 0.0f, dq, hs, Ths, BNH));
    MG_TRY(mg_sgemm(0, 1, hs, T, T, scale, q, hs, Ths, da, T, TT, 0.0f, dk, hs, Ths, BNH));
    MG_TRY(merge_heads(dinp + 0 * C, dq, B, T, NH, hs, 3 * C, 1));
    MG_TRY(merge_heads(dinp + 1 * C, dk, B, T, NH, hs, 3 * C, 1));
    return merge_heads(dinp + 2 * C, dv, B, T, NH, hs, 3 * C, 1);
}
