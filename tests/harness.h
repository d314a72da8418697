/* harness.h - header-only helpers shared by the test programs: CHECK, check_close, a final
 * "N passed, N failed" summary, a deterministic LCG, and a finite-difference gradient checker.
 *
 * Everything here is static (inline), so each test program gets its own copy and unused
 * helpers cost nothing and warn about nothing. A test's main() ends with
 *     return harness_summary();
 * which prints the summary line and returns 0 when no check failed, 1 otherwise. */
#ifndef BG_TESTS_HARNESS_H
#define BG_TESTS_HARNESS_H

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitgrad/autograd.h"
#include "bitgrad/tensor.h"

/* Meson reports a test that exits with this code as skipped. */
#define HARNESS_SKIP 77

/* ---- counters and CHECK -------------------------------------------------------- */

typedef struct harness_state {
    long passed;
    long failed;
} harness_state;

static inline harness_state *harness_state_(void)
{
    static harness_state s;
    return &s;
}

static inline void harness_count(bool ok)
{
    if (ok) harness_state_()->passed++;
    else
        harness_state_()->failed++;
}

__attribute__((format(printf, 4, 5))) static inline bool
harness_check_(bool ok, const char *file, int line, const char *fmt, ...)
{
    harness_count(ok);
    if (!ok) {
        fprintf(stdout, "FAIL %s:%d: ", file, line);
        va_list ap;
        va_start(ap, fmt);
        vfprintf(stdout, fmt, ap);
        va_end(ap);
        fputc('\n', stdout);
        fflush(stdout);
    }
    return ok;
}

/* CHECK(cond, fmt, ...): counts one check; on failure prints file:line and the message and
 * carries on. Evaluates to cond, so `if (!CHECK(p, "...")) return;` guards what follows. */
#define CHECK(cond, ...) harness_check_(!!(cond), __FILE__, __LINE__, __VA_ARGS__)

static inline long harness_failures(void) { return harness_state_()->failed; }

/* Prints "N passed, N failed" and returns the process exit code (0 iff nothing failed). */
static inline int harness_summary(void)
{
    harness_state *s = harness_state_();
    printf("%ld passed, %ld failed\n", s->passed, s->failed);
    fflush(stdout);
    return s->failed ? 1 : 0;
}

/* ---- comparing arrays ----------------------------------------------------------- */

/* Whole-array comparison. With
 *     max_abs = max_i |got[i] - want[i]|
 *     max_rel = max_abs / max(max_i |want[i]|, 1e-30)
 * (the error relative to the largest reference value, so near-zero entries of a large
 * array do not blow the ratio up) the check passes when max_rel <= rtol or max_abs <= atol.
 * A NaN or Inf in got where want is finite always fails. Prints both maxima; counts one
 * check. */
static inline bool check_close(const char *name, const float *got, const float *want, int64_t n,
                               double rtol, double atol)
{
    double max_abs = 0.0, max_want = 0.0;
    int64_t worst = -1, first_bad = -1;
    for (int64_t i = 0; i < n; i++) {
        double g = got[i], w = want[i];
        if (isfinite(w) && !isfinite(g)) {
            if (first_bad < 0) first_bad = i;
            continue;
        }
        double d = fabs(g - w);
        if (d > max_abs || worst < 0) {
            if (d > max_abs) max_abs = d;
            worst = i;
        }
        if (fabs(w) > max_want) max_want = fabs(w);
    }
    bool finite = first_bad < 0;
    if (!finite) worst = first_bad;
    double max_rel = max_abs / (max_want > 1e-30 ? max_want : 1e-30);
    bool ok = finite && (max_rel <= rtol || max_abs <= atol);
    printf("  %-44s max abs diff %.3e  max rel diff %.3e  (rtol %.0e atol %.0e) %s\n", name,
           max_abs, max_rel, rtol, atol, ok ? "ok" : "FAIL");
    if (!ok && worst >= 0)
        printf("    worst at [%lld]: got %.9g want %.9g%s\n", (long long)worst, (double)got[worst],
               (double)want[worst], finite ? "" : " (non-finite output)");
    harness_count(ok);
    return ok;
}

/* Elementwise comparison: every element must satisfy |got - want| <= atol + rtol * |want|.
 * Prints the max abs diff, the max of |got - want| / max(|want|, 1e-30) and the worst element;
 * counts one check. */
static inline bool check_close_elem(const char *name, const float *got, const float *want,
                                    int64_t n, double rtol, double atol)
{
    double max_abs = 0.0, max_rel = 0.0, worst_excess = -1.0;
    int64_t worst = -1;
    bool ok = true;
    for (int64_t i = 0; i < n; i++) {
        double g = got[i], w = want[i];
        double d = (isfinite(w) && !isfinite(g)) ? INFINITY : fabs(g - w);
        double r = d / (fabs(w) > 1e-30 ? fabs(w) : 1e-30);
        double excess = d - (atol + rtol * fabs(w));
        if (d > max_abs) max_abs = d;
        if (r > max_rel) max_rel = r;
        if (!(excess <= 0.0)) ok = false;
        if (excess > worst_excess || worst < 0) {
            worst_excess = excess;
            worst = i;
        }
    }
    printf("  %-44s max abs diff %.3e  max elem rel diff %.3e  (rtol %.0e atol %.0e) %s\n", name,
           max_abs, max_rel, rtol, atol, ok ? "ok" : "FAIL");
    if (!ok && worst >= 0)
        printf("    worst at [%lld]: got %.9g want %.9g\n", (long long)worst, (double)got[worst],
               (double)want[worst]);
    harness_count(ok);
    return ok;
}

/* Bitwise equality of two float arrays (determinism checks); counts one check. */
static inline bool check_bitwise(const char *name, const float *got, const float *want, int64_t n)
{
    int64_t first = -1, count = 0;
    for (int64_t i = 0; i < n; i++) {
        if (memcmp(&got[i], &want[i], sizeof(float)) != 0) {
            if (first < 0) first = i;
            count++;
        }
    }
    bool ok = count == 0;
    printf("  %-44s %lld of %lld elements differ bitwise %s\n", name, (long long)count,
           (long long)n, ok ? "ok" : "FAIL");
    if (!ok)
        printf("    first at [%lld]: %.9g vs %.9g\n", (long long)first, (double)got[first],
               (double)want[first]);
    harness_count(ok);
    return ok;
}

/* ---- deterministic pseudo-random numbers (independent of the library's RNG) --------- */

static inline uint32_t harness_lcg(uint64_t *state)
{
    *state = *state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(*state >> 33);
}

/* Uniform in [lo, hi). */
static inline float harness_uniform(uint64_t *state, float lo, float hi)
{
    return lo + (hi - lo) * (float)((double)harness_lcg(state) / 2147483648.0);
}

/* ---- reading tensors ----------------------------------------------------------------- */

/* A malloc'd float copy of t's values in logical row-major order (NULL on failure). */
static inline float *harness_read(const bg_tensor *t)
{
    if (!t) return NULL;
    int64_t n = bg_tensor_numel(t);
    float *buf = malloc((size_t)(n > 0 ? n : 1) * sizeof *buf);
    if (buf && bg_tensor_read(t, buf) != BG_OK) {
        free(buf);
        return NULL;
    }
    return buf;
}

static inline void harness_shape_str(const bg_tensor *t, char *buf, size_t n)
{
    size_t off = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < bg_tensor_ndim(t) && off < n; i++)
        off += (size_t)snprintf(buf + off, n - off, i ? ",%lld" : "%lld",
                                (long long)bg_tensor_dim(t, i));
    if (off < n) snprintf(buf + off, n - off, "]");
}

/* ---- gradient checker ----------------------------------------------------------------- */

/* Builds the output from the inputs with the public API (called once with grad mode on,
 * then once per perturbation with grad mode off). May return any shape. */
typedef bg_tensor *(*gc_build_fn)(void *user, bg_tensor *const *inputs);

/* Expected-value hook, called for every element after its central difference is computed:
 * may replace *numeric with the value the analytic gradient must have there (kinks: relu
 * or abs at 0, clamp at a bound, ties of max). Returns true when it replaced the value. */
typedef bool (*gc_expect_fn)(void *user, int input_idx, int64_t elem_idx, double *numeric);

typedef struct gc_opts {
    const char *name;    /* printed with the results */
    double h;            /* perturbation; 0 means 1e-2 (suited to an f32 forward) */
    double rtol;         /* 0 means 1e-2 */
    double atol;         /* 0 means 1e-6: floor for gradients that are (almost) all zero */
    gc_expect_fn expect; /* may be NULL */
    uint64_t seed;       /* seed of the reduction weights R; 0 means a fixed default */
} gc_opts;

/* L = sum_i out[i] * r[i], accumulated in double from the values bg_tensor_read gives. */
static inline double gc_weighted_sum_(bg_tensor *out, const float *r, int64_t n, float *buf)
{
    if (!out || bg_tensor_numel(out) != n || bg_tensor_read(out, buf) != BG_OK) return NAN;
    double l = 0.0;
    for (int64_t i = 0; i < n; i++) l += (double)buf[i] * (double)r[i];
    return l;
}

/* One forward in grad-off mode; the step is ended before returning. */
static inline double gc_eval_(bg_ctx *ctx, gc_build_fn build, void *user, bg_tensor *const *in,
                              const float *r, int64_t n, float *buf)
{
    bg_tensor *out = build(user, in);
    double l = gc_weighted_sum_(out, r, n, buf);
    bg_step_end(ctx);
    return l;
}

/* Checks the analytic gradient of every input that requires grad against central
 * differences. Inputs must be persistent (bg_param / bg_tensor_new) so that their grads
 * persist and bg_tensor_write can perturb them between evaluations; inputs that do not
 * require grad (ids, targets) are used but not checked.
 *
 * The output is reduced to L = sum(out * R) with R a fixed pseudo-random tensor from the
 * harness LCG. The analytic pass seeds backward with R (bg_backward_seed(out, R)), which is
 * the gradient of that L without recording a mul and a sum, so a bug in those two ops cannot
 * hide or fake one in the op under test. The numeric pass computes, for every element x_j,
 *     (L(x_j + h) - L(x_j - h)) / (x_j+h - x_j-h)      (the actual f32 spacing)
 * in double, with grad mode off and bg_step_end after each evaluation. Per tensor it passes
 * when max_j |analytic_j - numeric_j| <= rtol * max_j |numeric_j| + atol. Returns true when
 * every checked input passed; counts one check per input (plus one for the forward). */
static inline bool gradcheck(bg_ctx *ctx, gc_build_fn build, void *user, bg_tensor *const *inputs,
                             int n_inputs, const gc_opts *opts)
{
    gc_opts o = opts ? *opts : (gc_opts){ 0 };
    const char *name = o.name ? o.name : "gradcheck";
    double h = o.h > 0 ? o.h : 1e-2, rtol = o.rtol > 0 ? o.rtol : 1e-2;
    double atol = o.atol > 0 ? o.atol : 1e-6;
    uint64_t rs = o.seed ? o.seed : 0x5eed5eedull;

    for (int i = 0; i < n_inputs; i++) {
        if (!inputs[i] || !bg_tensor_is_persistent(inputs[i])) {
            CHECK(false, "%s: input %d is NULL or not persistent", name, i);
            return false;
        }
        bg_tensor_zero_grad(inputs[i]);
    }
    bg_ctx_clear_error(ctx);
    bg_step_end(ctx);
    bool prev_mode = bg_grad_enable(ctx, true);

    /* Analytic pass. */
    bg_tensor *out = build(user, inputs);
    if (!out) {
        CHECK(false, "%s: forward failed: %s", name, bg_ctx_error(ctx));
        bg_ctx_clear_error(ctx);
        bg_step_end(ctx);
        bg_grad_enable(ctx, prev_mode);
        return false;
    }
    int64_t n_out = bg_tensor_numel(out);
    float *r = malloc((size_t)n_out * sizeof *r);
    float *buf = malloc((size_t)n_out * sizeof *buf);
    float **analytic = calloc((size_t)n_inputs, sizeof *analytic);
    if (!r || !buf || !analytic) {
        CHECK(false, "%s: out of memory in the harness", name);
        free(r), free(buf), free(analytic);
        bg_step_end(ctx);
        bg_grad_enable(ctx, prev_mode);
        return false;
    }
    for (int64_t i = 0; i < n_out; i++) r[i] = harness_uniform(&rs, -1.0f, 1.0f);
    double l0 = gc_weighted_sum_(out, r, n_out, buf);
    bg_tensor *seed = bg_from_data(ctx, BG_F32, bg_tensor_ndim(out), bg_tensor_shape(out), r);
    int rc = bg_backward_seed(out, seed);
    bool ok = CHECK(rc == BG_OK && isfinite(l0), "%s: backward returned %d (%s), L = %g", name, rc,
                    bg_ctx_error(ctx), l0);
    for (int i = 0; ok && i < n_inputs; i++) {
        if (!bg_tensor_requires_grad(inputs[i])) continue;
        int64_t n = bg_tensor_numel(inputs[i]);
        analytic[i] = calloc((size_t)(n > 0 ? n : 1), sizeof(float));
        bg_tensor *g = bg_tensor_grad(inputs[i]);
        if (g && analytic[i]) bg_tensor_read(g, analytic[i]);
        else if (!g)
            printf("  %s: input %d received no gradient (treated as zeros)\n", name, i);
    }
    bg_ctx_clear_error(ctx);
    bg_step_end(ctx);

    /* Numeric pass. */
    bg_grad_enable(ctx, false);
    if (ok) {
        double l_off = gc_eval_(ctx, build, user, inputs, r, n_out, buf);
        ok = CHECK(fabs(l_off - l0) <= 1e-5 * (fabs(l0) + 1.0),
                   "%s: forward differs between grad mode on (L = %.9g) and off (L = %.9g)", name,
                   l0, l_off);
    }
    for (int i = 0; ok && i < n_inputs; i++) {
        if (!analytic[i]) continue;
        bg_tensor *x = inputs[i];
        int64_t n = bg_tensor_numel(x);
        float *xv = harness_read(x);
        if (!xv) {
            ok = CHECK(false, "%s: cannot read input %d", name, i);
            break;
        }
        double max_err = 0.0, max_num = 0.0;
        int64_t worst = 0, n_hooked = 0;
        double worst_a = 0.0, worst_n = 0.0;
        bool evals_ok = true;
        for (int64_t j = 0; j < n && evals_ok; j++) {
            float x0 = xv[j];
            float xp = (float)((double)x0 + h), xm = (float)((double)x0 - h);
            xv[j] = xp;
            bg_tensor_write(x, xv);
            double lp = gc_eval_(ctx, build, user, inputs, r, n_out, buf);
            xv[j] = xm;
            bg_tensor_write(x, xv);
            double lm = gc_eval_(ctx, build, user, inputs, r, n_out, buf);
            xv[j] = x0;
            double num = (lp - lm) / ((double)xp - (double)xm);
            if (!isfinite(num)) {
                evals_ok = false;
                worst = j;
                break;
            }
            if (o.expect && o.expect(user, i, j, &num)) n_hooked++;
            double err = fabs((double)analytic[i][j] - num);
            if (!isfinite(err)) err = INFINITY; /* a NaN analytic gradient must fail */
            if (j == 0 || err > max_err) {
                max_err = err;
                worst = j;
                worst_a = analytic[i][j];
                worst_n = num;
            }
            if (fabs(num) > max_num) max_num = fabs(num);
        }
        bg_tensor_write(x, xv);
        free(xv);
        char shp[64];
        harness_shape_str(x, shp, sizeof shp);
        if (!evals_ok) {
            ok = CHECK(false, "%s: input %d %s: forward failed or non-finite at element %lld: %s",
                       name, i, shp, (long long)worst, bg_ctx_error(ctx));
            bg_ctx_clear_error(ctx);
            break;
        }
        double rel = max_err / (max_num > 1e-30 ? max_num : 1e-30);
        bool pass = max_err <= rtol * max_num + atol;
        printf("  %-40s input %d %-12s max|a-n| %.3e  max|n| %.3e  rel %.3e%s %s\n", name, i, shp,
               max_err, max_num, rel, n_hooked ? " (hooked)" : "", pass ? "ok" : "FAIL");
        if (!pass)
            printf("    worst at [%lld]: analytic %.9g numeric %.9g\n", (long long)worst, worst_a,
                   worst_n);
        harness_count(pass);
        ok = ok && pass;
    }
    fflush(stdout);
    bg_grad_enable(ctx, prev_mode);
    bg_step_end(ctx);
    for (int i = 0; i < n_inputs; i++) free(analytic[i]);
    free(analytic), free(r), free(buf);
    return ok;
}

#endif
