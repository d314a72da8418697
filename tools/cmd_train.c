/* cmd_train.c - `bitgrad train` (a bitnet LM from scratch on a text or JSON Lines file, with
 * bitgrad's byte vocabulary or the tokenizer of another GGUF) and `bitgrad finetune` (the
 * demo, or QAT / LoRA fine-tuning of a GGUF model on data tokenized with the model's own
 * tokenizer). Options are parsed and every output path is checked before any work starts;
 * the loop itself is tools/train_loop.c. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bitgrad/export.h>

#include "../examples/finetune_demo.h"
#include "train.h"

bool train_parse_common(int argc, char **argv, int *i, run_opts *o, int *bad)
{
    const char *v = NULL;
    struct {
        const char *name;
        const char **dst;
    } strs[] = { { "--data", &o->data },     { "--val", &o->val }, { "--out", &o->out },
                 { "--resume", &o->resume }, { "--csv", &o->csv }, { "--schedule", &o->schedule } };
    for (size_t k = 0; k < sizeof strs / sizeof strs[0]; k++)
        if (cli_opt(argc, argv, i, strs[k].name, strs[k].dst, bad)) return true;
    struct {
        const char *name;
        long long *dst, lo, hi;
    } ints[] = { { "--steps", &o->steps, 1, 100000000 },
                 { "--batch", &o->batch, 1, 4096 },
                 { "--seq", &o->seq, 2, 1 << 20 },
                 { "--n-embd", &o->n_embd, 8, 65536 },
                 { "--n-layer", &o->n_layer, 1, 256 },
                 { "--n-head", &o->n_head, 1, 1024 },
                 { "--n-head-kv", &o->n_head_kv, 1, 1024 },
                 { "--n-ff", &o->n_ff, 8, 262144 },
                 { "--lora-r", &o->lora_r, 0, 4096 },
                 { "--seed", &o->seed, 0, INT64_MAX },
                 { "--eval-every", &o->eval_every, 1, INT64_MAX },
                 { "--save-every", &o->save_every, 1, INT64_MAX },
                 { "--warmup", &o->warmup, 0, INT64_MAX },
                 { "--grad-accum", &o->grad_accum, 1, 65536 },
                 { "--threads", &o->threads, 1, 4096 } };
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
    if (cli_flag(argv, *i, "--recompute")) return o->recompute = true;
    if (cli_flag(argv, *i, "--no-pack")) return o->no_pack = true;
    return false;
}

int train_check_opts(run_opts *o)
{
    static const struct {
        const char *name;
        bg_sched_kind kind;
    } kinds[] = { { "constant", BG_SCHED_CONSTANT },
                  { "linear", BG_SCHED_LINEAR },
                  { "cosine", BG_SCHED_COSINE } };
    o->sched = (bg_schedule){ .kind = BG_SCHED_CONSTANT, .warmup = o->warmup, .total = o->steps };
    bool known = !o->schedule;
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0] && o->schedule; k++)
        if (strcmp(o->schedule, kinds[k].name) == 0) {
            o->sched.kind = kinds[k].kind;
            known = true;
        }
    if (!known)
        return cli_fail(2, "--schedule: '%s' is not constant, linear or cosine", o->schedule);
    if (o->warmup > o->steps)
        return cli_fail(2, "--warmup %lld exceeds --steps %lld", o->warmup, o->steps);
    if (o->eval_every && !o->val) return cli_fail(2, "--eval-every needs --val FILE");
    if (o->threads) omp_set_num_threads((int)o->threads);
    /* under mpirun rank 0 alone writes (and probes with PATH.tmp); its failure ends the job */
    if (cli_is_root() && (cli_check_output(o->out, "--out") || cli_check_output(o->csv, "--csv") ||
                          cli_check_output(o->adapter_out, "--adapter-out")))
        return 1;
    if (o->resume && o->out && strcmp(o->resume, o->out) != 0 && access(o->resume, R_OK) != 0)
        return cli_fail(1, "--resume %s cannot be read", o->resume);
    return 0;
}

int train_load_data(run_opts *o, const bg_tokenizer *tok, int64_t n_ctx, run_data *d)
{
    char err[512];
    memset(d, 0, sizeof *d);
    if (bg_dataset_load(o->data, tok, &d->train, err, sizeof err)) return cli_fail(1, "%s", err);
    if (o->val && bg_dataset_load(o->val, tok, &d->val, err, sizeof err)) {
        train_free_data(d);
        return cli_fail(1, "%s", err);
    }
    int64_t n = bg_dataset_n_tokens(d->train), nv = d->val ? bg_dataset_n_tokens(d->val) : 2;
    d->T = o->seq < n_ctx ? o->seq : n_ctx;
    if (n < 2 || nv < 2) {
        train_free_data(d);
        return cli_fail(1, "%s: fewer than 2 tokens", n < 2 ? o->data : o->val);
    }
    if (d->T > n - 1) {
        if (cli_is_root())
            fprintf(stderr, "note: %s has %lld tokens: windows of %lld instead of --seq %lld\n",
                    o->data, (long long)n, (long long)n - 1, o->seq);
        d->T = n - 1;
    }
    if (cli_is_root())
        fprintf(stderr, "data: %s, %lld tokens (%s tokenizer, %lld documents)%s%s\n", o->data,
                (long long)n, bg_tokenizer_kind(tok), (long long)bg_dataset_n_documents(d->train),
                o->val ? "; validation: " : "", o->val ? o->val : "");
    return 0;
}

void train_free_data(run_data *d)
{
    bg_dataset_free(&d->train);
    bg_dataset_free(&d->val);
}

int train_setup_optim(const run_opts *o, bg_ctx *ctx, bg_module *m, bg_optim **opt, int64_t *start)
{
    bg_optim_config oc = bg_optim_default(BG_ADAMW);
    oc.lr = (float)o->lr;
    *opt = bg_optim_new(ctx, &oc);
    if (!*opt || bg_optim_add_module(*opt, m) <= 0)
        return cli_fail(1, "optimizer: %s", bg_ctx_error(ctx));
    *start = 0;
    if (o->resume) {
        char err[512];
        bg_checkpoint_state st;
        if (bg_checkpoint_load(o->resume, m, *opt, &st, err, sizeof err))
            return cli_fail(1, "%s: %s", o->resume, err);
        *start = st.step;
        if (cli_is_root())
            fprintf(stderr, "resumed %s at step %lld\n", o->resume, (long long)st.step);
    }
    return cli_dist_attach(ctx, m, *opt, o->batch, o->seq);
}

static const char *const train_opts_help =
    "       [--val FILE] [--eval-every N] [--save-every N] [--csv loss.csv]\n"
    "       [--steps N] [--batch N] [--seq N] [--lr X] [--schedule constant|linear|cosine]\n"
    "       [--warmup N] [--grad-accum N] [--threads N] [--seed N] [--resume ckpt.gguf]\n"
    "       [--recompute] (activation recomputation: less memory, one more forward)\n";

static int train_usage(int status)
{
    printf("usage: bitgrad train --data FILE [--vocab-from VOCAB.gguf] [--out ckpt.gguf]\n%s"
           "       [--n-embd 256] [--n-layer 4] [--n-head 4] [--n-head-kv N] [--n-ff 768] [--fp]\n"
           "  trains a bitnet LM (BitLinear projections; --fp: full precision) with AdamW on\n"
           "  FILE: plain text, or JSON Lines of {\"text\": ...} or {\"prompt\": ...,\n"
           "  \"completion\": ...} (loss on the completion only). Tokens: bitgrad's 256 bytes, or\n"
           "  with --vocab-from the tokenizer of that GGUF (n_vocab from it; the checkpoint\n"
           "  keeps its tokenizer.* keys). --val FILE: validation loss and perplexity every\n"
           "  --eval-every steps and at the end (printed and in the CSV). --save-every N:\n"
           "  the checkpoint (--out, written atomically) every N steps. Ctrl-C writes it and\n"
           "  exits; --resume continues. Export with: bitgrad export ckpt.gguf --out model.gguf\n"
           "  Under mpirun -np N: data-parallel, --batch rows per process (global batch N x\n"
           "  --batch); rank 0 writes the CSV and checkpoints (see README).\n",
           train_opts_help);
    return status;
}

static int train_tokenizer(const run_opts *o, bg_tokenizer **tok)
{
    if (!o->vocab_from) return bg_tokenizer_new_bytes(tok) ? cli_fail(1, "out of memory") : 0;
    char err[512];
    if (bg_tokenizer_load(o->vocab_from, tok, err, sizeof err))
        return cli_fail(1, "--vocab-from %s: %s", o->vocab_from, err);
    return 0;
}

int cmd_train(int argc, char **argv)
{
    run_opts o = { .out = "checkpoint.gguf",
                   .csv = "loss.csv",
                   .steps = 1000,
                   .batch = 16,
                   .seq = 128,
                   .n_embd = 256,
                   .n_layer = 4,
                   .n_head = 4,
                   .n_ff = 768,
                   .seed = 1,
                   .lr = 1e-3,
                   .grad_accum = 1 };
    int bad = 0;
    for (int i = 1; i < argc && !bad; i++) {
        if (cli_flag(argv, i, "--help")) return train_usage(0);
        if (cli_opt(argc, argv, &i, "--vocab-from", &o.vocab_from, &bad)) continue;
        if (!train_parse_common(argc, argv, &i, &o, &bad))
            return cli_fail(2, "train: unknown argument %s", argv[i]);
    }
    if (bad) return 2;
    if (!o.data) return train_usage(2);
    int rc = train_check_opts(&o);
    if (rc) return rc;
    o.tokenizer_from = o.vocab_from;
    bg_tokenizer *tok = NULL;
    run_data d = { 0 };
    if (train_tokenizer(&o, &tok) || train_load_data(&o, tok, o.seq, &d)) {
        bg_tokenizer_free(&tok);
        return 1;
    }
    bg_ctx *ctx;
    if (bg_ctx_create(&ctx, BG_CPU)) return cli_fail(1, "out of memory");
    bg_ctx_seed(ctx, (uint64_t)o.seed);
    bg_bitnet_config c = bg_bitnet_default();
    c.n_vocab = bg_tokenizer_n_vocab(tok);
    c.n_embd = o.n_embd;
    c.n_layer = o.n_layer;
    c.n_head = o.n_head;
    c.n_head_kv = o.n_head_kv ? o.n_head_kv : o.n_head;
    c.n_ff = o.n_ff;
    c.n_ctx = o.seq;
    c.bitlinear = !o.fp;
    bg_module *m = bg_bitnet_new(ctx, &c);
    bg_optim *opt = NULL;
    int64_t start = 0;
    if (m && cli_set_recompute(&o, ctx, m)) bg_module_free(&m);
    rc = m ? train_setup_optim(&o, ctx, m, &opt, &start)
           : cli_fail(1, "model: %s", bg_ctx_error(ctx));
    if (!rc) rc = train_run(&o, ctx, m, opt, &d, start);
    bg_optim_free(&opt);
    bg_module_free(&m);
    bg_ctx_free(&ctx);
    train_free_data(&d);
    bg_tokenizer_free(&tok);
    return rc;
}

static int finetune_usage(int status)
{
    printf("usage: bitgrad finetune --demo [--out DIR] [--quick] [--data FILE] [--seed N]\n"
           "       bitgrad finetune MODEL.gguf --data FILE [--lora-r 8] [--lora-alpha 16]\n"
           "              [--targets 'blk.*.attn_*,blk.*.ffn_*'] [--unfreeze PATTERN]\n"
           "              [--adapter-out adapter.gguf] [--out ckpt.gguf]\n%s"
           "  --demo runs the end-to-end example (pre-train, QAT, LoRA, export).\n"
           "  Otherwise MODEL is fine-tuned on FILE (text or JSON Lines, as for train),\n"
           "  tokenized with MODEL's own tokenizer: LoRA adapters on the target modules (base\n"
           "  frozen), or with --lora-r 0 quantization-aware full fine-tuning;\n"
           "  --adapter-out writes the adapter in llama.cpp's format. With LoRA (no --unfreeze)\n"
           "  a TQ1_0/TQ2_0 MODEL's base is held packed (2-bit codes, no fp32 weights);\n"
           "  --no-pack: fp32 latent weights instead (the same losses, more memory).\n",
           train_opts_help);
    return status;
}

/* Adds the LoRA adapter (lora_r > 0) and applies --unfreeze. */
static int finetune_prepare(const run_opts *o, bg_ctx *ctx, bg_module *m, const char *targets_csv)
{
    char buf[1024], *pats[16];
    int np = 0;
    snprintf(buf, sizeof buf, "%s", targets_csv);
    for (char *t = strtok(buf, ","); t && np < 16; t = strtok(NULL, ",")) pats[np++] = t;
    if (o->lora_r > 0) {
        bg_lora_config lc = bg_lora_default();
        lc.rank = (int)o->lora_r;
        lc.alpha = (float)o->lora_alpha;
        lc.targets = (const char *const *)pats;
        lc.n_targets = np;
        if (bg_lora_add(m, "default", &lc) <= 0) return cli_fail(1, "lora: %s", bg_ctx_error(ctx));
    }
    if (o->unfreeze && bg_module_unfreeze(m, o->unfreeze) <= 0)
        return cli_fail(1, "--unfreeze %s matches no parameter", o->unfreeze);
    if (cli_is_root()) bg_module_print_trainable(m, stderr);
    return 0;
}

/* Fine-tunes an imported model: LoRA on targets, or all of it (QAT) with --lora-r 0. */
static int finetune_model(run_opts *o, const char *targets_csv)
{
    int rc = train_check_opts(o);
    if (rc) return rc;
    o->tokenizer_from = o->model_in;
    bg_ctx *ctx;
    if (bg_ctx_create(&ctx, BG_CPU)) return cli_fail(1, "out of memory");
    bg_ctx_seed(ctx, (uint64_t)o->seed);
    bg_module *m = NULL;
    bg_tokenizer *tok = NULL;
    bg_optim *opt = NULL;
    run_data d = { 0 };
    int64_t start = 0;
    bool packed = cli_packed_wanted(o);
    rc = packed ? cli_open_model_packed(ctx, o->model_in, &m, &tok)
                : cli_open_model(ctx, o->model_in, &m, &tok);
    if (!rc) rc = train_load_data(o, tok, bg_bitnet_get_config(m)->n_ctx, &d);
    /* The adapters' random init must not depend on how the base was loaded: the latent
     * import draws from the context's generator (layer init before the file's values),
     * the packed one does not. */
    if (!rc) bg_ctx_seed(ctx, (uint64_t)o->seed);
    if (!rc) rc = finetune_prepare(o, ctx, m, targets_csv);
    if (!rc && packed) rc = cli_pack_base(ctx, m);
    if (!rc) rc = cli_set_recompute(o, ctx, m);
    if (!rc) rc = train_setup_optim(o, ctx, m, &opt, &start);
    if (!rc) rc = train_run(o, ctx, m, opt, &d, start);
    char err[512];
    if (!rc && o->adapter_out && o->lora_r > 0 && cli_is_root()) {
        if (bg_lora_export(m, "default", o->adapter_out, err, sizeof err))
            rc = cli_fail(1, "%s", err);
        else
            fprintf(stderr, "wrote adapter %s\n", o->adapter_out);
    }
    bg_optim_free(&opt);
    bg_module_free(&m);
    bg_ctx_free(&ctx);
    train_free_data(&d);
    bg_tokenizer_free(&tok);
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
    run_opts o = { .out = "finetune.ckpt.gguf",
                   .csv = "finetune_loss.csv",
                   .steps = 200,
                   .batch = 16,
                   .seq = 64,
                   .seed = 1,
                   .lr = 1e-3,
                   .lora_r = 8,
                   .lora_alpha = 16,
                   .grad_accum = 1 };
    const char *targets = "blk.*.attn_*,blk.*.ffn_*";
    int bad = 0;
    for (int i = 1; i < argc && !bad; i++) {
        if (cli_opt(argc, argv, &i, "--targets", &targets, &bad) ||
            cli_opt(argc, argv, &i, "--adapter-out", &o.adapter_out, &bad) ||
            cli_opt(argc, argv, &i, "--unfreeze", &o.unfreeze, &bad))
            continue;
        if (train_parse_common(argc, argv, &i, &o, &bad)) continue;
        if (argv[i][0] != '-' && !o.model_in) o.model_in = argv[i];
        else
            return cli_fail(2, "finetune: unknown argument %s", argv[i]);
    }
    if (bad) return 2;
    if (!o.model_in || !o.data) return finetune_usage(2);
    if (o.adapter_out && o.lora_r == 0) return cli_fail(2, "--adapter-out needs --lora-r > 0");
    return finetune_model(&o, targets);
}
