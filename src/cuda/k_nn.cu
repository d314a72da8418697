/* k_nn.cu - kernels of the nn ops: embedding (gather; scatter-add backward with atomics),
 * softmax and log_softmax, fused cross-entropy, mse, fused rmsnorm/layernorm, dropout.
 * One block per row wherever a row is reduced (sums in double, as the CPU's); formulas
 * follow src/autograd/op_nn.c operation for operation.
 *
 * Determinism: everything here is deterministic except the embedding's scatter-add, whose
 * atomicAdd order varies from run to run (the sum is the same up to float rounding). */
#include "cuda/k_common.cuh"

/* ---- ids / targets ----------------------------------------------------------------------- */

/* flags[0] = min position of a value outside [0, V) that is not ignored; flags[1] += count of
 * values that are not ignored. The caller sets flags[0] to all ones and flags[1] to 0. */
__global__ void k_ids_check(const int32_t *ids, int64_t n, int64_t V, int ignore, bool use_ignore,
                            unsigned long long *flags)
{
    unsigned long long counted = 0;
    BG_CU_FOR(i, n)
    {
        int32_t v = ids[i];
        if (use_ignore && v == ignore) continue;
        if (v < 0 || v >= V) atomicMin(&flags[0], (unsigned long long)i);
        else
            counted++;
    }
    if (counted) atomicAdd(&flags[1], counted);
}

extern "C" void bg__cu_ids_check(bg_ctx *ctx, const int32_t *ids, int64_t n, int64_t V,
                                 int ignore_index, bool use_ignore, unsigned long long *flags)
{
    if (n <= 0) return;
    BG_LAUNCH(bg_cu_grid(n), bg_cu_stream(ctx), k_ids_check)
    (ids, n, V, ignore_index, use_ignore, flags);
    bg_cu_check(ctx, "id check");
}

/* ---- embedding -------------------------------------------------------------------------------- */

__global__ void k_embedding(float *y, const float *w, int64_t s0, int64_t s1, const int32_t *ids,
                            int64_t n, int64_t D)
{
    BG_CU_FOR(e, n * D) y[e] = w[(int64_t)ids[e / D] * s0 + (e % D) * s1];
}

extern "C" void bg__cu_embedding(bg_ctx *ctx, float *y, const float *w, int64_t s0, int64_t s1,
                                 const int32_t *ids, int64_t n, int64_t D)
{
    if (n * D <= 0) return;
    BG_LAUNCH(bg_cu_grid(n * D), bg_cu_stream(ctx), k_embedding)(y, w, s0, s1, ids, n, D);
    bg_cu_check(ctx, "embedding");
}

__global__ void k_embedding_grad(float *gw, const float *go, const int32_t *ids, int64_t n,
                                 int64_t D)
{
    BG_CU_FOR(e, n * D) atomicAdd(&gw[(int64_t)ids[e / D] * D + e % D], go[e]);
}

extern "C" void bg__cu_embedding_grad(bg_ctx *ctx, float *gw, const float *go, const int32_t *ids,
                                      int64_t n, int64_t D)
{
    if (n * D <= 0) return;
    BG_LAUNCH(bg_cu_grid(n * D), bg_cu_stream(ctx), k_embedding_grad)(gw, go, ids, n, D);
    bg_cu_check(ctx, "embedding backward");
}

/* ---- softmax and log_softmax ------------------------------------------------------------------- */

__global__ void k_softmax(const float *x, float *y, int64_t rows, int64_t C, bool log_out)
{
    __shared__ double sh[BG_CU_THREADS];
    __shared__ float shf[BG_CU_THREADS];
    BG_CU_FOR_ROWS(r, rows)
    {
        const float *xr = x + r * C;
        float *yr = y + r * C;
        float m = -INFINITY;
        for (int64_t c = threadIdx.x; c < C; c += BG_CU_THREADS) m = fmaxf(m, xr[c]);
        m = bg_cu_block_max(m, shf, false);
        double s = 0.0;
        for (int64_t c = threadIdx.x; c < C; c += BG_CU_THREADS) {
            float e = expf(xr[c] - m);
            if (!log_out) yr[c] = e;
            s += e;
        }
        s = bg_cu_block_sum(s, sh);
        if (log_out) {
            float ls = (float)log(s);
            for (int64_t c = threadIdx.x; c < C; c += BG_CU_THREADS) yr[c] = (xr[c] - m) - ls;
        } else {
            float inv = (float)(1.0 / s);
            for (int64_t c = threadIdx.x; c < C; c += BG_CU_THREADS) yr[c] *= inv;
        }
    }
}

extern "C" void bg__cu_softmax(bg_ctx *ctx, const float *x, float *y, int64_t rows, int64_t C,
                               bool log_out)
{
    if (rows <= 0 || C <= 0) return;
    BG_LAUNCH(bg_cu_rows_grid(rows), bg_cu_stream(ctx), k_softmax)(x, y, rows, C, log_out);
    bg_cu_check(ctx, "softmax");
}

/* softmax: dx = y (dy - sum(dy y)); log_softmax: dx = dy - exp(y) sum(dy). */
__global__ void k_softmax_grad(float *gx, const float *gy, const float *y, int64_t rows, int64_t C,
                               bool log_out)
{
    __shared__ double sh[BG_CU_THREADS];
    BG_CU_FOR_ROWS(r, rows)
    {
        const float *yr = y + r * C, *gr = gy + r * C;
        float *xr = gx + r * C;
        double s = 0.0;
        for (int64_t c = threadIdx.x; c < C; c += BG_CU_THREADS)
            s += log_out ? (double)gr[c] : (double)gr[c] * yr[c];
        s = bg_cu_block_sum(s, sh);
        for (int64_t c = threadIdx.x; c < C; c += BG_CU_THREADS)
            xr[c] += log_out ? gr[c] - expf(yr[c]) * (float)s : yr[c] * (gr[c] - (float)s);
    }
}

extern "C" void bg__cu_softmax_grad(bg_ctx *ctx, float *gx, const float *gy, const float *y,
                                    int64_t rows, int64_t C, bool log_out)
{
    if (rows <= 0 || C <= 0) return;
    BG_LAUNCH(bg_cu_rows_grid(rows), bg_cu_stream(ctx), k_softmax_grad)
    (gx, gy, y, rows, C, log_out);
    bg_cu_check(ctx, "softmax backward");
}

/* ---- cross-entropy ------------------------------------------------------------------------------ */

/* Per row: log-sum-exp into lse[] and the (label-smoothed) loss into loss[] (0 if ignored). */
__global__ void k_ce_rows(const float *x, const int32_t *t, int64_t rows, int64_t V, int ignore,
                          float eps, float *lse, double *loss)
{
    __shared__ double sh[BG_CU_THREADS];
    __shared__ float shf[BG_CU_THREADS];
    BG_CU_FOR_ROWS(r, rows)
    {
        const float *xr = x + r * V;
        float m = -INFINITY;
        for (int64_t j = threadIdx.x; j < V; j += BG_CU_THREADS) m = fmaxf(m, xr[j]);
        m = bg_cu_block_max(m, shf, false);
        double s = 0.0, sx = 0.0;
        for (int64_t j = threadIdx.x; j < V; j += BG_CU_THREADS) {
            s += expf(xr[j] - m);
            sx += xr[j];
        }
        s = bg_cu_block_sum(s, sh);
        sx = bg_cu_block_sum(sx, sh);
        if (threadIdx.x == 0) {
            double l = (double)m + log(s);
            lse[r] = (float)l;
            loss[r] = 0.0;
            if (t[r] != ignore)
                loss[r] = -(1.0 - eps) * (xr[t[r]] - l) - (eps / (double)V) * (sx - (double)V * l);
        }
    }
}

__global__ void k_ce_total(const double *loss, int64_t rows, int64_t count, float *out)
{
    __shared__ double sh[BG_CU_THREADS];
    double s = 0.0;
    for (int64_t r = threadIdx.x; r < rows; r += BG_CU_THREADS) s += loss[r];
    s = bg_cu_block_sum(s, sh);
    if (threadIdx.x == 0) out[0] = count ? (float)(s / (double)count) : 0.0f;
}

extern "C" void bg__cu_ce_forward(bg_ctx *ctx, const float *x, const int32_t *t, int64_t rows,
                                  int64_t V, int ignore, float eps, float *lse, double *loss_rows,
                                  float *out, int64_t count)
{
    cudaStream_t st = bg_cu_stream(ctx);
    if (rows > 0)
        BG_LAUNCH(bg_cu_rows_grid(rows), st, k_ce_rows)(x, t, rows, V, ignore, eps, lse, loss_rows);
    BG_LAUNCH(1, st, k_ce_total)(loss_rows, rows, count, out);
    bg_cu_check(ctx, "cross_entropy");
}

/* dlogits = (softmax - ((1 - eps) onehot + eps / V)) gout / count. */
__global__ void k_ce_grad(float *gx, const float *go, const float *x, const int32_t *t,
                          const float *lse, int64_t rows, int64_t V, int ignore, float eps,
                          int64_t count)
{
    float k = go[0] / (float)count, smooth = eps / (float)V, hit = 1.0f - eps;
    BG_CU_FOR(e, rows * V)
    {
        int64_t r = e / V, j = e % V;
        int32_t tr = t[r];
        if (tr == ignore) continue;
        float g = gx[e] + (expf(x[e] - lse[r]) - smooth) * k;
        if (j == tr) g -= hit * k;
        gx[e] = g;
    }
}

extern "C" void bg__cu_ce_backward(bg_ctx *ctx, float *gx, const float *go, const float *x,
                                   const int32_t *t, const float *lse, int64_t rows, int64_t V,
                                   int ignore, float eps, int64_t count)
{
    if (rows * V <= 0 || count == 0) return;
    BG_LAUNCH(bg_cu_grid(rows * V), bg_cu_stream(ctx), k_ce_grad)
    (gx, go, x, t, lse, rows, V, ignore, eps, count);
    bg_cu_check(ctx, "cross_entropy backward");
}

/* ---- mse ------------------------------------------------------------------------------------------ */

__global__ void k_mse(const float *a, const float *b, int64_t n, float *out)
{
    __shared__ double sh[BG_CU_THREADS];
    double s = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += BG_CU_THREADS) {
        double d = (double)a[i] - (double)b[i];
        s += d * d;
    }
    s = bg_cu_block_sum(s, sh);
    if (threadIdx.x == 0) out[0] = (float)(s / (double)n);
}

extern "C" void bg__cu_mse(bg_ctx *ctx, const float *a, const float *b, int64_t n, float *out)
{
    BG_LAUNCH(1, bg_cu_stream(ctx), k_mse)(a, b, n, out);
    bg_cu_check(ctx, "mse");
}

__global__ void k_mse_grad(float *g, const float *go, const float *a, const float *b, int64_t n,
                           bool negate)
{
    float k = 2.0f * go[0] / (float)n, ks = negate ? -k : k;
    BG_CU_FOR(i, n) g[i] += ks * (a[i] - b[i]);
}

extern "C" void bg__cu_mse_grad(bg_ctx *ctx, float *g, const float *go, const float *a,
                                const float *b, int64_t n, bool negate)
{
    if (n <= 0) return;
    BG_LAUNCH(bg_cu_grid(n), bg_cu_stream(ctx), k_mse_grad)(g, go, a, b, n, negate);
    bg_cu_check(ctx, "mse backward");
}

/* ---- rmsnorm and layernorm -------------------------------------------------------------------- */

__global__ void k_norm(const float *x, const float *w, const float *b, int64_t rows, int64_t C,
                       float eps, float *mean, float *rstd, float *y)
{
    __shared__ double sh[BG_CU_THREADS];
    BG_CU_FOR_ROWS(r, rows)
    {
        const float *xr = x + r * C;
        double mu = 0.0;
        if (mean) {
            double s = 0.0;
            for (int64_t c = threadIdx.x; c < C; c += BG_CU_THREADS) s += xr[c];
            s = bg_cu_block_sum(s, sh);
            mu = C ? s / (double)C : 0.0;
            if (threadIdx.x == 0) mean[r] = (float)mu;
        }
        double ss = 0.0;
        for (int64_t c = threadIdx.x; c < C; c += BG_CU_THREADS)
            ss += ((double)xr[c] - mu) * ((double)xr[c] - mu);
        ss = bg_cu_block_sum(ss, sh);
        float rs = (float)(1.0 / sqrt((C ? ss / (double)C : 0.0) + (double)eps));
        float m = (float)mu;
        if (threadIdx.x == 0) rstd[r] = rs;
        for (int64_t c = threadIdx.x; c < C; c += BG_CU_THREADS) {
            float v = (xr[c] - m) * rs;
            if (w) v *= w[c];
            if (b) v += b[c];
            y[r * C + c] = v;
        }
    }
}

extern "C" void bg__cu_norm(bg_ctx *ctx, const float *x, const float *w, const float *b,
                            int64_t rows, int64_t C, float eps, float *mean, float *rstd, float *y)
{
    if (rows <= 0) return;
    BG_LAUNCH(bg_cu_rows_grid(rows), bg_cu_stream(ctx), k_norm)
    (x, w, b, rows, C, eps, mean, rstd, y);
    bg_cu_check(ctx, mean ? "layernorm" : "rmsnorm");
}

/* dx = rstd (g - mean(g) - xhat mean(g xhat)) with g = dy w; rmsnorm drops mean(g). */
__global__ void k_norm_dx(const float *x, const float *w, const float *mean, const float *rstd,
                          const float *gy, int64_t rows, int64_t C, float *gx)
{
    __shared__ double sh[BG_CU_THREADS];
    BG_CU_FOR_ROWS(r, rows)
    {
        const float *xr = x + r * C, *gr = gy + r * C;
        float m = mean ? mean[r] : 0.0f, rs = rstd[r];
        double sg = 0.0, sgx = 0.0;
        for (int64_t c = threadIdx.x; c < C; c += BG_CU_THREADS) {
            float g = w ? gr[c] * w[c] : gr[c];
            sg += g;
            sgx += (double)g * ((xr[c] - m) * rs);
        }
        sg = bg_cu_block_sum(sg, sh);
        sgx = bg_cu_block_sum(sgx, sh);
        float mg = mean ? (float)(sg / (double)C) : 0.0f, mgx = (float)(sgx / (double)C);
        for (int64_t c = threadIdx.x; c < C; c += BG_CU_THREADS) {
            float g = w ? gr[c] * w[c] : gr[c];
            gx[r * C + c] += rs * (g - mg - (xr[c] - m) * rs * mgx);
        }
    }
}

extern "C" void bg__cu_norm_dx(bg_ctx *ctx, const float *x, const float *w, const float *mean,
                               const float *rstd, const float *gy, int64_t rows, int64_t C,
                               float *gx)
{
    if (rows <= 0 || C <= 0) return;
    BG_LAUNCH(bg_cu_rows_grid(rows), bg_cu_stream(ctx), k_norm_dx)
    (x, w, mean, rstd, gy, rows, C, gx);
    bg_cu_check(ctx, "norm backward");
}

/* dw = sum_rows dy xhat, db = sum_rows dy: the rows are cut into chunks as on the CPU; block
 * (tile, chunk) sums its rows for 256 columns, then one thread per column adds the chunks in
 * order, so the result does not depend on scheduling. */
__global__ void k_norm_dparams_partial(const float *x, const float *mean, const float *rstd,
                                       const float *gy, int64_t rows, int64_t C, int64_t n_chunks,
                                       int64_t per, double *pw, double *pb)
{
    int64_t tiles = (C + BG_CU_THREADS - 1) / BG_CU_THREADS;
    for (int64_t blk = blockIdx.x; blk < tiles * n_chunks; blk += gridDim.x) {
        int64_t chunk = blk / tiles, c = (blk % tiles) * BG_CU_THREADS + threadIdx.x;
        if (c >= C) continue;
        int64_t r1 = (chunk + 1) * per < rows ? (chunk + 1) * per : rows;
        double aw = 0.0, ab = 0.0;
        for (int64_t r = chunk * per; r < r1; r++) {
            float m = mean ? mean[r] : 0.0f, g = gy[r * C + c];
            aw += (double)(g * ((x[r * C + c] - m) * rstd[r]));
            ab += (double)g;
        }
        pw[chunk * C + c] = aw;
        pb[chunk * C + c] = ab;
    }
}

__global__ void k_norm_dparams_finish(const double *pw, const double *pb, int64_t n_chunks,
                                      int64_t C, float *gw, float *gb)
{
    BG_CU_FOR(c, C)
    {
        double sw = 0.0, sb = 0.0;
        for (int64_t k = 0; k < n_chunks; k++) {
            sw += pw[k * C + c];
            sb += pb[k * C + c];
        }
        if (gw) gw[c] += (float)sw;
        if (gb) gb[c] += (float)sb;
    }
}

extern "C" void bg__cu_norm_dparams(bg_ctx *ctx, const float *x, const float *mean,
                                    const float *rstd, const float *gy, int64_t rows, int64_t C,
                                    float *gw, float *gb, double *partials)
{
    int64_t n_chunks = rows < BG_CU_ROW_CHUNKS ? rows : BG_CU_ROW_CHUNKS;
    if (n_chunks == 0 || C == 0) return;
    int64_t per = (rows + n_chunks - 1) / n_chunks;
    int64_t tiles = (C + BG_CU_THREADS - 1) / BG_CU_THREADS;
    double *pw = partials, *pb = partials + n_chunks * C;
    cudaStream_t st = bg_cu_stream(ctx);
    BG_LAUNCH(bg_cu_rows_grid(tiles * n_chunks), st, k_norm_dparams_partial)
    (x, mean, rstd, gy, rows, C, n_chunks, per, pw, pb);
    BG_LAUNCH(bg_cu_grid(C), st, k_norm_dparams_finish)(pw, pb, n_chunks, C, gw, gb);
    bg_cu_check(ctx, "norm parameter gradients");
}

/* ---- dropout -------------------------------------------------------------------------------------- */

/* The mask is a counter-based hash of (seed, i): the same on every run for a seed, drawn
 * in parallel (so it differs from the CPU's sequential mask for the same seed). */
__device__ static inline float dropout_uniform(uint64_t seed, int64_t i)
{
    uint64_t z = seed + (uint64_t)(i + 1) * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (float)(z >> 40) / 16777216.0f;
}

__global__ void k_dropout(const float *x, float *y, unsigned char *keep, int64_t n, float p,
                          float scale, uint64_t seed)
{
    BG_CU_FOR(i, n)
    {
        unsigned char k = dropout_uniform(seed, i) >= p;
        keep[i] = k;
        y[i] = k ? x[i] * scale : 0.0f;
    }
}

extern "C" void bg__cu_dropout(bg_ctx *ctx, const float *x, float *y, unsigned char *keep,
                               int64_t n, float p, float scale, uint64_t seed)
{
    if (n <= 0) return;
    BG_LAUNCH(bg_cu_grid(n), bg_cu_stream(ctx), k_dropout)(x, y, keep, n, p, scale, seed);
    bg_cu_check(ctx, "dropout");
}

__global__ void k_dropout_grad(float *gx, const float *gy, const unsigned char *keep, int64_t n,
                               float scale)
{
    BG_CU_FOR(i, n)
    if (keep[i]) gx[i] += gy[i] * scale;
}

extern "C" void bg__cu_dropout_grad(bg_ctx *ctx, float *gx, const float *gy,
                                    const unsigned char *keep, int64_t n, float scale)
{
    if (n <= 0) return;
    BG_LAUNCH(bg_cu_grid(n), bg_cu_stream(ctx), k_dropout_grad)(gx, gy, keep, n, scale);
    bg_cu_check(ctx, "dropout backward");
}
