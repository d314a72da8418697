/* refs_naive.h - naive C references for the forward checks of test_ops.c: the obvious
 * loops, in double where a sum is involved, written independently of the library. */
#ifndef BG_TESTS_REFS_NAIVE_H
#define BG_TESTS_REFS_NAIVE_H

#include "harness.h"

/* ---- naive references ----------------------------------------------------------------- */

/* c[bt] = a[bt] . b[bt or 0]; a [M,K], b [K,N] row-major, in double. */
static void ref_matmul(const float *a, const float *b, float *c, int batch, int m, int k, int n,
                       bool b_batched)
{
    for (int bt = 0; bt < batch; bt++) {
        const float *pa = a + (size_t)bt * m * k, *pb = b + (b_batched ? (size_t)bt * k * n : 0);
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) {
                double s = 0.0;
                for (int p = 0; p < k; p++) s += (double)pa[i * k + p] * pb[p * n + j];
                c[(size_t)bt * m * n + i * n + j] = (float)s;
            }
    }
}

/* Transposes the last two dims of a [batch, r, c] array into [batch, c, r]. */
static void ref_t(const float *x, float *y, int batch, int r, int c)
{
    for (int b = 0; b < batch; b++)
        for (int i = 0; i < r; i++)
            for (int j = 0; j < c; j++)
                y[(size_t)b * r * c + j * r + i] = x[(size_t)b * r * c + i * c + j];
}

static void ref_softmax(const float *x, float *y, int rows, int n, bool log_form)
{
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * n;
        double mx = xr[0], s = 0.0;
        for (int j = 1; j < n; j++) mx = xr[j] > mx ? xr[j] : mx;
        for (int j = 0; j < n; j++) s += exp(xr[j] - mx);
        for (int j = 0; j < n; j++)
            y[(size_t)r * n + j] = (float)(log_form ? xr[j] - mx - log(s) : exp(xr[j] - mx) / s);
    }
}

/* torch semantics: mean over counted rows of (1-eps) * nll + eps * mean_j(-log p_j). */
static double ref_cross_entropy(const float *x, const int32_t *tgt, int rows, int v, int ignore,
                                double eps)
{
    double total = 0.0;
    int count = 0;
    for (int r = 0; r < rows; r++) {
        if (tgt[r] == ignore) continue;
        const float *xr = x + (size_t)r * v;
        double mx = xr[0], s = 0.0, sum_nlp = 0.0;
        for (int j = 1; j < v; j++) mx = xr[j] > mx ? xr[j] : mx;
        for (int j = 0; j < v; j++) s += exp(xr[j] - mx);
        double lse = mx + log(s);
        for (int j = 0; j < v; j++) sum_nlp += lse - xr[j];
        total += (1.0 - eps) * (lse - xr[tgt[r]]) + eps * sum_nlp / v;
        count++;
    }
    return total / count;
}

static void ref_rmsnorm(const float *x, const float *w, float *y, int rows, int n, double eps)
{
    for (int r = 0; r < rows; r++) {
        double ss = 0.0;
        for (int j = 0; j < n; j++) ss += (double)x[r * n + j] * x[r * n + j];
        double inv = 1.0 / sqrt(ss / n + eps);
        for (int j = 0; j < n; j++) y[r * n + j] = (float)(x[r * n + j] * inv * (w ? w[j] : 1.0));
    }
}

/* NEOX rope on [B, T, H, D]: dims i and i + n_rot/2 rotate by (pos0 + t) * base^(-2i/n_rot). */
static void ref_rope(const float *x, float *y, int b, int t, int h, int d, int n_rot, double base,
                     int pos0)
{
    int half = n_rot / 2;
    for (int ib = 0; ib < b; ib++)
        for (int it = 0; it < t; it++)
            for (int ih = 0; ih < h; ih++) {
                size_t o = (((size_t)ib * t + it) * h + ih) * d;
                for (int j = 0; j < d; j++) y[o + j] = x[o + j];
                for (int i = 0; i < half; i++) {
                    double th = (pos0 + it) * pow(base, -2.0 * i / n_rot);
                    double x0 = x[o + i], x1 = x[o + i + half];
                    y[o + i] = (float)(x0 * cos(th) - x1 * sin(th));
                    y[o + i + half] = (float)(x0 * sin(th) + x1 * cos(th));
                }
            }
}

/* Causal attention; q [B,T,H,D], k, v [B,T,Hkv,D]; head h reads kv head h / (H / Hkv). */
static void ref_attention(const float *q, const float *k, const float *v, float *y, int b, int t,
                          int h, int hkv, int d)
{
    double p[256]; /* t <= 256 */
    if (t > 256) abort();
    for (int ib = 0; ib < b; ib++)
        for (int ih = 0; ih < h; ih++) {
            int kh = ih / (h / hkv);
            for (int i = 0; i < t; i++) {
                const float *qi = q + (((size_t)ib * t + i) * h + ih) * d;
                double mx = -INFINITY, s = 0.0;
                for (int j = 0; j <= i; j++) {
                    const float *kj = k + (((size_t)ib * t + j) * hkv + kh) * d;
                    double dot = 0.0;
                    for (int e = 0; e < d; e++) dot += (double)qi[e] * kj[e];
                    p[j] = dot / sqrt((double)d);
                    mx = p[j] > mx ? p[j] : mx;
                }
                for (int j = 0; j <= i; j++) s += (p[j] = exp(p[j] - mx));
                for (int e = 0; e < d; e++) {
                    double acc = 0.0;
                    for (int j = 0; j <= i; j++)
                        acc += p[j] / s * v[(((size_t)ib * t + j) * hkv + kh) * d + e];
                    y[(((size_t)ib * t + i) * h + ih) * d + e] = (float)acc;
                }
            }
        }
}

/* Runs an op in grad-off mode and compares its values with want[]. */
/* Straight-through quantizers: their true derivative is zero almost everywhere, so instead
 * of finite differences the gradient must be exactly the identity, and the forward must be
 * x + lambda (Q(x) - x) with Q the DESIGN.md section 5 formulas (naive versions below). */
static void ref_weight_quant(const float *w, float *y, int rows, int cols, int mode, int group,
                             float lambda)
{
    int gsize = mode == 0 ? rows * cols : (mode == 1 ? cols : group);
    for (int g0 = 0; g0 < rows * cols; g0 += gsize) {
        double s = 0.0;
        for (int i = 0; i < gsize; i++) s += fabs((double)w[g0 + i]);
        float sw = fmaxf((float)(s / gsize), 1e-5f);
        for (int i = 0; i < gsize; i++) {
            float q = fminf(1.0f, fmaxf(-1.0f, roundf(w[g0 + i] / sw))) * sw;
            y[g0 + i] = w[g0 + i] + lambda * (q - w[g0 + i]);
        }
    }
}

static void ref_act_quant(const float *x, float *y, int rows, int cols, int bits, float lambda)
{
    float qp = (float)((1 << (bits - 1)) - 1);
    for (int r = 0; r < rows; r++) {
        float amax = 0.0f;
        for (int i = 0; i < cols; i++) amax = fmaxf(amax, fabsf(x[r * cols + i]));
        float sx = qp / fmaxf(amax, 1e-5f);
        for (int i = 0; i < cols; i++) {
            float v = x[r * cols + i];
            float q = fminf(qp, fmaxf(-qp - 1.0f, roundf(v * sx))) / sx;
            y[r * cols + i] = v + lambda * (q - v);
        }
    }
}

#endif
