/* bitgrad/gguf.h - GGUF v3 files: a validating reader (bg_gguf) and an atomic writer
 * (bg_gguf_writer). Format: DESIGN.md section 7; little-endian, version 3 only.
 *
 * Reader: bg_gguf_open checks every count, length, type id, offset and size against the file and
 * the format's limits before using it, and on failure fills err with a message such as
 * "gguf: tensor 'x': data offset 1234 + 5678 bytes runs past end of file (6000)". After a
 * successful open every accessor is safe; an index out of range gives NULL / a negative value.
 *
 * Writer: keys are written in the order they were first set (setting a key again replaces its
 * value in place), tensors in the order added, the data section aligned to general.alignment
 * (a UINT32 power of two; 32 when unset) with zero padding after every tensor including the
 * last, the same layout as gguf-py's GGUFWriter. bg_gguf_writer_write writes PATH.tmp, flushes
 * and fsyncs it, then renames it over PATH; on failure PATH is untouched and PATH.tmp removed.
 *
 * The host must be little-endian, like the format (the build refuses others); the reader and
 * writer copy values with memcpy and never dereference unaligned pointers into the file. */
#ifndef BITGRAD_GGUF_H
#define BITGRAD_GGUF_H

#include <bitgrad/tensor.h>

#ifdef __cplusplus
extern "C" {
#endif

/* GGUF value types (the i32 stored before each value). */
enum bg_gguf_type {
    BG_GGUF_U8 = 0,
    BG_GGUF_I8 = 1,
    BG_GGUF_U16 = 2,
    BG_GGUF_I16 = 3,
    BG_GGUF_U32 = 4,
    BG_GGUF_I32 = 5,
    BG_GGUF_F32 = 6,
    BG_GGUF_BOOL = 7,
    BG_GGUF_STRING = 8,
    BG_GGUF_ARRAY = 9,
    BG_GGUF_U64 = 10,
    BG_GGUF_I64 = 11,
    BG_GGUF_F64 = 12,
    BG_GGUF_TYPE_COUNT = 13
};

#define BG_GGUF_VERSION 3
#define BG_GGUF_DEFAULT_ALIGNMENT 32
#define BG_GGUF_KEY_MAX 65535 /* longest key in bytes */

/* "u8", "i32", "f32", "bool", "str", "arr", ... or "unknown". */
BG_API const char *bg_gguf_type_name(int gguf_type);

/* ---- reader -------------------------------------------------------------------------- */

typedef struct bg_gguf bg_gguf;

/* Opens and validates a file (memory-mapped, read-only). err may be NULL. */
BG_API int bg_gguf_open(bg_gguf **out, const char *path, char *err, size_t errlen);
/* The same from bytes in memory; the bytes are copied, data may be freed afterwards. */
BG_API int bg_gguf_open_memory(bg_gguf **out, const void *data, size_t size, char *err,
                               size_t errlen);
BG_API void bg_gguf_free(bg_gguf **g);

BG_API uint32_t bg_gguf_version(const bg_gguf *g);
BG_API uint32_t bg_gguf_alignment(const bg_gguf *g);
/* Offset of the data section from the start of the file. */
BG_API uint64_t bg_gguf_data_offset(const bg_gguf *g);

/* Key/values, indexed 0 .. n_kv - 1 in file order. */
BG_API int64_t bg_gguf_n_kv(const bg_gguf *g);
/* Index of key, or BG_ENOTFOUND. */
BG_API int64_t bg_gguf_find_key(const bg_gguf *g, const char *key);
BG_API const char *bg_gguf_key(const bg_gguf *g, int64_t i);
/* Value type (enum bg_gguf_type), or BG_EINVAL for a bad index. */
BG_API int bg_gguf_kv_type(const bg_gguf *g, int64_t i);

/* Scalar getters: 0, BG_EINVAL (bad index or NULL), or BG_EFORMAT when the value is not of
 * exactly that type (no conversions, as llama.cpp checks key types exactly). */
BG_API int bg_gguf_get_u8(const bg_gguf *g, int64_t i, uint8_t *out);
BG_API int bg_gguf_get_i8(const bg_gguf *g, int64_t i, int8_t *out);
BG_API int bg_gguf_get_u16(const bg_gguf *g, int64_t i, uint16_t *out);
BG_API int bg_gguf_get_i16(const bg_gguf *g, int64_t i, int16_t *out);
BG_API int bg_gguf_get_u32(const bg_gguf *g, int64_t i, uint32_t *out);
BG_API int bg_gguf_get_i32(const bg_gguf *g, int64_t i, int32_t *out);
BG_API int bg_gguf_get_f32(const bg_gguf *g, int64_t i, float *out);
BG_API int bg_gguf_get_bool(const bg_gguf *g, int64_t i, bool *out);
BG_API int bg_gguf_get_u64(const bg_gguf *g, int64_t i, uint64_t *out);
BG_API int bg_gguf_get_i64(const bg_gguf *g, int64_t i, int64_t *out);
BG_API int bg_gguf_get_f64(const bg_gguf *g, int64_t i, double *out);
/* A STRING value, NUL-terminated (it may also contain NULs: len, if not NULL, gets the byte
 * count); NULL if the value is not a string. */
BG_API const char *bg_gguf_get_str(const bg_gguf *g, int64_t i, size_t *len);

/* Arrays: element type, element count (negative if not an array). */
BG_API int bg_gguf_get_arr_type(const bg_gguf *g, int64_t i);
BG_API int64_t bg_gguf_get_arr_n(const bg_gguf *g, int64_t i);
/* Elements of an array of numbers, 8-byte aligned and native (BOOL elements are uint8_t 0 or
 * 1); NULL for string arrays and non-arrays. */
BG_API const void *bg_gguf_get_arr_data(const bg_gguf *g, int64_t i);
/* Element j of a string array, NUL-terminated; NULL if out of range or not a string array. */
BG_API const char *bg_gguf_get_arr_str(const bg_gguf *g, int64_t i, int64_t j, size_t *len);

/* Tensors, indexed 0 .. n_tensors - 1 in file order. */
BG_API int64_t bg_gguf_n_tensors(const bg_gguf *g);
BG_API int64_t bg_gguf_find_tensor(const bg_gguf *g, const char *name); /* or BG_ENOTFOUND */
BG_API const char *bg_gguf_tensor_name(const bg_gguf *g, int64_t i);
BG_API int bg_gguf_tensor_n_dims(const bg_gguf *g, int64_t i);
/* ne[4] in ggml order (ne[0] is the contiguous row length), 1 beyond n_dims. */
BG_API const int64_t *bg_gguf_tensor_ne(const bg_gguf *g, int64_t i);
BG_API int64_t bg_gguf_tensor_nelements(const bg_gguf *g, int64_t i);
BG_API int bg_gguf_tensor_type(const bg_gguf *g, int64_t i); /* ggml type id (quant.h) */
/* Offset of the tensor's data from the start of the data section, and its size in bytes. */
BG_API uint64_t bg_gguf_tensor_offset(const bg_gguf *g, int64_t i);
BG_API size_t bg_gguf_tensor_nbytes(const bg_gguf *g, int64_t i);
/* The raw bytes (valid until bg_gguf_free). Aligned to the file's alignment when opened from a
 * path; only 16-byte aligned after bg_gguf_open_memory. */
BG_API const void *bg_gguf_tensor_data(const bg_gguf *g, int64_t i);
/* Converts the tensor to nelements floats (F32, F16, BF16, F64, I8..I64, Q8_0, TQ1_0, TQ2_0;
 * BG_EUNSUPPORTED for other types). */
BG_API int bg_gguf_read_tensor_f32(const bg_gguf *g, int64_t i, float *dst);

/* ---- writer -------------------------------------------------------------------------- */

typedef struct bg_gguf_writer bg_gguf_writer;

BG_API int bg_gguf_writer_create(bg_gguf_writer **out);
BG_API void bg_gguf_writer_free(bg_gguf_writer **w);

/* Setters: 0, or BG_EINVAL for an empty or too long key, NULL arguments, or a
 * general.alignment that is not a UINT32 power of two; BG_ENOMEM. */
BG_API int bg_gguf_writer_set_u8(bg_gguf_writer *w, const char *key, uint8_t v);
BG_API int bg_gguf_writer_set_i8(bg_gguf_writer *w, const char *key, int8_t v);
BG_API int bg_gguf_writer_set_u16(bg_gguf_writer *w, const char *key, uint16_t v);
BG_API int bg_gguf_writer_set_i16(bg_gguf_writer *w, const char *key, int16_t v);
BG_API int bg_gguf_writer_set_u32(bg_gguf_writer *w, const char *key, uint32_t v);
BG_API int bg_gguf_writer_set_i32(bg_gguf_writer *w, const char *key, int32_t v);
BG_API int bg_gguf_writer_set_f32(bg_gguf_writer *w, const char *key, float v);
BG_API int bg_gguf_writer_set_bool(bg_gguf_writer *w, const char *key, bool v);
BG_API int bg_gguf_writer_set_u64(bg_gguf_writer *w, const char *key, uint64_t v);
BG_API int bg_gguf_writer_set_i64(bg_gguf_writer *w, const char *key, int64_t v);
BG_API int bg_gguf_writer_set_f64(bg_gguf_writer *w, const char *key, double v);
BG_API int bg_gguf_writer_set_str(bg_gguf_writer *w, const char *key, const char *v);
/* An array of n elements of elem_type (any type but ARRAY): data points to n values of the C
 * type (uint8_t .. double; bool for BOOL), or for STRING to n `const char *` (NUL-terminated).
 * data may be NULL when n is 0. */
BG_API int bg_gguf_writer_set_arr(bg_gguf_writer *w, const char *key, int elem_type,
                                  const void *data, size_t n);
/* Copies key/value i of a reader (any type) into the writer. */
BG_API int bg_gguf_writer_copy_kv(bg_gguf_writer *w, const bg_gguf *g, int64_t i);
BG_API int64_t bg_gguf_writer_n_kv(const bg_gguf_writer *w);

/* Adds a tensor: name shorter than 64 bytes and unique, n_dims 1..4, ne[i] >= 1 in ggml order,
 * ne[0] a multiple of the type's block size, nbytes equal to the size those imply (BG_EINVAL /
 * BG_ESHAPE otherwise). add_tensor copies the data; add_tensor_ref keeps the pointer, which
 * must stay valid until the writer is freed. */
BG_API int bg_gguf_writer_add_tensor(bg_gguf_writer *w, const char *name, int ggml_type, int n_dims,
                                     const int64_t *ne, const void *data, size_t nbytes);
BG_API int bg_gguf_writer_add_tensor_ref(bg_gguf_writer *w, const char *name, int ggml_type,
                                         int n_dims, const int64_t *ne, const void *data,
                                         size_t nbytes);
BG_API int64_t bg_gguf_writer_n_tensors(const bg_gguf_writer *w);

/* Writes the file atomically (see the top of this header). 0 or BG_EIO with err filled. */
BG_API int bg_gguf_writer_write(const bg_gguf_writer *w, const char *path, char *err,
                                size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
