// AdamW, as llm.c and PyTorch: bias-corrected moments, decoupled weight decay; one thread a parameter.
#include "common.cuh"

__global__ void adamw_kernel(float *params, const float *grads, float *m, float *v, i64 N, float lr,
                             float beta1, float beta2, float bc1, float bc2, float eps, float weight_decay) {
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < N; i += (i64)gridDim.x * blockDim.x) {
        float g = grads[i];
        float mi = beta1 * m[i] + (1.0f - beta1) * g;      // running mean of g
        float vi = beta2 * v[i] + (1.0f - beta2) * g * g;  // running mean of g^2
        m[i] = mi;
        v[i] = vi;
        float m_hat = mi / bc1, v_hat = vi / bc2;          // the moments start at 0: undo that bias
        params[i] -= lr * (m_hat / (sqrtf(v_hat) + eps) + weight_decay * params[i]);
    }
}

extern "C" int adamw_update(float *params, const float *grads, float *m, float *v, long long N, float lr,
                            float beta1, float beta2, float eps, float weight_decay, int t) {
    if (N <= 0) return 0;
    float bc1 = (float)(1.0 - pow((double)beta1, t)), bc2 = (float)(1.0 - pow((double)beta2, t));
    adamw_kernel<<<min(ceil_div(N, 256), 65536), 256>>>(params, grads, m, v, N, lr, beta1, beta2, bc1, bc2,
                                                        eps, weight_decay);
    return launch_status();
}
