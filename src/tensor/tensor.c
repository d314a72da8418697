/* tensor.c - the context (errors, RNG, step lifetime) and tensor objects: creation,
 * accessors, views' bookkeeping, reading and writing values. */
#include <math.h>

#include "autograd/tape.h"
#include "bitgrad/quant.h"
#include "cuda/cuda_dispatch.h"
#include "tensor/tensor_impl.h"

/* ---- errors ------------------------------------------------------------ */

int bg__error(bg_ctx *ctx, int code, const char *fmt, ...)
{
    if (!ctx || ctx->err_code != 0) return code;
    ctx->err_code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->err_msg, sizeof ctx->err_msg, fmt, ap);
    va_end(ap);
    return code;
}

const char *bg_strerror(int code)
{
    switch (code) {
    case BG_OK: return "success";
    case BG_EINVAL: return "invalid argument";
    case BG_ENOMEM: return "out of memory";
    case BG_EIO: return "input/output error";
    case BG_EFORMAT: return "malformed file";
    case BG_ESHAPE: return "shape mismatch";
    case BG_EDEVICE: return "device mismatch";
    case BG_ESTATE: return "invalid state";
    case BG_ENONFINITE: return "non-finite value";
    case BG_EUNSUPPORTED: return "unsupported";
    case BG_ENODEV: return "no such device";
    case BG_ENOTFOUND: return "not found";
    default: return "unknown error";
    }
}

int bg_ctx_error_code(const bg_ctx *ctx) { return ctx ? ctx->err_code : BG_EINVAL; }
const char *bg_ctx_error(const bg_ctx *ctx) { return ctx ? ctx->err_msg : "no context"; }

void bg_ctx_clear_error(bg_ctx *ctx)
{
    if (!ctx) return;
    ctx->err_code = 0;
    ctx->err_msg[0] = '\0';
}

const char *bg__shape_str(const bg_tensor *t, char *buf, size_t n)
{
    size_t off = 0;
    off += (size_t)snprintf(buf + off, n - off, "[");
    for (int i = 0; i < t->ndim && off < n; i++)
        off += (size_t)snprintf(buf + off, n - off, i ? ",%lld" : "%lld", (long long)t->shape[i]);
    if (off < n) snprintf(buf + off, n - off, "]");
    return buf;
}

bool bg__check_live(const bg_tensor *t, const char *op)
{
    if (!t) return false;
    if (t->magic == BG_MAGIC_LIVE) return true;
    /* The header is dead: its ctx pointer may be stale too, so report on stderr. */
    fprintf(stderr, "bitgrad: %s: tensor used after bg_step_end or bg_tensor_free\n", op);
    return false;
}

const char *bg_dtype_name(bg_dtype dtype)
{
    static const char *names[] = { "f32", "f16", "bf16", "i8", "i32" };
    return (unsigned)dtype < 5 ? names[dtype] : "?";
}

size_t bg_dtype_size(bg_dtype dtype)
{
    static const size_t sizes[] = { 4, 2, 2, 1, 4 };
    return (unsigned)dtype < 5 ? sizes[dtype] : 0;
}

/* ---- context ------------------------------------------------------------- */

int bg_ctx_create(bg_ctx **out, bg_device device)
{
    if (!out) return BG_EINVAL;
    *out = NULL;
    if (device != BG_CPU) {
#ifndef BG_HAVE_CUDA
        return BG_ENODEV;
#else
        /* cuda hook: no GPU or driver is BG_ENODEV (bg_device_info says why) */
        if (device != BG_CUDA || bg__cuda_probe() != BG_OK) return BG_ENODEV;
#endif
    }
    bg_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return BG_ENOMEM;
    ctx->heap_allocs = 1;
    ctx->device = device;
    ctx->grad_enabled = true;
    ctx->training = true;
    ctx->rng = 0x853c49e6748fea9bull;
    ctx->tape = bg__calloc(ctx, 1, sizeof *ctx->tape);
    if (!ctx->tape) {
        free(ctx);
        return BG_ENOMEM;
    }
    ctx->tape->epoch = 1;
#ifdef BG_HAVE_CUDA
    if (device == BG_CUDA) { /* cuda hook: stream, cuBLAS handle, device scratch */
        int rc = bg__cuda_ctx_init(ctx);
        if (rc) {
            free(ctx->tape);
            free(ctx);
            return rc;
        }
    }
#endif
    *out = ctx;
    return BG_OK;
}

void bg_ctx_free(bg_ctx **pctx)
{
    if (!pctx || !*pctx) return;
    bg_ctx *ctx = *pctx;
    bg_step_end(ctx);
    /* Gradients are persistent tensors of the list too: free each tensor once. */
    for (bg_tensor *t = ctx->persist_list; t; t = t->next_persist) t->grad = NULL;
    while (ctx->persist_list) {
        bg_tensor *t = ctx->persist_list;
        bg_tensor_free(&t);
    }
    BG_CUDA_ALSO(ctx, bg__cuda_ctx_free(ctx)); /* cuda hook */
    bg__arena_free(ctx);
    bg__pool_free(ctx);
    bg__rope_tabs_free(ctx);
    if (ctx->tape) free(ctx->tape->nodes);
    free(ctx->tape);
    free(ctx);
    *pctx = NULL;
}

bg_device bg_ctx_device(const bg_ctx *ctx) { return ctx->device; }

void bg_ctx_stats_get(const bg_ctx *ctx, bg_ctx_stats *out)
{
    memset(out, 0, sizeof *out);
    out->heap_allocs = ctx->heap_allocs;
    bg__arena_add_stats(&ctx->arena, out);
    out->persistent_bytes = ctx->persistent_bytes;
    bg__pool_add_stats(ctx, out);
    out->tape_nodes = ctx->tape->n;
    out->matmul_calls = ctx->matmul_calls;
    out->matmul_flops = ctx->matmul_flops;
    out->steps = ctx->steps;
    BG_CUDA_ALSO(ctx, bg__cuda_stats(ctx, out)); /* cuda hook: adds the device arena */
}

void bg_step_end(bg_ctx *ctx)
{
    if (!ctx) return;
    /* Persistent tensors forget arena grads (only persistent grads survive). */
    for (bg_tensor *t = ctx->persist_list; t; t = t->next_persist)
        if (t->grad && !t->grad->persistent) t->grad = NULL;
    for (bg_tensor *t = ctx->step_list; t; t = t->next_step) t->magic = BG_MAGIC_DEAD;
    ctx->step_list = NULL;
    bg__tape_clear(ctx);
    bg__pool_reset(ctx);
    bg__arena_reset(ctx);
    BG_CUDA_ALSO(ctx, bg__cuda_arena_reset(ctx)); /* cuda hook */
    ctx->steps++;
}

bool bg_grad_enable(bg_ctx *ctx, bool enabled)
{
    bool prev = ctx->grad_enabled;
    ctx->grad_enabled = enabled;
    return prev;
}

bool bg_grad_enabled(const bg_ctx *ctx) { return ctx->grad_enabled; }

bool bg_ctx_set_training(bg_ctx *ctx, bool training)
{
    bool prev = ctx->training;
    ctx->training = training;
    return prev;
}

/* ---- RNG: splitmix64 (one 64-bit word of state, easy to checkpoint) ---- */

uint64_t bg__rng_next(bg_ctx *ctx)
{
    uint64_t z = (ctx->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void bg_ctx_seed(bg_ctx *ctx, uint64_t seed) { ctx->rng = seed; }
uint64_t bg_ctx_rng_state(const bg_ctx *ctx) { return ctx->rng; }
void bg_ctx_set_rng_state(bg_ctx *ctx, uint64_t state) { ctx->rng = state; }

float bg_rand_uniform(bg_ctx *ctx) { return (float)(bg__rng_next(ctx) >> 40) / 16777216.0f; }

float bg_rand_normal(bg_ctx *ctx)
{
    /* Box-Muller on two fresh draws; no cached spare, so the state is one word. */
    double u1 = ((double)(bg__rng_next(ctx) >> 11) + 1.0) / 9007199254740993.0;
    double u2 = (double)(bg__rng_next(ctx) >> 11) / 9007199254740992.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}
