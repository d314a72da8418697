/* tape.c - recording ops, the backward walk, gradient buffers and the op table. */
#include <math.h>

#include "autograd/tape.h"
#include "cuda/cuda_dispatch.h"

static const char *const op_names[] = {
#define BG_OP(e, n, k) #n,
#include "autograd/ops.def"
#undef BG_OP
};

static const bg_backward_fn backward_fns[] = {
#define BG_OP(e, n, k) bg__backward_##n,
#include "autograd/ops.def"
#undef BG_OP
};

int bg_op_count(void) { return BG_OP_COUNT; }
const char *bg_op_name(int op) { return (op >= 0 && op < BG_OP_COUNT) ? op_names[op] : NULL; }

bg_ctx *bg__op_begin(const char *op, int n, bg_tensor *const *in)
{
    bg_ctx *ctx = NULL;
    for (int i = 0; i < n; i++) {
        if (!in[i]) return NULL; /* an earlier error is already recorded */
        if (!bg__check_live(in[i], op)) return NULL;
        if (!ctx) ctx = in[i]->ctx;
        if (in[i]->ctx != ctx) {
            bg__error(ctx, BG_EINVAL, "%s: inputs belong to different contexts", op);
            return NULL;
        }
        if (in[i]->device != in[0]->device) {
            bg__error(ctx, BG_EDEVICE,
                      "%s: input %d is on %s, input 0 on %s (copy with "
                      "bg_tensor_to first)",
                      op, i, in[i]->device == BG_CPU ? "cpu" : "cuda",
                      in[0]->device == BG_CPU ? "cpu" : "cuda");
            return NULL;
        }
    }
    if (ctx && ctx->err_code) return NULL; /* sticky: keep the first error */
    return ctx;
}

/* Which values each op's backward rule reads: bit i for input i, PIN_OUT for the output.
 * A pinned tensor's pool buffer is not given back before that rule ran, even when its
 * creator drops it (bg__step_drop). Ops not listed read everything. */
#define PIN_OUT (1u << 15)
#define PIN_INPUTS 0xffu
static unsigned pin_mask(int op)
{
    switch (op) {
    case BG_OP_ADD:
    case BG_OP_SUB:
    case BG_OP_RESHAPE:
    case BG_OP_PERMUTE:
    case BG_OP_TRANSPOSE:
    case BG_OP_SLICE:
    case BG_OP_CONCAT:
    case BG_OP_CONTIGUOUS:
    case BG_OP_ROPE:
    case BG_OP_DROPOUT:
    case BG_OP_ADD_SCALAR:
    case BG_OP_MUL_SCALAR:
    case BG_OP_NEG:
    case BG_OP_BITLINEAR: /* reads its saved levels and codes only */ return 0;
    case BG_OP_EMBEDDING: return 1u << 1; /* the ids */
    case BG_OP_MUL:
    case BG_OP_DIV:
    case BG_OP_MATMUL:
    case BG_OP_RMSNORM:
    case BG_OP_LAYERNORM:
    case BG_OP_ATTENTION:
    case BG_OP_CROSS_ENTROPY:
    case BG_OP_MSE:
    case BG_OP_SWIGLU: return PIN_INPUTS;
    default: return PIN_INPUTS | PIN_OUT;
    }
}

bg_node *bg__record(int op, bg_tensor *out, int n_in, bg_tensor *const *in)
{
    if (!out) return NULL;
    bg_ctx *ctx = out->ctx;
    if (!ctx->grad_enabled) return NULL;
    bool any = false;
    for (int i = 0; i < n_in; i++) any = any || (in[i] && in[i]->requires_grad);
    if (!any) return NULL;
    struct bg_tape *tape = ctx->tape;
    if (tape->n == tape->cap) {
        size_t cap = tape->cap ? tape->cap * 2 : 256;
        bg_node *nodes = bg__realloc(ctx, tape->nodes, cap * sizeof *nodes);
        if (!nodes) {
            bg__error(ctx, BG_ENOMEM, "autograd: out of memory growing the tape");
            return NULL;
        }
        tape->nodes = nodes;
        tape->cap = cap;
    }
    bg_node *node = &tape->nodes[tape->n++];
    memset(node, 0, sizeof *node);
    node->op = op;
    node->n_in = n_in;
    node->out = out;
    for (int i = 0; i < n_in; i++) {
        node->in[i] = in[i];
        if (!in[i]) continue;
        in[i]->recorded_epoch = tape->epoch;
        /* Views share storage: a write through any alias must see the mark. */
        if (in[i]->view_of) ((bg_tensor *)in[i]->view_of)->recorded_epoch = tape->epoch;
    }
    unsigned mask = pin_mask(op);
    for (int i = 0; i < n_in; i++)
        if (in[i] && (mask & (1u << i))) {
            bg__storage_of(in[i])->pins++;
            node->pinned |= 1u << i;
        }
    if (mask & PIN_OUT) {
        bg__storage_of(out)->pins++;
        node->pinned |= PIN_OUT;
    }
    out->requires_grad = true;
    out->is_leaf = false;
    return node;
}

void bg__tape_clear(bg_ctx *ctx)
{
    ctx->tape->n = 0;
    ctx->tape->epoch++;
}

static float *grad_new(bg_tensor *t, bool zero)
{
    bg_ctx *ctx = t->ctx;
    bg_tensor *g;
    if (t->persistent) {
        g = bg_tensor_new(ctx, BG_F32, t->ndim, t->shape);
        if (g) snprintf(g->name, sizeof g->name, "%.58s.grad", t->name);
    } else if (ctx->device == BG_CPU) {
        g = bg__grad_pool_get(ctx, t->ndim, t->shape, zero);
    } else {
        g = bg_zeros(ctx, BG_F32, t->ndim, t->shape);
    }
    if (!g) return NULL;
    t->grad = g;
    return g->data;
}

float *bg__grad_of(bg_tensor *t)
{
    if (!bg__needs_grad(t)) return NULL;
    return t->grad ? t->grad->data : grad_new(t, true);
}

float *bg__grad_dst(bg_tensor *t, bool *assign)
{
    *assign = false;
    if (!bg__needs_grad(t)) return NULL;
    if (t->grad) return t->grad->data;
    bool fresh = !t->persistent && t->ctx->device == BG_CPU;
    float *g = grad_new(t, !fresh);
    *assign = g && fresh;
    return g;
}

bool bg__grad_pass(bg_tensor *in, bg_tensor *out)
{
    return bg__needs_grad(in) && in->ctx->device == BG_CPU && bg__grad_pool_pass(out, in);
}

void bg__add_strided(float *dst, const int64_t *dst_stride, const float *src, int ndim,
                     const int64_t *shape)
{
    int64_t sh[BG_MAX_DIMS] = { 1, 1, 1, 1 }, st[BG_MAX_DIMS] = { 0, 0, 0, 0 };
    int off = BG_MAX_DIMS - ndim;
    for (int i = 0; i < ndim; i++) {
        sh[off + i] = shape[i];
        st[off + i] = dst_stride[i];
    }
    int64_t k = 0;
    for (int64_t a = 0; a < sh[0]; a++)
        for (int64_t b = 0; b < sh[1]; b++)
            for (int64_t c = 0; c < sh[2]; c++) {
                float *d = dst + a * st[0] + b * st[1] + c * st[2];
                for (int64_t e = 0; e < sh[3]; e++) d[e * st[3]] += src[k++];
            }
}

/* The values this node's rule read are no longer needed by it. */
static void node_unpin(bg_ctx *ctx, bg_node *node)
{
    for (int i = 0; i < node->n_in; i++)
        if (node->pinned & (1u << i)) bg__unpin(node->in[i]);
    if (node->pinned & PIN_OUT) bg__unpin(node->out);
    node->pinned = 0;
    if (node->owned) bg__pool_give(ctx, node->owned);
    node->owned = NULL;
}

/* After a node's rule ran on the CPU: its scratch goes back to the arena (rules create no
 * step tensors that outlive them: gradients come from the pool), and the output's gradient,
 * now consumed, goes back to the pool unless the caller asked to keep it. */
static void node_done(bg_ctx *ctx, bg_node *node, bg_arena_mark mark, bg_tensor *step_head)
{
    for (bg_tensor *t = ctx->step_list; t && t != step_head; t = t->next_step)
        if (t->pooled) { /* a step tensor the rule made dies with the rule's scratch */
            bg__pool_give(ctx, t->data);
            t->pooled = false;
        }
    bg__arena_back_to(ctx, mark);
    ctx->step_list = step_head;
    bg_tensor *out = node->out;
    if (out->grad && !out->grad->persistent && !out->retain_grad) {
        bg__grad_pool_put(out->grad);
        out->grad = NULL;
    }
    node_unpin(ctx, node);
}

void bg_ctx_set_grad_ready(bg_ctx *ctx, bg_grad_ready_fn fn, void *user)
{
    if (!ctx) return;
    ctx->grad_ready = fn;
    ctx->grad_ready_user = user;
}

static bool hooked_param(const bg_tensor *t)
{
    return t && t->persistent && t->requires_grad;
}

/* For the grad-ready hook: each parameter remembers the earliest node reading it (its
 * gradient is final once the backward walk has run that node). */
static void hook_prepare(struct bg_tape *tape)
{
    for (size_t i = tape->n; i-- > 0;) {
        bg_node *node = &tape->nodes[i];
        for (int k = 0; k < node->n_in; k++)
            if (hooked_param(node->in[k])) node->in[k]->grad_final_at = (int64_t)i + 1;
    }
}

static void hook_fire(bg_ctx *ctx, bg_node *node, size_t i)
{
    for (int k = 0; k < node->n_in; k++) {
        bg_tensor *p = node->in[k];
        if (!hooked_param(p) || p->grad_final_at != (int64_t)i + 1) continue;
        p->grad_final_at = 0; /* once, even when the node reads p twice */
        ctx->grad_ready(ctx->grad_ready_user, p);
    }
}

static int backward_walk(bg_ctx *ctx)
{
    struct bg_tape *tape = ctx->tape;
    bg__pool_backward_begin(ctx);
    bool hook = ctx->grad_ready != NULL;
    if (hook) hook_prepare(tape);
    for (size_t i = tape->n; i-- > 0;) {
        bg_node *node = &tape->nodes[i];
        if (!node->out->grad) { /* nothing flowed into this node */
            if (hook) hook_fire(ctx, node, i);
            continue;
        }
#ifdef BG_HAVE_CUDA
        if (ctx->device == BG_CUDA) {
            bg__cuda_backward(node); /* cuda hook: device rules */
            if (ctx->err_code) return ctx->err_code;
            if (hook) hook_fire(ctx, node, i);
            continue;
        }
#endif
        bg_arena_mark mark = bg__arena_mark(ctx);
        bg_tensor *step_head = ctx->step_list;
        backward_fns[node->op](node);
        if (ctx->err_code) return ctx->err_code;
        node_done(ctx, node, mark, step_head);
        if (hook) hook_fire(ctx, node, i);
    }
    if (hook) ctx->grad_ready(ctx->grad_ready_user, NULL);
    return BG_OK;
}

static int backward_begin(bg_tensor *out, const char *what)
{
    if (!out) return BG_EINVAL;
    if (!bg__check_live(out, what)) return BG_ESTATE;
    bg_ctx *ctx = out->ctx;
    if (ctx->err_code) return ctx->err_code;
    if (!out->requires_grad || out->is_leaf)
        return bg__error(ctx, BG_ESTATE,
                         "%s: tensor does not require grad (no recorded op "
                         "produced it; is grad mode on and a parameter involved?)",
                         what);
    if (out->recorded_epoch > ctx->tape->epoch || ctx->tape->n == 0)
        return bg__error(ctx, BG_ESTATE,
                         "%s: the tape is empty (backward already ran this "
                         "step?)",
                         what);
    return BG_OK;
}

int bg_backward(bg_tensor *loss)
{
    int rc = backward_begin(loss, "bg_backward");
    if (rc) return rc;
    bg_ctx *ctx = loss->ctx;
    if (bg__numel(loss->ndim, loss->shape) != 1) {
        char s[64];
        return bg__error(ctx, BG_ESHAPE,
                         "bg_backward: loss %s is not a scalar; pass a seed "
                         "gradient with bg_backward_seed",
                         bg__shape_str(loss, s, sizeof s));
    }
#ifdef BG_HAVE_CUDA
    float v = loss->device == BG_CUDA ? bg_item(loss) : bg__f32(loss)[0]; /* cuda hook */
#else
    float v = bg__f32(loss)[0];
#endif
    if (!isfinite(v)) return bg__error(ctx, BG_ENONFINITE, "bg_backward: loss is %f", (double)v);
    float *g = bg__grad_of(loss);
    if (!g) return ctx->err_code ? ctx->err_code : BG_ENOMEM;
#ifdef BG_HAVE_CUDA
    if (ctx->device == BG_CUDA) bg__cuda_add_one(ctx, g); /* cuda hook */
    else
#endif
        g[0] += 1.0f;
    rc = backward_walk(ctx);
    bg__tape_clear(ctx);
    return rc;
}

int bg_backward_seed(bg_tensor *out, const bg_tensor *seed)
{
    int rc = backward_begin(out, "bg_backward_seed");
    if (rc) return rc;
    bg_ctx *ctx = out->ctx;
    if (!seed || !bg__check_live(seed, "bg_backward_seed") || !bg__same_shape(out, seed) ||
        seed->dtype != BG_F32) {
        char a[64], b[64];
        return bg__error(ctx, BG_ESHAPE, "bg_backward_seed: seed %s does not match output %s",
                         seed ? bg__shape_str(seed, a, sizeof a) : "NULL",
                         bg__shape_str(out, b, sizeof b));
    }
    float *g = bg__grad_of(out);
    if (!g) return ctx->err_code ? ctx->err_code : BG_ENOMEM;
    const float *s = bg__contig_data(seed);
    int64_t n = bg__numel(out->ndim, out->shape);
#ifdef BG_HAVE_CUDA
    if (ctx->device == BG_CUDA) bg__cuda_axpy(ctx, g, s, n, 1.0f); /* cuda hook */
    else
#endif
        for (int64_t i = 0; i < n; i++) g[i] += s[i];
    rc = backward_walk(ctx);
    bg__tape_clear(ctx);
    return rc;
}

int bg__backward_nested(bg_tensor *out, const float *seed, struct bg_tape *sub,
                        struct bg_tape *main)
{
    bg_ctx *ctx = out->ctx;
    float *g = bg__grad_of(out);
    int rc = g ? BG_OK : (ctx->err_code ? ctx->err_code : BG_ENOMEM);
    if (!rc) {
        int64_t n = bg__numel(out->ndim, out->shape);
        for (int64_t i = 0; i < n; i++) g[i] += seed[i];
        rc = backward_walk(ctx);
    }
    sub->n = 0;
    ctx->tape = main;
    return rc;
}

void bg__backward_custom(bg_node *node) { ((const bg_custom_rule *)node->aux)->backward(node); }

void bg_tensor_zero_grad(bg_tensor *t)
{
    if (t && t->magic == BG_MAGIC_LIVE && t->grad) {
        BG_CUDA_DISPATCH_VOID(t, bg__cuda_zero_grad(t)); /* cuda hook */
        memset(t->grad->data, 0, (size_t)bg__numel(t->ndim, t->shape) * sizeof(float));
    }
}

void bg_zero_grad(bg_ctx *ctx)
{
    for (bg_tensor *t = ctx->persist_list; t; t = t->next_persist)
        if (t->requires_grad) bg_tensor_zero_grad(t);
}
