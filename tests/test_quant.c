/* test_quant.c - suite 'nn': the BitNet quantizers at their edges. Ternary codes at exact
 * and near ties, zero rows and the epsilon floor, per-tensor / per-row / per-group scales
 * (the autograd op and the plain-array utilities against an independent round-half-away
 * reference), activation levels at every bit width with clamping, and the 2-bit packing,
 * sparsity, flips and compression-ratio utilities. Split from test_nn.c. Run: ./test_quant */
#include "bitgrad/autograd.h"
#include "bitgrad/ternary.h"
#include "harness.h"

#define S(...) ((const int64_t[]){ __VA_ARGS__ })

static float round_away(float v)
{
    float a = fabsf(v), f = floorf(a), r = f + (a - f >= 0.5f ? 1.0f : 0.0f);
    return v < 0 ? -r : r;
}

static void test_weight_quant_edges(bg_ctx *ctx)
{
    printf("weight quantizer edge cases\n");
    const float a = nextafterf(0.5f, 0.0f); /* 0.5 - 2^-25: must round to 0, not 1 */
    /* Rows (per-row mode): zeros; exact ties 0.5 / -0.5 (s_w = 1); near ties (the row mean
     * 1 - 2^-26 rounds to s_w = 1.0f); below the eps floor; one huge outlier. */
    /* clang-format off */
    const float w[5 * 4] = { 0, 0, 0, 0,
                             0.5f, -0.5f, 2, 1,
                             a, -a, 2, 1,
                             1e-7f, -2e-7f, 3e-7f, 0,
                             1000, 0.1f, -0.2f, 0.3f };
    const int8_t want_codes[5 * 4] = { 0, 0, 0, 0,
                                       1, -1, 1, 1,
                                       0, 0, 1, 1,
                                       0, 0, 0, 0,
                                       1, 0, 0, 0 };
    /* clang-format on */
    const float want_s[5] = { 1e-5f, 1.0f, 1.0f, 1e-5f, (float)(1000.6 / 4.0) };
    int8_t codes[20];
    float s[5], deq[20];
    int rc = bg_ternary_quantize(w, 5, 4, BG_WQ_PER_ROW, 0, codes, s);
    CHECK(rc == BG_OK && bg_ternary_n_scales(5, 4, BG_WQ_PER_ROW, 0) == 5, "per-row quantize");
    for (int r = 0; r < 5; r++)
        CHECK(s[r] == want_s[r], "row %d: s_w %.9g, want %.9g", r, (double)s[r], (double)want_s[r]);
    for (int i = 0; i < 20; i++)
        CHECK(codes[i] == want_codes[i], "code %d (w %.9g): %d, want %d", i, (double)w[i], codes[i],
              want_codes[i]);
    bg_ternary_dequantize(codes, s, 5, 4, BG_WQ_PER_ROW, 0, deq);
    for (int i = 0; i < 20; i++)
        CHECK(deq[i] == (float)want_codes[i] * want_s[i / 4], "dequantized %d: %g", i,
              (double)deq[i]);
    /* The op gives the same values (STE forward at lambda 1). */
    bg_tensor *wt = bg_from_data(ctx, BG_F32, 2, S(5, 4), w);
    float *op = harness_read(bg_weight_quant(wt, BG_WQ_PER_ROW, 0, 1.0f));
    if (CHECK(op != NULL, "weight_quant op: %s", bg_ctx_error(ctx)))
        check_bitwise("bg_weight_quant per row == codes * s_w", op, deq, 20);
    free(op);

    /* Per tensor: one scale, float(mean in double). */
    double sum = 0.0;
    for (int i = 0; i < 20; i++) sum += fabs((double)w[i]);
    rc = bg_ternary_quantize(w, 5, 4, BG_WQ_PER_TENSOR, 0, codes, s);
    CHECK(rc == BG_OK && s[0] == (float)(sum / 20.0), "per-tensor s_w %.9g, want %.9g",
          (double)s[0], sum / 20.0);
    CHECK(codes[16] == 1 && codes[4] == 0 && codes[0] == 0, "per tensor: only the outlier is +1");
    bg_step_end(ctx);
}

/* Per-group scales on rows whose length is not a multiple of the group size. */
static void test_weight_quant_groups(bg_ctx *ctx)
{
    printf("per-group weight scales (rows of 10, groups of 4: 4 + 4 + 2)\n");
    enum { ROWS = 3, COLS = 10, G = 4, NG = 3 };
    uint64_t rng = 5;
    float w[ROWS * COLS], s[ROWS * NG], deq[ROWS * COLS];
    int8_t codes[ROWS * COLS];
    for (int i = 0; i < ROWS * COLS; i++) w[i] = harness_uniform(&rng, -1, 1);
    CHECK(bg_ternary_n_scales(ROWS, COLS, BG_WQ_PER_GROUP, G) == ROWS * NG &&
              bg_ternary_n_scales(ROWS, COLS, BG_WQ_PER_TENSOR, 0) == 1,
          "n_scales per group %lld",
          (long long)bg_ternary_n_scales(ROWS, COLS, BG_WQ_PER_GROUP, G));
    CHECK(bg_ternary_quantize(w, ROWS, COLS, BG_WQ_PER_GROUP, G, codes, s) == BG_OK, "quantize");
    int bad_s = 0, bad_c = 0;
    for (int r = 0; r < ROWS; r++)
        for (int g = 0; g < NG; g++) {
            int lo = g * G, hi = lo + G < COLS ? lo + G : COLS;
            double sum = 0.0;
            for (int i = lo; i < hi; i++) sum += fabs((double)w[r * COLS + i]);
            float want = fmaxf((float)(sum / (hi - lo)), 1e-5f);
            bad_s += s[r * NG + g] != want;
            for (int i = lo; i < hi; i++) {
                float q = fmaxf(-1.0f, fminf(1.0f, round_away(w[r * COLS + i] / want)));
                bad_c += codes[r * COLS + i] != (int8_t)q;
            }
        }
    CHECK(bad_s == 0 && bad_c == 0, "per group: %d scales and %d codes differ from the reference",
          bad_s, bad_c);
    bg_ternary_dequantize(codes, s, ROWS, COLS, BG_WQ_PER_GROUP, G, deq);
    bg_tensor *wt = bg_from_data(ctx, BG_F32, 2, S(ROWS, COLS), w);
    float *op = harness_read(bg_weight_quant(wt, BG_WQ_PER_GROUP, G, 1.0f));
    if (CHECK(op != NULL, "weight_quant per group: %s", bg_ctx_error(ctx)))
        check_bitwise("bg_weight_quant per group == codes * s_g", op, deq, ROWS * COLS);
    free(op);
    /* A group longer than the row is the row. */
    float s_row[ROWS];
    int8_t c_row[ROWS * COLS];
    bg_ternary_quantize(w, ROWS, COLS, BG_WQ_PER_GROUP, 64, codes, s);
    bg_ternary_quantize(w, ROWS, COLS, BG_WQ_PER_ROW, 0, c_row, s_row);
    CHECK(memcmp(s, s_row, sizeof s_row) == 0 && memcmp(codes, c_row, sizeof c_row) == 0,
          "group 64 on rows of 10 should equal per-row quantization");
    bg_step_end(ctx);
}

static void check_levels(const char *what, const float *x, int n, int bits, const int8_t *want,
                         float want_s)
{
    int8_t lv[16];
    float s;
    int rc = bg_act_quantize(x, 1, n, bits, lv, &s);
    bool ok = rc == BG_OK && s == want_s && memcmp(lv, want, (size_t)n) == 0;
    CHECK(ok, "%s: rc %d, s_x %.9g (want %.9g)", what, rc, (double)s, (double)want_s);
    for (int i = 0; !ok && i < n; i++)
        if (lv[i] != want[i])
            printf("    x %.9g: level %d, want %d\n", (double)x[i], lv[i], want[i]);
}

static void test_act_quant_edges(bg_ctx *ctx)
{
    printf("activation quantizer edge cases\n");
    const float b = nextafterf(2.5f, 0.0f);
    /* amax 127: s_x = 1, ties k + 0.5 round away from zero (banker's rounding would not). */
    check_levels("ties at s_x = 1",
                 (const float[]){ 127, 2.5f, -2.5f, 0.5f, -0.5f, 126.5f, b, -1.5f }, 8, 8,
                 (const int8_t[]){ 127, 3, -3, 1, -1, 127, 2, -2 }, 1.0f);
    check_levels("ties at s_x = 0.5", (const float[]){ 254, 5, -5, 1, -1 }, 5, 8,
                 (const int8_t[]){ 127, 3, -3, 1, -1 }, 0.5f);
    check_levels("4-bit ties", (const float[]){ 7, 3.5f, -3.5f, 6.5f, -6.5f }, 5, 4,
                 (const int8_t[]){ 7, 4, -4, 7, -7 }, 1.0f);
    check_levels("all-zero row", (const float[]){ 0, 0, 0, 0 }, 4, 8,
                 (const int8_t[]){ 0, 0, 0, 0 }, 127.0f / 1e-5f);
    check_levels("eps floor (absmax 5e-7 < 1e-5)", (const float[]){ 1e-7f, -5e-7f, 0 }, 3, 8,
                 (const int8_t[]){ 1, -6, 0 }, 127.0f / 1e-5f);
    check_levels("one huge outlier", (const float[]){ 1e6f, 1, -3000, 4000 }, 4, 8,
                 (const int8_t[]){ 127, 0, 0, 1 }, 127.0f / 1e6f);

    /* 2..8 bits on random rows: levels in [-Qp-1, Qp], the absmax element at +-Qp, each level
     * round_away(x * s_x); the op gives level / s_x per token, and per tensor one scale. */
    enum { ROWS = 4, COLS = 33 };
    uint64_t rng = 9;
    float x[ROWS * COLS], s[ROWS], want[ROWS * COLS];
    int8_t lv[ROWS * COLS];
    for (int i = 0; i < ROWS * COLS; i++) x[i] = harness_uniform(&rng, -3, 3) * (float)(1 + i % 5);
    bg_tensor *xt = bg_from_data(ctx, BG_F32, 2, S(ROWS, COLS), x);
    for (int bits = 2; bits <= 8; bits++) {
        int qp = (1 << (bits - 1)) - 1, bad = 0, lo = 127, hi = -128;
        bg_act_quantize(x, ROWS, COLS, bits, lv, s);
        for (int r = 0; r < ROWS; r++) {
            float amax = 0;
            for (int i = 0; i < COLS; i++) amax = fmaxf(amax, fabsf(x[r * COLS + i]));
            bad += s[r] != (float)qp / amax;
            for (int i = 0; i < COLS; i++) {
                int l = lv[r * COLS + i];
                float q = round_away(x[r * COLS + i] * s[r]);
                bad += l != (int)fmaxf(-qp - 1.0f, fminf((float)qp, q));
                bad += fabsf(x[r * COLS + i]) == amax && abs(l) != qp;
                lo = l < lo ? l : lo, hi = l > hi ? l : hi;
                want[r * COLS + i] = (float)l / s[r];
            }
        }
        CHECK(bad == 0 && lo >= -qp - 1 && hi == qp,
              "%d bits: %d mismatches, levels in [%d, %d] (range [%d, %d])", bits, bad, lo, hi,
              -qp - 1, qp);
        float *op = harness_read(bg_act_quant(xt, bits, false, 1.0f));
        char name[64];
        snprintf(name, sizeof name, "bg_act_quant %d bits == level / s_x", bits);
        if (CHECK(op != NULL, "act_quant: %s", bg_ctx_error(ctx)))
            check_bitwise(name, op, want, ROWS * COLS);
        free(op);
    }
    /* Per tensor: one scale over the whole tensor. */
    float amax = 0;
    for (int i = 0; i < ROWS * COLS; i++) amax = fmaxf(amax, fabsf(x[i]));
    float st = 127.0f / amax;
    for (int i = 0; i < ROWS * COLS; i++) want[i] = round_away(x[i] * st) / st;
    float *op = harness_read(bg_act_quant(xt, 8, true, 1.0f));
    if (CHECK(op != NULL, "act_quant per tensor: %s", bg_ctx_error(ctx)))
        check_bitwise("bg_act_quant per tensor", op, want, ROWS * COLS);
    free(op);
    bg_step_end(ctx);
}

static void test_ternary_utils(void)
{
    printf("pack2 / unpack2, sparsity, flips, compression ratio, int8 x ternary matmul\n");
    const int8_t c9[9] = { -1, 0, 1, 1, 0, 0, 0, 0, 1 };
    uint8_t p[3];
    int8_t u[1001];
    CHECK(bg_pack2_size(0) == 0 && bg_pack2_size(1) == 1 && bg_pack2_size(4) == 1 &&
              bg_pack2_size(5) == 2 && bg_pack2_size(1001) == 251,
          "pack2_size");
    CHECK(bg_pack2(c9, 9, p) == BG_OK && p[0] == 0xA4 && p[1] == 0x55 && p[2] == 0x02,
          "pack2 layout: %02x %02x %02x, want a4 55 02", p[0], p[1], p[2]);
    CHECK(bg_unpack2(p, 9, u) == BG_OK && memcmp(u, c9, 9) == 0, "unpack2 of the 9 codes");
    uint64_t rng = 3;
    int8_t c[1001], c2[1001];
    uint8_t pk[251];
    for (int i = 0; i < 1001; i++) c[i] = (int8_t)(harness_lcg(&rng) % 3) - 1;
    CHECK(bg_pack2(c, 1001, pk) == BG_OK && bg_unpack2(pk, 1001, u) == BG_OK &&
              memcmp(u, c, 1001) == 0,
          "pack2 / unpack2 round trip of 1001 codes");
    CHECK(bg_pack2((const int8_t[]){ 0, 2 }, 2, p) == BG_EINVAL, "pack2 must reject code 2");
    CHECK(bg_unpack2((const uint8_t[]){ 0xFF }, 1, u) == BG_EFORMAT, "unpack2 must reject 0b11");

    CHECK(bg_ternary_sparsity((const int8_t[]){ 0, 0, 1, -1 }, 4) == 0.5, "sparsity 0.5");
    CHECK(bg_ternary_sparsity(c9, 9) == 5.0 / 9.0, "sparsity of c9");
    memcpy(c2, c, sizeof c);
    c2[0] = (int8_t)-c2[0] + (c2[0] == 0), c2[500] = c2[500] == 1 ? 0 : 1, c2[1000] = 7;
    CHECK(bg_ternary_flips(c, c2, 1001) == 3 && bg_ternary_flips(c, c, 1001) == 0,
          "flips: %lld, want 3", (long long)bg_ternary_flips(c, c2, 1001));

    double r2 = bg_compression_ratio(4096, 2.0, 1), r1 = bg_compression_ratio(262144, 1.6875, 1024);
    CHECK(fabs(r2 - 16384.0 / 1028.0) < 1e-12, "ratio of 4096 weights at 2 bits: %.6f", r2);
    CHECK(fabs(r1 - 4.0 * 262144 / (262144 * 1.6875 / 8 + 4096)) < 1e-9, "TQ1_0 ratio %.6f", r1);
    printf("  compression: 2 bits %.3fx, 1.6875 bits + scales %.3fx\n", r2, r1);

    /* Reference int8 x ternary matmul: (float)acc * s_w / s_x. */
    int8_t lx[3 * 5], cw[2 * 5];
    float sx[3] = { 2.0f, 0.5f, 3.0f }, sw[2] = { 0.25f, 0.75f }, y[6];
    for (int i = 0; i < 15; i++) lx[i] = (int8_t)(i * 37 % 255 - 127);
    for (int i = 0; i < 10; i++) cw[i] = (int8_t)(i % 3 - 1);
    CHECK(bg_ternary_matmul_ref(lx, sx, cw, sw, true, 3, 2, 5, y) == BG_OK, "ternary matmul");
    int bad = 0;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 2; j++) {
            int acc = 0;
            for (int k = 0; k < 5; k++) acc += lx[i * 5 + k] * cw[j * 5 + k];
            bad += y[i * 2 + j] != (float)acc * sw[j] / sx[i];
        }
    CHECK(bad == 0, "ternary matmul: %d values differ", bad);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    bg_ctx *ctx = NULL;
    if (!CHECK(bg_ctx_create(&ctx, BG_CPU) == BG_OK && ctx, "bg_ctx_create"))
        return harness_summary();
    test_weight_quant_edges(ctx);
    test_weight_quant_groups(ctx);
    test_act_quant_edges(ctx);
    test_ternary_utils();
    CHECK(bg_ctx_error_code(ctx) == BG_OK, "unexpected sticky error: %s", bg_ctx_error(ctx));
    bg_ctx_free(&ctx);
    return harness_summary();
}
