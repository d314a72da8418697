/* src/quant/ggml_types.c - the ggml type table (block sizes, bytes, names), float32 <-> fp16 /
 * bf16 scalar conversions, the plain element types, and the bg_ggml_quantize /
 * bg_ggml_dequantize dispatch. Block formats (Q8_0, Q2_0, TQ1_0, TQ2_0) live in ggml_blocks.c. */
#include <bitgrad/quant.h>

#include <math.h>
#include <string.h>

#include "quant/ggml_blocks.h"

/* ---- type table --------------------------------------------------------- */

typedef struct ggml_type_info {
    const char *name;
    int64_t block; /* elements per block; 0 = no such type */
    size_t bytes;  /* bytes per block */
} ggml_type_info;

/* From ggml.c type_traits (and gguf-py GGML_QUANT_SIZES); QK_K = 256. */
static const ggml_type_info type_table[BG_GGML_TYPE_COUNT] = {
    [BG_GGML_F32] = { "f32", 1, 4 },
    [BG_GGML_F16] = { "f16", 1, 2 },
    [BG_GGML_Q4_0] = { "q4_0", 32, 18 },
    [BG_GGML_Q4_1] = { "q4_1", 32, 20 },
    [BG_GGML_Q5_0] = { "q5_0", 32, 22 },
    [BG_GGML_Q5_1] = { "q5_1", 32, 24 },
    [BG_GGML_Q8_0] = { "q8_0", 32, 34 },
    [BG_GGML_Q8_1] = { "q8_1", 32, 40 },
    [BG_GGML_Q2_K] = { "q2_K", 256, 84 },
    [BG_GGML_Q3_K] = { "q3_K", 256, 110 },
    [BG_GGML_Q4_K] = { "q4_K", 256, 144 },
    [BG_GGML_Q5_K] = { "q5_K", 256, 176 },
    [BG_GGML_Q6_K] = { "q6_K", 256, 210 },
    [BG_GGML_Q8_K] = { "q8_K", 256, 292 },
    [BG_GGML_IQ2_XXS] = { "iq2_xxs", 256, 66 },
    [BG_GGML_IQ2_XS] = { "iq2_xs", 256, 74 },
    [BG_GGML_IQ3_XXS] = { "iq3_xxs", 256, 98 },
    [BG_GGML_IQ1_S] = { "iq1_s", 256, 50 },
    [BG_GGML_IQ4_NL] = { "iq4_nl", 32, 18 },
    [BG_GGML_IQ3_S] = { "iq3_s", 256, 110 },
    [BG_GGML_IQ2_S] = { "iq2_s", 256, 82 },
    [BG_GGML_IQ4_XS] = { "iq4_xs", 256, 136 },
    [BG_GGML_I8] = { "i8", 1, 1 },
    [BG_GGML_I16] = { "i16", 1, 2 },
    [BG_GGML_I32] = { "i32", 1, 4 },
    [BG_GGML_I64] = { "i64", 1, 8 },
    [BG_GGML_F64] = { "f64", 1, 8 },
    [BG_GGML_IQ1_M] = { "iq1_m", 256, 56 },
    [BG_GGML_BF16] = { "bf16", 1, 2 },
    [BG_GGML_TQ1_0] = { "tq1_0", 256, 54 },
    [BG_GGML_TQ2_0] = { "tq2_0", 256, 66 },
    [BG_GGML_MXFP4] = { "mxfp4", 32, 17 },
    [BG_GGML_NVFP4] = { "nvfp4", 64, 36 },
    [BG_GGML_Q1_0] = { "q1_0", 128, 18 },
    [BG_GGML_Q2_0] = { "q2_0", 64, 18 },
};

static const ggml_type_info *type_info(int t)
{
    if (t < 0 || t >= BG_GGML_TYPE_COUNT || type_table[t].block == 0) return NULL;
    return &type_table[t];
}

size_t bg_ggml_type_size(int ggml_type)
{
    const ggml_type_info *ti = type_info(ggml_type);
    return ti ? ti->bytes : 0;
}

int64_t bg_ggml_block_size(int ggml_type)
{
    const ggml_type_info *ti = type_info(ggml_type);
    return ti ? ti->block : 0;
}

size_t bg_ggml_row_size(int ggml_type, int64_t n)
{
    const ggml_type_info *ti = type_info(ggml_type);
    if (!ti || n < 0 || n % ti->block != 0) return 0;
    uint64_t blocks = (uint64_t)(n / ti->block);
    if (blocks > SIZE_MAX / ti->bytes) return 0;
    return (size_t)blocks * ti->bytes;
}

const char *bg_ggml_type_name(int ggml_type)
{
    const ggml_type_info *ti = type_info(ggml_type);
    return ti ? ti->name : "unknown";
}

bool bg_ggml_can_quantize(int t)
{
    switch (t) {
    case BG_GGML_F32:
    case BG_GGML_F16:
    case BG_GGML_BF16:
    case BG_GGML_F64:
    case BG_GGML_I8:
    case BG_GGML_I16:
    case BG_GGML_I32:
    case BG_GGML_Q8_0:
    case BG_GGML_Q2_0:
    case BG_GGML_TQ1_0:
    case BG_GGML_TQ2_0: return true;
    default: return false;
    }
}

bool bg_ggml_can_dequantize(int t) { return t == BG_GGML_I64 || bg_ggml_can_quantize(t); }

/* ---- fp16 / bf16 scalars -------------------------------------------------- */

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Shifts a significand right by s (1..31) rounding to nearest, ties to even. */
static uint32_t shift_round_even(uint32_t m, unsigned s)
{
    uint32_t q = m >> s;
    uint32_t rem = m & ((1u << s) - 1u);
    uint32_t half = 1u << (s - 1u);
    if (rem > half || (rem == half && (q & 1u))) q++;
    return q;
}

uint16_t bg_fp32_to_fp16(float f)
{
    uint32_t x = f32_bits(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t exp = (x >> 23) & 0xffu;
    uint32_t mant = x & 0x7fffffu;
    if (exp == 0xffu) /* Inf, or NaN made quiet with its top payload bits */
        return (uint16_t)(sign | 0x7c00u | (mant ? 0x200u | (mant >> 13) : 0u));
    int32_t e = (int32_t)exp - 127 + 15;
    if (e >= 31) return (uint16_t)(sign | 0x7c00u);
    if (e <= 0) {
        /* half subnormal: value = m * 2^-24; a carry into 0x400 gives the smallest normal */
        unsigned s = (unsigned)(14 - e);
        if (s > 25) return (uint16_t)sign;
        return (uint16_t)(sign | shift_round_even(mant | 0x800000u, s));
    }
    /* a carry out of the mantissa increments the exponent (up to Inf), as it should */
    uint32_t h = ((uint32_t)e << 10) | (mant >> 13);
    uint32_t rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
    return (uint16_t)(sign | h);
}

float bg_fp16_to_fp32(uint16_t h)
{
    uint32_t sign = ((uint32_t)h & 0x8000u) << 16;
    uint32_t exp = ((uint32_t)h >> 10) & 0x1fu;
    uint32_t mant = (uint32_t)h & 0x3ffu;
    if (exp == 0) {
        float v = (float)mant * 0x1p-24f; /* exact: mant < 2^10 */
        return sign ? -v : v;
    }
    if (exp == 0x1fu) return bits_f32(sign | 0x7f800000u | (mant << 13));
    return bits_f32(sign | ((exp + 112u) << 23) | (mant << 13));
}

uint16_t bg_fp32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep it NaN and make it quiet */
        return (uint16_t)((u >> 16) | 0x40u);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

float bg_bf16_to_fp32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

/* ---- plain element types ---------------------------------------------------- */

/* Rounds half away from zero; BG_EINVAL if x is non-finite or the result is outside [lo, hi]. */
static int round_to_int(float x, double lo, double hi, int64_t *out)
{
    if (!isfinite(x)) return BG_EINVAL;
    double r = round((double)x);
    if (r < lo || r > hi) return BG_EINVAL;
    *out = (int64_t)r;
    return 0;
}

static int quantize_int(int t, const float *src, uint8_t *dst, int64_t n)
{
    double lo = t == BG_GGML_I8 ? -128.0 : t == BG_GGML_I16 ? -32768.0 : -2147483648.0;
    double hi = t == BG_GGML_I8 ? 127.0 : t == BG_GGML_I16 ? 32767.0 : 2147483647.0;
    for (int64_t i = 0; i < n; i++) {
        int64_t v;
        if (round_to_int(src[i], lo, hi, &v) != 0) return BG_EINVAL;
        if (t == BG_GGML_I8) {
            int8_t q = (int8_t)v;
            memcpy(dst + i, &q, 1);
        } else if (t == BG_GGML_I16) {
            int16_t q = (int16_t)v;
            memcpy(dst + 2 * i, &q, 2);
        } else {
            int32_t q = (int32_t)v;
            memcpy(dst + 4 * i, &q, 4);
        }
    }
    return 0;
}

static int quantize_plain(int t, const float *src, uint8_t *dst, int64_t n)
{
    switch (t) {
    case BG_GGML_F32: memmove(dst, src, (size_t)n * sizeof(float)); return 0;
    case BG_GGML_F16:
        for (int64_t i = 0; i < n; i++) bg_store_le16(dst + 2 * i, bg_fp32_to_fp16(src[i]));
        return 0;
    case BG_GGML_BF16:
        for (int64_t i = 0; i < n; i++) bg_store_le16(dst + 2 * i, bg_fp32_to_bf16(src[i]));
        return 0;
    case BG_GGML_F64:
        for (int64_t i = 0; i < n; i++) {
            double v = (double)src[i];
            memcpy(dst + 8 * i, &v, 8);
        }
        return 0;
    default: return quantize_int(t, src, dst, n);
    }
}

static void dequantize_plain(int t, const uint8_t *src, float *dst, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        switch (t) {
        case BG_GGML_F16: dst[i] = bg_fp16_to_fp32(bg_load_le16(src + 2 * i)); break;
        case BG_GGML_BF16: dst[i] = bg_bf16_to_fp32(bg_load_le16(src + 2 * i)); break;
        case BG_GGML_I8: {
            int8_t v;
            memcpy(&v, src + i, 1);
            dst[i] = (float)v;
            break;
        }
        case BG_GGML_I16: {
            int16_t v;
            memcpy(&v, src + 2 * i, 2);
            dst[i] = (float)v;
            break;
        }
        case BG_GGML_I32: {
            int32_t v;
            memcpy(&v, src + 4 * i, 4);
            dst[i] = (float)v;
            break;
        }
        case BG_GGML_I64: {
            int64_t v;
            memcpy(&v, src + 8 * i, 8);
            dst[i] = (float)v;
            break;
        }
        case BG_GGML_F64: {
            double v;
            memcpy(&v, src + 8 * i, 8);
            dst[i] = (float)v;
            break;
        }
        default: break;
        }
    }
}

/* ---- dispatch --------------------------------------------------------------- */

int bg_ggml_quantize(int ggml_type, const float *src, void *dst, int64_t nrows, int64_t n_per_row)
{
    if (!src || !dst || nrows < 0 || n_per_row < 0) return BG_EINVAL;
    if (!bg_ggml_can_quantize(ggml_type)) return BG_EUNSUPPORTED;
    if (n_per_row % bg_ggml_block_size(ggml_type) != 0) return BG_ESHAPE;
    if (n_per_row != 0 && nrows > INT64_MAX / n_per_row) return BG_EINVAL;
    int64_t n = nrows * n_per_row;
    if (n == 0) return 0;
    /* rows are whole blocks, so nrows rows are n / block consecutive blocks */
    switch (ggml_type) {
    case BG_GGML_Q8_0: return bg_quantize_q8_0(src, dst, n);
    case BG_GGML_Q2_0: return bg_quantize_q2_0(src, dst, n);
    case BG_GGML_TQ1_0: return bg_quantize_tq1_0(src, dst, n);
    case BG_GGML_TQ2_0: return bg_quantize_tq2_0(src, dst, n);
    default: return quantize_plain(ggml_type, src, dst, n);
    }
}

int bg_ggml_dequantize(int ggml_type, const void *src, float *dst, int64_t n)
{
    if (!src || !dst || n < 0) return BG_EINVAL;
    if (!bg_ggml_can_dequantize(ggml_type)) return BG_EUNSUPPORTED;
    if (n % bg_ggml_block_size(ggml_type) != 0) return BG_ESHAPE;
    switch (ggml_type) {
    case BG_GGML_F32: memmove(dst, src, (size_t)n * sizeof(float)); break;
    case BG_GGML_Q8_0: bg_dequantize_q8_0(src, dst, n); break;
    case BG_GGML_Q2_0: bg_dequantize_q2_0(src, dst, n); break;
    case BG_GGML_TQ1_0: bg_dequantize_tq1_0(src, dst, n); break;
    case BG_GGML_TQ2_0: bg_dequantize_tq2_0(src, dst, n); break;
    default: dequantize_plain(ggml_type, src, dst, n); break;
    }
    return 0;
}
