/* s8gemm.h - the BitLinear training forward as an int8 GEMM on AVX-512 VNNI.
 *
 * y[m, n] = ((float)sum_k lv[m, k] * codes[n, k] * s_w[n's scale]) / s_x[m], the same
 * formula and - the integer sum being exact either way - the same bits as the sgemm path of
 * op_bitlinear.c, which remains the reference (and the path on other CPUs). */
#ifndef BG_S8GEMM_H
#define BG_S8GEMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Whether bg__s8gemm can run: AVX-512 VNNI present and not capped by bg_isa_set_max, and
 * k a multiple of 4. */
bool bg__s8gemm_ok(int64_t k);
/* Bytes of scratch bg__s8gemm needs. */
size_t bg__s8gemm_scratch(int64_t m, int64_t n, int64_t k);
/* lv [m, k] activation levels, codes [n, k] in {-1, 0, 1}; scratch of bg__s8gemm_scratch
 * bytes, 64-byte aligned. Threads with OpenMP over rows of y. */
void bg__s8gemm(const int8_t *lv, const float *s_x, const int8_t *codes, const float *s_w,
                bool per_row, int64_t m, int64_t n, int64_t k, float *y, void *scratch);

#endif
