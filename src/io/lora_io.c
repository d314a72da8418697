/* lora_io.c - bitgrad's own LoRA adapter files (bg_lora_save / bg_lora_load): one adapter's
 * A and B of every wrapped module plus its whole configuration (rank, alpha, rsLoRA, dropout,
 * targets), so that it can be restored into a model exactly. Format: checkpoint.h. Loading
 * validates the file against the model before anything is added or written. */
#include <math.h>

#include "bitgrad/checkpoint.h"
#include "bitgrad/gguf.h"
#include "bitgrad/quant.h"
#include "io/model_io.h"

#define LORA_MAX_MODULES 4096

/* Modules that carry adapter `name`, in module order. */
typedef struct lora_list {
    bg_module *mod[LORA_MAX_MODULES];
    bg_lora_adapter *ad[LORA_MAX_MODULES];
    int n;
    bool truncated;
} lora_list;

static bg_lora_adapter *find_adapter(const bg_module *m, const char *name)
{
    bg_lora_slots *s = m->adapters;
    for (int i = 0; s && i < s->n; i++)
        if (strcmp(s->a[i].name, name) == 0) return &s->a[i];
    return NULL;
}

static void collect(bg_module *m, const char *name, lora_list *l)
{
    bg_lora_adapter *a = m->kind == BG_MOD_LINEAR ? find_adapter(m, name) : NULL;
    if (a && l->n < LORA_MAX_MODULES) {
        l->mod[l->n] = m;
        l->ad[l->n++] = a;
    } else if (a) {
        l->truncated = true;
    }
    for (int i = 0; i < bg_module_n_children(m); i++) collect(bg_module_child(m, i), name, l);
}

static bool same_cfg(const bg_lora_config *a, const bg_lora_config *b)
{
    return a->rank == b->rank && a->alpha == b->alpha && a->rslora == b->rslora &&
           a->dropout == b->dropout;
}

/* ---- save ------------------------------------------------------------------------------ */

static int add_ab(bg_gguf_writer *w, const bg_module *m, const bg_lora_adapter *a)
{
    char name[BG_NAME_MAX + 32];
    int64_t r = a->cfg.rank, in = bg_tensor_dim(a->A, 1), out = bg_tensor_dim(a->B, 0);
    snprintf(name, sizeof name, "%s.weight.lora_a", m->name);
    int rc =
        bg_gguf_writer_add_tensor_ref(w, name, BG_GGML_F32, 2, (int64_t[]){ in, r },
                                      bg_tensor_data_const(a->A), (size_t)(in * r) * sizeof(float));
    snprintf(name, sizeof name, "%s.weight.lora_b", m->name);
    if (!rc)
        rc = bg_gguf_writer_add_tensor_ref(w, name, BG_GGML_F32, 2, (int64_t[]){ r, out },
                                           bg_tensor_data_const(a->B),
                                           (size_t)(r * out) * sizeof(float));
    return rc;
}

static int put_lora(bg_gguf_writer *w, bg_module *model, const lora_list *l)
{
    const bg_lora_config *c = &l->ad[0]->cfg;
    const char **targets = malloc((size_t)l->n * sizeof *targets);
    if (!targets) return BG_ENOMEM;
    for (int i = 0; i < l->n; i++) targets[i] = l->mod[i]->name;
    int rc = bg_gguf_writer_set_str(w, "general.type", "adapter");
    if (!rc && bg_bitnet_get_config(model))
        rc = bg_gguf_writer_set_str(w, "general.architecture", "bitnet");
    if (!rc) rc = bg_gguf_writer_set_str(w, "adapter.type", "lora");
    if (!rc) rc = bg_gguf_writer_set_f32(w, "adapter.lora.alpha", c->alpha);
    if (!rc) rc = bg_gguf_writer_set_u32(w, "bitgrad.lora.rank", (uint32_t)c->rank);
    if (!rc) rc = bg_gguf_writer_set_bool(w, "bitgrad.lora.rslora", c->rslora);
    if (!rc) rc = bg_gguf_writer_set_f32(w, "bitgrad.lora.dropout", c->dropout);
    if (!rc)
        rc = bg_gguf_writer_set_arr(w, "bitgrad.lora.targets", BG_GGUF_STRING, targets,
                                    (size_t)l->n);
    for (int i = 0; !rc && i < l->n; i++) rc = add_ab(w, l->mod[i], l->ad[i]);
    free(targets);
    return rc;
}

int bg_lora_save(const char *path, bg_module *model, const char *adapter, char *err, size_t errlen)
{
    if (!path || !model || !adapter)
        return bg__io_err(err, errlen, BG_EINVAL, "lora save: NULL argument");
    lora_list *l = calloc(1, sizeof *l);
    if (!l) return bg__io_err(err, errlen, BG_ENOMEM, "lora save: out of memory");
    collect(model, adapter, l);
    int rc = BG_OK;
    if (l->n == 0)
        rc = bg__io_err(err, errlen, BG_ENOTFOUND, "lora save: the model has no adapter '%s'",
                        adapter);
    else if (l->truncated)
        rc = bg__io_err(err, errlen, BG_EUNSUPPORTED,
                        "lora save: adapter '%s' wraps more than %d modules", adapter,
                        LORA_MAX_MODULES);
    for (int i = 1; !rc && i < l->n; i++)
        if (!same_cfg(&l->ad[i]->cfg, &l->ad[0]->cfg))
            rc = bg__io_err(err, errlen, BG_EUNSUPPORTED,
                            "lora save: adapter '%s' has another "
                            "rank / alpha / dropout on '%s' than on '%s'; one file holds one "
                            "configuration",
                            adapter, l->mod[i]->name, l->mod[0]->name);
    bg_gguf_writer *w = NULL;
    if (!rc && bg_gguf_writer_create(&w)) rc = BG_ENOMEM;
    if (!rc) {
        rc = put_lora(w, model, l);
        if (rc) bg__io_err(err, errlen, rc, "lora save: '%s': %s", path, bg_strerror(rc));
    }
    if (!rc) rc = bg_gguf_writer_write(w, path, err, errlen);
    bg_gguf_writer_free(&w);
    free(l);
    return rc;
}

/* ---- load ------------------------------------------------------------------------------ */

typedef struct lora_file {
    const bg_gguf *g;
    const char *path;
    char *err;
    size_t errlen;
    bg_lora_config cfg;
    int64_t targets_key;
    int n;            /* targets */
    bg_module **mods; /* the model's module of each target */
    int64_t *ta, *tb; /* file tensors of A and B of each target */
} lora_file;

__attribute__((format(printf, 3, 4))) static int lf_fail(lora_file *f, int code, const char *fmt,
                                                         ...)
{
    if (f->err && f->errlen) {
        int n = snprintf(f->err, f->errlen, "lora load '%s': ", f->path);
        if (n >= 0 && (size_t)n < f->errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(f->err + n, f->errlen - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
    return code;
}

static int64_t typed_key(lora_file *f, const char *key, int type)
{
    int64_t i = bg_gguf_find_key(f->g, key);
    return (i >= 0 && bg_gguf_kv_type(f->g, i) == type) ? i : -1;
}

static int read_header(lora_file *f)
{
    int64_t ty = typed_key(f, "general.type", BG_GGUF_STRING);
    int64_t at = typed_key(f, "adapter.type", BG_GGUF_STRING);
    if (ty < 0 || strcmp(bg_gguf_get_str(f->g, ty, NULL), "adapter") != 0 || at < 0 ||
        strcmp(bg_gguf_get_str(f->g, at, NULL), "lora") != 0)
        return lf_fail(f, BG_EFORMAT,
                       "not a LoRA adapter file (general.type \"adapter\" and "
                       "adapter.type \"lora\" expected)");
    int64_t ia = typed_key(f, "adapter.lora.alpha", BG_GGUF_F32);
    int64_t ir = typed_key(f, "bitgrad.lora.rank", BG_GGUF_U32);
    int64_t is = typed_key(f, "bitgrad.lora.rslora", BG_GGUF_BOOL);
    int64_t id = typed_key(f, "bitgrad.lora.dropout", BG_GGUF_F32);
    f->targets_key = typed_key(f, "bitgrad.lora.targets", BG_GGUF_ARRAY);
    if (ia < 0 || ir < 0 || is < 0 || id < 0 || f->targets_key < 0 ||
        bg_gguf_get_arr_type(f->g, f->targets_key) != BG_GGUF_STRING)
        return lf_fail(f, BG_EFORMAT,
                       "missing or mistyped key: needs adapter.lora.alpha (f32), "
                       "bitgrad.lora.rank (u32), .rslora (bool), .dropout (f32), .targets (str "
                       "array); a llama.cpp adapter loads with bg_lora_import");
    uint32_t rank = 0;
    f->cfg = bg_lora_default();
    bg_gguf_get_f32(f->g, ia, &f->cfg.alpha);
    bg_gguf_get_u32(f->g, ir, &rank);
    bg_gguf_get_bool(f->g, is, &f->cfg.rslora);
    bg_gguf_get_f32(f->g, id, &f->cfg.dropout);
    int64_t n = bg_gguf_get_arr_n(f->g, f->targets_key);
    if (rank < 1 || rank > INT32_MAX || !isfinite(f->cfg.alpha) ||
        !(f->cfg.dropout >= 0.0f && f->cfg.dropout < 1.0f) || n < 1 || n > LORA_MAX_MODULES)
        return lf_fail(f, BG_EFORMAT,
                       "bad configuration: rank %u, alpha %g, dropout %g, %lld targets", rank,
                       (double)f->cfg.alpha, (double)f->cfg.dropout, (long long)n);
    f->cfg.rank = (int)rank;
    f->n = (int)n;
    return BG_OK;
}

/* Tensor name must be F32 {ne0, ne1}. */
static int check_ab(lora_file *f, const char *name, int64_t ne0, int64_t ne1, int64_t *idx)
{
    int64_t ti = bg_gguf_find_tensor(f->g, name);
    if (ti < 0) return lf_fail(f, BG_EFORMAT, "tensor '%s' is missing", name);
    const int64_t *ne = bg_gguf_tensor_ne(f->g, ti);
    if (bg_gguf_tensor_type(f->g, ti) != BG_GGML_F32 || bg_gguf_tensor_n_dims(f->g, ti) != 2 ||
        ne[0] != ne0 || ne[1] != ne1)
        return lf_fail(f, BG_ESHAPE,
                       "tensor '%s' is %s {%lld, %lld}, the model needs f32 {%lld, %lld}", name,
                       bg_ggml_type_name(bg_gguf_tensor_type(f->g, ti)), (long long)ne[0],
                       (long long)ne[1], (long long)ne0, (long long)ne1);
    *idx = ti;
    return BG_OK;
}

/* Every target is a Linear of the model whose shapes fit the file's tensors. */
static int check_targets(lora_file *f, bg_module *model)
{
    int64_t r = f->cfg.rank;
    for (int i = 0; i < f->n; i++) {
        const char *t = bg_gguf_get_arr_str(f->g, f->targets_key, i, NULL);
        bg_module *m = t && !strpbrk(t, "*?[\\") ? bg_module_find(model, t) : NULL;
        if (!m || m->kind != BG_MOD_LINEAR)
            return lf_fail(f, BG_ENOTFOUND, "target '%s' is not a Linear module of the model",
                           t ? t : "?");
        for (int j = 0; j < i; j++)
            if (f->mods[j] == m) return lf_fail(f, BG_EFORMAT, "target '%s' is listed twice", t);
        const bg_tensor *w = bg_linear_weight(m);
        int64_t out = bg_tensor_dim(w, 0), in = bg_tensor_dim(w, 1);
        char name[BG_NAME_MAX + 32];
        snprintf(name, sizeof name, "%s.weight.lora_a", t);
        int rc = check_ab(f, name, in, r, &f->ta[i]);
        snprintf(name, sizeof name, "%s.weight.lora_b", t);
        if (!rc) rc = check_ab(f, name, r, out, &f->tb[i]);
        if (rc) return rc;
        f->mods[i] = m;
    }
    if (bg_gguf_n_tensors(f->g) != 2 * (int64_t)f->n)
        return lf_fail(f, BG_EFORMAT, "%lld tensors for %d targets (expected two per target)",
                       (long long)bg_gguf_n_tensors(f->g), f->n);
    return BG_OK;
}

/* Either no module has adapter `name` (it will be added) or exactly the targets have it with
 * the file's rank (it will be replaced). Returns 0 (add) / 1 (replace) or an error. */
static int check_existing(lora_file *f, bg_module *model, const char *name)
{
    lora_list *l = calloc(1, sizeof *l);
    if (!l) return lf_fail(f, BG_ENOMEM, "out of memory");
    collect(model, name, l);
    int rc = l->n == 0 ? 0 : 1;
    for (int i = 0; rc == 1 && i < l->n; i++) {
        bool listed = false;
        for (int j = 0; j < f->n; j++) listed = listed || f->mods[j] == l->mod[i];
        bg_lora_slots *s = l->mod[i]->adapters;
        if (!listed || l->ad[i]->cfg.rank != f->cfg.rank)
            rc = lf_fail(f, BG_ESHAPE,
                         "the model's adapter '%s' on '%s' does not fit the file "
                         "(other modules or rank %d vs %d)",
                         name, l->mod[i]->name, l->ad[i]->cfg.rank, f->cfg.rank);
        else if (s->merged)
            rc = lf_fail(f, BG_ESTATE, "'%s' has a merged adapter; unmerge first", l->mod[i]->name);
    }
    if (rc == 1 && l->n != f->n)
        rc = lf_fail(f, BG_ESHAPE, "the model's adapter '%s' wraps %d modules, the file %d", name,
                     l->n, f->n);
    for (int i = 0; rc == 0 && i < f->n; i++) { /* what bg_lora_add would refuse */
        bg_lora_slots *s = f->mods[i]->adapters;
        if (s && (s->n == BG_LORA_MAX_ADAPTERS || s->merged))
            rc = lf_fail(f, BG_ESTATE, "'%s' has %s", f->mods[i]->name,
                         s->merged ? "a merged adapter; unmerge first" : "no free adapter slot");
    }
    free(l);
    return rc;
}

/* Adds the adapter (targets = the exact module names) without touching the ctx RNG. */
static int add_adapter(lora_file *f, bg_module *model, const char *name)
{
    const char **targets = malloc((size_t)f->n * sizeof *targets);
    if (!targets) return lf_fail(f, BG_ENOMEM, "out of memory");
    for (int i = 0; i < f->n; i++) targets[i] = f->mods[i]->name;
    bg_lora_config cfg = f->cfg;
    cfg.targets = targets;
    cfg.n_targets = f->n;
    uint64_t rng = bg_ctx_rng_state(model->ctx);
    int rc = bg_lora_add(model, name, &cfg);
    bg_ctx_set_rng_state(model->ctx, rng);
    free(targets);
    if (rc < 0) return lf_fail(f, rc, "adding the adapter: %s", bg_ctx_error(model->ctx));
    if (rc != f->n)
        return lf_fail(f, BG_ESHAPE, "the targets matched %d modules, not %d", rc, f->n);
    return BG_OK;
}

int bg_lora_load(const char *path, bg_module *model, const char *adapter_name, char *err,
                 size_t errlen)
{
    const char *name = adapter_name ? adapter_name : "default";
    lora_file f = { .path = path, .err = err, .errlen = errlen };
    if (!path || !model) return bg__io_err(err, errlen, BG_EINVAL, "lora load: NULL argument");
    if (!name[0] || strlen(name) >= sizeof(((bg_lora_adapter *)0)->name))
        return lf_fail(&f, BG_EINVAL, "adapter name must be 1..%zu bytes",
                       sizeof(((bg_lora_adapter *)0)->name) - 1);
    bg_gguf *g = NULL;
    char gerr[256] = "";
    int rc = bg_gguf_open(&g, path, gerr, sizeof gerr);
    if (rc) return lf_fail(&f, rc, "%s", gerr[0] ? gerr : bg_strerror(rc));
    f.g = g;
    rc = read_header(&f);
    if (!rc) {
        f.mods = calloc((size_t)f.n, sizeof *f.mods);
        f.ta = calloc((size_t)f.n, sizeof *f.ta);
        f.tb = calloc((size_t)f.n, sizeof *f.tb);
        if (!f.mods || !f.ta || !f.tb) rc = lf_fail(&f, BG_ENOMEM, "out of memory");
    }
    if (!rc) rc = check_targets(&f, model);
    int replace = rc ? rc : check_existing(&f, model, name);
    if (!rc && replace < 0) rc = replace;
    if (!rc && replace == 0) rc = add_adapter(&f, model, name);
    for (int i = 0; !rc && i < f.n; i++) {
        bg_lora_adapter *a = find_adapter(f.mods[i], name);
        bg_gguf_read_tensor_f32(g, f.ta[i], bg_tensor_data(a->A));
        bg_gguf_read_tensor_f32(g, f.tb[i], bg_tensor_data(a->B));
        a->cfg.alpha = f.cfg.alpha;
        a->cfg.rslora = f.cfg.rslora;
        a->cfg.dropout = f.cfg.dropout;
        a->scale = bg_lora_scale(&a->cfg);
    }
    if (!rc && err && errlen) err[0] = 0;
    bg_gguf_free(&g);
    free(f.mods);
    free(f.ta);
    free(f.tb);
    return rc;
}
