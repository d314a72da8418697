/* ops_nn.c - CUDA front ends of the nn ops: embedding (scatter-add backward with atomics:
 * not bit-reproducible, see k_nn.cu), softmax and log_softmax, fused cross-entropy, mse,
 * fused rmsnorm/layernorm, and dropout, with their backward rules. They validate with the
 * checks of src/autograd/op_nn.c (src/autograd/op_checks.c), so the messages are the same.
 * Ids and targets are range-checked on the device; the op reads the check's two flag words
 * back (a small synchronisation), so a bad id is a clear error, never an out-of-bounds read. */
#include "autograd/op_checks.h"
#include "cuda/cuda_impl.h"

/* Range-checks the n int32 values at id (device) against [0, V), skipping ignore_index when
 * use_ignore. Returns the number of values not ignored, or -1 after recording `what`'s error
 * naming the first bad value. */
static int64_t check_ids(bg_ctx *ctx, const bg_tensor *t, const int32_t *id, int64_t V,
                         int ignore_index, bool use_ignore, const char *what)
{
    int64_t n = bg__numel(t->ndim, t->shape);
    unsigned long long flags[2];
    bg__cuda_reset_flags(ctx);
    bg__cu_ids_check(ctx, id, n, V, ignore_index, use_ignore, bg__cu_state(ctx)->flags);
    if (bg__cuda_read_flags(ctx, flags)) return -1;
    if (flags[0] == ~0ull) return (int64_t)flags[1];
    int32_t bad = 0;
    char s[80];
    bg__cu_copy(ctx, &bad, id + flags[0], sizeof bad, BG_CU_D2H);
    bg__index_str(t, (int64_t)flags[0], s, sizeof s);
    if (use_ignore)
        bg__error(ctx, BG_EINVAL,
                  "%s: target %d at targets%s is out of range [0, %lld) and is "
                  "not ignore_index (%d)",
                  what, (int)bad, s, (long long)V, ignore_index);
    else
        bg__error(ctx, BG_EINVAL, "%s: id %d at ids%s is out of range [0, %lld)", what, (int)bad, s,
                  (long long)V);
    return -1;
}

/* ---- embedding --------------------------------------------------------------------------------- */

bg_tensor *bg__cuda_embedding(bg_ctx *ctx, bg_tensor *weight, bg_tensor *ids)
{
    if (!bg__embedding_check(ctx, weight, ids)) return NULL;
    const int32_t *id = bg__cuda_contig(ids);
    int64_t V = weight->shape[0], D = weight->shape[1], n = bg__numel(ids->ndim, ids->shape);
    if (!id || check_ids(ctx, ids, id, V, 0, false, "embedding") < 0) return NULL;
    int64_t shape[BG_MAX_DIMS];
    for (int d = 0; d < ids->ndim; d++) shape[d] = ids->shape[d];
    shape[ids->ndim] = D;
    bg_tensor *out = bg__step_new(ctx, BG_F32, ids->ndim + 1, shape);
    if (!out) return NULL;
    bg__cu_embedding(ctx, out->data, weight->data, weight->stride[0], weight->stride[1], id, n, D);
    if (!bg__cuda_ok(ctx)) return NULL;
    bg_node *node = bg__record(BG_OP_EMBEDDING, out, 2, (bg_tensor *[]){ weight, ids });
    if (node) node->aux = (void *)id;
    return out;
}

void bg__cudab_embedding(bg_node *node)
{
    bg_tensor *w = node->in[0], *ids = node->in[1];
    if (!bg__needs_grad(w)) return;
    float *gw = bg__grad_of(w);
    const float *go = bg__grad_of(node->out);
    if (gw && go)
        bg__cu_embedding_grad(w->ctx, gw, go, node->aux, bg__numel(ids->ndim, ids->shape),
                              w->shape[1]);
}

/* ---- softmax and log_softmax --------------------------------------------------------------------- */

bg_tensor *bg__cuda_softmax(bg_ctx *ctx, int op, bg_tensor *a)
{
    const char *name = bg_op_name(op);
    if (!bg__softmax_check(ctx, name, a)) return NULL;
    const float *x = bg__cuda_contig(a);
    bg_tensor *out = x ? bg__step_new(ctx, BG_F32, a->ndim, a->shape) : NULL;
    if (!out) return NULL;
    bg__cu_softmax(ctx, x, out->data, bg__n_rows(a), a->shape[a->ndim - 1],
                   op == BG_OP_LOG_SOFTMAX);
    if (!bg__cuda_ok(ctx)) return NULL;
    bg__record(op, out, 1, (bg_tensor *[]){ a });
    return out;
}

static void softmax_backward(bg_node *node)
{
    bg_tensor *a = node->in[0];
    if (!bg__needs_grad(a)) return;
    float *gx = bg__grad_of(a);
    const float *gy = bg__grad_of(node->out);
    if (gx && gy)
        bg__cu_softmax_grad(a->ctx, gx, gy, node->out->data, bg__n_rows(a), a->shape[a->ndim - 1],
                            node->op == BG_OP_LOG_SOFTMAX);
}

void bg__cudab_softmax(bg_node *node) { softmax_backward(node); }
void bg__cudab_log_softmax(bg_node *node) { softmax_backward(node); }

/* ---- cross-entropy --------------------------------------------------------------------------------- */

typedef struct ce_saved {
    const float *logits; /* contiguous [rows, V] (device) */
    const int32_t *targets;
    float *lse; /* log-sum-exp per row (device) */
} ce_saved;

bg_tensor *bg__cuda_cross_entropy(bg_ctx *ctx, bg_tensor *logits, bg_tensor *targets,
                                  int ignore_index, float label_smoothing)
{
    if (!bg__cross_entropy_check(ctx, logits, targets, label_smoothing)) return NULL;
    int64_t rows = bg__n_rows(logits), V = logits->shape[logits->ndim - 1];
    const int32_t *t = bg__cuda_contig(targets);
    if (!t) return NULL;
    int64_t count = check_ids(ctx, targets, t, V, ignore_index, true, "cross_entropy");
    if (count < 0) return NULL;
    const float *x = bg__cuda_contig(logits);
    float *lse = bg__cuda_arena_alloc(ctx, (size_t)(rows > 0 ? rows : 1) * sizeof *lse);
    double *loss = bg__cuda_arena_alloc(ctx, (size_t)(rows > 0 ? rows : 1) * sizeof *loss);
    ce_saved *sv = bg__arena_alloc(ctx, sizeof *sv);
    bg_tensor *out = bg__step_new(ctx, BG_F32, 0, NULL);
    if (!x || !lse || !loss || !sv || !out) return NULL;
    bg__cu_ce_forward(ctx, x, t, rows, V, ignore_index, label_smoothing, lse, loss, out->data,
                      count);
    if (!bg__cuda_ok(ctx)) return NULL;
    bg_node *node = bg__record(BG_OP_CROSS_ENTROPY, out, 2, (bg_tensor *[]){ logits, targets });
    if (node) {
        *sv = (ce_saved){ .logits = x, .targets = t, .lse = lse };
        node->aux = sv;
        node->f[0] = label_smoothing;
        node->i[0] = ignore_index;
        node->i[1] = count;
    }
    return out;
}

void bg__cudab_cross_entropy(bg_node *node)
{
    bg_tensor *logits = node->in[0];
    if (!bg__needs_grad(logits) || node->i[1] == 0) return;
    float *gx = bg__grad_of(logits);
    const float *go = bg__grad_of(node->out);
    if (!gx || !go) return;
    const ce_saved *sv = node->aux;
    bg__cu_ce_backward(logits->ctx, gx, go, sv->logits, sv->targets, sv->lse, bg__n_rows(logits),
                       logits->shape[logits->ndim - 1], (int)node->i[0], node->f[0], node->i[1]);
}

/* ---- mse ---------------------------------------------------------------------------------------------- */

bg_tensor *bg__cuda_mse(bg_ctx *ctx, bg_tensor *a, bg_tensor *b)
{
    if (!bg__mse_check(ctx, a, b)) return NULL;
    int64_t n = bg__numel(a->ndim, a->shape);
    const float *pa = bg__cuda_contig(a), *pb = bg__cuda_contig(b);
    const float **sv = bg__arena_alloc(ctx, 2 * sizeof *sv);
    bg_tensor *out = bg__step_new(ctx, BG_F32, 0, NULL);
    if (!pa || !pb || !sv || !out) return NULL;
    bg__cu_mse(ctx, pa, pb, n, out->data);
    if (!bg__cuda_ok(ctx)) return NULL;
    bg_node *node = bg__record(BG_OP_MSE, out, 2, (bg_tensor *[]){ a, b });
    if (node) {
        sv[0] = pa;
        sv[1] = pb;
        node->aux = (void *)sv;
    }
    return out;
}

void bg__cudab_mse(bg_node *node)
{
    const float *const *sv = node->aux;
    const float *go = bg__grad_of(node->out);
    if (!go) return;
    int64_t n = bg__numel(node->in[0]->ndim, node->in[0]->shape);
    for (int side = 0; side < 2; side++) {
        bg_tensor *t = node->in[side];
        if (!bg__needs_grad(t)) continue;
        float *g = bg__grad_of(t);
        if (!g) return;
        bg__cu_mse_grad(t->ctx, g, go, sv[0], sv[1], n, side == 1);
    }
}

/* ---- rmsnorm and layernorm ------------------------------------------------------------------------- */

typedef struct norm_saved {
    const float *x; /* contiguous [rows, C] */
    const float *w; /* contiguous [C] or NULL */
    float *mean;    /* per row; NULL for rmsnorm */
    float *rstd;    /* per row */
} norm_saved;

bg_tensor *bg__cuda_norm(bg_ctx *ctx, int op, bg_tensor *x, bg_tensor *w, bg_tensor *b, float eps)
{
    const char *name = bg_op_name(op);
    if (!bg__norm_check(ctx, name, x, w, b, eps)) return NULL;
    int64_t rows = bg__n_rows(x), C = x->shape[x->ndim - 1];
    bool layer = op == BG_OP_LAYERNORM;
    norm_saved *sv = bg__arena_alloc(ctx, sizeof *sv);
    if (!sv) return NULL;
    sv->x = bg__cuda_contig(x);
    sv->w = w ? bg__cuda_contig(w) : NULL;
    const float *bd = b ? bg__cuda_contig(b) : NULL;
    size_t row_bytes = (size_t)(rows > 0 ? rows : 1) * sizeof(float);
    sv->mean = layer ? bg__cuda_arena_alloc(ctx, row_bytes) : NULL;
    sv->rstd = bg__cuda_arena_alloc(ctx, row_bytes);
    if (!sv->x || (w && !sv->w) || (b && !bd) || (layer && !sv->mean) || !sv->rstd) return NULL;
    bg_tensor *out = bg__step_new(ctx, BG_F32, x->ndim, x->shape);
    if (!out) return NULL;
    bg__cu_norm(ctx, sv->x, sv->w, bd, rows, C, eps, sv->mean, sv->rstd, out->data);
    if (!bg__cuda_ok(ctx)) return NULL;
    bg_node *node = layer ? bg__record(op, out, 3, (bg_tensor *[]){ x, w, b })
                          : bg__record(op, out, 2, (bg_tensor *[]){ x, w });
    if (node) node->aux = sv;
    return out;
}

static void norm_backward(bg_node *node)
{
    const norm_saved *sv = node->aux;
    bg_tensor *x = node->in[0], *w = node->in[1], *b = node->n_in > 2 ? node->in[2] : NULL;
    bg_ctx *ctx = x->ctx;
    const float *gy = bg__grad_of(node->out);
    if (!gy) return;
    int64_t rows = bg__n_rows(x), C = x->shape[x->ndim - 1];
    if (bg__needs_grad(x)) {
        float *gx = bg__grad_of(x);
        if (!gx) return;
        bg__cu_norm_dx(ctx, sv->x, sv->w, sv->mean, sv->rstd, gy, rows, C, gx);
    }
    float *gw = bg__needs_grad(w) ? bg__grad_of(w) : NULL;
    float *gb = bg__needs_grad(b) ? bg__grad_of(b) : NULL;
    if ((bg__needs_grad(w) && !gw) || (bg__needs_grad(b) && !gb) || (!gw && !gb)) return;
    double *partials =
        bg__cuda_arena_alloc(ctx, (size_t)(2 * BG_CU_ROW_CHUNKS * (C ? C : 1)) * sizeof(double));
    if (partials)
        bg__cu_norm_dparams(ctx, sv->x, sv->mean, sv->rstd, gy, rows, C, gw, gb, partials);
}

void bg__cudab_rmsnorm(bg_node *node) { norm_backward(node); }
void bg__cudab_layernorm(bg_node *node) { norm_backward(node); }

/* ---- dropout ---------------------------------------------------------------------------------------------- */

/* The mask comes from one draw of the ctx RNG hashed with each element's index on the
 * device: reproducible for a seed, but not the CPU's mask for that seed. */
bg_tensor *bg__cuda_dropout(bg_ctx *ctx, bg_tensor *a, float p)
{
    if (!bg__dropout_check(ctx, a, p)) return NULL;
    if (!ctx->training || p == 0.0f) return a;
    int64_t n = bg__numel(a->ndim, a->shape);
    const float *x = bg__cuda_contig(a);
    unsigned char *keep = bg__cuda_arena_alloc(ctx, (size_t)n);
    bg_tensor *out = bg__step_new(ctx, BG_F32, a->ndim, a->shape);
    if (!x || !keep || !out) return NULL;
    float scale = (float)(1.0 / (1.0 - (double)p));
    bg__cu_dropout(ctx, x, out->data, keep, n, p, scale, bg__rng_next(ctx));
    if (!bg__cuda_ok(ctx)) return NULL;
    bg_node *node = bg__record(BG_OP_DROPOUT, out, 1, (bg_tensor *[]){ a });
    if (node) {
        node->aux = keep;
        node->f[0] = scale;
    }
    return out;
}

void bg__cudab_dropout(bg_node *node)
{
    bg_tensor *a = node->in[0];
    if (!bg__needs_grad(a)) return;
    float *gx = bg__grad_of(a);
    const float *gy = bg__grad_of(node->out);
    if (gx && gy)
        bg__cu_dropout_grad(a->ctx, gx, gy, node->aux, bg__numel(a->ndim, a->shape), node->f[0]);
}
