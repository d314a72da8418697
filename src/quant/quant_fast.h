/* quant_fast.h - the hot loops of the BitNet quantizers on plain arrays, built for the
 * widest vectors the CPU has (target clones) and threaded where the arrays are large. Each
 * gives exactly the bits of the bitnet_math.h formula it names: the tests compare them. */
#ifndef BG_QUANT_FAST_H
#define BG_QUANT_FAST_H

#include <stdint.h>

/* bg_abssum(w, n), its runs summed in parallel (OpenMP) when there are several. */
double bg__abssum_fast(const float *w, int64_t n);
/* bg_absmean_scale(w, n) from bg__abssum_fast. */
float bg__absmean_scale_fast(const float *w, int64_t n);
/* c8[i] = bg_ternary_code(w[i], s) for n weights. */
void bg__ternary_codes(const float *w, int64_t n, float s, int8_t *c8);
/* out[i] = (float)c[i] * s: codes times their scale (W_q). */
void bg__widen_mul(const int8_t *c, int64_t n, float s, float *out);
/* out[i] = (float)c[i] / s: activation levels over their scale (x_q). */
void bg__widen_div(const int8_t *c, int64_t n, float s, float *out);

#endif
