/* tests/test_gguf_malformed.c - the GGUF reader on malformed input: every case must end in an
 * error code and a message (printed), never a crash, a hang or a huge allocation. Meant to
 * run under ASan/UBSan and valgrind.
 *
 * Cases are built byte by byte from a small valid file (build() below, with one knob per
 * field), then: the golden file truncated at every byte offset, and every header/metadata byte
 * of it replaced by a few values (accepted mutants are read completely).
 * Run: BG_GOLDEN_DIR=../shared/golden ./test_gguf_malformed   (exit 77 without goldens) */
#include <bitgrad/gguf.h>
#include <bitgrad/quant.h>

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

/* ---- a byte builder with one knob per field ---------------------------------------------- */

typedef struct rawbuf {
    uint8_t p[16384];
    size_t len;
} rawbuf;

static void put(rawbuf *b, const void *src, size_t n)
{
    if (b->len + n <= sizeof b->p) memcpy(b->p + b->len, src, n);
    b->len += n;
}

static void put_u32(rawbuf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(rawbuf *b, uint64_t v) { put(b, &v, 8); }

/* A string whose length field may lie (len_field != 0 replaces the true length). */
static void put_str(rawbuf *b, const char *s, size_t n, uint64_t len_field)
{
    put_u64(b, len_field ? len_field : n);
    put(b, s, n);
}

static void pad(rawbuf *b, uint32_t align)
{
    static const uint8_t zeros[256];
    while (b->len % align) put(b, zeros, 1);
}

/* The valid file: kvs general.architecture (str), k.u32 (u32 7), k.arr (i32 [1,2,3]) and
 * optionally general.alignment; tensors "a" TQ2_0 [256, 2] and "b" F32 [4]. */
typedef struct mk {
    char magic[5];
    uint32_t version;
    int64_t n_kv, n_tensors; /* header counts, added to the true counts */
    uint64_t n_kv_raw;       /* if nonzero, written as the kv count instead */
    uint64_t n_tensors_raw;
    uint64_t key_len;   /* length field of key 2 (0: true) */
    int dup_key;        /* key 2 repeats key 1 */
    int32_t type2;      /* value type id of key 2 */
    uint64_t str_len;   /* length field of the string value (0: true) */
    int32_t arr_type;   /* element type of k.arr */
    uint64_t arr_n;     /* element count of k.arr (0: true) */
    int32_t align_type; /* type of general.alignment, -1: no such key */
    uint32_t alignment;
    uint32_t n_dims; /* of tensor a */
    int64_t ne0, ne1;
    int32_t ggml_type;
    const char *name_a; /* name of tensor a, name_n bytes */
    size_t name_n;
    uint64_t name_len; /* length field of a's name (0: true) */
    int dup_tensor;    /* tensor b is also called "a" */
    uint64_t off_b;    /* offset of b; UINT64_MAX: right after a */
    size_t cut;        /* bytes removed from the end */
} mk;

static mk base(void)
{
    mk m = { "GGUF", 3,           0, 0,  0,          0, 0,   0, BG_GGUF_U32,
             0,      BG_GGUF_I32, 0, -1, 32,         2, 256, 2, BG_GGML_TQ2_0,
             "a",    1,           0, 0,  UINT64_MAX, 0 };
    return m;
}

static void build_kvs(rawbuf *b, const mk *m)
{
    put_str(b, "general.architecture", 20, 0);
    put_u32(b, BG_GGUF_STRING);
    put_str(b, "test", 4, m->str_len);
    put_str(b, m->dup_key ? "general.architecture" : "k.u32", m->dup_key ? 20 : 5, m->key_len);
    put_u32(b, (uint32_t)m->type2);
    put_u32(b, 7);
    put_str(b, "k.arr", 5, 0);
    put_u32(b, BG_GGUF_ARRAY);
    put_u32(b, (uint32_t)m->arr_type);
    put_u64(b, m->arr_n ? m->arr_n : 3);
    for (uint32_t v = 1; v <= 3; v++) put_u32(b, v);
    if (m->align_type >= 0) {
        put_str(b, "general.alignment", 17, 0);
        put_u32(b, (uint32_t)m->align_type);
        if (m->align_type == BG_GGUF_U64) put_u64(b, m->alignment);
        else
            put_u32(b, m->alignment);
    }
}

static void build(rawbuf *b, const mk *m)
{
    uint32_t align = m->align_type >= 0 && m->alignment && !(m->alignment & (m->alignment - 1)) &&
                             m->alignment <= 4096
                         ? m->alignment
                         : 32;
    size_t bytes_a = bg_ggml_row_size(m->ggml_type, m->ne0) * (size_t)(m->ne1 > 0 ? m->ne1 : 1);
    if (bytes_a == 0 || bytes_a > 4096) bytes_a = 528;
    uint64_t off_b = m->off_b != UINT64_MAX ? m->off_b : (bytes_a + align - 1) / align * align;
    b->len = 0;
    put(b, m->magic, 4);
    put_u32(b, m->version);
    put_u64(b, m->n_tensors_raw ? m->n_tensors_raw : (uint64_t)(2 + m->n_tensors));
    put_u64(b, m->n_kv_raw ? m->n_kv_raw : (uint64_t)(3 + (m->align_type >= 0) + m->n_kv));
    build_kvs(b, m);
    put_str(b, m->name_a, m->name_n, m->name_len);
    put_u32(b, m->n_dims);
    for (uint32_t d = 0; d < m->n_dims && d < 8; d++)
        put_u64(b, (uint64_t)(d == 0 ? m->ne0 : d == 1 ? m->ne1 : 1));
    put_u32(b, (uint32_t)m->ggml_type);
    put_u64(b, 0);
    put_str(b, m->dup_tensor ? "a" : "b", 1, 0);
    put_u32(b, 1);
    put_u64(b, 4);
    put_u32(b, BG_GGML_F32);
    put_u64(b, off_b);
    pad(b, align);
    static uint8_t data[4096 + 64];
    memset(data, 0x55, sizeof data);
    put(b, data, bytes_a);
    pad(b, align);
    put(b, data, 16);
    pad(b, align);
    b->len = b->len > m->cut ? b->len - m->cut : 0;
}

/* ---- cases ---------------------------------------------------------------------------- */

static void expect_error(const char *what, const mk *m, const char *needle)
{
    static rawbuf b;
    build(&b, m);
    bg_gguf *g = NULL;
    char err[256] = "";
    int rc = bg_gguf_open_memory(&g, b.p, b.len, err, sizeof err);
    bool ok = rc < 0 && g == NULL && err[0] && (!needle || strstr(err, needle));
    check(ok, "%-34s -> %s", what, err[0] ? err : "(no message)");
    if (!ok && needle) printf("     expected a message containing \"%s\"\n", needle);
    bg_gguf_free(&g);
}

static void test_valid_bases(void)
{
    static rawbuf b;
    char err[256] = "";
    bg_gguf *g = NULL;
    mk m = base();
    float v[512];
    build(&b, &m);
    int rc = bg_gguf_open_memory(&g, b.p, b.len, err, sizeof err);
    check(rc == 0 && bg_gguf_n_kv(g) == 3 && bg_gguf_n_tensors(g) == 2 &&
              bg_gguf_read_tensor_f32(g, 0, v) == 0 && bg_gguf_tensor_offset(g, 1) == 160,
          "the base file (%zu bytes) is valid (%s)", b.len, err);
    bg_gguf_free(&g);
    m.align_type = BG_GGUF_U32;
    m.alignment = 64;
    build(&b, &m);
    rc = bg_gguf_open_memory(&g, b.p, b.len, err, sizeof err);
    check(rc == 0 && bg_gguf_alignment(g) == 64 && bg_gguf_tensor_offset(g, 1) == 192,
          "the base file with general.alignment = 64 is valid (%s)", err);
    bg_gguf_free(&g);
    static const uint8_t empty[24] = { 'G', 'G', 'U', 'F', 3 };
    rc = bg_gguf_open_memory(&g, empty, sizeof empty, err, sizeof err);
    check(rc == 0 && bg_gguf_n_kv(g) == 0 && bg_gguf_n_tensors(g) == 0,
          "a 24-byte file with no keys and no tensors is valid (%s)", err);
    bg_gguf_free(&g);
}

static void test_header_cases(void)
{
    mk m;
    m = base(), memcpy(m.magic, "GGUX", 4), expect_error("bad magic", &m, "magic");
    m = base(), m.version = 1, expect_error("version 1", &m, "version 1");
    m = base(), m.version = 2, expect_error("version 2", &m, "version 2");
    m = base(), m.version = 4, expect_error("version 4", &m, "unsupported version 4");
    m = base(), m.version = 0x03000000u, expect_error("big-endian file", &m, "big-endian");
    m = base(), m.n_kv_raw = 1ull << 62, expect_error("huge key/value count", &m, "implausible");
    m = base(), m.n_kv_raw = UINT64_MAX, expect_error("key/value count -1", &m, "implausible");
    m = base(), m.n_tensors_raw = 1ull << 40, expect_error("huge tensor count", &m, "implausible");
    m = base(), m.n_tensors_raw = (uint64_t)-5, expect_error("tensor count -5", &m, "implausible");
    m = base(), m.n_kv = 1, expect_error("one key/value too many", &m, NULL);
    m = base(), m.n_kv = -1, expect_error("one key/value too few", &m, NULL);
    m = base(), m.n_tensors = 1, expect_error("one tensor too many", &m, NULL);
    bg_gguf *g = NULL;
    char err[256] = "";
    static const uint8_t tiny[3] = { 'G', 'G', 'U' };
    check(bg_gguf_open_memory(&g, tiny, 0, err, sizeof err) < 0 && err[0], "%-34s -> %s",
          "empty file", err);
    check(bg_gguf_open_memory(&g, tiny, 3, err, sizeof err) < 0 && err[0], "%-34s -> %s",
          "3-byte file", err);
    check(bg_gguf_open_memory(NULL, tiny, 3, err, sizeof err) == BG_EINVAL &&
              bg_gguf_open_memory(&g, NULL, 3, NULL, 0) == BG_EINVAL,
          "NULL arguments rejected");
}

static void test_kv_cases(void)
{
    mk m;
    m = base(), m.key_len = 1ull << 63, expect_error("huge key length", &m, "exceeds the limit");
    m = base(), m.key_len = 70000, expect_error("key of 70000 bytes", &m, "exceeds the limit");
    m = base(), m.key_len = 4096, expect_error("key length past end of file", &m, "past end");
    m = base(), m.str_len = UINT64_MAX, expect_error("huge string length", &m, "past end");
    m = base(), m.str_len = 5000, expect_error("string length past end", &m, "past end");
    m = base(), m.type2 = 13, expect_error("value type 13", &m, "unknown value type 13");
    m = base(), m.type2 = -1, expect_error("value type -1", &m, "unknown value type -1");
    m = base(), m.arr_type = BG_GGUF_ARRAY, expect_error("array of arrays", &m, "arrays of arrays");
    m = base(), m.arr_type = 77, expect_error("array element type 77", &m, "element type 77");
    m = base(), m.arr_n = 1ull << 61, expect_error("huge array count", &m, "past end");
    m = base(), m.arr_n = UINT64_MAX, expect_error("array count 2^64-1", &m, "past end");
    m = base(), m.arr_type = BG_GGUF_STRING, m.arr_n = 1ull << 60,
    expect_error("huge string array count", &m, "cannot fit");
    m = base(), m.arr_type = BG_GGUF_STRING, expect_error("string array of garbage", &m, NULL);
    m = base(), m.dup_key = 1, expect_error("duplicate key", &m, "duplicate key");
    m = base(), m.align_type = BG_GGUF_U32, m.alignment = 48,
    expect_error("alignment 48", &m, "not a power of two");
    m = base(), m.align_type = BG_GGUF_U32, m.alignment = 0,
    expect_error("alignment 0", &m, "not a power of two");
    m = base(), m.align_type = BG_GGUF_U64, m.alignment = 64,
    expect_error("alignment of type u64", &m, "must be of type u32");
    m = base(), m.align_type = BG_GGUF_I32, m.alignment = 32,
    expect_error("alignment of type i32", &m, "must be of type u32");
}

static void test_tensor_cases(void)
{
    mk m;
    m = base(), m.n_dims = 0, expect_error("n_dims 0", &m, "n_dims 0");
    m = base(), m.n_dims = 5, expect_error("n_dims 5", &m, "n_dims 5");
    m = base(), m.n_dims = UINT32_MAX, expect_error("n_dims 2^32-1", &m, "n_dims");
    m = base(), m.ne0 = 0, expect_error("ne[0] = 0", &m, "not positive");
    m = base(), m.ne1 = -3, expect_error("ne[1] = -3", &m, "not positive");
    m = base(), m.ne1 = INT64_MAX, expect_error("element count overflow", &m, "overflows");
    m = base(), m.ggml_type = BG_GGML_F64, m.ne0 = 1ll << 61, m.ne1 = 1,
    expect_error("byte size overflow", &m, "overflows");
    m = base(), m.ne1 = 1ll << 40, expect_error("tensor larger than the file", &m, "past end");
    m = base(), m.ggml_type = 4, expect_error("ggml type 4 (removed)", &m, "unknown ggml type 4");
    m = base(), m.ggml_type = 36, expect_error("ggml type 36", &m, "unknown ggml type 36");
    m = base(), m.ggml_type = -1, expect_error("ggml type -1", &m, "unknown ggml type -1");
    m = base(), m.ggml_type = 1000, expect_error("ggml type 1000", &m, "unknown ggml type");
    m = base(), m.ne0 = 100, expect_error("TQ2_0 row of 100", &m, "not a multiple");
    m = base(), m.off_b = 1u << 20, expect_error("offset past end of file", &m, "past end");
    m = base(), m.off_b = UINT64_MAX - 31, expect_error("offset 2^64-32", &m, "past end");
    m = base(), m.off_b = 532, expect_error("misaligned offset", &m, "not a multiple");
    m = base(), m.align_type = BG_GGUF_U32, m.alignment = 64, m.off_b = 544,
    expect_error("offset aligned to 32, not 64", &m, "alignment 64");
    m = base(), m.off_b = 0, expect_error("overlapping tensors", &m, "overlap");
    m = base(), m.dup_tensor = 1, expect_error("duplicate tensor name", &m, "duplicate tensor");
    m = base(), m.name_a = "0123456789012345678901234567890123456789012345678901234567890123",
    m.name_n = 64, expect_error("tensor name of 64 bytes", &m, "too long");
    m = base(), m.name_len = 1ull << 62, expect_error("huge tensor name length", &m, "too long");
    m = base(), m.name_a = "a\0b", m.name_n = 3, expect_error("NUL in a tensor name", &m, "NUL");
    m = base(), m.cut = 1, expect_error("last tensor's padding cut", &m, "past end");
    m = base(), m.cut = 40, expect_error("last tensor cut", &m, "past end");
}

/* ---- truncation and mutation of a real file --------------------------------------------- */

static void test_truncations(const uint8_t *file, size_t size, const char *what)
{
    long bad = 0, first_bad = -1;
    char err[256];
    for (size_t len = 0; len < size; len++) {
        bg_gguf *g = NULL;
        err[0] = 0;
        int rc = bg_gguf_open_memory(&g, file, len, err, sizeof err);
        if (rc >= 0 || g || !err[0]) {
            bad += 1;
            first_bad = first_bad < 0 ? (long)len : first_bad;
        }
        bg_gguf_free(&g);
    }
    check(bad == 0, "%s truncated to each of 0..%zu bytes: every one rejected with a message", what,
          size - 1);
    if (bad) printf("     %ld accepted or silent, first at length %ld\n", bad, first_bad);
}

/* Reads everything an accepted file offers, so that ASan/valgrind see any bad pointer. */
static void read_everything(const bg_gguf *g)
{
    for (int64_t i = 0; i < bg_gguf_n_kv(g); i++) {
        size_t len;
        const char *s = bg_gguf_get_str(g, i, &len);
        volatile char sink = s ? s[len] : 0;
        for (int64_t j = 0; j < bg_gguf_get_arr_n(g, i); j++) {
            const char *e = bg_gguf_get_arr_str(g, i, j, &len);
            sink = e ? e[len] : sink;
        }
        (void)sink;
    }
    for (int64_t i = 0; i < bg_gguf_n_tensors(g); i++) {
        int64_t n = bg_gguf_tensor_nelements(g, i);
        float *buf = n > 0 && n < (1 << 20) ? malloc((size_t)n * sizeof *buf) : NULL;
        if (buf) (void)bg_gguf_read_tensor_f32(g, i, buf);
        free(buf);
    }
}

static void test_mutations(const uint8_t *file, size_t size, size_t meta_end)
{
    static const int values[] = { 0x00, 0xff, 0x7f, 0x80, -1, -2 }; /* -1: flip bit 0, -2: +0x10 */
    uint8_t *copy = malloc(size);
    long accepted = 0, rejected = 0, silent = 0;
    char err[256];
    for (size_t pos = 0; copy && pos < meta_end; pos++) {
        for (size_t v = 0; v < sizeof values / sizeof values[0]; v++) {
            memcpy(copy, file, size);
            copy[pos] = (uint8_t)(values[v] == -1   ? file[pos] ^ 1
                                  : values[v] == -2 ? file[pos] + 0x10
                                                    : values[v]);
            bg_gguf *g = NULL;
            err[0] = 0;
            if (bg_gguf_open_memory(&g, copy, size, err, sizeof err) == 0) {
                accepted++;
                read_everything(g);
            } else {
                rejected++;
                silent += !err[0];
            }
            bg_gguf_free(&g);
        }
    }
    free(copy);
    check(silent == 0 && rejected > 0,
          "%ld one-byte mutations of the first %zu bytes: %ld "
          "rejected with a message, %ld accepted and read completely",
          accepted + rejected, meta_end, rejected, accepted);
}

int main(void)
{
    const char *gdir = getenv("BG_GOLDEN_DIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/ggml-ternary/test_all_types.gguf",
             gdir ? gdir : "../shared/golden");
    size_t size = 0;
    uint8_t *golden = NULL;
    FILE *f = fopen(path, "rb");
    if (f) {
        golden = malloc(1 << 16);
        size = golden ? fread(golden, 1, 1 << 16, f) : 0;
        fclose(f);
    }
    if (!golden || size == 0) {
        printf("SKIP: %s not found\n", path);
        free(golden);
        return HARNESS_SKIP;
    }
    printf("== built cases\n");
    test_valid_bases();
    test_header_cases();
    test_kv_cases();
    test_tensor_cases();
    printf("== %s\n", path);
    test_truncations(golden, size, "test_all_types.gguf");
    static rawbuf b;
    mk m = base();
    build(&b, &m);
    test_truncations(b.p, b.len, "the base file");
    test_mutations(golden, size, 1184); /* header, key/values, tensor infos, padding */
    free(golden);
    printf("test_gguf_malformed: ");
    return harness_summary();
}
