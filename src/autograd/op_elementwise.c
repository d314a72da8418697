/* op_elementwise.c - binary ops with NumPy broadcasting (add, sub, mul, div) and unary
 * ops (scalar add/mul, neg, exp, log, sqrt, rsqrt, pow, abs, clamp, activations): forward
 * kernels and backward rules. */
#include <math.h>

#include "autograd/op_checks.h"
#include "autograd/tape.h"
#include "autograd/vec8.h"
#include "autograd/vmath.h"
#include "autograd/vmath_x86.h"
#include "cuda/cuda_dispatch.h"

/* ---- broadcasting ---------------------------------------------------------- */

/* Runs BODY for every output element; io is the contiguous output index and ia, ib the
 * element offsets in a and b. The caller's bool bc_par selects the OpenMP loop. */
#define BCAST_LOOP(bc, BODY)                                                          \
    do {                                                                                   \
        const int64_t d0 = (bc)->shape[0], d1 = (bc)->shape[1], d2 = (bc)->shape[2];       \
        const int64_t d3 = (bc)->shape[3];                                                 \
        const int64_t rows = d0 * d1 * d2;                                                 \
        _Pragma("omp parallel for schedule(static) if(bc_par)")                               \
        for (int64_t r = 0; r < rows; r++) {                                               \
            int64_t i0 = r / (d1 * d2), i1 = (r / d2) % d1, i2 = r % d2;                   \
            int64_t ra = i0 * (bc)->sa[0] + i1 * (bc)->sa[1] + i2 * (bc)->sa[2];           \
            int64_t rb = i0 * (bc)->sb[0] + i1 * (bc)->sb[1] + i2 * (bc)->sb[2];           \
            for (int64_t i3 = 0; i3 < d3; i3++) {                                          \
                int64_t io = r * d3 + i3, ia = ra + i3 * (bc)->sa[3];                      \
                int64_t ib = rb + i3 * (bc)->sb[3];                                        \
                (void)ia; (void)ib; BODY;                                                  \
            }                                                                              \
        }                                                                                  \
    } while (0)

static bg_tensor *binary(int op, const char *name, bg_tensor *a, bg_tensor *b)
{
    bg_ctx *ctx = bg__op_begin(name, 2, (bg_tensor *[]){ a, b });
    if (!ctx) return NULL;
    BG_CUDA_DISPATCH(ctx, bg__cuda_binary(ctx, op, name, a, b)); /* cuda hook */
    bg_bcast bc;
    if (!bg__binary_check(ctx, name, a, b, &bc)) return NULL;
    bg_tensor *out = bg__step_new(ctx, BG_F32, bc.ndim, bc.shape + BG_MAX_DIMS - bc.ndim);
    if (!out) return NULL;
    const float *pa = a->data, *pb = b->data;
    float *po = out->data;
    bool bc_par = bg__numel(out->ndim, out->shape) > BG_PAR_MIN;
    switch (op) {
    case BG_OP_ADD: BCAST_LOOP(&bc, po[io] = pa[ia] + pb[ib]); break;
    case BG_OP_SUB: BCAST_LOOP(&bc, po[io] = pa[ia] - pb[ib]); break;
    case BG_OP_MUL: BCAST_LOOP(&bc, po[io] = pa[ia] * pb[ib]); break;
    default: BCAST_LOOP(&bc, po[io] = pa[ia] / pb[ib]); break;
    }
    bg__record(op, out, 2, (bg_tensor *[]){ a, b });
    return out;
}

bg_tensor *bg_add(bg_tensor *a, bg_tensor *b) { return binary(BG_OP_ADD, "add", a, b); }
bg_tensor *bg_sub(bg_tensor *a, bg_tensor *b) { return binary(BG_OP_SUB, "sub", a, b); }
bg_tensor *bg_mul(bg_tensor *a, bg_tensor *b) { return binary(BG_OP_MUL, "mul", a, b); }
bg_tensor *bg_div(bg_tensor *a, bg_tensor *b) { return binary(BG_OP_DIV, "div", a, b); }

/* Gradient of one side of a binary op. The grad buffer of the side is contiguous in that
 * side's shape; seen through broadcast strides several outputs may land on one element,
 * so the loop runs in parallel only when no broadcasting reduces into it. */
static bool op_reads_values(int op) { return op == BG_OP_MUL || op == BG_OP_DIV; }

static void binary_grad_side(bg_node *node, int side)
{
    bg_tensor *a = node->in[0], *b = node->in[1], *t = node->in[side];
    if (!bg__needs_grad(t)) return;
    int op = node->op;
    bool whole = bg__same_shape(t, node->out); /* no broadcasting reduces into t */
    /* add's second input takes the output gradient itself when it can (the first, done
     * by now, has its own copy) */
    if (op == BG_OP_ADD && side == 1 && whole && bg__grad_pass(t, node->out)) return;
    bool as = false;
    float *g = whole ? bg__grad_dst(t, &as) : bg__grad_of(t);
    if (!g) return;
    const float *go = bg__grad_of(node->out);
    /* Operate on contiguous stand-ins so offsets index the grad buffers directly. */
    bg_tensor ca = *a, cb = *b;
    bg__contig_strides(a->ndim, a->shape, ca.stride);
    bg__contig_strides(b->ndim, b->shape, cb.stride);
    /* add and sub read no values (their inputs are not pinned: tape.c) */
    bool reads = op_reads_values(op);
    const float *pa = reads ? bg__contig_data(a) : NULL, *pb = reads ? bg__contig_data(b) : NULL;
    bg_bcast bc;
    bg__bcast_init(&bc, &ca, &cb, "backward");
    bool bc_par = whole && bg__numel(t->ndim, t->shape) > BG_PAR_MIN;
    if (reads && (!pa || !pb)) return;
    /* as is set only when t has the output's shape: each element is written once */
    if (side == 0) {
        switch (op) {
        case BG_OP_ADD:
        case BG_OP_SUB: BCAST_LOOP(&bc, g[ia] = BG_GBASE(as, g[ia]) + go[io]); break;
        case BG_OP_MUL: BCAST_LOOP(&bc, g[ia] = BG_GBASE(as, g[ia]) + go[io] * pb[ib]); break;
        default: BCAST_LOOP(&bc, g[ia] = BG_GBASE(as, g[ia]) + go[io] / pb[ib]); break;
        }
    } else {
        switch (op) {
        case BG_OP_ADD: BCAST_LOOP(&bc, g[ib] = BG_GBASE(as, g[ib]) + go[io]); break;
        case BG_OP_SUB: BCAST_LOOP(&bc, g[ib] = BG_GBASE(as, g[ib]) - go[io]); break;
        case BG_OP_MUL: BCAST_LOOP(&bc, g[ib] = BG_GBASE(as, g[ib]) + go[io] * pa[ia]); break;
        default:
            BCAST_LOOP(&bc, g[ib] = BG_GBASE(as, g[ib]) - go[io] * pa[ia] / (pb[ib] * pb[ib]));
            break;
        }
    }
}

static void binary_backward(bg_node *node)
{
    binary_grad_side(node, 0);
    binary_grad_side(node, 1);
}

void bg__backward_add(bg_node *node) { binary_backward(node); }
void bg__backward_sub(bg_node *node) { binary_backward(node); }
void bg__backward_mul(bg_node *node) { binary_backward(node); }
void bg__backward_div(bg_node *node) { binary_backward(node); }

/* ---- unary ------------------------------------------------------------------ */

static inline float gelu_f(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }
static inline float sigmoid_f(float x) { return 1.0f / (1.0f + bg_expf(-x)); }

static float unary_fwd(int op, float x, const float *p)
{
    switch (op) {
    case BG_OP_ADD_SCALAR: return x + p[0];
    case BG_OP_MUL_SCALAR: return x * p[0];
    case BG_OP_NEG: return -x;
    case BG_OP_EXP: return bg_expf(x);
    case BG_OP_LOG: return logf(x);
    case BG_OP_SQRT: return sqrtf(x);
    case BG_OP_RSQRT: return 1.0f / sqrtf(x);
    case BG_OP_POW: return powf(x, p[0]);
    case BG_OP_ABS: return fabsf(x);
    case BG_OP_CLAMP: return fminf(fmaxf(x, p[0]), p[1]);
    case BG_OP_RELU: return x > 0.0f ? x : 0.0f;
    case BG_OP_SILU: return x * sigmoid_f(x);
    case BG_OP_GELU: return gelu_f(x);
    case BG_OP_SIGMOID: return sigmoid_f(x);
    case BG_OP_TANH: return tanhf(x);
    }
    return 0.0f;
}

/* d y / d x given input x and output y. */
static float unary_deriv(int op, float x, float y, const float *p)
{
    switch (op) {
    case BG_OP_ADD_SCALAR: return 1.0f;
    case BG_OP_MUL_SCALAR: return p[0];
    case BG_OP_NEG: return -1.0f;
    case BG_OP_EXP: return y;
    case BG_OP_LOG: return 1.0f / x;
    case BG_OP_SQRT: return 0.5f / y;
    case BG_OP_RSQRT: return -0.5f * y / x;
    case BG_OP_POW: return p[0] * powf(x, p[0] - 1.0f);
    case BG_OP_ABS: return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : 0.0f);
    case BG_OP_CLAMP: return (x >= p[0] && x <= p[1]) ? 1.0f : 0.0f;
    case BG_OP_RELU: return x > 0.0f ? 1.0f : 0.0f;
    case BG_OP_SILU: {
        float s = sigmoid_f(x);
        return s * (1.0f + x * (1.0f - s));
    }
    case BG_OP_GELU:
        return 0.5f * (1.0f + erff(x * 0.70710678118654752f)) +
               x * 0.39894228040143268f * bg_expf(-0.5f * x * x);
    case BG_OP_SIGMOID: return y * (1.0f - y);
    case BG_OP_TANH: return 1.0f - y * y;
    }
    return 0.0f;
}

/* One loop per op (the switch outside the loop lets the compiler vectorise each). Threads
 * take chunks; GCC vectorises the inner loop of a chunk (not a flat OpenMP loop). */
#define UNARY_CHUNK 4096
/* CALL on chunks [c0, c1) of [0, n), in parallel. */
#define PAR_CHUNKS(CALL)                                                                   \
    _Pragma("omp parallel for schedule(static) if (n > BG_PAR_MIN)")                       \
    for (int64_t c0 = 0; c0 < n; c0 += UNARY_CHUNK) {                                      \
        int64_t c1 = c0 + UNARY_CHUNK < n ? c0 + UNARY_CHUNK : n;                          \
        CALL;                                                                              \
    }
#define UNARY_FWD(EXPR)                                                                    \
    _Pragma("omp parallel for schedule(static) if (n > BG_PAR_MIN)")                       \
    for (int64_t c0 = 0; c0 < n; c0 += UNARY_CHUNK) {                                      \
        int64_t c1 = c0 + UNARY_CHUNK < n ? c0 + UNARY_CHUNK : n;                          \
        for (int64_t i = c0; i < c1; i++) {                                                \
            float v = x[i];                                                                \
            y[i] = (EXPR);                                                                 \
        }                                                                                  \
    }                                                                                      \
    break

static void unary_kernel(int op, const float *x, float *y, int64_t n, float p0, float p1)
{
    switch (op) {
    case BG_OP_ADD_SCALAR: UNARY_FWD(v + p0);
    case BG_OP_MUL_SCALAR: UNARY_FWD(v * p0);
    case BG_OP_NEG: UNARY_FWD(-v);
    case BG_OP_RELU: UNARY_FWD(v > 0.0f ? v : 0.0f);
    case BG_OP_ABS: UNARY_FWD(fabsf(v));
    case BG_OP_CLAMP: UNARY_FWD(fminf(fmaxf(v, p0), p1));
    case BG_OP_EXP: UNARY_FWD(bg_expf(v));
    case BG_OP_SIGMOID: UNARY_FWD(sigmoid_f(v));
    case BG_OP_SILU:
        if (bg__vmath_vexp()) {
            PAR_CHUNKS(bg__silu_fwd_vec(x + c0, y + c0, c1 - c0));
            break;
        }
        UNARY_FWD(v * sigmoid_f(v));
    default: {
        const float p[2] = { p0, p1 };
        UNARY_FWD(unary_fwd(op, v, p));
    }
    }
}

#define UNARY_BWD(EXPR)                                                                    \
    _Pragma("omp parallel for schedule(static) if (n > BG_PAR_MIN)")                       \
    for (int64_t c0 = 0; c0 < n; c0 += UNARY_CHUNK) {                                      \
        int64_t c1 = c0 + UNARY_CHUNK < n ? c0 + UNARY_CHUNK : n;                          \
        for (int64_t i = c0; i < c1; i++) {                                                \
            float v = x[i], w = y[i];                                                      \
            (void)v;                                                                       \
            (void)w;                                                                       \
            g[i] = BG_GBASE(as, g[i]) + go[i] * (EXPR);                                    \
        }                                                                                  \
    }                                                                                      \
    break

#define LINEAR_BWD(K)                                                                      \
    _Pragma("omp parallel for schedule(static) if (n > BG_PAR_MIN)")                       \
    for (int64_t c0 = 0; c0 < n; c0 += UNARY_CHUNK) {                                      \
        int64_t c1 = c0 + UNARY_CHUNK < n ? c0 + UNARY_CHUNK : n;                          \
        for (int64_t i = c0; i < c1; i++) g[i] = BG_GBASE(as, g[i]) + go[i] * (K);         \
    }                                                                                      \
    break

/* g = (as ? 0 : g) + go * dy/dx */
static void unary_grad_kernel(int op, const float *x, const float *y, const float *go, float *g,
                              int64_t n, const float *p, bool as)
{
    switch (op) { /* the first three read neither x nor y (tape.c does not keep them) */
    case BG_OP_ADD_SCALAR: LINEAR_BWD(1.0f);
    case BG_OP_MUL_SCALAR: LINEAR_BWD(p[0]);
    case BG_OP_NEG: LINEAR_BWD(-1.0f);
    case BG_OP_RELU: UNARY_BWD(v > 0.0f ? 1.0f : 0.0f);
    case BG_OP_EXP: UNARY_BWD(w);
    case BG_OP_SIGMOID: UNARY_BWD(w * (1.0f - w));
    case BG_OP_TANH: UNARY_BWD(1.0f - w * w);
    case BG_OP_SILU:
        if (bg__vmath_vexp()) {
            PAR_CHUNKS(bg__silu_bwd_vec(x + c0, go + c0, g + c0, c1 - c0, as));
            break;
        }
        UNARY_BWD(sigmoid_f(v) * (1.0f + v * (1.0f - sigmoid_f(v))));
    default: UNARY_BWD(unary_deriv(op, v, w, p));
    }
}

static bg_tensor *unary(int op, bg_tensor *a, float p0, float p1)
{
    const char *name = bg_op_name(op);
    bg_ctx *ctx = bg__op_begin(name, 1, (bg_tensor *[]){ a });
    if (!ctx) return NULL;
    BG_CUDA_DISPATCH(ctx, bg__cuda_unary(ctx, op, a, p0, p1)); /* cuda hook */
    if (!bg__check_dtype(ctx, name, "input", a, BG_F32)) return NULL;
    bg_tensor *out = bg__step_new(ctx, BG_F32, a->ndim, a->shape);
    if (!out) return NULL;
    const float *x = bg__contig_data(a);
    if (!x) return NULL;
    float *y = out->data;
    int64_t n = bg__numel(a->ndim, a->shape);
    unary_kernel(op, x, y, n, p0, p1);
    bg_node *node = bg__record(op, out, 1, (bg_tensor *[]){ a });
    if (node) {
        node->f[0] = p0;
        node->f[1] = p1;
        node->aux = (void *)x; /* contiguous input values (arena or the input itself) */
    }
    return out;
}

static void unary_backward(bg_node *node)
{
    bg_tensor *a = node->in[0];
    if (!bg__needs_grad(a)) return;
    bool as;
    float *g = bg__grad_dst(a, &as);
    const float *go = bg__grad_of(node->out), *x = node->aux, *y = node->out->data;
    if (!g || !go) return;
    int64_t n = bg__numel(a->ndim, a->shape);
    unary_grad_kernel(node->op, x, y, go, g, n, node->f, as);
}

bg_tensor *bg_add_scalar(bg_tensor *a, float s) { return unary(BG_OP_ADD_SCALAR, a, s, 0); }
bg_tensor *bg_mul_scalar(bg_tensor *a, float s) { return unary(BG_OP_MUL_SCALAR, a, s, 0); }
bg_tensor *bg_neg(bg_tensor *a) { return unary(BG_OP_NEG, a, 0, 0); }
bg_tensor *bg_exp(bg_tensor *a) { return unary(BG_OP_EXP, a, 0, 0); }
bg_tensor *bg_log(bg_tensor *a) { return unary(BG_OP_LOG, a, 0, 0); }
bg_tensor *bg_sqrt(bg_tensor *a) { return unary(BG_OP_SQRT, a, 0, 0); }
bg_tensor *bg_rsqrt(bg_tensor *a) { return unary(BG_OP_RSQRT, a, 0, 0); }
bg_tensor *bg_pow(bg_tensor *a, float p) { return unary(BG_OP_POW, a, p, 0); }
bg_tensor *bg_abs(bg_tensor *a) { return unary(BG_OP_ABS, a, 0, 0); }
bg_tensor *bg_relu(bg_tensor *a) { return unary(BG_OP_RELU, a, 0, 0); }
bg_tensor *bg_silu(bg_tensor *a) { return unary(BG_OP_SILU, a, 0, 0); }
bg_tensor *bg_gelu(bg_tensor *a) { return unary(BG_OP_GELU, a, 0, 0); }
bg_tensor *bg_sigmoid(bg_tensor *a) { return unary(BG_OP_SIGMOID, a, 0, 0); }
bg_tensor *bg_tanh(bg_tensor *a) { return unary(BG_OP_TANH, a, 0, 0); }

bg_tensor *bg_clamp(bg_tensor *a, float lo, float hi)
{
    if (a && !(lo <= hi)) {
        bg__error(a->ctx, BG_EINVAL, "clamp: lo %g > hi %g", (double)lo, (double)hi);
        return NULL;
    }
    return unary(BG_OP_CLAMP, a, lo, hi);
}

void bg__backward_add_scalar(bg_node *node) { unary_backward(node); }
void bg__backward_mul_scalar(bg_node *node) { unary_backward(node); }
void bg__backward_neg(bg_node *node) { unary_backward(node); }
void bg__backward_exp(bg_node *node) { unary_backward(node); }
void bg__backward_log(bg_node *node) { unary_backward(node); }
void bg__backward_sqrt(bg_node *node) { unary_backward(node); }
void bg__backward_rsqrt(bg_node *node) { unary_backward(node); }
void bg__backward_pow(bg_node *node) { unary_backward(node); }
void bg__backward_abs(bg_node *node) { unary_backward(node); }
void bg__backward_clamp(bg_node *node) { unary_backward(node); }
void bg__backward_relu(bg_node *node) { unary_backward(node); }
void bg__backward_silu(bg_node *node) { unary_backward(node); }
void bg__backward_gelu(bg_node *node) { unary_backward(node); }
void bg__backward_sigmoid(bg_node *node) { unary_backward(node); }
void bg__backward_tanh(bg_node *node) { unary_backward(node); }

/* ---- swiglu: silu(gate) * up as one op ------------------------------------------------- */

/* silu over one chunk, by the kernel bg_silu uses (the same bits). */
static void silu_span(const float *x, float *y, int64_t n)
{
    if (bg__vmath_vexp()) {
        bg__silu_fwd_vec(x, y, n);
        return;
    }
    for (int64_t i = 0; i < n; i++) y[i] = x[i] * sigmoid_f(x[i]);
}

/* y *= u over one chunk (swiglu's second half), in the widest vectors the CPU has. */
BG_CLONES static void mul_into(float *restrict y, const float *restrict u, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] *= u[i];
}

/* swiglu's gradients over one chunk, sigmoid(x) computed once for both: dg = base + (go u)
 * silu'(x) as bg_silu's backward computes it (bg_mul's rule hands it go u), du = base +
 * go silu(x) as bg_mul's rule; NULL skips a gradient, base is 0 where as_* is set. */
static void swiglu_grad_span(const float *x, const float *u, const float *go, float *dg, float *du,
                             int64_t n, bool as_g, bool as_u)
{
    if (bg__vmath_vexp()) {
        bg__swiglu_bwd_vec(x, u, go, dg, du, n, as_g, as_u);
        return;
    }
    for (int64_t i = 0; i < n; i++) {
        float s = sigmoid_f(x[i]);
        if (dg) dg[i] = BG_GBASE(as_g, dg[i]) + (go[i] * u[i]) * (s * (1.0f + x[i] * (1.0f - s)));
        if (du) du[i] = BG_GBASE(as_u, du[i]) + go[i] * (x[i] * s);
    }
}

/* The values and gradients are bit for bit those of bg_mul(bg_silu(gate), up); backward
 * recomputes silu(gate) instead of keeping it, so the op saves only its two inputs. */
bg_tensor *bg_swiglu(bg_tensor *gate, bg_tensor *up)
{
    bg_ctx *ctx = bg__op_begin("swiglu", 2, (bg_tensor *[]){ gate, up });
    if (!ctx) return NULL;
    BG_CUDA_DISPATCH(ctx, bg_mul(bg_silu(gate), up)); /* cuda hook: composed on the device */
    if (!bg__check_dtype(ctx, "swiglu", "gate", gate, BG_F32) ||
        !bg__check_dtype(ctx, "swiglu", "up", up, BG_F32))
        return NULL;
    if (!bg__same_shape(gate, up)) {
        char a[64], b[64];
        bg__error(ctx, BG_ESHAPE, "swiglu: gate %s and up %s differ in shape",
                  bg__shape_str(gate, a, sizeof a), bg__shape_str(up, b, sizeof b));
        return NULL;
    }
    bg_tensor *out = bg__step_new(ctx, BG_F32, gate->ndim, gate->shape);
    const float *x = bg__contig_data(gate), *u = bg__contig_data(up);
    if (!out || !x || !u) return NULL;
    float *y = out->data;
    int64_t n = bg__numel(gate->ndim, gate->shape);
    PAR_CHUNKS({
        silu_span(x + c0, y + c0, c1 - c0);
        mul_into(y + c0, u + c0, c1 - c0);
    });
    bg_node *node = bg__record(BG_OP_SWIGLU, out, 2, (bg_tensor *[]){ gate, up });
    if (node) {
        const float **sv = bg__arena_alloc(ctx, 2 * sizeof *sv);
        if (!sv) return NULL;
        sv[0] = x; /* contiguous values (arena copies or the inputs themselves, pinned) */
        sv[1] = u;
        node->aux = sv;
    }
    return out;
}

void bg__backward_swiglu(bg_node *node)
{
    const float *const *sv = node->aux, *x = sv[0], *u = sv[1];
    bg_tensor *gate = node->in[0], *up = node->in[1];
    const float *go = bg__grad_of(node->out);
    bool as_g = false, as_u = false;
    float *dg = bg__needs_grad(gate) ? bg__grad_dst(gate, &as_g) : NULL;
    /* swiglu(t, t): dg == du, and the second grad_dst reports the buffer as written (as_u
     * false); each element's gate term is stored before its up term is read and added, so
     * the one pass gives both */
    float *du = bg__needs_grad(up) ? bg__grad_dst(up, &as_u) : NULL;
    if (!go || (bg__needs_grad(gate) && !dg) || (bg__needs_grad(up) && !du)) return;
    int64_t n = bg__numel(gate->ndim, gate->shape);
    PAR_CHUNKS(swiglu_grad_span(x + c0, u + c0, go + c0, dg ? dg + c0 : NULL, du ? du + c0 : NULL,
                                c1 - c0, as_g, as_u));
}
