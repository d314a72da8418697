/* test_nn.c - suite 'nn': BitLinear and the bitnet model against PyTorch, the straight-
 * through estimator, the quantizers' edge cases and the ternary utilities, inference mode,
 * conversion to BitLinear, the module API and its errors.
 *
 *   reference   W1 BitLinear classifier (w1_bitlinear_exact) and one bitnet block
 *               (bitnet_block): loss, outputs and every gradient within relative 1e-4;
 *               the tiny bitnet transformer's logits (bitnet_model) against torch float32
 *               and an independent float64 implementation.
 *   ste         through BitLinear, dX = dY W_q and dW = dY^T x_q with W_q, x_q from the
 *               ternary.h functions; forward y = (acc * s_w) / s_x bit for bit.
 *   quantizers  zero rows, outliers, ties, the eps floor, per-row / per-group scales,
 *               2..8 activation bits; pack2 / unpack2, sparsity, flips, compression.
 *   modules     inference mode, bg_module_to_bitlinear, GGUF parameter names, counts,
 *               find, freeze, train/eval, Sequential, LayerNorm; errors.
 * Inputs follow tests/data/REFERENCES.md (LCG of tests/refdata.h). Relative error is
 * max|got - ref| / max|ref| per tensor (harness.h check_close).
 * Run: meson test -C build --suite nn --print-errorlogs */
#include "bitgrad/nn.h"
#include "bitgrad/ternary.h"
#include "harness.h"
#include "refdata.h"

#define S(...) ((const int64_t[]){ __VA_ARGS__ })

/* The requirement for everything compared with PyTorch. */
#define REF_RTOL 1e-4

enum { GEN_FILL, GEN_NORM };

/* ---- helpers ------------------------------------------------------------------------------ */

static float *lcg_values(uint32_t seed, size_t n, float scale, int gen)
{
    float *v = malloc((n ? n : 1) * sizeof *v);
    if (!v) return NULL;
    if (gen == GEN_NORM) bgref_lcg_norm(seed, n, scale, v);
    else bgref_lcg_fill(seed, n, scale, v);
    return v;
}

/* Fills tensor t with the LCG values of REFERENCES.md section 2. */
static bool lcg_write(bg_tensor *t, uint32_t seed, float scale, int gen)
{
    if (!t) return false;
    float *v = lcg_values(seed, (size_t)bg_tensor_numel(t), scale, gen);
    bool ok = v && bg_tensor_write(t, v) == BG_OK;
    free(v);
    return ok;
}

/* Fills the parameter called `name` of model m. */
static bool lcg_param_by_name(bg_module *m, const char *name, uint32_t seed, float scale, int gen)
{
    bg_tensor *t = bg_module_find_param(m, name);
    return CHECK(t != NULL, "model has no parameter '%s'", name) &&
           CHECK(lcg_write(t, seed, scale, gen), "cannot write '%s'", name);
}

/* Compares t (values, or NULL) with reference entry `name`: same count (and shape when the
 * ranks agree), then check_close at rtol. */
static void compare(const bgref *ref, const char *name, const bg_tensor *t, double rtol)
{
    const bgref_entry *e = bgref_find(ref, name);
    if (!CHECK(e != NULL, "reference has no entry '%s'", name)) return;
    if (!CHECK(t != NULL, "%s: bitgrad produced no tensor (gradient missing?)", name)) return;
    bool same = (size_t)bg_tensor_numel(t) == e->numel;
    if (same && bg_tensor_ndim(t) == e->ndim)
        for (int d = 0; d < e->ndim; d++) same = same && bg_tensor_dim(t, d) == e->shape[d];
    if (!CHECK(same, "%s: bitgrad has %lld values, the reference %zu (or the shapes differ)",
               name, (long long)bg_tensor_numel(t), e->numel))
        return;
    float *got = harness_read(t);
    if (CHECK(got != NULL, "%s: cannot read", name))
        check_close(name, got, e->data, (int64_t)e->numel, rtol, 0.0);
    free(got);
}

static void compare_scalar(const bgref *ref, const char *name, const bg_tensor *t)
{
    const bgref_entry *e = bgref_find(ref, name);
    if (!CHECK(e && e->numel == 1, "reference has no scalar '%s'", name)) return;
    if (!CHECK(t && bg_tensor_numel(t) == 1, "%s: bitgrad produced no scalar", name)) return;
    float got = bg_item(t);
    printf("  %s = %.9g (PyTorch %.9g)\n", name, (double)got, (double)e->data[0]);
    check_close(name, &got, e->data, 1, REF_RTOL, 0.0);
}

/* Checks the sticky error a test provoked (code, and a word of the message), prints the
 * message, then clears it and ends the step. */
static void expect_error(bg_ctx *ctx, int want, const char *what, const char *must_contain)
{
    int code = bg_ctx_error_code(ctx);
    const char *msg = bg_ctx_error(ctx);
    CHECK(code == want, "%s: error code %d (%s), want %d", what, code, msg ? msg : "", want);
    if (must_contain)
        CHECK(msg && strstr(msg, must_contain), "%s: message '%s' should mention '%s'", what,
              msg ? msg : "(none)", must_contain);
    printf("  %-44s -> %s\n", what, msg ? msg : "(no message)");
    bg_ctx_clear_error(ctx);
    bg_step_end(ctx);
}

/* ---- W1 BitLinear classifier against w1_bitlinear_exact (REFERENCES.md 4.3 / 4.4) --------- */

/* Why the exact file: the REFERENCES.md section 4.3 table shows that the standard-form STE
 * reference (w1_bitlinear) is not reproducible at 1e-4 by any other correct float32
 * implementation: pre-activations whose integer accumulator is 0 come out as rounding residues
 * of either sign, so ReLU masks (and dW) depend on summation order. bitgrad's BitLinear at full
 * quantization is the fused op that computes y = (acc * s_w) / s_x from the exact integer
 * accumulator - the exact-forward form of section 3 - so w1_bitlinear_exact is the file whose
 * every value it must reproduce. (w1_bitlinear's loss alone is sound at 1e-4: checked too.) */
static void test_w1_bitlinear(bg_ctx *ctx)
{
    printf("W1: BitLinear 784 -> 1024 -> 1024 -> 10, relu, cross-entropy, batch 256\n");
    bgref *ref = bgref_load_case("w1_bitlinear_exact");
    bgref *std_ref = bgref_load_case("w1_bitlinear");
    if (!CHECK(ref && std_ref, "cannot load the w1 references (BG_TEST_DATA=%s)",
               bgref_data_dir())) {
        bgref_free(ref), bgref_free(std_ref);
        return;
    }
    bg_module *l[3] = { bg_bitlinear_new(ctx, "W1", 784, 1024, false, NULL),
                        bg_bitlinear_new(ctx, "W2", 1024, 1024, false, NULL),
                        bg_bitlinear_new(ctx, "W3", 1024, 10, false, NULL) };
    float *X = lcg_values(41, 256 * 784, 1.0f, GEN_FILL);
    int32_t labels[256];
    bgref_lcg_labels(45, 256, 10, labels);
    bool ok = l[0] && l[1] && l[2] && X;
    for (int i = 0; ok && i < 3; i++) ok = lcg_write(bg_linear_weight(l[i]), 42 + i, 0.05f, GEN_FILL);
    const bgref_entry *el = bgref_find(ref, "labels");
    for (int i = 0; ok && el && i < 256; i++) ok = el->data[i] == (float)labels[i];
    if (CHECK(ok, "W1 setup failed (modules, LCG inputs or labels differ from the file): %s",
              bg_ctx_error(ctx))) {
        bg_tensor *x = bg_from_data(ctx, BG_F32, 2, S(256, 784), X);
        bg_tensor *h = bg_relu(bg_module_forward(l[0], x));
        h = bg_relu(bg_module_forward(l[1], h));
        bg_tensor *logits = bg_module_forward(l[2], h);
        bg_tensor *loss =
            bg_cross_entropy(logits, bg_from_data(ctx, BG_I32, 1, S(256), labels), -100, 0.0f);
        int rc = bg_backward(loss);
        if (CHECK(rc == BG_OK, "W1 forward/backward failed (%d): %s", rc, bg_ctx_error(ctx))) {
            compare_scalar(ref, "loss", loss);
            compare(ref, "logits", logits, REF_RTOL);
            compare(ref, "dW1", bg_tensor_grad(bg_linear_weight(l[0])), REF_RTOL);
            compare(ref, "dW2", bg_tensor_grad(bg_linear_weight(l[1])), REF_RTOL);
            compare(ref, "dW3", bg_tensor_grad(bg_linear_weight(l[2])), REF_RTOL);
            printf("  standard-form STE reference w1_bitlinear (only its loss is reproducible):\n");
            compare_scalar(std_ref, "loss", loss);
        }
    }
    bg_step_end(ctx);
    for (int i = 0; i < 3; i++) bg_module_free(&l[i]);
    free(X);
    bgref_free(ref);
    bgref_free(std_ref);
}

/* ---- bitnet block against bitnet_block (REFERENCES.md 4.6) -------------------------------- */

/* The 11 modules of a bitnet layer in the order of the REFERENCES.md seed tables, with the
 * generator of each (norms are 1 + 0.1 lcg, projections 0.2 lcg). */
static const char *const LAYER_NAMES[11] = { "attn_norm", "attn_q", "attn_k", "attn_v",
                                             "attn_output", "attn_sub_norm", "ffn_norm",
                                             "ffn_gate", "ffn_up", "ffn_down", "ffn_sub_norm" };
static const bool LAYER_IS_NORM[11] = { 1, 0, 0, 0, 0, 1, 1, 0, 0, 0, 1 };

static bool load_layer(bg_module *m, int layer, uint32_t first_seed)
{
    bool ok = true;
    for (int j = 0; j < 11; j++) {
        char name[64];
        snprintf(name, sizeof name, "blk.%d.%s.weight", layer, LAYER_NAMES[j]);
        ok = lcg_param_by_name(m, name, first_seed + (uint32_t)j, LAYER_IS_NORM[j] ? 0.1f : 0.2f,
                               LAYER_IS_NORM[j] ? GEN_NORM : GEN_FILL) && ok;
    }
    return ok;
}

static bg_tensor *sub(bg_module *model, int layer, const char *which, bg_tensor *x)
{
    char name[64];
    snprintf(name, sizeof name, "blk.%d.%s", layer, which);
    bg_module *m = bg_module_find(model, name);
    return m ? bg_module_forward(m, x) : NULL;
}

/* One bitnet layer on x [B, T, C] with the modules of `model` (DESIGN.md section 6). */
static bg_tensor *bitnet_layer(bg_module *model, int l, bg_tensor *x)
{
    const bg_bitnet_config *c = bg_bitnet_get_config(model);
    int64_t B = bg_tensor_dim(x, 0), T = bg_tensor_dim(x, 1), hd = c->n_embd / c->n_head;
    bg_tensor *h = sub(model, l, "attn_norm", x);
    bg_tensor *q = bg_reshape(sub(model, l, "attn_q", h), 4, S(B, T, c->n_head, hd));
    bg_tensor *k = bg_reshape(sub(model, l, "attn_k", h), 4, S(B, T, c->n_head_kv, hd));
    bg_tensor *v = bg_reshape(sub(model, l, "attn_v", h), 4, S(B, T, c->n_head_kv, hd));
    q = bg_rope(q, (int)hd, c->rope_base, 0);
    k = bg_rope(k, (int)hd, c->rope_base, 0);
    bg_tensor *a = bg_reshape(bg_attention(q, k, v), 3, S(B, T, c->n_embd));
    a = sub(model, l, "attn_sub_norm", a);
    bg_tensor *x1 = bg_add(x, sub(model, l, "attn_output", a));
    bg_tensor *h2 = sub(model, l, "ffn_norm", x1);
    bg_tensor *f = bg_mul(bg_silu(sub(model, l, "ffn_gate", h2)), sub(model, l, "ffn_up", h2));
    f = sub(model, l, "ffn_sub_norm", f);
    return bg_add(x1, sub(model, l, "ffn_down", f));
}

static void test_bitnet_block(bg_ctx *ctx)
{
    printf("bitnet_block: one bitnet layer (sub-norms, 7 BitLinear), C 32, GQA 4/2, n_ff 64\n");
    bgref *ref = bgref_load_case("bitnet_block");
    if (!CHECK(ref != NULL, "cannot load bitnet_block.bgref")) return;
    bg_bitnet_config cfg = bg_bitnet_default();
    cfg.n_vocab = 16, cfg.n_embd = 32, cfg.n_layer = 1, cfg.n_head = 4, cfg.n_head_kv = 2;
    cfg.n_ff = 64, cfg.n_ctx = 8;
    bg_module *model = bg_bitnet_new(ctx, &cfg);
    bg_tensor *x = bg_param(ctx, "x", 3, S(2, 8, 32));
    bg_tensor *R = bg_tensor_new(ctx, BG_F32, 3, S(2, 8, 32));
    bool ok = model && load_layer(model, 0, 52) && lcg_write(x, 51, 1.0f, GEN_FILL) &&
              lcg_write(R, 63, 1.0f, GEN_FILL);
    if (CHECK(ok, "bitnet_block setup failed: %s", bg_ctx_error(ctx))) {
        bg_tensor *out = bitnet_layer(model, 0, x);
        bg_tensor *loss = bg_sum(bg_mul(out, R), BG_AXIS_ALL, false);
        int rc = bg_backward(loss);
        if (CHECK(rc == BG_OK, "bitnet_block backward failed (%d): %s", rc, bg_ctx_error(ctx))) {
            static const char *const grads[11] = { "d_attn_norm", "dWq", "dWk", "dWv", "dWo",
                                                   "d_attn_sub_norm", "d_ffn_norm", "dWg",
                                                   "dWu", "dWd", "d_ffn_sub_norm" };
            compare_scalar(ref, "loss", loss);
            compare(ref, "out", out, REF_RTOL);
            compare(ref, "dx", bg_tensor_grad(x), REF_RTOL);
            for (int j = 0; j < 11; j++) {
                char name[64];
                snprintf(name, sizeof name, "blk.0.%s.weight", LAYER_NAMES[j]);
                compare(ref, grads[j], bg_tensor_grad(bg_module_find_param(model, name)), REF_RTOL);
            }
        }
    }
    bg_step_end(ctx);
    bg_tensor_free(&x);
    bg_tensor_free(&R);
    bg_module_free(&model);
    bgref_free(ref);
}

/* ---- the tiny bitnet transformer (REFERENCES.md 4.7) -------------------------------------- */

static bg_bitnet_config tiny_config(bool bitlinear)
{
    bg_bitnet_config c = bg_bitnet_default();
    c.n_vocab = 256, c.n_embd = 64, c.n_layer = 2, c.n_head = 4, c.n_head_kv = 2;
    c.n_ff = 128, c.n_ctx = 16, c.bitlinear = bitlinear;
    return c;
}

static bool load_tiny_model(bg_module *m)
{
    return lcg_param_by_name(m, "token_embd.weight", 62, 0.5f, GEN_FILL) & load_layer(m, 0, 63) &
           load_layer(m, 1, 74) & lcg_param_by_name(m, "output_norm.weight", 85, 0.1f, GEN_NORM);
}

/* Logits of the model for the reference ids (grad mode off), malloc'd [2*16*256]. */
static float *tiny_logits(bg_module *m)
{
    bg_ctx *ctx = bg_tensor_ctx(bg_module_param(m, 0));
    int32_t ids[32];
    bgref_lcg_labels(61, 32, 256, ids);
    bool prev = bg_grad_enable(ctx, false);
    bg_tensor *logits = bg_bitnet_forward(m, bg_from_data(ctx, BG_I32, 2, S(2, 16), ids));
    float *out = NULL;
    if (CHECK(logits && bg_tensor_numel(logits) == 2 * 16 * 256 && bg_tensor_dim(logits, 2) == 256,
              "bitnet forward failed: %s", bg_ctx_error(ctx)))
        out = harness_read(logits);
    bg_grad_enable(ctx, prev);
    bg_step_end(ctx);
    return out;
}

/* (c) and (d): forward against torch float32 and numpy float64, then inference mode. */
static void test_bitnet_model(bg_ctx *ctx)
{
    printf("bitnet_model: 2-layer bitnet LM (vocab 256, n_embd 64, GQA 4/2) forward\n");
    bgref *ref = bgref_load_case("bitnet_model");
    bg_bitnet_config cfg = tiny_config(true);
    bg_module *m = bg_bitnet_new(ctx, &cfg);
    const bgref_entry *f32 = bgref_find(ref, "logits_f32"), *f64 = bgref_find(ref, "logits_f64");
    if (!CHECK(ref && m && f32 && f64 && load_tiny_model(m), "bitnet_model setup failed: %s",
               bg_ctx_error(ctx))) {
        bg_module_free(&m);
        bgref_free(ref);
        return;
    }
    float *train = tiny_logits(m);
    if (train) {
        check_close("logits vs torch float32", train, f32->data, 2 * 16 * 256, REF_RTOL, 0.0);
        /* Against the float64 implementation the bar is 1e-3, not 1e-4: its quantizers decide
         * in float64 (s_w as a float64 mean, s_x, x * s_x and the rounding), so an activation
         * within a float32 rounding of a .5 tie, or a weight of |W/s_w| near 0.5, may round
         * the other way there, moving one integer level by 1 (1/127 of a row's absmax) and the
         * logits downstream by far more than float32 rounding. REFERENCES.md measured 3.3e-7
         * for these inputs (no decision differs); 1e-3 still catches any real error in the
         * graph while allowing one flipped level. */
        check_close("logits vs numpy float64 (looser, see comment)", train, f64->data,
                    2 * 16 * 256, 1e-3, 0.0);
    }

    /* (d) Inference mode: int8 levels x ternary codes with int32 accumulation, scaled as
     * (acc * s_w) / s_x - the formula the training forward's fused BitLinear evaluates from the
     * same integers - so the logits must agree to float rounding; we require relative 1e-6
     * (every other op is the same code on the same values, so in practice they are equal bit
     * for bit, which is reported). Switching back restores the latent-weight forward. */
    printf("inference mode (bg_module_set_inference) vs the training forward (lambda 1)\n");
    int rc = bg_module_set_inference(m, true);
    float *infer = rc == BG_OK ? tiny_logits(m) : NULL;
    CHECK(rc == BG_OK, "set_inference(true) returned %d: %s", rc, bg_ctx_error(ctx));
    if (train && infer) {
        check_close("inference logits vs training logits", infer, train, 2 * 16 * 256, 1e-6, 0.0);
        int64_t nbits = 0;
        for (int i = 0; i < 2 * 16 * 256; i++) nbits += memcmp(&infer[i], &train[i], 4) != 0;
        printf("  (%lld of %d logits differ bitwise)\n", (long long)nbits, 2 * 16 * 256);
    }
    rc = bg_module_set_inference(m, false);
    float *back = rc == BG_OK ? tiny_logits(m) : NULL;
    if (CHECK(back && train, "set_inference(false) returned %d", rc))
        check_bitwise("training forward after inference off", back, train, 2 * 16 * 256);
    free(train), free(infer), free(back);
    bg_module_free(&m);
    bgref_free(ref);
}

/* ---- (e) conversion to BitLinear ------------------------------------------------------------ */

static int count_bit(bg_module *m)
{
    int n = bg_linear_is_bit(m);
    for (int i = 0; i < bg_module_n_children(m); i++) n += count_bit(bg_module_child(m, i));
    return n;
}

static void test_to_bitlinear(bg_ctx *ctx)
{
    printf("bg_module_to_bitlinear on a full-precision bitnet model\n");
    bg_bitnet_config cfg = tiny_config(false);
    bg_module *m = bg_bitnet_new(ctx, &cfg);
    if (!CHECK(m && load_tiny_model(m), "setup: %s", bg_ctx_error(ctx))) {
        bg_module_free(&m);
        return;
    }
    CHECK(count_bit(m) == 0, "a bitlinear=false model has %d BitLinear modules", count_bit(m));
    int n_params = bg_module_n_params(m);
    float **before = calloc((size_t)n_params, sizeof *before);
    for (int i = 0; i < n_params; i++) before[i] = harness_read(bg_module_param(m, i));
    float *fp_logits = tiny_logits(m);

    /* Exclude the attention projections: only ffn_gate, ffn_up, ffn_down of both layers. */
    const char *const exclude[] = { "blk.*.attn_*", "no.such.module" };
    int n = bg_module_to_bitlinear(m, NULL, exclude, 2);
    CHECK(n == 3 * 2, "converted %d modules with attn_* excluded, want 6", n);
    for (int l = 0; l < 2; l++)
        for (int j = 0; j < 11; j++) {
            char name[64];
            snprintf(name, sizeof name, "blk.%d.%s", l, LAYER_NAMES[j]);
            bool want = strncmp(LAYER_NAMES[j], "ffn_", 4) == 0 && !LAYER_IS_NORM[j];
            CHECK(bg_linear_is_bit(bg_module_find(m, name)) == want, "%s: BitLinear %d, want %d",
                  name, bg_linear_is_bit(bg_module_find(m, name)), want);
        }
    n = bg_module_to_bitlinear(m, NULL, NULL, 0);
    CHECK(n == 4 * 2, "second conversion converted %d, want the 8 attention projections", n);
    CHECK(bg_module_to_bitlinear(m, NULL, NULL, 0) == 0, "a third conversion should find none");
    CHECK(count_bit(m) == 14, "%d BitLinear modules after conversion, want 14", count_bit(m));

    int changed = 0;
    for (int i = 0; i < n_params; i++) {
        float *now = harness_read(bg_module_param(m, i));
        int64_t k = bg_tensor_numel(bg_module_param(m, i));
        changed += !(now && before[i] && memcmp(now, before[i], (size_t)k * sizeof(float)) == 0);
        free(now);
        free(before[i]);
    }
    free(before);
    CHECK(changed == 0, "%d parameters changed in the conversion", changed);

    /* The converted model is the bitnet model: its logits equal the natively built one's. */
    bg_bitnet_config bcfg = tiny_config(true);
    bg_module *native = bg_bitnet_new(ctx, &bcfg);
    float *conv = tiny_logits(m);
    float *nat = native && load_tiny_model(native) ? tiny_logits(native) : NULL;
    if (CHECK(conv && nat && fp_logits, "forward after conversion failed: %s", bg_ctx_error(ctx))) {
        check_bitwise("converted vs natively built bitnet logits", conv, nat, 2 * 16 * 256);
        double d = 0.0;
        for (int i = 0; i < 2 * 16 * 256; i++) d = fmax(d, fabs((double)conv[i] - fp_logits[i]));
        CHECK(d > 1e-3, "quantization should change the logits (max change %.3g)", d);
    }
    free(conv), free(nat), free(fp_logits);
    bg_module_free(&native);
    bg_module_free(&m);
}
