/* src/io/gguf_write.c - the GGUF v3 writer (bg_gguf_writer): collects key/values and tensors,
 * then writes them atomically (PATH.tmp, fflush + fsync, rename over PATH).
 *
 * Layout, identical to gguf-py's GGUFWriter: header; key/values in first-set order; tensor
 * infos in add order with offsets that are the running sum of aligned sizes; zero padding to
 * the alignment; each tensor's data followed by zero padding to the alignment. Each value is
 * kept already serialized (the bytes after its type id), so writing is a copy. */
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
#include <unistd.h>

typedef struct wkv {
    char *key;
    int type;
    uint8_t *val; /* serialized value */
    size_t val_len;
} wkv;

typedef struct wtensor {
    char name[BG_NAME_MAX];
    int n_dims;
    int64_t ne[BG_MAX_DIMS];
    int type;
    const void *data;
    void *owned; /* the copy made by add_tensor, or NULL */
    size_t nbytes;
} wtensor;

struct bg_gguf_writer {
    wkv *kv;
    size_t n_kv, cap_kv;
    wtensor *t;
    size_t n_t, cap_t;
};

/* A growable byte buffer for serialized values; oom is sticky. */
typedef struct bbuf {
    uint8_t *p;
    size_t len, cap;
    int oom;
} bbuf;

static void bput(bbuf *b, const void *src, size_t n)
{
    if (b->oom || n == 0) return;
    if (n > SIZE_MAX - b->len) {
        b->oom = 1;
        return;
    }
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n) cap = cap > SIZE_MAX / 2 ? b->len + n : cap * 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}

static void bput_str(bbuf *b, const char *s, uint64_t len)
{
    bput(b, &len, 8);
    bput(b, s, (size_t)len);
}

/* ---- create / free --------------------------------------------------------------------- */

int bg_gguf_writer_create(bg_gguf_writer **out)
{
    if (!out) return BG_EINVAL;
    *out = calloc(1, sizeof **out);
    return *out ? 0 : BG_ENOMEM;
}

void bg_gguf_writer_free(bg_gguf_writer **pw)
{
    if (!pw || !*pw) return;
    bg_gguf_writer *w = *pw;
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        free(w->kv[i].val);
    }
    for (size_t i = 0; i < w->n_t; i++) free(w->t[i].owned);
    free(w->kv);
    free(w->t);
    free(w);
    *pw = NULL;
}

int64_t bg_gguf_writer_n_kv(const bg_gguf_writer *w) { return w ? (int64_t)w->n_kv : 0; }

int64_t bg_gguf_writer_n_tensors(const bg_gguf_writer *w) { return w ? (int64_t)w->n_t : 0; }

/* ---- key/values ----------------------------------------------------------------------- */

static int bad_alignment(const char *key, int type, const bbuf *v)
{
    if (strcmp(key, "general.alignment") != 0) return 0;
    uint32_t a;
    if (type != BG_GGUF_U32 || v->len != 4) return 1;
    memcpy(&a, v->p, 4);
    return a == 0 || (a & (a - 1)) != 0;
}

/* Stores the serialized value v (taking its buffer) under key, replacing an old value. */
static int set_value(bg_gguf_writer *w, const char *key, int type, bbuf *v)
{
    size_t klen = key ? strlen(key) : 0;
    int rc = 0;
    if (!w || klen == 0 || klen > BG_GGUF_KEY_MAX || bad_alignment(key, type, v)) rc = BG_EINVAL;
    else if (v->oom)
        rc = BG_ENOMEM;
    size_t i = 0;
    while (rc == 0 && i < w->n_kv && strcmp(w->kv[i].key, key) != 0) i++;
    if (rc == 0 && i == w->n_kv) {
        if (w->n_kv == w->cap_kv) {
            size_t cap = w->cap_kv ? 2 * w->cap_kv : 16;
            wkv *p = realloc(w->kv, cap * sizeof *p);
            if (p) {
                w->kv = p;
                w->cap_kv = cap;
            }
        }
        char *k = w->n_kv < w->cap_kv ? malloc(klen + 1) : NULL;
        if (k) {
            memcpy(k, key, klen + 1);
            w->kv[w->n_kv++] = (wkv){ k, 0, NULL, 0 };
        } else {
            rc = BG_ENOMEM;
        }
    }
    if (rc != 0) {
        free(v->p);
        return rc;
    }
    free(w->kv[i].val);
    w->kv[i].type = type;
    w->kv[i].val = v->p;
    w->kv[i].val_len = v->len;
    return 0;
}

static int set_scalar(bg_gguf_writer *w, const char *key, int type, const void *value)
{
    bbuf v = { 0 };
    bput(&v, value, bg_gguf_scalar_size(type));
    return set_value(w, key, type, &v);
}

int bg_gguf_writer_set_u8(bg_gguf_writer *w, const char *key, uint8_t v)
{
    return set_scalar(w, key, BG_GGUF_U8, &v);
}

int bg_gguf_writer_set_i8(bg_gguf_writer *w, const char *key, int8_t v)
{
    return set_scalar(w, key, BG_GGUF_I8, &v);
}

int bg_gguf_writer_set_u16(bg_gguf_writer *w, const char *key, uint16_t v)
{
    return set_scalar(w, key, BG_GGUF_U16, &v);
}

int bg_gguf_writer_set_i16(bg_gguf_writer *w, const char *key, int16_t v)
{
    return set_scalar(w, key, BG_GGUF_I16, &v);
}

int bg_gguf_writer_set_u32(bg_gguf_writer *w, const char *key, uint32_t v)
{
    return set_scalar(w, key, BG_GGUF_U32, &v);
}

int bg_gguf_writer_set_i32(bg_gguf_writer *w, const char *key, int32_t v)
{
    return set_scalar(w, key, BG_GGUF_I32, &v);
}

int bg_gguf_writer_set_f32(bg_gguf_writer *w, const char *key, float v)
{
    return set_scalar(w, key, BG_GGUF_F32, &v);
}

int bg_gguf_writer_set_bool(bg_gguf_writer *w, const char *key, bool v)
{
    uint8_t b = v ? 1 : 0;
    return set_scalar(w, key, BG_GGUF_BOOL, &b);
}

int bg_gguf_writer_set_u64(bg_gguf_writer *w, const char *key, uint64_t v)
{
    return set_scalar(w, key, BG_GGUF_U64, &v);
}

int bg_gguf_writer_set_i64(bg_gguf_writer *w, const char *key, int64_t v)
{
    return set_scalar(w, key, BG_GGUF_I64, &v);
}

int bg_gguf_writer_set_f64(bg_gguf_writer *w, const char *key, double v)
{
    return set_scalar(w, key, BG_GGUF_F64, &v);
}

int bg_gguf_writer_set_str(bg_gguf_writer *w, const char *key, const char *s)
{
    if (!s) return BG_EINVAL;
    bbuf v = { 0 };
    bput_str(&v, s, strlen(s));
    return set_value(w, key, BG_GGUF_STRING, &v);
}

int bg_gguf_writer_set_arr(bg_gguf_writer *w, const char *key, int elem_type, const void *data,
                           size_t n)
{
    size_t esz = bg_gguf_scalar_size(elem_type);
    if ((esz == 0 && elem_type != BG_GGUF_STRING) || (!data && n > 0)) return BG_EINVAL;
    bbuf v = { 0 };
    int32_t et = elem_type;
    uint64_t count = n;
    bput(&v, &et, 4);
    bput(&v, &count, 8);
    for (size_t j = 0; j < n && !v.oom; j++) {
        if (elem_type == BG_GGUF_STRING) {
            const char *s = ((const char *const *)data)[j];
            if (!s) {
                free(v.p);
                return BG_EINVAL;
            }
            bput_str(&v, s, strlen(s));
        } else if (elem_type == BG_GGUF_BOOL) {
            uint8_t b = ((const bool *)data)[j] ? 1 : 0;
            bput(&v, &b, 1);
        }
    }
    if (elem_type != BG_GGUF_STRING && elem_type != BG_GGUF_BOOL) {
        if (n > SIZE_MAX / esz) v.oom = 1;
        else
            bput(&v, data, n * esz);
    }
    return set_value(w, key, BG_GGUF_ARRAY, &v);
}

/* Serializes a reader's value, keeping strings byte-exact (embedded NULs included). */
int bg_gguf_writer_copy_kv(bg_gguf_writer *w, const bg_gguf *g, int64_t i)
{
    if (!w || !g || i < 0 || i >= g->n_kv) return BG_EINVAL;
    const gguf_kv *kv = &g->kv[i];
    bbuf v = { 0 };
    if (kv->type == BG_GGUF_STRING) {
        bput_str(&v, (const char *)g->pool + kv->off, kv->len);
    } else if (kv->type == BG_GGUF_ARRAY) {
        int32_t et = kv->arr_type;
        bput(&v, &et, 4);
        bput(&v, &kv->n, 8);
        if (kv->arr_type == BG_GGUF_STRING) {
            for (uint64_t j = 0; j < kv->n; j++) {
                const uint64_t *ref = g->refs + kv->off + 2 * j;
                bput_str(&v, (const char *)g->pool + ref[0], ref[1]);
            }
        } else if (kv->n > 0) {
            bput(&v, g->pool + kv->off, (size_t)kv->len);
        }
    } else {
        bput(&v, kv->raw, bg_gguf_scalar_size(kv->type));
    }
    return set_value(w, (const char *)g->pool + kv->key_off, kv->type, &v);
}

/* Appends (or replaces) every key/value of src into dst, in src's order, byte for byte. */
int bg__gguf_writer_copy_kvs(bg_gguf_writer *dst, const bg_gguf_writer *src)
{
    if (!dst || !src) return BG_EINVAL;
    for (size_t i = 0; i < src->n_kv; i++) {
        bbuf v = { 0 };
        bput(&v, src->kv[i].val, src->kv[i].val_len);
        int rc = set_value(dst, src->kv[i].key, src->kv[i].type, &v);
        if (rc) return rc;
    }
    return 0;
}

/* ---- tensors ---------------------------------------------------------------------------- */

/* Checks a tensor description; *expect gets its byte size. */
static int check_tensor(const bg_gguf_writer *w, const char *name, int type, int n_dims,
                        const int64_t *ne, size_t *expect)
{
    if (!w || !name || !ne || strlen(name) >= BG_NAME_MAX || n_dims < 1 || n_dims > BG_MAX_DIMS)
        return BG_EINVAL;
    for (size_t i = 0; i < w->n_t; i++)
        if (strcmp(w->t[i].name, name) == 0) return BG_EINVAL;
    int64_t block = bg_ggml_block_size(type);
    if (block == 0) return BG_EINVAL;
    uint64_t bytes = 1, count = 1;
    for (int d = 0; d < n_dims; d++) {
        if (ne[d] < 1 || (uint64_t)ne[d] > (uint64_t)INT64_MAX / count) return BG_ESHAPE;
        count *= (uint64_t)ne[d];
    }
    if (ne[0] % block != 0) return BG_ESHAPE;
    bytes = bg_ggml_row_size(type, ne[0]);
    for (int d = 1; d < n_dims && bytes != 0; d++)
        bytes = bytes > SIZE_MAX / (uint64_t)ne[d] ? 0 : bytes * (uint64_t)ne[d];
    if (bytes == 0) return BG_ESHAPE;
    *expect = (size_t)bytes;
    return 0;
}

static int add_tensor(bg_gguf_writer *w, const char *name, int type, int n_dims, const int64_t *ne,
                      const void *data, size_t nbytes, int copy)
{
    size_t expect = 0;
    int rc = check_tensor(w, name, type, n_dims, ne, &expect);
    if (rc != 0) return rc;
    if (!data || nbytes != expect) return BG_EINVAL;
    if (w->n_t == w->cap_t) {
        size_t cap = w->cap_t ? 2 * w->cap_t : 16;
        wtensor *p = realloc(w->t, cap * sizeof *p);
        if (!p) return BG_ENOMEM;
        w->t = p;
        w->cap_t = cap;
    }
    wtensor *t = &w->t[w->n_t];
    memset(t, 0, sizeof *t);
    if (copy) {
        if (!(t->owned = malloc(nbytes))) return BG_ENOMEM;
        memcpy(t->owned, data, nbytes);
    }
    strcpy(t->name, name);
    t->n_dims = n_dims;
    for (int d = 0; d < BG_MAX_DIMS; d++) t->ne[d] = d < n_dims ? ne[d] : 1;
    t->type = type;
    t->data = copy ? t->owned : data;
    t->nbytes = nbytes;
    w->n_t++;
    return 0;
}

int bg_gguf_writer_add_tensor(bg_gguf_writer *w, const char *name, int ggml_type, int n_dims,
                              const int64_t *ne, const void *data, size_t nbytes)
{
    return add_tensor(w, name, ggml_type, n_dims, ne, data, nbytes, 1);
}

int bg_gguf_writer_add_tensor_ref(bg_gguf_writer *w, const char *name, int ggml_type, int n_dims,
                                  const int64_t *ne, const void *data, size_t nbytes)
{
    return add_tensor(w, name, ggml_type, n_dims, ne, data, nbytes, 0);
}

/* ---- writing ---------------------------------------------------------------------------- */

typedef struct wfile {
    FILE *f;
    uint64_t pos;
    int err_no; /* first write error, 0 if none */
} wfile;

static void wput(wfile *wf, const void *p, size_t n)
{
    if (wf->err_no == 0 && n > 0 && fwrite(p, 1, n, wf->f) != n) wf->err_no = errno ? errno : EIO;
    wf->pos += n;
}

static void wpad(wfile *wf, uint64_t align)
{
    static const uint8_t zeros[256];
    uint64_t pad = (align - wf->pos % align) % align;
    while (pad > 0) {
        size_t n = pad < sizeof zeros ? (size_t)pad : sizeof zeros;
        wput(wf, zeros, n);
        pad -= n;
    }
}

static uint32_t writer_alignment(const bg_gguf_writer *w)
{
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kv[i].key, "general.alignment") == 0) {
            uint32_t a;
            memcpy(&a, w->kv[i].val, 4); /* set_value checked it is a u32 power of two */
            return a;
        }
    }
    return BG_GGUF_DEFAULT_ALIGNMENT;
}

static void write_contents(const bg_gguf_writer *w, wfile *wf)
{
    uint32_t align = writer_alignment(w), version = BG_GGUF_VERSION;
    int64_t n_t = (int64_t)w->n_t, n_kv = (int64_t)w->n_kv;
    wput(wf, "GGUF", 4);
    wput(wf, &version, 4);
    wput(wf, &n_t, 8);
    wput(wf, &n_kv, 8);
    for (size_t i = 0; i < w->n_kv; i++) {
        int32_t type = w->kv[i].type;
        uint64_t klen = strlen(w->kv[i].key);
        wput(wf, &klen, 8);
        wput(wf, w->kv[i].key, (size_t)klen);
        wput(wf, &type, 4);
        wput(wf, w->kv[i].val, w->kv[i].val_len);
    }
    uint64_t offset = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        uint64_t nlen = strlen(t->name);
        uint32_t n_dims = (uint32_t)t->n_dims;
        int32_t type = t->type;
        wput(wf, &nlen, 8);
        wput(wf, t->name, (size_t)nlen);
        wput(wf, &n_dims, 4);
        wput(wf, t->ne, 8 * (size_t)t->n_dims);
        wput(wf, &type, 4);
        wput(wf, &offset, 8);
        offset += (t->nbytes + align - 1) / align * align;
    }
    wpad(wf, align);
    for (size_t i = 0; i < w->n_t; i++) {
        wput(wf, w->t[i].data, w->t[i].nbytes);
        wpad(wf, align);
    }
}

/* Best effort: makes the rename itself durable. */
static void sync_parent_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    size_t n = slash ? (size_t)(slash - path) : 1;
    char *dir = malloc(n + 1);
    if (!dir) return;
    if (slash) memcpy(dir, path, n);
    else
        dir[0] = '.';
    dir[n] = 0;
    if (n == 0) strcpy(dir, "/");
    int fd = open(dir, O_RDONLY);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(dir);
}

int bg_gguf_writer_write(const bg_gguf_writer *w, const char *path, char *err, size_t errlen)
{
    if (!w || !path || !*path)
        return bg_gguf_fail(err, errlen, BG_EINVAL, "gguf: invalid argument");
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 5);
    if (!tmp) return bg_gguf_fail(err, errlen, BG_ENOMEM, "gguf: out of memory");
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);
    wfile wf = { fopen(tmp, "wb"), 0, 0 };
    if (!wf.f) {
        int rc =
            bg_gguf_fail(err, errlen, BG_EIO, "gguf: cannot create '%s': %s", tmp, strerror(errno));
        free(tmp);
        return rc;
    }
    write_contents(w, &wf);
    if (wf.err_no == 0 && fflush(wf.f) != 0) wf.err_no = errno ? errno : EIO;
    if (wf.err_no == 0 && fsync(fileno(wf.f)) != 0) wf.err_no = errno;
    if (fclose(wf.f) != 0 && wf.err_no == 0) wf.err_no = errno ? errno : EIO;
    const char *stage = "writing";
    if (wf.err_no == 0 && rename(tmp, path) != 0) {
        wf.err_no = errno;
        stage = "renaming";
    }
    int rc = 0;
    if (wf.err_no != 0) {
        remove(tmp);
        rc = bg_gguf_fail(err, errlen, BG_EIO, "gguf: %s '%s' failed: %s", stage,
                          stage[0] == 'w' ? tmp : path, strerror(wf.err_no));
    } else {
        sync_parent_dir(path);
        if (err && errlen > 0) err[0] = 0;
    }
    free(tmp);
    return rc;
}
