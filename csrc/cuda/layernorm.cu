// layernorm: normalise each (b, t) row over its C channels, then scale and shift (eps 1e-5, biased
// variance, as PyTorch). One warp per row; the backward's weight and bias gradients are column sums.
#include "common.cuh"

#define LN_EPS 1e-5f

__global__ void layernorm_forward_kernel(float *out, float *mean, float *rstd, const float *inp,
                                         const float *weight, const float *bias, i64 rows, int C) {
    i64 row = blockIdx.x * (i64)(blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows) return;  // whole warps leave together
    const float *x = inp + row * C;
    float s = 0.0f;
    for (int c = lane; c < C; c += 32) s += x[c];
    float m = warp_sum(s) / C;
    float v = 0.0f;  // a second pass over x - m: no cancellation, as the reference
    for (int c = lane; c < C; c += 32) v += (x[c] - m) * (x[c] - m);
    float r = 1.0f / sqrtf(warp_sum(v) / C + LN_EPS);
    float *y = out + row * C;
    for (int c = lane; c < C; c += 32) y[c] = (x[c] - m) * r * weight[c] + bias[c];
    if (lane == 0) {
        mean[row] = m;
        rstd[row] = r;
    }
}

// dinp += rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm)),  dnorm = dout * weight
__global__ void layernorm_backward_kernel(float *dinp, const float *dout, const float *inp, const float *weight,
                                          const float *mean, const float *rstd, i64 rows, int C) {
    i64 row = blockIdx.x * (i64)(blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows) return;
    const float *x = inp + row * C, *dy = dout + row * C;
    float m = mean[row], r = rstd[row];
    float dnorm_sum = 0.0f, dnorm_norm_sum = 0.0f;
    for (int c = lane; c < C; c += 32) {
        float norm = (x[c] - m) * r, dnorm = dy[c] * weight[c];
        dnorm_sum += dnorm;
        dnorm_norm_sum += dnorm * norm;
    }
    float dnorm_mean = warp_sum(dnorm_sum) / C, dnorm_norm_mean = warp_sum(dnorm_norm_sum) / C;
    float *dx = dinp + row * C;
    for (int c = lane; c < C; c += 32) {
        float norm = (x[c] - m) * r, dnorm = dy[c] * weight[c];
        dx[c] += r * (dnorm - dnorm_mean - norm * dnorm_norm_mean);
    }
}

#define LN_SUM_ROWS 256  // rows per block for the weight and bias gradients (as column_sum_kernel)

// dbias[c] += sum_rows dout;  dweight[c] += sum_rows dout * norm.  blockDim (32, 8), x along c.
__global__ void layernorm_param_grad_kernel(float *dweight, float *dbias, const float *dout, const float *inp,
                                            const float *mean, const float *rstd, i64 rows, int C) {
    __shared__ float pw[8][33], pb[8][33];
    int c = blockIdx.x * 32 + threadIdx.x;
    i64 r0 = (i64)blockIdx.y * LN_SUM_ROWS, r1 = min(r0 + LN_SUM_ROWS, rows);
    float sw = 0.0f, sb = 0.0f;
    if (c < C)
        for (i64 r = r0 + threadIdx.y; r < r1; r += 8) {
            float dy = dout[r * C + c];
            sb += dy;
            sw += dy * (inp[r * C + c] - mean[r]) * rstd[r];
        }
    pw[threadIdx.y][threadIdx.x] = sw;
    pb[threadIdx.y][threadIdx.x] = sb;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        for (int y = 1; y < 8; y++) {
            sw += pw[y][threadIdx.x];
            sb += pb[y][threadIdx.x];
        }
        atomicAdd(&dweight[c], sw);
        atomicAdd(&dbias[c], sb);
    }
}

extern "C" int layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                                 const float *bias, int B, int T, int C) {
    i64 rows = (i64)B * T;
    if (rows == 0) return 0;
    layernorm_forward_kernel<<<ceil_div(rows, 8), 256>>>(out, mean, rstd, inp, weight, bias, rows, C);
    return launch_status();
}

extern "C" int layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                                  const float *weight, const float *mean, const float *rstd, int B, int T, int C) {
    i64 rows = (i64)B * T;
    if (rows == 0) return 0;
    layernorm_backward_kernel<<<ceil_div(rows, 8), 256>>>(dinp, dout, inp, weight, mean, rstd, rows, C);
    MG_TRY(launch_status());
    dim3 grid(ceil_div(C, 32), ceil_div(rows, LN_SUM_ROWS)), block(32, 8);
    layernorm_param_grad_kernel<<<grid, block>>>(dweight, dbias, dout, inp, mean, rstd, rows, C);
    return launch_status();
}
