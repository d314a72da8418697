/* lora.c - freezing by name pattern and LoRA adapters on Linear / BitLinear with peft's
 * semantics: several named adapters per layer with one active, merge / unmerge (with
 * re-quantization and a count of flipped codes for a BitLinear base). */
#include <fnmatch.h>
#include <math.h>

#include "bitgrad/ternary.h"
#include "nn/lora_impl.h"

/* ---- freezing ------------------------------------------------------------------- */

static int set_trainable(bg_module *m, const char *pattern, bool on)
{
    int n = 0;
    for (int i = 0; i < m->n_params; i++)
        if (fnmatch(pattern, bg_tensor_name(m->params[i]), 0) == 0) {
            /* unfreezing a packed base (QAT) rebuilds its latent weights first */
            if (on && i == 0 && (m->base_pk || m->params[0]->dtype == BG_F16) &&
                bg__linear_unpack(m))
                continue;
            bg_tensor_set_requires_grad(m->params[i], on);
            n++;
        }
    for (int i = 0; i < m->n_children; i++) n += set_trainable(m->children[i], pattern, on);
    return n;
}

int bg_module_freeze(bg_module *m, const char *pattern)
{
    return (m && pattern) ? set_trainable(m, pattern, false) : BG_EINVAL;
}

int bg_module_unfreeze(bg_module *m, const char *pattern)
{
    return (m && pattern) ? set_trainable(m, pattern, true) : BG_EINVAL;
}

void bg_module_print_trainable(const bg_module *m, void *file)
{
    int64_t tr = bg_module_count(m, true), all = bg_module_count(m, false);
    fprintf(file ? (FILE *)file : stdout,
            "trainable params: %lld || all params: %lld || trainable%%: %.4f\n", (long long)tr,
            (long long)all, all ? 100.0 * (double)tr / (double)all : 0.0);
}

/* ---- adapters ----------------------------------------------------------------- */

bg_lora_config bg_lora_default(void)
{
    return (bg_lora_config){ .rank = 8, .alpha = 16.0f, .dropout = 0.0f };
}

float bg_lora_scale(const bg_lora_config *cfg)
{
    return cfg->rslora ? cfg->alpha / sqrtf((float)cfg->rank) : cfg->alpha / (float)cfg->rank;
}

static bool is_target(const bg_module *m, const bg_lora_config *cfg)
{
    if (m->kind != BG_MOD_LINEAR) return false;
    for (int i = 0; i < cfg->n_targets; i++)
        if (fnmatch(cfg->targets[i], m->name, 0) == 0) return true;
    return false;
}

/* First pass: validate every match so that an error changes nothing. */
static int validate(bg_module *m, const char *name, const bg_lora_config *cfg, int *matches)
{
    if (is_target(m, cfg)) {
        bg_lora_slots *s = m->adapters;
        const bg_tensor *w = m->params[0];
        int64_t lim = w->shape[0] < w->shape[1] ? w->shape[0] : w->shape[1];
        if (cfg->rank > lim)
            return bg__error(m->ctx, BG_EINVAL,
                             "lora: rank %d is larger than layer '%s' [%lld, "
                             "%lld] allows (%lld)",
                             cfg->rank, m->name, (long long)w->shape[0], (long long)w->shape[1],
                             (long long)lim);
        if (s && s->n == BG_LORA_MAX_ADAPTERS)
            return bg__error(m->ctx, BG_EINVAL, "lora: '%s' already has %d adapters", m->name,
                             BG_LORA_MAX_ADAPTERS);
        for (int i = 0; s && i < s->n; i++)
            if (strcmp(s->a[i].name, name) == 0)
                return bg__error(m->ctx, BG_EINVAL, "lora: adapter '%s' already exists on '%s'",
                                 name, m->name);
        if (s && s->merged)
            return bg__error(m->ctx, BG_ESTATE, "lora: '%s' has a merged adapter; unmerge first",
                             m->name);
        (*matches)++;
    }
    for (int i = 0; i < m->n_children; i++) {
        int rc = validate(m->children[i], name, cfg, matches);
        if (rc) return rc;
    }
    return BG_OK;
}

static bg_tensor *adapter_tensor(bg_module *m, const char *name, const char *which, int64_t r,
                                 int64_t c)
{
    char full[BG_NAME_MAX + 48];
    bool dflt = strcmp(name, "default") == 0;
    int len = snprintf(full, sizeof full, "%s.weight.%s%s%s", m->name, which, dflt ? "" : ".",
                       dflt ? "" : name);
    if (len >= BG_NAME_MAX) {
        bg__error(m->ctx, BG_EINVAL, "lora: tensor name '%s' is too long", full);
        return NULL;
    }
    bg_tensor *t = bg_param(m->ctx, full, 2, (int64_t[]){ r, c });
    if (t) m->params[m->n_params++] = t;
    return t;
}

static int attach(bg_module *m, const char *name, const bg_lora_config *cfg)
{
    if (!m->adapters) {
        m->adapters = bg__calloc(m->ctx, 1, sizeof(bg_lora_slots));
        if (!m->adapters) return BG_ENOMEM;
        ((bg_lora_slots *)m->adapters)->active = -1;
    }
    bg_lora_slots *s = m->adapters;
    int64_t in = m->params[0]->shape[1], out = m->params[0]->shape[0], r = cfg->rank;
    bg_tensor *A = adapter_tensor(m, name, "lora_a", r, in);
    bg_tensor *B = A ? adapter_tensor(m, name, "lora_b", out, r) : NULL;
    if (!A || !B) return BG_ENOMEM;
    if (cfg->gaussian_init) {
        bg_tensor_fill_randn(A, 0.0f, 1.0f / (float)r);
    } else { /* kaiming_uniform(a = sqrt(5)) on [r, in]: bound = 1 / sqrt(in) */
        float bound = 1.0f / sqrtf((float)in);
        bg_tensor_fill_uniform(A, -bound, bound);
    }
    bg_lora_adapter *a = &s->a[s->n++];
    memset(a, 0, sizeof *a);
    snprintf(a->name, sizeof a->name, "%s", name);
    a->A = A;
    a->B = B;
    a->cfg = *cfg;
    a->cfg.targets = NULL;
    a->cfg.n_targets = 0;
    a->scale = bg_lora_scale(cfg);
    s->active = s->n - 1;
    return BG_OK;
}

static int attach_all(bg_module *m, const char *name, const bg_lora_config *cfg)
{
    if (is_target(m, cfg)) {
        int rc = attach(m, name, cfg);
        if (rc) return rc;
    }
    for (int i = 0; i < m->n_children; i++) {
        int rc = attach_all(m->children[i], name, cfg);
        if (rc) return rc;
    }
    return BG_OK;
}

/* peft freezes the whole base: every parameter that is not an adapter tensor. */
static void freeze_base(bg_module *m)
{
    for (int i = 0; i < m->n_params; i++)
        if (!strstr(bg_tensor_name(m->params[i]), ".lora_"))
            bg_tensor_set_requires_grad(m->params[i], false);
    for (int i = 0; i < m->n_children; i++) freeze_base(m->children[i]);
}

int bg_lora_add(bg_module *m, const char *name, const bg_lora_config *cfg)
{
    if (!m || !name || !cfg) return BG_EINVAL;
    if (!name[0] || strlen(name) >= sizeof(((bg_lora_adapter *)0)->name))
        return bg__error(m->ctx, BG_EINVAL, "lora: adapter name must be 1..%zu bytes",
                         sizeof(((bg_lora_adapter *)0)->name) - 1);
    if (cfg->rank < 1 || !(cfg->dropout >= 0.0f && cfg->dropout < 1.0f) || cfg->n_targets < 1)
        return bg__error(m->ctx, BG_EINVAL,
                         "lora: need rank >= 1, dropout in [0,1) and at "
                         "least one target pattern");
    int matches = 0;
    int rc = validate(m, name, cfg, &matches);
    if (rc) return rc;
    if (matches == 0)
        return bg__error(m->ctx, BG_ENOTFOUND,
                         "lora: no Linear module matches the target "
                         "pattern '%s'%s",
                         cfg->targets[0], cfg->n_targets > 1 ? " (or the others)" : "");
    freeze_base(m);
    rc = attach_all(m, name, cfg);
    if (rc) return rc;
    bg_lora_set_active(m, name);
    return matches;
}

static void set_active(bg_module *m, const char *name)
{
    bg_lora_slots *s = m->adapters;
    if (s) {
        s->active = -1;
        for (int i = 0; name && i < s->n; i++)
            if (strcmp(s->a[i].name, name) == 0) s->active = i;
    }
    for (int i = 0; i < m->n_children; i++) set_active(m->children[i], name);
}

static bool any_merged(const bg_module *m)
{
    const bg_lora_slots *s = m->adapters;
    if (s && s->merged) return true;
    for (int i = 0; i < m->n_children; i++)
        if (any_merged(m->children[i])) return true;
    return false;
}

int bg_lora_set_active(bg_module *m, const char *name)
{
    if (!m) return BG_EINVAL;
    if (any_merged(m))
        return bg__error(m->ctx, BG_ESTATE, "lora: unmerge before switching adapters");
    set_active(m, name);
    return BG_OK;
}

int bg__lora_keep_file_b(const bg_module *m, const bg_tensor *B, const float *b)
{
    const bg_lora_slots *sl = m->adapters;
    for (int i = 0; sl && i < sl->n; i++) {
        bg_lora_adapter *a = (bg_lora_adapter *)&sl->a[i];
        if (a->B != B) continue;
        size_t n = (size_t)bg_tensor_numel(B);
        if (!a->llama_b) a->llama_b = malloc(n * sizeof(float));
        if (!a->llama_b) return BG_ENOMEM;
        memcpy(a->llama_b, b, n * sizeof(float));
    }
    return BG_OK;
}

void bg__lora_slots_free(void *slots)
{
    bg_lora_slots *s = slots;
    for (int i = 0; s && i < s->n; i++) free(s->a[i].llama_b);
    free(s);
}

bool bg__lora_defers_scale(const bg_module *m)
{
    const bg_lora_slots *s = m->adapters;
    const char *dot = strrchr(m->name, '.');
    if (!m->emulate_llama || !s || s->active < 0 || s->merged || !dot ||
        (strcmp(dot, ".ffn_gate") != 0 && strcmp(dot, ".ffn_up") != 0))
        return false;
    return m->llama_ds_set ? m->llama_has_s : !m->llama_no_scale;
}

/* eval --llama: ((x A^T) B^T) * scale added to y as llama.cpp's build_lora_mm does (F32
 * products through its sgemm or vec_dot, llama_ops.c), then times the projection's scale
 * where the base product left it out (bg__lora_defers_scale). */
static bg_tensor *lora_apply_llama(bg_module *m, const bg_lora_adapter *a, bg_tensor *x, bg_tensor *y)
{
    int64_t r = a->cfg.rank, in = bg_tensor_dim(a->A, 1), out = bg_tensor_dim(a->B, 0);
    int64_t rows = bg__numel(x->ndim - 1, x->shape);
    const float *xd = bg__contig_data(x), *yd = bg__contig_data(y);
    bg_tensor *o = bg__step_new(m->ctx, BG_F32, y->ndim, y->shape);
    float *h1 = malloc((size_t)(rows * (r + out)) * sizeof(float)), *h2 = h1 ? h1 + rows * r : NULL;
    if (!xd || !yd || !o || !h1) {
        free(h1);
        bg__error(m->ctx, BG_ENOMEM, "%s: lora: out of memory", m->name);
        return NULL;
    }
    const float *B = a->llama_b ? a->llama_b : bg_tensor_data_const(a->B);
    bg__llama_mm_f32(a->A->data, r, xd, rows, in, h1);
    bg__llama_mm_f32(B, out, h1, rows, r, h2);
    float d_w, s;
    bool has_s, defer = bg__lora_defers_scale(m);
    bg__llama_wscale(m, &d_w, &has_s, &s);
    float *od = o->data;
    for (int64_t i = 0; i < rows * out; i++) {
        od[i] = yd[i] + h2[i] * a->scale;
        if (defer) od[i] *= s;
    }
    free(h1);
    bg__step_drop(y);
    return o;
}

bg_tensor *bg__lora_apply(bg_module *m, bg_tensor *x, bg_tensor *y)
{
    bg_lora_slots *s = m->adapters;
    if (!s || s->active < 0 || s->merged || !y) return y;
    bg_lora_adapter *a = &s->a[s->active];
    if (m->emulate_llama && !bg_grad_enabled(m->ctx) && x && a->A->dtype == BG_F32 &&
        a->B->dtype == BG_F32)
        return lora_apply_llama(m, a, x, y);
    bg_tensor *xa = (m->training && a->cfg.dropout > 0.0f) ? bg_dropout(x, a->cfg.dropout) : x;
    bg_tensor *h1 = bg_matmul(xa, bg_transpose(a->A, 0, 1));
    bg_tensor *h2 = bg_matmul(h1, bg_transpose(a->B, 0, 1));
    bg_tensor *h3 = bg_mul_scalar(h2, a->scale);
    bg_tensor *out = bg_add(y, h3);
    /* The intermediates are this function's (y: its caller's fresh output); the pool takes
     * back those backward does not read at once, the others after their rules ran. */
    if (xa != x) bg__step_drop(xa);
    bg__step_drop(h1);
    bg__step_drop(h2);
    bg__step_drop(h3);
    if (out) bg__step_drop(y);
    return out;
}

/* W += sign * scale * B A on one module; counts code flips for a BitLinear base. */
static int merge_one(bg_module *m, float sign, int64_t *flipped)
{
    bg_lora_slots *s = m->adapters;
    bg_lora_adapter *a = &s->a[s->active];
    int rc0 = bg__linear_unpack(m); /* merging changes the base: latent weights again */
    if (rc0) return rc0;
    bg_tensor *w = m->params[0];
    int64_t out = w->shape[0], in = w->shape[1], r = a->cfg.rank;
    int64_t n = out * in;
    bg_wq_mode mode = (bg_wq_mode)m->cfg.weight_mode;
    int64_t ns = bg_ternary_n_scales(out, in, mode, m->cfg.group);
    int8_t *before = NULL, *after = NULL;
    float *sc = NULL;
    if (m->bit) {
        before = bg__malloc(m->ctx, (size_t)n);
        after = bg__malloc(m->ctx, (size_t)n);
        sc = bg__malloc(m->ctx, (size_t)ns * sizeof(float));
        if (!before || !after || !sc) {
            free(before);
            free(after);
            free(sc);
            return bg__error(m->ctx, BG_ENOMEM, "lora merge: out of memory");
        }
        bg_ternary_quantize(w->data, out, in, mode, m->cfg.group, before, sc);
    }
    float *W = w->data;
    const float *A = a->A->data, *B = a->B->data;
    for (int64_t i = 0; i < out; i++)
        for (int64_t j = 0; j < in; j++) {
            double d = 0.0;
            for (int64_t k = 0; k < r; k++) d += (double)B[i * r + k] * A[k * in + j];
            W[i * in + j] += sign * a->scale * (float)d;
        }
    if (m->bit) {
        bg_ternary_quantize(w->data, out, in, mode, m->cfg.group, after, sc);
        if (flipped) *flipped += bg_ternary_flips(before, after, n);
        free(before);
        free(after);
        free(sc);
    }
    if (m->inference) bg_module_set_inference(m, true); /* refresh the frozen codes */
    return BG_OK;
}

static int merge_all(bg_module *m, bool merge, int64_t *flipped, int *count)
{
    bg_lora_slots *s = m->adapters;
    if (s && s->active >= 0 && s->merged != merge) {
        int rc = merge_one(m, merge ? 1.0f : -1.0f, flipped);
        if (rc) return rc;
        s->merged = merge;
        (*count)++;
    }
    for (int i = 0; i < m->n_children; i++) {
        int rc = merge_all(m->children[i], merge, flipped, count);
        if (rc) return rc;
    }
    return BG_OK;
}

int bg_lora_merge(bg_module *m, int64_t *flipped)
{
    if (!m) return BG_EINVAL;
    if (flipped) *flipped = 0;
    int count = 0;
    int rc = merge_all(m, true, flipped, &count);
    if (rc) return rc;
    return count ? BG_OK : bg__error(m->ctx, BG_ESTATE, "lora merge: no active unmerged adapter");
}

int bg_lora_unmerge(bg_module *m)
{
    if (!m) return BG_EINVAL;
    int count = 0;
    int rc = merge_all(m, false, NULL, &count);
    if (rc) return rc;
    return count ? BG_OK : bg__error(m->ctx, BG_ESTATE, "lora unmerge: nothing is merged");
}

static void collect_params(bg_module *m, const char *name, bg_tensor **out, int max, int *n)
{
    bg_lora_slots *s = m->adapters;
    for (int i = 0; s && i < s->n; i++)
        if (strcmp(s->a[i].name, name) == 0) {
            if (*n < max) out[*n] = s->a[i].A;
            (*n)++;
            if (*n < max) out[*n] = s->a[i].B;
            (*n)++;
        }
    for (int i = 0; i < m->n_children; i++) collect_params(m->children[i], name, out, max, n);
}

int bg_lora_params(bg_module *m, const char *name, bg_tensor **out, int max)
{
    if (!m || !name || (max > 0 && !out)) return BG_EINVAL;
    int n = 0;
    collect_params(m, name, out, max, &n);
    return n;
}
