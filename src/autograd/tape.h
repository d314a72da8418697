/* tape.h - the autograd tape: nodes recorded in creation order (a topological order),
 * the op enum generated from ops.def, and the helpers backward rules use. */
#ifndef BG_TAPE_H
#define BG_TAPE_H

#include "bitgrad/autograd.h"
#include "tensor/tensor_impl.h"

enum bg_op_id {
#define BG_OP(e, n, k) BG_OP_##e,
#include "autograd/ops.def"
#undef BG_OP
    BG_OP_COUNT
};

#define BG_NODE_MAX_IN 8

typedef struct bg_node {
    int op;
    int n_in;
    bg_tensor *in[BG_NODE_MAX_IN];
    bg_tensor *out;
    bg_tensor *saved[3];   /* values the backward rule needs (arena) */
    void *aux;             /* op-specific arena buffer (masks, statistics) */
    void *owned;           /* pool buffer given back once this node's rule ran (or NULL) */
    unsigned pinned;       /* bit i: in[i]'s storage is pinned; bit 15: out's */
    float f[4];            /* op parameters */
    int64_t i[4];
} bg_node;

struct bg_tape {
    bg_node *nodes;
    size_t n, cap;
    uint64_t epoch; /* bumped each time the tape is consumed or cleared */
};

typedef void (*bg_backward_fn)(bg_node *node);

/* Records out = op(in...) when grad mode is on and an input requires grad. Returns the
 * node (to fill parameters and saved values) or NULL when nothing is recorded. */
BG_INTERNAL bg_node *bg__record(int op, bg_tensor *out, int n_in, bg_tensor *const *in);
BG_INTERNAL void bg__tape_clear(bg_ctx *ctx);

/* Contiguous float gradient buffer of t (same logical shape), created zeroed on first
 * use: persistent for persistent tensors, arena otherwise. NULL if t needs no grad. */
BG_INTERNAL float *bg__grad_of(bg_tensor *t);
static inline bool bg__needs_grad(const bg_tensor *t) { return t && t->requires_grad; }

/* As bg__grad_of, for a rule that writes every element of t's gradient exactly once per
 * call site: when the buffer is new, *assign is set and it is not zeroed - the rule stores
 * BG_GBASE(assign, g[i]) + v, which is 0 + v there (the bits of zero-fill-then-add, without
 * the fill's pass over memory). Rules whose inputs may be one tensor twice call it for the
 * first only. */
BG_INTERNAL float *bg__grad_dst(bg_tensor *t, bool *assign);
#define BG_GBASE(assign, g) ((assign) ? 0.0f : (g))

/* For a rule whose input gradient is its output gradient unchanged (same elements, same
 * order): hands out's buffer to in instead of copying it, when in has no gradient yet and
 * out's buffer is the pool's to give. Returns whether it did; the rule adds as usual if not. */
BG_INTERNAL bool bg__grad_pass(bg_tensor *in, bg_tensor *out);

/* Shared front-end checks: returns the ctx of the inputs, or NULL after recording an
 * error (NULL input, dead tensor, mixed contexts or devices, non-f32 where f32 needed). */
BG_INTERNAL bg_ctx *bg__op_begin(const char *op, int n, bg_tensor *const *in);

/* dst[strided] += src[contiguous], iterating src's shape in row-major order. */
BG_INTERNAL void bg__add_strided(float *dst, const int64_t *dst_stride, const float *src,
                                 int ndim, const int64_t *shape);

/* Backward rules, one per op (defined next to each op's forward). */
#define BG_OP(e, n, k) BG_INTERNAL void bg__backward_##n(bg_node *node);
#include "autograd/ops.def"
#undef BG_OP

/* ---- custom nodes (op CUSTOM): a fused loss, a recomputed block ---- */
/* node->aux of a CUSTOM node points to a struct whose first member is its backward rule. */
typedef struct bg_custom_rule {
    bg_backward_fn backward;
} bg_custom_rule;

/* Inside a backward rule: runs backward from out (recorded on sub, the tape that was swapped
 * in while out's graph was built) seeded with the gradient seed (out's element count), then
 * makes ctx's tape main again. */
BG_INTERNAL int bg__backward_nested(bg_tensor *out, const float *seed, struct bg_tape *sub,
                                    struct bg_tape *main);

/* OpenMP parallel threshold (elements) for elementwise work. */
#define BG_PAR_MIN 262144

/* Counts `times` GEMMs of [m, k] x [k, n] in the ctx's statistics. */
static inline void bg__gemm_count(bg_ctx *ctx, int64_t m, int64_t n, int64_t k, int64_t times)
{
    ctx->matmul_calls += (uint64_t)times;
    ctx->matmul_flops += (uint64_t)(2 * m * n * k * times);
}

#endif
