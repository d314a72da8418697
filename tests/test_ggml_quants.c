/* tests/test_ggml_quants.c - ggml type conversions against ggml's own output.
 *
 * Quantizes every golden input (../shared/golden/ggml-ternary, made by ggml) to TQ1_0 and TQ2_0
 * and compares the bytes exactly, dequantizes the golden bytes and compares the floats bit for
 * bit, repacks the golden codes with the lossless packers, and checks fp16 / bf16 rounding
 * (edge cases plus a sweep against an independent rint-based reference), Q8_0, the integer
 * types, and the type table. Run: BG_GOLDEN_DIR=../shared/golden ./test_ggml_quants
 * Exits 77 (skip) when the golden directory is missing. */
#include <bitgrad/quant.h>

#include "harness.h"

/* Counts one check (harness.h) and prints it, passed or not. */
static void check(int ok, const char *what)
{
    harness_count(ok != 0);
    printf("%s %s\n", ok ? "ok  " : "FAIL", what);
}

static uint32_t bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Reads a whole file; returns NULL if absent. */
static void *read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    void *buf = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long len = ftell(f);
        if (len >= 0 && fseek(f, 0, SEEK_SET) == 0) {
            buf = malloc((size_t)len + 1);
            if (buf && fread(buf, 1, (size_t)len, f) != (size_t)len) {
                free(buf);
                buf = NULL;
            }
            *size = (size_t)len;
        }
    }
    fclose(f);
    return buf;
}

/* ---- golden TQ cases ---------------------------------------------------------- */

typedef struct tq_case {
    char name[64];
    int64_t n, nrows, n_per_row;
} tq_case;

static const char *golden_dir;

static void *golden_file(const tq_case *c, const char *suffix, size_t expect_size)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/ggml-ternary/%s%s", golden_dir, c->name, suffix);
    size_t size = 0;
    void *buf = read_file(path, &size);
    if (!buf || size != expect_size) {
        printf("FAIL cannot read %s (%zu bytes, expected %zu)\n", path, size, expect_size);
        harness_count(false);
        free(buf);
        return NULL;
    }
    return buf;
}

static void check_bytes(const uint8_t *got, const uint8_t *want, size_t n, const char *what)
{
    size_t i = 0;
    while (i < n && got[i] == want[i]) i++;
    if (i < n)
        printf("     %s: first byte difference at %zu: 0x%02x vs golden 0x%02x\n", what, i, got[i],
               want[i]);
    check(i == n, what);
}

static void check_floats_exact(const float *got, const float *want, int64_t n, const char *what)
{
    int64_t i = 0;
    while (i < n && bits(got[i]) == bits(want[i])) i++;
    if (i < n)
        printf("     %s: element %lld is %.9g (0x%08x), golden %.9g (0x%08x)\n", what, (long long)i,
               got[i], bits(got[i]), want[i], bits(want[i]));
    check(i == n, what);
}

/* Repacks the golden codes block by block with the block's own d: must give the same bytes. */
static void check_repack(const tq_case *c, int type, const uint8_t *golden, const char *tname)
{
    int64_t qk = bg_ggml_block_size(type), nb = c->n / qk;
    size_t bytes = bg_ggml_type_size(type);
    int8_t *codes = malloc((size_t)c->n);
    float *d = malloc((size_t)nb * sizeof(float));
    uint8_t *packed = malloc((size_t)nb * bytes);
    char what[160];
    snprintf(what, sizeof what, "%s %s: unpack codes", c->name, tname);
    if (type == BG_GGML_TQ1_0 || type == BG_GGML_TQ2_0)
        check(bg_tq_unpack_codes(type, golden, codes, d, c->n) == 0, what);
    else
        check(bg_ggml_unpack_codes(type, golden, codes, d, c->n) == 0, what);
    int rc = 0;
    for (int64_t b = 0; b < nb; b++) {
        int8_t *cb = codes + qk * b;
        uint8_t *pb = packed + bytes * (size_t)b;
        if (type == BG_GGML_TQ1_0) rc |= bg_tq1_0_pack_codes(cb, d[b], pb, qk);
        else if (type == BG_GGML_TQ2_0) rc |= bg_tq2_0_pack_codes(cb, d[b], pb, qk);
        else rc |= bg_ggml_pack_codes(type, cb, d[b], pb, qk);
    }
    snprintf(what, sizeof what, "%s %s: repacked codes == golden bytes", c->name, tname);
    check(rc == 0, what);
    check_bytes(packed, golden, (size_t)nb * bytes, what);
    free(codes);
    free(d);
    free(packed);
}

static void run_tq_case(const tq_case *c, int type)
{
    const char *tname = bg_ggml_type_name(type);
    size_t nbytes = bg_ggml_row_size(type, c->n_per_row) * (size_t)c->nrows;
    char sfx[64], what[160];
    float *x = golden_file(c, ".f32", (size_t)c->n * 4);
    snprintf(sfx, sizeof sfx, ".%s", tname);
    uint8_t *gold = golden_file(c, sfx, nbytes);
    snprintf(sfx, sizeof sfx, ".%s.deq.f32", tname);
    float *gold_deq = golden_file(c, sfx, (size_t)c->n * 4);
    uint8_t *q = malloc(nbytes);
    float *deq = malloc((size_t)c->n * sizeof(float));
    if (x && gold && gold_deq && q && deq) {
        snprintf(what, sizeof what, "%s: quantize %s == golden bytes", c->name, tname);
        check(bg_ggml_quantize(type, x, q, c->nrows, c->n_per_row) == 0, what);
        check_bytes(q, gold, nbytes, what);
        snprintf(what, sizeof what, "%s: dequantize golden %s == golden floats", c->name, tname);
        check(bg_ggml_dequantize(type, gold, deq, c->n) == 0, what);
        check_floats_exact(deq, gold_deq, c->n, what);
        if (type != BG_GGML_Q8_0) check_repack(c, type, gold, tname); /* Q8_0: not codes */
    }
    free(x);
    free(gold);
    free(gold_deq);
    free(q);
    free(deq);
}

static int load_cases(tq_case *cases, int max)
{
    char path[1024], line[512];
    snprintf(path, sizeof path, "%s/ggml-ternary/cases.tsv", golden_dir);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    int n = 0;
    while (n < max && fgets(line, sizeof line, f)) {
        tq_case c;
        long long a, b, d;
        if (sscanf(line, "%63s %lld %lld %lld", c.name, &a, &b, &d) != 4) continue; /* header */
        c.n = a;
        c.nrows = b;
        c.n_per_row = d;
        cases[n++] = c;
    }
    fclose(f);
    return n;
}

static int test_golden(void)
{
    tq_case cases[64];
    int n = load_cases(cases, 64);
    if (n < 0) return -1;
    printf("golden TQ cases: %d\n", n);
    check(n >= 8, "cases.tsv lists the 8 documented cases");
    for (int i = 0; i < n; i++) {
        run_tq_case(&cases[i], BG_GGML_TQ1_0);
        run_tq_case(&cases[i], BG_GGML_TQ2_0);
        run_tq_case(&cases[i], BG_GGML_Q2_0);
        run_tq_case(&cases[i], BG_GGML_Q8_0);
    }
    return 0;
}

/* ---- fp16 / bf16 ------------------------------------------------------------------ */

/* Independent reference: nearest value with `mbits` mantissa bits, exponent >= emin (below it
 * the quantum is fixed: subnormals), rounding by rint (ties to even). Overflow -> Inf. */
static float ref_round(float x, int mbits, int emin, double max_finite)
{
    if (x == 0.0f || !isfinite(x)) return x;
    int e;
    frexp((double)x, &e); /* |x| = f * 2^e, f in [0.5, 1) */
    e -= 1;
    if (e < emin) e = emin;
    double q = ldexp(1.0, e - mbits);
    double r = rint((double)x / q) * q; /* exact: x has 24 significant bits */
    if (fabs(r) > max_finite) return x > 0 ? INFINITY : -INFINITY;
    return (float)r;
}

static void test_fp16_edges(void)
{
    static const struct {
        uint32_t f;
        uint16_t h;
    } cases[] = {
        { 0x00000000u, 0x0000 }, { 0x80000000u, 0x8000 },
        { 0x3f800000u, 0x3c00 }, { 0x477fe000u, 0x7bff }, /* 65504 */
        { 0x477ff000u, 0x7c00 }, /* 65520: tie between 65504 and 2^16 -> even -> Inf */
        { 0x477fefffu, 0x7bff }, { 0x7f800000u, 0x7c00 },
        { 0xff800000u, 0xfc00 }, { 0x33800000u, 0x0001 }, /* 2^-24 */
        { 0x33000000u, 0x0000 },                          /* 2^-25: tie -> even 0 */
        { 0x33000001u, 0x0001 }, { 0x33c00000u, 0x0002 }, /* 1.5 * 2^-24: tie -> 2 */
        { 0x34200000u, 0x0002 }, /* 2.5 * 2^-24: tie -> 2 */ { 0x34400000u, 0x0003 },
        { 0x38800000u, 0x0400 }, /* 2^-14 */
        { 0x387fc000u, 0x03ff }, /* 2^-14 - 2^-24 */
        { 0x387fe000u, 0x0400 }, /* tie between largest subnormal and smallest normal -> even */
        { 0x3f801000u, 0x3c00 }, /* 1 + 2^-11: tie -> even */
        { 0x3f803000u, 0x3c02 }, /* 1 + 3 * 2^-11: tie -> even */
        { 0x3f801001u, 0x3c01 }, { 0xc0490fdbu, 0xc248 }, /* -pi */
        { 0x00000001u, 0x0000 },                          /* float subnormal */
    };
    int ok = 1;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint16_t h = bg_fp32_to_fp16(from_bits(cases[i].f));
        if (h != cases[i].h) {
            printf("     fp16(0x%08x) = 0x%04x, expected 0x%04x\n", cases[i].f, h, cases[i].h);
            ok = 0;
        }
    }
    check(ok, "fp16 edge cases (ties to even, overflow, subnormals, signed zero)");
    uint16_t hn = bg_fp32_to_fp16(NAN), hs = bg_fp32_to_fp16(from_bits(0xff800001u));
    check((hn & 0x7c00) == 0x7c00 && (hn & 0x3ff) != 0, "fp16(NaN) is NaN");
    check((hs & 0xfe00) == 0xfe00, "fp16(signalling -NaN) is a quiet negative NaN");
    check(isnan(bg_fp16_to_fp32(0x7e00)) && isinf(bg_fp16_to_fp32(0xfc00)), "fp16 NaN/Inf to fp32");
    check(bits(bg_fp16_to_fp32(0x0001)) == 0x33800000u &&
              bits(bg_fp16_to_fp32(0x8000)) == 0x80000000u && bg_fp16_to_fp32(0x7bff) == 65504.0f,
          "fp16 subnormal, -0, max to fp32");
}

static void test_fp16_sweeps(void)
{
    int ok = 1;
    for (uint32_t h = 0; h < 0x10000u; h++) {
        float f = bg_fp16_to_fp32((uint16_t)h);
        uint16_t back = bg_fp32_to_fp16(f);
        if (isnan(f) ? (back & 0x7c00) != 0x7c00 || !(back & 0x3ff) : back != h) ok = 0;
    }
    check(ok, "fp16 -> fp32 -> fp16 is the identity on all 65536 values");
    ok = 1;
    uint32_t s = 12345;
    for (uint32_t i = 0; i < (1u << 20); i++) {
        s = s * 1664525u + 1013904223u;
        /* odd draws: any float; even draws: exponents 2^-27 .. 2^17 around fp16's range */
        uint32_t near = (s & 0x807fffffu) | ((100u + (s >> 23) % 45u) << 23);
        uint32_t u = (i & 1) ? s : near;
        float x = from_bits(u), want = ref_round(x, 10, -14, 65504.0);
        float got = bg_fp16_to_fp32(bg_fp32_to_fp16(x));
        if (!isnan(x) && bits(got) != bits(want)) {
            if (ok) printf("     fp16(%a) = %a, reference %a\n", x, got, want);
            ok = 0;
        }
    }
    check(ok, "fp16 rounding == rint reference on 2^20 sampled floats");
}

static void test_bf16(void)
{
    check(bg_fp32_to_bf16(1.0f) == 0x3f80 && bg_fp32_to_bf16(-2.0f) == 0xc000,
          "bf16 of exact values");
    check(bg_fp32_to_bf16(from_bits(0x3f808000u)) == 0x3f80, "bf16 tie rounds to even (down)");
    check(bg_fp32_to_bf16(from_bits(0x3f818000u)) == 0x3f82, "bf16 tie rounds to even (up)");
    check(bg_fp32_to_bf16(from_bits(0x7f7fffffu)) == 0x7f80, "bf16 overflow to Inf");
    check(bg_fp32_to_bf16(from_bits(0x00018000u)) == 0x0002, "bf16 keeps float subnormals");
    uint16_t n = bg_fp32_to_bf16(from_bits(0x7f800001u));
    check((n & 0x7f80) == 0x7f80 && (n & 0x7f) != 0, "bf16 signalling NaN stays NaN");
    int ok = 1;
    for (uint32_t h = 0; h < 0x10000u; h++) {
        float f = bg_bf16_to_fp32((uint16_t)h);
        if (!isnan(f) && bg_fp32_to_bf16(f) != h) ok = 0;
    }
    check(ok, "bf16 -> fp32 -> bf16 is the identity on all non-NaN values");
    ok = 1;
    uint32_t s = 777;
    for (uint32_t i = 0; i < (1u << 20); i++) {
        s = s * 1664525u + 1013904223u;
        float x = from_bits(s);
        float want = ref_round(x, 7, -126, 3.3895313892515355e38);
        if (!isnan(x) && bits(bg_bf16_to_fp32(bg_fp32_to_bf16(x))) != bits(want)) ok = 0;
    }
    check(ok, "bf16 rounding == rint reference on 2^20 sampled floats");
}

/* ---- Q8_0, integer types, table, packers ---------------------------------------------- */

static void test_q8_0(void)
{
    enum { N = 128 };
    float x[N], y[N];
    uint8_t q[4 * 34];
    uint32_t s = 99;
    for (int i = 0; i < N; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = i < 32 ? 0.0f : ((float)(s >> 8) / 16777216.0f * 2.0f - 1.0f) * (float)(i / 32);
    }
    x[40] = -3.0f; /* block 1 absmax, negative */
    check(bg_ggml_quantize(BG_GGML_Q8_0, x, q, 2, 64) == 0, "Q8_0 quantize");
    check(bg_ggml_dequantize(BG_GGML_Q8_0, q, y, N) == 0, "Q8_0 dequantize");
    check(q[0] == 0 && q[1] == 0 && y[0] == 0.0f, "Q8_0 zero block has d = 0");
    int8_t q40;
    memcpy(&q40, q + 34 + 2 + 8, 1);
    check(q40 == -127, "Q8_0 absmax element maps to -127");
    int ok = 1;
    for (int b = 0; b < 4; b++) {
        float d = bg_fp16_to_fp32((uint16_t)(q[34 * b] | q[34 * b + 1] << 8));
        for (int j = 0; j < 32; j++)
            ok &= fabsf(x[32 * b + j] - y[32 * b + j]) <= 0.5f * d * 1.01f + 1e-7f;
    }
    check(ok, "Q8_0 round trip within d/2");
    check(bg_ggml_quantize(BG_GGML_Q8_0, x, q, 1, 33) == BG_ESHAPE, "Q8_0 row of 33 rejected");
}

static void test_int_types(void)
{
    const float in[6] = { 2.5f, -2.5f, 127.4f, -128.0f, 0.49f, -0.5f };
    int8_t q[6];
    float back[6];
    check(bg_ggml_quantize(BG_GGML_I8, in, q, 1, 6) == 0, "I8 quantize");
    check(q[0] == 3 && q[1] == -3 && q[2] == 127 && q[3] == -128 && q[4] == 0 && q[5] == -1,
          "I8 rounds half away from zero");
    check(bg_ggml_dequantize(BG_GGML_I8, q, back, 6) == 0 && back[3] == -128.0f, "I8 dequantize");
    float big = 127.5f, nan = NAN;
    check(bg_ggml_quantize(BG_GGML_I8, &big, q, 1, 1) == BG_EINVAL, "I8 out of range rejected");
    check(bg_ggml_quantize(BG_GGML_I8, &nan, q, 1, 1) == BG_EINVAL, "I8 NaN rejected");
    int32_t i32;
    float v = -2147483648.0f;
    check(bg_ggml_quantize(BG_GGML_I32, &v, &i32, 1, 1) == 0 && i32 == INT32_MIN, "I32 min");
    v = 2147483648.0f;
    check(bg_ggml_quantize(BG_GGML_I32, &v, &i32, 1, 1) == BG_EINVAL, "I32 2^31 rejected");
    double f64;
    v = 0.1f;
    check(bg_ggml_quantize(BG_GGML_F64, &v, &f64, 1, 1) == 0 && f64 == (double)0.1f &&
              bg_ggml_dequantize(BG_GGML_F64, &f64, back, 1) == 0 && back[0] == 0.1f,
          "F64");
    uint16_t h[2];
    const float hv[2] = { 1.0f / 3.0f, -65504.0f };
    check(bg_ggml_quantize(BG_GGML_F16, hv, h, 1, 2) == 0 && h[0] == 0x3555 && h[1] == 0xfbff,
          "F16 quantize");
    check(bg_ggml_quantize(BG_GGML_BF16, hv, h, 1, 2) == 0 && h[0] == 0x3eab && h[1] == 0xc780,
          "BF16 quantize");
}

static void test_table(void)
{
    check(bg_ggml_type_size(BG_GGML_TQ2_0) == 66 && bg_ggml_type_size(BG_GGML_TQ1_0) == 54 &&
              bg_ggml_type_size(BG_GGML_Q8_0) == 34 && bg_ggml_type_size(BG_GGML_BF16) == 2,
          "type sizes");
    check(bg_ggml_block_size(BG_GGML_TQ1_0) == 256 && bg_ggml_block_size(BG_GGML_F32) == 1 &&
              bg_ggml_block_size(BG_GGML_Q8_0) == 32 && bg_ggml_block_size(BG_GGML_Q2_0) == 64 &&
              bg_ggml_type_size(BG_GGML_Q2_0) == 18 && !strcmp(bg_ggml_type_name(42), "q2_0"),
          "block sizes");
    check(bg_ggml_row_size(BG_GGML_TQ2_0, 512) == 132 &&
              bg_ggml_row_size(BG_GGML_TQ1_0, 255) == 0 && bg_ggml_row_size(BG_GGML_F16, 7) == 14,
          "row sizes");
    check(bg_ggml_type_size(4) == 0 && bg_ggml_type_size(31) == 0 && bg_ggml_type_size(-1) == 0 &&
              bg_ggml_type_size(BG_GGML_TYPE_COUNT) == 0 &&
              !strcmp(bg_ggml_type_name(36), "unknown"),
          "removed and out-of-range type ids are unknown");
    check(!strcmp(bg_ggml_type_name(BG_GGML_TQ2_0), "tq2_0") &&
              !strcmp(bg_ggml_type_name(BG_GGML_Q4_K), "q4_K"),
          "type names");
    float x[256] = { 0 };
    uint8_t q[66];
    check(bg_ggml_quantize(BG_GGML_Q4_K, x, q, 1, 256) == BG_EUNSUPPORTED,
          "quantize to Q4_K unsupported");
    x[3] = INFINITY;
    check(bg_ggml_quantize(BG_GGML_TQ2_0, x, q, 1, 256) == BG_EINVAL, "TQ2_0 of Inf rejected");
}

static void test_pack_codes(void)
{
    enum { N = 1024 };
    int8_t codes[N], back[N];
    uint8_t p1[4 * 54], p2[4 * 66];
    float d[4], y[N];
    uint32_t s = 4242;
    for (int i = 0; i < N; i++) {
        s = s * 1664525u + 1013904223u;
        codes[i] = (int8_t)((s >> 16) % 3u) - 1;
    }
    for (int pass = 0; pass < 2; pass++) {
        int type = pass ? BG_GGML_TQ1_0 : BG_GGML_TQ2_0;
        void *p = pass ? (void *)p1 : (void *)p2;
        int rc =
            pass ? bg_tq1_0_pack_codes(codes, 1.0f, p, N) : bg_tq2_0_pack_codes(codes, 1.0f, p, N);
        memset(back, 9, sizeof back);
        rc |= bg_tq_unpack_codes(type, p, back, d, N);
        rc |= bg_ggml_dequantize(type, p, y, N);
        int ok = rc == 0 && !memcmp(codes, back, N) && d[0] == 1.0f && d[3] == 1.0f;
        for (int i = 0; i < N; i++) ok &= y[i] == (float)codes[i];
        check(ok, pass ? "TQ1_0 pack/unpack codes with d = 1 is lossless"
                       : "TQ2_0 pack/unpack codes with d = 1 is lossless");
    }
    /* Q2_0 and Q8_0 through the generic packer (d = 1: value = code, as the exporter writes) */
    for (int pass = 0; pass < 2; pass++) {
        int type = pass ? BG_GGML_Q8_0 : BG_GGML_Q2_0;
        static uint8_t buf[N / 32 * 34];
        float dd[N / 32];
        int rc = bg_ggml_pack_codes(type, codes, 1.0f, buf, N);
        memset(back, 9, sizeof back);
        rc |= bg_ggml_unpack_codes(type, buf, back, dd, N);
        rc |= bg_ggml_dequantize(type, buf, y, N);
        int ok = rc == 0 && !memcmp(codes, back, N) && dd[0] == 1.0f;
        for (int i = 0; i < N; i++) ok &= y[i] == (float)codes[i];
        check(ok, pass ? "Q8_0 pack/unpack codes with d = 1 is lossless"
                       : "Q2_0 pack/unpack codes with d = 1 is lossless");
        check(bg_ggml_pack_codes(type, codes, 1.0f, buf, 48) == BG_ESHAPE,
              "generic pack rejects a partial block");
        buf[pass ? 5 : 2] = pass ? 7 : 0xff; /* Q8_0 value 7; Q2_0 code 3 */
        check(bg_ggml_unpack_codes(type, buf, back, NULL, N) == BG_EFORMAT,
              "a value outside {-1, 0, 1} is not code form");
    }
    check(bg_ggml_pack_codes(BG_GGML_F16, codes, 1.0f, p2, 256) == BG_EINVAL,
          "generic pack rejects F16");
    p2[5] = 0xff; /* code 3 in TQ2_0 */
    check(bg_tq_unpack_codes(BG_GGML_TQ2_0, p2, back, NULL, N) == BG_EFORMAT,
          "TQ2_0 code 3 rejected by unpack");
    codes[7] = 2;
    check(bg_tq2_0_pack_codes(codes, 1.0f, p2, N) == BG_EINVAL, "pack rejects code 2");
    check(bg_tq1_0_pack_codes(codes, 1.0f, p1, 100) == BG_ESHAPE, "pack rejects n = 100");
    check(bg_tq1_0_pack_codes(codes, NAN, p1, 256) == BG_EINVAL, "pack rejects d = NaN");
    check(bg_tq_unpack_codes(BG_GGML_Q8_0, p2, back, NULL, 256) == BG_EINVAL,
          "unpack rejects a non-TQ type");
}

int main(void)
{
    golden_dir = getenv("BG_GOLDEN_DIR");
    if (!golden_dir) golden_dir = "../shared/golden";
    printf("test_ggml_quants: golden dir %s\n", golden_dir);
    if (test_golden() != 0) {
        printf("SKIP: %s/ggml-ternary/cases.tsv not found\n", golden_dir);
        return HARNESS_SKIP;
    }
    test_fp16_edges();
    test_fp16_sweeps();
    test_bf16();
    test_q8_0();
    test_int_types();
    test_table();
    test_pack_codes();
    printf("test_ggml_quants: ");
    return harness_summary();
}
