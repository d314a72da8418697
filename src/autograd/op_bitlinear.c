/* op_bitlinear.c - the fused BitLinear op at full quantization: activation levels times
 * ternary codes as exact integer sums (VNNI's int8 GEMM, tables of signed sums (tlut.h), or
 * sgemm on small batches: every partial sum is an integer below 2^24, so all give the same
 * bits), then y = (acc * s_w) / s_x, the inference formula of DESIGN.md section 5. Backward is
 * the straight-through estimator: dX = dY W_q (by tables of signed sums) and dW = dY^T x_q.
 * What backward needs is kept as int8 (levels, codes) and widened to float in the rule's
 * scratch: a quarter of the memory. */
#include <cblas.h>
#include <omp.h>

#include "autograd/op_checks.h"
#include "autograd/tape.h"
#include "cuda/cuda_dispatch.h"
#include "quant/bitnet_math.h"
#include "quant/quant_fast.h"
#include "quant/s8gemm.h"
#include "quant/tlut.h"
#include "quant/tmat_access.h"
#include "autograd/vmath_x86.h"

/* Fewer rows than this leave lanes of the table kernels idle: the other paths take them. */
#define LUT_MIN_ROWS 16

typedef struct bitlinear_saved {
    int8_t *levels; /* [rows, in] activation levels */
    float *s_x;     /* [rows] */
    int8_t *codes;  /* [out, in] ternary codes (NULL for a packed frozen base) */
    const bg_tmat *pk; /* the packed frozen base, or NULL */
    float *s_w;     /* [1] or [out] */
    int64_t rows, in, out;
    bool per_row;
} bitlinear_saved;

/* One row's levels: bg_act_level's formula with the clamp as selects, so it vectorises
 * (or its AVX-512 spelling, bit-identical). The level is an integer, so the float and the
 * int8 copy hold the same value. */
static void quantize_row(const float *restrict xr, int64_t in, float s, int bits, bool v512,
                         float *restrict lv, int8_t *restrict lv8)
{
    const float qp = bg_qp(bits), qn = -qp - 1.0f;
    if (v512) {
        bg__act_levels_avx512(xr, in, s, qp, lv8);
    } else {
        for (int64_t i = 0; i < in; i++) {
            float q = bg_round_away(xr[i] * s);
            q = q > qp ? qp : q;
            q = q < qn ? qn : q;
            lv8[i] = (int8_t)(int32_t)q;
        }
    }
    if (lv)
        for (int64_t i = 0; i < in; i++) lv[i] = (float)lv8[i];
}

static void quantize_acts(const float *x, int64_t rows, int64_t in, int bits, float *lv,
                          int8_t *lv8, float *sx)
{
    bool v512 = bg__vmath_avx512();
#pragma omp parallel for schedule(static) if (rows * in > BG_PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * in;
        float amax = v512 ? bg__absmax_avx512(xr, in) : bg_absmax(xr, in);
        float s = bg_absmax_scale(amax, bits);
        sx[r] = s;
        quantize_row(xr, in, s, bits, v512, lv ? lv + r * in : NULL, lv8 + r * in);
    }
}

static void quantize_weights(const float *w, int64_t out, int64_t in, bool per_row, float *codes,
                             int8_t *codes8, float *s_w)
{
    if (!per_row) s_w[0] = bg__absmean_scale_fast(w, out * in);
#pragma omp parallel for schedule(static) if (out * in > BG_PAR_MIN)
    for (int64_t j = 0; j < out; j++) {
        if (per_row) s_w[j] = bg__absmean_scale_fast(w + j * in, in);
        bg__ternary_codes(w + j * in, in, s_w[per_row ? j : 0], codes8 + j * in);
        if (codes) bg__widen_mul(codes8 + j * in, in, 1.0f, codes + j * in);
    }
}

/* x is on the tape now, read-only until consumed: later calls on it (q, k, v; gate, up)
 * reuse these activation levels instead of quantizing again. */
static void remember_levels(bg_ctx *ctx, bg_tensor *x, int act_bits, int64_t rows, int64_t in,
                            const bitlinear_saved *sv)
{
    ctx->actq.x = x;
    ctx->actq.data = x->data;
    ctx->actq.epoch = ctx->tape->epoch;
    ctx->actq.bits = act_bits;
    ctx->actq.rows = rows;
    ctx->actq.in = in;
    ctx->actq.levels = sv->levels;
    ctx->actq.s_x = sv->s_x;
}

bg_tensor *bg_bitlinear(bg_tensor *x, bg_tensor *w, int act_bits, bool per_row)
{
    bg_ctx *ctx = bg__op_begin("bitlinear", 2, (bg_tensor *[]){ x, w });
    if (!ctx) return NULL;
    BG_CUDA_DISPATCH(ctx, bg__cuda_bitlinear(ctx, x, w, act_bits, per_row)); /* cuda hook */
    int64_t shape[BG_MAX_DIMS];
    if (!bg__bitlinear_check(ctx, x, w, act_bits, shape)) return NULL;
    int64_t in = w->shape[1], out = w->shape[0], rows = bg__numel(x->ndim - 1, x->shape);
    bg_tensor *y = bg__step_new(ctx, BG_F32, x->ndim, shape);
    bitlinear_saved *sv = bg__arena_alloc(ctx, sizeof *sv);
    const float *xd = bg__contig_data(x), *wd = bg__contig_data(w);
    if (!y || !sv || !xd || !wd) return NULL;
    *sv = (bitlinear_saved){ .rows = rows, .in = in, .out = out, .per_row = per_row };
    /* q, k and v (gate and up) quantize one input: the first call's levels serve the others.
     * Only while the tape holds x (recorded this epoch), so nothing can have written to it:
     * writes to a recorded tensor are refused (tensor_obj.c). */
    bool s8 = rows > 0 && out > 0 && bg__s8gemm_ok(in);
    bool lut = !s8 && rows >= LUT_MIN_ROWS && out > 0; /* tables (tlut.h): the same bits */
    bool memo = s8 && ctx->actq.x == x && ctx->actq.data == x->data &&
                ctx->actq.epoch == ctx->tape->epoch && x->recorded_epoch == ctx->tape->epoch &&
                ctx->actq.bits == act_bits && ctx->actq.rows == rows && ctx->actq.in == in;
    sv->levels = memo ? ctx->actq.levels : bg__arena_alloc(ctx, (size_t)(rows * in));
    sv->s_x = memo ? ctx->actq.s_x : bg__arena_alloc(ctx, (size_t)rows * sizeof(float));
    sv->codes = bg__arena_alloc(ctx, (size_t)(out * in));
    sv->s_w = bg__arena_alloc(ctx, (size_t)(per_row ? out : 1) * sizeof(float));
    if (!sv->levels || !sv->s_x || !sv->codes || !sv->s_w) return NULL;
    /* scratch (float copies for sgemm, or the int8 kernel's packed codes): given back below */
    bg_arena_mark mark = bg__arena_mark(ctx);
    bool flt = !s8 && !lut;
    float *lvf = flt ? bg__arena_alloc(ctx, (size_t)(rows * in) * sizeof(float)) : NULL;
    float *cf = flt ? bg__arena_alloc(ctx, (size_t)(out * in) * sizeof(float)) : NULL;
    size_t nb = s8    ? bg__s8gemm_scratch(rows, out, in)
                : lut ? bg__tlut_fwd_scratch(rows, out, in, omp_get_max_threads())
                      : 0;
    void *scratch = nb ? bg__arena_alloc(ctx, nb) : NULL;
    if (flt ? (!lvf || !cf) : !scratch) return NULL;
    if (!memo) quantize_acts(xd, rows, in, act_bits, lvf, sv->levels, sv->s_x);
    quantize_weights(wd, out, in, per_row, cf, sv->codes, sv->s_w);
    float *yd = y->data;
    if (s8) { /* the same integer sums and formula: the same bits as the sgemm form */
        bg__gemm_count(ctx, rows, out, in, 1);
        bg__s8gemm(sv->levels, sv->s_x, sv->codes, sv->s_w, per_row, rows, out, in, yd, scratch);
    } else if (lut) { /* likewise */
        bg__gemm_count(ctx, rows, out, in, 1);
        bg__tlut_fwd(sv->codes, NULL, sv->levels, sv->s_x, sv->s_w, per_row, rows, out, in, yd,
                     scratch);
    } else if (rows > 0 && out > 0) {
        bg__gemm_count(ctx, rows, out, in, 1);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)out, (int)in, 1.0f,
                    lvf, (int)in, cf, (int)in, 0.0f, yd, (int)out);
#pragma omp parallel for schedule(static) if (rows * out > BG_PAR_MIN)
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < out; j++)
                yd[r * out + j] = (yd[r * out + j] * sv->s_w[per_row ? j : 0]) / sv->s_x[r];
    }
    bg__arena_back_to(ctx, mark);
    bg_node *node = bg__record(BG_OP_BITLINEAR, y, 2, (bg_tensor *[]){ x, w });
    if (node) node->aux = sv;
    if (node && s8 && !memo) { /* x is on the tape now: read-only until it is consumed */
        remember_levels(ctx, x, act_bits, rows, in, sv);
    }
    return y;
}

/* The activation levels of x for a BitLinear call: the ones the last call on x made while
 * the tape holds it (see bg_bitlinear), or new ones, then remembered. */
static bool packed_levels(bg_ctx *ctx, bg_tensor *x, const float *xd, int64_t rows, int64_t in,
                          int act_bits, bitlinear_saved *sv)
{
    bool memo = ctx->actq.x == x && ctx->actq.data == x->data &&
                ctx->actq.epoch == ctx->tape->epoch && x->recorded_epoch == ctx->tape->epoch &&
                ctx->actq.bits == act_bits && ctx->actq.rows == rows && ctx->actq.in == in;
    sv->levels = memo ? ctx->actq.levels : bg__arena_alloc(ctx, (size_t)(rows * in));
    sv->s_x = memo ? ctx->actq.s_x : bg__arena_alloc(ctx, (size_t)rows * sizeof(float));
    if (!sv->levels || !sv->s_x) return false;
    if (!memo) quantize_acts(xd, rows, in, act_bits, NULL, sv->levels, sv->s_x);
    return true;
}

bg_tensor *bg__bitlinear_packed(bg_tensor *x, bg_tensor *w, const bg_tmat *pk, int act_bits)
{
    bg_ctx *ctx = bg__op_begin("bitlinear", 2, (bg_tensor *[]){ x, w });
    if (!ctx) return NULL;
    if (x->device != BG_CPU) {
        bg__error(ctx, BG_EUNSUPPORTED, "bitlinear: a packed frozen base runs on the CPU only");
        return NULL;
    }
    int64_t shape[BG_MAX_DIMS];
    if (!bg__bitlinear_check(ctx, x, w, act_bits, shape)) return NULL;
    int64_t in = w->shape[1], out = w->shape[0], rows = bg__numel(x->ndim - 1, x->shape);
    bg_tensor *y = bg__step_new(ctx, BG_F32, x->ndim, shape);
    bitlinear_saved *sv = bg__arena_alloc(ctx, sizeof *sv);
    const float *xd = bg__contig_data(x);
    if (!y || !sv || !xd) return NULL;
    bool per_row;
    *sv = (bitlinear_saved){ .rows = rows, .in = in, .out = out, .pk = pk };
    sv->s_w = (float *)bg__tmat_scales(pk, &per_row);
    sv->per_row = per_row;
    if (rows > 0 && !packed_levels(ctx, x, xd, rows, in, act_bits, sv)) return NULL;
    bg__gemm_count(ctx, rows, out, in, 1);
    /* (float)(integer dot) * s_w / s_x: the bits of the latent path (exact integer sums), by
     * tables (tlut.h) for a training batch unless the CPU has VNNI's int8 dot products */
    int rc = BG_OK;
    if (rows >= LUT_MIN_ROWS && out > 0 && bg_isa_best() < BG_ISA_AVX512VNNI) {
        void *scratch = bg__pool_take(ctx, bg__tlut_fwd_scratch(rows, out, in, omp_get_max_threads()));
        if (!scratch) return NULL;
        bg__tlut_fwd(NULL, pk, sv->levels, sv->s_x, sv->s_w, per_row, rows, out, in, y->data,
                     scratch);
        bg__pool_give(ctx, scratch);
    } else if (rows > 0) {
        rc = bg_tmat_matmul(pk, sv->levels, sv->s_x, rows, y->data);
    }
    if (rc) {
        bg__error(ctx, rc, "bitlinear: packed product: out of memory");
        return NULL;
    }
    bg_node *node = bg__record(BG_OP_BITLINEAR, y, 2, (bg_tensor *[]){ x, w });
    if (node) node->aux = sv;
    if (node && rows > 0) {
        remember_levels(ctx, x, act_bits, rows, in, sv);
    }
    return y;
}

void bg__backward_bitlinear(bg_node *node)
{
    bitlinear_saved *sv = node->aux;
    bg_tensor *x = node->in[0], *w = node->in[1];
    bg_ctx *ctx = x->ctx;
    const float *dy = bg__grad_of(node->out);
    int64_t rows = sv->rows, in = sv->in, out = sv->out;
    if (rows == 0 || out == 0 || in == 0) return;
    if (bg__needs_grad(x)) { /* dX += dY W_q, W_q = codes * s_w (dX = when a new buffer) */
        bool as; /* x is never w: x is an activation, w a [out, in] weight it is checked against */
        /* by tables of signed sums (tlut.h): the products of sgemm, without the multiplies */
        size_t nb = bg__tlut_scratch(rows, out, in, omp_get_max_threads());
        float *dx = bg__grad_dst(x, &as);
        void *scratch = dx ? bg__pool_take(ctx, nb) : NULL;
        if (!dx || !scratch) return;
        bg__gemm_count(ctx, rows, in, out, 1);
        bg__tlut_dx(sv->pk ? NULL : sv->codes, sv->pk, dy, sv->s_w, sv->per_row, rows, out, in,
                    !as, dx, scratch);
        bg__pool_give(ctx, scratch);
    }
    if (bg__needs_grad(w) && !sv->pk) { /* dW += dY^T x_q, x_q = levels / s_x */
        /* x_q is as large as an activation: from the pool, which has the forward's freed ones */
        float *dw = bg__grad_of(w),
              *xq = dw ? bg__pool_take(ctx, (size_t)(rows * in) * sizeof(float)) : NULL;
        if (!dw || !xq) return;
#pragma omp parallel for schedule(static) if (rows * in > BG_PAR_MIN)
        for (int64_t r = 0; r < rows; r++)
            bg__widen_div(sv->levels + r * in, in, sv->s_x[r], xq + r * in);
        bg__gemm_count(ctx, out, in, rows, 1);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)out, (int)in, (int)rows, 1.0f, dy,
                    (int)out, xq, (int)in, 1.0f, dw, (int)in);
        bg__pool_give(ctx, xq);
    }
}
