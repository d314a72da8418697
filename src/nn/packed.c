/* packed.c - the frozen BitLinear base held packed (DESIGN.md section 10): ternary codes at
 * 2 bits per weight and the scale(s), in the bg_tmat layout, instead of fp32 latent weights.
 * The weight parameter stays registered (name, shape, frozen) as a header without data; the
 * forward multiplies int8 activation levels by the codes and the backward computes dX through
 * them (op_bitlinear.c), the bits of the latent path. Unpacking rebuilds latent weights whose
 * absmean quantizer gives back exactly these codes and scale (the rule import.c uses). */
#include <math.h>
#include <string.h>

#include "bitgrad/quant.h"
#include "bitgrad/ternary.h"
#include "nn/lora_impl.h"
#include "quant/bitnet_math.h"
#include "quant/quant_fast.h"
#include "quant/tmat_access.h"

/* A persistent f32 tensor header of shape [out, in] with no data, in ctx's list. */
static bg_tensor *shell_new(bg_ctx *ctx, const char *name, int64_t out, int64_t in)
{
    bg_tensor *t = bg__aligned_alloc(ctx, sizeof *t);
    if (!t) {
        bg__error(ctx, BG_ENOMEM, "pack: out of memory");
        return NULL;
    }
    bg__init_header(t, ctx, BG_F32, 2, (int64_t[]){ out, in });
    t->persistent = true;
    t->data = NULL;
    bg_tensor_set_name(t, name);
    t->next_persist = ctx->persist_list;
    if (ctx->persist_list) ctx->persist_list->prev_persist = t;
    ctx->persist_list = t;
    return t;
}

static size_t packed_bytes(const bg_tmat *w)
{
    bool per_row;
    bg__tmat_scales(w, &per_row);
    return bg_tmat_nbytes(w) + (size_t)(per_row ? bg_tmat_rows(w) : 1) * sizeof(float);
}

const bg_tensor *bg_module_find_packed(const bg_module *m)
{
    if (!m) return NULL;
    for (int i = 0; i < m->n_params; i++)
        if (!m->params[i]->data || m->params[i]->dtype != BG_F32) return m->params[i];
    for (int i = 0; i < m->n_children; i++) {
        const bg_tensor *t = bg_module_find_packed(m->children[i]);
        if (t) return t;
    }
    return NULL;
}

float bg_bitlinear_scale(const bg_module *m)
{
    if (m->base_pk) return bg__tmat_scales(m->base_pk, NULL)[0];
    const bg_tensor *w = m->params[0];
    return bg__absmean_scale_fast(w->data, bg__numel(2, w->shape));
}

bool bg_linear_is_packed(const bg_module *m)
{
    return m && m->kind == BG_MOD_LINEAR && m->base_pk != NULL;
}

/* Whether m's configuration is the one the packed forward computes. */
static bool full_quant(const bg_module *m)
{
    const bg_bitlinear_config *c = &m->cfg;
    return m->bit && c->quant_acts && c->quant_weights && c->lambda == 1.0f &&
           !c->act_per_tensor && c->weight_mode != BG_WQ_PER_GROUP;
}

static int check_packable(bg_module *m, const char *what)
{
    if (!m || m->kind != BG_MOD_LINEAR || !m->bit)
        return m ? bg__error(m->ctx, BG_EINVAL, "%s: '%s' is not a BitLinear", what, m->name)
                 : BG_EINVAL;
    if (!full_quant(m))
        return bg__error(m->ctx, BG_EUNSUPPORTED,
                         "%s: '%s': a packed base needs full quantization (lambda 1, per-token "
                         "activations, per-tensor or per-row weight scales)", what, m->name);
    if (m->ctx->device != BG_CPU)
        return bg__error(m->ctx, BG_EUNSUPPORTED, "%s: '%s': packed bases are CPU only", what,
                         m->name);
    return BG_OK;
}

static void drop_packed(bg_module *m)
{
    if (!m->base_pk) return;
    m->ctx->persistent_bytes -= packed_bytes(m->base_pk);
    bg_tmat_free(&m->base_pk);
}

/* Hands m the packed matrix pk (owned from now on) in place of its latent weights. */
static int install(bg_module *m, bg_tmat *pk)
{
    bg_tensor *w = m->params[0];
    bg_tensor *shell = shell_new(m->ctx, bg_tensor_name(w), w->shape[0], w->shape[1]);
    if (!shell) {
        bg_tmat_free(&pk);
        return BG_ENOMEM;
    }
    bg_tensor_free(&m->params[0]);
    m->params[0] = shell;
    drop_packed(m);
    m->base_pk = pk;
    m->ctx->persistent_bytes += packed_bytes(pk);
    return BG_OK;
}


void bg__linear_packed_free(bg_module *m) { drop_packed(m); }

int bg_bitlinear_set_packed(bg_module *m, const int8_t *codes, const float *s_w)
{
    int rc = check_packable(m, "bg_bitlinear_set_packed");
    if (rc) return rc;
    if (!codes || !s_w) return bg__error(m->ctx, BG_EINVAL, "bg_bitlinear_set_packed: NULL data");
    const bg_tensor *w = m->params[0];
    bg_tmat *pk;
    rc = bg_tmat_new(codes, s_w, m->cfg.weight_mode == BG_WQ_PER_ROW, w->shape[0], w->shape[1], &pk);
    if (rc)
        return bg__error(m->ctx, rc, "bg_bitlinear_set_packed: '%s': %s", m->name,
                         rc == BG_ENOMEM ? "out of memory" : "codes outside {-1, 0, 1}");
    rc = install(m, pk);
    if (!rc) m->params[0]->requires_grad = false;
    return rc;
}

bg_module *bg__bitlinear_new_packed(bg_ctx *ctx, const char *name, int64_t in, int64_t out,
                                    const bg_bitlinear_config *cfg)
{
    bg_module *m = bg__module_alloc(ctx, BG_MOD_LINEAR, name);
    if (!m) return NULL;
    m->bit = true;
    m->cfg = cfg ? *cfg : bg_bitlinear_default();
    m->forward = bg__linear_forward;
    char full[BG_NAME_MAX + 8];
    snprintf(full, sizeof full, "%s.weight", name);
    bool per_row = m->cfg.weight_mode == BG_WQ_PER_ROW;
    float *ones = bg__malloc(ctx, (size_t)(per_row ? out : 1) * sizeof(float));
    bg_tmat *pk = NULL;
    for (int64_t j = 0; ones && j < (per_row ? out : 1); j++) ones[j] = 1.0f;
    int rc = check_packable(m, "bitnet (packed base)");
    if (!rc && (!ones || bg__tmat_alloc(ones, per_row, out, in, &pk)))
        rc = bg__error(ctx, BG_ENOMEM, "bitnet: '%s': out of memory for %lld packed bytes", name,
                       (long long)(out * ((in + 255) / 256) * 64));
    free(ones);
    m->params[0] = rc ? NULL : shell_new(ctx, full, out, in);
    if (rc || !m->params[0]) {
        bg_tmat_free(&pk);
        bg_module_free(&m);
        return NULL;
    }
    m->n_params = 1;
    m->base_pk = pk;
    ctx->persistent_bytes += packed_bytes(pk);
    return m;
}

/* The per-tensor scale of TQ blocks: the mean of the blocks' nonzero d (all equal in
 * bitgrad's lossless files, d = 1) times the exact .scale when there is one; import.c's rule. */
static float tq_scale(const uint8_t *data, int64_t nb, size_t bb, const float *scale)
{
    double dsum = 0.0;
    int64_t nd = 0;
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *p = data + (size_t)b * bb + bb - 2;
        float d = bg_fp16_to_fp32((uint16_t)(p[0] | p[1] << 8));
        if (d != 0.0f) {
            dsum += d;
            nd++;
        }
    }
    float s = nd ? (float)(dsum / (double)nd) : 0.0f;
    if (scale) s *= *scale;
    return s < BG_QUANT_EPS ? BG_QUANT_EPS : s;
}

/* One TQ2_0 block's 64 code bytes into the packed layout (tmat_kernels.h): packed byte t, lane
 * l holds weight 64l + t, which TQ2_0 keeps in byte 32 * (l / 2) + t % 32 at bit pair
 * 2 * (l % 2) + t / 32 (same 2-bit values, code + 1). So with a = q[t], b = q[32 + t]
 * (t < 32), packed byte t takes the bit pairs 0 and 2 of a then of b, and byte t + 32 the
 * pairs 1 and 3: a nibble shuffle the compiler vectorizes. True if a field holds 3. */
static bool tq2_block_to_packed(const uint8_t *q, uint8_t *p)
{
    unsigned bad = 0;
    for (int t = 0; t < 32; t++) {
        unsigned a = q[t], b = q[32 + t];
        bad |= (a & (a >> 1)) | (b & (b >> 1));
        p[t] = (uint8_t)((a & 3u) | ((a >> 2) & 0x0Cu) | ((b & 3u) << 4) | ((b << 2) & 0xC0u));
        p[t + 32] = (uint8_t)(((a >> 2) & 3u) | ((a >> 4) & 0x0Cu) | ((b << 2) & 0x30u) |
                              (b & 0xC0u));
    }
    return (bad & 0x55u) != 0;
}

int bg_bitlinear_set_packed_tq(bg_module *m, int ggml_type, const void *data, size_t nbytes,
                               const float *scale)
{
    int rc = check_packable(m, "bg_bitlinear_set_packed_tq");
    if (rc) return rc;
    const bg_tensor *w = m->params[0];
    int64_t out = w->shape[0], in = w->shape[1];
    size_t bb = ggml_type == BG_GGML_TQ2_0 ? BG_TQ2_0_BLOCK_BYTES
                : ggml_type == BG_GGML_TQ1_0 ? BG_TQ1_0_BLOCK_BYTES : 0;
    if (!data || !bb || in % 256 || m->cfg.weight_mode != BG_WQ_PER_TENSOR ||
        nbytes != (size_t)(out * (in / 256)) * bb)
        return bg__error(m->ctx, BG_EINVAL,
                         "bg_bitlinear_set_packed_tq: '%s' [%lld, %lld]: need TQ1_0/TQ2_0 rows of "
                         "256-weight blocks (%zu bytes given) and a per-tensor scale",
                         m->name, (long long)out, (long long)in, nbytes);
    float s = tq_scale(data, out * (in / 256), bb, scale);
    bg_tmat *pk;
    if (bg__tmat_alloc(&s, false, out, in, &pk))
        return bg__error(m->ctx, BG_ENOMEM, "'%s': out of memory for packed codes", m->name);
    bool bad = false;
#pragma omp parallel reduction(|| : bad)
    {
        int8_t *codes = malloc((size_t)in);
        bad = !codes;
#pragma omp for schedule(static)
        for (int64_t j = 0; j < out; j++) {
            if (bad) continue;
            const uint8_t *row = (const uint8_t *)data + (size_t)(j * (in / 256)) * bb;
            if (ggml_type == BG_GGML_TQ2_0) /* a byte shuffle, block by block */
                for (int64_t b = 0; b < in / 256; b++)
                    bad = bad || tq2_block_to_packed(row + b * bb, bg__tmat_block(pk, j, b));
            else
                bad = bg_tq_unpack_codes(ggml_type, row, codes, NULL, in) ||
                      bg__tmat_pack_row(pk, j, codes);
        }
        free(codes);
    }
    if (bad) {
        bg_tmat_free(&pk);
        return bg__error(m->ctx, BG_EFORMAT, "'%s': bad ternary blocks (a code outside {-1, 0, 1})",
                         m->name);
    }
    rc = install(m, pk);
    if (!rc) m->params[0]->requires_grad = false;
    return rc;
}

bg_tmat *bg__linear_packed_base(const bg_module *m) { return m->base_pk; }

/* Packs one frozen BitLinear from its latent weights: the forward's quantizer exactly. */
static int pack_one(bg_module *m)
{
    bg_tensor *w = m->params[0];
    int64_t out = w->shape[0], in = w->shape[1];
    bool per_row = m->cfg.weight_mode == BG_WQ_PER_ROW;
    const float *wd = w->data;
    float *s_w = bg__malloc(m->ctx, (size_t)(per_row ? out : 1) * sizeof(float));
    int8_t *codes = bg__malloc(m->ctx, (size_t)(out * in));
    bg_tmat *pk = NULL;
    int rc = s_w && codes ? BG_OK : BG_ENOMEM;
    if (!rc) {
        if (!per_row) s_w[0] = bg__absmean_scale_fast(wd, out * in);
#pragma omp parallel for schedule(static) if (out * in > (1 << 16))
        for (int64_t j = 0; j < out; j++) {
            if (per_row) s_w[j] = bg__absmean_scale_fast(wd + j * in, in);
            bg__ternary_codes(wd + j * in, in, s_w[per_row ? j : 0], codes + j * in);
        }
        rc = bg_tmat_new(codes, s_w, per_row, out, in, &pk);
    }
    free(s_w);
    free(codes);
    if (rc) return bg__error(m->ctx, rc, "pack: '%s': out of memory", m->name);
    return install(m, pk);
}

/* ---- a frozen embedding table in F16 (the tied output projection of a bitnet) ---- */

/* Whether every value survives f32 -> f16 -> f32 unchanged (so F16 storage is lossless). */
static bool f16_exact(const float *v, int64_t n)
{
    bool ok = true;
#pragma omp parallel for schedule(static) reduction(&& : ok) if (n > (1 << 20))
    for (int64_t i = 0; i < n; i++) ok = ok && bg_fp16_to_fp32(bg_fp32_to_fp16(v[i])) == v[i];
    return ok;
}

/* Replaces m's weight by a copy in dtype to (F16 <-> F32), same name and grad flag. */
static int embedding_retype(bg_module *m, bg_dtype to)
{
    bg_tensor *w = m->params[0];
    bg_tensor *t = bg_tensor_new(m->ctx, to, 2, w->shape);
    if (!t) return bg__error(m->ctx, BG_ENOMEM, "%s: out of memory", m->name);
    bg_tensor_set_name(t, bg_tensor_name(w));
    t->requires_grad = w->requires_grad;
    int64_t n = bg__numel(2, w->shape);
#pragma omp parallel for schedule(static) if (n > (1 << 20))
    for (int64_t i = 0; i < n; i++) {
        if (to == BG_F16) ((uint16_t *)t->data)[i] = bg_fp32_to_fp16(((const float *)w->data)[i]);
        else ((float *)t->data)[i] = bg_fp16_to_fp32(((const uint16_t *)w->data)[i]);
    }
    bg_tensor_free(&m->params[0]);
    m->params[0] = t;
    return BG_OK;
}

int bg__embedding_set_f16(bg_module *m, const uint16_t *src)
{
    if (!m || m->kind != BG_MOD_EMBEDDING || m->ctx->device != BG_CPU)
        return m ? bg__error(m->ctx, BG_EINVAL, "%s: not a CPU embedding", m->name) : BG_EINVAL;
    /* the f32 table goes first, so it and the F16 one are never both resident (on failure
     * the module is left without its weight, for the caller to free) */
    bg_tensor *w = m->params[0];
    int64_t shape[2] = { w->shape[0], w->shape[1] };
    char name[BG_NAME_MAX];
    snprintf(name, sizeof name, "%s", bg_tensor_name(w));
    bg_tensor_free(&m->params[0]);
    bg_tensor *t = bg_tensor_new(m->ctx, BG_F16, 2, shape);
    if (!t) return bg__error(m->ctx, BG_ENOMEM, "%s: out of memory", m->name);
    bg_tensor_set_name(t, name);
    t->requires_grad = false;
    memcpy(t->data, src, (size_t)(shape[0] * shape[1]) * sizeof(uint16_t));
    m->params[0] = t;
    return BG_OK;
}

static bool embedding_packable(const bg_module *m)
{
    const bg_tensor *w = m->kind == BG_MOD_EMBEDDING ? m->params[0] : NULL;
    return w && !w->requires_grad && w->dtype == BG_F32 && m->ctx->device == BG_CPU &&
           f16_exact(w->data, bg__numel(2, w->shape));
}

static int pack_tree(bg_module *m, int *n)
{
    if (embedding_packable(m)) {
        int rc = embedding_retype(m, BG_F16);
        if (rc) return rc;
        (*n)++;
    }
    if (m->kind == BG_MOD_LINEAR && m->bit && !m->base_pk && !m->params[0]->requires_grad &&
        full_quant(m) && m->ctx->device == BG_CPU && !m->inference) {
        int rc = pack_one(m);
        if (rc) return rc;
        (*n)++;
    }
    for (int i = 0; i < m->n_children; i++) {
        int rc = pack_tree(m->children[i], n);
        if (rc) return rc;
    }
    return BG_OK;
}

int bg_module_pack_frozen(bg_module *m)
{
    if (!m) return BG_EINVAL;
    int n = 0, rc = pack_tree(m, &n);
    return rc ? rc : n;
}

/* Latent magnitude g such that absmean(codes * g) over n weights with k nonzero codes is
 * exactly s (the forward's formula) and g / s >= 1 - 2^-24, so the codes come back. */
static float latent_magnitude(int64_t k, int64_t n, float s)
{
    if (k == 0) return 0.0f;
    float g = (float)((double)s * (double)n / (double)k);
    for (int iter = 0; iter < 64; iter++) {
        float got = bg_absmean_from_sum((double)k * (double)g, n);
        if (got == s) break;
        g = nextafterf(g, got < s ? INFINITY : 0.0f);
    }
    return g;
}

static int64_t count_nonzero(const int8_t *c, int64_t n)
{
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++) k += c[i] != 0;
    return k;
}

int bg__linear_unpack(bg_module *m)
{
    if (m->kind == BG_MOD_EMBEDDING && m->params[0]->dtype == BG_F16)
        return embedding_retype(m, BG_F32);
    if (!m->base_pk) return BG_OK;
    bg_tensor *shell = m->params[0];
    int64_t out = shell->shape[0], in = shell->shape[1];
    bool per_row;
    const float *s_w = bg__tmat_scales(m->base_pk, &per_row);
    bg_tensor *w = bg_param(m->ctx, bg_tensor_name(shell), 2, (int64_t[]){ out, in });
    if (!w) return bg__error(m->ctx, BG_ENOMEM, "unpack: '%s': out of memory", m->name);
    w->requires_grad = shell->requires_grad;
    float *wd = w->data;
    int8_t *c8 = (int8_t *)wd + (size_t)(out * in) * 3; /* codes in the last quarter */
    for (int64_t j = 0; j < out; j++) bg__tmat_row_codes(m->base_pk, j, c8 + j * in);
    if (!per_row) {
        float g = latent_magnitude(count_nonzero(c8, out * in), out * in, s_w[0]);
        for (int64_t i = 0; i < out * in; i++) wd[i] = (float)c8[i] * g;
    } else {
        for (int64_t j = 0; j < out; j++) { /* row j's codes lie at or after its floats */
            float g = latent_magnitude(count_nonzero(c8 + j * in, in), in, s_w[j]);
            for (int64_t i = 0; i < in; i++) wd[j * in + i] = (float)c8[j * in + i] * g;
        }
    }
    drop_packed(m);
    bg_tensor_free(&m->params[0]);
    m->params[0] = w;
    return BG_OK;
}

static int unpack_tree(bg_module *m, int *n)
{
    if (m->kind == BG_MOD_EMBEDDING && m->params[0]->dtype == BG_F16) {
        int rc = embedding_retype(m, BG_F32);
        if (rc) return rc;
        (*n)++;
    }
    if (m->kind == BG_MOD_LINEAR && m->base_pk) {
        int rc = bg__linear_unpack(m);
        if (rc) return rc;
        (*n)++;
    }
    for (int i = 0; i < m->n_children; i++) {
        int rc = unpack_tree(m->children[i], n);
        if (rc) return rc;
    }
    return BG_OK;
}

int bg_module_unpack(bg_module *m)
{
    if (!m) return BG_EINVAL;
    int n = 0, rc = unpack_tree(m, &n);
    return rc ? rc : n;
}

bg_tensor *bg__linear_forward_packed(bg_module *m, bg_tensor *x)
{
    if (!full_quant(m)) {
        bg__error(m->ctx, BG_ESTATE,
                  "%s: the base is packed but the configuration no longer is full quantization "
                  "(lambda 1, per-token activations): bg_module_unpack it first", m->name);
        return NULL;
    }
    return bg__bitlinear_packed(x, m->params[0], m->base_pk, m->cfg.act_bits);
}
