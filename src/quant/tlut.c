/* tlut.c - BitLinear's dX = dY W_q through tables of signed sums (tlut.h).
 *
 * T's rows are grouped by four (a group) and eight groups make a tile of 32 rows. For each
 * input column i and group, the four codes of the column spell a base-3 number
 * (c0+1) + 3 (c1+1) + 9 (c2+1) + 27 (c3+1) in [0, 81): the index, one byte, laid out [tile]
 * [column][group] so that a column's eight indices of a tile are one 8-byte load. dY, times
 * s_w, is turned to [row of T][token] so that eight tokens of one row of T are one vector.
 * For eight tokens and one tile, the table holds for every group the 81 vectors
 * sum_k (digit_k - 1) * dy_k (zero digits left out), built in a fixed order; a column then
 * gathers one vector per group and adds the eight in a fixed tree. Work per weight: one
 * vector load and add for eight tokens and four rows of T, against four multiply-adds for
 * sgemm. Every output element has one fixed order of sums, whatever the thread count or the
 * vector width the compiler picked (ISO C: no fused multiply-add). */
#include <omp.h>
#include <string.h>

#include "autograd/vec8.h"
#include "quant/tlut.h"
#include "quant/tmat_access.h"

#define GROUP 4                /* rows of T per index */
#define GROUPS 8               /* groups per tile: one 8-byte load of indices */
#define TILE (GROUP * GROUPS)  /* rows of T per tile */
#define COMB 81                /* 3^GROUP table entries */
#define TOK 8                  /* tokens per vector */
#define PAR_MIN (1 << 18)      /* below this many weight-token products: one thread */

static int64_t round_up(int64_t a, int64_t b) { return (a + b - 1) / b * b; }
static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

typedef struct layout {
    size_t dyt, idx; /* shared: dY^T * s_w, [tile rows][tokens]; the indices */
    size_t tab, acc, dig, thread; /* per thread: table, [in][TOK] sums, 4 rows of digits */
} layout;

static layout plan(int64_t rows, int64_t out, int64_t in)
{
    layout l;
    int64_t r8 = round_up(rows, TOK), op = round_up(out, TILE);
    l.dyt = align64((size_t)(op * r8) * sizeof(float));
    l.idx = align64((size_t)(op / GROUP * in));
    l.tab = align64((size_t)GROUPS * COMB * TOK * sizeof(float));
    l.acc = align64((size_t)in * TOK * sizeof(float));
    l.dig = align64((size_t)((GROUP + GROUPS) * in));
    l.thread = l.tab + l.acc + l.dig;
    return l;
}

size_t bg__tlut_scratch(int64_t rows, int64_t out, int64_t in, int nthreads)
{
    layout l = plan(rows, out, in);
    return l.dyt + l.idx + (size_t)(nthreads > 0 ? nthreads : 1) * l.thread;
}

/* Digits (code + 1) of row j of T, or of a padding row (code 0) past the end. */
static void row_digits(const int8_t *codes, const bg_tmat *pk, int64_t out, int64_t in, int64_t j,
                       uint8_t *d)
{
    if (j >= out) {
        memset(d, 1, (size_t)in);
    } else if (pk) {
        bg__tmat_row_digits(pk, j, d);
    } else {
        const int8_t *c = codes + j * in;
        for (int64_t i = 0; i < in; i++) d[i] = (uint8_t)(c[i] + 1);
    }
}

/* The indices of tile g: ix[i * GROUPS + q] for column i and group q. dig holds 4 rows of
 * digits and GROUPS rows of one group's indices. */
static void tile_index(const int8_t *codes, const bg_tmat *pk, int64_t out, int64_t in, int64_t g,
                       uint8_t *dig, uint8_t *ix)
{
    uint8_t *grp = dig + GROUP * in;
    for (int q = 0; q < GROUPS; q++) {
        for (int k = 0; k < GROUP; k++)
            row_digits(codes, pk, out, in, g * TILE + q * GROUP + k, dig + k * in);
        const uint8_t *d0 = dig, *d1 = dig + in, *d2 = dig + 2 * in, *d3 = dig + 3 * in;
        uint8_t *gq = grp + q * in;
        for (int64_t i = 0; i < in; i++)
            gq[i] = (uint8_t)(d0[i] + 3 * d1[i] + 9 * d2[i] + 27 * d3[i]);
    }
    for (int64_t i = 0; i < in; i++) { /* one 8-byte store per column */
        uint64_t v = 0;
        for (int q = 0; q < GROUPS; q++) v |= (uint64_t)grp[q * in + i] << (8 * q);
        memcpy(ix + i * GROUPS, &v, sizeof v);
    }
}

/* The tables of one tile: for group q (rows i0 + 4q .. i0 + 4q + 3 of the transposed input
 * src, each a vector of W tokens from t0), tab[(q * COMB + e) * W + lane] = the sum over k of
 * (digit k of e - 1) times row k, digit 0 the least significant, built level by level
 * (cur - a, cur, cur + a; the zero digit adds nothing) and the last level stored as made. For
 * fp32 x 8 tokens (dX) and int16 x 16 tokens (forward). */
#define DEFINE_TABLES(name, V, T, W)                                                         \
    BG_V8_INLINE void name(const T *src, int64_t stride, int64_t i0, int64_t t0, T *tab)      \
    {                                                                                         \
        for (int q = 0; q < GROUPS; q++) {                                                    \
            const T *a = src + (i0 + q * GROUP) * stride + t0;                                \
            V r[GROUP], l[27];                                                                \
            for (int k = 0; k < GROUP; k++) memcpy(&r[k], a + k * stride, sizeof r[k]);       \
            l[0] = -r[0];                                                                     \
            l[1] = (V){ 0 };                                                                  \
            l[2] = r[0];                                                                      \
            for (int k = 1, n = 3; k < GROUP - 1; k++, n *= 3)                                \
                for (int x = 0; x < n; x++) {                                                 \
                    l[x + 2 * n] = l[x] + r[k];                                               \
                    l[x + n] = l[x];                                                          \
                    l[x] = l[x] - r[k];                                                       \
                }                                                                             \
            T *t = tab + q * COMB * W;                                                        \
            for (int x = 0; x < 27; x++) {                                                    \
                V lo = l[x] - r[3], hi = l[x] + r[3];                                         \
                memcpy(t + x * W, &lo, sizeof lo);                                            \
                memcpy(t + (x + 27) * W, &l[x], sizeof lo);                                   \
                memcpy(t + (x + 54) * W, &hi, sizeof hi);                                     \
            }                                                                                 \
        }                                                                                     \
    }

DEFINE_TABLES(build_tables, bg_v8f, float, TOK)

/* Token block t0 .. t0 + 7 (nt real tokens) over every tile, into dx. */
BG_CLONES static void token_block(const uint8_t *idx, const float *dyt, int64_t r8, int64_t ntile,
                                  int64_t in, int64_t t0, int nt, bool accumulate, float *dx,
                                  float *tab, float *acc)
{
    if (ntile == 0) memset(acc, 0, (size_t)in * TOK * sizeof(float));
    for (int64_t g = 0; g < ntile; g++) {
        build_tables(dyt, r8, g * TILE, t0, tab);
        const uint8_t *ix = idx + g * in * GROUPS;
        for (int64_t i = 0; i < in; i++) {
            uint64_t v;
            memcpy(&v, ix + i * GROUPS, sizeof v);
#define PICK(q) bg_v8f_load(tab + ((q) * COMB + (int64_t)((v >> (8 * (q))) & 0xff)) * TOK)
            bg_v8f s = ((PICK(0) + PICK(1)) + (PICK(2) + PICK(3))) +
                       ((PICK(4) + PICK(5)) + (PICK(6) + PICK(7)));
#undef PICK
            if (g > 0) s = bg_v8f_load(acc + i * TOK) + s;
            bg_v8f_store(acc + i * TOK, s);
        }
    }
    for (int r = 0; r < nt; r++) {
        float *d = dx + (t0 + r) * in;
        if (accumulate)
            for (int64_t i = 0; i < in; i++) d[i] += acc[i * TOK + r];
        else
            for (int64_t i = 0; i < in; i++) d[i] = acc[i * TOK + r];
    }
}

void bg__tlut_dx(const int8_t *codes, const bg_tmat *pk, const float *dy, const float *s_w,
                 bool per_row, int64_t rows, int64_t out, int64_t in, bool accumulate, float *dx,
                 void *scratch)
{
    if (rows <= 0 || in <= 0) return;
    layout l = plan(rows, out, in);
    uint8_t *base = scratch;
    float *dyt = (float *)base;
    uint8_t *idx = base + l.dyt, *thr = idx + l.idx;
    int64_t r8 = round_up(rows, TOK), op = round_up(out, TILE), ntile = op / TILE;
    int64_t nblk = r8 / TOK;
#pragma omp parallel if (rows * out * in > PAR_MIN)
    {
        uint8_t *mine = thr + (size_t)omp_get_thread_num() * l.thread;
        float *tab = (float *)mine, *acc = (float *)(mine + l.tab);
        uint8_t *dig = mine + l.tab + l.acc;
        /* dY^T * s_w in strips of 16 rows of T: each token's 16 values are one cache line */
#pragma omp for schedule(static)
        for (int64_t j0 = 0; j0 < op; j0 += 16) {
            int64_t nj = out - j0 < 16 ? (out - j0 > 0 ? out - j0 : 0) : 16;
            float s[16];
            for (int64_t jj = 0; jj < nj; jj++) s[jj] = s_w[per_row ? j0 + jj : 0];
            for (int64_t t = 0; t < rows; t++)
                for (int64_t jj = 0; jj < nj; jj++)
                    dyt[(j0 + jj) * r8 + t] = dy[t * out + j0 + jj] * s[jj];
            for (int64_t jj = 0; jj < 16; jj++) {
                float *d = dyt + (j0 + jj) * r8;
                int64_t from = jj < nj ? rows : 0;
                memset(d + from, 0, (size_t)(r8 - from) * sizeof(float));
            }
        }
#pragma omp for schedule(static)
        for (int64_t g = 0; g < ntile; g++)
            tile_index(codes, pk, out, in, g, dig, idx + g * in * GROUPS);
#pragma omp for schedule(static)
        for (int64_t b = 0; b < nblk; b++) {
            int64_t t0 = b * TOK;
            int nt = rows - t0 < TOK ? (int)(rows - t0) : TOK;
            token_block(idx, dyt, r8, ntile, in, t0, nt, accumulate, dx, tab, acc);
        }
    }
}

/* ---- the forward: levels times T on int16 tables ---- */

typedef int16_t v16s __attribute__((vector_size(32)));
typedef int16_t v8s __attribute__((vector_size(16)));
typedef int32_t v8i __attribute__((vector_size(32)));

#define FTOK 16 /* tokens per int16 vector */
/* Tiles summed in int16 before widening: a table entry is at most 4 * 128 in magnitude, a
 * tile's eight at most 4096, seven tiles 28672 < 32767. */
#define WIDEN_EVERY 7

BG_V8_INLINE v16s v16s_load(const int16_t *p)
{
    v16s v;
    memcpy(&v, p, sizeof v);
    return v;
}

BG_V8_INLINE void v16s_store(int16_t *p, v16s v) { memcpy(p, &v, sizeof v); }

BG_V8_INLINE v8i v8i_load(const int32_t *p)
{
    v8i v;
    memcpy(&v, p, sizeof v);
    return v;
}

BG_V8_INLINE void v8i_store(int32_t *p, v8i v) { memcpy(p, &v, sizeof v); }

typedef struct flayout {
    size_t xt, idx;                     /* shared: levels^T as int16; the indices */
    size_t tab, acc16, acc32, dig, thread; /* per thread */
} flayout;

static flayout fplan(int64_t rows, int64_t out, int64_t in)
{
    flayout l;
    int64_t r16 = round_up(rows, FTOK), ip = round_up(in, TILE);
    l.xt = align64((size_t)(ip * r16) * sizeof(int16_t));
    l.idx = align64((size_t)(ip / GROUP * out));
    l.tab = align64((size_t)GROUPS * COMB * FTOK * sizeof(int16_t));
    l.acc16 = align64((size_t)(out * FTOK) * sizeof(int16_t));
    l.acc32 = align64((size_t)(out * FTOK) * sizeof(int32_t));
    l.dig = align64((size_t)ip);
    l.thread = l.tab + l.acc16 + l.acc32 + l.dig;
    return l;
}

size_t bg__tlut_fwd_scratch(int64_t rows, int64_t out, int64_t in, int nthreads)
{
    flayout l = fplan(rows, out, in);
    return l.xt + l.idx + (size_t)(nthreads > 0 ? nthreads : 1) * l.thread;
}

DEFINE_TABLES(build_tables16, v16s, int16_t, FTOK)

/* Tokens t0 .. t0 + 15 (nt real) against every output row: integer dots into acc32
 * [out][16], then the scaled outputs. */
BG_CLONES static void fwd_block(const uint8_t *idx, const int16_t *xt, int64_t r16, int64_t ntile,
                                int64_t out, int64_t t0, int nt, const float *s_x,
                                const float *s_w, bool per_row, float *y, int16_t *tab,
                                int16_t *acc16, int32_t *acc32)
{
    if (ntile == 0) memset(acc32, 0, (size_t)(out * FTOK) * sizeof(int32_t));
    for (int64_t g = 0; g < ntile; g++) {
        build_tables16(xt, r16, g * TILE, t0, tab);
        const uint8_t *ix = idx + g * out * GROUPS;
        bool first = g % WIDEN_EVERY == 0, first32 = g < WIDEN_EVERY;
        bool flush = g % WIDEN_EVERY == WIDEN_EVERY - 1 || g == ntile - 1;
        for (int64_t o = 0; o < out; o++) {
            uint64_t v;
            memcpy(&v, ix + o * GROUPS, sizeof v);
#define PICK(q) v16s_load(tab + ((q) * COMB + (int64_t)((v >> (8 * (q))) & 0xff)) * FTOK)
            v16s s = ((PICK(0) + PICK(1)) + (PICK(2) + PICK(3))) +
                     ((PICK(4) + PICK(5)) + (PICK(6) + PICK(7)));
#undef PICK
            if (!first) s = v16s_load(acc16 + o * FTOK) + s;
            if (!flush) {
                v16s_store(acc16 + o * FTOK, s);
                continue;
            }
            v8s lo8, hi8;
            memcpy(&lo8, &s, sizeof lo8);
            memcpy(&hi8, (char *)&s + sizeof lo8, sizeof hi8);
            v8i lo = __builtin_convertvector(lo8, v8i), hi = __builtin_convertvector(hi8, v8i);
            if (!first32) {
                lo += v8i_load(acc32 + o * FTOK);
                hi += v8i_load(acc32 + o * FTOK + 8);
            }
            v8i_store(acc32 + o * FTOK, lo);
            v8i_store(acc32 + o * FTOK + 8, hi);
        }
    }
    for (int r = 0; r < nt; r++) {
        float *yr = y + (t0 + r) * out, sx = s_x[t0 + r];
        for (int64_t o = 0; o < out; o++)
            yr[o] = (float)acc32[o * FTOK + r] * s_w[per_row ? o : 0] / sx;
    }
}

void bg__tlut_fwd(const int8_t *codes, const bg_tmat *pk, const int8_t *levels, const float *s_x,
                  const float *s_w, bool per_row, int64_t rows, int64_t out, int64_t in, float *y,
                  void *scratch)
{
    if (rows <= 0 || out <= 0) return;
    flayout l = fplan(rows, out, in);
    uint8_t *base = scratch;
    int16_t *xt = (int16_t *)base;
    uint8_t *idx = base + l.xt, *thr = idx + l.idx;
    int64_t r16 = round_up(rows, FTOK), ip = round_up(in, TILE), ntile = ip / TILE;
    int64_t nblk = r16 / FTOK;
#pragma omp parallel if (rows * out * in > PAR_MIN)
    {
        uint8_t *mine = thr + (size_t)omp_get_thread_num() * l.thread;
        int16_t *tab = (int16_t *)mine, *acc16 = (int16_t *)(mine + l.tab);
        int32_t *acc32 = (int32_t *)(mine + l.tab + l.acc16);
        uint8_t *dig = mine + l.tab + l.acc16 + l.acc32;
        /* levels^T in strips of 16 input columns, zero past the rows and columns */
#pragma omp for schedule(static)
        for (int64_t i0 = 0; i0 < ip; i0 += 16) {
            int64_t ni = in - i0 < 16 ? (in - i0 > 0 ? in - i0 : 0) : 16;
            for (int64_t t = 0; t < rows; t++)
                for (int64_t ii = 0; ii < ni; ii++)
                    xt[(i0 + ii) * r16 + t] = levels[t * in + i0 + ii];
            for (int64_t ii = 0; ii < 16; ii++) {
                int16_t *d = xt + (i0 + ii) * r16;
                int64_t from = ii < ni ? rows : 0;
                memset(d + from, 0, (size_t)(r16 - from) * sizeof(int16_t));
            }
        }
        /* indices: row o's codes four at a time, [tile][o][group] */
#pragma omp for schedule(static)
        for (int64_t o = 0; o < out; o++) {
            row_digits(codes, pk, out, in, o, dig);
            memset(dig + in, 1, (size_t)(ip - in));
            /* four digits as one little-endian word w: the top byte of w * 0x0103091B is
             * d0 + 3 d1 + 9 d2 + 27 d3 (no byte of the product carries: each stays <= 80) */
            for (int64_t g = 0; g < ntile; g++) {
                uint8_t *ix = idx + (g * out + o) * GROUPS;
                for (int q = 0; q < GROUPS; q++) {
                    uint32_t w;
                    memcpy(&w, dig + g * TILE + q * GROUP, sizeof w);
                    ix[q] = (uint8_t)((w * 0x0103091Bu) >> 24);
                }
            }
        }
#pragma omp for schedule(static)
        for (int64_t b = 0; b < nblk; b++) {
            int64_t t0 = b * FTOK;
            int nt = rows - t0 < FTOK ? (int)(rows - t0) : FTOK;
            fwd_block(idx, xt, r16, ntile, out, t0, nt, s_x, s_w, per_row, y, tab, acc16, acc32);
        }
    }
}
