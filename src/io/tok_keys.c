/* tok_keys.c - the tokenizer.* key/values of a GGUF file kept with a bitnet model, so that an
 * export writes them back unchanged (same keys, types, values and order) and llama.cpp
 * tokenizes the exported model exactly as the original. */
#include <string.h>

#include "bitgrad/export.h"
#include "io/gguf_internal.h"
#include "io/model_io.h"

void bg__tok_keys_free(void *p)
{
    bg__tok_keys *t = p;
    if (!t) return;
    bg_gguf_writer_free(&t->kv);
    free(t);
}

int bg__tok_keys_from(const bg_gguf *g, bg__tok_keys **out)
{
    *out = NULL;
    int64_t ti = bg_gguf_find_key(g, "tokenizer.ggml.tokens");
    if (ti < 0 || bg_gguf_kv_type(g, ti) != BG_GGUF_ARRAY) return BG_EFORMAT;
    bg__tok_keys *t = calloc(1, sizeof *t);
    int rc = t ? bg_gguf_writer_create(&t->kv) : BG_ENOMEM;
    for (int64_t i = 0; !rc && i < bg_gguf_n_kv(g); i++)
        if (strncmp(bg_gguf_key(g, i), "tokenizer.", 10) == 0) rc = bg_gguf_writer_copy_kv(t->kv, g, i);
    if (rc) {
        bg__tok_keys_free(t);
        return rc;
    }
    t->n_tokens = bg_gguf_get_arr_n(g, ti);
    *out = t;
    return BG_OK;
}

int bg__tok_keys_load(const char *path, bg__tok_keys **out, char *err, size_t errlen)
{
    bg_gguf *g = NULL;
    int rc = bg_gguf_open(&g, path, err, errlen);
    if (rc) return rc;
    rc = bg__tok_keys_from(g, out);
    bg_gguf_free(&g);
    if (rc == BG_EFORMAT)
        return bg__io_err(err, errlen, rc, "tokenizer: %s has no tokenizer.ggml.tokens array", path);
    return rc ? bg__io_err(err, errlen, rc, "tokenizer: %s: out of memory", path) : BG_OK;
}

const bg__tok_keys *bg__model_tok_keys(const bg_module *m)
{
    return m && m->io_meta_free == bg__tok_keys_free ? m->io_meta : NULL;
}

void bg__model_attach_tok_keys(bg_module *m, bg__tok_keys *t)
{
    if (m->io_meta_free) m->io_meta_free(m->io_meta);
    m->io_meta = t;
    m->io_meta_free = t ? bg__tok_keys_free : NULL;
}

int bg_bitnet_set_tokenizer(bg_module *model, const char *gguf_path, char *err, size_t errlen)
{
    if (!bg_bitnet_get_config(model) || !gguf_path)
        return bg__io_err(err, errlen, BG_EINVAL, "tokenizer: not a bitnet model, or no path");
    bg__tok_keys *t = NULL;
    int rc = bg__tok_keys_load(gguf_path, &t, err, errlen);
    if (!rc) bg__model_attach_tok_keys(model, t);
    return rc;
}

int64_t bg_bitnet_tokenizer_size(const bg_module *model)
{
    const bg__tok_keys *t = bg__model_tok_keys(model);
    return t ? t->n_tokens : 0;
}
