/* tlut.h - dX = dY W_q for a ternary W_q = s_w * T (BitLinear's backward) without multiplies:
 * rows of T are taken four at a time, and for each group the 81 signed sums of the four dY
 * columns are tabulated once per 8 tokens; every input column then adds one table entry per
 * group, chosen by the base-3 number its four codes spell. The products dY * s_w are the ones
 * sgemm forms from dY and W_q (a code is -1, 0 or +1), only the order of the sums differs. The
 * result does not depend on the instruction set or the thread count. */
#ifndef BG_QUANT_TLUT_H
#define BG_QUANT_TLUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bitgrad/ternary.h"

/* Bytes of scratch bg__tlut_dx needs for these sizes and nthreads threads. */
size_t bg__tlut_scratch(int64_t rows, int64_t out, int64_t in, int nthreads);

/* dx (+)= (dy * s_w) T for dy [rows, out], T [out, in] given as int8 codes (codes != NULL) or
 * as the packed base pk; s_w is one scale or one per row of T. accumulate adds to dx, else
 * dx is overwritten. scratch holds bg__tlut_scratch(rows, out, in, omp_get_max_threads())
 * bytes, 64-byte aligned. */
void bg__tlut_dx(const int8_t *codes, const bg_tmat *pk, const float *dy, const float *s_w,
                 bool per_row, int64_t rows, int64_t out, int64_t in, bool accumulate, float *dx,
                 void *scratch);

/* The forward by the same tables on integers: y = (float)(levels . T) * s_w / s_x, the
 * formula and bits of bg_tmat_matmul and of the sgemm form (every sum is exact). Input
 * columns are taken four at a time, tables of 81 int16 sums per 16 tokens. levels [rows, in],
 * y [rows, out]; scratch holds bg__tlut_fwd_scratch(rows, out, in, omp_get_max_threads()). */
size_t bg__tlut_fwd_scratch(int64_t rows, int64_t out, int64_t in, int nthreads);
void bg__tlut_fwd(const int8_t *codes, const bg_tmat *pk, const int8_t *levels, const float *s_x,
                  const float *s_w, bool per_row, int64_t rows, int64_t out, int64_t in, float *y,
                  void *scratch);

#endif
