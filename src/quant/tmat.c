/* tmat.c - packed 2-bit ternary matrices (bg_tmat) and the int8 x ternary product: packing,
 * the plain C reference kernel, run-time choice of the SIMD kernel, and the tiled, threaded
 * driver that turns the kernels' integer dots into scaled outputs. */
#include <stdlib.h>
#include <string.h>

#include "bitgrad/ternary.h"
#include "quant/tmat_kernels.h"
#include "quant/tmat_access.h"
#include "autograd/vec8.h"

struct bg_tmat {
    int64_t n, k, nblk; /* rows, columns, 256-weight blocks per row */
    uint8_t *packed;    /* n * nblk * 64 bytes */
    float *s_w;         /* 1 or n scales */
    bool per_row;
};

/* ---- instruction sets ---- */

static bool cpu_has(bg_isa isa)
{
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    switch (isa) {
    case BG_ISA_AVX2: return bg__tdot_avx2 && __builtin_cpu_supports("avx2");
    case BG_ISA_AVX512BW:
        return bg__tdot_avx512bw && __builtin_cpu_supports("avx512f") &&
               __builtin_cpu_supports("avx512bw");
    case BG_ISA_AVX512VNNI:
        return bg__tdot_avx512vnni && __builtin_cpu_supports("avx512f") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vnni");
    default: return false;
    }
#else
    (void)isa;
    return false;
#endif
}

/* Bit i set: this CPU (and build) runs instruction set i. Probed once: bg_isa_best is called
 * on the training step's hot path (every BitLinear forward, every SiLU). -1 until probed. */
static _Atomic int isa_mask = -1;

static int supported_mask(void)
{
    int m = isa_mask;
    if (m < 0) {
        m = 1 << BG_ISA_SCALAR;
        for (int i = BG_ISA_SCALAR + 1; i < BG_ISA_COUNT; i++)
            if (cpu_has((bg_isa)i)) m |= 1 << i;
        isa_mask = m;
    }
    return m;
}

bool bg_isa_supported(bg_isa isa)
{
    if (isa == BG_ISA_BEST || isa == BG_ISA_SCALAR) return true;
    return isa > BG_ISA_SCALAR && isa < BG_ISA_COUNT && (supported_mask() & (1 << isa));
}

/* The cap on BG_ISA_BEST: bg_isa_set_max, else the environment's BITGRAD_MAX_ISA (read on
 * first use), else none. -1 until decided. */
static _Atomic int isa_cap = -1;

static bg_isa isa_by_name(const char *s)
{
    for (int i = BG_ISA_SCALAR; s && i < BG_ISA_COUNT; i++)
        if (strcmp(s, bg_isa_name((bg_isa)i)) == 0) return (bg_isa)i;
    return BG_ISA_BEST;
}

int bg_isa_set_max(bg_isa isa)
{
    if (isa < BG_ISA_BEST || isa >= BG_ISA_COUNT) return BG_EINVAL;
    isa_cap = isa == BG_ISA_BEST ? BG_ISA_COUNT - 1 : isa;
    return BG_OK;
}

bg_isa bg_isa_best(void)
{
    int cap = isa_cap;
    if (cap < 0) {
        bg_isa env = isa_by_name(getenv("BITGRAD_MAX_ISA"));
        cap = env == BG_ISA_BEST ? BG_ISA_COUNT - 1 : env;
        isa_cap = cap;
    }
    int m = supported_mask();
    for (int i = cap; i > BG_ISA_SCALAR; i--)
        if (m & (1 << i)) return (bg_isa)i;
    return BG_ISA_SCALAR;
}

const char *bg_isa_name(bg_isa isa)
{
    static const char *names[BG_ISA_COUNT] = { "scalar", "avx2", "avx512bw", "avx512vnni" };
    if (isa == BG_ISA_BEST) return "best";
    return isa >= 0 && isa < BG_ISA_COUNT ? names[isa] : NULL;
}

/* ---- the plain C reference kernel ---- */

static void tdot_scalar(const uint8_t *w, int64_t ws, int64_t bs, int nr, const int8_t *x,
                        int64_t xs, int nc, int64_t nblk, int32_t *out)
{
    for (int r = 0; r < nr; r++)
        for (int c = 0; c < nc; c++) {
            int32_t acc = 0;
            for (int64_t b = 0; b < nblk; b++) {
                const uint8_t *p = w + r * ws + b * bs;
                const int8_t *xb = x + c * xs + b * BG_TMAT_BLOCK;
                for (int l = 0; l < 4; l++)
                    for (int t = 0; t < BG_TMAT_BLOCK_BYTES; t++)
                        acc += ((p[t] >> (2 * l)) & 3) * xb[l * 64 + t];
            }
            out[r * BG_TMAT_TILE + c] = acc;
        }
}

static bg_tdot_fn *kernel_for(bg_isa isa)
{
    switch (isa) {
    case BG_ISA_AVX2: return bg__tdot_avx2;
    case BG_ISA_AVX512BW: return bg__tdot_avx512bw;
    case BG_ISA_AVX512VNNI: return bg__tdot_avx512vnni;
    default: return tdot_scalar;
    }
}

/* ---- packing ---- */

/* Byte offset of block b of row j (tiles of 4 rows, interleaved by block: tmat_kernels.h). */
static int64_t block_offset(const bg_tmat *w, int64_t j, int64_t b)
{
    int64_t t0 = j - j % BG_TMAT_TILE, nr = w->n - t0 < BG_TMAT_TILE ? w->n - t0 : BG_TMAT_TILE;
    return (t0 * w->nblk + b * nr + j % BG_TMAT_TILE) * BG_TMAT_BLOCK_BYTES;
}

int bg__tmat_alloc(const float *s_w, bool s_w_per_row, int64_t n, int64_t k, bg_tmat **out)
{
    if (!out) return BG_EINVAL;
    *out = NULL;
    if (!s_w || n < 1 || k < 1 || k > (int64_t)1 << 40 || n > ((int64_t)1 << 40) / k)
        return BG_EINVAL;
    bg_tmat *w = calloc(1, sizeof *w);
    if (!w) return BG_ENOMEM;
    w->n = n;
    w->k = k;
    w->nblk = (k + BG_TMAT_BLOCK - 1) / BG_TMAT_BLOCK;
    w->per_row = s_w_per_row;
    int64_t rb = w->nblk * BG_TMAT_BLOCK_BYTES, ns = s_w_per_row ? n : 1;
    w->packed = malloc((size_t)(n * rb));
    w->s_w = malloc((size_t)ns * sizeof(float));
    if (!w->packed || !w->s_w) {
        bg_tmat_free(&w);
        return BG_ENOMEM;
    }
    memcpy(w->s_w, s_w, (size_t)ns * sizeof(float));
    memset(w->packed, 0x55, (size_t)(n * rb)); /* every 2-bit field 1: code 0 */
    *out = w;
    return BG_OK;
}

int bg_tmat_new(const int8_t *codes, const float *s_w, bool s_w_per_row, int64_t n, int64_t k,
                bg_tmat **out)
{
    if (!out) return BG_EINVAL;
    *out = NULL;
    if (!codes) return BG_EINVAL;
    bg_tmat *w;
    int rc = bg__tmat_alloc(s_w, s_w_per_row, n, k, &w);
    if (rc) return rc;
    bool bad = false;
#pragma omp parallel for schedule(static) reduction(|| : bad) if (n * k > (1 << 20))
    for (int64_t j = 0; j < n; j++) bad = bg__tmat_pack_row(w, j, codes + j * k) || bad;
    if (bad) {
        bg_tmat_free(&w);
        return BG_EINVAL;
    }
    *out = w;
    return BG_OK;
}

bool bg__tmat_pack_row(bg_tmat *w, int64_t j, const int8_t *c)
{
    bool bad = false;
    for (int64_t b = 0; b < w->nblk; b++) {
        uint8_t *p = w->packed + block_offset(w, j, b);
        const int8_t *cb = c + b * BG_TMAT_BLOCK;
        int64_t len = w->k - b * BG_TMAT_BLOCK; /* past it: code 0 (padding) */
        for (int t = 0; t < BG_TMAT_BLOCK_BYTES; t++) {
            unsigned v = 0;
            for (int l = 0; l < 4; l++) {
                int64_t i = l * 64 + t;
                int8_t q = i < len ? cb[i] : 0;
                bad = bad || q < -1 || q > 1;
                v |= (unsigned)((q + 1) & 3) << (2 * l);
            }
            p[t] = (uint8_t)v;
        }
    }
    return bad;
}

void bg_tmat_free(bg_tmat **w)
{
    if (!w || !*w) return;
    free((*w)->packed);
    free((*w)->s_w);
    free(*w);
    *w = NULL;
}

int64_t bg_tmat_rows(const bg_tmat *w) { return w ? w->n : 0; }
int64_t bg_tmat_cols(const bg_tmat *w) { return w ? w->k : 0; }
size_t bg_tmat_nbytes(const bg_tmat *w)
{
    return w ? (size_t)(w->n * w->nblk * BG_TMAT_BLOCK_BYTES) : 0;
}

/* ---- the product ---- */

/* Rows of weights one thread works through per column tile: 128 rows of 14336 weights are
 * 448 KiB, which stays in a 1 MiB L2 while every column tile passes over them. */
#define PANEL_ROWS 128

static void panel(const bg_tmat *w, bg_tdot_fn *kern, int64_t r0, int64_t r1, const int8_t *x,
                  int64_t xs, const int32_t *sums, const float *s_x, int64_t m, float *y)
{
    int32_t acc[BG_TMAT_TILE * BG_TMAT_TILE];
    for (int64_t c0 = 0; c0 < m; c0 += BG_TMAT_TILE) {
        int nc = m - c0 < BG_TMAT_TILE ? (int)(m - c0) : BG_TMAT_TILE;
        for (int64_t j0 = r0; j0 < r1; j0 += BG_TMAT_TILE) {
            int nr = r1 - j0 < BG_TMAT_TILE ? (int)(r1 - j0) : BG_TMAT_TILE;
            kern(w->packed + block_offset(w, j0, 0), BG_TMAT_BLOCK_BYTES, nr * BG_TMAT_BLOCK_BYTES,
                 nr, x + c0 * xs, xs, nc, w->nblk, acc);
            for (int c = 0; c < nc; c++)
                for (int r = 0; r < nr; r++) {
                    int32_t dot = acc[r * BG_TMAT_TILE + c] - sums[c0 + c];
                    y[(c0 + c) * w->n + j0 + r] =
                        (float)dot * w->s_w[w->per_row ? j0 + r : 0] / s_x[c0 + c];
                }
        }
    }
}

int bg_tmat_matmul_isa(const bg_tmat *w, bg_isa isa, const int8_t *lx, const float *s_x, int64_t m,
                       float *y)
{
    if (!w || !lx || !s_x || !y || m < 0 || isa < BG_ISA_BEST || isa >= BG_ISA_COUNT)
        return BG_EINVAL;
    if (isa == BG_ISA_BEST) isa = bg_isa_best();
    if (!bg_isa_supported(isa)) return BG_EUNSUPPORTED;
    if (m == 0) return BG_OK;
    int64_t kp = w->nblk * BG_TMAT_BLOCK;
    int8_t *xpad = NULL;
    const int8_t *x = lx;
    int32_t *sums = malloc((size_t)m * sizeof(int32_t));
    if (kp != w->k) { /* zero-padded copy: the kernels read whole blocks */
        xpad = calloc((size_t)m, (size_t)kp);
        if (xpad)
            for (int64_t i = 0; i < m; i++) memcpy(xpad + i * kp, lx + i * w->k, (size_t)w->k);
        x = xpad;
    }
    if (!sums || !x) {
        free(sums);
        free(xpad);
        return BG_ENOMEM;
    }
#pragma omp parallel for schedule(static) if (m * w->k > 1 << 18)
    for (int64_t i = 0; i < m; i++) {
        int32_t s = 0;
        for (int64_t t = 0; t < w->k; t++) s += lx[i * w->k + t];
        sums[i] = s;
    }
    bg_tdot_fn *kern = kernel_for(isa);
    int64_t n_panels = (w->n + PANEL_ROWS - 1) / PANEL_ROWS;
#pragma omp parallel for schedule(static) if (m * w->n * w->k > 1 << 20)
    for (int64_t p = 0; p < n_panels; p++) {
        int64_t r0 = p * PANEL_ROWS, r1 = r0 + PANEL_ROWS < w->n ? r0 + PANEL_ROWS : w->n;
        panel(w, kern, r0, r1, x, kp, sums, s_x, m, y);
    }
    free(sums);
    free(xpad);
    return BG_OK;
}

int bg_tmat_matmul(const bg_tmat *w, const int8_t *lx, const float *s_x, int64_t m, float *y)
{
    return bg_tmat_matmul_isa(w, BG_ISA_BEST, lx, s_x, m, y);
}

/* ---- access for the frozen BitLinear base (tmat_access.h) ---- */

const float *bg__tmat_scales(const bg_tmat *w, bool *per_row)
{
    if (per_row) *per_row = w->per_row;
    return w->s_w;
}

/* 64 weights of one block's lane l as float codes times s (the loop vectorises). */
BG_CLONES static void widen_lane(const uint8_t *restrict p, int l, float s, float *restrict out)
{
    for (int t = 0; t < BG_TMAT_BLOCK_BYTES; t++)
        out[t] = (float)((int32_t)((p[t] >> (2 * l)) & 3) - 1) * s;
}

void bg__tmat_widen_row(const bg_tmat *w, int64_t j, float *out)
{
    float s = w->s_w[w->per_row ? j : 0];
    int64_t full = w->k / BG_TMAT_BLOCK;
    for (int64_t b = 0; b < full; b++) {
        const uint8_t *p = w->packed + block_offset(w, j, b);
        for (int l = 0; l < 4; l++) widen_lane(p, l, s, out + b * BG_TMAT_BLOCK + l * 64);
    }
    if (full < w->nblk) { /* the ragged last block: only the weights that exist */
        const uint8_t *p = w->packed + block_offset(w, j, full);
        for (int64_t i = full * BG_TMAT_BLOCK; i < w->k; i++) {
            int64_t r = i % BG_TMAT_BLOCK;
            out[i] = (float)((int32_t)((p[r % 64] >> (2 * (r / 64))) & 3) - 1) * s;
        }
    }
}

/* One block's lane l as digits: the 2-bit fields (the loop vectorises). */
BG_CLONES static void digit_lane(const uint8_t *restrict p, int l, uint8_t *restrict out)
{
    for (int t = 0; t < BG_TMAT_BLOCK_BYTES; t++) out[t] = (uint8_t)((p[t] >> (2 * l)) & 3);
}

void bg__tmat_row_digits(const bg_tmat *w, int64_t j, uint8_t *d)
{
    int64_t full = w->k / BG_TMAT_BLOCK;
    for (int64_t b = 0; b < full; b++) {
        const uint8_t *p = w->packed + block_offset(w, j, b);
        for (int l = 0; l < 4; l++) digit_lane(p, l, d + b * BG_TMAT_BLOCK + l * 64);
    }
    if (full < w->nblk) {
        const uint8_t *p = w->packed + block_offset(w, j, full);
        for (int64_t i = full * BG_TMAT_BLOCK; i < w->k; i++) {
            int64_t r = i % BG_TMAT_BLOCK;
            d[i] = (uint8_t)((p[r % 64] >> (2 * (r / 64))) & 3);
        }
    }
}

uint8_t *bg__tmat_block(bg_tmat *w, int64_t j, int64_t b) { return w->packed + block_offset(w, j, b); }

void bg__tmat_row_codes(const bg_tmat *w, int64_t j, int8_t *codes)
{
    for (int64_t i = 0; i < w->k; i++) {
        int64_t r = i % BG_TMAT_BLOCK;
        const uint8_t *p = w->packed + block_offset(w, j, i / BG_TMAT_BLOCK);
        codes[i] = (int8_t)((int32_t)((p[r % 64] >> (2 * (r / 64))) & 3) - 1);
    }
}
