/* cuda_emu.cc - the CPU emulator's runtime: guarded device allocations, fibers for the
 * threads of a block, copies, and cuBLAS GEMMs through cblas_sgemm. See cuda_emu.h. */
#include "cuda/emu/cuda_emu.h"

#include <cblas.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <vector>

namespace bg_emu
{

thread_local uint3 cur_thread, cur_block;
thread_local dim3 cur_bdim, cur_gdim;

[[noreturn]] static void die(const char *fmt, const void *p, size_t n)
{
    std::fprintf(stderr, "bitgrad cuda emulator: ");
    std::fprintf(stderr, fmt, p, n);
    std::fprintf(stderr, "\n");
    std::fflush(stderr);
    std::abort();
}

/* ---- device memory: one guarded mapping per allocation ------------------------------- */

struct alloc {
    unsigned char *map; /* the mapping, a guard page at its end */
    size_t map_len;     /* usable pages (without the guard) */
    size_t size;        /* bytes asked for */
};
static std::map<uintptr_t, alloc> g_allocs; /* user pointer -> allocation */
static int g_open_depth;
static cudaError_t g_last_error = cudaSuccess;

static size_t page_size(void)
{
    static size_t ps = (size_t)sysconf(_SC_PAGESIZE);
    return ps;
}

/* The allocation holding [p, p + n), or NULL. */
static const alloc *find(const void *p, size_t n)
{
    uintptr_t a = (uintptr_t)p;
    auto it = g_allocs.upper_bound(a);
    if (it == g_allocs.begin()) return nullptr;
    --it;
    if (a < it->first || a + n > it->first + it->second.size) return nullptr;
    return &it->second;
}

static void protect_all(int prot)
{
    for (auto &kv : g_allocs) mprotect(kv.second.map, kv.second.map_len, prot);
}

/* Device memory is readable while a device operation runs (nesting allowed). */
struct device_open {
    device_open()
    {
        if (g_open_depth++ == 0) protect_all(PROT_READ | PROT_WRITE);
    }
    ~device_open()
    {
        if (--g_open_depth == 0) protect_all(PROT_NONE);
    }
};

void check_kernel_arg(const void *p)
{
    if (p && !find(p, 1)) die("kernel argument %p is not device memory (%zu)", p, 0);
}

/* ---- fibers ---------------------------------------------------------------------------- */

enum { READY, AT_BARRIER, DONE };
static const size_t STACK_BYTES = 128 * 1024;
struct fiber {
    ucontext_t uc;
    int state;
};
static std::vector<fiber> g_fibers;
static unsigned char *g_stacks;
static ucontext_t g_sched;
static unsigned g_cur;
static void (*g_fn)(void *);
static void *g_arg;

static void fiber_main(void)
{
    g_fn(g_arg);
    g_fibers[g_cur].state = DONE; /* returns to uc_link, the scheduler */
}

void syncthreads()
{
    g_fibers[g_cur].state = AT_BARRIER;
    swapcontext(&g_fibers[g_cur].uc, &g_sched);
}

static void ensure_stacks(void)
{
    if (g_stacks) return;
    size_t slot = STACK_BYTES + page_size();
    g_stacks = (unsigned char *)mmap(nullptr, slot * 1024, PROT_READ | PROT_WRITE,
                                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (g_stacks == MAP_FAILED) die("cannot map fiber stacks (%p %zu)", nullptr, 0);
    for (int i = 0; i < 1024; i++) mprotect(g_stacks + i * slot, page_size(), PROT_NONE);
    g_fibers.resize(1024);
}

static void run_block(unsigned n)
{
    size_t slot = STACK_BYTES + page_size();
    for (unsigned t = 0; t < n; t++) {
        fiber &f = g_fibers[t];
        getcontext(&f.uc);
        f.uc.uc_stack.ss_sp = g_stacks + t * slot + page_size();
        f.uc.uc_stack.ss_size = STACK_BYTES;
        f.uc.uc_link = &g_sched;
        makecontext(&f.uc, fiber_main, 0);
        f.state = READY;
    }
    for (;;) {
        for (unsigned t = 0; t < n; t++) {
            if (g_fibers[t].state != READY) continue;
            g_cur = t;
            cur_thread = uint3{ t % cur_bdim.x, (t / cur_bdim.x) % cur_bdim.y,
                                t / (cur_bdim.x * cur_bdim.y) };
            swapcontext(&g_sched, &g_fibers[t].uc);
        }
        unsigned done = 0;
        for (unsigned t = 0; t < n; t++) done += g_fibers[t].state == DONE;
        if (done == n) break;
        for (unsigned t = 0; t < n; t++)
            if (g_fibers[t].state == AT_BARRIER) g_fibers[t].state = READY;
    }
}

void run(dim3 grid, dim3 block, void (*fn)(void *), void *arg)
{
    unsigned n = block.x * block.y * block.z;
    if (n == 0 || n > 1024 || grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 ||
        grid.z > 65535) {
        g_last_error = cudaErrorInvalidConfiguration;
        return;
    }
    ensure_stacks();
    device_open open;
    g_fn = fn;
    g_arg = arg;
    cur_bdim = block;
    cur_gdim = grid;
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                cur_block = uint3{ x, y, z };
                run_block(n);
            }
}

} // namespace bg_emu

using namespace bg_emu;

/* ---- runtime API ------------------------------------------------------------------------ */

static int emu_devices(void)
{
    const char *e = getenv("BG_CUDA_EMU_DEVICES"); /* "0" pretends there is no GPU */
    return e ? atoi(e) : 1;
}

cudaError_t cudaGetDeviceCount(int *n)
{
    *n = emu_devices();
    return *n > 0 ? cudaSuccess : cudaErrorNoDevice;
}

cudaError_t cudaSetDevice(int dev) { return dev == 0 ? cudaSuccess : cudaErrorInvalidValue; }
cudaError_t cudaGetDevice(int *dev)
{
    *dev = 0;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int dev)
{
    if (dev != 0) return cudaErrorInvalidValue;
    std::memset(prop, 0, sizeof *prop);
    std::snprintf(prop->name, sizeof prop->name, "bitgrad CPU emulator");
    prop->totalGlobalMem = (size_t)1 << 34;
    prop->major = 9;
    prop->minor = 0;
    prop->multiProcessorCount = 1;
    return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int *v)
{
    *v = 13000;
    return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int *v)
{
    *v = 13000;
    return cudaSuccess;
}

cudaError_t cudaMalloc(void **p, size_t n)
{
    size_t ps = page_size(), pages = (n + ps - 1) / ps * ps;
    if (pages == 0) pages = ps;
    unsigned char *m = (unsigned char *)mmap(nullptr, pages + ps, PROT_NONE,
                                             MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) {
        *p = nullptr;
        return cudaErrorMemoryAllocation;
    }
    /* The end of the allocation meets the guard page (start kept 256-byte aligned). */
    size_t rounded = (n + 255) / 256 * 256;
    unsigned char *user = m + pages - rounded;
    g_allocs[(uintptr_t)user] = alloc{ m, pages, n };
    mprotect(m, pages, PROT_READ | PROT_WRITE);
    std::memset(m, 0xff, pages); /* uninitialised device memory reads as NaN */
    if (g_open_depth == 0) mprotect(m, pages, PROT_NONE);
    *p = user;
    return cudaSuccess;
}

cudaError_t cudaFree(void *p)
{
    if (!p) return cudaSuccess;
    auto it = g_allocs.find((uintptr_t)p);
    if (it == g_allocs.end()) die("cudaFree(%p): not an allocation (%zu)", p, 0);
    munmap(it->second.map, it->second.map_len + page_size());
    g_allocs.erase(it);
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind kind, cudaStream_t)
{
    if (n == 0) return cudaSuccess;
    bool dst_dev = find(dst, n) != nullptr, src_dev = find(src, n) != nullptr;
    bool ok = (kind == cudaMemcpyHostToDevice && dst_dev && !src_dev && !find(src, 1)) ||
              (kind == cudaMemcpyDeviceToHost && !dst_dev && src_dev && !find(dst, 1)) ||
              (kind == cudaMemcpyDeviceToDevice && dst_dev && src_dev);
    if (!ok)
        die("cudaMemcpy: pointers do not match the direction or overrun (dst %p, %zu bytes)", dst,
            n);
    device_open open;
    std::memmove(dst, src, n);
    return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *dst, int value, size_t n, cudaStream_t)
{
    if (n == 0) return cudaSuccess;
    if (!find(dst, n)) die("cudaMemset(%p, %zu bytes): not inside one allocation", dst, n);
    device_open open;
    std::memset(dst, value, n);
    return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t *s)
{
    static int dummy;
    *s = (cudaStream_t)&dummy;
    return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }

cudaError_t cudaGetLastError(void)
{
    cudaError_t e = g_last_error;
    g_last_error = cudaSuccess;
    return e;
}

const char *cudaGetErrorString(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected (emulator)";
    }
    return "unknown error";
}

/* ---- cuBLAS ------------------------------------------------------------------------------ */

cublasStatus_t cublasCreate(cublasHandle_t *h)
{
    static int dummy;
    *h = (cublasHandle_t)&dummy;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy(cublasHandle_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetStream(cublasHandle_t, cudaStream_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetMathMode(cublasHandle_t, cublasMath_t) { return CUBLAS_STATUS_SUCCESS; }

const char *cublasGetStatusString(cublasStatus_t s)
{
    return s == CUBLAS_STATUS_SUCCESS ? "CUBLAS_STATUS_SUCCESS" : "CUBLAS_STATUS_INVALID_VALUE";
}

/* Elements a column-major rows x cols operand with leading dimension ld spans. */
static size_t span(int rows, int cols, int ld)
{
    return rows == 0 || cols == 0 ? 0 : (size_t)(cols - 1) * (size_t)ld + (size_t)rows;
}

static void check_operand(const float *p, long long stride, int batch, int rows, int cols, int ld)
{
    size_t n = span(rows, cols, ld);
    if (n == 0) return;
    for (int i = 0; i < batch; i++)
        if (!find(p + (long long)i * stride, n * sizeof(float)))
            die("cublasSgemm: operand %p (+ batch stride) overruns its allocation (%zu floats)",
                p + (long long)i * stride, n);
}

cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb,
                                         int m, int n, int k, const float *alpha, const float *A,
                                         int lda, long long sA, const float *B, int ldb,
                                         long long sB, const float *beta, float *C, int ldc,
                                         long long sC, int batch)
{
    int a_rows = ta == CUBLAS_OP_N ? m : k, a_cols = ta == CUBLAS_OP_N ? k : m;
    int b_rows = tb == CUBLAS_OP_N ? k : n, b_cols = tb == CUBLAS_OP_N ? n : k;
    if (m < 0 || n < 0 || k < 0 || batch < 0 || lda < (a_rows > 1 ? a_rows : 1) ||
        ldb < (b_rows > 1 ? b_rows : 1) || ldc < (m > 1 ? m : 1))
        return CUBLAS_STATUS_INVALID_VALUE;
    if (m == 0 || n == 0 || batch == 0) return CUBLAS_STATUS_SUCCESS;
    if (k > 0) {
        check_operand(A, sA, batch, a_rows, a_cols, lda);
        check_operand(B, sB, batch, b_rows, b_cols, ldb);
    }
    check_operand(C, sC, batch, m, n, ldc);
    device_open open;
    for (int i = 0; i < batch; i++) {
        float *c = C + (long long)i * sC;
        if (k == 0) { /* C = beta C */
            for (int j = 0; j < n; j++)
                for (int r = 0; r < m; r++)
                    c[(size_t)j * ldc + r] = *beta == 0.0f ? 0.0f : *beta * c[(size_t)j * ldc + r];
            continue;
        }
        cblas_sgemm(CblasColMajor, ta == CUBLAS_OP_N ? CblasNoTrans : CblasTrans,
                    tb == CUBLAS_OP_N ? CblasNoTrans : CblasTrans, m, n, k, *alpha,
                    A + (long long)i * sA, lda, B + (long long)i * sB, ldb, *beta, c, ldc);
    }
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                           int n, int k, const float *alpha, const float *A, int lda,
                           const float *B, int ldb, const float *beta, float *C, int ldc)
{
    return cublasSgemmStridedBatched(h, ta, tb, m, n, k, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc,
                                     0, 1);
}
