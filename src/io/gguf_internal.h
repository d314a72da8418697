/* src/io/gguf_internal.h - private: the reader's object (struct bg_gguf), filled by gguf_read.c,
 * read by gguf_access.c and by the writer's bg_gguf_writer_copy_kv (gguf_write.c), plus small
 * format helpers. */
#ifndef BITGRAD_IO_GGUF_INTERNAL_H
#define BITGRAD_IO_GGUF_INTERNAL_H

#include <bitgrad/gguf.h>

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "bitgrad copies little-endian GGUF/ggml data with memcpy: big-endian hosts are unsupported"
#endif

/* One key/value. Strings and array payloads live in the object's pool (offsets, since the pool
 * grows while parsing); scalars live in raw (little-endian bytes as in the file). */
typedef struct gguf_kv {
    uint64_t key_off, key_len; /* key text in pool, NUL-terminated */
    int type;                  /* enum bg_gguf_type */
    int arr_type;              /* element type of an ARRAY */
    uint64_t n;                /* element count of an ARRAY */
    uint64_t off, len;         /* STRING: text in pool; numeric ARRAY: elements in pool
                                 * (8-aligned, len bytes); string ARRAY: first pair in refs */
    uint8_t raw[8];            /* scalar value */
} gguf_kv;

typedef struct gguf_tensor {
    char name[BG_NAME_MAX];
    int n_dims;
    int64_t ne[BG_MAX_DIMS];
    int type;
    uint64_t offset; /* from the start of the data section */
    uint64_t nbytes;
} gguf_tensor;

struct bg_gguf {
    uint8_t *file; /* the whole file */
    size_t size;
    int mapped; /* file came from mmap (else malloc) */
    uint32_t version, alignment;
    uint64_t data_offset;
    int64_t n_kv, n_tensors;
    gguf_kv *kv;
    gguf_tensor *tensors;
    uint8_t *pool; /* NUL-terminated strings and aligned array elements */
    size_t pool_len, pool_cap;
    uint64_t *refs;            /* (offset, length) pairs of string-array elements */
    size_t refs_len, refs_cap; /* in uint64_t units */
};

/* Bytes of one scalar of a GGUF value type; 0 for STRING, ARRAY and unknown ids. */
static inline size_t bg_gguf_scalar_size(int t)
{
    static const unsigned char sizes[BG_GGUF_TYPE_COUNT] = {
        1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8
    };
    return t >= 0 && t < BG_GGUF_TYPE_COUNT ? sizes[t] : 0;
}

/* Appends (or replaces) every key/value of src into dst, in src's order, byte for byte. */
int bg__gguf_writer_copy_kvs(bg_gguf_writer *dst, const bg_gguf_writer *src);

/* snprintf into err (if any); always returns code. */
int bg_gguf_fail(char *err, size_t errlen, int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

/* Copies up to 60 bytes of a name from a file into out[80] with non-printable bytes as '?'
 * (and "..." when cut), so that messages stay readable whatever the file holds. */
void bg_gguf_quote(char out[80], const char *s, uint64_t len);

#endif
