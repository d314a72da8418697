/* cmd_generate.c - `bitgrad generate`: text in, text out. The prompt is tokenized with the
 * model's own tokenizer, run once through the key/value-cached forward (bitnet_cache.c), and
 * each new token then costs one position; tokens are decoded as they come, holding back the
 * bytes of an incomplete UTF-8 character (bg_detokenizer). */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

static int gen_usage(int status)
{
    printf("usage: bitgrad generate MODEL.gguf --prompt TEXT [--n 64] [--temp 0] [--seed 1]\n"
           "                        [--lora ADAPTER.gguf] [--stop-at-eos] [--timings] [--threads N]\n"
           "  greedy when --temp is 0; stops after --n tokens, or with --stop-at-eos at the\n"
           "  model's end-of-sequence token (a newline for bitgrad's byte models without one).\n"
           "  When the context fills up, the second half of it is kept and generation goes on.\n"
           "  --timings: load, prompt and per-token wall times on stderr (as llama.cpp's perf).\n");
    return status;
}

/* Next token from one position's logits: argmax, or a temperature sample. */
static int32_t sample(const float *logits, int64_t V, double temp, bg_ctx *ctx)
{
    int64_t best = 0;
    for (int64_t j = 1; j < V; j++) best = logits[j] > logits[best] ? j : best;
    if (temp <= 0.0) return (int32_t)best;
    double sum = 0.0, r = bg_rand_uniform(ctx);
    for (int64_t j = 0; j < V; j++) sum += exp((logits[j] - logits[best]) / temp);
    double acc = 0.0;
    for (int64_t j = 0; j < V; j++) {
        acc += exp((logits[j] - logits[best]) / temp) / sum;
        if (r < acc) return (int32_t)j;
    }
    return (int32_t)best;
}

typedef struct gen_state {
    bg_ctx *ctx;
    bg_module *m;
    bg_kv_cache *kv;
    int32_t *ids;
    int64_t n;  /* tokens so far */
    float *row; /* logits of the last position, [n_vocab] */
    double t_prompt, t_eval; /* seconds in the prompt's forward and in the later ones */
    int64_t n_prompt, n_eval;
} gen_state;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Runs the tokens the cache has not seen (after a reset when it is full: the last half of
 * the context again) and leaves the last position's logits in g->row. */
static int advance(gen_state *g)
{
    int64_t cap = bg_kv_cache_n_ctx(g->kv), pos = bg_kv_cache_pos(g->kv);
    int64_t from = pos;
    if (g->n > cap) { /* keep the last half of the context */
        bg_kv_cache_reset(g->kv);
        from = g->n - (cap / 2 > 0 ? cap / 2 : 1);
    }
    double t0 = now_s();
    bg_tensor *lg = bg_bitnet_forward_cached(g->m, g->kv, g->ids + from, g->n - from);
    int64_t rows = g->n - from;
    int rc = lg ? bg_tensor_read(bg_slice(lg, 0, rows - 1, rows), g->row) : BG_EINVAL;
    bg_step_end(g->ctx);
    if (pos == 0 && g->n_prompt == 0) {
        g->t_prompt = now_s() - t0;
        g->n_prompt = rows;
    } else {
        g->t_eval += now_s() - t0;
        g->n_eval++;
    }
    return rc ? cli_fail(1, "generate: %s", bg_ctx_error(g->ctx)) : 0;
}

static int generate(gen_state *g, const bg_tokenizer *tok, long long n_new, double temp, bool stop)
{
    int64_t V = bg_bitnet_get_config(g->m)->n_vocab;
    int32_t eos = bg_tokenizer_eos(tok);
    if (eos < 0 && strcmp(bg_tokenizer_kind(tok), "bytes") == 0) eos = '\n';
    bg_detokenizer dt;
    bg_detokenizer_init(&dt, tok);
    char buf[256];
    for (int64_t i = 0; i < g->n; i++) bg_detokenizer_push(&dt, g->ids[i], buf, sizeof buf);
    dt.n_held = 0; /* the prompt was printed as given */
    char last = '\n';
    int rc = advance(g);
    for (long long k = 0; !rc && k < n_new; k++) {
        int32_t t = sample(g->row, V, temp, g->ctx);
        g->ids[g->n++] = t;
        int64_t len = bg_detokenizer_push(&dt, t, buf, sizeof buf);
        if (len > 0) {
            fwrite(buf, 1, (size_t)len, stdout);
            last = buf[len - 1];
            fflush(stdout);
        }
        if (stop && t == eos) break;
        if (k + 1 < n_new) rc = advance(g);
    }
    int64_t len = bg_detokenizer_flush(&dt, buf, sizeof buf);
    if (len > 0) {
        fwrite(buf, 1, (size_t)len, stdout);
        last = buf[len - 1];
    }
    if (last != '\n') putchar('\n');
    return rc;
}

int cmd_generate(int argc, char **argv)
{
    const char *model = NULL, *prompt = NULL, *lora = NULL, *ns = "64", *ts = "0", *ss = "1",
               *th = NULL;
    bool stop = false, timings = false;
    int bad = 0;
    for (int i = 1; i < argc && !bad; i++) {
        if (cli_flag(argv, i, "--help")) return gen_usage(0);
        if (cli_opt(argc, argv, &i, "--prompt", &prompt, &bad) ||
            cli_opt(argc, argv, &i, "--lora", &lora, &bad) ||
            cli_opt(argc, argv, &i, "--n", &ns, &bad) ||
            cli_opt(argc, argv, &i, "--temp", &ts, &bad) ||
            cli_opt(argc, argv, &i, "--seed", &ss, &bad) ||
            cli_opt(argc, argv, &i, "--threads", &th, &bad))
            continue;
        if (cli_flag(argv, i, "--stop-at-eos")) stop = true;
        else if (cli_flag(argv, i, "--timings"))
            timings = true;
        else if (argv[i][0] == '-')
            return cli_fail(2, "generate: unknown option %s", argv[i]);
        else if (!model)
            model = argv[i];
        else
            return cli_fail(2, "generate: more than one model given");
    }
    long long n_new, seed;
    double temp;
    if (bad || !model || !prompt) return gen_usage(2);
    if (!cli_int("--n", ns, 1, 100000000, &n_new) || !cli_float("--temp", ts, &temp) ||
        !cli_int("--seed", ss, 0, INT64_MAX, &seed))
        return 2;
    long long threads = 0;
    if (th && !cli_int("--threads", th, 1, 4096, &threads)) return 2;
    if (threads) omp_set_num_threads((int)threads);
    gen_state g = { 0 };
    double t_load = now_s();
    if (bg_ctx_create(&g.ctx, BG_CPU)) return cli_fail(1, "out of memory");
    bg_ctx_seed(g.ctx, (uint64_t)seed);
    bg_tokenizer *tok = NULL;
    g.m = cli_load_inference(g.ctx, model, lora, false, &tok);
    int rc = g.m ? 0 : 1;
    t_load = now_s() - t_load;
    if (timings && getenv("BITGRAD_DEBUG_RSS")) {
        FILE *f = fopen("/proc/self/status", "r");
        char line[256];
        while (f && fgets(line, sizeof line, f))
            if (!strncmp(line, "VmHWM", 5) || !strncmp(line, "VmRSS", 5)) fputs(line, stderr);
        if (f) fclose(f);
    }
    int32_t *pids = NULL;
    int64_t np = rc ? -1 : cli_encode(tok, prompt, true, &pids);
    if (!rc && np <= 0) rc = np == 0 ? cli_fail(2, "generate: the prompt gives no tokens") : 1;
    if (!rc && bg_kv_cache_new(g.m, 0, &g.kv))
        rc = cli_fail(1, "generate: %s", bg_ctx_error(g.ctx));
    if (!rc) {
        g.ids = malloc((size_t)(np + n_new + 1) * sizeof *g.ids);
        g.row = malloc((size_t)bg_bitnet_get_config(g.m)->n_vocab * sizeof *g.row);
        if (!g.ids || !g.row) rc = cli_fail(1, "out of memory");
    }
    if (!rc) {
        memcpy(g.ids, pids, (size_t)np * sizeof *pids);
        g.n = np;
        fputs(prompt, stdout);
        rc = generate(&g, tok, n_new, temp, stop);
    }
    if (!rc && timings && fflush(stdout) == 0)
        fprintf(stderr, "generate: load %.2f ms; prompt %.2f ms / %lld tokens; eval %.2f ms / %lld "
                "runs (%.2f ms per token)\n", 1e3 * t_load, 1e3 * g.t_prompt,
                (long long)g.n_prompt, 1e3 * g.t_eval, (long long)g.n_eval,
                g.n_eval ? 1e3 * g.t_eval / (double)g.n_eval : 0.0);
    free(pids);
    free(g.ids);
    free(g.row);
    bg_kv_cache_free(&g.kv);
    bg_tokenizer_free(&tok);
    bg_module_free(&g.m);
    bg_ctx_free(&g.ctx);
    return rc;
}
