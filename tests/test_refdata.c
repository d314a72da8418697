/*
 * test_refdata - checks the PyTorch reference data (tests/data/NAME.bgref) and
 * the reader of tests/refdata.h:
 *   - every file loads, holds exactly the documented entries with the
 *     documented shapes, and only finite values;
 *   - the C LCG reproduces every input of every case bit for bit (the inputs
 *     stored in mlp_ce.bgref compared value by value, all the others through
 *     the checksums of tests/data/REFERENCES.md);
 *   - corrupted files (truncated, bad counts, lengths, shapes) are rejected
 *     with a message, never a crash.
 * Data directory: $BG_TEST_DATA (default tests/data). No bitgrad dependency.
 */
#include "refdata.h"

#include <inttypes.h>

static int failures = 0;

#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);               \
            fprintf(stderr, __VA_ARGS__);                                      \
            fputc('\n', stderr);                                               \
            failures++;                                                        \
        }                                                                      \
    } while (0)

/* ------------------------------------------------------------------------ */
/* the inputs (from `make_refs.py --tables`)                                 */
/* ------------------------------------------------------------------------ */

enum { BGREF_IN_FILL, BGREF_IN_NORM, BGREF_IN_LABELS };

typedef struct {
    const char *group, *name;
    int kind;
    uint32_t seed;
    int ndim;
    int64_t shape[4];
    float scale; /* k for labels */
    uint64_t checksum;
} input_spec;

static const input_spec inputs[] = {
    {"mlp_ce", "x", BGREF_IN_FILL, 11u, 2, {8, 16}, 1.0f, UINT64_C(0x000020f6ee2d97e4)},
    {"mlp_ce", "W1", BGREF_IN_FILL, 12u, 2, {32, 16}, 0.25f, UINT64_C(0x0001f59f58d28eb0)},
    {"mlp_ce", "b1", BGREF_IN_FILL, 13u, 1, {32}, 0.1f, UINT64_C(0x000001da8c2aff82)},
    {"mlp_ce", "W2", BGREF_IN_FILL, 14u, 2, {10, 32}, 0.25f, UINT64_C(0x0000bb0606b9f2ba)},
    {"mlp_ce", "b2", BGREF_IN_FILL, 15u, 1, {10}, 0.1f, UINT64_C(0x0000003c5b7f6ea1)},
    {"mlp_ce", "targets", BGREF_IN_LABELS, 16u, 1, {8}, 10.0f, UINT64_C(0x0000000000000126)},
    {"attn_block", "x", BGREF_IN_FILL, 21u, 3, {2, 8, 32}, 1.0f, UINT64_C(0x0001f2661e378cb6)},
    {"attn_block", "attn_norm", BGREF_IN_NORM, 22u, 1, {32}, 0.1f, UINT64_C(0x000000fdf67c0689)},
    {"attn_block", "Wq", BGREF_IN_FILL, 23u, 2, {32, 32}, 0.2f, UINT64_C(0x0007b6c32a9c1b7a)},
    {"attn_block", "Wk", BGREF_IN_FILL, 24u, 2, {16, 32}, 0.2f, UINT64_C(0x0001f154a9301b92)},
    {"attn_block", "Wv", BGREF_IN_FILL, 25u, 2, {16, 32}, 0.2f, UINT64_C(0x0001f1964ab12066)},
    {"attn_block", "Wo", BGREF_IN_FILL, 26u, 2, {32, 32}, 0.2f, UINT64_C(0x0007d0b24db18efe)},
    {"attn_block", "ffn_norm", BGREF_IN_NORM, 27u, 1, {32}, 0.1f, UINT64_C(0x000000fde204916d)},
    {"attn_block", "Wg", BGREF_IN_FILL, 28u, 2, {64, 32}, 0.2f, UINT64_C(0x001f226a509eba06)},
    {"attn_block", "Wu", BGREF_IN_FILL, 29u, 2, {64, 32}, 0.2f, UINT64_C(0x001f7a213f628f1a)},
    {"attn_block", "Wd", BGREF_IN_FILL, 30u, 2, {32, 64}, 0.2f, UINT64_C(0x001f0e601dad9e2a)},
    {"attn_block", "R", BGREF_IN_FILL, 31u, 3, {2, 8, 32}, 1.0f, UINT64_C(0x0001f09da93b5c2c)},
    {"w1", "X", BGREF_IN_FILL, 41u, 2, {256, 784}, 1.0f, UINT64_C(0xa1acb0b7c82d838a)},
    {"w1", "W1", BGREF_IN_FILL, 42u, 2, {1024, 784}, 0.05f, UINT64_C(0xfe076f2d3db12b7c)},
    {"w1", "W2", BGREF_IN_FILL, 43u, 2, {1024, 1024}, 0.05f, UINT64_C(0x94ab4e279add931c)},
    {"w1", "W3", BGREF_IN_FILL, 44u, 2, {10, 1024}, 0.05f, UINT64_C(0x0309f3a1b0d03c3a)},
    {"w1", "labels", BGREF_IN_LABELS, 45u, 1, {256}, 10.0f, UINT64_C(0x0000000000047c21)},
    {"bitnet_block", "x", BGREF_IN_FILL, 51u, 3, {2, 8, 32}, 1.0f, UINT64_C(0x00020aa5ed53497a)},
    {"bitnet_block", "attn_norm", BGREF_IN_NORM, 52u, 1, {32}, 0.1f, UINT64_C(0x000000fdf125e8d4)},
    {"bitnet_block", "Wq", BGREF_IN_FILL, 53u, 2, {32, 32}, 0.2f, UINT64_C(0x0007e45a659cee58)},
    {"bitnet_block", "Wk", BGREF_IN_FILL, 54u, 2, {16, 32}, 0.2f, UINT64_C(0x0001d42eb0facac0)},
    {"bitnet_block", "Wv", BGREF_IN_FILL, 55u, 2, {16, 32}, 0.2f, UINT64_C(0x000211a8551fff19)},
    {"bitnet_block", "Wo", BGREF_IN_FILL, 56u, 2, {32, 32}, 0.2f, UINT64_C(0x0007b11bff2bb574)},
    {"bitnet_block", "attn_sub_norm", BGREF_IN_NORM, 57u, 1, {32}, 0.1f, UINT64_C(0x000000fdf304410b)},
    {"bitnet_block", "ffn_norm", BGREF_IN_NORM, 58u, 1, {32}, 0.1f, UINT64_C(0x000000fdea3b2ed2)},
    {"bitnet_block", "Wg", BGREF_IN_FILL, 59u, 2, {64, 32}, 0.2f, UINT64_C(0x001ff174b236c612)},
    {"bitnet_block", "Wu", BGREF_IN_FILL, 60u, 2, {64, 32}, 0.2f, UINT64_C(0x001f8cf1feb45f73)},
    {"bitnet_block", "Wd", BGREF_IN_FILL, 61u, 2, {32, 64}, 0.2f, UINT64_C(0x001fcd569c16cab0)},
    {"bitnet_block", "ffn_sub_norm", BGREF_IN_NORM, 62u, 1, {64}, 0.1f, UINT64_C(0x000003f7ab9dba0f)},
    {"bitnet_block", "R", BGREF_IN_FILL, 63u, 3, {2, 8, 32}, 1.0f, UINT64_C(0x00022b7bc29542bc)},
    {"bitnet_model", "ids", BGREF_IN_LABELS, 61u, 2, {2, 16}, 256.0f, UINT64_C(0x0000000000023681)},
    {"bitnet_model", "token_embd", BGREF_IN_FILL, 62u, 2, {256, 64}, 0.5f, UINT64_C(0x07ea8e1774f6074e)},
    {"bitnet_model", "blk.0.attn_norm", BGREF_IN_NORM, 63u, 1, {64}, 0.1f, UINT64_C(0x000003f7902e7bf7)},
    {"bitnet_model", "blk.0.attn_q", BGREF_IN_FILL, 64u, 2, {64, 64}, 0.2f, UINT64_C(0x007de224b1b98d77)},
    {"bitnet_model", "blk.0.attn_k", BGREF_IN_FILL, 65u, 2, {32, 64}, 0.2f, UINT64_C(0x001f144e6eda76b5)},
    {"bitnet_model", "blk.0.attn_v", BGREF_IN_FILL, 66u, 2, {32, 64}, 0.2f, UINT64_C(0x002061c805eca4a5)},
    {"bitnet_model", "blk.0.attn_output", BGREF_IN_FILL, 67u, 2, {64, 64}, 0.2f, UINT64_C(0x007e7402eae3e862)},
    {"bitnet_model", "blk.0.attn_sub_norm", BGREF_IN_NORM, 68u, 1, {64}, 0.1f, UINT64_C(0x000003f7b1c697dd)},
    {"bitnet_model", "blk.0.ffn_norm", BGREF_IN_NORM, 69u, 1, {64}, 0.1f, UINT64_C(0x000003f7c51541a0)},
    {"bitnet_model", "blk.0.ffn_gate", BGREF_IN_FILL, 70u, 2, {128, 64}, 0.2f, UINT64_C(0x01f17d381e3d9eb6)},
    {"bitnet_model", "blk.0.ffn_up", BGREF_IN_FILL, 71u, 2, {128, 64}, 0.2f, UINT64_C(0x01f5430e349f13f3)},
    {"bitnet_model", "blk.0.ffn_down", BGREF_IN_FILL, 72u, 2, {64, 128}, 0.2f, UINT64_C(0x01f9a06f8c287eb8)},
    {"bitnet_model", "blk.0.ffn_sub_norm", BGREF_IN_NORM, 73u, 1, {128}, 0.1f, UINT64_C(0x00000fdf07e0d5a5)},
    {"bitnet_model", "blk.1.attn_norm", BGREF_IN_NORM, 74u, 1, {64}, 0.1f, UINT64_C(0x000003f7b350dbea)},
    {"bitnet_model", "blk.1.attn_q", BGREF_IN_FILL, 75u, 2, {64, 64}, 0.2f, UINT64_C(0x007c32b2c0b35278)},
    {"bitnet_model", "blk.1.attn_k", BGREF_IN_FILL, 76u, 2, {32, 64}, 0.2f, UINT64_C(0x001f088151dec85a)},
    {"bitnet_model", "blk.1.attn_v", BGREF_IN_FILL, 77u, 2, {32, 64}, 0.2f, UINT64_C(0x001f08b8803c267d)},
    {"bitnet_model", "blk.1.attn_output", BGREF_IN_FILL, 78u, 2, {64, 64}, 0.2f, UINT64_C(0x007cfc2f3e94f2fd)},
    {"bitnet_model", "blk.1.attn_sub_norm", BGREF_IN_NORM, 79u, 1, {64}, 0.1f, UINT64_C(0x000003f7a0159f49)},
    {"bitnet_model", "blk.1.ffn_norm", BGREF_IN_NORM, 80u, 1, {64}, 0.1f, UINT64_C(0x000003f7f42113ad)},
    {"bitnet_model", "blk.1.ffn_gate", BGREF_IN_FILL, 81u, 2, {128, 64}, 0.2f, UINT64_C(0x01f5e057dee85746)},
    {"bitnet_model", "blk.1.ffn_up", BGREF_IN_FILL, 82u, 2, {128, 64}, 0.2f, UINT64_C(0x01f8a1fe1d8770c4)},
    {"bitnet_model", "blk.1.ffn_down", BGREF_IN_FILL, 83u, 2, {64, 128}, 0.2f, UINT64_C(0x01ec86d2e59227f0)},
    {"bitnet_model", "blk.1.ffn_sub_norm", BGREF_IN_NORM, 84u, 1, {128}, 0.1f, UINT64_C(0x00000fdeb31cc510)},
    {"bitnet_model", "output_norm", BGREF_IN_NORM, 85u, 1, {64}, 0.1f, UINT64_C(0x000003f7a32e223a)},
};

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

static size_t numel_of(int ndim, const int64_t *shape)
{
    size_t n = 1;
    for (int d = 0; d < ndim; d++)
        n *= (size_t)shape[d];
    return n;
}

/* Generates input i; returns its checksum; fills f (float kinds) or l. */
static uint64_t make_input(const input_spec *in, float *f, int32_t *l)
{
    size_t n = numel_of(in->ndim, in->shape);
    switch (in->kind) {
    case BGREF_IN_FILL:
        bgref_lcg_fill(in->seed, n, in->scale, f);
        return bgref_checksum_f32(f, n);
    case BGREF_IN_NORM:
        bgref_lcg_norm(in->seed, n, in->scale, f);
        return bgref_checksum_f32(f, n);
    default:
        bgref_lcg_labels(in->seed, n, (uint32_t)in->scale, l);
        return bgref_checksum_i32(l, n);
    }
}

static const input_spec *find_input(const char *group, const char *name)
{
    for (size_t i = 0; i < N_ELEMS(inputs); i++)
        if (!strcmp(inputs[i].group, group) && !strcmp(inputs[i].name, name))
            return &inputs[i];
    return NULL;
}

static void test_lcg(void)
{
    /* the recurrence itself */
    uint32_t s = 0;
    CHECK(bgref_lcg_next(&s) == 1013904223u, "first state from seed 0");
    CHECK(bgref_lcg_next(&s) == 1196435762u, "second state from seed 0");
    s = 0xffffffffu;
    CHECK(bgref_lcg_next(&s) == (uint32_t)(1013904223u - 1664525u),
          "wrap-around");

    /* first value of lcg_fill(11, ., 1.0) is 0xbf04f356 (REFERENCES.md) */
    float v;
    uint32_t bits;
    bgref_lcg_fill(11, 1, 1.0f, &v);
    memcpy(&bits, &v, 4);
    CHECK(bits == 0xbf04f356u, "lcg_fill(11)[0] bits %08" PRIx32, bits);

    /* range: [-scale, scale) */
    float buf[4096];
    bgref_lcg_fill(7, 4096, 0.25f, buf);
    int inrange = 1;
    for (int i = 0; i < 4096; i++)
        inrange &= buf[i] >= -0.25f && buf[i] < 0.25f;
    CHECK(inrange, "lcg_fill range");

    /* every input of every case, against the Python checksums */
    size_t maxn = 0;
    for (size_t i = 0; i < N_ELEMS(inputs); i++) {
        size_t n = numel_of(inputs[i].ndim, inputs[i].shape);
        if (n > maxn)
            maxn = n;
    }
    float *f = (float *)malloc(maxn * sizeof *f);
    int32_t *l = (int32_t *)malloc(maxn * sizeof *l);
    if (!f || !l) {
        CHECK(0, "out of memory");
        free(f);
        free(l);
        return;
    }
    for (size_t i = 0; i < N_ELEMS(inputs); i++) {
        uint64_t cs = make_input(&inputs[i], f, l);
        CHECK(cs == inputs[i].checksum,
              "input %s/%s (seed %" PRIu32 "): checksum %016" PRIx64
              " != %016" PRIx64, inputs[i].group, inputs[i].name,
              inputs[i].seed, cs, inputs[i].checksum);
    }
    free(f);
    free(l);
}

/* ------------------------------------------------------------------------ */
/* the files and their entries                                               */
/* ------------------------------------------------------------------------ */

typedef struct {
    const char *file, *name;
    int ndim;
    int64_t shape[4];
} entry_spec;

#define W1S(tag)                                                               \
    {"w1_bitlinear", tag "_W1", 2, {1024, 784}},                               \
    {"w1_bitlinear", tag "_W2", 2, {1024, 1024}},                              \
    {"w1_bitlinear", tag "_W3", 2, {10, 1024}}

#define W1_GRADS(file)                                                         \
    {file, "labels", 1, {256}}, {file, "logits", 2, {256, 10}},                \
    {file, "loss", 0, {0}}, {file, "dW1", 2, {1024, 784}},                     \
    {file, "dW2", 2, {1024, 1024}}, {file, "dW3", 2, {10, 1024}}

#define BLOCK_COMMON(file)                                                     \
    {file, "out", 3, {2, 8, 32}}, {file, "loss", 0, {0}},                      \
    {file, "dx", 3, {2, 8, 32}}, {file, "d_attn_norm", 1, {32}},               \
    {file, "dWq", 2, {32, 32}}, {file, "dWk", 2, {16, 32}},                    \
    {file, "dWv", 2, {16, 32}}, {file, "dWo", 2, {32, 32}}

static const entry_spec entries[] = {
    {"mlp_ce", "x", 2, {8, 16}},
    {"mlp_ce", "W1", 2, {32, 16}},
    {"mlp_ce", "b1", 1, {32}},
    {"mlp_ce", "W2", 2, {10, 32}},
    {"mlp_ce", "b2", 1, {10}},
    {"mlp_ce", "targets", 1, {8}},
    {"mlp_ce", "logits", 2, {8, 10}},
    {"mlp_ce", "loss", 0, {0}},
    {"mlp_ce", "dx", 2, {8, 16}},
    {"mlp_ce", "dW1", 2, {32, 16}},
    {"mlp_ce", "db1", 1, {32}},
    {"mlp_ce", "dW2", 2, {10, 32}},
    {"mlp_ce", "db2", 1, {10}},

    BLOCK_COMMON("attn_block"),
    {"attn_block", "d_ffn_norm", 1, {32}},
    {"attn_block", "dWg", 2, {64, 32}},
    {"attn_block", "dWu", 2, {64, 32}},
    {"attn_block", "dWd", 2, {32, 64}},

    W1_GRADS("w1_bitlinear"),
    W1S("adamw"),
    W1S("adamw2"),
    W1S("sgd"),
    W1S("sgd2"),

    W1_GRADS("w1_bitlinear_exact"),
    W1_GRADS("w1_float"),

    BLOCK_COMMON("bitnet_block"),
    {"bitnet_block", "d_attn_sub_norm", 1, {32}},
    {"bitnet_block", "d_ffn_norm", 1, {32}},
    {"bitnet_block", "dWg", 2, {64, 32}},
    {"bitnet_block", "dWu", 2, {64, 32}},
    {"bitnet_block", "dWd", 2, {32, 64}},
    {"bitnet_block", "d_ffn_sub_norm", 1, {64}},

    {"bitnet_model", "ids", 2, {2, 16}},
    {"bitnet_model", "logits_f64", 3, {2, 16, 256}},
    {"bitnet_model", "logits_f32", 3, {2, 16, 256}},
};

static const char *const files[] = {
    "mlp_ce", "attn_block", "w1_bitlinear", "w1_bitlinear_exact", "w1_float",
    "bitnet_block", "bitnet_model",
};

/* Checks one file's entries (names, order, shapes, finiteness). */
static bgref *check_file(const char *file)
{
    bgref *r = bgref_load_case(file);
    CHECK(r != NULL, "%s: does not load (BG_TEST_DATA=%s)", file,
          bgref_data_dir());
    if (!r)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < N_ELEMS(entries); i++) {
        const entry_spec *es = &entries[i];
        if (strcmp(es->file, file) != 0)
            continue;
        CHECK(k < r->count && !strcmp(r->entries[k].name, es->name),
              "%s: entry %zu is '%s', expected '%s'", file, k,
              k < r->count ? r->entries[k].name : "(none)", es->name);
        k++;
        const bgref_entry *e = bgref_expect(r, es->name, es->ndim, es->shape);
        CHECK(e != NULL, "%s: entry '%s' missing or misshapen", file,
              es->name);
        if (!e)
            continue;
        size_t bad = 0;
        for (size_t j = 0; j < e->numel; j++)
            bad += !isfinite(e->data[j]);
        CHECK(bad == 0, "%s: '%s': %zu non-finite values", file, es->name,
              bad);
    }
    CHECK(k == r->count, "%s: %zu entries, expected %zu", file, r->count, k);
    return r;
}

/* Compares a stored label entry (floats) with lcg_labels of an input. */
static void check_labels(const bgref *r, const char *entry, const char *group,
                         const char *name, int ignore_at)
{
    const bgref_entry *e = bgref_find(r, entry);
    const input_spec *in = find_input(group, name);
    if (!e || !in) {
        CHECK(0, "labels %s missing", entry);
        return;
    }
    size_t n = numel_of(in->ndim, in->shape);
    CHECK(e->numel == n, "labels %s: %zu values", entry, e->numel);
    int32_t *l = (int32_t *)malloc(n * sizeof *l);
    if (!l || e->numel != n) {
        free(l);
        return;
    }
    bgref_lcg_labels(in->seed, n, (uint32_t)in->scale, l);
    if (ignore_at >= 0)
        l[ignore_at] = -100;
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        bad += e->data[i] != (float)l[i];
    CHECK(bad == 0, "labels %s: %zu differ from lcg_labels", entry, bad);
    free(l);
}

static void test_files(void)
{
    for (size_t fi = 0; fi < N_ELEMS(files); fi++) {
        bgref *r = check_file(files[fi]);
        if (!r)
            continue;
        if (!strcmp(files[fi], "mlp_ce")) {
            /* the stored inputs equal the C LCG bit for bit */
            static const char *const names[] = {"x", "W1", "b1", "W2", "b2"};
            for (size_t i = 0; i < N_ELEMS(names); i++) {
                const input_spec *in = find_input("mlp_ce", names[i]);
                const bgref_entry *e = bgref_find(r, names[i]);
                if (!in || !e)
                    continue;
                size_t n = numel_of(in->ndim, in->shape);
                float *f = (float *)malloc(n * sizeof *f);
                if (!f)
                    continue;
                bgref_lcg_fill(in->seed, n, in->scale, f);
                CHECK(e->numel == n &&
                      memcmp(f, e->data, n * sizeof *f) == 0,
                      "mlp_ce: stored '%s' differs from lcg_fill(%" PRIu32
                      ", %zu, %g)", names[i], in->seed, n,
                      (double)in->scale);
                free(f);
            }
            check_labels(r, "targets", "mlp_ce", "targets", 3);
            const bgref_entry *loss = bgref_find(r, "loss");
            CHECK(loss && loss->ndim == 0 && loss->numel == 1 &&
                  loss->data[0] > 2.0f && loss->data[0] < 2.5f,
                  "mlp_ce: loss");
        } else if (!strncmp(files[fi], "w1_", 3)) {
            check_labels(r, "labels", "w1", "labels", -1);
        } else if (!strcmp(files[fi], "bitnet_model")) {
            check_labels(r, "ids", "bitnet_model", "ids", -1);
            const bgref_entry *a = bgref_find(r, "logits_f32");
            const bgref_entry *b = bgref_find(r, "logits_f64");
            if (a && b && a->numel == b->numel) {
                double err = bgref_max_rel_err(a->data, b->data, a->numel);
                CHECK(err < 1e-5, "bitnet_model: f32 vs f64 logits %.3e", err);
                CHECK(bgref_check("self", a->data, a->numel, a, 0.0) == 0,
                      "bgref_check self");
            }
        }
        bgref_free(r);
    }
}

/* ------------------------------------------------------------------------ */
/* corrupted files                                                           */
/* ------------------------------------------------------------------------ */

static unsigned char *read_raw(const char *file, size_t *size)
{
    const char *dir = bgref_data_dir();
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.bgref", dir, file);
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = n > 0 ? (unsigned char *)malloc((size_t)n) : NULL;
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        fclose(f);
        return NULL;
    }
    fclose(f);
    *size = (size_t)n;
    return buf;
}

static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static int rejects(const unsigned char *buf, size_t size)
{
    bgref *r = bgref_parse_log(buf, size, "corrupt", NULL);
    bgref_free(r);
    return r == NULL;
}

static void test_corrupt(void)
{
    size_t size = 0;
    unsigned char *orig = read_raw("mlp_ce", &size);
    CHECK(orig != NULL, "cannot read mlp_ce.bgref raw");
    if (!orig)
        return;
    unsigned char *b = (unsigned char *)malloc(size + 16);
    if (!b) {
        free(orig);
        return;
    }
    /* intact image parses */
    bgref *r = bgref_parse_log(orig, size, "mlp_ce", stderr);
    CHECK(r && r->count == 13, "intact image");
    bgref_free(r);

    /* every truncation is rejected */
    size_t accepted = 0;
    for (size_t n = 0; n < size; n++)
        accepted += !rejects(orig, n);
    CHECK(accepted == 0, "%zu truncations accepted", accepted);

    /* a trailing byte */
    memcpy(b, orig, size);
    b[size] = 0;
    CHECK(rejects(b, size + 1), "trailing byte accepted");

    /* header */
    memcpy(b, orig, size);
    b[0] = 'X';
    CHECK(rejects(b, size), "bad magic accepted");
    memcpy(b, orig, size);
    put_u32(b + 4, 2);
    CHECK(rejects(b, size), "version 2 accepted");
    memcpy(b, orig, size);
    put_u32(b + 8, 0xffffffffu);
    CHECK(rejects(b, size), "huge count accepted");
    memcpy(b, orig, size);
    put_u32(b + 8, 14);
    CHECK(rejects(b, size), "count + 1 accepted");
    memcpy(b, orig, size);
    put_u32(b + 8, 12);
    CHECK(rejects(b, size), "count - 1 accepted (trailing data)");

    /* first entry is "x" [8, 16]: name_len @12, name @16, ndim @17,
     * shape @21 and @29, data @37 */
    memcpy(b, orig, size);
    put_u32(b + 12, 0xfffffff0u);
    CHECK(rejects(b, size), "huge name length accepted");
    memcpy(b, orig, size);
    put_u32(b + 12, 0);
    CHECK(rejects(b, size), "empty name accepted");
    memcpy(b, orig, size);
    b[16] = 0;
    CHECK(rejects(b, size), "NUL in name accepted");
    memcpy(b, orig, size);
    put_u32(b + 17, 5);
    CHECK(rejects(b, size), "ndim 5 accepted");
    memcpy(b, orig, size);
    put_u64(b + 21, (uint64_t)-8);
    CHECK(rejects(b, size), "negative dimension accepted");
    memcpy(b, orig, size);
    put_u64(b + 21, (uint64_t)1 << 62);
    CHECK(rejects(b, size), "huge dimension accepted");
    memcpy(b, orig, size);
    put_u64(b + 21, (uint64_t)1 << 32);
    put_u64(b + 29, (uint64_t)1 << 32);
    CHECK(rejects(b, size), "overflowing shape accepted");
    memcpy(b, orig, size);
    put_u64(b + 21, 9);
    CHECK(rejects(b, size), "too large shape accepted");
    memcpy(b, orig, size);
    put_u64(b + 21, 7);
    CHECK(rejects(b, size), "too small shape accepted");

    /* duplicate name: rename entry 2 ("W1", name @ 12+4+1+4+16+512+4) */
    memcpy(b, orig, size);
    size_t off2 = 12 + 4 + 1 + 4 + 16 + 8 * 16 * 4;
    CHECK(bgref_rd_u32(b + off2) == 2 && b[off2 + 4] == 'W', "layout");
    put_u32(b + off2, 1);
    b[off2 + 4] = 'x';
    memmove(b + off2 + 5, b + off2 + 6, size - off2 - 6);
    CHECK(rejects(b, size - 1), "duplicate name accepted");

    /* random byte flips never crash (results may be valid or not) */
    uint32_t s = 12345;
    for (int t = 0; t < 2000; t++) {
        memcpy(b, orig, size);
        for (int k = 0; k < 3; k++) {
            size_t pos = bgref_lcg_next(&s) % (uint32_t)(size < 64 ? size : 64);
            b[pos] = (unsigned char)(bgref_lcg_next(&s) >> 24);
        }
        bgref_free(bgref_parse_log(b, size, "fuzz", NULL));
    }

    /* a missing file */
    CHECK(bgref_load("/nonexistent/dir/none.bgref") == NULL, "missing file");

    /* an empty but valid file */
    unsigned char empty[12] = {'B', 'G', 'R', 'F', 1, 0, 0, 0, 0, 0, 0, 0};
    r = bgref_parse_log(empty, sizeof empty, "empty", stderr);
    CHECK(r && r->count == 0 && bgref_find(r, "x") == NULL, "empty file");
    bgref_free(r);

    free(b);
    free(orig);
}

static void test_compare(void)
{
    float ref_v[4] = {1.0f, -2.0f, 0.5f, 0.0f};
    float got[4] = {1.0f, -2.0f, 0.5f, 1e-5f};
    bgref_entry e = {(char *)"ref", 1, {4, 1, 1, 1}, 4, ref_v};
    double err = bgref_max_rel_err(got, ref_v, 4);
    CHECK(fabs(err - 5e-6) < 1e-12, "max_rel_err %g", err);
    CHECK(bgref_check("cmp", got, 4, &e, 1e-5) == 0, "check passes");
    got[1] = -2.1f;
    fprintf(stderr, "(expected failure message follows)\n");
    CHECK(bgref_check("cmp", got, 4, &e, 1e-4) != 0, "check fails");
}

int main(void)
{
    test_lcg();
    test_compare();
    test_corrupt();
    test_files();
    if (failures) {
        fprintf(stderr, "test_refdata: %d failure(s)\n", failures);
        return 1;
    }
    printf("test_refdata: ok (%zu files, %zu inputs)\n", N_ELEMS(files),
           N_ELEMS(inputs));
    return 0;
}
