/* bitnet.c - the bitnet transformer, exactly llama.cpp's "bitnet" graph (DESIGN.md §6):
 * pre-norm blocks with sub-norms before attn_output and ffn_down, NEOX RoPE, GQA causal
 * attention, SiLU-gated FFN, and the output projection tied to token_embd. */
#include <math.h>
#include <unistd.h>

#include "bitgrad/quant.h"
#include "autograd/tape.h"
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

/* Bytes the model's parameters take: f32, or packed 2-bit projections (256-weight blocks). */
static double model_bytes(const bg_bitnet_config *c)
{
    double d = (double)c->n_embd, kv = (double)(c->n_embd / c->n_head * c->n_head_kv),
           ff = (double)c->n_ff;
    double proj[7][2] = { { d, d }, { kv, d }, { kv, d }, { d, d }, { ff, d }, { ff, d }, { d, ff } };
    double per_layer = (4.0 * d + ff) * 4.0;
    for (int i = 0; i < 7; i++) {
        double out = proj[i][0], in = proj[i][1];
        per_layer += c->packed_base && c->bitlinear ? out * ceil(in / 256.0) * 64.0 + 4.0
                                                    : out * in * 4.0;
    }
    return (double)c->n_vocab * d * 4.0 + d * 4.0 + (double)c->n_layer * per_layer;
}

/* A model larger than this machine's memory is refused before anything is allocated. */
static int check_fits(bg_ctx *ctx, const bg_bitnet_config *c)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    double need = model_bytes(c), have = pages > 0 && page > 0 ? (double)pages * (double)page : 0.0;
    if (have > 0.0 && need > have)
        return bg__error(ctx, BG_ENOMEM,
                         "bitnet: the model's parameters need %.0f bytes (%.2f GiB) but this machine "
                         "has %.0f bytes (%.2f GiB) of memory", need, need / 1073741824.0, have,
                         have / 1073741824.0);
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
    if (!ctx || check_config(ctx, &c) || check_fits(ctx, &c)) return NULL;
    bg_module *m = bg__module_alloc(ctx, BG_MOD_BITNET, "");
    if (!m) return NULL;
    m->bcfg = c;
    m->forward = bitnet_forward_one;
    bg_module *emb = c.no_init ? bg__embedding_new_zero(ctx, "token_embd", c.n_vocab, c.n_embd)
                               : bg_embedding_new(ctx, "token_embd", c.n_vocab, c.n_embd);
    int rc = emb ? bg__module_add_child(m, emb) : BG_ENOMEM;
    for (int64_t l = 0; rc == BG_OK && l < c.n_layer; l++) rc = add_layer(m, &c, l);
    bg_module *on = rc == BG_OK ? bg_rmsnorm_new(ctx, "output_norm", c.n_embd, c.eps) : NULL;
    if (on) rc = bg__module_add_child(m, on);
    if (rc || !on) {
        if (emb && (m->n_children == 0 || m->children[0] != emb)) bg_module_free(&emb);
        bg_module_free(&m);
        return NULL;
    }
    if (!c.no_init) bg_bitnet_init(m, 0.02f);
    return m;
}

const bg_bitnet_config *bg_bitnet_get_config(const bg_module *m)
{
    return (m && m->kind == BG_MOD_BITNET) ? &m->bcfg : NULL;
}

int bg_bitnet_set_recompute(bg_module *m, bool on)
{
    if (!m || m->kind != BG_MOD_BITNET) return BG_EINVAL;
    m->bcfg.recompute = on;
    return BG_OK;
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

/* eval --llama: rope, attention and the rest of the attention block as llama.cpp computes
 * them (llama_ops.c). q0, k0, v0 are fresh [B, T, *] projections (overwritten). */
static bg_tensor *llama_attention(bg_module *m, int64_t l, bg_tensor *q0, bg_tensor *k0,
                                  bg_tensor *v0, int64_t B, int64_t T)
{
    const bg_bitnet_config *c = &m->bcfg;
    int64_t hd = c->n_embd / c->n_head, dkv = hd * c->n_head_kv;
    if (!q0 || !k0 || !v0) return NULL;
    bg_tensor *a = bg__step_new(m->ctx, BG_F32, 3, (int64_t[]){ B, T, c->n_embd });
    float *qd = (float *)bg__contig_data(q0), *kd = (float *)bg__contig_data(k0);
    const float *vd = bg__contig_data(v0);
    if (!a || !qd || !kd || !vd) return NULL;
    for (int64_t b = 0; b < B; b++)
        if (bg__llama_attention(qd + b * T * c->n_embd, kd + b * T * dkv, vd + b * T * dkv, T,
                                c->n_head, c->n_head_kv, hd, c->rope_base,
                                bg__f32(a) + b * T * c->n_embd)) {
            bg__error(m->ctx, BG_ENOMEM, "bitnet: out of memory");
            return NULL;
        }
    bg_tensor *s = bg_module_forward(layer_mod(m, l, L_ATTN_SUB_NORM), a);
    drop(a, NULL);
    bg_tensor *o = bg_module_forward(layer_mod(m, l, L_O), s);
    drop(s, NULL);
    return o;
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
    if (m->emulate_llama && !bg_grad_enabled(m->ctx)) {
        bg_tensor *o = llama_attention(m, l, q0, k0, v0, B, T);
        drop(q0, x);
        drop(k0, x);
        drop(v0, x);
        return o;
    }
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
    bg_tensor *f = NULL;
    if (m->emulate_llama && !bg_grad_enabled(m->ctx) && g0 && u) {
        f = bg__step_new(m->ctx, BG_F32, g0->ndim, g0->shape);
        const float *gd = bg__contig_data(g0), *ud = bg__contig_data(u);
        if (f && gd && ud)
            bg__llama_swiglu(gd, ud, bg__numel(g0->ndim - 1, g0->shape), g0->shape[g0->ndim - 1],
                             f->data);
    } else {
        f = bg_swiglu(g0, u);
    }
    drop(g0, x);
    drop(u, x);
    bg_tensor *s = bg_module_forward(layer_mod(m, l, L_FFN_SUB_NORM), f);
    drop(f, x);
    bg_tensor *y = bg_module_forward(layer_mod(m, l, L_DOWN), s);
    drop(s, x);
    return y;
}

/* llama.cpp multiplies token_embd (F16, BF16, Q8_0 in converted files) by activations
 * converted to that type's vec_dot type. (Evaluation only: the copy is not recorded.) */
static bg_tensor *round_acts(bg_tensor *x, int type)
{
    bg_tensor *y = bg__step_new(x->ctx, BG_F32, x->ndim, x->shape);
    const float *xd = bg__contig_data(x);
    if (!y || !xd) return NULL;
    bg__llama_round_acts(type, xd, y->data, bg__numel(x->ndim, x->shape));
    return y;
}

/* One transformer block: x + attention, then + FFN. The input stays the caller's. */
static bg_tensor *block_forward(bg_module *m, int64_t l, bg_tensor *x, int64_t B, int64_t T)
{
    bg_tensor *r = attention_part(m, l, x, B, T);
    bg_tensor *x1 = bg_add(x, r);
    drop(r, NULL);
    r = ffn_part(m, l, x1);
    bg_tensor *x2 = bg_add(x1, r);
    drop(r, NULL);
    drop(x1, NULL);
    return x2;
}

/* ---- activation recomputation (bg_bitnet_config.recompute) ---- */

typedef struct recompute_saved {
    bg_custom_rule rule;
    bg_module *m;
    int64_t layer, B, T;
} recompute_saved;

/* Runs the block again with grad on a tape of its own, from a leaf alias of its input, then
 * backward through it seeded with the block output's gradient: the rules, values and order
 * of the stored path, so the same bits. The alias's gradient becomes the input's. */
static void recompute_backward(bg_node *node)
{
    recompute_saved *sv = node->aux;
    bg_tensor *x = node->in[0], *y = node->out;
    bg_ctx *ctx = x->ctx;
    struct bg_tape *main = ctx->tape, *sub = sv->m->sub_tape;
    const float *gy = bg__grad_of(y);
    bg_tensor *xa = bg__step_view(x, x->ndim, x->shape, x->stride, x->data);
    if (!gy || !xa) return;
    xa->requires_grad = x->requires_grad;
    sub->n = 0;
    sub->epoch = main->epoch;
    ctx->tape = sub;
    ctx->actq.x = NULL; /* no activation levels from another tape */
    bool prev = bg_grad_enable(ctx, true);
    bg_tensor *y2 = block_forward(sv->m, sv->layer, xa, sv->B, sv->T);
    int rc = y2 && y2->requires_grad ? bg__backward_nested(y2, gy, sub, main) : BG_EINVAL;
    bg_grad_enable(ctx, prev);
    ctx->tape = main;
    ctx->actq.x = NULL;
    if (rc) {
        if (!ctx->err_code) bg__error(ctx, rc, "bitnet: recomputing block %lld failed", (long long)sv->layer);
        return;
    }
    if (!x->requires_grad || !xa->grad || bg__grad_pool_pass(xa, x)) return;
    float *gx = bg__grad_of(x);
    const float *ga = xa->grad->data;
    if (!gx) return;
    for (int64_t i = 0; i < bg__numel(x->ndim, x->shape); i++) gx[i] += ga[i];
}

/* The first parameter of block l that trains, or NULL. */
static bg_tensor *block_trainable(bg_module *m, int64_t l)
{
    for (int j = 0; j < L_COUNT; j++) {
        bg_module *c = layer_mod(m, l, j);
        for (int i = 0; i < bg_module_n_params(c); i++)
            if (bg_tensor_requires_grad(bg_module_param(c, i))) return bg_module_param(c, i);
    }
    return NULL;
}

/* The block without keeping its intermediates: run without grad, recorded as one node. */
static bg_tensor *block_recomputed(bg_module *m, int64_t l, bg_tensor *x, int64_t B, int64_t T)
{
    bg_ctx *ctx = m->ctx;
    bg_tensor *p = block_trainable(m, l);
    if (!x || (!p && !x->requires_grad)) return block_forward(m, l, x, B, T);
    if (!m->sub_tape) {
        m->sub_tape = bg__calloc(ctx, 1, sizeof(struct bg_tape));
        if (!m->sub_tape) return NULL;
    }
    recompute_saved *sv = bg__arena_alloc(ctx, sizeof *sv);
    if (!sv) return NULL;
    *sv = (recompute_saved){ .rule = { recompute_backward }, .m = m, .layer = l, .B = B, .T = T };
    bg_grad_enable(ctx, false);
    bg_tensor *y = block_forward(m, l, x, B, T);
    bg_grad_enable(ctx, true);
    bg_node *node = y ? bg__record(BG_OP_CUSTOM, y, p ? 2 : 1, (bg_tensor *[]){ x, p }) : NULL;
    if (node) node->aux = sv;
    return y;
}

void bg__bitnet_release(bg_module *m)
{
    struct bg_tape *t = m->sub_tape;
    if (t) free(t->nodes);
    free(t);
    m->sub_tape = NULL;
}

/* token_embd[ids] as [B, T, n_embd]; an F16 table (frozen: it never trains) is read and
 * widened without a tape node. */
static bg_tensor *embed(bg_module *m, bg_tensor *ids, int64_t B, int64_t T)
{
    bg_tensor *w = m->children[0]->params[0];
    int64_t d = m->bcfg.n_embd, V = w->shape[0];
    if (w->dtype != BG_F16)
        return bg_reshape(bg_embedding(w, ids), 3, (int64_t[]){ B, T, d });
    bg_tensor *x = bg__step_new(m->ctx, BG_F32, 3, (int64_t[]){ B, T, d });
    const int32_t *id = bg__is_contig(ids) ? ids->data : NULL;
    if (!x || !id) {
        if (x && !id) bg__error(m->ctx, BG_EINVAL, "bitnet: ids must be contiguous");
        return NULL;
    }
    for (int64_t i = 0; i < B * T; i++) {
        if (id[i] < 0 || id[i] >= V) {
            bg__error(m->ctx, BG_EINVAL, "bitnet: token id %d outside [0, %lld)", (int)id[i],
                      (long long)V);
            return NULL;
        }
        const uint16_t *row = (const uint16_t *)w->data + (int64_t)id[i] * d;
        for (int64_t j = 0; j < d; j++) bg__f32(x)[i * d + j] = bg_fp16_to_fp32(row[j]);
    }
    return x;
}

/* rms(x) * output_norm of the last block's output: [B, T, n_embd]. */
static bg_tensor *hidden(bg_module *m, bg_tensor *ids)
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
    bool rec = c->recompute && bg_grad_enabled(m->ctx) && m->ctx->device == BG_CPU;
    bg_tensor *x = embed(m, ids, B, T);
    for (int64_t l = 0; l < c->n_layer; l++) {
        bg_tensor *nx = rec ? block_recomputed(m, l, x, B, T) : block_forward(m, l, x, B, T);
        drop(x, NULL);
        x = nx;
    }
    bg_tensor *n = bg_module_forward(m->children[m->n_children - 1], x);
    drop(x, n);
    return n;
}

bg_tensor *bg_bitnet_forward(bg_module *m, bg_tensor *ids)
{
    bg_tensor *n = hidden(m, ids);
    if (m && m->emulate_llama && m->embd_type == BG_GGML_Q8_0 && n && !bg_grad_enabled(m->ctx) &&
        m->children[0]->params[0]->dtype == BG_F32) {
        bg_tensor *w = m->children[0]->params[0];
        int64_t shape[BG_MAX_DIMS];
        memcpy(shape, n->shape, sizeof shape);
        shape[n->ndim - 1] = w->shape[0];
        bg_tensor *y = bg__step_new(m->ctx, BG_F32, n->ndim, shape);
        const float *nd = bg__contig_data(n);
        if (y && nd &&
            bg__llama_logits_q8_0(nd, bg__numel(n->ndim - 1, n->shape), n->shape[n->ndim - 1], w->data,
                                  w->shape[0], y->data) == BG_OK) {
            drop(n, NULL);
            return y;
        }
        if (y) drop(y, NULL);
    }
    if (m && m->emulate_llama && m->embd_type != BG_GGML_F32 && n) {
        bg_tensor *r = round_acts(n, m->embd_type);
        drop(n, NULL);
        n = r;
    }
    bg_tensor *w = m ? m->children[0]->params[0] : NULL, *wf = w;
    int64_t nr = n ? bg__numel(n->ndim - 1, n->shape) : 0, ne = n ? n->shape[n->ndim - 1] : 0;
    if (n && m->emulate_llama && !bg_grad_enabled(m->ctx) && nr >= 1 && ne % 8 == 0 &&
        (m->embd_type == BG_GGML_F32 || m->embd_type == BG_GGML_F16 ||
         (m->embd_type == BG_GGML_BF16 && nr >= 2)) &&
        (w->dtype == BG_F32 || w->dtype == BG_F16)) {
        int64_t shape[BG_MAX_DIMS];
        memcpy(shape, n->shape, sizeof shape);
        shape[n->ndim - 1] = w->shape[0];
        bg_tensor *y = bg__step_new(m->ctx, BG_F32, n->ndim, shape);
        const float *nd = bg__contig_data(n);
        if (y && nd) bg__llama_logits(nd, nr, ne, w->data, w->dtype == BG_F16, w->shape[0], y->data);
        drop(n, NULL);
        return y;
    }
    if (n && w->dtype == BG_F16) { /* the whole table widened for this product */
        wf = bg__step_new(m->ctx, BG_F32, 2, w->shape);
        for (int64_t i = 0; wf && i < bg__numel(2, w->shape); i++)
            bg__f32(wf)[i] = bg_fp16_to_fp32(((const uint16_t *)w->data)[i]);
    }
    bg_tensor *logits = bg_matmul(n, bg_transpose(wf, 0, 1));
    drop(n, logits);
    if (wf != w && wf) drop(wf, NULL);
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
    if (m->emulate_llama || m->ctx->device != BG_CPU)
        return bg_cross_entropy(bg_bitnet_forward(m, in), tg, ignore_index, 0.0f);
    /* the loss alone: logits a chunk of rows at a time, never [B, T, n_vocab] */
    bg_tensor *h = hidden(m, in);
    bg_tensor *loss = bg_linear_cross_entropy(h, m->children[0]->params[0], tg, ignore_index);
    drop(h, NULL);
    return loss;
}
