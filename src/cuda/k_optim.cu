/* k_optim.cu - fused optimizer updates for parameters on the device: SGD (momentum,
 * dampening, Nesterov, L2) and Adam / AdamW, one pass over each parameter, with the update
 * formulas of src/optim/optim.c operation for operation. */
#include "cuda/k_common.cuh"

__global__ void k_sgd(float *p, const float *g, float *m, int64_t n, float lr, float wd,
                      float momentum, float dampening, bool nesterov, bool first)
{
    BG_CU_FOR(i, n)
    {
        float d = wd != 0.0f ? g[i] + wd * p[i] : g[i];
        if (m) {
            m[i] = first ? d : momentum * m[i] + (1.0f - dampening) * d;
            d = nesterov ? d + momentum * m[i] : m[i];
        }
        p[i] -= lr * d;
    }
}

extern "C" void bg__cu_sgd(bg_ctx *ctx, float *p, const float *g, float *m, int64_t n, float lr,
                           float wd, float momentum, float dampening, bool nesterov, bool first)
{
    if (n <= 0) return;
    BG_LAUNCH(bg_cu_grid(n), bg_cu_stream(ctx), k_sgd)
    (p, g, m, n, lr, wd, momentum, dampening, nesterov, first);
    bg_cu_check(ctx, "sgd");
}

__global__ void k_adam(float *p, const float *g, float *m, float *v, int64_t n, float beta1,
                       float beta2, float eps, float step_size, float bc2_sqrt, float decay,
                       bool decoupled, float wd)
{
    BG_CU_FOR(i, n)
    {
        float gi = g[i], pi = p[i];
        if (decoupled) pi *= decay;
        else if (wd != 0.0f)
            gi += wd * pi;
        float mi = m[i] + (gi - m[i]) * (1.0f - beta1);
        float vi = v[i] * beta2 + (1.0f - beta2) * gi * gi;
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        m[i] = mi;
        v[i] = vi;
        p[i] = pi - step_size * (mi / denom);
    }
}

extern "C" void bg__cu_adam(bg_ctx *ctx, float *p, const float *g, float *m, float *v, int64_t n,
                            float beta1, float beta2, float eps, float step_size, float bc2_sqrt,
                            float decay, bool decoupled, float wd)
{
    if (n <= 0) return;
    BG_LAUNCH(bg_cu_grid(n), bg_cu_stream(ctx), k_adam)
    (p, g, m, v, n, beta1, beta2, eps, step_size, bc2_sqrt, decay, decoupled, wd);
    bg_cu_check(ctx, "adam");
}
