/* layers.c - Linear / BitLinear (training forward through the STE ops, and the int8 x
 * ternary inference forward), Embedding, RMSNorm, LayerNorm, Dropout, ReLU, Sequential. */
#include <math.h>

#include "bitgrad/quant.h"
#include "bitgrad/ternary.h"
#include "nn/lora_impl.h"

bg_bitlinear_config bg_bitlinear_default(void)
{
    return (bg_bitlinear_config){ .weight_mode = BG_WQ_PER_TENSOR,
                                  .group = 0,
                                  .act_bits = 8,
                                  .act_per_tensor = false,
                                  .quant_weights = true,
                                  .quant_acts = true,
                                  .lambda = 1.0f };
}

static int check_cfg(bg_ctx *ctx, const bg_bitlinear_config *c)
{
    if (c->act_bits < 2 || c->act_bits > 8)
        return bg__error(ctx, BG_EINVAL, "bitlinear: act_bits %d outside 2..8", c->act_bits);
    if ((unsigned)c->weight_mode > BG_WQ_PER_GROUP ||
        (c->weight_mode == BG_WQ_PER_GROUP && c->group < 1))
        return bg__error(ctx, BG_EINVAL, "bitlinear: bad weight mode %d / group %lld",
                         c->weight_mode, (long long)c->group);
    if (!(c->lambda >= 0.0f && c->lambda <= 1.0f))
        return bg__error(ctx, BG_EINVAL, "bitlinear: lambda %g outside [0,1]", (double)c->lambda);
    return BG_OK;
}

/* llama.cpp's nearest_int: round half to even through the float magic number. */
static inline int nearest_even(float v)
{
    float f = v + 12582912.0f;
    int32_t i;
    memcpy(&i, &f, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

/* One output row as llama.cpp computes TQ x Q8_K: per block of 256, activations scaled by
 * -127 / (signed element of largest magnitude), an integer dot with the codes, and
 * sumf += sumi * d_x; then the projection's scale. */
static void infer_row_llama(const bg_module *m, const float *x, int64_t in, int64_t out, float *y,
                            int8_t *q, float *dx)
{
    const int8_t *codes = m->codes;
    const float *s_w = m->scales;
    bool per_row = m->cfg.weight_mode == BG_WQ_PER_ROW, has_s;
    float d_w, s;
    bg__llama_wscale(m, &d_w, &has_s, &s);
    int lt = bg__llama_weight_type(m);
    int64_t nb = in / 256;
    for (int64_t b = 0; b < nb; b++) {
        const float *xb = x + b * 256;
        float amax = 0.0f, maxv = 0.0f;
        for (int i = 0; i < 256; i++)
            if (fabsf(xb[i]) > amax) {
                amax = fabsf(xb[i]);
                maxv = xb[i];
            }
        if (amax == 0.0f) {
            dx[b] = 0.0f;
            memset(q + b * 256, 0, 256);
            continue;
        }
        float iscale = -127.0f / maxv;
        for (int i = 0; i < 256; i++) {
            int v = nearest_even(iscale * xb[i]);
            q[b * 256 + i] = (int8_t)(v > 127 ? 127 : v);
        }
        dx[b] = 1.0f / iscale;
    }
    bool tq = lt == BG_GGML_TQ2_0 || lt == BG_GGML_TQ1_0;
    for (int64_t j = 0; j < out && !per_row && tq; j++) {
        float v = bg__llama_tq_dot(lt, q, dx, codes + j * in, in, d_w);
        y[j] = has_s ? v * s : v;
    }
    for (int64_t j = 0; j < out && (per_row || !tq); j++) {
        float sumf = 0.0f;
        for (int64_t b = 0; b < nb; b++) {
            int32_t sumi = 0;
            for (int i = 0; i < 256; i++)
                sumi += (int32_t)q[b * 256 + i] * codes[j * in + b * 256 + i];
            sumf += (float)sumi * dx[b];
        }
        y[j] = sumf * s_w[per_row ? j : 0];
    }
}

/* Inference: int8 activations (per token) x ternary codes, int32 accumulation. */
static bg_tensor *linear_infer(bg_module *m, bg_tensor *x)
{
    bg_ctx *ctx = m->ctx;
    bg_tensor *w = m->params[0];
    int64_t in = w->shape[1], out = w->shape[0];
    int64_t rows = bg__numel(x->ndim - 1, x->shape);
    int64_t shape[BG_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = out;
    bg_tensor *y = bg__step_new(ctx, BG_F32, x->ndim, shape);
    int8_t *lx = bg__arena_alloc(ctx, (size_t)(rows * in));
    float *sx = bg__arena_alloc(ctx, (size_t)rows * sizeof(float));
    const float *xd = bg__contig_data(x);
    if (!y || !lx || !sx || !xd) return NULL;
    int lt = m->emulate_llama ? bg__llama_weight_type(m) : -1;
    if ((lt == BG_GGML_TQ1_0 || lt == BG_GGML_TQ2_0) && in % 256 == 0) {
        float *dxb = bg__arena_alloc(ctx, (size_t)(in / 256 + 1) * sizeof(float));
        if (!dxb) return NULL;
        for (int64_t r = 0; r < rows; r++)
            infer_row_llama(m, xd + r * in, in, out, bg__f32(y) + r * out, lx, dxb);
    } else if (lt >= 0) {
        float *xr = bg__arena_alloc(ctx, (size_t)in * sizeof(float));
        if (!xr) return NULL;
        bg__llama_rows(m, lt, xd, rows, in, out, bg__f32(y), xr);
    } else {
        bg_act_quantize(xd, rows, in, m->cfg.act_bits, lx, sx);
        int rc = bg_tmat_matmul(m->packed, lx, sx, rows, y->data);
        if (rc) {
            bg__error(ctx, rc, "%s: inference kernel: out of memory", m->name);
            return NULL;
        }
    }
    if (bg_linear_bias(m)) {
        float *yd = y->data;
        const float *b = bg_linear_bias(m)->data;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < out; j++) yd[r * out + j] += b[j];
    }
    return y;
}

/* y + bias when the module has one (y, this module's fresh output, is dropped then). */
static bg_tensor *add_bias(bg_module *m, bg_tensor *y)
{
    bg_tensor *b = bg_linear_bias(m);
    if (!b || !y) return y;
    bg_tensor *yb = bg_add(y, b);
    if (yb) bg__step_drop(y);
    return yb;
}

bg_tensor *bg__linear_forward(bg_module *m, bg_tensor *x)
{
    if (!x) return NULL;
    bg_tensor *w = m->params[0];
    if (x->ndim < 1 || x->shape[x->ndim - 1] != w->shape[1]) {
        char s[64];
        bg__error(m->ctx, BG_ESHAPE, "%s: input %s, expected last dimension %lld", m->name,
                  bg__shape_str(x, s, sizeof s), (long long)w->shape[1]);
        return NULL;
    }
    if (m->base_pk) return bg__lora_apply(m, x, add_bias(m, bg__linear_forward_packed(m, x)));
    if (m->bit && m->inference) return bg__lora_apply(m, x, linear_infer(m, x));
    const bg_bitlinear_config *c = &m->cfg;
    if (m->bit && c->quant_acts && c->quant_weights && c->lambda == 1.0f && !c->act_per_tensor &&
        c->weight_mode != BG_WQ_PER_GROUP) {
        /* Full quantization: the fused, order-independent integer form. */
        bg_tensor *y = bg_bitlinear(x, w, c->act_bits, c->weight_mode == BG_WQ_PER_ROW);
        return bg__lora_apply(m, x, add_bias(m, y));
    }
    bg_tensor *xin = x, *wq = w;
    if (m->bit && m->cfg.quant_acts)
        xin = bg_act_quant(x, m->cfg.act_bits, m->cfg.act_per_tensor, m->cfg.lambda);
    if (m->bit && m->cfg.quant_weights)
        wq = bg_weight_quant(w, m->cfg.weight_mode, m->cfg.group, m->cfg.lambda);
    bg_tensor *y = bg_matmul(xin, bg_transpose(wq, 0, 1));
    if (xin != x) bg__step_drop(xin); /* step tensors of this function: see bg__step_drop */
    if (wq != w) bg__step_drop(wq);
    return bg__lora_apply(m, x, add_bias(m, y));
}

static bg_module *linear_make(bg_ctx *ctx, const char *name, int64_t in, int64_t out, bool bias,
                              bool bit, const bg_bitlinear_config *cfg)
{
    bg_bitlinear_config c = cfg ? *cfg : bg_bitlinear_default();
    if (check_cfg(ctx, &c)) return NULL;
    bg_module *m = bg__module_alloc(ctx, BG_MOD_LINEAR, name);
    if (!m) return NULL;
    m->bit = bit;
    m->cfg = c;
    m->forward = bg__linear_forward;
    bool ok = bg__module_add_param(m, "weight", 2, (int64_t[]){ out, in }) != NULL;
    if (ok && bias) ok = bg__module_add_param(m, "bias", 1, (int64_t[]){ out }) != NULL;
    if (!ok) {
        bg_module_free(&m);
        return NULL;
    }
    /* Kaiming-uniform-like default init, as torch.nn.Linear. */
    float bound = in > 0 ? 1.0f / sqrtf((float)in) : 0.0f;
    bg_tensor_fill_uniform(m->params[0], -bound, bound);
    if (bias) bg_tensor_fill_uniform(m->params[1], -bound, bound);
    return m;
}

bg_module *bg_linear_new(bg_ctx *ctx, const char *name, int64_t in, int64_t out, bool bias)
{
    return linear_make(ctx, name, in, out, bias, false, NULL);
}

bg_module *bg_bitlinear_new(bg_ctx *ctx, const char *name, int64_t in, int64_t out, bool bias,
                            const bg_bitlinear_config *cfg)
{
    return linear_make(ctx, name, in, out, bias, true, cfg);
}

bool bg_linear_is_bit(const bg_module *m) { return m && m->kind == BG_MOD_LINEAR && m->bit; }
bg_bitlinear_config bg_linear_config(const bg_module *m) { return m->cfg; }
bg_tensor *bg_linear_weight(const bg_module *m) { return m->n_params > 0 ? m->params[0] : NULL; }
bg_tensor *bg_linear_bias(const bg_module *m)
{
    /* Adapter tensors follow the base parameters; a bias is named "<module>.bias". */
    if (m->n_params < 2) return NULL;
    const char *n = bg_tensor_name(m->params[1]);
    size_t len = strlen(n);
    return (len >= 5 && strcmp(n + len - 5, ".bias") == 0) ? m->params[1] : NULL;
}

int bg_linear_set_config(bg_module *m, const bg_bitlinear_config *cfg)
{
    if (!m || !cfg || m->kind != BG_MOD_LINEAR) return BG_EINVAL;
    int rc = check_cfg(m->ctx, cfg);
    if (rc) return rc;
    m->cfg = *cfg;
    return BG_OK;
}

static int set_inference_one(bg_module *m, bool on)
{
    if (m->base_pk) return BG_OK; /* the packed base's forward already is the int8 kernel */
    free(m->codes);
    free(m->scales);
    bg_tmat_free(&m->packed);
    m->codes = NULL;
    m->scales = NULL;
    m->inference = false;
    if (!on) return BG_OK;
    if (m->cfg.weight_mode == BG_WQ_PER_GROUP || m->cfg.act_per_tensor)
        return bg__error(m->ctx, BG_EUNSUPPORTED,
                         "%s: inference kernel supports per-tensor or "
                         "per-row weight scales and per-token activations",
                         m->name);
    bg_tensor *w = m->params[0];
    int64_t rows = w->shape[0], cols = w->shape[1];
    int64_t ns = bg_ternary_n_scales(rows, cols, (bg_wq_mode)m->cfg.weight_mode, 0);
    m->codes = bg__malloc(m->ctx, (size_t)(rows * cols));
    m->scales = bg__malloc(m->ctx, (size_t)ns * sizeof(float));
    if (!m->codes || !m->scales) return bg__error(m->ctx, BG_ENOMEM, "inference: out of memory");
    bg_ternary_quantize(w->data, rows, cols, (bg_wq_mode)m->cfg.weight_mode, 0, m->codes,
                        m->scales);
    int rc = bg_tmat_new(m->codes, m->scales, m->cfg.weight_mode == BG_WQ_PER_ROW, rows, cols,
                         &m->packed);
    if (rc) return bg__error(m->ctx, rc, "inference: out of memory");
    m->inference = true;
    return BG_OK;
}

void bg_module_set_llama_emulation(bg_module *m, bool on)
{
    if (!m) return;
    m->emulate_llama = on;
    for (int i = 0; i < m->n_children; i++) bg_module_set_llama_emulation(m->children[i], on);
}

int bg_module_set_inference(bg_module *m, bool on)
{
    if (!m) return BG_EINVAL;
    if (m->kind == BG_MOD_LINEAR && m->bit) {
        int rc = set_inference_one(m, on);
        if (rc) return rc;
    }
    for (int i = 0; i < m->n_children; i++) {
        int rc = bg_module_set_inference(m->children[i], on);
        if (rc) return rc;
    }
    return BG_OK;
}

/* ---- simple layers -------------------------------------------------------------- */

static bg_tensor *embedding_forward(bg_module *m, bg_tensor *ids)
{
    return bg_embedding(m->params[0], ids);
}

bg_module *bg__embedding_new_zero(bg_ctx *ctx, const char *name, int64_t n_vocab, int64_t dim)
{
    bg_module *m = bg__module_alloc(ctx, BG_MOD_EMBEDDING, name);
    if (!m) return NULL;
    m->forward = embedding_forward;
    if (!bg__module_add_param(m, "weight", 2, (int64_t[]){ n_vocab, dim })) {
        bg_module_free(&m);
        return NULL;
    }
    return m;
}

bg_module *bg_embedding_new(bg_ctx *ctx, const char *name, int64_t n_vocab, int64_t dim)
{
    bg_module *m = bg__embedding_new_zero(ctx, name, n_vocab, dim);
    if (m) bg_tensor_fill_randn(m->params[0], 0.0f, 1.0f);
    return m;
}

static bg_tensor *rmsnorm_forward(bg_module *m, bg_tensor *x)
{
    if (m->emulate_llama && m->params[0]->dtype == BG_F32 && x && !bg_grad_enabled(m->ctx)) {
        bg_tensor *y = bg__step_new(m->ctx, BG_F32, x->ndim, x->shape);
        const float *xd = bg__contig_data(x);
        if (!y || !xd) return NULL;
        int64_t n = x->shape[x->ndim - 1];
        bg__llama_rmsnorm(xd, m->params[0]->data, bg__numel(x->ndim - 1, x->shape), n, m->eps, y->data);
        return y;
    }
    return bg_rmsnorm(x, m->params[0], m->eps);
}

static bg_tensor *layernorm_forward(bg_module *m, bg_tensor *x)
{
    return bg_layernorm(x, m->params[0], m->n_params > 1 ? m->params[1] : NULL, m->eps);
}

static bg_module *norm_make(bg_ctx *ctx, bg_module_kind kind, const char *name, int64_t dim,
                            float eps, bool bias)
{
    bg_module *m = bg__module_alloc(ctx, kind, name);
    if (!m) return NULL;
    m->eps = eps;
    m->forward = kind == BG_MOD_RMSNORM ? rmsnorm_forward : layernorm_forward;
    bool ok = bg__module_add_param(m, "weight", 1, (int64_t[]){ dim }) != NULL;
    if (ok && bias) ok = bg__module_add_param(m, "bias", 1, (int64_t[]){ dim }) != NULL;
    if (!ok) {
        bg_module_free(&m);
        return NULL;
    }
    bg_tensor_fill(m->params[0], 1.0f);
    return m;
}

bg_module *bg_rmsnorm_new(bg_ctx *ctx, const char *name, int64_t dim, float eps)
{
    return norm_make(ctx, BG_MOD_RMSNORM, name, dim, eps, false);
}

bg_module *bg_layernorm_new(bg_ctx *ctx, const char *name, int64_t dim, float eps, bool bias)
{
    return norm_make(ctx, BG_MOD_LAYERNORM, name, dim, eps, bias);
}

static bg_tensor *dropout_forward(bg_module *m, bg_tensor *x)
{
    return m->training ? bg_dropout(x, m->p) : x;
}

bg_module *bg_dropout_new(bg_ctx *ctx, float p)
{
    if (ctx && !(p >= 0.0f && p < 1.0f)) {
        bg__error(ctx, BG_EINVAL, "dropout: p %g outside [0, 1)", (double)p);
        return NULL;
    }
    bg_module *m = bg__module_alloc(ctx, BG_MOD_DROPOUT, "dropout");
    if (m) {
        m->p = p;
        m->forward = dropout_forward;
    }
    return m;
}

static bg_tensor *relu_forward(bg_module *m, bg_tensor *x)
{
    (void)m;
    return bg_relu(x);
}

bg_module *bg_relu_new(bg_ctx *ctx)
{
    bg_module *m = bg__module_alloc(ctx, BG_MOD_RELU, "relu");
    if (m) m->forward = relu_forward;
    return m;
}

static bg_tensor *sequential_forward(bg_module *m, bg_tensor *x)
{
    for (int i = 0; i < m->n_children && x; i++) x = bg_module_forward(m->children[i], x);
    return x;
}

bg_module *bg_sequential_new(bg_ctx *ctx, const char *name, bg_module *const *mods, int n)
{
    bg_module *m = bg__module_alloc(ctx, BG_MOD_SEQUENTIAL, name);
    if (!m) return NULL;
    m->forward = sequential_forward;
    for (int i = 0; i < n; i++) {
        if (!mods[i] || bg__module_add_child(m, mods[i])) {
            bg_module_free(&m);
            return NULL;
        }
    }
    return m;
}
