/* ops_matmul.c - CUDA front ends of matmul (cuBLAS sgemm / strided-batched sgemm), the two
 * straight-through quantizers and the fused BitLinear, with their backward rules.
 *
 * Operand layouts follow src/autograd/op_matmul.c: a transposed view (stride 1 on the row
 * axis) goes to cuBLAS as a transpose with its own leading dimension, never copied; a
 * layout BLAS cannot take is packed into the device arena. Batches run as one strided-
 * batched GEMM per outer batch index; a 2-D operand has batch stride 0. Gradients that sum
 * over batches (a 2-D operand of a batched product) run as sequential GEMMs with beta 1,
 * since the batches of one call may not write the same output. */
#include "bitgrad/ternary.h"
#include "autograd/matmul_layout.h"
#include "autograd/op_checks.h"
#include "cuda/cuda_impl.h"

/* ---- operands ---------------------------------------------------------------------------------- */

static bool operand(mat *m, const bg_tensor *t)
{
    return mat_from(m, t, t->data) || mat_from_packed(m, t, bg__cuda_contig(t));
}

/* C = A B (+ beta C) for `batch` products whose operands step by sa, sb, sc elements. */
static void gemm(bg_ctx *ctx, const mat *a, const mat *b, float *c, int64_t ldc, float beta,
                 int64_t sa, int64_t sb, int64_t sc, int64_t batch)
{
    bg__cu_gemm(ctx, a->trans, b->trans, a->rows, b->cols, a->cols, 1.0f, a->p, a->ld, sa, b->p,
                b->ld, sb, beta, c, ldc, sc, batch);
}

/* Every batch of C = A B: one strided-batched call per outer batch index. The strides of a
 * side that is not batched are 0 (mat_from gives 2-D operands zero batch strides). */
static void gemm_batches(bg_ctx *ctx, mat a, mat b, const bg_mm_geom *g, float *c, int64_t ldc,
                         int64_t sc, float beta)
{
    for (int64_t i1 = 0; i1 < g->bshape[1]; i1++) {
        mat ai = a, bi = b;
        ai.p = a.p + i1 * a.bstride[1];
        bi.p = b.p + i1 * b.bstride[1];
        gemm(ctx, &ai, &bi, c + i1 * g->bshape[0] * sc, ldc, beta, a.bstride[0], b.bstride[0], sc,
             g->bshape[0]);
    }
}

/* One batch bi (as the CPU's batch_ptr). */
static mat batch_of(mat m, const bg_mm_geom *g, int64_t bi)
{
    m.p += (bi % g->bshape[0]) * m.bstride[0] + (bi / g->bshape[0]) * m.bstride[1];
    return m;
}

/* ---- matmul ----------------------------------------------------------------------------------- */

bg_tensor *bg__cuda_matmul(bg_ctx *ctx, bg_tensor *a, bg_tensor *b)
{
    bg_mm_geom g;
    if (!bg__matmul_check(ctx, a, b, &g)) return NULL;
    mat ma, mb;
    if (!operand(&ma, a) || !operand(&mb, b)) return NULL;
    bg_tensor *out = bg__step_new(ctx, BG_F32, g.out_ndim, g.out_shape);
    if (!out) return NULL;
    int64_t M = ma.rows, N = mb.cols;
    if (a->ndim > 2 && b->ndim == 2 && !ma.trans && bg__is_contig(a)) {
        mat big = ma; /* the batch merges into the rows: one GEMM */
        big.rows = M * g.nbatch;
        gemm(ctx, &big, &mb, out->data, N, 0.0f, 0, 0, 0, 1);
    } else {
        gemm_batches(ctx, ma, mb, &g, out->data, N, M * N, 0.0f);
    }
    if (!bg__cuda_ok(ctx)) return NULL;
    bg_node *node = bg__record(BG_OP_MATMUL, out, 2, (bg_tensor *[]){ a, b });
    if (node) {
        mat *ops = bg__arena_alloc(ctx, 2 * sizeof(mat));
        if (!ops) return NULL;
        ops[0] = ma;
        ops[1] = mb;
        node->aux = ops;
        node->i[0] = bg__is_contig(a);
    }
    return out;
}

/* dA += dC B^T. */
static void mm_grad_a(bg_ctx *ctx, const mat *a, const mat *b, const bg_mm_geom *g, bool ab,
                      bool bb, const float *dc, float *da)
{
    int64_t M = a->rows, N = b->cols, K = a->cols;
    mat bt = mat_t(*b);
    mat dcm = { .p = dc, .rows = M, .cols = N, .ld = N, .trans = false };
    if (ab && !bb) { /* dA's batches are contiguous rows: one GEMM */
        dcm.rows = M * g->nbatch;
        gemm(ctx, &dcm, &bt, da, K, 1.0f, 0, 0, 0, 1);
    } else if (!ab) { /* 2-D A, batched B: the batches sum into one dA, in order */
        for (int64_t bi = 0; bi < g->nbatch; bi++) {
            mat bbt = batch_of(bt, g, bi);
            dcm.p = dc + bi * M * N;
            gemm(ctx, &dcm, &bbt, da, K, 1.0f, 0, 0, 0, 1);
        }
    } else {
        dcm.bstride[0] = M * N;
        dcm.bstride[1] = M * N * g->bshape[0];
        gemm_batches(ctx, dcm, bt, g, da, K, M * K, 1.0f);
    }
}

/* dB += A^T dC. */
static void mm_grad_b(bg_ctx *ctx, const mat *a, const mat *b, const bg_mm_geom *g, bool ab,
                      bool bb, bool a_contig, const float *dc, float *db)
{
    int64_t M = a->rows, N = b->cols, K = a->cols;
    mat dcm = { .p = dc, .rows = M, .cols = N, .ld = N, .trans = false };
    if (ab && !bb && !a->trans && a_contig) {
        mat big = *a;
        big.rows = M * g->nbatch;
        mat bigt = mat_t(big);
        dcm.rows = M * g->nbatch;
        gemm(ctx, &bigt, &dcm, db, N, 1.0f, 0, 0, 0, 1);
    } else if (!bb) { /* batched A, 2-D B: the batches sum into one dB, in order */
        for (int64_t bi = 0; bi < g->nbatch; bi++) {
            mat at = mat_t(batch_of(*a, g, bi));
            dcm.p = dc + bi * M * N;
            gemm(ctx, &at, &dcm, db, N, 1.0f, 0, 0, 0, 1);
        }
    } else {
        dcm.bstride[0] = M * N;
        dcm.bstride[1] = M * N * g->bshape[0];
        gemm_batches(ctx, mat_t(*a), dcm, g, db, N, K * N, 1.0f);
    }
}

void bg__cudab_matmul(bg_node *node)
{
    bg_tensor *a = node->in[0], *b = node->in[1];
    const mat *ops = node->aux;
    bg_mm_geom g;
    if (!ops || bg__mm_geom_init(&g, a, b)) return;
    const float *dc = bg__grad_of(node->out);
    if (!dc) return;
    bool ab = a->ndim > 2, bb = b->ndim > 2;
    if (bg__needs_grad(a)) {
        float *da = bg__grad_of(a);
        if (da) mm_grad_a(a->ctx, &ops[0], &ops[1], &g, ab, bb, dc, da);
    }
    if (bg__needs_grad(b)) {
        float *db = bg__grad_of(b);
        if (db) mm_grad_b(a->ctx, &ops[0], &ops[1], &g, ab, bb, node->i[0] != 0, dc, db);
    }
}

/* ---- straight-through quantizers ----------------------------------------------------------------- */

bg_tensor *bg__cuda_weight_quant(bg_tensor *w, int mode, int64_t group, float lambda)
{
    bg_ctx *ctx;
    bg_tensor *out = bg__ste_begin("weight_quant", w, lambda, &ctx);
    if (!out || !bg__weight_quant_mode_check(ctx, mode, group)) return NULL;
    int64_t cols = w->shape[w->ndim - 1], rows = bg__numel(w->ndim - 1, w->shape);
    int64_t ns = bg_ternary_n_scales(rows, cols, (bg_wq_mode)mode, group);
    float *scales = bg__cuda_arena_alloc(ctx, (size_t)(ns > 0 ? ns : 1) * sizeof(float));
    double *partials = bg__cuda_arena_alloc(ctx, BG_CU_MAX_PARTIALS * sizeof(double));
    const float *x = bg__cuda_contig(w);
    if (!scales || !partials || !x) return NULL;
    bg__cu_absmean(ctx, x, rows, cols, mode, group, scales, partials);
    bg__cu_ternary(ctx, x, scales, rows, cols, mode, group, lambda, NULL, out->data);
    if (!bg__cuda_ok(ctx)) return NULL;
    bg__record(BG_OP_WEIGHT_QUANT, out, 1, (bg_tensor *[]){ w });
    return out;
}

bg_tensor *bg__cuda_act_quant(bg_tensor *x, int bits, bool per_tensor, float lambda)
{
    if (!bg__act_quant_bits_check(x, bits)) return NULL;
    bg_ctx *ctx;
    bg_tensor *out = bg__ste_begin("act_quant", x, lambda, &ctx);
    if (!out) return NULL;
    int64_t n = bg__numel(x->ndim, x->shape);
    int64_t cols = per_tensor ? n : x->shape[x->ndim - 1], rows = cols ? n / cols : 0;
    const float *in = bg__cuda_contig(x);
    if (!in) return NULL;
    bg__cu_act_quant(ctx, in, rows, cols, bits, lambda, false, out->data, NULL);
    if (!bg__cuda_ok(ctx)) return NULL;
    bg__record(BG_OP_ACT_QUANT, out, 1, (bg_tensor *[]){ x });
    return out;
}

/* Straight-through: the gradient passes unchanged. */
static void ste_backward(bg_node *node)
{
    bg_tensor *a = node->in[0];
    if (!bg__needs_grad(a)) return;
    float *g = bg__grad_of(a);
    const float *go = bg__grad_of(node->out);
    if (g && go) bg__cu_axpy(a->ctx, g, go, bg__numel(a->ndim, a->shape), 1.0f);
}

void bg__cudab_weight_quant(bg_node *node) { ste_backward(node); }
void bg__cudab_act_quant(bg_node *node) { ste_backward(node); }

/* ---- fused BitLinear ------------------------------------------------------------------------------- */

typedef struct bitlinear_saved {
    float *levels; /* [rows, in] activation levels as floats */
    float *s_x;    /* [rows] */
    float *codes;  /* [out, in] ternary codes as floats */
    float *s_w;    /* [1] or [out] */
    int64_t rows, in, out;
    bool per_row;
} bitlinear_saved;

static bool bitlinear_alloc(bg_ctx *ctx, bitlinear_saved *sv)
{
    size_t f = sizeof(float);
    sv->levels = bg__cuda_arena_alloc(ctx, (size_t)(sv->rows * sv->in) * f);
    sv->s_x = bg__cuda_arena_alloc(ctx, (size_t)sv->rows * f);
    sv->codes = bg__cuda_arena_alloc(ctx, (size_t)(sv->out * sv->in) * f);
    sv->s_w = bg__cuda_arena_alloc(ctx, (size_t)(sv->per_row ? sv->out : 1) * f);
    return sv->levels && sv->s_x && sv->codes && sv->s_w;
}

/* Levels times codes (exact: integer partial sums below 2^24, and cuBLAS runs plain FP32),
 * then y = (acc * s_w) / s_x: the CPU's result bit for bit when the scales agree. */
bg_tensor *bg__cuda_bitlinear(bg_ctx *ctx, bg_tensor *x, bg_tensor *w, int act_bits, bool per_row)
{
    int64_t shape[BG_MAX_DIMS];
    if (!bg__bitlinear_check(ctx, x, w, act_bits, shape)) return NULL;
    bg_tensor *y = bg__step_new(ctx, BG_F32, x->ndim, shape);
    bitlinear_saved *sv = bg__arena_alloc(ctx, sizeof *sv);
    double *partials = bg__cuda_arena_alloc(ctx, BG_CU_MAX_PARTIALS * sizeof(double));
    const float *xd = bg__cuda_contig(x), *wd = bg__cuda_contig(w);
    if (!y || !sv || !partials || !xd || !wd) return NULL;
    *sv = (bitlinear_saved){ .rows = bg__numel(x->ndim - 1, x->shape),
                             .in = w->shape[1],
                             .out = w->shape[0],
                             .per_row = per_row };
    if (!bitlinear_alloc(ctx, sv)) return NULL;
    bg__cu_act_quant(ctx, xd, sv->rows, sv->in, act_bits, 1.0f, true, sv->levels, sv->s_x);
    bg__cu_absmean(ctx, wd, sv->out, sv->in, per_row ? BG_WQ_PER_ROW : BG_WQ_PER_TENSOR, 0, sv->s_w,
                   partials);
    bg__cu_ternary(ctx, wd, sv->s_w, sv->out, sv->in, per_row ? BG_WQ_PER_ROW : BG_WQ_PER_TENSOR, 0,
                   1.0f, sv->codes, NULL);
    bg__cu_gemm(ctx, false, true, sv->rows, sv->out, sv->in, 1.0f, sv->levels, sv->in, 0, sv->codes,
                sv->in, 0, 0.0f, y->data, sv->out, 0, 1);
    bg__cu_bitlinear_scale(ctx, y->data, sv->rows, sv->out, sv->s_w, per_row, sv->s_x);
    if (!bg__cuda_ok(ctx)) return NULL;
    bg_node *node = bg__record(BG_OP_BITLINEAR, y, 2, (bg_tensor *[]){ x, w });
    if (node) node->aux = sv;
    return y;
}

/* dX = dY W_q (W_q = codes * s_w), dW = dY^T x_q (x_q = levels / s_x). */
void bg__cudab_bitlinear(bg_node *node)
{
    bitlinear_saved *sv = node->aux;
    bg_tensor *x = node->in[0], *w = node->in[1];
    bg_ctx *ctx = x->ctx;
    const float *dy = bg__grad_of(node->out);
    int64_t rows = sv->rows, in = sv->in, out = sv->out;
    if (!dy || rows == 0 || out == 0 || in == 0) return;
    if (bg__needs_grad(x)) {
        float *dx = bg__grad_of(x),
              *wq = bg__cuda_arena_alloc(ctx, (size_t)(out * in) * sizeof(float));
        if (!dx || !wq) return;
        bg__cu_rescale_rows(ctx, wq, sv->codes, sv->s_w, out, in, false, sv->per_row);
        bg__cu_gemm(ctx, false, false, rows, in, out, 1.0f, dy, out, 0, wq, in, 0, 1.0f, dx, in, 0,
                    1);
    }
    if (bg__needs_grad(w)) {
        float *dw = bg__grad_of(w),
              *xq = bg__cuda_arena_alloc(ctx, (size_t)(rows * in) * sizeof(float));
        if (!dw || !xq) return;
        bg__cu_rescale_rows(ctx, xq, sv->levels, sv->s_x, rows, in, true, false);
        bg__cu_gemm(ctx, true, false, out, in, rows, 1.0f, dy, out, 0, xq, in, 0, 1.0f, dw, in, 0,
                    1);
    }
}
