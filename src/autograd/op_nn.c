/* op_nn.c - neural-network ops on the CPU: embedding (gather; scatter-add backward),
 * softmax and log_softmax, fused cross-entropy, mse, fused rmsnorm and layernorm, and
 * inverted dropout. Each forward kernel sits next to its backward rule.
 *
 * Determinism: a row is always computed by one thread, and every reduction across rows
 * (parameter gradients, scalar losses) runs in an order fixed by the shapes alone, so
 * results are bit-identical for any number of OpenMP threads. */
#include <math.h>
#include <string.h>

#include "autograd/op_checks.h"
#include "autograd/tape.h"
#include "autograd/vec8.h"
#include "autograd/vmath.h"
#include "autograd/vmath_x86.h"
#include "cuda/cuda_dispatch.h"

/* Most row blocks a parameter-gradient reduction over rows is cut into (fixed, never per
 * thread, so the summation order depends on the shapes alone). */
#define NORM_ROW_BLOCKS 64
/* Elements per partial sum of a whole-tensor reduction (fixed, never per thread). */
#define SUM_BLOCK 4096

/* ---- helpers ------------------------------------------------------------------ */

/* A contiguous int32 pointer for t: its own data, or a packed arena copy. */
static const int32_t *contig_i32(const bg_tensor *t)
{
    if (bg__is_contig(t)) return t->data;
    int64_t n = bg__numel(t->ndim, t->shape);
    int32_t *buf = bg__arena_alloc(t->ctx, (size_t)n * sizeof *buf);
    if (!buf) return NULL;
    const int32_t *src = t->data;
    for (int64_t i = 0; i < n; i++) {
        int64_t off = 0, rest = i;
        for (int d = t->ndim - 1; d >= 0; d--) {
            off += (rest % t->shape[d]) * t->stride[d];
            rest /= t->shape[d];
        }
        buf[i] = src[off];
    }
    return buf;
}

/* ---- embedding ---------------------------------------------------------------- */

bg_tensor *bg_embedding(bg_tensor *weight, bg_tensor *ids)
{
    bg_ctx *ctx = bg__op_begin("embedding", 2, (bg_tensor *[]){ weight, ids });
    if (!ctx) return NULL;
    BG_CUDA_DISPATCH(ctx, bg__cuda_embedding(ctx, weight, ids)); /* cuda hook */
    if (!bg__check_cpu(ctx, "embedding", "weight", weight) ||
        !bg__embedding_check(ctx, weight, ids))
        return NULL;
    const int32_t *id = contig_i32(ids);
    if (!id) return NULL;
    int64_t V = weight->shape[0], D = weight->shape[1], n = bg__numel(ids->ndim, ids->shape);
    for (int64_t i = 0; i < n; i++) {
        if (id[i] < 0 || id[i] >= V) {
            char s[80];
            bg__error(ctx, BG_EINVAL, "embedding: id %d at ids%s is out of range [0, %lld)",
                      (int)id[i], bg__index_str(ids, i, s, sizeof s), (long long)V);
            return NULL;
        }
    }
    int64_t shape[BG_MAX_DIMS];
    for (int d = 0; d < ids->ndim; d++) shape[d] = ids->shape[d];
    shape[ids->ndim] = D;
    bg_tensor *out = bg__step_new(ctx, BG_F32, ids->ndim + 1, shape);
    if (!out) return NULL;
    const float *w = weight->data;
    float *y = out->data;
    int64_t s0 = weight->stride[0], s1 = weight->stride[1];
#pragma omp parallel for schedule(static) if (n * D > BG_PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        const float *row = w + (int64_t)id[i] * s0;
        for (int64_t c = 0; c < D; c++) y[i * D + c] = row[c * s1];
    }
    bg_node *node = bg__record(BG_OP_EMBEDDING, out, 2, (bg_tensor *[]){ weight, ids });
    if (node) node->aux = (void *)id;
    return out;
}

/* Scatter-add. Positions are grouped by id with a stable counting sort; one thread owns
 * each weight row and adds its positions in position order, whatever the thread count. */
void bg__backward_embedding(bg_node *node)
{
    bg_tensor *w = node->in[0], *ids = node->in[1];
    if (!bg__needs_grad(w)) return;
    float *gw = bg__grad_of(w);
    const float *go = bg__grad_of(node->out);
    bg_ctx *ctx = w->ctx;
    const int32_t *id = node->aux;
    int64_t V = w->shape[0], D = w->shape[1], n = bg__numel(ids->ndim, ids->shape);
    int64_t *start = bg__arena_alloc(ctx, (size_t)(V + 1) * sizeof *start);
    int64_t *order = bg__arena_alloc(ctx, (size_t)n * sizeof *order);
    if (!gw || !go || !start || !order) return;
    memset(start, 0, (size_t)(V + 1) * sizeof *start);
    for (int64_t i = 0; i < n; i++) start[id[i] + 1]++;
    for (int64_t v = 0; v < V; v++) start[v + 1] += start[v];
    for (int64_t i = 0; i < n; i++) order[start[id[i]]++] = i; /* start[v] is now end of v */
#pragma omp parallel for schedule(static) if (n * D > BG_PAR_MIN)
    for (int64_t v = 0; v < V; v++) {
        float *dst = gw + v * D;
        for (int64_t k = v ? start[v - 1] : 0; k < start[v]; k++) {
            const float *src = go + order[k] * D;
            for (int64_t c = 0; c < D; c++) dst[c] += src[c];
        }
    }
}

/* ---- softmax and log_softmax --------------------------------------------------- */

static void softmax_row(const float *x, float *y, int64_t C, bool log_out)
{
    if (C == 0) return;
    float m = -INFINITY;
    for (int64_t c = 0; c < C; c++) m = x[c] > m ? x[c] : m;
    double s = 0.0;
    if (log_out) {
        for (int64_t c = 0; c < C; c++) s += bg_expf(x[c] - m);
        float ls = (float)log(s);
        for (int64_t c = 0; c < C; c++) y[c] = (x[c] - m) - ls;
    } else {
        for (int64_t c = 0; c < C; c++) y[c] = bg_expf(x[c] - m); /* vectorises */
        for (int64_t c = 0; c < C; c++) s += y[c];
        float inv = (float)(1.0 / s);
        for (int64_t c = 0; c < C; c++) y[c] *= inv;
    }
}

static bg_tensor *softmax_op(int op, const char *name, bg_tensor *a)
{
    bg_ctx *ctx = bg__op_begin(name, 1, (bg_tensor *[]){ a });
    if (!ctx) return NULL;
    BG_CUDA_DISPATCH(ctx, bg__cuda_softmax(ctx, op, a)); /* cuda hook */
    if (!bg__check_cpu(ctx, name, "input", a) || !bg__softmax_check(ctx, name, a)) return NULL;
    const float *x = bg__contig_data(a);
    bg_tensor *out = x ? bg__step_new(ctx, BG_F32, a->ndim, a->shape) : NULL;
    if (!out) return NULL;
    int64_t rows = bg__n_rows(a), C = a->shape[a->ndim - 1];
    float *y = out->data;
    bool log_out = op == BG_OP_LOG_SOFTMAX;
#pragma omp parallel for schedule(static) if (rows * C > BG_PAR_MIN)
    for (int64_t r = 0; r < rows; r++) softmax_row(x + r * C, y + r * C, C, log_out);
    bg__record(op, out, 1, (bg_tensor *[]){ a });
    return out;
}

bg_tensor *bg_softmax(bg_tensor *a) { return softmax_op(BG_OP_SOFTMAX, "softmax", a); }
bg_tensor *bg_log_softmax(bg_tensor *a) { return softmax_op(BG_OP_LOG_SOFTMAX, "log_softmax", a); }

/* softmax: dx = y * (dy - sum(dy * y)); log_softmax: dx = dy - exp(y) * sum(dy). */
static void softmax_backward(bg_node *node, bool log_out)
{
    bg_tensor *a = node->in[0];
    if (!bg__needs_grad(a)) return;
    float *gx = bg__grad_of(a);
    const float *gy = bg__grad_of(node->out);
    if (!gx || !gy) return;
    const float *y = node->out->data;
    int64_t rows = bg__n_rows(a), C = a->shape[a->ndim - 1];
#pragma omp parallel for schedule(static) if (rows * C > BG_PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *yr = y + r * C, *gr = gy + r * C;
        float *xr = gx + r * C;
        double s = 0.0;
        if (log_out) {
            for (int64_t c = 0; c < C; c++) s += gr[c];
            for (int64_t c = 0; c < C; c++) xr[c] += gr[c] - bg_expf(yr[c]) * (float)s;
        } else {
            for (int64_t c = 0; c < C; c++) s += (double)gr[c] * yr[c];
            for (int64_t c = 0; c < C; c++) xr[c] += yr[c] * (gr[c] - (float)s);
        }
    }
}

void bg__backward_softmax(bg_node *node) { softmax_backward(node, false); }
void bg__backward_log_softmax(bg_node *node) { softmax_backward(node, true); }

/* ---- cross-entropy -------------------------------------------------------------- */

typedef struct ce_saved {
    const float *logits; /* contiguous [rows, V] */
    const int32_t *targets;
    float *lse; /* log-sum-exp per row */
} ce_saved;

/* Counts the rows that take part; records an error for a target outside [0, V). */
static int64_t ce_count(bg_ctx *ctx, const bg_tensor *targets, const int32_t *t, int64_t rows,
                        int64_t V, int ignore_index)
{
    int64_t count = 0;
    for (int64_t r = 0; r < rows; r++) {
        if (t[r] == ignore_index) continue;
        if (t[r] < 0 || t[r] >= V) {
            char s[80];
            bg__error(ctx, BG_EINVAL,
                      "cross_entropy: target %d at targets%s is out of range "
                      "[0, %lld) and is not ignore_index (%d)",
                      (int)t[r], bg__index_str(targets, r, s, sizeof s), (long long)V,
                      ignore_index);
            return -1;
        }
        count++;
    }
    return count;
}

/* Loss of every row into loss[] (0 for ignored rows) and its log-sum-exp into lse[]. */
static void ce_rows(const float *x, const int32_t *t, int64_t rows, int64_t V, int ignore_index,
                    float eps, float *lse, double *loss)
{
    bool v512 = bg__vmath_vexp();
#pragma omp parallel for schedule(static) if (rows * V > BG_PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * V;
        float m = -INFINITY;
        for (int64_t j = 0; j < V; j++) m = xr[j] > m ? xr[j] : m;
        double s = 0.0, sx = 0.0;
        if (v512) { /* the exponentials a chunk at a time by the kernel (bg_expf's bits) */
            float e[1024];
            for (int64_t j0 = 0; j0 < V; j0 += 1024) {
                int64_t n = V - j0 < 1024 ? V - j0 : 1024;
                bg__exp_sub_vec(xr + j0, m, e, n);
                for (int64_t j = 0; j < n; j++) {
                    s += e[j];
                    sx += xr[j0 + j];
                }
            }
        } else {
            for (int64_t j = 0; j < V; j++) {
                s += bg_expf(xr[j] - m);
                sx += xr[j];
            }
        }
        double l = (double)m + log(s);
        lse[r] = (float)l;
        loss[r] = 0.0;
        if (t[r] != ignore_index)
            loss[r] = -(1.0 - eps) * (xr[t[r]] - l) - (eps / (double)V) * (sx - (double)V * l);
    }
}

bg_tensor *bg_cross_entropy(bg_tensor *logits, bg_tensor *targets, int ignore_index,
                            float label_smoothing)
{
    bg_ctx *ctx = bg__op_begin("cross_entropy", 2, (bg_tensor *[]){ logits, targets });
    if (!ctx) return NULL;
    BG_CUDA_DISPATCH(ctx, bg__cuda_cross_entropy(ctx, logits, targets, ignore_index,
                                                 label_smoothing)); /* cuda hook */
    if (!bg__check_cpu(ctx, "cross_entropy", "logits", logits) ||
        !bg__cross_entropy_check(ctx, logits, targets, label_smoothing))
        return NULL;
    int64_t rows = bg__n_rows(logits), V = logits->shape[logits->ndim - 1];
    const int32_t *t = contig_i32(targets);
    if (!t) return NULL;
    int64_t count = ce_count(ctx, targets, t, rows, V, ignore_index);
    if (count < 0) return NULL;
    const float *x = bg__contig_data(logits);
    float *lse = bg__arena_alloc(ctx, (size_t)rows * sizeof *lse);
    double *loss = bg__arena_alloc(ctx, (size_t)rows * sizeof *loss);
    ce_saved *sv = bg__arena_alloc(ctx, sizeof *sv);
    bg_tensor *out = bg__step_new(ctx, BG_F32, 0, NULL);
    if (!x || !lse || !loss || !sv || !out) return NULL;
    ce_rows(x, t, rows, V, ignore_index, label_smoothing, lse, loss);
    double total = 0.0;
    for (int64_t r = 0; r < rows; r++) total += loss[r];
    bg__f32(out)[0] = count ? (float)(total / (double)count) : 0.0f;
    bg_node *node = bg__record(BG_OP_CROSS_ENTROPY, out, 2, (bg_tensor *[]){ logits, targets });
    if (node) {
        *sv = (ce_saved){ .logits = x, .targets = t, .lse = lse };
        node->aux = sv;
        node->f[0] = label_smoothing;
        node->i[0] = ignore_index;
        node->i[1] = count;
    }
    return out;
}

/* dlogits = (softmax - ((1 - eps) * onehot + eps / V)) * gout / count. */
void bg__backward_cross_entropy(bg_node *node)
{
    bg_tensor *logits = node->in[0];
    int64_t count = node->i[1];
    if (!bg__needs_grad(logits) || count == 0) return;
    bool as;
    float *gx = bg__grad_dst(logits, &as);
    const float *go = bg__grad_of(node->out);
    if (!gx || !go) return;
    const ce_saved *sv = node->aux;
    int64_t rows = bg__n_rows(logits), V = logits->shape[logits->ndim - 1];
    int ignore_index = (int)node->i[0];
    float eps = node->f[0], k = go[0] / (float)count;
    float smooth = eps / (float)V, hit = 1.0f - eps;
    bool v512 = bg__vmath_vexp();
#pragma omp parallel for schedule(static) if (rows * V > BG_PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        int32_t t = sv->targets[r];
        float *gr = gx + r * V;
        if (t == ignore_index) {
            if (as) memset(gr, 0, (size_t)V * sizeof *gr);
            continue;
        }
        const float *xr = sv->logits + r * V;
        float l = sv->lse[r];
        if (as && v512) { /* exp into the row first (the same bits as bg_expf) */
            bg__exp_sub_vec(xr, l, gr, V);
            for (int64_t j = 0; j < V; j++) gr[j] = 0.0f + (gr[j] - smooth) * k;
        } else if (as) { /* two loops: each vectorises */
            for (int64_t j = 0; j < V; j++) gr[j] = 0.0f + (bg_expf(xr[j] - l) - smooth) * k;
        } else {
            for (int64_t j = 0; j < V; j++) gr[j] += (bg_expf(xr[j] - l) - smooth) * k;
        }
        gr[t] -= hit * k;
    }
}

/* ---- mse -------------------------------------------------------------------------- */

/* sum((a - b)^2) over fixed-size blocks summed in order: the same for any thread count. */
static double sum_sq_diff(bg_ctx *ctx, const float *a, const float *b, int64_t n)
{
    int64_t n_blk = (n + SUM_BLOCK - 1) / SUM_BLOCK;
    double *part = bg__arena_alloc(ctx, (size_t)n_blk * sizeof *part);
    if (!part) return NAN;
#pragma omp parallel for schedule(static) if (n > BG_PAR_MIN)
    for (int64_t blk = 0; blk < n_blk; blk++) {
        int64_t i1 = (blk + 1) * SUM_BLOCK < n ? (blk + 1) * SUM_BLOCK : n;
        double s = 0.0;
        for (int64_t i = blk * SUM_BLOCK; i < i1; i++) {
            double d = (double)a[i] - (double)b[i];
            s += d * d;
        }
        part[blk] = s;
    }
    double total = 0.0;
    for (int64_t blk = 0; blk < n_blk; blk++) total += part[blk];
    return total;
}

bg_tensor *bg_mse(bg_tensor *a, bg_tensor *b)
{
    bg_ctx *ctx = bg__op_begin("mse", 2, (bg_tensor *[]){ a, b });
    if (!ctx) return NULL;
    BG_CUDA_DISPATCH(ctx, bg__cuda_mse(ctx, a, b)); /* cuda hook */
    if (!bg__check_cpu(ctx, "mse", "a", a) || !bg__mse_check(ctx, a, b)) return NULL;
    int64_t n = bg__numel(a->ndim, a->shape);
    const float *pa = bg__contig_data(a), *pb = bg__contig_data(b);
    const float **sv = bg__arena_alloc(ctx, 2 * sizeof *sv);
    bg_tensor *out = bg__step_new(ctx, BG_F32, 0, NULL);
    if (!pa || !pb || !sv || !out) return NULL;
    double s = sum_sq_diff(ctx, pa, pb, n);
    if (ctx->err_code) return NULL;
    bg__f32(out)[0] = (float)(s / (double)n);
    bg_node *node = bg__record(BG_OP_MSE, out, 2, (bg_tensor *[]){ a, b });
    if (node) {
        sv[0] = pa;
        sv[1] = pb;
        node->aux = (void *)sv;
    }
    return out;
}

void bg__backward_mse(bg_node *node)
{
    const float *const *sv = node->aux;
    const float *pa = sv[0], *pb = sv[1];
    const float *go = bg__grad_of(node->out);
    if (!go) return;
    int64_t n = bg__numel(node->in[0]->ndim, node->in[0]->shape);
    float k = 2.0f * go[0] / (float)n;
    for (int side = 0; side < 2; side++) {
        bg_tensor *t = node->in[side];
        if (!bg__needs_grad(t)) continue;
        float *g = bg__grad_of(t);
        if (!g) return;
        float ks = side ? -k : k;
#pragma omp parallel for schedule(static) if (n > BG_PAR_MIN)
        for (int64_t i = 0; i < n; i++) g[i] += ks * (pa[i] - pb[i]);
    }
}

/* ---- rmsnorm and layernorm ------------------------------------------------------ */

typedef struct norm_saved {
    const float *x; /* contiguous [rows, C] */
    const float *w; /* contiguous [C] or NULL */
    float *mean;    /* per row; NULL for rmsnorm */
    float *rstd;    /* per row */
} norm_saved;

/* Row sums run in double on eight fixed lanes (c mod 8; the tail on lane 0), then the lanes
 * in a fixed tree (vec8.h): independent chains in vector registers, the same order on every
 * run and thread count. */
/* Sum over c of (double)x[c] - mu, squared when sq. */
BG_V8_INLINE double lanes_sum(const float *x, int64_t C, double mu, bool sq)
{
    bg_v8d l = bg_v8d_set1(0.0), vmu = bg_v8d_set1(mu);
    int64_t c = 0;
    for (; c + 8 <= C; c += 8) {
        bg_v8d d = bg_v8_widen(bg_v8f_load(x + c)) - vmu;
        l += sq ? d * d : d;
    }
    for (; c < C; c++) {
        double d = (double)x[c] - mu;
        l[0] += sq ? d * d : d;
    }
    return bg_v8d_tree(l);
}

/* Normalizes every row: mean is NULL for rmsnorm (no centering, mean of squares). */
BG_CLONES static void norm_row(const float *x, const float *w, const float *b, int64_t r,
                               int64_t C, float eps, float *mean, float *rstd, float *y)
{
    {
        const float *xr = x + r * C;
        double mu = 0.0;
        if (mean) {
            mu = lanes_sum(xr, C, 0.0, false);
            mu = C ? mu / (double)C : 0.0;
            mean[r] = (float)mu;
        }
        double ss = lanes_sum(xr, C, mu, true);
        float rs = (float)(1.0 / sqrt((C ? ss / (double)C : 0.0) + (double)eps));
        float m = (float)mu;
        rstd[r] = rs;
        float *yr = y + r * C;
        for (int64_t c = 0; c < C; c++) {
            float v = (xr[c] - m) * rs;
            if (w) v *= w[c];
            if (b) v += b[c];
            yr[c] = v;
        }
    }
}

static void norm_rows(const float *x, const float *w, const float *b, int64_t rows, int64_t C,
                      float eps, float *mean, float *rstd, float *y)
{
#pragma omp parallel for schedule(static) if (rows * C > BG_PAR_MIN)
    for (int64_t r = 0; r < rows; r++) norm_row(x, w, b, r, C, eps, mean, rstd, y);
}

static bg_tensor *norm_op(int op, const char *name, bg_tensor *x, bg_tensor *w, bg_tensor *b,
                          float eps)
{
    bg_tensor *given[3];
    int n = 0;
    given[n++] = x;
    if (w) given[n++] = w;
    if (b) given[n++] = b;
    bg_ctx *ctx = bg__op_begin(name, n, given);
    if (!ctx) return NULL;
    BG_CUDA_DISPATCH(ctx, bg__cuda_norm(ctx, op, x, w, b, eps)); /* cuda hook */
    if (!bg__check_cpu(ctx, name, "x", x) || !bg__norm_check(ctx, name, x, w, b, eps)) return NULL;
    int64_t rows = bg__n_rows(x), C = x->shape[x->ndim - 1];
    bool layer = op == BG_OP_LAYERNORM;
    norm_saved *sv = bg__arena_alloc(ctx, sizeof *sv);
    if (!sv) return NULL;
    sv->x = bg__contig_data(x);
    sv->w = w ? bg__contig_data(w) : NULL;
    const float *bd = b ? bg__contig_data(b) : NULL;
    sv->mean = layer ? bg__arena_alloc(ctx, (size_t)rows * sizeof(float)) : NULL;
    sv->rstd = bg__arena_alloc(ctx, (size_t)rows * sizeof(float));
    if (!sv->x || (w && !sv->w) || (b && !bd) || (layer && !sv->mean) || !sv->rstd) return NULL;
    bg_tensor *out = bg__step_new(ctx, BG_F32, x->ndim, x->shape);
    if (!out) return NULL;
    norm_rows(sv->x, sv->w, bd, rows, C, eps, sv->mean, sv->rstd, out->data);
    bg_node *node = layer ? bg__record(op, out, 3, (bg_tensor *[]){ x, w, b })
                          : bg__record(op, out, 2, (bg_tensor *[]){ x, w });
    if (node) node->aux = sv;
    return out;
}

bg_tensor *bg_rmsnorm(bg_tensor *x, bg_tensor *weight, float eps)
{
    return norm_op(BG_OP_RMSNORM, "rmsnorm", x, weight, NULL, eps);
}

bg_tensor *bg_layernorm(bg_tensor *x, bg_tensor *weight, bg_tensor *bias, float eps)
{
    return norm_op(BG_OP_LAYERNORM, "layernorm", x, weight, bias, eps);
}

/* dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * w; rmsnorm drops mean(g).
 * Stored (not added) when as. */
BG_CLONES static void norm_dx_row(const norm_saved *sv, const float *gy, int64_t r, int64_t C,
                                  float *gx, bool as)
{
    const float *w = sv->w;
    bool centred = sv->mean != NULL;
    {
        const float *xr = sv->x + r * C, *gr = gy + r * C;
        float m = centred ? sv->mean[r] : 0.0f, rs = sv->rstd[r];
        /* sg = sum g, sgx = sum g * xhat in double on eight lanes (vec8.h) */
        bg_v8d lg = bg_v8d_set1(0.0), lgx = bg_v8d_set1(0.0);
        bg_v8f vm = bg_v8f_set1(m), vrs = bg_v8f_set1(rs);
        int64_t c = 0;
        for (; c + 8 <= C; c += 8) {
            bg_v8f g = bg_v8f_load(gr + c);
            if (w) g *= bg_v8f_load(w + c);
            bg_v8d dg = bg_v8_widen(g);
            if (centred) lg += dg;
            lgx += dg * bg_v8_widen((bg_v8f_load(xr + c) - vm) * vrs);
        }
        for (; c < C; c++) {
            double dg = (double)(w ? gr[c] * w[c] : gr[c]);
            if (centred) lg[0] += dg;
            lgx[0] += dg * (double)((xr[c] - m) * rs);
        }
        double sg = bg_v8d_tree(lg), sgx = bg_v8d_tree(lgx);
        float mg = centred ? (float)(sg / (double)C) : 0.0f, mgx = (float)(sgx / (double)C);
        float *dr = gx + r * C;
        if (as) /* a new buffer: stored (0 + v, the bits of adding into zeros) */
            for (c = 0; c < C; c++) {
                float g = w ? gr[c] * w[c] : gr[c];
                dr[c] = 0.0f + rs * (g - mg - (xr[c] - m) * rs * mgx);
            }
        else
            for (c = 0; c < C; c++) {
                float g = w ? gr[c] * w[c] : gr[c];
                dr[c] += rs * (g - mg - (xr[c] - m) * rs * mgx);
            }
    }
}

static void norm_dx(const norm_saved *sv, const float *gy, int64_t rows, int64_t C, float *gx,
                    bool as)
{
#pragma omp parallel for schedule(static) if (rows * C > BG_PAR_MIN)
    for (int64_t r = 0; r < rows; r++) norm_dx_row(sv, gy, r, C, gx, as);
}

/* One block of rows [r0, r1) of norm_param_grads: aw[c] = sum of dy * xhat, ab[c] = sum of
 * dy (ab NULL: not needed), in double, rows in order. With gx, each row's dx (norm_dx_row)
 * is computed just before the row is summed: one pass over x and dy while they are in cache. */
BG_CLONES static void norm_pg_block(const norm_saved *sv, const float *gy, int64_t r0, int64_t r1,
                                    int64_t C, double *aw, double *ab, float *gx, bool as)
{
    for (int64_t c = 0; c < C; c++) {
        aw[c] = 0.0;
        if (ab) ab[c] = 0.0;
    }
    for (int64_t r = r0; r < r1; r++) {
        if (gx) norm_dx_row(sv, gy, r, C, gx, as);
        const float *xr = sv->x + r * C, *gr = gy + r * C;
        float m = sv->mean ? sv->mean[r] : 0.0f, rs = sv->rstd[r];
        bg_v8f vm = bg_v8f_set1(m), vrs = bg_v8f_set1(rs);
        int64_t c = 0;
        for (; c + 8 <= C; c += 8) { /* columns are independent: eight at a time */
            bg_v8f g = bg_v8f_load(gr + c);
            bg_v8d s;
            memcpy(&s, aw + c, sizeof s);
            s += bg_v8_widen(g * ((bg_v8f_load(xr + c) - vm) * vrs));
            memcpy(aw + c, &s, sizeof s);
            if (ab) {
                memcpy(&s, ab + c, sizeof s);
                s += bg_v8_widen(g);
                memcpy(ab + c, &s, sizeof s);
            }
        }
        for (; c < C; c++) {
            aw[c] += (double)(gr[c] * ((xr[c] - m) * rs));
            if (ab) ab[c] += (double)gr[c];
        }
    }
}

/* dw = sum_rows dy * xhat, db = sum_rows dy, and dx when gx is given (norm_pg_block). The
 * rows are cut into a number of blocks that depends on rows alone; each block sums its rows
 * in order (in double), then each column sums the blocks in order: the result does not
 * depend on the thread count. */
static void norm_param_grads(bg_ctx *ctx, const norm_saved *sv, const float *gy, int64_t rows,
                             int64_t C, float *gw, float *gb, float *gx, bool as)
{
    int64_t n_blk = rows < NORM_ROW_BLOCKS ? rows : NORM_ROW_BLOCKS;
    if (n_blk == 0 || C == 0) return;
    int64_t per = (rows + n_blk - 1) / n_blk;
    double *pw = bg__arena_alloc(ctx, (size_t)(2 * n_blk * C) * sizeof *pw), *pb = pw + n_blk * C;
    if (!pw) return;
#pragma omp parallel for schedule(static) if (rows * C > BG_PAR_MIN)
    for (int64_t blk = 0; blk < n_blk; blk++) {
        int64_t r0 = blk * per < rows ? blk * per : rows;
        int64_t r1 = (blk + 1) * per < rows ? (blk + 1) * per : rows;
        norm_pg_block(sv, gy, r0, r1, C, pw + blk * C, gb ? pb + blk * C : NULL, gx, as);
    }
#pragma omp parallel for schedule(static) if (n_blk * C > BG_PAR_MIN)
    for (int64_t c = 0; c < C; c++) {
        double sw = 0.0, sb = 0.0;
        for (int64_t blk = 0; blk < n_blk; blk++) {
            sw += pw[blk * C + c];
            if (gb) sb += pb[blk * C + c];
        }
        if (gw) gw[c] += (float)sw;
        if (gb) gb[c] += (float)sb;
    }
}

static void norm_backward(bg_node *node)
{
    const norm_saved *sv = node->aux;
    bg_tensor *x = node->in[0], *w = node->in[1], *b = node->n_in > 2 ? node->in[2] : NULL;
    const float *gy = bg__grad_of(node->out);
    if (!gy) return;
    int64_t rows = bg__n_rows(x), C = x->shape[x->ndim - 1];
    bool as = false;
    /* x is never the weight or bias: those are C-long vectors */
    float *gx = bg__needs_grad(x) ? bg__grad_dst(x, &as) : NULL;
    float *gw = bg__needs_grad(w) ? bg__grad_of(w) : NULL;
    float *gb = bg__needs_grad(b) ? bg__grad_of(b) : NULL;
    if ((bg__needs_grad(x) && !gx) || (bg__needs_grad(w) && !gw) || (bg__needs_grad(b) && !gb))
        return;
    if (gw || gb) norm_param_grads(x->ctx, sv, gy, rows, C, gw, gb, gx, as); /* and dx */
    else if (gx) norm_dx(sv, gy, rows, C, gx, as);
}

void bg__backward_rmsnorm(bg_node *node) { norm_backward(node); }
void bg__backward_layernorm(bg_node *node) { norm_backward(node); }

/* ---- dropout -------------------------------------------------------------------- */

bg_tensor *bg_dropout(bg_tensor *a, float p)
{
    bg_ctx *ctx = bg__op_begin("dropout", 1, (bg_tensor *[]){ a });
    if (!ctx) return NULL;
    BG_CUDA_DISPATCH(ctx, bg__cuda_dropout(ctx, a, p)); /* cuda hook */
    if (!bg__check_cpu(ctx, "dropout", "input", a) || !bg__dropout_check(ctx, a, p)) return NULL;
    if (!ctx->training || p == 0.0f) return a;
    int64_t n = bg__numel(a->ndim, a->shape);
    const float *x = bg__contig_data(a);
    unsigned char *keep = bg__arena_alloc(ctx, (size_t)n);
    bg_tensor *out = bg__step_new(ctx, BG_F32, a->ndim, a->shape);
    if (!x || !keep || !out) return NULL;
    /* Drawn in element order on one thread: the mask depends on the seed alone. */
    for (int64_t i = 0; i < n; i++) keep[i] = bg_rand_uniform(ctx) >= p;
    float scale = (float)(1.0 / (1.0 - (double)p));
    float *y = out->data;
#pragma omp parallel for schedule(static) if (n > BG_PAR_MIN)
    for (int64_t i = 0; i < n; i++) y[i] = keep[i] ? x[i] * scale : 0.0f;
    bg_node *node = bg__record(BG_OP_DROPOUT, out, 1, (bg_tensor *[]){ a });
    if (node) {
        node->aux = keep;
        node->f[0] = scale;
    }
    return out;
}

void bg__backward_dropout(bg_node *node)
{
    bg_tensor *a = node->in[0];
    if (!bg__needs_grad(a)) return;
    float *gx = bg__grad_of(a);
    const float *gy = bg__grad_of(node->out);
    if (!gx || !gy) return;
    const unsigned char *keep = node->aux;
    float scale = node->f[0];
    int64_t n = bg__numel(a->ndim, a->shape);
#pragma omp parallel for schedule(static) if (n > BG_PAR_MIN)
    for (int64_t i = 0; i < n; i++)
        if (keep[i]) gx[i] += gy[i] * scale;
}
