/* op_quant.c - the two straight-through quantizer ops of BitNet b1.58: absmean ternary
 * weights and absmax integer activations. Forward x + lambda (Q(x) - x), backward the
 * identity (the STE), so dX = dY W_q and dW = dY^T x_q through the matmul that follows. */
#include "autograd/op_checks.h"
#include "autograd/tape.h"
#include "bitgrad/ternary.h"
#include "cuda/cuda_dispatch.h"
#include "quant/bitnet_math.h"

bg_tensor *bg_weight_quant(bg_tensor *w, int mode, int64_t group, float lambda)
{
    if (w) BG_CUDA_DISPATCH(w, bg__cuda_weight_quant(w, mode, group, lambda)); /* cuda hook */
    bg_ctx *ctx;
    bg_tensor *out = bg__ste_begin("weight_quant", w, lambda, &ctx);
    if (!out || !bg__weight_quant_mode_check(ctx, mode, group)) return NULL;
    int64_t cols = w->shape[w->ndim - 1], rows = bg__numel(w->ndim - 1, w->shape);
    int64_t ns = bg_ternary_n_scales(rows, cols, (bg_wq_mode)mode, group);
    int8_t *codes = bg__arena_alloc(ctx, (size_t)(rows * cols));
    float *scales = bg__arena_alloc(ctx, (size_t)ns * sizeof(float));
    const float *x = bg__contig_data(w);
    if (!codes || !scales || !x) return NULL;
    bg_ternary_quantize(x, rows, cols, (bg_wq_mode)mode, group, codes, scales);
    bg_ternary_dequantize(codes, scales, rows, cols, (bg_wq_mode)mode, group, out->data);
    if (lambda != 1.0f) {
        float *y = out->data;
        for (int64_t i = 0; i < rows * cols; i++) y[i] = bg_ste_blend(x[i], y[i], lambda);
    }
    bg__record(BG_OP_WEIGHT_QUANT, out, 1, (bg_tensor *[]){ w });
    return out;
}

bg_tensor *bg_act_quant(bg_tensor *x, int bits, bool per_tensor, float lambda)
{
    if (x) BG_CUDA_DISPATCH(x, bg__cuda_act_quant(x, bits, per_tensor, lambda)); /* cuda hook */
    if (!bg__act_quant_bits_check(x, bits)) return NULL;
    bg_ctx *ctx;
    bg_tensor *out = bg__ste_begin("act_quant", x, lambda, &ctx);
    if (!out) return NULL;
    int64_t n = bg__numel(x->ndim, x->shape);
    int64_t cols = per_tensor ? n : x->shape[x->ndim - 1], rows = cols ? n / cols : 0;
    const float *in = bg__contig_data(x);
    if (!in) return NULL;
    float *y = out->data;
#pragma omp parallel for schedule(static) if (n > BG_PAR_MIN && rows > 1)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = in + r * cols;
        float s = bg_absmax_scale(bg_absmax(xr, cols), bits);
        for (int64_t i = 0; i < cols; i++) {
            float q = (float)bg_act_level(xr[i], s, bits) / s;
            y[r * cols + i] = bg_ste_blend(xr[i], q, lambda);
        }
    }
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
    int64_t n = bg__numel(a->ndim, a->shape);
#pragma omp parallel for schedule(static) if (n > BG_PAR_MIN)
    for (int64_t i = 0; i < n; i++) g[i] += go[i];
}

void bg__backward_weight_quant(bg_node *node) { ste_backward(node); }
void bg__backward_act_quant(bg_node *node) { ste_backward(node); }
