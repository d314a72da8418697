/* bench_core.c - throughput of bitgrad's core ops against the bare machine.
 *
 * Prints one JSON line per workload and never asserts on time:
 *   matmul       bg_matmul of two persistent [n, n] tensors (grad off, bg_step_end every
 *                iteration, both timed) against cblas_sgemm on the same buffers; GFLOP/s of
 *                each and ratio = bitgrad GFLOP/s / BLAS GFLOP/s (1.0 is parity).
 *   elementwise  bg_add, bg_mul, bg_relu, bg_exp on [4096, 4096] (16.8M floats); GB/s counts
 *                bytes read + written. memcpy_gbps is memcpy moving the same traffic
 *                (half read, half written); ratio = op GB/s / memcpy GB/s.
 *   reduce       bg_sum over the last axis and over everything, same size and units.
 * Every figure is the median of the repetitions after warm-up (clock_gettime MONOTONIC).
 * Run: meson test -C build --benchmark -v  or  ./build/bench/bench_core  (see bench/README.md) */
#include <bitgrad.h>
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WARMUP 2

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

/* ---- workloads: each runs once per call and returns 0 on success ---------- */

typedef struct work {
    bg_ctx *ctx;
    bg_tensor *a, *b;
    float *c; /* BLAS output */
    const char *op;
    int n;
    void *src, *dst; /* memcpy buffers */
    size_t copy_bytes;
} work;

typedef int (*work_fn)(work *w);

static int run_bg_matmul(work *w)
{
    int ok = bg_matmul(w->a, w->b) != NULL;
    bg_step_end(w->ctx);
    return ok ? 0 : -1;
}

static int run_blas(work *w)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, w->n, w->n, w->n, 1.0f,
                bg_tensor_data(w->a), w->n, bg_tensor_data(w->b), w->n, 0.0f, w->c, w->n);
    return 0;
}

static bg_tensor *apply_op(work *w)
{
    if (!strcmp(w->op, "add")) return bg_add(w->a, w->b);
    if (!strcmp(w->op, "mul")) return bg_mul(w->a, w->b);
    if (!strcmp(w->op, "relu")) return bg_relu(w->a);
    if (!strcmp(w->op, "exp")) return bg_exp(w->a);
    if (!strcmp(w->op, "sum_last")) return bg_sum(w->a, -1, false);
    if (!strcmp(w->op, "sum_all")) return bg_sum(w->a, BG_AXIS_ALL, false);
    return NULL;
}

static int run_bg_op(work *w)
{
    int ok = apply_op(w) != NULL;
    bg_step_end(w->ctx);
    return ok ? 0 : -1;
}

static int run_memcpy(work *w)
{
    memcpy(w->dst, w->src, w->copy_bytes);
    return 0;
}

/* Median milliseconds of reps timed calls after WARMUP untimed ones; negative on failure. */
static double time_ms(work_fn fn, work *w, int reps)
{
    double t[64];
    if (reps > 64) reps = 64;
    for (int i = 0; i < WARMUP; i++)
        if (fn(w)) return -1.0;
    for (int i = 0; i < reps; i++) {
        double t0 = now_ms();
        if (fn(w)) return -1.0;
        t[i] = now_ms() - t0;
    }
    return median(t, reps);
}

/* ---- reports ----------------------------------------------------------------- */

static int bench_matmul(bg_ctx *ctx, int n)
{
    int64_t shape[2] = { n, n };
    work w = { .ctx = ctx, .n = n };
    w.a = bg_tensor_new(ctx, BG_F32, 2, shape);
    w.b = bg_tensor_new(ctx, BG_F32, 2, shape);
    w.c = malloc((size_t)n * n * sizeof(float));
    int rc = -1;
    if (!w.a || !w.b || !w.c) goto done;
    bg_tensor_fill_randn(w.a, 0.0f, 1.0f);
    bg_tensor_fill_randn(w.b, 0.0f, 1.0f);
    int reps = n <= 256 ? 50 : n <= 512 ? 20 : n <= 1024 ? 10 : 5;
    double t_bg = time_ms(run_bg_matmul, &w, reps);
    double t_blas = time_ms(run_blas, &w, reps);
    if (t_bg < 0 || t_blas < 0) goto done;
    double gflop = 2.0 * n * (double)n * n * 1e-9;
    printf("{\"bench\":\"matmul\",\"n\":%d,\"reps\":%d,\"bitgrad_ms\":%.3f,\"blas_ms\":%.3f,"
           "\"bitgrad_gflops\":%.1f,\"blas_gflops\":%.1f,\"ratio\":%.3f}\n",
           n, reps, t_bg, t_blas, gflop / (t_bg * 1e-3), gflop / (t_blas * 1e-3), t_blas / t_bg);
    fflush(stdout);
    rc = 0;
done:
    bg_tensor_free(&w.a);
    bg_tensor_free(&w.b);
    free(w.c);
    return rc;
}

/* bytes: traffic of one call (bytes read + written). */
static int bench_stream(work *w, const char *kind, const char *op, size_t bytes, int reps)
{
    w->op = op;
    w->copy_bytes = bytes / 2;
    double t_op = time_ms(run_bg_op, w, reps);
    double t_cp = time_ms(run_memcpy, w, reps);
    if (t_op < 0) return -1;
    double gbps = bytes / (t_op * 1e6), cp_gbps = bytes / (t_cp * 1e6);
    printf("{\"bench\":\"%s\",\"op\":\"%s\",\"numel\":%lld,\"bytes\":%zu,\"reps\":%d,"
           "\"ms\":%.3f,\"gbps\":%.2f,\"memcpy_ms\":%.3f,\"memcpy_gbps\":%.2f,\"ratio\":%.3f}\n",
           kind, op, (long long)bg_tensor_numel(w->a), bytes, reps, t_op, gbps, t_cp, cp_gbps,
           gbps / cp_gbps);
    fflush(stdout);
    return 0;
}

static int bench_elementwise(bg_ctx *ctx)
{
    const int64_t rows = 4096, cols = 4096;
    int64_t shape[2] = { rows, cols };
    size_t t_bytes = (size_t)(rows * cols) * sizeof(float);
    work w = { .ctx = ctx };
    w.a = bg_tensor_new(ctx, BG_F32, 2, shape);
    w.b = bg_tensor_new(ctx, BG_F32, 2, shape);
    w.src = malloc(2 * t_bytes);
    w.dst = malloc(2 * t_bytes);
    int rc = -1;
    if (!w.a || !w.b || !w.src || !w.dst) goto done;
    bg_tensor_fill_uniform(w.a, -2.0f, 2.0f);
    bg_tensor_fill_uniform(w.b, -2.0f, 2.0f);
    memset(w.src, 1, 2 * t_bytes);
    memset(w.dst, 0, 2 * t_bytes);
    const int reps = 10;
    rc = bench_stream(&w, "elementwise", "add", 3 * t_bytes, reps);
    rc |= bench_stream(&w, "elementwise", "mul", 3 * t_bytes, reps);
    rc |= bench_stream(&w, "elementwise", "relu", 2 * t_bytes, reps);
    rc |= bench_stream(&w, "elementwise", "exp", 2 * t_bytes, reps);
    rc |= bench_stream(&w, "reduce", "sum_last", t_bytes + (size_t)rows * sizeof(float), reps);
    rc |= bench_stream(&w, "reduce", "sum_all", t_bytes + sizeof(float), reps);
done:
    bg_tensor_free(&w.a);
    bg_tensor_free(&w.b);
    free(w.src);
    free(w.dst);
    return rc;
}

int main(void)
{
    bg_ctx *ctx;
    if (bg_ctx_create(&ctx, BG_CPU)) {
        fprintf(stderr, "bench_core: cannot create a CPU context\n");
        return 1;
    }
    bg_grad_enable(ctx, false);
    bg_ctx_seed(ctx, 1);
    const char *coretype = getenv("OPENBLAS_CORETYPE");
    printf("{\"bench\":\"env\",\"omp_threads\":%d,\"openblas_coretype\":\"%s\"}\n",
           omp_get_max_threads(), coretype ? coretype : "");

    int rc = 0;
    const int sizes[] = { 256, 512, 1024, 2048 };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) rc |= bench_matmul(ctx, sizes[i]);
    rc |= bench_elementwise(ctx);
    if (rc) fprintf(stderr, "bench_core: an op failed: %s\n", bg_ctx_error(ctx));
    bg_ctx_free(&ctx);
    return rc ? 1 : 0;
}
