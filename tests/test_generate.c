/* test_generate.c - the key/value-cached bitnet forward (src/nn/bitnet_cache.c) against
 * bg_bitnet_forward re-run on the whole sequence: a prompt fed at once, then one token at a
 * time, the logits of every new position compared for several steps, on models with GQA
 * (n_head_kv < n_head), head_dim 96 and 64, BitLinear in inference mode and in training
 * form, full precision, and with the base packed (2-bit codes, F16 token_embd; what generate
 * and eval load from a TQ file), whose logits must also be the bits of the latent inference
 * kernels'; and the errors (context full, ids out of range, another model). */
#include <bitgrad.h>

#include "harness.h"

typedef struct gen_case {
    const char *name;
    int64_t n_embd, n_head, n_head_kv, n_layer, n_ff, n_vocab;
    bool bitlinear, inference, lora;
    int packed; /* 1: base packed, token_embd f32; 2: also token_embd F16 */
} gen_case;

/* A LoRA adapter on every projection with B random (bg_lora_add makes B zero: no effect). */
static bool add_lora(bg_module *m)
{
    const char *targets[] = { "blk.*" };
    bg_lora_config lc = bg_lora_default();
    lc.rank = 4;
    lc.targets = targets;
    lc.n_targets = 1;
    bg_tensor *p[64];
    if (bg_lora_add(m, "default", &lc) <= 0) return false;
    int n = bg_lora_params(m, "default", p, 64);
    for (int i = 1; i < n; i += 2) bg_tensor_fill_randn(p[i], 0.0f, 0.05f);
    return n > 0;
}

/* With f16, rounds token_embd to F16 values (so packing keeps it F16); takes the latent
 * model's full logits of every prefix ids[0..k), k >= k0, into ref[k] (the fused training
 * form: the same int8 x ternary sums and scale products as the packed forward; each length
 * run as the test runs it, the f32 GEMMs' shapes being the same), then freezes and packs the
 * whole model. */
static void pack_model(bg_ctx *ctx, bg_module *m, const int32_t *ids, int64_t k0, int64_t len,
                       bool f16, float **ref)
{
    bg_tensor *e = bg_module_find_param(m, "token_embd.weight");
    float *v = f16 ? harness_read(e) : NULL;
    for (int64_t i = 0; v && i < bg_tensor_numel(e); i++)
        v[i] = bg_fp16_to_fp32(bg_fp32_to_fp16(v[i]));
    if (v) bg_tensor_write(e, v);
    free(v);
    CHECK(bg_module_set_inference(m, false) == BG_OK, "inference off");
    for (int64_t k = k0; k <= len; k++) {
        ref[k] = harness_read(
            bg_bitnet_forward(m, bg_from_data(ctx, BG_I32, 2, (int64_t[]){ 1, k }, ids)));
        bg_step_end(ctx);
    }
    bg_module_freeze(m, "*");
    int n = bg_module_pack_frozen(m);
    CHECK(n > 0 && bg_linear_is_packed(bg_module_find(m, "blk.0.attn_q")) &&
              (bg_tensor_dtype(bg_module_find_param(m, "token_embd.weight")) == BG_F16) == f16,
          "packed %d modules, token_embd F16 %d: %s", n, f16, bg_ctx_error(ctx));
}

/* Feeds ids[0..len) as a prompt of n_prompt tokens and then one by one; after each call
 * compares the new rows with the full forward's. */
static void check_case(const gen_case *gc)
{
    printf("%s: n_embd %lld heads %lld/%lld (head_dim %lld) vocab %lld %s%s\n", gc->name,
           (long long)gc->n_embd, (long long)gc->n_head, (long long)gc->n_head_kv,
           (long long)(gc->n_embd / gc->n_head), (long long)gc->n_vocab,
           gc->bitlinear ? "BitLinear" : "full precision",
           gc->bitlinear ? (gc->packed      ? " (packed base)"
                            : gc->inference ? " (inference kernels)"
                                            : " (training form)")
                         : "");
    bg_ctx *ctx;
    enum { LEN = 14, PROMPT = 5 };
    float *ref[LEN + 1] = { 0 }; /* a packed case: the latent logits of each prefix */
    if (!CHECK(bg_ctx_create(&ctx, BG_CPU) == BG_OK, "ctx")) return;
    bg_ctx_seed(ctx, 7);
    bg_bitnet_config c = bg_bitnet_default();
    c.n_embd = gc->n_embd;
    c.n_head = gc->n_head;
    c.n_head_kv = gc->n_head_kv;
    c.n_layer = gc->n_layer;
    c.n_ff = gc->n_ff;
    c.n_vocab = gc->n_vocab;
    c.n_ctx = 24;
    c.bitlinear = gc->bitlinear;
    bg_module *m = bg_bitnet_new(ctx, &c);
    if (!CHECK(m, "bitnet_new: %s", bg_ctx_error(ctx))) goto out;
    bg_bitnet_init(m, 0.08f);
    if (gc->lora) CHECK(add_lora(m), "lora: %s", bg_ctx_error(ctx));
    bg_module_set_training(m, false);
    if (gc->inference) CHECK(bg_module_set_inference(m, true) == BG_OK, "set_inference");
    bg_grad_enable(ctx, false);
    int32_t ids[LEN];
    uint64_t r = 99;
    for (int i = 0; i < LEN; i++) ids[i] = (int32_t)(harness_lcg(&r) % (uint32_t)gc->n_vocab);
    if (gc->packed) pack_model(ctx, m, ids, PROMPT, LEN, gc->packed == 2, ref);
    bg_kv_cache *kv = NULL;
    if (!CHECK(bg_kv_cache_new(m, 0, &kv) == BG_OK, "kv_cache_new: %s", bg_ctx_error(ctx)))
        goto out;
    CHECK(bg_kv_cache_n_ctx(kv) == 24, "cache capacity %lld", (long long)bg_kv_cache_n_ctx(kv));
    int64_t V = gc->n_vocab;
    for (int pos = 0; pos < LEN;) {
        int n = pos == 0 ? PROMPT : 1;
        bg_tensor *lc = bg_bitnet_forward_cached(m, kv, ids + pos, n);
        float *got = harness_read(lc);
        bg_tensor *lf =
            bg_bitnet_forward(m, bg_from_data(ctx, BG_I32, 2, (int64_t[]){ 1, pos + n }, ids));
        float *want = harness_read(lf);
        char what[96];
        snprintf(what, sizeof what, "positions %d..%d", pos, pos + n - 1);
        if (CHECK(got && want, "%s: %s", what, bg_ctx_error(ctx))) {
            CHECK(bg_tensor_dim(lc, 0) == n && bg_tensor_dim(lc, 1) == V, "logits shape");
            check_close(what, got, want + (int64_t)pos * V, n * V, 2e-5, 0.0);
        }
        const float *r = ref[pos + n];
        if (r && got && want) { /* packed: int8 x codes, the latent form's exact sums */
            snprintf(what, sizeof what, "%d positions packed vs latent", pos + n);
            check_bitwise(what, want, r, (pos + n) * V);
        }
        free(got);
        free(want);
        bg_step_end(ctx);
        pos += n;
        CHECK(bg_kv_cache_pos(kv) == pos, "cache position %lld, want %d",
              (long long)bg_kv_cache_pos(kv), pos);
    }
    /* 10 more would pass the context of 24: refused, the cache unchanged */
    int32_t more[11] = { 0 };
    CHECK(!bg_bitnet_forward_cached(m, kv, more, 11) && bg_ctx_error_code(ctx) == BG_ESHAPE,
          "a context overflow is refused: %s", bg_ctx_error(ctx));
    bg_ctx_clear_error(ctx);
    int32_t bad = (int32_t)V;
    CHECK(!bg_bitnet_forward_cached(m, kv, &bad, 1) && bg_ctx_error_code(ctx) == BG_EINVAL,
          "an id of n_vocab is refused: %s", bg_ctx_error(ctx));
    bg_ctx_clear_error(ctx);
    bg_module_set_llama_emulation(m, true);
    CHECK(!bg_bitnet_forward_cached(m, kv, ids, 1) && bg_ctx_error_code(ctx) == BG_EUNSUPPORTED,
          "llama.cpp emulation is refused: %s", bg_ctx_error(ctx));
    bg_module_set_llama_emulation(m, false);
    bg_ctx_clear_error(ctx);
    CHECK(bg_kv_cache_pos(kv) == LEN, "refusals leave the cache at %d", LEN);
    /* reset: position 0 again gives the first prompt's logits */
    bg_kv_cache_reset(kv);
    float *again = harness_read(bg_bitnet_forward_cached(m, kv, ids, 1));
    float *first =
        harness_read(bg_bitnet_forward(m, bg_from_data(ctx, BG_I32, 2, (int64_t[]){ 1, 1 }, ids)));
    if (CHECK(again && first, "after reset: %s", bg_ctx_error(ctx)))
        check_close("after reset, position 0", again, first, V, 2e-5, 0.0);
    free(again);
    free(first);
    bg_step_end(ctx);
    bg_kv_cache_free(&kv);
    CHECK(kv == NULL, "free sets NULL");
out:
    for (int k = 0; k <= LEN; k++) free(ref[k]);
    bg_module_free(&m);
    bg_ctx_free(&ctx);
}

static void check_wrong_model(void)
{
    bg_ctx *ctx;
    if (!CHECK(bg_ctx_create(&ctx, BG_CPU) == BG_OK, "ctx")) return;
    bg_bitnet_config c = bg_bitnet_default();
    c.n_embd = 64;
    c.n_head = c.n_head_kv = 2;
    c.n_layer = 1;
    c.n_ff = 64;
    bg_module *a = bg_bitnet_new(ctx, &c), *b = bg_bitnet_new(ctx, &c);
    bg_module *lin = bg_linear_new(ctx, "x", 4, 4, false);
    bg_kv_cache *kv = NULL;
    CHECK(bg_kv_cache_new(lin, 0, &kv) == BG_EINVAL && !kv, "a Linear has no kv cache");
    bg_ctx_clear_error(ctx);
    if (CHECK(bg_kv_cache_new(a, 1000, &kv) == BG_OK, "kv cache")) {
        CHECK(bg_kv_cache_n_ctx(kv) == c.n_ctx, "capacity capped at the model's n_ctx");
        int32_t id = 1;
        CHECK(!bg_bitnet_forward_cached(b, kv, &id, 1), "a cache of model a refuses model b");
    }
    bg_kv_cache_free(&kv);
    bg_module_free(&lin);
    bg_module_free(&a);
    bg_module_free(&b);
    bg_ctx_free(&ctx);
}

/* One cached step after 47 positions multiplies through one position's projections, not 48:
 * the GEMM FLOPs the ctx counts (full precision: every projection is a GEMM) are far fewer. */
static void check_cost(void)
{
    bg_ctx *ctx;
    if (!CHECK(bg_ctx_create(&ctx, BG_CPU) == BG_OK, "ctx")) return;
    bg_bitnet_config c = bg_bitnet_default();
    c.n_embd = 128;
    c.n_head = c.n_head_kv = 2;
    c.n_layer = 2;
    c.n_ff = 256;
    c.n_ctx = 64;
    c.bitlinear = false;
    bg_module *m = bg_bitnet_new(ctx, &c);
    bg_kv_cache *kv = NULL;
    int32_t ids[48];
    for (int i = 0; i < 48; i++) ids[i] = (i * 37) % 256;
    bg_grad_enable(ctx, false);
    if (CHECK(m && bg_kv_cache_new(m, 0, &kv) == BG_OK, "model and cache")) {
        bg_ctx_stats s0, s1, s2;
        bool ok = bg_bitnet_forward_cached(m, kv, ids, 47) != NULL;
        bg_step_end(ctx);
        bg_ctx_stats_get(ctx, &s0);
        ok = ok && bg_bitnet_forward_cached(m, kv, ids + 47, 1) != NULL;
        bg_step_end(ctx);
        bg_ctx_stats_get(ctx, &s1);
        ok = ok && bg_bitnet_forward(m, bg_from_data(ctx, BG_I32, 2, (int64_t[]){ 1, 48 }, ids));
        bg_step_end(ctx);
        bg_ctx_stats_get(ctx, &s2);
        uint64_t step = s1.matmul_flops - s0.matmul_flops, full = s2.matmul_flops - s1.matmul_flops;
        printf("  GEMM FLOPs: cached step %llu, full re-run of 48 positions %llu\n",
               (unsigned long long)step, (unsigned long long)full);
        CHECK(ok && step > 0 && step * 20 < full, "a cached step costs under 1/20 of a re-run");
    }
    bg_kv_cache_free(&kv);
    bg_module_free(&m);
    bg_ctx_free(&ctx);
}

int main(void)
{
    static const gen_case cases[] = {
        { "gqa_hd96_bit_infer", 192, 2, 1, 2, 256, 300, true, true, false, 0 },
        { "gqa_hd64_bit_train", 256, 4, 2, 2, 256, 260, true, false, false, 0 },
        { "mha_hd64_fp", 128, 2, 2, 2, 192, 256, false, false, false, 0 },
        { "gqa_hd96_fp", 384, 4, 2, 1, 256, 320, false, false, false, 0 },
        { "gqa_hd64_bit_infer_lora", 128, 2, 1, 2, 128, 270, true, true, true, 0 },
        { "gqa_hd96_bit_packed", 192, 2, 1, 2, 256, 300, true, true, false, 1 },
        { "gqa_hd64_bit_packed_f16", 128, 2, 1, 2, 256, 270, true, true, false, 2 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_case(&cases[i]);
    check_wrong_model();
    check_cost();
    return harness_summary();
}
