/* tests/test_vmath.c - bg_expf (src/autograd/vmath.h, the exp of the CPU ops) against libm's
 * exp in double: every 61st float bit pattern (70 million inputs), at most 2 ulp of the
 * float result in the normal range, within one denormal step below it, exact special cases
 * (NaN, +-inf, 0, overflow, underflow). Run: ./test_vmath */
#include <float.h>

#include "autograd/vmath.h"
#include "harness.h"

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
    return harness_summary();
}
