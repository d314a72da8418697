/* optim.c - the device side of src/optim/optim.c: fused SGD and Adam/AdamW updates for
 * parameters on a CUDA ctx, the NaN/Inf check of gradients (one synchronisation per step,
 * not per parameter) and gradient clipping. */
#include <math.h>

#include "cuda/cuda_impl.h"

void bg__cuda_sgd(bg_tensor *p, bg_tensor *m, float lr, float wd, float momentum, float dampening,
                  bool nesterov, bool first)
{
    bg__cu_sgd(p->ctx, p->data, p->grad->data, m ? m->data : NULL, bg__numel(p->ndim, p->shape), lr,
               wd, momentum, dampening, nesterov, first);
}

void bg__cuda_adam(bg_tensor *p, bg_tensor *m, bg_tensor *v, float beta1, float beta2, float eps,
                   float step_size, float bc2_sqrt, float decay, bool decoupled, float wd)
{
    bg__cu_adam(p->ctx, p->data, p->grad->data, m->data, v->data, bg__numel(p->ndim, p->shape),
                beta1, beta2, eps, step_size, bc2_sqrt, decay, decoupled, wd);
}

void bg__cuda_finite_check(const bg_tensor *grad)
{
    bg__cu_nonfinite(grad->ctx, grad->data, bg__numel(grad->ndim, grad->shape),
                     bg__cu_state(grad->ctx)->nonfinite);
}

bool bg__cuda_finite_result(bg_ctx *ctx)
{
    int flag = 1;
    int *dev = bg__cu_state(ctx)->nonfinite;
    if (bg__cu_copy(ctx, &flag, dev, sizeof flag, BG_CU_D2H)) return false;
    bg__cu_memset(ctx, dev, 0, sizeof *dev);
    return flag == 0;
}

void bg__cuda_sumsq(const bg_tensor *grad)
{
    bg__cu_sumsq(grad->ctx, grad->data, bg__numel(grad->ndim, grad->shape),
                 bg__cu_state(grad->ctx)->acc);
}

double bg__cuda_sumsq_result(bg_ctx *ctx)
{
    double s = NAN;
    double *dev = bg__cu_state(ctx)->acc;
    if (bg__cu_copy(ctx, &s, dev, sizeof s, BG_CU_D2H)) return NAN;
    bg__cu_memset(ctx, dev, 0, sizeof *dev);
    return s;
}

void bg__cuda_scale(bg_tensor *grad, float s)
{
    bg__cu_scale(grad->ctx, grad->data, bg__numel(grad->ndim, grad->shape), s);
}

void bg__cuda_clamp(bg_tensor *grad, float lo, float hi)
{
    bg__cu_clamp(grad->ctx, grad->data, bg__numel(grad->ndim, grad->shape), lo, hi);
}
