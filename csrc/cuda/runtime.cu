// The runtime around the kernels: device memory, copies, error strings, the scratch workspace.
// Python owns every model buffer (minigpt/model/ops_cuda.py allocates with mg_malloc and frees with
// mg_free); the only memory held here is the workspace and, in matmul.cu, the cuBLAS handle.
#include <stdio.h>

#include "common.cuh"

extern "C" int gemm_release(void);  // matmul.cu

static float *workspace_ptr = NULL;
static i64 workspace_floats = 0;

int workspace(float **ptr, i64 floats) {
    if (floats > workspace_floats) {
        if (workspace_ptr) MG_TRY(cudaFree(workspace_ptr));  // cudaFree waits for running kernels
        workspace_ptr = NULL;
        workspace_floats = 0;
        MG_TRY(cudaMalloc((void **)&workspace_ptr, (size_t)floats * sizeof(float)));
        workspace_floats = floats;
    }
    *ptr = workspace_ptr;
    return 0;
}

extern "C" int mg_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();  // clear the sticky "no driver" error so later calls start clean
        return 0;
    }
    return n;
}

extern "C" const char *mg_device_name(void) {
    static cudaDeviceProp prop;
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaGetDeviceProperties(&prop, dev) != cudaSuccess)
        return "no CUDA device";
    return prop.name;
}

// Our codes are cudaError_t values, or cuBLAS statuses offset by 10000 (matmul.cu) so both fit one int.
extern "C" const char *mg_error_string(int code) {
    static char buf[96];
    if (code >= 10000) {
        snprintf(buf, sizeof buf, "cuBLAS status %d", code - 10000);
        return buf;
    }
    return cudaGetErrorString((cudaError_t)code);
}

extern "C" int mg_malloc(void **ptr, size_t bytes) {
    *ptr = NULL;
    int rc = (int)cudaMalloc(ptr, bytes > 0 ? bytes : 1);
    if (rc != 0) {
        *ptr = NULL;
        cudaGetLastError();  // an out-of-memory is not sticky: clear it so the caller can go on
    }
    return rc;
}

extern "C" int mg_free(void *ptr) { return ptr ? (int)cudaFree(ptr) : 0; }

extern "C" int mg_memcpy_h2d(void *dst, const void *src, size_t bytes) {
    return bytes ? (int)cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice) : 0;
}

extern "C" int mg_memcpy_d2h(void *dst, const void *src, size_t bytes) {
    return bytes ? (int)cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost) : 0;
}

extern "C" int mg_memset_zero(void *ptr, size_t bytes) {
    return bytes ? (int)cudaMemset(ptr, 0, bytes) : 0;
}

extern "C" int mg_synchronize(void) { return (int)cudaDeviceSynchronize(); }

extern "C" int mg_release(void) {
    int rc = 0;
    if (workspace_ptr) rc = (int)cudaFree(workspace_ptr);
    workspace_ptr = NULL;
    workspace_floats = 0;
    int rc2 = gemm_release();
    return rc ? rc : rc2;
}
