/* k_elementwise.cu - kernels of the elementwise ops (binary with broadcasting, unary) and
 * of the reductions (sum, mean, max along an axis), forward and backward. The formulas are
 * those of src/autograd/op_elementwise.c and op_reduce.c, operation for operation. */
#include "cuda/k_common.cuh"

/* ---- binary ------------------------------------------------------------------------------- */

__device__ static inline float binary_fwd(int op, float a, float b)
{
    switch (op) {
    case BG_OP_ADD: return a + b;
    case BG_OP_SUB: return a - b;
    case BG_OP_MUL: return a * b;
    default: return a / b;
    }
}

/* plain: a and b are contiguous in the output's shape (no broadcast): offsets are i. */
__global__ void k_binary(int op, float *out, const float *a, const float *b, bg_cu_bcast bc,
                         bool plain, int64_t n)
{
    BG_CU_FOR(i, n)
    {
        int64_t rem = i, ia = 0, ib = 0;
        if (plain) ia = ib = i;
        for (int d = 3; !plain && d >= 0; d--) {
            int64_t idx = rem % bc.shape[d];
            rem /= bc.shape[d];
            ia += idx * bc.sa[d];
            ib += idx * bc.sb[d];
        }
        out[i] = binary_fwd(op, a[ia], b[ib]);
    }
}

/* Both operands contiguous in the output's own shape (the common case: no broadcast). */
static bool bcast_plain(const bg_cu_bcast &bc)
{
    bg_cu_layout la, lb;
    for (int d = 0; d < 4; d++) {
        la.shape[d] = lb.shape[d] = bc.shape[d];
        la.stride[d] = bc.sa[d];
        lb.stride[d] = bc.sb[d];
    }
    return bg_cu_is_contig(la) && bg_cu_is_contig(lb);
}

extern "C" void bg__cu_binary(bg_ctx *ctx, int op, float *out, const float *a, const float *b,
                              bg_cu_bcast bc)
{
    int64_t n = bc.shape[0] * bc.shape[1] * bc.shape[2] * bc.shape[3];
    if (n <= 0) return;
    BG_LAUNCH(bg_cu_grid(n), bg_cu_stream(ctx), k_binary)(op, out, a, b, bc, bcast_plain(bc), n);
    bg_cu_check(ctx, bg_op_name(op));
}

/* d out / d (side) times go, as the CPU's binary_grad_side adds it. */
__device__ static inline float binary_term(int op, int side, float go, float a, float b)
{
    if (side == 0) {
        switch (op) {
        case BG_OP_ADD:
        case BG_OP_SUB: return go;
        case BG_OP_MUL: return go * b;
        default: return go / b;
        }
    }
    switch (op) {
    case BG_OP_ADD: return go;
    case BG_OP_SUB: return -go;
    case BG_OP_MUL: return go * a;
    default: return -(go * a / (b * b));
    }
}

/* One thread per element j of the side's gradient: it sums, in output order, the terms of
 * every output element that read it (the broadcast dims), so no two threads share a write. */
__global__ void k_binary_grad(int op, int side, float *g, bg_cu_layout tl, const float *go,
                              const float *a, const float *b, bg_cu_bcast bc, bool plain,
                              int64_t nt)
{
    int64_t R = 1;
    for (int d = 0; d < 4; d++)
        if (tl.shape[d] == 1) R *= bc.shape[d];
    BG_CU_FOR(j, nt)
    {
        if (plain) { /* same shapes, contiguous: one term, at j everywhere */
            g[j] += binary_term(op, side, go[j], a[j], b[j]);
            continue;
        }
        int64_t tidx[4], rem = j;
        for (int d = 3; d >= 0; d--) {
            tidx[d] = rem % tl.shape[d];
            rem /= tl.shape[d];
        }
        float acc = 0.0f;
        for (int64_t k = 0; k < R; k++) {
            int64_t o[4], kr = k;
            for (int d = 3; d >= 0; d--) {
                if (tl.shape[d] == 1) {
                    o[d] = kr % bc.shape[d];
                    kr /= bc.shape[d];
                } else {
                    o[d] = tidx[d];
                }
            }
            int64_t io = ((o[0] * bc.shape[1] + o[1]) * bc.shape[2] + o[2]) * bc.shape[3] + o[3];
            int64_t ia = 0, ib = 0;
            for (int d = 0; d < 4; d++) {
                ia += o[d] * bc.sa[d];
                ib += o[d] * bc.sb[d];
            }
            acc += binary_term(op, side, go[io], a[ia], b[ib]);
        }
        g[j] += acc;
    }
}

extern "C" void bg__cu_binary_grad(bg_ctx *ctx, int op, int side, float *g, bg_cu_layout tl,
                                   const float *go, const float *a, const float *b, bg_cu_bcast bc)
{
    int64_t nt = bg__cu_numel(&tl);
    if (nt <= 0) return;
    BG_LAUNCH(bg_cu_grid(nt), bg_cu_stream(ctx), k_binary_grad)
    (op, side, g, tl, go, a, b, bc, bcast_plain(bc), nt);
    bg_cu_check(ctx, "binary backward");
}

/* ---- unary --------------------------------------------------------------------------------- */

__device__ static inline float sigmoid_f(float x) { return 1.0f / (1.0f + expf(-x)); }

__device__ static inline float unary_fwd(int op, float x, float p0, float p1)
{
    switch (op) {
    case BG_OP_ADD_SCALAR: return x + p0;
    case BG_OP_MUL_SCALAR: return x * p0;
    case BG_OP_NEG: return -x;
    case BG_OP_EXP: return expf(x);
    case BG_OP_LOG: return logf(x);
    case BG_OP_SQRT: return sqrtf(x);
    case BG_OP_RSQRT: return 1.0f / sqrtf(x);
    case BG_OP_POW: return powf(x, p0);
    case BG_OP_ABS: return fabsf(x);
    case BG_OP_CLAMP: return fminf(fmaxf(x, p0), p1);
    case BG_OP_RELU: return x > 0.0f ? x : 0.0f;
    case BG_OP_SILU: return x * sigmoid_f(x);
    case BG_OP_GELU: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case BG_OP_SIGMOID: return sigmoid_f(x);
    case BG_OP_TANH: return tanhf(x);
    }
    return 0.0f;
}

__device__ static inline float unary_deriv(int op, float x, float y, float p0, float p1)
{
    switch (op) {
    case BG_OP_ADD_SCALAR: return 1.0f;
    case BG_OP_MUL_SCALAR: return p0;
    case BG_OP_NEG: return -1.0f;
    case BG_OP_EXP: return y;
    case BG_OP_LOG: return 1.0f / x;
    case BG_OP_SQRT: return 0.5f / y;
    case BG_OP_RSQRT: return -0.5f * y / x;
    case BG_OP_POW: return p0 * powf(x, p0 - 1.0f);
    case BG_OP_ABS: return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : 0.0f);
    case BG_OP_CLAMP: return (x >= p0 && x <= p1) ? 1.0f : 0.0f;
    case BG_OP_RELU: return x > 0.0f ? 1.0f : 0.0f;
    case BG_OP_SILU: {
        float s = sigmoid_f(x);
        return s * (1.0f + x * (1.0f - s));
    }
    case BG_OP_GELU:
        return 0.5f * (1.0f + erff(x * 0.70710678118654752f)) +
               x * 0.39894228040143268f * expf(-0.5f * x * x);
    case BG_OP_SIGMOID: return y * (1.0f - y);
    case BG_OP_TANH: return 1.0f - y * y;
    }
    return 0.0f;
}

__global__ void k_unary(int op, float *y, const float *x, bg_cu_layout lx, bool xc, int64_t n,
                        float p0, float p1)
{
    BG_CU_FOR(i, n) y[i] = unary_fwd(op, x[xc ? i : bg_cu_offset(lx, i)], p0, p1);
}

extern "C" void bg__cu_unary(bg_ctx *ctx, int op, float *y, const float *x, bg_cu_layout lx,
                             float p0, float p1)
{
    int64_t n = bg__cu_numel(&lx);
    if (n <= 0) return;
    BG_LAUNCH(bg_cu_grid(n), bg_cu_stream(ctx), k_unary)
    (op, y, x, lx, bg_cu_is_contig(lx), n, p0, p1);
    bg_cu_check(ctx, bg_op_name(op));
}

__global__ void k_unary_grad(int op, float *gx, const float *go, const float *x, bg_cu_layout lx,
                             bool xc, const float *y, int64_t n, float p0, float p1)
{
    BG_CU_FOR(i, n) gx[i] += go[i] * unary_deriv(op, x[xc ? i : bg_cu_offset(lx, i)], y[i], p0, p1);
}

extern "C" void bg__cu_unary_grad(bg_ctx *ctx, int op, float *gx, const float *go, const float *x,
                                  bg_cu_layout lx, const float *y, float p0, float p1)
{
    int64_t n = bg__cu_numel(&lx);
    if (n <= 0) return;
    BG_LAUNCH(bg_cu_grid(n), bg_cu_stream(ctx), k_unary_grad)
    (op, gx, go, x, lx, bg_cu_is_contig(lx), y, n, p0, p1);
    bg_cu_check(ctx, "unary backward");
}

/* ---- reductions ------------------------------------------------------------------------------ */

/* inner == 1: one block per row of n, summed in double (max in float, NaN wins). */
__global__ void k_reduce_rows(int op, const float *x, float *y, int64_t outer, int64_t n)
{
    __shared__ double sh[BG_CU_THREADS];
    __shared__ float shf[BG_CU_THREADS];
    BG_CU_FOR_ROWS(r, outer)
    {
        const float *p = x + r * n;
        if (op == BG_OP_MAX) {
            float m = -INFINITY;
            for (int64_t k = threadIdx.x; k < n; k += BG_CU_THREADS) m = bg_cu_nanmax(m, p[k]);
            m = bg_cu_block_max(m, shf, true);
            if (threadIdx.x == 0) y[r] = m;
        } else {
            double s = 0.0;
            for (int64_t k = threadIdx.x; k < n; k += BG_CU_THREADS) s += p[k];
            s = bg_cu_block_sum(s, sh);
            if (threadIdx.x == 0) y[r] = (float)(op == BG_OP_MEAN ? s / (double)n : s);
        }
    }
}

/* inner > 1: one thread per output, walking the reduced axis (coalesced across threads). */
__global__ void k_reduce_cols(int op, const float *x, float *y, int64_t outer, int64_t n,
                              int64_t inner)
{
    BG_CU_FOR(o, outer * inner)
    {
        const float *p = x + (o / inner) * n * inner + o % inner;
        if (op == BG_OP_MAX) {
            float best = p[0];
            for (int64_t k = 1; k < n; k++)
                if (p[k * inner] > best || isnan(p[k * inner])) best = p[k * inner];
            y[o] = best;
        } else {
            double s = 0.0;
            for (int64_t k = 0; k < n; k++) s += p[k * inner];
            y[o] = (float)(op == BG_OP_MEAN ? s / (double)n : s);
        }
    }
}

extern "C" void bg__cu_reduce(bg_ctx *ctx, int op, const float *x, float *y, int64_t outer,
                              int64_t n, int64_t inner)
{
    if (outer * inner <= 0) return;
    cudaStream_t st = bg_cu_stream(ctx);
    if (inner == 1) BG_LAUNCH(bg_cu_rows_grid(outer), st, k_reduce_rows)(op, x, y, outer, n);
    else
        BG_LAUNCH(bg_cu_grid(outer * inner), st, k_reduce_cols)(op, x, y, outer, n, inner);
    bg_cu_check(ctx, bg_op_name(op));
}

__global__ void k_reduce_sum_grad(float *gx, const float *go, int64_t total, int64_t n,
                                  int64_t inner, float scale)
{
    BG_CU_FOR(i, total) gx[i] += go[(i / (n * inner)) * inner + i % inner] * scale;
}

/* The gradient of a max goes to the first maximal element, as on the CPU. */
__global__ void k_reduce_max_grad(float *gx, const float *go, const float *x, const float *y,
                                  int64_t outer, int64_t n, int64_t inner)
{
    BG_CU_FOR(o, outer * inner)
    {
        int64_t base = (o / inner) * n * inner + o % inner;
        for (int64_t k = 0; k < n; k++)
            if (x[base + k * inner] == y[o]) {
                gx[base + k * inner] += go[o];
                break;
            }
    }
}

extern "C" void bg__cu_reduce_grad(bg_ctx *ctx, int op, float *gx, const float *go, const float *x,
                                   const float *y, int64_t outer, int64_t n, int64_t inner)
{
    cudaStream_t st = bg_cu_stream(ctx);
    int64_t total = outer * n * inner;
    if (total <= 0) return;
    if (op == BG_OP_MAX) {
        BG_LAUNCH(bg_cu_grid(outer * inner), st, k_reduce_max_grad)(gx, go, x, y, outer, n, inner);
    } else {
        float scale = op == BG_OP_MEAN ? 1.0f / (float)n : 1.0f;
        BG_LAUNCH(bg_cu_grid(total), st, k_reduce_sum_grad)(gx, go, total, n, inner, scale);
    }
    bg_cu_check(ctx, "reduce backward");
}
