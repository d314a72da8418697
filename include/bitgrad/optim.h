/* bitgrad/optim.h - optimizers (SGD with momentum/Nesterov, Adam, AdamW), parameter
 * groups, gradient clipping, learning-rate schedules (constant, linear, cosine, BitNet's
 * two-stage) and quantizer lambda warm-up schedules. Semantics follow torch.optim. */
#ifndef BITGRAD_OPTIM_H
#define BITGRAD_OPTIM_H

#include "bitgrad/nn.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum bg_optim_kind { BG_SGD = 0, BG_ADAM = 1, BG_ADAMW = 2 } bg_optim_kind;

typedef struct bg_optim_config {
    bg_optim_kind kind;
    float lr;
    float beta1, beta2, eps;   /* Adam / AdamW */
    float weight_decay;        /* L2 (SGD, Adam) or decoupled (AdamW) */
    float momentum, dampening; /* SGD */
    bool nesterov;             /* SGD */
} bg_optim_config;

typedef struct bg_optim bg_optim;

/* torch.optim defaults for kind (AdamW: lr 1e-3, betas 0.9/0.999, eps 1e-8, wd 0.01). */
BG_API bg_optim_config bg_optim_default(bg_optim_kind kind);
BG_API bg_optim *bg_optim_new(bg_ctx *ctx, const bg_optim_config *cfg);
BG_API void bg_optim_free(bg_optim **o);
/* A group of parameters with their own lr and weight decay; returns the group index. */
BG_API int bg_optim_add_group(bg_optim *o, bg_tensor *const *params, int n, float lr,
                              float weight_decay);
/* Adds every trainable parameter of m: two groups, weights (cfg's decay) and the rest
 * (norms, embeddings, biases: no decay), as is customary. Returns the number added. */
BG_API int bg_optim_add_module(bg_optim *o, bg_module *m);
BG_API int bg_optim_n_groups(const bg_optim *o);
BG_API int bg_optim_group_size(const bg_optim *o, int group);
BG_API int bg_optim_set_group_lr(bg_optim *o, int group, float lr);
BG_API int bg_optim_set_group_weight_decay(bg_optim *o, int group, float wd);
/* Multiplies every group's lr (set by schedules; 1 at start). */
BG_API void bg_optim_set_lr_scale(bg_optim *o, float scale);
/* Multiplies every group's weight decay (0 switches it off: BitNet's second stage). */
BG_API void bg_optim_set_wd_scale(bg_optim *o, float scale);
/* One update. Refuses (BG_ENONFINITE, nothing changed) when a gradient is NaN or Inf. */
BG_API int bg_optim_step(bg_optim *o);
/* Data-parallel training (bitgrad/dist.h): from now on the gradients of o's trainable
 * parameters are averaged over d's ranks during backward, and bg_optim_step (and
 * bg_clip_grad_norm) first wait for that average; when any rank's gradient is NaN/Inf every
 * rank's step refuses (BG_ENONFINITE). Call after adding the parameters; NULL detaches. */
struct bg_dist;
BG_API int bg_optim_set_dist(bg_optim *o, struct bg_dist *d);
BG_API int64_t bg_optim_steps(const bg_optim *o);
BG_API void bg_optim_zero_grad(bg_optim *o);
/* Optimizer state for checkpoints: per parameter its moment tensors (NULL if none). */
BG_API int bg_optim_n_params(const bg_optim *o);
BG_API bg_tensor *bg_optim_param(const bg_optim *o, int i);
BG_API bg_tensor *bg_optim_state(const bg_optim *o, int i, int which); /* 0: m/momentum, 1: v */
BG_API int bg_optim_set_steps(bg_optim *o, int64_t steps);
/* Read-back of the configuration, groups and schedule factors (for checkpoints). */
BG_API bg_optim_config bg_optim_get_config(const bg_optim *o);
BG_API int bg_optim_param_group(const bg_optim *o, int i); /* group of parameter i, or BG_EINVAL */
BG_API float bg_optim_group_lr(const bg_optim *o, int group);           /* NAN if no such group */
BG_API float bg_optim_group_weight_decay(const bg_optim *o, int group); /* NAN if no such group */
BG_API float bg_optim_lr_scale(const bg_optim *o);
BG_API float bg_optim_wd_scale(const bg_optim *o);
/* Creates the moment tensors (zeros) now instead of at the first step, so that a checkpoint
 * can fill them. Idempotent. */
BG_API int bg_optim_init_state(bg_optim *o);

/* Clipping over the parameters of the optimizer; returns the norm before clipping. */
BG_API float bg_clip_grad_norm(bg_optim *o, float max_norm);
BG_API void bg_clip_grad_value(bg_optim *o, float clip);

/* ---- schedules ------------------------------------------------------------ */
typedef enum bg_sched_kind {
    BG_SCHED_CONSTANT = 0,
    BG_SCHED_LINEAR,    /* warm-up then linear decay to min_factor at total */
    BG_SCHED_COSINE,    /* warm-up then cosine decay to min_factor at total */
    BG_SCHED_TWO_STAGE, /* BitNet: warm-up, linear decay, at stage2_at * total the lr drops to
                           stage2_factor of its peak and weight decay is switched off */
} bg_sched_kind;

typedef struct bg_schedule {
    bg_sched_kind kind;
    int64_t warmup, total;
    float min_factor;
    float stage2_at, stage2_factor;
} bg_schedule;

/* lr factor at step (0-based). */
BG_API float bg_schedule_lr(const bg_schedule *s, int64_t step);
/* Weight-decay factor at step (0 in the second stage of the two-stage schedule). */
BG_API float bg_schedule_wd(const bg_schedule *s, int64_t step);
/* Applies both factors of step to o. */
BG_API void bg_schedule_apply(const bg_schedule *s, bg_optim *o, int64_t step);

typedef enum bg_lambda_kind {
    BG_LAMBDA_CONSTANT = 0, /* always 1 */
    BG_LAMBDA_LINEAR,       /* step / k, capped at 1 */
    BG_LAMBDA_EXP,          /* 1 - exp(-5 step / k) */
    BG_LAMBDA_SIGMOID,      /* 1 / (1 + exp(-10 (step / k - 0.5))), 1 after k */
} bg_lambda_kind;

BG_API float bg_lambda_at(bg_lambda_kind kind, int64_t step, int64_t k);

#ifdef __cplusplus
}
#endif
#endif
