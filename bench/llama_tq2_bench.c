/* bench/llama_tq2_bench.c - the llama.cpp side of the W4 comparison (not built by Meson: it
 * needs a llama.cpp build). Times ggml's CPU mul_mat of a TQ2_0 weight [k = 14336, n = 4096]
 * by f32 activations (which ggml quantizes to Q8_K inside the op) for `cols` columns on
 * `threads` threads, cycling `copies` weight copies so that a 1-column run reads its weights
 * from DRAM rather than L3, as `bitgrad bench --workload matvec` does (8 copies by default).
 * Prints one JSON line: median and min ms of `reps` runs after 3 warm-up runs.
 *
 * Build against a CPU build of llama.cpp in $LL (cmake -B build && cmake --build build):
 *   gcc -D_GNU_SOURCE -O2 -std=c11 -o llama_tq2_bench bench/llama_tq2_bench.c \
 *       -I$LL/ggml/include -L$LL/build/bin -Wl,-rpath,$LL/build/bin -lggml -lggml-base -lggml-cpu
 *   ./llama_tq2_bench 1 2 8 300      # cols threads copies reps: the W4 mat-vec
 *   ./llama_tq2_bench 512 2 1 7      # the W4 mat-mat */
#include <ggml.h>
#include <ggml-cpu.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}
static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    int cols = argc > 1 ? atoi(argv[1]) : 1, threads = argc > 2 ? atoi(argv[2]) : 2;
    int copies = argc > 3 ? atoi(argv[3]) : 1, reps = argc > 4 ? atoi(argv[4]) : 20;
    const int k = 14336, n = 4096;
    ggml_cpu_init();
    size_t wbytes = ggml_row_size(GGML_TYPE_TQ2_0, k) * n;
    size_t mem = (size_t)copies * (wbytes + 4096) + (size_t)cols * k * 4 + (size_t)cols * n * 4 +
                 (size_t)copies * 3 * ggml_graph_overhead() + 256ull * 1024 * 1024;
    struct ggml_init_params ip = { mem, NULL, false };
    struct ggml_context *ctx = ggml_init(ip);
    float *tmp = malloc((size_t)k * n * sizeof(float));
    unsigned s = 1;
    for (size_t i = 0; i < (size_t)k * n; i++) {
        s = s * 1103515245u + 12345u;
        tmp[i] = (float)((int)((s >> 16) % 3) - 1);
    }
    struct ggml_tensor *x = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, k, cols);
    for (size_t i = 0; i < (size_t)k * cols; i++) {
        s = s * 1103515245u + 12345u;
        ((float *)x->data)[i] = (float)((int)((s >> 16) % 255) - 127);
    }
    struct ggml_cgraph **g = malloc(copies * sizeof *g);
    for (int c = 0; c < copies; c++) {
        struct ggml_tensor *w = ggml_new_tensor_2d(ctx, GGML_TYPE_TQ2_0, k, n);
        ggml_quantize_chunk(GGML_TYPE_TQ2_0, tmp, w->data, 0, n, k, NULL);
        g[c] = ggml_new_graph(ctx);
        ggml_build_forward_expand(g[c], ggml_mul_mat(ctx, w, x));
    }
    double *ms = malloc(reps * sizeof *ms);
    for (int r = 0; r < 3; r++) ggml_graph_compute_with_ctx(ctx, g[r % copies], threads);
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        ggml_graph_compute_with_ctx(ctx, g[r % copies], threads);
        ms[r] = 1e3 * (now() - t0);
    }
    qsort(ms, reps, sizeof *ms, cmp);
    printf("{\"llama.cpp\": \"TQ2_0 x f32(Q8_K) mul_mat\", \"cols\": %d, \"threads\": %d, \"copies\": %d, "
           "\"median_ms\": %.3f, \"min_ms\": %.3f, \"weight_bytes\": %zu}\n",
           cols, threads, copies, ms[reps / 2], ms[0], wbytes);
    return 0;
}
