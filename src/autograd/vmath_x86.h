/* vmath_x86.h - AVX-512 SiLU kernels, bit-identical to the scalar expressions of
 * op_elementwise.c (x * sigmoid(x); g += go * s (1 + x (1 - s))) built on bg_expf, and the
 * activation quantizer's absmax and levels, bit-identical to bitnet_math.h's. */
#ifndef BG_VMATH_X86_H
#define BG_VMATH_X86_H

#include <stdbool.h>
#include <stdint.h>

/* Whether the kernels below may run: the CPU has AVX-512 and bg_isa_set_max allows it. */
bool bg__vmath_avx512(void);
/* Whether the exp kernels below may run: AVX-512 (as above) or AVX2; they take the widest. */
bool bg__vmath_vexp(void);
/* y = bg_expf(x - m) (y may be x) */
void bg__exp_sub_vec(const float *x, float m, float *y, int64_t n);
void bg__silu_fwd_vec(const float *x, float *y, int64_t n);
/* g = (as ? 0 : g) + go * silu'(x) */
void bg__silu_bwd_vec(const float *x, const float *go, float *g, int64_t n, bool as);
/* swiglu's two gradients in one pass (op_elementwise.c), the bits of the two kernels above */
void bg__swiglu_bwd_vec(const float *x, const float *u, const float *go, float *dg, float *du,
                           int64_t n, bool as_g, bool as_u);
/* bg_absmax (bitnet_math.h) and the activation levels of op_bitlinear.c's quantize_row. */
float bg__absmax_avx512(const float *x, int64_t n);
void bg__act_levels_avx512(const float *x, int64_t n, float s, float qp, int8_t *lv8);

#endif
