/* pair_heap.c - storage of the candidate-merge heap shared by the SPM and BPE encoders
 * (pair_heap.h; push and pop are inline there). */
#include <stdlib.h>

#include "text/pair_heap.h"

bool bg__pair_heap_grow(bg__pair_heap *h)
{
    size_t cap = h->cap ? 2 * h->cap : 64;
    bg__pair *v = realloc(h->v, cap * sizeof *v);
    if (!v) {
        h->oom = true;
        return false;
    }
    h->v = v;
    h->cap = cap;
    return true;
}

void bg__pair_heap_free(bg__pair_heap *h)
{
    free(h->v);
    h->v = NULL;
    h->n = h->cap = 0;
}
