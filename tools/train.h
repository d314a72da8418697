/* train.h - the options and the training loop shared by `bitgrad train` and `bitgrad
 * finetune` (tools/cmd_train.c parses and sets up, tools/train_loop.c runs). */
#ifndef BG_CLI_TRAIN_H
#define BG_CLI_TRAIN_H

#include <bitgrad/checkpoint.h>

#include "cli.h"

typedef struct run_opts {
    const char *data, *val, *out, *resume, *csv, *model_in, *adapter_out, *lora_targets, *unfreeze,
        *vocab_from, *schedule;
    long long steps, batch, seq, n_embd, n_layer, n_head, n_head_kv, n_ff, lora_r, seed;
    long long eval_every, save_every, warmup, grad_accum, threads;
    double lr, lora_alpha;
    bool fp;
    bool recompute, no_pack; /* --recompute; --no-pack: finetune on fp32 latent weights */
    /* set up by the command */
    const char *tokenizer_from; /* GGUF whose tokenizer.* keys checkpoints copy, or NULL */
    bg_schedule sched;
} run_opts;

/* Data of a run: training (and optional validation) tokens with their target masks. */
typedef struct run_data {
    bg_dataset *train, *val;
    int64_t T; /* input positions per window */
} run_data;

/* Parses an option shared by train and finetune at argv[*i] (true if it was one; *bad set on
 * a malformed value). */
bool train_parse_common(int argc, char **argv, int *i, run_opts *o, int *bad);
/* Checks every output path of o before any work; then the schedule and thread options. */
int train_check_opts(run_opts *o);
/* Loads --data (and --val) with tok and fixes the window length (<= n_ctx). */
int train_load_data(run_opts *o, const bg_tokenizer *tok, int64_t n_ctx, run_data *d);
void train_free_data(run_data *d);
/* AdamW over the trainable parameters (and --resume); *start gets the step to continue at. */
int train_setup_optim(const run_opts *o, bg_ctx *ctx, bg_module *m, bg_optim **opt, int64_t *start);
/* The loop: progress, CSV, validation, periodic and final checkpoints, Ctrl-C. Returns the
 * exit status. */
int train_run(const run_opts *o, bg_ctx *ctx, bg_module *m, bg_optim *opt, const run_data *d,
              int64_t start);

/* ---- packed frozen base and recomputation (cli_packed.c) ---- */
/* finetune with LoRA, no --unfreeze, no --no-pack (nor BITGRAD_NO_PACK) and a TQ1_0 / TQ2_0
 * model file: load the base packed. */
bool cli_packed_wanted(const run_opts *o);
/* bg_bitnet_import_packed and the model's tokenizer, with clear errors. */
int cli_open_model_packed(bg_ctx *ctx, const char *path, bg_module **m, bg_tokenizer **tok);
/* Whether a GGUF's projections are TQ1_0 / TQ2_0 (so it can load packed). */
bool cli_file_is_ternary(const char *path);
/* Packs everything frozen (after the adapters are added) and says how much the model holds. */
int cli_pack_base(bg_ctx *ctx, bg_module *m);
/* --recompute: activation recomputation on. */
int cli_set_recompute(const run_opts *o, bg_ctx *ctx, bg_module *m);

#endif
