/* train_loop.c - the training loop of `bitgrad train` and `bitgrad finetune`: random windows
 * of the tokenized data (only target tokens count in the loss), gradient accumulation, the
 * learning-rate schedule, validation loss and perplexity every --eval-every steps, atomic
 * checkpoints every --save-every steps and at the end (or on Ctrl-C), progress on stderr and
 * one CSV line per step.
 *
 * Loss normalisation: each micro-batch's loss is the mean cross-entropy over its target
 * tokens, and with --grad-accum K the step's gradient is the mean of the K micro-batch
 * gradients (each loss scaled by 1/K). When every micro-batch has the same number of targets
 * (plain text: B x T each) this equals one batch K times larger; with masked data (prompt /
 * completion) micro-batches are weighted equally, not by their target counts.
 *
 * Under mpirun (cli_dist.c) every rank draws the same global batch of B x world windows and
 * trains on its own B rows; gradients are averaged weighted by each rank's target count,
 * ranks stop together on Ctrl-C / SIGTERM, and rank 0 alone prints, writes the CSV, runs the
 * validation and writes checkpoints. */
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "train.h"

#define IGNORE (-1)
#define EVAL_MAX_WINDOWS 256

static volatile sig_atomic_t interrupted;
static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
    cli_dist_request_stop(); /* under mpirun: every rank stops after the same step */
}

static uint64_t lcg(uint64_t *r)
{
    *r = *r * 6364136223846793005ull + 1442695040888963407ull;
    return *r >> 33;
}

/* One random window of T inputs with at least one target (tries 64 starts, then takes the
 * last one: a window without targets adds nothing to the loss but does no harm). */
static void random_window(const bg_dataset *ds, int64_t T, uint64_t *r, int32_t *ids, int32_t *tg)
{
    int64_t n_starts = bg_dataset_n_tokens(ds) - T;
    for (int tries = 0; tries < 64; tries++) {
        int64_t s0 = (int64_t)(lcg(r) % (uint64_t)n_starts);
        bg_dataset_window(ds, s0, T, ids, tg, IGNORE);
        for (int64_t t = 0; t < T; t++)
            if (tg[t] != IGNORE) return;
    }
}

/* Mean cross-entropy per target token over consecutive windows of ds (at most
 * EVAL_MAX_WINDOWS), B at a time, without grad. NAN on error. */
static double evaluate(bg_ctx *ctx, bg_module *m, const bg_dataset *ds, int64_t T, int64_t B,
                       int32_t *ids, int32_t *tg)
{
    int64_t n = bg_dataset_n_tokens(ds);
    if (T > n - 1) T = n - 1;
    bool grad = bg_grad_enable(ctx, false), training = bg_module_training(m);
    bg_module_set_training(m, false);
    double sum = 0.0;
    int64_t count = 0, windows = 0;
    for (int64_t s0 = 0; s0 + T + 1 <= n && windows < EVAL_MAX_WINDOWS;) {
        int64_t b = 0, nt = 0;
        for (; b < B && s0 + T + 1 <= n && windows < EVAL_MAX_WINDOWS; b++, s0 += T, windows++) {
            bg_dataset_window(ds, s0, T, ids + b * T, tg + b * T, IGNORE);
            for (int64_t t = 0; t < T; t++) nt += tg[b * T + t] != IGNORE;
        }
        if (!nt) continue;
        bg_tensor *x = bg_from_data(ctx, BG_I32, 2, (int64_t[]){ b, T }, ids);
        bg_tensor *y = bg_from_data(ctx, BG_I32, 2, (int64_t[]){ b, T }, tg);
        bg_tensor *loss = bg_cross_entropy(bg_bitnet_forward(m, x), y, IGNORE, 0.0f);
        float lv = loss ? bg_item(loss) : NAN;
        bg_step_end(ctx);
        sum += (double)lv * (double)nt;
        count += nt;
    }
    bg_module_set_training(m, training);
    bg_grad_enable(ctx, grad);
    return count ? sum / (double)count : NAN;
}

static int save(const run_opts *o, bg_module *m, bg_optim *opt, int64_t step)
{
    char err[512];
    bg_checkpoint_state st = bg_checkpoint_state_default();
    st.step = step;
    st.has_schedule = true;
    st.schedule = o->sched;
    st.tokenizer_from = o->tokenizer_from;
    snprintf(st.user, sizeof st.user, "seed=%lld", o->seed);
    if (cli_is_root() && bg_checkpoint_save(o->out, m, opt, &st, err, sizeof err))
        return cli_fail(1, "%s", err);
    return 0;
}

/* This rank's B rows of a global batch of B x world windows (every rank draws all of them,
 * keeping the random sequence the same on every rank; the others go to the scratch row B of
 * ids and tg); returns their target count. */
static int64_t draw_batch(const run_data *d, int64_t B, uint64_t *r, int32_t *ids, int32_t *tg)
{
    int64_t T = d->T, first, count, targets = 0;
    cli_dist_slice(B * cli_dist_world(), &first, &count);
    for (int64_t gb = 0; gb < B * cli_dist_world(); gb++) {
        int64_t b = gb >= first && gb < first + count ? gb - first : B; /* B: scratch row */
        random_window(d->train, T, r, ids + b * T, tg + b * T);
    }
    for (int64_t i = 0; i < B * T; i++) targets += tg[i] != IGNORE;
    return targets;
}

/* One optimizer step of K micro-batches; *loss gets the step's loss. 0 or BG_E*. With
 * several ranks every rank goes through every collective call even after an error here, so
 * that all of them refuse the step together. */
static int train_step(const run_opts *o, bg_ctx *ctx, bg_module *m, bg_optim *opt,
                      const run_data *d, int64_t step, uint64_t *r, int32_t *ids, int32_t *tg,
                      double *loss)
{
    int64_t B = o->batch, T = d->T, K = o->grad_accum, targets = 0;
    int rc = 0;
    *loss = 0.0;
    for (int64_t k = 0; k < K && (!rc || cli_dist_world() > 1); k++) {
        targets += draw_batch(d, B, r, ids, tg);
        bg_dist_no_sync(cli_dist(), k < K - 1); /* gradients are averaged at the last one */
        if (k == K - 1) cli_dist_weigh((double)targets);
        if (rc) continue;
        bg_tensor *x = bg_from_data(ctx, BG_I32, 2, (int64_t[]){ B, T }, ids);
        bg_tensor *y = bg_from_data(ctx, BG_I32, 2, (int64_t[]){ B, T }, tg);
        bg_tensor *l = bg_cross_entropy(bg_bitnet_forward(m, x), y, IGNORE, 0.0f);
        *loss += l ? (double)bg_item(l) / (double)K : NAN;
        rc = l ? bg_backward(K > 1 ? bg_mul_scalar(l, 1.0f / (float)K) : l) : BG_EINVAL;
        bg_step_end(ctx);
    }
    bg_schedule_apply(&o->sched, opt, step);
    if (!rc || cli_dist_world() > 1) { /* with ranks: every rank steps or refuses together */
        int src = bg_optim_step(opt);
        if (!rc) rc = src;
    }
    *loss = cli_dist_loss(*loss);
    bg_optim_zero_grad(opt);
    bg_step_end(ctx);
    return rc;
}

static void log_eval(FILE *csv, int64_t step, double vl, bool tty)
{
    fprintf(stderr, "%sstep %lld: val_loss %.4f val_ppl %.3f\n", tty ? "\n" : "", (long long)step,
            vl, exp(vl));
    fprintf(csv, ",%.6f,%.4f\n", vl, exp(vl));
}

int train_run(const run_opts *o, bg_ctx *ctx, bg_module *m, bg_optim *opt, const run_data *d,
              int64_t start)
{
    bool root = cli_is_root(); /* rank 0 alone prints and writes */
    FILE *csv = root ? fopen(o->csv, start ? "a" : "w") : NULL;
    if (root && !csv) return cli_fail(1, "cannot write %s", o->csv);
    if (csv && !start) fprintf(csv, "step,loss,tokens_per_s,lr,val_loss,val_ppl\n");
    bool tty = isatty(2) && root;
    int64_t B = o->batch, T = d->T, n = B * T;
    /* one more row: draw_batch's scratch row */
    int32_t *ids = malloc((size_t)(n + T) * sizeof(int32_t)),
            *tg = malloc((size_t)(n + T) * sizeof(int32_t));
    uint64_t r = (uint64_t)o->seed * 2654435761u + (uint64_t)start;
    double t0 = cli_now();
    int rc = ids && tg ? 0 : cli_fail(1, "out of memory");
    interrupted = 0;
    signal(SIGINT, on_sigint);
    signal(SIGTERM, on_sigint); /* what mpirun sends every rank on Ctrl-C */
    int64_t step = start;
    for (; !rc && step < o->steps && !cli_dist_stop(interrupted); step++) {
        double lv;
        if ((rc = train_step(o, ctx, m, opt, d, step, &r, ids, tg, &lv)) != 0) {
            cli_fail(1, "step %lld: %s", (long long)step + 1, bg_ctx_error(ctx));
            break;
        }
        bool last = step + 1 == o->steps;
        if (!root) continue; /* the rest prints, evaluates and writes */
        double dt = cli_now() - t0, tps = (double)(step - start + 1) * (double)(n * o->grad_accum) *
                                          (double)cli_dist_world() / dt;
        double lr = o->lr * bg_schedule_lr(&o->sched, step);
        fprintf(csv, "%lld,%.6f,%.1f,%.6g", (long long)step + 1, lv, tps, lr);
        if (tty || step % 50 == 0 || step + 1 == o->steps)
            cli_progress(step + 1, o->steps, lv, tps,
                         dt / (double)(step - start + 1) * (double)(o->steps - step - 1), tty);
        if (d->val && ((o->eval_every && (step + 1) % o->eval_every == 0) || last))
            log_eval(csv, step + 1, evaluate(ctx, m, d->val, T, B, ids, tg), tty);
        else
            fprintf(csv, ",,\n");
        fflush(csv);
        if (o->save_every && (step + 1) % o->save_every == 0 && !last) {
            if ((rc = save(o, m, opt, step + 1)) != 0) break;
            fprintf(stderr, "%swrote checkpoint %s at step %lld\n", tty ? "\n" : "", o->out,
                    (long long)step + 1);
        }
    }
    if (tty) fprintf(stderr, "\n");
    if (csv) fclose(csv);
    free(ids);
    free(tg);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    if (rc) return 1;
    bool stopped = cli_dist_stop(interrupted);
    if (save(o, m, opt, step)) return 1;
    if (root)
        fprintf(stderr, "%s checkpoint %s at step %lld\n", stopped ? "interrupted: wrote" : "wrote",
                o->out, (long long)step);
    return stopped ? 130 : 0;
}
