/* test_reference.c - suite 'core': bitgrad against PyTorch on two fully specified
 * computations, forward and backward, with fixed weights and inputs (the llm.c-style
 * reference test):
 *   mlp_ce      logits = relu(x W1^T + b1) W2^T + b2, mean cross-entropy with one row
 *               ignored (ignore_index -100);
 *   attn_block  one pre-norm llama block: RMSNorm, NEOX RoPE, causal GQA attention
 *               (4 query heads on 2 kv heads), SiLU-gated FFN; loss = sum(out * R).
 * The inputs are rebuilt with the LCG of tests/refdata.h exactly as tests/data/REFERENCES.md
 * (sections 2, 4.1, 4.2) says; the reference values were computed by PyTorch in float64.
 * Loss, outputs and every gradient must agree within relative 1e-4, the relative error being
 * max|got - ref| / max|ref| per tensor (harness.h check_close); the max differences are
 * printed. Run: meson test -C build --suite core --print-errorlogs */
#include "harness.h"
#include "refdata.h"

#define S(...) ((const int64_t[]){ __VA_ARGS__ })

/* The requirement: every compared tensor within this relative error. */
#define REF_RTOL 1e-4

enum { GEN_FILL, GEN_NORM };

/* A parameter filled by lcg_fill(seed, n, scale), or for GEN_NORM 1 + lcg_fill(...). */
static bg_tensor *lcg_param(bg_ctx *ctx, const char *name, int ndim, const int64_t *shape,
                            uint32_t seed, float scale, int gen)
{
    bg_tensor *t = bg_param(ctx, name, ndim, shape);
    if (!t) return NULL;
    size_t n = (size_t)bg_tensor_numel(t);
    float *v = malloc(n * sizeof *v);
    if (!v) {
        bg_tensor_free(&t);
        return NULL;
    }
    (gen == GEN_NORM ? bgref_lcg_norm : bgref_lcg_fill)(seed, n, scale, v);
    if (bg_tensor_write(t, v) != BG_OK) bg_tensor_free(&t);
    free(v);
    return t;
}

/* Compares a tensor's values with entry `name` of the reference (same element count, and the
 * same shape when t has as many dims as the entry). */
static void compare(const bgref *ref, const char *name, const bg_tensor *t)
{
    const bgref_entry *e = bgref_find(ref, name);
    char what[80];
    snprintf(what, sizeof what, "%s", name);
    if (!CHECK(e != NULL, "reference has no entry '%s'", name)) return;
    if (!CHECK(t != NULL, "%s: bitgrad produced no tensor (gradient missing?)", name)) return;
    bool same_shape = (size_t)bg_tensor_numel(t) == e->numel;
    if (same_shape && bg_tensor_ndim(t) == e->ndim)
        for (int d = 0; d < e->ndim; d++)
            same_shape = same_shape && bg_tensor_dim(t, d) == e->shape[d];
    if (!CHECK(same_shape, "%s: bitgrad has %lld values, the reference %zu (or shapes differ)",
               name, (long long)bg_tensor_numel(t), e->numel))
        return;
    float *got = harness_read(t);
    if (!CHECK(got != NULL, "%s: cannot read the tensor", name)) return;
    check_close(what, got, e->data, (int64_t)e->numel, REF_RTOL, 0.0);
    free(got);
}

/* Compares a one-element tensor with a scalar entry, printing both values. */
static void compare_scalar(const bgref *ref, const char *name, const bg_tensor *t)
{
    const bgref_entry *e = bgref_find(ref, name);
    if (!CHECK(e && e->numel == 1, "reference has no scalar '%s'", name)) return;
    if (!CHECK(t && bg_tensor_numel(t) == 1, "%s: bitgrad produced no scalar", name)) return;
    float got = bg_item(t);
    printf("  %s = %.9g (PyTorch %.9g)\n", name, (double)got, (double)e->data[0]);
    check_close(name, &got, e->data, 1, REF_RTOL, 0.0);
}

/* I32 step tensor of n labels. */
static bg_tensor *labels_tensor(bg_ctx *ctx, const int32_t *v, int64_t n)
{
    return bg_from_data(ctx, BG_I32, 1, S(n), v);
}

/* ---- mlp_ce (REFERENCES.md 4.1) ----------------------------------------------------------- */

static void test_mlp_ce(bg_ctx *ctx)
{
    printf("mlp_ce: relu MLP 16 -> 32 -> 10, cross-entropy with ignore_index -100\n");
    bgref *ref = bgref_load_case("mlp_ce");
    if (!CHECK(ref != NULL, "cannot load mlp_ce.bgref (BG_TEST_DATA=%s)", bgref_data_dir())) return;
    bg_tensor *x = lcg_param(ctx, "x", 2, S(8, 16), 11, 1.0f, GEN_FILL);
    bg_tensor *W1 = lcg_param(ctx, "W1", 2, S(32, 16), 12, 0.25f, GEN_FILL);
    bg_tensor *b1 = lcg_param(ctx, "b1", 1, S(32), 13, 0.1f, GEN_FILL);
    bg_tensor *W2 = lcg_param(ctx, "W2", 2, S(10, 32), 14, 0.25f, GEN_FILL);
    bg_tensor *b2 = lcg_param(ctx, "b2", 1, S(10), 15, 0.1f, GEN_FILL);
    int32_t targets[8];
    bgref_lcg_labels(16, 8, 10, targets);
    targets[3] = -100;

    bg_tensor *h = bg_relu(bg_add(bg_matmul(x, bg_transpose(W1, 0, 1)), b1));
    bg_tensor *logits = bg_add(bg_matmul(h, bg_transpose(W2, 0, 1)), b2);
    bg_tensor *loss = bg_cross_entropy(logits, labels_tensor(ctx, targets, 8), -100, 0.0f);
    int rc = bg_backward(loss);
    if (CHECK(loss && rc == BG_OK, "mlp_ce: forward/backward failed (%d): %s", rc,
              bg_ctx_error(ctx))) {
        compare_scalar(ref, "loss", loss);
        compare(ref, "logits", logits);
        compare(ref, "dx", bg_tensor_grad(x));
        compare(ref, "dW1", bg_tensor_grad(W1));
        compare(ref, "db1", bg_tensor_grad(b1));
        compare(ref, "dW2", bg_tensor_grad(W2));
        compare(ref, "db2", bg_tensor_grad(b2));
    }
    bg_step_end(ctx);
    bg_tensor *all[] = { x, W1, b1, W2, b2 };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) bg_tensor_free(&all[i]);
    bgref_free(ref);
}

/* ---- attn_block (REFERENCES.md 4.2) ------------------------------------------------------- */

enum { B_ = 2, T_ = 8, C_ = 32, NH = 4, NKV = 2, HD = 8, FF = 64 };

typedef struct llama_block {
    bg_tensor *attn_norm, *Wq, *Wk, *Wv, *Wo, *ffn_norm, *Wg, *Wu, *Wd;
} llama_block;

static bg_tensor *lin(bg_tensor *a, bg_tensor *W) { return bg_matmul(a, bg_transpose(W, 0, 1)); }

/* h = rms(x) attn_norm; attention with RoPE; x1 = x + Wo a; out = x1 + Wd (silu(Wg h2) Wu h2). */
static bg_tensor *llama_block_forward(const llama_block *w, bg_tensor *x)
{
    const float eps = 1e-5f;
    bg_tensor *h = bg_rmsnorm(x, w->attn_norm, eps);
    bg_tensor *q = bg_reshape(lin(h, w->Wq), 4, S(B_, T_, NH, HD));
    bg_tensor *k = bg_reshape(lin(h, w->Wk), 4, S(B_, T_, NKV, HD));
    bg_tensor *v = bg_reshape(lin(h, w->Wv), 4, S(B_, T_, NKV, HD));
    q = bg_rope(q, HD, 10000.0f, 0);
    k = bg_rope(k, HD, 10000.0f, 0);
    bg_tensor *a = bg_reshape(bg_attention(q, k, v), 3, S(B_, T_, C_));
    bg_tensor *x1 = bg_add(x, lin(a, w->Wo));
    bg_tensor *h2 = bg_rmsnorm(x1, w->ffn_norm, eps);
    bg_tensor *f = bg_mul(bg_silu(lin(h2, w->Wg)), lin(h2, w->Wu));
    return bg_add(x1, lin(f, w->Wd));
}

static void test_attn_block(bg_ctx *ctx)
{
    printf("attn_block: pre-norm llama block (RMSNorm, RoPE NEOX, causal GQA 4/2, SwiGLU)\n");
    bgref *ref = bgref_load_case("attn_block");
    if (!CHECK(ref != NULL, "cannot load attn_block.bgref (BG_TEST_DATA=%s)", bgref_data_dir()))
        return;
    bg_tensor *x = lcg_param(ctx, "x", 3, S(B_, T_, C_), 21, 1.0f, GEN_FILL);
    llama_block w = {
        .attn_norm = lcg_param(ctx, "attn_norm", 1, S(C_), 22, 0.1f, GEN_NORM),
        .Wq = lcg_param(ctx, "Wq", 2, S(C_, C_), 23, 0.2f, GEN_FILL),
        .Wk = lcg_param(ctx, "Wk", 2, S(NKV * HD, C_), 24, 0.2f, GEN_FILL),
        .Wv = lcg_param(ctx, "Wv", 2, S(NKV * HD, C_), 25, 0.2f, GEN_FILL),
        .Wo = lcg_param(ctx, "Wo", 2, S(C_, C_), 26, 0.2f, GEN_FILL),
        .ffn_norm = lcg_param(ctx, "ffn_norm", 1, S(C_), 27, 0.1f, GEN_NORM),
        .Wg = lcg_param(ctx, "Wg", 2, S(FF, C_), 28, 0.2f, GEN_FILL),
        .Wu = lcg_param(ctx, "Wu", 2, S(FF, C_), 29, 0.2f, GEN_FILL),
        .Wd = lcg_param(ctx, "Wd", 2, S(C_, FF), 30, 0.2f, GEN_FILL),
    };
    bg_tensor *R = lcg_param(ctx, "R", 3, S(B_, T_, C_), 31, 1.0f, GEN_FILL);
    bg_tensor_set_requires_grad(R, false);

    bg_tensor *out = llama_block_forward(&w, x);
    bg_tensor *loss = bg_sum(bg_mul(out, R), BG_AXIS_ALL, false);
    int rc = bg_backward(loss);
    if (CHECK(loss && rc == BG_OK, "attn_block: forward/backward failed (%d): %s", rc,
              bg_ctx_error(ctx))) {
        compare_scalar(ref, "loss", loss);
        compare(ref, "out", out);
        compare(ref, "dx", bg_tensor_grad(x));
        compare(ref, "d_attn_norm", bg_tensor_grad(w.attn_norm));
        compare(ref, "dWq", bg_tensor_grad(w.Wq));
        compare(ref, "dWk", bg_tensor_grad(w.Wk));
        compare(ref, "dWv", bg_tensor_grad(w.Wv));
        compare(ref, "dWo", bg_tensor_grad(w.Wo));
        compare(ref, "d_ffn_norm", bg_tensor_grad(w.ffn_norm));
        compare(ref, "dWg", bg_tensor_grad(w.Wg));
        compare(ref, "dWu", bg_tensor_grad(w.Wu));
        compare(ref, "dWd", bg_tensor_grad(w.Wd));
    }
    bg_step_end(ctx);
    bg_tensor *all[] = { x, R, w.attn_norm, w.Wq, w.Wk, w.Wv, w.Wo, w.ffn_norm, w.Wg, w.Wu, w.Wd };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) bg_tensor_free(&all[i]);
    bgref_free(ref);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    bg_ctx *ctx = NULL;
    int rc = bg_ctx_create(&ctx, BG_CPU);
    if (!CHECK(rc == BG_OK && ctx, "bg_ctx_create(CPU) returned %d", rc)) return harness_summary();
    test_mlp_ce(ctx);
    test_attn_block(ctx);
    CHECK(bg_ctx_error_code(ctx) == BG_OK, "sticky error left on the ctx: %s", bg_ctx_error(ctx));
    bg_ctx_free(&ctx);
    return harness_summary();
}
