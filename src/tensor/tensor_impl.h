/* tensor_impl.h - private layout of bg_ctx and bg_tensor, and the helpers every
 * part of the library shares: allocation (counted), errors, shape arithmetic. */
#ifndef BG_TENSOR_IMPL_H
#define BG_TENSOR_IMPL_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitgrad/tensor.h"

#define BG_INTERNAL __attribute__((visibility("hidden")))

#define BG_MAGIC_LIVE 0x7447424cu /* "LBGt" */
#define BG_MAGIC_DEAD 0xdeadbeefu

/* Internal invariant check: a failure is a bug in bitgrad, never caused by input. */
#define BG_ASSERT(cond)                                                                    \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "bitgrad: internal error at %s:%d: %s\n", __FILE__, __LINE__,  \
                    #cond);                                                                \
            abort();                                                                       \
        }                                                                                  \
    } while (0)

struct bg_tape; /* autograd/tape.h */

typedef struct bg_arena_chunk {
    unsigned char *base;
    size_t cap;
    size_t used;
} bg_arena_chunk;

typedef struct bg_arena {
    bg_arena_chunk *chunks;
    int n_chunks, cap_chunks;
    int cur;             /* chunk being filled */
    size_t used_total;   /* bytes handed out this step (incl. alignment) */
    size_t high_water;
    size_t default_chunk;
} bg_arena;

struct bg_tensor {
    uint32_t magic;
    bool persistent;
    bool requires_grad;
    bool is_leaf;        /* not produced by a recorded op */
    bool owns_data;      /* persistent tensor that freed its data with itself */
    bool retain_grad;    /* keep this intermediate's gradient after backward */
    bool pooled;         /* step tensor whose data is a pool buffer (pool.c) */
    bool dropped;        /* its creator is done with it: the buffer goes back once unpinned */
    int32_t pins;        /* recorded nodes whose backward reads this storage (views pin
                            their base) */
    int ndim;
    bg_dtype dtype;
    bg_device device;
    int64_t shape[BG_MAX_DIMS];
    int64_t stride[BG_MAX_DIMS];
    void *data;          /* first element */
    bg_ctx *ctx;
    bg_tensor *grad;     /* persistent grad for persistent tensors; arena grad during backward */
    bg_tensor *next_step;  /* list of step tensors of this step (for invalidation) */
    bg_tensor *prev_persist, *next_persist;
    const bg_tensor *view_of; /* base tensor when this is a view */
    uint64_t recorded_epoch; /* tape epoch in which this tensor was an op input, or 0 */
    int64_t grad_final_at; /* tape node after which its gradient is final + 1 (tape.c, hook) */
    char name[BG_NAME_MAX];
};

struct bg_ctx {
    bg_device device;
    bool grad_enabled;
    bool training;
    int err_code;
    char err_msg[512];
    bg_arena arena;
    struct bg_tape *tape;
    bg_tensor *step_list;     /* step tensors of the current step */
    bg_tensor *persist_list;  /* persistent tensors */
    uint64_t rng;
    bool has_spare_normal;
    float spare_normal;
    uint64_t heap_allocs;
    uint64_t matmul_calls;
    uint64_t matmul_flops;    /* 2 m n k of every GEMM issued */
    uint64_t steps;
    size_t persistent_bytes;
    void *device_state;       /* backend-specific (CUDA) */
    struct bg_pool *pool;     /* reusable buffers: large step tensors, intermediates' grads (CPU) */
    struct bg_rope_tab *rope_tabs; /* RoPE cos/sin tables made so far (op_attention.c) */
    bg_grad_ready_fn grad_ready; /* backward's grad-ready hook (tape.c), or NULL */
    void *grad_ready_user;
    struct {                  /* the last BitLinear input quantized (op_bitlinear.c) */
        const bg_tensor *x;
        const void *data;
        uint64_t epoch;
        int bits;
        int64_t rows, in;
        int8_t *levels;
        float *s_x;
    } actq;
};

/* Frees the RoPE tables the ctx keeps (op_attention.c). */
BG_INTERNAL void bg__rope_tabs_free(bg_ctx *ctx);

/* ---- allocation (every heap allocation of a ctx is counted) ---- */
BG_INTERNAL void *bg__malloc(bg_ctx *ctx, size_t size);
BG_INTERNAL void *bg__calloc(bg_ctx *ctx, size_t n, size_t size);
BG_INTERNAL void *bg__realloc(bg_ctx *ctx, void *p, size_t size);
BG_INTERNAL void *bg__aligned_alloc(bg_ctx *ctx, size_t size);

/* Header of a new contiguous tensor (magic, ctx, device, shape, strides; a leaf, no data). */
BG_INTERNAL void bg__init_header(bg_tensor *t, bg_ctx *ctx, bg_dtype dtype, int ndim,
                                 const int64_t *shape);

/* ---- the buffer pool (pool.c): data of large step tensors and intermediates' gradients,
 * given back as soon as nothing needs them, reused by size across the step and steps ---- */
/* Step tensors of at least this many bytes take their data from the pool (CPU). */
#define BG_POOL_MIN ((size_t)64 << 10)
BG_INTERNAL void *bg__pool_take(bg_ctx *ctx, size_t bytes);
BG_INTERNAL void bg__pool_give(bg_ctx *ctx, void *data);
/* An f32 gradient tensor of shape from the pool, zeroed when zero is set (otherwise its values
 * are undefined: NaN in sanitizer builds, so an element a rule failed to write shows). */
BG_INTERNAL bg_tensor *bg__grad_pool_get(bg_ctx *ctx, int ndim, const int64_t *shape, bool zero);
/* Moves from's pool gradient to to (which has none), reshaped to to's shape of as many
 * elements; false, changing nothing, when that is not possible (from's gradient persistent or
 * kept by retain_grad, to persistent or already holding one, sizes differ). */
BG_INTERNAL bool bg__grad_pool_pass(bg_tensor *from, bg_tensor *to);
/* Returns g to the pool: its memory serves the next request of the same size. */
BG_INTERNAL void bg__grad_pool_put(bg_tensor *g);
/* End of step: every buffer back to the pool (kept for the next step). */
BG_INTERNAL void bg__pool_reset(bg_ctx *ctx);
BG_INTERNAL void bg__pool_free(bg_ctx *ctx);
BG_INTERNAL void bg__pool_add_stats(const bg_ctx *ctx, bg_ctx_stats *out);
/* Start of a backward walk: restart the count of gradient bytes held at once. */
BG_INTERNAL void bg__pool_backward_begin(bg_ctx *ctx);
/* The storage (base tensor) a tensor or view reads. */
static inline bg_tensor *bg__storage_of(bg_tensor *t)
{
    return t->view_of ? (bg_tensor *)t->view_of : t;
}
/* Internal code that created t (or a view of it) and will not read it again: its pooled
 * buffer goes back now, or when the last recorded node that reads it has run backward. */
BG_INTERNAL void bg__step_drop(bg_tensor *t);
/* One recorded reader of t's storage fewer (after its backward rule ran). */
BG_INTERNAL void bg__unpin(bg_tensor *t);

/* ---- arena ---- */
/* The ctx's host step arena. */
BG_INTERNAL void *bg__arena_alloc(bg_ctx *ctx, size_t size);
BG_INTERNAL void bg__arena_reset(bg_ctx *ctx);
BG_INTERNAL void bg__arena_free(bg_ctx *ctx);
typedef struct bg_arena_mark {
    int cur;
    size_t used, used_total;
} bg_arena_mark;
BG_INTERNAL bg_arena_mark bg__arena_mark(const bg_ctx *ctx);
/* Gives back everything the host arena handed out after m (scratch). */
BG_INTERNAL void bg__arena_back_to(bg_ctx *ctx, bg_arena_mark m);

/* Where an arena's chunks come from: the host heap (arena.c) or a device (src/cuda/ctx.c).
 * The chunk bookkeeping below is the same for both. */
typedef struct bg_arena_mem {
    const char *name; /* names the arena in its out-of-memory error */
    size_t align;     /* a power of two; every allocation is rounded up to it */
    size_t min_chunk; /* size of the first chunk */
    /* A new chunk, counted in ctx->heap_allocs; NULL when out of memory. */
    void *(*chunk_alloc)(bg_ctx *ctx, size_t size);
    /* The chunk that replaces all others at a reset: counted, records no error on failure
     * (the arena then keeps its chunks), and returns only once the old ones may be freed. */
    void *(*merge_alloc)(bg_ctx *ctx, size_t size);
    void (*chunk_free)(void *p);
} bg_arena_mem;

/* size bytes (rounded up to m->align) from a, growing it by a chunk when full; NULL after
 * recording BG_ENOMEM. */
BG_INTERNAL void *bg__arena_take(bg_ctx *ctx, bg_arena *a, const bg_arena_mem *m, size_t size);
/* Empties a by offset; a step that needed several chunks gets them merged into one. */
BG_INTERNAL void bg__arena_rewind(bg_ctx *ctx, bg_arena *a, const bg_arena_mem *m);
/* Frees every chunk of a and zeroes it. */
BG_INTERNAL void bg__arena_release(bg_arena *a, const bg_arena_mem *m);
/* Adds a's chunk bytes, high-water mark and bytes in use to out. */
BG_INTERNAL void bg__arena_add_stats(const bg_arena *a, bg_ctx_stats *out);

/* ---- errors ---- */
/* Records the first error on the ctx (printf-style message); returns code. */
BG_INTERNAL int bg__error(bg_ctx *ctx, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Formats a shape as "[4,3]" into buf. */
BG_INTERNAL const char *bg__shape_str(const bg_tensor *t, char *buf, size_t n);
/* Checks that t is a live tensor; records an error naming op otherwise. */
BG_INTERNAL bool bg__check_live(const bg_tensor *t, const char *op);

/* ---- tensor construction ---- */
/* A new step tensor (arena) with contiguous layout; data uninitialised. */
BG_INTERNAL bg_tensor *bg__step_new(bg_ctx *ctx, bg_dtype dtype, int ndim, const int64_t *shape);
/* A step view of base with the given shape/strides/data pointer. */
BG_INTERNAL bg_tensor *bg__step_view(const bg_tensor *base, int ndim, const int64_t *shape,
                                     const int64_t *stride, void *data);
BG_INTERNAL void bg__contig_strides(int ndim, const int64_t *shape, int64_t *stride);
BG_INTERNAL int64_t bg__numel(int ndim, const int64_t *shape);
BG_INTERNAL bool bg__is_contig(const bg_tensor *t);
BG_INTERNAL bool bg__same_shape(const bg_tensor *a, const bg_tensor *b);
/* Writes a (any layout, F32) into the contiguous float buffer dst. */
BG_INTERNAL void bg__gather_f32(const bg_tensor *a, float *dst);
/* A contiguous F32 pointer for a: a itself if contiguous, else a packed arena copy. */
BG_INTERNAL const float *bg__contig_data(const bg_tensor *a);

static inline float *bg__f32(const bg_tensor *t) { return (float *)t->data; }

/* RNG: splitmix64-seeded xoshiro-like generator, deterministic across platforms. */
BG_INTERNAL uint64_t bg__rng_next(bg_ctx *ctx);

#endif
