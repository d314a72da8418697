/* op_linear_ce.c - the output projection and cross-entropy fused (a CUSTOM node): the mean
 * next-token loss of logits = h . W^T without ever holding [rows, V] logits. Rows go in
 * chunks: a chunk's logits, their log-sum-exp and loss, then at once the chunk's gradient
 * (softmax - onehot) / count times W into dh (and into dW when W trains). Backward only scales
 * these by the loss's incoming gradient. W may be F16 (a frozen tied embedding kept in its
 * file type): it is widened a block of rows at a time. The row formulas are cross_entropy's
 * (op_nn.c); the products are sgemm, so values agree with logits + cross_entropy to float
 * rounding, not bit for bit. */
#include <cblas.h>
#include <math.h>

#include "autograd/op_checks.h"
#include "autograd/tape.h"
#include "autograd/vmath.h"
#include "bitgrad/quant.h"

#define CHUNK_BYTES ((size_t)16 << 20) /* one chunk's logits */
#define VBLOCK 2048                    /* rows of an F16 W widened at a time */

typedef struct lce_saved {
    bg_custom_rule rule;
    float *dh;   /* [rows, d] for loss gradient 1 (pool), or NULL */
    float *dw;   /* [V, d] (pool), or NULL */
} lce_saved;

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
/* n halves widened by F16C (exact, as bg_fp16_to_fp32), n a multiple of 8 */
__attribute__((target("avx,f16c"))) static void widen_f16c(const uint16_t *h, float *f, int64_t n)
{
    for (int64_t i = 0; i < n; i += 8)
        _mm256_storeu_ps(f + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i))));
}
static bool have_f16c(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
}
#else
static void widen_f16c(const uint16_t *h, float *f, int64_t n)
{
    for (int64_t i = 0; i < n; i++) f[i] = bg_fp16_to_fp32(h[i]);
}
static bool have_f16c(void) { return false; }
#endif

/* W rows [v0, v0 + nv) as f32: the rows themselves (F32) or widened into buf (F16). */
static const float *w_rows(const bg_tensor *w, int64_t v0, int64_t nv, float *buf)
{
    int64_t d = w->shape[1];
    if (w->dtype == BG_F32) return (const float *)w->data + v0 * d;
    const uint16_t *h = (const uint16_t *)w->data + v0 * d;
    int64_t n = nv * d, n8 = have_f16c() ? n / 8 * 8 : 0, per = 1 << 16;
#pragma omp parallel for schedule(static) if (n > BG_PAR_MIN)
    for (int64_t i0 = 0; i0 < n8; i0 += per) widen_f16c(h + i0, buf + i0, n8 - i0 < per ? n8 - i0 : per);
    for (int64_t i = n8; i < n; i++) buf[i] = bg_fp16_to_fp32(h[i]);
    return buf;
}

/* L [R, V] = H [R, d] . W^T */
static void chunk_logits(const bg_tensor *w, const float *H, int64_t R, float *L, float *wbuf)
{
    int64_t V = w->shape[0], d = w->shape[1], vb = w->dtype == BG_F32 ? V : VBLOCK;
    for (int64_t v0 = 0; v0 < V; v0 += vb) {
        int64_t nv = V - v0 < vb ? V - v0 : vb;
        const float *Wb = w_rows(w, v0, nv, wbuf);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)R, (int)nv, (int)d, 1.0f, H,
                    (int)d, Wb, (int)d, 0.0f, L + v0, (int)V);
    }
}

/* Rows of L become their loss gradient for a loss gradient of 1: (softmax - onehot) / count
 * (0 for ignored rows); returns the chunk's summed loss. cross_entropy's row arithmetic. */
static double chunk_rows(float *L, const int32_t *t, int64_t R, int64_t V, int ignore, float k)
{
    double total = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : total) if (R * V > BG_PAR_MIN)
    for (int64_t r = 0; r < R; r++) {
        float *xr = L + r * V;
        if (t[r] == ignore) {
            memset(xr, 0, (size_t)V * sizeof *xr);
            continue;
        }
        float m = -INFINITY;
        for (int64_t j = 0; j < V; j++) m = xr[j] > m ? xr[j] : m;
        double s = 0.0;
        for (int64_t j = 0; j < V; j++) s += bg_expf(xr[j] - m);
        double lse = (double)m + log(s);
        total += lse - xr[t[r]];
        float l = (float)lse;
        for (int64_t j = 0; j < V; j++) xr[j] = 0.0f + bg_expf(xr[j] - l) * k;
        xr[t[r]] -= k;
    }
    return total;
}

/* dh [R, d] = G [R, V] . W; dW [V, d] += G^T . H */
static void chunk_grads(const bg_tensor *w, const float *G, const float *H, int64_t R, float *dh,
                        float *dw, float *wbuf)
{
    int64_t V = w->shape[0], d = w->shape[1], vb = w->dtype == BG_F32 ? V : VBLOCK;
    for (int64_t v0 = 0; dh && v0 < V; v0 += vb) {
        int64_t nv = V - v0 < vb ? V - v0 : vb;
        const float *Wb = w_rows(w, v0, nv, wbuf);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)R, (int)d, (int)nv, 1.0f,
                    G + v0, (int)V, Wb, (int)d, v0 ? 1.0f : 0.0f, dh, (int)d);
    }
    if (dw)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)V, (int)d, (int)R, 1.0f, G,
                    (int)V, H, (int)d, 1.0f, dw, (int)d);
}

static void lce_backward(bg_node *node)
{
    lce_saved *sv = node->aux;
    bg_tensor *h = node->in[0], *w = node->in[1];
    const float *go = bg__grad_of(node->out);
    if (!go) return;
    int64_t n = bg__numel(h->ndim, h->shape), nw = w->shape[0] * w->shape[1];
    float *gh = sv->dh ? bg__grad_of(h) : NULL, *gw = sv->dw ? bg__grad_of(w) : NULL;
    float g = go[0];
#pragma omp parallel for schedule(static) if (n > BG_PAR_MIN)
    for (int64_t i = 0; i < n; i++)
        if (gh) gh[i] += sv->dh[i] * g;
#pragma omp parallel for schedule(static) if (nw > BG_PAR_MIN)
    for (int64_t i = 0; i < nw; i++)
        if (gw) gw[i] += sv->dw[i] * g;
    if (sv->dh) bg__pool_give(h->ctx, sv->dh);
    if (sv->dw) bg__pool_give(h->ctx, sv->dw);
    sv->dh = sv->dw = NULL;
}

static bool lce_check(bg_ctx *ctx, const bg_tensor *h, const bg_tensor *w, const bg_tensor *t)
{
    char a[64], b[64], c[64];
    if (h->dtype != BG_F32 || (w->dtype != BG_F32 && w->dtype != BG_F16) || t->dtype != BG_I32 ||
        w->ndim != 2 || h->shape[h->ndim - 1] != w->shape[1] ||
        bg__numel(t->ndim, t->shape) != bg__n_rows(h) || (w->dtype == BG_F16 && w->requires_grad)) {
        bg__error(ctx, BG_ESHAPE,
                  "linear_cross_entropy: h %s, w %s, targets %s: need f32 h [.., d], w [V, d] "
                  "(f32, or f16 without grad), i32 targets of h's row count",
                  bg__shape_str(h, a, sizeof a), bg__shape_str(w, b, sizeof b),
                  bg__shape_str(t, c, sizeof c));
        return false;
    }
    return bg__check_cpu(ctx, "linear_cross_entropy", "h", h) && bg__is_contig(w) &&
           bg__is_contig(t);
}

bg_tensor *bg_linear_cross_entropy(bg_tensor *h, bg_tensor *w, bg_tensor *targets, int ignore_index)
{
    bg_ctx *ctx = h && w && targets ? h->ctx : NULL;
    if (!ctx || !bg__check_live(h, "linear_cross_entropy") || !bg__check_live(w, "linear_cross_entropy") ||
        !bg__check_live(targets, "linear_cross_entropy") || ctx->err_code || !lce_check(ctx, h, w, targets))
        return NULL;
    int64_t rows = bg__n_rows(h), V = w->shape[0], d = w->shape[1], count = 0;
    const int32_t *t = targets->data;
    for (int64_t r = 0; r < rows; r++) {
        if (t[r] == ignore_index) continue;
        if (t[r] < 0 || t[r] >= V) {
            bg__error(ctx, BG_EINVAL, "linear_cross_entropy: target %d at row %lld is out of "
                      "range [0, %lld)", (int)t[r], (long long)r, (long long)V);
            return NULL;
        }
        count++;
    }
    const float *H = bg__contig_data(h);
    bg_tensor *out = bg__step_new(ctx, BG_F32, 0, NULL);
    lce_saved *sv = bg__arena_alloc(ctx, sizeof *sv);
    if (!H || !out || !sv) return NULL;
    bool grad = ctx->grad_enabled && (h->requires_grad || w->requires_grad);
    *sv = (lce_saved){ .rule = { lce_backward } };
    int64_t R = (int64_t)(CHUNK_BYTES / ((size_t)V * sizeof(float)));
    R = R < 1 ? 1 : (R > rows ? rows : R);
    float *L = rows ? bg__pool_take(ctx, (size_t)(R * V) * sizeof(float)) : NULL;
    float *wbuf = w->dtype == BG_F16 ? bg__pool_take(ctx, (size_t)(VBLOCK * d) * sizeof(float)) : NULL;
    if (grad && h->requires_grad) sv->dh = bg__pool_take(ctx, (size_t)(rows * d) * sizeof(float));
    if (grad && w->requires_grad) sv->dw = bg__pool_take(ctx, (size_t)(V * d) * sizeof(float));
    if (sv->dw) memset(sv->dw, 0, (size_t)(V * d) * sizeof(float));
    if ((rows && !L) || (w->dtype == BG_F16 && !wbuf) || (grad && h->requires_grad && !sv->dh) ||
        (grad && w->requires_grad && !sv->dw))
        return NULL;
    double total = 0.0;
    float k = count ? 1.0f / (float)count : 0.0f;
    for (int64_t r0 = 0; r0 < rows; r0 += R) {
        int64_t nr = rows - r0 < R ? rows - r0 : R;
        bg__gemm_count(ctx, nr, V, d, 1);
        chunk_logits(w, H + r0 * d, nr, L, wbuf);
        total += chunk_rows(L, t + r0, nr, V, ignore_index, k);
        if (grad) {
            bg__gemm_count(ctx, nr, d, V, (sv->dh != NULL) + (sv->dw != NULL));
            chunk_grads(w, L, H + r0 * d, nr, sv->dh ? sv->dh + r0 * d : NULL, sv->dw, wbuf);
        }
    }
    if (L) bg__pool_give(ctx, L);
    if (wbuf) bg__pool_give(ctx, wbuf);
    bg__f32(out)[0] = count ? (float)(total / (double)count) : 0.0f;
    bg_node *node = grad ? bg__record(BG_OP_CUSTOM, out, 3, (bg_tensor *[]){ h, w, targets }) : NULL;
    if (node) {
        node->aux = sv;
        node->owned = NULL;
    } else {
        if (sv->dh) bg__pool_give(ctx, sv->dh);
        if (sv->dw) bg__pool_give(ctx, sv->dw);
    }
    return out;
}
