/* src/io/gguf_read.c - the GGUF v3 reader: parses and validates a whole file (mmap or a copy
 * of caller's bytes) before anything uses it, then answers accessor calls.
 *
 * Every count, length, type id and offset is checked against the bytes that remain and the
 * format's limits before it sizes an allocation or a read, so a hostile file ends in an error
 * message, never in a crash or a huge allocation (tests/fuzz_gguf.c fuzzes this file). Beyond
 * ggml's own checks, tensors may sit at any aligned offset (the format allows it) as long as
 * they, with their padding, lie inside the file and do not overlap. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include "io/gguf_internal.h"

#include <bitgrad/quant.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define HEADER_BYTES 24u
#define MIN_KV_BYTES 14u     /* key length 8 + 1 key byte + type 4 + 1 value byte */
#define MIN_TENSOR_BYTES 32u /* name length 8 + n_dims 4 + ne 8 + type 4 + offset 8 */

int bg_gguf_fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
    if (err && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

void bg_gguf_quote(char out[80], const char *s, uint64_t len)
{
    size_t n = len > 60 ? 60 : (size_t)len;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        out[i] = (char)(c < 0x20 || c == 0x7f ? '?' : c);
    }
    strcpy(out + n, len > 60 ? "..." : "");
}

const char *bg_gguf_type_name(int t)
{
    static const char *const names[BG_GGUF_TYPE_COUNT] = { "u8",  "i8",  "u16",  "i16", "u32",
                                                           "i32", "f32", "bool", "str", "arr",
                                                           "u64", "i64", "f64" };
    return t >= 0 && t < BG_GGUF_TYPE_COUNT ? names[t] : "unknown";
}

/* ---- parser ---------------------------------------------------------------------------- */

typedef struct parser {
    bg_gguf *g;
    size_t pos;
    char *err;
    size_t errlen;
} parser;

static size_t left(const parser *ps) { return ps->g->size - ps->pos; }

static int read_bytes(parser *ps, void *dst, size_t n, const char *what)
{
    if (n > left(ps))
        return bg_gguf_fail(ps->err, ps->errlen, BG_EFORMAT,
                            "gguf: truncated file: %s at offset %zu needs %zu bytes, %zu left",
                            what, ps->pos, n, left(ps));
    memcpy(dst, ps->g->file + ps->pos, n);
    ps->pos += n;
    return 0;
}

static uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

/* Appends n bytes (plus a NUL if asked) at an offset aligned to align; *off gets the offset. */
static int pool_put(bg_gguf *g, const void *src, size_t n, size_t align, int nul, uint64_t *off)
{
    size_t start = (size_t)align_up(g->pool_len, align);
    size_t need = start + n + (nul ? 1 : 0);
    if (need > g->pool_cap) {
        size_t cap = g->pool_cap ? g->pool_cap : 256;
        while (cap < need) cap *= 2;
        uint8_t *p = realloc(g->pool, cap);
        if (!p) return BG_ENOMEM;
        g->pool = p;
        g->pool_cap = cap;
    }
    memset(g->pool + g->pool_len, 0, start - g->pool_len);
    if (n > 0) memcpy(g->pool + start, src, n);
    if (nul) g->pool[start + n] = 0;
    g->pool_len = need;
    *off = start;
    return 0;
}

/* Reads a string (u64 length + bytes) of at most max bytes into the pool. */
static int read_string(parser *ps, uint64_t max, const char *what, uint64_t *off, uint64_t *len)
{
    *len = 0;
    int rc = read_bytes(ps, len, 8, what);
    if (rc != 0) return rc;
    if (*len > max)
        return bg_gguf_fail(ps->err, ps->errlen, BG_EFORMAT,
                            "gguf: %s: length %llu exceeds the limit %llu", what,
                            (unsigned long long)*len, (unsigned long long)max);
    if (*len > left(ps))
        return bg_gguf_fail(ps->err, ps->errlen, BG_EFORMAT,
                            "gguf: %s: string of %llu bytes at offset %zu runs past end of "
                            "file (%zu)",
                            what, (unsigned long long)*len, ps->pos, ps->g->size);
    rc = pool_put(ps->g, ps->g->file + ps->pos, (size_t)*len, 1, 1, off);
    if (rc != 0) return bg_gguf_fail(ps->err, ps->errlen, rc, "gguf: out of memory");
    ps->pos += (size_t)*len;
    return 0;
}

static int read_string_array(parser *ps, gguf_kv *kv, const char *keyq)
{
    bg_gguf *g = ps->g;
    if (kv->n > left(ps) / 8)
        return bg_gguf_fail(ps->err, ps->errlen, BG_EFORMAT,
                            "gguf: key '%s': array of %llu strings cannot fit in the %zu bytes "
                            "left",
                            keyq, (unsigned long long)kv->n, left(ps));
    size_t need = g->refs_len + 2 * (size_t)kv->n;
    if (need > g->refs_cap) {
        size_t cap = g->refs_cap ? g->refs_cap : 64;
        while (cap < need) cap *= 2;
        uint64_t *r = realloc(g->refs, cap * sizeof *r);
        if (!r) return bg_gguf_fail(ps->err, ps->errlen, BG_ENOMEM, "gguf: out of memory");
        g->refs = r;
        g->refs_cap = cap;
    }
    kv->off = g->refs_len;
    char what[120];
    snprintf(what, sizeof what, "string array '%s'", keyq);
    for (uint64_t j = 0; j < kv->n; j++) {
        uint64_t off = 0, len = 0;
        int rc = read_string(ps, UINT64_MAX, what, &off, &len);
        if (rc != 0) return rc;
        g->refs[g->refs_len++] = off;
        g->refs[g->refs_len++] = len;
    }
    return 0;
}

static int read_array(parser *ps, gguf_kv *kv, const char *keyq)
{
    int32_t et = 0;
    int rc = read_bytes(ps, &et, 4, "array element type");
    if (rc == 0) rc = read_bytes(ps, &kv->n, 8, "array element count");
    if (rc != 0) return rc;
    kv->arr_type = et;
    if (et == BG_GGUF_ARRAY)
        return bg_gguf_fail(ps->err, ps->errlen, BG_EFORMAT,
                            "gguf: key '%s': arrays of arrays are not supported", keyq);
    if (et == BG_GGUF_STRING) return read_string_array(ps, kv, keyq);
    size_t esz = bg_gguf_scalar_size(et);
    if (esz == 0)
        return bg_gguf_fail(ps->err, ps->errlen, BG_EFORMAT,
                            "gguf: key '%s': unknown array element type %d", keyq, (int)et);
    if (kv->n > left(ps) / esz)
        return bg_gguf_fail(ps->err, ps->errlen, BG_EFORMAT,
                            "gguf: key '%s': array of %llu %s elements runs past end of file "
                            "(%zu)",
                            keyq, (unsigned long long)kv->n, bg_gguf_type_name(et), ps->g->size);
    kv->len = kv->n * esz;
    rc = pool_put(ps->g, ps->g->file + ps->pos, (size_t)kv->len, 8, 0, &kv->off);
    if (rc != 0) return bg_gguf_fail(ps->err, ps->errlen, rc, "gguf: out of memory");
    if (et == BG_GGUF_BOOL)
        for (uint64_t j = 0; j < kv->n; j++)
            ps->g->pool[kv->off + j] = ps->g->pool[kv->off + j] != 0;
    ps->pos += (size_t)kv->len;
    return 0;
}

static int read_value(parser *ps, gguf_kv *kv, const char *keyq)
{
    char what[120];
    snprintf(what, sizeof what, "value of key '%s'", keyq);
    if (kv->type == BG_GGUF_STRING) return read_string(ps, UINT64_MAX, what, &kv->off, &kv->len);
    if (kv->type == BG_GGUF_ARRAY) return read_array(ps, kv, keyq);
    size_t sz = bg_gguf_scalar_size(kv->type);
    if (sz == 0)
        return bg_gguf_fail(ps->err, ps->errlen, BG_EFORMAT,
                            "gguf: key '%s': unknown value type %d", keyq, kv->type);
    return read_bytes(ps, kv->raw, sz, what);
}

static int read_kvs(parser *ps)
{
    bg_gguf *g = ps->g;
    for (int64_t i = 0; i < g->n_kv; i++) {
        gguf_kv *kv = &g->kv[i];
        char what[64], keyq[80];
        snprintf(what, sizeof what, "key of key/value %lld", (long long)i);
        int rc = read_string(ps, BG_GGUF_KEY_MAX, what, &kv->key_off, &kv->key_len);
        if (rc != 0) return rc;
        const char *key = (const char *)g->pool + kv->key_off;
        if (kv->key_len == 0 || memchr(key, 0, (size_t)kv->key_len))
            return bg_gguf_fail(ps->err, ps->errlen, BG_EFORMAT,
                                "gguf: key/value %lld: key is empty or contains a NUL byte",
                                (long long)i);
        bg_gguf_quote(keyq, key, kv->key_len);
        int32_t type = 0;
        rc = read_bytes(ps, &type, 4, "value type");
        if (rc != 0) return rc;
        kv->type = type;
        rc = read_value(ps, kv, keyq);
        if (rc != 0) return rc;
    }
    return 0;
}

/* ---- uniqueness ---------------------------------------------------------------------- */

typedef struct name_ref {
    const char *s;
    size_t len;
} name_ref;

static int cmp_name(const void *a, const void *b)
{
    const name_ref *x = a, *y = b;
    int c = memcmp(x->s, y->s, x->len < y->len ? x->len : y->len);
    return c != 0 ? c : (x->len > y->len) - (x->len < y->len);
}

/* Sorts refs; returns the index of one of two equal names, or -1. */
static int64_t find_duplicate(name_ref *refs, int64_t n)
{
    if (n < 2) return -1;
    qsort(refs, (size_t)n, sizeof *refs, cmp_name);
    for (int64_t i = 1; i < n; i++)
        if (cmp_name(&refs[i - 1], &refs[i]) == 0) return i;
    return -1;
}

static int check_unique(parser *ps, int keys)
{
    bg_gguf *g = ps->g;
    int64_t n = keys ? g->n_kv : g->n_tensors;
    name_ref *refs = malloc((size_t)(n > 0 ? n : 1) * sizeof *refs);
    if (!refs) return bg_gguf_fail(ps->err, ps->errlen, BG_ENOMEM, "gguf: out of memory");
    for (int64_t i = 0; i < n; i++) {
        refs[i].s = keys ? (const char *)g->pool + g->kv[i].key_off : g->tensors[i].name;
        refs[i].len = keys ? (size_t)g->kv[i].key_len : strlen(g->tensors[i].name);
    }
    int64_t d = find_duplicate(refs, n);
    int rc = 0;
    if (d >= 0) {
        char q[80];
        bg_gguf_quote(q, refs[d].s, refs[d].len);
        rc = bg_gguf_fail(ps->err, ps->errlen, BG_EFORMAT, "gguf: duplicate %s '%s'",
                          keys ? "key" : "tensor name", q);
    }
    free(refs);
    return rc;
}

/* ---- header, alignment, tensor infos ------------------------------------------------------ */

static int read_header(parser *ps)
{
    bg_gguf *g = ps->g;
    if (g->size >= 4 && memcmp(g->file, "GGUF", 4) != 0)
        return bg_gguf_fail(ps->err, ps->errlen, BG_EFORMAT, "gguf: not a GGUF file (bad magic)");
    if (g->size < HEADER_BYTES)
        return bg_gguf_fail(ps->err, ps->errlen, BG_EFORMAT,
                            "gguf: file of %zu bytes is too small for a GGUF header (%u bytes)",
                            g->size, HEADER_BYTES);
    ps->pos = 4;
    (void)read_bytes(ps, &g->version, 4, "version");
    (void)read_bytes(ps, &g->n_tensors, 8, "tensor count");
    (void)read_bytes(ps, &g->n_kv, 8, "key/value count");
    if (g->version == 1 || g->version == 2)
        return bg_gguf_fail(ps->err, ps->errlen, BG_EFORMAT,
                            "gguf: version %u files are not supported (only version 3); "
                            "convert the file with a current llama.cpp",
                            g->version);
    if (g->version == 0x03000000u)
        return bg_gguf_fail(ps->err, ps->errlen, BG_EFORMAT,
                            "gguf: big-endian GGUF files are not supported");
    if (g->version != BG_GGUF_VERSION)
        return bg_gguf_fail(ps->err, ps->errlen, BG_EFORMAT,
                            "gguf: unsupported version %u (only version 3)", g->version);
    uint64_t room = g->size - HEADER_BYTES;
    if (g->n_kv < 0 || (uint64_t)g->n_kv > room / MIN_KV_BYTES)
        return bg_gguf_fail(ps->err, ps->errlen, BG_EFORMAT,
                            "gguf: key/value count %lld is implausible for a file of %zu bytes",
                            (long long)g->n_kv, g->size);
    if (g->n_tensors < 0 || (uint64_t)g->n_tensors > room / MIN_TENSOR_BYTES ||
        (uint64_t)g->n_kv * MIN_KV_BYTES + (uint64_t)g->n_tensors * MIN_TENSOR_BYTES > room)
        return bg_gguf_fail(ps->err, ps->errlen, BG_EFORMAT,
                            "gguf: tensor count %lld is implausible for a file of %zu bytes",
                            (long long)g->n_tensors, g->size);
    return 0;
}

static int read_alignment(parser *ps)
{
    bg_gguf *g = ps->g;
    g->alignment = BG_GGUF_DEFAULT_ALIGNMENT;
    int64_t i = bg_gguf_find_key(g, "general.alignment");
    if (i < 0) return 0;
    uint32_t a;
    if (bg_gguf_get_u32(g, i, &a) != 0)
        return bg_gguf_fail(ps->err, ps->errlen, BG_EFORMAT,
                            "gguf: general.alignment must be of type u32, not %s",
                            bg_gguf_type_name(g->kv[i].type));
    if (a == 0 || (a & (a - 1)) != 0)
        return bg_gguf_fail(ps->err, ps->errlen, BG_EFORMAT,
                            "gguf: general.alignment %u is not a power of two", a);
    g->alignment = a;
    return 0;
}

static int read_tensor_name(parser *ps, gguf_tensor *t, int64_t i)
{
    uint64_t len = 0;
    int rc = read_bytes(ps, &len, 8, "tensor name length");
    if (rc != 0) return rc;
    if (len >= BG_NAME_MAX)
        return bg_gguf_fail(ps->err, ps->errlen, BG_EFORMAT,
                            "gguf: tensor %lld: name of %llu bytes is too long (at most %d)",
                            (long long)i, (unsigned long long)len, BG_NAME_MAX - 1);
    rc = read_bytes(ps, t->name, (size_t)len, "tensor name");
    if (rc != 0) return rc;
    t->name[len] = 0;
    if (memchr(t->name, 0, (size_t)len))
        return bg_gguf_fail(ps->err, ps->errlen, BG_EFORMAT,
                            "gguf: tensor %lld: name contains a NUL byte", (long long)i);
    return 0;
}

/* n_dims, ne and the element count; q is the quoted name. */
static int read_tensor_shape(parser *ps, gguf_tensor *t, const char *q)
{
    uint32_t n_dims = 0;
    int rc = read_bytes(ps, &n_dims, 4, "tensor n_dims");
    if (rc != 0) return rc;
    if (n_dims < 1 || n_dims > BG_MAX_DIMS)
        return bg_gguf_fail(ps->err, ps->errlen, BG_EFORMAT,
                            "gguf: tensor '%s': n_dims %u is not in 1..%d", q, n_dims, BG_MAX_DIMS);
    t->n_dims = (int)n_dims;
    int64_t count = 1;
    for (int d = 0; d < BG_MAX_DIMS; d++) {
        t->ne[d] = 1;
        if (d >= t->n_dims) continue;
        rc = read_bytes(ps, &t->ne[d], 8, "tensor ne");
        if (rc != 0) return rc;
        if (t->ne[d] < 1)
            return bg_gguf_fail(ps->err, ps->errlen, BG_EFORMAT,
                                "gguf: tensor '%s': ne[%d] = %lld is not positive", q, d,
                                (long long)t->ne[d]);
        if (t->ne[d] > INT64_MAX / count)
            return bg_gguf_fail(ps->err, ps->errlen, BG_EFORMAT,
                                "gguf: tensor '%s': element count overflows", q);
        count *= t->ne[d];
    }
    return 0;
}

static int read_tensor_info(parser *ps, int64_t i)
{
    gguf_tensor *t = &ps->g->tensors[i];
    char q[80];
    int rc = read_tensor_name(ps, t, i);
    if (rc != 0) return rc;
    bg_gguf_quote(q, t->name, strlen(t->name));
    if ((rc = read_tensor_shape(ps, t, q)) != 0) return rc;
    int32_t type = 0;
    if ((rc = read_bytes(ps, &type, 4, "tensor type")) != 0 ||
        (rc = read_bytes(ps, &t->offset, 8, "tensor offset")) != 0)
        return rc;
    t->type = type;
    int64_t block = bg_ggml_block_size(type);
    if (block == 0)
        return bg_gguf_fail(ps->err, ps->errlen, BG_EFORMAT,
                            "gguf: tensor '%s': unknown ggml type %d", q, (int)type);
    if (t->ne[0] % block != 0)
        return bg_gguf_fail(ps->err, ps->errlen, BG_EFORMAT,
                            "gguf: tensor '%s': row length %lld is not a multiple of the %s "
                            "block size %lld",
                            q, (long long)t->ne[0], bg_ggml_type_name(type), (long long)block);
    uint64_t bytes = bg_ggml_row_size(type, t->ne[0]);
    for (int d = 1; d < BG_MAX_DIMS && bytes != 0; d++)
        bytes = bytes > UINT64_MAX / (uint64_t)t->ne[d] ? 0 : bytes * (uint64_t)t->ne[d];
    if (bytes == 0 || bytes > SIZE_MAX)
        return bg_gguf_fail(ps->err, ps->errlen, BG_EFORMAT,
                            "gguf: tensor '%s': byte size overflows", q);
    t->nbytes = bytes;
    if (t->offset % ps->g->alignment != 0)
        return bg_gguf_fail(ps->err, ps->errlen, BG_EFORMAT,
                            "gguf: tensor '%s': data offset %llu is not a multiple of the "
                            "alignment %u",
                            q, (unsigned long long)t->offset, ps->g->alignment);
    return 0;
}

/* ---- data section ------------------------------------------------------------------------- */

static int cmp_offset(const void *a, const void *b)
{
    const gguf_tensor *x = *(const gguf_tensor *const *)a, *y = *(const gguf_tensor *const *)b;
    return (x->offset > y->offset) - (x->offset < y->offset);
}

/* Every tensor, padded to the alignment, inside the file; no two overlap. */
static int check_data(parser *ps)
{
    bg_gguf *g = ps->g;
    g->data_offset = align_up(ps->pos, g->alignment);
    if (g->n_tensors == 0) return 0;
    if (g->data_offset > g->size)
        return bg_gguf_fail(ps->err, ps->errlen, BG_EFORMAT,
                            "gguf: data section at offset %llu starts past end of file (%zu)",
                            (unsigned long long)g->data_offset, g->size);
    uint64_t avail = g->size - g->data_offset;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        const gguf_tensor *t = &g->tensors[i];
        if (t->offset > avail || t->nbytes > avail - t->offset ||
            align_up(t->nbytes, g->alignment) > avail - t->offset) {
            char q[80];
            bg_gguf_quote(q, t->name, strlen(t->name));
            uint64_t abs =
                t->offset > UINT64_MAX - g->data_offset ? UINT64_MAX : g->data_offset + t->offset;
            return bg_gguf_fail(ps->err, ps->errlen, BG_EFORMAT,
                                "gguf: tensor '%s': data offset %llu + %llu bytes (padded to "
                                "%u) runs past end of file (%zu)",
                                q, (unsigned long long)abs, (unsigned long long)t->nbytes,
                                g->alignment, g->size);
        }
    }
    const gguf_tensor **order = malloc((size_t)g->n_tensors * sizeof *order);
    if (!order) return bg_gguf_fail(ps->err, ps->errlen, BG_ENOMEM, "gguf: out of memory");
    for (int64_t i = 0; i < g->n_tensors; i++) order[i] = &g->tensors[i];
    qsort(order, (size_t)g->n_tensors, sizeof *order, cmp_offset);
    int rc = 0;
    for (int64_t i = 1; i < g->n_tensors && rc == 0; i++) {
        if (order[i - 1]->offset + order[i - 1]->nbytes > order[i]->offset) {
            char q1[80], q2[80];
            bg_gguf_quote(q1, order[i - 1]->name, strlen(order[i - 1]->name));
            bg_gguf_quote(q2, order[i]->name, strlen(order[i]->name));
            rc = bg_gguf_fail(ps->err, ps->errlen, BG_EFORMAT,
                              "gguf: tensors '%s' and '%s' overlap in the data section", q1, q2);
        }
    }
    free(order);
    return rc;
}

static int parse(bg_gguf *g, char *err, size_t errlen)
{
    parser ps = { g, 0, err, errlen };
    int rc = read_header(&ps);
    if (rc != 0) return rc;
    g->kv = calloc((size_t)g->n_kv + 1, sizeof *g->kv);
    g->tensors = calloc((size_t)g->n_tensors + 1, sizeof *g->tensors);
    if (!g->kv || !g->tensors) return bg_gguf_fail(err, errlen, BG_ENOMEM, "gguf: out of memory");
    if ((rc = read_kvs(&ps)) != 0 || (rc = check_unique(&ps, 1)) != 0 ||
        (rc = read_alignment(&ps)) != 0)
        return rc;
    for (int64_t i = 0; i < g->n_tensors; i++)
        if ((rc = read_tensor_info(&ps, i)) != 0) return rc;
    if ((rc = check_unique(&ps, 0)) != 0) return rc;
    return check_data(&ps);
}

/* ---- open / free ------------------------------------------------------------------------- */

static int finish_open(bg_gguf **out, bg_gguf *g, char *err, size_t errlen)
{
    int rc = parse(g, err, errlen);
    if (rc != 0) {
        bg_gguf_free(&g);
        return rc;
    }
    if (err && errlen > 0) err[0] = 0;
    *out = g;
    return 0;
}

int bg_gguf_open_memory(bg_gguf **out, const void *data, size_t size, char *err, size_t errlen)
{
    if (!out || (!data && size > 0))
        return bg_gguf_fail(err, errlen, BG_EINVAL, "gguf: invalid argument");
    *out = NULL;
    bg_gguf *g = calloc(1, sizeof *g);
    if (!g || !(g->file = malloc(size > 0 ? size : 1))) {
        free(g);
        return bg_gguf_fail(err, errlen, BG_ENOMEM, "gguf: out of memory");
    }
    if (size > 0) memcpy(g->file, data, size);
    g->size = size;
    return finish_open(out, g, err, errlen);
}

/* Maps the file, or reads it when mapping is impossible. */
static int load_file(bg_gguf *g, int fd, size_t size)
{
    g->size = size;
    if (size == 0) return (g->file = malloc(1)) ? 0 : BG_ENOMEM;
    void *p = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p != MAP_FAILED) {
        g->file = p;
        g->mapped = 1;
        return 0;
    }
    if (!(g->file = malloc(size))) return BG_ENOMEM;
    for (size_t done = 0; done < size;) {
        ssize_t r = pread(fd, g->file + done, size - done, (off_t)done);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return BG_EIO;
        done += (size_t)r;
    }
    return 0;
}

int bg_gguf_open(bg_gguf **out, const char *path, char *err, size_t errlen)
{
    if (!out || !path) return bg_gguf_fail(err, errlen, BG_EINVAL, "gguf: invalid argument");
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return bg_gguf_fail(err, errlen, BG_EIO, "gguf: cannot open '%s': %s", path,
                            strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size > SIZE_MAX) {
        close(fd);
        return bg_gguf_fail(err, errlen, BG_EIO, "gguf: '%s' is not a readable regular file", path);
    }
    bg_gguf *g = calloc(1, sizeof *g);
    int rc = g ? load_file(g, fd, (size_t)st.st_size) : BG_ENOMEM;
    close(fd);
    if (rc != 0) {
        bg_gguf_free(&g);
        return bg_gguf_fail(err, errlen, rc, "gguf: cannot read '%s': %s", path,
                            rc == BG_ENOMEM ? "out of memory" : "read error");
    }
    return finish_open(out, g, err, errlen);
}

void bg_gguf_free(bg_gguf **pg)
{
    if (!pg || !*pg) return;
    bg_gguf *g = *pg;
    if (g->mapped) munmap(g->file, g->size);
    else
        free(g->file);
    free(g->kv);
    free(g->tensors);
    free(g->pool);
    free(g->refs);
    free(g);
    *pg = NULL;
}
