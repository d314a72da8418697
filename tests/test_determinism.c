/* test_determinism.c - suite 'grad': results do not depend on the OpenMP thread count.
 * Sums, RMSNorm forward and both of its gradients, the embedding's scatter-add gradient and
 * causal GQA attention (output, dq, dk, dv) run with 1, 2 and 4 threads and must agree bit
 * for bit (and the big sum must agree with a double-precision sum). Run: ./test_determinism */
#include <omp.h>

#include "harness.h"

#define S(...) ((const int64_t[]){ __VA_ARGS__ })

static uint64_t g_rng = 20240601u;

/* A parameter (requires grad) drawn from Normal(0, std) by the library's RNG. */
static bg_tensor *param_n(bg_ctx *ctx, int ndim, const int64_t *shape, float std)
{
    bg_tensor *t = bg_param(ctx, NULL, ndim, shape);
    if (t) bg_tensor_fill_randn(t, 0.0f, std);
    return t;
}

typedef struct det_result {
    float sum, sum_rows[300];
    float *rms_out, *rms_dw, *rms_dx, *emb_dw;
} det_result;

static void det_run(bg_ctx *ctx, det_result *r, bg_tensor *big, bg_tensor *big2d, bg_tensor *x,
                    bg_tensor *w, bg_tensor *emb, const int32_t *ids, int n_ids, const float *seed)
{
    r->sum = bg_item(bg_sum(big, BG_AXIS_ALL, false));
    bg_tensor_read(bg_sum(big2d, 1, false), r->sum_rows);
    bg_step_end(ctx);

    bg_zero_grad(ctx);
    bg_tensor *y = bg_rmsnorm(x, w, 1e-5f);
    r->rms_out = harness_read(y);
    bg_tensor *sd = bg_from_data(ctx, BG_F32, 2, S(512, 1024), seed);
    CHECK(bg_backward_seed(y, sd) == BG_OK, "rmsnorm backward: %s", bg_ctx_error(ctx));
    r->rms_dw = harness_read(bg_tensor_grad(w));
    r->rms_dx = harness_read(bg_tensor_grad(x));
    bg_step_end(ctx);

    bg_tensor *e = bg_embedding(emb, bg_from_data(ctx, BG_I32, 1, S(n_ids), ids));
    bg_tensor *se = bg_from_data(ctx, BG_F32, 2, S(n_ids, 32), seed);
    CHECK(bg_backward_seed(e, se) == BG_OK, "embedding backward: %s", bg_ctx_error(ctx));
    r->emb_dw = harness_read(bg_tensor_grad(emb));
    bg_step_end(ctx);
}

static void det_free(det_result *r)
{
    free(r->rms_out), free(r->rms_dw), free(r->rms_dx), free(r->emb_dw);
}

static void test_thread_determinism(bg_ctx *ctx)
{
    printf("thread determinism (OpenMP 1 vs 2 vs 4 threads)\n");
    enum { N_IDS = 20000 }; /* N_IDS * 32 >= 512 * 1024 */
    bg_tensor *big = bg_tensor_new(ctx, BG_F32, 1, S(300000));
    bg_tensor *big2d = bg_tensor_new(ctx, BG_F32, 2, S(300, 1000));
    bg_tensor *x = param_n(ctx, 2, S(512, 1024), 1.0f);
    bg_tensor *w = param_n(ctx, 1, S(1024), 0.5f);
    bg_tensor *emb = param_n(ctx, 2, S(64, 32), 1.0f);
    int32_t *ids = malloc(N_IDS * sizeof *ids);
    /* seed gradients: [512,1024] for rmsnorm, [N_IDS,32] for embedding (the larger) */
    float *seed = malloc(N_IDS * 32 * sizeof *seed), *bv = malloc(300000 * sizeof *bv);
    if (!CHECK(big && big2d && x && w && emb && ids && seed && bv, "determinism: setup failed"))
        goto done;
    for (int i = 0; i < N_IDS; i++) ids[i] = (int32_t)(harness_lcg(&g_rng) % 64);
    for (int i = 0; i < N_IDS * 32; i++) seed[i] = harness_uniform(&g_rng, -1.0f, 1.0f);
    for (int i = 0; i < 300000; i++) bv[i] = harness_uniform(&g_rng, -1.0f, 1.0f);
    bg_tensor_write(big, bv);
    bg_tensor_write(big2d, bv);

    int saved = omp_get_max_threads();
    det_result r[3];
    static const int threads[3] = { 1, 2, 4 };
    for (int i = 0; i < 3; i++) {
        omp_set_num_threads(threads[i]);
        det_run(ctx, &r[i], big, big2d, x, w, emb, ids, N_IDS, seed);
    }
    omp_set_num_threads(saved);

    double exact = 0.0;
    for (int i = 0; i < 300000; i++) exact += bv[i];
    float fe = (float)exact;
    check_close("sum of 300000 vs double sum", &r[0].sum, &fe, 1, 1e-5, 1e-4);
    for (int i = 1; i < 3; i++) {
        char nm[80];
        bool all = r[0].rms_out && r[0].rms_dw && r[0].rms_dx && r[0].emb_dw && r[i].rms_out &&
                   r[i].rms_dw && r[i].rms_dx && r[i].emb_dw;
        if (!CHECK(all, "determinism: a run failed")) continue;
        snprintf(nm, sizeof nm, "sum [300000] 1 vs %d threads", threads[i]);
        check_bitwise(nm, &r[i].sum, &r[0].sum, 1);
        snprintf(nm, sizeof nm, "sum [300,1000] axis 1, 1 vs %d threads", threads[i]);
        check_bitwise(nm, r[i].sum_rows, r[0].sum_rows, 300);
        snprintf(nm, sizeof nm, "rmsnorm [512,1024] out, 1 vs %d threads", threads[i]);
        check_bitwise(nm, r[i].rms_out, r[0].rms_out, 512 * 1024);
        snprintf(nm, sizeof nm, "rmsnorm dweight, 1 vs %d threads", threads[i]);
        check_bitwise(nm, r[i].rms_dw, r[0].rms_dw, 1024);
        snprintf(nm, sizeof nm, "rmsnorm dx, 1 vs %d threads", threads[i]);
        check_bitwise(nm, r[i].rms_dx, r[0].rms_dx, 512 * 1024);
        snprintf(nm, sizeof nm, "embedding dweight (20000 ids), 1 vs %d thr", threads[i]);
        check_bitwise(nm, r[i].emb_dw, r[0].emb_dw, 64 * 32);
    }
    for (int i = 0; i < 3; i++) det_free(&r[i]);
done:
    free(ids), free(seed), free(bv);
    bg_tensor_free(&big), bg_tensor_free(&big2d), bg_tensor_free(&x), bg_tensor_free(&w);
    bg_tensor_free(&emb);
}

/* Causal GQA attention (8 query heads sharing 2 kv heads) forward and gradients: threads
 * take heads in forward and kv heads in backward; any thread count must give the same bits. */
static void test_attention_determinism(bg_ctx *ctx)
{
    printf("attention determinism (OpenMP 1 vs 2 vs 4 threads)\n");
    bg_tensor *q = param_n(ctx, 4, S(3, 40, 8, 16), 1.0f),
              *k = param_n(ctx, 4, S(3, 40, 2, 16), 1.0f);
    bg_tensor *v = param_n(ctx, 4, S(3, 40, 2, 16), 1.0f);
    float *res[3][4] = { { NULL } };
    int64_t nq = 3 * 40 * 8 * 16, nkv = 3 * 40 * 2 * 16;
    static const int threads[3] = { 1, 2, 4 };
    int saved = omp_get_max_threads();
    for (int i = 0; q && k && v && i < 3; i++) {
        omp_set_num_threads(threads[i]);
        bg_zero_grad(ctx);
        bg_tensor *o = bg_attention(q, k, v);
        res[i][0] = harness_read(o);
        CHECK(bg_backward(bg_sum(bg_mul(o, o), BG_AXIS_ALL, false)) == BG_OK,
              "attention backward: %s", bg_ctx_error(ctx));
        res[i][1] = harness_read(bg_tensor_grad(q));
        res[i][2] = harness_read(bg_tensor_grad(k));
        res[i][3] = harness_read(bg_tensor_grad(v));
        bg_step_end(ctx);
    }
    omp_set_num_threads(saved);
    static const char *what[4] = { "out", "dq", "dk", "dv" };
    for (int i = 1; i < 3; i++)
        for (int j = 0; j < 4; j++) {
            char nm[80];
            snprintf(nm, sizeof nm, "attention %s, 1 vs %d threads", what[j], threads[i]);
            if (CHECK(res[0][j] && res[i][j], "attention: a run failed"))
                check_bitwise(nm, res[i][j], res[0][j], j == 0 || j == 1 ? nq : nkv);
        }
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++) free(res[i][j]);
    bg_tensor_free(&q), bg_tensor_free(&k), bg_tensor_free(&v);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    bg_ctx *ctx = NULL;
    if (!CHECK(bg_ctx_create(&ctx, BG_CPU) == BG_OK && ctx, "bg_ctx_create"))
        return harness_summary();
    bg_ctx_seed(ctx, 1234);
    test_thread_determinism(ctx);
    test_attention_determinism(ctx);
    bg_ctx_free(&ctx);
    return harness_summary();
}
