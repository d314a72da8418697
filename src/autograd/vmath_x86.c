/* vmath_x86.c - AVX-512 and AVX2 forms of the SiLU forward and backward kernels and of the
 * activation quantizer (absmax, levels). GCC vectorises
 * bg_expf only at SSE2 width (with AVX2 or AVX-512 enabled it keeps the selects as branches),
 * so these spell out the same operations, in the same order, with intrinsics: no FMA, the
 * same truncating conversions, the same selects. Each lane therefore gives exactly the bits
 * of the scalar bg_expf / SiLU expressions (tests/test_vmath.c checks this). Used only when
 * bg_isa_best() allows AVX-512; the exp kernels also in AVX2, the tail by the scalar code. */
#include "autograd/vmath.h"
#include "autograd/vmath_x86.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#include "bitgrad/ternary.h"

#define T512 __attribute__((target("avx512f")))
#define INLINE static inline __attribute__((always_inline))

bool bg__vmath_avx512(void) { return bg_isa_best() >= BG_ISA_AVX512BW; }

INLINE T512 __m512 sel(__mmask16 m, __m512 a, __m512 b) { return _mm512_mask_blend_ps(m, b, a); }

/* bg_expf, lane by lane (vmath.h for the method). */
INLINE T512 __m512 expf16(__m512 x)
{
    const __m512 hi = _mm512_set1_ps(88.8f), lo = _mm512_set1_ps(-104.0f);
    __m512 xc = sel(_mm512_cmp_ps_mask(x, hi, _CMP_GT_OQ), hi, x);
    xc = sel(_mm512_cmp_ps_mask(xc, lo, _CMP_LT_OQ), lo, xc);
    __m512 t = _mm512_mul_ps(xc, _mm512_set1_ps(1.44269504088896341f));
    __m512 half = sel(_mm512_cmp_ps_mask(t, _mm512_setzero_ps(), _CMP_GE_OQ), _mm512_set1_ps(0.5f),
                      _mm512_set1_ps(-0.5f));
    __m512i ni = _mm512_cvttps_epi32(_mm512_add_ps(t, half));
    __m512 n = _mm512_cvtepi32_ps(ni);
    __m512 r = _mm512_sub_ps(xc, _mm512_mul_ps(n, _mm512_set1_ps(0.693359375f)));
    r = _mm512_sub_ps(r, _mm512_mul_ps(n, _mm512_set1_ps(-2.12194440e-4f)));
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(p, r), r), r),
                      _mm512_set1_ps(1.0f));
    /* n1 = ni / 2 rounded toward zero, as C's division */
    __m512i n1 = _mm512_srai_epi32(_mm512_add_epi32(ni, _mm512_srli_epi32(ni, 31)), 1);
    __m512i n2 = _mm512_sub_epi32(ni, n1), bias = _mm512_set1_epi32(127);
    __m512 s1 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n1, bias), 23));
    __m512 s2 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n2, bias), 23));
    __m512 y = _mm512_mul_ps(_mm512_mul_ps(p, s1), s2);
    y = sel(_mm512_cmp_ps_mask(x, _mm512_set1_ps(-103.972f), _CMP_LT_OQ), _mm512_setzero_ps(), y);
    return sel(_mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), x, y);
}

/* 1 / (1 + bg_expf(-x)) */
INLINE T512 __m512 sigmoid16(__m512 x)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    /* -x: a sign flip, as the scalar negation */
    __m512 nx =
        _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(x), _mm512_set1_epi32(INT32_MIN)));
    return _mm512_div_ps(one, _mm512_add_ps(one, expf16(nx)));
}

static T512 void exp_sub512(const float *x, float m, float *y, int64_t n)
{
    const __m512 vm = _mm512_set1_ps(m);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512 v = _mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), vm);
        _mm512_mask_storeu_ps(y + i, k, expf16(v));
    }
}

static T512 void silu_fwd512(const float *x, float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(v, sigmoid16(v)));
    }
}

static T512 void silu_bwd512(const float *x, const float *go, float *g, int64_t n, bool as)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512 v = _mm512_maskz_loadu_ps(m, x + i), s = sigmoid16(v);
        __m512 d = _mm512_mul_ps(s, _mm512_add_ps(one, _mm512_mul_ps(v, _mm512_sub_ps(one, s))));
        __m512 gv = as ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(m, g + i);
        __m512 gov = _mm512_maskz_loadu_ps(m, go + i);
        _mm512_mask_storeu_ps(g + i, m, _mm512_add_ps(gv, _mm512_mul_ps(gov, d)));
    }
}

/* swiglu's backward over one span, sigmoid computed once for both gradients: dg = base +
 * (go u) silu'(x) as bg__silu_bwd_avx512 with go u for go, du = base + go (x s) with x s as
 * bg__silu_fwd_avx512 (base: 0 where as_*, else the element); NULL skips a gradient. */
static T512 void swiglu_bwd512(const float *x, const float *u, const float *go, float *dg,
                                float *du, int64_t n, bool as_g, bool as_u)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512 v = _mm512_maskz_loadu_ps(m, x + i), s = sigmoid16(v);
        __m512 gov = _mm512_maskz_loadu_ps(m, go + i);
        if (dg) {
            __m512 d = _mm512_mul_ps(s, _mm512_add_ps(one, _mm512_mul_ps(v, _mm512_sub_ps(one, s))));
            __m512 t = _mm512_mul_ps(gov, _mm512_maskz_loadu_ps(m, u + i));
            __m512 gv = as_g ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(m, dg + i);
            _mm512_mask_storeu_ps(dg + i, m, _mm512_add_ps(gv, _mm512_mul_ps(t, d)));
        }
        if (du) {
            __m512 gv = as_u ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(m, du + i);
            _mm512_mask_storeu_ps(du + i, m, _mm512_add_ps(gv, _mm512_mul_ps(gov, _mm512_mul_ps(v, s))));
        }
    }
}

/* bg_absmax: largest |x|, NaN ignored (the same select as the scalar loop; max is exact, so
 * the order of the lanes does not matter). */
T512 float bg__absmax_avx512(const float *x, int64_t n)
{
    __m512 m = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512 a = _mm512_abs_ps(_mm512_maskz_loadu_ps(k, x + i));
        m = sel(_mm512_cmp_ps_mask(a, m, _CMP_GT_OQ), a, m);
    }
    float l[16], r = 0.0f;
    _mm512_storeu_ps(l, m);
    for (int j = 0; j < 16; j++) r = l[j] > r ? l[j] : r;
    return r;
}

/* lv8[i] = clamp(round_away(x[i] * s), -qp - 1, qp): op_bitlinear.c's quantize_row. */
T512 void bg__act_levels_avx512(const float *x, int64_t n, float s, float qp, int8_t *lv8)
{
    const __m512 vs = _mm512_set1_ps(s), vqp = _mm512_set1_ps(qp), vqn = _mm512_set1_ps(-qp - 1.0f);
    const __m512 one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + i), vs);
        /* bg_round_away */
        __mmask16 small =
            _mm512_cmp_ps_mask(_mm512_abs_ps(v), _mm512_set1_ps(8388608.0f), _CMP_LT_OQ);
        __m512 t = _mm512_cvtepi32_ps(_mm512_cvttps_epi32(sel(small, v, zero)));
        __m512 d = _mm512_sub_ps(v, t);
        __m512 up = sel(_mm512_cmp_ps_mask(d, _mm512_set1_ps(0.5f), _CMP_GE_OQ), one, zero);
        __m512 dn = sel(_mm512_cmp_ps_mask(d, _mm512_set1_ps(-0.5f), _CMP_LE_OQ), one, zero);
        __m512 q = sel(small, _mm512_sub_ps(_mm512_add_ps(t, up), dn), v);
        q = sel(_mm512_cmp_ps_mask(q, vqp, _CMP_GT_OQ), vqp, q);
        q = sel(_mm512_cmp_ps_mask(q, vqn, _CMP_LT_OQ), vqn, q);
        _mm512_mask_cvtepi32_storeu_epi8(lv8 + i, k, _mm512_cvttps_epi32(q));
    }
}

/* ---- the same kernels in AVX2 (8 lanes, the tail by the scalar expressions) ---- */

#define T256 __attribute__((target("avx2")))

INLINE T256 __m256 sel8(__m256 m, __m256 a, __m256 b) { return _mm256_blendv_ps(b, a, m); }

/* bg_expf, lane by lane: expf16's operations in 8 lanes. */
INLINE T256 __m256 expf8(__m256 x)
{
    const __m256 hi = _mm256_set1_ps(88.8f), lo = _mm256_set1_ps(-104.0f);
    __m256 xc = sel8(_mm256_cmp_ps(x, hi, _CMP_GT_OQ), hi, x);
    xc = sel8(_mm256_cmp_ps(xc, lo, _CMP_LT_OQ), lo, xc);
    __m256 t = _mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f));
    __m256 half = sel8(_mm256_cmp_ps(t, _mm256_setzero_ps(), _CMP_GE_OQ), _mm256_set1_ps(0.5f),
                       _mm256_set1_ps(-0.5f));
    __m256i ni = _mm256_cvttps_epi32(_mm256_add_ps(t, half));
    __m256 n = _mm256_cvtepi32_ps(ni);
    __m256 r = _mm256_sub_ps(xc, _mm256_mul_ps(n, _mm256_set1_ps(0.693359375f)));
    r = _mm256_sub_ps(r, _mm256_mul_ps(n, _mm256_set1_ps(-2.12194440e-4f)));
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(p, r), r), r),
                      _mm256_set1_ps(1.0f));
    __m256i n1 = _mm256_srai_epi32(_mm256_add_epi32(ni, _mm256_srli_epi32(ni, 31)), 1);
    __m256i n2 = _mm256_sub_epi32(ni, n1), bias = _mm256_set1_epi32(127);
    __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
    __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
    __m256 y = _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
    y = sel8(_mm256_cmp_ps(x, _mm256_set1_ps(-103.972f), _CMP_LT_OQ), _mm256_setzero_ps(), y);
    return sel8(_mm256_cmp_ps(x, x, _CMP_UNORD_Q), x, y);
}

INLINE T256 __m256 sigmoid8(__m256 x)
{
    const __m256 one = _mm256_set1_ps(1.0f);
    __m256 nx = _mm256_xor_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(INT32_MIN)));
    return _mm256_div_ps(one, _mm256_add_ps(one, expf8(nx)));
}

static inline float sigmoid1(float x) { return 1.0f / (1.0f + bg_expf(-x)); }

static T256 void exp_sub256(const float *x, float m, float *y, int64_t n)
{
    const __m256 vm = _mm256_set1_ps(m);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, expf8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm)));
    for (; i < n; i++) y[i] = bg_expf(x[i] - m);
}

static T256 void silu_fwd256(const float *x, float *y, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        _mm256_storeu_ps(y + i, _mm256_mul_ps(v, sigmoid8(v)));
    }
    for (; i < n; i++) y[i] = x[i] * sigmoid1(x[i]);
}

static T256 void silu_bwd256(const float *x, const float *go, float *g, int64_t n, bool as)
{
    const __m256 one = _mm256_set1_ps(1.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i), s = sigmoid8(v);
        __m256 d = _mm256_mul_ps(s, _mm256_add_ps(one, _mm256_mul_ps(v, _mm256_sub_ps(one, s))));
        __m256 gv = as ? _mm256_setzero_ps() : _mm256_loadu_ps(g + i);
        _mm256_storeu_ps(g + i, _mm256_add_ps(gv, _mm256_mul_ps(_mm256_loadu_ps(go + i), d)));
    }
    for (; i < n; i++) {
        float s = sigmoid1(x[i]);
        g[i] = (as ? 0.0f : g[i]) + go[i] * (s * (1.0f + x[i] * (1.0f - s)));
    }
}

static T256 void swiglu_bwd256(const float *x, const float *u, const float *go, float *dg,
                               float *du, int64_t n, bool as_g, bool as_u)
{
    const __m256 one = _mm256_set1_ps(1.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i), s = sigmoid8(v), gov = _mm256_loadu_ps(go + i);
        if (dg) {
            __m256 d = _mm256_mul_ps(s, _mm256_add_ps(one, _mm256_mul_ps(v, _mm256_sub_ps(one, s))));
            __m256 t = _mm256_mul_ps(gov, _mm256_loadu_ps(u + i));
            __m256 gv = as_g ? _mm256_setzero_ps() : _mm256_loadu_ps(dg + i);
            _mm256_storeu_ps(dg + i, _mm256_add_ps(gv, _mm256_mul_ps(t, d)));
        }
        if (du) {
            __m256 gv = as_u ? _mm256_setzero_ps() : _mm256_loadu_ps(du + i);
            _mm256_storeu_ps(du + i, _mm256_add_ps(gv, _mm256_mul_ps(gov, _mm256_mul_ps(v, s))));
        }
    }
    for (; i < n; i++) {
        float s = sigmoid1(x[i]);
        if (dg) dg[i] = (as_g ? 0.0f : dg[i]) + (go[i] * u[i]) * (s * (1.0f + x[i] * (1.0f - s)));
        if (du) du[i] = (as_u ? 0.0f : du[i]) + go[i] * (x[i] * s);
    }
}

/* ---- the entry points: AVX-512 where allowed, else AVX2 ---- */

static bool vexp512(void) { return bg_isa_best() >= BG_ISA_AVX512BW; }

bool bg__vmath_vexp(void) { return bg_isa_best() >= BG_ISA_AVX2; }

void bg__exp_sub_vec(const float *x, float m, float *y, int64_t n)
{
    if (vexp512()) exp_sub512(x, m, y, n);
    else exp_sub256(x, m, y, n);
}

void bg__silu_fwd_vec(const float *x, float *y, int64_t n)
{
    if (vexp512()) silu_fwd512(x, y, n);
    else silu_fwd256(x, y, n);
}

void bg__silu_bwd_vec(const float *x, const float *go, float *g, int64_t n, bool as)
{
    if (vexp512()) silu_bwd512(x, go, g, n, as);
    else silu_bwd256(x, go, g, n, as);
}

void bg__swiglu_bwd_vec(const float *x, const float *u, const float *go, float *dg, float *du,
                        int64_t n, bool as_g, bool as_u)
{
    if (vexp512()) swiglu_bwd512(x, u, go, dg, du, n, as_g, as_u);
    else swiglu_bwd256(x, u, go, dg, du, n, as_g, as_u);
}

#else

float bg__absmax_avx512(const float *x, int64_t n)
{
    (void)x, (void)n;
    return 0.0f;
}
void bg__act_levels_avx512(const float *x, int64_t n, float s, float qp, int8_t *lv8)
{
    (void)x, (void)n, (void)s, (void)qp, (void)lv8;
}

bool bg__vmath_avx512(void) { return false; }
bool bg__vmath_vexp(void) { return false; }
void bg__silu_fwd_vec(const float *x, float *y, int64_t n) { (void)x, (void)y, (void)n; }
void bg__silu_bwd_vec(const float *x, const float *go, float *g, int64_t n, bool as)
{
    (void)x, (void)go, (void)g, (void)n, (void)as;
}

void bg__exp_sub_vec(const float *x, float m, float *y, int64_t n)
{
    (void)x, (void)m, (void)y, (void)n;
}

void bg__swiglu_bwd_vec(const float *x, const float *u, const float *go, float *dg, float *du,
                           int64_t n, bool as_g, bool as_u)
{
    (void)x, (void)u, (void)go, (void)dg, (void)du, (void)n, (void)as_g, (void)as_u;
}

#endif
