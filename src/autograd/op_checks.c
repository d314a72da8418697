/* op_checks.c - argument checks and output geometry of the ops, one definition for the CPU
 * ops and their CUDA front ends (see op_checks.h). The messages are the API's: tests match
 * them, so change them here, in one place, or not at all. */
#include <limits.h>
#include <math.h>

#include "autograd/op_checks.h"
#include "autograd/tape.h"
#include "bitgrad/ternary.h"

/* ---- common ---------------------------------------------------------------------------------- */

bool bg__check_dtype(bg_ctx *ctx, const char *op, const char *what, const bg_tensor *t,
                     bg_dtype want)
{
    if (t->dtype == want) return true;
    bg__error(ctx, BG_EINVAL, "%s: %s must be %s (got %s)", op, what, bg_dtype_name(want),
              bg_dtype_name(t->dtype));
    return false;
}

bool bg__check_cpu(bg_ctx *ctx, const char *op, const char *what, const bg_tensor *t)
{
    if (t->device == BG_CPU) return true;
    bg__error(ctx, BG_EUNSUPPORTED, "%s: %s is on cuda; this op runs on the cpu only", op, what);
    return false;
}

const char *bg__index_str(const bg_tensor *t, int64_t i, char *buf, size_t n)
{
    int64_t idx[BG_MAX_DIMS] = { 0 };
    for (int d = t->ndim - 1; d >= 0; d--) {
        idx[d] = t->shape[d] ? i % t->shape[d] : 0;
        i = t->shape[d] ? i / t->shape[d] : 0;
    }
    size_t off = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < t->ndim && off < n; d++)
        off += (size_t)snprintf(buf + off, n - off, d ? ",%lld" : "%lld", (long long)idx[d]);
    if (off < n) snprintf(buf + off, n - off, "]");
    return buf;
}

/* ---- elementwise ----------------------------------------------------------------------------- */

/* Strides of t as seen from the padded output shape. */
static void bcast_strides(const bg_tensor *t, const int64_t *pad_shape, int64_t *st)
{
    int off = BG_MAX_DIMS - t->ndim;
    for (int i = 0; i < BG_MAX_DIMS; i++) {
        int j = i - off;
        st[i] = (j < 0 || t->shape[j] == 1 || pad_shape[i] == 1) ? 0 : t->stride[j];
    }
}

int bg__bcast_init(bg_bcast *bc, const bg_tensor *a, const bg_tensor *b, const char *op)
{
    bc->ndim = a->ndim > b->ndim ? a->ndim : b->ndim;
    for (int i = 0; i < BG_MAX_DIMS; i++) {
        int ia = i - (BG_MAX_DIMS - a->ndim), ib = i - (BG_MAX_DIMS - b->ndim);
        int64_t da = ia >= 0 ? a->shape[ia] : 1, db = ib >= 0 ? b->shape[ib] : 1;
        if (da != db && da != 1 && db != 1) {
            char s1[64], s2[64];
            return bg__error(a->ctx, BG_ESHAPE,
                             "%s: %s and %s cannot broadcast (dim %d: %lld "
                             "vs %lld)",
                             op, bg__shape_str(a, s1, sizeof s1), bg__shape_str(b, s2, sizeof s2),
                             i - (BG_MAX_DIMS - bc->ndim), (long long)da, (long long)db);
        }
        bc->shape[i] = da == 0 || db == 0 ? 0 : (da > db ? da : db);
    }
    bcast_strides(a, bc->shape, bc->sa);
    bcast_strides(b, bc->shape, bc->sb);
    return BG_OK;
}

bool bg__binary_check(bg_ctx *ctx, const char *op, const bg_tensor *a, const bg_tensor *b,
                      bg_bcast *bc)
{
    if (a->dtype != BG_F32 || b->dtype != BG_F32) {
        bg__error(ctx, BG_EINVAL, "%s: inputs must be f32 (got %s, %s)", op,
                  bg_dtype_name(a->dtype), bg_dtype_name(b->dtype));
        return false;
    }
    return bg__bcast_init(bc, a, b, op) == BG_OK;
}

/* ---- reductions ------------------------------------------------------------------------------ */

int bg__red_geom_init(bg_red_geom *g, const bg_tensor *a, int axis, bool keepdim, const char *op)
{
    if (axis == BG_AXIS_ALL) {
        *g = (bg_red_geom){ .outer = 1,
                            .n = bg__numel(a->ndim, a->shape),
                            .inner = 1,
                            .out_ndim = keepdim ? a->ndim : 0 };
        for (int i = 0; i < g->out_ndim; i++) g->out_shape[i] = 1;
        return BG_OK;
    }
    int ax = axis < 0 ? axis + a->ndim : axis;
    if (ax < 0 || ax >= a->ndim) {
        char s[64];
        return bg__error(a->ctx, BG_EINVAL, "%s: axis %d out of range for %s", op, axis,
                         bg__shape_str(a, s, sizeof s));
    }
    g->outer = bg__numel(ax, a->shape);
    g->n = a->shape[ax];
    g->inner = bg__numel(a->ndim - ax - 1, a->shape + ax + 1);
    g->out_ndim = 0;
    for (int i = 0; i < a->ndim; i++) {
        if (i != ax) g->out_shape[g->out_ndim++] = a->shape[i];
        else if (keepdim)
            g->out_shape[g->out_ndim++] = 1;
    }
    return BG_OK;
}

bool bg__reduce_check(bg_ctx *ctx, int op, const bg_tensor *a, int axis, bool keepdim,
                      bg_red_geom *g)
{
    const char *name = bg_op_name(op);
    if (a->dtype != BG_F32) {
        bg__error(ctx, BG_EINVAL, "%s: input must be f32", name);
        return false;
    }
    if (bg__red_geom_init(g, a, axis, keepdim, name)) return false;
    if (g->n == 0 && op == BG_OP_MAX) {
        bg__error(ctx, BG_ESHAPE, "max: reduction over an empty axis");
        return false;
    }
    return true;
}

/* ---- matmul ---------------------------------------------------------------------------------- */

int bg__mm_geom_init(bg_mm_geom *g, const bg_tensor *a, const bg_tensor *b)
{
    char s1[64], s2[64];
    if (a->ndim < 2 || b->ndim < 2)
        return bg__error(a->ctx, BG_ESHAPE, "matmul: %s x %s: both operands need 2+ dims",
                         bg__shape_str(a, s1, sizeof s1), bg__shape_str(b, s2, sizeof s2));
    int64_t k1 = a->shape[a->ndim - 1], k2 = b->shape[b->ndim - 2];
    if (k1 != k2)
        return bg__error(a->ctx, BG_ESHAPE,
                         "matmul: %s x %s: inner dimensions differ (%lld vs "
                         "%lld)",
                         bg__shape_str(a, s1, sizeof s1), bg__shape_str(b, s2, sizeof s2),
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

bool bg__matmul_check(bg_ctx *ctx, const bg_tensor *a, const bg_tensor *b, bg_mm_geom *g)
{
    if (a->dtype != BG_F32 || b->dtype != BG_F32) {
        bg__error(ctx, BG_EINVAL, "matmul: operands must be f32");
        return false;
    }
    return bg__mm_geom_init(g, a, b) == BG_OK;
}

/* ---- shape ops ------------------------------------------------------------------------------- */

bool bg__concat_check(bg_ctx *ctx, bg_tensor *const *ts, int n, int axis, int *ax,
                      int64_t shape[BG_MAX_DIMS])
{
    const bg_tensor *t0 = ts[0];
    *ax = axis < 0 ? axis + t0->ndim : axis;
    memcpy(shape, t0->shape, BG_MAX_DIMS * sizeof *shape);
    for (int i = 0; i < n; i++) {
        bool ok = ts[i]->ndim == t0->ndim && *ax >= 0 && *ax < t0->ndim && ts[i]->dtype == BG_F32;
        for (int d = 0; ok && d < t0->ndim; d++) ok = d == *ax || ts[i]->shape[d] == t0->shape[d];
        if (!ok) {
            char s1[64], s2[64];
            bg__error(ctx, BG_ESHAPE, "concat: %s and %s do not fit along axis %d",
                      bg__shape_str(t0, s1, sizeof s1), bg__shape_str(ts[i], s2, sizeof s2), axis);
            return false;
        }
        shape[*ax] = i ? shape[*ax] + ts[i]->shape[*ax] : ts[i]->shape[*ax];
    }
    return true;
}

bool bg__contiguous_check(bg_ctx *ctx, const bg_tensor *a)
{
    if (a->dtype == BG_F32) return true;
    bg__error(ctx, BG_EINVAL, "contiguous: input must be f32");
    return false;
}

/* ---- quantizers and BitLinear ---------------------------------------------------------------- */

bg_tensor *bg__ste_begin(const char *name, bg_tensor *x, float lambda, bg_ctx **pctx)
{
    bg_ctx *ctx = bg__op_begin(name, 1, (bg_tensor *[]){ x });
    *pctx = ctx;
    if (!ctx) return NULL;
    if (x->dtype != BG_F32 || x->ndim < 1) {
        bg__error(ctx, BG_EINVAL, "%s: input must be an f32 tensor with 1+ dims", name);
        return NULL;
    }
    if (!(lambda >= 0.0f && lambda <= 1.0f)) {
        bg__error(ctx, BG_EINVAL, "%s: lambda %g outside [0, 1]", name, (double)lambda);
        return NULL;
    }
    return bg__step_new(ctx, BG_F32, x->ndim, x->shape);
}

bool bg__weight_quant_mode_check(bg_ctx *ctx, int mode, int64_t group)
{
    if ((unsigned)mode <= BG_WQ_PER_GROUP && (mode != BG_WQ_PER_GROUP || group >= 1)) return true;
    bg__error(ctx, BG_EINVAL, "weight_quant: bad mode %d / group %lld", mode, (long long)group);
    return false;
}

bool bg__act_quant_bits_check(const bg_tensor *x, int bits)
{
    if (!x || (bits >= 2 && bits <= 8)) return true;
    bg__error(x->ctx, BG_EINVAL, "act_quant: %d bits (2..8 supported)", bits);
    return false;
}

bool bg__bitlinear_check(bg_ctx *ctx, const bg_tensor *x, const bg_tensor *w, int act_bits,
                         int64_t out_shape[BG_MAX_DIMS])
{
    if (x->dtype != BG_F32 || w->dtype != BG_F32 || w->ndim != 2 || x->ndim < 1 ||
        x->shape[x->ndim - 1] != w->shape[1] || act_bits < 2 || act_bits > 8) {
        char s1[64], s2[64];
        bg__error(ctx, BG_ESHAPE,
                  "bitlinear: x %s, w %s, %d bits: need f32 x [.., in], "
                  "w [out, in], 2..8 bits",
                  bg__shape_str(x, s1, sizeof s1), bg__shape_str(w, s2, sizeof s2), act_bits);
        return false;
    }
    memcpy(out_shape, x->shape, BG_MAX_DIMS * sizeof *out_shape);
    out_shape[x->ndim - 1] = w->shape[0];
    return true;
}

/* ---- nn ops ---------------------------------------------------------------------------------- */

bool bg__embedding_check(bg_ctx *ctx, const bg_tensor *weight, const bg_tensor *ids)
{
    if (!bg__check_dtype(ctx, "embedding", "weight", weight, BG_F32) ||
        !bg__check_dtype(ctx, "embedding", "ids", ids, BG_I32))
        return false;
    if (weight->ndim != 2 || ids->ndim > BG_MAX_DIMS - 1) {
        char s1[64], s2[64];
        bg__error(ctx, BG_ESHAPE,
                  "embedding: weight %s and ids %s: weight must be [V, D] and "
                  "ids at most %d-D",
                  bg__shape_str(weight, s1, sizeof s1), bg__shape_str(ids, s2, sizeof s2),
                  BG_MAX_DIMS - 1);
        return false;
    }
    return true;
}

bool bg__softmax_check(bg_ctx *ctx, const char *op, const bg_tensor *a)
{
    if (!bg__check_dtype(ctx, op, "input", a, BG_F32)) return false;
    if (a->ndim >= 1) return true;
    bg__error(ctx, BG_ESHAPE, "%s: input is 0-D; it needs a last axis", op);
    return false;
}

bool bg__cross_entropy_check(bg_ctx *ctx, const bg_tensor *logits, const bg_tensor *targets,
                             float label_smoothing)
{
    if (!bg__check_dtype(ctx, "cross_entropy", "logits", logits, BG_F32) ||
        !bg__check_dtype(ctx, "cross_entropy", "targets", targets, BG_I32))
        return false;
    bool ok = logits->ndim >= 1 && targets->ndim == logits->ndim - 1 &&
              logits->shape[logits->ndim - 1] > 0;
    for (int d = 0; ok && d < targets->ndim; d++) ok = targets->shape[d] == logits->shape[d];
    if (!ok) {
        char s1[64], s2[64];
        bg__error(ctx, BG_ESHAPE,
                  "cross_entropy: logits %s and targets %s: targets must have "
                  "the shape of logits without its last (non-empty) axis",
                  bg__shape_str(logits, s1, sizeof s1), bg__shape_str(targets, s2, sizeof s2));
        return false;
    }
    if (!(label_smoothing >= 0.0f && label_smoothing < 1.0f)) {
        bg__error(ctx, BG_EINVAL, "cross_entropy: label_smoothing %g is not in [0, 1)",
                  (double)label_smoothing);
        return false;
    }
    return true;
}

bool bg__mse_check(bg_ctx *ctx, const bg_tensor *a, const bg_tensor *b)
{
    if (!bg__check_dtype(ctx, "mse", "a", a, BG_F32) ||
        !bg__check_dtype(ctx, "mse", "b", b, BG_F32))
        return false;
    if (bg__same_shape(a, b) && bg__numel(a->ndim, a->shape) > 0) return true;
    char s1[64], s2[64];
    bg__error(ctx, BG_ESHAPE,
              "mse: %s and %s: shapes must be equal and non-empty (no "
              "broadcasting)",
              bg__shape_str(a, s1, sizeof s1), bg__shape_str(b, s2, sizeof s2));
    return false;
}

bool bg__norm_check(bg_ctx *ctx, const char *op, const bg_tensor *x, const bg_tensor *w,
                    const bg_tensor *b, float eps)
{
    if (!bg__check_dtype(ctx, op, "x", x, BG_F32) ||
        (w && !bg__check_dtype(ctx, op, "weight", w, BG_F32)) ||
        (b && !bg__check_dtype(ctx, op, "bias", b, BG_F32)))
        return false;
    if (x->ndim < 1) {
        bg__error(ctx, BG_ESHAPE, "%s: x is 0-D; it needs a last axis", op);
        return false;
    }
    int64_t C = x->shape[x->ndim - 1];
    const bg_tensor *p[2] = { w, b };
    for (int i = 0; i < 2; i++) {
        if (p[i] && (p[i]->ndim != 1 || p[i]->shape[0] != C)) {
            char s1[64], s2[64];
            bg__error(ctx, BG_ESHAPE, "%s: x %s and %s %s: %s must be [%lld]", op,
                      bg__shape_str(x, s1, sizeof s1), i ? "bias" : "weight",
                      bg__shape_str(p[i], s2, sizeof s2), i ? "bias" : "weight", (long long)C);
            return false;
        }
    }
    if (!(eps >= 0.0f) || !isfinite(eps)) {
        bg__error(ctx, BG_EINVAL, "%s: eps %g must be finite and >= 0", op, (double)eps);
        return false;
    }
    return true;
}

bool bg__dropout_check(bg_ctx *ctx, const bg_tensor *a, float p)
{
    if (!bg__check_dtype(ctx, "dropout", "input", a, BG_F32)) return false;
    if (p >= 0.0f && p < 1.0f) return true;
    bg__error(ctx, BG_EINVAL, "dropout: p = %g is not in [0, 1)", (double)p);
    return false;
}

/* ---- attention ------------------------------------------------------------------------------- */

bool bg__rope_check(bg_ctx *ctx, const bg_tensor *x, int n_rot, float base)
{
    if (!bg__check_dtype(ctx, "rope", "x", x, BG_F32)) return false;
    char s[64];
    if (x->ndim != 3 && x->ndim != 4) {
        bg__error(ctx, BG_ESHAPE, "rope: x %s must be [T, H, D] or [B, T, H, D]",
                  bg__shape_str(x, s, sizeof s));
        return false;
    }
    int64_t D = x->shape[x->ndim - 1];
    if (n_rot <= 0 || n_rot % 2 != 0 || n_rot > D) {
        bg__error(ctx, BG_EINVAL, "rope: x %s: n_rot %d must be even, > 0 and <= D = %lld",
                  bg__shape_str(x, s, sizeof s), n_rot, (long long)D);
        return false;
    }
    if (!(base > 0.0f) || !isfinite(base)) {
        bg__error(ctx, BG_EINVAL, "rope: base %g must be finite and > 0", (double)base);
        return false;
    }
    return true;
}

bool bg__attention_check(bg_ctx *ctx, const bg_tensor *q, const bg_tensor *k, const bg_tensor *v,
                         bg_attn_dims *d)
{
    if (!bg__check_dtype(ctx, "attention", "q", q, BG_F32) ||
        !bg__check_dtype(ctx, "attention", "k", k, BG_F32) ||
        !bg__check_dtype(ctx, "attention", "v", v, BG_F32))
        return false;
    const char *why = NULL;
    if (q->ndim != 4 || k->ndim != 4 || !bg__same_shape(k, v))
        why = "q must be [B, T, H, D] and k, v the same [B, T, Hkv, D]";
    else if (k->shape[0] != q->shape[0] || k->shape[1] != q->shape[1] || k->shape[3] != q->shape[3])
        why = "B, T and D of q and k differ";
    else if (q->shape[3] == 0 || k->shape[2] == 0 || q->shape[2] % k->shape[2] != 0)
        why = "H must be a multiple of Hkv > 0, and D > 0";
    else if (q->shape[1] > INT_MAX / 2 || q->shape[2] * q->shape[3] > INT_MAX ||
             q->shape[0] > INT_MAX)
        why = "dimensions too large for BLAS int";
    if (why) {
        char s1[64], s2[64], s3[64];
        bg__error(ctx, BG_ESHAPE, "attention: q %s, k %s, v %s: %s",
                  bg__shape_str(q, s1, sizeof s1), bg__shape_str(k, s2, sizeof s2),
                  bg__shape_str(v, s3, sizeof s3), why);
        return false;
    }
    *d = (bg_attn_dims){
        .B = q->shape[0], .T = q->shape[1], .H = q->shape[2], .Hkv = k->shape[2], .D = q->shape[3]
    };
    return true;
}
