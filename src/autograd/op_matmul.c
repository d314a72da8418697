/* op_matmul.c - matrix products through cblas_sgemm: 2-D, batched, and N-D x 2-D.
 *
 * An operand whose last two dimensions are a transposed view (stride 1 on the row axis)
 * is handed to BLAS with CblasTrans and its own leading dimension: no copy. Batches whose
 * rows are contiguous across the batch merge into one GEMM. */
#include <cblas.h>

#include "autograd/matmul_layout.h"
#include "autograd/tape.h"
#include "cuda/cuda_dispatch.h"

/* C[M,N] = A[M,K] B[K,N] + beta C, C row-major with leading dimension ldc. */
static void gemm(bg_ctx *ctx, const mat *a, const mat *b, float *c, int64_t ldc, float beta)
{
    if (a->rows == 0 || b->cols == 0) return;
    ctx->matmul_calls++;
    cblas_sgemm(CblasRowMajor, a->trans ? CblasTrans : CblasNoTrans,
                b->trans ? CblasTrans : CblasNoTrans, (int)a->rows, (int)b->cols, (int)a->cols,
                1.0f, a->p, (int)a->ld, b->p, (int)b->ld, beta, c, (int)ldc);
}

typedef struct mm_geom {
    int out_ndim;
    int64_t out_shape[BG_MAX_DIMS];
    int64_t nbatch, bshape[2]; /* batch dims innermost first */
} mm_geom;

static int mm_geom_init(mm_geom *g, const bg_tensor *a, const bg_tensor *b)
{
    char s1[64], s2[64];
    if (a->ndim < 2 || b->ndim < 2)
        return bg__error(a->ctx, BG_ESHAPE, "matmul: %s x %s: both operands need 2+ dims",
                         bg__shape_str(a, s1, sizeof s1), bg__shape_str(b, s2, sizeof s2));
    int64_t k1 = a->shape[a->ndim - 1], k2 = b->shape[b->ndim - 2];
    if (k1 != k2)
        return bg__error(a->ctx, BG_ESHAPE, "matmul: %s x %s: inner dimensions differ (%lld vs "
                         "%lld)", bg__shape_str(a, s1, sizeof s1), bg__shape_str(b, s2, sizeof s2),
                         (long long)k1, (long long)k2);
    const bg_tensor *big = a->ndim >= b->ndim ? a : b;
    if (a->ndim > 2 && b->ndim > 2) {
        bool same = a->ndim == b->ndim;
        for (int i = 0; same && i < a->ndim - 2; i++) same = a->shape[i] == b->shape[i];
        if (!same)
            return bg__error(a->ctx, BG_ESHAPE, "matmul: %s x %s: batch dimensions differ",
                             bg__shape_str(a, s1, sizeof s1), bg__shape_str(b, s2, sizeof s2));
    }
    g->out_ndim = big->ndim;
    for (int i = 0; i < big->ndim - 2; i++) g->out_shape[i] = big->shape[i];
    g->out_shape[big->ndim - 2] = a->shape[a->ndim - 2];
    g->out_shape[big->ndim - 1] = b->shape[b->ndim - 1];
    g->nbatch = bg__numel(big->ndim - 2, big->shape);
    g->bshape[0] = big->ndim > 2 ? big->shape[big->ndim - 3] : 1;
    g->bshape[1] = big->ndim > 3 ? big->shape[big->ndim - 4] : 1;
    return BG_OK;
}

static const float *batch_ptr(const mat *m, const mm_geom *g, int64_t bi)
{
    int64_t i0 = bi % g->bshape[0], i1 = bi / g->bshape[0];
    return m->p + i0 * m->bstride[0] + i1 * m->bstride[1];
}

/* Prepares an operand; non-BLAS-able layouts are packed into the arena first. */
static bool operand(mat *m, const bg_tensor *t)
{
    if (mat_from(m, t, t->data)) return true;
    const float *p = bg__contig_data(t);
    if (!p) return false;
    bg_tensor tmp = *t;
    bg__contig_strides(t->ndim, t->shape, tmp.stride);
    return mat_from(m, &tmp, p);
}

/* Out (contiguous [batch, M, N]) = A B. Merges A's batch into rows when B is 2-D. */
static void mm_forward(bg_ctx *ctx, const mat *a, const mat *b, const mm_geom *g,
                       bool a_batched, bool b_batched, bool a_contig, float *out)
{
    int64_t M = a->rows, N = b->cols;
    if (a_batched && !b_batched && !a->trans && a_contig) {
        mat big = *a;
        big.rows = M * g->nbatch;
        gemm(ctx, &big, b, out, N, 0.0f);
        return;
    }
    for (int64_t bi = 0; bi < g->nbatch; bi++) {
        mat ab = *a, bb = *b;
        ab.p = batch_ptr(a, g, bi);
        bb.p = batch_ptr(b, g, bi);
        gemm(ctx, &ab, &bb, out + bi * M * N, N, 0.0f);
    }
}

bg_tensor *bg_matmul(bg_tensor *a, bg_tensor *b)
{
    bg_ctx *ctx = bg__op_begin("matmul", 2, (bg_tensor *[]){ a, b });
    if (!ctx) return NULL;
    BG_CUDA_DISPATCH(ctx, bg__cuda_matmul(ctx, a, b)); /* cuda hook */
    if (a->dtype != BG_F32 || b->dtype != BG_F32) {
        bg__error(ctx, BG_EINVAL, "matmul: operands must be f32");
        return NULL;
    }
    mm_geom g;
    if (mm_geom_init(&g, a, b)) return NULL;
    mat ma, mb;
    if (!operand(&ma, a) || !operand(&mb, b)) return NULL;
    bg_tensor *out = bg__step_new(ctx, BG_F32, g.out_ndim, g.out_shape);
    if (!out) return NULL;
    bool ab = a->ndim > 2, bb = b->ndim > 2;
    mm_forward(ctx, &ma, &mb, &g, ab, bb, bg__is_contig(a), out->data);
    bg_node *node = bg__record(BG_OP_MATMUL, out, 2, (bg_tensor *[]){ a, b });
    if (node) {
        /* Save the operand descriptors' data pointers (views or packed copies). */
        node->aux = bg__arena_alloc(ctx, 2 * sizeof(mat));
        if (node->aux) {
            ((mat *)node->aux)[0] = ma;
            ((mat *)node->aux)[1] = mb;
        }
        node->i[0] = bg__is_contig(a);
    }
    return out;
}

/* dA += dC B^T (per batch; summed over batches when A is 2-D and B batched). */
static void mm_grad_a(bg_ctx *ctx, const mat *a, const mat *b, const mm_geom *g, bool ab,
                      bool bb, const float *dc, float *da)
{
    int64_t M = a->rows, N = b->cols, K = a->cols;
    mat bt = mat_t(*b);
    mat dcm = { .p = dc, .rows = M, .cols = N, .ld = N, .trans = false };
    if (ab && !bb) { /* dA batches are contiguous rows: one GEMM */
        dcm.rows = M * g->nbatch;
        gemm(ctx, &dcm, &bt, da, K, 1.0f);
        return;
    }
    for (int64_t bi = 0; bi < g->nbatch; bi++) {
        mat bbt = bt;
        bbt.p = batch_ptr(b, g, bi);
        dcm.p = dc + bi * M * N;
        gemm(ctx, &dcm, &bbt, da + (ab ? bi * M * K : 0), K, 1.0f);
    }
}

/* dB += A^T dC. */
static void mm_grad_b(bg_ctx *ctx, const mat *a, const mat *b, const mm_geom *g, bool ab,
                      bool bb, bool a_contig, const float *dc, float *db)
{
    int64_t M = a->rows, N = b->cols, K = a->cols;
    mat dcm = { .p = dc, .rows = M, .cols = N, .ld = N, .trans = false };
    if (ab && !bb && !a->trans && a_contig) {
        mat big = *a;
        big.rows = M * g->nbatch;
        mat bigt = mat_t(big);
        dcm.rows = M * g->nbatch;
        gemm(ctx, &bigt, &dcm, db, N, 1.0f);
        return;
    }
    for (int64_t bi = 0; bi < g->nbatch; bi++) {
        mat at = *a;
        at.p = batch_ptr(a, g, bi);
        at = mat_t(at);
        dcm.p = dc + bi * M * N;
        gemm(ctx, &at, &dcm, db + (bb ? bi * K * N : 0), N, 1.0f);
    }
}

void bg__backward_matmul(bg_node *node)
{
    bg_tensor *a = node->in[0], *b = node->in[1];
    const mat *ops = node->aux;
    if (!ops) return;
    mm_geom g;
    mm_geom_init(&g, a, b);
    const float *dc = bg__grad_of(node->out);
    bool ab = a->ndim > 2, bb = b->ndim > 2;
    bg_ctx *ctx = a->ctx;
    if (bg__needs_grad(a)) {
        float *da = bg__grad_of(a);
        if (da) mm_grad_a(ctx, &ops[0], &ops[1], &g, ab, bb, dc, da);
    }
    if (bg__needs_grad(b)) {
        float *db = bg__grad_of(b);
        if (db) mm_grad_b(ctx, &ops[0], &ops[1], &g, ab, bb, node->i[0] != 0, dc, db);
    }
}
