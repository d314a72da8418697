/* cuda_impl.h - private interface of the CUDA backend: the per-ctx device state, layouts
 * handed to kernels, and the launchers (the src/cuda/k_<area>.cu files) that the C front ends
 * (the src/cuda/<area>.c files) call.
 *
 * The split: C files validate, allocate, record tape nodes and choose GEMM layouts, exactly
 * as the CPU ops do; .cu files hold kernels and thin launchers taking plain pointers and
 * sizes. Launchers enqueue work on the ctx's stream and return at once; on a CUDA failure
 * they record a sticky BG_ENODEV error on the ctx. Only the functions that say so
 * synchronise (copies to and from the host, flag reads). */
#ifndef BG_CUDA_IMPL_H
#define BG_CUDA_IMPL_H

#include "autograd/tape.h"
#include "cuda/cuda_dispatch.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BG_CU_ALIGN 256
/* Threads per block of every kernel (a power of two: the tree reductions rely on it). */
#define BG_CU_THREADS 256
/* Most partial sums a whole-tensor reduction uses (fixed: the order depends on n alone). */
#define BG_CU_MAX_PARTIALS 1024
/* Row blocks of a parameter-gradient reduction over rows (as the CPU's NORM_ROW_BLOCKS). */
#define BG_CU_ROW_CHUNKS 64

typedef struct bg_cuda_state {
    void *stream;              /* cudaStream_t: every launch of the ctx goes here, in order */
    void *blas;                /* cublasHandle_t bound to stream */
    bg_arena arena;            /* device arena: chunk bases are device pointers */
    unsigned long long *flags; /* device scratch for validation results (BG_CU_N_FLAGS) */
    double *acc;               /* device accumulator (gradient norms) */
    int *nonfinite;            /* device flag set by finite checks */
    void *dev_stage;           /* device staging for strided reads and writes */
    size_t dev_stage_cap;
    void *host_stage; /* host staging for dtype conversion */
    size_t host_stage_cap;
} bg_cuda_state;

#define BG_CU_N_FLAGS 4

static inline bg_cuda_state *bg__cu_state(const bg_ctx *ctx)
{
    return (bg_cuda_state *)ctx->device_state;
}

/* A tensor's layout padded to 4 dims (leading size-1 dims with stride 0). Logical element
 * i (row-major over shape) sits at sum_d idx_d(i) * stride[d]. */
typedef struct bg_cu_layout {
    int64_t shape[4], stride[4];
} bg_cu_layout;

/* Broadcast geometry of a binary op: the padded output shape and the element strides of
 * a and b in it (0 where broadcast). */
typedef struct bg_cu_bcast {
    int64_t shape[4], sa[4], sb[4];
} bg_cu_bcast;

enum { BG_CU_H2D = 1, BG_CU_D2H = 2, BG_CU_D2D = 3 };

/* ---- layouts (ctx.c) ---- */
BG_INTERNAL bg_cu_layout bg__cu_layout(const bg_tensor *t);
BG_INTERNAL bg_cu_layout bg__cu_layout_contig(int ndim, const int64_t *shape);
BG_INTERNAL bg_cu_layout bg__cu_layout_from(int ndim, const int64_t *shape, const int64_t *stride);
static inline int64_t bg__cu_numel(const bg_cu_layout *l)
{
    return l->shape[0] * l->shape[1] * l->shape[2] * l->shape[3];
}
/* Records a sticky error when a launcher failed; returns true when the ctx is clean. */
BG_INTERNAL bool bg__cuda_ok(bg_ctx *ctx);

/* Reads the two validation flags after a check kernel (synchronises); resets them. */
BG_INTERNAL int bg__cuda_read_flags(bg_ctx *ctx, unsigned long long out[2]);
BG_INTERNAL void bg__cuda_reset_flags(bg_ctx *ctx);

/* Backward rules of the CUDA ops, one per ops.def line (src/cuda/ops_*.c). */
#define BG_OP(e, n, k) BG_INTERNAL void bg__cudab_##n(bg_node *node);
#include "autograd/ops.def"
#undef BG_OP

/* ---- runtime (k_runtime.cu) ---- */
/* Number of usable devices (>0), or 0 with the reason in msg. */
BG_INTERNAL int bg__cu_probe(char *msg, size_t n);
BG_INTERNAL int bg__cu_state_init(bg_ctx *ctx, bg_cuda_state *s);
BG_INTERNAL void bg__cu_state_free(bg_cuda_state *s);
/* Counts a heap allocation on ctx and records an error there on failure (ctx may be NULL). */
BG_INTERNAL void *bg__cu_malloc(bg_ctx *ctx, size_t n);
BG_INTERNAL void bg__cu_free(void *p);
BG_INTERNAL int bg__cu_sync(bg_ctx *ctx);
/* Synchronous for H2D and D2H (returns when host memory may be reused or read). */
BG_INTERNAL int bg__cu_copy(bg_ctx *ctx, void *dst, const void *src, size_t n, int kind);
BG_INTERNAL void bg__cu_memset(bg_ctx *ctx, void *dst, int byte, size_t n);
BG_INTERNAL void bg__cu_fill(bg_ctx *ctx, float *dst, int64_t n, float v);
/* dst[dl(i)] = src[sl(i)] for every logical i of dl.shape (== sl.shape); elem_size 1, 2, 4. */
BG_INTERNAL void bg__cu_copy_strided(bg_ctx *ctx, void *dst, bg_cu_layout dl, const void *src,
                                     bg_cu_layout sl, int elem_size);
/* dst[dl(i)] += alpha * src[sl(i)]; every i must reach a different dst element. */
BG_INTERNAL void bg__cu_add_strided(bg_ctx *ctx, float *dst, bg_cu_layout dl, const float *src,
                                    bg_cu_layout sl, float alpha);
BG_INTERNAL void bg__cu_add_scalar(bg_ctx *ctx, float *dst, float v); /* dst[0] += v */
BG_INTERNAL void bg__cu_axpy(bg_ctx *ctx, float *dst, const float *src, int64_t n, float alpha);
BG_INTERNAL void bg__cu_scale(bg_ctx *ctx, float *x, int64_t n, float s);
BG_INTERNAL void bg__cu_clamp(bg_ctx *ctx, float *x, int64_t n, float lo, float hi);
BG_INTERNAL void bg__cu_nonfinite(bg_ctx *ctx, const float *x, int64_t n, int *flag);
/* acc[0] += sum x^2 (one block, so successive calls add in stream order). */
BG_INTERNAL void bg__cu_sumsq(bg_ctx *ctx, const float *x, int64_t n, double *acc);
/* Row-major GEMM, batched with element strides: C_i = alpha op(A_i) op(B_i) + beta C_i,
 * op(X) = X^T when tX. C is M x N. Counts one matmul call. */
BG_INTERNAL void bg__cu_gemm(bg_ctx *ctx, bool ta, bool tb, int64_t M, int64_t N, int64_t K,
                             float alpha, const float *A, int64_t lda, int64_t sA, const float *B,
                             int64_t ldb, int64_t sB, float beta, float *C, int64_t ldc, int64_t sC,
                             int64_t batch);

/* ---- elementwise and reductions (k_elementwise.cu) ---- */
BG_INTERNAL void bg__cu_binary(bg_ctx *ctx, int op, float *out, const float *a, const float *b,
                               bg_cu_bcast bc);
/* g (contiguous, t's padded shape tshape) += d out / d side, summed over broadcast dims. */
BG_INTERNAL void bg__cu_binary_grad(bg_ctx *ctx, int op, int side, float *g, bg_cu_layout tshape,
                                    const float *go, const float *a, const float *b,
                                    bg_cu_bcast bc);
BG_INTERNAL void bg__cu_unary(bg_ctx *ctx, int op, float *y, const float *x, bg_cu_layout lx,
                              float p0, float p1);
BG_INTERNAL void bg__cu_unary_grad(bg_ctx *ctx, int op, float *gx, const float *go, const float *x,
                                   bg_cu_layout lx, const float *y, float p0, float p1);
/* x contiguous, viewed as [outer, n, inner]; y [outer, inner]. */
BG_INTERNAL void bg__cu_reduce(bg_ctx *ctx, int op, const float *x, float *y, int64_t outer,
                               int64_t n, int64_t inner);
BG_INTERNAL void bg__cu_reduce_grad(bg_ctx *ctx, int op, float *gx, const float *go, const float *x,
                                    const float *y, int64_t outer, int64_t n, int64_t inner);

/* ---- quantizers (k_quant.cu), the math of src/quant/bitnet_math.h ---- */
/* Absmean scales of a [rows, cols] matrix in bg_wq_mode `mode`; partials holds
 * BG_CU_MAX_PARTIALS doubles (per-tensor mode). */
BG_INTERNAL void bg__cu_absmean(bg_ctx *ctx, const float *w, int64_t rows, int64_t cols, int mode,
                                int64_t group, float *scales, double *partials);
/* codes != NULL: codes = ternary code (as float). y != NULL: y = blend(w, code * s, lambda). */
BG_INTERNAL void bg__cu_ternary(bg_ctx *ctx, const float *w, const float *scales, int64_t rows,
                                int64_t cols, int mode, int64_t group, float lambda, float *codes,
                                float *y);
/* Per row of cols: s_x = absmax scale. levels: out = level (float), else out = blend. */
BG_INTERNAL void bg__cu_act_quant(bg_ctx *ctx, const float *x, int64_t rows, int64_t cols, int bits,
                                  float lambda, bool levels, float *out, float *s_x);
/* y[r, j] = (y[r, j] * s_w[per_row ? j : 0]) / s_x[r]. */
BG_INTERNAL void bg__cu_bitlinear_scale(bg_ctx *ctx, float *y, int64_t rows, int64_t out,
                                        const float *s_w, bool per_row, const float *s_x);
/* dst[r, i] = divide ? src[r, i] / sc[r] : src[r, i] * sc[per_row ? r : 0]. */
BG_INTERNAL void bg__cu_rescale_rows(bg_ctx *ctx, float *dst, const float *src, const float *sc,
                                     int64_t rows, int64_t cols, bool divide, bool per_row);

/* ---- nn ops (k_nn.cu) ---- */
/* flags[0] = min position of an id outside [0, V) (all ones: none). */
BG_INTERNAL void bg__cu_ids_check(bg_ctx *ctx, const int32_t *ids, int64_t n, int64_t V,
                                  int ignore_index, bool use_ignore, unsigned long long *flags);
BG_INTERNAL void bg__cu_embedding(bg_ctx *ctx, float *y, const float *w, int64_t s0, int64_t s1,
                                  const int32_t *ids, int64_t n, int64_t D);
BG_INTERNAL void bg__cu_embedding_grad(bg_ctx *ctx, float *gw, const float *go, const int32_t *ids,
                                       int64_t n, int64_t D);
BG_INTERNAL void bg__cu_softmax(bg_ctx *ctx, const float *x, float *y, int64_t rows, int64_t C,
                                bool log_out);
BG_INTERNAL void bg__cu_softmax_grad(bg_ctx *ctx, float *gx, const float *gy, const float *y,
                                     int64_t rows, int64_t C, bool log_out);
BG_INTERNAL void bg__cu_ce_forward(bg_ctx *ctx, const float *x, const int32_t *t, int64_t rows,
                                   int64_t V, int ignore, float eps, float *lse, double *loss_rows,
                                   float *out, int64_t count);
BG_INTERNAL void bg__cu_ce_backward(bg_ctx *ctx, float *gx, const float *go, const float *x,
                                    const int32_t *t, const float *lse, int64_t rows, int64_t V,
                                    int ignore, float eps, int64_t count);
BG_INTERNAL void bg__cu_mse(bg_ctx *ctx, const float *a, const float *b, int64_t n, float *out);
BG_INTERNAL void bg__cu_mse_grad(bg_ctx *ctx, float *g, const float *go, const float *a,
                                 const float *b, int64_t n, bool negate);
/* mean NULL: rmsnorm. w, b may be NULL. */
BG_INTERNAL void bg__cu_norm(bg_ctx *ctx, const float *x, const float *w, const float *b,
                             int64_t rows, int64_t C, float eps, float *mean, float *rstd,
                             float *y);
BG_INTERNAL void bg__cu_norm_dx(bg_ctx *ctx, const float *x, const float *w, const float *mean,
                                const float *rstd, const float *gy, int64_t rows, int64_t C,
                                float *gx);
/* partials: 2 * BG_CU_ROW_CHUNKS * C doubles. gw or gb may be NULL. */
BG_INTERNAL void bg__cu_norm_dparams(bg_ctx *ctx, const float *x, const float *mean,
                                     const float *rstd, const float *gy, int64_t rows, int64_t C,
                                     float *gw, float *gb, double *partials);
BG_INTERNAL void bg__cu_dropout(bg_ctx *ctx, const float *x, float *y, unsigned char *keep,
                                int64_t n, float p, float scale, uint64_t seed);
BG_INTERNAL void bg__cu_dropout_grad(bg_ctx *ctx, float *gx, const float *gy,
                                     const unsigned char *keep, int64_t n, float scale);

/* ---- rope and attention (k_attention.cu) ---- */
BG_INTERNAL void bg__cu_rope_table(bg_ctx *ctx, float *tab, int64_t T, int n_rot, float base,
                                   int64_t pos0);
BG_INTERNAL void bg__cu_rope(bg_ctx *ctx, const float *src, float *dst, const float *tab,
                             int64_t BT, int64_t T, int64_t H, int64_t D, int n_rot, float sign,
                             bool accumulate);
/* Row r of n_rows rows of [T, T] blocks (query i = r % T): softmax over columns <= i. */
BG_INTERNAL void bg__cu_causal_softmax(bg_ctx *ctx, float *S, int64_t n_rows, int64_t T);
BG_INTERNAL void bg__cu_causal_softmax_grad(bg_ctx *ctx, const float *P, float *dP, int64_t n_rows,
                                            int64_t T);

/* ---- optimizers (k_optim.cu) ---- */
BG_INTERNAL void bg__cu_sgd(bg_ctx *ctx, float *p, const float *g, float *m, int64_t n, float lr,
                            float wd, float momentum, float dampening, bool nesterov, bool first);
BG_INTERNAL void bg__cu_adam(bg_ctx *ctx, float *p, const float *g, float *m, float *v, int64_t n,
                             float beta1, float beta2, float eps, float step_size, float bc2_sqrt,
                             float decay, bool decoupled, float wd);

#ifdef __cplusplus
}
#endif
#endif
