/* quant_fast.c - see quant_fast.h. */
#include "quant/quant_fast.h"

#include "autograd/vec8.h"
#include "quant/bitnet_math.h"

#define RUNS_PER_BATCH 64 /* partial sums held at once: added in order after each batch */

BG_CLONES static double abssum_run(const float *w, int64_t n) { return bg_abssum_run(w, n); }

double bg__abssum_fast(const float *w, int64_t n)
{
    const int64_t runs = (n + BG_ABSMEAN_RUN - 1) / BG_ABSMEAN_RUN;
    double s = 0.0, part[RUNS_PER_BATCH];
    for (int64_t b0 = 0; b0 < runs; b0 += RUNS_PER_BATCH) {
        int nb = runs - b0 < RUNS_PER_BATCH ? (int)(runs - b0) : RUNS_PER_BATCH;
#pragma omp parallel for schedule(static) if (nb > 1)
        for (int b = 0; b < nb; b++) {
            int64_t c = (b0 + b) * BG_ABSMEAN_RUN;
            part[b] = abssum_run(w + c, n - c < BG_ABSMEAN_RUN ? n - c : BG_ABSMEAN_RUN);
        }
        for (int b = 0; b < nb; b++) s += part[b]; /* bg_abssum's order */
    }
    return s;
}

float bg__absmean_scale_fast(const float *w, int64_t n)
{
    return bg_absmean_from_sum(bg__abssum_fast(w, n), n);
}

BG_CLONES void bg__ternary_codes(const float *restrict w, int64_t n, float s, int8_t *restrict c8)
{
    /* bg_ternary_code's two comparisons, written branch-free so the loop vectorises */
    for (int64_t i = 0; i < n; i++) {
        float v = w[i] / s;
        c8[i] = (int8_t)((v >= 0.5f) - (v <= -0.5f));
    }
}

BG_CLONES void bg__widen_mul(const int8_t *restrict c, int64_t n, float s, float *restrict out)
{
    for (int64_t i = 0; i < n; i++) out[i] = (float)c[i] * s;
}

BG_CLONES void bg__widen_div(const int8_t *restrict c, int64_t n, float s, float *restrict out)
{
    for (int64_t i = 0; i < n; i++) out[i] = (float)c[i] / s;
}
