// Shared by every .cu file: error codes, launch sizes, warp reductions, the scratch workspace.
#pragma once
#include <cuda_runtime.h>
#include <math.h>
#include <stddef.h>

#include "minigpt_cuda.h"

// Indices are 64-bit: B*T*Vp and B*NH*T*T pass 2^31 at GPT-2 sizes (32 x 1024 x 50304 ~ 1.6e9).
typedef long long i64;

static inline int ceil_div(i64 a, i64 b) { return (int)((a + b - 1) / b); }

// After a launch: 0, or the launch's error (bad configuration, no device). Errors inside a running
// kernel show up at the next synchronising call instead.
static inline int launch_status(void) { return (int)cudaGetLastError(); }

#define MG_TRY(call)                        \
    do {                                    \
        int mg_rc_ = (int)(call);           \
        if (mg_rc_ != 0) return mg_rc_;     \
    } while (0)

// Sum / max over the 32 lanes of a warp; every lane gets the result.
__device__ inline float warp_sum(float x) {
    for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(0xffffffffu, x, offset);
    return x;
}
__device__ inline float warp_max(float x) {
    for (int offset = 16; offset > 0; offset >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, offset));
    return x;
}

// Sum / max over a whole block (blockDim.x a multiple of 32, at most 1024); every thread gets the
// result. `shared` holds 32 floats; the leading __syncthreads makes back-to-back calls safe.
__device__ inline float block_sum(float x, float *shared) {
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
    x = warp_sum(x);
    __syncthreads();
    if (lane == 0) shared[warp] = x;
    __syncthreads();
    x = lane < nwarps ? shared[lane] : 0.0f;
    return warp_sum(x);
}
__device__ inline float block_max(float x, float *shared) {
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
    x = warp_max(x);
    __syncthreads();
    if (lane == 0) shared[warp] = x;
    __syncthreads();
    x = lane < nwarps ? shared[lane] : -INFINITY;
    return warp_max(x);
}

// One growable device scratch buffer (runtime.cu), for kernels that need temporaries
// (attention's permuted q, k, v). Valid until the next call; ops run on one stream, in order.
int workspace(float **ptr, i64 floats);

// Column sums accumulated into out: out[j] += sum_i in[i * cols + j] (matmul.cu); the bias gradient.
int column_sum_accumulate(float *out, const float *in, i64 rows, int cols);
