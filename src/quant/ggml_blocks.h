/* src/quant/ggml_blocks.h - private: the block-format converters of ggml_blocks.c (Q8_0, Q2_0,
 * TQ1_0, TQ2_0) that the dispatch in ggml_types.c calls. n is a positive multiple of the block size and
 * the pointers are valid; the callers in ggml_types.c check both. */
#ifndef BITGRAD_QUANT_GGML_BLOCKS_H
#define BITGRAD_QUANT_GGML_BLOCKS_H

#include <stddef.h>
#include <stdint.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "bitgrad copies little-endian GGUF/ggml data with memcpy: big-endian hosts are unsupported"
#endif

/* Little-endian fp16 store/load at any alignment. */
static inline void bg_store_le16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v & 0xffu);
    p[1] = (uint8_t)(v >> 8);
}

static inline uint16_t bg_load_le16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

/* Return 0, or BG_EINVAL when src holds a non-finite value. */
int bg_quantize_q8_0(const float *src, uint8_t *dst, int64_t n);
int bg_quantize_tq1_0(const float *src, uint8_t *dst, int64_t n);
int bg_quantize_tq2_0(const float *src, uint8_t *dst, int64_t n);
int bg_quantize_q2_0(const float *src, uint8_t *dst, int64_t n);

void bg_dequantize_q8_0(const uint8_t *src, float *dst, int64_t n);
void bg_dequantize_tq1_0(const uint8_t *src, float *dst, int64_t n);
void bg_dequantize_tq2_0(const uint8_t *src, float *dst, int64_t n);
void bg_dequantize_q2_0(const uint8_t *src, float *dst, int64_t n);

#endif
