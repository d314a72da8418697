/* cmd_eval.c - `bitgrad eval`: logits of a GGUF model for a token sequence given as ids or
 * as text tokenized with the model's tokenizer, on the inference path (int8 x ternary). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

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
    printf("usage: bitgrad eval MODEL.gguf (--ids 1,2,3 | --prompt TEXT) [--all]\n"
           "                    [--lora ADAPTER.gguf [--lora-scale S]] [--out LOGITS.f32]\n"
           "                    [--llama]\n"
           "  prints the logits' argmax and top values of the last position (or of every one\n"
           "  with --all); --out writes raw little-endian float32 [positions][n_vocab].\n"
           "  --ids: token ids in [0, n_vocab); --prompt: text tokenized with the model's\n"
           "  tokenizer (BOS added as the model's tokenizer says).\n"
           "  --lora applies a llama.cpp LoRA adapter (what finetune writes), --lora-scale S\n"
           "  times its alpha / r, as llama.cpp's --lora-scaled (default 1).\n"
           "  --llama quantizes activations as llama.cpp's CPU TQ kernels do (Q8_K blocks).\n");
    return status;
}

/* Prints the argmax of each selected position and writes --out. */
static int eval_print(bg_tensor *lg, const int32_t *ids, int64_t n, int64_t V, bool all,
                      const char *out)
{
    float *v = malloc((size_t)(n * V) * sizeof(float));
    if (!v) return cli_fail(1, "out of memory");
    bg_tensor_read(lg, v);
    for (int64_t p = all ? 0 : n - 1; p < n; p++) {
        int64_t best = 0;
        for (int64_t j = 1; j < V; j++) best = v[p * V + j] > v[p * V + best] ? j : best;
        printf("pos %lld id %d argmax %lld logit %.6f\n", (long long)p, ids[p], (long long)best,
               (double)v[p * V + best]);
    }
    const float *sel = all ? v : v + (n - 1) * V;
    int rc = out ? write_f32(out, sel, (size_t)((all ? n : 1) * V)) : 0;
    free(v);
    return rc;
}

/* Multiplies adapter "default"'s B matrices by s: its output becomes s * alpha / r * B A x,
 * llama.cpp's --lora-scaled. */
static int scale_adapter(bg_module *m, double s)
{
    bg_tensor *p[512];
    int n = bg_lora_params(m, "default", p, 512);
    if (n <= 0 || n >= 512) return cli_fail(1, "eval: cannot scale the adapter (%d tensors)", n);
    for (int i = 1; i < n; i += 2) { /* A then B per wrapped module */
        float *b = bg_tensor_data(p[i]);
        for (int64_t j = 0, k = bg_tensor_numel(p[i]); j < k; j++) b[j] *= (float)s;
    }
    return 0;
}

int cmd_eval(int argc, char **argv)
{
    const char *model = NULL, *ids_s = NULL, *prompt = NULL, *lora = NULL, *out = NULL;
    const char *lscale_s = NULL;
    double lscale = 1.0;
    bool all = false, llama = false;
    int bad = 0;
    for (int i = 1; i < argc && !bad; i++) {
        if (cli_flag(argv, i, "--help")) return eval_usage(0);
        if (cli_opt(argc, argv, &i, "--ids", &ids_s, &bad) ||
            cli_opt(argc, argv, &i, "--prompt", &prompt, &bad) ||
            cli_opt(argc, argv, &i, "--lora", &lora, &bad) ||
            cli_opt(argc, argv, &i, "--lora-scale", &lscale_s, &bad) ||
            cli_opt(argc, argv, &i, "--out", &out, &bad))
            continue;
        if (cli_flag(argv, i, "--all")) all = true;
        else if (cli_flag(argv, i, "--llama"))
            llama = true;
        else if (argv[i][0] == '-')
            return cli_fail(2, "eval: unknown option %s", argv[i]);
        else if (!model)
            model = argv[i];
        else
            return cli_fail(2, "eval: more than one model given");
    }
    if (bad) return 2;
    if (!model || !ids_s == !prompt) return eval_usage(2);
    if (lscale_s && !lora) return cli_fail(2, "eval: --lora-scale needs --lora");
    if (lscale_s && !cli_float("--lora-scale", lscale_s, &lscale)) return 2;
    if (!isfinite(lscale)) return cli_fail(2, "eval: --lora-scale must be a finite number");
    int32_t *ids = NULL;
    int64_t n = 0;
    if (ids_s) {
        ids = malloc(65536 * sizeof *ids);
        n = ids ? cli_ids(ids_s, ids, 65536, INT32_MAX) : -1;
        if (n <= 0) {
            free(ids);
            return cli_fail(2, "eval: --ids must be a comma-separated list of token ids");
        }
    }
    if (cli_check_output(out, "--out")) {
        free(ids);
        return 1;
    }
    bg_ctx *ctx;
    if (bg_ctx_create(&ctx, BG_CPU)) return cli_fail(1, "out of memory");
    int rc = 1;
    bg_tokenizer *tok = NULL;
    bg_module *m = cli_load_inference(ctx, model, lora, llama, prompt ? &tok : NULL);
    if (m && lscale != 1.0 && scale_adapter(m, lscale)) bg_module_free(&m);
    const bg_bitnet_config *c = m ? bg_bitnet_get_config(m) : NULL;
    if (c && prompt) n = cli_encode(tok, prompt, true, &ids);
    for (int64_t i = 0; c && i < n; i++)
        if (ids[i] >= c->n_vocab) {
            cli_fail(2, "eval: id %d is outside the model's vocabulary [0, %lld)", ids[i],
                     (long long)c->n_vocab);
            n = -2;
        }
    if (c && n == 0) cli_fail(2, "eval: the prompt gives no tokens");
    else if (c && n > c->n_ctx)
        cli_fail(2, "eval: %lld tokens exceed the context of %lld", (long long)n,
                 (long long)c->n_ctx);
    else if (c && n > 0) {
        bg_tensor *lg =
            bg_bitnet_forward(m, bg_from_data(ctx, BG_I32, 2, (int64_t[]){ 1, n }, ids));
        rc = lg ? eval_print(lg, ids, n, c->n_vocab, all, out)
                : cli_fail(1, "eval: %s", bg_ctx_error(ctx));
    }
    if (n == -2) rc = 2;
    free(ids);
    bg_tokenizer_free(&tok);
    bg_module_free(&m);
    bg_ctx_free(&ctx);
    return rc;
}
