/* k_quant.cu - BitNet b1.58 quantizer kernels: absmean ternary weights (per tensor, row or
 * group), absmax integer activations per row, and the rescaling steps of the fused
 * BitLinear. Every formula is a call into src/quant/bitnet_math.h (BG_HD), the functions
 * the CPU tests cover; only the sums are organised for the GPU (in double, as there). */
#include "cuda/k_common.cuh"

/* ---- absmean scales ----------------------------------------------------------------------- */

/* Per tensor, stage 1: block b sums |w| over its grid-stride share into partials[b]. */
__global__ void k_absmean_partials(const float *w, int64_t n, double *partials)
{
    __shared__ double sh[BG_CU_THREADS];
    double s = 0.0;
    for (int64_t i = (int64_t)blockIdx.x * BG_CU_THREADS + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * BG_CU_THREADS)
        s += fabs((double)w[i]);
    s = bg_cu_block_sum(s, sh);
    if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

/* Stage 2: one block adds the partials and applies the shared formula. */
__global__ void k_absmean_finish(const double *partials, int64_t n_parts, int64_t n, float *scale)
{
    __shared__ double sh[BG_CU_THREADS];
    double s = 0.0;
    for (int64_t i = threadIdx.x; i < n_parts; i += BG_CU_THREADS) s += partials[i];
    s = bg_cu_block_sum(s, sh);
    if (threadIdx.x == 0) scale[0] = bg_absmean_from_sum(s, n);
}

/* Per row or group: block g owns scale group g (len weights from off). */
__global__ void k_absmean_groups(const float *w, int64_t n_groups, int64_t per_row, int64_t cols,
                                 int64_t gl, float *scales)
{
    __shared__ double sh[BG_CU_THREADS];
    BG_CU_FOR_ROWS(g, n_groups)
    {
        int64_t r = g / per_row, gi = g % per_row;
        int64_t off = r * cols + gi * gl, len = cols - gi * gl < gl ? cols - gi * gl : gl;
        double s = 0.0;
        for (int64_t i = threadIdx.x; i < len; i += BG_CU_THREADS) s += fabs((double)w[off + i]);
        s = bg_cu_block_sum(s, sh);
        if (threadIdx.x == 0) scales[g] = bg_absmean_from_sum(s, len);
    }
}

extern "C" void bg__cu_absmean(bg_ctx *ctx, const float *w, int64_t rows, int64_t cols, int mode,
                               int64_t group, float *scales, double *partials)
{
    cudaStream_t st = bg_cu_stream(ctx);
    int64_t n = rows * cols;
    if (mode == 0) {
        /* The number of partials depends on n alone, so the sum's order does too. */
        int64_t parts = (n + 4095) / 4096;
        parts = parts < 1 ? 1 : (parts > BG_CU_MAX_PARTIALS ? BG_CU_MAX_PARTIALS : parts);
        BG_LAUNCH((unsigned)parts, st, k_absmean_partials)(w, n, partials);
        BG_LAUNCH(1, st, k_absmean_finish)(partials, parts, n, scales);
    } else {
        int64_t gl = mode == 2 ? group : cols;
        int64_t per_row = cols > 0 ? (cols + gl - 1) / gl : 0;
        if (rows * per_row > 0) BG_LAUNCH(bg_cu_rows_grid(rows * per_row), st, k_absmean_groups)
        (w, rows * per_row, per_row, cols, gl, scales);
    }
    bg_cu_check(ctx, "absmean scale");
}

/* ---- ternary codes and the weight STE ------------------------------------------------------ */

__global__ void k_ternary(const float *w, const float *scales, int64_t n, int64_t cols, int mode,
                          int64_t gl, int64_t per_row, float lambda, float *codes, float *y)
{
    BG_CU_FOR(i, n)
    {
        int64_t r = i / cols, c = i % cols;
        float s = scales[mode == 0 ? 0 : r * per_row + c / gl];
        int8_t code = bg_ternary_code(w[i], s);
        if (codes) codes[i] = (float)code;
        if (y) y[i] = bg_ste_blend(w[i], (float)code * s, lambda);
    }
}

extern "C" void bg__cu_ternary(bg_ctx *ctx, const float *w, const float *scales, int64_t rows,
                               int64_t cols, int mode, int64_t group, float lambda, float *codes,
                               float *y)
{
    int64_t n = rows * cols;
    if (n <= 0) return;
    int64_t gl = mode == 2 ? group : cols, per_row = (cols + gl - 1) / gl;
    BG_LAUNCH(bg_cu_grid(n), bg_cu_stream(ctx), k_ternary)
    (w, scales, n, cols, mode, gl, per_row, lambda, codes, y);
    bg_cu_check(ctx, "ternary quantization");
}

/* ---- activations ---------------------------------------------------------------------------- */

/* One block per row: absmax (as bg_absmax: NaN ignored), then every element's level. */
__global__ void k_act_quant(const float *x, int64_t rows, int64_t cols, int bits, float lambda,
                            bool levels, float *out, float *s_x)
{
    __shared__ float sh[BG_CU_THREADS];
    BG_CU_FOR_ROWS(r, rows)
    {
        const float *xr = x + r * cols;
        float m = 0.0f;
        for (int64_t i = threadIdx.x; i < cols; i += BG_CU_THREADS) m = fmaxf(m, fabsf(xr[i]));
        m = bg_cu_block_max(m, sh, false);
        float s = bg_absmax_scale(m, bits);
        if (s_x && threadIdx.x == 0) s_x[r] = s;
        for (int64_t i = threadIdx.x; i < cols; i += BG_CU_THREADS) {
            float lv = (float)bg_act_level(xr[i], s, bits);
            out[r * cols + i] = levels ? lv : bg_ste_blend(xr[i], lv / s, lambda);
        }
    }
}

extern "C" void bg__cu_act_quant(bg_ctx *ctx, const float *x, int64_t rows, int64_t cols, int bits,
                                 float lambda, bool levels, float *out, float *s_x)
{
    if (rows <= 0 || cols <= 0) return;
    BG_LAUNCH(bg_cu_rows_grid(rows), bg_cu_stream(ctx), k_act_quant)
    (x, rows, cols, bits, lambda, levels, out, s_x);
    bg_cu_check(ctx, "activation quantization");
}

/* ---- BitLinear rescaling --------------------------------------------------------------------- */

__global__ void k_bitlinear_scale(float *y, int64_t rows, int64_t out, const float *s_w,
                                  bool per_row, const float *s_x)
{
    BG_CU_FOR(i, rows * out)
    {
        int64_t r = i / out, j = i % out;
        y[i] = (y[i] * s_w[per_row ? j : 0]) / s_x[r];
    }
}

extern "C" void bg__cu_bitlinear_scale(bg_ctx *ctx, float *y, int64_t rows, int64_t out,
                                       const float *s_w, bool per_row, const float *s_x)
{
    if (rows * out <= 0) return;
    BG_LAUNCH(bg_cu_grid(rows * out), bg_cu_stream(ctx), k_bitlinear_scale)
    (y, rows, out, s_w, per_row, s_x);
    bg_cu_check(ctx, "bitlinear scale");
}

__global__ void k_rescale_rows(float *dst, const float *src, const float *sc, int64_t rows,
                               int64_t cols, bool divide, bool per_row)
{
    BG_CU_FOR(i, rows * cols)
    {
        int64_t r = i / cols;
        dst[i] = divide ? src[i] / sc[r] : src[i] * sc[per_row ? r : 0];
    }
}

extern "C" void bg__cu_rescale_rows(bg_ctx *ctx, float *dst, const float *src, const float *sc,
                                    int64_t rows, int64_t cols, bool divide, bool per_row)
{
    if (rows * cols <= 0) return;
    BG_LAUNCH(bg_cu_grid(rows * cols), bg_cu_stream(ctx), k_rescale_rows)
    (dst, src, sc, rows, cols, divide, per_row);
    bg_cu_check(ctx, "rescale");
}
