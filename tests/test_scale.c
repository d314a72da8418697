/* test_scale.c - fine-tuning at scale on scaled-down shapes: the packed frozen BitLinear base
 * against the latent-weight path (loss and adapter gradients), freeze -> pack -> unfreeze ->
 * train, memory through bg_ctx_stats (never timing or RSS). */
#include "bitgrad.h"
#include "bitgrad/checkpoint.h"
#include "bitgrad/export.h"
#include "harness.h"

static const char *const ALL7[] = { "blk.*.attn_q",   "blk.*.attn_k", "blk.*.attn_v",
                                    "blk.*.attn_output", "blk.*.ffn_gate", "blk.*.ffn_up",
                                    "blk.*.ffn_down" };

/* Rows of 320 and 640 (not multiples of 256: the packed blocks' padding), GQA 4 / 2 heads. */
static bg_bitnet_config small_cfg(bool per_row)
{
    bg_bitnet_config c = bg_bitnet_default();
    c.n_vocab = 97;
    c.n_embd = 320;
    c.n_layer = 2;
    c.n_head = 4;
    c.n_head_kv = 2;
    c.n_ff = 640;
    c.n_ctx = 64;
    if (per_row) c.quant.weight_mode = BG_WQ_PER_ROW;
    return c;
}

static bg_module *lora_model_cfg(bg_ctx *ctx, bg_bitnet_config c)
{
    bg_ctx_seed(ctx, 7);
    bg_module *m = bg_bitnet_new(ctx, &c);
    bg_lora_config lc = bg_lora_default();
    lc.rank = 4;
    lc.alpha = 8.0f;
    lc.targets = ALL7;
    lc.n_targets = 7;
    CHECK(m && bg_lora_add(m, "default", &lc) == 7 * c.n_layer, "lora_add: %s", bg_ctx_error(ctx));
    bg_tensor *ps[64];
    int n = bg_lora_params(m, "default", ps, 64);
    for (int i = 1; i < n; i += 2) bg_tensor_fill_randn(ps[i], 0.0f, 0.05f); /* B != 0 */
    return m;
}

static bg_module *lora_model(bg_ctx *ctx, bool per_row)
{
    return lora_model_cfg(ctx, small_cfg(per_row));
}

/* Columns [lo, hi) of a fixed [B, T] batch of ids. */
static bg_tensor *batch_cols(bg_ctx *ctx, int B, int T, int lo, int hi)
{
    int32_t *v = malloc((size_t)(B * T) * sizeof *v), *o = malloc((size_t)(B * T) * sizeof *o);
    uint64_t st = 11;
    for (int i = 0; i < B * T; i++) v[i] = (int32_t)(harness_lcg(&st) % 97);
    for (int b = 0; b < B; b++)
        for (int j = lo; j < hi; j++) o[b * (hi - lo) + j - lo] = v[b * T + j];
    bg_tensor *t = bg_from_data(ctx, BG_I32, 2, (int64_t[]){ B, hi - lo }, o);
    free(v), free(o);
    return t;
}

static bg_tensor *batch(bg_ctx *ctx, int B, int T) { return batch_cols(ctx, B, T, 0, T); }

/* Loss and the gradient of every trainable parameter, concatenated (caller frees *grads);
 * fused: bg_bitnet_loss, else logits then cross_entropy. Memory stats of the step to st. */
static float loss_and_grads_x(bg_ctx *ctx, bg_module *m, float **grads, int64_t *n, bool fused,
                              bg_ctx_stats *st)
{
    bg_zero_grad(ctx);
    bg_tensor *ids = batch(ctx, 2, 33), *loss;
    if (fused) {
        loss = bg_bitnet_loss(m, ids, -100);
    } else {
        bg_tensor *in = batch_cols(ctx, 2, 33, 0, 32), *tg = batch_cols(ctx, 2, 33, 1, 33);
        loss = bg_cross_entropy(bg_bitnet_forward(m, in), tg, -100, 0.0f);
    }
    float l = loss ? bg_item(loss) : NAN;
    CHECK(loss && bg_backward(loss) == BG_OK, "backward: %s", bg_ctx_error(ctx));
    if (st) bg_ctx_stats_get(ctx, st);
    bg_tensor *ps[256];
    int np = 0;
    for (int i = 0; i < bg_module_n_params(m) && np < 256; i++)
        if (bg_tensor_requires_grad(bg_module_param(m, i))) ps[np++] = bg_module_param(m, i);
    *n = 0;
    for (int i = 0; i < np; i++) *n += bg_tensor_numel(ps[i]);
    *grads = malloc((size_t)*n * sizeof(float));
    int64_t off = 0;
    for (int i = 0; i < np; i++) {
        float *g = harness_read(bg_tensor_grad(ps[i]));
        memcpy(*grads + off, g, (size_t)bg_tensor_numel(ps[i]) * sizeof(float));
        off += bg_tensor_numel(ps[i]);
        free(g);
    }
    bg_step_end(ctx);
    return l;
}

static float loss_and_grads(bg_ctx *ctx, bg_module *m, float **grads, int64_t *n)
{
    return loss_and_grads_x(ctx, m, grads, n, true, NULL);
}

static void test_packed_vs_latent(bool per_row)
{
    printf("packed frozen base vs latent weights, LoRA on all 7 projections (%s scales)\n",
           per_row ? "per-row" : "per-tensor");
    bg_ctx *c1 = NULL, *c2 = NULL;
    bg_ctx_create(&c1, BG_CPU);
    bg_ctx_create(&c2, BG_CPU);
    bg_module *lat = lora_model(c1, per_row), *pk = lora_model(c2, per_row);
    bg_ctx_stats s0, s1;
    bg_ctx_stats_get(c2, &s0);
    CHECK(bg_module_pack_frozen(pk) == 14, "14 projections packed: %s", bg_ctx_error(c2));
    bg_ctx_stats_get(c2, &s1);
    /* each projection: 4 bytes a weight out; 64 bytes per 256-weight block (rows padded)
     * and its scales (1 or one per row) in */
    int64_t want = 0, nw = 0;
    for (int i = 0; i < bg_module_n_params(pk); i++) {
        bg_tensor *t = bg_module_param(pk, i);
        const char *nm = bg_tensor_name(t);
        if (!strstr(nm, "blk.") || strstr(nm, "lora") || strstr(nm, "norm")) continue;
        int64_t out = bg_tensor_dim(t, 0), in = bg_tensor_dim(t, 1);
        nw += out * in;
        want += out * in * 4 - out * ((in + 255) / 256) * 64 - (per_row ? out : 1) * 4;
    }
    int64_t freed = (int64_t)s0.persistent_bytes - (int64_t)s1.persistent_bytes;
    printf("  %lld projection weights: persistent bytes %zu -> %zu\n", (long long)nw,
           s0.persistent_bytes, s1.persistent_bytes);
    CHECK(freed == want, "packing freed %lld bytes, expected %lld", (long long)freed,
          (long long)want);
    bg_tensor *w = bg_module_find_param(pk, "blk.0.attn_q.weight");
    CHECK(w && bg_tensor_fill(w, 0.0f) == BG_ESTATE, "a packed weight refuses writes");
    bg_ctx_clear_error(c2);
    float *g1, *g2;
    int64_t n1, n2;
    float l1 = loss_and_grads(c1, lat, &g1, &n1), l2 = loss_and_grads(c2, pk, &g2, &n2);
    printf("  loss latent %.9g packed %.9g\n", (double)l1, (double)l2);
    CHECK(fabsf(l1 - l2) <= 1e-6f * fabsf(l1), "loss within 1e-6");
    CHECK(n1 == n2 && n1 > 0, "same adapter sizes");
    check_close("adapter gradients (packed vs latent)", g2, g1, n1, 1e-6, 0.0);
    free(g1), free(g2);
    bg_module_free(&lat);
    bg_module_free(&pk);
    bg_ctx_stats st;
    bg_ctx_stats_get(c2, &st);
    CHECK(st.persistent_bytes == 0, "every packed byte given back (%zu left)", st.persistent_bytes);
    bg_ctx_free(&c1);
    bg_ctx_free(&c2);
}

static float *logits_of(bg_ctx *ctx, bg_module *m)
{
    bool g = bg_grad_enable(ctx, false);
    float *v = harness_read(bg_bitnet_forward(m, batch(ctx, 1, 24)));
    bg_grad_enable(ctx, g);
    bg_step_end(ctx);
    return v;
}

static void test_round_trip(void)
{
    printf("freeze -> pack -> unfreeze -> train\n");
    bg_ctx *ctx = NULL;
    bg_ctx_create(&ctx, BG_CPU);
    bg_ctx_seed(ctx, 3);
    bg_bitnet_config c = small_cfg(false);
    bg_module *m = bg_bitnet_new(ctx, &c);
    int64_t nl = 24 * 97;
    float *l0 = logits_of(ctx, m);
    CHECK(bg_module_freeze(m, "blk.*") > 0, "freeze");
    CHECK(bg_module_pack_frozen(m) == 14, "14 packed");
    CHECK(bg_linear_is_packed(bg_module_find(m, "blk.1.ffn_down")), "ffn_down packed");
    float *l1 = logits_of(ctx, m);
    check_bitwise("logits packed vs latent", l1, l0, nl);
    CHECK(bg_module_unfreeze(m, "blk.*") > 0, "unfreeze");
    CHECK(!bg_linear_is_packed(bg_module_find(m, "blk.1.ffn_down")), "unfreezing unpacks");
    bg_tensor *w = bg_module_find_param(m, "blk.0.attn_k.weight");
    CHECK(w && bg_tensor_requires_grad(w) && bg_tensor_data(w), "latent weights, trainable");
    float *l2 = logits_of(ctx, m);
    check_bitwise("logits after unpacking (rebuilt latent weights)", l2, l0, nl);
    bg_module_freeze(m, "blk.*");
    CHECK(bg_module_pack_frozen(m) == 14, "packed again");
    float *l3 = logits_of(ctx, m);
    check_bitwise("logits packed a second time", l3, l0, nl);
    bg_module_unfreeze(m, "*");
    bg_optim_config oc = bg_optim_default(BG_ADAMW);
    oc.lr = 3e-3f;
    bg_optim *o = bg_optim_new(ctx, &oc);
    CHECK(bg_optim_add_module(o, m) > 0, "optimizer");
    float first = 0.0f, last = 0.0f;
    for (int s = 0; s < 8; s++) {
        bg_optim_zero_grad(o);
        bg_tensor *loss = bg_bitnet_loss(m, batch(ctx, 2, 33), -100);
        float l = loss ? bg_item(loss) : NAN;
        CHECK(loss && bg_backward(loss) == BG_OK && bg_optim_step(o) == BG_OK, "step: %s",
              bg_ctx_error(ctx));
        bg_step_end(ctx);
        if (s == 0) first = l;
        last = l;
    }
    printf("  QAT after the round trip: loss %.5f -> %.5f\n", (double)first, (double)last);
    CHECK(isfinite(last) && last < first, "training continues (loss %g -> %g)", (double)first,
          (double)last);
    free(l0), free(l1), free(l2), free(l3);
    bg_optim_free(&o);
    bg_module_free(&m);
    bg_ctx_free(&ctx);
}

/* The fused output projection + cross-entropy (chunks of rows) against logits then
 * cross_entropy: the same loss and gradients up to float rounding of the products. */
static void test_fused_loss(bool embd_trains)
{
    printf("chunked output projection + cross-entropy vs logits + cross_entropy (%s)\n",
           embd_trains ? "token_embd trains" : "LoRA only");
    bg_ctx *ctx = NULL;
    bg_ctx_create(&ctx, BG_CPU);
    bg_module *m = lora_model(ctx, false);
    if (embd_trains) bg_module_unfreeze(m, "token_embd.weight");
    float *g1, *g2;
    int64_t n1, n2;
    bg_ctx_stats s1, s2;
    float l1 = loss_and_grads_x(ctx, m, &g1, &n1, false, &s1);
    float l2 = loss_and_grads_x(ctx, m, &g2, &n2, true, &s2);
    printf("  loss unfused %.9g fused %.9g\n", (double)l1, (double)l2);
    CHECK(fabsf(l1 - l2) <= 1e-6f * fabsf(l1), "loss within 1e-6");
    CHECK(n1 == n2, "same parameters");
    check_close("gradients (fused vs unfused)", g2, g1, n1, 1e-5, 0.0);
    free(g1), free(g2);
    bg_module_free(&m);
    bg_ctx_free(&ctx);
}

/* Recomputation: the same bits as keeping every block's intermediates, and less held. */
static void test_recompute(bool lora)
{
    printf("activation recomputation vs stored intermediates (%s)\n",
           lora ? "LoRA, packed base" : "every parameter trains");
    bg_ctx *c1 = NULL, *c2 = NULL;
    bg_ctx_create(&c1, BG_CPU);
    bg_ctx_create(&c2, BG_CPU);
    bg_bitnet_config cfg = small_cfg(false);
    cfg.n_layer = 3;
    bg_bitnet_config rc = cfg;
    rc.recompute = true;
    bg_module *a, *b;
    if (lora) {
        a = lora_model_cfg(c1, cfg);
        b = lora_model_cfg(c2, rc);
        bg_module_pack_frozen(a);
        bg_module_pack_frozen(b);
    } else {
        bg_ctx_seed(c1, 5);
        bg_ctx_seed(c2, 5);
        a = bg_bitnet_new(c1, &cfg);
        b = bg_bitnet_new(c2, &rc);
    }
    float *g1, *g2;
    int64_t n1, n2;
    bg_ctx_stats s1, s2;
    float l1 = loss_and_grads_x(c1, a, &g1, &n1, true, &s1);
    float l2 = loss_and_grads_x(c2, b, &g2, &n2, true, &s2);
    CHECK(memcmp(&l1, &l2, sizeof l1) == 0, "loss bit-identical (%.9g vs %.9g)", (double)l1, (double)l2);
    CHECK(n1 == n2 && n1 > 0, "same parameters");
    check_bitwise("gradients with recomputation", g2, g1, n1);
    /* a second step: the recomputing tape is reused */
    free(g2);
    l2 = loss_and_grads_x(c2, b, &g2, &n2, true, &s2);
    CHECK(memcmp(&l1, &l2, sizeof l1) == 0, "second step: loss bit-identical");
    check_bitwise("gradients, second step", g2, g1, n1);
    printf("  pool high water: stored %.2f MiB, recomputed %.2f MiB\n",
           (double)s1.pool_high_water / 1048576.0, (double)s2.pool_high_water / 1048576.0);
    CHECK(s2.pool_high_water < s1.pool_high_water, "recomputation holds less (pool high water)");
    free(g1), free(g2);
    bg_module_free(&a);
    bg_module_free(&b);
    bg_ctx_free(&c1);
    bg_ctx_free(&c2);
}

/* token_embd's values made exact in F16 (as a model loaded from an F16 file has them). */
static void round_embd_f16(bg_module *m)
{
    bg_tensor *e = bg_module_find_param(m, "token_embd.weight");
    float *v = bg_tensor_data(e);
    for (int64_t i = 0; i < bg_tensor_numel(e); i++) v[i] = bg_fp16_to_fp32(bg_fp32_to_fp16(v[i]));
}

/* A frozen token_embd exact in F16 is kept as F16: half the bytes, the same values. */
static void test_f16_embedding(void)
{
    printf("frozen token_embd kept as F16\n");
    bg_ctx *c1 = NULL, *c2 = NULL;
    bg_ctx_create(&c1, BG_CPU);
    bg_ctx_create(&c2, BG_CPU);
    bg_module *a = lora_model(c1, false), *b = lora_model(c2, false);
    round_embd_f16(a);
    round_embd_f16(b);
    bg_ctx_stats s0, s1;
    bg_ctx_stats_get(c2, &s0);
    CHECK(bg_module_pack_frozen(b) == 15, "14 projections and token_embd packed");
    bg_ctx_stats_get(c2, &s1);
    bg_tensor *e = bg_module_find_param(b, "token_embd.weight");
    CHECK(bg_tensor_dtype(e) == BG_F16, "token_embd is F16");
    int64_t proj_freed = 0;
    for (int i = 0; i < bg_module_n_params(b); i++) {
        bg_tensor *t = bg_module_param(b, i);
        const char *nm = bg_tensor_name(t);
        if (!strstr(nm, "blk.") || strstr(nm, "lora") || strstr(nm, "norm")) continue;
        int64_t out = bg_tensor_dim(t, 0), in = bg_tensor_dim(t, 1);
        proj_freed += out * in * 4 - out * ((in + 255) / 256) * 64 - 4;
    }
    CHECK((int64_t)(s0.persistent_bytes - s1.persistent_bytes) == proj_freed + 97 * 320 * 2,
          "F16 table: 2 bytes a value fewer (bg_ctx_stats)");
    float *g1, *g2;
    int64_t n1, n2;
    float l1 = loss_and_grads(c1, a, &g1, &n1), l2 = loss_and_grads(c2, b, &g2, &n2);
    printf("  loss f32 table %.9g, f16 table %.9g\n", (double)l1, (double)l2);
    CHECK(fabsf(l1 - l2) <= 1e-6f * fabsf(l1), "loss within 1e-6");
    check_close("adapter gradients (F16 table)", g2, g1, n1, 1e-5, 0.0);
    float *o1 = logits_of(c1, a), *o2 = logits_of(c2, b);
    check_bitwise("logits with the F16 table", o2, o1, 24 * 97);
    CHECK(bg_module_unpack(b) == 15 && bg_tensor_dtype(bg_module_find_param(b, "token_embd.weight")) == BG_F32,
          "unpacked: F32 again");
    free(g1), free(g2), free(o1), free(o2);
    bg_module_free(&a);
    bg_module_free(&b);
    bg_ctx_free(&c1);
    bg_ctx_free(&c2);
}

/* A bitnet GGUF loaded packed (blocks straight into codes) against bg_bitnet_import's latent
 * weights: the same logits bit for bit, far fewer bytes. */
static void test_import_packed(int wtype)
{
    printf("GGUF %s loaded packed vs latent\n", wtype == BG_GGML_TQ2_0 ? "TQ2_0" : "TQ1_0");
    bg_ctx *c0 = NULL, *c1 = NULL, *c2 = NULL;
    bg_ctx_create(&c0, BG_CPU);
    bg_ctx_create(&c1, BG_CPU);
    bg_ctx_create(&c2, BG_CPU);
    bg_ctx_seed(c0, 9);
    bg_bitnet_config c = bg_bitnet_default();
    c.n_layer = 2;
    c.n_ff = 512;
    c.n_ctx = 64;
    bg_module *src = bg_bitnet_new(c0, &c), *lat = NULL, *pk = NULL;
    bg_export_options o = bg_export_default();
    o.weight_type = wtype;
    char err[256] = "";
    const char *path = "test_scale_import.gguf";
    CHECK(bg_bitnet_export(src, path, &o, err, sizeof err) == BG_OK, "export: %s", err);
    CHECK(bg_bitnet_import(c1, path, &lat, err, sizeof err) == BG_OK, "import: %s", err);
    CHECK(bg_bitnet_import_packed(c2, path, &pk, err, sizeof err) == BG_OK, "import packed: %s", err);
    if (lat && pk) {
        bg_ctx_stats s1, s2;
        bg_ctx_stats_get(c1, &s1);
        bg_ctx_stats_get(c2, &s2);
        printf("  persistent bytes: latent %zu, packed %zu\n", s1.persistent_bytes, s2.persistent_bytes);
        int64_t proj = 2 * (4 * 256 * 256 + 3 * 256 * 512); /* weights of the 14 projections */
        /* the file's F16 token_embd stays F16: 2 bytes a value less */
        const bg_tensor *te = bg_module_find_param(pk, "token_embd.weight");
        CHECK(te && bg_tensor_dtype(te) == BG_F16, "F16 token_embd kept F16");
        int64_t embd = te && bg_tensor_dtype(te) == BG_F16 ? 2 * c.n_vocab * c.n_embd : 0;
        CHECK((int64_t)(s1.persistent_bytes - s2.persistent_bytes) ==
                  proj * 4 - proj / 4 - 14 * 4 + embd,
              "4 bytes a weight became 2 bits (and one scale each)");
        CHECK(bg_linear_is_packed(bg_module_find(pk, "blk.1.ffn_up")), "projections packed");
        float *l1 = logits_of(c1, lat), *l2 = logits_of(c2, pk);
        check_bitwise("logits, packed load vs latent import", l2, l1, 24 * 256);
        free(l1), free(l2);
        /* the adapter file of a packed model is the latent model's, byte for byte (llama.cpp's
         * ffn_gate / ffn_up compensation reads the packed scale) */
        bg_lora_config lc = bg_lora_default();
        lc.targets = ALL7;
        lc.n_targets = 7;
        bg_ctx_seed(c1, 4);
        bg_ctx_seed(c2, 4);
        CHECK(bg_lora_add(lat, "default", &lc) == 14 && bg_lora_add(pk, "default", &lc) == 14, "lora");
        bg_tensor *ps1[28], *ps2[28];
        bg_lora_params(lat, "default", ps1, 28);
        bg_lora_params(pk, "default", ps2, 28);
        for (int i = 1; i < 28; i += 2) { /* B != 0, the same in both */
            bg_tensor_fill_randn(ps1[i], 0.0f, 0.1f);
            float *v = harness_read(ps1[i]);
            bg_tensor_write(ps2[i], v);
            free(v);
        }
        CHECK(bg_lora_export(lat, "default", "test_scale_a1.gguf", err, sizeof err) == BG_OK &&
                  bg_lora_export(pk, "default", "test_scale_a2.gguf", err, sizeof err) == BG_OK,
              "adapter export: %s", err);
        FILE *f1 = fopen("test_scale_a1.gguf", "rb"), *f2 = fopen("test_scale_a2.gguf", "rb");
        bool same = f1 && f2;
        for (int a = 0, b = 0; same && (a != EOF || b != EOF);) {
            a = fgetc(f1);
            b = fgetc(f2);
            same = a == b;
        }
        if (f1) fclose(f1);
        if (f2) fclose(f2);
        CHECK(same, "adapter files identical");
        remove("test_scale_a1.gguf");
        remove("test_scale_a2.gguf");
        /* a checkpoint of a packed model keeps it packed (checkpoint.h) and loads back */
        CHECK(bg_checkpoint_save("test_scale_ck.gguf", pk, NULL, NULL, err, sizeof err) == BG_OK &&
                  bg_checkpoint_load("test_scale_ck.gguf", pk, NULL, NULL, err, sizeof err) == BG_OK &&
                  bg_module_find_packed(pk), "a checkpoint of a packed model saves and loads: %s", err);
        CHECK(bg_bitnet_export(pk, "test_scale_ck.gguf", NULL, err, sizeof err) == BG_ESTATE,
              "exporting a packed model is refused: %s", err);
        remove("test_scale_ck.gguf");
    }
    remove(path);
    bg_module_free(&src);
    bg_module_free(&lat);
    bg_module_free(&pk);
    bg_ctx_free(&c0);
    bg_ctx_free(&c1);
    bg_ctx_free(&c2);
}

/* A model larger than the machine: a clear error naming the bytes, nothing allocated. */
static void test_too_large(void)
{
    printf("a model too large for memory\n");
    bg_ctx *ctx = NULL;
    bg_ctx_create(&ctx, BG_CPU);
    bg_bitnet_config c = small_cfg(false);
    c.n_vocab = (int64_t)1 << 32; /* token_embd alone: 2^32 * 320 * 4 bytes = 5 TiB */
    bg_ctx_stats s0, s1;
    bg_ctx_stats_get(ctx, &s0);
    bg_module *m = bg_bitnet_new(ctx, &c);
    bg_ctx_stats_get(ctx, &s1);
    const char *e = bg_ctx_error(ctx);
    printf("  error: %s\n", e);
    const char *need = strstr(e, "need ");
    double bytes = need ? strtod(need + 5, NULL) : 0.0;
    CHECK(!m && bg_ctx_error_code(ctx) == BG_ENOMEM && bytes >= 5497558138880.0 &&
              bytes < 5.6e12 && strstr(e, "bytes"), "BG_ENOMEM naming the bytes needed");
    CHECK(s1.heap_allocs == s0.heap_allocs && s1.persistent_bytes == 0, "nothing allocated");
    bg_ctx_free(&ctx);
}

int main(void)
{
    test_packed_vs_latent(false);
    test_packed_vs_latent(true);
    test_round_trip();
    test_too_large();
    test_f16_embedding();
    test_import_packed(BG_GGML_TQ2_0);
    test_import_packed(BG_GGML_TQ1_0);
    test_fused_loss(false);
    test_fused_loss(true);
    test_recompute(true);
    test_recompute(false);
    return harness_summary();
}
