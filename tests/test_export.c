/* test_export.c - bitnet model and LoRA adapter export for llama.cpp, and import back:
 * round trips give identical logits, sizes llama.cpp cannot hold are refused with the fix
 * named, and gguf-py (llama.cpp's reader) reads every file back (tests/export_readback.py):
 * keys and types, shapes, dequantize(weight) * scale == bitgrad's W_q. */
#include <math.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <string.h>
#include <sys/stat.h>

#include <bitgrad.h>
#include <bitgrad/export.h>

#include "harness.h"

static char dir[1024];

static bg_module *small_model(bg_ctx *ctx, int64_t n_embd, int64_t n_ff)
{
    bg_bitnet_config c = bg_bitnet_default();
    c.n_embd = n_embd;
    c.n_layer = 2;
    c.n_head = 4;
    c.n_head_kv = 2;
    c.n_ff = n_ff;
    c.n_ctx = 32;
    bg_module *m = bg_bitnet_new(ctx, &c);
    if (m) bg_bitnet_init(m, 0.05f);
    return m;
}

/* A few AdamW steps so that weights are not just the initialisation. */
static void train_a_little(bg_ctx *ctx, bg_module *m, int steps)
{
    bg_optim_config oc = bg_optim_default(BG_ADAMW);
    bg_optim *o = bg_optim_new(ctx, &oc);
    bg_optim_add_module(o, m);
    int32_t ids[2 * 17];
    for (int s = 0; s < steps; s++) {
        for (int i = 0; i < 34; i++) ids[i] = (int32_t)((i * 7 + s * 13) % 256);
        bg_tensor *t = bg_from_data(ctx, BG_I32, 2, (int64_t[]){ 2, 17 }, ids);
        bg_tensor *loss = bg_bitnet_loss(m, t, -1);
        CHECK(loss && bg_backward(loss) == 0, "train step %d: %s", s, bg_ctx_error(ctx));
        bg_optim_step(o);
        bg_optim_zero_grad(o);
        bg_step_end(ctx);
    }
    bg_optim_free(&o);
}

static float *logits(bg_ctx *ctx, bg_module *m, bool infer)
{
    static const int32_t ids[12] = { 49, 50, 43, 51, 52, 61, 10, 65, 66, 200, 3, 0 };
    bool prev = bg_grad_enable(ctx, false);
    bg_module_set_inference(m, infer);
    bg_tensor *lg = bg_bitnet_forward(m, bg_from_data(ctx, BG_I32, 2, (int64_t[]){ 1, 12 }, ids));
    float *v = lg ? harness_read(lg) : NULL;
    CHECK(v != NULL, "forward: %s", bg_ctx_error(ctx));
    bg_step_end(ctx);
    bg_module_set_inference(m, false);
    bg_grad_enable(ctx, prev);
    return v;
}

static void path_of(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", dir, name); }

static void dump_f32(const char *name, const float *v, int64_t n)
{
    char p[2048];
    path_of(p, sizeof p, name);
    FILE *f = fopen(p, "wb");
    if (f) {
        fwrite(v, sizeof(float), (size_t)n, f);
        fclose(f);
    }
}

/* W_q of every projection, for the Python reader to compare with. */
static void dump_wq(bg_module *m)
{
    for (int i = 0; i < bg_module_n_children(m); i++) {
        bg_module *c = bg_module_child(m, i);
        if (!bg_linear_is_bit(c)) continue;
        bg_tensor *w = bg_linear_weight(c);
        int64_t out = bg_tensor_dim(w, 0), in = bg_tensor_dim(w, 1);
        int8_t *codes = malloc((size_t)(out * in));
        float *wq = malloc((size_t)(out * in) * sizeof(float)), s;
        bg_ternary_quantize(bg_tensor_data(w), out, in, BG_WQ_PER_TENSOR, 0, codes, &s);
        for (int64_t k = 0; k < out * in; k++) wq[k] = (float)codes[k] * s;
        char name[128];
        snprintf(name, sizeof name, "%s.wq.f32", bg_module_name(c));
        dump_f32(name, wq, out * in);
        free(codes);
        free(wq);
    }
}

static void test_model_round_trip(bg_ctx *ctx, bg_module *m, int type, const char *file)
{
    char p[2048], err[512];
    path_of(p, sizeof p, file);
    bg_export_options o = bg_export_default();
    o.weight_type = type;
    o.embd_type = BG_GGML_F32; /* lossless, so logits must be identical */
    CHECK(bg_bitnet_export(m, p, &o, err, sizeof err) == 0, "export %s: %s", file, err);
    bg_module *back = NULL;
    CHECK(bg_bitnet_import(ctx, p, &back, err, sizeof err) == 0, "import %s: %s", file, err);
    if (!back) return;
    float *a = logits(ctx, m, false), *b = logits(ctx, back, false);
    if (a && b) check_bitwise(file, b, a, 12 * 256);
    float *ai = logits(ctx, m, true), *bi = logits(ctx, back, true);
    if (ai && bi) check_bitwise("inference path after round trip", bi, ai, 12 * 256);
    free(a);
    free(b);
    free(ai);
    free(bi);
    bg_module_free(&back);
}

/* The converter's form: d = the block's absmax (here fp16(s_w)) and no .scale tensors. The
 * import must give back the same ternary codes and W_q = codes * fp16(s_w). */
static void test_scale_in_d(bg_ctx *ctx, bg_module *m)
{
    char p[2048], err[512];
    path_of(p, sizeof p, "model_scale_in_d.gguf");
    bg_export_options o = bg_export_default();
    o.scale_in_d = true;
    o.embd_type = BG_GGML_F32;
    CHECK(bg_bitnet_export(m, p, &o, err, sizeof err) == 0, "export with d = scale: %s", err);
    bg_module *back = NULL;
    CHECK(bg_bitnet_import(ctx, p, &back, err, sizeof err) == 0, "import d = scale form: %s", err);
    if (!back) return;
    bg_tensor *w = bg_module_find_param(m, "blk.1.ffn_down.weight");
    bg_tensor *w2 = bg_module_find_param(back, "blk.1.ffn_down.weight");
    int64_t n = bg_tensor_numel(w);
    int8_t *c1 = malloc((size_t)n), *c2 = malloc((size_t)n);
    float s1, s2;
    bg_ternary_quantize(bg_tensor_data(w), 1, n, BG_WQ_PER_TENSOR, 0, c1, &s1);
    bg_ternary_quantize(bg_tensor_data(w2), 1, n, BG_WQ_PER_TENSOR, 0, c2, &s2);
    CHECK(bg_ternary_flips(c1, c2, n) == 0, "same ternary codes after the d = scale round trip");
    CHECK(s2 == bg_fp16_to_fp32(bg_fp32_to_fp16(s1)), "scale comes back as fp16(s_w): %.9g vs %.9g",
          (double)s2, (double)s1);
    /* (Logits are not compared: this form is lossy by design, each scale moves by up to
     * 2^-11 relative, which the random-weight test model amplifies to ~2e-2.) */
    free(c1);
    free(c2);
    bg_module_free(&back);
}

static void test_adapter(bg_ctx *ctx, bg_module *m)
{
    static const char *targets[] = { "blk.*.attn_q", "blk.*.ffn_gate", "blk.*.ffn_up" };
    bg_lora_config lc = bg_lora_default();
    lc.rank = 4;
    lc.targets = targets;
    lc.n_targets = 3;
    CHECK(bg_lora_add(m, "default", &lc) == 6, "lora on 6 modules: %s", bg_ctx_error(ctx));
    bg_tensor *ps[12];
    int np = bg_lora_params(m, "default", ps, 12);
    for (int i = 0; i < np; i++) /* non-zero B so the adapter matters */
        if (strstr(bg_tensor_name(ps[i]), "lora_b")) bg_tensor_fill_randn(ps[i], 0.0f, 0.05f);
    char p[2048], err[512];
    path_of(p, sizeof p, "adapter.gguf");
    CHECK(bg_lora_export(m, "default", p, err, sizeof err) == 0, "adapter export: %s", err);
    for (int i = 0; i < np; i++) { /* A exactly; B of gate/up is divided by the scale */
        const char *n = bg_tensor_name(ps[i]);
        char fn[128];
        snprintf(fn, sizeof fn, "%s.f32", n);
        if (strstr(n, "lora_a") || strstr(n, "attn_q")) dump_f32(fn, bg_tensor_data(ps[i]), bg_tensor_numel(ps[i]));
    }
    float *with = logits(ctx, m, false);
    bg_lora_set_active(m, NULL);
    float *without = logits(ctx, m, false);
    /* Import into a copy of the base: the model plus adapter means the same. */
    char mp[2048];
    path_of(mp, sizeof mp, "model_tq2.gguf");
    bg_module *base = NULL;
    CHECK(bg_bitnet_import(ctx, mp, &base, err, sizeof err) == 0, "import base: %s", err);
    CHECK(base && bg_lora_import(base, p, "default", err, sizeof err) == 0, "adapter import: %s", err);
    float *re = base ? logits(ctx, base, false) : NULL;
    if (with && re) check_close("model + adapter after export/import", re, with, 12 * 256, 1e-5, 0);
    double diff = 0;
    for (int i = 0; with && without && i < 12 * 256; i++) diff += fabs((double)with[i] - without[i]);
    CHECK(diff > 1e-3, "the adapter changes the logits (sum |diff| %.3g)", diff);
    bg_lora_set_active(m, "default");
    free(with);
    free(without);
    free(re);
    bg_module_free(&base);
}

static void test_refusals(bg_ctx *ctx)
{
    /* Rows TQ cannot hold are no longer refused: n_embd 64 goes to Q2_0, n_ff 96 to Q8_0, a
     * row of 40 to F32, all lossless. */
    bg_module *m = small_model(ctx, 64, 96);
    train_a_little(ctx, m, 1);
    test_model_round_trip(ctx, m, BG_GGML_TQ2_0, "model_q2_q8.gguf");
    test_model_round_trip(ctx, m, BG_GGML_Q8_0, "model_q8.gguf");
    bg_module_free(&m);
    m = small_model(ctx, 64, 40);
    test_model_round_trip(ctx, m, BG_GGML_TQ2_0, "model_f32_rows.gguf");
    char p[2048], err[512] = "";
    bg_module_free(&m);
    m = small_model(ctx, 256, 512);
    bg_export_options o = bg_export_default();
    o.weight_type = BG_GGML_Q4_0;
    path_of(p, sizeof p, "refused.gguf");
    remove(p);
    CHECK(bg_bitnet_export(m, p, &o, err, sizeof err) == BG_EINVAL && strstr(err, "q2_0"),
          "weight type q4_0 refused naming the choices: \"%s\"", err);
    struct stat st;
    CHECK(stat(p, &st) != 0, "nothing written for a refused export");
    bg_module_free(&m);
    bg_module *none = NULL;
    CHECK(bg_bitnet_import(ctx, "/nonexistent/x.gguf", &none, err, sizeof err) != 0 && err[0] && !none,
          "missing file: \"%s\"", err);
    path_of(p, sizeof p, "adapter.gguf"); /* an adapter is not a model */
    CHECK(bg_bitnet_import(ctx, p, &none, err, sizeof err) != 0 && !none, "adapter as model: \"%s\"", err);
}

int main(void)
{
    const char *b = getenv("BG_BUILD_DIR");
    snprintf(dir, sizeof dir, "%s/export_test", b ? b : ".");
    mkdir(dir, 0755);
    bg_ctx *ctx;
    if (bg_ctx_create(&ctx, BG_CPU)) return 1;
    bg_ctx_seed(ctx, 7);
    bg_module *m = small_model(ctx, 256, 512);
    CHECK(m != NULL, "model: %s", bg_ctx_error(ctx));
    if (!m) return harness_summary();
    train_a_little(ctx, m, 3);
    dump_wq(m);
    test_model_round_trip(ctx, m, BG_GGML_TQ2_0, "model_tq2.gguf");
    test_model_round_trip(ctx, m, BG_GGML_TQ1_0, "model_tq1.gguf");
    test_scale_in_d(ctx, m);
    test_adapter(ctx, m);
    test_refusals(ctx);
    const char *src = getenv("BG_SOURCE_DIR");
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "python3 %s/tests/export_readback.py %s", src ? src : ".", dir);
    int st = system(cmd);
    int code = st >= 0 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    if (code == 77) printf("SKIP: gguf-py read-back (python3 lacks the gguf package)\n");
    else CHECK(code == 0, "gguf-py read-back of every exported file (exit %d)", code);
    bg_module_free(&m);
    bg_ctx_free(&ctx);
    return harness_summary();
}
