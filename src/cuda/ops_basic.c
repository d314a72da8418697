/* ops_basic.c - CUDA front ends of the elementwise ops (binary with broadcasting, unary),
 * the reductions and the shape ops (concat, contiguous), and the backward rules of these
 * and of the view ops (reshape, permute, transpose, slice), which need no forward of
 * their own: views share storage on any device.
 *
 * Each front end validates with its CPU twin's checks (src/autograd/op_checks.c: same
 * messages), allocates its output in the device arena, launches kernels
 * (src/cuda/k_elementwise.cu, k_runtime.cu) and records the same tape node; the rules below
 * read what the node saved. */
#include "autograd/op_checks.h"
#include "cuda/cuda_impl.h"

/* ---- binary ------------------------------------------------------------------------------ */

_Static_assert(BG_MAX_DIMS == 4, "bg_cu_bcast holds 4 dims");

/* The shared broadcast geometry in the form the kernels take. */
static bg_cu_bcast cu_bcast(const bg_bcast *bc)
{
    bg_cu_bcast cu;
    memcpy(cu.shape, bc->shape, sizeof cu.shape);
    memcpy(cu.sa, bc->sa, sizeof cu.sa);
    memcpy(cu.sb, bc->sb, sizeof cu.sb);
    return cu;
}

bg_tensor *bg__cuda_binary(bg_ctx *ctx, int op, const char *name, bg_tensor *a, bg_tensor *b)
{
    bg_bcast bc;
    if (!bg__binary_check(ctx, name, a, b, &bc)) return NULL;
    bg_tensor *out = bg__step_new(ctx, BG_F32, bc.ndim, bc.shape + BG_MAX_DIMS - bc.ndim);
    if (!out) return NULL;
    bg__cu_binary(ctx, op, out->data, a->data, b->data, cu_bcast(&bc));
    if (!bg__cuda_ok(ctx)) return NULL;
    bg__record(op, out, 2, (bg_tensor *[]){ a, b });
    return out;
}

static void binary_backward(bg_node *node)
{
    bg_tensor *a = node->in[0], *b = node->in[1];
    const float *go = bg__grad_of(node->out);
    bg_bcast bc;
    if (!go || bg__bcast_init(&bc, a, b, "backward")) return;
    for (int side = 0; side < 2; side++) {
        bg_tensor *t = node->in[side];
        if (!bg__needs_grad(t)) continue;
        float *g = bg__grad_of(t);
        if (!g) return;
        bg__cu_binary_grad(t->ctx, node->op, side, g, bg__cu_layout_contig(t->ndim, t->shape), go,
                           a->data, b->data, cu_bcast(&bc));
    }
}

void bg__cudab_add(bg_node *node) { binary_backward(node); }
void bg__cudab_sub(bg_node *node) { binary_backward(node); }
void bg__cudab_mul(bg_node *node) { binary_backward(node); }
/* bg_swiglu is composed of silu and mul on the device: no SWIGLU node is recorded there. */
void bg__cudab_swiglu(bg_node *node)
{
    bg__error(node->out->ctx, BG_EUNSUPPORTED, "swiglu: no device rule (the op is composed on CUDA)");
}
void bg__cudab_div(bg_node *node) { binary_backward(node); }

/* ---- unary --------------------------------------------------------------------------------- */

bg_tensor *bg__cuda_unary(bg_ctx *ctx, int op, bg_tensor *a, float p0, float p1)
{
    if (!bg__check_dtype(ctx, bg_op_name(op), "input", a, BG_F32)) return NULL;
    bg_tensor *out = bg__step_new(ctx, BG_F32, a->ndim, a->shape);
    if (!out) return NULL;
    bg__cu_unary(ctx, op, out->data, a->data, bg__cu_layout(a), p0, p1);
    if (!bg__cuda_ok(ctx)) return NULL;
    bg_node *node = bg__record(op, out, 1, (bg_tensor *[]){ a });
    if (node) {
        node->f[0] = p0;
        node->f[1] = p1;
    }
    return out;
}

/* The input is read through its own strides: it is still alive and unchanged (in-place
 * writes to recorded tensors are refused). */
static void unary_backward(bg_node *node)
{
    bg_tensor *a = node->in[0];
    if (!bg__needs_grad(a)) return;
    float *g = bg__grad_of(a);
    const float *go = bg__grad_of(node->out);
    if (!g || !go) return;
    bg__cu_unary_grad(a->ctx, node->op, g, go, a->data, bg__cu_layout(a), node->out->data,
                      node->f[0], node->f[1]);
}

void bg__cudab_add_scalar(bg_node *node) { unary_backward(node); }
void bg__cudab_mul_scalar(bg_node *node) { unary_backward(node); }
void bg__cudab_neg(bg_node *node) { unary_backward(node); }
void bg__cudab_exp(bg_node *node) { unary_backward(node); }
void bg__cudab_log(bg_node *node) { unary_backward(node); }
void bg__cudab_sqrt(bg_node *node) { unary_backward(node); }
void bg__cudab_rsqrt(bg_node *node) { unary_backward(node); }
void bg__cudab_pow(bg_node *node) { unary_backward(node); }
void bg__cudab_abs(bg_node *node) { unary_backward(node); }
void bg__cudab_clamp(bg_node *node) { unary_backward(node); }
void bg__cudab_relu(bg_node *node) { unary_backward(node); }
void bg__cudab_silu(bg_node *node) { unary_backward(node); }
void bg__cudab_gelu(bg_node *node) { unary_backward(node); }
void bg__cudab_sigmoid(bg_node *node) { unary_backward(node); }
void bg__cudab_tanh(bg_node *node) { unary_backward(node); }

/* ---- reductions ------------------------------------------------------------------------------- */

bg_tensor *bg__cuda_reduce(bg_ctx *ctx, int op, bg_tensor *a, int axis, bool keepdim)
{
    bg_red_geom g;
    if (!bg__reduce_check(ctx, op, a, axis, keepdim, &g)) return NULL;
    bg_tensor *out = bg__step_new(ctx, BG_F32, g.out_ndim, g.out_shape);
    const float *x = bg__cuda_contig(a);
    if (!out || !x) return NULL;
    bg__cu_reduce(ctx, op, x, out->data, g.outer, g.n, g.inner);
    if (!bg__cuda_ok(ctx)) return NULL;
    bg_node *node = bg__record(op, out, 1, (bg_tensor *[]){ a });
    if (node) {
        node->i[0] = axis;
        node->i[1] = keepdim;
        node->aux = (void *)x;
    }
    return out;
}

static void reduce_backward(bg_node *node)
{
    bg_tensor *a = node->in[0];
    if (!bg__needs_grad(a)) return;
    bg_red_geom g;
    if (bg__red_geom_init(&g, a, (int)node->i[0], node->i[1] != 0, "backward")) return;
    float *ga = bg__grad_of(a);
    const float *go = bg__grad_of(node->out);
    if (!ga || !go) return;
    bg__cu_reduce_grad(a->ctx, node->op, ga, go, node->aux, node->out->data, g.outer, g.n, g.inner);
}

void bg__cudab_sum(bg_node *node) { reduce_backward(node); }
void bg__cudab_mean(bg_node *node) { reduce_backward(node); }
void bg__cudab_max(bg_node *node) { reduce_backward(node); }

/* ---- shape ops --------------------------------------------------------------------------------- */

bg_tensor *bg__cuda_concat(bg_ctx *ctx, bg_tensor *const *ts, int n, int axis)
{
    int ax;
    int64_t sh[BG_MAX_DIMS];
    if (!bg__concat_check(ctx, ts, n, axis, &ax, sh)) return NULL;
    bg_tensor *out = bg__step_new(ctx, BG_F32, ts[0]->ndim, sh);
    if (!out) return NULL;
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        /* Input i lands at offset off along ax, seen through out's strides. */
        bg_cu_layout dl = bg__cu_layout_from(ts[i]->ndim, ts[i]->shape, out->stride);
        bg__cu_copy_strided(ctx, bg__f32(out) + off * out->stride[ax], dl, ts[i]->data,
                            bg__cu_layout(ts[i]), 4);
        off += ts[i]->shape[ax];
    }
    if (!bg__cuda_ok(ctx)) return NULL;
    bg_node *node = bg__record(BG_OP_CONCAT, out, n, ts);
    if (node) node->i[0] = ax;
    return out;
}

void bg__cudab_concat(bg_node *node)
{
    int ax = (int)node->i[0];
    bg_tensor *out = node->out;
    const float *go = bg__grad_of(out);
    if (!go) return;
    int64_t off = 0;
    for (int i = 0; i < node->n_in; i++) {
        bg_tensor *t = node->in[i];
        if (bg__needs_grad(t)) {
            float *g = bg__grad_of(t);
            if (!g) return;
            bg__cu_add_strided(t->ctx, g, bg__cu_layout_contig(t->ndim, t->shape),
                               go + off * out->stride[ax],
                               bg__cu_layout_from(t->ndim, t->shape, out->stride), 1.0f);
        }
        off += t->shape[ax];
    }
}

bg_tensor *bg__cuda_contiguous(bg_ctx *ctx, bg_tensor *a)
{
    if (!bg__contiguous_check(ctx, a)) return NULL;
    bg_tensor *out = bg__step_new(ctx, BG_F32, a->ndim, a->shape);
    if (!out) return NULL;
    bg__cu_copy_strided(ctx, out->data, bg__cu_layout_contig(a->ndim, a->shape), a->data,
                        bg__cu_layout(a), 4);
    if (!bg__cuda_ok(ctx)) return NULL;
    bg__record(BG_OP_CONTIGUOUS, out, 1, (bg_tensor *[]){ a });
    return out;
}

/* Gradients of same-shaped contiguous buffers simply add. */
static void add_through(bg_node *node)
{
    bg_tensor *a = node->in[0];
    if (!bg__needs_grad(a)) return;
    float *g = bg__grad_of(a);
    const float *go = bg__grad_of(node->out);
    if (g && go) bg__cu_axpy(a->ctx, g, go, bg__numel(a->ndim, a->shape), 1.0f);
}

void bg__cudab_reshape(bg_node *node) { add_through(node); }
void bg__cudab_contiguous(bg_node *node) { add_through(node); }

/* out dim i is input dim p[i]: the out grad adds into the input grad through permuted
 * contiguous strides (each element reaches a distinct one). */
static void permute_backward(bg_node *node)
{
    bg_tensor *a = node->in[0], *out = node->out;
    if (!bg__needs_grad(a)) return;
    float *g = bg__grad_of(a);
    const float *go = bg__grad_of(out);
    if (!g || !go) return;
    int64_t cst[BG_MAX_DIMS], st[BG_MAX_DIMS];
    bg__contig_strides(a->ndim, a->shape, cst);
    for (int i = 0; i < a->ndim; i++) st[i] = cst[node->i[i]];
    bg__cu_add_strided(a->ctx, g, bg__cu_layout_from(out->ndim, out->shape, st), go,
                       bg__cu_layout_contig(out->ndim, out->shape), 1.0f);
}

void bg__cudab_permute(bg_node *node) { permute_backward(node); }
void bg__cudab_transpose(bg_node *node) { permute_backward(node); }

void bg__cudab_slice(bg_node *node)
{
    bg_tensor *a = node->in[0], *out = node->out;
    if (!bg__needs_grad(a)) return;
    float *g = bg__grad_of(a);
    const float *go = bg__grad_of(out);
    if (!g || !go) return;
    int64_t cst[BG_MAX_DIMS];
    bg__contig_strides(a->ndim, a->shape, cst);
    bg__cu_add_strided(a->ctx, g + node->i[1] * cst[node->i[0]],
                       bg__cu_layout_from(out->ndim, out->shape, cst), go,
                       bg__cu_layout_contig(out->ndim, out->shape), 1.0f);
}
