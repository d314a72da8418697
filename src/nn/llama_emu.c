/* llama_emu.c - llama.cpp's CPU arithmetic for the projections bitgrad does not run as TQ x Q8_K
 * (that one is infer_row_llama in layers.c), so that `eval --llama` gives llama.cpp's logits for
 * every weight type a bitnet GGUF may hold.
 *
 * ggml-cpu multiplies a weight of type W by activations converted to W's vec_dot_type
 * (type_traits_cpu in ggml-cpu.c): F32 -> F32 (unchanged), F16 -> F16, BF16 -> BF16,
 * Q8_0 and Q2_0 -> Q8_0 blocks of 32, TQ1_0 / TQ2_0 -> Q8_K blocks of 256. The rounding of the
 * activations is what moves the result; the order of the float sums moves it by ~1e-7 only, so
 * the sums here are plain double dots of the rounded activations with the ternary codes, times
 * the projection's scale (llama.cpp multiplies by "<proj>.scale" after the product). */
#include <math.h>

#include "bitgrad/quant.h"
#include "nn/module_impl.h"

int bg__llama_weight_type(const bg_module *m)
{
    if (m->llama_wtype_set) return m->llama_wtype;
    int64_t in = m->params[0]->shape[1];
    /* What bg_bitnet_export writes by default (src/io/export.c: row_type). */
    if (in % BG_QK_TQ == 0) return BG_GGML_TQ2_0;
    if (in % BG_QK2_0 == 0) return BG_GGML_Q2_0;
    if (in % BG_QK8_0 == 0) return BG_GGML_Q8_0;
    return BG_GGML_F32;
}

/* ggml-cpu's quantize_row_q8_0 on x86 (AVX / AVX2, the path every x86-64 build of the last
 * decade takes): d = fp16(amax / 127), codes rint(x * (127 / amax)) (ties to even), and the
 * block's value code * fp32(d). (The scalar reference divides by d and rounds ties away; it
 * differs only in rare ties.) */
static void round_q8_0(const float *x, float *out, int64_t n)
{
    for (int64_t b = 0; b + BG_QK8_0 <= n; b += BG_QK8_0) {
        float amax = 0.0f;
        for (int j = 0; j < BG_QK8_0; j++) amax = fmaxf(amax, fabsf(x[b + j]));
        float d = bg_fp16_to_fp32(bg_fp32_to_fp16(amax / 127.0f));
        float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        for (int j = 0; j < BG_QK8_0; j++) {
            float q = nearbyintf(x[b + j] * id);
            q = q > 127.0f ? 127.0f : q < -128.0f ? -128.0f : q;
            out[b + j] = q * d;
        }
    }
}

/* The same rounding, kept as llama.cpp holds it: int8 codes and the block's fp16 d. */
static void quant_q8_0(const float *x, int64_t n, int8_t *q, float *d)
{
    for (int64_t b = 0; b < n / BG_QK8_0; b++) {
        const float *xb = x + b * BG_QK8_0;
        float amax = 0.0f;
        for (int j = 0; j < BG_QK8_0; j++) amax = fmaxf(amax, fabsf(xb[j]));
        d[b] = bg_fp16_to_fp32(bg_fp32_to_fp16(amax / 127.0f));
        float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        for (int j = 0; j < BG_QK8_0; j++) {
            float v = nearbyintf(xb[j] * id);
            q[b * BG_QK8_0 + j] = (int8_t)(v > 127.0f ? 127.0f : v < -128.0f ? -128.0f : v);
        }
    }
}

/* Q8_0 weights (codes * qmag, block d d_w) x Q8_0 activations through llamafile's
 * tinyBLAS_Q0_AVX: per block, eight int32 lanes of four products each, accumulated as
 * fma(d_w * d_x, lane, acc); then the horizontal sum. */
static float q8_0_dot(const int8_t *c, int qmag, const float *d_w, int64_t d_stride, const int8_t *q,
                      const float *dx, int64_t in)
{
    float acc[8] = { 0 };
    for (int64_t b = 0; b < in / BG_QK8_0; b++) {
        float dd = d_w[b * d_stride] * dx[b];
        for (int m = 0; m < 8; m++) {
            int32_t s = 0;
            for (int t = 0; t < 4; t++) s += c[b * 32 + 4 * m + t] * qmag * q[b * 32 + 4 * m + t];
            acc[m] = fmaf(dd, (float)s, acc[m]);
        }
    }
    float a0 = acc[0] + acc[4], a1 = acc[1] + acc[5], a2 = acc[2] + acc[6], a3 = acc[3] + acc[7];
    return (a0 + a2) + (a1 + a3);
}

/* Q2_0 (blocks of 64, d_w) x Q8_0: ggml's generic kernel, products rounded, no fusing. */
static float q2_0_dot(const int8_t *c, float d_w, const int8_t *q, const float *dx, int64_t in)
{
    float sumf = 0.0f;
    for (int64_t b = 0; b < in / 64; b++) {
        float sumi = 0.0f;
        for (int k = 0; k < 2; k++) {
            int32_t s = 0;
            for (int j = 0; j < 32; j++) s += c[b * 64 + k * 32 + j] * q[b * 64 + k * 32 + j];
            sumi += (float)s * dx[b * 2 + k];
        }
        sumf += d_w * sumi;
    }
    return sumf;
}

void bg__llama_round_acts(int t, const float *x, float *out, int64_t n)
{
    switch (t) {
    case BG_GGML_F16:
        for (int64_t i = 0; i < n; i++) out[i] = bg_fp16_to_fp32(bg_fp32_to_fp16(x[i]));
        break;
    case BG_GGML_BF16:
        for (int64_t i = 0; i < n; i++) out[i] = bg_bf16_to_fp32(bg_fp32_to_bf16(x[i]));
        break;
    case BG_GGML_Q8_0:
    case BG_GGML_Q2_0:
        round_q8_0(x, out, n);
        for (int64_t i = n - n % BG_QK8_0; i < n; i++) out[i] = x[i]; /* never: rows are blocks */
        break;
    default:
        if (out != x) memcpy(out, x, (size_t)n * sizeof(float));
        break;
    }
}

void bg__llama_wscale(const bg_module *m, float *d_w, bool *has_s, float *s)
{
    if (m->llama_ds_set) {
        *d_w = m->llama_d;
        *has_s = m->llama_has_s;
        *s = m->llama_s;
    } else if (m->llama_no_scale) {
        *d_w = bg_fp16_to_fp32(bg_fp32_to_fp16(m->scales[0]));
        *has_s = false;
        *s = 1.0f;
    } else { /* bitgrad's export: codes with d = 1, the scale in "<name>.scale" */
        *d_w = 1.0f;
        *has_s = true;
        *s = m->scales[0];
    }
    if (*has_s && bg__lora_defers_scale(m)) *has_s = false; /* lora.c multiplies after its sum */
}

/* F32 / F16 / BF16 weights: llamafile's sgemm on AVX2 (8 lanes, lane l takes the elements
 * i = l mod 8 in order, fused multiply-adds, then the horizontal sum), the weight's value
 * being code * d_w exactly. */
static float sgemm_dot(const int8_t *c, const float *x, int64_t in, float d_w)
{
    float acc[8] = { 0 };
    for (int64_t i = 0; i < in; i++) acc[i % 8] = fmaf((float)c[i] * d_w, x[i], acc[i % 8]);
    float a0 = acc[0] + acc[4], a1 = acc[1] + acc[5], a2 = acc[2] + acc[6], a3 = acc[3] + acc[7];
    return (a0 + a2) + (a1 + a3);
}

void bg__llama_rows(const bg_module *m, int t, const float *x, int64_t rows, int64_t in, int64_t out,
                    float *y, float *xr)
{
    const int8_t *codes = m->codes;
    const float *s_w = m->scales;
    bool per_row = m->cfg.weight_mode == BG_WQ_PER_ROW, has_s;
    float d_w, s;
    bg__llama_wscale(m, &d_w, &has_s, &s);
    bool exact = !per_row && in % 8 == 0 && rows >= 2 &&
                 (t == BG_GGML_F32 || t == BG_GGML_F16 || t == BG_GGML_BF16);
    bool qexact = !per_row && in % 64 == 0 &&
                  (t == BG_GGML_Q8_0 || t == BG_GGML_Q2_0); /* one column: vec_dot_q8_0_q8_0, same lanes */
    float *wv = !per_row && rows == 1 && (t == BG_GGML_F32 || t == BG_GGML_F16)
                    ? malloc((size_t)in * sizeof(float)) : NULL;
    int8_t *q = (int8_t *)xr; /* in bytes, then the block scales: xr holds in floats */
    float *dx = xr + in / 4 + 1;
    for (int64_t r = 0; r < rows; r++) {
        if (qexact) {
            quant_q8_0(x + r * in, in, q, dx);
            for (int64_t j = 0; j < out; j++) {
                const int8_t *c = codes + j * in;
                float v = t == BG_GGML_Q2_0 ? q2_0_dot(c, d_w, q, dx, in)
                                            : q8_0_dot(c, m->llama_qmag > 0 ? m->llama_qmag : 1, &d_w, 0, q, dx, in);
                y[r * out + j] = has_s ? v * s : v;
            }
            continue;
        }
        bg__llama_round_acts(t, x + r * in, xr, in);
        for (int64_t j = 0; j < out; j++) {
            const int8_t *c = codes + j * in;
            if (exact) {
                float v = sgemm_dot(c, xr, in, d_w);
                y[r * out + j] = has_s ? v * s : v;
                continue;
            }
            if (wv) { /* one column: ggml's vec_dot, no sgemm */
                for (int64_t i = 0; i < in; i++) wv[i] = (float)c[i] * d_w;
                float v = bg__llama_vdot(wv, xr, in, t == BG_GGML_F16);
                y[r * out + j] = has_s ? v * s : v;
                continue;
            }
            double acc = 0.0;
            for (int64_t i = 0; i < in; i++) acc += (double)c[i] * (double)xr[i];
            y[r * out + j] = (float)acc * s_w[per_row ? j : 0];
        }
    }
    free(wv);
}

/* A Q8_0 table's blocks back from its values (each block qs * d with d an fp16 and
 * max |qs| = 127, as ggml's quantizer writes them); BG_EFORMAT if a block is not so. */
static int q8_0_recover(const float *w, int64_t n, int8_t *q, float *d)
{
    for (int64_t b = 0; b < n / BG_QK8_0; b++) {
        const float *wb = w + b * BG_QK8_0;
        float amax = 0.0f;
        for (int j = 0; j < BG_QK8_0; j++) amax = fmaxf(amax, fabsf(wb[j]));
        d[b] = amax / 127.0f;
        if (bg_fp16_to_fp32(bg_fp32_to_fp16(d[b])) != d[b]) return BG_EFORMAT;
        for (int j = 0; j < BG_QK8_0; j++) {
            float v = d[b] != 0.0f ? nearbyintf(wb[j] / d[b]) : 0.0f;
            if (v * d[b] != wb[j]) return BG_EFORMAT;
            q[b * BG_QK8_0 + j] = (int8_t)v;
        }
    }
    return BG_OK;
}

int bg__llama_logits_q8_0(const float *x, int64_t rows, int64_t n, const float *w, int64_t n_vocab, float *y)
{
    if (n % BG_QK8_0 || rows < 1) return BG_EINVAL;
    int64_t nb = n / BG_QK8_0;
    int8_t *wq = malloc((size_t)(n_vocab * n + rows * n));
    float *wd = malloc((size_t)(n_vocab + rows) * (size_t)nb * sizeof(float));
    int rc = wq && wd ? BG_OK : BG_ENOMEM;
    int8_t *xq = wq ? wq + n_vocab * n : NULL;
    float *xd = wd ? wd + n_vocab * nb : NULL;
    for (int64_t j = 0; !rc && j < n_vocab; j++) rc = q8_0_recover(w + j * n, n, wq + j * n, wd + j * nb);
    for (int64_t r = 0; !rc && r < rows; r++) quant_q8_0(x + r * n, n, xq + r * n, xd + r * nb);
    if (!rc) {
#pragma omp parallel for schedule(static)
        for (int64_t j = 0; j < n_vocab; j++)
            for (int64_t r = 0; r < rows; r++)
                y[r * n_vocab + j] = q8_0_dot(wq + j * n, 1, wd + j * nb, 1, xq + r * n, xd + r * nb, n);
    }
    free(wq);
    free(wd);
    return rc;
}
