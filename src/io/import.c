/* import.c - loads a bitnet GGUF into a new model (bitgrad's lossless form with .scale
 * tensors, or what llama.cpp's converter writes: W_q values in F32/F16/BF16/Q8_0, or TQ blocks
 * with d = block absmax) and llama.cpp LoRA adapters into a model. Ternary weights become
 * latent weights whose absmean quantizer gives back exactly the stored W_q, so a model keeps
 * its outputs and can continue training. The model keeps the file's tokenizer.* keys and each
 * projection's ggml type (what llama.cpp's arithmetic depends on, for eval --llama). */
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

int bg__bitnet_read_config(const bg_gguf *g, bg_bitnet_config *c, char *err, size_t errlen)
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
    /* bitgrad's graph rotates every dimension of a head and has head_dim = n_embd / n_head */
    const char *dims[3] = { "bitnet.rope.dimension_count", "bitnet.attention.key_length",
                            "bitnet.attention.value_length" };
    for (int j = 0; !rc && j < 3; j++) {
        int64_t v = 0;
        if (bg_gguf_find_key(g, dims[j]) < 0) continue;
        rc = get_u32(g, dims[j], &v, err, errlen);
        if (!rc && c->n_head > 0 && v != c->n_embd / c->n_head)
            rc = bg__io_err(err, errlen, BG_EUNSUPPORTED, "import: %s is %lld, but bitgrad's "
                            "bitnet graph needs n_embd / n_head = %lld", dims[j], (long long)v,
                            (long long)(c->n_embd / c->n_head));
    }
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

/* Latent magnitude m such that absmean(codes * m) == s (float) when one exists, else the
 * nearest; m / s >= 1. */
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

/* W = codes * m, with m as above; where no single m gives absmean exactly s (the steps of
 * k * m / n can be wider than s's ulp), the first non-zero weight takes the magnitude that
 * makes the sum (exact in double, as bitgrad's absmean adds it) s * n. It differs from m by
 * less than k ulp of m (far from the code boundary s / 2): the codes are unchanged. */
static void fill_latent(const int8_t *codes, int64_t n, float s, float *w)
{
    int64_t k = 0, first = -1;
    for (int64_t i = 0; i < n; i++)
        if (codes[i]) {
            k++;
            if (first < 0) first = i;
        }
    float m = latent_magnitude(k, n, s);
    for (int64_t i = 0; i < n; i++) w[i] = (float)codes[i] * m;
    if (k < 2 || (float)((double)k * (double)m / (double)n) == s) return;
    double rest = (double)(k - 1) * (double)m;
    float m2 = (float)((double)s * (double)n - rest), lo = m2, hi = m2;
    for (int j = 0; j < 16; j++, lo = nextafterf(lo, 0.0f), hi = nextafterf(hi, INFINITY)) {
        float pick = (float)((rest + lo) / (double)n) == s ? lo
                     : (float)((rest + hi) / (double)n) == s ? hi : 0.0f;
        if (pick != 0.0f && pick > 0.5f * m) {
            w[first] = (float)codes[first] * pick;
            return;
        }
    }
}

/* The magnitude s shared by the non-zero values of a ternary tensor, read from its code blocks
 * (TQ1_0, TQ2_0, Q2_0, or Q8_0 holding codes): codes and 0; blocks carry d = s (the converter's
 * TQ form, where all-zero blocks have d = 0) or d = 1 (bitgrad's form). Blocks with different
 * d (no per-tensor scale holds them) give the mean of the non-zero d. BG_EFORMAT if the data
 * is not in code form. */
static int magnitude_from_codes(const bg_gguf *g, int64_t ti, int8_t *codes, int64_t n, float *s)
{
    int type = bg_gguf_tensor_type(g, ti);
    int64_t nb = n / bg_ggml_block_size(type);
    float *d = malloc((size_t)(nb ? nb : 1) * sizeof(float));
    if (!d) return BG_ENOMEM;
    int rc = bg_ggml_unpack_codes(type, bg_gguf_tensor_data(g, ti), codes, d, n);
    double dsum = 0.0;
    int64_t nd = 0;
    for (int64_t b = 0; !rc && b < nb; b++)
        if (d[b] != 0.0f) {
            dsum += d[b];
            nd++;
        }
    *s = nd ? (float)(dsum / (double)nd) : 0.0f;
    free(d);
    return rc;
}

/* The same from values: codes = sign, BG_EFORMAT unless every non-zero |v| is one value. */
static int magnitude_from_values(const float *v, int8_t *codes, int64_t n, float *s)
{
    float a = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        codes[i] = (int8_t)((v[i] > 0.0f) - (v[i] < 0.0f));
        if (v[i] == 0.0f) continue;
        if (a == 0.0f) a = fabsf(v[i]);
        else if (fabsf(v[i]) != a) return BG_EFORMAT;
    }
    *s = a;
    return BG_OK;
}

/* Fills the projection's W [out, in]: codes * m with absmean exactly s * scale when the tensor
 * is ternary, else its values (times the scale). */
static int fill_projection(const bg_gguf *g, int64_t ti, const float *scale, bg_tensor *w, float *mag)
{
    int64_t n = bg_tensor_numel(w);
    float *wd = bg_tensor_data(w), s = 0.0f;
    int8_t *codes = malloc((size_t)n);
    if (!codes) return BG_ENOMEM;
    int type = bg_gguf_tensor_type(g, ti);
    bool blocks = type == BG_GGML_TQ1_0 || type == BG_GGML_TQ2_0 || type == BG_GGML_Q2_0 ||
                  type == BG_GGML_Q8_0;
    int rc = blocks ? magnitude_from_codes(g, ti, codes, n, &s) : BG_EFORMAT;
    if (rc == BG_EFORMAT) { /* values: any readable type */
        rc = bg_gguf_read_tensor_f32(g, ti, wd);
        if (!rc) rc = magnitude_from_values(wd, codes, n, &s);
        if (rc == BG_EFORMAT) { /* not ternary: keep the values */
            for (int64_t i = 0; scale && i < n; i++) wd[i] *= *scale;
            free(codes);
            return BG_OK;
        }
    }
    if (!rc) {
        *mag = s;
        if (scale) s *= *scale;
        if (s < BG_QUANT_EPS) s = BG_QUANT_EPS;
        fill_latent(codes, n, s, wd);
    }
    free(codes);
    return rc;
}

/* A checkpoint's packed base (checkpoint.h): I8 codes and "<weight>.packed_scale", one f32;
 * latent weights whose absmean quantizer gives back exactly these codes and scale. */
static int fill_from_packed(const bg_gguf *g, int64_t ti, bg_tensor *w, char *err, size_t errlen)
{
    const char *name = bg_tensor_name(w);
    char sn[BG_NAME_MAX + 16];
    snprintf(sn, sizeof sn, "%s.packed_scale", name);
    int64_t si = bg_gguf_find_tensor(g, sn), n = bg_tensor_numel(w);
    float s;
    if (si < 0 || bg_gguf_tensor_nelements(g, si) != 1 || bg_gguf_read_tensor_f32(g, si, &s) ||
        !isfinite(s))
        return bg__io_err(err, errlen, BG_EUNSUPPORTED, "import: packed '%s': '%s' must be one "
                          "finite f32 (per-row packed scales are not supported here)", name, sn);
    int8_t *codes = malloc((size_t)n);
    float *wd = bg_tensor_data(w);
    if (!codes) return bg__io_err(err, errlen, BG_ENOMEM, "import: out of memory");
    bool tq = bg_gguf_tensor_type(g, ti) == BG_GGML_TQ2_0, bad = tq && bg_gguf_read_tensor_f32(g, ti, wd);
    const int8_t *c8 = bg_gguf_tensor_data(g, ti);
    for (int64_t i = 0; i < n && !bad; i++) {
        codes[i] = tq ? (int8_t)wd[i] : c8[i];
        bad = codes[i] < -1 || codes[i] > 1 || (tq && wd[i] != (float)codes[i]);
    }
    if (!bad) fill_latent(codes, n, s < BG_QUANT_EPS ? BG_QUANT_EPS : s, wd);
    free(codes);
    return bad ? bg__io_err(err, errlen, BG_EFORMAT, "import: packed '%s': a code outside "
                            "{-1, 0, 1}", name) : BG_OK;
}

/* A Q8_0 ternary tensor as llama.cpp's converter writes it (codes +-q with block d, q = 127):
 * llama.cpp multiplies those integers, so the emulation keeps q and d apart. */
static void q8_0_magnitude(const bg_gguf *g, int64_t ti, int64_t n, bg_module *lin)
{
    const uint8_t *raw = bg_gguf_tensor_data(g, ti);
    for (int64_t b = 0; raw && b < n / 32; b++) {
        const uint8_t *blk = raw + b * 34;
        for (int j = 0; j < 32; j++) {
            int q = (int8_t)blk[2 + j];
            if (q == 0) continue;
            float d = bg_fp16_to_fp32((uint16_t)(blk[0] | blk[1] << 8));
            if ((float)abs(q) * d == lin->llama_d) {
                lin->llama_qmag = abs(q);
                lin->llama_d = d;
            }
            return;
        }
    }
}

/* A Linear's weight from "<name>.weight" and the optional "<name>.scale". A bitgrad
 * checkpoint (latent) holds latent weights: they load as they are, never re-scaled (a frozen
 * base imported earlier is codes * m, and m is not its W_q's scale). */
static int load_projection(const bg_gguf *g, bg_module *lin, bool latent, char *err, size_t errlen)
{
    bg_tensor *w = bg_linear_weight(lin);
    const char *name = bg_tensor_name(w);
    int64_t ti = bg_gguf_find_tensor(g, name);
    if (ti < 0) return bg__io_err(err, errlen, BG_EFORMAT, "import: tensor '%s' missing", name);
    const int64_t *ne = bg_gguf_tensor_ne(g, ti);
    if (bg_gguf_tensor_n_dims(g, ti) != 2 || ne[0] != bg_tensor_dim(w, 1) || ne[1] != bg_tensor_dim(w, 0))
        return bg__io_err(err, errlen, BG_ESHAPE, "import: tensor '%s' has the wrong shape", name);
    char sn[BG_NAME_MAX + 8];
    snprintf(sn, sizeof sn, "%s.scale", bg_module_name(lin));
    int64_t si = bg_gguf_find_tensor(g, sn);
    float scale;
    if (si >= 0 && (bg_gguf_tensor_nelements(g, si) != 1 || bg_gguf_read_tensor_f32(g, si, &scale) ||
                    !isfinite(scale)))
        return bg__io_err(err, errlen, BG_EFORMAT, "import: '%s' must be one finite f32", sn);
    int type = bg_gguf_tensor_type(g, ti);
    int rc;
    float mag = -1.0f;
    char psn[BG_NAME_MAX + 16];
    snprintf(psn, sizeof psn, "%s.packed_scale", name);
    if (latent && (type == BG_GGML_I8 || bg_gguf_find_tensor(g, psn) >= 0)) /* a packed base */
        return fill_from_packed(g, ti, w, err, errlen);
    if (latent && si < 0)
        rc = bg_gguf_read_tensor_f32(g, ti, bg_tensor_data(w)) ? BG_EUNSUPPORTED : BG_OK;
    else
        rc = fill_projection(g, ti, si >= 0 ? &scale : NULL, w, &mag);
    if (rc == BG_EUNSUPPORTED)
        return bg__io_err(err, errlen, rc, "import: '%s': unsupported type %s", name,
                          bg_ggml_type_name(type));
    if (rc) return bg__io_err(err, errlen, rc, "import: '%s': bad %s data", name, bg_ggml_type_name(type));
    lin->llama_wtype = type;
    lin->llama_wtype_set = true;
    /* what llama.cpp's kernels see: the block d (or value magnitude), then the .scale */
    lin->llama_ds_set = mag > 0.0f;
    lin->llama_d = mag;
    lin->llama_has_s = si >= 0;
    lin->llama_s = si >= 0 ? scale : 1.0f;
    lin->llama_qmag = 1;
    if (type == BG_GGML_Q8_0 && lin->llama_ds_set) q8_0_magnitude(g, ti, bg_tensor_numel(w), lin);
    /* a bitgrad checkpoint's latent weights have no .scale; its export will (the default) */
    lin->llama_no_scale = si < 0 && bg_gguf_find_key(g, "bitgrad.checkpoint.version") < 0;
    return BG_OK;
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
    if (bg_gguf_read_tensor_f32(g, ti, bg_tensor_data(p)))
        return bg__io_err(err, errlen, BG_EFORMAT, "import: '%s': unsupported type %s", name,
                          bg_ggml_type_name(bg_gguf_tensor_type(g, ti)));
    return BG_OK;
}

static int load_all(const bg_gguf *g, bg_module *m, char *err, size_t errlen)
{
    int rc = BG_OK;
    bool latent = bg_gguf_find_key(g, "bitgrad.checkpoint.version") >= 0;
    for (int i = 0; !rc && i < bg_module_n_children(m); i++) {
        bg_module *c = bg_module_child(m, i);
        if (bg_module_kind_of(c) == BG_MOD_LINEAR) rc = load_projection(g, c, latent, err, errlen);
        else
            for (int j = 0; !rc && j < bg_module_n_params(c); j++)
                rc = load_param(g, bg_module_param(c, j), err, errlen);
    }
    if (rc) return rc;
    m->embd_type = bg_gguf_tensor_type(g, bg_gguf_find_tensor(g, "token_embd.weight"));
    bg__tok_keys *tok = NULL;
    rc = bg__tok_keys_from(g, &tok);
    if (rc == BG_EFORMAT) return BG_OK; /* no tokenizer in the file */
    if (rc) return bg__io_err(err, errlen, rc, "import: out of memory");
    bg__model_attach_tok_keys(m, tok);
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
    rc = bg__bitnet_read_config(g, &c, err, errlen);
    if (!rc) {
        c.bitlinear = true; /* the bitnet graph's projections are BitLinear (DESIGN.md 6) */
        read_bitgrad_keys(g, &c); /* a bitgrad checkpoint says what its projections are */
    }
    bg_module *m = rc ? NULL : bg_bitnet_new(ctx, &c);
    if (!rc && !m) rc = bg__io_err(err, errlen, BG_EINVAL, "import: %s", bg_ctx_error(ctx));
    if (!rc) rc = load_all(g, m, err, errlen);
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
        char mn[BG_NAME_MAX];
        snprintf(mn, sizeof mn, "%.*s", (int)(strstr(tn, ".weight") - tn), tn);
        const bg_module *lin = bg_module_find(model, mn);
        if (strstr(tn, ".lora_b") && lin && bg__lora_scaled_by_llama(lin)) {
            float s = bg__proj_scale(lin);
            float *b = bg_tensor_data(ps[i]);
            if (bg__lora_keep_file_b(lin, ps[i], b)) /* eval --llama runs the file's values */
                return bg__io_err(err, errlen, BG_ENOMEM, "lora import: out of memory");
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
