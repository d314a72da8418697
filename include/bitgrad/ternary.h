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

#ifdef __cplusplus
}
#endif
#endif
