/* op_checks.h - argument checks and output geometry of the ops, shared by the CPU ops
 * (src/autograd/op_*.c) and their CUDA front ends (src/cuda/ops_*.c), so that both backends
 * accept the same inputs and refuse the rest with the same messages (DESIGN.md sections 4
 * and 8). Each check records the error on ctx and returns false (or a BG_E* code where
 * noted); none of them looks at where the data lives. Defined in op_checks.c. */
#ifndef BG_OP_CHECKS_H
#define BG_OP_CHECKS_H

#include "tensor/tensor_impl.h"

/* ---- common ---- */
/* t's dtype is want, else "op: what must be <want> (got <dtype>)". */
BG_INTERNAL bool bg__check_dtype(bg_ctx *ctx, const char *op, const char *what, const bg_tensor *t,
                                 bg_dtype want);
/* t is on the cpu, else "op: what is on cuda; this op runs on the cpu only". The CPU ops of
 * a build without the CUDA backend call it first: bg__op_begin has already made every input
 * share input 0's device. */
BG_INTERNAL bool bg__check_cpu(bg_ctx *ctx, const char *op, const char *what, const bg_tensor *t);
/* Number of rows of a [.., C] tensor (the product of all but the last dimension). */
static inline int64_t bg__n_rows(const bg_tensor *t) { return bg__numel(t->ndim - 1, t->shape); }
/* Formats the multi-index of flat position i of t as "[1,2]" into buf (for error messages). */
BG_INTERNAL const char *bg__index_str(const bg_tensor *t, int64_t i, char *buf, size_t n);

/* ---- elementwise (op_elementwise.c) ---- */
/* Broadcast geometry of a binary op: the output shape padded to BG_MAX_DIMS and the element
 * strides of a and b in it (0 where broadcast). */
typedef struct bg_bcast {
    int64_t shape[BG_MAX_DIMS];
    int64_t sa[BG_MAX_DIMS], sb[BG_MAX_DIMS];
    int ndim; /* of the output: shape + BG_MAX_DIMS - ndim is its shape */
} bg_bcast;
/* BG_OK, or BG_ESHAPE recorded on a's ctx when a and b do not broadcast (op names it). */
BG_INTERNAL int bg__bcast_init(bg_bcast *bc, const bg_tensor *a, const bg_tensor *b,
                               const char *op);
/* Both f32 and broadcastable; fills bc. */
BG_INTERNAL bool bg__binary_check(bg_ctx *ctx, const char *op, const bg_tensor *a,
                                  const bg_tensor *b, bg_bcast *bc);

/* ---- reductions (op_reduce.c) ---- */
/* The input of a reduction seen as [outer, n, inner] around the reduced axis. */
typedef struct bg_red_geom {
    int64_t outer, n, inner;
    int out_ndim;
    int64_t out_shape[BG_MAX_DIMS];
} bg_red_geom;
/* BG_OK, or BG_EINVAL recorded on a's ctx for an axis out of range (op names it). */
BG_INTERNAL int bg__red_geom_init(bg_red_geom *g, const bg_tensor *a, int axis, bool keepdim,
                                  const char *op);
/* a is f32, axis in range, and max not over an empty axis; fills g. */
BG_INTERNAL bool bg__reduce_check(bg_ctx *ctx, int op, const bg_tensor *a, int axis, bool keepdim,
                                  bg_red_geom *g);

/* ---- matmul (op_matmul.c) ---- */
typedef struct bg_mm_geom {
    int out_ndim;
    int64_t out_shape[BG_MAX_DIMS];
    int64_t nbatch, bshape[2]; /* batch dims innermost first */
} bg_mm_geom;
/* BG_OK, or BG_ESHAPE recorded on a's ctx when a x b is not a valid product. */
BG_INTERNAL int bg__mm_geom_init(bg_mm_geom *g, const bg_tensor *a, const bg_tensor *b);
/* Both f32 and shapes that multiply; fills g. */
BG_INTERNAL bool bg__matmul_check(bg_ctx *ctx, const bg_tensor *a, const bg_tensor *b,
                                  bg_mm_geom *g);

/* ---- shape ops (op_shape.c) ---- */
/* n f32 tensors of ts[0]'s rank that agree on every dim but axis; sets *ax (axis made
 * non-negative) and shape (the concatenated shape). */
BG_INTERNAL bool bg__concat_check(bg_ctx *ctx, bg_tensor *const *ts, int n, int axis, int *ax,
                                  int64_t shape[BG_MAX_DIMS]);
BG_INTERNAL bool bg__contiguous_check(bg_ctx *ctx, const bg_tensor *a);

/* ---- quantizers and BitLinear (op_quant.c, op_bitlinear.c) ---- */
/* bg__op_begin of a straight-through quantizer (sets *pctx), its input and lambda checks;
 * returns the output step tensor, or NULL. */
BG_INTERNAL bg_tensor *bg__ste_begin(const char *name, bg_tensor *x, float lambda, bg_ctx **pctx);
/* mode is a bg_wq_mode and group >= 1 for per-group. */
BG_INTERNAL bool bg__weight_quant_mode_check(bg_ctx *ctx, int mode, int64_t group);
/* x may be NULL (nothing to check: the op returns NULL); bits in 2..8. */
BG_INTERNAL bool bg__act_quant_bits_check(const bg_tensor *x, int bits);
/* f32 x [.., in] and w [out, in], 2..8 bits; sets out_shape to x's with in replaced by out. */
BG_INTERNAL bool bg__bitlinear_check(bg_ctx *ctx, const bg_tensor *x, const bg_tensor *w,
                                     int act_bits, int64_t out_shape[BG_MAX_DIMS]);

/* ---- nn ops (op_nn.c) ---- */
BG_INTERNAL bool bg__embedding_check(bg_ctx *ctx, const bg_tensor *weight, const bg_tensor *ids);
/* softmax and log_softmax (op names which). */
BG_INTERNAL bool bg__softmax_check(bg_ctx *ctx, const char *op, const bg_tensor *a);
BG_INTERNAL bool bg__cross_entropy_check(bg_ctx *ctx, const bg_tensor *logits,
                                         const bg_tensor *targets, float label_smoothing);
BG_INTERNAL bool bg__mse_check(bg_ctx *ctx, const bg_tensor *a, const bg_tensor *b);
/* rmsnorm (b NULL) and layernorm (op names which); w and b may be NULL. */
BG_INTERNAL bool bg__norm_check(bg_ctx *ctx, const char *op, const bg_tensor *x, const bg_tensor *w,
                                const bg_tensor *b, float eps);
BG_INTERNAL bool bg__dropout_check(bg_ctx *ctx, const bg_tensor *a, float p);

/* ---- attention (op_attention.c) ---- */
BG_INTERNAL bool bg__rope_check(bg_ctx *ctx, const bg_tensor *x, int n_rot, float base);
/* Dimensions of q [B, T, H, D] and k, v [B, T, Hkv, D]; each fits a BLAS int. */
typedef struct bg_attn_dims {
    int64_t B, T, H, Hkv, D;
} bg_attn_dims;
BG_INTERNAL bool bg__attention_check(bg_ctx *ctx, const bg_tensor *q, const bg_tensor *k,
                                     const bg_tensor *v, bg_attn_dims *d);

#endif
