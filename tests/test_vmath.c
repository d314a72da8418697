/* tests/test_vmath.c - bg_expf (src/autograd/vmath.h, the exp of the CPU ops) against libm's
 * exp in double: every 61st float bit pattern (70 million inputs), at most 2 ulp of the
 * float result in the normal range, within one denormal step below it, exact special cases
 * (NaN, +-inf, 0, overflow, underflow); and the AVX-512 SiLU and activation-quantizer
 * kernels against the scalar expressions, bit for bit; the cloned and threaded quantizer loops
 * of quant_fast.c against bitnet_math.h's formulas, bit for bit. Run: ./test_vmath */
#include <float.h>

#include "autograd/vmath.h"
#include "autograd/vmath_x86.h"
#include "quant/bitnet_math.h"
#include "quant/quant_fast.h"
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

/* The vector (AVX-512 or AVX2) exp(x - m) of the softmax rows (attention, cross-entropy) against bg_expf over
 * every 61st float bit pattern as x, shifts of 0, 1.5 and -80, ragged lengths. */
static void test_exp_sub_vec(void)
{
    if (!bg__vmath_vexp()) {
        printf("no AVX2 or AVX-512 here: exp kernel not tested\n");
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
        bg__exp_sub_vec(x, m, y, len);
        for (int i = 0; i < len; i++, n++) {
            float want = bg_expf(x[i] - m);
            bad += isnan(want) ? !isnan(y[i]) : memcmp(&want, &y[i], 4) != 0;
        }
    }
    CHECK(bad == 0, "%s exp(x - m) = bg_expf bit for bit over %ld inputs (%ld differ)",
          bg__vmath_avx512() ? "AVX-512" : "AVX2", n, bad);
}

/* The scalar SiLU expressions of op_elementwise.c, on bg_expf. */
static float sigmoid_ref(float x) { return 1.0f / (1.0f + bg_expf(-x)); }

/* The vector (AVX-512 or AVX2) SiLU kernels must give the scalar expressions' bits: every 997th float bit
 * pattern (NaN inputs: NaN out) and lengths that leave a partial vector. */
static void test_silu_vec(void)
{
    if (!bg__vmath_vexp()) {
        printf("no AVX2 or AVX-512 here: SiLU kernels not tested\n");
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
        bg__silu_fwd_vec(x, y, len);
        bg__silu_bwd_vec(x, go, g, len, as);
        bg__swiglu_bwd_vec(x, u, go, dg, du, len, as, !as);
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
          "%s SiLU and SwiGLU gradients = scalar bit for bit over %ld inputs, stored and "
          "added (%ld forward, %ld backward, %ld swiglu backward differ)",
          bg__vmath_avx512() ? "AVX-512" : "AVX2", n, diff_f, diff_b, diff_s);
}

/* quant_fast.c against bitnet_math.h: the sum of |w| run by run in parallel must be
 * bg_abssum's bits, and the scale bg_absmean_scale's (lengths around a run, a batch of runs, ragged tails), and within
 * one float rounding of the mean summed in long double; codes and the widening loops must be
 * the scalar expressions' bits. */
static void test_quant_fast(void)
{
    printf("quant_fast: absmean runs, ternary codes, widening against the scalar formulas\n");
    const int64_t ns[] = { 0, 1, 15, 16, 17, 1000, BG_ABSMEAN_RUN - 1, BG_ABSMEAN_RUN,
                           BG_ABSMEAN_RUN + 1, 3 * BG_ABSMEAN_RUN + 77, 64 * BG_ABSMEAN_RUN,
                           64 * BG_ABSMEAN_RUN + 3, 150 * BG_ABSMEAN_RUN + 4097 };
    const int64_t nmax = 150 * BG_ABSMEAN_RUN + 4097;
    float *w = malloc((size_t)nmax * sizeof *w), *a = malloc((size_t)nmax * sizeof *a);
    int8_t *c = malloc((size_t)nmax), *c2 = malloc((size_t)nmax);
    if (!CHECK(w && a && c && c2, "out of memory")) goto done;
    uint64_t rng = 77;
    for (int64_t i = 0; i < nmax; i++) {
        /* magnitudes over many binades, so the summation order shows in the low bits */
        float u = harness_uniform(&rng, -1.0f, 1.0f);
        w[i] = u * ldexpf(1.0f, (int)(i % 23) - 11);
    }
    for (size_t t = 0; t < sizeof ns / sizeof ns[0]; t++) {
        int64_t n = ns[t];
        double sref = bg_abssum(w, n), sgot = bg__abssum_fast(w, n);
        CHECK(memcmp(&sref, &sgot, sizeof sref) == 0,
              "n %lld: threaded sum of |w| %.17g != serial %.17g", (long long)n, sgot, sref);
        float ref = bg_absmean_scale(w, n), got = bg__absmean_scale_fast(w, n);
        long double sum = 0.0L;
        for (int64_t i = 0; i < n; i++) sum += fabsl((long double)w[i]);
        float exact = n > 0 ? fmaxf((float)(sum / (long double)n), BG_QUANT_EPS) : BG_QUANT_EPS;
        CHECK(memcmp(&ref, &got, sizeof ref) == 0, "n %lld: threaded absmean %.9g != serial %.9g",
              (long long)n, (double)got, (double)ref);
        CHECK(fabsf(got - exact) <= fabsf(nextafterf(exact, INFINITY) - exact),
              "n %lld: absmean %.9g vs long-double mean %.9g: more than one ulp", (long long)n,
              (double)got, (double)exact);
    }
    /* codes at exact and near ties of w / s, and huge / tiny values */
    const float s = 0.37f;
    for (int64_t i = 0; i < 4096; i++) {
        float k = (float)(i % 7) * 0.25f - 0.75f; /* -0.75 .. 0.75 in quarters: ties at +-0.5 */
        w[i] = k * s;
        if (i % 5 == 1) w[i] = nextafterf(w[i], 0.0f);
        if (i % 11 == 2) w[i] = nextafterf(w[i], INFINITY);
        if (i % 97 == 3) w[i] = i % 2 ? 3e38f : -1e-30f;
    }
    for (int64_t n = 4090; n <= 4096; n += 3) {
        bg__ternary_codes(w, n, s, c);
        int bad = 0;
        for (int64_t i = 0; i < n; i++) bad += c[i] != bg_ternary_code(w[i], s);
        CHECK(bad == 0, "ternary codes (n %lld): %d differ from bg_ternary_code", (long long)n, bad);
    }
    for (int64_t i = 0; i < 4096; i++) c2[i] = (int8_t)(int)((i * 37) % 256 - 128);
    for (int64_t n = 4090; n <= 4096; n += 3) {
        int bad = 0;
        const float sc[2] = { 0.0123f, 127.0f / 3.1f };
        for (int k = 0; k < 2; k++) {
            bg__widen_mul(c2, n, sc[k], a);
            for (int64_t i = 0; i < n; i++) {
                float want = (float)c2[i] * sc[k];
                bad += memcmp(&a[i], &want, sizeof want) != 0;
            }
            bg__widen_div(c2, n, sc[k], a);
            for (int64_t i = 0; i < n; i++) {
                float want = (float)c2[i] / sc[k];
                bad += memcmp(&a[i], &want, sizeof want) != 0;
            }
        }
        CHECK(bad == 0, "widen mul / div (n %lld): %d values differ", (long long)n, bad);
    }
done:
    free(w);
    free(a);
    free(c);
    free(c2);
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
    test_exp_sub_vec();
    test_silu_vec();
    test_act_quant_avx512();
    test_quant_fast();
    return harness_summary();
}
