/* op_shape.c - reshape, permute, transpose, slice (views sharing storage), concat and
 * contiguous (copies), with their backward rules. */
#include "autograd/op_checks.h"
#include "autograd/tape.h"
#include "cuda/cuda_dispatch.h"

/* Records a view op; the view's gradient flows back through the node's rule. */
static bg_tensor *finish_view(int op, bg_tensor *a, bg_tensor *out, const int64_t *p, int np)
{
    bg_node *node = bg__record(op, out, 1, (bg_tensor *[]){ a });
    if (node)
        for (int i = 0; i < np && i < 4; i++) node->i[i] = p[i];
    return out;
}

bg_tensor *bg_reshape(bg_tensor *a, int ndim, const int64_t *shape)
{
    bg_ctx *ctx = bg__op_begin("reshape", 1, (bg_tensor *[]){ a });
    if (!ctx) return NULL;
    char s[64];
    if (ndim < 0 || ndim > BG_MAX_DIMS || (ndim && !shape)) {
        bg__error(ctx, BG_EINVAL, "reshape: ndim %d out of range", ndim);
        return NULL;
    }
    int64_t sh[BG_MAX_DIMS], known = 1, n = bg__numel(a->ndim, a->shape);
    int infer = -1;
    for (int i = 0; i < ndim; i++) {
        sh[i] = shape[i];
        if (sh[i] == -1 && infer < 0) infer = i;
        else if (sh[i] < 0) {
            bg__error(ctx, BG_EINVAL, "reshape: bad dimension %lld", (long long)sh[i]);
            return NULL;
        } else known *= sh[i];
    }
    if (infer >= 0) sh[infer] = known ? n / known : 0;
    if (bg__numel(ndim, sh) != n) {
        bg__error(ctx, BG_ESHAPE, "reshape: %s has %lld elements, the new shape %lld",
                  bg__shape_str(a, s, sizeof s), (long long)n, (long long)bg__numel(ndim, sh));
        return NULL;
    }
    const float *data = a->data;
    if (!bg__is_contig(a)) data = bg__contig_data(a); /* a copy, still differentiable */
    if (!data) return NULL;
    int64_t st[BG_MAX_DIMS];
    bg__contig_strides(ndim, sh, st);
    bg_tensor *out = bg__step_view(a, ndim, sh, st, (void *)data);
    return out ? finish_view(BG_OP_RESHAPE, a, out, NULL, 0) : NULL;
}

void bg__backward_reshape(bg_node *node)
{
    bg_tensor *a = node->in[0];
    if (!bg__needs_grad(a) || bg__grad_pass(a, node->out)) return; /* the same elements */
    bool as;
    float *g = bg__grad_dst(a, &as);
    const float *go = bg__grad_of(node->out);
    if (!g || !go) return;
    int64_t n = bg__numel(a->ndim, a->shape);
    for (int64_t i = 0; i < n; i++) g[i] = BG_GBASE(as, g[i]) + go[i];
}

static bg_tensor *permute_op(int op, bg_tensor *a, const int *perm)
{
    int64_t sh[BG_MAX_DIMS], st[BG_MAX_DIMS], p[BG_MAX_DIMS];
    bool seen[BG_MAX_DIMS] = { false, false, false, false };
    for (int i = 0; i < a->ndim; i++) {
        int d = perm[i] < 0 ? perm[i] + a->ndim : perm[i];
        if (d < 0 || d >= a->ndim || seen[d]) {
            bg__error(a->ctx, BG_EINVAL, "%s: invalid permutation of %d dims", bg_op_name(op),
                      a->ndim);
            return NULL;
        }
        seen[d] = true;
        sh[i] = a->shape[d];
        st[i] = a->stride[d];
        p[i] = d;
    }
    bg_tensor *out = bg__step_view(a, a->ndim, sh, st, a->data);
    return out ? finish_view(op, a, out, p, a->ndim) : NULL;
}

bg_tensor *bg_permute(bg_tensor *a, const int *perm)
{
    if (!bg__op_begin("permute", 1, (bg_tensor *[]){ a })) return NULL;
    if (!perm) {
        bg__error(a->ctx, BG_EINVAL, "permute: perm is NULL");
        return NULL;
    }
    return permute_op(BG_OP_PERMUTE, a, perm);
}

bg_tensor *bg_transpose(bg_tensor *a, int d0, int d1)
{
    if (!bg__op_begin("transpose", 1, (bg_tensor *[]){ a })) return NULL;
    int n = a->ndim;
    d0 = d0 < 0 ? d0 + n : d0;
    d1 = d1 < 0 ? d1 + n : d1;
    if (d0 < 0 || d0 >= n || d1 < 0 || d1 >= n) {
        bg__error(a->ctx, BG_EINVAL, "transpose: dims %d, %d out of range for %d dims", d0, d1, n);
        return NULL;
    }
    int perm[BG_MAX_DIMS] = { 0, 1, 2, 3 };
    perm[d0] = d1;
    perm[d1] = d0;
    return permute_op(BG_OP_TRANSPOSE, a, perm);
}

/* out dim i is input dim p[i]: add the out grad into the input grad with permuted strides. */
static void permute_backward(bg_node *node)
{
    bg_tensor *a = node->in[0];
    if (!bg__needs_grad(a)) return;
    float *g = bg__grad_of(a);
    const float *go = bg__grad_of(node->out);
    int64_t cst[BG_MAX_DIMS], st[BG_MAX_DIMS];
    bg__contig_strides(a->ndim, a->shape, cst);
    for (int i = 0; i < a->ndim; i++) st[i] = cst[node->i[i]];
    bg__add_strided(g, st, go, node->out->ndim, node->out->shape);
}

void bg__backward_permute(bg_node *node) { permute_backward(node); }
void bg__backward_transpose(bg_node *node) { permute_backward(node); }

bg_tensor *bg_slice(bg_tensor *a, int axis, int64_t start, int64_t end)
{
    bg_ctx *ctx = bg__op_begin("slice", 1, (bg_tensor *[]){ a });
    if (!ctx) return NULL;
    int ax = axis < 0 ? axis + a->ndim : axis;
    if (ax < 0 || ax >= a->ndim || start < 0 || end < start || end > a->shape[ax]) {
        char s[64];
        bg__error(ctx, BG_EINVAL, "slice: [%lld, %lld) along axis %d is outside %s",
                  (long long)start, (long long)end, axis, bg__shape_str(a, s, sizeof s));
        return NULL;
    }
    int64_t sh[BG_MAX_DIMS];
    memcpy(sh, a->shape, sizeof sh);
    sh[ax] = end - start;
    void *data = (char *)a->data + (size_t)(start * a->stride[ax]) * bg_dtype_size(a->dtype);
    bg_tensor *out = bg__step_view(a, a->ndim, sh, a->stride, data);
    int64_t p[2] = { ax, start };
    return out ? finish_view(BG_OP_SLICE, a, out, p, 2) : NULL;
}

void bg__backward_slice(bg_node *node)
{
    bg_tensor *a = node->in[0];
    if (!bg__needs_grad(a)) return;
    float *g = bg__grad_of(a);
    const float *go = bg__grad_of(node->out);
    int64_t cst[BG_MAX_DIMS];
    bg__contig_strides(a->ndim, a->shape, cst);
    bg__add_strided(g + node->i[1] * cst[node->i[0]], cst, go, node->out->ndim, node->out->shape);
}

bg_tensor *bg_concat(bg_tensor *const *ts, int n, int axis)
{
    if (!ts || n < 1 || n > BG_NODE_MAX_IN) {
        if (ts && n > 0 && ts[0])
            bg__error(ts[0]->ctx, BG_EINVAL, "concat: %d tensors (1..%d supported)", n,
                      BG_NODE_MAX_IN);
        return NULL;
    }
    bg_ctx *ctx = bg__op_begin("concat", n, ts);
    if (!ctx) return NULL;
    BG_CUDA_DISPATCH(ctx, bg__cuda_concat(ctx, ts, n, axis)); /* cuda hook */
    int ax;
    int64_t sh[BG_MAX_DIMS];
    if (!bg__concat_check(ctx, ts, n, axis, &ax, sh)) return NULL;
    bg_tensor *out = bg__step_new(ctx, BG_F32, ts[0]->ndim, sh);
    if (!out) return NULL;
    int64_t ost[BG_MAX_DIMS], off;
    bg__contig_strides(out->ndim, out->shape, ost);
    memset(out->data, 0, (size_t)bg__numel(out->ndim, out->shape) * sizeof(float));
    off = 0;
    for (int i = 0; i < n; i++) {
        const float *src = bg__contig_data(ts[i]);
        if (!src) return NULL;
        bg__add_strided(bg__f32(out) + off * ost[ax], ost, src, ts[i]->ndim, ts[i]->shape);
        off += ts[i]->shape[ax];
    }
    bg_node *node = bg__record(BG_OP_CONCAT, out, n, ts);
    if (node) node->i[0] = ax;
    return out;
}

void bg__backward_concat(bg_node *node)
{
    int ax = (int)node->i[0];
    bg_tensor *out = node->out;
    const float *go = bg__grad_of(out);
    int64_t ost[BG_MAX_DIMS], off = 0;
    bg__contig_strides(out->ndim, out->shape, ost);
    for (int i = 0; i < node->n_in; i++) {
        bg_tensor *t = node->in[i];
        if (bg__needs_grad(t)) {
            float *g = bg__grad_of(t);
            int64_t cst[BG_MAX_DIMS];
            bg__contig_strides(t->ndim, t->shape, cst);
            /* Walk the input's shape; read the out grad through out's strides. */
            int64_t n = bg__numel(t->ndim, t->shape);
            for (int64_t e = 0; e < n; e++) {
                int64_t rem = e, o = off * ost[ax];
                for (int d = t->ndim - 1; d >= 0; d--) {
                    o += (rem % t->shape[d]) * ost[d];
                    rem /= t->shape[d];
                }
                g[e] += go[o];
            }
        }
        off += t->shape[ax];
    }
}

bg_tensor *bg_contiguous(bg_tensor *a)
{
    bg_ctx *ctx = bg__op_begin("contiguous", 1, (bg_tensor *[]){ a });
    if (!ctx) return NULL;
    BG_CUDA_DISPATCH(ctx, bg__cuda_contiguous(ctx, a)); /* cuda hook */
    if (!bg__contiguous_check(ctx, a)) return NULL;
    bg_tensor *out = bg__step_new(ctx, BG_F32, a->ndim, a->shape);
    if (!out) return NULL;
    bg__gather_f32(a, out->data);
    bg__record(BG_OP_CONTIGUOUS, out, 1, (bg_tensor *[]){ a });
    return out;
}

void bg__backward_contiguous(bg_node *node) { bg__backward_reshape(node); }
