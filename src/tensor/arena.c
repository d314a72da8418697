/* arena.c - counted heap allocation and the step arena, whose chunk bookkeeping
 * (bg__arena_take / _rewind / _release over a bg_arena_mem) also runs src/cuda/ctx.c's
 * device arena.
 *
 * Every op result of a step lives in the arena; bg_step_end resets it by offset. The
 * arena grows by chunks during the first steps; when a step needed more than one chunk,
 * the chunks are merged into one at reset, so a steady training loop performs no heap
 * allocation after its first step. */
#include "tensor/tensor_impl.h"

#define BG_ARENA_ALIGN 64
#define BG_ARENA_MIN_CHUNK ((size_t)1 << 20)

void *bg__malloc(bg_ctx *ctx, size_t size)
{
    void *p = malloc(size ? size : 1);
    if (p && ctx) ctx->heap_allocs++;
    return p;
}

void *bg__calloc(bg_ctx *ctx, size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (p && ctx) ctx->heap_allocs++;
    return p;
}

void *bg__realloc(bg_ctx *ctx, void *p, size_t size)
{
    void *q = realloc(p, size ? size : 1);
    if (q && ctx) ctx->heap_allocs++;
    return q;
}

void *bg__aligned_alloc(bg_ctx *ctx, size_t size)
{
    size_t rounded = (size + BG_ARENA_ALIGN - 1) / BG_ARENA_ALIGN * BG_ARENA_ALIGN;
    void *p = aligned_alloc(BG_ARENA_ALIGN, rounded ? rounded : BG_ARENA_ALIGN);
    if (p && ctx) ctx->heap_allocs++;
    return p;
}

/* ---- chunk bookkeeping (any arena: this host one and src/cuda/ctx.c's device one) ---- */

static int arena_add_chunk(bg_ctx *ctx, bg_arena *a, const bg_arena_mem *m, size_t min_size)
{
    if (a->n_chunks == a->cap_chunks) {
        int cap = a->cap_chunks ? a->cap_chunks * 2 : 8;
        bg_arena_chunk *c = bg__realloc(ctx, a->chunks, (size_t)cap * sizeof *c);
        if (!c) return BG_ENOMEM;
        a->chunks = c;
        a->cap_chunks = cap;
    }
    size_t size = a->default_chunk;
    if (a->n_chunks > 0) size = a->chunks[a->n_chunks - 1].cap * 2;
    if (size < min_size) size = min_size;
    unsigned char *base = m->chunk_alloc(ctx, size);
    if (!base) return BG_ENOMEM;
    a->chunks[a->n_chunks++] = (bg_arena_chunk){ .base = base, .cap = size, .used = 0 };
    return BG_OK;
}

void *bg__arena_take(bg_ctx *ctx, bg_arena *a, const bg_arena_mem *m, size_t size)
{
    size = (size + m->align - 1) & ~(m->align - 1);
    if (size == 0) size = m->align;
    if (a->default_chunk == 0) a->default_chunk = m->min_chunk;
    for (;;) {
        while (a->cur < a->n_chunks) {
            bg_arena_chunk *c = &a->chunks[a->cur];
            if (c->cap - c->used >= size) {
                void *p = c->base + c->used;
                c->used += size;
                a->used_total += size;
                if (a->used_total > a->high_water) a->high_water = a->used_total;
                return p;
            }
            a->cur++;
        }
        if (arena_add_chunk(ctx, a, m, size) != BG_OK) {
            bg__error(ctx, BG_ENOMEM, "%s: out of memory allocating %zu bytes", m->name, size);
            return NULL;
        }
        a->cur = a->n_chunks - 1;
    }
}

void bg__arena_rewind(bg_ctx *ctx, bg_arena *a, const bg_arena_mem *m)
{
    if (a->n_chunks > 1) {
        size_t total = 0;
        for (int i = 0; i < a->n_chunks; i++) total += a->chunks[i].cap;
        unsigned char *base = m->merge_alloc(ctx, total);
        if (base) {
            for (int i = 0; i < a->n_chunks; i++) m->chunk_free(a->chunks[i].base);
            a->chunks[0] = (bg_arena_chunk){ .base = base, .cap = total, .used = 0 };
            a->n_chunks = 1;
        }
    }
    for (int i = 0; i < a->n_chunks; i++) a->chunks[i].used = 0;
    a->cur = 0;
    a->used_total = 0;
}

void bg__arena_release(bg_arena *a, const bg_arena_mem *m)
{
    for (int i = 0; i < a->n_chunks; i++) m->chunk_free(a->chunks[i].base);
    free(a->chunks);
    memset(a, 0, sizeof *a);
}

void bg__arena_add_stats(const bg_arena *a, bg_ctx_stats *out)
{
    for (int i = 0; i < a->n_chunks; i++) out->arena_bytes += a->chunks[i].cap;
    out->arena_high_water += a->high_water;
    out->arena_used += a->used_total;
}

/* ---- the host step arena ---------------------------------------------------------------- */

static const bg_arena_mem host_mem = {
    .name = "arena",
    .align = BG_ARENA_ALIGN,
    .min_chunk = BG_ARENA_MIN_CHUNK,
    .chunk_alloc = bg__aligned_alloc,
    .merge_alloc = bg__aligned_alloc,
    .chunk_free = free,
};

void *bg__arena_alloc(bg_ctx *ctx, size_t size)
{
    return bg__arena_take(ctx, &ctx->arena, &host_mem, size);
}

void bg__arena_reset(bg_ctx *ctx) { bg__arena_rewind(ctx, &ctx->arena, &host_mem); }

void bg__arena_free(bg_ctx *ctx) { bg__arena_release(&ctx->arena, &host_mem); }

/* Where the step arena stands now; bg__arena_back_to gives back everything allocated after
 * it (scratch of one backward rule). Chunks added meanwhile stay, empty, for later use. */
bg_arena_mark bg__arena_mark(const bg_ctx *ctx)
{
    const bg_arena *a = &ctx->arena;
    return (bg_arena_mark){ .cur = a->cur, .used = a->cur < a->n_chunks ? a->chunks[a->cur].used : 0,
                            .used_total = a->used_total };
}

void bg__arena_back_to(bg_ctx *ctx, bg_arena_mark m)
{
    bg_arena *a = &ctx->arena;
    for (int i = m.cur + 1; i < a->n_chunks; i++) a->chunks[i].used = 0;
    if (m.cur < a->n_chunks) a->chunks[m.cur].used = m.used;
    a->cur = m.cur;
    a->used_total = m.used_total;
}
