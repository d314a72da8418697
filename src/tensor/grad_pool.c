/* grad_pool.c - memory for the gradients of intermediate tensors during backward.
 *
 * The step arena only grows within a step, so gradients allocated there would all stay
 * until bg_step_end: as much memory again as the forward activations. Instead, the backward
 * walk takes an intermediate's gradient from this pool when the first consumer's rule
 * writes to it and gives it back as soon as the producing op's rule has consumed it
 * (tape.c), so only the gradients that are live at one point of the walk hold memory.
 * Buffers are matched by exact size - a model repeats the same shapes layer after layer -
 * and kept across steps: a steady training loop makes no heap allocation here after its
 * first step. */
#include "tensor/tensor_impl.h"

typedef struct bg_gbuf {
    bg_tensor t; /* the gradient tensor handed out (t.data: the buffer) */
    size_t bytes;
    bool live;
    struct bg_gbuf *next; /* every buffer of the pool */
} bg_gbuf;

struct bg_grad_pool {
    bg_gbuf *all;
};

bg_tensor *bg__grad_pool_get(bg_ctx *ctx, int ndim, const int64_t *shape)
{
    if (!ctx->grad_pool) {
        ctx->grad_pool = bg__calloc(ctx, 1, sizeof *ctx->grad_pool);
        if (!ctx->grad_pool) goto oom;
    }
    size_t bytes = (size_t)bg__numel(ndim, shape) * sizeof(float);
    bg_gbuf *b = ctx->grad_pool->all;
    while (b && (b->live || b->bytes != bytes)) b = b->next;
    if (!b) {
        b = bg__calloc(ctx, 1, sizeof *b);
        void *data = b ? bg__aligned_alloc(ctx, bytes) : NULL;
        if (!data) {
            free(b);
            goto oom;
        }
        b->t.data = data;
        b->bytes = bytes;
        b->next = ctx->grad_pool->all;
        ctx->grad_pool->all = b;
    }
    void *data = b->t.data;
    bg__init_header(&b->t, ctx, BG_F32, ndim, shape);
    b->t.data = data;
    memset(data, 0, bytes);
    b->live = true;
    return &b->t;
oom:
    bg__error(ctx, BG_ENOMEM, "backward: out of memory for a gradient");
    return NULL;
}

void bg__grad_pool_put(bg_tensor *g)
{
    bg_gbuf *b = (bg_gbuf *)g; /* t is the first member */
    b->live = false;
    g->magic = BG_MAGIC_DEAD;
}

void bg__grad_pool_reset(bg_ctx *ctx)
{
    for (bg_gbuf *b = ctx->grad_pool ? ctx->grad_pool->all : NULL; b; b = b->next)
        if (b->live) bg__grad_pool_put(&b->t);
}

void bg__grad_pool_free(bg_ctx *ctx)
{
    if (!ctx->grad_pool) return;
    for (bg_gbuf *b = ctx->grad_pool->all, *nx; b; b = nx) {
        nx = b->next;
        free(b->t.data);
        free(b);
    }
    free(ctx->grad_pool);
    ctx->grad_pool = NULL;
}

size_t bg__grad_pool_bytes(const bg_ctx *ctx)
{
    size_t n = 0;
    for (const bg_gbuf *b = ctx->grad_pool ? ctx->grad_pool->all : NULL; b; b = b->next)
        n += b->bytes;
    return n;
}
