/* cuda_emu.h - a CPU emulator of the subset of the CUDA runtime, the kernel language and
 * cuBLAS that src/cuda uses, so that the backend's kernels run and are tested on machines
 * without a GPU (meson setup -Demulate_cuda=true; CI has no GPU). Slow; for tests only.
 *
 * What it models, and the bugs it therefore catches:
 *  - each block's threads are fibers (ucontext) on one OS thread: they run until
 *    __syncthreads or their end, round robin, so shared-memory code that reads before the
 *    barrier it needs computes wrong values;
 *  - device memory is its own mmap region per cudaMalloc, filled with 0xff bytes (NaN as
 *    floats), inaccessible (PROT_NONE) except while a kernel, a copy or a GEMM runs: host
 *    code that dereferences a device pointer faults, as on a GPU; the end of each allocation
 *    touches a guard page and cudaFree unmaps, so overruns and use-after-free fault too;
 *  - kernel pointer arguments, copy directions and GEMM operand extents are checked against
 *    the allocations (a host pointer handed to a kernel aborts with a message);
 *  - cuBLAS argument checks (leading dimensions) as the real library does them.
 * What it does not model: concurrency between blocks or streams, warp behaviour, and the
 * GPU's floating-point differences (its expf is the host's). */
#ifndef BG_CUDA_EMU_H
#define BG_CUDA_EMU_H

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <tuple>
#include <utility>

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct uint3 {
    unsigned x, y, z;
};

/* ---- runtime API ---- */
typedef int cudaError_t;
enum {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorNoDevice = 100,
};
enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
};
typedef struct bg_emu_stream *cudaStream_t;
struct cudaDeviceProp {
    char name[256];
    size_t totalGlobalMem;
    int major, minor, multiProcessorCount;
};

cudaError_t cudaGetDeviceCount(int *n);
cudaError_t cudaSetDevice(int dev);
cudaError_t cudaGetDevice(int *dev);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int dev);
cudaError_t cudaRuntimeGetVersion(int *v);
cudaError_t cudaDriverGetVersion(int *v);
cudaError_t cudaMalloc(void **p, size_t n);
cudaError_t cudaFree(void *p);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind kind,
                            cudaStream_t s);
cudaError_t cudaMemsetAsync(void *dst, int value, size_t n, cudaStream_t s);
cudaError_t cudaStreamCreate(cudaStream_t *s);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaGetLastError(void);
const char *cudaGetErrorString(cudaError_t e);

/* ---- cuBLAS ---- */
typedef struct bg_emu_blas *cublasHandle_t;
typedef int cublasStatus_t;
enum { CUBLAS_STATUS_SUCCESS = 0, CUBLAS_STATUS_INVALID_VALUE = 7 };
typedef enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 } cublasOperation_t;
typedef enum { CUBLAS_DEFAULT_MATH = 0, CUBLAS_PEDANTIC_MATH = 2 } cublasMath_t;

cublasStatus_t cublasCreate(cublasHandle_t *h);
cublasStatus_t cublasDestroy(cublasHandle_t h);
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s);
cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t m);
const char *cublasGetStatusString(cublasStatus_t s);
cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t h, cublasOperation_t ta,
                                         cublasOperation_t tb, int m, int n, int k,
                                         const float *alpha, const float *A, int lda, long long sA,
                                         const float *B, int ldb, long long sB, const float *beta,
                                         float *C, int ldc, long long sC, int batch);
cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                           int n, int k, const float *alpha, const float *A, int lda,
                           const float *B, int ldb, const float *beta, float *C, int ldc);

/* ---- the kernel language ---- */
#define __global__
#define __device__
#define __host__
#define __shared__ static thread_local
#define __forceinline__ inline
#define threadIdx (bg_emu::cur_thread)
#define blockIdx (bg_emu::cur_block)
#define blockDim (bg_emu::cur_bdim)
#define gridDim (bg_emu::cur_gdim)
#define __syncthreads() bg_emu::syncthreads()

namespace bg_emu
{
extern thread_local uint3 cur_thread, cur_block;
extern thread_local dim3 cur_bdim, cur_gdim;
void syncthreads();
/* Runs fn(arg) as every thread of every block of the grid. */
void run(dim3 grid, dim3 block, void (*fn)(void *), void *arg);
void check_kernel_arg(const void *p);

template <class T> inline void check_arg(T *p) { check_kernel_arg((const void *)p); }
template <class T> inline void check_arg(const T &) {}

template <class... P> struct launcher {
    void (*kernel)(P...);
    dim3 grid, block;
    template <class... A> void operator()(A &&...a) const
    {
        (check_arg(a), ...);
        std::tuple<P...> args(std::forward<A>(a)...);
        auto body = [&]() { std::apply(kernel, args); };
        run(
            grid, block, [](void *f) { (*static_cast<decltype(body) *>(f))(); }, &body);
    }
};

template <class... P> launcher<P...> launch(void (*kernel)(P...), dim3 grid, dim3 block)
{
    return launcher<P...>{ kernel, grid, block };
}
} // namespace bg_emu

/* One OS thread runs a block's fibers, so these read-modify-writes are atomic. */
inline float atomicAdd(float *p, float v)
{
    float old = *p;
    *p = old + v;
    return old;
}
inline double atomicAdd(double *p, double v)
{
    double old = *p;
    *p = old + v;
    return old;
}
inline unsigned long long atomicAdd(unsigned long long *p, unsigned long long v)
{
    unsigned long long old = *p;
    *p = old + v;
    return old;
}
inline unsigned long long atomicMin(unsigned long long *p, unsigned long long v)
{
    unsigned long long old = *p;
    if (v < old) *p = v;
    return old;
}
inline int atomicExch(int *p, int v)
{
    int old = *p;
    *p = v;
    return old;
}

#endif
