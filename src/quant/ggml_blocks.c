/* src/quant/ggml_blocks.c - ggml block formats Q8_0, Q2_0, TQ1_0 and TQ2_0: quantizers equal to ggml's
 * quantize_row_*_ref bit for bit, dequantizers equal to dequantize_row_*, and the lossless
 * ternary-code packers used by the exporter. Layouts: ../shared/golden/ggml-ternary/README.txt.
 *
 * A TQ block is 256 trits t in {0,1,2} (code = t - 1) and an fp16 scale d; both formats are
 * written from a trit array, so quantizing (t = lroundf(x / amax) + 1) and packing codes
 * (t = code + 1, d given) share one packer. */
#include <bitgrad/quant.h>

#include <math.h>
#include <string.h>

#include "quant/ggml_blocks.h"

/* ---- shared helpers ------------------------------------------------------- */

/* max |x| over n values; BG_EINVAL if one is non-finite. */
static int block_absmax(const float *x, int n, float *amax)
{
    float m = 0.0f;
    for (int i = 0; i < n; i++) {
        if (!isfinite(x[i])) return BG_EINVAL;
        float v = fabsf(x[i]);
        m = v > m ? v : m;
    }
    *amax = m;
    return 0;
}

/* ggml's trit: lroundf(x * id) + 1 (half away from zero). x * id is within 1 ulp of [-1, 1]
 * except when 1 / amax overflowed (amax < 2^-127): ggml's result is undefined there, bitgrad
 * takes the sign (0 * Inf = NaN gives 0). */
static uint8_t trit_of(float x, float id)
{
    float v = x * id;
    if (v != v) return 1;
    long r = v > 1.5f ? 1 : v < -1.5f ? -1 : lroundf(v);
    return (uint8_t)(r + 1);
}

static int quantize_trits(const float *x, uint8_t trits[BG_QK_TQ], float *amax)
{
    int rc = block_absmax(x, BG_QK_TQ, amax);
    if (rc != 0) return rc;
    float id = *amax != 0.0f ? 1.0f / *amax : 0.0f;
    for (int i = 0; i < BG_QK_TQ; i++) trits[i] = trit_of(x[i], id);
    return 0;
}

static int codes_to_trits(const int8_t *codes, uint8_t trits[BG_QK_TQ])
{
    for (int i = 0; i < BG_QK_TQ; i++) {
        if (codes[i] < -1 || codes[i] > 1) return BG_EINVAL;
        trits[i] = (uint8_t)(codes[i] + 1);
    }
    return 0;
}

/* ---- TQ2_0: qs[64] of 2-bit codes, then fp16 d ------------------------------ */

/* byte 32*h + m holds element 128*h + 32*n + m in bits [2n, 2n+1] */
static void tq2_0_pack(const uint8_t *t, uint16_t d, uint8_t *blk)
{
    for (int h = 0; h < 2; h++) {
        for (int m = 0; m < 32; m++) {
            unsigned q = 0;
            for (int n = 0; n < 4; n++) q |= (unsigned)t[128 * h + 32 * n + m] << (2 * n);
            blk[32 * h + m] = (uint8_t)q;
        }
    }
    bg_store_le16(blk + 64, d);
}

/* 2-bit codes (0..3) of one block into q[256]. */
static void tq2_0_unpack(const uint8_t *blk, uint8_t *q)
{
    for (int h = 0; h < 2; h++)
        for (int n = 0; n < 4; n++)
            for (int m = 0; m < 32; m++)
                q[128 * h + 32 * n + m] = (uint8_t)((blk[32 * h + m] >> (2 * n)) & 3u);
}

/* ---- TQ1_0: qs[48] and qh[4] of base-3 packed trits, then fp16 d --------------- */

/* k trits (first most significant) of elements t[0], t[stride], ...; q scaled to 5 trits,
 * stored as ceil(q * 256 / 243) so that decoding is a multiply and a shift. */
static uint8_t pack_trits5(const uint8_t *t, int stride, int k)
{
    unsigned q = 0;
    for (int n = 0; n < k; n++) q = q * 3u + t[n * stride];
    for (int n = k; n < 5; n++) q *= 3u;
    return (uint8_t)((q * 256u + 242u) / 243u);
}

static void unpack_trits5(uint8_t b, uint8_t *t, int stride, int k)
{
    static const uint8_t pow3[5] = { 1, 3, 9, 27, 81 };
    for (int n = 0; n < k; n++) {
        uint8_t q = (uint8_t)(b * pow3[n]); /* wraps mod 256 by design */
        t[n * stride] = (uint8_t)(((unsigned)q * 3u) >> 8);
    }
}

static void tq1_0_pack(const uint8_t *t, uint16_t d, uint8_t *blk)
{
    for (int m = 0; m < 32; m++) blk[m] = pack_trits5(t + m, 32, 5);
    for (int m = 0; m < 16; m++) blk[32 + m] = pack_trits5(t + 160 + m, 16, 5);
    for (int j = 0; j < 4; j++) blk[48 + j] = pack_trits5(t + 240 + j, 4, 4);
    bg_store_le16(blk + 52, d);
}

static void tq1_0_unpack(const uint8_t *blk, uint8_t *t)
{
    for (int m = 0; m < 32; m++) unpack_trits5(blk[m], t + m, 32, 5);
    for (int m = 0; m < 16; m++) unpack_trits5(blk[32 + m], t + 160 + m, 16, 5);
    for (int j = 0; j < 4; j++) unpack_trits5(blk[48 + j], t + 240 + j, 4, 4);
}

/* ---- TQ quantize / dequantize ------------------------------------------------ */

typedef void (*tq_pack_fn)(const uint8_t *t, uint16_t d, uint8_t *blk);
typedef void (*tq_unpack_fn)(const uint8_t *blk, uint8_t *t);

static int quantize_tq(const float *src, uint8_t *dst, int64_t n, tq_pack_fn pack, size_t bytes)
{
    uint8_t trits[BG_QK_TQ];
    for (int64_t b = 0; b < n / BG_QK_TQ; b++) {
        float amax;
        int rc = quantize_trits(src + b * BG_QK_TQ, trits, &amax);
        if (rc != 0) return rc;
        pack(trits, bg_fp32_to_fp16(amax), dst + (size_t)b * bytes);
    }
    return 0;
}

static void dequantize_tq(const uint8_t *src, float *dst, int64_t n, tq_unpack_fn unpack,
                          size_t bytes)
{
    uint8_t t[BG_QK_TQ];
    for (int64_t b = 0; b < n / BG_QK_TQ; b++) {
        const uint8_t *blk = src + (size_t)b * bytes;
        float d = bg_fp16_to_fp32(bg_load_le16(blk + bytes - 2));
        unpack(blk, t);
        for (int i = 0; i < BG_QK_TQ; i++) dst[b * BG_QK_TQ + i] = (float)((int)t[i] - 1) * d;
    }
}

int bg_quantize_tq1_0(const float *src, uint8_t *dst, int64_t n)
{
    return quantize_tq(src, dst, n, tq1_0_pack, BG_TQ1_0_BLOCK_BYTES);
}

int bg_quantize_tq2_0(const float *src, uint8_t *dst, int64_t n)
{
    return quantize_tq(src, dst, n, tq2_0_pack, BG_TQ2_0_BLOCK_BYTES);
}

void bg_dequantize_tq1_0(const uint8_t *src, float *dst, int64_t n)
{
    dequantize_tq(src, dst, n, tq1_0_unpack, BG_TQ1_0_BLOCK_BYTES);
}

void bg_dequantize_tq2_0(const uint8_t *src, float *dst, int64_t n)
{
    dequantize_tq(src, dst, n, tq2_0_unpack, BG_TQ2_0_BLOCK_BYTES);
}

/* ---- lossless code packing ----------------------------------------------------- */

static int pack_codes(const int8_t *codes, float d, void *dst, int64_t n, tq_pack_fn pack,
                      size_t bytes)
{
    if (!codes || !dst || n < 0 || !isfinite(d)) return BG_EINVAL;
    if (n % BG_QK_TQ != 0) return BG_ESHAPE;
    uint16_t dh = bg_fp32_to_fp16(d);
    uint8_t trits[BG_QK_TQ];
    for (int64_t b = 0; b < n / BG_QK_TQ; b++) {
        if (codes_to_trits(codes + b * BG_QK_TQ, trits) != 0) return BG_EINVAL;
        pack(trits, dh, (uint8_t *)dst + (size_t)b * bytes);
    }
    return 0;
}

int bg_tq2_0_pack_codes(const int8_t *codes, float d, void *dst, int64_t n)
{
    return pack_codes(codes, d, dst, n, tq2_0_pack, BG_TQ2_0_BLOCK_BYTES);
}

int bg_tq1_0_pack_codes(const int8_t *codes, float d, void *dst, int64_t n)
{
    return pack_codes(codes, d, dst, n, tq1_0_pack, BG_TQ1_0_BLOCK_BYTES);
}

int bg_tq_unpack_codes(int ggml_type, const void *src, int8_t *codes, float *d_per_block, int64_t n)
{
    if (!src || !codes || n < 0 || (ggml_type != BG_GGML_TQ1_0 && ggml_type != BG_GGML_TQ2_0))
        return BG_EINVAL;
    if (n % BG_QK_TQ != 0) return BG_ESHAPE;
    bool tq1 = ggml_type == BG_GGML_TQ1_0;
    size_t bytes = tq1 ? BG_TQ1_0_BLOCK_BYTES : BG_TQ2_0_BLOCK_BYTES;
    uint8_t t[BG_QK_TQ];
    for (int64_t b = 0; b < n / BG_QK_TQ; b++) {
        const uint8_t *blk = (const uint8_t *)src + (size_t)b * bytes;
        if (tq1) tq1_0_unpack(blk, t);
        else
            tq2_0_unpack(blk, t);
        for (int i = 0; i < BG_QK_TQ; i++) {
            if (t[i] > 2) return BG_EFORMAT;
            codes[b * BG_QK_TQ + i] = (int8_t)(t[i] - 1);
        }
        if (d_per_block) d_per_block[b] = bg_fp16_to_fp32(bg_load_le16(blk + bytes - 2));
    }
    return 0;
}

/* ---- Q8_0: fp16 d, then 32 int8 ---------------------------------------------- */

int bg_quantize_q8_0(const float *src, uint8_t *dst, int64_t n)
{
    for (int64_t b = 0; b < n / BG_QK8_0; b++) {
        const float *x = src + b * BG_QK8_0;
        uint8_t *blk = dst + (size_t)b * 34;
        float amax;
        if (block_absmax(x, BG_QK8_0, &amax) != 0) return BG_EINVAL;
        float d = amax / 127.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        bg_store_le16(blk, bg_fp32_to_fp16(d));
        for (int j = 0; j < BG_QK8_0; j++) {
            float r = roundf(x[j] * id);
            /* |x * id| <= 127 up to rounding; the clamp only guards 1/d overflowing */
            int8_t q = (int8_t)(r > 127.0f ? 127 : r < -127.0f ? -127 : r != r ? 0 : (int)r);
            memcpy(blk + 2 + j, &q, 1);
        }
    }
    return 0;
}

void bg_dequantize_q8_0(const uint8_t *src, float *dst, int64_t n)
{
    for (int64_t b = 0; b < n / BG_QK8_0; b++) {
        const uint8_t *blk = src + (size_t)b * 34;
        float d = bg_fp16_to_fp32(bg_load_le16(blk));
        for (int j = 0; j < BG_QK8_0; j++) {
            int8_t q;
            memcpy(&q, blk + 2 + j, 1);
            dst[b * BG_QK8_0 + j] = (float)q * d;
        }
    }
}

/* ---- Q2_0: fp16 d, then qs[16]; element j in byte j / 4 at bits 2 * (j % 4) --------- */

static void q2_0_pack(const uint8_t *q, uint16_t d, uint8_t *blk)
{
    bg_store_le16(blk, d);
    for (int b = 0; b < BG_QK2_0 / 4; b++)
        blk[2 + b] = (uint8_t)(q[4 * b] | (q[4 * b + 1] << 2) | (q[4 * b + 2] << 4) |
                               (q[4 * b + 3] << 6));
}

static void q2_0_unpack(const uint8_t *blk, uint8_t *q)
{
    for (int j = 0; j < BG_QK2_0; j++) q[j] = (uint8_t)((blk[2 + j / 4] >> (2 * (j % 4))) & 3u);
}

/* ggml's quantize_row_q2_0_ref: d = amax, q = clamp(roundf(x / d) + 1, 0, 3). x * id is within
 * an ulp of [-1, 1] unless 1 / amax overflowed; then the sign decides (as trit_of). */
int bg_quantize_q2_0(const float *src, uint8_t *dst, int64_t n)
{
    uint8_t q[BG_QK2_0];
    for (int64_t b = 0; b < n / BG_QK2_0; b++) {
        const float *x = src + b * BG_QK2_0;
        float amax;
        if (block_absmax(x, BG_QK2_0, &amax) != 0) return BG_EINVAL;
        float id = amax > 0.0f ? 1.0f / amax : 0.0f;
        for (int j = 0; j < BG_QK2_0; j++) {
            float v = x[j] * id;
            long r = v != v ? 0 : v > 3.0f ? 2 : v < -3.0f ? -1 : lroundf(v);
            r = r < -1 ? -1 : r > 2 ? 2 : r;
            q[j] = (uint8_t)(r + 1);
        }
        q2_0_pack(q, bg_fp32_to_fp16(amax), dst + (size_t)b * BG_Q2_0_BLOCK_BYTES);
    }
    return 0;
}

void bg_dequantize_q2_0(const uint8_t *src, float *dst, int64_t n)
{
    uint8_t q[BG_QK2_0];
    for (int64_t b = 0; b < n / BG_QK2_0; b++) {
        const uint8_t *blk = src + (size_t)b * BG_Q2_0_BLOCK_BYTES;
        float d = bg_fp16_to_fp32(bg_load_le16(blk));
        q2_0_unpack(blk, q);
        for (int j = 0; j < BG_QK2_0; j++) dst[b * BG_QK2_0 + j] = (float)((int)q[j] - 1) * d;
    }
}

/* ---- codes of any ternary-capable block type ------------------------------------------ */

static int64_t code_block(int t)
{
    switch (t) {
    case BG_GGML_TQ1_0:
    case BG_GGML_TQ2_0: return BG_QK_TQ;
    case BG_GGML_Q2_0: return BG_QK2_0;
    case BG_GGML_Q8_0: return BG_QK8_0;
    default: return 0;
    }
}

int bg_ggml_pack_codes(int t, const int8_t *codes, float d, void *dst, int64_t n)
{
    if (t == BG_GGML_TQ2_0) return bg_tq2_0_pack_codes(codes, d, dst, n);
    if (t == BG_GGML_TQ1_0) return bg_tq1_0_pack_codes(codes, d, dst, n);
    int64_t qk = code_block(t);
    if (!qk || !codes || !dst || n < 0 || !isfinite(d)) return BG_EINVAL;
    if (n % qk != 0) return BG_ESHAPE;
    uint16_t dh = bg_fp32_to_fp16(d);
    uint8_t q[BG_QK2_0];
    size_t bytes = t == BG_GGML_Q2_0 ? BG_Q2_0_BLOCK_BYTES : 34;
    for (int64_t b = 0; b < n / qk; b++) {
        const int8_t *c = codes + b * qk;
        uint8_t *blk = (uint8_t *)dst + (size_t)b * bytes;
        for (int j = 0; j < qk; j++)
            if (c[j] < -1 || c[j] > 1) return BG_EINVAL;
        if (t == BG_GGML_Q2_0) {
            for (int j = 0; j < qk; j++) q[j] = (uint8_t)(c[j] + 1);
            q2_0_pack(q, dh, blk);
        } else {
            bg_store_le16(blk, dh);
            memcpy(blk + 2, c, BG_QK8_0);
        }
    }
    return 0;
}

int bg_ggml_unpack_codes(int t, const void *src, int8_t *codes, float *d_per_block, int64_t n)
{
    if (t == BG_GGML_TQ1_0 || t == BG_GGML_TQ2_0)
        return bg_tq_unpack_codes(t, src, codes, d_per_block, n);
    int64_t qk = code_block(t);
    if (!qk || !src || !codes || n < 0) return BG_EINVAL;
    if (n % qk != 0) return BG_ESHAPE;
    size_t bytes = t == BG_GGML_Q2_0 ? BG_Q2_0_BLOCK_BYTES : 34;
    uint8_t q[BG_QK2_0];
    for (int64_t b = 0; b < n / qk; b++) {
        const uint8_t *blk = (const uint8_t *)src + (size_t)b * bytes;
        int8_t *c = codes + b * qk;
        if (t == BG_GGML_Q2_0) {
            q2_0_unpack(blk, q);
            for (int j = 0; j < qk; j++) c[j] = (int8_t)((int)q[j] - 1);
        } else {
            memcpy(c, blk + 2, BG_QK8_0);
        }
        for (int j = 0; j < qk; j++)
            if (c[j] < -1 || c[j] > 1) return BG_EFORMAT;
        if (d_per_block) d_per_block[b] = bg_fp16_to_fp32(bg_load_le16(blk));
    }
    return 0;
}
