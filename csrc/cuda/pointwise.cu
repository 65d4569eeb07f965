// The element-by-element ops: GELU (tanh approximation, as GPT-2) and the residual connection.
#include "common.cuh"

#define GELU_SCALE 0.7978845608028654f  // sqrt(2 / pi)

#define FOR_EACH(i, N) \
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < (N); i += (i64)gridDim.x * blockDim.x)

__global__ void gelu_forward_kernel(float *out, const float *inp, i64 N) {
    FOR_EACH(i, N) {
        float x = inp[i];
        out[i] = 0.5f * x * (1.0f + tanhf(GELU_SCALE * (x + 0.044715f * x * x * x)));
    }
}

__global__ void gelu_backward_kernel(float *dinp, const float *inp, const float *dout, i64 N) {
    FOR_EACH(i, N) {
        float x = inp[i];
        float th = tanhf(GELU_SCALE * (x + 0.044715f * x * x * x));
        float du = GELU_SCALE * (1.0f + 3.0f * 0.044715f * x * x);  // d(tanh argument)/dx
        dinp[i] += dout[i] * (0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * du);
    }
}

__global__ void residual_forward_kernel(float *out, const float *a, const float *b, i64 N) {
    FOR_EACH(i, N) out[i] = a[i] + b[i];
}

__global__ void residual_backward_kernel(float *da, float *db, const float *dout, i64 N) {
    FOR_EACH(i, N) {
        da[i] += dout[i];
        db[i] += dout[i];
    }
}

static int blocks(i64 N) { return min(ceil_div(N, 256), 65536); }

extern "C" int gelu_forward(float *out, const float *inp, int N) {
    if (N <= 0) return 0;
    gelu_forward_kernel<<<blocks(N), 256>>>(out, inp, N);
    return launch_status();
}

extern "C" int gelu_backward(float *dinp, const float *inp, const float *dout, int N) {
    if (N <= 0) return 0;
    gelu_backward_kernel<<<blocks(N), 256>>>(dinp, inp, dout, N);
    return launch_status();
}

extern "C" int residual_forward(float *out, const float *a, const float *b, int N) {
    if (N <= 0) return 0;
    residual_forward_kernel<<<blocks(N), 256>>>(out, a, b, N);
    return launch_status();
}

extern "C" int residual_backward(float *da, float *db, const float *dout, int N) {
    if (N <= 0) return 0;
    residual_backward_kernel<<<blocks(N), 256>>>(da, db, dout, N);
    return launch_status();
}
