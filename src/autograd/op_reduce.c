/* op_reduce.c - sum, mean and max along one axis or over everything.
 *
 * The input is viewed as [outer, n, inner] around the reduced axis. Each output element is
 * summed by one thread in index order (in double), and a full reduction sums fixed-size
 * blocks whose partials are added in order: results never depend on the thread count. */
#include <math.h>

#include "autograd/op_checks.h"
#include "autograd/tape.h"
#include "cuda/cuda_dispatch.h"

#define RED_BLOCK 8192

/* Eight independent double accumulators (a fixed order, so still deterministic) keep the
 * adds from waiting on each other. */
static double block_sum(const float *x, int64_t n)
{
    double acc[8] = { 0, 0, 0, 0, 0, 0, 0, 0 };
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) acc[k] += x[i + k];
    double s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; i < n; i++) s += x[i];
    return s;
}

/* Sum of n contiguous floats, deterministic for any thread count: at most 1024 blocks
 * whose size depends only on n, partials added in order. */
static double full_sum(const float *x, int64_t n)
{
    int64_t nb = (n + RED_BLOCK - 1) / RED_BLOCK;
    if (nb <= 1) return block_sum(x, n);
    if (nb > 1024) nb = 1024;
    int64_t bs = (n + nb - 1) / nb;
    double part[1024];
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < nb; b++) {
        int64_t lo = b * bs, len = lo >= n ? 0 : (n - lo < bs ? n - lo : bs);
        part[b] = block_sum(x + lo, len);
    }
    double s = 0.0;
    for (int64_t b = 0; b < nb; b++) s += part[b];
    return s;
}

static void reduce_kernel(int op, const bg_red_geom *g, const float *x, float *y)
{
    if (g->outer == 1 && g->inner == 1 && op != BG_OP_MAX) {
        double s = full_sum(x, g->n);
        y[0] = (float)(op == BG_OP_MEAN ? s / (double)g->n : s);
        return;
    }
    int64_t m = g->outer * g->inner;
#pragma omp parallel for schedule(static) if (m * g->n > BG_PAR_MIN)
    for (int64_t o = 0; o < m; o++) {
        int64_t oi = o / g->inner, ii = o % g->inner;
        const float *p = x + oi * g->n * g->inner + ii;
        if (op == BG_OP_MAX) {
            float best = p[0];
            for (int64_t k = 1; k < g->n; k++)
                if (p[k * g->inner] > best || isnan(p[k * g->inner])) best = p[k * g->inner];
            y[o] = best;
        } else {
            double s = 0.0;
            if (g->inner == 1) s = block_sum(p, g->n);
            else
                for (int64_t k = 0; k < g->n; k++) s += p[k * g->inner];
            y[o] = (float)(op == BG_OP_MEAN ? s / (double)g->n : s);
        }
    }
}

static bg_tensor *reduce(int op, bg_tensor *a, int axis, bool keepdim)
{
    const char *name = bg_op_name(op);
    bg_ctx *ctx = bg__op_begin(name, 1, (bg_tensor *[]){ a });
    if (!ctx) return NULL;
    BG_CUDA_DISPATCH(ctx, bg__cuda_reduce(ctx, op, a, axis, keepdim)); /* cuda hook */
    bg_red_geom g;
    if (!bg__reduce_check(ctx, op, a, axis, keepdim, &g)) return NULL;
    bg_tensor *out = bg__step_new(ctx, BG_F32, g.out_ndim, g.out_shape);
    const float *x = bg__contig_data(a);
    if (!out || !x) return NULL;
    reduce_kernel(op, &g, x, out->data);
    bg_node *node = bg__record(op, out, 1, (bg_tensor *[]){ a });
    if (node) {
        node->i[0] = axis;
        node->i[1] = keepdim;
        node->aux = (void *)x;
    }
    return out;
}

bg_tensor *bg_sum(bg_tensor *a, int axis, bool keepdim) { return reduce(BG_OP_SUM, a, axis, keepdim); }
bg_tensor *bg_mean(bg_tensor *a, int axis, bool keepdim) { return reduce(BG_OP_MEAN, a, axis, keepdim); }
bg_tensor *bg_max(bg_tensor *a, int axis, bool keepdim) { return reduce(BG_OP_MAX, a, axis, keepdim); }

static void reduce_backward(bg_node *node)
{
    bg_tensor *a = node->in[0];
    if (!bg__needs_grad(a)) return;
    bg_red_geom g;
    bg__red_geom_init(&g, a, (int)node->i[0], node->i[1] != 0, "backward");
    float *ga = bg__grad_of(a);
    const float *go = bg__grad_of(node->out), *x = node->aux, *y = node->out->data;
    if (!ga || !go) return;
    int64_t m = g.outer * g.inner;
    int op = node->op;
    float scale = op == BG_OP_MEAN ? 1.0f / (float)g.n : 1.0f;
#pragma omp parallel for schedule(static) if (m * g.n > BG_PAR_MIN)
    for (int64_t o = 0; o < m; o++) {
        int64_t base = (o / g.inner) * g.n * g.inner + o % g.inner;
        if (op == BG_OP_MAX) {
            /* The gradient goes to the first maximal element. */
            for (int64_t k = 0; k < g.n; k++)
                if (x[base + k * g.inner] == y[o]) {
                    ga[base + k * g.inner] += go[o];
                    break;
                }
        } else {
            for (int64_t k = 0; k < g.n; k++) ga[base + k * g.inner] += go[o] * scale;
        }
    }
}

void bg__backward_sum(bg_node *node) { reduce_backward(node); }
void bg__backward_mean(bg_node *node) { reduce_backward(node); }
void bg__backward_max(bg_node *node) { reduce_backward(node); }
