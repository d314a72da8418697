/* bitnet.c - the bitnet transformer, exactly llama.cpp's "bitnet" graph (DESIGN.md §6):
 * pre-norm blocks with sub-norms before attn_output and ffn_down, NEOX RoPE, GQA causal
 * attention, SiLU-gated FFN, and the output projection tied to token_embd. */
#include "bitgrad/quant.h"
#include "nn/module_impl.h"

/* Children: token_embd, then per layer the 11 modules below, then output_norm. */
enum {
    L_ATTN_NORM,
    L_Q,
    L_K,
    L_V,
    L_O,
    L_ATTN_SUB_NORM,
    L_FFN_NORM,
    L_GATE,
    L_UP,
    L_DOWN,
    L_FFN_SUB_NORM,
    L_COUNT
};

static bg_module *layer_mod(const bg_module *m, int64_t layer, int which)
{
    return m->children[1 + layer * L_COUNT + which];
}

bg_bitnet_config bg_bitnet_default(void)
{
    return (bg_bitnet_config){ .n_vocab = 256,
                               .n_embd = 256,
                               .n_layer = 4,
                               .n_head = 4,
                               .n_head_kv = 4,
                               .n_ff = 768,
                               .n_ctx = 128,
                               .eps = 1e-5f,
                               .rope_base = 10000.0f,
                               .bitlinear = true,
                               .quant = bg_bitlinear_default() };
}

static int check_config(bg_ctx *ctx, const bg_bitnet_config *c)
{
    if (c->n_vocab < 1 || c->n_embd < 1 || c->n_layer < 0 || c->n_head < 1 || c->n_head_kv < 1 ||
        c->n_ff < 1 || c->n_ctx < 1)
        return bg__error(ctx, BG_EINVAL, "bitnet: sizes must be positive");
    if (c->n_embd % c->n_head || c->n_head % c->n_head_kv)
        return bg__error(ctx, BG_EINVAL,
                         "bitnet: n_embd %lld must divide by n_head %lld and "
                         "n_head by n_head_kv %lld",
                         (long long)c->n_embd, (long long)c->n_head, (long long)c->n_head_kv);
    if ((c->n_embd / c->n_head) % 2)
        return bg__error(ctx, BG_EINVAL, "bitnet: head_dim %lld must be even for RoPE",
                         (long long)(c->n_embd / c->n_head));
    return BG_OK;
}

static bg_module *proj(bg_ctx *ctx, const bg_bitnet_config *c, const char *name, int64_t in,
                       int64_t out)
{
    if (c->bitlinear && c->packed_base) return bg__bitlinear_new_packed(ctx, name, in, out, &c->quant);
    return c->bitlinear ? bg_bitlinear_new(ctx, name, in, out, false, &c->quant)
                        : bg_linear_new(ctx, name, in, out, false);
}

static int add_layer(bg_module *m, const bg_bitnet_config *c, int64_t l)
{
    bg_ctx *ctx = m->ctx;
    int64_t d = c->n_embd, dkv = c->n_embd / c->n_head * c->n_head_kv, ff = c->n_ff;
    static const char *names[L_COUNT] = { "attn_norm",   "attn_q",        "attn_k",      "attn_v",
                                          "attn_output", "attn_sub_norm", "ffn_norm",    "ffn_gate",
                                          "ffn_up",      "ffn_down",      "ffn_sub_norm" };
    for (int j = 0; j < L_COUNT; j++) {
        char name[BG_NAME_MAX];
        snprintf(name, sizeof name, "blk.%lld.%s", (long long)l, names[j]);
        bg_module *child;
        switch (j) {
        case L_Q:
        case L_O: child = proj(ctx, c, name, d, d); break;
        case L_K:
        case L_V: child = proj(ctx, c, name, d, dkv); break;
        case L_GATE:
        case L_UP: child = proj(ctx, c, name, d, ff); break;
        case L_DOWN: child = proj(ctx, c, name, ff, d); break;
        case L_FFN_SUB_NORM: child = bg_rmsnorm_new(ctx, name, ff, c->eps); break;
        default: child = bg_rmsnorm_new(ctx, name, d, c->eps); break;
        }
        if (!child) return BG_ENOMEM;
        if (bg__module_add_child(m, child)) {
            bg_module_free(&child);
            return BG_ENOMEM;
        }
    }
    return BG_OK;
}

static bg_tensor *bitnet_forward_one(bg_module *m, bg_tensor *ids)
{
    return bg_bitnet_forward(m, ids);
}

bg_module *bg_bitnet_new(bg_ctx *ctx, const bg_bitnet_config *cfg)
{
    bg_bitnet_config c = cfg ? *cfg : bg_bitnet_default();
    if (!ctx || check_config(ctx, &c)) return NULL;
    bg_module *m = bg__module_alloc(ctx, BG_MOD_BITNET, "");
    if (!m) return NULL;
    m->bcfg = c;
    m->forward = bitnet_forward_one;
    bg_module *emb = bg_embedding_new(ctx, "token_embd", c.n_vocab, c.n_embd);
    int rc = emb ? bg__module_add_child(m, emb) : BG_ENOMEM;
    for (int64_t l = 0; rc == BG_OK && l < c.n_layer; l++) rc = add_layer(m, &c, l);
    bg_module *on = rc == BG_OK ? bg_rmsnorm_new(ctx, "output_norm", c.n_embd, c.eps) : NULL;
    if (on) rc = bg__module_add_child(m, on);
    if (rc || !on) {
        if (emb && (m->n_children == 0 || m->children[0] != emb)) bg_module_free(&emb);
        bg_module_free(&m);
        return NULL;
    }
    bg_bitnet_init(m, 0.02f);
    return m;
}

const bg_bitnet_config *bg_bitnet_get_config(const bg_module *m)
{
    return (m && m->kind == BG_MOD_BITNET) ? &m->bcfg : NULL;
}

void bg_bitnet_init(bg_module *m, float std) { bg_module_init_normal(m, std); }

/* The forward drops each intermediate as soon as its consumers exist: the pool takes back
 * the ones backward never reads (norm outputs, pre-RoPE q and k, projections feeding an
 * add) at once, the others after the backward rule that reads them. `keep` guards against
 * a module that returned its input (or a view of it): that storage is still in use. */
static void drop(bg_tensor *t, const bg_tensor *keep)
{
    if (t && (!keep || bg__storage_of(t) != bg__storage_of((bg_tensor *)keep))) bg__step_drop(t);
}

static bg_tensor *attention_part(bg_module *m, int64_t l, bg_tensor *x, int64_t B, int64_t T)
{
    const bg_bitnet_config *c = &m->bcfg;
    int64_t hd = c->n_embd / c->n_head;
    bg_tensor *h = bg_module_forward(layer_mod(m, l, L_ATTN_NORM), x);
    bg_tensor *q0 = bg_module_forward(layer_mod(m, l, L_Q), h);
    bg_tensor *k0 = bg_module_forward(layer_mod(m, l, L_K), h);
    bg_tensor *v0 = bg_module_forward(layer_mod(m, l, L_V), h);
    drop(h, x);
    bg_tensor *q = bg_reshape(q0, 4, (int64_t[]){ B, T, c->n_head, hd });
    bg_tensor *k = bg_reshape(k0, 4, (int64_t[]){ B, T, c->n_head_kv, hd });
    bg_tensor *v = bg_reshape(v0, 4, (int64_t[]){ B, T, c->n_head_kv, hd });
    q = bg_rope(q, (int)hd, c->rope_base, 0);
    k = bg_rope(k, (int)hd, c->rope_base, 0);
    drop(q0, x);
    drop(k0, x);
    bg_tensor *a = bg_attention(q, k, v);
    drop(q, x);
    drop(k, x);
    drop(v0, x);
    bg_tensor *a3 = bg_reshape(a, 3, (int64_t[]){ B, T, c->n_embd });
    bg_tensor *s = bg_module_forward(layer_mod(m, l, L_ATTN_SUB_NORM), a3);
    drop(a, x);
    bg_tensor *o = bg_module_forward(layer_mod(m, l, L_O), s);
    drop(s, x);
    return o;
}

static bg_tensor *ffn_part(bg_module *m, int64_t l, bg_tensor *x)
{
    bg_tensor *h = bg_module_forward(layer_mod(m, l, L_FFN_NORM), x);
    bg_tensor *g0 = bg_module_forward(layer_mod(m, l, L_GATE), h);
    bg_tensor *u = bg_module_forward(layer_mod(m, l, L_UP), h);
    drop(h, x);
    bg_tensor *f = bg_swiglu(g0, u);
    drop(g0, x);
    drop(u, x);
    bg_tensor *s = bg_module_forward(layer_mod(m, l, L_FFN_SUB_NORM), f);
    drop(f, x);
    bg_tensor *y = bg_module_forward(layer_mod(m, l, L_DOWN), s);
    drop(s, x);
    return y;
}

/* llama.cpp multiplies an F16 token_embd by activations converted to F16. (Evaluation only:
 * the copy is not recorded on the tape.) */
static bg_tensor *round_to_f16(bg_tensor *x)
{
    bg_tensor *y = bg__step_new(x->ctx, BG_F32, x->ndim, x->shape);
    const float *xd = bg__contig_data(x);
    if (!y || !xd) return NULL;
    float *yd = y->data;
    for (int64_t i = 0; i < bg__numel(x->ndim, x->shape); i++)
        yd[i] = bg_fp16_to_fp32(bg_fp32_to_fp16(xd[i]));
    return y;
}

bg_tensor *bg_bitnet_forward(bg_module *m, bg_tensor *ids)
{
    if (!m || !ids) return NULL;
    if (m->kind != BG_MOD_BITNET) {
        bg__error(m->ctx, BG_EINVAL, "bg_bitnet_forward: module '%s' is not a bitnet model",
                  m->name);
        return NULL;
    }
    const bg_bitnet_config *c = &m->bcfg;
    if (ids->dtype != BG_I32 || ids->ndim < 1 || ids->ndim > 2) {
        bg__error(m->ctx, BG_EINVAL, "bitnet: ids must be I32 [B, T] or [T]");
        return NULL;
    }
    int64_t B = ids->ndim == 2 ? ids->shape[0] : 1, T = ids->shape[ids->ndim - 1];
    if (T > c->n_ctx) {
        bg__error(m->ctx, BG_ESHAPE, "bitnet: %lld tokens exceed the context of %lld", (long long)T,
                  (long long)c->n_ctx);
        return NULL;
    }
    bg_tensor *x = bg_embedding(m->children[0]->params[0], ids);
    x = bg_reshape(x, 3, (int64_t[]){ B, T, c->n_embd });
    for (int64_t l = 0; l < c->n_layer; l++) {
        for (int part = 0; part < 2; part++) {
            bg_tensor *r = part == 0 ? attention_part(m, l, x, B, T) : ffn_part(m, l, x);
            bg_tensor *nx = bg_add(x, r);
            drop(r, NULL);
            drop(x, NULL);
            x = nx;
        }
    }
    bg_tensor *n = bg_module_forward(m->children[m->n_children - 1], x);
    drop(x, n);
    if (m->emulate_llama && m->embd_f16 && n) {
        bg_tensor *r = round_to_f16(n);
        drop(n, NULL);
        n = r;
    }
    bg_tensor *logits = bg_matmul(n, bg_transpose(m->children[0]->params[0], 0, 1));
    drop(n, logits);
    return logits;
}

/* ids[:, lo:hi] as a new contiguous I32 step tensor (a copy, so it works on any device). */
static bg_tensor *ids_columns(bg_tensor *ids, int64_t lo, int64_t hi)
{
    bg_tensor *out = bg_zeros(ids->ctx, BG_I32, 2, (int64_t[]){ ids->shape[0], hi - lo });
    bg_tensor *view = bg_slice(ids, 1, lo, hi);
    return out && view && bg_tensor_copy(out, view) == BG_OK ? out : NULL;
}

bg_tensor *bg_bitnet_loss(bg_module *m, bg_tensor *ids, int ignore_index)
{
    if (!m || !ids) return NULL;
    if (ids->ndim != 2 || ids->shape[1] < 2 || ids->dtype != BG_I32) {
        bg__error(m->ctx, BG_ESHAPE, "bitnet_loss: ids must be I32 [B, T] with T >= 2");
        return NULL;
    }
    int64_t T = ids->shape[1];
    bg_tensor *in = ids_columns(ids, 0, T - 1);
    bg_tensor *tg = ids_columns(ids, 1, T);
    return bg_cross_entropy(bg_bitnet_forward(m, in), tg, ignore_index, 0.0f);
}
