/* optim.c - SGD (momentum, dampening, Nesterov, L2), Adam and AdamW (decoupled decay)
 * with parameter groups and clipping. The update formulas follow torch.optim's
 * single-tensor implementations operation by operation, so one step from the same state
 * gives the same parameters to float rounding. */
#include <math.h>
#include <string.h>

#include "autograd/vec8.h"
#include "bitgrad/optim.h"
#include "dist/dist_impl.h"
#include "cuda/cuda_dispatch.h"
#include "nn/module_impl.h"

#define OPT_PAR_MIN 32768
#define ADAM_CHUNK 16384 /* elements per work item of the parallel loops */

typedef struct opt_param {
    bg_tensor *p;
    bg_tensor *m, *v; /* momentum buffer / first moment, second moment */
    int group;
} opt_param;

typedef struct opt_group {
    float lr, wd;
} opt_group;

struct bg_optim {
    bg_ctx *ctx;
    bg_optim_config cfg;
    opt_param *params;
    int n_params, cap_params;
    opt_group *groups;
    int n_groups, cap_groups;
    float lr_scale, wd_scale;
    int64_t steps;
    bg_dist *dist; /* data-parallel group whose averaged gradients steps use, or NULL */
};

bg_optim_config bg_optim_default(bg_optim_kind kind)
{
    bg_optim_config c = { .kind = kind, .lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f,
                          .eps = 1e-8f, .weight_decay = 0.0f };
    if (kind == BG_ADAMW) c.weight_decay = 0.01f;
    if (kind == BG_SGD) c.lr = 0.01f;
    return c;
}

bg_optim *bg_optim_new(bg_ctx *ctx, const bg_optim_config *cfg)
{
    if (!ctx || !cfg) return NULL;
    if ((unsigned)cfg->kind > BG_ADAMW || !(cfg->lr >= 0.0f) || !(cfg->eps >= 0.0f) ||
        !(cfg->beta1 >= 0.0f && cfg->beta1 < 1.0f) || !(cfg->beta2 >= 0.0f && cfg->beta2 < 1.0f) ||
        (cfg->nesterov && (cfg->momentum <= 0.0f || cfg->dampening != 0.0f))) {
        bg__error(ctx, BG_EINVAL, "optim: invalid configuration (lr, betas in [0,1), eps >= 0; "
                  "Nesterov needs momentum > 0 and dampening 0)");
        return NULL;
    }
    bg_optim *o = bg__calloc(ctx, 1, sizeof *o);
    if (!o) return NULL;
    o->ctx = ctx;
    o->cfg = *cfg;
    o->lr_scale = 1.0f;
    o->wd_scale = 1.0f;
    return o;
}

void bg_optim_free(bg_optim **po)
{
    if (!po || !*po) return;
    bg_optim *o = *po;
    if (o->dist) bg__dist_release(o->dist, o);
    for (int i = 0; i < o->n_params; i++) {
        bg_tensor_free(&o->params[i].m);
        bg_tensor_free(&o->params[i].v);
    }
    free(o->params);
    free(o->groups);
    free(o);
    *po = NULL;
}

int bg_optim_add_group(bg_optim *o, bg_tensor *const *params, int n, float lr, float wd)
{
    if (!o || (n > 0 && !params) || n < 0) return BG_EINVAL;
    for (int i = 0; i < n; i++) {
        if (!params[i] || !bg_tensor_is_persistent(params[i]) || params[i]->dtype != BG_F32)
            return bg__error(o->ctx, BG_EINVAL, "optim: parameter %d is not a persistent f32 "
                             "tensor", i);
        for (int j = 0; j < o->n_params; j++)
            if (o->params[j].p == params[i])
                return bg__error(o->ctx, BG_EINVAL, "optim: parameter '%s' is already in a "
                                 "group", params[i]->name);
    }
    if (o->n_groups == o->cap_groups) {
        int cap = o->cap_groups ? o->cap_groups * 2 : 4;
        opt_group *g = bg__realloc(o->ctx, o->groups, (size_t)cap * sizeof *g);
        if (!g) return BG_ENOMEM;
        o->groups = g;
        o->cap_groups = cap;
    }
    if (o->n_params + n > o->cap_params) {
        int cap = (o->n_params + n) * 2;
        opt_param *p = bg__realloc(o->ctx, o->params, (size_t)cap * sizeof *p);
        if (!p) return BG_ENOMEM;
        o->params = p;
        o->cap_params = cap;
    }
    int g = o->n_groups++;
    o->groups[g] = (opt_group){ .lr = lr, .wd = wd };
    for (int i = 0; i < n; i++)
        o->params[o->n_params++] = (opt_param){ .p = params[i], .group = g };
    return g;
}

/* Weights of Linear layers and LoRA matrices decay; norms, embeddings, biases do not. */
static bool decays(const bg_module *owner, const bg_tensor *t)
{
    return owner->kind == BG_MOD_LINEAR &&
           (t == owner->params[0] || strstr(bg_tensor_name(t), ".lora_") != NULL);
}

static void collect(bg_module *m, bool want_decay, bg_tensor **out, int *n)
{
    for (int i = 0; i < m->n_params; i++)
        if (m->params[i]->requires_grad && decays(m, m->params[i]) == want_decay)
            out[(*n)++] = m->params[i];
    for (int i = 0; i < m->n_children; i++) collect(m->children[i], want_decay, out, n);
}

int bg_optim_add_module(bg_optim *o, bg_module *m)
{
    if (!o || !m) return BG_EINVAL;
    int total = bg_module_n_params(m), added = 0;
    bg_tensor **buf = bg__malloc(o->ctx, (size_t)(total ? total : 1) * sizeof *buf);
    if (!buf) return BG_ENOMEM;
    for (int pass = 0; pass < 2; pass++) {
        int n = 0;
        collect(m, pass == 0, buf, &n);
        if (n == 0) continue;
        int rc = bg_optim_add_group(o, buf, n, o->cfg.lr, pass == 0 ? o->cfg.weight_decay : 0.0f);
        if (rc < 0) {
            free(buf);
            return rc;
        }
        added += n;
    }
    free(buf);
    return added;
}

int bg_optim_n_groups(const bg_optim *o) { return o->n_groups; }

int bg_optim_group_size(const bg_optim *o, int group)
{
    int n = 0;
    for (int i = 0; i < o->n_params; i++) n += o->params[i].group == group;
    return n;
}

int bg_optim_set_group_lr(bg_optim *o, int group, float lr)
{
    if (!o || group < 0 || group >= o->n_groups) return BG_EINVAL;
    o->groups[group].lr = lr;
    return BG_OK;
}

int bg_optim_set_group_weight_decay(bg_optim *o, int group, float wd)
{
    if (!o || group < 0 || group >= o->n_groups) return BG_EINVAL;
    o->groups[group].wd = wd;
    return BG_OK;
}

void bg_optim_set_lr_scale(bg_optim *o, float scale) { o->lr_scale = scale; }
void bg_optim_set_wd_scale(bg_optim *o, float scale) { o->wd_scale = scale; }
int64_t bg_optim_steps(const bg_optim *o) { return o->steps; }
int bg_optim_n_params(const bg_optim *o) { return o->n_params; }

bg_tensor *bg_optim_param(const bg_optim *o, int i)
{
    return (i >= 0 && i < o->n_params) ? o->params[i].p : NULL;
}

bg_tensor *bg_optim_state(const bg_optim *o, int i, int which)
{
    if (i < 0 || i >= o->n_params) return NULL;
    return which == 0 ? o->params[i].m : o->params[i].v;
}

int bg_optim_set_steps(bg_optim *o, int64_t steps)
{
    if (!o || steps < 0) return BG_EINVAL;
    o->steps = steps;
    return BG_OK;
}

void bg_optim_zero_grad(bg_optim *o)
{
    for (int i = 0; i < o->n_params; i++) bg_tensor_zero_grad(o->params[i].p);
}

static int ensure_state(bg_optim *o, opt_param *op)
{
    bool need_m = o->cfg.kind != BG_SGD || o->cfg.momentum != 0.0f;
    bool need_v = o->cfg.kind != BG_SGD;
    if (need_m && !op->m) {
        op->m = bg_tensor_new(o->ctx, BG_F32, op->p->ndim, op->p->shape);
        if (!op->m) return BG_ENOMEM;
        snprintf(op->m->name, sizeof op->m->name, "%.55s.exp_avg", op->p->name);
    }
    if (need_v && !op->v) {
        op->v = bg_tensor_new(o->ctx, BG_F32, op->p->ndim, op->p->shape);
        if (!op->v) return BG_ENOMEM;
        snprintf(op->v->name, sizeof op->v->name, "%.52s.exp_avg_sq", op->p->name);
    }
    return BG_OK;
}

static void sgd_update(const bg_optim *o, opt_param *op, float lr, float wd, bool first)
{
    const bg_optim_config *c = &o->cfg;
    BG_CUDA_DISPATCH_VOID(op->p, bg__cuda_sgd(op->p, op->m, lr, wd, c->momentum, c->dampening,
                                              c->nesterov, first)); /* cuda hook */
    float *p = op->p->data, *m = op->m ? op->m->data : NULL;
    const float *g = op->p->grad->data;
    int64_t n = bg_tensor_numel(op->p);
    for (int64_t i = 0; i < n; i++) {
        float d = wd != 0.0f ? g[i] + wd * p[i] : g[i];
        if (m) {
            m[i] = first ? d : c->momentum * m[i] + (1.0f - c->dampening) * d;
            d = c->nesterov ? d + c->momentum * m[i] : m[i];
        }
        p[i] -= lr * d;
    }
}

typedef struct adam_consts {
    float beta1, beta2, eps, step_size, bc2_sqrt, decay, wd;
    bool decoupled;
} adam_consts;

/* One chunk of the Adam / AdamW update, torch.optim's arithmetic op for op. Restrict
 * pointers and constants in locals so that the loop vectorises; the clones run it in the
 * widest vectors the CPU has (elementwise IEEE operations: the same bits in each). */
BG_CLONES static void adam_chunk(float *restrict p, float *restrict m, float *restrict v,
                                 const float *restrict g, int64_t n, const adam_consts k)
{
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i];
        if (k.decoupled) p[i] *= k.decay;
        else if (k.wd != 0.0f) gi += k.wd * p[i];
        m[i] += (gi - m[i]) * (1.0f - k.beta1);
        v[i] = v[i] * k.beta2 + (1.0f - k.beta2) * gi * gi;
        float denom = sqrtf(v[i]) / k.bc2_sqrt + k.eps;
        p[i] -= k.step_size * (m[i] / denom);
    }
}

static void adam_update(const bg_optim *o, opt_param *op, float lr, float wd)
{
    const bg_optim_config *c = &o->cfg;
    float *p = op->p->data, *m = op->m->data, *v = op->v->data;
    const float *g = op->p->grad->data;
    int64_t n = bg_tensor_numel(op->p);
    double t = (double)o->steps;
    double bc1 = 1.0 - pow((double)c->beta1, t), bc2 = 1.0 - pow((double)c->beta2, t);
    float step_size = (float)((double)lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    bool decoupled = c->kind == BG_ADAMW;
    float decay = 1.0f - lr * wd;
    BG_CUDA_DISPATCH_VOID(op->p, bg__cuda_adam(op->p, op->m, op->v, c->beta1, c->beta2, c->eps,
                                               step_size, bc2_sqrt, decay, decoupled,
                                               wd)); /* cuda hook */
    const adam_consts k = { .beta1 = c->beta1, .beta2 = c->beta2, .eps = c->eps,
                            .step_size = step_size, .bc2_sqrt = bc2_sqrt, .decay = decay,
                            .wd = wd, .decoupled = decoupled };
#pragma omp parallel for schedule(static) if (n > OPT_PAR_MIN)
    for (int64_t c0 = 0; c0 < n; c0 += ADAM_CHUNK) {
        int64_t len = n - c0 < ADAM_CHUNK ? n - c0 : ADAM_CHUNK;
        adam_chunk(p + c0, m + c0, v + c0, g + c0, len, k);
    }
}

bg_optim_config bg_optim_get_config(const bg_optim *o) { return o->cfg; }
float bg_optim_lr_scale(const bg_optim *o) { return o->lr_scale; }
float bg_optim_wd_scale(const bg_optim *o) { return o->wd_scale; }

int bg_optim_param_group(const bg_optim *o, int i)
{
    return (o && i >= 0 && i < o->n_params) ? o->params[i].group : BG_EINVAL;
}

float bg_optim_group_lr(const bg_optim *o, int group)
{
    return (o && group >= 0 && group < o->n_groups) ? o->groups[group].lr : NAN;
}

float bg_optim_group_weight_decay(const bg_optim *o, int group)
{
    return (o && group >= 0 && group < o->n_groups) ? o->groups[group].wd : NAN;
}

int bg_optim_init_state(bg_optim *o)
{
    if (!o) return BG_EINVAL;
    for (int i = 0; i < o->n_params; i++)
        if (ensure_state(o, &o->params[i]))
            return bg__error(o->ctx, BG_ENOMEM, "optim: out of memory");
    return BG_OK;
}

/* Whether n floats hold no Inf or NaN: an all-ones exponent field, OR-ed over the chunk
 * (a branch-free loop the clones vectorise). */
BG_CLONES static bool chunk_finite(const float *restrict g, int64_t n)
{
    uint32_t bad = 0;
    for (int64_t k = 0; k < n; k++) {
        uint32_t u;
        memcpy(&u, &g[k], sizeof u);
        bad |= (u & 0x7f800000u) == 0x7f800000u;
    }
    return !bad;
}

static bool grads_finite(const bg_optim *o)
{
    for (int i = 0; i < o->n_params; i++) {
        const bg_tensor *p = o->params[i].p;
        if (!p->grad) continue;
        BG_CUDA_DISPATCH_CONTINUE(p, bg__cuda_finite_check(p->grad)); /* cuda hook: enqueue */
        const float *g = p->grad->data;
        int64_t n = bg_tensor_numel(p);
        bool ok = true;
#pragma omp parallel for schedule(static) reduction(&& : ok) if (n > OPT_PAR_MIN)
        for (int64_t c0 = 0; c0 < n; c0 += ADAM_CHUNK)
            ok = chunk_finite(g + c0, n - c0 < ADAM_CHUNK ? n - c0 : ADAM_CHUNK) && ok;
        if (!ok) return false;
    }
    BG_CUDA_DISPATCH(o->ctx, bg__cuda_finite_result(o->ctx)); /* cuda hook: one sync */
    return true;
}

static int optim_step_local(bg_optim *o);

void bg__optim_drop_dist(bg_optim *o) { o->dist = NULL; }

int bg_optim_set_dist(bg_optim *o, bg_dist *d)
{
    if (!o) return BG_EINVAL;
    if (o->dist) bg__dist_release(o->dist, o);
    o->dist = NULL;
    if (!d) return BG_OK;
    bg_tensor **ps = bg__malloc(o->ctx, (size_t)(o->n_params ? o->n_params : 1) * sizeof *ps);
    if (!ps) return bg__error(o->ctx, BG_ENOMEM, "optim: out of memory");
    int n = 0;
    for (int i = 0; i < o->n_params; i++)
        if (o->params[i].p->requires_grad) ps[n++] = o->params[i].p;
    int rc = bg__dist_bind(d, o, o->ctx, ps, n);
    free(ps);
    if (rc) return rc;
    o->dist = d;
    return BG_OK;
}

int bg_optim_step(bg_optim *o)
{
    if (!o) return BG_EINVAL;
    if (o->dist) { /* every rank refuses together, or steps on the same averaged gradients */
        int rc = bg__dist_sync_for(o->dist, o->ctx);
        if (!rc) rc = optim_step_local(o);
        bg__dist_step_done(o->dist);
        return rc;
    }
    return optim_step_local(o);
}

/* The update itself, on gradients that are final (averaged over the group, if any). */
static int optim_step_local(bg_optim *o)
{
    if (!grads_finite(o))
        return bg__error(o->ctx, BG_ENONFINITE, "optim: a gradient holds NaN or Inf; the step "
                         "was skipped and no parameter changed");
    for (int i = 0; i < o->n_params; i++)
        if (ensure_state(o, &o->params[i])) return bg__error(o->ctx, BG_ENOMEM, "optim: out of memory");
    o->steps++;
    for (int i = 0; i < o->n_params; i++) {
        opt_param *op = &o->params[i];
        if (!op->p->grad || !op->p->requires_grad) continue;
        const opt_group *g = &o->groups[op->group];
        float lr = g->lr * o->lr_scale, wd = g->wd * o->wd_scale;
        if (o->cfg.kind == BG_SGD) sgd_update(o, op, lr, wd, o->steps == 1);
        else adam_update(o, op, lr, wd);
    }
    return BG_OK;
}

float bg_clip_grad_norm(bg_optim *o, float max_norm)
{
    double ss = 0.0;
    if (o->dist && bg__dist_sync_for(o->dist, o->ctx)) return NAN; /* the step will refuse */
    for (int i = 0; i < o->n_params; i++) {
        const bg_tensor *p = o->params[i].p;
        if (!p->grad) continue;
        BG_CUDA_DISPATCH_CONTINUE(p, bg__cuda_sumsq(p->grad)); /* cuda hook: enqueue */
        const float *g = p->grad->data;
        int64_t n = bg_tensor_numel(p);
        for (int64_t k = 0; k < n; k++) ss += (double)g[k] * g[k];
    }
    BG_CUDA_ALSO(o->ctx, ss = bg__cuda_sumsq_result(o->ctx)); /* cuda hook: one sync */
    float norm = (float)sqrt(ss);
    float coef = max_norm / (norm + 1e-6f);
    if (coef < 1.0f) {
        for (int i = 0; i < o->n_params; i++) {
            bg_tensor *p = o->params[i].p;
            if (!p->grad) continue;
            BG_CUDA_DISPATCH_CONTINUE(p, bg__cuda_scale(p->grad, coef)); /* cuda hook */
            float *g = p->grad->data;
            int64_t n = bg_tensor_numel(p);
            for (int64_t k = 0; k < n; k++) g[k] *= coef;
        }
    }
    return norm;
}

void bg_clip_grad_value(bg_optim *o, float clip)
{
    for (int i = 0; i < o->n_params; i++) {
        bg_tensor *p = o->params[i].p;
        if (!p->grad) continue;
        BG_CUDA_DISPATCH_CONTINUE(p, bg__cuda_clamp(p->grad, -clip, clip)); /* cuda hook */
        float *g = p->grad->data;
        int64_t n = bg_tensor_numel(p);
        for (int64_t k = 0; k < n; k++) g[k] = fminf(fmaxf(g[k], -clip), clip);
    }
}
