/* bench_tlut.c - BitLinear's table kernels (src/quant/tlut.c) against what they replace, on
 * W5's three projection shapes at 512 tokens: the forward (int8 levels times ternary codes)
 * against the packed int8 kernel bg_tmat_matmul, and dX = dY W_q against OpenBLAS's sgemm
 * on the widened weights. One JSON line per shape and kernel pair, best of --reps runs
 * (default 15; the best, because the shared VMs this was written on stall at random).
 * Threads: OMP_NUM_THREADS. Run: ./build/bench/bench_tlut [--reps N] */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bitgrad/ternary.h"
#include "quant/tlut.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static uint64_t rng = 88172645463325252ull;
static uint32_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 32);
}

static double keep_min(double best, double t0)
{
    double e = now() - t0;
    return e < best ? e : best;
}

static void *big(size_t n) { return aligned_alloc(64, (n + 63) / 64 * 64); }

int main(int argc, char **argv)
{
    int reps = 15;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) reps = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_tlut [--reps N]\n");
            return 2;
        }
    if (reps < 1) reps = 1;
    const int64_t rows = 512, shapes[3][2] = { { 4096, 1536 }, { 1536, 4096 }, { 1536, 1536 } };
    for (int s = 0; s < 3; s++) {
        int64_t out = shapes[s][0], in = shapes[s][1];
        int nt = omp_get_max_threads();
        int8_t *codes = malloc((size_t)(out * in)), *lv = malloc((size_t)(rows * in));
        float *w = big((size_t)(out * in) * 4), *dy = big((size_t)(rows * out) * 4),
              *dx = big((size_t)(rows * in) * 4), *y = big((size_t)(rows * out) * 4),
              *sx = malloc((size_t)rows * 4), sw = 0.7f;
        void *sf = big(bg__tlut_fwd_scratch(rows, out, in, nt)),
             *sb = big(bg__tlut_scratch(rows, out, in, nt));
        bg_tmat *pk = NULL;
        if (!codes || !lv || !w || !dy || !dx || !y || !sx || !sf || !sb) return 1;
        for (int64_t i = 0; i < out * in; i++) {
            codes[i] = (int8_t)(next() % 3) - 1;
            w[i] = (float)codes[i] * sw;
        }
        for (int64_t i = 0; i < rows * in; i++) lv[i] = (int8_t)(next() % 255 - 127);
        for (int64_t i = 0; i < rows * out; i++) dy[i] = (float)(next() % 20001) / 10000.0f - 1.0f;
        for (int64_t i = 0; i < rows; i++) sx[i] = 1.5f;
        if (bg_tmat_new(codes, &sw, false, out, in, &pk)) return 1;
        double f_lut = 1e30, f_tmat = 1e30, b_lut = 1e30, b_sgemm = 1e30;
        for (int r = 0; r < reps; r++) {
            double t = now();
            bg__tlut_fwd(NULL, pk, lv, sx, &sw, false, rows, out, in, y, sf);
            f_lut = keep_min(f_lut, t);
            t = now();
            bg_tmat_matmul(pk, lv, sx, rows, y);
            f_tmat = keep_min(f_tmat, t);
            t = now();
            bg__tlut_dx(NULL, pk, dy, &sw, false, rows, out, in, false, dx, sb);
            b_lut = keep_min(b_lut, t);
            t = now();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)in, (int)out,
                        1.0f, dy, (int)out, w, (int)in, 0.0f, dx, (int)in);
            b_sgemm = keep_min(b_sgemm, t);
        }
        double gop = 2.0 * (double)rows * (double)out * (double)in * 1e-9;
        printf("{\"rows\": %lld, \"out\": %lld, \"in\": %lld, \"threads\": %d, "
               "\"fwd_tables_ms\": %.2f, \"fwd_tmat_ms\": %.2f, \"dx_tables_ms\": %.2f, "
               "\"dx_sgemm_ms\": %.2f, \"fwd_tables_gops\": %.1f, \"dx_tables_gflops_eq\": %.1f, "
               "\"dx_sgemm_gflops\": %.1f}\n",
               (long long)rows, (long long)out, (long long)in, nt, f_lut * 1e3, f_tmat * 1e3,
               b_lut * 1e3, b_sgemm * 1e3, gop / f_lut, gop / b_lut, gop / b_sgemm);
        bg_tmat_free(&pk);
        free(codes), free(lv), free(w), free(dy), free(dx), free(y), free(sx), free(sf), free(sb);
    }
    return 0;
}
