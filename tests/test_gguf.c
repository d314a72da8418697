/* tests/test_gguf.c - the GGUF v3 reader and writer against files made by gguf-py.
 *
 * 1. Reads ../shared/golden/ggml-ternary/test_all_types{,_align64}.gguf and checks every key,
 *    type, value and tensor (name, dims, type, offset, bytes, values) against the values of the
 *    .json beside them (transcribed below).
 * 2. Writes the same content with bg_gguf_writer, twice (copying from the reader, and from
 *    scratch with set_* calls and bitgrad's own TQ quantizer) and requires the golden bytes.
 * 3. Round-trips every value type and tensor type through a file, and has gguf-py read that
 *    file back (tests/gguf_readback.py; skipped when python3 lacks the gguf package).
 * 4. Atomic writes: failures leave PATH as it was and no PATH.tmp behind.
 * Malformed files are tests/test_gguf_malformed.c.
 * Run: BG_GOLDEN_DIR=../shared/golden BG_SOURCE_DIR=. ./test_gguf   (exit 77 without goldens) */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <bitgrad/gguf.h>
#include <bitgrad/quant.h>

#include <float.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

__attribute__((format(printf, 2, 3))) static bool check(bool ok, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("%s", ok ? "ok   " : "FAIL ");
    vprintf(fmt, ap);
    putchar('\n');
    va_end(ap);
    harness_count(ok);
    return ok;
}

static char tmp_dir[] = "/tmp/bg_test_gguf_XXXXXX";

/* tmp_dir/name; four rotating buffers so that a few paths can be live at once. */
static const char *tpath(const char *name)
{
    static char bufs[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(bufs[k], sizeof bufs[k], "%s/%s", tmp_dir, name);
    return bufs[k];
}

static uint8_t *read_all(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    uint8_t *buf = NULL;
    long len = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (len >= 0 && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)len + 1)) != NULL &&
        fread(buf, 1, (size_t)len, f) != (size_t)len) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *size = buf ? (size_t)len : 0;
    return buf;
}

static size_t gguf_scalar_bytes(int t)
{
    static const size_t sizes[] = { 1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8 };
    return t >= 0 && t < BG_GGUF_TYPE_COUNT ? sizes[t] : 0;
}

/* ---- expected key/values: one table drives the checks and the writer ----------------- */

typedef struct kv_expect {
    const char *key;
    int type, arr_type;
    uint64_t u;
    int64_t i;
    double f;
    const char *s;
    const void *arr;
    size_t n;
} kv_expect;

static const uint8_t a_u8[] = { 0, 1, 255 };
static const int8_t a_i8[] = { -128, 0, 127 };
static const uint16_t a_u16[] = { 0, 65535 };
static const int16_t a_i16[] = { -32768, 32767 };
static const uint32_t a_u32[] = { 1, 2, 4294967295u };
static const int32_t a_i32[] = { -1, 0, 2147483647 };
static const float a_f32[] = { 1.5f, -0.25f, 0.001f };
static const bool a_bool[] = { true, false, true };
static const char *const a_str[] = { "a", "", "\303\274n\303\257code" }; /* "ünïcode" */
static const uint64_t a_u64[] = { 0, UINT64_MAX };
static const int64_t a_i64[] = { INT64_MIN, INT64_MAX };
static const double a_f64[] = { 3.141592653589793, -1e300 };

#define ARR(name, t, a)                                                                            \
    {                                                                                              \
        name, BG_GGUF_ARRAY, t, .arr = a, .n = sizeof a / sizeof a[0]                              \
    }

/* test_all_types.gguf.json, in file order (general.alignment is inserted second in _align64) */
static const kv_expect golden_kvs[] = {
    { "general.architecture", BG_GGUF_STRING, .s = "test" },
    { "test.u8", BG_GGUF_U8, .u = 200 },
    { "test.i8", BG_GGUF_I8, .i = -100 },
    { "test.u16", BG_GGUF_U16, .u = 60000 },
    { "test.i16", BG_GGUF_I16, .i = -30000 },
    { "test.u32", BG_GGUF_U32, .u = 4000000000u },
    { "test.i32", BG_GGUF_I32, .i = -2000000000 },
    { "test.f32", BG_GGUF_F32, .f = 0.15625 },
    { "test.bool", BG_GGUF_BOOL, .u = 1 },
    { "test.str", BG_GGUF_STRING, .s = "h\xc3\xa9llo w\xc3\xb6rld \xe2\x9c\x93" },
    { "test.u64", BG_GGUF_U64, .u = 18000000000000000000u },
    { "test.i64", BG_GGUF_I64, .i = -9000000000000000000 },
    { "test.f64", BG_GGUF_F64, .f = -2.718281828459045 },
    ARR("test.arr.u8", BG_GGUF_U8, a_u8),
    ARR("test.arr.i8", BG_GGUF_I8, a_i8),
    ARR("test.arr.u16", BG_GGUF_U16, a_u16),
    ARR("test.arr.i16", BG_GGUF_I16, a_i16),
    ARR("test.arr.u32", BG_GGUF_U32, a_u32),
    ARR("test.arr.i32", BG_GGUF_I32, a_i32),
    ARR("test.arr.f32", BG_GGUF_F32, a_f32),
    ARR("test.arr.bool", BG_GGUF_BOOL, a_bool),
    ARR("test.arr.str", BG_GGUF_STRING, a_str),
    ARR("test.arr.u64", BG_GGUF_U64, a_u64),
    ARR("test.arr.i64", BG_GGUF_I64, a_i64),
    ARR("test.arr.f64", BG_GGUF_F64, a_f64),
};
#define N_GOLDEN_KVS ((int)(sizeof golden_kvs / sizeof golden_kvs[0]))

static const kv_expect align64_kv = { "general.alignment", BG_GGUF_U32, .u = 64 };

static const kv_expect *golden_kv(int align64, int i)
{
    if (align64 && i == 1) return &align64_kv;
    return &golden_kvs[i - (align64 && i > 1)];
}

static bool arr_matches(const bg_gguf *g, int64_t i, const kv_expect *e)
{
    if (bg_gguf_get_arr_type(g, i) != e->arr_type || bg_gguf_get_arr_n(g, i) != (int64_t)e->n)
        return false;
    if (e->arr_type != BG_GGUF_STRING) {
        const void *data = bg_gguf_get_arr_data(g, i);
        return data && (e->n == 0 || !memcmp(data, e->arr, e->n * gguf_scalar_bytes(e->arr_type)));
    }
    for (size_t j = 0; j < e->n; j++) {
        size_t len;
        const char *s = bg_gguf_get_arr_str(g, i, (int64_t)j, &len);
        const char *want = ((const char *const *)e->arr)[j];
        if (!s || len != strlen(want) || memcmp(s, want, len) != 0) return false;
    }
    return bg_gguf_get_arr_str(g, i, (int64_t)e->n, NULL) == NULL;
}

static bool kv_matches(const bg_gguf *g, int64_t i, const kv_expect *e)
{
    if (i < 0 || bg_gguf_kv_type(g, i) != e->type || strcmp(bg_gguf_key(g, i), e->key) != 0)
        return false;
    union {
        uint8_t u8;
        int8_t i8;
        uint16_t u16;
        int16_t i16;
        uint32_t u32;
        int32_t i32;
        float f32;
        bool b;
        uint64_t u64;
        int64_t i64;
        double f64;
    } v;
    size_t len;
    const char *s;
    switch (e->type) {
    case BG_GGUF_U8: return !bg_gguf_get_u8(g, i, &v.u8) && v.u8 == e->u;
    case BG_GGUF_I8: return !bg_gguf_get_i8(g, i, &v.i8) && v.i8 == e->i;
    case BG_GGUF_U16: return !bg_gguf_get_u16(g, i, &v.u16) && v.u16 == e->u;
    case BG_GGUF_I16: return !bg_gguf_get_i16(g, i, &v.i16) && v.i16 == e->i;
    case BG_GGUF_U32: return !bg_gguf_get_u32(g, i, &v.u32) && v.u32 == e->u;
    case BG_GGUF_I32: return !bg_gguf_get_i32(g, i, &v.i32) && v.i32 == e->i;
    case BG_GGUF_F32: return !bg_gguf_get_f32(g, i, &v.f32) && v.f32 == (float)e->f;
    case BG_GGUF_BOOL: return !bg_gguf_get_bool(g, i, &v.b) && v.b == (e->u != 0);
    case BG_GGUF_U64: return !bg_gguf_get_u64(g, i, &v.u64) && v.u64 == e->u;
    case BG_GGUF_I64: return !bg_gguf_get_i64(g, i, &v.i64) && v.i64 == e->i;
    case BG_GGUF_F64: return !bg_gguf_get_f64(g, i, &v.f64) && v.f64 == e->f;
    case BG_GGUF_STRING:
        s = bg_gguf_get_str(g, i, &len);
        return s && len == strlen(e->s) && !memcmp(s, e->s, len) && s[len] == 0;
    case BG_GGUF_ARRAY: return arr_matches(g, i, e);
    default: return false;
    }
}

static int set_kv(bg_gguf_writer *w, const kv_expect *e)
{
    switch (e->type) {
    case BG_GGUF_U8: return bg_gguf_writer_set_u8(w, e->key, (uint8_t)e->u);
    case BG_GGUF_I8: return bg_gguf_writer_set_i8(w, e->key, (int8_t)e->i);
    case BG_GGUF_U16: return bg_gguf_writer_set_u16(w, e->key, (uint16_t)e->u);
    case BG_GGUF_I16: return bg_gguf_writer_set_i16(w, e->key, (int16_t)e->i);
    case BG_GGUF_U32: return bg_gguf_writer_set_u32(w, e->key, (uint32_t)e->u);
    case BG_GGUF_I32: return bg_gguf_writer_set_i32(w, e->key, (int32_t)e->i);
    case BG_GGUF_F32: return bg_gguf_writer_set_f32(w, e->key, (float)e->f);
    case BG_GGUF_BOOL: return bg_gguf_writer_set_bool(w, e->key, e->u != 0);
    case BG_GGUF_U64: return bg_gguf_writer_set_u64(w, e->key, e->u);
    case BG_GGUF_I64: return bg_gguf_writer_set_i64(w, e->key, e->i);
    case BG_GGUF_F64: return bg_gguf_writer_set_f64(w, e->key, e->f);
    case BG_GGUF_STRING: return bg_gguf_writer_set_str(w, e->key, e->s);
    default: return bg_gguf_writer_set_arr(w, e->key, e->arr_type, e->arr, e->n);
    }
}

/* ---- golden tensors --------------------------------------------------------------------- */

typedef struct tensor_expect {
    const char *name;
    int n_dims;
    int64_t ne0, ne1;
    int type;
    uint64_t off32, off64;
    size_t nbytes;
    const char *hex;
} tensor_expect;

static const tensor_expect golden_tensors[] = {
    { "t_f32", 2, 5, 3, BG_GGML_F32, 0, 0, 60,
      "000080bf000040bf000000bf000080be000000000000803e0000003f0000403f0000803f0000a03f"
      "0000c03f0000e03f000000400000104000002040" },
    { "t_f16", 2, 7, 2, BG_GGML_F16, 64, 64, 28,
      "00c200c100c000be00bc00b800000038003c003e0040004100420043" },
    { "t_tq2_0", 2, 256, 2, BG_GGML_TQ2_0, 96, 128, 132,
      "a85a1501a06a560580a85a1501a06a560580a85a1501a06a560580a85a1501a01501a06a560580a8"
      "5a1501a06a560580a85a1501a06a560580a85a1501a06a560038a06a560580a85a1501a06a560580"
      "a85a1501a06a560580a85a1501a06a560580560580a85a1501a06a560580a85a1501a06a560580a8"
      "5a1501a06a560580a85a0038" },
    { "t_tq1_0", 2, 512, 1, BG_GGML_TQ1_0, 256, 320, 108,
      "45cfcf6c6c4545cfcf6c6c4545cfcf6c6c4545cfcf6c6c4545cfcf6c6c4545cf943131bbbb949431"
      "31bbbb94943131bb30bbbb9200306c4545cfcf6c6c4545cfcf6c6c4545cfcf6c6c4545cfcf6c6c45"
      "45cfcf6c6c45bb94943131bbbb94943131bbbb949431923030bb0030" },
    { "t_scale", 1, 1, 1, BG_GGML_F32, 384, 448, 4, "2bf6173d" },
};

/* The values gguf-py was given (README section 4); TQ values are exactly representable. */
static void golden_values(int t, float *v)
{
    for (int i = 0; i < 512; i++) {
        switch (t) {
        case 0: v[i] = (float)i * 0.25f - 1.0f; break;
        case 1: v[i] = (float)i * 0.5f - 3.0f; break;
        case 2: v[i] = (float)((i * 7) / 3 % 3 - 1) * 0.5f; break;
        case 3: v[i] = (float)((i * 5) / 2 % 3 - 1) * 0.125f; break;
        default: v[i] = 0.0371f; break;
        }
    }
}

static bool hex_matches(const void *data, size_t n, const char *hex)
{
    const uint8_t *p = data;
    if (strlen(hex) != 2 * n) return false;
    for (size_t i = 0; i < n; i++) {
        unsigned b;
        if (sscanf(hex + 2 * i, "%2x", &b) != 1 || b != p[i]) return false;
    }
    return true;
}

static void check_golden_tensor(const bg_gguf *g, int align64, int k)
{
    const tensor_expect *e = &golden_tensors[k];
    int64_t i = bg_gguf_find_tensor(g, e->name);
    const int64_t *ne = bg_gguf_tensor_ne(g, i);
    check(i == k && bg_gguf_tensor_n_dims(g, i) == e->n_dims && ne && ne[0] == e->ne0 &&
              ne[1] == e->ne1 && ne[2] == 1 && ne[3] == 1 && bg_gguf_tensor_type(g, i) == e->type,
          "tensor %s: index %d, n_dims %d, ne [%lld,%lld], type %s", e->name, k, e->n_dims,
          (long long)e->ne0, (long long)e->ne1, bg_ggml_type_name(e->type));
    check(bg_gguf_tensor_offset(g, i) == (align64 ? e->off64 : e->off32) &&
              bg_gguf_tensor_nbytes(g, i) == e->nbytes &&
              hex_matches(bg_gguf_tensor_data(g, i), e->nbytes, e->hex),
          "tensor %s: offset %llu, %zu bytes equal to the JSON's raw_hex", e->name,
          (unsigned long long)(align64 ? e->off64 : e->off32), e->nbytes);
    float want[512], got[512];
    golden_values(k, want);
    int64_t n = bg_gguf_tensor_nelements(g, i);
    check(n == e->ne0 * e->ne1 && bg_gguf_read_tensor_f32(g, i, got) == 0 &&
              !memcmp(got, want, (size_t)n * sizeof(float)),
          "tensor %s: %lld values read as f32 equal the JSON's values", e->name, (long long)n);
}

static void check_golden(const char *path, int align64)
{
    char err[256];
    bg_gguf *g = NULL;
    int rc = bg_gguf_open(&g, path, err, sizeof err);
    if (!check(rc == 0, "open %s (%s)", path, rc ? err : "no error")) return;
    check(bg_gguf_version(g) == 3 && bg_gguf_alignment(g) == (align64 ? 64u : 32u) &&
              bg_gguf_data_offset(g) == (align64 ? 1216u : 1184u) && bg_gguf_n_tensors(g) == 5,
          "header: version 3, alignment %d, data offset %d, 5 tensors", align64 ? 64 : 32,
          align64 ? 1216 : 1184);
    int n = N_GOLDEN_KVS + align64;
    check(bg_gguf_n_kv(g) == n, "%d key/values", n);
    for (int i = 0; i < n && i < bg_gguf_n_kv(g); i++) {
        const kv_expect *e = golden_kv(align64, i);
        check(kv_matches(g, i, e) && bg_gguf_find_key(g, e->key) == i, "kv %2d %-20s %-4s %s", i,
              e->key, bg_gguf_type_name(e->type),
              e->type == BG_GGUF_ARRAY ? bg_gguf_type_name(e->arr_type) : "");
    }
    uint16_t u16;
    int64_t ku8 = bg_gguf_find_key(g, "test.u8");
    check(bg_gguf_get_u16(g, ku8, &u16) == BG_EFORMAT && bg_gguf_get_str(g, ku8, NULL) == NULL &&
              bg_gguf_get_arr_data(g, ku8) == NULL && bg_gguf_get_u16(g, 99, &u16) == BG_EINVAL &&
              bg_gguf_find_key(g, "nope") == BG_ENOTFOUND && bg_gguf_key(g, -1) == NULL,
          "getters refuse a wrong type, a bad index, a missing key");
    for (int k = 0; k < 5; k++) check_golden_tensor(g, align64, k);
    check(bg_gguf_find_tensor(g, "nope") == BG_ENOTFOUND && bg_gguf_tensor_name(g, 5) == NULL,
          "find_tensor of a missing name, tensor index out of range");
    bg_gguf_free(&g);
    check(g == NULL, "bg_gguf_free sets the pointer to NULL");
}

/* ---- writing the golden files again --------------------------------------------------------- */

static void compare_with_golden(const char *written, const char *golden, const char *how)
{
    size_t n1, n2;
    uint8_t *a = read_all(written, &n1), *b = read_all(golden, &n2);
    size_t i = 0;
    while (a && b && i < n1 && i < n2 && a[i] == b[i]) i++;
    check(a && b && n1 == n2 && i == n1, "%s: %zu bytes, identical to the golden file%s", how, n1,
          (a && b && i < n1) ? " (they differ, see the first difference below)" : "");
    if (a && b && (i < n1 || n1 != n2))
        printf("     first difference at byte %zu (sizes %zu and %zu)\n", i, n1, n2);
    free(a);
    free(b);
}

/* gguf-py's layout is reproducible: same key order, alignment and padding give the same bytes. */
static void rewrite_by_copy(const char *golden, const char *out)
{
    bg_gguf *g = NULL;
    bg_gguf_writer *w = NULL;
    char err[256] = "";
    int rc = bg_gguf_open(&g, golden, err, sizeof err);
    rc = rc ? rc : bg_gguf_writer_create(&w);
    for (int64_t i = 0; rc == 0 && i < bg_gguf_n_kv(g); i++) rc = bg_gguf_writer_copy_kv(w, g, i);
    for (int64_t i = 0; rc == 0 && i < bg_gguf_n_tensors(g); i++)
        rc = bg_gguf_writer_add_tensor_ref(w, bg_gguf_tensor_name(g, i), bg_gguf_tensor_type(g, i),
                                           bg_gguf_tensor_n_dims(g, i), bg_gguf_tensor_ne(g, i),
                                           bg_gguf_tensor_data(g, i), bg_gguf_tensor_nbytes(g, i));
    rc = rc ? rc : bg_gguf_writer_write(w, out, err, sizeof err);
    check(rc == 0, "copy every kv and tensor of the golden file into a writer, write%s%s",
          rc ? ": " : "", rc ? err : "");
    bg_gguf_writer_free(&w);
    bg_gguf_free(&g);
    compare_with_golden(out, golden, "written by copy_kv + add_tensor_ref");
}

/* From nothing but the table above and the source values, with bitgrad's quantizers. */
static void rewrite_from_scratch(const char *golden, const char *out, int align64)
{
    bg_gguf_writer *w = NULL;
    int rc = bg_gguf_writer_create(&w);
    for (int i = 0; rc == 0 && i < N_GOLDEN_KVS + align64; i++)
        rc = set_kv(w, golden_kv(align64, i));
    for (int k = 0; rc == 0 && k < 5; k++) {
        const tensor_expect *e = &golden_tensors[k];
        float v[512];
        uint8_t q[2048];
        golden_values(k, v);
        rc = bg_ggml_quantize(e->type, v, q, e->ne1, e->ne0);
        int64_t ne[2] = { e->ne0, e->ne1 };
        rc = rc ? rc : bg_gguf_writer_add_tensor(w, e->name, e->type, e->n_dims, ne, q, e->nbytes);
    }
    char err[256] = "";
    rc = rc ? rc : bg_gguf_writer_write(w, out, err, sizeof err);
    check(rc == 0 && bg_gguf_writer_n_kv(w) == N_GOLDEN_KVS + align64 &&
              bg_gguf_writer_n_tensors(w) == 5,
          "set_* every key, quantize and add every tensor, write%s%s", rc ? ": " : "",
          rc ? err : "");
    bg_gguf_writer_free(&w);
    compare_with_golden(out, golden, "written from scratch");
}

/* ---- round trip of every type, then gguf-py ------------------------------------------------ */

static const char *const rt_strs[] = { "tok\"en",        "back\\slash", "tab\there",
                                       "\xe2\x96\x81hi", "\xc4\x80",    "" };

/* Extremes of every value type, empty strings and arrays, characters JSON must escape. */
static const kv_expect rt_kvs[] = {
    { "general.architecture", BG_GGUF_STRING, .s = "bitgrad-roundtrip" },
    { "general.alignment", BG_GGUF_U32, .u = 128 },
    { "rt.u8", BG_GGUF_U8, .u = 255 },
    { "rt.i8", BG_GGUF_I8, .i = -128 },
    { "rt.u16", BG_GGUF_U16, .u = 65535 },
    { "rt.i16", BG_GGUF_I16, .i = -32768 },
    { "rt.u32", BG_GGUF_U32, .u = UINT32_MAX },
    { "rt.i32", BG_GGUF_I32, .i = INT32_MIN },
    { "rt.f32", BG_GGUF_F32, .f = -0.0 },
    { "rt.f32.denormal", BG_GGUF_F32, .f = 1.401298464324817e-45 },
    { "rt.bool", BG_GGUF_BOOL, .u = 0 },
    { "rt.str.empty", BG_GGUF_STRING, .s = "" },
    { "rt.str.escapes", BG_GGUF_STRING, .s = "quote \" backslash \\ newline \n tab \t \x01 end" },
    { "rt.u64", BG_GGUF_U64, .u = UINT64_MAX },
    { "rt.i64", BG_GGUF_I64, .i = INT64_MIN },
    { "rt.f64", BG_GGUF_F64, .f = DBL_MAX },
    { "rt.f64.denormal", BG_GGUF_F64, .f = 4.9406564584124654e-324 },
    ARR("rt.arr.str", BG_GGUF_STRING, rt_strs),
    ARR("rt.arr.u8", BG_GGUF_U8, a_u8),
    ARR("rt.arr.i8", BG_GGUF_I8, a_i8),
    ARR("rt.arr.u16", BG_GGUF_U16, a_u16),
    ARR("rt.arr.i16", BG_GGUF_I16, a_i16),
    ARR("rt.arr.u32", BG_GGUF_U32, a_u32),
    ARR("rt.arr.i32", BG_GGUF_I32, a_i32),
    ARR("rt.arr.f32", BG_GGUF_F32, a_f32),
    ARR("rt.arr.bool", BG_GGUF_BOOL, a_bool),
    ARR("rt.arr.u64", BG_GGUF_U64, a_u64),
    ARR("rt.arr.i64", BG_GGUF_I64, a_i64),
    ARR("rt.arr.f64", BG_GGUF_F64, a_f64),
    { "rt.arr.empty_u8", BG_GGUF_ARRAY, BG_GGUF_U8, .n = 0 },
    { "rt.arr.empty_f64", BG_GGUF_ARRAY, BG_GGUF_F64, .n = 0 },
    { "rt.arr.empty_str", BG_GGUF_ARRAY, BG_GGUF_STRING, .n = 0 },
};
#define N_RT_KVS ((int)(sizeof rt_kvs / sizeof rt_kvs[0]))

typedef struct rt_tensor {
    const char *name;
    int type, n_dims;
    int64_t ne[4];
    int from_codes; /* packed from ternary codes with d = 1 */
} rt_tensor;

static const rt_tensor rt_tensors[] = {
    { "rt.f32.4d", BG_GGML_F32, 4, { 3, 2, 2, 2 }, 0 },
    { "rt.f16", BG_GGML_F16, 1, { 7, 1, 1, 1 }, 0 },
    { "rt.bf16", BG_GGML_BF16, 2, { 5, 3, 1, 1 }, 0 },
    { "rt.q8_0", BG_GGML_Q8_0, 2, { 64, 3, 1, 1 }, 0 },
    { "rt.i8", BG_GGML_I8, 1, { 10, 1, 1, 1 }, 0 },
    { "rt.i16", BG_GGML_I16, 1, { 3, 1, 1, 1 }, 0 },
    { "rt.i32", BG_GGML_I32, 2, { 4, 2, 1, 1 }, 0 },
    { "rt.f64", BG_GGML_F64, 1, { 5, 1, 1, 1 }, 0 },
    { "rt.tq2_0.codes", BG_GGML_TQ2_0, 2, { 256, 3, 1, 1 }, 1 },
    { "rt.tq1_0.codes", BG_GGML_TQ1_0, 2, { 512, 2, 1, 1 }, 1 },
    { "rt.tq2_0.quant", BG_GGML_TQ2_0, 3, { 256, 2, 2, 1 }, 0 },
    { "rt.tq1_0.quant", BG_GGML_TQ1_0, 1, { 256, 1, 1, 1 }, 0 },
};
#define N_RT_TENSORS ((int)(sizeof rt_tensors / sizeof rt_tensors[0]))

typedef struct rt_data {
    uint8_t *bytes; /* what was added */
    size_t nbytes;
    float *want; /* the values a reader must return */
    int64_t n;
} rt_data;

/* Makes the tensor's bytes and expected values: integers for I types, codes for TQ codes. */
static int make_rt_tensor(const rt_tensor *t, uint64_t seed, rt_data *d)
{
    d->n = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
    d->nbytes = bg_ggml_row_size(t->type, t->ne[0]) * (size_t)(d->n / t->ne[0]);
    d->bytes = malloc(d->nbytes);
    d->want = malloc((size_t)d->n * sizeof(float));
    float *src = malloc((size_t)d->n * sizeof(float));
    int8_t *codes = malloc((size_t)d->n);
    int rc = d->bytes && d->want && src && codes ? 0 : BG_ENOMEM;
    bool ints = t->type == BG_GGML_I8 || t->type == BG_GGML_I16 || t->type == BG_GGML_I32;
    for (int64_t i = 0; rc == 0 && i < d->n; i++) {
        codes[i] = (int8_t)(harness_lcg(&seed) % 3u) - 1;
        src[i] = t->from_codes ? (float)codes[i] : harness_uniform(&seed, -2.0f, 2.0f);
        if (ints) src[i] = roundf(src[i] * 60.0f);
    }
    if (rc == 0 && t->from_codes)
        rc = t->type == BG_GGML_TQ2_0 ? bg_tq2_0_pack_codes(codes, 1.0f, d->bytes, d->n)
                                      : bg_tq1_0_pack_codes(codes, 1.0f, d->bytes, d->n);
    else if (rc == 0)
        rc = bg_ggml_quantize(t->type, src, d->bytes, d->n / t->ne[0], t->ne[0]);
    if (rc == 0) rc = bg_ggml_dequantize(t->type, d->bytes, d->want, d->n);
    if (rc == 0 && t->type != BG_GGML_Q8_0 && t->type != BG_GGML_F16 && t->type != BG_GGML_BF16 &&
        !(t->type >= BG_GGML_TQ1_0 && !t->from_codes))
        rc = memcmp(d->want, src, (size_t)d->n * sizeof(float)) ? BG_EINVAL : 0; /* lossless */
    free(src);
    free(codes);
    return rc;
}

static void json_str(FILE *f, const char *s, size_t n)
{
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

/* Element j of an array of GGUF type t (or the scalar of e when arr is NULL). */
static void json_value(FILE *f, int t, const kv_expect *e, const void *arr, size_t j)
{
    const char *s;
    switch (t) {
    case BG_GGUF_U8: fprintf(f, "%u", arr ? ((const uint8_t *)arr)[j] : (unsigned)e->u); break;
    case BG_GGUF_I8: fprintf(f, "%d", arr ? ((const int8_t *)arr)[j] : (int)e->i); break;
    case BG_GGUF_U16: fprintf(f, "%u", arr ? ((const uint16_t *)arr)[j] : (unsigned)e->u); break;
    case BG_GGUF_I16: fprintf(f, "%d", arr ? ((const int16_t *)arr)[j] : (int)e->i); break;
    case BG_GGUF_U32:
        fprintf(f, "%lu", arr ? (unsigned long)((const uint32_t *)arr)[j] : (unsigned long)e->u);
        break;
    case BG_GGUF_I32: fprintf(f, "%ld", arr ? (long)((const int32_t *)arr)[j] : (long)e->i); break;
    case BG_GGUF_F32: fprintf(f, "%.9g", arr ? (double)((const float *)arr)[j] : e->f); break;
    case BG_GGUF_BOOL:
        fputs((arr ? ((const bool *)arr)[j] : e->u != 0) ? "true" : "false", f);
        break;
    case BG_GGUF_U64:
        fprintf(f, "%llu", (unsigned long long)(arr ? ((const uint64_t *)arr)[j] : e->u));
        break;
    case BG_GGUF_I64:
        fprintf(f, "%lld", (long long)(arr ? ((const int64_t *)arr)[j] : e->i));
        break;
    case BG_GGUF_F64: fprintf(f, "%.17g", arr ? ((const double *)arr)[j] : e->f); break;
    default:
        s = arr ? ((const char *const *)arr)[j] : e->s;
        json_str(f, s, strlen(s));
        break;
    }
}

/* The expectations file of tests/gguf_readback.py for the round-trip file. */
static void write_expect_json(const char *path, const bg_gguf *g, rt_data *data)
{
    FILE *f = fopen(path, "w");
    if (!f) return;
    fprintf(f,
            "{\"version\": 3, \"alignment\": 128, \"n_kv\": %d, \"n_tensors\": %d,\n"
            "\"data_offset\": %llu, \"kv\": [\n",
            N_RT_KVS, N_RT_TENSORS, (unsigned long long)bg_gguf_data_offset(g));
    for (int i = 0; i < N_RT_KVS; i++) {
        const kv_expect *e = &rt_kvs[i];
        fprintf(f, "%s{\"key\": \"%s\", \"type_id\": %d, ", i ? ",\n" : "", e->key, e->type);
        if (e->type == BG_GGUF_ARRAY) {
            fprintf(f, "\"elem_type_id\": %d, \"value\": [", e->arr_type);
            for (size_t j = 0; j < e->n; j++) {
                fputs(j ? ", " : "", f);
                json_value(f, e->arr_type, e, e->arr, j);
            }
            fputs("]}", f);
        } else {
            fputs("\"value\": ", f);
            json_value(f, e->type, e, NULL, 0);
            fputs("}", f);
        }
    }
    fputs("],\n\"tensors\": [\n", f);
    for (int k = 0; k < N_RT_TENSORS; k++) {
        const rt_tensor *t = &rt_tensors[k];
        fprintf(f, "%s{\"name\": \"%s\", \"n_dims\": %d, \"ggml_type_id\": %d, \"ne\": [",
                k ? ",\n" : "", t->name, t->n_dims, t->type);
        for (int d = 0; d < t->n_dims; d++)
            fprintf(f, "%s%lld", d ? ", " : "", (long long)t->ne[d]);
        fprintf(f, "], \"offset\": %llu, \"nbytes\": %zu, \"values\": [",
                (unsigned long long)bg_gguf_tensor_offset(g, k), data[k].nbytes);
        for (int64_t i = 0; i < data[k].n; i++)
            fprintf(f, "%s%.9g", i ? ", " : "", (double)data[k].want[i]);
        fputs("]}", f);
    }
    fputs("]}\n", f);
    fclose(f);
}

/* Runs tests/gguf_readback.py; exit 77 (python3 or gguf missing) is reported, not failed. */
static void run_readback(const char *gguf, const char *json)
{
    const char *src = getenv("BG_SOURCE_DIR");
    char cmd[3072];
    snprintf(cmd, sizeof cmd, "python3 '%s/tests/gguf_readback.py' '%s' '%s'", src ? src : ".",
             gguf, json);
    printf("     running: %s\n", cmd);
    fflush(stdout);
    int st = system(cmd);
    int code = st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    if (code == 77 || code == 127)
        printf("SKIP gguf-py readback of %s: python3 or its gguf package is missing\n", gguf);
    else
        check(code == 0, "gguf-py (gguf.GGUFReader) reads %s as expected (exit %d)", gguf, code);
}

static void check_rt_tensors(const bg_gguf *g, rt_data *data)
{
    uint64_t off = 0;
    for (int k = 0; k < N_RT_TENSORS; k++) {
        const rt_tensor *t = &rt_tensors[k];
        const int64_t *ne = bg_gguf_tensor_ne(g, k);
        float *got = malloc((size_t)data[k].n * sizeof(float));
        bool ok = ne && got && !strcmp(bg_gguf_tensor_name(g, k), t->name) &&
                  bg_gguf_tensor_n_dims(g, k) == t->n_dims &&
                  bg_gguf_tensor_type(g, k) == t->type && !memcmp(ne, t->ne, sizeof t->ne) &&
                  bg_gguf_tensor_offset(g, k) == off &&
                  bg_gguf_tensor_nbytes(g, k) == data[k].nbytes &&
                  !memcmp(bg_gguf_tensor_data(g, k), data[k].bytes, data[k].nbytes) &&
                  bg_gguf_read_tensor_f32(g, k, got) == 0 &&
                  !memcmp(got, data[k].want, (size_t)data[k].n * sizeof(float));
        check(ok, "tensor %-15s %-5s n_dims %d, offset %llu, %zu bytes and %lld values back",
              t->name, bg_ggml_type_name(t->type), t->n_dims, (unsigned long long)off,
              data[k].nbytes, (long long)data[k].n);
        off += (data[k].nbytes + 127) / 128 * 128;
        free(got);
    }
}

static void test_roundtrip(const char *path, const char *json)
{
    bg_gguf_writer *w = NULL;
    rt_data data[N_RT_TENSORS] = { { 0 } };
    int rc = bg_gguf_writer_create(&w);
    for (int i = 0; rc == 0 && i < N_RT_KVS; i++) rc = set_kv(w, &rt_kvs[i]);
    /* replacing a value keeps the key's place (rt.u16 ends as the table says) */
    rc = rc ? rc : bg_gguf_writer_set_str(w, "rt.u16", "temporary");
    rc = rc ? rc : bg_gguf_writer_set_u16(w, "rt.u16", 65535);
    check(rc == 0 && bg_gguf_writer_n_kv(w) == N_RT_KVS, "set %d keys of every type (rc %d)",
          N_RT_KVS, rc);
    check(bg_gguf_writer_set_u64(w, "general.alignment", 64) == BG_EINVAL &&
              bg_gguf_writer_set_u32(w, "general.alignment", 48) == BG_EINVAL &&
              bg_gguf_writer_set_u32(w, "", 1) == BG_EINVAL &&
              bg_gguf_writer_set_arr(w, "x", BG_GGUF_ARRAY, a_u8, 1) == BG_EINVAL,
          "writer refuses a non-u32 or non-power-of-two alignment, an empty key, nested arrays");
    for (int k = 0; rc == 0 && k < N_RT_TENSORS; k++) {
        const rt_tensor *t = &rt_tensors[k];
        rc = make_rt_tensor(t, 1000u + (uint64_t)k, &data[k]);
        rc = rc ? rc
                : bg_gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, data[k].bytes,
                                            data[k].nbytes);
    }
    check(rc == 0, "made and added %d tensors (rc %d)", N_RT_TENSORS, rc);
    int64_t ne[2] = { 256, 1 }, ne_bad[1] = { 100 };
    check(bg_gguf_writer_add_tensor(w, "rt.f16", BG_GGML_F32, 1, ne, data[0].bytes, 1024) ==
                  BG_EINVAL &&
              bg_gguf_writer_add_tensor(w, "bad", BG_GGML_TQ2_0, 1, ne_bad, data[0].bytes, 66) ==
                  BG_ESHAPE &&
              bg_gguf_writer_add_tensor(w, "bad", BG_GGML_F32, 5, ne, data[0].bytes, 4) ==
                  BG_EINVAL &&
              bg_gguf_writer_add_tensor(w, "bad", 31, 1, ne, data[0].bytes, 4) == BG_EINVAL &&
              bg_gguf_writer_add_tensor(w, "bad", BG_GGML_F32, 1, ne, data[0].bytes, 4) ==
                  BG_EINVAL,
          "writer refuses a duplicate name, a row that is "
          "not whole blocks, n_dims 5, an unknown type, a wrong byte count");
    char err[256] = "";
    rc = bg_gguf_writer_write(w, path, err, sizeof err);
    bg_gguf_writer_free(&w);
    bg_gguf *g = NULL;
    rc = rc ? rc : bg_gguf_open(&g, path, err, sizeof err);
    if (!check(rc == 0, "write and reopen %s%s%s", path, rc ? ": " : "", rc ? err : "")) goto out;
    check(bg_gguf_alignment(g) == 128 && bg_gguf_data_offset(g) % 128 == 0 &&
              bg_gguf_n_kv(g) == N_RT_KVS && bg_gguf_n_tensors(g) == N_RT_TENSORS,
          "alignment 128, data offset %llu, %d keys, %d tensors",
          (unsigned long long)bg_gguf_data_offset(g), N_RT_KVS, N_RT_TENSORS);
    for (int i = 0; i < N_RT_KVS; i++)
        check(kv_matches(g, i, &rt_kvs[i]), "kv %2d %-18s %-4s %s back in place", i, rt_kvs[i].key,
              bg_gguf_type_name(rt_kvs[i].type),
              rt_kvs[i].type == BG_GGUF_ARRAY ? bg_gguf_type_name(rt_kvs[i].arr_type) : "");
    float f;
    check(bg_gguf_get_f32(g, bg_gguf_find_key(g, "rt.f32"), &f) == 0 && signbit(f),
          "f32 -0.0 keeps its sign");
    check_rt_tensors(g, data);
    write_expect_json(json, g, data);
    run_readback(path, json);
out:
    bg_gguf_free(&g);
    for (int k = 0; k < N_RT_TENSORS; k++) {
        free(data[k].bytes);
        free(data[k].want);
    }
}

/* The readback script against ground truth: the golden file and the JSON made with it. */
static void test_python_golden(const char *golden)
{
    char json[1100];
    snprintf(json, sizeof json, "%s.json", golden);
    run_readback(golden, json);
}
/* ---- atomic write ------------------------------------------------------------------------- */

static bg_gguf_writer *small_writer(void)
{
    bg_gguf_writer *w = NULL;
    static float data[400];
    int64_t ne[1] = { 400 };
    if (bg_gguf_writer_create(&w) != 0) return NULL;
    bg_gguf_writer_set_str(w, "general.architecture", "test");
    bg_gguf_writer_add_tensor_ref(w, "x", BG_GGML_F32, 1, ne, data, sizeof data);
    return w;
}

static bool file_is(const char *path, const char *content)
{
    size_t n;
    uint8_t *p = read_all(path, &n);
    bool ok = p && n == strlen(content) && !memcmp(p, content, n);
    free(p);
    return ok;
}

static void write_text(const char *path, const char *content)
{
    FILE *f = fopen(path, "wb");
    if (f) {
        fputs(content, f);
        fclose(f);
    }
}

static void test_atomic_write(void)
{
    bg_gguf_writer *w = small_writer();
    char err[256] = "";
    const char *path = tpath("atomic.gguf"), *tmp = tpath("atomic.gguf.tmp");
    struct stat st;
    int rc = bg_gguf_writer_write(w, tpath("no/such/dir/x.gguf"), err, sizeof err);
    check(rc == BG_EIO && err[0] && stat(tpath("no"), &st) != 0,
          "write into a missing directory fails cleanly: %s", err);

    write_text(path, "old content");
    mkdir(tmp, 0700); /* PATH.tmp cannot be created as a file */
    rc = bg_gguf_writer_write(w, path, err, sizeof err);
    check(rc == BG_EIO && err[0] && file_is(path, "old content"),
          "failed create of PATH.tmp leaves PATH unchanged: %s", err);
    rmdir(tmp);

    /* a write that fails half way: the file size limit stops it after 1000 bytes */
    struct rlimit old, small = { 1000, 1000 };
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    if (getrlimit(RLIMIT_FSIZE, &old) == 0 && (small.rlim_max = old.rlim_max, 1) &&
        setrlimit(RLIMIT_FSIZE, &small) == 0) {
        rc = bg_gguf_writer_write(w, path, err, sizeof err);
        setrlimit(RLIMIT_FSIZE, &old);
        check(rc == BG_EIO && err[0] && file_is(path, "old content") && stat(tmp, &st) != 0,
              "write failing mid-way (EFBIG) leaves PATH unchanged, PATH.tmp removed: %s", err);
    } else {
        printf("     (cannot lower RLIMIT_FSIZE here; mid-write failure not tested)\n");
    }
    signal(SIGXFSZ, old_handler);

    rc = bg_gguf_writer_write(w, path, err, sizeof err);
    bg_gguf *g = NULL;
    check(rc == 0 && stat(tmp, &st) != 0 && bg_gguf_open(&g, path, err, sizeof err) == 0 &&
              bg_gguf_n_tensors(g) == 1,
          "a successful write replaces PATH, no PATH.tmp left");
    bg_gguf_free(&g);
    remove(path);
    bg_gguf_writer_free(&w);
    check(bg_gguf_open(&g, tpath("missing.gguf"), err, sizeof err) == BG_EIO && err[0] && !g,
          "open of a missing file: %s", err);
    check(bg_gguf_open(&g, tmp_dir, err, sizeof err) == BG_EIO && err[0], "open of a directory: %s",
          err);
}

int main(void)
{
    const char *gdir = getenv("BG_GOLDEN_DIR");
    char g32[1024], g64[1024];
    snprintf(g32, sizeof g32, "%s/ggml-ternary/test_all_types.gguf",
             gdir ? gdir : "../shared/golden");
    snprintf(g64, sizeof g64, "%s/ggml-ternary/test_all_types_align64.gguf",
             gdir ? gdir : "../shared/golden");
    struct stat st;
    if (stat(g32, &st) != 0 || stat(g64, &st) != 0) {
        printf("SKIP: golden GGUF files not found (%s)\n", g32);
        return HARNESS_SKIP;
    }
    if (!mkdtemp(tmp_dir)) {
        printf("FAIL: cannot create a temporary directory\n");
        return 1;
    }
    printf("== golden files\n");
    check_golden(g32, 0);
    check_golden(g64, 1);
    printf("== writing the golden content again\n");
    rewrite_by_copy(g32, tpath("copy32.gguf"));
    rewrite_by_copy(g64, tpath("copy64.gguf"));
    rewrite_from_scratch(g32, tpath("scratch32.gguf"), 0);
    rewrite_from_scratch(g64, tpath("scratch64.gguf"), 1);
    printf("== round trip of every type\n");
    test_roundtrip(tpath("roundtrip.gguf"), tpath("roundtrip.json"));
    test_python_golden(g32);
    printf("== atomic writes\n");
    test_atomic_write();
    const char *names[] = { "copy32.gguf",    "copy64.gguf",    "scratch32.gguf",
                            "scratch64.gguf", "roundtrip.gguf", "roundtrip.json" };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) remove(tpath(names[i]));
    rmdir(tmp_dir);
    printf("test_gguf: ");
    return harness_summary();
}
