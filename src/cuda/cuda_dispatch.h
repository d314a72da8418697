/* cuda_dispatch.h - the hooks through which the CPU code hands device tensors to the CUDA
 * backend, and the backend entry points they call.
 *
 * Every public op validates nothing device-specific itself: right after bg__op_begin it
 * runs BG_CUDA_DISPATCH(ctx, bg__cuda_<op>(...)), which returns the CUDA front end's
 * result when the inputs live on a CUDA ctx and does nothing otherwise. Backward rules are
 * dispatched once, in tape.c's backward walk (bg__cuda_backward). Without BG_HAVE_CUDA the
 * macros expand to nothing, so a CPU-only build compiles the CPU code exactly as before.
 *
 * The macros read `->device`, a field of both bg_ctx and bg_tensor, so either may be
 * passed. */
#ifndef BG_CUDA_DISPATCH_H
#define BG_CUDA_DISPATCH_H

#include "tensor/tensor_impl.h"

#ifdef BG_HAVE_CUDA
/* Returns call's value when x (a ctx or a tensor) is on the device. */
#define BG_CUDA_DISPATCH(x, call)                                                                  \
    do {                                                                                           \
        if ((x)->device == BG_CUDA) return (call);                                                 \
    } while (0)
/* Runs call and returns (void functions) when x is on the device. */
#define BG_CUDA_DISPATCH_VOID(x, call)                                                             \
    do {                                                                                           \
        if ((x)->device == BG_CUDA) {                                                              \
            call;                                                                                  \
            return;                                                                                \
        }                                                                                          \
    } while (0)
/* Runs call and goes to the next iteration of the enclosing loop when x is on the device. */
#define BG_CUDA_DISPATCH_CONTINUE(x, call)                                                         \
    if ((x)->device == BG_CUDA) {                                                                  \
        call;                                                                                      \
        continue;                                                                                  \
    }
/* Runs call when x is on the device, then carries on. */
#define BG_CUDA_ALSO(x, call)                                                                      \
    do {                                                                                           \
        if ((x)->device == BG_CUDA) call;                                                          \
    } while (0)
/* Step-tensor data: the device arena on a CUDA ctx, the host arena otherwise. */
#define BG_STEP_DATA_ALLOC(ctx, bytes)                                                             \
    ((ctx)->device == BG_CUDA ? bg__cuda_arena_alloc(ctx, bytes) : bg__arena_alloc(ctx, bytes))
#else
#define BG_CUDA_DISPATCH(x, call)                                                                  \
    do {                                                                                           \
    } while (0)
#define BG_CUDA_DISPATCH_VOID(x, call)                                                             \
    do {                                                                                           \
    } while (0)
#define BG_CUDA_DISPATCH_CONTINUE(x, call)
#define BG_CUDA_ALSO(x, call)                                                                      \
    do {                                                                                           \
    } while (0)
#define BG_STEP_DATA_ALLOC(ctx, bytes) bg__arena_alloc(ctx, bytes)
#endif

#ifdef __cplusplus
extern "C" {
#endif

struct bg_node;

/* ---- context, memory, values (src/cuda/ctx.c, memory.c) ---- */
/* 0 when a GPU is usable; BG_ENODEV otherwise (the reason: bg_device_info(BG_CUDA)). */
BG_INTERNAL int bg__cuda_probe(void);
BG_INTERNAL int bg__cuda_ctx_init(bg_ctx *ctx);
BG_INTERNAL void bg__cuda_ctx_free(bg_ctx *ctx);
BG_INTERNAL void bg__cuda_stats(const bg_ctx *ctx, bg_ctx_stats *out);
BG_INTERNAL void *bg__cuda_arena_alloc(bg_ctx *ctx, size_t size);
BG_INTERNAL void bg__cuda_arena_reset(bg_ctx *ctx);
BG_INTERNAL bg_tensor *bg__cuda_tensor_new(bg_ctx *ctx, bg_dtype dtype, int ndim,
                                           const int64_t *shape);
BG_INTERNAL void bg__cuda_free_data(bg_tensor *t);
/* Zeroes / fills a contiguous step tensor; returns t (NULL stays NULL). */
BG_INTERNAL bg_tensor *bg__cuda_zero(bg_tensor *t);
BG_INTERNAL bg_tensor *bg__cuda_full(bg_tensor *t, float value);
BG_INTERNAL bg_tensor *bg__cuda_upload(bg_tensor *t, const void *host_data);
BG_INTERNAL int bg__cuda_read(const bg_tensor *t, float *dst);
BG_INTERNAL int bg__cuda_write(bg_tensor *t, const float *src);
BG_INTERNAL int bg__cuda_fill(bg_tensor *t, float value);
/* Draws on the host from the ctx RNG in the CPU's element order, so a CUDA parameter
 * initialised with a seed holds exactly the values a CPU one would. */
BG_INTERNAL int bg__cuda_fill_random(bg_tensor *t, float a, float b, bool normal);
/* Copies between any two tensors of which at least one is on a device. */
BG_INTERNAL int bg__cuda_copy(bg_tensor *dst, const bg_tensor *src);
BG_INTERNAL float bg__cuda_item(const bg_tensor *t);
/* A contiguous device pointer for t: its own data or a packed device-arena copy. */
BG_INTERNAL const void *bg__cuda_contig(const bg_tensor *t);

/* ---- autograd (src/cuda/backward.c) ---- */
BG_INTERNAL void bg__cuda_backward(struct bg_node *node);
/* g[0] += 1 and g[0..n) += alpha * src[0..n) on the device (seeds of backward). */
BG_INTERNAL void bg__cuda_add_one(bg_ctx *ctx, float *g);
BG_INTERNAL void bg__cuda_axpy(bg_ctx *ctx, float *g, const float *src, int64_t n, float alpha);
BG_INTERNAL void bg__cuda_zero_grad(bg_tensor *t);

/* ---- ops (src/cuda/ops_*.c) ---- */
BG_INTERNAL bg_tensor *bg__cuda_binary(bg_ctx *ctx, int op, const char *name, bg_tensor *a,
                                       bg_tensor *b);
BG_INTERNAL bg_tensor *bg__cuda_unary(bg_ctx *ctx, int op, bg_tensor *a, float p0, float p1);
BG_INTERNAL bg_tensor *bg__cuda_reduce(bg_ctx *ctx, int op, bg_tensor *a, int axis, bool keepdim);
BG_INTERNAL bg_tensor *bg__cuda_matmul(bg_ctx *ctx, bg_tensor *a, bg_tensor *b);
BG_INTERNAL bg_tensor *bg__cuda_concat(bg_ctx *ctx, bg_tensor *const *ts, int n, int axis);
BG_INTERNAL bg_tensor *bg__cuda_contiguous(bg_ctx *ctx, bg_tensor *a);
BG_INTERNAL bg_tensor *bg__cuda_embedding(bg_ctx *ctx, bg_tensor *weight, bg_tensor *ids);
BG_INTERNAL bg_tensor *bg__cuda_softmax(bg_ctx *ctx, int op, bg_tensor *a);
BG_INTERNAL bg_tensor *bg__cuda_cross_entropy(bg_ctx *ctx, bg_tensor *logits, bg_tensor *targets,
                                              int ignore_index, float label_smoothing);
BG_INTERNAL bg_tensor *bg__cuda_mse(bg_ctx *ctx, bg_tensor *a, bg_tensor *b);
BG_INTERNAL bg_tensor *bg__cuda_norm(bg_ctx *ctx, int op, bg_tensor *x, bg_tensor *w, bg_tensor *b,
                                     float eps);
BG_INTERNAL bg_tensor *bg__cuda_dropout(bg_ctx *ctx, bg_tensor *a, float p);
BG_INTERNAL bg_tensor *bg__cuda_rope(bg_ctx *ctx, bg_tensor *x, int n_rot, float base,
                                     int64_t pos0);
BG_INTERNAL bg_tensor *bg__cuda_attention(bg_ctx *ctx, bg_tensor *q, bg_tensor *k, bg_tensor *v);
BG_INTERNAL bg_tensor *bg__cuda_weight_quant(bg_tensor *w, int mode, int64_t group, float lambda);
BG_INTERNAL bg_tensor *bg__cuda_act_quant(bg_tensor *x, int bits, bool per_tensor, float lambda);
BG_INTERNAL bg_tensor *bg__cuda_bitlinear(bg_ctx *ctx, bg_tensor *x, bg_tensor *w, int act_bits,
                                          bool per_row);

/* ---- optimizers (src/cuda/optim.c): same formulas as src/optim/optim.c ---- */
BG_INTERNAL void bg__cuda_sgd(bg_tensor *p, bg_tensor *m, float lr, float wd, float momentum,
                              float dampening, bool nesterov, bool first);
BG_INTERNAL void bg__cuda_adam(bg_tensor *p, bg_tensor *m, bg_tensor *v, float beta1, float beta2,
                               float eps, float step_size, float bc2_sqrt, float decay,
                               bool decoupled, float wd);
/* Enqueues a NaN/Inf check of t's gradient; bg__cuda_finite_result syncs once and resets. */
BG_INTERNAL void bg__cuda_finite_check(const bg_tensor *grad);
BG_INTERNAL bool bg__cuda_finite_result(bg_ctx *ctx);
/* Enqueues sum(grad^2) into a device accumulator; bg__cuda_sumsq_result syncs and resets. */
BG_INTERNAL void bg__cuda_sumsq(const bg_tensor *grad);
BG_INTERNAL double bg__cuda_sumsq_result(bg_ctx *ctx);
BG_INTERNAL void bg__cuda_scale(bg_tensor *grad, float s);
BG_INTERNAL void bg__cuda_clamp(bg_tensor *grad, float lo, float hi);

#ifdef __cplusplus
}
#endif
#endif
