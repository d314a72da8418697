/* tmat_kernels.h - the int8 x packed-ternary dot-product kernels behind bg_tmat_matmul, one
 * per instruction set, in a table filled over the plain C reference (tmat.c).
 *
 * Packed layout: a row is nblk blocks of 256 weights in 64 bytes; bits [2l, 2l+1] of byte t
 * of block b hold code + 1 (0, 1 or 2) of weight b*256 + l*64 + t. So shifting a 64-byte
 * vector right by 2l and masking with 3 gives 64 consecutive weights, and the activations
 * they multiply are 64 consecutive bytes: no shuffles. Rows are stored in tiles of 4 (the
 * last tile may hold fewer), the tile's rows interleaved block by block: block b of row r
 * of a tile of nr rows is at tile + (b * nr + r) * 64. A kernel walking a tile thus reads
 * one sequential stream, which the hardware prefetcher follows (four separate 3.5 KiB row
 * streams it does not). The kernels compute the unsigned dot sum_i (code_i + 1) * x_i; the
 * caller subtracts sum_i x_i (once per activation row). */
#ifndef BG_TMAT_KERNELS_H
#define BG_TMAT_KERNELS_H

#include <stdint.h>

#define BG_TMAT_BLOCK 256      /* weights per packed block */
#define BG_TMAT_BLOCK_BYTES 64 /* bytes per packed block */
#define BG_TMAT_TILE 4         /* a kernel call covers up to 4 weight rows x 4 activation rows */

/* out[r * 4 + c] = sum over nblk blocks of (code + 1) . x for weight row r (block b at
 * w + r * ws + b * bs) and activation row c (at x + c * xs), for r < nr <= 4, c < nc <= 4. */
typedef void bg_tdot_fn(const uint8_t *w, int64_t ws, int64_t bs, int nr, const int8_t *x,
                        int64_t xs, int nc, int64_t nblk, int32_t *out);

/* The x86 kernels (tmat_x86.c); NULL where the build has none. */
extern bg_tdot_fn *const bg__tdot_avx2;
extern bg_tdot_fn *const bg__tdot_avx512bw;
extern bg_tdot_fn *const bg__tdot_avx512vnni;

#endif
