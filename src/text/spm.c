/* spm.c - SentencePiece ("llama") encoding as llama.cpp runs it: the text (already with its
 * leading space and U+2581 for spaces) is cut into UTF-8 characters, every adjacent pair whose
 * concatenation is a token goes into a priority queue ordered by that token's score (ties:
 * leftmost first), and the best pair is merged until none is left; pairs made stale by an
 * earlier merge are skipped. A symbol that is not a token falls back to its bytes (<0xXX>),
 * or to the unknown token where the vocabulary has no byte tokens. Where no merge can cross the
 * start of a word (tokenizer.spm_word_split), words are merged one at a time, and a word seen
 * before in the same call reuses its ids: the same result, faster. */
#include <stdlib.h>
#include <string.h>

#include "text/pair_heap.h"
#include "text/tokenizer_internal.h"

typedef struct symbol {
    uint32_t start, n; /* bytes of the text; n = 0 once merged into its left neighbour */
    int32_t prev, next;
} symbol;

/* Words already encoded in this call (text repeats its words): their bytes and ids. */
#define CACHE_ENTRIES 4096 /* at most; fewer for short texts (a word per 4 bytes) */
#define CACHE_MAX_WORD 64  /* bytes */

typedef struct cached_word {
    uint32_t hash, start, len, ids_at, n_ids;
} cached_word;

typedef struct word_cache {
    int32_t *slot; /* entry + 1, 0 = empty */
    cached_word *entry;
    int32_t n_entries, max_entries;
    uint32_t mask; /* slots - 1; slots: a power of two, at least twice max_entries */
    bg_idvec ids;
} word_cache;

typedef struct session {
    const bg_tokenizer *t;
    const char *text;
    symbol *sym;
    bg__pair_heap heap;
    word_cache cache;
    bool oom;
} session;

static void try_pair(session *s, int32_t left, int32_t right)
{
    if (left < 0 || right < 0) return;
    uint32_t size = s->sym[left].n + s->sym[right].n;
    int32_t id = bg__tok_find(s->t, s->text + s->sym[left].start, size);
    if (id < 0) return;
    bg__pair p = { bg__pair_score_prio(s->t->scores[id]), left, right, size, -1 };
    if (!bg__pair_heap_push(&s->heap, p)) s->oom = true;
}

static void emit_symbol(const session *s, const symbol *sym, bg_idvec *out)
{
    const bg_tokenizer *t = s->t;
    int32_t id = bg__tok_find(t, s->text + sym->start, sym->n);
    if (id >= 0) {
        bg__idvec_push(out, id);
        return;
    }
    for (uint32_t j = 0; j < sym->n; j++) {
        int32_t b = t->byte_id[(unsigned char)s->text[sym->start + j]];
        if (b < 0) b = t->unk;
        if (b >= 0) bg__idvec_push(out, b);
    }
}

static bool is_space_marker(const char *p, uint32_t n)
{
    return n == 3 && (unsigned char)p[0] == 0xe2 && (unsigned char)p[1] == 0x96 &&
           (unsigned char)p[2] == 0x81;
}

/* Merges within symbols [first, last] (linked among themselves) and emits them. */
static void merge_range(session *s, int32_t first, int32_t last, bg_idvec *out)
{
    s->sym[first].prev = -1;
    s->sym[last].next = -1;
    s->heap.n = 0;
    for (int32_t i = first + 1; i <= last; i++) try_pair(s, i - 1, i);
    while (s->heap.n && !s->oom) {
        bg__pair b = bg__pair_heap_pop(&s->heap);
        symbol *l = &s->sym[b.left], *r = &s->sym[b.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size) continue; /* stale */
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) s->sym[r->next].prev = b.left;
        try_pair(s, l->prev, b.left);
        try_pair(s, b.left, l->next);
    }
    for (int32_t i = first; i != -1 && !s->oom; i = s->sym[i].next) emit_symbol(s, &s->sym[i], out);
}

/* The cached ids of text[start, start + len), or NULL; *slot gets where to insert it. */
static const cached_word *cache_find(const session *s, uint32_t start, uint32_t len, uint32_t h,
                                     uint32_t *slot)
{
    const word_cache *c = &s->cache;
    uint32_t i = h & c->mask;
    for (; c->slot[i]; i = (i + 1) & c->mask) {
        const cached_word *e = &c->entry[c->slot[i] - 1];
        if (e->hash == h && e->len == len && memcmp(s->text + e->start, s->text + start, len) == 0)
            return e;
    }
    *slot = i;
    return NULL;
}

/* Encodes the word in symbols [first, last] (bytes [start, end)), through the cache. */
static void encode_word(session *s, int32_t first, int32_t last, uint32_t start, uint32_t end,
                        bg_idvec *out)
{
    word_cache *c = &s->cache;
    uint32_t len = end - start, h = 0, slot = 0;
    bool cacheable = c->slot && len <= CACHE_MAX_WORD;
    if (cacheable) {
        h = bg__hash_bytes(s->text + start, len);
        const cached_word *e = cache_find(s, start, len, h, &slot);
        if (e) {
            for (uint32_t k = 0; k < e->n_ids; k++) bg__idvec_push(out, c->ids.v[e->ids_at + k]);
            return;
        }
    }
    int64_t n0 = out->n;
    merge_range(s, first, last, out);
    if (!cacheable || c->n_entries == c->max_entries || out->oom) return;
    cached_word e = { h, start, len, (uint32_t)c->ids.n, (uint32_t)(out->n - n0) };
    for (int64_t k = n0; k < out->n; k++) bg__idvec_push(&c->ids, out->v[k]);
    if (c->ids.oom) return;
    c->entry[c->n_entries++] = e;
    c->slot[slot] = c->n_entries;
}

static bool grow_symbols(session *s, size_t *cap, size_t need)
{
    if (need <= *cap) return true;
    size_t c = *cap ? 2 * *cap : 64;
    while (c < need) c *= 2;
    symbol *p = realloc(s->sym, c * sizeof *p);
    if (!p) return s->oom = true, false;
    s->sym = p;
    *cap = c;
    return true;
}

/* Symbols live per word where words are independent (memory follows the longest word, not
 * the text), else for the whole text. */
int bg__spm_encode(const bg_tokenizer *t, const char *text, size_t len, bg_idvec *out)
{
    if (len == 0) return 0;
    if (len > UINT32_MAX / 2) return BG_EINVAL;
    session s = { .t = t, .text = text };
    size_t cap = 0;
    if (!grow_symbols(&s, &cap, t->spm_word_split ? 64 : len)) return BG_ENOMEM;
    if (t->spm_word_split && len > 256) { /* worth it for longer texts; optional */
        size_t want = len / 4 + 16;
        s.cache.max_entries = (int32_t)(want < CACHE_ENTRIES ? want : CACHE_ENTRIES);
        uint32_t slots = 64;
        while (slots < 2u * (uint32_t)s.cache.max_entries) slots <<= 1;
        s.cache.mask = slots - 1;
        s.cache.slot = calloc(slots, sizeof *s.cache.slot);
        s.cache.entry = malloc((size_t)s.cache.max_entries * sizeof *s.cache.entry);
        if (!s.cache.slot || !s.cache.entry) {
            free(s.cache.slot);
            free(s.cache.entry);
            s.cache.slot = NULL;
        }
    }
    int32_t n = 0;
    uint32_t word_start = 0;
    bool prev_marker = true;
    for (size_t off = 0; off < len && !s.oom; n++) {
        size_t l = bg__utf8_len((unsigned char)text[off]);
        if (l > len - off) l = len - off;
        bool marker = is_space_marker(text + off, (uint32_t)l);
        /* a word starts at a marker after a non-marker: merge what came before */
        if (t->spm_word_split && marker && !prev_marker) {
            encode_word(&s, 0, n - 1, word_start, (uint32_t)off, out);
            n = 0;
            word_start = (uint32_t)off;
        }
        prev_marker = marker;
        if (!grow_symbols(&s, &cap, (size_t)n + 1)) break;
        s.sym[n] = (symbol){ (uint32_t)off, (uint32_t)l, n - 1, n + 1 };
        off += l;
    }
    if (!s.oom) encode_word(&s, 0, n - 1, word_start, (uint32_t)len, out);
    int rc = s.oom ? BG_ENOMEM : 0;
    free(s.sym);
    bg__pair_heap_free(&s.heap);
    free(s.cache.slot);
    free(s.cache.entry);
    free(s.cache.ids.v);
    return rc;
}
