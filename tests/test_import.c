/* test_import.c - bitnet GGUF files written by gguf-py (tests/import_models.py) in every
 * projection type (F32, F16, BF16, Q8_0, TQ1_0, TQ2_0), head size 96 with grouped-query
 * attention, and a SentencePiece-style tokenizer:
 *   - each imports; the same model in every type gives bitwise the same logits (the files hold
 *     the same W_q), in the training forward and the inference path;
 *   - eval --llama's logits (bg_module_set_llama_emulation) equal the numpy reference of the
 *     graph, computed from gguf-py's dequantized tensors, with llama.cpp's activation rounding
 *     for F32 (none: within 1e-5), F16 and BF16 weights (within 1e-4, see run_shape);
 *   - export writes rows of 192 as Q2_0 and of 160 as Q8_0 (256 as TQ2_0), losslessly: import
 *     back gives bitwise the same logits; gguf-py reads the files back (types, shapes, values,
 *     tokenizer keys byte-identical to the source's, in its order);
 *   - a tokenizer whose size differs from n_vocab is refused; bg_bitnet_set_tokenizer; a
 *     checkpoint keeps the tokenizer (load and import give it back, export writes it).
 * Skips (77) when python3 lacks gguf / numpy. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <bitgrad.h>
#include <bitgrad/checkpoint.h>
#include <bitgrad/export.h>
#include <bitgrad/gguf.h>

#include "harness.h"

enum { T = 12, N_VOCAB = 320 };
static char dir[1024];
static int32_t ids[T];

static void path_of(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", dir, name); }

static int run_python(const char *mode)
{
    const char *src = getenv("BG_SOURCE_DIR");
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "python3 %s/tests/import_models.py %s %s", src ? src : ".", mode, dir);
    int st = system(cmd);
    return st >= 0 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static float *read_f32(const char *name, int64_t n)
{
    char p[2048];
    path_of(p, sizeof p, name);
    FILE *f = fopen(p, "rb");
    float *v = malloc((size_t)n * sizeof(float));
    bool ok = f && v && fread(v, sizeof(float), (size_t)n, f) == (size_t)n;
    if (f) fclose(f);
    CHECK(ok, "read %s", name);
    if (!ok) {
        free(v);
        return NULL;
    }
    return v;
}

static bg_module *import(bg_ctx *ctx, const char *name)
{
    char p[2048], err[512] = "";
    path_of(p, sizeof p, name);
    bg_module *m = NULL;
    CHECK(bg_bitnet_import(ctx, p, &m, err, sizeof err) == 0 && m, "import %s: %s", name, err);
    return m;
}

/* Logits [T, N_VOCAB]: training forward (mode 0), inference (1), inference as llama.cpp (2). */
static float *logits(bg_ctx *ctx, bg_module *m, int mode)
{
    bool prev = bg_grad_enable(ctx, false);
    bg_module_set_inference(m, mode > 0);
    bg_module_set_llama_emulation(m, mode == 2);
    bg_tensor *lg = bg_bitnet_forward(m, bg_from_data(ctx, BG_I32, 2, (int64_t[]){ 1, T }, ids));
    float *v = lg ? harness_read(lg) : NULL;
    CHECK(v != NULL, "forward: %s", bg_ctx_error(ctx));
    bg_step_end(ctx);
    bg_module_set_llama_emulation(m, false);
    bg_module_set_inference(m, false);
    bg_grad_enable(ctx, prev);
    return v;
}

static void check_config(bg_module *m, const char *name, int64_t n_embd, int64_t n_head,
                         int64_t n_head_kv)
{
    const bg_bitnet_config *c = bg_bitnet_get_config(m);
    CHECK(c && c->n_embd == n_embd && c->n_head == n_head && c->n_head_kv == n_head_kv &&
              c->n_vocab == N_VOCAB && c->n_embd / c->n_head == 96 && c->bitlinear,
          "%s: n_embd %lld, %lld heads of 96, n_head_kv %lld, vocab %d", name, (long long)n_embd,
          (long long)n_head, (long long)n_head_kv, N_VOCAB);
    CHECK(bg_bitnet_tokenizer_size(m) == N_VOCAB, "%s: keeps its %d-token tokenizer", name, N_VOCAB);
}

/* Every type of one shape against the F32 file, the llama.cpp-rounded logits against numpy,
 * then export and import back. */
static void run_shape(bg_ctx *ctx, char shape, int64_t n_embd, int64_t n_head, int64_t n_kv,
                      bool tq)
{
    static const char *types[] = { "f32", "f16", "bf16", "q8_0", "tq1_0", "tq2_0" };
    int n_types = tq ? 6 : 4;
    char name[128];
    snprintf(name, sizeof name, "src_%c_f32.gguf", shape);
    bg_module *ref = import(ctx, name);
    if (!ref) return;
    check_config(ref, name, n_embd, n_head, n_kv);
    float *want[2] = { logits(ctx, ref, 0), logits(ctx, ref, 1) };
    for (int i = 0; i < n_types; i++) {
        snprintf(name, sizeof name, "src_%c_%s.gguf", shape, types[i]);
        bg_module *m = i ? import(ctx, name) : ref;
        if (!m) continue;
        for (int mode = 0; mode < 2 && i > 0; mode++) {
            float *got = logits(ctx, m, mode);
            char what[160];
            snprintf(what, sizeof what, "%s %s == from f32", name, mode ? "inference" : "forward");
            if (got && want[mode]) check_bitwise(what, got, want[mode], T * N_VOCAB);
            free(got);
        }
        if (i < 3) { /* F32, F16, BF16: llama.cpp's rounding against numpy */
            char rn[64];
            snprintf(rn, sizeof rn, "ref_%c_%s.f32", shape, types[i]);
            float *r = read_f32(rn, T * N_VOCAB), *got = logits(ctx, m, 2);
            char what[160];
            snprintf(what, sizeof what, "%s --llama vs numpy", name);
            /* F32: the float graph, to 1e-5. F16 / BF16: bitgrad's float32 activations and
             * numpy's float64 ones differ in their last bits, so now and then one rounds to
             * the neighbouring fp16 / bf16 value, which alone moves logits by up to ~5e-5 of
             * the largest (the rounding as a whole moves them by 5e-5 .. 3.5e-4 here). */
            if (r && got) check_close(what, got, r, T * N_VOCAB, i == 0 ? 1e-5 : 1e-4, 0);
            free(r);
            free(got);
        }
        /* export (default TQ2_0 request: Q2_0 / Q8_0 for the rows TQ cannot hold), import back */
        char out[128], p[2048], err[512] = "";
        snprintf(out, sizeof out, "exp_%c_%s__default.gguf", shape, types[i]);
        path_of(p, sizeof p, out);
        bg_export_options o = bg_export_default();
        o.embd_type = BG_GGML_F32;
        CHECK(bg_bitnet_export(m, p, &o, err, sizeof err) == 0, "export %s: %s", out, err);
        bg_module *back = import(ctx, out);
        for (int mode = 0; back && mode < 2; mode++) {
            float *got = logits(ctx, back, mode);
            char what[160];
            snprintf(what, sizeof what, "%s imported back (%s)", out, mode ? "inference" : "forward");
            if (got && want[mode]) check_bitwise(what, got, want[mode], T * N_VOCAB);
            free(got);
        }
        bg_module_free(&back);
        if (shape == 'b' && i == 0) { /* all rows Q8_0: what a gguf-py without Q2_0 reads */
            snprintf(out, sizeof out, "exp_%c_%s__q8.gguf", shape, types[i]);
            path_of(p, sizeof p, out);
            o.weight_type = BG_GGML_Q8_0;
            CHECK(bg_bitnet_export(m, p, &o, err, sizeof err) == 0, "export %s: %s", out, err);
            back = import(ctx, out);
            float *got = back ? logits(ctx, back, 1) : NULL;
            if (got && want[1]) check_bitwise("all-Q8_0 export imported back", got, want[1], T * N_VOCAB);
            free(got);
            bg_module_free(&back);
        }
        if (m != ref) bg_module_free(&m);
    }
    free(want[0]);
    free(want[1]);
    bg_module_free(&ref);
}

/* Export types: the layout in the file (the tensor types the exporter chose). */
static void check_types(const char *name, const char *tensor, int type)
{
    char p[2048], err[256];
    path_of(p, sizeof p, name);
    bg_gguf *g = NULL;
    int rc = bg_gguf_open(&g, p, err, sizeof err);
    int64_t ti = rc ? -1 : bg_gguf_find_tensor(g, tensor);
    int got = ti >= 0 ? bg_gguf_tensor_type(g, ti) : -1;
    CHECK(got == type, "%s: %s is %s (got %s)", name, tensor, bg_ggml_type_name(type),
          bg_ggml_type_name(got));
    bg_gguf_free(&g);
}

static void test_tokenizer_api(bg_ctx *ctx)
{
    char p[2048], src[2048], err[512] = "";
    bg_bitnet_config c = bg_bitnet_default();
    c.n_embd = 64;
    c.n_head = 2;
    c.n_head_kv = 1;
    c.n_ff = 96;
    c.n_layer = 1;
    c.n_vocab = N_VOCAB;
    bg_module *m = bg_bitnet_new(ctx, &c);
    path_of(p, sizeof p, "tok_refused.gguf");
    remove(p);
    CHECK(m && bg_bitnet_export(m, p, NULL, err, sizeof err) == BG_EINVAL && strstr(err, "tokenizer"),
          "vocab 320 without a tokenizer refused: \"%s\"", err);
    path_of(src, sizeof src, "src_b_f32.gguf");
    CHECK(bg_bitnet_set_tokenizer(m, src, err, sizeof err) == 0 && bg_bitnet_tokenizer_size(m) == N_VOCAB,
          "set_tokenizer: %s", err);
    path_of(p, sizeof p, "exp_b_f32__vocab_from.gguf");
    CHECK(bg_bitnet_export(m, p, NULL, err, sizeof err) == 0, "export with the attached tokenizer: %s", err);
    bg_module_free(&m);
    c.n_vocab = 256;
    m = bg_bitnet_new(ctx, &c);
    bg_export_options o = bg_export_default();
    o.tokenizer_from = src;
    path_of(p, sizeof p, "tok_refused.gguf");
    err[0] = 0;
    CHECK(m && bg_bitnet_export(m, p, &o, err, sizeof err) == BG_ESHAPE && strstr(err, "320"),
          "a 320-token tokenizer on a 256-token model refused: \"%s\"", err);
    struct stat st;
    CHECK(stat(p, &st) != 0, "nothing written for a refused export");
    bg_module_free(&m);
}

/* A checkpoint keeps the model's tokenizer: loading it, or importing it, gives it back. */
static void test_checkpoint_keeps_tokenizer(bg_ctx *ctx)
{
    bg_module *m = import(ctx, "src_b_f32.gguf");
    if (!m) return;
    char ck[2048], p[2048], err[512] = "";
    path_of(ck, sizeof ck, "ckpt_b.gguf");
    CHECK(bg_checkpoint_save(ck, m, NULL, NULL, err, sizeof err) == 0, "checkpoint save: %s", err);
    bg_module *fresh = bg_bitnet_new(ctx, bg_bitnet_get_config(m));
    CHECK(fresh && bg_bitnet_tokenizer_size(fresh) == 0, "a new model carries no tokenizer");
    CHECK(fresh && bg_checkpoint_load(ck, fresh, NULL, NULL, err, sizeof err) == 0 &&
              bg_bitnet_tokenizer_size(fresh) == N_VOCAB,
          "checkpoint load gives the tokenizer back: %s", err);
    bg_module *back = import(ctx, "ckpt_b.gguf");
    CHECK(back && bg_bitnet_tokenizer_size(back) == N_VOCAB, "import of the checkpoint keeps it");
    path_of(p, sizeof p, "exp_b_f32__vocab_ckpt.gguf");
    CHECK(back && bg_bitnet_export(back, p, NULL, err, sizeof err) == 0, "export from it: %s", err);
    bg_module_free(&back);
    bg_module_free(&fresh);
    bg_module_free(&m);
}

int main(void)
{
    const char *b = getenv("BG_BUILD_DIR");
    snprintf(dir, sizeof dir, "%s/import_test", b ? b : ".");
    mkdir(dir, 0755);
    int code = run_python("write");
    if (code == 77) {
        printf("SKIP: python3 lacks the gguf package\n");
        return HARNESS_SKIP;
    }
    CHECK(code == 0, "gguf-py wrote the test models (exit %d)", code);
    if (code) return harness_summary();
    for (int i = 0; i < T; i++) ids[i] = (int32_t[]){ 1, 17, 250, 3, 99, 300, 42, 7, 8, 311, 64, 5 }[i];
    bg_ctx *ctx;
    if (bg_ctx_create(&ctx, BG_CPU)) return 1;
    run_shape(ctx, 'a', 768, 8, 2, true);
    run_shape(ctx, 'b', 192, 2, 1, false);
    check_types("exp_a_f32__default.gguf", "blk.0.attn_q.weight", BG_GGML_TQ2_0);
    check_types("exp_b_f32__default.gguf", "blk.0.attn_k.weight", BG_GGML_Q2_0);
    check_types("exp_b_f32__default.gguf", "blk.1.ffn_down.weight", BG_GGML_Q8_0);
    test_tokenizer_api(ctx);
    test_checkpoint_keeps_tokenizer(ctx);
    code = run_python("check");
    CHECK(code == 0, "gguf-py read-back of every export (exit %d)", code);
    bg_ctx_free(&ctx);
    return harness_summary();
}
