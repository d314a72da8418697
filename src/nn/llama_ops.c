/* llama_ops.c - the float operations of llama.cpp's bitnet graph as its CPU backend runs them
 * on x86-64 with AVX2 and FMA (ggml-cpu at 3f545bec; flash attention off, F32 KV cache), to
 * the bit, so that `eval --llama` rounds activations exactly where llama.cpp does.
 *
 * What ggml does, per op (facts read from its source; the code here is bitgrad's own):
 * - rms_norm: the squares rounded to float, summed in double; mean = float(sum / n);
 *   scale = 1 / sqrtf(mean + eps); y = (x * scale) * w, each product rounded to float.
 * - rope (NEOX for bitnet: element i with i + n_dims/2): theta starts at the position, times
 *   powf(base, -2/n_dims) per pair, in float; cos/sin from cosf/sinf; the compiled rotation is
 *   y0 = fma(x0, c, -(x1 * s)), y1 = fma(x0, s, x1 * c).
 * - K.Q (ggml_vec_dot_f32, 4 accumulators of 8 lanes, fused multiply-adds, then a fixed
 *   reduction tree), times 1/sqrtf(head_dim); softmax with ggml's vectorised expf, the sum in
 *   double of 8-lane partial sums, scaled by float(1 / sum).
 * - V.softmax through llamafile's sgemm (8-lane fused accumulation over the KV positions,
 *   then the same horizontal sum).
 * - swiglu: silu(g) = g / (1 + expf_v(-g)) times u, with the vectorised expf per 8 lanes and
 *   libm's expf on a tail.
 * - TQ1_0 / TQ2_0 x Q8_K: eight int32 lanes per block of 256 (the AVX2 kernels' layouts), each
 *   accumulated as fma(float(lane), y.d * d_w, acc), then the horizontal sum. */
#include <math.h>

#include "bitgrad/quant.h"
#include "nn/module_impl.h"

/* The AVX2 horizontal sum of 8 floats: (v0+v4, v1+v5, v2+v6, v3+v7), then pairs, then one. */
static float hsum8(const float *v)
{
    float a0 = v[0] + v[4], a1 = v[1] + v[5], a2 = v[2] + v[6], a3 = v[3] + v[7];
    return (a0 + a2) + (a1 + a3);
}

static float bits_f(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint32_t f_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* ggml's vectorised expf (ARM optimized-routines polynomial), one lane. */
float bg__llama_expf_v(float x)
{
    const float r = 0x1.8p23f;
    float z = fmaf(x, 0x1.715476p+0f, r);
    float n = z - r;
    float b = fmaf(-n, 0x1.7f7d1cp-20f, fmaf(-n, 0x1.62e4p-1f, x));
    uint32_t e = f_bits(z) << 23;
    float k = bits_f(e + f_bits(1.0f));
    float u = b * b;
    float j = fmaf(fmaf(fmaf(0x1.0e4020p-7f, b, 0x1.573e2ep-5f), u, fmaf(0x1.555e66p-3f, b, 0x1.fffdb6p-2f)),
                   u, 0x1.ffffecp-1f * b);
    if (!(fabsf(n) > 126.0f)) return fmaf(j, k, k);
    uint32_t g = n <= 0.0f ? 0x82000000u : 0u;
    float s1 = bits_f(g + 0x7f000000u), s2 = bits_f(e - g);
    if (fabsf(n) > 192.0f) return s1 * s1;
    return fmaf(s2, j, s2) * s1;
}

void bg__llama_rmsnorm(const float *x, const float *w, int64_t rows, int64_t n, float eps, float *y)
{
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        double sum = 0.0;
        for (int64_t i = 0; i < n; i++) sum += (double)(xr[i] * xr[i]);
        float mean = (float)(sum / (double)n);
        float scale = 1.0f / sqrtf(mean + eps);
        for (int64_t i = 0; i < n; i++) y[r * n + i] = (xr[i] * scale) * w[i];
    }
}

void bg__llama_swiglu(const float *g, const float *u, int64_t rows, int64_t n, float *y)
{
    int64_t nv = n - n % 8;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t i = 0; i < n; i++) {
            float x = g[r * n + i];
            float s = i < nv ? x / (1.0f + bg__llama_expf_v(-x)) : x / (1.0f + expf(-x));
            y[r * n + i] = s * u[r * n + i];
        }
}

/* ggml_vec_dot_f32 on AVX2 + FMA. */
static float dot_f32(const float *x, const float *y, int64_t n)
{
    float acc[4][8] = { { 0 } };
    int64_t np = n - n % 32;
    for (int64_t i = 0; i < np; i += 32)
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 8; l++) acc[j][l] = fmaf(x[i + 8 * j + l], y[i + 8 * j + l], acc[j][l]);
    float s[8];
    for (int l = 0; l < 8; l++) s[l] = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
    float t0 = s[0] + s[4], t1 = s[1] + s[5], t2 = s[2] + s[6], t3 = s[3] + s[7];
    float sumf = (t0 + t1) + (t2 + t3);
    /* the leftovers as compiled: products rounded and added four at a time, then fused */
    int64_t i = np;
    for (; i + 4 <= n; i += 4)
        for (int l = 0; l < 4; l++) sumf += x[i + l] * y[i + l];
    for (; i < n; i++) sumf = fmaf(x[i], y[i], sumf);
    return sumf;
}

/* rope in NEOX mode (llama.cpp runs bitnet so): element i rotates with i + hd/2, in place on
 * [T, heads, hd] rows at positions 0..T-1. */
static void rope(float *x, int64_t T, int64_t heads, int64_t hd, float base)
{
    float theta_scale = powf(base, -2.0f / (float)hd);
    int64_t half = hd / 2;
    for (int64_t t = 0; t < T; t++) {
        float theta = (float)t;
        for (int64_t i = 0; i < half; i++) {
            float c = cosf(theta), s = sinf(theta);
            for (int64_t h = 0; h < heads; h++) {
                float *p = x + (t * heads + h) * hd + i;
                float x0 = p[0], x1 = p[half];
                p[0] = fmaf(x0, c, -(x1 * s));
                p[half] = fmaf(x0, s, x1 * c);
            }
            theta *= theta_scale;
        }
    }
}

/* Softmax of one row of n scores (then zeros up to a multiple of 8), as ggml's soft_max. */
static void softmax_row(float *w, int64_t n, float scale)
{
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        w[i] *= scale;
        if (w[i] > mx) mx = w[i];
    }
    int64_t n8 = (n + 7) / 8 * 8;
    double sum = 0.0;
    for (int64_t i = 0; i < n8; i += 8) {
        float v[8];
        for (int l = 0; l < 8; l++) v[l] = w[i + l] = i + l < n ? bg__llama_expf_v(w[i + l] - mx) : 0.0f;
        sum += (double)hsum8(v);
    }
    float is = (float)(1.0 / sum);
    for (int64_t i = 0; i < n; i++) w[i] *= is;
}

int bg__llama_attention(float *q, float *k, const float *v, int64_t T, int64_t n_head, int64_t n_head_kv,
                        int64_t hd, float rope_base, float *out)
{
    int64_t n8 = (T + 7) / 8 * 8;
    float *w = malloc((size_t)(n8 + hd) * sizeof(float));
    if (!w) return BG_ENOMEM;
    rope(q, T, n_head, hd, rope_base);
    rope(k, T, n_head_kv, hd, rope_base);
    float kq_scale = 1.0f / sqrtf((float)hd);
    int64_t grp = n_head / n_head_kv;
    for (int64_t h = 0; h < n_head; h++) {
        int64_t hk = h / grp;
        for (int64_t t = 0; t < T; t++) {
            const float *qr = q + (t * n_head + h) * hd;
            for (int64_t s = 0; s <= t; s++) w[s] = dot_f32(k + (s * n_head_kv + hk) * hd, qr, hd);
            softmax_row(w, t + 1, kq_scale);
            for (int64_t s = t + 1; s < n8; s++) w[s] = 0.0f;
            for (int64_t i = 0; i < hd; i++) {
                float acc[8] = { 0 };
                for (int64_t s = 0; s <= t; s++) acc[s % 8] = fmaf(v[(s * n_head_kv + hk) * hd + i], w[s], acc[s % 8]);
                out[(t * n_head + h) * hd + i] = hsum8(acc);
            }
        }
    }
    free(w);
    return BG_OK;
}

/* The int32 lane (0..7) of the AVX2 TQ kernels that element e of a block of 256 lands in: the
 * byte position of its weight within the 32-byte vector it is multiplied in, over 4. TQ2_0:
 * bytes hold elements 32c + position. TQ1_0: elements 0..159 are 5 vectors of 32; 160..239 are
 * five half vectors of 16 (qs[32..47]'s trits, low half then high half); 240..255 (qh's trits)
 * are the high half of the last vector. */
static int tq_lane(int type, int e)
{
    if (type == BG_GGML_TQ2_0 || e < 160) return (e % 32) / 4;
    if (e < 240) return (((e - 160) / 16 % 2) * 16 + (e - 160) % 16) / 4;
    return (16 + e - 240) / 4;
}

/* One row of TQ1_0 / TQ2_0 x Q8_K (q: the int8 activations, dx: their block scales): per
 * block, lane m = sum of (code + 1) * q over its elements minus the sum of q[32m .. 32m + 31]
 * (the kernels' offset codes and bsums), then acc[m] = fma(lane, dx * d_w, acc[m]). */
float bg__llama_tq_dot(int type, const int8_t *q, const float *dx, const int8_t *codes, int64_t in,
                       float d_w)
{
    float acc[8] = { 0 };
    for (int64_t b = 0; b < in / 256; b++) {
        const int8_t *qb = q + b * 256, *cb = codes + b * 256;
        float d = dx[b] * d_w;
        int32_t s[8] = { 0 };
        for (int e = 0; e < 256; e++) {
            s[tq_lane(type, e)] += (cb[e] + 1) * qb[e];
            s[e / 32] -= qb[e];
        }
        for (int m = 0; m < 8; m++) acc[m] = fmaf((float)s[m], d, acc[m]);
    }
    return hsum8(acc);
}

/* The logits: token_embd [n_vocab, n] (F32, or F16 values) times x [rows, n] through
 * llamafile's sgemm (8 fused lanes, then the horizontal sum). */
void bg__llama_logits(const float *x, int64_t rows, int64_t n, const void *w, bool w16, int64_t n_vocab,
                      float *y)
{
#pragma omp parallel for schedule(static)
    for (int64_t j = 0; j < n_vocab; j++) {
        float wr[8];
        if (rows == 1) { /* one column: ggml's vec_dot (the table's values, x as given) */
            float *row = malloc((size_t)n * sizeof(float));
            for (int64_t i = 0; row && i < n; i++)
                row[i] = w16 ? bg_fp16_to_fp32(((const uint16_t *)w)[j * n + i]) : ((const float *)w)[j * n + i];
            y[j] = row ? bg__llama_vdot(row, x, n, w16) : 0.0f;
            free(row);
            continue;
        }
        for (int64_t r = 0; r < rows; r++) {
            float acc[8] = { 0 };
            for (int64_t i = 0; i < n; i += 8) {
                for (int l = 0; l < 8; l++)
                    wr[l] = w16 ? bg_fp16_to_fp32(((const uint16_t *)w)[j * n + i + l])
                                : ((const float *)w)[j * n + i + l];
                for (int l = 0; l < 8; l++) acc[l] = fmaf(wr[l], x[r * n + i + l], acc[l]);
            }
            y[r * n_vocab + j] = hsum8(acc);
        }
    }
}

void bg__llama_mm_f32(const float *a, int64_t m, const float *x, int64_t n, int64_t k, float *y)
{
    bool sgemm = n >= 2 && k % 8 == 0 && m % 4 == 0;
    for (int64_t r = 0; r < n; r++)
        for (int64_t j = 0; j < m; j++) {
            const float *ar = a + j * k, *xr = x + r * k;
            if (!sgemm) {
                y[r * m + j] = dot_f32(ar, xr, k);
                continue;
            }
            float acc[8] = { 0 };
            for (int64_t i = 0; i < k; i++) acc[i % 8] = fmaf(ar[i], xr[i], acc[i % 8]);
            y[r * m + j] = hsum8(acc);
        }
}

/* One row of F32 or F16 weights (values a) with x when llama.cpp's mul_mat has a single
 * column (no sgemm): ggml_vec_dot_f32, or ggml_vec_dot_f16 (the same lanes; its leftovers
 * summed in double). */
float bg__llama_vdot(const float *a, const float *x, int64_t n, bool f16)
{
    if (!f16) return dot_f32(a, x, n);
    int64_t np = n - n % 32;
    double sumf = dot_f32(a, x, np);
    for (int64_t i = np; i < n; i++) sumf += (double)(a[i] * x[i]);
    return (float)sumf;
}
