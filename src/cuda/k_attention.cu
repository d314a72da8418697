/* k_attention.cu - kernels of rotary position embedding (NEOX pairing, as llama.cpp) and of
 * causal attention's row softmax and its gradient. The attention products themselves are
 * strided-batched cuBLAS GEMMs issued from src/cuda/ops_attention.c. Formulas follow
 * src/autograd/op_attention.c. */
#include "cuda/k_common.cuh"

/* ---- rope ------------------------------------------------------------------------------------ */

/* [T, half] cosines then [T, half] sines of (pos0 + t) base^(-2i/n_rot), computed in double. */
__global__ void k_rope_table(float *tab, int64_t T, int n_rot, double base, int64_t pos0)
{
    int64_t half = n_rot / 2;
    BG_CU_FOR(e, T * half)
    {
        int64_t t = e / half, i = e % half;
        double theta = (double)(pos0 + t) * pow(base, -2.0 * (double)i / n_rot);
        tab[e] = (float)cos(theta);
        tab[T * half + e] = (float)sin(theta);
    }
}

extern "C" void bg__cu_rope_table(bg_ctx *ctx, float *tab, int64_t T, int n_rot, float base,
                                  int64_t pos0)
{
    if (T * (n_rot / 2) <= 0) return;
    BG_LAUNCH(bg_cu_grid(T * (n_rot / 2)), bg_cu_stream(ctx), k_rope_table)
    (tab, T, n_rot, (double)base, pos0);
    bg_cu_check(ctx, "rope table");
}

/* dst = R(sign theta) src (dst += when accumulate), one thread per output element:
 * (x_i, x_{i+half}) -> (x_i cos - x_{i+half} sin, x_i sin + x_{i+half} cos). */
__global__ void k_rope(const float *src, float *dst, const float *tab, int64_t rows, int64_t T,
                       int64_t H, int64_t D, int n_rot, float sign, bool accumulate)
{
    int64_t half = n_rot / 2;
    BG_CU_FOR(e, rows * D)
    {
        int64_t r = e / D, j = e % D, t = (r / H) % T;
        const float *x = src + r * D;
        float v;
        if (j < n_rot) {
            int64_t i = j < half ? j : j - half;
            float c = tab[t * half + i], s = sign * tab[T * half + t * half + i];
            float x0 = x[i], x1 = x[i + half];
            v = j < half ? x0 * c - x1 * s : x0 * s + x1 * c;
        } else {
            v = x[j];
        }
        dst[e] = accumulate ? dst[e] + v : v;
    }
}

extern "C" void bg__cu_rope(bg_ctx *ctx, const float *src, float *dst, const float *tab, int64_t BT,
                            int64_t T, int64_t H, int64_t D, int n_rot, float sign, bool accumulate)
{
    int64_t rows = BT * H;
    if (rows * D <= 0) return;
    BG_LAUNCH(bg_cu_grid(rows * D), bg_cu_stream(ctx), k_rope)
    (src, dst, tab, rows, T, H, D, n_rot, sign, accumulate);
    bg_cu_check(ctx, "rope");
}

/* ---- causal softmax ---------------------------------------------------------------------------- */

__global__ void k_causal_softmax(float *S, int64_t n_rows, int64_t T)
{
    __shared__ double sh[BG_CU_THREADS];
    __shared__ float shf[BG_CU_THREADS];
    BG_CU_FOR_ROWS(r, n_rows)
    {
        int64_t i = r % T;
        float *row = S + r * T;
        float m = -INFINITY;
        for (int64_t j = threadIdx.x; j <= i; j += BG_CU_THREADS) m = fmaxf(m, row[j]);
        m = bg_cu_block_max(m, shf, false);
        double s = 0.0;
        for (int64_t j = threadIdx.x; j <= i; j += BG_CU_THREADS) {
            row[j] = expf(row[j] - m);
            s += row[j];
        }
        s = bg_cu_block_sum(s, sh);
        float inv = (float)(1.0 / s);
        for (int64_t j = threadIdx.x; j < T; j += BG_CU_THREADS)
            row[j] = j <= i ? row[j] * inv : 0.0f;
    }
}

extern "C" void bg__cu_causal_softmax(bg_ctx *ctx, float *S, int64_t n_rows, int64_t T)
{
    if (n_rows <= 0 || T <= 0) return;
    BG_LAUNCH(bg_cu_rows_grid(n_rows), bg_cu_stream(ctx), k_causal_softmax)(S, n_rows, T);
    bg_cu_check(ctx, "attention softmax");
}

/* dS = P (dP - rowsum(dP P)) in place of dP; masked entries become 0. */
__global__ void k_causal_softmax_grad(const float *P, float *dP, int64_t n_rows, int64_t T)
{
    __shared__ double sh[BG_CU_THREADS];
    BG_CU_FOR_ROWS(r, n_rows)
    {
        int64_t i = r % T;
        const float *p = P + r * T;
        float *g = dP + r * T;
        double s = 0.0;
        for (int64_t j = threadIdx.x; j <= i; j += BG_CU_THREADS) s += (double)g[j] * p[j];
        s = bg_cu_block_sum(s, sh);
        for (int64_t j = threadIdx.x; j < T; j += BG_CU_THREADS)
            g[j] = j <= i ? p[j] * (g[j] - (float)s) : 0.0f;
    }
}

extern "C" void bg__cu_causal_softmax_grad(bg_ctx *ctx, const float *P, float *dP, int64_t n_rows,
                                           int64_t T)
{
    if (n_rows <= 0 || T <= 0) return;
    BG_LAUNCH(bg_cu_rows_grid(n_rows), bg_cu_stream(ctx), k_causal_softmax_grad)(P, dP, n_rows, T);
    bg_cu_check(ctx, "attention softmax backward");
}
