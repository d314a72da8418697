/* bitnet_math.h - the BitNet b1.58 quantizer formulas, once, as static inline functions.
 *
 * Training (STE ops), export (TQ packing with exact scales) and inference (int8 x ternary
 * kernels) all call these, on the CPU and - through BG_HD - in CUDA kernels, so the CPU
 * tests cover the exact math the GPU runs. DESIGN.md section 5:
 *   s_w   = max(mean(|W|), 1e-5)          mean accumulated in double, rounded to float
 *   codes = clamp(round(W / s_w), -1, 1)  round = half away from zero (roundf)
 *   s_x   = Qp / max(max(|x|), 1e-5)      Qp = 2^(bits-1) - 1
 *   x_q   = clamp(round(x * s_x), -Qp-1, Qp) / s_x */
#ifndef BG_BITNET_MATH_H
#define BG_BITNET_MATH_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>

#ifdef __CUDACC__
#define BG_HD __host__ __device__
#else
#define BG_HD
#endif

#define BG_QUANT_EPS 1e-5f

/* The scale from s = sum |w| over n weights (accumulated in double): max(mean, eps).
 * Split out so that a parallel sum (the CUDA kernels') ends in the same formula. */
static inline BG_HD float bg_absmean_from_sum(double s, int64_t n)
{
    float mean = n > 0 ? (float)(s / (double)n) : 0.0f;
    return mean > BG_QUANT_EPS ? mean : BG_QUANT_EPS;
}

/* Runs of at most this many weights are summed on their own, and the run sums added in
 * order: the CPU computes runs in parallel (quant_fast.c) and gets these bits exactly. */
#define BG_ABSMEAN_RUN 8192

/* Sum of |w| over one run in double on sixteen lanes: lane j takes the elements i with
 * i mod 16 = j, the tail joins lane 0, the lanes combine in a fixed tree. Vectorised, each
 * lane's arithmetic stays the scalar one (the same bits at any vector width). */
static inline BG_HD double bg_abssum_run(const float *w, int64_t n)
{
    double a[16] = { 0.0 };
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++) a[j] += fabs((double)w[i + j]);
    for (; i < n; i++) a[0] += fabs((double)w[i]);
    for (int h = 8; h >= 1; h /= 2)
        for (int j = 0; j < h; j++) a[j] += a[j + h];
    return a[0];
}

/* Sum of |w| over n weights in double: the runs' sums added in order. */
static inline BG_HD double bg_abssum(const float *w, int64_t n)
{
    double s = 0.0;
    for (int64_t c = 0; c < n; c += BG_ABSMEAN_RUN)
        s += bg_abssum_run(w + c, n - c < BG_ABSMEAN_RUN ? n - c : BG_ABSMEAN_RUN);
    return s;
}

/* Scale of a group of n weights: max(mean |w|, eps). */
static inline BG_HD float bg_absmean_scale(const float *w, int64_t n)
{
    return bg_absmean_from_sum(bg_abssum(w, n), n);
}

/* round(v) with halves away from zero, as C's roundf, without the library call: for
 * |v| < 2^23 the fraction v - trunc(v) is exact, so comparing it with 0.5 decides exactly
 * (0.49999997f stays 0, 0.5f goes to 1). Larger values and NaN are returned as they are.
 * Written as selects, not branches: loops over it vectorise, and random data costs no
 * mispredictions. */
static inline BG_HD float bg_round_away(float v)
{
    bool small = fabsf(v) < 8388608.0f;
    float t = (float)(int32_t)(small ? v : 0.0f);
    float d = v - t;
    float r = t + (d >= 0.5f ? 1.0f : 0.0f) - (d <= -0.5f ? 1.0f : 0.0f);
    return small ? r : v;
}

/* Ternary code of w under scale s_w: clamp(round(w / s_w), -1, 1). Since only |w/s_w| >= 0.5
 * rounds away from 0, two comparisons decide it exactly (NaN gives 0). */
static inline BG_HD int8_t bg_ternary_code(float w, float s_w)
{
    float v = w / s_w;
    return (int8_t)(v >= 0.5f ? 1 : (v <= -0.5f ? -1 : 0));
}

static inline BG_HD float bg_qp(int bits) { return (float)((1 << (bits - 1)) - 1); }

/* Activation scale of a group whose largest magnitude is amax. */
static inline BG_HD float bg_absmax_scale(float amax, int bits)
{
    return bg_qp(bits) / (amax > BG_QUANT_EPS ? amax : BG_QUANT_EPS);
}

/* Integer level of x under scale s_x, clamped to [-Qp-1, Qp]. */
static inline BG_HD int32_t bg_act_level(float x, float s_x, int bits)
{
    float qp = bg_qp(bits), r = bg_round_away(x * s_x);
    r = r > qp ? qp : (r < -qp - 1.0f ? -qp - 1.0f : r);
    return (int32_t)r;
}

/* Largest |x| (NaN ignored). Sixteen running maxima, so the loop vectorises; max is exact,
 * so the order does not change the result. */
static inline BG_HD float bg_absmax(const float *x, int64_t n)
{
    float m[16] = { 0.0f };
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++) m[j] = fabsf(x[i + j]) > m[j] ? fabsf(x[i + j]) : m[j];
    for (; i < n; i++) m[0] = fabsf(x[i]) > m[0] ? fabsf(x[i]) : m[0];
    for (int j = 1; j < 16; j++) m[0] = m[j] > m[0] ? m[j] : m[0];
    return m[0];
}

/* The straight-through blend x + lambda * (q - x): lambda = 1 is full quantization. */
static inline BG_HD float bg_ste_blend(float x, float q, float lambda)
{
    return lambda == 1.0f ? q : x + lambda * (q - x);
}

#endif
