/* bitgrad/quant.h - ggml tensor types: sizes, names, fp16/bf16 scalars, and conversion between
 * float32 and the ggml block formats that GGUF files carry (F32, F16, BF16, I8/I16/I32, F64,
 * Q8_0, Q2_0, TQ1_0, TQ2_0), plus lossless packing of ternary codes with an explicit scale.
 *
 * Quantizers reproduce ggml's reference quantizers (quantize_row_*_ref) bit for bit and the
 * dequantizers reproduce dequantize_row_* exactly; see ../shared/golden/ggml-ternary/README.txt
 * for the TQ bit layouts. Every function returns 0 or a negative BG_E* code. */
#ifndef BITGRAD_QUANT_H
#define BITGRAD_QUANT_H

#include <bitgrad/tensor.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ggml type ids as stored in GGUF tensor infos (ggml.h enum ggml_type). Ids without an entry
 * (4, 5, 31..33, 36..38) were removed from ggml and are invalid. */
enum bg_ggml_type {
    BG_GGML_F32 = 0,
    BG_GGML_F16 = 1,
    BG_GGML_Q4_0 = 2,
    BG_GGML_Q4_1 = 3,
    BG_GGML_Q5_0 = 6,
    BG_GGML_Q5_1 = 7,
    BG_GGML_Q8_0 = 8,
    BG_GGML_Q8_1 = 9,
    BG_GGML_Q2_K = 10,
    BG_GGML_Q3_K = 11,
    BG_GGML_Q4_K = 12,
    BG_GGML_Q5_K = 13,
    BG_GGML_Q6_K = 14,
    BG_GGML_Q8_K = 15,
    BG_GGML_IQ2_XXS = 16,
    BG_GGML_IQ2_XS = 17,
    BG_GGML_IQ3_XXS = 18,
    BG_GGML_IQ1_S = 19,
    BG_GGML_IQ4_NL = 20,
    BG_GGML_IQ3_S = 21,
    BG_GGML_IQ2_S = 22,
    BG_GGML_IQ4_XS = 23,
    BG_GGML_I8 = 24,
    BG_GGML_I16 = 25,
    BG_GGML_I32 = 26,
    BG_GGML_I64 = 27,
    BG_GGML_F64 = 28,
    BG_GGML_IQ1_M = 29,
    BG_GGML_BF16 = 30,
    BG_GGML_TQ1_0 = 34,
    BG_GGML_TQ2_0 = 35,
    BG_GGML_MXFP4 = 39,
    BG_GGML_NVFP4 = 40,
    BG_GGML_Q1_0 = 41,
    BG_GGML_Q2_0 = 42, /* blocks of 64: fp16 d, then 2-bit codes q; value (q - 1) * d */
    BG_GGML_TYPE_COUNT = 43 /* one past the largest id */
};

#define BG_QK_TQ 256 /* elements per TQ1_0 / TQ2_0 block */
#define BG_TQ2_0_BLOCK_BYTES 66
#define BG_TQ1_0_BLOCK_BYTES 54
#define BG_QK8_0 32 /* elements per Q8_0 block */
#define BG_QK2_0 64 /* elements per Q2_0 block */
#define BG_Q2_0_BLOCK_BYTES 18

/* Bytes per block, or 0 if the id is not a known ggml type. */
BG_API size_t bg_ggml_type_size(int ggml_type);
/* Elements per block (1 for plain types), or 0 if unknown. */
BG_API int64_t bg_ggml_block_size(int ggml_type);
/* Bytes of a row of n elements; 0 if the type is unknown, n < 0, n is not a multiple of the
 * block size, or the size overflows. */
BG_API size_t bg_ggml_row_size(int ggml_type, int64_t n);
/* ggml's own name of the type ("f32", "q4_K", "tq2_0"), or "unknown". */
BG_API const char *bg_ggml_type_name(int ggml_type);
/* True when bg_ggml_dequantize handles the type (and bg_ggml_quantize, see below). */
BG_API bool bg_ggml_can_dequantize(int ggml_type);
BG_API bool bg_ggml_can_quantize(int ggml_type);

/* float32 <-> IEEE binary16 and bfloat16. Round to nearest even; subnormals are kept (no flush);
 * overflow gives Inf; NaN stays NaN (quiet, sign and top payload bits kept). */
BG_API uint16_t bg_fp32_to_fp16(float f);
BG_API float bg_fp16_to_fp32(uint16_t h);
BG_API uint16_t bg_fp32_to_bf16(float f);
BG_API float bg_bf16_to_fp32(uint16_t h);

/* Converts nrows rows of n_per_row floats into dst (nrows * bg_ggml_row_size bytes).
 * Types: F32, F16, BF16, F64 (any values), I8/I16/I32 (values rounded half away from zero;
 * BG_EINVAL if one is non-finite or out of range, never saturated), Q8_0, Q2_0, TQ1_0, TQ2_0 (as
 * ggml's reference quantizers; BG_EINVAL on non-finite input). n_per_row must be a multiple of
 * the block size (BG_ESHAPE otherwise); BG_EUNSUPPORTED for other types. */
BG_API int bg_ggml_quantize(int ggml_type, const float *src, void *dst, int64_t nrows,
                            int64_t n_per_row);
/* Converts n elements stored as ggml_type into floats (n a multiple of the block size).
 * Types: those of bg_ggml_quantize plus I64. */
BG_API int bg_ggml_dequantize(int ggml_type, const void *src, float *dst, int64_t n);

/* Lossless ternary packing: codes[n] in {-1, 0, +1} (BG_EINVAL otherwise) into n / 256 blocks,
 * every block with scale fp16(d) (d finite; d = 1.0 is exact). n must be a multiple of 256. */
BG_API int bg_tq2_0_pack_codes(const int8_t *codes, float d, void *dst, int64_t n);
BG_API int bg_tq1_0_pack_codes(const int8_t *codes, float d, void *dst, int64_t n);
/* Inverse of the packers for TQ1_0 or TQ2_0 data: codes[n] in {-1, 0, +1} and, when
 * d_per_block is not NULL, each block's scale (n / 256 floats). A TQ2_0 code 3 (never written by
 * ggml; it would mean +2d) gives BG_EFORMAT. */
BG_API int bg_tq_unpack_codes(int ggml_type, const void *src, int8_t *codes, float *d_per_block,
                              int64_t n);

/* Lossless packing for the four block types that hold ternary codes: TQ1_0, TQ2_0 (blocks of
 * 256), Q2_0 (64; the bytes ggml's quantizer writes for codes * d in every block with a non-zero
 * code) and Q8_0 (32; the code itself as the int8 value). codes[n] in {-1, 0, +1} (BG_EINVAL
 * otherwise), every block with scale fp16(d); n a multiple of the type's block size (BG_ESHAPE);
 * BG_EINVAL for other types. bitgrad's exporter writes d = 1 and the exact scale separately. */
BG_API int bg_ggml_pack_codes(int ggml_type, const int8_t *codes, float d, void *dst, int64_t n);
/* Inverse for those four types: codes and (when not NULL) each block's d (n / block floats).
 * A stored value outside {-1, 0, +1} (a Q2_0 or TQ2_0 code 3, a Q8_0 int8 other than -1, 0, 1)
 * gives BG_EFORMAT: such data is not in code form (bg_ggml_dequantize reads any of it). */
BG_API int bg_ggml_unpack_codes(int ggml_type, const void *src, int8_t *codes, float *d_per_block,
                                int64_t n);

#ifdef __cplusplus
}
#endif
#endif
