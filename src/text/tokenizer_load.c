/* tokenizer_load.c - reads a tokenizer from GGUF metadata (tokenizer.ggml.*) with llama.cpp's
 * defaults, checking every type, count and id: malformed metadata is BG_EFORMAT, a kind or
 * pre-tokenizer bitgrad does not implement BG_EUNSUPPORTED. Also bitgrad's byte vocabulary. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/tokenizer_internal.h"

/* ---- typed optional keys ---------------------------------------------------------- */

/* 0 (found, *s set), 1 (absent) or BG_EFORMAT. */
static int opt_str(const bg_gguf *g, const char *key, const char **s, char *err, size_t errlen)
{
    int64_t i = bg_gguf_find_key(g, key);
    if (i < 0) return 1;
    *s = bg_gguf_get_str(g, i, NULL);
    if (!*s)
        return bg__tok_err(err, errlen, BG_EFORMAT, "%s is %s, not a string", key,
                           bg_gguf_type_name(bg_gguf_kv_type(g, i)));
    return 0;
}

static int opt_bool(const bg_gguf *g, const char *key, bool *v, char *err, size_t errlen)
{
    int64_t i = bg_gguf_find_key(g, key);
    if (i < 0) return 0;
    if (bg_gguf_get_bool(g, i, v) != 0)
        return bg__tok_err(err, errlen, BG_EFORMAT, "%s is %s, not a bool", key,
                           bg_gguf_type_name(bg_gguf_kv_type(g, i)));
    return 0;
}

/* A special token id: u32 (as llama.cpp checks) below n_vocab. */
static int opt_id(const bg_tokenizer *t, const bg_gguf *g, const char *key, int32_t *id, char *err,
                  size_t errlen)
{
    int64_t i = bg_gguf_find_key(g, key);
    if (*id >= t->n_vocab) *id = -1; /* a default out of range is disabled, as llama.cpp does */
    if (i < 0) return 0;
    uint32_t v;
    if (bg_gguf_get_u32(g, i, &v) != 0)
        return bg__tok_err(err, errlen, BG_EFORMAT, "%s is %s, not a u32", key,
                           bg_gguf_type_name(bg_gguf_kv_type(g, i)));
    if (v >= (uint32_t)t->n_vocab)
        return bg__tok_err(err, errlen, BG_EFORMAT, "%s = %u is out of range (%d tokens)", key, v,
                           t->n_vocab);
    *id = (int32_t)v;
    return 0;
}

/* An optional per-token array of elem_type with exactly n_vocab elements; NULL if absent. */
static int opt_arr(const bg_tokenizer *t, const bg_gguf *g, const char *key, int elem_type,
                   int elem_type2, const void **data, int *type, char *err, size_t errlen)
{
    *data = NULL;
    int64_t i = bg_gguf_find_key(g, key);
    if (i < 0) return 0;
    int at = bg_gguf_get_arr_type(g, i);
    if (bg_gguf_kv_type(g, i) != BG_GGUF_ARRAY || (at != elem_type && at != elem_type2))
        return bg__tok_err(err, errlen, BG_EFORMAT, "%s is not an array of %s", key,
                           bg_gguf_type_name(elem_type));
    int64_t n = bg_gguf_get_arr_n(g, i);
    if (n != t->n_vocab)
        return bg__tok_err(err, errlen, BG_EFORMAT,
                           "%s has %lld entries but tokenizer.ggml.tokens has %d", key,
                           (long long)n, t->n_vocab);
    *data = bg_gguf_get_arr_data(g, i);
    *type = at;
    return 0;
}

/* ---- the vocabulary ------------------------------------------------------------------ */

static int read_tokens(bg_tokenizer *t, const bg_gguf *g, char *err, size_t errlen)
{
    int64_t k = bg_gguf_find_key(g, "tokenizer.ggml.tokens");
    if (k < 0) return bg__tok_err(err, errlen, BG_EFORMAT, "no tokenizer.ggml.tokens");
    if (bg_gguf_kv_type(g, k) != BG_GGUF_ARRAY || bg_gguf_get_arr_type(g, k) != BG_GGUF_STRING)
        return bg__tok_err(err, errlen, BG_EFORMAT,
                           "tokenizer.ggml.tokens is not an array of strings");
    int64_t n = bg_gguf_get_arr_n(g, k);
    if (n < 1 || n > (1 << 24))
        return bg__tok_err(err, errlen, BG_EFORMAT, "tokenizer.ggml.tokens has %lld tokens",
                           (long long)n);
    size_t blob = 0;
    for (int64_t i = 0; i < n; i++) {
        size_t len;
        bg_gguf_get_arr_str(g, k, i, &len);
        blob += (len ? len : 24) + 1;
        if (blob > UINT32_MAX / 2)
            return bg__tok_err(err, errlen, BG_EFORMAT, "tokenizer.ggml.tokens is too large");
    }
    if (bg__tok_alloc_vocab(t, (int32_t)n, blob) != 0) return BG_ENOMEM;
    uint32_t pos = 0;
    for (int64_t i = 0; i < n; i++) {
        size_t len;
        const char *s = bg_gguf_get_arr_str(g, k, i, &len);
        t->off[i] = pos;
        if (len == 0) /* llama.cpp renames an empty token so that it cannot match text */
            len = (size_t)snprintf(t->blob + pos, 25, "[EMPTY_%lld]", (long long)i);
        else
            memcpy(t->blob + pos, s, len);
        pos += (uint32_t)len + 1;
    }
    t->off[n] = pos;
    return bg__tok_build_hash(t, err, errlen);
}

static int read_scores_types(bg_tokenizer *t, const bg_gguf *g, char *err, size_t errlen)
{
    const void *sc, *ty;
    int st = 0, tt = 0;
    int rc =
        opt_arr(t, g, "tokenizer.ggml.scores", BG_GGUF_F32, BG_GGUF_I32, &sc, &st, err, errlen);
    if (rc) return rc;
    rc =
        opt_arr(t, g, "tokenizer.ggml.token_type", BG_GGUF_I32, BG_GGUF_I32, &ty, &tt, err, errlen);
    if (rc) return rc;
    for (int32_t i = 0; i < t->n_vocab; i++) {
        if (sc && st == BG_GGUF_F32) t->scores[i] = ((const float *)sc)[i];
        else if (sc)
            t->scores[i] = (float)((const int32_t *)sc)[i];
        int32_t ty_i = ty ? ((const int32_t *)ty)[i] : BG_TT_NORMAL;
        t->types[i] = (uint8_t)(ty_i >= 1 && ty_i <= 6 ? ty_i : BG_TT_UNDEFINED);
    }
    return 0;
}

/* ---- derived tables ------------------------------------------------------------------ */

static void find_byte_tokens(bg_tokenizer *t)
{
    static const char hex[] = "0123456789ABCDEF";
    for (int b = 0; b < 256; b++) {
        if (t->kind == BG_TOK_SPM) {
            char buf[7] = { '<', '0', 'x', hex[b >> 4], hex[b & 15], '>', 0 };
            char one = (char)b;
            t->byte_id[b] = bg__tok_find(t, buf, 6);
            if (t->byte_id[b] < 0) t->byte_id[b] = bg__tok_find(t, &one, 1);
        } else {
            char u[4];
            int n = bg__utf8_encode(bg__byte_to_cp((uint8_t)b), u);
            t->byte_id[b] = bg__tok_find(t, u, (size_t)n);
        }
    }
}

/* True when every token's U+2581 are in its leading run (see spm_word_split). */
static bool spaces_only_leading(const bg_tokenizer *t)
{
    for (int32_t id = 0; id < t->n_vocab; id++) {
        size_t len;
        const char *s = bg__tok_text(t, id, &len);
        size_t i = 0;
        while (len - i >= 3 && memcmp(s + i, "\xe2\x96\x81", 3) == 0) i += 3;
        for (; len - i >= 3; i++)
            if (memcmp(s + i, "\xe2\x96\x81", 3) == 0) return false;
    }
    return true;
}

static bool name_is_phi3(const bg_gguf *g)
{
    const char *name = NULL;
    if (opt_str(g, "general.name", &name, NULL, 0) != 0) return false;
    char low[256];
    size_t i = 0;
    for (; name[i] && i < sizeof low - 1; i++) low[i] = (char)tolower((unsigned char)name[i]);
    low[i] = 0;
    return strstr(low, "phi-3") || strstr(low, "phi3");
}

static int user_cmp_len(const void *a, const void *b, void *t_)
{
    const bg_tokenizer *t = t_;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    uint32_t lx = t->off[x + 1] - t->off[x], ly = t->off[y + 1] - t->off[y];
    return lx != ly ? (lx > ly ? -1 : 1) : (x > y) - (x < y);
}

/* User-defined tokens are split out of raw text before the tokenizer runs (llama.cpp does so
 * even when special tokens are not parsed), longest first. Phi-3 files strip whitespace after
 * them (llama.cpp's rule by general.name). */
static int find_user_tokens(bg_tokenizer *t, const bg_gguf *g)
{
    int32_t n = 0;
    for (int32_t i = 0; i < t->n_vocab; i++) n += t->types[i] == BG_TT_USER_DEFINED;
    if (!n) return 0;
    t->user_ids = bg__tok_calloc(t, (size_t)n, sizeof *t->user_ids);
    t->user_rstrip = bg__tok_calloc(t, (size_t)n, 1);
    if (!t->user_ids || !t->user_rstrip) return BG_ENOMEM;
    for (int32_t i = 0; i < t->n_vocab; i++)
        if (t->types[i] == BG_TT_USER_DEFINED) t->user_ids[t->n_user++] = i;
    /* insertion sort: few tokens, and a stable order by (length desc, id) */
    for (int32_t i = 1; i < n; i++)
        for (int32_t j = i; j > 0 && user_cmp_len(&t->user_ids[j - 1], &t->user_ids[j], t) > 0;
             j--) {
            int32_t tmp = t->user_ids[j];
            t->user_ids[j] = t->user_ids[j - 1];
            t->user_ids[j - 1] = tmp;
        }
    bool phi3 = name_is_phi3(g);
    for (int32_t i = 0; i < n; i++) {
        size_t len;
        const char *s = bg__tok_text(t, t->user_ids[i], &len);
        bool keep = (len == 5 && !memcmp(s, "<unk>", 5)) || (len == 3 && !memcmp(s, "<s>", 3)) ||
                    (len == 13 && !memcmp(s, "<|endoftext|>", 13));
        t->user_rstrip[i] = phi3 && !keep;
    }
    return 0;
}

/* bitgrad's exporter writes its byte vocabulary as gpt2: 256 tokens spelling the bytes in
 * order, no merges. Such a file reads as the byte vocabulary (the same ids either way). */
static bool is_byte_vocab(const bg_tokenizer *t)
{
    if (t->kind != BG_TOK_BPE || t->n_vocab != 256 || t->n_merges != 0) return false;
    for (int b = 0; b < 256; b++)
        if (t->byte_id[b] != b) return false;
    return true;
}

/* ---- kind, pre-tokenizer, flags ------------------------------------------------------ */

static int read_kind(bg_tokenizer *t, const bg_gguf *g, char *err, size_t errlen)
{
    const char *model = NULL, *pre = NULL;
    int64_t mk = bg_gguf_find_key(g, "tokenizer.ggml.model");
    if (mk < 0) return bg__tok_err(err, errlen, BG_ENOTFOUND, "no tokenizer.ggml.model key");
    int rc = opt_str(g, "tokenizer.ggml.model", &model, err, errlen);
    if (rc) return rc;
    rc = opt_str(g, "tokenizer.ggml.pre", &pre, err, errlen);
    if (rc < 0) return rc;
    if (strcmp(model, "llama") == 0) {
        t->kind = BG_TOK_SPM; /* llama.cpp ignores tokenizer.ggml.pre for SentencePiece */
        return 0;
    }
    if (strcmp(model, "gpt2") == 0) {
        t->kind = BG_TOK_BPE;
        if (!pre || strcmp(pre, "default") == 0) t->pre = BG_PRE_DEFAULT;
        else if (strcmp(pre, "gpt-2") == 0)
            t->pre = BG_PRE_GPT2;
        if (t->pre != BG_PRE_NONE) return 0;
    }
    return bg__tok_err(err, errlen, BG_EUNSUPPORTED,
                       "tokenizer.ggml.model = '%s', tokenizer.ggml.pre = '%s': not supported "
                       "(bitgrad reads \"llama\", and \"gpt2\" with pre \"default\" or \"gpt-2\")",
                       model, pre ? pre : "(absent)");
}

static int read_flags(bg_tokenizer *t, const bg_gguf *g, char *err, size_t errlen)
{
    bool spm = t->kind == BG_TOK_SPM;
    t->bos = spm ? 1 : 11;
    t->eos = spm ? 2 : 11;
    t->unk = spm ? 0 : -1;
    t->pad = -1;
    t->add_bos = spm;
    t->add_eos = false;
    t->add_space_prefix = spm;
    t->clean_spaces = !spm;
    int rc = opt_id(t, g, "tokenizer.ggml.bos_token_id", &t->bos, err, errlen);
    rc = rc ? rc : opt_id(t, g, "tokenizer.ggml.eos_token_id", &t->eos, err, errlen);
    rc = rc ? rc : opt_id(t, g, "tokenizer.ggml.unknown_token_id", &t->unk, err, errlen);
    rc = rc ? rc : opt_id(t, g, "tokenizer.ggml.padding_token_id", &t->pad, err, errlen);
    rc = rc ? rc : opt_bool(g, "tokenizer.ggml.add_bos_token", &t->add_bos, err, errlen);
    rc = rc ? rc : opt_bool(g, "tokenizer.ggml.add_eos_token", &t->add_eos, err, errlen);
    return rc ? rc
              : opt_bool(g, "tokenizer.ggml.add_space_prefix", &t->add_space_prefix, err, errlen);
}

static int load(bg_tokenizer *t, const bg_gguf *g, char *err, size_t errlen)
{
    int rc = read_kind(t, g, err, errlen);
    rc = rc ? rc : read_tokens(t, g, err, errlen);
    rc = rc ? rc : read_scores_types(t, g, err, errlen);
    if (rc) return rc;
    if (t->kind == BG_TOK_BPE) {
        int64_t mk = bg_gguf_find_key(g, "tokenizer.ggml.merges");
        if (mk < 0)
            return bg__tok_err(err, errlen, BG_EFORMAT,
                               "gpt2 vocabulary without "
                               "tokenizer.ggml.merges");
        rc = bg__tok_read_merges(t, g, mk, err, errlen);
        if (rc) return rc;
    }
    rc = read_flags(t, g, err, errlen);
    if (rc) return rc;
    find_byte_tokens(t);
    t->spm_word_split = t->kind == BG_TOK_SPM && spaces_only_leading(t);
    t->bpe_chunk = 64 * 1024;
    if (is_byte_vocab(t)) t->kind = BG_TOK_BYTES;
    return find_user_tokens(t, g);
}

int bg_tokenizer_from_gguf(const bg_gguf *g, bg_tokenizer **out, char *err, size_t errlen)
{
    if (err && errlen) err[0] = 0;
    if (!g || !out) return bg__tok_err(err, errlen, BG_EINVAL, "NULL argument");
    *out = NULL;
    bg_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return BG_ENOMEM;
    t->mem_bytes = sizeof *t;
    int rc = load(t, g, err, errlen);
    if (rc) {
        if (rc == BG_ENOMEM) bg__tok_err(err, errlen, rc, "out of memory");
        bg_tokenizer_free(&t);
        return rc;
    }
    *out = t;
    return 0;
}

int bg_tokenizer_load(const char *path, bg_tokenizer **out, char *err, size_t errlen)
{
    if (!path || !out) return bg__tok_err(err, errlen, BG_EINVAL, "NULL argument");
    *out = NULL;
    bg_gguf *g = NULL;
    int rc = bg_gguf_open(&g, path, err, errlen);
    if (rc) return rc;
    rc = bg_tokenizer_from_gguf(g, out, err, errlen);
    bg_gguf_free(&g);
    return rc;
}

int bg_tokenizer_new_bytes(bg_tokenizer **out)
{
    if (!out) return BG_EINVAL;
    bg_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return BG_ENOMEM;
    t->mem_bytes = sizeof *t;
    t->kind = BG_TOK_BYTES;
    t->n_vocab = 256;
    t->bos = t->eos = t->unk = t->pad = -1;
    for (int b = 0; b < 256; b++) t->byte_id[b] = b;
    *out = t;
    return 0;
}

void bg_tokenizer_free(bg_tokenizer **tp)
{
    if (!tp || !*tp) return;
    bg_tokenizer *t = *tp;
    free(t->blob);
    free(t->off);
    free(t->scores);
    free(t->types);
    free(t->hash);
    free(t->merge_key);
    free(t->merge_rank);
    free(t->merge_id);
    free(t->user_ids);
    free(t->user_rstrip);
    free(t);
    *tp = NULL;
}
