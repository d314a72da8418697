/* tmat_x86.c - the x86-64 int8 x packed-ternary kernels: AVX2 and AVX-512 BW (vpmaddubsw, then
 * vpmaddwd to int32) and AVX-512 VNNI (vpdpbusd). Each is compiled for its instruction set
 * with a target attribute, so the library itself needs no -march flag; tmat.c calls one only
 * after checking the CPU has it. Layout and contract: tmat_kernels.h.
 *
 * A tile of NR weight rows x NC activation rows keeps NR * NC accumulators in registers:
 * each 64-byte block of a weight row is loaded once and unpacked to 4 vectors of 64 codes
 * (shift, mask), each activation vector is loaded once per block and used by all NR rows. */
#include "quant/tmat_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define INLINE static inline __attribute__((always_inline))
#define T_AVX2 __attribute__((target("avx2")))
#define T_AVX512BW __attribute__((target("avx512f,avx512bw")))
#define T_VNNI __attribute__((target("avx512f,avx512bw,avx512vnni")))

/* acc += a (unsigned bytes) . b (signed bytes), in place. GCC keeps _mm512_dpbusd_epi32's
 * accumulators moving between registers (and spilling) in unrolled tiles; the asm form ties
 * each accumulator to one register. */
INLINE T_VNNI __m512i dpbusd(__m512i acc, __m512i a, __m512i b)
{
    __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
    return acc;
}
#ifndef PREFETCH
#define PREFETCH 2048
#endif

/* ---- AVX-512 VNNI ---- */

INLINE T_VNNI void tile_vnni(const uint8_t *w, int64_t ws, int64_t bs, const int8_t *x, int64_t xs,
                             int64_t nblk, int32_t *out, const int NR, const int NC)
{
    __m512i acc[BG_TMAT_TILE][BG_TMAT_TILE];
    const __m512i m3 = _mm512_set1_epi8(3);
    for (int r = 0; r < NR; r++)
        for (int c = 0; c < NC; c++) acc[r][c] = _mm512_setzero_si512();
    for (int64_t b = 0; b < nblk; b++) {
        __m512i v[BG_TMAT_TILE];
        for (int r = 0; r < NR; r++) {
            v[r] = _mm512_loadu_si512(w + r * ws + b * bs);
        }
        for (int l = 0; l < 4; l++) {
            __m512i q[BG_TMAT_TILE];
            for (int r = 0; r < NR; r++)
                q[r] = _mm512_and_si512(_mm512_srli_epi16(v[r], 2 * l), m3);
            for (int c = 0; c < NC; c++) {
                __m512i xv = _mm512_loadu_si512(x + c * xs + b * 256 + l * 64);
                for (int r = 0; r < NR; r++) acc[r][c] = dpbusd(acc[r][c], q[r], xv);
            }
        }
    }
    for (int r = 0; r < NR; r++)
        for (int c = 0; c < NC; c++) out[r * BG_TMAT_TILE + c] = _mm512_reduce_add_epi32(acc[r][c]);
}

/* One activation row (mat-vec): memory-bound, so fewer instructions per weight byte. Masking
 * without shifting leaves field l as (code + 1) << 2l, so accumulator l holds 4^l times its
 * dot; 4^l divides it exactly. A field-3 product is at most 128 * 128 = 2^14 in magnitude
 * and a row has 64 such per block, so the sums stay below 2^31 for fewer than 2^11 blocks. */
INLINE T_VNNI void tile_vnni_vec(const uint8_t *w, int64_t ws, int64_t bs, const int8_t *x,
                                 int64_t nblk, int32_t *out, const int NR)
{
    __m512i acc[BG_TMAT_TILE][4];
    for (int r = 0; r < NR; r++)
        for (int l = 0; l < 4; l++) acc[r][l] = _mm512_setzero_si512();
    for (int64_t b = 0; b < nblk; b++) {
        __m512i v[BG_TMAT_TILE];
        for (int r = 0; r < NR; r++) {
            v[r] = _mm512_loadu_si512(w + r * ws + b * bs);
        }
        for (int l = 0; l < 4; l++) {
            __m512i xv = _mm512_loadu_si512(x + b * 256 + l * 64),
                    mask = _mm512_set1_epi8((char)(3 << (2 * l)));
            for (int r = 0; r < NR; r++)
                acc[r][l] = dpbusd(acc[r][l], _mm512_and_si512(v[r], mask), xv);
        }
    }
    for (int r = 0; r < NR; r++) {
        int32_t s = 0;
        for (int l = 0; l < 4; l++) s += _mm512_reduce_add_epi32(acc[r][l]) >> (2 * l);
        out[r * BG_TMAT_TILE] = s;
    }
}

/* ---- AVX-512 BW: u8 x s8 pairs to int16 (|sum| <= 2 * 2 * 128, no saturation), the four
 * shifts of a block added in int16 (<= 2048), then widened to int32 once per block. ---- */

INLINE T_AVX512BW void tile_avx512bw(const uint8_t *w, int64_t ws, int64_t bs, const int8_t *x,
                                     int64_t xs, int64_t nblk, int32_t *out, const int NR,
                                     const int NC)
{
    __m512i acc[BG_TMAT_TILE][BG_TMAT_TILE];
    const __m512i m3 = _mm512_set1_epi8(3), ones = _mm512_set1_epi16(1);
    for (int r = 0; r < NR; r++)
        for (int c = 0; c < NC; c++) acc[r][c] = _mm512_setzero_si512();
    for (int64_t b = 0; b < nblk; b++) {
        __m512i v[BG_TMAT_TILE], s16[BG_TMAT_TILE][BG_TMAT_TILE];
        for (int r = 0; r < NR; r++) {
            v[r] = _mm512_loadu_si512(w + r * ws + b * bs);
            for (int c = 0; c < NC; c++) s16[r][c] = _mm512_setzero_si512();
        }
        for (int l = 0; l < 4; l++) {
            __m512i q[BG_TMAT_TILE];
            for (int r = 0; r < NR; r++)
                q[r] = _mm512_and_si512(_mm512_srli_epi16(v[r], 2 * l), m3);
            for (int c = 0; c < NC; c++) {
                __m512i xv = _mm512_loadu_si512(x + c * xs + b * 256 + l * 64);
                for (int r = 0; r < NR; r++)
                    s16[r][c] = _mm512_add_epi16(s16[r][c], _mm512_maddubs_epi16(q[r], xv));
            }
        }
        for (int r = 0; r < NR; r++)
            for (int c = 0; c < NC; c++)
                acc[r][c] = _mm512_add_epi32(acc[r][c], _mm512_madd_epi16(s16[r][c], ones));
    }
    for (int r = 0; r < NR; r++)
        for (int c = 0; c < NC; c++) out[r * BG_TMAT_TILE + c] = _mm512_reduce_add_epi32(acc[r][c]);
}

/* ---- AVX2: as AVX-512 BW on 32-byte halves of each block (16 ymm registers: tiles of at
 * most 2 x 4). On CPUs that run 256-bit operations as two 128-bit halves with one integer
 * multiply pipe (AMD Zen 1), the multiplies bound the kernel, so the int16 sums run over
 * HALF_RUN half blocks before one vpmaddwd widens them: a half block adds four vpmaddubsw
 * lanes of at most 2 * 2 * 128 = 512 in magnitude (-512 .. 508), so 16 half blocks stay in
 * -32768 .. 32512, inside int16. ---- */

#define HALF_RUN 16

/* An empty asm that claims to change v: GCC otherwise reassociates the int16 sums of a half
 * block into trees whose partial sums spill to the stack (about 20 ymm stores a half block);
 * pinned, each sum stays in its own register and the tile needs none. */
#define PIN(v) __asm__("" : "+x"(v))

INLINE T_AVX2 int32_t hsum256(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* s16[r][c] += the four shifted fields of half block h (32 bytes) times the activations. */
INLINE T_AVX2 void half_avx2(const uint8_t *w, int64_t ws, int64_t bs, const int8_t *x, int64_t xs,
                             int64_t h, __m256i s16[2][BG_TMAT_TILE], const int NR, const int NC)
{
    const __m256i m3 = _mm256_set1_epi8(3);
    const int64_t xo = (h / 2) * 256 + (h % 2) * 32;
    __m256i v[2];
    for (int r = 0; r < NR; r++)
        v[r] = _mm256_loadu_si256((const __m256i *)(w + r * ws + (h / 2) * bs + (h % 2) * 32));
    for (int l = 0; l < 4; l++) {
        __m256i q[2];
        for (int r = 0; r < NR; r++)
            q[r] = _mm256_and_si256(l ? _mm256_srli_epi16(v[r], 2 * l) : v[r], m3);
        for (int c = 0; c < NC; c++) {
            __m256i xv = _mm256_loadu_si256((const __m256i *)(x + c * xs + xo + l * 64));
            for (int r = 0; r < NR; r++) {
                s16[r][c] = _mm256_add_epi16(s16[r][c], _mm256_maddubs_epi16(q[r], xv));
                PIN(s16[r][c]);
            }
        }
    }
}

INLINE T_AVX2 void tile_avx2(const uint8_t *w, int64_t ws, int64_t bs, const int8_t *x, int64_t xs,
                             int64_t nblk, int32_t *out, const int NR, const int NC)
{
    __m256i acc[2][BG_TMAT_TILE];
    const __m256i ones = _mm256_set1_epi16(1);
    for (int r = 0; r < NR; r++)
        for (int c = 0; c < NC; c++) acc[r][c] = _mm256_setzero_si256();
    for (int64_t h0 = 0; h0 < 2 * nblk; h0 += HALF_RUN) { /* runs of half blocks */
        int64_t h1 = h0 + HALF_RUN < 2 * nblk ? h0 + HALF_RUN : 2 * nblk;
        __m256i s16[2][BG_TMAT_TILE];
        for (int r = 0; r < NR; r++)
            for (int c = 0; c < NC; c++) s16[r][c] = _mm256_setzero_si256();
        for (int64_t h = h0; h < h1; h++) half_avx2(w, ws, bs, x, xs, h, s16, NR, NC);
        for (int r = 0; r < NR; r++)
            for (int c = 0; c < NC; c++)
                acc[r][c] = _mm256_add_epi32(acc[r][c], _mm256_madd_epi16(s16[r][c], ones));
    }
    for (int r = 0; r < NR; r++)
        for (int c = 0; c < NC; c++) out[r * BG_TMAT_TILE + c] = hsum256(acc[r][c]);
}

/* ---- entry points: constant tile shapes, so each inlined tile keeps its arrays in
 * registers; ragged edges (fewer rows or columns) take the smaller shapes. ---- */

#define DISPATCH(TILE, MAXR)                                                                       \
    for (int r0 = 0; r0 < nr; r0 += (MAXR)) {                                                      \
        int rr = nr - r0 < (MAXR) ? nr - r0 : (MAXR);                                              \
        int32_t o[BG_TMAT_TILE * BG_TMAT_TILE];                                                    \
        const uint8_t *wr = w + r0 * ws;                                                           \
        if (rr == (MAXR) && nc == 4) TILE(wr, ws, bs, x, xs, nblk, o, (MAXR), 4);                  \
        else if (rr == (MAXR) && nc == 1)                                                          \
            TILE(wr, ws, bs, x, xs, nblk, o, (MAXR), 1);                                           \
        else                                                                                       \
            for (int r = 0; r < rr; r++)                                                           \
                for (int c = 0; c < nc; c++)                                                       \
                    TILE(wr + r * ws, ws, bs, x + c * xs, xs, nblk, o + r * BG_TMAT_TILE + c, 1,   \
                         1);                                                                       \
        for (int r = 0; r < rr; r++)                                                               \
            for (int c = 0; c < nc; c++)                                                           \
                out[(r0 + r) * BG_TMAT_TILE + c] = o[r * BG_TMAT_TILE + c];                        \
    }

static T_VNNI void tdot_avx512vnni(const uint8_t *w, int64_t ws, int64_t bs, int nr,
                                   const int8_t *x, int64_t xs, int nc, int64_t nblk, int32_t *out)
{
    if (nc == 1 && nblk < (1 << 11)) {
        if (nr == 4) tile_vnni_vec(w, ws, bs, x, nblk, out, 4);
        else
            for (int r = 0; r < nr; r++)
                tile_vnni_vec(w + r * ws, ws, bs, x, nblk, out + r * BG_TMAT_TILE, 1);
        return;
    }
    DISPATCH(tile_vnni, 4)
}

static T_AVX512BW void tdot_avx512bw(const uint8_t *w, int64_t ws, int64_t bs, int nr,
                                     const int8_t *x, int64_t xs, int nc, int64_t nblk,
                                     int32_t *out)
{
    DISPATCH(tile_avx512bw, 4)
}

static T_AVX2 void tdot_avx2(const uint8_t *w, int64_t ws, int64_t bs, int nr, const int8_t *x,
                             int64_t xs, int nc, int64_t nblk,
                             int32_t *out){ DISPATCH(tile_avx2, 2) }

bg_tdot_fn *const bg__tdot_avx2 = tdot_avx2;
bg_tdot_fn *const bg__tdot_avx512bw = tdot_avx512bw;
bg_tdot_fn *const bg__tdot_avx512vnni = tdot_avx512vnni;

#else /* not x86-64: the plain C kernel only */

bg_tdot_fn *const bg__tdot_avx2 = 0;
bg_tdot_fn *const bg__tdot_avx512bw = 0;
bg_tdot_fn *const bg__tdot_avx512vnni = 0;

#endif
