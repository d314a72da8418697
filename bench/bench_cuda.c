/* bench_cuda.c - the CUDA backend's throughput, one JSON line per workload, no assertions.
 *
 *   env        the device (bg_device_info)
 *   sgemm      bg_matmul of persistent [m, k] x [k, n] device tensors (grad off, bg_step_end
 *              every iteration) against cublasSgemm on the same buffers; GFLOP/s of each and
 *              ratio = bitgrad / cuBLAS (1.0 = no overhead). Shapes: the W2 step's GEMMs
 *              (2048 tokens; 256 / 768 features) and squares of 1024 and 4096.
 *   w2_step    one training step of the W2 model (bitnet LM: vocab 256, n_embd 256, 4 layers,
 *              4 heads, n_ff 768, ctx 128; batch 16; AdamW): forward, cross-entropy, backward,
 *              optimizer step, zero_grad, bg_step_end, with the loss read back (bg_item) as a
 *              training loop does. step_ms, tokens/s, and the CPU's step for comparison.
 * Times are medians over the repetitions after warm-up (clock_gettime MONOTONIC, the device
 * synchronised before the clock stops). Exits 77 (Meson's skip) without a GPU.
 * Run: meson test -C build --benchmark -v --suite cuda  or  ./build/bench/bench_cuda */
#include <bitgrad.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WARMUP 3

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* ---- sgemm -------------------------------------------------------------------------------- */

/* Milliseconds per GEMM: `inner` back-to-back calls per timed repetition, then a sync. */
static double time_bg_matmul(bg_ctx *ctx, bg_tensor *a, bg_tensor *b, int reps, int inner)
{
    double t[64];
    for (int r = -WARMUP; r < reps; r++) {
        double t0 = now_ms();
        for (int i = 0; i < inner; i++) {
            bg_matmul(a, b);
            bg_step_end(ctx);
        }
        cudaDeviceSynchronize();
        if (r >= 0) t[r] = (now_ms() - t0) / inner;
    }
    return median(t, reps);
}

static double time_cublas(cublasHandle_t h, const float *a, const float *b, float *c, int m, int n,
                          int k, int reps, int inner)
{
    double t[64];
    const float one = 1.0f, zero = 0.0f;
    for (int r = -WARMUP; r < reps; r++) {
        double t0 = now_ms();
        for (int i = 0; i < inner; i++) /* row-major C = A B as column-major C^T = B^T A^T */
            cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, n, m, k, &one, b, n, a, k, &zero, c, n);
        cudaDeviceSynchronize();
        if (r >= 0) t[r] = (now_ms() - t0) / inner;
    }
    return median(t, reps);
}

static void bench_sgemm(bg_ctx *ctx, int m, int n, int k)
{
    bg_tensor *a = bg_tensor_new(ctx, BG_F32, 2, (int64_t[]){ m, k });
    bg_tensor *b = bg_tensor_new(ctx, BG_F32, 2, (int64_t[]){ k, n });
    float *c = NULL;
    cublasHandle_t h;
    if (!a || !b || cudaMalloc((void **)&c, (size_t)m * n * sizeof(float)) != cudaSuccess ||
        cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) {
        printf("{\"bench\":\"sgemm\",\"error\":\"setup failed: %s\"}\n", bg_ctx_error(ctx));
        return;
    }
    bg_tensor_fill_uniform(a, -1.0f, 1.0f);
    bg_tensor_fill_uniform(b, -1.0f, 1.0f);
    bool prev = bg_grad_enable(ctx, false);
    double flop = 2.0 * m * n * k;
    int inner = flop > 1e11 ? 2 : (flop > 1e9 ? 10 : 50), reps = 15;
    double t_bg = time_bg_matmul(ctx, a, b, reps, inner);
    double t_cu = time_cublas(h, bg_tensor_data(a), bg_tensor_data(b), c, m, n, k, reps, inner);
    double g_bg = flop / t_bg * 1e-6, g_cu = flop / t_cu * 1e-6;
    printf("{\"bench\":\"sgemm\",\"m\":%d,\"n\":%d,\"k\":%d,\"bitgrad_ms\":%.4f,\"cublas_ms\":%.4f,"
           "\"bitgrad_gflops\":%.1f,\"cublas_gflops\":%.1f,\"ratio\":%.3f,\"reps\":%d}\n",
           m, n, k, t_bg, t_cu, g_bg, g_cu, g_bg / g_cu, reps);
    fflush(stdout);
    bg_grad_enable(ctx, prev);
    cublasDestroy(h);
    cudaFree(c);
    bg_tensor_free(&a);
    bg_tensor_free(&b);
}

/* ---- the W2 training step ------------------------------------------------------------------ */

enum { W2_BATCH = 16, W2_CTX = 128 };

/* Random bytes as tokens; inputs are ids[:, :T], targets ids[:, 1:]. */
static void w2_batch(uint64_t *rs, int32_t *in, int32_t *tg)
{
    int32_t row[W2_CTX + 1];
    for (int b = 0; b < W2_BATCH; b++) {
        for (int t = 0; t <= W2_CTX; t++) {
            *rs = *rs * 6364136223846793005ull + 1442695040888963407ull;
            row[t] = (int32_t)((*rs >> 33) % 256);
        }
        memcpy(in + b * W2_CTX, row, W2_CTX * sizeof *in);
        memcpy(tg + b * W2_CTX, row + 1, W2_CTX * sizeof *tg);
    }
}

/* Median milliseconds of one step; *loss gets the last loss. */
static double time_w2(bg_ctx *ctx, int reps, float *loss)
{
    bg_ctx_seed(ctx, 1);
    bg_bitnet_config cfg = bg_bitnet_default(); /* the W2 sizes */
    cfg.n_ctx = W2_CTX;
    bg_module *m = bg_bitnet_new(ctx, &cfg);
    bg_optim_config oc = bg_optim_default(BG_ADAMW);
    bg_optim *o = bg_optim_new(ctx, &oc);
    if (!m || !o || bg_optim_add_module(o, m) < 0) return -1.0;
    static int32_t in[W2_BATCH * W2_CTX], tg[W2_BATCH * W2_CTX];
    uint64_t rs = 42;
    double t[64];
    for (int r = -WARMUP; r < reps; r++) {
        w2_batch(&rs, in, tg);
        double t0 = now_ms();
        bg_tensor *x = bg_from_data(ctx, BG_I32, 2, (int64_t[]){ W2_BATCH, W2_CTX }, in);
        bg_tensor *y = bg_from_data(ctx, BG_I32, 2, (int64_t[]){ W2_BATCH, W2_CTX }, tg);
        bg_tensor *l = bg_cross_entropy(bg_bitnet_forward(m, x), y, -1, 0.0f);
        *loss = bg_item(l);
        if (bg_backward(l) != BG_OK || bg_optim_step(o) != BG_OK) return -1.0;
        bg_optim_zero_grad(o);
        bg_step_end(ctx);
        if (bg_ctx_device(ctx) == BG_CUDA) cudaDeviceSynchronize();
        if (r >= 0) t[r] = now_ms() - t0;
    }
    bg_optim_free(&o);
    bg_module_free(&m);
    return median(t, reps);
}

static void bench_w2(bg_ctx *gpu, bg_ctx *cpu)
{
    float loss_gpu = 0.0f, loss_cpu = 0.0f;
    double ms = time_w2(gpu, 21, &loss_gpu);
    double cpu_ms = cpu ? time_w2(cpu, 3, &loss_cpu) : -1.0;
    if (ms < 0) {
        printf("{\"bench\":\"w2_step\",\"error\":\"%s\"}\n", bg_ctx_error(gpu));
        return;
    }
    printf("{\"bench\":\"w2_step\",\"batch\":%d,\"ctx\":%d,\"n_embd\":256,\"n_layer\":4,"
           "\"n_head\":4,\"n_ff\":768,\"vocab\":256,\"optim\":\"adamw\",\"step_ms\":%.3f,"
           "\"tokens_per_s\":%.0f,\"loss\":%.4f,\"cpu_step_ms\":%.1f,\"cpu_loss\":%.4f,"
           "\"speedup\":%.1f}\n",
           W2_BATCH, W2_CTX, ms, W2_BATCH * W2_CTX / ms * 1e3, (double)loss_gpu, cpu_ms,
           (double)loss_cpu, cpu_ms > 0 ? cpu_ms / ms : 0.0);
    fflush(stdout);
}

int main(void)
{
    bg_ctx *gpu = NULL, *cpu = NULL;
    int rc = bg_ctx_create(&gpu, BG_CUDA);
    if (rc != BG_OK) {
        printf("{\"bench\":\"env\",\"skip\":\"%s\"}\n", bg_device_info(BG_CUDA));
        return 77;
    }
    printf("{\"bench\":\"env\",\"device\":\"%s\"}\n", bg_device_info(BG_CUDA));
    /* m, n, k: the W2 step's forward products (2048 tokens), its weight gradients
     * (k = 2048 tokens), and two squares. */
    static const int shapes[][3] = { { 2048, 768, 256 },  { 2048, 256, 768 }, { 2048, 256, 256 },
                                     { 768, 256, 2048 },  { 256, 256, 2048 }, { 1024, 1024, 1024 },
                                     { 4096, 4096, 4096 } };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        bench_sgemm(gpu, shapes[i][0], shapes[i][1], shapes[i][2]);
    bg_ctx_create(&cpu, BG_CPU);
    bench_w2(gpu, cpu);
    bg_ctx_free(&cpu);
    bg_ctx_free(&gpu);
    return 0;
}
