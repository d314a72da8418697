/* k_runtime.cu - the CUDA runtime side of the backend: device probing, the per-ctx stream
 * and cuBLAS handle, allocation, copies, generic strided kernels (copy, accumulate, fill,
 * scale, clamp, checks) and the row-major GEMM wrapper over cuBLAS. */
#include "cuda/k_common.cuh"

#ifndef BG_CUDA_EMU
#include <dlfcn.h>

#include <mutex>
#endif

/* ---- cuBLAS, opened at the first CUDA ctx ------------------------------------------------ */

/* The backend reaches cuBLAS through these pointers. The real library is opened with dlopen
 * when the first CUDA ctx is created, not linked: mapping libcublas pulls in libcublasLt,
 * ~150 MiB of resident memory at program start, which a CUDA-enabled build used on the CPU
 * should not pay. The emulator's functions are taken directly. */
static struct {
    decltype(&cublasCreate) create;
    decltype(&cublasDestroy) destroy;
    decltype(&cublasSetStream) set_stream;
    decltype(&cublasSetMathMode) set_math_mode;
    decltype(&cublasSgemm) sgemm;
    decltype(&cublasSgemmStridedBatched) sgemm_batched;
    decltype(&cublasGetStatusString) status_string;
} cb;

#ifdef BG_CUDA_EMU
static int cublas_load(char *msg, size_t n)
{
    (void)msg, (void)n;
    cb.create = cublasCreate;
    cb.destroy = cublasDestroy;
    cb.set_stream = cublasSetStream;
    cb.set_math_mode = cublasSetMathMode;
    cb.sgemm = cublasSgemm;
    cb.sgemm_batched = cublasSgemmStridedBatched;
    cb.status_string = cublasGetStatusString;
    return 0;
}
#else
#define BG_STR_(x) #x
#define BG_STR(x) BG_STR_(x)
#ifndef BG_CUDA_LIBDIR
#define BG_CUDA_LIBDIR "/usr/local/cuda/lib64"
#endif

static void cublas_open(int *rc, char *err, size_t n)
{
    static const char *const names[] = { "libcublas.so." BG_STR(CUBLAS_VER_MAJOR),
                                         BG_CUDA_LIBDIR "/libcublas.so." BG_STR(CUBLAS_VER_MAJOR),
                                         "libcublas.so" };
    void *h = NULL;
    for (size_t i = 0; !h && i < sizeof names / sizeof names[0]; i++) h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(err, n, "cuda: cannot load cuBLAS (%s): %s", names[0], dlerror());
        *rc = -1;
        return;
    }
    struct { void **slot; const char *name; } syms[] = {
        { (void **)&cb.create, "cublasCreate_v2" },
        { (void **)&cb.destroy, "cublasDestroy_v2" },
        { (void **)&cb.set_stream, "cublasSetStream_v2" },
        { (void **)&cb.set_math_mode, "cublasSetMathMode" },
        { (void **)&cb.sgemm, "cublasSgemm_v2" },
        { (void **)&cb.sgemm_batched, "cublasSgemmStridedBatched" },
        { (void **)&cb.status_string, "cublasGetStatusString" },
    };
    for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++)
        if (!(*syms[i].slot = dlsym(h, syms[i].name))) {
            snprintf(err, n, "cuda: %s has no %s", names[0], syms[i].name);
            *rc = -1;
            return;
        }
    *rc = 0;
}

/* Opens cuBLAS once per process (thread-safe); 0, or -1 with the reason in msg. */
static int cublas_load(char *msg, size_t n)
{
    static std::once_flag once;
    static int rc = -1;
    static char err[512];
    std::call_once(once, [] { cublas_open(&rc, err, sizeof err); });
    if (rc) snprintf(msg, n, "%s", err);
    return rc;
}
#endif

/* For tests and bg_device_info: whether cuBLAS could be opened (without a GPU too). */
extern "C" int bg__cu_blas_available(char *msg, size_t n) { return cublas_load(msg, n) == 0; }

/* ---- probing, state ---------------------------------------------------------------------- */

extern "C" int bg__cu_probe(char *msg, size_t n)
{
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count < 1) {
        snprintf(msg, n, "cuda: no usable GPU (%s)",
                 e != cudaSuccess ? cudaGetErrorString(e) : "no device found");
        cudaGetLastError(); /* clear the sticky runtime error */
        return 0;
    }
    cudaDeviceProp prop;
    int dev = 0, rt = 0, drv = 0;
    cudaGetDevice(&dev);
    if (cudaGetDeviceProperties(&prop, dev) != cudaSuccess) {
        snprintf(msg, n, "cuda: device %d: cannot read its properties", dev);
        return 0;
    }
    cudaRuntimeGetVersion(&rt);
    cudaDriverGetVersion(&drv);
    snprintf(msg, n, "cuda: %s (sm_%d%d, %.1f GiB, %d SMs), runtime %d.%d, driver %d.%d", prop.name,
             prop.major, prop.minor, (double)prop.totalGlobalMem / (1 << 30),
             prop.multiProcessorCount, rt / 1000, rt % 1000 / 10, drv / 1000, drv % 1000 / 10);
    return count;
}

extern "C" int bg__cu_state_init(bg_ctx *ctx, bg_cuda_state *s)
{
    cudaStream_t stream;
    cudaError_t e = cudaStreamCreate(&stream);
    if (e != cudaSuccess)
        return bg__error(ctx, BG_ENODEV, "cuda: cannot create a stream: %s", cudaGetErrorString(e));
    s->stream = stream;
    char why[512];
    if (cublas_load(why, sizeof why)) return bg__error(ctx, BG_ENODEV, "%s", why);
    cublasHandle_t h;
    cublasStatus_t b = cb.create(&h);
    if (b != CUBLAS_STATUS_SUCCESS)
        return bg__error(ctx, BG_ENODEV, "cuda: cublasCreate: %s", cb.status_string(b));
    s->blas = h;
    /* Plain FP32 GEMMs (no TF32): BitLinear's integer products must stay exact. */
    cb.set_stream(h, stream);
    cb.set_math_mode(h, CUBLAS_DEFAULT_MATH);
    return BG_OK;
}

extern "C" void bg__cu_state_free(bg_cuda_state *s)
{
    if (s->stream) cudaStreamSynchronize((cudaStream_t)s->stream);
    if (s->blas) cb.destroy((cublasHandle_t)s->blas);
    if (s->stream) cudaStreamDestroy((cudaStream_t)s->stream);
    s->blas = NULL;
    s->stream = NULL;
}

/* ---- memory and copies -------------------------------------------------------------------- */

extern "C" void *bg__cu_malloc(bg_ctx *ctx, size_t n)
{
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, n ? n : 1);
    if (e != cudaSuccess) {
        cudaGetLastError();
        if (ctx)
            bg__error(ctx, BG_ENOMEM, "cuda: out of device memory allocating %zu bytes (%s)", n,
                      cudaGetErrorString(e));
        return NULL;
    }
    if (ctx) ctx->heap_allocs++;
    return p;
}

extern "C" void bg__cu_free(void *p)
{
    if (p) cudaFree(p);
}

extern "C" int bg__cu_sync(bg_ctx *ctx)
{
    cudaError_t e = cudaStreamSynchronize(bg_cu_stream(ctx));
    if (e != cudaSuccess)
        return bg__error(ctx, BG_ENODEV, "cuda: a kernel failed: %s", cudaGetErrorString(e));
    return BG_OK;
}

extern "C" int bg__cu_copy(bg_ctx *ctx, void *dst, const void *src, size_t n, int kind)
{
    if (n == 0) return BG_OK;
    cudaMemcpyKind k = kind == BG_CU_H2D   ? cudaMemcpyHostToDevice
                       : kind == BG_CU_D2H ? cudaMemcpyDeviceToHost
                                           : cudaMemcpyDeviceToDevice;
    cudaError_t e = cudaMemcpyAsync(dst, src, n, k, bg_cu_stream(ctx));
    if (e != cudaSuccess)
        return bg__error(ctx, BG_ENODEV, "cuda: copy of %zu bytes: %s", n, cudaGetErrorString(e));
    return kind == BG_CU_D2D ? BG_OK : bg__cu_sync(ctx);
}

extern "C" void bg__cu_memset(bg_ctx *ctx, void *dst, int byte, size_t n)
{
    if (n == 0) return;
    cudaError_t e = cudaMemsetAsync(dst, byte, n, bg_cu_stream(ctx));
    if (e != cudaSuccess) bg__error(ctx, BG_ENODEV, "cuda: memset: %s", cudaGetErrorString(e));
}

/* ---- generic kernels ------------------------------------------------------------------------ */

__global__ void k_fill(float *dst, int64_t n, float v) { BG_CU_FOR(i, n) dst[i] = v; }

extern "C" void bg__cu_fill(bg_ctx *ctx, float *dst, int64_t n, float v)
{
    if (n <= 0) return;
    BG_LAUNCH(bg_cu_grid(n), bg_cu_stream(ctx), k_fill)(dst, n, v);
    bg_cu_check(ctx, "fill");
}

/* dc / sc: that side is contiguous, so its offset is i (no 64-bit divisions). */
template <typename T>
__global__ void k_copy_strided(T *dst, bg_cu_layout dl, bool dc, const T *src, bg_cu_layout sl,
                               bool sc, int64_t n)
{
    BG_CU_FOR(i, n) dst[dc ? i : bg_cu_offset(dl, i)] = src[sc ? i : bg_cu_offset(sl, i)];
}

template <typename T>
static void launch_copy(bg_ctx *ctx, void *dst, bg_cu_layout dl, const void *src, bg_cu_layout sl,
                        int64_t n)
{
    bool dc = bg_cu_is_contig(dl), sc = bg_cu_is_contig(sl);
    BG_LAUNCH(bg_cu_grid(n), bg_cu_stream(ctx), k_copy_strided<T>)
    ((T *)dst, dl, dc, (const T *)src, sl, sc, n);
}

extern "C" void bg__cu_copy_strided(bg_ctx *ctx, void *dst, bg_cu_layout dl, const void *src,
                                    bg_cu_layout sl, int elem_size)
{
    int64_t n = bg__cu_numel(&dl);
    if (n <= 0) return;
    if (elem_size == 4) launch_copy<uint32_t>(ctx, dst, dl, src, sl, n);
    else if (elem_size == 2)
        launch_copy<uint16_t>(ctx, dst, dl, src, sl, n);
    else
        launch_copy<uint8_t>(ctx, dst, dl, src, sl, n);
    bg_cu_check(ctx, "strided copy");
}

__global__ void k_add_strided(float *dst, bg_cu_layout dl, bool dc, const float *src,
                              bg_cu_layout sl, bool sc, int64_t n, float alpha)
{
    BG_CU_FOR(i, n) dst[dc ? i : bg_cu_offset(dl, i)] += alpha * src[sc ? i : bg_cu_offset(sl, i)];
}

extern "C" void bg__cu_add_strided(bg_ctx *ctx, float *dst, bg_cu_layout dl, const float *src,
                                   bg_cu_layout sl, float alpha)
{
    int64_t n = bg__cu_numel(&dl);
    if (n <= 0) return;
    BG_LAUNCH(bg_cu_grid(n), bg_cu_stream(ctx), k_add_strided)
    (dst, dl, bg_cu_is_contig(dl), src, sl, bg_cu_is_contig(sl), n, alpha);
    bg_cu_check(ctx, "strided add");
}

__global__ void k_add_scalar(float *dst, float v)
{
    if (blockIdx.x == 0 && threadIdx.x == 0) dst[0] += v;
}

extern "C" void bg__cu_add_scalar(bg_ctx *ctx, float *dst, float v)
{
    BG_LAUNCH(1, bg_cu_stream(ctx), k_add_scalar)(dst, v);
    bg_cu_check(ctx, "add");
}

__global__ void k_axpy(float *dst, const float *src, int64_t n, float alpha)
{
    BG_CU_FOR(i, n) dst[i] += alpha * src[i];
}

extern "C" void bg__cu_axpy(bg_ctx *ctx, float *dst, const float *src, int64_t n, float alpha)
{
    if (n <= 0) return;
    BG_LAUNCH(bg_cu_grid(n), bg_cu_stream(ctx), k_axpy)(dst, src, n, alpha);
    bg_cu_check(ctx, "axpy");
}

__global__ void k_scale(float *x, int64_t n, float s) { BG_CU_FOR(i, n) x[i] *= s; }

extern "C" void bg__cu_scale(bg_ctx *ctx, float *x, int64_t n, float s)
{
    if (n <= 0) return;
    BG_LAUNCH(bg_cu_grid(n), bg_cu_stream(ctx), k_scale)(x, n, s);
    bg_cu_check(ctx, "scale");
}

__global__ void k_clamp(float *x, int64_t n, float lo, float hi)
{
    BG_CU_FOR(i, n) x[i] = fminf(fmaxf(x[i], lo), hi);
}

extern "C" void bg__cu_clamp(bg_ctx *ctx, float *x, int64_t n, float lo, float hi)
{
    if (n <= 0) return;
    BG_LAUNCH(bg_cu_grid(n), bg_cu_stream(ctx), k_clamp)(x, n, lo, hi);
    bg_cu_check(ctx, "clamp");
}

__global__ void k_nonfinite(const float *x, int64_t n, int *flag)
{
    BG_CU_FOR(i, n)
    if (!isfinite(x[i])) atomicExch(flag, 1);
}

extern "C" void bg__cu_nonfinite(bg_ctx *ctx, const float *x, int64_t n, int *flag)
{
    if (n <= 0) return;
    BG_LAUNCH(bg_cu_grid(n), bg_cu_stream(ctx), k_nonfinite)(x, n, flag);
    bg_cu_check(ctx, "finite check");
}

/* One block: successive launches on the stream add into acc in order. */
__global__ void k_sumsq(const float *x, int64_t n, double *acc)
{
    __shared__ double sh[BG_CU_THREADS];
    double s = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += BG_CU_THREADS) s += (double)x[i] * x[i];
    s = bg_cu_block_sum(s, sh);
    if (threadIdx.x == 0) acc[0] += s;
}

extern "C" void bg__cu_sumsq(bg_ctx *ctx, const float *x, int64_t n, double *acc)
{
    if (n <= 0) return;
    BG_LAUNCH(1, bg_cu_stream(ctx), k_sumsq)(x, n, acc);
    bg_cu_check(ctx, "sum of squares");
}

/* ---- GEMM ---------------------------------------------------------------------------------- */

/* Row-major C = A B is column-major C^T = B^T A^T: cuBLAS gets B first, with the row-major
 * buffers read as their own transposes. */
extern "C" void bg__cu_gemm(bg_ctx *ctx, bool ta, bool tb, int64_t M, int64_t N, int64_t K,
                            float alpha, const float *A, int64_t lda, int64_t sA, const float *B,
                            int64_t ldb, int64_t sB, float beta, float *C, int64_t ldc, int64_t sC,
                            int64_t batch)
{
    if (M <= 0 || N <= 0 || batch <= 0) return;
    if (M > INT32_MAX || N > INT32_MAX || K > INT32_MAX || lda > INT32_MAX || ldb > INT32_MAX ||
        ldc > INT32_MAX || batch > INT32_MAX) {
        bg__error(ctx, BG_EUNSUPPORTED, "cuda: matmul dimensions exceed cuBLAS's int range");
        return;
    }
    cublasHandle_t h = (cublasHandle_t)bg__cu_state(ctx)->blas;
    cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasStatus_t st;
    if (batch == 1)
        st = cb.sgemm(h, opb, opa, (int)N, (int)M, (int)K, &alpha, B, (int)ldb, A, (int)lda,
                      &beta, C, (int)ldc);
    else
        st = cb.sgemm_batched(h, opb, opa, (int)N, (int)M, (int)K, &alpha, B, (int)ldb,
                              (long long)sB, A, (int)lda, (long long)sA, &beta, C, (int)ldc,
                              (long long)sC, (int)batch);
    ctx->matmul_calls++;
    ctx->matmul_flops += (uint64_t)(2 * M * N * K * batch);
    if (st != CUBLAS_STATUS_SUCCESS)
        bg__error(ctx, BG_ENODEV, "cuda: cublasSgemm (%lld x %lld x %lld, batch %lld): %s",
                  (long long)M, (long long)N, (long long)K, (long long)batch,
                  cb.status_string(st));
}
