/* tmat_access.h - what the frozen BitLinear base (src/nn/packed.c, op_bitlinear.c) reads of
 * a packed ternary matrix besides the product: its scales, and rows widened back to float
 * (W_q = code * s_w, the value bg__widen_mul gives) or to int8 codes. */
#ifndef BG_TMAT_ACCESS_H
#define BG_TMAT_ACCESS_H

#include <stdbool.h>
#include <stdint.h>

#include "bitgrad/ternary.h"

/* The scales (1, or one per row when *per_row). */
const float *bg__tmat_scales(const bg_tmat *w, bool *per_row);
/* out[i] = code(j, i) * s_w(j) for the k weights of row j: bit for bit (float)c * s. */
void bg__tmat_widen_row(const bg_tmat *w, int64_t j, float *out);
/* The k codes of row j in {-1, 0, 1}. */
void bg__tmat_row_codes(const bg_tmat *w, int64_t j, int8_t *codes);
/* The k codes of row j plus one, in {0, 1, 2} (the 2-bit fields as stored). */
void bg__tmat_row_digits(const bg_tmat *w, int64_t j, uint8_t *digits);
/* Packs the k codes of row j (padding after them: code 0); true if a code was outside
 * {-1, 0, 1} (the row is then unusable). */
bool bg__tmat_pack_row(bg_tmat *w, int64_t j, const int8_t *codes);
/* The 64 bytes of block b of row j (to write codes into directly). */
uint8_t *bg__tmat_block(bg_tmat *w, int64_t j, int64_t b);
/* A packed [n, k] matrix of zero codes with the given scales, to fill row by row. */
int bg__tmat_alloc(const float *s_w, bool s_w_per_row, int64_t n, int64_t k, bg_tmat **out);

#endif
