/* op_attention.c - rotary position embedding (NEOX pairing, as llama.cpp) and causal
 * scaled-dot-product attention with grouped-query heads on the CPU: forward kernels and
 * backward rules.
 *
 * Attention multiplies through cblas_sgemm on the per-head [T, D] matrices inside the
 * [B, T, H, D] layout (leading dimension H*D), so no head is copied out. sgemm is never
 * called inside an OpenMP region (OpenBLAS threads itself); OpenMP only runs the row
 * softmax between the products. Heads are visited in a fixed order, so gradients of a kv
 * head shared by several query heads sum the same way for any thread count. */
#include <cblas.h>
#include <math.h>
#include <omp.h>

#include "autograd/op_checks.h"
#include "autograd/tape.h"
#include "autograd/vec8.h"
#include "autograd/vmath.h"
#include "autograd/vmath_x86.h"
#include "cuda/cuda_dispatch.h"

/* ---- rope --------------------------------------------------------------------- */

/* A table made once and kept by the ctx: a model asks for the same one in every layer and
 * every step. At most ROPE_TABS are kept (past that, tables go to the step arena). */
#define ROPE_TABS 16
struct bg_rope_tab {
    int64_t T, pos0;
    int n_rot;
    float base;
    float *tab;
    struct bg_rope_tab *next;
};

void bg__rope_tabs_free(bg_ctx *ctx)
{
    for (struct bg_rope_tab *r = ctx->rope_tabs, *nx; r; r = nx) {
        nx = r->next;
        free(r->tab);
        free(r);
    }
    ctx->rope_tabs = NULL;
}

/* cos and sin of (pos0 + t) * base^(-2i/n_rot) for t < T, i < n_rot/2, computed in
 * double: [T, half] cosines followed by [T, half] sines. */
static float *rope_table(bg_ctx *ctx, int64_t T, int n_rot, float base, int64_t pos0)
{
    int n_kept = 0;
    for (struct bg_rope_tab *r = ctx->rope_tabs; r; r = r->next, n_kept++)
        if (r->T == T && r->n_rot == n_rot && r->base == base && r->pos0 == pos0) return r->tab;
    int half = n_rot / 2;
    size_t bytes = (size_t)(2 * T * half) * sizeof(float);
    struct bg_rope_tab *keep = n_kept < ROPE_TABS ? bg__calloc(ctx, 1, sizeof *keep) : NULL;
    float *tab = keep ? bg__malloc(ctx, bytes ? bytes : 1) : bg__arena_alloc(ctx, bytes);
    if (!tab) {
        free(keep);
        if (keep) bg__error(ctx, BG_ENOMEM, "rope: out of memory for a %zu-byte table", bytes);
        return NULL;
    }
    for (int64_t t = 0; t < T; t++) {
        for (int i = 0; i < half; i++) {
            double theta = (double)(pos0 + t) * pow((double)base, -2.0 * i / n_rot);
            tab[t * half + i] = (float)cos(theta);
            tab[T * half + t * half + i] = (float)sin(theta);
        }
    }
    if (keep) {
        *keep = (struct bg_rope_tab){ .T = T, .pos0 = pos0, .n_rot = n_rot, .base = base, .tab = tab,
                                      .next = ctx->rope_tabs };
        ctx->rope_tabs = keep;
    }
    return tab;
}

/* One row of rope_apply: the loops vectorise, and the clones run them in the widest vectors
 * the CPU has (elementwise, no contraction: the same bits in each). */
BG_CLONES static void rope_row(const float *x, float *y, const float *cs, const float *sn,
                               int half, int64_t D, int n_rot, float sign, bool accumulate)
{
    for (int i = 0; i < half; i++) {
        float c = cs[i], s = sign * sn[i], x0 = x[i], x1 = x[i + half];
        float y0 = x0 * c - x1 * s, y1 = x0 * s + x1 * c;
        if (accumulate) {
            y[i] += y0;
            y[i + half] += y1;
        } else {
            y[i] = y0;
            y[i + half] = y1;
        }
    }
    for (int64_t j = n_rot; j < D; j++) y[j] = accumulate ? y[j] + x[j] : x[j];
}

/* dst = R(sign * theta) src over every (b, t, h) row of D values (dst += when accumulate):
 * (x_i, x_{i+half}) -> (x_i cos - x_{i+half} sin, x_i sin + x_{i+half} cos). */
static void rope_apply(const float *src, float *dst, const float *tab, int64_t BT, int64_t T,
                       int64_t H, int64_t D, int n_rot, float sign, bool accumulate)
{
    int half = n_rot / 2;
    int64_t rows = BT * H;
#pragma omp parallel for schedule(static) if (rows * D > BG_PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        int64_t t = (r / H) % T;
        rope_row(src + r * D, dst + r * D, tab + t * half, tab + T * half + t * half, half, D,
                 n_rot, sign, accumulate);
    }
}

bg_tensor *bg_rope(bg_tensor *x, int n_rot, float base, int64_t pos0)
{
    bg_ctx *ctx = bg__op_begin("rope", 1, (bg_tensor *[]){ x });
    if (!ctx) return NULL;
    BG_CUDA_DISPATCH(ctx, bg__cuda_rope(ctx, x, n_rot, base, pos0)); /* cuda hook */
    if (!bg__check_cpu(ctx, "rope", "x", x) || !bg__rope_check(ctx, x, n_rot, base)) return NULL;
    int nd = x->ndim;
    int64_t T = x->shape[nd - 3], H = x->shape[nd - 2], D = x->shape[nd - 1];
    int64_t BT = bg__numel(nd - 2, x->shape);
    const float *xd = bg__contig_data(x);
    float *tab = rope_table(ctx, T, n_rot, base, pos0);
    bg_tensor *out = bg__step_new(ctx, BG_F32, nd, x->shape);
    if (!xd || !tab || !out) return NULL;
    rope_apply(xd, out->data, tab, BT, T, H, D, n_rot, 1.0f, false);
    bg_node *node = bg__record(BG_OP_ROPE, out, 1, (bg_tensor *[]){ x });
    if (node) {
        node->aux = tab;
        node->i[0] = n_rot;
    }
    return out;
}

/* The rotation is orthogonal: the gradient rotates back by -theta. */
void bg__backward_rope(bg_node *node)
{
    bg_tensor *x = node->in[0];
    if (!bg__needs_grad(x)) return;
    bool as;
    float *gx = bg__grad_dst(x, &as);
    const float *gy = bg__grad_of(node->out);
    if (!gx || !gy) return;
    int nd = x->ndim;
    int64_t T = x->shape[nd - 3], H = x->shape[nd - 2], D = x->shape[nd - 1];
    int64_t BT = bg__numel(nd - 2, x->shape);
    rope_apply(gy, gx, node->aux, BT, T, H, D, (int)node->i[0], -1.0f, !as);
}

/* ---- attention ------------------------------------------------------------------- */

typedef struct attn_saved {
    bg_attn_dims d;
    const float *q, *k, *v; /* contiguous [B, T, H(kv), D] */
} attn_saved;

/* Offsets of head bh = b * H + h: its [T, D] block of q/out and of its kv head in k/v. */
static void head_offsets(const bg_attn_dims *d, int64_t bh, int64_t *oq, int64_t *okv)
{
    int64_t b = bh / d->H, h = bh % d->H, group = d->H / d->Hkv, D = d->D;
    *oq = b * d->T * d->H * D + h * D;
    *okv = b * d->T * d->Hkv * D + (h / group) * D;
}

/* Row i of one head's [T, T] scores becomes softmax over columns 0..i; columns after i
 * become 0. */
/* Sums and maxima over a row run on 8 fixed lanes (j mod 8; the tail on lane 0) combined
 * in a fixed tree: independent chains that pipeline and vectorise instead of one serial
 * double-precision chain, the same order on every run and thread count. */
static inline double row_sum8(const float *a, const float *b, int64_t n)
{
    double l[8] = { 0 };
    int64_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int k = 0; k < 8; k++) l[k] += b ? (double)a[j + k] * b[j + k] : (double)a[j + k];
    for (; j < n; j++) l[0] += b ? (double)a[j] * b[j] : (double)a[j];
    return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

static inline float row_max8(const float *a, int64_t n)
{
    float l[8] = { -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY };
    int64_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int k = 0; k < 8; k++) l[k] = a[j + k] > l[k] ? a[j + k] : l[k];
    for (; j < n; j++) l[0] = a[j] > l[0] ? a[j] : l[0];
    float m = l[0];
    for (int k = 1; k < 8; k++) m = l[k] > m ? l[k] : m;
    return m;
}

BG_CLONES static void causal_softmax_head(float *S, int T)
{
    bool v512 = bg__vmath_vexp();
    for (int64_t i = 0; i < T; i++) {
        float *row = S + i * T, m = row_max8(row, i + 1);
        if (v512) /* the same bits as the loop */
            bg__exp_sub_vec(row, m, row, i + 1);
        else
            for (int64_t j = 0; j <= i; j++) row[j] = bg_expf(row[j] - m); /* vectorises */
        float inv = (float)(1.0 / row_sum8(row, NULL, i + 1));
        for (int64_t j = 0; j <= i; j++) row[j] *= inv;
        for (int64_t j = i + 1; j < T; j++) row[j] = 0.0f;
    }
}

/* Causal products skip the blocks above the diagonal: query rows are taken ATTN_BLK at a
 * time, and block i (rows [r0, r1)) multiplies only keys [0, r1) - for T = 128 that is 10/16
 * of the full square. */
#define ATTN_BLK 32

/* P = softmax(scale * Q K^T, causal) of head bh into P [T, T]. The forward and backward
 * both call this, so backward's recomputed probabilities are the forward's, bit for bit,
 * and no [B, H, T, T] tensor is kept between them. Entries right of the diagonal are 0. */
static void head_probs(const attn_saved *sv, int64_t bh, float *P)
{
    const bg_attn_dims *d = &sv->d;
    int T = (int)d->T, D = (int)d->D, ldq = (int)d->H * D, ldk = (int)d->Hkv * D;
    float scale = (float)(1.0 / sqrt((double)D));
    int64_t oq, okv;
    head_offsets(d, bh, &oq, &okv);
    for (int r0 = 0; r0 < T; r0 += ATTN_BLK) {
        int r1 = r0 + ATTN_BLK < T ? r0 + ATTN_BLK : T;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r1 - r0, r1, D, scale,
                    sv->q + oq + (int64_t)r0 * ldq, ldq, sv->k + okv, ldk, 0.0f,
                    P + (int64_t)r0 * T, T);
    }
    causal_softmax_head(P, T);
}

/* FLOPs of one head's causal product over [T, T] x D as issued above (2 * rows * keys * D per
 * block), for the GEMM statistics. */
static int64_t causal_gemm_flops(int64_t T, int64_t D)
{
    int64_t f = 0;
    for (int64_t r0 = 0; r0 < T; r0 += ATTN_BLK) {
        int64_t r1 = r0 + ATTN_BLK < T ? r0 + ATTN_BLK : T;
        f += 2 * (r1 - r0) * r1 * D;
    }
    return f;
}

/* Threads take whole heads: each head's products and its softmax run on one thread
 * (OpenBLAS's OpenMP build runs a GEMM called inside a parallel region on that thread), so
 * the small per-head GEMMs cost no thread hand-offs, and each thread needs [T, T] scratch
 * for one head at a time. Results do not depend on the thread count: a head is computed
 * the same way on any thread. */
#define ATTN_PAR_MIN 4 /* heads */

/* out = softmax(scale * Q K^T, causal) V for every head; scratch holds omp_get_max_threads()
 * [T, T] blocks. */
static void attn_forward(bg_ctx *ctx, const attn_saved *sv, float *scratch, float *out)
{
    const bg_attn_dims *d = &sv->d;
    int T = (int)d->T, D = (int)d->D, ldq = (int)d->H * D, ldk = (int)d->Hkv * D;
    int64_t n_bh = (int64_t)d->B * d->H, TT = (int64_t)T * T;
#pragma omp parallel for schedule(static) if (n_bh >= ATTN_PAR_MIN)
    for (int64_t bh = 0; bh < n_bh; bh++) {
        int64_t oq, okv;
        float *P = scratch + (int64_t)omp_get_thread_num() * TT;
        head_offsets(d, bh, &oq, &okv);
        head_probs(sv, bh, P);
        for (int r0 = 0; r0 < T; r0 += ATTN_BLK) { /* out rows [r0, r1) need keys [0, r1) */
            int r1 = r0 + ATTN_BLK < T ? r0 + ATTN_BLK : T;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r1 - r0, D, r1, 1.0f,
                        P + (int64_t)r0 * T, T, sv->v + okv, ldk, 0.0f,
                        out + oq + (int64_t)r0 * ldq, ldq);
        }
    }
    ctx->matmul_calls += (uint64_t)(2 * n_bh * ((T + ATTN_BLK - 1) / ATTN_BLK));
    ctx->matmul_flops += (uint64_t)(2 * n_bh * causal_gemm_flops(T, D));
}

bg_tensor *bg_attention(bg_tensor *q, bg_tensor *k, bg_tensor *v)
{
    bg_ctx *ctx = bg__op_begin("attention", 3, (bg_tensor *[]){ q, k, v });
    if (!ctx) return NULL;
    BG_CUDA_DISPATCH(ctx, bg__cuda_attention(ctx, q, k, v)); /* cuda hook */
    bg_attn_dims d;
    if (!bg__check_cpu(ctx, "attention", "q", q) || !bg__attention_check(ctx, q, k, v, &d))
        return NULL;
    bg_tensor *out = bg__step_new(ctx, BG_F32, 4, q->shape);
    attn_saved *sv = bg__arena_alloc(ctx, sizeof *sv);
    if (!out || !sv) return NULL;
    *sv = (attn_saved){
        .d = d, .q = bg__contig_data(q), .k = bg__contig_data(k), .v = bg__contig_data(v)
    };
    if (!sv->q || !sv->k || !sv->v) return NULL;
    if (d.T > 0) {
        bg_arena_mark mark = bg__arena_mark(ctx); /* the probabilities are scratch */
        float *P = bg__arena_alloc(ctx, (size_t)(omp_get_max_threads() * d.T * d.T) * sizeof *P);
        if (!P) return NULL;
        attn_forward(ctx, sv, P, out->data);
        bg__arena_back_to(ctx, mark);
    }
    bg_node *node = bg__record(BG_OP_ATTENTION, out, 3, (bg_tensor *[]){ q, k, v });
    if (node) node->aux = sv;
    return out;
}

/* dS = P * (dP - rowsum(dP * P)) in place of dP, rows [r0, r1) of one head's [T, T] block,
 * columns up to the diagonal (the ones the products read). */
BG_CLONES static void softmax_grad_rows(const float *P, float *dP, int T, int r0, int r1)
{
    for (int64_t i = r0; i < r1; i++) {
        const float *p = P + i * T;
        float *g = dP + i * T;
        double s = row_sum8(g, p, i + 1);
        for (int64_t j = 0; j <= i; j++) g[j] = p[j] * (g[j] - (float)s);
        for (int64_t j = i + 1; j < r1; j++) g[j] = 0.0f;
    }
}

typedef struct attn_grads {
    const float *go;     /* dO, [B, T, H, D] */
    float *gq, *gk, *gv; /* NULL where no grad is needed */
    bool as_q, as_k, as_v; /* new buffers: each block's first product stores (beta 0) */
} attn_grads;

/* One query head bh: P again, dV += P^T dO, dP = dO V^T, dS, dQ += scale dS K,
 * dK += scale dS^T Q. P and dS: this thread's [T, T] scratch blocks. Query row blocks go
 * last first: the first product into dK and dV then covers all T of their rows, so a new
 * buffer is stored there (beta 0) and every later block adds. */
static void attn_backward_head(const attn_saved *sv, const attn_grads *g, int64_t bh, float *P,
                               float *dS)
{
    const bg_attn_dims *d = &sv->d;
    int T = (int)d->T, D = (int)d->D, ldq = (int)d->H * D, ldk = (int)d->Hkv * D;
    int64_t oq, okv;
    float scale = (float)(1.0 / sqrt((double)D));
    head_offsets(d, bh, &oq, &okv);
    /* the first query head of a kv group writes the kv head's gradients first */
    bool kv_first = bh % (d->H / d->Hkv) == 0;
    head_probs(sv, bh, P);
    int n_blk = (T + ATTN_BLK - 1) / ATTN_BLK;
    for (int ib = n_blk - 1; ib >= 0; ib--) {
        int r0 = ib * ATTN_BLK, r1 = r0 + ATTN_BLK < T ? r0 + ATTN_BLK : T, m = r1 - r0;
        bool first = kv_first && ib == n_blk - 1;
        float beta_q = g->as_q ? 0.0f : 1.0f, beta_k = g->as_k && first ? 0.0f : 1.0f;
        float beta_v = g->as_v && first ? 0.0f : 1.0f;
        const float *Pb = P + (int64_t)r0 * T, *gob = g->go + oq + (int64_t)r0 * ldq;
        float *dSb = dS + (int64_t)r0 * T;
        if (g->gv) /* dV[0, r1) += P[r0:r1, 0:r1]^T dO[r0:r1] */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r1, D, m, 1.0f, Pb, T, gob, ldq,
                        beta_v, g->gv + okv, ldk);
        if (!g->gq && !g->gk) continue;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, r1, D, 1.0f, gob, ldq,
                    sv->v + okv, ldk, 0.0f, dSb, T);
        softmax_grad_rows(P, dS, T, r0, r1);
        if (g->gq) /* dQ[r0:r1] = scale dS[r0:r1, 0:r1] K[0:r1] */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, D, r1, scale, dSb, T,
                        sv->k + okv, ldk, beta_q, g->gq + oq + (int64_t)r0 * ldq, ldq);
        if (g->gk) /* dK[0:r1] += scale dS[r0:r1, 0:r1]^T Q[r0:r1] */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r1, D, m, scale, dSb, T,
                        sv->q + oq + (int64_t)r0 * ldq, ldq, beta_k, g->gk + okv, ldk);
    }
}

void bg__backward_attention(bg_node *node)
{
    const attn_saved *sv = node->aux;
    bg_ctx *ctx = node->out->ctx;
    const bg_attn_dims *d = &sv->d;
    if (d->T == 0) return; /* empty: no gradient */
    attn_grads g = { 0 };
    g.go = bg__grad_of(node->out);
    if (!g.go) return;
    bg_tensor *q = node->in[0], *k = node->in[1], *v = node->in[2];
    if (q != k && q != v && k != v) { /* distinct buffers: new ones are stored, not zeroed */
        if ((bg__needs_grad(q) && !(g.gq = bg__grad_dst(q, &g.as_q))) ||
            (bg__needs_grad(k) && !(g.gk = bg__grad_dst(k, &g.as_k))) ||
            (bg__needs_grad(v) && !(g.gv = bg__grad_dst(v, &g.as_v))))
            return;
    } else if ((bg__needs_grad(q) && !(g.gq = bg__grad_of(q))) ||
               (bg__needs_grad(k) && !(g.gk = bg__grad_of(k))) ||
               (bg__needs_grad(v) && !(g.gv = bg__grad_of(v)))) {
        return;
    }
    int64_t TT = d->T * d->T, group = d->H / d->Hkv, n_kv = (int64_t)d->B * d->Hkv;
    float *scratch = bg__arena_alloc(ctx, (size_t)(2 * omp_get_max_threads() * TT) * sizeof(float));
    if (!scratch) return;
        /* Threads take kv heads: the query heads sharing one (GQA) add into its dK, dV one after
     * the other in head order, on one thread - race-free, and the same sums for any thread
     * count. */
#pragma omp parallel for schedule(static) if (n_kv * group >= ATTN_PAR_MIN)
    for (int64_t kv = 0; kv < n_kv; kv++) {
        float *P = scratch + 2 * (int64_t)omp_get_thread_num() * TT;
        for (int64_t bh = kv * group; bh < (kv + 1) * group; bh++)
            attn_backward_head(sv, &g, bh, P, P + TT);
    }
    bool need_ds = g.gq || g.gk;
    int64_t n_prod = 1 + (g.gv != NULL) + need_ds + (g.gq != NULL) + (g.gk != NULL);
    int64_t n_bh = (int64_t)d->B * d->H;
    ctx->matmul_calls += (uint64_t)(n_bh * n_prod * ((d->T + ATTN_BLK - 1) / ATTN_BLK));
    ctx->matmul_flops += (uint64_t)(n_bh * n_prod * causal_gemm_flops(d->T, d->D));
}
