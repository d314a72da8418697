/* tensor_obj.c - tensor creation (persistent and step), accessors, and moving values
 * in and out of tensors of any dtype and layout. */
#include <math.h>

#include "autograd/tape.h"
#include "bitgrad/quant.h"
#include "cuda/cuda_dispatch.h"
#include "tensor/tensor_impl.h"

int64_t bg__numel(int ndim, const int64_t *shape)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    return n;
}

void bg__contig_strides(int ndim, const int64_t *shape, int64_t *stride)
{
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        stride[i] = s;
        s *= shape[i];
    }
}

bool bg__is_contig(const bg_tensor *t)
{
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->stride[i] != s) return false;
        s *= t->shape[i];
    }
    return true;
}

bool bg__same_shape(const bg_tensor *a, const bg_tensor *b)
{
    if (a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

static int check_shape(bg_ctx *ctx, const char *what, bg_dtype dtype, int ndim,
                       const int64_t *shape)
{
    if (ndim < 0 || ndim > BG_MAX_DIMS || (ndim > 0 && !shape))
        return bg__error(ctx, BG_EINVAL, "%s: ndim %d out of range 0..%d", what, ndim,
                         BG_MAX_DIMS);
    if ((unsigned)dtype > BG_I32) return bg__error(ctx, BG_EINVAL, "%s: bad dtype %d", what, dtype);
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || (shape[i] > 0 && n > INT64_MAX / 8 / shape[i]))
            return bg__error(ctx, BG_EINVAL, "%s: dimension %d has bad size %lld", what, i,
                             (long long)shape[i]);
        n *= shape[i];
    }
    return BG_OK;
}

void bg__init_header(bg_tensor *t, bg_ctx *ctx, bg_dtype dtype, int ndim, const int64_t *shape)
{
    memset(t, 0, sizeof *t);
    t->magic = BG_MAGIC_LIVE;
    t->ctx = ctx;
    t->dtype = dtype;
    t->device = ctx->device;
    t->ndim = ndim;
    t->is_leaf = true;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    bg__contig_strides(ndim, shape, t->stride);
}

bg_tensor *bg__step_new(bg_ctx *ctx, bg_dtype dtype, int ndim, const int64_t *shape)
{
    if (check_shape(ctx, "tensor", dtype, ndim, shape)) return NULL;
    size_t bytes = (size_t)bg__numel(ndim, shape) * bg_dtype_size(dtype);
    bg_tensor *t = bg__arena_alloc(ctx, sizeof *t);
    if (!t) return NULL;
    /* Large host tensors come from the pool, which takes them back once dropped and unread. */
    bool pooled = ctx->device == BG_CPU && bytes >= BG_POOL_MIN;
    void *data = pooled ? bg__pool_take(ctx, bytes)
                        : BG_STEP_DATA_ALLOC(ctx, bytes); /* cuda hook: device arena on a CUDA ctx */
    if (!data) return NULL;
    bg__init_header(t, ctx, dtype, ndim, shape);
    t->data = data;
    t->pooled = pooled;
    t->next_step = ctx->step_list;
    ctx->step_list = t;
    return t;
}

bg_tensor *bg__step_view(const bg_tensor *base, int ndim, const int64_t *shape,
                         const int64_t *stride, void *data)
{
    bg_ctx *ctx = base->ctx;
    bg_tensor *t = bg__arena_alloc(ctx, sizeof *t);
    if (!t) return NULL;
    bg__init_header(t, ctx, base->dtype, ndim, shape);
    for (int i = 0; i < ndim; i++) t->stride[i] = stride[i];
    t->data = data;
    t->view_of = base->view_of ? base->view_of : base;
    t->next_step = ctx->step_list;
    ctx->step_list = t;
    return t;
}

bg_tensor *bg_tensor_new(bg_ctx *ctx, bg_dtype dtype, int ndim, const int64_t *shape)
{
    if (!ctx || check_shape(ctx, "bg_tensor_new", dtype, ndim, shape)) return NULL;
    BG_CUDA_DISPATCH(ctx, bg__cuda_tensor_new(ctx, dtype, ndim, shape)); /* cuda hook */
    size_t bytes = (size_t)bg__numel(ndim, shape) * bg_dtype_size(dtype);
    size_t head = (sizeof(bg_tensor) + 63) / 64 * 64;
    bg_tensor *t = bg__aligned_alloc(ctx, head + bytes);
    if (!t) {
        bg__error(ctx, BG_ENOMEM, "bg_tensor_new: out of memory (%zu bytes)", head + bytes);
        return NULL;
    }
    bg__init_header(t, ctx, dtype, ndim, shape);
    t->persistent = true;
    t->data = (unsigned char *)t + head;
    memset(t->data, 0, bytes);
    t->next_persist = ctx->persist_list;
    if (ctx->persist_list) ctx->persist_list->prev_persist = t;
    ctx->persist_list = t;
    ctx->persistent_bytes += bytes;
    return t;
}

bg_tensor *bg_param(bg_ctx *ctx, const char *name, int ndim, const int64_t *shape)
{
    bg_tensor *t = bg_tensor_new(ctx, BG_F32, ndim, shape);
    if (!t) return NULL;
    t->requires_grad = true;
    if (name) bg_tensor_set_name(t, name);
    return t;
}

void bg_tensor_free(bg_tensor **pt)
{
    if (!pt || !*pt) return;
    bg_tensor *t = *pt;
    *pt = NULL;
    if (t->magic != BG_MAGIC_LIVE || !t->persistent) return; /* step tensors die with the step */
    bg_ctx *ctx = t->ctx;
    if (t->grad && t->grad->persistent && t->grad != t) bg_tensor_free(&t->grad);
    if (t->prev_persist) t->prev_persist->next_persist = t->next_persist;
    else ctx->persist_list = t->next_persist;
    if (t->next_persist) t->next_persist->prev_persist = t->prev_persist;
    if (t->data) /* a header without data (packed.c) counted none */
        ctx->persistent_bytes -= (size_t)bg__numel(t->ndim, t->shape) * bg_dtype_size(t->dtype);
    t->magic = BG_MAGIC_DEAD;
    BG_CUDA_ALSO(t, bg__cuda_free_data(t)); /* cuda hook: the data is a device allocation */
    free(t);
}

bg_tensor *bg_zeros(bg_ctx *ctx, bg_dtype dtype, int ndim, const int64_t *shape)
{
    if (!ctx) return NULL;
    bg_tensor *t = bg__step_new(ctx, dtype, ndim, shape);
    BG_CUDA_DISPATCH(ctx, bg__cuda_zero(t)); /* cuda hook */
    if (t) memset(t->data, 0, (size_t)bg__numel(ndim, shape) * bg_dtype_size(dtype));
    return t;
}

bg_tensor *bg_full(bg_ctx *ctx, int ndim, const int64_t *shape, float value)
{
    if (!ctx) return NULL;
    bg_tensor *t = bg__step_new(ctx, BG_F32, ndim, shape);
    if (!t) return NULL;
    BG_CUDA_DISPATCH(ctx, bg__cuda_full(t, value)); /* cuda hook */
    int64_t n = bg__numel(ndim, shape);
    for (int64_t i = 0; i < n; i++) bg__f32(t)[i] = value;
    return t;
}

bg_tensor *bg_from_data(bg_ctx *ctx, bg_dtype dtype, int ndim, const int64_t *shape,
                        const void *data)
{
    if (!ctx) return NULL;
    if (!data) {
        bg__error(ctx, BG_EINVAL, "bg_from_data: data is NULL");
        return NULL;
    }
    bg_tensor *t = bg__step_new(ctx, dtype, ndim, shape);
    BG_CUDA_DISPATCH(ctx, bg__cuda_upload(t, data)); /* cuda hook */
    if (t) memcpy(t->data, data, (size_t)bg__numel(ndim, shape) * bg_dtype_size(dtype));
    return t;
}

bg_tensor *bg_randn(bg_ctx *ctx, int ndim, const int64_t *shape, float mean, float std)
{
    if (!ctx) return NULL;
    bg_tensor *t = bg__step_new(ctx, BG_F32, ndim, shape);
    if (t) bg_tensor_fill_randn(t, mean, std);
    return t;
}

bg_tensor *bg_tensor_keep(const bg_tensor *src)
{
    if (!bg__check_live(src, "bg_tensor_keep")) return NULL;
    bg_tensor *t = bg_tensor_new(src->ctx, src->dtype, src->ndim, src->shape);
    if (t && bg_tensor_copy(t, src) != BG_OK) bg_tensor_free(&t);
    return t;
}

/* ---- accessors ------------------------------------------------------------ */

bg_ctx *bg_tensor_ctx(const bg_tensor *t) { return t ? t->ctx : NULL; }
int bg_tensor_ndim(const bg_tensor *t) { return t->ndim; }
const int64_t *bg_tensor_shape(const bg_tensor *t) { return t->shape; }
const int64_t *bg_tensor_strides(const bg_tensor *t) { return t->stride; }
int64_t bg_tensor_numel(const bg_tensor *t) { return bg__numel(t->ndim, t->shape); }
bg_dtype bg_tensor_dtype(const bg_tensor *t) { return t->dtype; }
bg_device bg_tensor_device(const bg_tensor *t) { return t->device; }
bool bg_tensor_is_contiguous(const bg_tensor *t) { return bg__is_contig(t); }
bool bg_tensor_is_persistent(const bg_tensor *t) { return t->persistent; }
void *bg_tensor_data(bg_tensor *t) { return t ? t->data : NULL; }
const void *bg_tensor_data_const(const bg_tensor *t) { return t ? t->data : NULL; }
const char *bg_tensor_name(const bg_tensor *t) { return t->name; }
bool bg_tensor_requires_grad(const bg_tensor *t) { return t->requires_grad; }
bg_tensor *bg_tensor_grad(const bg_tensor *t) { return t ? t->grad : NULL; }

int bg_tensor_retain_grad(bg_tensor *t)
{
    if (!bg__check_live(t, "bg_tensor_retain_grad")) return t ? BG_ESTATE : BG_EINVAL;
    t->retain_grad = true;
    return BG_OK;
}

int64_t bg_tensor_dim(const bg_tensor *t, int axis)
{
    if (axis < 0) axis += t->ndim;
    return (axis >= 0 && axis < t->ndim) ? t->shape[axis] : 0;
}

int bg_tensor_set_name(bg_tensor *t, const char *name)
{
    if (!t || !name) return BG_EINVAL;
    if (strlen(name) >= BG_NAME_MAX)
        return bg__error(t->ctx, BG_EINVAL, "tensor name '%s' is longer than %d bytes", name,
                         BG_NAME_MAX - 1);
    snprintf(t->name, sizeof t->name, "%s", name);
    return BG_OK;
}

int bg_tensor_set_requires_grad(bg_tensor *t, bool requires_grad)
{
    if (!bg__check_live(t, "bg_tensor_set_requires_grad")) return BG_EINVAL;
    if (!t->is_leaf)
        return bg__error(t->ctx, BG_ESTATE, "set_requires_grad: '%s' is an op result, not a leaf",
                         t->name);
    if (requires_grad && t->dtype != BG_F32)
        return bg__error(t->ctx, BG_EINVAL, "set_requires_grad: only f32 tensors can have grads");
    t->requires_grad = requires_grad;
    return BG_OK;
}

/* ---- values in and out ----------------------------------------------------- */

static float load_elem(const bg_tensor *t, int64_t off)
{
    const unsigned char *p = t->data;
    switch (t->dtype) {
    case BG_F32: return ((const float *)p)[off];
    case BG_F16: return bg_fp16_to_fp32(((const uint16_t *)p)[off]);
    case BG_BF16: return bg_bf16_to_fp32(((const uint16_t *)p)[off]);
    case BG_I8: return (float)((const int8_t *)p)[off];
    case BG_I32: return (float)((const int32_t *)p)[off];
    }
    return 0.0f;
}

static void store_elem(bg_tensor *t, int64_t off, float v)
{
    unsigned char *p = t->data;
    switch (t->dtype) {
    case BG_F32: ((float *)p)[off] = v; break;
    case BG_F16: ((uint16_t *)p)[off] = bg_fp32_to_fp16(v); break;
    case BG_BF16: ((uint16_t *)p)[off] = bg_fp32_to_bf16(v); break;
    case BG_I8: ((int8_t *)p)[off] = (int8_t)fmaxf(-128.0f, fminf(127.0f, roundf(v))); break;
    case BG_I32: ((int32_t *)p)[off] = (int32_t)v; break;
    }
}

/* Element offset of the i-th element in logical row-major order. */
static int64_t logical_offset(const bg_tensor *t, int64_t i)
{
    int64_t off = 0;
    for (int d = t->ndim - 1; d >= 0; d--) {
        off += (i % t->shape[d]) * t->stride[d];
        i /= t->shape[d];
    }
    return off;
}

int bg_tensor_read(const bg_tensor *t, float *dst)
{
    if (!bg__check_live(t, "bg_tensor_read") || !dst) return BG_EINVAL;
    BG_CUDA_DISPATCH(t, bg__cuda_read(t, dst)); /* cuda hook */
    int64_t n = bg__numel(t->ndim, t->shape);
    bool contig = bg__is_contig(t);
    for (int64_t i = 0; i < n; i++) dst[i] = load_elem(t, contig ? i : logical_offset(t, i));
    return BG_OK;
}

static int check_writable(bg_tensor *t, const char *what)
{
    if (!bg__check_live(t, what)) return BG_EINVAL;
    if (!t->data && bg__numel(t->ndim, t->shape) > 0) /* a packed frozen base (src/nn/packed.c) */
        return bg__error(t->ctx, BG_ESTATE, "%s: tensor '%s' is held packed (ternary codes): "
                         "bg_module_unpack it first", what, t->name);
    const bg_tensor *root = t->view_of ? t->view_of : t;
    uint64_t ep = t->ctx->tape->epoch;
    bool recorded = (t->recorded_epoch == ep || root->recorded_epoch == ep) && t->ctx->tape->n > 0;
    if (recorded)
        return bg__error(t->ctx, BG_ESTATE,
                         "%s: in-place write to tensor '%s' that the autograd tape recorded "
                         "(run backward or bg_step_end first)", what, t->name);
    return BG_OK;
}

int bg_tensor_write(bg_tensor *t, const float *src)
{
    int rc = check_writable(t, "bg_tensor_write");
    if (rc) return rc;
    if (!src) return BG_EINVAL;
    BG_CUDA_DISPATCH(t, bg__cuda_write(t, src)); /* cuda hook */
    int64_t n = bg__numel(t->ndim, t->shape);
    bool contig = bg__is_contig(t);
    for (int64_t i = 0; i < n; i++) store_elem(t, contig ? i : logical_offset(t, i), src[i]);
    return BG_OK;
}

int bg_tensor_fill(bg_tensor *t, float value)
{
    int rc = check_writable(t, "bg_tensor_fill");
    if (rc) return rc;
    BG_CUDA_DISPATCH(t, bg__cuda_fill(t, value)); /* cuda hook */
    int64_t n = bg__numel(t->ndim, t->shape);
    bool contig = bg__is_contig(t);
    for (int64_t i = 0; i < n; i++) store_elem(t, contig ? i : logical_offset(t, i), value);
    return BG_OK;
}

int bg_tensor_fill_randn(bg_tensor *t, float mean, float std)
{
    int rc = check_writable(t, "bg_tensor_fill_randn");
    if (rc) return rc;
    BG_CUDA_DISPATCH(t, bg__cuda_fill_random(t, mean, std, true)); /* cuda hook */
    int64_t n = bg__numel(t->ndim, t->shape);
    bool contig = bg__is_contig(t);
    for (int64_t i = 0; i < n; i++)
        store_elem(t, contig ? i : logical_offset(t, i), mean + std * bg_rand_normal(t->ctx));
    return BG_OK;
}

int bg_tensor_fill_uniform(bg_tensor *t, float lo, float hi)
{
    int rc = check_writable(t, "bg_tensor_fill_uniform");
    if (rc) return rc;
    BG_CUDA_DISPATCH(t, bg__cuda_fill_random(t, lo, hi, false)); /* cuda hook */
    int64_t n = bg__numel(t->ndim, t->shape);
    bool contig = bg__is_contig(t);
    for (int64_t i = 0; i < n; i++)
        store_elem(t, contig ? i : logical_offset(t, i), lo + (hi - lo) * bg_rand_uniform(t->ctx));
    return BG_OK;
}

int bg_tensor_copy(bg_tensor *dst, const bg_tensor *src)
{
    int rc = check_writable(dst, "bg_tensor_copy");
    if (rc) return rc;
    if (!bg__check_live(src, "bg_tensor_copy")) return BG_EINVAL;
    if (bg__numel(dst->ndim, dst->shape) != bg__numel(src->ndim, src->shape)) {
        char a[64], b[64];
        return bg__error(dst->ctx, BG_ESHAPE, "bg_tensor_copy: %s into %s: sizes differ",
                         bg__shape_str(src, a, sizeof a), bg__shape_str(dst, b, sizeof b));
    }
#ifdef BG_HAVE_CUDA
    if (dst->device == BG_CUDA || src->device == BG_CUDA) return bg__cuda_copy(dst, src); /* hook */
#endif
    int64_t n = bg__numel(src->ndim, src->shape);
    if (dst->dtype == src->dtype && bg__is_contig(dst) && bg__is_contig(src)) {
        memmove(dst->data, src->data, (size_t)n * bg_dtype_size(src->dtype));
        return BG_OK;
    }
    bool cd = bg__is_contig(dst), cs = bg__is_contig(src);
    for (int64_t i = 0; i < n; i++)
        store_elem(dst, cd ? i : logical_offset(dst, i),
                   load_elem(src, cs ? i : logical_offset(src, i)));
    return BG_OK;
}

float bg_item(const bg_tensor *t)
{
    if (!bg__check_live(t, "bg_item")) return NAN;
    if (bg__numel(t->ndim, t->shape) != 1) {
        char s[64];
        bg__error(t->ctx, BG_ESHAPE, "bg_item: tensor %s has more than one element",
                  bg__shape_str(t, s, sizeof s));
        return NAN;
    }
    BG_CUDA_DISPATCH(t, bg__cuda_item(t)); /* cuda hook */
    return load_elem(t, 0);
}

void bg__gather_f32(const bg_tensor *a, float *dst)
{
    int64_t n = bg__numel(a->ndim, a->shape);
    if (bg__is_contig(a)) {
        memcpy(dst, a->data, (size_t)n * sizeof(float));
        return;
    }
    /* Walk the last dimension innermost for locality. */
    int64_t inner = a->ndim ? a->shape[a->ndim - 1] : 1;
    int64_t st = a->ndim ? a->stride[a->ndim - 1] : 1;
    const float *src = a->data;
    for (int64_t row = 0; row < n / (inner ? inner : 1); row++) {
        int64_t off = logical_offset(a, row * inner);
        for (int64_t j = 0; j < inner; j++) dst[row * inner + j] = src[off + j * st];
    }
}

const float *bg__contig_data(const bg_tensor *a)
{
    BG_CUDA_DISPATCH(a, (const float *)bg__cuda_contig(a)); /* cuda hook */
    if (bg__is_contig(a)) return a->data;
    float *buf = bg__arena_alloc(a->ctx, (size_t)bg__numel(a->ndim, a->shape) * sizeof(float));
    if (buf) bg__gather_f32(a, buf);
    return buf;
}
