/* test_ops.c - suite 'grad': every op of src/autograd/ops.def against finite differences,
 * and forward values against the naive C references of refs_naive.h. (Thread-count
 * determinism: test_determinism.c.)
 *
 * The op list is iterated from the library (bg_op_count / bg_op_name) and looked up in the
 * table at the bottom of this file: an op without an entry fails the suite, so adding an op
 * to ops.def without a gradient test cannot go unnoticed. Run: meson test -C build --suite grad */
#include <omp.h>

#include "harness.h"

#define S(...) ((const int64_t[]){ __VA_ARGS__ })

/* ---- inputs ------------------------------------------------------------------------ */

static uint64_t g_rng = 20240601u;
static const char *g_opname;  /* the op whose case is running */
static bg_tensor *g_pool[64]; /* persistent tensors of the current case */
static int g_npool;

static bg_tensor *pool_add(bg_tensor *t)
{
    if (t && g_npool < 64) g_pool[g_npool++] = t;
    return t;
}

static void pool_free(void)
{
    while (g_npool > 0) bg_tensor_free(&g_pool[--g_npool]);
}

/* A parameter holding the given values. */
static bg_tensor *param_v(bg_ctx *ctx, int ndim, const int64_t *shape, const float *v)
{
    bg_tensor *t = pool_add(bg_param(ctx, NULL, ndim, shape));
    if (t) bg_tensor_write(t, v);
    return t;
}

/* Uniform in [lo, hi), resampled while within `margin` of a kink point (NULL: none). */
static bg_tensor *param_u(bg_ctx *ctx, int ndim, const int64_t *shape, float lo, float hi,
                          const float *kinks, int n_kinks, float margin)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    float *v = malloc((size_t)n * sizeof *v);
    for (int64_t i = 0; i < n; i++) {
        bool near;
        do {
            v[i] = harness_uniform(&g_rng, lo, hi);
            near = false;
            for (int k = 0; k < n_kinks; k++) near = near || fabsf(v[i] - kinks[k]) < margin;
        } while (near);
    }
    bg_tensor *t = param_v(ctx, ndim, shape, v);
    free(v);
    return t;
}

/* Normal(0, std) from the library's RNG (bg_tensor_fill_randn). */
static bg_tensor *param_n(bg_ctx *ctx, int ndim, const int64_t *shape, float std)
{
    bg_tensor *t = pool_add(bg_param(ctx, NULL, ndim, shape));
    if (t) bg_tensor_fill_randn(t, 0.0f, std);
    return t;
}

/* A shuffled arithmetic sequence: all values at least `step` apart, so a perturbation of
 * +-h (h < step / 2) never changes which element is the max. */
static bg_tensor *param_spread(bg_ctx *ctx, int ndim, const int64_t *shape, float step)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    float *v = malloc((size_t)n * sizeof *v);
    for (int64_t i = 0; i < n; i++) v[i] = (float)(i - n / 2) * step;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(harness_lcg(&g_rng) % (uint32_t)(i + 1));
        float tmp = v[i];
        v[i] = v[j];
        v[j] = tmp;
    }
    bg_tensor *t = param_v(ctx, ndim, shape, v);
    free(v);
    return t;
}

/* ---- one build function for every case ---------------------------------------------- */

/* clang-format off */
enum kind {
    K_ADD, K_SUB, K_MUL, K_DIV, K_ADD_SCALAR, K_MUL_SCALAR, K_NEG, K_EXP, K_LOG, K_SQRT,
    K_RSQRT, K_POW, K_ABS, K_CLAMP, K_RELU, K_SILU, K_GELU, K_SIGMOID, K_TANH, K_SUM, K_MEAN,
    K_MAX, K_MATMUL, K_RESHAPE, K_PERMUTE, K_TRANSPOSE, K_SLICE, K_CONCAT, K_CONTIGUOUS,
    K_EMBEDDING, K_SOFTMAX, K_LOG_SOFTMAX, K_CROSS_ENTROPY, K_MSE, K_RMSNORM, K_LAYERNORM,
    K_ROPE, K_ATTENTION, K_DROPOUT, K_WEIGHT_QUANT, K_ACT_QUANT, K_BITLINEAR, K_SWIGLU, K_CUSTOM,
};
/* clang-format on */

typedef struct opcall {
    int kind;
    int axis;
    bool keepdim;
    float f0, f1;
    int64_t i0, i1;
    int perm[BG_MAX_DIMS];
    int ndim; /* target shape (reshape) */
    int64_t shape[BG_MAX_DIMS];
    bool trans_a, trans_b; /* transpose the last two dims of input 0 / 1 first */
    int n_in;              /* concat: number of inputs; norms: weight / bias present */
    const int32_t *ids;    /* embedding ids, cross-entropy targets */
    int ids_ndim;
    int64_t ids_shape[BG_MAX_DIMS];
    const float *x0; /* input 0's values (kink hooks) */
} opcall;

static bg_tensor *last2_t(bg_tensor *t)
{
    if (!t) return NULL;
    int nd = bg_tensor_ndim(t);
    return bg_transpose(t, nd - 2, nd - 1);
}

static bg_tensor *build_op(void *user, bg_tensor *const *in)
{
    const opcall *c = user;
    bg_tensor *a = in[0];
    bg_ctx *ctx = bg_tensor_ctx(a);
    bg_tensor *ids = NULL;
    if (c->ids) ids = bg_from_data(ctx, BG_I32, c->ids_ndim, c->ids_shape, c->ids);
    switch (c->kind) {
    case K_ADD: return bg_add(a, in[1]);
    case K_SUB: return bg_sub(a, in[1]);
    case K_MUL: return bg_mul(a, in[1]);
    case K_DIV: return bg_div(a, in[1]);
    case K_ADD_SCALAR: return bg_add_scalar(a, c->f0);
    case K_MUL_SCALAR: return bg_mul_scalar(a, c->f0);
    case K_NEG: return bg_neg(a);
    case K_EXP: return bg_exp(a);
    case K_LOG: return bg_log(a);
    case K_SQRT: return bg_sqrt(a);
    case K_RSQRT: return bg_rsqrt(a);
    case K_POW: return bg_pow(a, c->f0);
    case K_ABS: return bg_abs(a);
    case K_CLAMP: return bg_clamp(a, c->f0, c->f1);
    case K_RELU: return bg_relu(a);
    case K_SILU: return bg_silu(a);
    case K_GELU: return bg_gelu(a);
    case K_SIGMOID: return bg_sigmoid(a);
    case K_TANH: return bg_tanh(a);
    case K_SUM: return bg_sum(a, c->axis, c->keepdim);
    case K_MEAN: return bg_mean(a, c->axis, c->keepdim);
    case K_MAX: return bg_max(a, c->axis, c->keepdim);
    case K_MATMUL:
        return bg_matmul(c->trans_a ? last2_t(a) : a, c->trans_b ? last2_t(in[1]) : in[1]);
    case K_RESHAPE: return bg_reshape(c->trans_a ? last2_t(a) : a, c->ndim, c->shape);
    case K_PERMUTE: return bg_permute(a, c->perm);
    case K_TRANSPOSE: return bg_transpose(a, (int)c->i0, (int)c->i1);
    case K_SLICE: return bg_slice(a, c->axis, c->i0, c->i1);
    case K_CONCAT: return bg_concat(in, c->n_in, c->axis);
    case K_CONTIGUOUS: return bg_contiguous(last2_t(a));
    case K_EMBEDDING: return bg_embedding(a, ids);
    case K_SOFTMAX: return bg_softmax(a);
    case K_LOG_SOFTMAX: return bg_log_softmax(a);
    case K_CROSS_ENTROPY: return bg_cross_entropy(a, ids, (int)c->i0, c->f0);
    case K_MSE: return bg_mse(a, in[1]);
    case K_RMSNORM: return bg_rmsnorm(a, c->n_in > 1 ? in[1] : NULL, c->f0);
    case K_LAYERNORM:
        return bg_layernorm(a, c->n_in > 1 ? in[1] : NULL, c->n_in > 2 ? in[2] : NULL, c->f0);
    case K_ROPE: return bg_rope(a, (int)c->i0, c->f0, c->i1);
    case K_ATTENTION: return bg_attention(a, in[1], in[2]);
    case K_DROPOUT:
        bg_ctx_seed(ctx, 0xd509u); /* the same mask at every evaluation */
        return bg_dropout(a, c->f0);
    case K_WEIGHT_QUANT: return bg_weight_quant(a, (int)c->i0, c->i1, c->f0);
    case K_ACT_QUANT: return bg_act_quant(a, (int)c->i0, c->keepdim, c->f0);
    case K_BITLINEAR: return bg_bitlinear(a, in[1], (int)c->i0, c->keepdim);
    case K_SWIGLU: return bg_swiglu(a, in[1]);
    case K_CUSTOM: return bg_linear_cross_entropy(a, in[1], ids, (int)c->i0);
    }
    return NULL;
}

static bool gc(bg_ctx *ctx, const char *name, opcall *c, bg_tensor *const *in, int n,
               gc_expect_fn hook)
{
    for (int i = 0; i < n; i++)
        if (!in[i]) return CHECK(false, "%s: could not create input %d", name, i);
    gc_opts o = { .name = name, .expect = hook };
    return gradcheck(ctx, build_op, c, in, n, &o);
}

#include "refs_naive.h"

static void fwd_check(bg_ctx *ctx, const char *name, opcall *c, bg_tensor *const *in,
                      const float *want, int64_t n, double rtol)
{
    bool prev = bg_grad_enable(ctx, false);
    bg_tensor *out = build_op(c, in);
    if (CHECK(out != NULL, "%s: forward failed: %s", name, bg_ctx_error(ctx)) &&
        CHECK(bg_tensor_numel(out) == n, "%s: %lld outputs, want %lld", name,
              (long long)bg_tensor_numel(out), (long long)n)) {
        float *got = harness_read(out);
        check_close(name, got, want, n, rtol, 1e-6);
        free(got);
    }
    bg_ctx_clear_error(ctx);
    bg_step_end(ctx);
    bg_grad_enable(ctx, prev);
}

static float *read_param(bg_tensor *t) { return harness_read(t); }

static void check_shape(bg_ctx *ctx, const char *name, opcall *c, bg_tensor *const *in, int ndim,
                        const int64_t *shape)
{
    bg_tensor *out = build_op(c, in);
    bool ok = out && bg_tensor_ndim(out) == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = bg_tensor_dim(out, i) == shape[i];
    char got[64] = "NULL";
    if (out) harness_shape_str(out, got, sizeof got);
    CHECK(ok, "%s: output shape %s, want %d dims starting [%lld,...]", name, got, ndim,
          (long long)(ndim ? shape[0] : 0));
    bg_ctx_clear_error(ctx);
    bg_step_end(ctx);
}

/* ---- cases ----------------------------------------------------------------------------- */

static void case_binary(bg_ctx *ctx, int kind)
{
    static const char *names[] = { "add", "sub", "mul", "div" };
    static const struct {
        int na, nb;
        int64_t sa[3], sb[3];
    } pairs[] = {
        { 2, 2, { 3, 4 }, { 3, 4 } }, { 2, 1, { 3, 4 }, { 4 } },    { 3, 2, { 2, 1, 4 }, { 3, 1 } },
        { 1, 2, { 4 }, { 3, 4 } },    { 2, 2, { 3, 1 }, { 1, 4 } },
    };
    const float zero = 0.0f;
    for (size_t p = 0; p < sizeof pairs / sizeof pairs[0]; p++) {
        bg_tensor *in[2];
        in[0] = param_u(ctx, pairs[p].na, pairs[p].sa, -2.0f, 2.0f, NULL, 0, 0.0f);
        if (kind == K_DIV) /* denominators at least 0.5 away from 0 */
            in[1] = param_u(ctx, pairs[p].nb, pairs[p].sb, -2.0f, 2.0f, &zero, 1, 0.5f);
        else
            in[1] = param_u(ctx, pairs[p].nb, pairs[p].sb, -2.0f, 2.0f, NULL, 0, 0.0f);
        char name[80];
        snprintf(name, sizeof name, "%s pair %zu", names[kind - K_ADD], p);
        opcall c = { .kind = kind };
        gc(ctx, name, &c, in, 2, NULL);
        if (p == 2) check_shape(ctx, name, &c, in, 3, S(2, 3, 4));
    }
}

static bool hook_zero_at_kink(void *user, int input_idx, int64_t j, double *numeric)
{
    const opcall *c = user;
    if (input_idx != 0 || c->x0[j] != 0.0f) return false;
    *numeric = 0.0; /* relu'(0) = abs'(0) = 0, as torch */
    return true;
}

static void case_unary(bg_ctx *ctx, int kind)
{
    const float zero = 0.0f, bounds[2] = { -0.5f, 0.5f };
    opcall c = { .kind = kind };
    bg_tensor *x = NULL;
    const char *name = g_opname;
    switch (kind) {
    case K_ADD_SCALAR: c.f0 = 2.5f; break;
    case K_MUL_SCALAR: c.f0 = -1.5f; break;
    case K_LOG:
    case K_SQRT:
    case K_RSQRT: x = param_u(ctx, 2, S(3, 5), 0.5f, 3.0f, NULL, 0, 0.0f); break;
    case K_POW:
        c.f0 = 3.0f;
        x = param_u(ctx, 2, S(3, 5), 0.5f, 2.0f, NULL, 0, 0.0f);
        gc(ctx, "pow p=3", &c, &x, 1, NULL);
        c.f0 = 0.5f;
        x = param_u(ctx, 2, S(3, 5), 0.5f, 2.0f, NULL, 0, 0.0f);
        name = "pow p=0.5";
        break;
    case K_ABS:
    case K_RELU: x = param_u(ctx, 2, S(3, 5), -2.0f, 2.0f, &zero, 1, 0.05f); break;
    case K_CLAMP:
        c.f0 = -0.5f, c.f1 = 0.5f;
        x = param_u(ctx, 2, S(3, 5), -1.5f, 1.5f, bounds, 2, 0.05f);
        break;
    default: break;
    }
    if (!x) x = param_u(ctx, 2, S(3, 5), -2.0f, 2.0f, NULL, 0, 0.0f);
    gc(ctx, name, &c, &x, 1, NULL);

    if (kind == K_RELU || kind == K_ABS) { /* at the kink itself, through the hook */
        float v[8] = { 0.0f, 1.0f, -1.5f, 0.0f, 0.7f, -0.3f, 0.0f, 2.0f };
        bg_tensor *xk = param_v(ctx, 1, S(8), v);
        c.x0 = v;
        char nm[64];
        snprintf(nm, sizeof nm, "%s at 0 (hook)", name);
        gc(ctx, nm, &c, &xk, 1, hook_zero_at_kink);
    }
}

static void case_reduce(bg_ctx *ctx, int kind)
{
    static const int axes[] = { 0, 1, -1, BG_AXIS_ALL };
    for (int a = 0; a < 4; a++)
        for (int kd = 0; kd < 2; kd++) {
            bg_tensor *x = kind == K_MAX ? param_spread(ctx, 3, S(3, 4, 5), 0.07f)
                                         : param_u(ctx, 3, S(3, 4, 5), -2.0f, 2.0f, NULL, 0, 0);
            opcall c = { .kind = kind, .axis = axes[a], .keepdim = kd };
            char name[80];
            if (axes[a] == BG_AXIS_ALL)
                snprintf(name, sizeof name, "%s all%s", g_opname, kd ? " keepdim" : "");
            else
                snprintf(name, sizeof name, "%s axis %d%s", g_opname, axes[a],
                         kd ? " keepdim" : "");
            gc(ctx, name, &c, &x, 1, NULL);
            int64_t shp[3] = { 3, 4, 5 };
            int ax = axes[a] < 0 ? 2 : axes[a];
            if (axes[a] != BG_AXIS_ALL) {
                if (kd) {
                    shp[ax] = 1;
                    check_shape(ctx, name, &c, &x, 3, shp);
                } else {
                    int64_t s2[2];
                    for (int i = 0, k = 0; i < 3; i++)
                        if (i != ax) s2[k++] = shp[i];
                    check_shape(ctx, name, &c, &x, 2, s2);
                }
            } else if (kd) {
                check_shape(ctx, name, &c, &x, 3, S(1, 1, 1));
            }
        }

    if (kind == K_MAX) { /* ties: the row's gradient must sum to the seed, whoever gets it */
        float v[6] = { 2.0f, 2.0f, 1.0f, -1.0f, 3.0f, 3.0f };
        bg_tensor *x = param_v(ctx, 2, S(2, 3), v);
        bg_tensor_zero_grad(x);
        bg_tensor *m = bg_sum(bg_max(x, 1, false), BG_AXIS_ALL, false);
        int rc = bg_backward(m);
        float g[6] = { 0 };
        if (CHECK(rc == BG_OK && bg_tensor_grad(x), "max ties: backward failed: %s",
                  bg_ctx_error(ctx))) {
            bg_tensor_read(bg_tensor_grad(x), g);
            CHECK(g[0] + g[1] == 1.0f && g[2] == 0.0f,
                  "max ties: row 0 grad (%g, %g, %g), want a split summing to 1", g[0], g[1], g[2]);
            CHECK(g[4] + g[5] == 1.0f && g[3] == 0.0f,
                  "max ties: row 1 grad (%g, %g, %g), want a split summing to 1", g[3], g[4], g[5]);
        }
        bg_ctx_clear_error(ctx);
        bg_step_end(ctx);
    }
}

static void case_matmul(bg_ctx *ctx, int kind)
{
    static const struct {
        const char *name;
        int na, nb;
        int64_t sa[3], sb[3];
        bool ta, tb;
        int batch, m, k, n;
        bool b_batched;
    } mm[] = {
        { "matmul 2-D", 2, 2, { 3, 4 }, { 4, 5 }, false, false, 1, 3, 4, 5, false },
        { "matmul batched 3-D", 3, 3, { 2, 3, 4 }, { 2, 4, 5 }, false, false, 2, 3, 4, 5, true },
        { "matmul N-D x 2-D", 3, 2, { 2, 3, 4 }, { 4, 5 }, false, false, 2, 3, 4, 5, false },
        { "matmul A x B^T (view)", 2, 2, { 3, 4 }, { 5, 4 }, false, true, 1, 3, 4, 5, false },
        { "matmul A^T (view) x B", 2, 2, { 4, 3 }, { 4, 5 }, true, false, 1, 3, 4, 5, false },
        { "matmul batched x B^T", 3, 3, { 2, 3, 4 }, { 2, 5, 4 }, false, true, 2, 3, 4, 5, true },
        { "matmul N-D x 2-D B^T", 3, 2, { 2, 3, 4 }, { 5, 4 }, false, true, 2, 3, 4, 5, false },
    };
    (void)kind;
    for (size_t i = 0; i < sizeof mm / sizeof mm[0]; i++) {
        bg_tensor *in[2] = { param_n(ctx, mm[i].na, mm[i].sa, 1.0f),
                             param_n(ctx, mm[i].nb, mm[i].sb, 1.0f) };
        opcall c = { .kind = K_MATMUL, .trans_a = mm[i].ta, .trans_b = mm[i].tb };
        gc(ctx, mm[i].name, &c, in, 2, NULL);

        /* forward against the naive product of the (explicitly transposed) operands */
        int bt = mm[i].batch, m = mm[i].m, k = mm[i].k, n = mm[i].n;
        int bb = mm[i].b_batched ? bt : 1;
        float *a = read_param(in[0]), *b = read_param(in[1]);
        float *at = malloc(sizeof(float) * bt * m * k), *btr = malloc(sizeof(float) * bb * k * n);
        float *want = malloc(sizeof(float) * bt * m * n);
        if (mm[i].ta) ref_t(a, at, bt, k, m);
        else
            memcpy(at, a, sizeof(float) * bt * m * k);
        if (mm[i].tb) ref_t(b, btr, bb, n, k);
        else
            memcpy(btr, b, sizeof(float) * bb * k * n);
        ref_matmul(at, btr, want, bt, m, k, n, mm[i].b_batched);
        char name[96];
        snprintf(name, sizeof name, "%s forward", mm[i].name);
        fwd_check(ctx, name, &c, in, want, (int64_t)bt * m * n, 1e-5);
        free(a), free(b), free(at), free(btr), free(want);
    }

    /* No copy for a transposed operand: the forward uses exactly the arena bytes of the
     * same product with a contiguous operand (a copy would need more). */
    bool prev = bg_grad_enable(ctx, false);
    bg_tensor *a = param_n(ctx, 2, S(64, 32), 1.0f), *w = param_n(ctx, 2, S(48, 32), 1.0f);
    bg_tensor *wc = param_n(ctx, 2, S(32, 48), 1.0f);
    bg_ctx_stats s0, s1, s2, s3;
    bg_tensor *wt = bg_transpose(w, 0, 1);
    CHECK(wt && !bg_tensor_is_contiguous(wt) && bg_tensor_data(wt) == bg_tensor_data(w),
          "transpose should be a non-contiguous view of its base");
    bg_ctx_stats_get(ctx, &s0);
    bg_tensor *y1 = bg_matmul(a, wt);
    bg_ctx_stats_get(ctx, &s1);
    bg_step_end(ctx);
    bg_ctx_stats_get(ctx, &s2);
    bg_tensor *y2 = bg_matmul(a, wc);
    bg_ctx_stats_get(ctx, &s3);
    CHECK(y1 && y2 && s1.arena_used - s0.arena_used == s3.arena_used - s2.arena_used,
          "matmul with a transposed view used %zu arena bytes, contiguous %zu (a copy?)",
          s1.arena_used - s0.arena_used, s3.arena_used - s2.arena_used);
    CHECK(s1.matmul_calls - s0.matmul_calls == 1, "2-D matmul issued %llu GEMMs, want 1",
          (unsigned long long)(s1.matmul_calls - s0.matmul_calls));
    bg_step_end(ctx);
    bg_grad_enable(ctx, prev);
}

static void case_shape(bg_ctx *ctx, int kind)
{
    opcall c = { .kind = kind };
    bg_tensor *x;
    switch (kind) {
    case K_RESHAPE: {
        static const struct {
            int nd;
            int64_t s[3];
            bool t;
        } rs[] = { { 2, { 2, -1 }, false },
                   { 3, { 2, 3, 2 }, false },
                   { 1, { -1 }, true },
                   { 2, { 6, 2 }, true } };
        for (int i = 0; i < 4; i++) {
            x = param_u(ctx, 2, S(3, 4), -2.0f, 2.0f, NULL, 0, 0);
            c.ndim = rs[i].nd;
            c.trans_a = rs[i].t;
            memcpy(c.shape, rs[i].s, sizeof rs[i].s);
            char name[64];
            snprintf(name, sizeof name, "reshape %d%s", i, rs[i].t ? " of a transposed view" : "");
            gc(ctx, name, &c, &x, 1, NULL);
        }
        c.ndim = 2, c.trans_a = false, c.shape[0] = 2, c.shape[1] = -1;
        check_shape(ctx, "reshape [3,4] -> [2,-1]", &c, &x, 2, S(2, 6));
        return;
    }
    case K_PERMUTE:
        x = param_u(ctx, 3, S(2, 3, 4), -2.0f, 2.0f, NULL, 0, 0);
        c.perm[0] = 2, c.perm[1] = 0, c.perm[2] = 1;
        gc(ctx, "permute {2,0,1}", &c, &x, 1, NULL);
        check_shape(ctx, "permute {2,0,1}", &c, &x, 3, S(4, 2, 3));
        return;
    case K_TRANSPOSE:
        x = param_u(ctx, 2, S(3, 4), -2.0f, 2.0f, NULL, 0, 0);
        c.i0 = 0, c.i1 = 1;
        gc(ctx, "transpose 2-D", &c, &x, 1, NULL);
        x = param_u(ctx, 3, S(2, 3, 4), -2.0f, 2.0f, NULL, 0, 0);
        c.i0 = 0, c.i1 = 2;
        gc(ctx, "transpose 3-D (0,2)", &c, &x, 1, NULL);
        check_shape(ctx, "transpose 3-D (0,2)", &c, &x, 3, S(4, 3, 2));
        return;
    case K_SLICE:
        x = param_u(ctx, 2, S(4, 6), -2.0f, 2.0f, NULL, 0, 0);
        c.axis = 1, c.i0 = 2, c.i1 = 5;
        gc(ctx, "slice axis 1 [2,5)", &c, &x, 1, NULL);
        check_shape(ctx, "slice axis 1 [2,5)", &c, &x, 2, S(4, 3));
        c.axis = 0, c.i0 = 1, c.i1 = 3;
        gc(ctx, "slice axis 0 [1,3)", &c, &x, 1, NULL);
        return;
    case K_CONCAT: {
        bg_tensor *in[3] = { param_u(ctx, 2, S(2, 3), -2, 2, NULL, 0, 0),
                             param_u(ctx, 2, S(1, 3), -2, 2, NULL, 0, 0),
                             param_u(ctx, 2, S(3, 3), -2, 2, NULL, 0, 0) };
        c.n_in = 3, c.axis = 0;
        gc(ctx, "concat 3 along axis 0", &c, in, 3, NULL);
        check_shape(ctx, "concat 3 along axis 0", &c, in, 2, S(6, 3));
        bg_tensor *in2[3] = { param_u(ctx, 2, S(2, 1), -2, 2, NULL, 0, 0),
                              param_u(ctx, 2, S(2, 3), -2, 2, NULL, 0, 0),
                              param_u(ctx, 2, S(2, 2), -2, 2, NULL, 0, 0) };
        c.axis = 1;
        gc(ctx, "concat 3 along axis 1", &c, in2, 3, NULL);
        check_shape(ctx, "concat 3 along axis 1", &c, in2, 2, S(2, 6));
        return;
    }
    case K_CONTIGUOUS:
        x = param_u(ctx, 2, S(3, 4), -2.0f, 2.0f, NULL, 0, 0);
        gc(ctx, "contiguous of a transposed view", &c, &x, 1, NULL);
        bg_tensor *y = bg_contiguous(bg_transpose(x, 0, 1));
        CHECK(y && bg_tensor_is_contiguous(y) && bg_tensor_dim(y, 0) == 4,
              "contiguous: result not a contiguous [4,3]");
        bg_step_end(ctx);
        return;
    }
}

static void case_embedding(bg_ctx *ctx, int kind)
{
    static const int32_t ids[6] = { 1, 4, 1, 0, 5, 1 }; /* id 1 three times */
    opcall c = { .kind = kind, .ids = ids, .ids_ndim = 2, .ids_shape = { 2, 3 } };
    bg_tensor *w = param_u(ctx, 2, S(6, 4), -2.0f, 2.0f, NULL, 0, 0);
    gc(ctx, "embedding [6,4][ids 2x3]", &c, &w, 1, NULL);
    check_shape(ctx, "embedding", &c, &w, 3, S(2, 3, 4));
    float *wv = read_param(w), want[24];
    for (int i = 0; i < 6; i++) memcpy(want + 4 * i, wv + 4 * ids[i], 4 * sizeof(float));
    fwd_check(ctx, "embedding forward", &c, &w, want, 24, 0.0);
    free(wv);
}

static void case_softmax(bg_ctx *ctx, int kind)
{
    opcall c = { .kind = kind };
    bool lf = kind == K_LOG_SOFTMAX;
    bg_tensor *x = param_n(ctx, 2, S(3, 5), 2.0f);
    gc(ctx, lf ? "log_softmax [3,5]" : "softmax [3,5]", &c, &x, 1, NULL);
    bg_tensor *x3 = param_n(ctx, 3, S(2, 3, 4), 2.0f);
    gc(ctx, lf ? "log_softmax [2,3,4]" : "softmax [2,3,4]", &c, &x3, 1, NULL);
    float *v = read_param(x3), want[24];
    ref_softmax(v, want, 6, 4, lf);
    fwd_check(ctx, lf ? "log_softmax forward" : "softmax forward", &c, &x3, want, 24, 1e-5);
    free(v);
    /* large logits must not overflow */
    float big[4] = { 1000.0f, 999.0f, -1000.0f, 998.0f }, wb[4];
    bg_tensor *xb = param_v(ctx, 2, S(1, 4), big);
    ref_softmax(big, wb, 1, 4, lf);
    fwd_check(ctx, lf ? "log_softmax forward, logits ~1000" : "softmax forward, logits ~1000", &c,
              &xb, wb, 4, 1e-5);
}

static void case_cross_entropy(bg_ctx *ctx, int kind)
{
    static const int32_t t4[4] = { 2, -100, 5, 0 };
    static const int32_t t6[6] = { 0, 4, 4, 1, 3, 2 };
    static const struct {
        const char *name;
        const int32_t *t;
        int nd;
        int64_t sx[3], st[2];
        float eps;
    } ce[] = {
        { "cross_entropy ignore_index row 1", t4, 2, { 4, 6 }, { 4 }, 0.0f },
        { "cross_entropy ignore + smoothing 0.1", t4, 2, { 4, 6 }, { 4 }, 0.1f },
        { "cross_entropy [2,3,5] smoothing 0.1", t6, 3, { 2, 3, 5 }, { 2, 3 }, 0.1f },
    };
    for (int i = 0; i < 3; i++) {
        opcall c = {
            .kind = kind, .ids = ce[i].t, .ids_ndim = ce[i].nd - 1, .i0 = -100, .f0 = ce[i].eps
        };
        memcpy(c.ids_shape, ce[i].st, sizeof ce[i].st);
        bg_tensor *x = param_n(ctx, ce[i].nd, ce[i].sx, 1.5f);
        gc(ctx, ce[i].name, &c, &x, 1, NULL);
        float *v = read_param(x);
        int v_dim = (int)ce[i].sx[ce[i].nd - 1];
        int rows = (int)(bg_tensor_numel(x) / v_dim);
        float want = (float)ref_cross_entropy(v, ce[i].t, rows, v_dim, -100, ce[i].eps);
        char name[96];
        snprintf(name, sizeof name, "%s forward", ce[i].name);
        fwd_check(ctx, name, &c, &x, &want, 1, 1e-5);
        free(v);
        if (i == 0) { /* the ignored row gets exactly zero gradient */
            bg_tensor_zero_grad(x);
            bg_tensor *l = build_op(&c, &x);
            float g[24] = { 0 };
            if (CHECK(bg_backward(l) == BG_OK, "cross_entropy backward: %s", bg_ctx_error(ctx))) {
                bg_tensor_read(bg_tensor_grad(x), g);
                bool zero = true;
                for (int j = 6; j < 12; j++) zero = zero && g[j] == 0.0f;
                CHECK(zero, "cross_entropy: ignored row has a nonzero gradient");
            }
            bg_ctx_clear_error(ctx);
            bg_step_end(ctx);
        }
    }
}

static void case_mse(bg_ctx *ctx, int kind)
{
    opcall c = { .kind = kind };
    bg_tensor *in[2] = { param_n(ctx, 2, S(3, 4), 1.0f), param_n(ctx, 2, S(3, 4), 1.0f) };
    gc(ctx, "mse [3,4]", &c, in, 2, NULL);
    float *a = read_param(in[0]), *b = read_param(in[1]);
    double s = 0.0;
    for (int i = 0; i < 12; i++) s += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    float want = (float)(s / 12.0);
    fwd_check(ctx, "mse forward (mean)", &c, in, &want, 1, 1e-5);
    free(a), free(b);
}

static void case_norm(bg_ctx *ctx, int kind)
{
    bool rms = kind == K_RMSNORM;
    for (int with = 0; with < 2; with++) {
        opcall c = { .kind = kind, .f0 = 1e-5f, .n_in = with ? (rms ? 2 : 3) : 1 };
        bg_tensor *in[3] = { param_n(ctx, 2, S(3, 8), 1.0f),
                             param_u(ctx, 1, S(8), 0.5f, 1.5f, NULL, 0, 0),
                             param_n(ctx, 1, S(8), 0.5f) };
        char name[64];
        snprintf(name, sizeof name, "%s %s", rms ? "rmsnorm" : "layernorm",
                 with ? (rms ? "with weight" : "with weight+bias") : "without weight");
        gc(ctx, name, &c, in, c.n_in, NULL);
        if (rms) {
            float *x = read_param(in[0]), *w = read_param(in[1]), want[24];
            ref_rmsnorm(x, with ? w : NULL, want, 3, 8, 1e-5);
            snprintf(name, sizeof name, "rmsnorm forward %s", with ? "with weight" : "no weight");
            fwd_check(ctx, name, &c, in, want, 24, 1e-5);
            free(x), free(w);
        }
    }
}

static void case_rope(bg_ctx *ctx, int kind)
{
    for (int r = 0; r < 2; r++) {
        int n_rot = r ? 4 : 8;
        opcall c = { .kind = kind, .i0 = n_rot, .i1 = 3, .f0 = 10000.0f };
        bg_tensor *x = param_n(ctx, 4, S(2, 5, 3, 8), 1.0f);
        char name[64];
        snprintf(name, sizeof name, "rope [2,5,3,8] n_rot %d pos0 3", n_rot);
        gc(ctx, name, &c, &x, 1, NULL);
        float *v = read_param(x), *want = malloc(240 * sizeof(float));
        ref_rope(v, want, 2, 5, 3, 8, n_rot, 10000.0, 3);
        snprintf(name, sizeof name, "rope forward n_rot %d", n_rot);
        fwd_check(ctx, name, &c, &x, want, 240, 1e-5);
        free(v), free(want);
    }
}

static void case_attention(bg_ctx *ctx, int kind)
{
    /* T = 70 spans three of the CPU kernel's 32-row causal blocks, the last one ragged */
    static const int cfg[][4] = { { 2, 5, 2, 2 }, { 2, 5, 4, 2 }, { 1, 70, 4, 2 }, { 1, 70, 2, 2 } };
    for (size_t ci = 0; ci < sizeof cfg / sizeof cfg[0]; ci++) {
        int B = cfg[ci][0], T = cfg[ci][1], h = cfg[ci][2], hkv = cfg[ci][3];
        opcall c = { .kind = kind };
        bg_tensor *in[3] = { param_n(ctx, 4, S(B, T, h, 4), 1.0f),
                             param_n(ctx, 4, S(B, T, hkv, 4), 1.0f),
                             param_n(ctx, 4, S(B, T, hkv, 4), 1.0f) };
        char name[64];
        snprintf(name, sizeof name, "attention B%d T%d H%d Hkv%d D4", B, T, h, hkv);
        gc(ctx, name, &c, in, 3, NULL);
        float *q = read_param(in[0]), *k = read_param(in[1]), *v = read_param(in[2]);
        float *want = malloc(sizeof(float) * (size_t)(B * T * h * 4));
        ref_attention(q, k, v, want, B, T, h, hkv, 4);
        snprintf(name, sizeof name, "attention forward B%d T%d H%d Hkv%d", B, T, h, hkv);
        fwd_check(ctx, name, &c, in, want, B * T * h * 4, 1e-5);
        free(q), free(k), free(v), free(want);
    }
}

static void case_dropout(bg_ctx *ctx, int kind)
{
    opcall c = { .kind = kind, .f0 = 0.3f };
    bg_tensor *x = param_u(ctx, 2, S(4, 5), -2.0f, 2.0f, NULL, 0, 0);
    bool prev = bg_ctx_set_training(ctx, true);
    gc(ctx, "dropout p=0.3 (fixed seed)", &c, &x, 1, NULL);

    /* training: each output is 0 or x / (1 - p); about p of them are dropped */
    bg_tensor *big = param_u(ctx, 1, S(2000), 0.5f, 1.5f, NULL, 0, 0);
    float *xv = read_param(big), *y = NULL, *y2 = NULL;
    bg_ctx_seed(ctx, 99);
    y = harness_read(bg_dropout(big, 0.3f));
    bg_ctx_seed(ctx, 99);
    y2 = harness_read(bg_dropout(big, 0.3f));
    if (CHECK(y && y2, "dropout failed: %s", bg_ctx_error(ctx))) {
        int dropped = 0, bad = 0;
        for (int i = 0; i < 2000; i++) {
            if (y[i] == 0.0f) dropped++;
            else if (fabsf(y[i] - xv[i] / 0.7f) > 1e-6f * fabsf(y[i]))
                bad++;
        }
        CHECK(bad == 0, "dropout: %d kept values are not x / (1 - p)", bad);
        CHECK(dropped > 500 && dropped < 700, "dropout p=0.3 dropped %d of 2000", dropped);
        check_bitwise("dropout same seed, same mask", y2, y, 2000);
    }
    free(y), free(y2);
    bg_step_end(ctx);

    /* eval mode: the input unchanged */
    bg_ctx_set_training(ctx, false);
    y = harness_read(bg_dropout(big, 0.3f));
    if (CHECK(y != NULL, "dropout in eval mode failed: %s", bg_ctx_error(ctx)))
        check_bitwise("dropout eval mode returns the input", y, xv, 2000);
    free(y), free(xv);
    bg_step_end(ctx);
    bg_ctx_set_training(ctx, prev);
}

static void ste_identity(bg_ctx *ctx, const char *name, opcall *c, bg_tensor *x)
{
    int64_t n = bg_tensor_numel(x);
    float *seed = malloc((size_t)n * sizeof *seed);
    for (int64_t i = 0; i < n; i++) seed[i] = harness_uniform(&g_rng, -1.0f, 1.0f);
    bg_tensor_zero_grad(x);
    bg_tensor *y = build_op(c, &x);
    int rc = y ? bg_backward_seed(
                     y, bg_from_data(ctx, BG_F32, bg_tensor_ndim(y), bg_tensor_shape(y), seed))
               : BG_EINVAL;
    float *g = rc == BG_OK ? harness_read(bg_tensor_grad(x)) : NULL;
    if (CHECK(g != NULL, "%s: backward failed: %s", name, bg_ctx_error(ctx))) {
        char nm[160];
        snprintf(nm, sizeof nm, "%s: gradient is the identity", name);
        check_bitwise(nm, g, seed, n);
    }
    free(g), free(seed);
    bg_ctx_clear_error(ctx);
    bg_step_end(ctx);
}

static void case_quant(bg_ctx *ctx, int kind)
{
    static const float lambdas[3] = { 1.0f, 0.5f, 0.0f };
    for (int m = 0; m < 3; m++)
        for (int l = 0; l < 3; l++) {
            opcall c = { .kind = kind, .f0 = lambdas[l] };
            char name[96];
            bg_tensor *x = param_n(ctx, 2, S(6, 16), 1.0f);
            float *xv = read_param(x), want[96];
            if (kind == K_WEIGHT_QUANT) {
                c.i0 = m, c.i1 = 8;
                ref_weight_quant(xv, want, 6, 16, m, 8, lambdas[l]);
                snprintf(name, sizeof name, "weight_quant mode %d%s lambda %.1f", m,
                         m == 2 ? " group 8" : "", lambdas[l]);
            } else {
                static const int bits[3] = { 8, 4, 2 };
                c.i0 = bits[m], c.keepdim = m == 1; /* keepdim: per tensor */
                ref_act_quant(xv, want, m == 1 ? 1 : 6, m == 1 ? 96 : 16, bits[m], lambdas[l]);
                snprintf(name, sizeof name, "act_quant %d bits %s lambda %.1f", bits[m],
                         m == 1 ? "per tensor" : "per token", lambdas[l]);
            }
            fwd_check(ctx, name, &c, &x, want, 96, 1e-6);
            ste_identity(ctx, name, &c, x);
            free(xv);
        }
}

/* Fused BitLinear: forward = ActQ(x) . WQ(w)^T, backward the STE pair dX = dY W_q and
 * dW = dY^T x_q; checked against naive products of the reference quantizers. */
static void bitlinear_shared_input(bg_ctx *ctx);

static void case_bitlinear(bg_ctx *ctx, int kind)
{
    enum { ROWS = 6, IN = 16, OUT = 8 };
    for (int v = 0; v < 3; v++) {
        int bits = v == 2 ? 4 : 8;
        bool per_row = v == 1;
        opcall c = { .kind = kind, .i0 = bits, .keepdim = per_row };
        bg_tensor *in[2] = { param_n(ctx, 3, S(2, 3, IN), 1.0f),
                             param_n(ctx, 2, S(OUT, IN), 1.0f) };
        float *x = read_param(in[0]), *w = read_param(in[1]);
        float xq[ROWS * IN], wq[OUT * IN], wqt[IN * OUT], y[ROWS * OUT], seed[ROWS * OUT];
        float dx[ROWS * IN], dw[OUT * IN], seedt[OUT * ROWS];
        ref_act_quant(x, xq, ROWS, IN, bits, 1.0f);
        ref_weight_quant(w, wq, OUT, IN, per_row ? 1 : 0, 0, 1.0f);
        ref_t(wq, wqt, 1, OUT, IN);
        ref_matmul(xq, wqt, y, 1, ROWS, IN, OUT, false);
        char name[96];
        snprintf(name, sizeof name, "bitlinear %d bits %s forward", bits,
                 per_row ? "per-row" : "per-tensor");
        fwd_check(ctx, name, &c, in, y, ROWS * OUT, 1e-5);

        for (int i = 0; i < ROWS * OUT; i++) seed[i] = harness_uniform(&g_rng, -1.0f, 1.0f);
        ref_matmul(seed, wq, dx, 1, ROWS, OUT, IN, false);
        ref_t(seed, seedt, 1, ROWS, OUT);
        ref_matmul(seedt, xq, dw, 1, OUT, ROWS, IN, false);
        bg_tensor_zero_grad(in[0]);
        bg_tensor_zero_grad(in[1]);
        bg_tensor *out = build_op(&c, in);
        int rc = out ? bg_backward_seed(out, bg_from_data(ctx, BG_F32, 3, S(2, 3, OUT), seed))
                     : BG_EINVAL;
        float *gx = rc == BG_OK ? harness_read(bg_tensor_grad(in[0])) : NULL;
        float *gw = rc == BG_OK ? harness_read(bg_tensor_grad(in[1])) : NULL;
        if (CHECK(gx && gw, "%s: backward failed: %s", name, bg_ctx_error(ctx))) {
            snprintf(name, sizeof name, "bitlinear %d bits %s dX = dY W_q", bits,
                     per_row ? "per-row" : "per-tensor");
            check_close(name, gx, dx, ROWS * IN, 1e-5, 1e-6);
            snprintf(name, sizeof name, "bitlinear %d bits %s dW = dY^T x_q", bits,
                     per_row ? "per-row" : "per-tensor");
            check_close(name, gw, dw, OUT * IN, 1e-5, 1e-6);
        }
        bg_ctx_clear_error(ctx);
        bg_step_end(ctx);
        free(x), free(w), free(gx), free(gw);
    }
    bitlinear_shared_input(ctx);
}

/* bitlinear over one input and several weights (q, k, v of a layer): while the tape holds
 * the input, later calls take the first call's activation levels (op_bitlinear.c). Each
 * result must be the bits of that call made alone; a write to the input in between is
 * refused; with grad mode off (nothing on the tape) a written input is quantized anew. */
static void bitlinear_shared_input(bg_ctx *ctx)
{
    enum { R = 64, K = 256, N = 32 };
    float *xv = malloc(sizeof(float) * R * K), *xv2 = malloc(sizeof(float) * R * K);
    for (int i = 0; i < R * K; i++) {
        xv[i] = harness_uniform(&g_rng, -2.0f, 2.0f);
        xv2[i] = harness_uniform(&g_rng, -2.0f, 2.0f);
    }
    bg_tensor *w1 = param_n(ctx, 2, S(N, K), 1.0f), *w2 = param_n(ctx, 2, S(N, K), 1.0f);
    float *alone = NULL, *shared = NULL, *fresh = NULL, *after = NULL;
    for (int pass = 0; pass < 2; pass++) { /* pass 0: w2 alone; pass 1: w1 first, then w2 */
        bg_tensor *x = bg_from_data(ctx, BG_F32, 2, S(R, K), xv);
        if (pass == 1) bg_bitlinear(x, w1, 8, false);
        float *y = harness_read(bg_bitlinear(x, w2, 8, false));
        if (pass == 1) {
            int rc = bg_tensor_write(x, xv2);
            CHECK(rc == BG_ESTATE, "bitlinear shared input: a write while taped is refused (rc %d)", rc);
            bg_ctx_clear_error(ctx);
        }
        *(pass ? &shared : &alone) = y;
        bg_step_end(ctx);
    }
    CHECK(alone && shared && memcmp(alone, shared, sizeof(float) * R * N) == 0,
          "bitlinear: the second call on one taped input = the call alone, bit for bit");
    bool prev = bg_grad_enable(ctx, false);
    for (int pass = 0; pass < 2; pass++) { /* pass 0: w2 on xv2 alone; pass 1: after a write */
        bg_tensor *x = bg_from_data(ctx, BG_F32, 2, S(R, K), pass ? xv : xv2);
        if (pass == 1) {
            bg_bitlinear(x, w1, 8, false);
            CHECK(bg_tensor_write(x, xv2) == BG_OK, "no grad: the input may be written");
        }
        *(pass ? &after : &fresh) = harness_read(bg_bitlinear(x, w2, 8, false));
        bg_step_end(ctx);
    }
    bg_grad_enable(ctx, prev);
    CHECK(fresh && after && memcmp(fresh, after, sizeof(float) * R * N) == 0,
          "bitlinear without grad: a written input is quantized again");
    free(xv), free(xv2), free(alone), free(shared), free(fresh), free(after);
}

/* swiglu: finite differences, then bit-for-bit the values and gradients of
 * bg_mul(bg_silu(gate), up) on a tensor large enough for threads and a ragged tail. */
static void swiglu_run(bg_ctx *ctx, bool fused, bg_tensor *g, bg_tensor *u, bg_tensor *w,
                       float **y, float **dg, float **du)
{
    bg_tensor_zero_grad(g);
    bg_tensor_zero_grad(u);
    bg_tensor *o = fused ? bg_swiglu(g, u) : bg_mul(bg_silu(g), u);
    bg_tensor *loss = bg_sum(bg_mul(o, w), BG_AXIS_ALL, false);
    CHECK(loss && bg_backward(loss) == BG_OK, "swiglu %s: backward: %s", fused ? "fused" : "composed",
          bg_ctx_error(ctx));
    *y = o ? harness_read(o) : NULL;
    *dg = harness_read(bg_tensor_grad(g));
    *du = harness_read(bg_tensor_grad(u));
    bg_step_end(ctx);
}

static void case_swiglu(bg_ctx *ctx, int kind)
{
    opcall c = { .kind = kind };
    bg_tensor *in[2] = { param_u(ctx, 2, S(3, 5), -3.0f, 3.0f, NULL, 0, 0.0f),
                         param_u(ctx, 2, S(3, 5), -2.0f, 2.0f, NULL, 0, 0.0f) };
    gc(ctx, "swiglu [3,5]", &c, in, 2, NULL);
    bg_tensor *in3[2] = { param_u(ctx, 3, S(2, 3, 7), -6.0f, 6.0f, NULL, 0, 0.0f),
                          param_u(ctx, 3, S(2, 3, 7), -2.0f, 2.0f, NULL, 0, 0.0f) };
    gc(ctx, "swiglu [2,3,7]", &c, in3, 2, NULL);
    bg_tensor *bad = param_u(ctx, 2, S(3, 4), -1.0f, 1.0f, NULL, 0, 0.0f);
    CHECK(bg_swiglu(in[0], bad) == NULL && bg_ctx_error_code(ctx) == BG_ESHAPE,
          "swiglu of [3,5] and [3,4]: want BG_ESHAPE, got %d", bg_ctx_error_code(ctx));
    bg_ctx_clear_error(ctx);
    bg_step_end(ctx);

    int64_t n = 517 * 1031; /* past the threading threshold, not a multiple of a chunk */
    bg_tensor *g = param_u(ctx, 2, S(517, 1031), -8.0f, 8.0f, NULL, 0, 0.0f);
    bg_tensor *u = param_u(ctx, 2, S(517, 1031), -2.0f, 2.0f, NULL, 0, 0.0f);
    bg_tensor *w = param_u(ctx, 2, S(517, 1031), -1.0f, 1.0f, NULL, 0, 0.0f);
    float *y[2], *dg[2], *du[2];
    for (int f = 0; f < 2; f++) swiglu_run(ctx, f == 1, g, u, w, &y[f], &dg[f], &du[f]);
    if (CHECK(y[0] && y[1] && dg[0] && dg[1] && du[0] && du[1], "swiglu: outputs and gradients")) {
        check_bitwise("swiglu value vs mul(silu)", y[1], y[0], n);
        check_bitwise("swiglu d gate vs mul(silu)", dg[1], dg[0], n);
        check_bitwise("swiglu d up vs mul(silu)", du[1], du[0], n);
    }
    for (int f = 0; f < 2; f++) {
        free(y[f]);
        free(dg[f]);
        free(du[f]);
    }
}

/* custom: the op of nodes with their own rule; the fused output projection + cross-entropy is
 * one (bitnet.c's recomputed blocks the other: test_scale checks those bit for bit). Finite
 * differences in h and w, and the forward against logits then the naive cross-entropy. */
static void case_custom(bg_ctx *ctx, int kind)
{
    static const int32_t t5[5] = { 3, -100, 0, 6, 3 };
    opcall c = { .kind = kind, .ids = t5, .ids_ndim = 1, .ids_shape = { 5 }, .i0 = -100 };
    bg_tensor *in[2] = { param_n(ctx, 2, (int64_t[]){ 5, 4 }, 1.5f),
                         param_n(ctx, 2, (int64_t[]){ 7, 4 }, 1.5f) };
    gc(ctx, "linear_cross_entropy [5,4] x [7,4]^T", &c, in, 2, NULL);
    float *h = read_param(in[0]), *w = read_param(in[1]), logits[35];
    for (int r = 0; r < 5; r++)
        for (int v = 0; v < 7; v++) {
            double s = 0.0;
            for (int k = 0; k < 4; k++) s += (double)h[r * 4 + k] * w[v * 4 + k];
            logits[r * 7 + v] = (float)s;
        }
    float want = (float)ref_cross_entropy(logits, t5, 5, 7, -100, 0.0f);
    fwd_check(ctx, "linear_cross_entropy forward", &c, in, &want, 1, 1e-5);
    free(h), free(w);
}

/* ---- the table: one entry per op name of ops.def ------------------------------------------ */

typedef void (*case_fn)(bg_ctx *ctx, int kind);

static const struct {
    const char *op;
    case_fn fn;
    int kind;
} cases[] = {
    { "add", case_binary, K_ADD },
    { "sub", case_binary, K_SUB },
    { "mul", case_binary, K_MUL },
    { "div", case_binary, K_DIV },
    { "add_scalar", case_unary, K_ADD_SCALAR },
    { "mul_scalar", case_unary, K_MUL_SCALAR },
    { "neg", case_unary, K_NEG },
    { "exp", case_unary, K_EXP },
    { "log", case_unary, K_LOG },
    { "sqrt", case_unary, K_SQRT },
    { "rsqrt", case_unary, K_RSQRT },
    { "pow", case_unary, K_POW },
    { "abs", case_unary, K_ABS },
    { "clamp", case_unary, K_CLAMP },
    { "relu", case_unary, K_RELU },
    { "silu", case_unary, K_SILU },
    { "gelu", case_unary, K_GELU },
    { "sigmoid", case_unary, K_SIGMOID },
    { "tanh", case_unary, K_TANH },
    { "sum", case_reduce, K_SUM },
    { "mean", case_reduce, K_MEAN },
    { "max", case_reduce, K_MAX },
    { "matmul", case_matmul, K_MATMUL },
    { "reshape", case_shape, K_RESHAPE },
    { "permute", case_shape, K_PERMUTE },
    { "transpose", case_shape, K_TRANSPOSE },
    { "slice", case_shape, K_SLICE },
    { "concat", case_shape, K_CONCAT },
    { "contiguous", case_shape, K_CONTIGUOUS },
    { "embedding", case_embedding, K_EMBEDDING },
    { "softmax", case_softmax, K_SOFTMAX },
    { "log_softmax", case_softmax, K_LOG_SOFTMAX },
    { "cross_entropy", case_cross_entropy, K_CROSS_ENTROPY },
    { "mse", case_mse, K_MSE },
    { "rmsnorm", case_norm, K_RMSNORM },
    { "layernorm", case_norm, K_LAYERNORM },
    { "rope", case_rope, K_ROPE },
    { "attention", case_attention, K_ATTENTION },
    { "dropout", case_dropout, K_DROPOUT },
    { "weight_quant", case_quant, K_WEIGHT_QUANT },
    { "act_quant", case_quant, K_ACT_QUANT },
    { "bitlinear", case_bitlinear, K_BITLINEAR },
    { "swiglu", case_swiglu, K_SWIGLU },
    { "custom", case_custom, K_CUSTOM },
};

/* One tensor as several inputs of an op (add(x, x), attention(q, q, q)): its gradient must be
 * the sum of the gradients the op gives distinct copies of it. Backward rules store into a new
 * gradient buffer instead of adding to zeros; this checks that a second write through the
 * same tensor still adds. Sizes large enough for the threaded paths. */
enum { AL_ADD, AL_SUB, AL_MUL, AL_DIV, AL_MATMUL, AL_SWIGLU, AL_ATTN, AL_COUNT };

static bg_tensor *alias_op(int op, bg_tensor *a, bg_tensor *b, bg_tensor *c)
{
    switch (op) {
    case AL_ADD: return bg_add(a, b);
    case AL_SUB: return bg_sub(a, b);
    case AL_MUL: return bg_mul(a, b);
    case AL_DIV: return bg_div(a, b);
    case AL_MATMUL: return bg_matmul(a, b);
    case AL_SWIGLU: return bg_swiglu(a, b);
    default: return bg_attention(a, b, c);
    }
}

static void aliased_inputs(bg_ctx *ctx)
{
    static const char *names[AL_COUNT] = { "add", "sub", "mul", "div", "matmul", "swiglu", "attention" };
    for (int op = 0; op < AL_COUNT; op++) {
        int nin = op == AL_ATTN ? 3 : 2;
        int64_t sh[4] = { 2, 64, 4, 16 }; /* attention [B, T, H, D]; others [128, 128] */
        int nd = op == AL_ATTN ? 4 : 2;
        if (nd == 2) sh[0] = sh[1] = 128;
        int64_t n = 1;
        for (int i = 0; i < nd; i++) n *= sh[i];
        float *v = malloc((size_t)n * sizeof *v);
        for (int64_t i = 0; i < n; i++) v[i] = harness_uniform(&g_rng, 0.5f, 1.5f); /* div-safe */
        bg_tensor *x = param_v(ctx, nd, sh, v), *cp[3];
        for (int i = 0; i < nin; i++) cp[i] = param_v(ctx, nd, sh, v);
        float *sum = calloc((size_t)n, sizeof *sum), *got = NULL;
        for (int pass = 0; pass < 2; pass++) { /* 0: distinct copies, 1: x in every slot */
            bg_tensor *y = pass ? alias_op(op, x, x, x) : alias_op(op, cp[0], cp[1], nin > 2 ? cp[2] : NULL);
            bg_tensor *w = y ? bg_from_data(ctx, BG_F32, bg_tensor_ndim(y), bg_tensor_shape(y), v) : NULL;
            bg_tensor *loss = w ? bg_sum(bg_mul(y, w), BG_AXIS_ALL, false) : NULL;
            if (!CHECK(loss && bg_backward(loss) == BG_OK, "aliased %s: %s", names[op], bg_ctx_error(ctx)))
                break;
            if (pass) {
                got = harness_read(bg_tensor_grad(x));
            } else {
                for (int i = 0; i < nin; i++) {
                    float *g = harness_read(bg_tensor_grad(cp[i]));
                    for (int64_t j = 0; g && j < n; j++) sum[j] += g[j];
                    free(g);
                }
            }
            bg_step_end(ctx);
        }
        if (got) {
            char name[64];
            snprintf(name, sizeof name, "%s with one tensor in every input", names[op]);
            check_close(name, got, sum, n, 1e-5, 1e-5);
        }
        free(v), free(sum), free(got);
        pool_free();
    }
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    bg_ctx *ctx = NULL;
    int rc = bg_ctx_create(&ctx, BG_CPU);
    if (!CHECK(rc == BG_OK && ctx, "bg_ctx_create(CPU) returned %d", rc)) return harness_summary();
    bg_ctx_seed(ctx, 1234);

    int n_ops = bg_op_count();
    CHECK(n_ops > 0, "bg_op_count() = %d", n_ops);
    CHECK(bg_op_name(-1) == NULL && bg_op_name(n_ops) == NULL,
          "bg_op_name out of range should be NULL");
    size_t n_cases = sizeof cases / sizeof cases[0];
    bool *used = calloc(n_cases, sizeof *used);
    for (int op = 0; op < n_ops; op++) {
        const char *name = bg_op_name(op);
        size_t i = 0;
        while (i < n_cases && !(name && strcmp(cases[i].op, name) == 0)) i++;
        if (!CHECK(i < n_cases, "op '%s' has no gradient test", name ? name : "(null)")) continue;
        used[i] = true;
        long before = harness_failures();
        printf("op %s\n", name);
        g_opname = name;
        cases[i].fn(ctx, cases[i].kind);
        pool_free();
        bg_ctx_clear_error(ctx);
        bg_step_end(ctx);
        printf("op %-14s %s\n", name, harness_failures() == before ? "ok" : "FAILED");
    }
    for (size_t i = 0; i < n_cases; i++)
        if (!used[i]) printf("note: case '%s' matches no op of ops.def\n", cases[i].op);
    free(used);
    aliased_inputs(ctx);

    bg_ctx_free(&ctx);
    return harness_summary();
}
