/* ops_attention.c - CUDA front ends of rotary position embedding (NEOX, as llama.cpp) and
 * causal scaled-dot-product attention with grouped-query heads, with their backward rules.
 *
 * Attention: per query head h, one strided-batched GEMM over the batch computes the scores
 * of every b (the [T, D] head blocks sit inside [B, T, H, D] with leading dimension H*D;
 * nothing is copied out), one kernel applies the causal softmax to all B*H*T rows, and
 * per head a second strided-batched GEMM multiplies by V. Backward follows the CPU's
 * order: per head dV += P^T dO and dP = dO V^T, the softmax gradient for all rows, then
 * per head dQ += scale dS K and dK += scale dS^T Q. Heads run in order on one stream, so a
 * kv head shared by several query heads sums their contributions in head order. */
#include <math.h>

#include "autograd/op_checks.h"
#include "cuda/cuda_impl.h"

/* ---- rope ------------------------------------------------------------------------------------------- */

bg_tensor *bg__cuda_rope(bg_ctx *ctx, bg_tensor *x, int n_rot, float base, int64_t pos0)
{
    if (!bg__rope_check(ctx, x, n_rot, base)) return NULL;
    int nd = x->ndim;
    int64_t T = x->shape[nd - 3], H = x->shape[nd - 2], D = x->shape[nd - 1];
    int64_t BT = bg__numel(nd - 2, x->shape);
    const float *xd = bg__cuda_contig(x);
    float *tab = bg__cuda_arena_alloc(ctx, (size_t)(T * n_rot > 0 ? T * n_rot : 1) * sizeof *tab);
    bg_tensor *out = bg__step_new(ctx, BG_F32, nd, x->shape);
    if (!xd || !tab || !out) return NULL;
    bg__cu_rope_table(ctx, tab, T, n_rot, base, pos0);
    bg__cu_rope(ctx, xd, out->data, tab, BT, T, H, D, n_rot, 1.0f, false);
    if (!bg__cuda_ok(ctx)) return NULL;
    bg_node *node = bg__record(BG_OP_ROPE, out, 1, (bg_tensor *[]){ x });
    if (node) {
        node->aux = tab;
        node->i[0] = n_rot;
    }
    return out;
}

/* The rotation is orthogonal: the gradient rotates back by -theta. */
void bg__cudab_rope(bg_node *node)
{
    bg_tensor *x = node->in[0];
    if (!bg__needs_grad(x)) return;
    float *gx = bg__grad_of(x);
    const float *gy = bg__grad_of(node->out);
    if (!gx || !gy) return;
    int nd = x->ndim;
    int64_t T = x->shape[nd - 3], H = x->shape[nd - 2], D = x->shape[nd - 1];
    bg__cu_rope(x->ctx, gy, gx, node->aux, bg__numel(nd - 2, x->shape), T, H, D, (int)node->i[0],
                -1.0f, true);
}

/* ---- attention ---------------------------------------------------------------------------------------- */

typedef struct attn_saved {
    bg_attn_dims d;
    const float *q, *k, *v; /* contiguous [B, T, H(kv), D] */
    float *P;               /* softmax probabilities [B, H, T, T] */
} attn_saved;

/* Element offsets of query head h's [T, D] block in q (b = 0) and of its kv head in k, v. */
static int64_t q_off(const bg_attn_dims *d, int64_t h) { return h * d->D; }
static int64_t kv_off(const bg_attn_dims *d, int64_t h) { return (h / (d->H / d->Hkv)) * d->D; }

/* For head h, over every batch: C_b = alpha op(A_b) op(B_b) + beta C_b where each operand is
 * one of q / k / v / dO / dQ... ([B, T, *, D] with row stride ld and batch stride T*ld) or
 * a [T, T] block of the [B, H, T, T] probabilities. */
typedef struct attn_op {
    const float *p;
    int64_t ld, batch_stride;
} attn_op;

static attn_op head_op(const bg_attn_dims *d, const float *base, bool kv, int64_t h)
{
    int64_t heads = kv ? d->Hkv : d->H;
    return (attn_op){ .p = base + (kv ? kv_off(d, h) : q_off(d, h)),
                      .ld = heads * d->D,
                      .batch_stride = d->T * heads * d->D };
}

static attn_op prob_op(const bg_attn_dims *d, const float *P, int64_t h)
{
    return (attn_op){ .p = P + h * d->T * d->T, .ld = d->T, .batch_stride = d->H * d->T * d->T };
}

static void attn_gemm(bg_ctx *ctx, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                      attn_op A, attn_op B, float beta, attn_op C, int64_t batch)
{
    bg__cu_gemm(ctx, ta, tb, M, N, K, alpha, A.p, A.ld, A.batch_stride, B.p, B.ld, B.batch_stride,
                beta, (float *)C.p, C.ld, C.batch_stride, batch);
}

static void attn_forward(bg_ctx *ctx, const attn_saved *sv, float *out)
{
    const bg_attn_dims *d = &sv->d;
    int64_t T = d->T, D = d->D;
    float scale = (float)(1.0 / sqrt((double)D));
    for (int64_t h = 0; h < d->H; h++) /* S = scale Q K^T */
        attn_gemm(ctx, false, true, T, T, D, scale, head_op(d, sv->q, false, h),
                  head_op(d, sv->k, true, h), 0.0f, prob_op(d, sv->P, h), d->B);
    bg__cu_causal_softmax(ctx, sv->P, d->B * d->H * T, T);
    for (int64_t h = 0; h < d->H; h++) /* O = P V */
        attn_gemm(ctx, false, false, T, D, T, 1.0f, prob_op(d, sv->P, h),
                  head_op(d, sv->v, true, h), 0.0f, head_op(d, out, false, h), d->B);
}

bg_tensor *bg__cuda_attention(bg_ctx *ctx, bg_tensor *q, bg_tensor *k, bg_tensor *v)
{
    bg_attn_dims d;
    if (!bg__attention_check(ctx, q, k, v, &d)) return NULL;
    bg_tensor *out = bg__step_new(ctx, BG_F32, 4, q->shape);
    if (!out) return NULL;
    attn_saved *sv = bg__arena_alloc(ctx, sizeof *sv);
    size_t n_p = (size_t)(d.B * d.H * d.T * d.T);
    float *P = bg__cuda_arena_alloc(ctx, (n_p ? n_p : 1) * sizeof *P);
    const float *qd = bg__cuda_contig(q), *kd = bg__cuda_contig(k), *vd = bg__cuda_contig(v);
    if (!sv || !P || !qd || !kd || !vd) return NULL;
    *sv = (attn_saved){ .d = d, .q = qd, .k = kd, .v = vd, .P = P };
    if (d.T > 0 && d.B > 0) attn_forward(ctx, sv, out->data);
    if (!bg__cuda_ok(ctx)) return NULL;
    bg_node *node = bg__record(BG_OP_ATTENTION, out, 3, (bg_tensor *[]){ q, k, v });
    if (node) node->aux = sv;
    return out;
}

void bg__cudab_attention(bg_node *node)
{
    const attn_saved *sv = node->aux;
    const bg_attn_dims *d = &sv->d;
    bg_ctx *ctx = node->out->ctx;
    if (d->T == 0 || d->B == 0) return;
    const float *go = bg__grad_of(node->out);
    float *gq = NULL, *gk = NULL, *gv = NULL;
    bg_tensor *q = node->in[0], *k = node->in[1], *v = node->in[2];
    if (!go || (bg__needs_grad(q) && !(gq = bg__grad_of(q))) ||
        (bg__needs_grad(k) && !(gk = bg__grad_of(k))) ||
        (bg__needs_grad(v) && !(gv = bg__grad_of(v))))
        return;
    int64_t T = d->T, D = d->D;
    float scale = (float)(1.0 / sqrt((double)D));
    bool need_ds = gq || gk;
    float *dS =
        need_ds ? bg__cuda_arena_alloc(ctx, (size_t)(d->B * d->H * T * T) * sizeof *dS) : NULL;
    if (need_ds && !dS) return;
    for (int64_t h = 0; h < d->H; h++) {
        attn_op dO = head_op(d, go, false, h);
        if (gv) /* dV += P^T dO */
            attn_gemm(ctx, true, false, T, D, T, 1.0f, prob_op(d, sv->P, h), dO, 1.0f,
                      head_op(d, gv, true, h), d->B);
        if (need_ds) /* dP = dO V^T */
            attn_gemm(ctx, false, true, T, T, D, 1.0f, dO, head_op(d, sv->v, true, h), 0.0f,
                      prob_op(d, dS, h), d->B);
    }
    if (!need_ds) return;
    bg__cu_causal_softmax_grad(ctx, sv->P, dS, d->B * d->H * T, T);
    for (int64_t h = 0; h < d->H; h++) {
        attn_op dSh = prob_op(d, dS, h);
        if (gq) /* dQ += scale dS K */
            attn_gemm(ctx, false, false, T, D, T, scale, dSh, head_op(d, sv->k, true, h), 1.0f,
                      head_op(d, gq, false, h), d->B);
        if (gk) /* dK += scale dS^T Q */
            attn_gemm(ctx, true, false, T, D, T, scale, dSh, head_op(d, sv->q, false, h), 1.0f,
                      head_op(d, gk, true, h), d->B);
    }
}
