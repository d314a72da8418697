/* test_finetune.c - suite 'nn': fine-tuning against PyTorch and against the definitions.
 *
 * (a) Optimizers on the W1 BitLinear classifier (REFERENCES.md 4.3/4.4): bitgrad's gradients
 *     vs w1_bitlinear_exact (tight) and w1_bitlinear (loose, as that file warns); then with the
 *     stored w1_bitlinear gradients two AdamW and two SGD-momentum steps vs torch (1e-5).
 *     LoRA on one bitnet block (REFERENCES_LORA.md): output, loss, adapter gradients and one
 *     AdamW step vs torch (1e-4).
 * (b) LoRA on a small bitnet model: 20 steps leave the base bit-identical and lower the loss;
 *     frozen weights skip exactly their weight-gradient GEMMs; merge / unmerge; disabled
 *     adapter = base model bitwise; two named adapters; adapter files; bad input changes
 *     nothing.
 * (c) freeze / unfreeze by glob, bg_module_print_trainable.
 * (d) lr schedules vs closed form, two-stage, lambda warm-up.
 * (e) clipping by norm and value; gradient accumulation over two micro-batches.
 * Run: meson test -C build --suite nn --print-errorlogs */
#include <unistd.h>

#include "bitgrad.h"
#include "harness.h"
#include "refdata.h"

#define S(...) ((const int64_t[]){ __VA_ARGS__ })
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* ---- helpers --------------------------------------------------------------------------------- */

static void write_lcg(bg_tensor *t, uint32_t seed, float scale, bool norm)
{
    size_t n = (size_t)bg_tensor_numel(t);
    float *v = malloc(n * sizeof *v);
    if (norm) bgref_lcg_norm(seed, n, scale, v);
    else
        bgref_lcg_fill(seed, n, scale, v);
    CHECK(bg_tensor_write(t, v) == BG_OK, "write lcg into '%s'", bg_tensor_name(t));
    free(v);
}

/* Compares t with reference entry `name` at relative rtol (check_close). */
static void compare(const bgref *ref, const char *name, const bg_tensor *t, double rtol)
{
    const bgref_entry *e = bgref_find(ref, name);
    if (!CHECK(e && t && (size_t)bg_tensor_numel(t) == e->numel, "%s: missing or sized differently",
               name))
        return;
    float *got = harness_read(t);
    check_close(name, got, e->data, (int64_t)e->numel, rtol, 0.0);
    free(got);
}

/* Every parameter value of m, concatenated. */
static float *params_of(const bg_module *m, int64_t *n_out)
{
    int np = bg_module_n_params(m);
    int64_t n = bg_module_count(m, false), off = 0;
    float *v = malloc((size_t)(n + 1) * sizeof *v);
    for (int i = 0; v && i < np; i++) {
        bg_tensor *t = bg_module_param(m, i);
        bg_tensor_read(t, v + off);
        off += bg_tensor_numel(t);
    }
    *n_out = n;
    return v;
}

static bool same_params(const bg_module *m, const float *before, int64_t n)
{
    int64_t k;
    float *now = params_of(m, &k);
    bool same = now && k == n && memcmp(now, before, (size_t)n * sizeof(float)) == 0;
    free(now);
    return same;
}

static bg_bitnet_config small_cfg(bool bitlinear)
{
    bg_bitnet_config c = bg_bitnet_default();
    c.n_vocab = 256;
    c.n_embd = 64;
    c.n_layer = 2;
    c.n_head = 4;
    c.n_head_kv = 2;
    c.n_ff = 128;
    c.n_ctx = 32;
    c.bitlinear = bitlinear;
    return c;
}

static bg_module *small_model(bg_ctx *ctx, uint64_t seed, bool bitlinear)
{
    bg_ctx_seed(ctx, seed);
    bg_bitnet_config c = small_cfg(bitlinear);
    return bg_bitnet_new(ctx, &c);
}

enum { BATCH = 2, SEQ = 16 };

/* Rows first .. first + b - 1 of a deterministic [BATCH, SEQ] token batch. */
static bg_tensor *ids_rows(bg_ctx *ctx, uint64_t seed, int64_t first, int64_t b)
{
    int32_t ids[BATCH * SEQ];
    for (int i = 0; i < BATCH * SEQ; i++) ids[i] = (int32_t)(harness_lcg(&seed) % 256u);
    return bg_from_data(ctx, BG_I32, 2, S(b, SEQ), ids + first * SEQ);
}

static bg_tensor *ids_tensor(bg_ctx *ctx, uint64_t seed, int64_t b)
{
    return ids_rows(ctx, seed, 0, b);
}

/* Logits of a fixed batch with grad mode off (malloc'd copy; the step is ended). */
static float *logits_of(bg_module *m, bg_ctx *ctx, int64_t *n)
{
    bool prev = bg_grad_enable(ctx, false);
    bg_tensor *y = bg_bitnet_forward(m, ids_tensor(ctx, 77, BATCH));
    float *v = harness_read(y);
    *n = y ? bg_tensor_numel(y) : 0;
    CHECK(v != NULL, "forward: %s", bg_ctx_error(ctx));
    bg_step_end(ctx);
    bg_grad_enable(ctx, prev);
    return v;
}

/* Frees what a test made (o may be NULL). */
static void finish(bg_ctx **ctx, bg_module **m, bg_optim **o)
{
    if (o) bg_optim_free(o);
    bg_module_free(m);
    bg_ctx_free(ctx);
}

static bg_lora_config lora_cfg(int rank, float alpha, const char *const *targets, int n)
{
    bg_lora_config c = bg_lora_default();
    c.rank = rank;
    c.alpha = alpha;
    c.targets = targets;
    c.n_targets = n;
    return c;
}

/* Fills every B of adapter `name` with N(0, std) so that the adapter changes outputs. */
static void randomize_b(bg_module *m, const char *name, float std)
{
    bg_tensor *ps[64];
    int n = bg_lora_params(m, name, ps, 64);
    for (int i = 1; i < n && i < 64; i += 2) bg_tensor_fill_randn(ps[i], 0.0f, std);
}

static const char *const QKVO[] = { "blk.*.attn_q", "blk.*.attn_k", "blk.*.attn_v",
                                    "blk.*.attn_output" };

/* ---- (a) optimizers on W1 -------------------------------------------------------------------- */

static void w1_set_weights(bg_tensor *const *W)
{
    for (int i = 0; i < 3; i++) write_lcg(W[i], 42u + (uint32_t)i, 0.05f, false);
}

/* bitgrad's forward/backward of the W1 classifier against both reference files. */
static void w1_gradients(bg_ctx *ctx, bg_module *net, bg_tensor *const *W, const bgref *std,
                         const bgref *exact)
{
    static const char *const dw[3] = { "dW1", "dW2", "dW3" };
    float *X = malloc(256 * 784 * sizeof *X);
    int32_t labels[256];
    bgref_lcg_fill(41, 256 * 784, 1.0f, X);
    bgref_lcg_labels(45, 256, 10, labels);
    bg_tensor *logits = bg_module_forward(net, bg_from_data(ctx, BG_F32, 2, S(256, 784), X));
    bg_tensor *loss =
        bg_cross_entropy(logits, bg_from_data(ctx, BG_I32, 1, S(256), labels), -100, 0.0f);
    int rc = bg_backward(loss);
    if (CHECK(rc == BG_OK, "W1 backward: %s", bg_ctx_error(ctx))) {
        printf("  vs w1_bitlinear_exact (same exact-forward BitLinear):\n");
        compare(exact, "loss", loss, 1e-5);
        compare(exact, "logits", logits, 1e-5);
        for (int i = 0; i < 3; i++) compare(exact, dw[i], bg_tensor_grad(W[i]), 1e-4);
        printf(
            "  vs w1_bitlinear (standard STE form: loss tight, the rest loose, REFERENCES 4.3):\n");
        compare(std, "loss", loss, 1e-4);
        compare(std, "logits", logits, 2e-2);
        for (int i = 0; i < 3; i++) compare(std, dw[i], bg_tensor_grad(W[i]), 0.2);
    }
    bg_step_end(ctx);
    free(X);
}

/* Two steps of an optimizer from the LCG weights with the stored gradients. */
static void w1_steps(bg_ctx *ctx, bg_tensor *const *W, const bgref *std, const bg_optim_config *oc,
                     const char *tag)
{
    w1_set_weights(W);
    for (int i = 0; i < 3; i++) {
        char gname[8];
        snprintf(gname, sizeof gname, "dW%d", i + 1);
        const bgref_entry *g = bgref_find(std, gname);
        CHECK(g && bg_tensor_write(bg_tensor_grad(W[i]), g->data) == BG_OK, "set %s", gname);
    }
    bg_optim *o = bg_optim_new(ctx, oc);
    bg_optim_add_group(o, W, 3, oc->lr, oc->weight_decay);
    for (int step = 1; step <= 2; step++) {
        CHECK(bg_optim_step(o) == BG_OK, "%s step %d", tag, step);
        for (int i = 0; i < 3; i++) {
            char name[32];
            snprintf(name, sizeof name, "%s%s_W%d", tag, step == 1 ? "" : "2", i + 1);
            compare(std, name, W[i], 1e-5);
        }
    }
    bg_optim_free(&o);
}

static void test_w1_optimizers(void)
{
    printf("(a) W1 BitLinear classifier: gradients, AdamW and SGD-momentum steps vs torch\n");
    bgref *std = bgref_load_case("w1_bitlinear"), *exact = bgref_load_case("w1_bitlinear_exact");
    if (!CHECK(std && exact, "cannot load the w1 references (BG_TEST_DATA=%s)", bgref_data_dir()))
        return;
    bg_ctx *ctx = NULL;
    bg_ctx_create(&ctx, BG_CPU);
    bg_module *mods[5] = { bg_bitlinear_new(ctx, "l1", 784, 1024, false, NULL), bg_relu_new(ctx),
                           bg_bitlinear_new(ctx, "l2", 1024, 1024, false, NULL), bg_relu_new(ctx),
                           bg_bitlinear_new(ctx, "l3", 1024, 10, false, NULL) };
    bg_module *net = bg_sequential_new(ctx, "", mods, 5);
    bg_tensor *W[3] = { bg_linear_weight(mods[0]), bg_linear_weight(mods[2]),
                        bg_linear_weight(mods[4]) };
    w1_set_weights(W);
    w1_gradients(ctx, net, W, std, exact);
    bg_optim_config adamw = bg_optim_default(BG_ADAMW); /* lr 1e-3, betas .9/.999, wd 0.01 */
    w1_steps(ctx, W, std, &adamw, "adamw");
    bg_optim_config sgd = bg_optim_default(BG_SGD);
    sgd.lr = 0.1f;
    sgd.momentum = 0.9f;
    sgd.weight_decay = 0.01f;
    w1_steps(ctx, W, std, &sgd, "sgd");
    finish(&ctx, &net, NULL);
    bgref_free(std);
    bgref_free(exact);
}

/* ---- (a) LoRA on one bitnet block vs torch ----------------------------------------------------- */

enum { LB = 2, LT = 8, LC = 32, LH = 4, LKV = 2, LD = 8, LFF = 64 };

static bg_module *sub(bg_module *m, const char *name) { return bg_module_find(m, name); }

static bg_tensor *lora_block_forward(bg_module *m, bg_tensor *x)
{
    const float base = 10000.0f;
    bg_tensor *h = bg_module_forward(sub(m, "blk.0.attn_norm"), x);
    bg_tensor *q = bg_reshape(bg_module_forward(sub(m, "blk.0.attn_q"), h), 4, S(LB, LT, LH, LD));
    bg_tensor *k = bg_reshape(bg_module_forward(sub(m, "blk.0.attn_k"), h), 4, S(LB, LT, LKV, LD));
    bg_tensor *v = bg_reshape(bg_module_forward(sub(m, "blk.0.attn_v"), h), 4, S(LB, LT, LKV, LD));
    bg_tensor *a = bg_attention(bg_rope(q, LD, base, 0), bg_rope(k, LD, base, 0), v);
    a = bg_module_forward(sub(m, "blk.0.attn_sub_norm"), bg_reshape(a, 3, S(LB, LT, LC)));
    bg_tensor *x1 = bg_add(x, bg_module_forward(sub(m, "blk.0.attn_output"), a));
    bg_tensor *h2 = bg_module_forward(sub(m, "blk.0.ffn_norm"), x1);
    bg_tensor *f = bg_mul(bg_silu(bg_module_forward(sub(m, "blk.0.ffn_gate"), h2)),
                          bg_module_forward(sub(m, "blk.0.ffn_up"), h2));
    f = bg_module_forward(sub(m, "blk.0.ffn_sub_norm"), f);
    return bg_add(x1, bg_module_forward(sub(m, "blk.0.ffn_down"), f));
}

/* The 11 modules of the block in one container, base weights from seeds 52..62. */
static bg_module *lora_block_new(bg_ctx *ctx)
{
    static const struct {
        const char *name;
        int kind;
        int64_t in, out;
    } spec[11] = { { "attn_norm", 0, LC, 0 },     { "attn_q", 1, LC, LC },
                   { "attn_k", 1, LC, LKV * LD }, { "attn_v", 1, LC, LKV * LD },
                   { "attn_output", 1, LC, LC },  { "attn_sub_norm", 0, LC, 0 },
                   { "ffn_norm", 0, LC, 0 },      { "ffn_gate", 1, LC, LFF },
                   { "ffn_up", 1, LC, LFF },      { "ffn_down", 1, LFF, LC },
                   { "ffn_sub_norm", 0, LFF, 0 } };
    bg_module *mods[11];
    for (int i = 0; i < 11; i++) {
        char name[48];
        snprintf(name, sizeof name, "blk.0.%s", spec[i].name);
        mods[i] = spec[i].kind ? bg_bitlinear_new(ctx, name, spec[i].in, spec[i].out, false, NULL)
                               : bg_rmsnorm_new(ctx, name, spec[i].in, 1e-5f);
        write_lcg(bg_module_param(mods[i], 0), 52u + (uint32_t)i, spec[i].kind ? 0.2f : 0.1f,
                  !spec[i].kind);
    }
    return bg_sequential_new(ctx, "", mods, 11);
}

static void test_lora_block(void)
{
    printf("(a) LoRA (r 4, alpha 8) on attn_q and ffn_up of one bitnet block vs torch\n");
    bgref *ref = bgref_load_case("lora_block");
    if (!CHECK(ref != NULL, "cannot load lora_block.bgref (BG_TEST_DATA=%s)", bgref_data_dir()))
        return;
    bg_ctx *ctx = NULL;
    bg_ctx_create(&ctx, BG_CPU);
    bg_module *m = lora_block_new(ctx);
    static const char *const targets[] = { "blk.0.attn_q", "blk.0.ffn_up" };
    bg_lora_config lc = lora_cfg(4, 8.0f, targets, 2);
    CHECK(bg_lora_add(m, "default", &lc) == 2, "lora_add: %s", bg_ctx_error(ctx));
    bg_tensor *ab[4];
    CHECK(bg_lora_params(m, "default", ab, 4) == 4, "4 adapter tensors");
    static const uint64_t sums[4] = { 0x00002220feeea3f3ull, 0x00001eddfd257056ull,
                                      0x00001e421d399de5ull, 0x00008736f075c9b3ull };
    for (int i = 0; i < 4; i++) { /* checksums: REFERENCES_LORA.md */
        write_lcg(ab[i], 91u + (uint32_t)i, 0.2f, false);
        CHECK(bgref_checksum_f32(bg_tensor_data_const(ab[i]), (size_t)bg_tensor_numel(ab[i])) ==
                  sums[i],
              "adapter input %d matches the generator's checksum", i);
    }
    bg_tensor *x = bg_tensor_new(ctx, BG_F32, 3, S(LB, LT, LC));
    bg_tensor *R = bg_tensor_new(ctx, BG_F32, 3, S(LB, LT, LC));
    write_lcg(x, 51, 1.0f, false);
    write_lcg(R, 63, 1.0f, false);
    CHECK(bg_module_count(m, true) == 2 * (4 * 32) + 4 * (32 + 64), "only the adapters train");

    bg_tensor *out = lora_block_forward(m, x);
    bg_tensor *loss = bg_sum(bg_mul(out, R), BG_AXIS_ALL, false);
    if (CHECK(bg_backward(loss) == BG_OK, "backward: %s", bg_ctx_error(ctx))) {
        compare(ref, "loss", loss, 1e-4);
        compare(ref, "out", out, 1e-4);
        static const char *const gn[4] = { "dA_q", "dB_q", "dA_up", "dB_up" };
        for (int i = 0; i < 4; i++) compare(ref, gn[i], bg_tensor_grad(ab[i]), 1e-4);
        CHECK(!bg_tensor_grad(bg_linear_weight(sub(m, "blk.0.attn_q"))), "frozen base: no grad");
    }
    bg_step_end(ctx);
    bg_optim_config oc = bg_optim_default(BG_ADAMW);
    bg_optim *o = bg_optim_new(ctx, &oc);
    CHECK(bg_optim_add_module(o, m) == 4, "optimizer holds the 4 adapter tensors");
    CHECK(bg_optim_step(o) == BG_OK, "AdamW step");
    static const char *const sn[4] = { "adamw_A_q", "adamw_B_q", "adamw_A_up", "adamw_B_up" };
    for (int i = 0; i < 4; i++) compare(ref, sn[i], ab[i], 1e-4);
    finish(&ctx, &m, &o);
    bgref_free(ref);
}

/* ---- (b) LoRA on a small bitnet model --------------------------------------------------------- */

static float train_step(bg_ctx *ctx, bg_module *m, bg_optim *o, bg_tensor *ids)
{
    bg_optim_zero_grad(o);
    bg_tensor *loss = bg_bitnet_loss(m, ids, -100);
    float l = loss ? bg_item(loss) : NAN;
    CHECK(bg_backward(loss) == BG_OK && bg_optim_step(o) == BG_OK, "train step: %s",
          bg_ctx_error(ctx));
    bg_step_end(ctx);
    return l;
}

static void test_lora_training(void)
{
    printf("(b) LoRA on attn_q/k/v/o: 20 AdamW steps\n");
    bg_ctx *ctx = NULL;
    bg_ctx_create(&ctx, BG_CPU);
    bg_module *m = small_model(ctx, 21, true);
    int64_t n_base;
    float *base = params_of(m, &n_base);
    int np_base = bg_module_n_params(m);
    bg_lora_config lc = lora_cfg(4, 8.0f, QKVO, 4);
    CHECK(bg_lora_add(m, "default", &lc) == 8, "8 wrapped projections");
    int64_t want_tr = 2 * ((4 * 64 + 64 * 4) * 2 + (4 * 64 + 32 * 4) * 2);
    CHECK(bg_module_count(m, true) == want_tr, "trainable %lld, expected %lld",
          (long long)bg_module_count(m, true), (long long)want_tr);
    bg_optim_config oc = bg_optim_default(BG_ADAMW);
    oc.lr = 1e-2f;
    bg_optim *o = bg_optim_new(ctx, &oc);
    CHECK(bg_optim_add_module(o, m) == 16, "16 adapter tensors in the optimizer");
    bg_tensor *ab[16];
    bg_lora_params(m, "default", ab, 16);
    float *a_init = harness_read(ab[0]);
    bg_tensor *ids = NULL;
    float first = 0.0f, last = 0.0f;
    for (int s = 0; s < 20; s++) {
        ids = ids_tensor(ctx, 5, BATCH); /* the same batch every step */
        float l = train_step(ctx, m, o, ids);
        if (s == 0) first = l;
        last = l;
    }
    printf("  loss %.5f -> %.5f\n", (double)first, (double)last);
    CHECK(last < first - 0.05f, "loss decreased (%g -> %g)", (double)first, (double)last);
    bool same = true;
    int64_t off = 0;
    for (int i = 0; i < bg_module_n_params(m); i++) { /* base tensors, in their own order */
        bg_tensor *t = bg_module_param(m, i);
        if (strstr(bg_tensor_name(t), ".lora_")) continue;
        float *v = harness_read(t);
        same = same && off + bg_tensor_numel(t) <= n_base &&
               memcmp(v, base + off, (size_t)bg_tensor_numel(t) * sizeof(float)) == 0;
        off += bg_tensor_numel(t);
        free(v);
    }
    CHECK(same && off == n_base && np_base + 16 == bg_module_n_params(m),
          "every base weight bit-identical after 20 steps (memcmp)");
    float bmax = 0.0f, *a_now = harness_read(ab[0]), *bv = harness_read(ab[1]);
    for (int64_t i = 0; i < bg_tensor_numel(ab[1]); i++) bmax = fmaxf(bmax, fabsf(bv[i]));
    CHECK(memcmp(a_now, a_init, (size_t)bg_tensor_numel(ab[0]) * sizeof(float)) != 0 && bmax > 0.0f,
          "adapter weights changed (A differs, max|B| %g from 0)", (double)bmax);
    free(bv), free(a_now), free(a_init), free(base);
    finish(&ctx, &m, &o);
}

/* GEMMs issued by one loss + backward of the fixed batch (the fused output projection +
 * cross-entropy issues its gradient GEMMs in the forward; the forward's others are the same
 * whatever is frozen, so differences count what freezing skips). */
static uint64_t backward_gemms(bg_ctx *ctx, bg_module *m)
{
    bg_ctx_stats s0, s1;
    bg_zero_grad(ctx);
    bg_ctx_stats_get(ctx, &s0);
    bg_tensor *loss = bg_bitnet_loss(m, ids_tensor(ctx, 9, BATCH), -100);
    CHECK(bg_backward(loss) == BG_OK, "backward: %s", bg_ctx_error(ctx));
    bg_ctx_stats_get(ctx, &s1);
    bg_step_end(ctx);
    return s1.matmul_calls - s0.matmul_calls;
}

static void test_gemm_skips(void)
{
    printf("(b) frozen weights skip their weight-gradient GEMMs\n");
    bg_ctx *ctx = NULL;
    bg_ctx_create(&ctx, BG_CPU);
    bg_module *m = small_model(ctx, 22, true);
    bg_lora_config lc = lora_cfg(4, 8.0f, QKVO, 4);
    bg_lora_add(m, "default", &lc);
    randomize_b(m, "default", 0.02f);
    const int L = 2, n_proj = 7 * L;
    bg_module_unfreeze(m, "*");
    uint64_t all = backward_gemms(ctx, m);
    /* Projections frozen, token_embd trainable: every activation gradient is still needed,
     * so exactly the 7 per layer dW GEMMs go away. */
    bg_module_freeze(m, "*");
    bg_module_unfreeze(m, "*.lora_*");
    bg_module_unfreeze(m, "token_embd.weight");
    uint64_t frozen = backward_gemms(ctx, m);
    /* peft's setting (everything but the adapters frozen): also the tied output projection's
     * dW, and layer 0's q/k/v get an input that needs no gradient: their base and x A^T
     * products skip dX too (3 + 3). */
    bg_module_freeze(m, "token_embd.weight");
    uint64_t peft = backward_gemms(ctx, m);
    printf("  backward GEMMs: all trainable %llu, projections frozen %llu, peft %llu\n",
           (unsigned long long)all, (unsigned long long)frozen, (unsigned long long)peft);
    CHECK(all - frozen == (uint64_t)n_proj,
          "difference %llu, expected the %d frozen projection weight GEMMs",
          (unsigned long long)(all - frozen), n_proj);
    CHECK(all - peft == (uint64_t)(n_proj + 1 + 6), "peft difference %llu, expected %d",
          (unsigned long long)(all - peft), n_proj + 7);
    finish(&ctx, &m, NULL);
}

/* Ternary codes of every wrapped projection's latent weights, concatenated. */
static int64_t count_flips(bg_module *m, int8_t *before)
{
    int64_t flips = 0, off = 0;
    for (int l = 0; l < 2; l++)
        for (int p = 0; p < 4; p++) {
            static const char *const pn[4] = { "attn_q", "attn_k", "attn_v", "attn_output" };
            char name[48];
            snprintf(name, sizeof name, "blk.%d.%s", l, pn[p]);
            bg_tensor *w = bg_linear_weight(bg_module_find(m, name));
            int64_t r = bg_tensor_dim(w, 0), c = bg_tensor_dim(w, 1);
            int8_t *codes = malloc((size_t)(r * c));
            float s;
            bg_ternary_quantize(bg_tensor_data_const(w), r, c, BG_WQ_PER_TENSOR, 0, codes, &s);
            for (int64_t i = 0; i < r * c; i++) {
                flips += before[off + i] != codes[i];
                before[off + i] = codes[i];
            }
            off += r * c;
            free(codes);
        }
    return flips;
}

static void test_merge(bool bitlinear)
{
    printf("(b) merge / unmerge on a %s base\n", bitlinear ? "BitLinear" : "full-precision Linear");
    bg_ctx *ctx = NULL;
    bg_ctx_create(&ctx, BG_CPU);
    bg_module *m = small_model(ctx, 23, bitlinear);
    bg_lora_config lc = lora_cfg(4, 8.0f, QKVO, 4);
    bg_lora_add(m, "default", &lc);
    randomize_b(m, "default", bitlinear ? 0.05f : 0.02f);
    int64_t n, nl;
    float *w0 = params_of(m, &n);
    int8_t *codes = calloc((size_t)n, 1);
    count_flips(m, codes);
    float *y_adapter = logits_of(m, ctx, &nl);
    int64_t flips = -1;
    CHECK(bg_lora_merge(m, &flips) == BG_OK, "merge: %s", bg_ctx_error(ctx));
    int64_t recount = count_flips(m, codes);
    printf("  flipped codes reported %lld, recounted %lld\n", (long long)flips, (long long)recount);
    if (bitlinear) CHECK(flips >= 0 && flips == recount, "flips consistent with a recount");
    else
        CHECK(flips == 0, "no ternary codes to flip on a full-precision base (%lld)",
              (long long)flips);
    float *y_merged = logits_of(m, ctx, &nl);
    if (!bitlinear)
        check_close("merged vs unmerged-with-adapter logits", y_merged, y_adapter, nl, 1e-5, 0.0);
    CHECK(bg_lora_set_active(m, NULL) == BG_ESTATE, "switching adapters while merged is refused");
    bg_ctx_clear_error(ctx);
    CHECK(bg_lora_unmerge(m) == BG_OK, "unmerge");
    float *w1 = params_of(m, &n);
    check_close("latent weights after merge + unmerge", w1, w0, n, 1e-6, 0.0);
    float *y_back = logits_of(m, ctx, &nl);
    if (!bitlinear) check_close("logits after unmerge", y_back, y_adapter, nl, 1e-5, 0.0);
    free(w0), free(w1), free(codes), free(y_adapter), free(y_merged), free(y_back);
    finish(&ctx, &m, NULL);
}

static void test_adapters_active(void)
{
    printf("(b) disabling adapters, two named adapters\n");
    bg_ctx *ctx = NULL;
    bg_ctx_create(&ctx, BG_CPU);
    bg_module *m = small_model(ctx, 24, true);
    int64_t nl;
    float *y_base = logits_of(m, ctx, &nl);
    static const char *const q[] = { "blk.*.attn_q" }, *const qv[] = { "blk.*.attn_q",
                                                                       "blk.*.attn_v" };
    bg_lora_config c1 = lora_cfg(2, 4.0f, q, 1), c2 = lora_cfg(4, 4.0f, qv, 2);
    CHECK(bg_lora_add(m, "a1", &c1) == 2 && bg_lora_add(m, "a2", &c2) == 4, "two adapters");
    randomize_b(m, "a1", 0.05f);
    randomize_b(m, "a2", 0.05f);
    CHECK(bg_module_find_param(m, "blk.0.attn_q.weight.lora_a.a1") != NULL, "named tensors");
    float *y2 = logits_of(m, ctx, &nl); /* the last added is active */
    bg_lora_set_active(m, "a1");
    float *y1 = logits_of(m, ctx, &nl);
    bg_lora_set_active(m, NULL);
    float *y0 = logits_of(m, ctx, &nl);
    check_bitwise("adapter disabled vs base model logits", y0, y_base, nl);
    CHECK(memcmp(y1, y_base, (size_t)nl * 4) && memcmp(y2, y_base, (size_t)nl * 4) &&
              memcmp(y1, y2, (size_t)nl * 4),
          "each adapter changes the logits, differently");
    /* Only the active adapter receives gradients. */
    bg_lora_set_active(m, "a1");
    bg_zero_grad(ctx);
    bg_backward(bg_bitnet_loss(m, ids_tensor(ctx, 3, BATCH), -100));
    bg_tensor *p1[4], *p2[8];
    bg_lora_params(m, "a1", p1, 4);
    bg_lora_params(m, "a2", p2, 8);
    bool g1 = true, g2 = false;
    for (int i = 0; i < 4; i++) g1 = g1 && bg_tensor_grad(p1[i]);
    for (int i = 0; i < 8; i++) {
        bg_tensor *g = bg_tensor_grad(p2[i]);
        float *v = g ? harness_read(g) : NULL;
        for (int64_t k = 0; v && k < bg_tensor_numel(g); k++) g2 = g2 || v[k] != 0.0f;
        free(v);
    }
    CHECK(g1 && !g2, "a1 active: a1 gets gradients, a2 none");
    bg_step_end(ctx);
    free(y_base), free(y0), free(y1), free(y2);
    finish(&ctx, &m, NULL);
}

/* Errors of bg_lora_add and bg_lora_load leave the model as it was. */
static void expect_unchanged(bg_module *m, const float *before, int64_t n, int np, int rc, int want,
                             const char *what, const char *msg)
{
    CHECK(rc == want && bg_module_n_params(m) == np && same_params(m, before, n),
          "%s: rc %d (want %d), params %d (were %d)", what, rc, want, bg_module_n_params(m), np);
    printf("  %-36s -> %s\n", what, msg);
}

static void test_lora_errors_and_files(void)
{
    printf("(b) adapter files and bad input\n");
    bg_ctx *ctx = NULL;
    bg_ctx_create(&ctx, BG_CPU);
    bg_module *a = small_model(ctx, 25, true), *b = small_model(ctx, 25, true);
    int64_t n;
    int np = bg_module_n_params(b);
    float *before = params_of(b, &n);
    static const char *const none[] = { "blk.*.nonexistent" };
    bg_lora_config c = lora_cfg(4, 8.0f, none, 1);
    expect_unchanged(b, before, n, np, bg_lora_add(b, "x", &c), BG_ENOTFOUND,
                     "target matches nothing", bg_ctx_error(ctx));
    bg_ctx_clear_error(ctx);
    static const char *const qk[] = { "blk.*.attn_q", "blk.*.attn_k" };
    c = lora_cfg(33, 8.0f, qk, 2); /* fits attn_q [64, 64], not attn_k [32, 64] */
    expect_unchanged(b, before, n, np, bg_lora_add(b, "x", &c), BG_EINVAL, "rank 33 > attn_k's 32",
                     bg_ctx_error(ctx));
    bg_ctx_clear_error(ctx);

    /* Save a trained-looking adapter, load it into a twin model: identical outputs. */
    static const char *const qu[] = { "blk.*.attn_q", "blk.*.ffn_up" };
    c = lora_cfg(4, 8.0f, qu, 2);
    c.rslora = true;
    CHECK(bg_lora_add(a, "default", &c) == 4, "add to a");
    randomize_b(a, "default", 0.05f);
    char dir[] = "/tmp/bg_test_finetune_XXXXXX", path[256], err[512];
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    snprintf(path, sizeof path, "%s/adapter.gguf", dir);
    int rc = bg_lora_save(path, a, "default", err, sizeof err);
    CHECK(rc == BG_OK, "lora save: %s", err);
    int64_t nl;
    float *ya = logits_of(a, ctx, &nl);
    uint64_t rng = bg_ctx_rng_state(ctx);
    rc = bg_lora_load(path, b, "ft", err, sizeof err);
    CHECK(rc == BG_OK && bg_ctx_rng_state(ctx) == rng, "lora load into the twin: %s", err);
    float *yb = logits_of(b, ctx, &nl);
    check_bitwise("twin with the loaded adapter vs original", yb, ya, nl);
    CHECK(bg_module_find_param(b, "blk.1.ffn_up.weight.lora_b.ft") != NULL &&
              bg_module_count(b, true) == bg_module_count(a, true),
          "adapter 'ft' added with the same trainable count (base frozen)");
    rc = bg_lora_load(path, b, "ft", err, sizeof err); /* replace in place */
    CHECK(rc == BG_OK && bg_module_n_params(b) == np + 8, "reloading replaces: %d %s", rc, err);

    /* Into a model of other shapes: an error, nothing added. */
    bg_bitnet_config oc = small_cfg(true);
    oc.n_ff = 256;
    bg_module *other = bg_bitnet_new(ctx, &oc);
    int np_o = bg_module_n_params(other);
    float *bo = params_of(other, &n);
    rc = bg_lora_load(path, other, NULL, err, sizeof err);
    expect_unchanged(other, bo, n, np_o, rc, BG_ESHAPE, "adapter into n_ff 256 model", err);
    /* Into the twin whose adapter of that name has another rank. */
    c = lora_cfg(2, 8.0f, qu, 2);
    CHECK(bg_lora_add(b, "r2", &c) == 4, "add r2");
    np = bg_module_n_params(b);
    free(before);
    before = params_of(b, &n);
    rc = bg_lora_load(path, b, "r2", err, sizeof err);
    expect_unchanged(b, before, n, np, rc, BG_ESHAPE, "adapter of another rank", err);
    free(bo);
    bo = params_of(other, &n);
    snprintf(path, sizeof path, "%s/missing.gguf", dir);
    rc = bg_lora_load(path, other, NULL, err, sizeof err);
    expect_unchanged(other, bo, n, np_o, rc, BG_EIO, "missing file", err);
    rc = bg_lora_save(path, other, "nope", err, sizeof err);
    CHECK(rc == BG_ENOTFOUND, "saving an unknown adapter: %s", err);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0, "cleanup");
    free(before), free(bo), free(ya), free(yb);
    bg_module_free(&a);
    bg_module_free(&b);
    finish(&ctx, &other, NULL);
}

/* ---- (c) freezing ---------------------------------------------------------------------------- */

static void test_freeze(void)
{
    printf("(c) freeze / unfreeze by glob\n");
    bg_ctx *ctx = NULL;
    bg_ctx_create(&ctx, BG_CPU);
    bg_module *m = small_model(ctx, 26, true);
    int64_t all = bg_module_count(m, false);
    /* per layer attn_*: 2 norms of 64, q and o 64x64, k and v 32x64 */
    int64_t attn = 2 * (64 + 64 + 64 * 64 * 2 + 32 * 64 * 2);
    CHECK(bg_module_freeze(m, "blk.*.attn_*") == 12, "blk.*.attn_* matches 6 per layer");
    CHECK(bg_module_count(m, true) == all - attn, "trainable %lld, expected %lld",
          (long long)bg_module_count(m, true), (long long)(all - attn));
    CHECK(bg_module_unfreeze(m, "blk.1.*") == 11, "blk.1.* matches the 11 tensors of layer 1");
    CHECK(bg_module_count(m, true) == all - attn / 2, "after unfreezing layer 1");
    CHECK(bg_module_freeze(m, "nothing*") == 0, "a pattern that matches nothing counts 0");
    FILE *f = tmpfile();
    bg_module_print_trainable(m, f);
    char got[256] = "", want[256];
    rewind(f);
    if (!fgets(got, sizeof got, f)) got[0] = 0;
    fclose(f);
    int64_t tr = all - attn / 2;
    snprintf(want, sizeof want, "trainable params: %lld || all params: %lld || trainable%%: %.4f\n",
             (long long)tr, (long long)all, 100.0 * (double)tr / (double)all);
    CHECK(strcmp(got, want) == 0, "print_trainable: '%s' vs '%s'", got, want);
    printf("  %s", got);
    finish(&ctx, &m, NULL);
}

/* ---- (d) schedules ---------------------------------------------------------------------------- */

static void check_sched(const char *what, const bg_schedule *s, int64_t step, double want)
{
    double got = bg_schedule_lr(s, step);
    CHECK(fabs(got - want) <= 1e-6 * (fabs(want) + 1e-3), "%s lr(%lld) = %.9g, expected %.9g", what,
          (long long)step, got, want);
}

static void test_schedules(void)
{
    printf("(d) schedules vs closed form\n");
    const double pi = 3.14159265358979323846;
    bg_schedule c = { .kind = BG_SCHED_CONSTANT, .warmup = 4, .total = 100 };
    for (int64_t s = 0; s < 8; s++) check_sched("constant", &c, s, s < 4 ? (s + 1) / 4.0 : 1.0);
    /* warm-up (s + 1) / warmup, then decay over p = (s - warmup) / (total - warmup) */
    bg_schedule lin = { .kind = BG_SCHED_LINEAR, .warmup = 10, .total = 110, .min_factor = 0.1f };
    int64_t steps[] = { 0, 5, 9, 10, 35, 60, 109, 110, 500 };
    bg_schedule cos_s = {
        .kind = BG_SCHED_COSINE, .warmup = 10, .total = 110, .min_factor = 0.05f
    };
    for (size_t i = 0; i < NELEM(steps); i++) {
        int64_t s = steps[i];
        double p = s < 10 ? 0 : fmin((s - 10) / 100.0, 1.0), w = (s + 1) / 10.0, lo = 0.05f;
        check_sched("linear", &lin, s, s < 10 ? w : 1.0 - (1.0 - 0.1f) * p);
        check_sched("cosine", &cos_s, s, s < 10 ? w : lo + (1 - lo) * 0.5 * (1 + cos(pi * p)));
    }
    bg_schedule two = { .kind = BG_SCHED_TWO_STAGE,
                        .total = 100,
                        .min_factor = 0.1f,
                        .stage2_at = 0.5f,
                        .stage2_factor = 0.3f };
    double before = bg_schedule_lr(&two, 49), after = bg_schedule_lr(&two, 50);
    check_sched("two-stage", &two, 49, 1.0 - 0.9f * 0.49);
    check_sched("two-stage", &two, 50, (1.0 - 0.9f * 0.5) * 0.3f);
    CHECK(after < 0.35 * before && bg_schedule_wd(&two, 49) == 1.0f &&
              bg_schedule_wd(&two, 50) == 0.0f && bg_schedule_wd(&two, 99) == 0.0f,
          "two-stage: lr drops %.4f -> %.4f and weight decay switches off at 50", before, after);
    bg_ctx *ctx = NULL;
    bg_ctx_create(&ctx, BG_CPU);
    bg_optim_config oc = bg_optim_default(BG_ADAMW);
    bg_optim *o = bg_optim_new(ctx, &oc);
    bg_schedule_apply(&two, o, 60);
    CHECK(bg_optim_lr_scale(o) == bg_schedule_lr(&two, 60) && bg_optim_wd_scale(o) == 0.0f,
          "apply sets lr scale %g and wd scale %g", (double)bg_optim_lr_scale(o),
          (double)bg_optim_wd_scale(o));
    finish(&ctx, NULL, &o);
    static const bg_lambda_kind kinds[3] = { BG_LAMBDA_LINEAR, BG_LAMBDA_EXP, BG_LAMBDA_SIGMOID };
    for (int k = 0; k < 3; k++) {
        bool mono = true;
        float prev = bg_lambda_at(kinds[k], 0, 100);
        for (int64_t s = 1; s <= 150; s++) {
            float v = bg_lambda_at(kinds[k], s, 100);
            mono = mono && v >= prev && v <= 1.0f;
            prev = v;
        }
        CHECK(mono && bg_lambda_at(kinds[k], 0, 100) < 0.01f &&
                  bg_lambda_at(kinds[k], 100, 100) == 1.0f &&
                  bg_lambda_at(kinds[k], 150, 100) == 1.0f,
              "lambda kind %d: monotone from %g to 1", k, (double)bg_lambda_at(kinds[k], 0, 100));
    }
    CHECK(fabs(bg_lambda_at(BG_LAMBDA_LINEAR, 50, 100) - 0.5) < 1e-7 &&
              fabs(bg_lambda_at(BG_LAMBDA_EXP, 20, 100) - (1 - exp(-1.0))) < 1e-6 &&
              fabs(bg_lambda_at(BG_LAMBDA_SIGMOID, 50, 100) - 0.5) < 1e-6 &&
              bg_lambda_at(BG_LAMBDA_CONSTANT, 0, 100) == 1.0f,
          "lambda closed forms");
}

/* ---- (e) clipping and accumulation --------------------------------------------------------------- */

static float *grads_of(bg_optim *o, int64_t *n_out)
{
    int64_t n = 0;
    for (int i = 0; i < bg_optim_n_params(o); i++) n += bg_tensor_numel(bg_optim_param(o, i));
    float *v = calloc((size_t)n + 1, sizeof *v);
    int64_t off = 0;
    for (int i = 0; i < bg_optim_n_params(o); i++) {
        bg_tensor *p = bg_optim_param(o, i);
        if (bg_tensor_grad(p)) bg_tensor_read(bg_tensor_grad(p), v + off);
        off += bg_tensor_numel(p);
    }
    *n_out = n;
    return v;
}

static void model_grads(bg_ctx *ctx, bg_module *m, bg_optim *o)
{
    bg_optim_zero_grad(o);
    CHECK(bg_backward(bg_bitnet_loss(m, ids_tensor(ctx, 13, BATCH), -100)) == BG_OK, "backward");
    bg_step_end(ctx);
}

static void test_clip_and_accumulate(void)
{
    printf("(e) clipping, gradient accumulation\n");
    bg_ctx *ctx = NULL;
    bg_ctx_create(&ctx, BG_CPU);
    bg_module *m = small_model(ctx, 27, true);
    bg_optim_config oc = bg_optim_default(BG_SGD);
    bg_optim *o = bg_optim_new(ctx, &oc);
    bg_optim_add_module(o, m);
    model_grads(ctx, m, o);
    int64_t n;
    float *g = grads_of(o, &n);
    double ss = 0.0;
    for (int64_t i = 0; i < n; i++) ss += (double)g[i] * g[i];
    float norm = (float)sqrt(ss), max_norm = 0.5f * norm;
    float got = bg_clip_grad_norm(o, max_norm);
    check_close("clip_grad_norm: returned norm", &got, &norm, 1, 1e-6, 0.0);
    float *clipped = grads_of(o, &n), *want = malloc((size_t)n * sizeof *want);
    float coef = max_norm / (norm + 1e-6f); /* torch's clip_grad_norm_ */
    for (int64_t i = 0; i < n; i++) want[i] = g[i] * coef;
    check_close("clip_grad_norm: clipped gradients", clipped, want, n, 1e-6, 0.0);
    free(clipped);
    clipped = grads_of(o, &n);
    bg_clip_grad_norm(o, 1e6f);
    float *again = grads_of(o, &n);
    check_bitwise("clip_grad_norm above the norm changes nothing", again, clipped, n);
    float cv = 0.25f * fabsf(want[0]) + 1e-4f;
    for (int64_t i = 0; i < n; i++) want[i] = fminf(fmaxf(clipped[i], -cv), cv);
    bg_clip_grad_value(o, cv);
    free(again);
    again = grads_of(o, &n);
    check_bitwise("clip_grad_value vs clamp", again, want, n);

    /* Two micro-batches of one sequence, each loss halved, accumulate to the batch of two. */
    model_grads(ctx, m, o);
    float *full = grads_of(o, &n);
    bg_optim_zero_grad(o);
    for (int64_t b = 0; b < 2; b++) {
        bg_tensor *one = ids_rows(ctx, 13, b, 1);
        CHECK(bg_backward(bg_mul_scalar(bg_bitnet_loss(m, one, -100), 0.5f)) == BG_OK,
              "micro-batch %lld: %s", (long long)b, bg_ctx_error(ctx));
    }
    bg_step_end(ctx);
    float *acc = grads_of(o, &n);
    check_close("accumulated micro-batch gradients vs full batch", acc, full, n, 1e-5, 0.0);
    free(g), free(clipped), free(want), free(again), free(full), free(acc);
    finish(&ctx, &m, &o);
}

/* A NaN or Inf anywhere in a gradient (the check runs in threaded chunks: first, middle and
 * ragged last chunk) refuses the whole step and changes no parameter; a finite one steps. */
static void test_nonfinite_refused(void)
{
    printf("(f) a non-finite gradient refuses the step\n");
    enum { N = 100003 };
    bg_ctx *ctx = NULL;
    if (!CHECK(bg_ctx_create(&ctx, BG_CPU) == BG_OK, "ctx")) return;
    bg_tensor *a = bg_param(ctx, "a", 1, S(7)), *w = bg_param(ctx, "w", 1, S(N));
    float *before = malloc(N * sizeof *before), *wd = bg_tensor_data(w);
    for (int i = 0; i < 7; i++) ((float *)bg_tensor_data(a))[i] = 0.5f;
    for (int i = 0; i < N; i++) wd[i] = (float)(i % 11) * 0.1f - 0.5f;
    memcpy(before, wd, N * sizeof *before);
    bg_optim_config cfg = bg_optim_default(BG_ADAMW);
    bg_optim *o = bg_optim_new(ctx, &cfg);
    bg_optim_add_group(o, (bg_tensor *[]){ a, w }, 2, cfg.lr, cfg.weight_decay);
    const int at[] = { 0, 50000, N - 1 };
    const float bad[] = { NAN, INFINITY, -INFINITY };
    for (int t = 0; t < 3; t++) {
        CHECK(bg_backward(bg_add(bg_sum(bg_mul(w, w), BG_AXIS_ALL, false),
                                 bg_sum(a, BG_AXIS_ALL, false))) == BG_OK,
              "backward: %s", bg_ctx_error(ctx));
        ((float *)bg_tensor_data(bg_tensor_grad(w)))[at[t]] = bad[t];
        CHECK(bg_optim_step(o) == BG_ENONFINITE, "%g at %d: step refused", (double)bad[t], at[t]);
        CHECK(memcmp(wd, before, N * sizeof *before) == 0 &&
                  ((float *)bg_tensor_data(a))[0] == 0.5f,
              "%g at %d: no parameter changed", (double)bad[t], at[t]);
        bg_ctx_clear_error(ctx);
        bg_optim_zero_grad(o);
        bg_step_end(ctx);
    }
    CHECK(bg_backward(bg_sum(bg_mul(w, w), BG_AXIS_ALL, false)) == BG_OK, "backward");
    CHECK(bg_optim_step(o) == BG_OK && memcmp(wd, before, N * sizeof *before) != 0,
          "finite gradients step");
    bg_step_end(ctx);
    free(before);
    bg_optim_free(&o);
    bg_ctx_free(&ctx);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    test_w1_optimizers();
    test_lora_block();
    test_lora_training();
    test_gemm_skips();
    test_merge(true);
    test_merge(false);
    test_adapters_active();
    test_lora_errors_and_files();
    test_freeze();
    test_schedules();
    test_clip_and_accumulate();
    test_nonfinite_refused();
    return harness_summary();
}
