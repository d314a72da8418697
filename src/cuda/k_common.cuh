/* k_common.cuh - what every kernel file shares: the CUDA runtime and cuBLAS headers (or
 * the CPU emulator's, with -DBG_CUDA_EMU), the C headers of the library with C linkage,
 * launch helpers, strided indexing and block reductions.
 *
 * Kernels use one fixed block size (BG_CU_THREADS, a power of two), shared-memory tree
 * reductions with __syncthreads and no warp intrinsics, and grid-stride loops, so that the
 * emulator (src/cuda/emu) can run them unchanged. */
#ifndef BG_K_COMMON_CUH
#define BG_K_COMMON_CUH

/* System headers first: included later inside extern "C" they would break C++. */
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef BG_CUDA_EMU
#include "cuda/emu/cuda_emu.h"
#else
#include <cublas_v2.h>
#include <cuda_runtime.h>
#endif

extern "C" {
#include "cuda/cuda_impl.h"
}
#include "quant/bitnet_math.h"

/* kernel<<<grid, block, 0, stream>>>(...) that the emulator can also express; the kernel
 * comes last so that template arguments may contain commas. */
#ifdef BG_CUDA_EMU
#define BG_LAUNCH(grid, stream, ...)                                                               \
    ((void)(stream), bg_emu::launch(__VA_ARGS__, dim3(grid), dim3(BG_CU_THREADS)))
#else
#define BG_LAUNCH(grid, stream, ...) __VA_ARGS__<<<(grid), BG_CU_THREADS, 0, (stream)>>>
#endif

static inline cudaStream_t bg_cu_stream(const bg_ctx *ctx)
{
    return (cudaStream_t)bg__cu_state(ctx)->stream;
}

/* Blocks for a grid-stride loop over n elements. */
static inline unsigned bg_cu_grid(int64_t n)
{
#ifdef BG_CUDA_EMU
    const int64_t max_blocks = 4; /* the emulator runs blocks one after another */
#else
    const int64_t max_blocks = 65535;
#endif
    int64_t b = (n + BG_CU_THREADS - 1) / BG_CU_THREADS;
    return (unsigned)(b < 1 ? 1 : (b > max_blocks ? max_blocks : b));
}

/* Blocks for one block per row (rows > 0; the kernels loop when rows exceed the grid). */
static inline unsigned bg_cu_rows_grid(int64_t rows)
{
    return (unsigned)(rows < 1 ? 1 : (rows > 65535 ? 65535 : rows));
}

/* Records a launch failure on the ctx (sticky, first error wins). */
static inline void bg_cu_check(bg_ctx *ctx, const char *what)
{
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) bg__error(ctx, BG_ENODEV, "cuda: %s: %s", what, cudaGetErrorString(e));
}

#define BG_CU_FOR(i, n)                                                                            \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                      \
         i += (int64_t)blockDim.x * gridDim.x)

/* Block-per-row loop: the block handles rows blockIdx.x, blockIdx.x + gridDim.x, ... */
#define BG_CU_FOR_ROWS(r, rows) for (int64_t r = blockIdx.x; r < (rows); r += gridDim.x)

/* True when element i of l sits at offset i (host side: picks the kernels' fast paths,
 * which skip the 64-bit divisions of bg_cu_offset). */
static inline bool bg_cu_is_contig(const bg_cu_layout &l)
{
    int64_t s = 1;
    for (int d = 3; d >= 0; d--) {
        if (l.shape[d] != 1 && l.stride[d] != s) return false;
        s *= l.shape[d];
    }
    return true;
}

/* Offset of logical (row-major) element i of a padded layout. */
__device__ static inline int64_t bg_cu_offset(const bg_cu_layout &l, int64_t i)
{
    int64_t off = 0;
    for (int d = 3; d >= 0; d--) {
        off += (i % l.shape[d]) * l.stride[d];
        i /= l.shape[d];
    }
    return off;
}

/* Sum of v over the block (every thread gets it); sh holds BG_CU_THREADS doubles. */
__device__ static inline double bg_cu_block_sum(double v, double *sh)
{
    unsigned t = threadIdx.x;
    sh[t] = v;
    __syncthreads();
    for (unsigned s = BG_CU_THREADS / 2; s > 0; s >>= 1) {
        if (t < s) sh[t] += sh[t + s];
        __syncthreads();
    }
    double r = sh[0];
    __syncthreads();
    return r;
}

/* max with NaN propagation, as the CPU's bg_max. */
__device__ static inline float bg_cu_nanmax(float a, float b)
{
    return isnan(a) ? a : (isnan(b) ? b : (b > a ? b : a));
}

/* nan_wins: NaN propagates (bg_max); otherwise fmaxf semantics (softmax row maxima). */
__device__ static inline float bg_cu_block_max(float v, float *sh, bool nan_wins)
{
    unsigned t = threadIdx.x;
    sh[t] = v;
    __syncthreads();
    for (unsigned s = BG_CU_THREADS / 2; s > 0; s >>= 1) {
        if (t < s) sh[t] = nan_wins ? bg_cu_nanmax(sh[t], sh[t + s]) : fmaxf(sh[t], sh[t + s]);
        __syncthreads();
    }
    float r = sh[0];
    __syncthreads();
    return r;
}

#endif
