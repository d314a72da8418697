/* vmath.h - exp for the CPU ops, written so that loops over it vectorise.
 *
 * glibc's expf is a library call, and its vector form needs -ffast-math (which would also
 * reorder sums and drop NaN handling). bg_expf is plain float arithmetic and selects, the
 * same in every SIMD lane and in the scalar tail, so results do not depend on thread count
 * or vector width. Method (the classic Cephes expf): n = round(x / ln 2), r = x - n ln 2 with
 * ln 2 in two parts, exp(r) by a degree-7 polynomial on |r| <= ln2 / 2, times 2^n built in
 * the exponent field in two halves (so that results between the smallest normal and the
 * overflow point scale exactly). Error about 1 ulp; exp(NaN) = NaN, exp(-inf) = 0,
 * exp(+inf) = +inf, below -103.97 exactly 0, above 88.73 +inf. */
#ifndef BG_VMATH_H
#define BG_VMATH_H

#include <stdint.h>
#include <string.h>

static inline float bg__pow2i(int32_t e) /* 2^e for e in [-126, 127] */
{
    uint32_t u = (uint32_t)(e + 127) << 23;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline float bg_expf(float x)
{
    float xc = x > 88.8f ? 88.8f : x;
    xc = xc < -104.0f ? -104.0f : xc;
    float t = xc * 1.44269504088896341f;
    int32_t ni = (int32_t)(t + (t >= 0.0f ? 0.5f : -0.5f));
    float n = (float)ni;
    float r = xc - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t n1 = ni / 2, n2 = ni - n1;
    float y = p * bg__pow2i(n1) * bg__pow2i(n2);
    y = x < -103.972f ? 0.0f : y;
    return x != x ? x : y;
}

#endif
