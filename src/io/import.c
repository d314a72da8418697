/* import.c - loads a bitnet GGUF into a new model (bitgrad's lossless form with .scale
 * tensors, or the converter form with d = block absmax) and llama.cpp LoRA adapters into a
 * model. Ternary weights become latent weights whose absmean quantizer gives back exactly
 * the stored W_q, so a model keeps its outputs and can continue training. */
#include <math.h>

#include "bitgrad/export.h"
#include "bitgrad/gguf.h"
#include "bitgrad/quant.h"
#include "io/model_io.h"
#include "quant/bitnet_math.h"

static int get_u32(const bg_gguf *g, const char *key, int64_t *out, char *err, size_t errlen)
{
    int64_t i = bg_gguf_find_key(g, key);
    uint32_t v;
    if (i < 0 || bg_gguf_get_u32(g, i, &v))
        return bg__io_err(err, errlen, BG_EFORMAT, "import: key '%s' missing or not u32", key);
    *out = v;
    return BG_OK;
}

static int get_f32(const bg_gguf *g, const char *key, float *out, float dflt)
{
    int64_t i = bg_gguf_find_key(g, key);
    *out = dflt;
    return i < 0 ? BG_OK : bg_gguf_get_f32(g, i, out);
}

static int read_config(const bg_gguf *g, bg_bitnet_config *c, char *err, size_t errlen)
{
    int64_t ia = bg_gguf_find_key(g, "general.architecture");
    const char *arch = ia >= 0 ? bg_gguf_get_str(g, ia, NULL) : NULL;
    if (!arch || strcmp(arch, "bitnet") != 0)
        return bg__io_err(err, errlen, BG_EFORMAT, "import: general.architecture is '%s', not "
                          "'bitnet'", arch ? arch : "(missing)");
    *c = bg_bitnet_default();
    int rc = get_u32(g, "bitnet.context_length", &c->n_ctx, err, errlen);
    rc = rc ? rc : get_u32(g, "bitnet.embedding_length", &c->n_embd, err, errlen);
    rc = rc ? rc : get_u32(g, "bitnet.block_count", &c->n_layer, err, errlen);
    rc = rc ? rc : get_u32(g, "bitnet.feed_forward_length", &c->n_ff, err, errlen);
    rc = rc ? rc : get_u32(g, "bitnet.attention.head_count", &c->n_head, err, errlen);
    if (rc) return rc;
    c->n_head_kv = c->n_head;
    if (bg_gguf_find_key(g, "bitnet.attention.head_count_kv") >= 0)
        rc = get_u32(g, "bitnet.attention.head_count_kv", &c->n_head_kv, err, errlen);
    if (!rc && (get_f32(g, "bitnet.attention.layer_norm_rms_epsilon", &c->eps, 1e-5f) ||
                get_f32(g, "bitnet.rope.freq_base", &c->rope_base, 10000.0f)))
        rc = bg__io_err(err, errlen, BG_EFORMAT, "import: eps / rope base must be f32");
    int64_t te = bg_gguf_find_tensor(g, "token_embd.weight");
    if (!rc && te < 0) rc = bg__io_err(err, errlen, BG_EFORMAT, "import: no token_embd.weight");
    if (!rc) c->n_vocab = bg_gguf_tensor_ne(g, te)[1];
    return rc;
}

/* The BitLinear configuration a bitgrad checkpoint records (absent keys keep defaults). */
static void read_bitgrad_keys(const bg_gguf *g, bg_bitnet_config *c)
{
    int64_t i;
    bool b;
    int32_t v;
    int64_t v64;
    if ((i = bg_gguf_find_key(g, "bitgrad.bitnet.bitlinear")) >= 0 && !bg_gguf_get_bool(g, i, &b))
        c->bitlinear = b;
    if ((i = bg_gguf_find_key(g, "bitgrad.quant.weight_mode")) >= 0 && !bg_gguf_get_i32(g, i, &v))
        c->quant.weight_mode = v;
    if ((i = bg_gguf_find_key(g, "bitgrad.quant.group")) >= 0 && !bg_gguf_get_i64(g, i, &v64))
        c->quant.group = v64;
    if ((i = bg_gguf_find_key(g, "bitgrad.quant.act_bits")) >= 0 && !bg_gguf_get_i32(g, i, &v))
        c->quant.act_bits = v;
    if ((i = bg_gguf_find_key(g, "bitgrad.quant.act_per_tensor")) >= 0 && !bg_gguf_get_bool(g, i, &b))
        c->quant.act_per_tensor = b;
    if ((i = bg_gguf_find_key(g, "bitgrad.quant.quant_weights")) >= 0 && !bg_gguf_get_bool(g, i, &b))
        c->quant.quant_weights = b;
    if ((i = bg_gguf_find_key(g, "bitgrad.quant.quant_acts")) >= 0 && !bg_gguf_get_bool(g, i, &b))
        c->quant.quant_acts = b;
}

/* Latent magnitude m such that absmean(codes * m) == s exactly (float) and m / s >= 1. */
static float latent_magnitude(int64_t k, int64_t n, float s)
{
    if (k == 0) return 0.0f;
    float m = (float)((double)s * (double)n / (double)k);
    for (int iter = 0; iter < 64; iter++) {
        float got = (float)((double)k * (double)m / (double)n);
        if (got == s) break;
        m = nextafterf(m, got < s ? INFINITY : 0.0f);
    }
    return m;
}

/* Fills W [out, in] from a TQ tensor (d per block) and an optional exact scale. */
static int load_ternary(const bg_gguf *g, int64_t ti, const float *scale, bg_tensor *w,
                        char *err, size_t errlen)
{
    int64_t n = bg_tensor_numel(w), nb = n / 256;
    int8_t *codes = malloc((size_t)n);
    float *d = malloc((size_t)(nb ? nb : 1) * sizeof(float));
    int rc = codes && d ? bg_tq_unpack_codes(bg_gguf_tensor_type(g, ti), bg_gguf_tensor_data(g, ti),
                                             codes, d, n)
                        : BG_ENOMEM;
    if (!rc) {
        /* One per-tensor scale: d (all blocks alike in both forms) times the .scale tensor. */
        /* Blocks of zeros carry d = 0 in the converter form: average the others. */
        double dsum = 0.0;
        int64_t k = 0, nd = 0;
        for (int64_t b = 0; b < nb; b++)
            if (d[b] != 0.0f) {
                dsum += d[b];
                nd++;
            }
        for (int64_t i = 0; i < n; i++) k += codes[i] != 0;
        float s = nd ? (float)(dsum / (double)nd) : 0.0f;
        if (scale) s *= *scale;
        if (s < BG_QUANT_EPS) s = BG_QUANT_EPS;
        float m = latent_magnitude(k, n, s);
        float *wd = bg_tensor_data(w);
        for (int64_t i = 0; i < n; i++) wd[i] = (float)codes[i] * m;
    }
    free(codes);
    free(d);
    return rc ? bg__io_err(err, errlen, rc, "import: '%s': bad ternary data",
                           bg_gguf_tensor_name(g, ti))
              : BG_OK;
}

static int load_param(const bg_gguf *g, bg_tensor *p, char *err, size_t errlen)
{
    const char *name = bg_tensor_name(p);
    int64_t ti = bg_gguf_find_tensor(g, name);
    if (ti < 0) return bg__io_err(err, errlen, BG_EFORMAT, "import: tensor '%s' missing", name);
    int nd = bg_tensor_ndim(p);
    const int64_t *ne = bg_gguf_tensor_ne(g, ti);
    bool ok = bg_gguf_tensor_nelements(g, ti) == bg_tensor_numel(p);
    for (int i = 0; ok && i < nd; i++) ok = ne[i] == bg_tensor_dim(p, nd - 1 - i);
    if (!ok) return bg__io_err(err, errlen, BG_ESHAPE, "import: tensor '%s' has the wrong shape", name);
    int type = bg_gguf_tensor_type(g, ti);
    if (type == BG_GGML_TQ1_0 || type == BG_GGML_TQ2_0) {
        char sn[BG_NAME_MAX + 8];
        snprintf(sn, sizeof sn, "%.*s.scale", (int)(strlen(name) - 7), name); /* drop ".weight" */
        int64_t si = bg_gguf_find_tensor(g, sn);
        float scale;
        if (si >= 0 && (bg_gguf_tensor_nelements(g, si) != 1 || bg_gguf_read_tensor_f32(g, si, &scale)))
            return bg__io_err(err, errlen, BG_EFORMAT, "import: '%s' must be one f32", sn);
        return load_ternary(g, ti, si >= 0 ? &scale : NULL, p, err, errlen);
    }
    if (bg_gguf_read_tensor_f32(g, ti, bg_tensor_data(p)))
        return bg__io_err(err, errlen, BG_EFORMAT, "import: '%s': unsupported type %s", name,
                          bg_ggml_type_name(type));
    return BG_OK;
}

int bg_bitnet_import(bg_ctx *ctx, const char *path, bg_module **out, char *err, size_t errlen)
{
    if (!ctx || !path || !out) return bg__io_err(err, errlen, BG_EINVAL, "import: NULL argument");
    *out = NULL;
    bg_gguf *g = NULL;
    int rc = bg_gguf_open(&g, path, err, errlen);
    if (rc) return rc;
    bg_bitnet_config c;
    rc = read_config(g, &c, err, errlen);
    if (!rc) {
        int64_t qi = bg_gguf_find_tensor(g, "blk.0.attn_q.weight");
        int qt = qi >= 0 ? bg_gguf_tensor_type(g, qi) : BG_GGML_F32;
        c.bitlinear = qt == BG_GGML_TQ1_0 || qt == BG_GGML_TQ2_0;
        read_bitgrad_keys(g, &c); /* a bitgrad checkpoint says what its projections are */
    }
    bg_module *m = rc ? NULL : bg_bitnet_new(ctx, &c);
    if (!rc && !m) rc = bg__io_err(err, errlen, BG_EINVAL, "import: %s", bg_ctx_error(ctx));
    for (int i = 0; !rc && i < bg_module_n_params(m); i++)
        rc = load_param(g, bg_module_param(m, i), err, errlen);
    if (!rc) m->embd_f16 = bg_gguf_tensor_type(g, bg_gguf_find_tensor(g, "token_embd.weight")) == BG_GGML_F16;
    bg_gguf_free(&g);
    if (rc) bg_module_free(&m);
    *out = m;
    return rc;
}

/* ---- llama.cpp LoRA adapters ---------------------------------------------------------- */

/* Module names "<base>" of every "<base>.weight.lora_a" tensor, as fnmatch targets. */
static int adapter_targets(const bg_gguf *g, char (*names)[BG_NAME_MAX], int max)
{
    int n = 0;
    for (int64_t i = 0; i < bg_gguf_n_tensors(g) && n < max; i++) {
        const char *tn = bg_gguf_tensor_name(g, i);
        size_t len = strlen(tn), suf = strlen(".weight.lora_a");
        if (len > suf && strcmp(tn + len - suf, ".weight.lora_a") == 0)
            snprintf(names[n++], BG_NAME_MAX, "%.*s", (int)(len - suf), tn);
    }
    return n;
}

static int copy_adapter(const bg_gguf *g, bg_module *model, const char *name, char *err,
                        size_t errlen)
{
    bg_tensor *ps[2 * 512];
    int np = bg_lora_params(model, name, ps, 2 * 512);
    for (int i = 0; i < np && i < 2 * 512; i++) {
        char tn[BG_NAME_MAX + 16];
        const char *pn = bg_tensor_name(ps[i]);
        /* Adapter tensors are "<base>.weight.lora_x[.name]": the file has no suffix. */
        const char *lo = strstr(pn, ".lora_");
        snprintf(tn, sizeof tn, "%.*s", (int)(lo - pn) + 7, pn);
        int64_t ti = bg_gguf_find_tensor(g, tn);
        if (ti < 0 || bg_gguf_tensor_nelements(g, ti) != bg_tensor_numel(ps[i]) ||
            bg_gguf_tensor_ne(g, ti)[0] != bg_tensor_dim(ps[i], 1) ||
            bg_gguf_read_tensor_f32(g, ti, bg_tensor_data(ps[i])))
            return bg__io_err(err, errlen, BG_ESHAPE, "lora import: tensor '%s' missing or of "
                              "another shape than the model's", tn);
        if (strstr(tn, ".lora_b") && (strstr(tn, ".ffn_gate.") || strstr(tn, ".ffn_up."))) {
            char mn[BG_NAME_MAX];
            snprintf(mn, sizeof mn, "%.*s", (int)(strstr(tn, ".weight") - tn), tn);
            float s = bg__proj_scale(bg_module_find(model, mn));
            float *b = bg_tensor_data(ps[i]);
            for (int64_t k = 0; k < bg_tensor_numel(ps[i]); k++) b[k] *= s;
        }
    }
    return BG_OK;
}

int bg_lora_import(bg_module *model, const char *path, const char *name, char *err, size_t errlen)
{
    if (!model || !path || !name) return bg__io_err(err, errlen, BG_EINVAL, "lora import: NULL argument");
    bg_gguf *g = NULL;
    int rc = bg_gguf_open(&g, path, err, errlen);
    if (rc) return rc;
    static char names[512][BG_NAME_MAX];
    const char *targets[512];
    int nt = adapter_targets(g, names, 512);
    int64_t ai = bg_gguf_find_key(g, "adapter.lora.alpha");
    float alpha = 0.0f;
    if (nt == 0 || ai < 0 || bg_gguf_get_f32(g, ai, &alpha))
        rc = bg__io_err(err, errlen, BG_EFORMAT, "lora import: not a LoRA adapter file (no "
                        "lora_a tensors or no f32 adapter.lora.alpha)");
    bg_lora_config cfg = bg_lora_default();
    if (!rc) {
        char tn[BG_NAME_MAX + 16];
        snprintf(tn, sizeof tn, "%s.weight.lora_a", names[0]);
        cfg.rank = (int)bg_gguf_tensor_ne(g, bg_gguf_find_tensor(g, tn))[1];
        cfg.alpha = alpha;
        for (int i = 0; i < nt; i++) targets[i] = names[i];
        cfg.targets = targets;
        cfg.n_targets = nt;
        rc = bg_lora_add(model, name, &cfg);
        if (rc < 0) bg__io_err(err, errlen, rc, "lora import: %s", bg_ctx_error(model->ctx));
        else if (rc != nt) rc = bg__io_err(err, errlen, BG_ESHAPE, "lora import: %d of %d "
                                           "adapted modules exist in the model", rc, nt);
        else rc = copy_adapter(g, model, name, err, errlen);
    }
    bg_gguf_free(&g);
    return rc;
}
