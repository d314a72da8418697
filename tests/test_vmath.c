/* tests/test_vmath.c - bg_expf (src/autograd/vmath.h, the exp of the CPU ops) against libm's
 * exp in double: every 61st float bit pattern (70 million inputs), at most 2 ulp of the
 * float result in the normal range, within one denormal step below it, exact special cases
 * (NaN, +-inf, 0, overflow, underflow); and the AVX-512 SiLU and activation-quantizer
 * kernels against the scalar expressions, bit for bit. Run: ./test_vmath */
#include <float.h>

#include "autograd/vmath.h"
#include "autograd/vmath_x86.h"
#include "quant/bitnet_math.h"
#include "harness.h"

/* The AVX-512 activation quantizer (absmax, levels) against bitnet_math.h's bg_absmax and
 * bg_act_level: random rows, exact ties of x * s, huge values and infinities, every bit
 * width, ragged lengths. */
static void test_act_quant_avx512(void)
{
    if (!bg__vmath_avx512()) {
        printf("no AVX-512 here: quantizer kernels not tested\n");
        return;
    }
    enum { N = 1000 };
    float x[N];
    int8_t got[N];
    long bad_max = 0, bad_lv = 0, n = 0;
    uint64_t rng = 11;
    for (int rep = 0; rep < 400; rep++) {
        int len = 1 + (int)(harness_lcg(&rng) % N), bits = 2 + rep % 7;
        float spread = rep % 3 == 0 ? 1.0f : (rep % 3 == 1 ? 1000.0f : 1e-3f);
        for (int i = 0; i < len; i++) {
            x[i] = harness_uniform(&rng, -spread, spread);
            if (i % 13 == 0)
                x[i] = (float)((int)(harness_lcg(&rng) % 20) - 10) + 0.5f; /* ties at s = 1 */
            if (rep % 50 == 7 && i == 3) x[i] = INFINITY;
            if (rep % 50 == 9 && i == 5) x[i] = -3e38f;
        }
        float am = bg__absmax_avx512(x, len), want = bg_absmax(x, len);
        bad_max += memcmp(&am, &want, 4) != 0;
        float sc = rep % 2 ? 1.0f : bg_absmax_scale(want, bits);
        bg__act_levels_avx512(x, len, sc, bg_qp(bits), got);
        for (int i = 0; i < len; i++, n++) bad_lv += got[i] != (int8_t)bg_act_level(x[i], sc, bits);
    }
    CHECK(bad_max == 0 && bad_lv == 0,
          "AVX-512 absmax / levels = bitnet_math.h over %ld values "
          "(%ld maxima, %ld levels differ)",
          n, bad_max, bad_lv);
}

/* The AVX-512 exp(x - m) of the softmax rows (attention, cross-entropy) against bg_expf over
 * every 61st float bit pattern as x, shifts of 0, 1.5 and -80, ragged lengths. */
static void test_exp_sub_avx512(void)
{
    if (!bg__vmath_avx512()) {
        printf("no AVX-512 here: exp kernel not tested\n");
        return;
    }
    enum { N = 4099 };
    static const float shift[3] = { 0.0f, 1.5f, -80.0f };
    float x[N], y[N];
    long bad = 0, n = 0;
    for (uint64_t u0 = 0; u0 <= 0xffffffffu; u0 += (uint64_t)N * 61) {
        for (int i = 0; i < N; i++) {
            uint32_t b = (uint32_t)(u0 + (uint64_t)i * 61);
            memcpy(&x[i], &b, sizeof b);
        }
        int len = N - (int)(u0 % 17);
        float m = shift[(u0 / ((uint64_t)N * 61)) % 3];
        bg__exp_sub_avx512(x, m, y, len);
        for (int i = 0; i < len; i++, n++) {
            float want = bg_expf(x[i] - m);
            bad += isnan(want) ? !isnan(y[i]) : memcmp(&want, &y[i], 4) != 0;
        }
    }
    CHECK(bad == 0, "AVX-512 exp(x - m) = bg_expf bit for bit over %ld inputs (%ld differ)", n, bad);
}

/* The scalar SiLU expressions of op_elementwise.c, on bg_expf. */
static float sigmoid_ref(float x) { return 1.0f / (1.0f + bg_expf(-x)); }

/* The AVX-512 SiLU kernels must give the scalar expressions' bits: every 997th float bit
 * pattern (NaN inputs: NaN out) and lengths that leave a partial vector. */
static void test_silu_avx512(void)
{
    if (!bg__vmath_avx512()) {
        printf("no AVX-512 here: SiLU kernels not tested\n");
        return;
    }
    enum { N = 4099 };
    float x[N], y[N], go[N], g[N], u[N], dg[N], du[N];
    long diff_f = 0, diff_b = 0, diff_s = 0, n = 0;
    uint64_t rng = 7;
    for (uint64_t u0 = 0; u0 <= 0xffffffffu; u0 += (uint64_t)N * 997) {
        for (int i = 0; i < N; i++) {
            uint32_t b = (uint32_t)(u0 + (uint64_t)i * 997);
            memcpy(&x[i], &b, sizeof b);
            go[i] = harness_uniform(&rng, -2.0f, 2.0f);
            g[i] = harness_uniform(&rng, -1.0f, 1.0f);
            u[i] = harness_uniform(&rng, -3.0f, 3.0f);
            dg[i] = harness_uniform(&rng, -1.0f, 1.0f);
            du[i] = harness_uniform(&rng, -1.0f, 1.0f);
        }
        int len = N - (int)(u0 % 17); /* ragged tails */
        /* store (a new gradient buffer, NaN here) or add, alternating */
        bool as = (u0 / ((uint64_t)N * 997)) % 2 == 1;
        float g0[N], dg0[N], du0[N];
        for (int i = 0; i < N; i++) { /* a stored buffer holds NaN before: none may survive */
            if (as) g[i] = dg[i] = NAN;
            else du[i] = NAN;
        }
        memcpy(g0, g, sizeof g);
        memcpy(dg0, dg, sizeof dg);
        memcpy(du0, du, sizeof du);
        bg__silu_fwd_avx512(x, y, len);
        bg__silu_bwd_avx512(x, go, g, len, as);
        bg__swiglu_bwd_avx512(x, u, go, dg, du, len, as, !as);
        for (int i = 0; i < len; i++, n++) {
            float s = sigmoid_ref(x[i]), yf = x[i] * s;
            float d = sigmoid_ref(x[i]) * (1.0f + x[i] * (1.0f - sigmoid_ref(x[i])));
            float gb = (as ? 0.0f : g0[i]) + go[i] * d;
            float gg = (as ? 0.0f : dg0[i]) + (go[i] * u[i]) * d; /* swiglu: mul then silu */
            float gu = (!as ? 0.0f : du0[i]) + go[i] * yf;
            if (isnan(yf) ? !isnan(y[i]) : memcmp(&yf, &y[i], 4) != 0) diff_f++;
            if (isnan(gb) ? !isnan(g[i]) : memcmp(&gb, &g[i], 4) != 0) diff_b++;
            if ((isnan(gg) ? !isnan(dg[i]) : memcmp(&gg, &dg[i], 4) != 0) ||
                (isnan(gu) ? !isnan(du[i]) : memcmp(&gu, &du[i], 4) != 0))
                diff_s++;
        }
    }
    CHECK(diff_f == 0 && diff_b == 0 && diff_s == 0,
          "AVX-512 SiLU and SwiGLU gradients = scalar bit for bit over %ld inputs, stored and "
          "added (%ld forward, %ld backward, %ld swiglu backward differ)",
          n, diff_f, diff_b, diff_s);
}

int main(void)
{
    double worst_ulp = 0.0, worst_x = 0.0;
    long bad_special = 0, bad_denorm = 0, n = 0;
    for (uint64_t u = 0; u <= 0xffffffffu; u += 61) {
        uint32_t b = (uint32_t)u;
        float x, y;
        memcpy(&x, &b, sizeof x);
        y = bg_expf(x);
        double e = exp((double)x);
        n++;
        if (isnan(x)) {
            bad_special += !isnan(y);
        } else if (e > (double)FLT_MAX) {
            bad_special += !(isinf(y) && y > 0);
        } else if (e < (double)FLT_MIN) {
            bad_denorm += fabs((double)y - e) > 1.5 * 1.401298464e-45;
        } else {
            double ulp = (double)nextafterf((float)e, INFINITY) - (double)(float)e;
            double d = fabs((double)y - e) / ulp;
            if (d > worst_ulp) {
                worst_ulp = d;
                worst_x = x;
            }
        }
    }
    printf("%ld inputs: worst %.2f ulp at x = %.9g\n", n, worst_ulp, worst_x);
    CHECK(worst_ulp <= 2.0, "normal range within 2 ulp (worst %.2f at %.9g)", worst_ulp, worst_x);
    CHECK(bad_special == 0, "NaN stays NaN, overflow gives +inf (%ld wrong)", bad_special);
    CHECK(bad_denorm == 0, "denormal results within one step (%ld wrong)", bad_denorm);
    CHECK(bg_expf(-INFINITY) == 0.0f && bg_expf(INFINITY) == INFINITY && bg_expf(0.0f) == 1.0f &&
              bg_expf(-0.0f) == 1.0f && bg_expf(-200.0f) == 0.0f && isnan(bg_expf(NAN)),
          "exp(-inf) = 0, exp(inf) = inf, exp(+-0) = 1, exp(-200) = 0, exp(NaN) = NaN");
    test_exp_sub_avx512();
    test_silu_avx512();
    test_act_quant_avx512();
    return harness_summary();
}
