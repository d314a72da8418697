/* arena.c - counted heap allocation and the step arena.
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

static int arena_add_chunk(bg_ctx *ctx, size_t min_size)
{
    bg_arena *a = &ctx->arena;
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
    unsigned char *base = bg__aligned_alloc(ctx, size);
    if (!base) return BG_ENOMEM;
    a->chunks[a->n_chunks++] = (bg_arena_chunk){ .base = base, .cap = size, .used = 0 };
    return BG_OK;
}

void *bg__arena_alloc(bg_ctx *ctx, size_t size)
{
    bg_arena *a = &ctx->arena;
    size = (size + BG_ARENA_ALIGN - 1) / BG_ARENA_ALIGN * BG_ARENA_ALIGN;
    if (size == 0) size = BG_ARENA_ALIGN;
    if (a->default_chunk == 0) a->default_chunk = BG_ARENA_MIN_CHUNK;
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
    if (arena_add_chunk(ctx, size) != BG_OK) {
        bg__error(ctx, BG_ENOMEM, "arena: out of memory allocating %zu bytes", size);
        return NULL;
    }
    a->cur = a->n_chunks - 1;
    return bg__arena_alloc(ctx, size);
}

/* Resets every chunk; merges several chunks into one big enough for the whole step. */
void bg__arena_reset(bg_ctx *ctx)
{
    bg_arena *a = &ctx->arena;
    if (a->n_chunks > 1) {
        size_t total = 0;
        for (int i = 0; i < a->n_chunks; i++) total += a->chunks[i].cap;
        unsigned char *base = bg__aligned_alloc(ctx, total);
        if (base) {
            for (int i = 0; i < a->n_chunks; i++) free(a->chunks[i].base);
            a->chunks[0] = (bg_arena_chunk){ .base = base, .cap = total, .used = 0 };
            a->n_chunks = 1;
        }
    }
    for (int i = 0; i < a->n_chunks; i++) a->chunks[i].used = 0;
    a->cur = 0;
    a->used_total = 0;
}

void bg__arena_free(bg_ctx *ctx)
{
    bg_arena *a = &ctx->arena;
    for (int i = 0; i < a->n_chunks; i++) free(a->chunks[i].base);
    free(a->chunks);
    memset(a, 0, sizeof *a);
}

/* Where the step arena stands now; bg__arena_release gives back everything allocated after
 * it (scratch of one backward rule). Chunks added meanwhile stay, empty, for later use. */
bg_arena_mark bg__arena_mark(const bg_ctx *ctx)
{
    const bg_arena *a = &ctx->arena;
    return (bg_arena_mark){ .cur = a->cur, .used = a->cur < a->n_chunks ? a->chunks[a->cur].used : 0,
                            .used_total = a->used_total };
}

void bg__arena_release(bg_ctx *ctx, bg_arena_mark m)
{
    bg_arena *a = &ctx->arena;
    for (int i = m.cur + 1; i < a->n_chunks; i++) a->chunks[i].used = 0;
    if (m.cur < a->n_chunks) a->chunks[m.cur].used = m.used;
    a->cur = m.cur;
    a->used_total = m.used_total;
}
