/*
 * refdata.h - header-only reader for the .bgref reference-data files made by
 * tests/ref/make_refs.py, and the deterministic input generators (LCG) that
 * reproduce the PyTorch inputs bit for bit. C11, no dependency on bitgrad.
 * The cases, seeds and formulas are documented in tests/data/REFERENCES.md.
 *
 * File format (little-endian):
 *   "BGRF", u32 version (= 1), u32 count,
 *   count x { u32 name_len, name bytes (no NUL), u32 ndim (0..4),
 *             i64 shape[ndim], f32 data[prod(shape)] (ndim 0: one value) }
 *
 * Usage:
 *   bgref *r = bgref_load_case("mlp_ce");     // $BG_TEST_DATA/mlp_ce.bgref
 *   const bgref_entry *e = bgref_find(r, "dW1");
 *   ... e->data[i], e->numel, e->ndim, e->shape[d] ...
 *   bgref_free(r);
 * Loading never crashes on a bad file: it prints "bgref: PATH: reason" to
 * stderr and returns NULL.
 */
#ifndef BITGRAD_TESTS_REFDATA_H
#define BITGRAD_TESTS_REFDATA_H

#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BGREF_MAX_NDIM 4
#define BGREF_MAX_NAME 4096
#define BGREF_MAX_FILE ((size_t)1 << 31) /* 2 GiB: far above any case */

typedef struct bgref_entry {
    char *name;                      /* NUL-terminated */
    int ndim;                        /* 0..4 */
    int64_t shape[BGREF_MAX_NDIM];   /* unused dims are 1 */
    size_t numel;                    /* product of shape (1 for ndim 0) */
    float *data;                     /* numel values, row-major */
} bgref_entry;

typedef struct bgref {
    size_t count;
    bgref_entry *entries;            /* file order */
} bgref;

/* ------------------------------------------------------------------------ */
/* deterministic inputs                                                      */
/* ------------------------------------------------------------------------ */

/* s = (1664525 * s + 1013904223) mod 2^32; returns the new state. */
static inline uint32_t bgref_lcg_next(uint32_t *s)
{
    *s = (uint32_t)(1664525u * *s + 1013904223u);
    return *s;
}

/* The uniform of one state: float32(s >> 8) / 2^24 (exact). */
static inline float bgref_lcg_unit(uint32_t s)
{
    float u = (float)(s >> 8);
    u = u / 16777216.0f;
    return u;
}

/* x[i] = float32(float32(scale) * (float32(2 u) - 1)), advancing the state
 * before each element. Each step is stored to a float, so every operation
 * is rounded to float32 exactly once (2u and 2u - 1 are exact). */
static inline void bgref_lcg_fill(uint32_t seed, size_t n, float scale,
                                  float *out)
{
    uint32_t s = seed;
    for (size_t i = 0; i < n; i++) {
        float u = bgref_lcg_unit(bgref_lcg_next(&s));
        float t = 2.0f * u;
        t = t - 1.0f;
        float x = scale * t;
        out[i] = x;
    }
}

/* Norm weights: float32(lcg_fill(seed, n, scale)[i] + 1.0f). */
static inline void bgref_lcg_norm(uint32_t seed, size_t n, float scale,
                                  float *out)
{
    bgref_lcg_fill(seed, n, scale, out);
    for (size_t i = 0; i < n; i++) {
        float v = out[i] + 1.0f;
        out[i] = v;
    }
}

/* label[i] = (s >> 8) % k, advancing the state before each element. */
static inline void bgref_lcg_labels(uint32_t seed, size_t n, uint32_t k,
                                    int32_t *out)
{
    uint32_t s = seed;
    for (size_t i = 0; i < n; i++)
        out[i] = (int32_t)((bgref_lcg_next(&s) >> 8) % k);
}

/* Order-dependent checksum used in REFERENCES.md: sum_i bits_i * (2i + 1)
 * mod 2^64 over the float32 bit patterns. */
static inline uint64_t bgref_checksum_f32(const float *x, size_t n)
{
    uint64_t h = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t b;
        memcpy(&b, &x[i], sizeof b);
        h += (uint64_t)b * (2u * (uint64_t)i + 1u);
    }
    return h;
}

/* Same over labels (each value taken as uint32). */
static inline uint64_t bgref_checksum_i32(const int32_t *x, size_t n)
{
    uint64_t h = 0;
    for (size_t i = 0; i < n; i++)
        h += (uint64_t)(uint32_t)x[i] * (2u * (uint64_t)i + 1u);
    return h;
}

/* ------------------------------------------------------------------------ */
/* reader                                                                    */
/* ------------------------------------------------------------------------ */

static inline void bgref_free(bgref *r)
{
    if (!r)
        return;
    if (r->entries) {
        for (size_t i = 0; i < r->count; i++) {
            free(r->entries[i].name);
            free(r->entries[i].data);
        }
        free(r->entries);
    }
    free(r);
}

static inline uint32_t bgref_rd_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static inline uint64_t bgref_rd_u64(const unsigned char *p)
{
    return (uint64_t)bgref_rd_u32(p) | (uint64_t)bgref_rd_u32(p + 4) << 32;
}

/* Error messages go to `log` (NULL: silent). */
static inline void bgref_msg(FILE *log, const char *fmt, ...)
{
    if (!log)
        return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(log, fmt, ap);
    va_end(ap);
}

/* Parses a whole file image; `what` names it in error messages, which go to
 * `log` (NULL: silent). Returns NULL on any error. */
static inline bgref *bgref_parse_log(const unsigned char *buf, size_t size,
                                     const char *what, FILE *log)
{
    size_t off = 12;
    bgref *r = NULL;
    if (!what)
        what = "(buffer)";
    if (!buf || size < 12) {
        bgref_msg(log, "bgref: %s: too short for a header (%zu bytes)\n",
                what, size);
        return NULL;
    }
    if (memcmp(buf, "BGRF", 4) != 0) {
        bgref_msg(log, "bgref: %s: bad magic (not a .bgref file)\n", what);
        return NULL;
    }
    uint32_t version = bgref_rd_u32(buf + 4);
    uint32_t count = bgref_rd_u32(buf + 8);
    if (version != 1) {
        bgref_msg(log, "bgref: %s: unsupported version %u\n", what,
                (unsigned)version);
        return NULL;
    }
    /* smallest entry: name_len + 1 name byte + ndim + one float = 13 bytes */
    if (count > (size - 12) / 13) {
        bgref_msg(log, "bgref: %s: entry count %u does not fit in %zu bytes\n",
                what, (unsigned)count, size);
        return NULL;
    }
    r = (bgref *)calloc(1, sizeof *r);
    if (!r)
        goto oom;
    if (count) {
        r->entries = (bgref_entry *)calloc(count, sizeof *r->entries);
        if (!r->entries)
            goto oom;
    }
    for (uint32_t i = 0; i < count; i++) {
        bgref_entry *e = &r->entries[i];
        r->count = (size_t)i + 1; /* so bgref_free releases what is set */
        if (size - off < 4) {
            bgref_msg(log, "bgref: %s: entry %u: truncated name length\n",
                    what, (unsigned)i);
            goto fail;
        }
        uint32_t nl = bgref_rd_u32(buf + off);
        off += 4;
        if (nl == 0 || nl > BGREF_MAX_NAME || nl > size - off) {
            bgref_msg(log, "bgref: %s: entry %u: bad name length %u "
                    "(%zu bytes left)\n", what, (unsigned)i, (unsigned)nl,
                    size - off);
            goto fail;
        }
        if (memchr(buf + off, 0, nl)) {
            bgref_msg(log, "bgref: %s: entry %u: NUL byte in name\n", what,
                    (unsigned)i);
            goto fail;
        }
        e->name = (char *)malloc((size_t)nl + 1);
        if (!e->name)
            goto oom;
        memcpy(e->name, buf + off, nl);
        e->name[nl] = '\0';
        off += nl;
        for (uint32_t j = 0; j < i; j++) {
            if (strcmp(r->entries[j].name, e->name) == 0) {
                bgref_msg(log, "bgref: %s: duplicate entry '%s'\n", what,
                        e->name);
                goto fail;
            }
        }
        if (size - off < 4) {
            bgref_msg(log, "bgref: %s: '%s': truncated ndim\n", what,
                    e->name);
            goto fail;
        }
        uint32_t ndim = bgref_rd_u32(buf + off);
        off += 4;
        if (ndim > BGREF_MAX_NDIM) {
            bgref_msg(log, "bgref: %s: '%s': ndim %u > %d\n", what, e->name,
                    (unsigned)ndim, BGREF_MAX_NDIM);
            goto fail;
        }
        if (size - off < (size_t)ndim * 8) {
            bgref_msg(log, "bgref: %s: '%s': truncated shape\n", what,
                    e->name);
            goto fail;
        }
        e->ndim = (int)ndim;
        size_t left = (size - off - (size_t)ndim * 8) / 4; /* floats left */
        size_t numel = 1;
        for (int d = 0; d < BGREF_MAX_NDIM; d++)
            e->shape[d] = 1;
        for (uint32_t d = 0; d < ndim; d++) {
            int64_t dim = (int64_t)bgref_rd_u64(buf + off + 8 * (size_t)d);
            if (dim < 0 || (uint64_t)dim > (uint64_t)left) {
                bgref_msg(log, "bgref: %s: '%s': bad dimension %lld "
                        "(file has room for %zu values)\n", what, e->name,
                        (long long)dim, left);
                goto fail;
            }
            e->shape[d] = dim;
            /* numel <= left and dim <= left, so guard the product */
            if (dim != 0 && numel > left / (size_t)dim) {
                bgref_msg(log, "bgref: %s: '%s': shape needs more values "
                        "than the file holds (%zu)\n", what, e->name, left);
                goto fail;
            }
            numel *= (size_t)dim;
        }
        off += (size_t)ndim * 8;
        if (numel > (size - off) / 4) {
            bgref_msg(log, "bgref: %s: '%s': truncated data (%zu values, "
                    "%zu bytes left)\n", what, e->name, numel, size - off);
            goto fail;
        }
        e->numel = numel;
        e->data = (float *)malloc(numel ? numel * sizeof(float) : 1);
        if (!e->data)
            goto oom;
        for (size_t k = 0; k < numel; k++) {
            uint32_t b = bgref_rd_u32(buf + off + 4 * k);
            memcpy(&e->data[k], &b, sizeof b);
        }
        off += numel * 4;
    }
    if (off != size) {
        bgref_msg(log, "bgref: %s: %zu trailing bytes after %u entries\n",
                what, size - off, (unsigned)count);
        goto fail;
    }
    return r;
oom:
    bgref_msg(log, "bgref: %s: out of memory\n", what);
fail:
    bgref_free(r);
    return NULL;
}

/* bgref_parse_log with messages on stderr. */
static inline bgref *bgref_parse(const unsigned char *buf, size_t size,
                                 const char *what)
{
    return bgref_parse_log(buf, size, what, stderr);
}

static inline bgref *bgref_load(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "bgref: %s: cannot open\n", path);
        return NULL;
    }
    unsigned char *buf = NULL;
    size_t size = 0, cap = 0;
    for (;;) {
        if (size == cap) {
            size_t ncap = cap ? cap * 2 : (size_t)1 << 16;
            if (ncap > BGREF_MAX_FILE) {
                fprintf(stderr, "bgref: %s: file too large\n", path);
                free(buf);
                fclose(f);
                return NULL;
            }
            unsigned char *nb = (unsigned char *)realloc(buf, ncap);
            if (!nb) {
                fprintf(stderr, "bgref: %s: out of memory\n", path);
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
            cap = ncap;
        }
        size_t got = fread(buf + size, 1, cap - size, f);
        size += got;
        if (got == 0) {
            if (ferror(f)) {
                fprintf(stderr, "bgref: %s: read error\n", path);
                free(buf);
                fclose(f);
                return NULL;
            }
            break;
        }
    }
    fclose(f);
    bgref *r = bgref_parse(buf, size, path);
    free(buf);
    return r;
}

/* Directory of the data files: $BG_TEST_DATA, or "tests/data". */
static inline const char *bgref_data_dir(void)
{
    const char *d = getenv("BG_TEST_DATA");
    return (d && *d) ? d : "tests/data";
}

/* Loads <data dir>/<name>.bgref. */
static inline bgref *bgref_load_case(const char *name)
{
    const char *dir = bgref_data_dir();
    size_t n = strlen(dir) + strlen(name) + 8;
    char *path = (char *)malloc(n);
    if (!path) {
        fprintf(stderr, "bgref: %s: out of memory\n", name);
        return NULL;
    }
    snprintf(path, n, "%s/%s.bgref", dir, name);
    bgref *r = bgref_load(path);
    free(path);
    return r;
}

static inline const bgref_entry *bgref_find(const bgref *r, const char *name)
{
    if (!r || !name)
        return NULL;
    for (size_t i = 0; i < r->count; i++)
        if (strcmp(r->entries[i].name, name) == 0)
            return &r->entries[i];
    return NULL;
}

/* Like bgref_find, but also checks the shape (ndim dims in shape[]); prints
 * why and returns NULL when the entry is missing or shaped differently. */
static inline const bgref_entry *bgref_expect(const bgref *r, const char *name,
                                              int ndim, const int64_t *shape)
{
    const bgref_entry *e = bgref_find(r, name);
    if (!e) {
        fprintf(stderr, "bgref: no entry '%s'\n", name);
        return NULL;
    }
    int ok = e->ndim == ndim;
    for (int d = 0; ok && d < ndim; d++)
        ok = e->shape[d] == shape[d];
    if (!ok) {
        fprintf(stderr, "bgref: '%s': shape [", name);
        for (int d = 0; d < e->ndim; d++)
            fprintf(stderr, "%s%lld", d ? "," : "", (long long)e->shape[d]);
        fprintf(stderr, "], expected [");
        for (int d = 0; d < ndim; d++)
            fprintf(stderr, "%s%lld", d ? "," : "", (long long)shape[d]);
        fprintf(stderr, "]\n");
        return NULL;
    }
    return e;
}

/* Scale-relative error: max_i |got_i - ref_i| / max(max_i |ref_i|, 1e-30),
 * accumulated in double. NaN in got gives +inf. */
static inline double bgref_max_rel_err(const float *got, const float *ref,
                                       size_t n)
{
    double maxdiff = 0.0, maxref = 0.0;
    for (size_t i = 0; i < n; i++) {
        double g = (double)got[i], w = (double)ref[i];
        double d = fabs(g - w);
        if (d != d)
            return (double)INFINITY;
        if (d > maxdiff)
            maxdiff = d;
        if (fabs(w) > maxref)
            maxref = fabs(w);
    }
    return maxdiff / (maxref > 1e-30 ? maxref : 1e-30);
}

/* Compares n values with the entry (numel must equal n) at the scale-relative
 * tolerance tol; prints a one-line verdict on failure and returns 0 when it
 * passes, -1 otherwise. */
static inline int bgref_check(const char *what, const float *got, size_t n,
                              const bgref_entry *ref, double tol)
{
    if (!ref) {
        fprintf(stderr, "%s: no reference entry\n", what);
        return -1;
    }
    if (ref->numel != n) {
        fprintf(stderr, "%s: %zu values, reference '%s' has %zu\n", what, n,
                ref->name, ref->numel);
        return -1;
    }
    double err = bgref_max_rel_err(got, ref->data, n);
    if (!(err <= tol)) {
        size_t worst = 0;
        double wd = -1.0;
        for (size_t i = 0; i < n; i++) {
            double d = fabs((double)got[i] - (double)ref->data[i]);
            if (d != d || d > wd) {
                wd = d;
                worst = i;
                if (d != d)
                    break;
            }
        }
        fprintf(stderr, "%s: rel err %.3e > %.1e vs '%s' (worst at %zu: "
                "got %.9g, want %.9g)\n", what, err, tol, ref->name, worst,
                (double)got[worst], (double)ref->data[worst]);
        return -1;
    }
    return 0;
}

#endif /* BITGRAD_TESTS_REFDATA_H */
