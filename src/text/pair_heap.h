/* pair_heap.h - the priority queue of adjacent-symbol pairs that SentencePiece (spm.c) and
 * byte-level BPE (bpe.c) merge from: a binary min-heap of candidate merges, best first. BPE
 * orders by merge rank (lowest first), SPM by token score (highest first, mapped onto the
 * same unsigned priority by bg__pair_score_prio); both break ties by the leftmost pair, as
 * llama.cpp does. Push and pop are inline (they run once per candidate merge); growing the
 * storage lives in pair_heap.c. Internal to src/text. */
#ifndef BG_TEXT_PAIR_HEAP_H
#define BG_TEXT_PAIR_HEAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* A candidate merge of symbols left and right (indices into the caller's symbols), made
 * stale when either side has changed since: size (their bytes together) tells. */
typedef struct bg__pair {
    uint32_t prio; /* lower first: the BPE rank, or bg__pair_score_prio(score) */
    int32_t left, right;
    uint32_t size;
    int32_t id; /* the merged token (BPE; SPM leaves it -1) */
} bg__pair;

typedef struct bg__pair_heap {
    bg__pair *v;
    size_t n, cap;
    bool oom; /* set once a push failed to grow the heap; that pair is dropped */
} bg__pair_heap;

/* The priority of an SPM pair whose merged token has `score`: a higher score gives a lower
 * priority, equal scores (0.0 and -0.0 too) the same one. NaN scores order after every
 * number. */
static inline uint32_t bg__pair_score_prio(float score)
{
    if (score != score) return UINT32_MAX;
    float s = score + 0.0f; /* -0.0 -> +0.0 */
    uint32_t u;
    memcpy(&u, &s, sizeof u);
    u = (u & 0x80000000u) ? ~u : u | 0x80000000u; /* ascending with the float */
    return ~u - (~u == UINT32_MAX);                /* descending; UINT32_MAX kept for NaN */
}

/* Grows h->v (pair_heap.c); false (and h->oom) when memory runs out. */
bool bg__pair_heap_grow(bg__pair_heap *h);
/* Frees the storage; the heap is empty and usable again. */
void bg__pair_heap_free(bg__pair_heap *h);

static inline bool bg__pair_before(const bg__pair *a, const bg__pair *b)
{
    return a->prio < b->prio || (a->prio == b->prio && a->left < b->left);
}

/* Adds p; false (and h->oom) when memory runs out. */
static inline bool bg__pair_heap_push(bg__pair_heap *h, bg__pair p)
{
    if (h->n == h->cap && !bg__pair_heap_grow(h)) return false;
    size_t i = h->n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!bg__pair_before(&p, &h->v[parent])) break;
        h->v[i] = h->v[parent];
        i = parent;
    }
    h->v[i] = p;
    return true;
}

/* Removes and returns the best pair; h->n must be > 0. */
static inline bg__pair bg__pair_heap_pop(bg__pair_heap *h)
{
    bg__pair top = h->v[0], last = h->v[--h->n];
    size_t i = 0, n = h->n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && bg__pair_before(&h->v[c + 1], &h->v[c])) c++;
        if (!bg__pair_before(&h->v[c], &last)) break;
        h->v[i] = h->v[c];
        i = c;
    }
    if (n) h->v[i] = last;
    return top;
}

#endif
