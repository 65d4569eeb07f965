// encoder: token embedding + position embedding. out[b, t] = wte[inp[b, t]] + wpe[t]
#include "common.cuh"

__global__ void encoder_forward_kernel(float *out, const int *inp, const float *wte, const float *wpe,
                                       int B, int T, int C) {
    i64 N = (i64)B * T * C;
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < N; i += (i64)gridDim.x * blockDim.x) {
        i64 bt = i / C;
        int c = i % C, t = bt % T;
        out[i] = wte[(i64)inp[bt] * C + c] + wpe[(i64)t * C + c];
    }
}

// dwte: a token that appears several times receives the sum of its rows, so scatter with atomics
__global__ void encoder_backward_wte_kernel(float *dwte, const float *dout, const int *inp, int B, int T, int C) {
    i64 N = (i64)B * T * C;
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < N; i += (i64)gridDim.x * blockDim.x)
        atomicAdd(&dwte[(i64)inp[i / C] * C + i % C], dout[i]);
}

// dwpe[t, c] += sum over b of dout[b, t, c]: one thread per (t, c), no atomics, a fixed order
__global__ void encoder_backward_wpe_kernel(float *dwpe, const float *dout, int B, int T, int C) {
    i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x;
    if (i >= (i64)T * C) return;
    float s = 0.0f;
    for (int b = 0; b < B; b++) s += dout[(i64)b * T * C + i];
    dwpe[i] += s;
}

extern "C" int encoder_forward(float *out, const int *inp, const float *wte, const float *wpe, int B, int T, int C) {
    i64 N = (i64)B * T * C;
    if (N == 0) return 0;
    encoder_forward_kernel<<<min(ceil_div(N, 256), 65536), 256>>>(out, inp, wte, wpe, B, T, C);
    return launch_status();
}

extern "C" int encoder_backward(float *dwte, float *dwpe, const float *dout, const int *inp, int B, int T, int C) {
    i64 N = (i64)B * T * C;
    if (N == 0) return 0;
    encoder_backward_wte_kernel<<<min(ceil_div(N, 256), 65536), 256>>>(dwte, dout, inp, B, T, C);
    MG_TRY(launch_status());
    encoder_backward_wpe_kernel<<<ceil_div((i64)T * C, 256), 256>>>(dwpe, dout, B, T, C);
    return launch_status();
}
