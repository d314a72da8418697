/* bitgrad/ternary.h - BitNet b1.58 quantization utilities: absmean ternary weights and
 * absmax integer activations as plain arrays (the autograd STE ops are in autograd.h),
 * 2-bit packing, sparsity, compression ratio and code flips between two steps. The math
 * is DESIGN.md section 5, shared with training, export and inference. */
#ifndef BITGRAD_TERNARY_H
#define BITGRAD_TERNARY_H

#include "bitgrad/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Granularity of the weight scale. */
typedef enum bg_wq_mode {
    BG_WQ_PER_TENSOR = 0, /* one scale for the whole matrix (BitNet b1.58 default) */
    BG_WQ_PER_ROW = 1,    /* one scale per output row */
    BG_WQ_PER_GROUP = 2,  /* one scale per group of `group` consecutive weights of a row */
} bg_wq_mode;

/* Number of scales a [rows, cols] matrix gets under mode/group. */
BG_API int64_t bg_ternary_n_scales(int64_t rows, int64_t cols, bg_wq_mode mode, int64_t group);
/* Ternary codes in {-1,0,1} (rows*cols) and the scales (bg_ternary_n_scales of them). */
BG_API int bg_ternary_quantize(const float *w, int64_t rows, int64_t cols, bg_wq_mode mode,
                               int64_t group, int8_t *codes, float *scales);
/* w = codes * scale of its group. */
BG_API int bg_ternary_dequantize(const int8_t *codes, const float *scales, int64_t rows,
                                 int64_t cols, bg_wq_mode mode, int64_t group, float *w);
/* Per-row (per token) absmax quantization to `bits` (2..8): levels in [-Qp-1, Qp] and the
 * scale s_x of each row (x ~ level / s_x). */
BG_API int bg_act_quantize(const float *x, int64_t rows, int64_t cols, int bits, int8_t *levels,
                           float *scales);

/* 2-bit packing, 4 codes per byte, code c stored as c + 1 in bits [2k, 2k+1] of byte i/4. */
BG_API size_t bg_pack2_size(int64_t n);
BG_API int bg_pack2(const int8_t *codes, int64_t n, uint8_t *out);
BG_API int bg_unpack2(const uint8_t *packed, int64_t n, int8_t *codes);

/* Fraction of zero codes. */
BG_API double bg_ternary_sparsity(const int8_t *codes, int64_t n);
/* Number of positions where two code arrays differ (codes that flipped between steps). */
BG_API int64_t bg_ternary_flips(const int8_t *a, const int8_t *b, int64_t n);
/* Size of n f32 weights over their packed size at bits_per_weight (2.0 for I2/TQ2_0,
 * 1.6875 for TQ1_0), scales included (n_scales f32). */
BG_API double bg_compression_ratio(int64_t n, double bits_per_weight, int64_t n_scales);

/* Inference kernel (plain C reference): y[m, n] = sum_k lx[m,k] * codes[n,k], int32
 * accumulation, scaled by s_w[n's group]/s_x[m]. Per-tensor or per-row weight scales. */
BG_API int bg_ternary_matmul_ref(const int8_t *lx, const float *s_x, const int8_t *codes,
                                 const float *s_w, bool s_w_per_row, int64_t m, int64_t n,
                                 int64_t k, float *y);

/* ---- packed ternary matrices and the SIMD int8 x ternary kernels ----
 *
 * A bg_tmat holds an [n, k] ternary matrix at 2 bits per weight (rows padded to a multiple
 * of 256 with zero codes) and its f32 scales. bg_tmat_matmul multiplies it by int8
 * activations with exact int32 accumulation: the result equals bg_ternary_matmul_ref bit
 * for bit on every instruction set. The kernel is chosen at run time from what the CPU
 * supports (BG_ISA_BEST); a specific one can be asked for (tests, benchmarks). */
typedef enum bg_isa {
    BG_ISA_BEST = -1,      /* the fastest this CPU supports */
    BG_ISA_SCALAR = 0,     /* plain C, any CPU: the reference the others are tested against */
    BG_ISA_AVX2 = 1,       /* x86-64 AVX2 (vpmaddubsw) */
    BG_ISA_AVX512BW = 2,   /* AVX-512 F + BW (vpmaddubsw on 512 bits) */
    BG_ISA_AVX512VNNI = 3, /* AVX-512 VNNI (vpdpbusd) */
    BG_ISA_COUNT = 4,
} bg_isa;

/* Whether this build and this CPU can run isa (BG_ISA_BEST and BG_ISA_SCALAR always can). */
BG_API bool bg_isa_supported(bg_isa isa);
/* The instruction set BG_ISA_BEST stands for on this CPU: the best it supports, at most the
 * cap. Every SIMD path of the library (these kernels and the int8 BitLinear training forward)
 * follows it. */
BG_API bg_isa bg_isa_best(void);
/* Caps BG_ISA_BEST process-wide (BG_ISA_BEST: no cap), e.g. BG_ISA_SCALAR to run the plain C
 * references. The environment variable BITGRAD_MAX_ISA=scalar|avx2|avx512bw|avx512vnni sets
 * the initial cap. */
BG_API int bg_isa_set_max(bg_isa isa);
/* "scalar", "avx2", "avx512bw", "avx512vnni" ("best" for BG_ISA_BEST, NULL if out of range). */
BG_API const char *bg_isa_name(bg_isa isa);

typedef struct bg_tmat bg_tmat;

/* Packs codes [n, k] (each in {-1, 0, 1}) with per-tensor (s_w[0]) or per-row (s_w[n]) scales.
 * BG_EINVAL for a code outside {-1, 0, 1} or bad sizes, BG_ENOMEM; *out is set on success. */
BG_API int bg_tmat_new(const int8_t *codes, const float *s_w, bool s_w_per_row, int64_t n,
                       int64_t k, bg_tmat **out);
BG_API void bg_tmat_free(bg_tmat **w);
BG_API int64_t bg_tmat_rows(const bg_tmat *w);
BG_API int64_t bg_tmat_cols(const bg_tmat *w);
/* Bytes of packed weights (2 bits each, padding included). */
BG_API size_t bg_tmat_nbytes(const bg_tmat *w);
/* y[m, n] = (sum_k lx[m,k] * code[n,k]) * s_w[n's scale] / s_x[m], with lx [m, k] int8 rows
 * (any value in [-128, 127]). Threads with OpenMP over output rows. */
BG_API int bg_tmat_matmul(const bg_tmat *w, const int8_t *lx, const float *s_x, int64_t m,
                          float *y);
/* The same on one chosen instruction set: BG_EUNSUPPORTED where this CPU lacks it. */
BG_API int bg_tmat_matmul_isa(const bg_tmat *w, bg_isa isa, const int8_t *lx, const float *s_x,
                              int64_t m, float *y);

#ifdef __cplusplus
}
#endif
#endif
