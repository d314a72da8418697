/* cmd_eval.c - `bitgrad eval` (logits of a GGUF model for a token sequence) and
 * `bitgrad generate` (sampling), both on the inference path (int8 x ternary). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <bitgrad/export.h>

#include "cli.h"

/* Loads MODEL (+ adapter) in inference mode. */
static bg_module *load_model(bg_ctx *ctx, const char *path, const char *lora, bool llama)
{
    char err[512];
    bg_module *m = NULL;
    if (bg_bitnet_import(ctx, path, &m, err, sizeof err)) {
        cli_fail(1, "%s: %s", path, err);
        return NULL;
    }
    if (lora && bg_lora_import(m, lora, "default", err, sizeof err)) {
        cli_fail(1, "%s: %s", lora, err);
        bg_module_free(&m);
        return NULL;
    }
    bg_module_set_training(m, false);
    if (bg_module_set_inference(m, true)) {
        cli_fail(1, "%s: %s", path, bg_ctx_error(ctx));
        bg_module_free(&m);
        return NULL;
    }
    bg_module_set_llama_emulation(m, llama);
    bg_grad_enable(ctx, false);
    return m;
}

static int write_f32(const char *path, const float *v, size_t n)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) return cli_fail(1, "%s: cannot write", tmp);
    bool ok = fwrite(v, sizeof(float), n, f) == n;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        remove(tmp);
        return cli_fail(1, "%s: write failed", path);
    }
    return 0;
}

static int eval_usage(int status)
{
    printf("usage: bitgrad eval MODEL.gguf --ids 1,2,3 [--all] [--lora ADAPTER.gguf]\n"
           "                    [--out LOGITS.f32] [--llama]\n"
           "  prints the logits' argmax and top values of the last position (or of every one\n"
           "  with --all); --out writes raw little-endian float32 [positions][n_vocab].\n"
           "  --llama quantizes activations as llama.cpp's CPU TQ kernels do (Q8_K blocks).\n");
    return status;
}

int cmd_eval(int argc, char **argv)
{
    const char *model = NULL, *ids_s = NULL, *lora = NULL, *out = NULL;
    bool all = false, llama = false;
    int bad = 0;
    for (int i = 1; i < argc && !bad; i++) {
        if (cli_flag(argv, i, "--help")) return eval_usage(0);
        if (cli_opt(argc, argv, &i, "--ids", &ids_s, &bad) ||
            cli_opt(argc, argv, &i, "--lora", &lora, &bad) ||
            cli_opt(argc, argv, &i, "--out", &out, &bad)) continue;
        if (cli_flag(argv, i, "--all")) all = true;
        else if (cli_flag(argv, i, "--llama")) llama = true;
        else if (argv[i][0] == '-') return cli_fail(2, "eval: unknown option %s", argv[i]);
        else if (!model) model = argv[i];
        else return cli_fail(2, "eval: more than one model given");
    }
    if (bad) return 2;
    if (!model || !ids_s) return eval_usage(2);
    int32_t ids[4096];
    int n = cli_ids(ids_s, ids, 4096, 256);
    if (n <= 0) return cli_fail(2, "eval: --ids must be a comma-separated list of ids in [0, 256)");
    bg_ctx *ctx;
    if (bg_ctx_create(&ctx, BG_CPU)) return cli_fail(1, "out of memory");
    int rc = 1;
    bg_module *m = load_model(ctx, model, lora, llama);
    const bg_bitnet_config *c = m ? bg_bitnet_get_config(m) : NULL;
    if (c && n > c->n_ctx) cli_fail(2, "eval: %d tokens exceed the context of %lld", n, (long long)c->n_ctx);
    else if (c) {
        bg_tensor *lg = bg_bitnet_forward(m, bg_from_data(ctx, BG_I32, 2, (int64_t[]){ 1, n }, ids));
        int64_t V = c->n_vocab;
        float *v = lg ? malloc((size_t)(n * V) * sizeof(float)) : NULL;
        if (!lg || !v) {
            cli_fail(1, "eval: %s", bg_ctx_error(ctx));
        } else {
            bg_tensor_read(lg, v);
            for (int p = all ? 0 : n - 1; p < n; p++) {
                int64_t best = 0;
                for (int64_t j = 1; j < V; j++) best = v[p * V + j] > v[p * V + best] ? j : best;
                printf("pos %d id %d argmax %lld logit %.6f\n", p, ids[p], (long long)best,
                       (double)v[p * V + best]);
            }
            const float *sel = all ? v : v + (n - 1) * V;
            rc = out ? write_f32(out, sel, (size_t)((all ? n : 1) * V)) : 0;
        }
        free(v);
    }
    bg_module_free(&m);
    bg_ctx_free(&ctx);
    return rc;
}

static int gen_usage(int status)
{
    printf("usage: bitgrad generate MODEL.gguf --prompt TEXT [--n 64] [--temp 0] [--seed 1]\n"
           "                        [--lora ADAPTER.gguf] [--stop-at-eos]\n"
           "  greedy when --temp is 0; stops after --n bytes, or at the eos byte with\n"
           "  --stop-at-eos (a newline for bitgrad's exports).\n");
    return status;
}

/* Next token from the last position's logits: argmax, or a temperature sample. */
static int sample(const float *logits, int64_t V, double temp, bg_ctx *ctx)
{
    int64_t best = 0;
    for (int64_t j = 1; j < V; j++) best = logits[j] > logits[best] ? j : best;
    if (temp <= 0.0) return (int)best;
    double sum = 0.0, r = bg_rand_uniform(ctx);
    for (int64_t j = 0; j < V; j++) sum += exp((logits[j] - logits[best]) / temp);
    double acc = 0.0;
    for (int64_t j = 0; j < V; j++) {
        acc += exp((logits[j] - logits[best]) / temp) / sum;
        if (r < acc) return (int)j;
    }
    return (int)best;
}

int cmd_generate(int argc, char **argv)
{
    const char *model = NULL, *prompt = NULL, *lora = NULL, *ns = "64", *ts = "0", *ss = "1";
    bool stop = false;
    int bad = 0;
    for (int i = 1; i < argc && !bad; i++) {
        if (cli_flag(argv, i, "--help")) return gen_usage(0);
        if (cli_opt(argc, argv, &i, "--prompt", &prompt, &bad) ||
            cli_opt(argc, argv, &i, "--lora", &lora, &bad) ||
            cli_opt(argc, argv, &i, "--n", &ns, &bad) || cli_opt(argc, argv, &i, "--temp", &ts, &bad) ||
            cli_opt(argc, argv, &i, "--seed", &ss, &bad)) continue;
        if (cli_flag(argv, i, "--stop-at-eos")) stop = true;
        else if (argv[i][0] == '-') return cli_fail(2, "generate: unknown option %s", argv[i]);
        else if (!model) model = argv[i];
        else return cli_fail(2, "generate: more than one model given");
    }
    long long n_new, seed;
    double temp;
    if (bad || !model || !prompt) return gen_usage(2);
    if (!cli_int("--n", ns, 1, 100000, &n_new) || !cli_float("--temp", ts, &temp) ||
        !cli_int("--seed", ss, 0, INT64_MAX, &seed)) return 2;
    bg_ctx *ctx;
    if (bg_ctx_create(&ctx, BG_CPU)) return cli_fail(1, "out of memory");
    bg_ctx_seed(ctx, (uint64_t)seed);
    bg_module *m = load_model(ctx, model, lora, false);
    int rc = m ? 0 : 1;
    const bg_bitnet_config *c = m ? bg_bitnet_get_config(m) : NULL;
    int64_t ctxlen = c ? c->n_ctx : 0, n = (int64_t)strlen(prompt);
    int32_t *ids = malloc((size_t)(n + n_new + 1) * sizeof(int32_t));
    float *lv = c ? malloc((size_t)(ctxlen * c->n_vocab) * sizeof(float)) : NULL;
    if (m && (!ids || !lv || n == 0)) rc = cli_fail(n == 0 ? 2 : 1, "generate: empty prompt or out of memory");
    for (int64_t i = 0; !rc && i < n; i++) ids[i] = (unsigned char)prompt[i];
    if (!rc) fputs(prompt, stdout);
    for (long long k = 0; !rc && k < n_new; k++) {
        int64_t start = n > ctxlen ? n - ctxlen : 0, len = n - start;
        bg_tensor *lg = bg_bitnet_forward(m, bg_from_data(ctx, BG_I32, 2, (int64_t[]){ 1, len }, ids + start));
        if (!lg) {
            rc = cli_fail(1, "generate: %s", bg_ctx_error(ctx));
            break;
        }
        bg_tensor_read(lg, lv);
        int tok = sample(lv + (len - 1) * c->n_vocab, c->n_vocab, temp, ctx);
        bg_step_end(ctx);
        ids[n++] = tok;
        putchar(tok);
        fflush(stdout);
        if (stop && tok == '\n') break;
    }
    if (!rc && n > 0 && ids[n - 1] != '\n') putchar('\n');
    free(ids);
    free(lv);
    bg_module_free(&m);
    bg_ctx_free(&ctx);
    return rc;
}
