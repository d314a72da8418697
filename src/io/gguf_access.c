/* src/io/gguf_access.c - accessors of an opened GGUF file (bg_gguf): header fields, key/values
 * by index or name with exact type checks, tensor infos and tensor data. The object was fully
 * validated by gguf_read.c, so these only check their own arguments. */
#include "io/gguf_internal.h"

#include <bitgrad/quant.h>

#include <string.h>

uint32_t bg_gguf_version(const bg_gguf *g) { return g ? g->version : 0; }

uint32_t bg_gguf_alignment(const bg_gguf *g) { return g ? g->alignment : 0; }

uint64_t bg_gguf_data_offset(const bg_gguf *g) { return g ? g->data_offset : 0; }

/* ---- key/values ----------------------------------------------------------------------- */

static const gguf_kv *kv_at(const bg_gguf *g, int64_t i)
{
    return g && i >= 0 && i < g->n_kv ? &g->kv[i] : NULL;
}

int64_t bg_gguf_n_kv(const bg_gguf *g) { return g ? g->n_kv : 0; }

int64_t bg_gguf_find_key(const bg_gguf *g, const char *key)
{
    if (!g || !key) return BG_ENOTFOUND;
    for (int64_t i = 0; i < g->n_kv; i++)
        if (strcmp((const char *)g->pool + g->kv[i].key_off, key) == 0) return i;
    return BG_ENOTFOUND;
}

const char *bg_gguf_key(const bg_gguf *g, int64_t i)
{
    const gguf_kv *kv = kv_at(g, i);
    return kv ? (const char *)g->pool + kv->key_off : NULL;
}

int bg_gguf_kv_type(const bg_gguf *g, int64_t i)
{
    const gguf_kv *kv = kv_at(g, i);
    return kv ? kv->type : BG_EINVAL;
}

static int get_scalar(const bg_gguf *g, int64_t i, int type, void *out)
{
    const gguf_kv *kv = kv_at(g, i);
    if (!kv || !out) return BG_EINVAL;
    if (kv->type != type) return BG_EFORMAT;
    memcpy(out, kv->raw, bg_gguf_scalar_size(type));
    return 0;
}

int bg_gguf_get_u8(const bg_gguf *g, int64_t i, uint8_t *out)
{
    return get_scalar(g, i, BG_GGUF_U8, out);
}

int bg_gguf_get_i8(const bg_gguf *g, int64_t i, int8_t *out)
{
    return get_scalar(g, i, BG_GGUF_I8, out);
}

int bg_gguf_get_u16(const bg_gguf *g, int64_t i, uint16_t *out)
{
    return get_scalar(g, i, BG_GGUF_U16, out);
}

int bg_gguf_get_i16(const bg_gguf *g, int64_t i, int16_t *out)
{
    return get_scalar(g, i, BG_GGUF_I16, out);
}

int bg_gguf_get_u32(const bg_gguf *g, int64_t i, uint32_t *out)
{
    return get_scalar(g, i, BG_GGUF_U32, out);
}

int bg_gguf_get_i32(const bg_gguf *g, int64_t i, int32_t *out)
{
    return get_scalar(g, i, BG_GGUF_I32, out);
}

int bg_gguf_get_f32(const bg_gguf *g, int64_t i, float *out)
{
    return get_scalar(g, i, BG_GGUF_F32, out);
}

int bg_gguf_get_bool(const bg_gguf *g, int64_t i, bool *out)
{
    uint8_t v;
    int rc = out ? get_scalar(g, i, BG_GGUF_BOOL, &v) : BG_EINVAL;
    if (rc == 0) *out = v != 0;
    return rc;
}

int bg_gguf_get_u64(const bg_gguf *g, int64_t i, uint64_t *out)
{
    return get_scalar(g, i, BG_GGUF_U64, out);
}

int bg_gguf_get_i64(const bg_gguf *g, int64_t i, int64_t *out)
{
    return get_scalar(g, i, BG_GGUF_I64, out);
}

int bg_gguf_get_f64(const bg_gguf *g, int64_t i, double *out)
{
    return get_scalar(g, i, BG_GGUF_F64, out);
}

const char *bg_gguf_get_str(const bg_gguf *g, int64_t i, size_t *len)
{
    const gguf_kv *kv = kv_at(g, i);
    if (!kv || kv->type != BG_GGUF_STRING) return NULL;
    if (len) *len = (size_t)kv->len;
    return (const char *)g->pool + kv->off;
}

int bg_gguf_get_arr_type(const bg_gguf *g, int64_t i)
{
    const gguf_kv *kv = kv_at(g, i);
    if (!kv) return BG_EINVAL;
    return kv->type == BG_GGUF_ARRAY ? kv->arr_type : BG_EFORMAT;
}

int64_t bg_gguf_get_arr_n(const bg_gguf *g, int64_t i)
{
    const gguf_kv *kv = kv_at(g, i);
    if (!kv) return BG_EINVAL;
    return kv->type == BG_GGUF_ARRAY ? (int64_t)kv->n : BG_EFORMAT;
}

const void *bg_gguf_get_arr_data(const bg_gguf *g, int64_t i)
{
    static const uint64_t empty;
    const gguf_kv *kv = kv_at(g, i);
    if (!kv || kv->type != BG_GGUF_ARRAY || kv->arr_type == BG_GGUF_STRING) return NULL;
    return kv->n == 0 ? (const void *)&empty : (const void *)(g->pool + kv->off);
}

const char *bg_gguf_get_arr_str(const bg_gguf *g, int64_t i, int64_t j, size_t *len)
{
    const gguf_kv *kv = kv_at(g, i);
    if (!kv || kv->type != BG_GGUF_ARRAY || kv->arr_type != BG_GGUF_STRING || j < 0 ||
        (uint64_t)j >= kv->n)
        return NULL;
    const uint64_t *ref = g->refs + kv->off + 2 * (uint64_t)j;
    if (len) *len = (size_t)ref[1];
    return (const char *)g->pool + ref[0];
}

/* ---- tensors ------------------------------------------------------------------------- */

static const gguf_tensor *tensor_at(const bg_gguf *g, int64_t i)
{
    return g && i >= 0 && i < g->n_tensors ? &g->tensors[i] : NULL;
}

int64_t bg_gguf_n_tensors(const bg_gguf *g) { return g ? g->n_tensors : 0; }

int64_t bg_gguf_find_tensor(const bg_gguf *g, const char *name)
{
    if (!g || !name) return BG_ENOTFOUND;
    for (int64_t i = 0; i < g->n_tensors; i++)
        if (strcmp(g->tensors[i].name, name) == 0) return i;
    return BG_ENOTFOUND;
}

const char *bg_gguf_tensor_name(const bg_gguf *g, int64_t i)
{
    const gguf_tensor *t = tensor_at(g, i);
    return t ? t->name : NULL;
}

int bg_gguf_tensor_n_dims(const bg_gguf *g, int64_t i)
{
    const gguf_tensor *t = tensor_at(g, i);
    return t ? t->n_dims : BG_EINVAL;
}

const int64_t *bg_gguf_tensor_ne(const bg_gguf *g, int64_t i)
{
    const gguf_tensor *t = tensor_at(g, i);
    return t ? t->ne : NULL;
}

int64_t bg_gguf_tensor_nelements(const bg_gguf *g, int64_t i)
{
    const gguf_tensor *t = tensor_at(g, i);
    return t ? t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3] : BG_EINVAL;
}

int bg_gguf_tensor_type(const bg_gguf *g, int64_t i)
{
    const gguf_tensor *t = tensor_at(g, i);
    return t ? t->type : BG_EINVAL;
}

uint64_t bg_gguf_tensor_offset(const bg_gguf *g, int64_t i)
{
    const gguf_tensor *t = tensor_at(g, i);
    return t ? t->offset : 0;
}

size_t bg_gguf_tensor_nbytes(const bg_gguf *g, int64_t i)
{
    const gguf_tensor *t = tensor_at(g, i);
    return t ? (size_t)t->nbytes : 0;
}

const void *bg_gguf_tensor_data(const bg_gguf *g, int64_t i)
{
    const gguf_tensor *t = tensor_at(g, i);
    return t ? g->file + g->data_offset + t->offset : NULL;
}

int bg_gguf_read_tensor_f32(const bg_gguf *g, int64_t i, float *dst)
{
    const gguf_tensor *t = tensor_at(g, i);
    if (!t || !dst) return BG_EINVAL;
    return bg_ggml_dequantize(t->type, bg_gguf_tensor_data(g, i), dst,
                              bg_gguf_tensor_nelements(g, i));
}
