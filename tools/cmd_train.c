/* cmd_train.c - `bitgrad train` (a bitnet LM on a text file, byte level) and `bitgrad
 * finetune` (the demo, or QAT / LoRA fine-tuning of a GGUF model on a text file): progress on
 * a terminal, a CSV loss log, Ctrl-C writes a checkpoint and exits, --resume continues. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bitgrad/checkpoint.h>
#include <bitgrad/export.h>

#include "../examples/finetune_demo.h"
#include "cli.h"

static volatile sig_atomic_t interrupted;
static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
    cli_dist_request_stop(); /* under mpirun: every rank stops after the same step */
}

typedef struct run_opts {
    const char *data, *out, *resume, *csv, *model_in, *adapter_out, *lora_targets, *unfreeze;
    long long steps, batch, seq, n_embd, n_layer, n_head, n_ff, lora_r, seed, save_every;
    double lr, lora_alpha;
    bool fp;
} run_opts;

static unsigned char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = n > 0 ? malloc((size_t)n) : NULL;
    *len = buf ? fread(buf, 1, (size_t)n, f) : 0;
    fclose(f);
    return buf;
}

static bool parse_common(int argc, char **argv, int *i, run_opts *o, int *bad)
{
    const char *v = NULL;
    if (cli_opt(argc, argv, i, "--data", &o->data, bad) || cli_opt(argc, argv, i, "--out", &o->out, bad) ||
        cli_opt(argc, argv, i, "--resume", &o->resume, bad) || cli_opt(argc, argv, i, "--csv", &o->csv, bad))
        return true;
    struct { const char *name; long long *dst, lo, hi; } ints[] = {
        { "--steps", &o->steps, 1, 100000000 }, { "--batch", &o->batch, 1, 4096 },
        { "--seq", &o->seq, 2, 4096 },          { "--n-embd", &o->n_embd, 8, 65536 },
        { "--n-layer", &o->n_layer, 1, 256 },   { "--n-head", &o->n_head, 1, 1024 },
        { "--n-ff", &o->n_ff, 8, 262144 },      { "--lora-r", &o->lora_r, 1, 4096 },
        { "--seed", &o->seed, 0, INT64_MAX },   { "--save-every", &o->save_every, 1, INT64_MAX } };
    for (size_t k = 0; k < sizeof ints / sizeof ints[0]; k++)
        if (cli_opt(argc, argv, i, ints[k].name, &v, bad)) {
            if (!*bad && !cli_int(ints[k].name, v, ints[k].lo, ints[k].hi, ints[k].dst)) *bad = 1;
            return true;
        }
    if (cli_opt(argc, argv, i, "--lr", &v, bad)) {
        if (!*bad && (!cli_float("--lr", v, &o->lr) || o->lr <= 0)) *bad = 1;
        return true;
    }
    if (cli_opt(argc, argv, i, "--lora-alpha", &v, bad)) {
        if (!*bad && !cli_float("--lora-alpha", v, &o->lora_alpha)) *bad = 1;
        return true;
    }
    if (cli_flag(argv, *i, "--fp")) return o->fp = true;
    return false;
}

static int save(const run_opts *o, bg_module *m, bg_optim *opt, int64_t step)
{
    char err[512];
    bg_checkpoint_state st = bg_checkpoint_state_default();
    st.step = step;
    snprintf(st.user, sizeof st.user, "seed=%lld", o->seed);
    if (cli_is_root() && bg_checkpoint_save(o->out, m, opt, &st, err, sizeof err)) return cli_fail(1, "%s", err);
    return 0;
}

/* The training loop shared by train and finetune. Under mpirun each rank trains on its
 * slice of every global batch (--batch rows per rank); rank 0 alone logs and writes. */
static int run_loop(const run_opts *o, bg_ctx *ctx, bg_module *m, bg_optim *opt,
                    const unsigned char *text, size_t len, int64_t start)
{
    FILE *csv = cli_is_root() ? fopen(o->csv, start ? "a" : "w") : NULL;
    if (!csv && cli_is_root()) return cli_fail(1, "cannot write %s", o->csv);
    if (csv && !start) fprintf(csv, "step,loss,tokens_per_s\n");
    bool tty = isatty(2) && cli_is_root();
    int B = (int)o->batch, T = (int)o->seq;
    int64_t b_first, b_n, B_global = (int64_t)B * cli_dist_world();
    cli_dist_slice(B_global, &b_first, &b_n);
    int32_t *ids = malloc((size_t)B * (size_t)T * sizeof(int32_t));
    int32_t *in = malloc((size_t)B * (size_t)T * sizeof(int32_t)), *tg = malloc((size_t)B * (size_t)T * sizeof(int32_t));
    uint64_t r = (uint64_t)o->seed * 2654435761u + (uint64_t)start;
    double t0 = cli_now();
    int rc = ids && in && tg ? 0 : cli_fail(1, "out of memory");
    signal(SIGINT, on_sigint);
    signal(SIGTERM, on_sigint); /* what mpirun sends every rank on Ctrl-C */
    int64_t step = start;
    for (; !rc && step < o->steps && !cli_dist_stop(interrupted); step++) {
        for (int64_t gb = 0; gb < B_global; gb++) { /* every rank draws the whole global batch */
            r = r * 6364136223846793005ull + 1442695040888963407ull;
            size_t s0 = len > (size_t)T ? (size_t)(r >> 33) % (len - (size_t)T) : 0;
            if (gb < b_first || gb >= b_first + b_n) continue;
            int64_t b = gb - b_first;
            for (int t = 0; t < T; t++) ids[b * T + t] = text[(s0 + (size_t)t) % len];
            for (int t = 0; t < T - 1; t++) {
                in[b * (T - 1) + t] = ids[b * T + t];
                tg[b * (T - 1) + t] = ids[b * T + t + 1];
            }
        }
        bg_tensor *x = bg_from_data(ctx, BG_I32, 2, (int64_t[]){ B, T - 1 }, in);
        bg_tensor *y = bg_from_data(ctx, BG_I32, 2, (int64_t[]){ B, T - 1 }, tg);
        bg_tensor *loss = bg_cross_entropy(bg_bitnet_forward(m, x), y, -1, 0.0f);
        float lv = loss ? bg_item(loss) : 0.0f;
        cli_dist_weigh((double)B * (T - 1));
        rc = loss ? bg_backward(loss) : 1;
        if (!rc || cli_dist_world() > 1) { /* with ranks: every rank steps or refuses together */
            int src = bg_optim_step(opt);
            if (!rc) rc = src;
        }
        lv = (float)cli_dist_loss(lv);
        bg_optim_zero_grad(opt);
        bg_step_end(ctx);
        if (rc) {
            cli_fail(1, "step %lld: %s", (long long)step, bg_ctx_error(ctx));
            break;
        }
        double dt = cli_now() - t0, tps = (double)(step - start + 1) * B_global * (T - 1) / dt;
        if (csv) fprintf(csv, "%lld,%.6f,%.1f\n", (long long)step, (double)lv, tps);
        if (csv) fflush(csv);
        if (o->save_every && (step + 1) % o->save_every == 0 && step + 1 < o->steps && (rc = save(o, m, opt, step + 1)))
            break;
        if (cli_is_root() && (tty || step % 50 == 0 || step + 1 == o->steps))
            cli_progress(step + 1, o->steps, lv, tps, dt / (double)(step - start + 1) * (double)(o->steps - step - 1), tty);
    }
    if (tty) fprintf(stderr, "\n");
    if (csv) fclose(csv);
    free(ids);
    free(in);
    free(tg);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    bool stopped = cli_dist_stop(interrupted);
    if (save(o, m, opt, step)) return 1;
    if (cli_is_root())
        fprintf(stderr, "%s checkpoint %s at step %lld\n", stopped ? "interrupted: wrote" : "wrote",
                o->out, (long long)step);
    return rc ? 1 : (stopped ? 130 : 0);
}

static int setup_optim(const run_opts *o, bg_ctx *ctx, bg_module *m, bg_optim **opt, int64_t *start)
{
    bg_optim_config oc = bg_optim_default(BG_ADAMW);
    oc.lr = (float)o->lr;
    *opt = bg_optim_new(ctx, &oc);
    if (!*opt || bg_optim_add_module(*opt, m) <= 0) return cli_fail(1, "optimizer: %s", bg_ctx_error(ctx));
    *start = 0;
    if (o->resume) {
        char err[512];
        bg_checkpoint_state st;
        if (bg_checkpoint_load(o->resume, m, *opt, &st, err, sizeof err))
            return cli_fail(1, "%s: %s", o->resume, err);
        *start = st.step;
        if (cli_is_root()) fprintf(stderr, "resumed %s at step %lld\n", o->resume, (long long)st.step);
    }
    return cli_dist_attach(ctx, m, *opt, o->batch, o->seq);
}

static int train_usage(int status)
{
    printf("usage: bitgrad train --data FILE [--out ckpt.gguf] [--resume ckpt.gguf] [--csv loss.csv]\n"
           "       [--steps 1000] [--batch 16] [--seq 128] [--lr 1e-3] [--seed 1] [--fp]\n"
           "       [--save-every N]\n"
           "       [--n-embd 256] [--n-layer 4] [--n-head 4] [--n-ff 768]\n"
           "  trains a bitnet LM (BitLinear projections; --fp: full precision) on the bytes of\n"
           "  FILE with AdamW. Ctrl-C writes the checkpoint and exits; --resume continues it.\n"
           "  Export for llama.cpp with: bitgrad export ckpt.gguf --out model.gguf\n"
           "  Under mpirun -np N: data-parallel, --batch rows per process (global batch N x\n"
           "  --batch); rank 0 writes the CSV and checkpoints (see README).\n");
    return status;
}

int cmd_train(int argc, char **argv)
{
    run_opts o = { .out = "checkpoint.gguf", .csv = "loss.csv", .steps = 1000, .batch = 16,
                   .seq = 128, .n_embd = 256, .n_layer = 4, .n_head = 4, .n_ff = 768, .seed = 1,
                   .lr = 1e-3 };
    int bad = 0;
    for (int i = 1; i < argc && !bad; i++) {
        if (cli_flag(argv, i, "--help")) return train_usage(0);
        if (!parse_common(argc, argv, &i, &o, &bad)) return cli_fail(2, "train: unknown argument %s", argv[i]);
    }
    if (bad) return 2;
    if (!o.data) return train_usage(2);
    size_t len;
    unsigned char *text = read_file(o.data, &len);
    if (!text || len < (size_t)o.seq) {
        free(text);
        return cli_fail(1, "%s: cannot read, or shorter than --seq", o.data);
    }
    bg_ctx *ctx;
    if (bg_ctx_create(&ctx, BG_CPU)) return cli_fail(1, "out of memory");
    bg_ctx_seed(ctx, (uint64_t)o.seed);
    bg_bitnet_config c = bg_bitnet_default();
    c.n_embd = o.n_embd;
    c.n_layer = o.n_layer;
    c.n_head = c.n_head_kv = o.n_head;
    c.n_ff = o.n_ff;
    c.n_ctx = o.seq;
    c.bitlinear = !o.fp;
    bg_module *m = bg_bitnet_new(ctx, &c);
    bg_optim *opt = NULL;
    int64_t start = 0;
    int rc = m ? setup_optim(&o, ctx, m, &opt, &start) : cli_fail(1, "model: %s", bg_ctx_error(ctx));
    if (!rc) rc = run_loop(&o, ctx, m, opt, text, len, start);
    bg_optim_free(&opt);
    bg_module_free(&m);
    bg_ctx_free(&ctx);
    free(text);
    return rc;
}

static int finetune_usage(int status)
{
    printf("usage: bitgrad finetune --demo [--out DIR] [--quick] [--data FILE] [--seed N]\n"
           "       bitgrad finetune MODEL.gguf --data FILE [--lora-r 8] [--lora-alpha 16]\n"
           "              [--targets 'blk.*.attn_*,blk.*.ffn_*'] [--unfreeze PATTERN]\n"
           "              [--adapter-out adapter.gguf] [--out ckpt.gguf] [--resume ckpt.gguf]\n"
           "              [--steps 200] [--batch 16] [--seq 64] [--lr 1e-3]\n"
           "  --demo runs the end-to-end example (pre-train, QAT, LoRA, export).\n"
           "  Otherwise MODEL is fine-tuned on FILE: LoRA adapters on the target modules\n"
           "  (base frozen), or with --lora-r 0 quantization-aware full fine-tuning;\n"
           "  --adapter-out writes the adapter in llama.cpp's format.\n");
    return status;
}

/* Fine-tunes an imported model: LoRA on targets, or all of it (QAT) with --lora-r 0. */
static int finetune_model(run_opts *o, const char *targets_csv)
{
    size_t len;
    unsigned char *text = read_file(o->data, &len);
    if (!text || len < (size_t)o->seq) {
        free(text);
        return cli_fail(1, "%s: cannot read, or shorter than --seq", o->data);
    }
    bg_ctx *ctx;
    char err[512];
    if (bg_ctx_create(&ctx, BG_CPU)) return cli_fail(1, "out of memory");
    bg_ctx_seed(ctx, (uint64_t)o->seed);
    bg_module *m = NULL;
    int rc = bg_bitnet_import(ctx, o->model_in, &m, err, sizeof err) ? cli_fail(1, "%s: %s", o->model_in, err) : 0;
    char buf[1024], *pats[16];
    int np = 0;
    snprintf(buf, sizeof buf, "%s", targets_csv);
    for (char *t = strtok(buf, ","); t && np < 16; t = strtok(NULL, ",")) pats[np++] = t;
    if (!rc && o->lora_r > 0) {
        bg_lora_config lc = bg_lora_default();
        lc.rank = (int)o->lora_r;
        lc.alpha = (float)o->lora_alpha;
        lc.targets = (const char *const *)pats;
        lc.n_targets = np;
        if (bg_lora_add(m, "default", &lc) <= 0) rc = cli_fail(1, "lora: %s", bg_ctx_error(ctx));
    }
    if (!rc && o->unfreeze && bg_module_unfreeze(m, o->unfreeze) <= 0)
        rc = cli_fail(1, "--unfreeze %s matches no parameter", o->unfreeze);
    if (!rc && cli_is_root()) bg_module_print_trainable(m, stderr);
    if (o->seq > bg_bitnet_get_config(m)->n_ctx) o->seq = bg_bitnet_get_config(m)->n_ctx;
    bg_optim *opt = NULL;
    int64_t start = 0;
    if (!rc) rc = setup_optim(o, ctx, m, &opt, &start);
    if (!rc) rc = run_loop(o, ctx, m, opt, text, len, start);
    if (!rc && o->adapter_out && o->lora_r > 0 && cli_is_root() && bg_lora_export(m, "default", o->adapter_out, err, sizeof err))
        rc = cli_fail(1, "%s", err);
    bg_optim_free(&opt);
    bg_module_free(&m);
    bg_ctx_free(&ctx);
    free(text);
    return rc;
}

int cmd_finetune(int argc, char **argv)
{
    bool demo = false;
    for (int i = 1; i < argc; i++) {
        if (cli_flag(argv, i, "--help")) return finetune_usage(0);
        if (cli_flag(argv, i, "--demo")) demo = true;
    }
    if (demo) {
        demo_options d = demo_default_options();
        char *rest[64];
        int n = 0;
        for (int i = 1; i < argc && n < 64; i++)
            if (!cli_flag(argv, i, "--demo")) rest[n++] = argv[i];
        return demo_parse_args(n, rest, &d) ? 2 : bg_finetune_demo(&d);
    }
    run_opts o = { .out = "finetune.ckpt.gguf", .csv = "finetune_loss.csv", .steps = 200, .batch = 16,
                   .seq = 64, .seed = 1, .lr = 1e-3, .lora_r = 8, .lora_alpha = 16 };
    const char *targets = "blk.*.attn_*,blk.*.ffn_*";
    int bad = 0;
    for (int i = 1; i < argc && !bad; i++) {
        if (cli_opt(argc, argv, &i, "--targets", &targets, &bad) ||
            cli_opt(argc, argv, &i, "--adapter-out", &o.adapter_out, &bad) ||
            cli_opt(argc, argv, &i, "--unfreeze", &o.unfreeze, &bad)) continue;
        if (cli_flag(argv, i, "--lora-r") && i + 1 < argc && strcmp(argv[i + 1], "0") == 0) {
            o.lora_r = 0;
            i++;
        } else if (parse_common(argc, argv, &i, &o, &bad)) {
            continue;
        } else if (argv[i][0] != '-' && !o.model_in) {
            o.model_in = argv[i];
        } else {
            return cli_fail(2, "finetune: unknown argument %s", argv[i]);
        }
    }
    if (bad) return 2;
    if (!o.model_in || !o.data) return finetune_usage(2);
    return finetune_model(&o, targets);
}
