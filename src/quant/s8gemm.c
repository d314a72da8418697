/* s8gemm.c - int8 activations x ternary codes for the BitLinear training forward, with
 * vpdpbusd (AVX-512 VNNI). Layout: the codes are repacked, plus one, as unsigned bytes
 * [n/16][k/4][16][4], so one 64-byte load holds 4 consecutive k of 16 output channels;
 * each activation row contributes 4 bytes broadcast to all 16 lanes. 12 activation rows x
 * 32 channels of int32 accumulators stay in registers over the whole k: no horizontal sums.
 * The + 1 on the codes adds sum_k lv[m, k] to every output, subtracted in the epilogue. */
#include <string.h>

#include "bitgrad/ternary.h"
#include "quant/s8gemm.h"

#define MR 8 /* activation rows per register tile */

size_t bg__s8gemm_scratch(int64_t m, int64_t n, int64_t k)
{
    int64_t nt = (n + 15) / 16;
    return (size_t)(nt * 16 * k) + (size_t)m * sizeof(int32_t) + 64;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define T_VNNI __attribute__((target("avx512f,avx512bw,avx512vnni")))
#define INLINE static inline __attribute__((always_inline))

/* acc += a (unsigned bytes) . b (signed bytes), in place. GCC keeps _mm512_dpbusd_epi32's
 * accumulators moving between registers (and spilling) in unrolled tiles; the asm form ties
 * each accumulator to one register. */
INLINE T_VNNI __m512i dpbusd(__m512i acc, __m512i a, __m512i b)
{
    __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
    return acc;
}

bool bg__s8gemm_ok(int64_t k)
{
    return k % 4 == 0 && k > 0 && k < (1 << 20) && bg_isa_best() == BG_ISA_AVX512VNNI;
}

/* wp[t][q][c][j] = codes[16t + c][4q + j] + 1 (channels past n: code 0). */
static void pack(const int8_t *codes, int64_t n, int64_t k, uint8_t *wp)
{
    int64_t nt = (n + 15) / 16, kq = k / 4;
#pragma omp parallel for schedule(static) if (n * k > (1 << 18))
    for (int64_t t = 0; t < nt; t++)
        for (int c = 0; c < 16; c++) {
            int64_t row = 16 * t + c;
            uint8_t *dst = wp + (t * kq * 16 + c) * 4;
            for (int64_t q = 0; q < kq; q++) {
                uint32_t v = 0x01010101u;
                if (row < n) {
                    memcpy(&v, codes + row * k + 4 * q, 4);
                    /* + 1 in each byte without carries: 0xff -> 0x00, 0 -> 1, 1 -> 2 */
                    v = ((v & 0x7f7f7f7fu) + 0x01010101u) ^ (v & 0x80808080u);
                }
                memcpy(dst + q * 64, &v, 4);
            }
        }
}

/* y rows [r0, r0 + R) x channel tiles [t0, t0 + NT) */
INLINE T_VNNI void tile(const int8_t *lv, int64_t k, const uint8_t *wp, const int32_t *rowsum,
                        const float *s_x, const float *s_w, bool per_row, int64_t n, int64_t r0,
                        int64_t t0, float *y, const int R, const int NT)
{
    __m512i acc[MR][2];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < NT; t++) acc[r][t] = _mm512_setzero_si512();
    const int64_t kq = k / 4;
    const uint8_t *w0 = wp + t0 * kq * 64;
    const int8_t *x = lv + r0 * k;
    for (int64_t q = 0; q < kq; q++) {
        __m512i w[2];
        for (int t = 0; t < NT; t++) w[t] = _mm512_load_si512(w0 + (t * kq + q) * 64);
        for (int r = 0; r < R; r++) {
            int32_t xv;
            memcpy(&xv, x + r * k + 4 * q, 4);
            __m512i xb = _mm512_set1_epi32(xv);
            for (int t = 0; t < NT; t++) acc[r][t] = dpbusd(acc[r][t], w[t], xb);
        }
    }
    for (int t = 0; t < NT; t++) {
        int64_t c0 = (t0 + t) * 16;
        __mmask16 mk = n - c0 >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - c0)) - 1);
        __m512 sw = per_row ? _mm512_maskz_loadu_ps(mk, s_w + c0) : _mm512_set1_ps(s_w[0]);
        for (int r = 0; r < R; r++) {
            __m512i d = _mm512_sub_epi32(acc[r][t], _mm512_set1_epi32(rowsum[r0 + r]));
            __m512 v = _mm512_div_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(d), sw),
                                     _mm512_set1_ps(s_x[r0 + r]));
            _mm512_mask_storeu_ps(y + (r0 + r) * n + c0, mk, v);
        }
    }
}

/* rowsum[r] = sum of the k levels of row r (k a multiple of 4): vpdpbusd against ones adds
 * four bytes per lane; the tail of a row shorter than 64 bytes is masked. Exact (integers). */
static T_VNNI int32_t level_sum(const int8_t *x, int64_t k)
{
    const __m512i ones = _mm512_set1_epi8(1);
    __m512i acc = _mm512_setzero_si512();
    for (int64_t i = 0; i < k; i += 64) {
        __mmask64 mk = k - i >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << (k - i)) - 1);
        acc = dpbusd(acc, ones, _mm512_maskz_loadu_epi8(mk, x + i));
    }
    return _mm512_reduce_add_epi32(acc);
}

static T_VNNI void rows(const int8_t *lv, int64_t k, const uint8_t *wp, const int32_t *rowsum,
                        const float *s_x, const float *s_w, bool per_row, int64_t n, int64_t r0,
                        int R, float *y)
{
    int64_t nt = (n + 15) / 16, t = 0;
    if (R == MR) {
        for (; t + 2 <= nt; t += 2) tile(lv, k, wp, rowsum, s_x, s_w, per_row, n, r0, t, y, MR, 2);
        if (t < nt) tile(lv, k, wp, rowsum, s_x, s_w, per_row, n, r0, t, y, MR, 1);
        return;
    }
    for (int r = 0; r < R; r++) {
        for (t = 0; t + 2 <= nt; t += 2)
            tile(lv, k, wp, rowsum, s_x, s_w, per_row, n, r0 + r, t, y, 1, 2);
        if (t < nt) tile(lv, k, wp, rowsum, s_x, s_w, per_row, n, r0 + r, t, y, 1, 1);
    }
}

void bg__s8gemm(const int8_t *lv, const float *s_x, const int8_t *codes, const float *s_w,
                bool per_row, int64_t m, int64_t n, int64_t k, float *y, void *scratch)
{
    uint8_t *wp = scratch;
    int32_t *rowsum = (int32_t *)(wp + (n + 15) / 16 * 16 * k);
    pack(codes, n, k, wp);
    int64_t nb = (m + MR - 1) / MR;
#pragma omp parallel for schedule(static) if (m * n * k > (1 << 20))
    for (int64_t b = 0; b < nb; b++) {
        int R = m - b * MR < MR ? (int)(m - b * MR) : MR;
        for (int r = 0; r < R; r++) rowsum[b * MR + r] = level_sum(lv + (b * MR + r) * k, k);
        rows(lv, k, wp, rowsum, s_x, s_w, per_row, n, b * MR, R, y);
    }
}

#else /* not x86-64 */

bool bg__s8gemm_ok(int64_t k)
{
    (void)k;
    return false;
}

void bg__s8gemm(const int8_t *lv, const float *s_x, const int8_t *codes, const float *s_w,
                bool per_row, int64_t m, int64_t n, int64_t k, float *y, void *scratch)
{
    (void)lv, (void)s_x, (void)codes, (void)s_w, (void)per_row, (void)m, (void)n, (void)k;
    (void)y, (void)scratch;
}

#endif
