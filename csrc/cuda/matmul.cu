// matmul: the linear layer, out = inp @ w.T + bias, and the one GEMM every op here calls.
//
// mg_sgemm has cuBLAS's meaning (column-major, strided batches). It runs cuBLAS when the build found
// it (MINIGPT_CUBLAS) and mg_set_gemm(1) is in force, else sgemm_tiled_kernel below: the plain
// shared-memory tiled GEMM that says what cuBLAS computes, kept for reading and tested against it.
//
// Row-major (rows, cols) memory read column-major is the (cols, rows) transpose, so the row-major
// out = inp @ w.T is computed as the column-major out^T = op_T(w) @ inp^T, as in llm.c.
#include "common.cuh"

#ifdef MINIGPT_CUBLAS
#include <cublas_v2.h>
static cublasHandle_t cublas_handle = NULL;
static int use_cublas = 1;
static int use_tf32 = 0;
#endif

// --------------------------------------------------------------------------------------------------
// the hand-written GEMM: each 32x8 block computes a 32x32 tile of C, each thread 4 of its entries,
// stepping through k one 32-wide slab at a time staged in shared memory

#define TILE 32
#define TILE_ROWS 8  // blockDim = (TILE, TILE_ROWS): each thread covers TILE / TILE_ROWS columns of C

__global__ void sgemm_tiled_kernel(int transa, int transb, int m, int n, int k, float alpha,
                                   const float *A, int lda, i64 strideA, const float *B, int ldb, i64 strideB,
                                   float beta, float *C, int ldc, i64 strideC) {
    __shared__ float As[TILE][TILE + 1];  // As[l][i] = op(A)(i0 + i, l0 + l); +1 avoids bank conflicts
    __shared__ float Bs[TILE][TILE + 1];  // Bs[j][l] = op(B)(l0 + l, j0 + j)
    A += blockIdx.z * strideA;
    B += blockIdx.z * strideB;
    C += blockIdx.z * strideC;
    int i0 = blockIdx.x * TILE, j0 = blockIdx.y * TILE;
    int tx = threadIdx.x, ty = threadIdx.y;
    float acc[TILE / TILE_ROWS] = {0.0f};

    for (int l0 = 0; l0 < k; l0 += TILE) {
        for (int r = 0; r < TILE / TILE_ROWS; r++) {
            int row = ty + r * TILE_ROWS;
            // let tx run along the contiguous index of each operand, so the loads coalesce
            int ai = transa ? row : tx, al = transa ? tx : row;
            int gi = i0 + ai, gl = l0 + al;
            As[al][ai] = (gi < m && gl < k) ? (transa ? A[gl + (i64)gi * lda] : A[gi + (i64)gl * lda]) : 0.0f;
            int bl = transb ? row : tx, bj = transb ? tx : row;
            int gj = j0 + bj;
            gl = l0 + bl;
            Bs[bj][bl] = (gl < k && gj < n) ? (transb ? B[gj + (i64)gl * ldb] : B[gl + (i64)gj * ldb]) : 0.0f;
        }
        __syncthreads();
        for (int l = 0; l < TILE; l++) {
            float a = As[l][tx];
            for (int r = 0; r < TILE / TILE_ROWS; r++) acc[r] += a * Bs[ty + r * TILE_ROWS][l];
        }
        __syncthreads();  // before the next slab overwrites the tiles
    }
    for (int r = 0; r < TILE / TILE_ROWS; r++) {
        int i = i0 + tx, j = j0 + ty + r * TILE_ROWS;
        if (i < m && j < n) {
            i64 idx = i + (i64)j * ldc;
            C[idx] = beta == 0.0f ? alpha * acc[r] : alpha * acc[r] + beta * C[idx];  // beta 0: C unread
        }
    }
}

extern "C" int mg_sgemm(int transa, int transb, int m, int n, int k, float alpha,
                        const float *A, int lda, long long strideA, const float *B, int ldb, long long strideB,
                        float beta, float *C, int ldc, long long strideC, int batch) {
    if (m <= 0 || n <= 0 || batch <= 0) return 0;
#ifdef MINIGPT_CUBLAS
    if (use_cublas) {
        if (!cublas_handle) {
            int rc = (int)cublasCreate(&cublas_handle);
            if (rc) { cublas_handle = NULL; return 10000 + rc; }
            cublasSetMathMode(cublas_handle, use_tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH);
        }
        int rc = (int)cublasSgemmStridedBatched(cublas_handle, transa ? CUBLAS_OP_T : CUBLAS_OP_N,
                                                transb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k, &alpha,
                                                A, lda, strideA, B, ldb, strideB, &beta, C, ldc, strideC, batch);
        return rc ? 10000 + rc : 0;
    }
#endif
    for (int b0 = 0; b0 < batch; b0 += 65535) {  // gridDim.z is at most 65535
        dim3 grid(ceil_div(m, TILE), ceil_div(n, TILE), min(batch - b0, 65535)), block(TILE, TILE_ROWS);
        sgemm_tiled_kernel<<<grid, block>>>(transa, transb, m, n, k, alpha, A + b0 * strideA, lda, strideA,
                                            B + b0 * strideB, ldb, strideB, beta, C + b0 * strideC, ldc, strideC);
        MG_TRY(launch_status());
    }
    return 0;
}

extern "C" int mg_has_cublas(void) {
#ifdef MINIGPT_CUBLAS
    return 1;
#else
    return 0;
#endif
}

// Without cuBLAS only the tiled kernel exists: asking for cuBLAS or TF32 is then an error.
extern "C" int mg_set_gemm(int cublas) {
#ifdef MINIGPT_CUBLAS
    use_cublas = cublas ? 1 : 0;
    return 0;
#else
    return cublas ? (int)cudaErrorNotSupported : 0;
#endif
}

extern "C" int mg_set_tf32(int on) {
#ifdef MINIGPT_CUBLAS
    use_tf32 = on ? 1 : 0;
    if (cublas_handle) {
        int rc = (int)cublasSetMathMode(cublas_handle, use_tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH);
        if (rc) return 10000 + rc;
    }
    return 0;
#else
    return on ? (int)cudaErrorNotSupported : 0;
#endif
}

extern "C" int gemm_release(void) {
#ifdef MINIGPT_CUBLAS
    if (cublas_handle) {
        int rc = (int)cublasDestroy(cublas_handle);
        cublas_handle = NULL;
        if (rc) return 10000 + rc;
    }
#endif
    return 0;
}

// --------------------------------------------------------------------------------------------------
// bias: broadcast add in the forward, column sums in the backward

__global__ void add_bias_kernel(float *out, const float *bias, i64 N, int OC) {
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < N; i += (i64)gridDim.x * blockDim.x)
        out[i] += bias[i % OC];
}

#define SUM_ROWS 256  // rows per block in the column sums: enough parallel blocks, few atomics

// out[j] += sum over rows of in[row, j]: blockDim (32, 8), x along the columns (coalesced), y and
// blockIdx.y over slabs of SUM_ROWS rows; each block adds its slab's partial sum with one atomic.
__global__ void column_sum_kernel(float *out, const float *in, i64 rows, int cols) {
    __shared__ float partial[8][33];
    int j = blockIdx.x * 32 + threadIdx.x;
    i64 r0 = (i64)blockIdx.y * SUM_ROWS, r1 = min(r0 + SUM_ROWS, rows);
    float s = 0.0f;
    if (j < cols)
        for (i64 r = r0 + threadIdx.y; r < r1; r += 8) s += in[r * cols + j];
    partial[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && j < cols) {
        for (int y = 1; y < 8; y++) s += partial[y][threadIdx.x];
        atomicAdd(&out[j], s);
    }
}

int column_sum_accumulate(float *out, const float *in, i64 rows, int cols) {
    if (rows <= 0 || cols <= 0) return 0;
    dim3 grid(ceil_div(cols, 32), ceil_div(rows, SUM_ROWS)), block(32, 8);
    column_sum_kernel<<<grid, block>>>(out, in, rows, cols);
    return launch_status();
}

// --------------------------------------------------------------------------------------------------
// the ops

extern "C" int matmul_forward(float *out, const float *inp, const float *weight, const float *bias,
                              int B, int T, int C, int OC) {
    // out (B*T, OC) = inp (B*T, C) @ weight.T; column-major: out^T (OC, BT) = weight^T' (OC, C) @ inp^T (C, BT)
    int BT = B * T;
    MG_TRY(mg_sgemm(1, 0, OC, BT, C, 1.0f, weight, C, 0, inp, C, 0, 0.0f, out, OC, 0, 1));
    if (bias) {
        i64 N = (i64)BT * OC;
        add_bias_kernel<<<min(ceil_div(N, 256), 65536), 256>>>(out, bias, N, OC);
        MG_TRY(launch_status());
    }
    return 0;
}

extern "C" int matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                               const float *weight, int B, int T, int C, int OC) {
    int BT = B * T;
    // dinp (BT, C) += dout (BT, OC) @ weight (OC, C)
    MG_TRY(mg_sgemm(0, 0, C, BT, OC, 1.0f, weight, C, 0, dout, OC, 0, 1.0f, dinp, C, 0, 1));
    // dweight (OC, C) += dout^T (OC, BT) @ inp (BT, C)
    MG_TRY(mg_sgemm(0, 1, C, OC, BT, 1.0f, inp, C, 0, dout, OC, 0, 1.0f, dweight, C, 0, 1));
    if (dbias) MG_TRY(column_sum_accumulate(dbias, dout, BT, OC));  // dbias (OC,) += sum over rows of dout
    return 0;
}
