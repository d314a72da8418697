/* tokenizer_vocab.c - the tokenizer's tables: allocation with a byte count, the text -> id
 * hash (open addressing over FNV-1a), and the BPE merge table read from tokenizer.ggml.merges
 * ("left right" strings, rank = position; both halves must be tokens). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/tokenizer_internal.h"

int bg__tok_err(char *err, size_t errlen, int code, const char *fmt, ...)
{
    if (err && errlen) {
        int k = snprintf(err, errlen, "tokenizer: ");
        if (k >= 0 && (size_t)k < errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(err + k, errlen - (size_t)k, fmt, ap);
            va_end(ap);
        }
    }
    return code;
}

void *bg__tok_calloc(bg_tokenizer *t, size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (p) t->mem_bytes += n * size;
    return p;
}

void bg__idvec_push(bg_idvec *iv, int32_t id)
{
    if (iv->n == iv->cap) {
        int64_t cap = iv->cap ? 2 * iv->cap : 64;
        int32_t *v = realloc(iv->v, (size_t)cap * sizeof *v);
        if (!v) {
            iv->oom = true;
            return;
        }
        iv->v = v;
        iv->cap = cap;
    }
    iv->v[iv->n++] = id;
}

uint32_t bg__hash_bytes(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h ^ (h >> 15);
}

int32_t bg__tok_find(const bg_tokenizer *t, const char *s, size_t n)
{
    if (!t->hash) return -1;
    uint32_t h = bg__hash_bytes(s, n);
    for (uint32_t i = h & t->hash_mask;; i = (i + 1) & t->hash_mask) {
        uint64_t slot = t->hash[i];
        if (!slot) return -1;
        if ((uint32_t)(slot >> 32) != h) continue;
        int32_t id = (int32_t)(uint32_t)slot - 1;
        size_t len;
        const char *txt = bg__tok_text(t, id, &len);
        if (len == n && memcmp(txt, s, n) == 0) return id;
    }
}

int bg__tok_alloc_vocab(bg_tokenizer *t, int32_t n_vocab, size_t blob_bytes)
{
    t->n_vocab = n_vocab;
    t->blob = bg__tok_calloc(t, blob_bytes, 1);
    t->off = bg__tok_calloc(t, (size_t)n_vocab + 1, sizeof *t->off);
    t->scores = bg__tok_calloc(t, (size_t)n_vocab, sizeof *t->scores);
    t->types = bg__tok_calloc(t, (size_t)n_vocab, 1);
    return t->blob && t->off && t->scores && t->types ? 0 : BG_ENOMEM;
}

/* Two slots per token at least: probes stay short. */
int bg__tok_build_hash(bg_tokenizer *t, char *err, size_t errlen)
{
    uint32_t slots = 64;
    while (slots < 2u * (uint32_t)t->n_vocab) slots <<= 1;
    t->hash = bg__tok_calloc(t, slots, sizeof *t->hash);
    if (!t->hash) return BG_ENOMEM;
    t->hash_mask = slots - 1;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        size_t len;
        const char *s = bg__tok_text(t, id, &len);
        int32_t dup = bg__tok_find(t, s, len);
        if (dup >= 0)
            return bg__tok_err(err, errlen, BG_EFORMAT,
                               "tokenizer.ggml.tokens: tokens %d and %d are both '%.*s'", dup, id,
                               (int)(len > 64 ? 64 : len), s);
        uint32_t h = bg__hash_bytes(s, len), i = h & t->hash_mask;
        while (t->hash[i]) i = (i + 1) & t->hash_mask;
        t->hash[i] = (uint64_t)h << 32 | ((uint32_t)id + 1);
    }
    return 0;
}

static uint64_t merge_hash(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return k;
}

/* Inserts (key, rank) unless key is present (llama.cpp keeps a pair's first rank). */
static void merge_insert(bg_tokenizer *t, uint64_t key, uint32_t rank, int32_t id)
{
    uint32_t i = (uint32_t)merge_hash(key) & t->merge_mask;
    while (t->merge_rank[i] != UINT32_MAX) {
        if (t->merge_key[i] == key) return;
        i = (i + 1) & t->merge_mask;
    }
    t->merge_key[i] = key;
    t->merge_rank[i] = rank;
    t->merge_id[i] = id;
}

bool bg__merge_find(const bg_tokenizer *t, int32_t a, int32_t b, uint32_t *rank, int32_t *id)
{
    if (!t->merge_mask) return false;
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    for (uint32_t i = (uint32_t)merge_hash(key) & t->merge_mask; t->merge_rank[i] != UINT32_MAX;
         i = (i + 1) & t->merge_mask) {
        if (t->merge_key[i] == key) {
            *rank = t->merge_rank[i];
            *id = t->merge_id[i];
            return true;
        }
    }
    return false;
}

static int split_merge(const bg_tokenizer *t, const char *s, size_t len, int32_t *a, int32_t *b)
{
    const char *sp = len > 1 ? memchr(s + 1, ' ', len - 1) : NULL;
    if (!sp) return -1;
    *a = bg__tok_find(t, s, (size_t)(sp - s));
    *b = bg__tok_find(t, sp + 1, len - (size_t)(sp - s) - 1);
    return *a < 0 || *b < 0 ? -1 : 0;
}

int bg__tok_read_merges(bg_tokenizer *t, const bg_gguf *g, int64_t key, char *err, size_t errlen)
{
    if (bg_gguf_kv_type(g, key) != BG_GGUF_ARRAY || bg_gguf_get_arr_type(g, key) != BG_GGUF_STRING)
        return bg__tok_err(err, errlen, BG_EFORMAT,
                           "tokenizer.ggml.merges is not an array of strings");
    int64_t n = bg_gguf_get_arr_n(g, key);
    if (n < 0 || n >= INT32_MAX)
        return bg__tok_err(err, errlen, BG_EFORMAT, "tokenizer.ggml.merges: bad count");
    t->n_merges = n;
    if (n == 0) return 0;
    uint32_t slots = 64;
    while (slots < 2u * (uint32_t)n) slots <<= 1;
    t->merge_key = bg__tok_calloc(t, slots, sizeof *t->merge_key);
    t->merge_rank = bg__tok_calloc(t, slots, sizeof *t->merge_rank);
    t->merge_id = bg__tok_calloc(t, slots, sizeof *t->merge_id);
    if (!t->merge_key || !t->merge_rank || !t->merge_id) return BG_ENOMEM;
    memset(t->merge_rank, 0xff, slots * sizeof *t->merge_rank);
    t->merge_mask = slots - 1;
    char *cat = NULL;
    size_t cat_cap = 0;
    for (int64_t r = 0; r < n; r++) {
        size_t len;
        const char *s = bg_gguf_get_arr_str(g, key, r, &len);
        int32_t a, b;
        if (!s || split_merge(t, s, len, &a, &b) != 0) {
            free(cat);
            return bg__tok_err(err, errlen, BG_EFORMAT,
                               "tokenizer.ggml.merges[%lld] '%.*s' is not two tokens separated by "
                               "a space",
                               (long long)r, (int)(s ? (len > 64 ? 64 : len) : 0), s ? s : "");
        }
        size_t la, lb;
        const char *ta = bg__tok_text(t, a, &la), *tb = bg__tok_text(t, b, &lb);
        if (la + lb > cat_cap) {
            cat_cap = 2 * (la + lb);
            char *c2 = realloc(cat, cat_cap);
            if (!c2) {
                free(cat);
                return BG_ENOMEM;
            }
            cat = c2;
        }
        memcpy(cat, ta, la);
        memcpy(cat + la, tb, lb);
        merge_insert(t, (uint64_t)(uint32_t)a << 32 | (uint32_t)b, (uint32_t)r,
                     bg__tok_find(t, cat, la + lb));
    }
    free(cat);
    return 0;
}
