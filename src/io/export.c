/* export.c - writes a bitnet model and its LoRA adapters as GGUF files for llama.cpp:
 * ternary projections as TQ2_0 / TQ1_0, rows those cannot hold as Q2_0 or Q8_0 (codes with
 * d = 1 and the exact f32 scale in "<proj>.scale"), token_embd F16 or F32, norms F32, the
 * tokenizer (the model's own tokenizer.* keys, or the byte-level GPT-2-style vocabulary) and
 * the bitnet.* keys with the types llama.cpp checks (DESIGN.md section 7). */
#include "bitgrad/export.h"
#include "bitgrad/gguf.h"
#include "bitgrad/quant.h"
#include "io/gguf_internal.h"
#include "io/model_io.h"
#include "quant/bitnet_math.h"
#include "quant/quant_fast.h"

bg_export_options bg_export_default(void)
{
    return (bg_export_options){ .weight_type = BG_GGML_TQ2_0, .embd_type = BG_GGML_F16,
                                .scale_in_d = false, .name = "bitgrad", .bos_id = 10,
                                .eos_id = 10 };
}

void bg_byte_token_text(int b, char out[4])
{
    /* GPT-2's bytes_to_unicode: printable bytes map to themselves, the 68 others to
     * U+0100 + their rank among the non-printable ones. */
    int cp;
    bool printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    if (printable) {
        cp = b;
    } else {
        int rank = 0;
        for (int i = 0; i < b; i++) {
            bool p = (i >= 0x21 && i <= 0x7e) || (i >= 0xa1 && i <= 0xac) || (i >= 0xae && i <= 0xff);
            rank += !p;
        }
        cp = 256 + rank;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = 0;
    } else { /* cp < 0x800 always */
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        out[2] = 0;
    }
}

static int set_tokenizer(bg_gguf_writer *w, const bg_export_options *o)
{
    static char texts[256][4];
    const char *ptrs[256];
    int32_t types[256];
    for (int b = 0; b < 256; b++) {
        bg_byte_token_text(b, texts[b]);
        ptrs[b] = texts[b];
        types[b] = 1; /* normal */
    }
    int rc = bg_gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
    rc = rc ? rc : bg_gguf_writer_set_str(w, "tokenizer.ggml.pre", "default");
    rc = rc ? rc : bg_gguf_writer_set_arr(w, "tokenizer.ggml.tokens", BG_GGUF_STRING, ptrs, 256);
    rc = rc ? rc : bg_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", BG_GGUF_I32, types, 256);
    rc = rc ? rc : bg_gguf_writer_set_arr(w, "tokenizer.ggml.merges", BG_GGUF_STRING, NULL, 0);
    rc = rc ? rc : bg_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)o->bos_id);
    rc = rc ? rc : bg_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)o->eos_id);
    rc = rc ? rc : bg_gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", false);
    return rc;
}

static uint32_t file_type(int weight_type)
{
    switch (weight_type) { /* llama.h LLAMA_FTYPE_MOSTLY_* */
    case BG_GGML_TQ1_0: return 36;
    case BG_GGML_TQ2_0: return 37;
    case BG_GGML_Q2_0: return 41;
    case BG_GGML_Q8_0: return 7;
    case BG_GGML_F16: return 1;
    default: return 0;
    }
}

static bool code_type(int t)
{
    return t == BG_GGML_TQ1_0 || t == BG_GGML_TQ2_0 || t == BG_GGML_Q2_0 || t == BG_GGML_Q8_0;
}

/* The type a projection with rows of `in` elements is written in: the requested code type
 * where the row length allows it, else the next smaller block (Q2_0: 64, Q8_0: 32), else F32
 * (lossless, as the codes types). F16 / F32 requests are kept. */
static int row_type(int want, int64_t in)
{
    if (!code_type(want)) return want;
    if (want != BG_GGML_Q2_0 && want != BG_GGML_Q8_0 && in % BG_QK_TQ == 0) return want;
    if (want != BG_GGML_Q8_0 && in % BG_QK2_0 == 0) return BG_GGML_Q2_0;
    if (in % BG_QK8_0 == 0) return BG_GGML_Q8_0;
    return BG_GGML_F32;
}

static int set_keys(bg_gguf_writer *w, const bg_bitnet_config *c, const bg_export_options *o,
                    const bg__tok_keys *tok)
{
    int rc = bg_gguf_writer_set_str(w, "general.architecture", "bitnet");
    rc = rc ? rc : bg_gguf_writer_set_str(w, "general.name", o->name ? o->name : "bitgrad");
    rc = rc ? rc : bg_gguf_writer_set_u32(w, "general.file_type", file_type(o->weight_type));
    rc = rc ? rc : bg_gguf_writer_set_u32(w, "bitnet.context_length", (uint32_t)c->n_ctx);
    rc = rc ? rc : bg_gguf_writer_set_u32(w, "bitnet.embedding_length", (uint32_t)c->n_embd);
    rc = rc ? rc : bg_gguf_writer_set_u32(w, "bitnet.block_count", (uint32_t)c->n_layer);
    rc = rc ? rc : bg_gguf_writer_set_u32(w, "bitnet.feed_forward_length", (uint32_t)c->n_ff);
    rc = rc ? rc : bg_gguf_writer_set_u32(w, "bitnet.attention.head_count", (uint32_t)c->n_head);
    rc = rc ? rc : bg_gguf_writer_set_u32(w, "bitnet.attention.head_count_kv",
                                          (uint32_t)c->n_head_kv);
    rc = rc ? rc : bg_gguf_writer_set_f32(w, "bitnet.attention.layer_norm_rms_epsilon", c->eps);
    rc = rc ? rc : bg_gguf_writer_set_f32(w, "bitnet.rope.freq_base", c->rope_base);
    if (rc) return rc;
    return tok ? bg__gguf_writer_copy_kvs(w, tok->kv) : set_tokenizer(w, o);
}

static int check_exportable(const bg_module *model, const bg_export_options *o,
                            const bg__tok_keys *tok, char *err, size_t errlen)
{
    const bg_bitnet_config *c = bg_bitnet_get_config(model);
    if (!c) return bg__io_err(err, errlen, BG_EINVAL, "export: not a bitnet model");
    if (tok && tok->n_tokens != c->n_vocab)
        return bg__io_err(err, errlen, BG_ESHAPE, "export: the tokenizer has %lld tokens but the "
                          "model's vocabulary is %lld", (long long)tok->n_tokens,
                          (long long)c->n_vocab);
    if (!tok && c->n_vocab != 256)
        return bg__io_err(err, errlen, BG_EINVAL, "export: the byte-level tokenizer needs "
                          "n_vocab 256 (model has %lld); give a tokenizer (tokenizer_from, or "
                          "bg_bitnet_set_tokenizer)", (long long)c->n_vocab);
    if (!code_type(o->weight_type) && o->weight_type != BG_GGML_F32 &&
        o->weight_type != BG_GGML_F16)
        return bg__io_err(err, errlen, BG_EINVAL, "export: weight type %s is not supported "
                          "(use tq2_0, tq1_0, q2_0, q8_0, f16 or f32)",
                          bg_ggml_type_name(o->weight_type));
    if (o->embd_type != BG_GGML_F32 && o->embd_type != BG_GGML_F16)
        return bg__io_err(err, errlen, BG_EINVAL, "export: token_embd must be f16 or f32");
    if (!c->bitlinear)
        return bg__io_err(err, errlen, BG_EINVAL, "export: the projections are full precision; "
                          "convert to BitLinear (bg_module_to_bitlinear) and fine-tune first");
    return BG_OK;
}

/* One ternary projection: codes (+ the scale tensor, or the scale in d). */
static int add_projection(bg_gguf_writer *w, const bg_module *lin, const bg_export_options *o,
                          char *err, size_t errlen)
{
    const bg_tensor *wt = bg_linear_weight(lin);
    bg_bitlinear_config cfg = bg_linear_config(lin);
    int64_t out = bg_tensor_dim(wt, 0), in = bg_tensor_dim(wt, 1), n = out * in;
    if (!bg_linear_is_bit(lin))
        return bg__io_err(err, errlen, BG_EINVAL, "export: '%s' is a full-precision Linear (it was "
                          "excluded from the BitLinear conversion); a TQ export needs every "
                          "projection ternary", bg_module_name(lin));
    if (cfg.weight_mode != BG_WQ_PER_TENSOR)
        return bg__io_err(err, errlen, BG_EUNSUPPORTED, "export: '%s' uses per-row/group weight "
                          "scales; llama.cpp's bitnet graph has one scale per tensor",
                          bg_module_name(lin));
    int8_t *codes = malloc((size_t)n);
    float *wq = NULL, s_w;
    int rc = codes ? BG_OK : BG_ENOMEM;
    if (!rc) rc = bg_ternary_quantize(bg_tensor_data_const(wt), out, in, BG_WQ_PER_TENSOR, 0,
                                      codes, &s_w);
    char name[BG_NAME_MAX + 8];
    snprintf(name, sizeof name, "%s.weight", bg_module_name(lin));
    int64_t ne[2] = { in, out };
    int type = row_type(o->weight_type, in);
    /* codes types, and F32 standing in for one: codes (d = 1) + .scale */
    bool coded = code_type(type) || (type == BG_GGML_F32 && code_type(o->weight_type));
    size_t bytes = bg_ggml_row_size(type, in) * (size_t)out;
    void *buf = rc ? NULL : malloc(bytes);
    if (!rc && !buf) rc = BG_ENOMEM;
    float d = o->scale_in_d ? s_w : 1.0f;
    if (!rc && code_type(type)) {
        rc = bg_ggml_pack_codes(type, codes, d, buf, n);
    } else if (!rc) {
        wq = malloc((size_t)n * sizeof(float));
        rc = wq ? BG_OK : BG_ENOMEM;
        for (int64_t i = 0; !rc && i < n; i++) wq[i] = (float)codes[i] * (coded ? d : s_w);
        if (!rc) rc = bg_ggml_quantize(type, wq, buf, out, in);
    }
    if (!rc) rc = bg_gguf_writer_add_tensor(w, name, type, 2, ne, buf, bytes);
    if (!rc && coded && !o->scale_in_d) {
        snprintf(name, sizeof name, "%s.scale", bg_module_name(lin));
        rc = bg_gguf_writer_add_tensor(w, name, BG_GGML_F32, 1, (int64_t[]){ 1 }, &s_w, 4);
    }
    free(codes);
    free(wq);
    free(buf);
    return rc ? bg__io_err(err, errlen, rc, "export: '%s': %s", name, bg_strerror(rc)) : BG_OK;
}

static int add_float(bg_gguf_writer *w, const bg_tensor *t, int type, char *err, size_t errlen)
{
    int nd = bg_tensor_ndim(t);
    int64_t ne[BG_MAX_DIMS], rows = 1;
    for (int i = 0; i < nd; i++) ne[i] = bg_tensor_dim(t, nd - 1 - i);
    for (int i = 1; i < nd; i++) rows *= ne[i];
    size_t bytes = bg_ggml_row_size(type, ne[0]) * (size_t)rows;
    void *buf = malloc(bytes);
    int rc = buf ? bg_ggml_quantize(type, bg_tensor_data_const(t), buf, rows, ne[0]) : BG_ENOMEM;
    if (!rc) rc = bg_gguf_writer_add_tensor(w, bg_tensor_name(t), type, nd, ne, buf, bytes);
    free(buf);
    return rc ? bg__io_err(err, errlen, rc, "export: '%s': %s", bg_tensor_name(t), bg_strerror(rc))
              : BG_OK;
}

static int add_tensors(bg_gguf_writer *w, bg_module *model, const bg_export_options *o,
                       char *err, size_t errlen)
{
    int rc = add_float(w, bg_module_find_param(model, "token_embd.weight"), o->embd_type, err,
                       errlen);
    for (int i = 1; !rc && i < bg_module_n_children(model); i++) {
        bg_module *c = bg_module_child(model, i);
        if (bg_module_kind_of(c) == BG_MOD_LINEAR) rc = add_projection(w, c, o, err, errlen);
        else rc = add_float(w, bg_module_param(c, 0), BG_GGML_F32, err, errlen);
    }
    return rc;
}

int bg_bitnet_export(bg_module *model, const char *path, const bg_export_options *opt,
                     char *err, size_t errlen)
{
    bg_export_options o = opt ? *opt : bg_export_default();
    if (!model || !path) return bg__io_err(err, errlen, BG_EINVAL, "export: NULL argument");
    if (bg_module_find_packed(model)) /* src/nn/packed.c */
        return bg__io_err(err, errlen, BG_ESTATE, "export: '%s' is held packed: bg_module_unpack the "
                          "model first", bg_tensor_name(bg_module_find_packed(model)));
    bg__tok_keys *own = NULL;
    int rc = o.tokenizer_from ? bg__tok_keys_load(o.tokenizer_from, &own, err, errlen) : BG_OK;
    if (rc) return rc;
    const bg__tok_keys *tok = own ? own : bg__model_tok_keys(model);
    rc = check_exportable(model, &o, tok, err, errlen);
    bg_gguf_writer *w = NULL;
    if (!rc && (rc = bg_gguf_writer_create(&w)) != 0)
        bg__io_err(err, errlen, rc, "export: out of memory");
    if (!rc && (rc = set_keys(w, bg_bitnet_get_config(model), &o, tok)) != 0)
        bg__io_err(err, errlen, rc, "export: setting keys: %s", bg_strerror(rc));
    if (!rc) rc = add_tensors(w, model, &o, err, errlen);
    if (!rc) rc = bg_gguf_writer_write(w, path, err, errlen);
    bg_gguf_writer_free(&w);
    bg__tok_keys_free(own);
    return rc;
}

int bg__io_err(char *err, size_t errlen, int code, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

float bg__proj_scale(const bg_module *lin)
{
    return bg_bitlinear_scale(lin); /* also a packed frozen base's */
}

/* ---- LoRA adapters in llama.cpp's format -------------------------------------------- */

static bool scaled_by_llama(const char *module_name)
{
    const char *dot = strrchr(module_name, '.');
    return dot && (strcmp(dot, ".ffn_gate") == 0 || strcmp(dot, ".ffn_up") == 0);
}

static int add_adapter_tensors(bg_gguf_writer *w, const bg_module *m, const char *name,
                               float *alpha, char *err, size_t errlen)
{
    const bg_lora_slots *s = m->adapters;
    for (int i = 0; s && i < s->n; i++) {
        const bg_lora_adapter *a = &s->a[i];
        if (strcmp(a->name, name) != 0) continue;
        int64_t r = a->cfg.rank, in = bg_tensor_dim(a->A, 1), out = bg_tensor_dim(a->B, 0);
        /* llama.cpp applies (alpha / r) B A x: export alpha so that alpha / r = our scale. */
        *alpha = a->scale * (float)r;
        float comp = scaled_by_llama(m->name) ? bg__proj_scale(m) : 1.0f;
        float *b = malloc((size_t)(out * r) * sizeof(float));
        if (!b) return bg__io_err(err, errlen, BG_ENOMEM, "lora export: out of memory");
        const float *bd = bg_tensor_data_const(a->B);
        for (int64_t k = 0; k < out * r; k++) b[k] = bd[k] / comp;
        char tn[BG_NAME_MAX + 16];
        snprintf(tn, sizeof tn, "%s.weight.lora_a", m->name);
        int rc = bg_gguf_writer_add_tensor(w, tn, BG_GGML_F32, 2, (int64_t[]){ in, r },
                                           bg_tensor_data_const(a->A),
                                           (size_t)(in * r) * sizeof(float));
        snprintf(tn, sizeof tn, "%s.weight.lora_b", m->name);
        if (!rc) rc = bg_gguf_writer_add_tensor(w, tn, BG_GGML_F32, 2, (int64_t[]){ r, out }, b,
                                                (size_t)(out * r) * sizeof(float));
        free(b);
        if (rc) return bg__io_err(err, errlen, rc, "lora export: '%s': %s", tn, bg_strerror(rc));
    }
    for (int i = 0; i < m->n_children; i++) {
        int rc = add_adapter_tensors(w, m->children[i], name, alpha, err, errlen);
        if (rc) return rc;
    }
    return BG_OK;
}

int bg_lora_export(bg_module *model, const char *name, const char *path, char *err, size_t errlen)
{
    if (!model || !name || !path) return bg__io_err(err, errlen, BG_EINVAL, "lora export: NULL argument");
    if (!bg_bitnet_get_config(model))
        return bg__io_err(err, errlen, BG_EINVAL, "lora export: not a bitnet model");
    bg_gguf_writer *w = NULL;
    int rc = bg_gguf_writer_create(&w);
    if (rc) return bg__io_err(err, errlen, rc, "lora export: out of memory");
    float alpha = 0.0f;
    rc = add_adapter_tensors(w, model, name, &alpha, err, errlen);
    if (!rc && bg_gguf_writer_n_tensors(w) == 0)
        rc = bg__io_err(err, errlen, BG_ENOTFOUND, "lora export: the model has no adapter '%s'", name);
    if (!rc) {
        rc = bg_gguf_writer_set_str(w, "general.architecture", "bitnet");
        rc = rc ? rc : bg_gguf_writer_set_str(w, "general.type", "adapter");
        rc = rc ? rc : bg_gguf_writer_set_str(w, "general.name", name);
        rc = rc ? rc : bg_gguf_writer_set_str(w, "adapter.type", "lora");
        rc = rc ? rc : bg_gguf_writer_set_f32(w, "adapter.lora.alpha", alpha);
        if (rc) bg__io_err(err, errlen, rc, "lora export: setting keys: %s", bg_strerror(rc));
    }
    if (!rc) rc = bg_gguf_writer_write(w, path, err, errlen);
    bg_gguf_writer_free(&w);
    return rc;
}
