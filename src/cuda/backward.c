/* backward.c - the CUDA backward dispatch (one rule per ops.def line, defined next to each
 * CUDA front end) and the device side of seeding and zeroing gradients. tape.c's backward
 * walk calls bg__cuda_backward for every node of a CUDA ctx. */
#include "cuda/cuda_impl.h"

static const bg_backward_fn cuda_backward_fns[] = {
#define BG_OP(e, n, k) bg__cudab_##n,
#include "autograd/ops.def"
#undef BG_OP
};

/* A CUSTOM node's rule is its own (device-aware or refusing). */
void bg__cudab_custom(bg_node *node) { bg__backward_custom(node); }

void bg__cuda_backward(bg_node *node) { cuda_backward_fns[node->op](node); }

void bg__cuda_add_one(bg_ctx *ctx, float *g) { bg__cu_add_scalar(ctx, g, 1.0f); }

void bg__cuda_axpy(bg_ctx *ctx, float *g, const float *src, int64_t n, float alpha)
{
    bg__cu_axpy(ctx, g, src, n, alpha);
}

void bg__cuda_zero_grad(bg_tensor *t)
{
    bg__cu_memset(t->ctx, t->grad->data, 0, (size_t)bg__numel(t->ndim, t->shape) * sizeof(float));
}
