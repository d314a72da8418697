/* tests/test_tmat.c - the packed ternary kernels (bg_tmat) against the plain C references.
 *
 * For every instruction set this CPU supports (scalar, AVX2, AVX-512 BW, AVX-512 VNNI), the
 * packed product must equal bg_ternary_matmul_ref (int8 codes, a separate implementation)
 * bit for bit: random and extreme activations, ragged sizes (k not a multiple of the 256
 * block, row and column counts that leave partial tiles), per-tensor and per-row scales, 1
 * and 2 threads, and the W4 shape. Also: run-time selection, bad input, and the BitLinear
 * op's int8 (VNNI) training forward against its sgemm form, bit for bit. Prints which
 * instruction sets were tested. Run: ./test_tmat */
#include <omp.h>

#include <bitgrad.h>

#include "harness.h"
#include "quant/tlut.h"

static uint64_t rng = 12345;
static int fwd_cases, fwd_same; /* the table forward (tlut.h) against the reference */

static void fill(int8_t *codes, int8_t *x, int64_t n, int64_t k, int64_t m, int mode)
{
    for (int64_t i = 0; i < n * k; i++) codes[i] = (int8_t)(harness_lcg(&rng) % 3) - 1;
    for (int64_t i = 0; i < m * k; i++) {
        if (mode == 0) x[i] = (int8_t)(harness_lcg(&rng) % 256 - 128);
        else /* extreme: every product at its largest magnitude */
            x[i] = (codes[(i % k)] >= 0) ? -128 : 127;
    }
    if (mode == 1) /* all codes +1 or -1 to maximize every partial sum */
        for (int64_t i = 0; i < n * k; i++) codes[i] = codes[i] ? codes[i] : 1;
}

/* One case on one instruction set; returns whether y matched the reference bitwise. */
static bool one_case(bg_isa isa, int64_t n, int64_t k, int64_t m, bool per_row, int mode)
{
    int8_t *codes = malloc((size_t)(n * k)), *x = malloc((size_t)(m * k));
    float *s_w = malloc((size_t)n * sizeof(float)), *s_x = malloc((size_t)m * sizeof(float));
    float *y = malloc((size_t)(m * n) * sizeof(float)),
          *ref = malloc((size_t)(m * n) * sizeof(float));
    bool ok = false;
    if (!codes || !x || !s_w || !s_x || !y || !ref) goto out;
    fill(codes, x, n, k, m, mode);
    for (int64_t j = 0; j < n; j++) s_w[j] = harness_uniform(&rng, 0.01f, 2.0f);
    for (int64_t i = 0; i < m; i++) s_x[i] = harness_uniform(&rng, 0.5f, 300.0f);
    bg_tmat *w = NULL;
    if (bg_tmat_new(codes, s_w, per_row, n, k, &w) != BG_OK) goto out;
    memset(y, 0xff, (size_t)(m * n) * sizeof(float));
    int rc = bg_tmat_matmul_isa(w, isa, x, s_x, m, y);
    bg_ternary_matmul_ref(x, s_x, codes, s_w, per_row, m, n, k, ref);
    ok = rc == BG_OK && memcmp(y, ref, (size_t)(m * n) * sizeof(float)) == 0;
    if (isa == BG_ISA_SCALAR) { /* the table forward, from codes and from the packed matrix */
        size_t nb = bg__tlut_fwd_scratch(m, n, k, omp_get_max_threads());
        void *scratch = aligned_alloc(64, (nb + 63) / 64 * 64);
        for (int src = 0; scratch && src < 2; src++) {
            memset(y, 0xff, (size_t)(m * n) * sizeof(float));
            bg__tlut_fwd(src ? NULL : codes, src ? w : NULL, x, s_x, s_w, per_row, m, n, k, y,
                         scratch);
            bool same = memcmp(y, ref, (size_t)(m * n) * sizeof(float)) == 0;
            fwd_cases++;
            fwd_same += same;
            if (!same)
                printf("  table forward (%s) n=%lld k=%lld m=%lld per_row=%d mode=%d differs\n",
                       src ? "packed" : "codes", (long long)n, (long long)k, (long long)m,
                       per_row, mode);
        }
        free(scratch);
    }
    if (!ok) {
        int64_t bad = 0;
        while (bad < m * n && memcmp(&y[bad], &ref[bad], sizeof(float)) == 0) bad++;
        printf("  %s n=%lld k=%lld m=%lld per_row=%d mode=%d: rc %d, first difference at %lld: "
               "%g vs %g\n",
               bg_isa_name(isa), (long long)n, (long long)k, (long long)m, per_row, mode, rc,
               (long long)bad, bad < m * n ? y[bad] : 0.0, bad < m * n ? ref[bad] : 0.0);
    }
    bg_tmat_free(&w);
    CHECK(w == NULL, "bg_tmat_free sets the pointer to NULL");
out:
    free(codes);
    free(x);
    free(s_w);
    free(s_x);
    free(y);
    free(ref);
    return ok;
}

static void test_isa(bg_isa isa)
{
    static const int64_t shapes[][3] = {
        /* n, k, m */
        { 1, 1, 1 },
        { 3, 100, 2 },
        { 4, 256, 4 },
        { 5, 257, 5 },
        { 8, 512, 1 },
        { 13, 777, 9 },
        { 33, 1024, 7 },
        { 130, 300, 3 },
        { 257, 2048, 17 },
        { 64, 4096, 4 },
        /* bitnet_b1_58-3B's widths (not multiples of 256; runs of int16 sums end mid-row) */
        { 37, 3200, 9 },
        { 11, 8640, 5 },
        /* the longest rows the mat-vec kernel takes, and the first it leaves to the general one */
        { 4, 2047 * 256, 1 },
        { 5, 2048 * 256, 1 },
    };
    int n_ok = 0, n_all = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int per_row = 0; per_row < 2; per_row++)
            for (int mode = 0; mode < 2; mode++) {
                n_all++;
                n_ok += one_case(isa, shapes[s][0], shapes[s][1], shapes[s][2], per_row, mode);
            }
    CHECK(n_ok == n_all, "%s: %d of %d shapes equal the reference bitwise", bg_isa_name(isa), n_ok,
          n_all);
    /* the W4 shape, 1 and 6 columns, on 1 and 2 threads */
    for (int th = 1; th <= 2; th++) {
        omp_set_num_threads(th);
        CHECK(one_case(isa, 4096, 14336, 1, false, 0), "%s: W4 4096x14336, 1 column, %d thread(s)",
              bg_isa_name(isa), th);
        CHECK(one_case(isa, 4096, 14336, 6, true, 0), "%s: W4 4096x14336, 6 columns, %d thread(s)",
              bg_isa_name(isa), th);
    }
    printf("tested %s\n", bg_isa_name(isa));
}

static void test_selection(void)
{
    bg_isa best = bg_isa_best();
    CHECK(bg_isa_supported(best) && bg_isa_supported(BG_ISA_SCALAR) &&
              bg_isa_supported(BG_ISA_BEST),
          "the chosen and the scalar kernels are supported");
    for (int i = best + 1; i < BG_ISA_COUNT; i++)
        CHECK(!bg_isa_supported((bg_isa)i), "nothing better than %s is supported",
              bg_isa_name(best));
    CHECK(!bg_isa_supported(BG_ISA_COUNT) && bg_isa_name(BG_ISA_COUNT) == NULL, "out of range isa");
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw"))
        CHECK(best == BG_ISA_AVX512VNNI, "a VNNI CPU gets the VNNI kernel (got %s)",
              bg_isa_name(best));
    else if (__builtin_cpu_supports("avx2"))
        CHECK(best >= BG_ISA_AVX2, "an AVX2 CPU gets a SIMD kernel (got %s)", bg_isa_name(best));
#endif
    printf("best instruction set: %s\n", bg_isa_name(best));
}

static void test_bad_input(void)
{
    int8_t codes[8] = { 0, 1, -1, 0, 2, 0, 0, 0 }, x[4] = { 1, 2, 3, 4 };
    float s = 1.0f, y[2];
    bg_tmat *w = (bg_tmat *)&s;
    CHECK(bg_tmat_new(codes, &s, false, 2, 4, &w) == BG_EINVAL && w == NULL, "code 2 is refused");
    CHECK(bg_tmat_new(codes, &s, false, 0, 4, &w) == BG_EINVAL, "no rows");
    CHECK(bg_tmat_new(NULL, &s, false, 1, 4, &w) == BG_EINVAL, "NULL codes");
    CHECK(bg_tmat_new(codes, &s, false, 1, 4, NULL) == BG_EINVAL, "NULL out");
    if (!CHECK(bg_tmat_new(codes, &s, false, 1, 4, &w) == BG_OK, "one row")) return;
    CHECK(bg_tmat_rows(w) == 1 && bg_tmat_cols(w) == 4 && bg_tmat_nbytes(w) == 64, "sizes");
    CHECK(bg_tmat_matmul(w, NULL, &s, 1, y) == BG_EINVAL, "NULL activations");
    CHECK(bg_tmat_matmul(w, x, &s, -1, y) == BG_EINVAL, "negative m");
    CHECK(bg_tmat_matmul_isa(w, BG_ISA_COUNT, x, &s, 1, y) == BG_EINVAL, "bad isa");
    CHECK(bg_tmat_matmul(w, x, &s, 1, y) == BG_OK && y[0] == 2.0f - 3.0f, "1x4 product");
    bg_tmat_free(&w);
    bg_tmat_free(&w);
    bg_tmat_free(NULL);
}

/* The BitLinear op's training forward takes the int8 VNNI GEMM where the CPU has it; capped
 * to scalar it takes the sgemm form. Both must give the same bits. */
static void test_bitlinear_paths(void)
{
    static const int64_t shapes[][3] = { { 1, 4, 1 },     { 5, 12, 3 },    { 13, 256, 17 },
                                         { 30, 784, 64 }, { 64, 768, 33 }, { 257, 64, 256 } };
    bg_ctx *ctx = NULL;
    if (!CHECK(bg_ctx_create(&ctx, BG_CPU) == BG_OK, "ctx")) return;
    bg_ctx_seed(ctx, 3);
    bool vnni = bg_isa_best() == BG_ISA_AVX512VNNI;
    int same = 0, all = 0;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int v = 0; v < 4; v++) {
            int64_t m = shapes[i][0], k = shapes[i][1], n = shapes[i][2];
            int bits = v & 1 ? 4 : 8;
            bool per_row = v & 2;
            bg_tensor *x = bg_randn(ctx, 2, (int64_t[]){ m, k }, 0.0f, 1.0f);
            bg_tensor *w = bg_randn(ctx, 2, (int64_t[]){ n, k }, 0.0f, 0.05f);
            bg_tensor *y1 = bg_bitlinear(x, w, bits, per_row);
            bg_isa_set_max(BG_ISA_SCALAR);
            bg_tensor *y0 = bg_bitlinear(x, w, bits, per_row);
            bg_isa_set_max(BG_ISA_BEST);
            all++;
            if (y0 && y1 &&
                memcmp(bg_tensor_data(y0), bg_tensor_data(y1), (size_t)(m * n) * 4) == 0)
                same++;
            else
                printf("  bitlinear m=%lld k=%lld n=%lld bits=%d per_row=%d: paths differ\n",
                       (long long)m, (long long)k, (long long)n, bits, per_row);
            bg_step_end(ctx);
        }
    CHECK(same == all, "BitLinear forward, %s vs sgemm form: %d of %d cases bit-identical",
          vnni ? "int8 VNNI GEMM" : "(no VNNI here: sgemm both times)", same, all);
    bg_ctx_free(&ctx);
}


/* BitLinear's dX by tables (tlut.h) against a double sum of the same float products: ragged
 * sizes (tokens not a multiple of 8, rows of T not of 32), scales per tensor and per row,
 * int8 codes and the packed base (the same bits), 1 and 2 threads (the same bits), and
 * accumulate (dx + the new sum, bit for bit). */
static void test_tlut(void)
{
    static const int64_t shapes[][3] = { { 1, 1, 1 },    { 3, 5, 7 },     { 8, 32, 16 },
                                         { 9, 33, 65 },  { 17, 64, 300 }, { 40, 100, 257 },
                                         { 130, 70, 45 }, { 64, 256, 96 }, { 24, 96, 1100 } };
    int bad = 0, cases = 0;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (int per_row = 0; per_row < 2; per_row++) {
            int64_t rows = shapes[si][0], out = shapes[si][1], in = shapes[si][2];
            int8_t *codes = malloc((size_t)(out * in));
            float *dy = malloc((size_t)(rows * out) * sizeof(float));
            float *sw = malloc((size_t)out * sizeof(float));
            float *dx[4], *base = malloc((size_t)(rows * in) * sizeof(float));
            for (int v = 0; v < 4; v++) dx[v] = malloc((size_t)(rows * in) * sizeof(float));
            for (int64_t i = 0; i < out * in; i++) codes[i] = (int8_t)(harness_lcg(&rng) % 3) - 1;
            for (int64_t i = 0; i < rows * out; i++)
                dy[i] = (float)((int64_t)(harness_lcg(&rng) % 2001) - 1000) / 997.0f;
            for (int64_t j = 0; j < out; j++)
                sw[j] = 0.01f + (float)(harness_lcg(&rng) % 1000) / 7919.0f;
            for (int64_t i = 0; i < rows * in; i++)
                base[i] = (float)((int64_t)(harness_lcg(&rng) % 201) - 100) / 101.0f;
            bg_tmat *pk = NULL;
            if (!CHECK(bg_tmat_new(codes, sw, per_row, out, in, &pk) == BG_OK, "tmat")) return;
            size_t nb = bg__tlut_scratch(rows, out, in, 2);
            void *scratch = aligned_alloc(64, (nb + 63) / 64 * 64);
            int saved = omp_get_max_threads();
            omp_set_num_threads(1);
            bg__tlut_dx(codes, NULL, dy, sw, per_row, rows, out, in, false, dx[0], scratch);
            omp_set_num_threads(2);
            bg__tlut_dx(codes, NULL, dy, sw, per_row, rows, out, in, false, dx[1], scratch);
            bg__tlut_dx(NULL, pk, dy, sw, per_row, rows, out, in, false, dx[2], scratch);
            memcpy(dx[3], base, (size_t)(rows * in) * sizeof(float));
            bg__tlut_dx(codes, NULL, dy, sw, per_row, rows, out, in, true, dx[3], scratch);
            omp_set_num_threads(saved);
            double worst = 0.0;
            bool same = true;
            for (int64_t t = 0; t < rows; t++)
                for (int64_t i = 0; i < in; i++) {
                    double ref = 0.0, mag = 0.0;
                    for (int64_t j = 0; j < out; j++) {
                        float p = dy[t * out + j] * sw[per_row ? j : 0] * (float)codes[j * in + i];
                        ref += p;
                        mag += p < 0 ? -p : p;
                    }
                    int64_t e = t * in + i;
                    double err = (double)dx[0][e] - ref;
                    err = err < 0 ? -err : err;
                    /* a float sum of out terms: well inside out * 2^-24 * sum |terms| */
                    double rel = mag > 0 ? err / mag : err;
                    worst = rel > worst ? rel : worst;
                    same = same && dx[0][e] == dx[1][e] && dx[0][e] == dx[2][e] &&
                           dx[3][e] == base[e] + dx[0][e];
                }
            cases++;
            if (!same || worst > (double)(out + 1) * 0x1p-24) {
                bad++;
                printf("  tlut rows=%lld out=%lld in=%lld per_row=%d: worst %.3g of sum|terms|, "
                       "variants %s\n", (long long)rows, (long long)out, (long long)in, per_row,
                       worst, same ? "identical" : "DIFFER");
            }
            bg_tmat_free(&pk);
            free(scratch);
            free(codes);
            free(dy);
            free(sw);
            free(base);
            for (int v = 0; v < 4; v++) free(dx[v]);
        }
    CHECK(bad == 0, "BitLinear dX by tables: %d of %d cases within a float sum's error of the "
          "double sum, codes == packed, 1 thread == 2, accumulate exact", cases - bad, cases);
}

int main(void)
{
    test_tlut();
    test_selection();
    test_bad_input();
    for (int i = 0; i < BG_ISA_COUNT; i++)
        if (bg_isa_supported((bg_isa)i)) test_isa((bg_isa)i);
        else
            printf("not supported here: %s\n", bg_isa_name((bg_isa)i));
    test_bitlinear_paths();
    CHECK(fwd_cases > 0 && fwd_same == fwd_cases,
          "BitLinear forward by int16 tables: %d of %d cases bit-identical to the reference",
          fwd_same, fwd_cases);
    return harness_summary();
}
