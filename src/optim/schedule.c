/* schedule.c - learning-rate factors (constant, linear, cosine with warm-up; BitNet's
 * two-stage schedule with weight decay off in stage two) and quantizer lambda warm-up. */
#include <math.h>

#include "bitgrad/optim.h"

static float warmup_factor(const bg_schedule *s, int64_t step)
{
    return s->warmup > 0 && step < s->warmup ? (float)(step + 1) / (float)s->warmup : 1.0f;
}

/* Progress through the decay phase in [0, 1]. */
static double decay_progress(const bg_schedule *s, int64_t step)
{
    int64_t span = s->total - s->warmup;
    if (span <= 0) return 1.0;
    double p = (double)(step - s->warmup) / (double)span;
    return p < 0.0 ? 0.0 : (p > 1.0 ? 1.0 : p);
}

static bool in_stage2(const bg_schedule *s, int64_t step)
{
    return s->kind == BG_SCHED_TWO_STAGE && (double)step >= (double)s->stage2_at * (double)s->total;
}

float bg_schedule_lr(const bg_schedule *s, int64_t step)
{
    if (!s || step < 0) return 1.0f;
    if (s->warmup > 0 && step < s->warmup) return warmup_factor(s, step);
    double p = decay_progress(s, step), lo = s->min_factor;
    switch (s->kind) {
    case BG_SCHED_CONSTANT: return 1.0f;
    case BG_SCHED_LINEAR: return (float)(1.0 - (1.0 - lo) * p);
    case BG_SCHED_COSINE: return (float)(lo + (1.0 - lo) * 0.5 * (1.0 + cos(M_PI * p)));
    case BG_SCHED_TWO_STAGE: {
        /* Linear decay in each stage; stage two restarts from stage2_factor of the peak. */
        double f = 1.0 - (1.0 - lo) * p;
        return (float)(in_stage2(s, step) ? f * s->stage2_factor : f);
    }
    }
    return 1.0f;
}

float bg_schedule_wd(const bg_schedule *s, int64_t step)
{
    return s && in_stage2(s, step) ? 0.0f : 1.0f;
}

void bg_schedule_apply(const bg_schedule *s, bg_optim *o, int64_t step)
{
    bg_optim_set_lr_scale(o, bg_schedule_lr(s, step));
    bg_optim_set_wd_scale(o, bg_schedule_wd(s, step));
}

float bg_lambda_at(bg_lambda_kind kind, int64_t step, int64_t k)
{
    if (kind == BG_LAMBDA_CONSTANT || k <= 0 || step >= k) return 1.0f;
    if (step <= 0) return kind == BG_LAMBDA_SIGMOID ? 1.0f / (1.0f + expf(5.0f)) : 0.0f;
    double x = (double)step / (double)k;
    switch (kind) {
    case BG_LAMBDA_LINEAR: return (float)x;
    case BG_LAMBDA_EXP: return (float)(1.0 - exp(-5.0 * x));
    case BG_LAMBDA_SIGMOID: return (float)(1.0 / (1.0 + exp(-10.0 * (x - 0.5))));
    default: return 1.0f;
    }
}
