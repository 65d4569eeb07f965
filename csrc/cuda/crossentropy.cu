// softmax + cross-entropy, fused: probabilities over the real vocabulary V only (the Vp - V padded
// columns get probability 0 and gradient 0); a target of -1 is ignored (no loss, no gradient).
// One block per (b, t) row: V is 50257 for GPT-2, too long for a warp.
#include "common.cuh"

#define CE_THREADS 512

__global__ void softmax_crossentropy_forward_kernel(float *losses, float *probs, const float *logits,
                                                    const int *targets, int V, int Vp) {
    __shared__ float shared[32];
    i64 row = blockIdx.x;
    const float *z = logits + row * Vp;
    float *p = probs + row * Vp;
    float maxval = -INFINITY;
    for (int i = threadIdx.x; i < V; i += blockDim.x) maxval = fmaxf(maxval, z[i]);
    maxval = block_max(maxval, shared);
    float sum = 0.0f;
    for (int i = threadIdx.x; i < V; i += blockDim.x) sum += expf(z[i] - maxval);
    sum = block_sum(sum, shared);
    for (int i = threadIdx.x; i < Vp; i += blockDim.x) p[i] = i < V ? expf(z[i] - maxval) / sum : 0.0f;
    if (threadIdx.x == 0) {
        int target = targets[row];
        // -log p[target] = log(sum) - (z[target] - max): exact even where p underflows to 0
        losses[row] = target >= 0 ? logf(sum) - (z[target] - maxval) : 0.0f;
    }
}

// dlogits[:V] += dlosses * (probs - onehot(target)); per-token weights arrive through dlosses
__global__ void softmax_crossentropy_backward_kernel(float *dlogits, const float *dlosses, const float *probs,
                                                     const int *targets, int V, int Vp) {
    i64 row = blockIdx.x;
    int target = targets[row];
    float w = target >= 0 ? dlosses[row] : 0.0f;
    const float *p = probs + row * Vp;
    float *d = dlogits + row * Vp;
    for (int i = threadIdx.x; i < V; i += blockDim.x) d[i] += p[i] * w - (i == target ? w : 0.0f);
}

extern "C" int softmax_crossentropy_forward(float *losses, float *probs, const float *logits, const int *targets,
                                            int B, int T, int V, int Vp) {
    if (B * T == 0) return 0;
    softmax_crossentropy_forward_kernel<<<B * T, CE_THREADS>>>(losses, probs, logits, targets, V, Vp);
    return launch_status();
}

extern "C" int softmax_crossentropy_backward(float *dlogits, const float *dlosses, const float *probs,
                                             const int *targets, int B, int T, int V, int Vp) {
    if (B * T == 0) return 0;
    softmax_crossentropy_backward_kernel<<<B * T, CE_THREADS>>>(dlogits, dlosses, probs, targets, V, Vp);
    return launch_status();
}

// --------------------------------------------------------------------------------------------------
// The model driver's mean loss, kept on the device: dlosses = weight / count where the target
// counts (else 0), and loss = sum(losses * dlosses) in double, so only one number comes back.

__global__ void loss_weights_kernel(float *dlosses, const int *targets, const float *weights, int N, float count) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < N) dlosses[i] = targets[i] >= 0 ? (weights ? weights[i] : 1.0f) / count : 0.0f;
}

__global__ void weighted_loss_kernel(double *out, const float *losses, const float *dlosses, int N) {
    __shared__ double partial[1024];
    double s = 0.0;
    for (int i = threadIdx.x; i < N; i += blockDim.x) s += (double)losses[i] * (double)dlosses[i];
    partial[threadIdx.x] = s;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half /= 2) {  // blockDim.x is a power of two
        if (threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0) *out = partial[0];
}

extern "C" int loss_weights(float *dlosses, const int *targets, const float *weights, int N, float count) {
    if (N <= 0) return 0;
    loss_weights_kernel<<<ceil_div(N, 256), 256>>>(dlosses, targets, weights, N, count);
    return launch_status();
}

extern "C" int weighted_loss(double *out, const float *losses, const float *dlosses, int N) {
    weighted_loss_kernel<<<1, 1024>>>(out, losses, dlosses, N);
    return launch_status();
}
