/* bitnet_cache.c - inference-only bitnet forward with per-layer key/value caches, for
 * generation: each new token runs the projections, norms and FFN on its own position and
 * attends to the keys and values the earlier positions left in the cache, instead of a
 * re-run of the whole sequence (DESIGN.md section 6's graph, bg_bitnet_forward's math).
 *
 * Everything but attention goes through the model's own modules and ops in no-grad mode, so
 * BitLinear runs as the model is set (inference kernels after bg_module_set_inference, or
 * the training form), adapters included. The attention of the new rows is computed here
 * on the cached keys: scores in double, a max-shifted softmax, probabilities times values
 * in float. Keys are stored after RoPE, so a cached key never changes. CPU only, and without
 * llama.cpp emulation (its rounding belongs to bg_bitnet_forward). */
#include <math.h>
#include <omp.h>
#include <string.h>

#include "bitgrad/quant.h"
#include "nn/module_impl.h"

enum {
    C_ATTN_NORM,
    C_Q,
    C_K,
    C_V,
    C_O,
    C_ATTN_SUB_NORM,
    C_FFN_NORM,
    C_GATE,
    C_UP,
    C_DOWN,
    C_FFN_SUB_NORM,
    C_COUNT
};

struct bg_kv_cache {
    bg_module *model;
    int64_t n_ctx, pos, n_layer, n_head, n_head_kv, head_dim;
    float *k, *v;     /* [n_layer][n_ctx][n_head_kv * head_dim], keys after RoPE */
    bg_module **mods; /* [n_layer][C_COUNT] */
    bg_module *output_norm;
    bg_tensor *embd;
};

static const char *const cache_names[C_COUNT] = { "attn_norm", "attn_q",      "attn_k",
                                                  "attn_v",    "attn_output", "attn_sub_norm",
                                                  "ffn_norm",  "ffn_gate",    "ffn_up",
                                                  "ffn_down",  "ffn_sub_norm" };

void bg_kv_cache_free(bg_kv_cache **c)
{
    if (!c || !*c) return;
    free((*c)->k);
    free((*c)->v);
    free((*c)->mods);
    free(*c);
    *c = NULL;
}

static int find_modules(bg_kv_cache *c, bg_module *m)
{
    for (int64_t l = 0; l < c->n_layer; l++)
        for (int j = 0; j < C_COUNT; j++) {
            char name[BG_NAME_MAX];
            snprintf(name, sizeof name, "blk.%lld.%s", (long long)l, cache_names[j]);
            bg_module *sub = bg_module_find(m, name);
            if (!sub)
                return bg__error(m->ctx, BG_ENOTFOUND, "kv cache: the model has no module %s",
                                 name);
            c->mods[l * C_COUNT + j] = sub;
        }
    c->output_norm = bg_module_find(m, "output_norm");
    c->embd = bg_module_find_param(m, "token_embd.weight");
    if (!c->output_norm || !c->embd)
        return bg__error(m->ctx, BG_ENOTFOUND, "kv cache: the model has no %s",
                         c->embd ? "output_norm" : "token_embd.weight");
    return BG_OK;
}

int bg_kv_cache_new(bg_module *m, int64_t n_ctx, bg_kv_cache **out)
{
    if (out) *out = NULL;
    const bg_bitnet_config *cfg = bg_bitnet_get_config(m);
    if (!cfg || !out) {
        if (m) bg__error(m->ctx, BG_EINVAL, "kv cache: not a bitnet model");
        return BG_EINVAL;
    }
    if (bg_ctx_device(m->ctx) != BG_CPU)
        return bg__error(m->ctx, BG_EUNSUPPORTED, "kv cache: CPU models only");
    if (n_ctx <= 0 || n_ctx > cfg->n_ctx) n_ctx = cfg->n_ctx;
    bg_kv_cache *c = calloc(1, sizeof *c);
    if (!c) return bg__error(m->ctx, BG_ENOMEM, "kv cache: out of memory");
    *c = (bg_kv_cache){ .model = m,
                        .n_ctx = n_ctx,
                        .n_layer = cfg->n_layer,
                        .n_head = cfg->n_head,
                        .n_head_kv = cfg->n_head_kv,
                        .head_dim = cfg->n_embd / cfg->n_head };
    size_t per = (size_t)(c->n_layer * n_ctx * c->n_head_kv * c->head_dim);
    c->k = malloc((per ? per : 1) * sizeof(float));
    c->v = malloc((per ? per : 1) * sizeof(float));
    c->mods = calloc((size_t)(c->n_layer ? c->n_layer : 1) * C_COUNT, sizeof *c->mods);
    int rc = c->k && c->v && c->mods ? find_modules(c, m)
                                     : bg__error(m->ctx, BG_ENOMEM,
                                                 "kv cache: out of memory "
                                                 "(%zu bytes)",
                                                 2 * per * sizeof(float));
    if (rc) {
        bg_kv_cache_free(&c);
        return rc;
    }
    *out = c;
    return BG_OK;
}

int64_t bg_kv_cache_pos(const bg_kv_cache *c) { return c ? c->pos : 0; }
int64_t bg_kv_cache_n_ctx(const bg_kv_cache *c) { return c ? c->n_ctx : 0; }
void bg_kv_cache_reset(bg_kv_cache *c)
{
    if (c) c->pos = 0;
}

/* out row i (position pos + i), head h = softmax(q . K[0..pos+i] / sqrt(D)) V, for n new
 * rows of q [n, H, D]; K, V: one layer's cache. scratch: n_ctx floats per thread. */
static void attend(const bg_kv_cache *c, const float *K, const float *V, const float *q, int64_t n,
                   float *out, float *scratch)
{
    int64_t H = c->n_head, D = c->head_dim, group = c->n_head / c->n_head_kv;
    int64_t ldkv = c->n_head_kv * D;
    double scale = 1.0 / sqrt((double)D);
#pragma omp parallel for schedule(static) if (n * H * (c->pos + n) * D > 65536)
    for (int64_t r = 0; r < n * H; r++) {
        int64_t i = r / H, h = r % H, len = c->pos + i + 1;
        const float *qr = q + (i * H + h) * D, *kb = K + (h / group) * D, *vb = V + (h / group) * D;
        float *s = scratch + (int64_t)omp_get_thread_num() * c->n_ctx, *o = out + (i * H + h) * D;
        float mx = -INFINITY;
        for (int64_t j = 0; j < len; j++) {
            double dot = 0.0;
            for (int64_t d = 0; d < D; d++) dot += (double)qr[d] * kb[j * ldkv + d];
            s[j] = (float)(dot * scale);
            mx = s[j] > mx ? s[j] : mx;
        }
        double sum = 0.0;
        for (int64_t j = 0; j < len; j++) {
            s[j] = expf(s[j] - mx);
            sum += s[j];
        }
        float inv = (float)(1.0 / sum);
        for (int64_t d = 0; d < D; d++) o[d] = 0.0f;
        for (int64_t j = 0; j < len; j++) {
            float p = s[j] * inv;
            for (int64_t d = 0; d < D; d++) o[d] += p * vb[j * ldkv + d];
        }
    }
}

/* The attention half of layer l for x [1, n, n_embd]: appends the new keys and values to
 * the cache and returns attn_output(attn_sub_norm(attention)). */
static bg_tensor *attention_cached(bg_kv_cache *c, int64_t l, bg_tensor *x, int64_t n)
{
    bg_module **md = c->mods + l * C_COUNT;
    const bg_bitnet_config *cfg = &c->model->bcfg;
    int64_t H = c->n_head, Hkv = c->n_head_kv, D = c->head_dim, ldkv = Hkv * D;
    bg_tensor *h = bg_module_forward(md[C_ATTN_NORM], x);
    bg_tensor *q = bg_reshape(bg_module_forward(md[C_Q], h), 4, (int64_t[]){ 1, n, H, D });
    bg_tensor *k = bg_reshape(bg_module_forward(md[C_K], h), 4, (int64_t[]){ 1, n, Hkv, D });
    bg_tensor *v = bg_module_forward(md[C_V], h);
    q = bg_rope(q, (int)D, cfg->rope_base, c->pos);
    k = bg_rope(k, (int)D, cfg->rope_base, c->pos);
    const float *qd = q ? bg__contig_data(q) : NULL, *kd = k ? bg__contig_data(k) : NULL;
    const float *vd = v ? bg__contig_data(v) : NULL;
    bg_tensor *a = bg__step_new(c->model->ctx, BG_F32, 3, (int64_t[]){ 1, n, cfg->n_embd });
    float *scratch =
        bg__arena_alloc(c->model->ctx, (size_t)(omp_get_max_threads() * c->n_ctx) * sizeof(float));
    if (!qd || !kd || !vd || !a || !scratch) return NULL;
    float *K = c->k + l * c->n_ctx * ldkv, *V = c->v + l * c->n_ctx * ldkv;
    memcpy(K + c->pos * ldkv, kd, (size_t)(n * ldkv) * sizeof(float));
    memcpy(V + c->pos * ldkv, vd, (size_t)(n * ldkv) * sizeof(float));
    attend(c, K, V, qd, n, a->data, scratch);
    return bg_module_forward(md[C_O], bg_module_forward(md[C_ATTN_SUB_NORM], a));
}

static bg_tensor *ffn_cached(bg_kv_cache *c, int64_t l, bg_tensor *x)
{
    bg_module **md = c->mods + l * C_COUNT;
    bg_tensor *h = bg_module_forward(md[C_FFN_NORM], x);
    bg_tensor *f = bg_swiglu(bg_module_forward(md[C_GATE], h), bg_module_forward(md[C_UP], h));
    return bg_module_forward(md[C_DOWN], bg_module_forward(md[C_FFN_SUB_NORM], f));
}

/* A frozen token_embd held as F16 (bg_module_pack_frozen): rows widened as they are read,
 * the output projection a dot product per vocabulary row, never a widened copy of the table. */
static bg_tensor *embed_f16(bg_tensor *w, const int32_t *ids, int64_t n)
{
    int64_t d = w->shape[1], V = w->shape[0];
    bg_tensor *x = bg__step_new(w->ctx, BG_F32, 3, (int64_t[]){ 1, n, d });
    for (int64_t i = 0; x && i < n; i++) {
        if (ids[i] < 0 || ids[i] >= V) {
            bg__error(w->ctx, BG_EINVAL, "generate: token id %d outside [0, %lld)", (int)ids[i],
                      (long long)V);
            return NULL;
        }
        const uint16_t *row = (const uint16_t *)w->data + (int64_t)ids[i] * d;
        for (int64_t j = 0; j < d; j++) bg__f32(x)[i * d + j] = bg_fp16_to_fp32(row[j]);
    }
    return x;
}

/* Row of halves . x over d values: the portable form, and one with F16C widening and FMA
 * (8 lanes, four accumulators), picked at run time. */
static float dot_f16_c(const uint16_t *row, const float *x, int64_t d)
{
    float acc = 0.0f;
    for (int64_t j = 0; j < d; j++) acc += bg_fp16_to_fp32(row[j]) * x[j];
    return acc;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
__attribute__((target("avx2,f16c,fma"))) static float dot_f16_avx2(const uint16_t *row,
                                                                    const float *x, int64_t d)
{
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    __m256 a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + 32 <= d; j += 32) {
        const __m128i *h = (const __m128i *)(row + j);
        a0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128(h)), _mm256_loadu_ps(x + j), a0);
        a1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128(h + 1)), _mm256_loadu_ps(x + j + 8),
                             a1);
        a2 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128(h + 2)),
                             _mm256_loadu_ps(x + j + 16), a2);
        a3 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128(h + 3)),
                             _mm256_loadu_ps(x + j + 24), a3);
    }
    for (; j + 8 <= d; j += 8)
        a0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + j))),
                             _mm256_loadu_ps(x + j), a0);
    __m256 a = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q) + dot_f16_c(row + j, x + j, d - j);
}
static bool have_avx2_f16c(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c") &&
           __builtin_cpu_supports("fma");
}
#else
static float dot_f16_avx2(const uint16_t *row, const float *x, int64_t d)
{
    return dot_f16_c(row, x, d);
}
static bool have_avx2_f16c(void) { return false; }
#endif

static bg_tensor *logits_f16(bg_tensor *w, bg_tensor *o, int64_t n)
{
    int64_t d = w->shape[1], V = w->shape[0];
    bg_tensor *y = bg__step_new(w->ctx, BG_F32, 2, (int64_t[]){ n, V });
    const float *od = o ? bg__contig_data(o) : NULL;
    if (!y || !od) return NULL;
    float (*dot)(const uint16_t *, const float *, int64_t) =
        have_avx2_f16c() ? dot_f16_avx2 : dot_f16_c;
#pragma omp parallel for schedule(static)
    for (int64_t v = 0; v < V; v++) {
        const uint16_t *row = (const uint16_t *)w->data + v * d;
        for (int64_t i = 0; i < n; i++) bg__f32(y)[i * V + v] = dot(row, od + i * d, d);
    }
    return y;
}

static bg_tensor *forward_cached(bg_kv_cache *c, const int32_t *ids, int64_t n)
{
    bg_module *m = c->model;
    const bg_bitnet_config *cfg = &m->bcfg;
    bool f16 = c->embd->dtype == BG_F16;
    bg_tensor *x = f16 ? embed_f16(c->embd, ids, n)
                       : bg_embedding(c->embd, bg_from_data(m->ctx, BG_I32, 2, (int64_t[]){ 1, n }, ids));
    for (int64_t l = 0; l < c->n_layer && x; l++) {
        x = bg_add(x, attention_cached(c, l, x, n));
        x = bg_add(x, ffn_cached(c, l, x));
    }
    bg_tensor *o = bg_module_forward(c->output_norm, x);
    bg_tensor *logits = f16 ? logits_f16(c->embd, o, n) : bg_matmul(o, bg_transpose(c->embd, 0, 1));
    return bg_reshape(logits, 2, (int64_t[]){ n, cfg->n_vocab });
}

bg_tensor *bg_bitnet_forward_cached(bg_module *m, bg_kv_cache *c, const int32_t *ids, int64_t n)
{
    if (!m || !c || !ids) return NULL;
    if (c->model != m) {
        bg__error(m->ctx, BG_EINVAL, "kv cache: made for another model");
        return NULL;
    }
    if (m->emulate_llama) { /* its rounding of the logits' input lives in bitnet.c */
        bg__error(m->ctx, BG_EUNSUPPORTED,
                  "kv cache: llama.cpp emulation (bg_module_set_llama_emulation) is for "
                  "bg_bitnet_forward only");
        return NULL;
    }
    if (n < 1 || c->pos + n > c->n_ctx) {
        bg__error(m->ctx, BG_ESHAPE,
                  "kv cache: %lld new tokens after %lld exceed the context of "
                  "%lld",
                  (long long)n, (long long)c->pos, (long long)c->n_ctx);
        return NULL;
    }
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= m->bcfg.n_vocab) {
            bg__error(m->ctx, BG_EINVAL, "kv cache: token id %d outside [0, %lld)", (int)ids[i],
                      (long long)m->bcfg.n_vocab);
            return NULL;
        }
    bool grad = bg_grad_enable(m->ctx, false);
    bg_tensor *logits = forward_cached(c, ids, n);
    bg_grad_enable(m->ctx, grad);
    if (logits) c->pos += n;
    return logits;
}
