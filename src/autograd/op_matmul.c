/* op_matmul.c - matrix products through cblas_sgemm: 2-D, batched, and N-D x 2-D.
 *
 * An operand whose last two dimensions are a transposed view (stride 1 on the row axis)
 * is handed to BLAS with CblasTrans and its own leading dimension: no copy. Batches whose
 * rows are contiguous across the batch merge into one GEMM. */
#include <cblas.h>

#include "autograd/matmul_layout.h"
#include "autograd/op_checks.h"
#include "autograd/tape.h"
#include "cuda/cuda_dispatch.h"

/* C[M,N] = A[M,K] B[K,N] + beta C, C row-major with leading dimension ldc. */
static void gemm(bg_ctx *ctx, const mat *a, const mat *b, float *c, int64_t ldc, float beta)
{
    if (a->rows == 0 || b->cols == 0) return;
    if (a->cols == 0) { /* an empty sum: C = beta C, stated here rather than left to BLAS */
        for (int64_t r = 0; r < a->rows; r++)
            for (int64_t j = 0; j < b->cols; j++) c[r * ldc + j] = beta == 0.0f ? 0.0f : c[r * ldc + j] * beta;
        return;
    }
    bg__gemm_count(ctx, a->rows, b->cols, a->cols, 1);
    cblas_sgemm(CblasRowMajor, a->trans ? CblasTrans : CblasNoTrans,
                b->trans ? CblasTrans : CblasNoTrans, (int)a->rows, (int)b->cols, (int)a->cols,
                1.0f, a->p, (int)a->ld, b->p, (int)b->ld, beta, c, (int)ldc);
}

static const float *batch_ptr(const mat *m, const bg_mm_geom *g, int64_t bi)
{
    int64_t i0 = bi % g->bshape[0], i1 = bi / g->bshape[0];
    return m->p + i0 * m->bstride[0] + i1 * m->bstride[1];
}

/* Prepares an operand; non-BLAS-able layouts are packed into the arena first. */
static bool operand(mat *m, const bg_tensor *t)
{
    return mat_from(m, t, t->data) || mat_from_packed(m, t, bg__contig_data(t));
}

/* Out (contiguous [batch, M, N]) = A B. Merges A's batch into rows when B is 2-D. */
static void mm_forward(bg_ctx *ctx, const mat *a, const mat *b, const bg_mm_geom *g, bool a_batched,
                       bool b_batched, bool a_contig, float *out)
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
    bg_mm_geom g;
    if (!bg__matmul_check(ctx, a, b, &g)) return NULL;
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

/* dA += dC B^T (per batch; summed over batches when A is 2-D and B batched); dA = when
 * as (a new buffer). */
static void mm_grad_a(bg_ctx *ctx, const mat *a, const mat *b, const bg_mm_geom *g, bool ab,
                      bool bb, const float *dc, float *da, bool as)
{
    int64_t M = a->rows, N = b->cols, K = a->cols;
    mat bt = mat_t(*b);
    mat dcm = { .p = dc, .rows = M, .cols = N, .ld = N, .trans = false };
    if (ab && !bb) { /* dA batches are contiguous rows: one GEMM */
        dcm.rows = M * g->nbatch;
        gemm(ctx, &dcm, &bt, da, K, as ? 0.0f : 1.0f);
        return;
    }
    for (int64_t bi = 0; bi < g->nbatch; bi++) {
        mat bbt = bt;
        bbt.p = batch_ptr(b, g, bi);
        dcm.p = dc + bi * M * N;
        bool first = ab || bi == 0; /* the first write to this block of dA */
        gemm(ctx, &dcm, &bbt, da + (ab ? bi * M * K : 0), K, as && first ? 0.0f : 1.0f);
    }
}

/* dB += A^T dC (dB = when as). */
static void mm_grad_b(bg_ctx *ctx, const mat *a, const mat *b, const bg_mm_geom *g, bool ab,
                      bool bb, bool a_contig, const float *dc, float *db, bool as)
{
    int64_t M = a->rows, N = b->cols, K = a->cols;
    mat dcm = { .p = dc, .rows = M, .cols = N, .ld = N, .trans = false };
    if (ab && !bb && !a->trans && a_contig) {
        mat big = *a;
        big.rows = M * g->nbatch;
        mat bigt = mat_t(big);
        dcm.rows = M * g->nbatch;
        gemm(ctx, &bigt, &dcm, db, N, as ? 0.0f : 1.0f);
        return;
    }
    for (int64_t bi = 0; bi < g->nbatch; bi++) {
        mat at = *a;
        at.p = batch_ptr(a, g, bi);
        at = mat_t(at);
        dcm.p = dc + bi * M * N;
        bool first = bb || bi == 0;
        gemm(ctx, &at, &dcm, db + (bb ? bi * K * N : 0), N, as && first ? 0.0f : 1.0f);
    }
}

void bg__backward_matmul(bg_node *node)
{
    bg_tensor *a = node->in[0], *b = node->in[1];
    const mat *ops = node->aux;
    if (!ops) return;
    bg_mm_geom g;
    bg__mm_geom_init(&g, a, b);
    const float *dc = bg__grad_of(node->out);
    bool ab = a->ndim > 2, bb = b->ndim > 2;
    bg_ctx *ctx = a->ctx;
    bool as;
    if (bg__needs_grad(a)) {
        float *da = bg__grad_dst(a, &as);
        if (da) mm_grad_a(ctx, &ops[0], &ops[1], &g, ab, bb, dc, da, as);
    }
    if (bg__needs_grad(b)) { /* matmul(t, t): t has its buffer from above, so as is false */
        float *db = bg__grad_dst(b, &as);
        if (db) mm_grad_b(ctx, &ops[0], &ops[1], &g, ab, bb, node->i[0] != 0, dc, db, as);
    }
}
