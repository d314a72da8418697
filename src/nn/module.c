/* module.c - the module tree: children, hierarchical parameter names, train/eval mode,
 * parameter counts and lookups. */
#include <fnmatch.h>

#include "nn/module_impl.h"

bg_module *bg__module_alloc(bg_ctx *ctx, bg_module_kind kind, const char *name)
{
    if (!ctx) return NULL;
    if (name && strlen(name) >= BG_NAME_MAX - 8) {
        bg__error(ctx, BG_EINVAL, "module name '%s' is too long", name);
        return NULL;
    }
    bg_module *m = bg__calloc(ctx, 1, sizeof *m);
    if (!m) {
        bg__error(ctx, BG_ENOMEM, "module: out of memory");
        return NULL;
    }
    m->kind = kind;
    m->ctx = ctx;
    m->training = true;
    snprintf(m->name, sizeof m->name, "%s", name ? name : "");
    return m;
}

int bg__module_add_child(bg_module *m, bg_module *child)
{
    if (!child) return BG_EINVAL;
    if (m->n_children == m->cap_children) {
        int cap = m->cap_children ? m->cap_children * 2 : 8;
        bg_module **c = bg__realloc(m->ctx, m->children, (size_t)cap * sizeof *c);
        if (!c) return bg__error(m->ctx, BG_ENOMEM, "module: out of memory");
        m->children = c;
        m->cap_children = cap;
    }
    m->children[m->n_children++] = child;
    return BG_OK;
}

bg_tensor *bg__module_add_param(bg_module *m, const char *local, int ndim, const int64_t *shape)
{
    if (m->n_params == BG_MOD_MAX_PARAMS) return NULL;
    char full[BG_NAME_MAX + 16];
    int len = snprintf(full, sizeof full, "%s%s%s", m->name, m->name[0] ? "." : "", local);
    if (len < 0 || len >= BG_NAME_MAX) {
        bg__error(m->ctx, BG_EINVAL, "parameter name '%s' is too long", full);
        return NULL;
    }
    bg_tensor *t = bg_param(m->ctx, full, ndim, shape);
    if (t) m->params[m->n_params++] = t;
    return t;
}

bg_tensor *bg_module_forward(bg_module *m, bg_tensor *x)
{
    if (!m || !x) return NULL;
    if (!m->forward) {
        bg__error(m->ctx, BG_EUNSUPPORTED, "module '%s' has no forward for one input", m->name);
        return NULL;
    }
    return m->forward(m, x);
}

void bg_module_free(bg_module **pm)
{
    if (!pm || !*pm) return;
    bg_module *m = *pm;
    for (int i = 0; i < m->n_children; i++) bg_module_free(&m->children[i]);
    for (int i = 0; i < m->n_params; i++) bg_tensor_free(&m->params[i]);
    free(m->children);
    free(m->codes);
    free(m->scales);
    bg_tmat_free(&m->packed);
    bg__linear_packed_free(m);
    bg__bitnet_release(m);
    bg__lora_slots_free(m->adapters);
    if (m->io_meta_free) m->io_meta_free(m->io_meta);
    free(m);
    *pm = NULL;
}

bg_module_kind bg_module_kind_of(const bg_module *m) { return m->kind; }
const char *bg_module_name(const bg_module *m) { return m->name; }
int bg_module_n_children(const bg_module *m) { return m->n_children; }
bg_module *bg_module_child(const bg_module *m, int i)
{
    return (i >= 0 && i < m->n_children) ? m->children[i] : NULL;
}

bg_module *bg_module_find(bg_module *m, const char *name)
{
    if (!m || !name) return NULL;
    if (strcmp(m->name, name) == 0) return m;
    for (int i = 0; i < m->n_children; i++) {
        bg_module *r = bg_module_find(m->children[i], name);
        if (r) return r;
    }
    return NULL;
}

int bg_module_n_params(const bg_module *m)
{
    int n = m->n_params;
    for (int i = 0; i < m->n_children; i++) n += bg_module_n_params(m->children[i]);
    return n;
}

static bg_tensor *param_at(const bg_module *m, int *i)
{
    if (*i < m->n_params) return m->params[*i];
    *i -= m->n_params;
    for (int c = 0; c < m->n_children; c++) {
        bg_tensor *t = param_at(m->children[c], i);
        if (t) return t;
    }
    return NULL;
}

bg_tensor *bg_module_param(const bg_module *m, int i)
{
    if (!m || i < 0) return NULL;
    return param_at(m, &i);
}

bg_tensor *bg_module_find_param(const bg_module *m, const char *name)
{
    int n = bg_module_n_params(m);
    for (int i = 0; i < n; i++) {
        bg_tensor *t = bg_module_param(m, i);
        if (strcmp(bg_tensor_name(t), name) == 0) return t;
    }
    return NULL;
}

int64_t bg_module_count(const bg_module *m, bool trainable_only)
{
    int64_t total = 0;
    int n = bg_module_n_params(m);
    for (int i = 0; i < n; i++) {
        bg_tensor *t = bg_module_param(m, i);
        if (!trainable_only || bg_tensor_requires_grad(t)) total += bg_tensor_numel(t);
    }
    return total;
}

void bg_module_set_training(bg_module *m, bool training)
{
    m->training = training;
    for (int i = 0; i < m->n_children; i++) bg_module_set_training(m->children[i], training);
}

bool bg_module_training(const bg_module *m) { return m->training; }

void bg_module_init_normal(bg_module *m, float std)
{
    if (m->kind == BG_MOD_LINEAR && m->base_pk) {
        /* a packed base keeps its codes */
    } else if (m->kind == BG_MOD_LINEAR || m->kind == BG_MOD_EMBEDDING) {
        bg_tensor_fill_randn(m->params[0], 0.0f, std);
        if (m->kind == BG_MOD_LINEAR && bg_linear_bias(m)) bg_tensor_fill(bg_linear_bias(m), 0.0f);
    } else if (m->kind == BG_MOD_RMSNORM || m->kind == BG_MOD_LAYERNORM) {
        bg_tensor_fill(m->params[0], 1.0f);
        if (m->n_params > 1) bg_tensor_fill(m->params[1], 0.0f);
    }
    for (int i = 0; i < m->n_children; i++) bg_module_init_normal(m->children[i], std);
}

static int to_bit(bg_module *m, const bg_bitlinear_config *cfg, const char *const *ex, int nex)
{
    int n = 0;
    if (m->kind == BG_MOD_LINEAR && !m->bit) {
        bool skip = false;
        for (int i = 0; i < nex && !skip; i++) skip = fnmatch(ex[i], m->name, 0) == 0;
        if (!skip) {
            m->bit = true;
            m->cfg = cfg ? *cfg : bg_bitlinear_default();
            n++;
        }
    }
    for (int i = 0; i < m->n_children; i++) n += to_bit(m->children[i], cfg, ex, nex);
    return n;
}

int bg_module_to_bitlinear(bg_module *m, const bg_bitlinear_config *cfg,
                           const char *const *exclude, int n_exclude)
{
    if (!m) return BG_EINVAL;
    int n = to_bit(m, cfg, exclude, n_exclude);
    if (m->kind == BG_MOD_BITNET && n > 0) {
        m->bcfg.bitlinear = true;
        m->bcfg.quant = cfg ? *cfg : bg_bitlinear_default();
    }
    return n;
}

void bg_module_set_lambda(bg_module *m, float lambda)
{
    if (m->kind == BG_MOD_LINEAR && m->bit) m->cfg.lambda = lambda;
    if (m->kind == BG_MOD_BITNET) m->bcfg.quant.lambda = lambda;
    for (int i = 0; i < m->n_children; i++) bg_module_set_lambda(m->children[i], lambda);
}
