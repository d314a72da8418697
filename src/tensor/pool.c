/* pool.c - reusable buffers for the data of large step tensors and for the gradients of
 * intermediates (CPU).
 *
 * The step arena only grows within a step: everything it hands out stays until
 * bg_step_end. The pool instead takes buffers back as soon as nothing needs them:
 *  - an intermediate's gradient when the op that produced the intermediate has run its
 *    backward rule (tape.c);
 *  - a step tensor's data when the code that made it has dropped it (bg__step_drop) and
 *    no recorded node whose backward rule reads it is left (pins, tape.c);
 * so forward activations that backward never reads are reused while the forward runs, and
 * the saved ones serve as gradients once their layer's backward is done. Buffers match by
 * exact size - a model repeats its shapes layer after layer - and are kept across steps:
 * a steady training loop makes no heap allocation here after its first step. */
#include "tensor/tensor_impl.h"

#if defined(__SANITIZE_ADDRESS__)
#include <math.h>
#include <sanitizer/asan_interface.h>
#define BG_FILL_UNSET 1
#define POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

typedef struct bg_pbuf {
    void *data;
    size_t bytes;
    bool live;
    struct bg_pbuf *next;
} bg_pbuf;

typedef struct bg_ghdr {
    bg_tensor t; /* the gradient tensor handed out (first member) */
    bool live;
    struct bg_ghdr *next;
} bg_ghdr;

struct bg_pool {
    bg_pbuf *bufs;
    bg_ghdr *hdrs;
    size_t bytes, live_bytes, high_water;
    size_t grad_live, grad_high; /* gradient bytes held now / at most in this backward */
};

static struct bg_pool *pool_of(bg_ctx *ctx)
{
    if (!ctx->pool) ctx->pool = bg__calloc(ctx, 1, sizeof *ctx->pool);
    return ctx->pool;
}

void *bg__pool_take(bg_ctx *ctx, size_t bytes)
{
    struct bg_pool *p = pool_of(ctx);
    if (!p) goto oom;
    bg_pbuf *b = p->bufs;
    while (b && (b->live || b->bytes != bytes)) b = b->next;
    if (!b) {
        b = bg__calloc(ctx, 1, sizeof *b);
        void *data = b ? bg__aligned_alloc(ctx, bytes) : NULL;
        if (!data) {
            free(b);
            goto oom;
        }
        b->data = data;
        b->bytes = bytes;
        b->next = p->bufs;
        p->bufs = b;
        p->bytes += bytes;
    }
    UNPOISON(b->data, b->bytes);
    b->live = true;
    p->live_bytes += bytes;
    if (p->live_bytes > p->high_water) p->high_water = p->live_bytes;
    return b->data;
oom:
    bg__error(ctx, BG_ENOMEM, "out of memory allocating %zu bytes", bytes);
    return NULL;
}

static bg_pbuf *find_buf(struct bg_pool *p, const void *data)
{
    for (bg_pbuf *b = p ? p->bufs : NULL; b; b = b->next)
        if (b->data == data) return b;
    return NULL;
}

static void buf_give(struct bg_pool *p, bg_pbuf *b)
{
    if (!b || !b->live) return;
    b->live = false;
    p->live_bytes -= b->bytes;
    POISON(b->data, b->bytes);
}

void bg__pool_give(bg_ctx *ctx, void *data) { buf_give(ctx->pool, find_buf(ctx->pool, data)); }

bg_tensor *bg__grad_pool_get(bg_ctx *ctx, int ndim, const int64_t *shape, bool zero)
{
    struct bg_pool *p = pool_of(ctx);
    if (!p) goto oom;
    size_t bytes = (size_t)bg__numel(ndim, shape) * sizeof(float);
    bg_ghdr *h = p->hdrs;
    while (h && h->live) h = h->next;
    if (!h) {
        h = bg__calloc(ctx, 1, sizeof *h);
        if (!h) goto oom;
        h->next = p->hdrs;
        p->hdrs = h;
    }
    void *data = bg__pool_take(ctx, bytes);
    if (!data) return NULL;
    bg__init_header(&h->t, ctx, BG_F32, ndim, shape);
    h->t.data = data;
    if (zero) memset(data, 0, bytes);
#ifdef BG_FILL_UNSET
    else /* a rule that leaves an element of a buffer it must fill shows up as NaN */
        for (size_t i = 0; i < bytes / sizeof(float); i++) ((float *)data)[i] = NAN;
#endif
    h->live = true;
    p->grad_live += bytes;
    if (p->grad_live > p->grad_high) p->grad_high = p->grad_live;
    return &h->t;
oom:
    bg__error(ctx, BG_ENOMEM, "backward: out of memory for a gradient");
    return NULL;
}

bool bg__grad_pool_pass(bg_tensor *from, bg_tensor *to)
{
    bg_tensor *g = from->grad;
    if (!g || g->persistent || from->retain_grad || to->grad || to->persistent ||
        bg__numel(g->ndim, g->shape) != bg__numel(to->ndim, to->shape))
        return false;
    g->ndim = to->ndim;
    for (int i = 0; i < BG_MAX_DIMS; i++) g->shape[i] = i < to->ndim ? to->shape[i] : 0;
    bg__contig_strides(to->ndim, to->shape, g->stride);
    to->grad = g;
    from->grad = NULL;
    return true;
}

void bg__grad_pool_put(bg_tensor *g)
{
    bg_ghdr *h = (bg_ghdr *)g; /* t is the first member */
    struct bg_pool *p = g->ctx->pool;
    if (!h->live) return;
    h->live = false;
    p->grad_live -= (size_t)bg__numel(g->ndim, g->shape) * sizeof(float);
    buf_give(p, find_buf(p, g->data));
    g->magic = BG_MAGIC_DEAD;
}

void bg__pool_backward_begin(bg_ctx *ctx)
{
    if (ctx->pool) ctx->pool->grad_high = ctx->pool->grad_live;
}

void bg__pool_reset(bg_ctx *ctx)
{
    struct bg_pool *p = ctx->pool;
    if (!p) return;
    for (bg_ghdr *h = p->hdrs; h; h = h->next)
        if (h->live) {
            h->live = false;
            h->t.magic = BG_MAGIC_DEAD;
        }
    for (bg_pbuf *b = p->bufs; b; b = b->next) buf_give(p, b);
    p->grad_live = 0;
}

void bg__pool_free(bg_ctx *ctx)
{
    struct bg_pool *p = ctx->pool;
    if (!p) return;
    for (bg_pbuf *b = p->bufs, *nx; b; b = nx) {
        nx = b->next;
        UNPOISON(b->data, b->bytes);
        free(b->data);
        free(b);
    }
    for (bg_ghdr *h = p->hdrs, *nx; h; h = nx) {
        nx = h->next;
        free(h);
    }
    free(p);
    ctx->pool = NULL;
}

void bg__pool_add_stats(const bg_ctx *ctx, bg_ctx_stats *out)
{
    const struct bg_pool *p = ctx->pool;
    if (!p) return;
    out->pool_bytes = p->bytes;
    out->pool_high_water = p->high_water;
    out->grad_bytes = p->grad_high;
}

/* ---- early release of step tensors ---------------------------------------------------- */

static void release_if_free(bg_tensor *s)
{
    if (s->pooled && s->dropped && s->pins <= 0) {
        bg__pool_give(s->ctx, s->data);
        s->pooled = false;
    }
}

void bg__step_drop(bg_tensor *t)
{
    if (!t || t->magic != BG_MAGIC_LIVE || t->persistent) return;
    bg_tensor *s = bg__storage_of(t);
    if (s->persistent) return;
    s->dropped = true;
    release_if_free(s);
}

void bg__unpin(bg_tensor *t)
{
    bg_tensor *s = bg__storage_of(t);
    s->pins--;
    release_if_free(s);
}
