/* spm.c - SentencePiece ("llama") encoding as llama.cpp runs it: the text (already with its
 * leading space and U+2581 for spaces) is cut into UTF-8 characters, every adjacent pair whose
 * concatenation is a token goes into a priority queue ordered by that token's score (ties:
 * leftmost first), and the best pair is merged until none is left; pairs made stale by an
 * earlier merge are skipped. A symbol that is not a token falls back to its bytes (<0xXX>),
 * or to the unknown token where the vocabulary has no byte tokens. */
#include <stdlib.h>

#include "text/tokenizer_internal.h"

typedef struct symbol {
    uint32_t start, n; /* bytes of the text; n = 0 once merged into its left neighbour */
    int32_t prev, next;
} symbol;

typedef struct bigram {
    int32_t left, right;
    float score;
    uint32_t size;
} bigram;

typedef struct session {
    const bg_tokenizer *t;
    const char *text;
    symbol *sym;
    bigram *heap;
    size_t n_heap, cap_heap;
    bool oom;
} session;

/* a before b: the higher score, then the leftmost pair (llama.cpp's comparator). */
static bool before(const bigram *a, const bigram *b)
{
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static void heap_push(session *s, bigram b)
{
    if (s->n_heap == s->cap_heap) {
        size_t cap = s->cap_heap ? 2 * s->cap_heap : 64;
        bigram *h = realloc(s->heap, cap * sizeof *h);
        if (!h) {
            s->oom = true;
            return;
        }
        s->heap = h;
        s->cap_heap = cap;
    }
    size_t i = s->n_heap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!before(&b, &s->heap[p])) break;
        s->heap[i] = s->heap[p];
        i = p;
    }
    s->heap[i] = b;
}

static bigram heap_pop(session *s)
{
    bigram top = s->heap[0], last = s->heap[--s->n_heap];
    size_t i = 0, n = s->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && before(&s->heap[c + 1], &s->heap[c])) c++;
        if (!before(&s->heap[c], &last)) break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (n) s->heap[i] = last;
    return top;
}

static void try_pair(session *s, int32_t left, int32_t right)
{
    if (left < 0 || right < 0) return;
    uint32_t size = s->sym[left].n + s->sym[right].n;
    int32_t id = bg__tok_find(s->t, s->text + s->sym[left].start, size);
    if (id < 0) return;
    heap_push(s, (bigram){ left, right, s->t->scores[id], size });
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

int bg__spm_encode(const bg_tokenizer *t, const char *text, size_t len, bg_idvec *out)
{
    if (len == 0) return 0;
    if (len > UINT32_MAX / 2) return BG_EINVAL;
    session s = { .t = t, .text = text };
    s.sym = malloc(len * sizeof *s.sym);
    if (!s.sym) return BG_ENOMEM;
    int32_t n = 0;
    for (size_t off = 0; off < len; n++) {
        size_t l = bg__utf8_len((unsigned char)text[off]);
        if (l > len - off) l = len - off;
        s.sym[n] = (symbol){ (uint32_t)off, (uint32_t)l, n - 1, off + l == len ? -1 : n + 1 };
        off += l;
    }
    for (int32_t i = 1; i < n; i++) try_pair(&s, i - 1, i);
    while (s.n_heap && !s.oom) {
        bigram b = heap_pop(&s);
        symbol *l = &s.sym[b.left], *r = &s.sym[b.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size) continue; /* stale */
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) s.sym[r->next].prev = b.left;
        try_pair(&s, l->prev, b.left);
        try_pair(&s, b.left, l->next);
    }
    for (int32_t i = 0; i != -1 && !s.oom; i = s.sym[i].next) emit_symbol(&s, &s.sym[i], out);
    int rc = s.oom ? BG_ENOMEM : 0;
    free(s.sym);
    free(s.heap);
    return rc;
}
