/* ternary.c - absmean ternary and absmax integer quantization on plain arrays, 2-bit
 * packing, statistics, and the reference int8 x ternary matmul. */
#include "bitgrad/ternary.h"
#include "quant/bitnet_math.h"
#include "quant/quant_fast.h"
#include "tensor/tensor_impl.h"

int64_t bg_ternary_n_scales(int64_t rows, int64_t cols, bg_wq_mode mode, int64_t group)
{
    switch (mode) {
    case BG_WQ_PER_TENSOR: return 1;
    case BG_WQ_PER_ROW: return rows;
    case BG_WQ_PER_GROUP: return group > 0 ? rows * ((cols + group - 1) / group) : 0;
    }
    return 0;
}

/* Visits every scale group of a [rows, cols] matrix: start offset, length, scale index. */
#define FOR_EACH_GROUP(rows, cols, mode, group, BODY)                                      \
    do {                                                                                   \
        int64_t gl_ = (mode) == BG_WQ_PER_GROUP ? (group) : (cols);                        \
        if ((mode) == BG_WQ_PER_TENSOR) {                                                  \
            int64_t off = 0, len = (rows) * (cols), si = 0;                                \
            BODY;                                                                          \
        } else {                                                                           \
            int64_t per_row = ((cols) + gl_ - 1) / gl_;                                    \
            for (int64_t r_ = 0; r_ < (rows); r_++)                                        \
                for (int64_t g_ = 0; g_ < per_row; g_++) {                                 \
                    int64_t off = r_ * (cols) + g_ * gl_, si = r_ * per_row + g_;          \
                    int64_t len = (cols) - g_ * gl_ < gl_ ? (cols) - g_ * gl_ : gl_;       \
                    BODY;                                                                  \
                }                                                                          \
        }                                                                                  \
    } while (0)

static int check_mode(int64_t rows, int64_t cols, bg_wq_mode mode, int64_t group)
{
    if (rows < 0 || cols < 0) return BG_EINVAL;
    if ((unsigned)mode > BG_WQ_PER_GROUP || (mode == BG_WQ_PER_GROUP && group < 1))
        return BG_EINVAL;
    return BG_OK;
}

int bg_ternary_quantize(const float *w, int64_t rows, int64_t cols, bg_wq_mode mode,
                        int64_t group, int8_t *codes, float *scales)
{
    if (!w || !codes || !scales || check_mode(rows, cols, mode, group)) return BG_EINVAL;
    FOR_EACH_GROUP(rows, cols, mode, group, {
        float s = bg__absmean_scale_fast(w + off, len);
        scales[si] = s;
        bg__ternary_codes(w + off, len, s, codes + off);
    });
    return BG_OK;
}

int bg_ternary_dequantize(const int8_t *codes, const float *scales, int64_t rows, int64_t cols,
                          bg_wq_mode mode, int64_t group, float *w)
{
    if (!w || !codes || !scales || check_mode(rows, cols, mode, group)) return BG_EINVAL;
    FOR_EACH_GROUP(rows, cols, mode, group, {
        for (int64_t i = 0; i < len; i++) w[off + i] = (float)codes[off + i] * scales[si];
    });
    return BG_OK;
}

int bg_act_quantize(const float *x, int64_t rows, int64_t cols, int bits, int8_t *levels,
                    float *scales)
{
    if (!x || !levels || !scales || rows < 0 || cols < 0 || bits < 2 || bits > 8)
        return BG_EINVAL;
    for (int64_t r = 0; r < rows; r++) {
        float s = bg_absmax_scale(bg_absmax(x + r * cols, cols), bits);
        scales[r] = s;
        for (int64_t i = 0; i < cols; i++)
            levels[r * cols + i] = (int8_t)bg_act_level(x[r * cols + i], s, bits);
    }
    return BG_OK;
}

size_t bg_pack2_size(int64_t n) { return n > 0 ? (size_t)((n + 3) / 4) : 0; }

int bg_pack2(const int8_t *codes, int64_t n, uint8_t *out)
{
    if (!codes || !out || n < 0) return BG_EINVAL;
    memset(out, 0, bg_pack2_size(n));
    for (int64_t i = 0; i < n; i++) {
        if (codes[i] < -1 || codes[i] > 1) return BG_EINVAL;
        out[i / 4] |= (uint8_t)((codes[i] + 1) << (2 * (i % 4)));
    }
    return BG_OK;
}

int bg_unpack2(const uint8_t *packed, int64_t n, int8_t *codes)
{
    if (!codes || !packed || n < 0) return BG_EINVAL;
    for (int64_t i = 0; i < n; i++) {
        int v = (packed[i / 4] >> (2 * (i % 4))) & 3;
        if (v == 3) return BG_EFORMAT;
        codes[i] = (int8_t)(v - 1);
    }
    return BG_OK;
}

double bg_ternary_sparsity(const int8_t *codes, int64_t n)
{
    if (!codes || n <= 0) return 0.0;
    int64_t z = 0;
    for (int64_t i = 0; i < n; i++) z += codes[i] == 0;
    return (double)z / (double)n;
}

int64_t bg_ternary_flips(const int8_t *a, const int8_t *b, int64_t n)
{
    if (!a || !b || n < 0) return -1;
    int64_t f = 0;
    for (int64_t i = 0; i < n; i++) f += a[i] != b[i];
    return f;
}

double bg_compression_ratio(int64_t n, double bits_per_weight, int64_t n_scales)
{
    double packed = (double)n * bits_per_weight / 8.0 + (double)n_scales * 4.0;
    return packed > 0 ? (double)n * 4.0 / packed : 0.0;
}

int bg_ternary_matmul_ref(const int8_t *lx, const float *s_x, const int8_t *codes,
                          const float *s_w, bool s_w_per_row, int64_t m, int64_t n, int64_t k,
                          float *y)
{
    if (!lx || !s_x || !codes || !s_w || !y || m < 0 || n < 0 || k < 0) return BG_EINVAL;
#pragma omp parallel for schedule(static) if (m * n * k > 1 << 20)
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            int32_t acc = 0;
            const int8_t *a = lx + i * k, *c = codes + j * k;
            for (int64_t t = 0; t < k; t++) acc += (int32_t)a[t] * c[t];
            y[i * n + j] = (float)acc * s_w[s_w_per_row ? j : 0] / s_x[i];
        }
    return BG_OK;
}
