/* ctx.c - the CUDA side of a ctx: device state, the device arena (one cudaMalloc per chunk,
 * reset by offset, as src/tensor/arena.c), persistent device tensors, and moving values
 * between host and device for the tensor API (read, write, fill, copy, item).
 *
 * Host-side conversions reuse the CPU code: device bytes are staged in a host buffer that
 * a stack "view" tensor (device CPU) describes, and bg_tensor_read / write / copy convert
 * through it. Nothing here copies behind a caller's back: these are the explicit transfer
 * functions of the API. */
#include <math.h>

#include "cuda/cuda_impl.h"

#define DEV_ARENA_MIN_CHUNK ((size_t)8 << 20)
#define SCRATCH_BYTES 64 /* flags (4 x u64), a double accumulator, a finite flag */

/* ---- device arena: src/tensor/arena.c's chunk bookkeeping over device memory ----------------- */

/* The merged chunk of a reset: kernels of the step may still read the old chunks. */
static void *dev_merge_alloc(bg_ctx *ctx, size_t size)
{
    void *p = bg__cu_malloc(NULL, size);
    if (p) {
        ctx->heap_allocs++;
        bg__cu_sync(ctx);
    }
    return p;
}

static const bg_arena_mem dev_mem = {
    .name = "cuda arena",
    .align = BG_CU_ALIGN,
    .min_chunk = DEV_ARENA_MIN_CHUNK,
    .chunk_alloc = bg__cu_malloc,
    .merge_alloc = dev_merge_alloc,
    .chunk_free = bg__cu_free,
};

void *bg__cuda_arena_alloc(bg_ctx *ctx, size_t size)
{
    return bg__arena_take(ctx, &bg__cu_state(ctx)->arena, &dev_mem, size);
}

void bg__cuda_arena_reset(bg_ctx *ctx)
{
    bg__arena_rewind(ctx, &bg__cu_state(ctx)->arena, &dev_mem);
}

/* ---- context ------------------------------------------------------------------------------- */

int bg__cuda_probe(void)
{
    char msg[256];
    return bg__cu_probe(msg, sizeof msg) > 0 ? BG_OK : BG_ENODEV;
}

int bg__cuda_ctx_init(bg_ctx *ctx)
{
    bg_cuda_state *s = bg__calloc(ctx, 1, sizeof *s);
    if (!s) return BG_ENOMEM;
    ctx->device_state = s;
    int rc = bg__cu_state_init(ctx, s);
    unsigned char *scratch = rc ? NULL : bg__cu_malloc(ctx, SCRATCH_BYTES);
    if (!scratch) {
        bg__cuda_ctx_free(ctx);
        return rc ? rc : BG_ENOMEM;
    }
    bg__cu_memset(ctx, scratch, 0, SCRATCH_BYTES);
    s->flags = (unsigned long long *)scratch;
    s->acc = (double *)(scratch + 32);
    s->nonfinite = (int *)(scratch + 40);
    return ctx->err_code ? ctx->err_code : BG_OK;
}

void bg__cuda_ctx_free(bg_ctx *ctx)
{
    bg_cuda_state *s = bg__cu_state(ctx);
    if (!s) return;
    if (s->stream) bg__cu_sync(ctx);
    bg__arena_release(&s->arena, &dev_mem);
    bg__cu_free(s->flags);
    bg__cu_free(s->dev_stage);
    free(s->host_stage);
    bg__cu_state_free(s);
    free(s);
    ctx->device_state = NULL;
}

void bg__cuda_stats(const bg_ctx *ctx, bg_ctx_stats *out)
{
    bg__arena_add_stats(&bg__cu_state(ctx)->arena, out);
}

bool bg__cuda_ok(bg_ctx *ctx) { return ctx->err_code == 0; }

void bg__cuda_reset_flags(bg_ctx *ctx)
{
    bg_cuda_state *s = bg__cu_state(ctx);
    bg__cu_memset(ctx, s->flags, 0xff, sizeof *s->flags);
    bg__cu_memset(ctx, s->flags + 1, 0, sizeof *s->flags);
}

int bg__cuda_read_flags(bg_ctx *ctx, unsigned long long out[2])
{
    return bg__cu_copy(ctx, out, bg__cu_state(ctx)->flags, 2 * sizeof *out, BG_CU_D2H);
}

/* ---- persistent device tensors --------------------------------------------------------------- */

/* As bg_tensor_new, with the data in its own zeroed device allocation. */
bg_tensor *bg__cuda_tensor_new(bg_ctx *ctx, bg_dtype dtype, int ndim, const int64_t *shape)
{
    size_t bytes = (size_t)bg__numel(ndim, shape) * bg_dtype_size(dtype);
    void *data = bg__cu_malloc(ctx, bytes);
    if (!data) return NULL;
    bg__cu_memset(ctx, data, 0, bytes);
    bg_tensor *t = bg__aligned_alloc(ctx, sizeof *t);
    if (!t) {
        bg__cu_free(data);
        bg__error(ctx, BG_ENOMEM, "bg_tensor_new: out of memory");
        return NULL;
    }
    memset(t, 0, sizeof *t);
    t->magic = BG_MAGIC_LIVE;
    t->ctx = ctx;
    t->dtype = dtype;
    t->device = BG_CUDA;
    t->ndim = ndim;
    t->is_leaf = true;
    t->persistent = true;
    t->owns_data = true;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    bg__contig_strides(ndim, shape, t->stride);
    t->data = data;
    t->next_persist = ctx->persist_list;
    if (ctx->persist_list) ctx->persist_list->prev_persist = t;
    ctx->persist_list = t;
    ctx->persistent_bytes += bytes;
    return t;
}

void bg__cuda_free_data(bg_tensor *t)
{
    bg__cu_sync(t->ctx); /* queued kernels may still use it */
    bg__cu_free(t->data);
    t->data = NULL;
}

bg_tensor *bg__cuda_zero(bg_tensor *t)
{
    if (t)
        bg__cu_memset(t->ctx, t->data, 0,
                      (size_t)bg__numel(t->ndim, t->shape) * bg_dtype_size(t->dtype));
    return t;
}

bg_tensor *bg__cuda_full(bg_tensor *t, float value)
{
    if (t) bg__cu_fill(t->ctx, t->data, bg__numel(t->ndim, t->shape), value);
    return t;
}

bg_tensor *bg__cuda_upload(bg_tensor *t, const void *host_data)
{
    if (!t) return NULL;
    size_t bytes = (size_t)bg__numel(t->ndim, t->shape) * bg_dtype_size(t->dtype);
    return bg__cu_copy(t->ctx, t->data, host_data, bytes, BG_CU_H2D) ? NULL : t;
}

/* ---- staging --------------------------------------------------------------------------------- */

/* Host staging: slot 0 holds device bytes in transit, slot 1 the other side of a conversion. */
static void *host_stage(bg_ctx *ctx, int slot, size_t n)
{
    bg_cuda_state *s = bg__cu_state(ctx);
    size_t half = s->host_stage_cap / 2;
    if (half < n) {
        void *p = bg__realloc(ctx, s->host_stage, 2 * n);
        if (!p) {
            bg__error(ctx, BG_ENOMEM, "cuda: out of host memory staging %zu bytes", n);
            return NULL;
        }
        s->host_stage = p;
        s->host_stage_cap = 2 * n;
        half = n;
    }
    return (unsigned char *)s->host_stage + (size_t)slot * half;
}

static void *dev_stage(bg_ctx *ctx, size_t n)
{
    bg_cuda_state *s = bg__cu_state(ctx);
    if (s->dev_stage_cap < n) {
        bg__cu_sync(ctx);
        bg__cu_free(s->dev_stage);
        s->dev_stage_cap = 0;
        s->dev_stage = bg__cu_malloc(ctx, n);
        if (!s->dev_stage) return NULL;
        s->dev_stage_cap = n;
    }
    return s->dev_stage;
}

/* A contiguous host tensor over data with t's dtype and shape (for CPU conversions). */
static bg_tensor host_view(const bg_tensor *t, bg_ctx *ctx, void *data)
{
    bg_tensor v = *t;
    v.device = BG_CPU;
    v.ctx = ctx;
    v.data = data;
    v.view_of = NULL;
    v.recorded_epoch = 0;
    v.persistent = false;
    v.grad = NULL;
    bg__contig_strides(t->ndim, t->shape, v.stride);
    return v;
}

static size_t nbytes(const bg_tensor *t)
{
    return (size_t)bg__numel(t->ndim, t->shape) * bg_dtype_size(t->dtype);
}

/* t's bytes, contiguous, in host slot `slot` (gathered on the device first if strided). */
static const void *download(const bg_tensor *t, bg_ctx *host_ctx, int slot)
{
    bg_ctx *ctx = t->ctx;
    size_t bytes = nbytes(t);
    const void *src = t->data;
    if (!bg__is_contig(t)) {
        void *d = dev_stage(ctx, bytes);
        if (!d) return NULL;
        bg__cu_copy_strided(ctx, d, bg__cu_layout_contig(t->ndim, t->shape), t->data,
                            bg__cu_layout(t), (int)bg_dtype_size(t->dtype));
        src = d;
    }
    void *h = host_stage(host_ctx, slot, bytes);
    if (!h || bg__cu_copy(ctx, h, src, bytes, BG_CU_D2H)) return NULL;
    return h;
}

/* Contiguous host bytes of t's dtype into t (scattered on the device if strided). */
static int upload(bg_tensor *t, const void *h)
{
    bg_ctx *ctx = t->ctx;
    size_t bytes = nbytes(t);
    if (bg__is_contig(t)) return bg__cu_copy(ctx, t->data, h, bytes, BG_CU_H2D);
    void *d = dev_stage(ctx, bytes);
    if (!d || bg__cu_copy(ctx, d, h, bytes, BG_CU_H2D))
        return ctx->err_code ? ctx->err_code : BG_ENOMEM;
    bg__cu_copy_strided(ctx, t->data, bg__cu_layout(t), d, bg__cu_layout_contig(t->ndim, t->shape),
                        (int)bg_dtype_size(t->dtype));
    return ctx->err_code;
}

/* ---- values in and out ----------------------------------------------------------------------- */

int bg__cuda_read(const bg_tensor *t, float *dst)
{
    bg_ctx *ctx = t->ctx;
    if (t->dtype == BG_F32 && bg__is_contig(t))
        return bg__cu_copy(ctx, dst, t->data, nbytes(t), BG_CU_D2H);
    const void *h = download(t, ctx, 0);
    if (!h) return ctx->err_code ? ctx->err_code : BG_ENOMEM;
    bg_tensor v = host_view(t, ctx, (void *)h);
    return bg_tensor_read(&v, dst);
}

int bg__cuda_write(bg_tensor *t, const float *src)
{
    bg_ctx *ctx = t->ctx;
    if (t->dtype == BG_F32) return upload(t, src);
    void *h = host_stage(ctx, 0, nbytes(t));
    if (!h) return BG_ENOMEM;
    bg_tensor v = host_view(t, ctx, h);
    int rc = bg_tensor_write(&v, src);
    return rc ? rc : upload(t, h);
}

int bg__cuda_fill(bg_tensor *t, float value)
{
    if (t->dtype == BG_F32 && bg__is_contig(t)) {
        bg__cu_fill(t->ctx, t->data, bg__numel(t->ndim, t->shape), value);
        return t->ctx->err_code;
    }
    int64_t n = bg__numel(t->ndim, t->shape);
    float *buf = host_stage(t->ctx, 1, (size_t)n * sizeof *buf);
    if (!buf) return BG_ENOMEM;
    for (int64_t i = 0; i < n; i++) buf[i] = value;
    return bg__cuda_write(t, buf);
}

int bg__cuda_fill_random(bg_tensor *t, float a, float b, bool normal)
{
    int64_t n = bg__numel(t->ndim, t->shape);
    float *buf = host_stage(t->ctx, 1, (size_t)n * sizeof *buf);
    if (!buf) return BG_ENOMEM;
    /* The expressions of bg_tensor_fill_randn / fill_uniform, in logical order. */
    for (int64_t i = 0; i < n; i++)
        buf[i] = normal ? a + b * bg_rand_normal(t->ctx) : a + (b - a) * bg_rand_uniform(t->ctx);
    return bg__cuda_write(t, buf);
}

float bg__cuda_item(const bg_tensor *t)
{
    unsigned char raw[8];
    if (bg__cu_copy(t->ctx, raw, t->data, bg_dtype_size(t->dtype), BG_CU_D2H)) return NAN;
    bg_tensor v = host_view(t, t->ctx, raw);
    float out = NAN;
    bg_tensor_read(&v, &out);
    return out;
}

/* Any pair with at least one device tensor; numel already checked equal. */
int bg__cuda_copy(bg_tensor *dst, const bg_tensor *src)
{
    bool d_dev = dst->device == BG_CUDA, s_dev = src->device == BG_CUDA;
    if (d_dev && s_dev && dst->dtype == src->dtype) {
        if (src->ctx != dst->ctx && bg__cu_sync(src->ctx)) return src->ctx->err_code;
        bg__cu_copy_strided(dst->ctx, dst->data, bg__cu_layout(dst), src->data, bg__cu_layout(src),
                            (int)bg_dtype_size(src->dtype));
        if (src->ctx != dst->ctx) bg__cu_sync(dst->ctx);
        return dst->ctx->err_code;
    }
    bg_ctx *ctx = d_dev ? dst->ctx : src->ctx;
    bg_tensor sv, dv;
    const bg_tensor *from = src;
    if (s_dev) { /* bring src to the host, as src's dtype */
        const void *h = download(src, ctx, 0);
        if (!h) return ctx->err_code ? ctx->err_code : BG_ENOMEM;
        sv = host_view(src, ctx, (void *)h);
        from = &sv;
    }
    if (!d_dev) return bg_tensor_copy(dst, from);
    void *h = host_stage(ctx, 1, nbytes(dst));
    if (!h) return BG_ENOMEM;
    dv = host_view(dst, ctx, h);
    int rc = bg_tensor_copy(&dv, from); /* converts on the host */
    return rc ? rc : upload(dst, h);
}

const void *bg__cuda_contig(const bg_tensor *t)
{
    if (bg__is_contig(t)) return t->data;
    void *d = bg__cuda_arena_alloc(t->ctx, nbytes(t));
    if (!d) return NULL;
    bg__cu_copy_strided(t->ctx, d, bg__cu_layout_contig(t->ndim, t->shape), t->data,
                        bg__cu_layout(t), (int)bg_dtype_size(t->dtype));
    return d;
}

/* ---- layouts --------------------------------------------------------------------------------- */

bg_cu_layout bg__cu_layout_from(int ndim, const int64_t *shape, const int64_t *stride)
{
    bg_cu_layout l;
    int off = 4 - ndim;
    for (int i = 0; i < 4; i++) {
        l.shape[i] = i < off ? 1 : shape[i - off];
        l.stride[i] = i < off ? 0 : stride[i - off];
    }
    return l;
}

bg_cu_layout bg__cu_layout(const bg_tensor *t)
{
    return bg__cu_layout_from(t->ndim, t->shape, t->stride);
}

bg_cu_layout bg__cu_layout_contig(int ndim, const int64_t *shape)
{
    bg_cu_layout l;
    int off = 4 - ndim;
    int64_t s = 1;
    for (int i = 3; i >= 0; i--) {
        l.shape[i] = i < off ? 1 : shape[i - off];
        l.stride[i] = s;
        s *= l.shape[i];
    }
    return l;
}
