/* checkpoint_load.c - reading a training checkpoint (bg_checkpoint_load; the layout is in
 * include/bitgrad/checkpoint.h, the writer in checkpoint.c): every key and tensor is checked
 * against the model and optimizer first, and only then is anything written, so a bad file
 * changes nothing. */
#include <math.h>

#include "bitgrad/checkpoint.h"
#include "bitgrad/gguf.h"
#include "bitgrad/quant.h"
#include "io/checkpoint_internal.h"
#include "io/checkpoint_packed.h"
#include "io/gguf_internal.h"
#include "io/model_io.h"
#include "quant/tmat_access.h"

/* ---- load: reading and checking keys ------------------------------------------------------ */

typedef struct ck_load {
    const bg_gguf *g;
    const char *path;
    char *err;
    size_t errlen;
    bg_module *model;
    bg_optim *opt;
    bg_checkpoint_state st;
    int n_params;
    int64_t *src; /* file tensor of each model parameter */
    int64_t *ssrc;  /* file tensor of each packed parameter's scales, or -1 */
    bg_module **own; /* the packed BitLinear owning each parameter, or NULL */
    bool *req;    /* saved requires_grad of each model parameter */
    bool has_opt, has_state;
    bg_optim_config ocfg;
    int64_t opt_steps, n_opt;
    float lr_scale, wd_scale;
    int64_t n_groups;
    const float *group_lr, *group_wd;
    int64_t *msrc; /* [n_opt][2] file tensor of each moment, or -1 */
} ck_load;

__attribute__((format(printf, 3, 4))) static int ck_fail(ck_load *c, int code, const char *fmt, ...)
{
    if (c->err && c->errlen) {
        int n = snprintf(c->err, c->errlen, "checkpoint '%s': ", c->path);
        if (n >= 0 && (size_t)n < c->errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
    return code;
}

/* Index of key, which must exist with exactly this type (and for arrays this element type
 * and, when n >= 0, n elements). */
static int need_key(ck_load *c, const char *key, int type, int arr_type, int64_t n, int64_t *idx)
{
    int64_t i = bg_gguf_find_key(c->g, key);
    if (i < 0) return ck_fail(c, BG_EFORMAT, "key '%s' is missing", key);
    int t = bg_gguf_kv_type(c->g, i);
    if (t != type)
        return ck_fail(c, BG_EFORMAT, "key '%s' is of type %s, expected %s", key,
                       bg_gguf_type_name(t), bg_gguf_type_name(type));
    if (type == BG_GGUF_ARRAY) {
        int at = bg_gguf_get_arr_type(c->g, i);
        if (at != arr_type)
            return ck_fail(c, BG_EFORMAT, "key '%s' is an array of %s, expected %s", key,
                           bg_gguf_type_name(at), bg_gguf_type_name(arr_type));
        if (n >= 0 && bg_gguf_get_arr_n(c->g, i) != n)
            return ck_fail(c, BG_EFORMAT, "key '%s' has %lld elements, expected %lld", key,
                           (long long)bg_gguf_get_arr_n(c->g, i), (long long)n);
    }
    *idx = i;
    return BG_OK;
}

static int get_u32(ck_load *c, const char *key, uint32_t *v)
{
    int64_t i = -1;
    int rc = need_key(c, key, BG_GGUF_U32, 0, -1, &i);
    return rc ? rc : bg_gguf_get_u32(c->g, i, v);
}

static int get_i32(ck_load *c, const char *key, int32_t *v)
{
    int64_t i = -1;
    int rc = need_key(c, key, BG_GGUF_I32, 0, -1, &i);
    return rc ? rc : bg_gguf_get_i32(c->g, i, v);
}

static int get_i64(ck_load *c, const char *key, int64_t *v)
{
    int64_t i = -1;
    int rc = need_key(c, key, BG_GGUF_I64, 0, -1, &i);
    return rc ? rc : bg_gguf_get_i64(c->g, i, v);
}

static int get_u64(ck_load *c, const char *key, uint64_t *v)
{
    int64_t i = -1;
    int rc = need_key(c, key, BG_GGUF_U64, 0, -1, &i);
    return rc ? rc : bg_gguf_get_u64(c->g, i, v);
}

static int get_f32(ck_load *c, const char *key, float *v)
{
    int64_t i = -1;
    int rc = need_key(c, key, BG_GGUF_F32, 0, -1, &i);
    if (!rc) rc = bg_gguf_get_f32(c->g, i, v);
    if (!rc && !isfinite(*v)) return ck_fail(c, BG_EFORMAT, "key '%s' is not finite", key);
    return rc;
}

static int get_bool(ck_load *c, const char *key, bool *v)
{
    int64_t i = -1;
    int rc = need_key(c, key, BG_GGUF_BOOL, 0, -1, &i);
    return rc ? rc : bg_gguf_get_bool(c->g, i, v);
}

static int get_str(ck_load *c, const char *key, const char **v)
{
    int64_t i = -1;
    int rc = need_key(c, key, BG_GGUF_STRING, 0, -1, &i);
    if (!rc) *v = bg_gguf_get_str(c->g, i, NULL);
    return rc;
}

static int read_state(ck_load *c)
{
    uint32_t version;
    int rc = get_u32(c, "bitgrad.checkpoint.version", &version);
    if (!rc && version != BG_CHECKPOINT_VERSION)
        return ck_fail(c, BG_EUNSUPPORTED, "checkpoint version %u, this build reads %d", version,
                       BG_CHECKPOINT_VERSION);
    bg_checkpoint_state *st = &c->st;
    const char *user = NULL;
    int32_t kind = -1;
    if (!rc) rc = get_i64(c, "bitgrad.step", &st->step);
    if (!rc) rc = get_f32(c, "bitgrad.lambda", &st->lambda);
    if (!rc) rc = get_u64(c, "bitgrad.rng", &st->rng);
    if (!rc) rc = get_str(c, "bitgrad.user", &user);
    if (!rc) rc = get_i32(c, "bitgrad.schedule.kind", &kind);
    if (!rc) rc = get_i64(c, "bitgrad.schedule.warmup", &st->schedule.warmup);
    if (!rc) rc = get_i64(c, "bitgrad.schedule.total", &st->schedule.total);
    if (!rc) rc = get_f32(c, "bitgrad.schedule.min_factor", &st->schedule.min_factor);
    if (!rc) rc = get_f32(c, "bitgrad.schedule.stage2_at", &st->schedule.stage2_at);
    if (!rc) rc = get_f32(c, "bitgrad.schedule.stage2_factor", &st->schedule.stage2_factor);
    if (rc) return rc;
    if (st->step < 0 || !(st->lambda >= 0.0f && st->lambda <= 1.0f))
        return ck_fail(c, BG_EFORMAT, "step %lld or lambda %g out of range", (long long)st->step,
                       (double)st->lambda);
    if (kind < -1 || kind > BG_SCHED_TWO_STAGE)
        return ck_fail(c, BG_EFORMAT, "unknown schedule kind %d", kind);
    st->has_schedule = kind >= 0;
    st->schedule.kind = kind >= 0 ? (bg_sched_kind)kind : BG_SCHED_CONSTANT;
    snprintf(st->user, sizeof st->user, "%s", user ? user : "");
    return BG_OK;
}

/* A numeric key of one of the types used for configurations, as a double (exact for all). */
static int get_num(ck_load *c, const char *key, int type, double *v)
{
    union {
        uint32_t u32;
        int32_t i32;
        int64_t i64;
        float f32;
        bool b;
    } x = { 0 };
    int rc = type == BG_GGUF_U32   ? get_u32(c, key, &x.u32)
             : type == BG_GGUF_I32 ? get_i32(c, key, &x.i32)
             : type == BG_GGUF_I64 ? get_i64(c, key, &x.i64)
             : type == BG_GGUF_F32 ? get_f32(c, key, &x.f32)
                                   : get_bool(c, key, &x.b);
    *v = type == BG_GGUF_U32   ? (double)x.u32
         : type == BG_GGUF_I32 ? (double)x.i32
         : type == BG_GGUF_I64 ? (double)x.i64
         : type == BG_GGUF_F32 ? (double)x.f32
                               : (double)x.b;
    return rc;
}

/* The model's bitnet configuration must be the saved one (lambda aside). */
static int check_bitnet(ck_load *c)
{
    const char *arch = NULL;
    int rc = get_str(c, "general.architecture", &arch);
    const bg_bitnet_config *m = bg_bitnet_get_config(c->model);
    bool file_bitnet = !rc && arch && strcmp(arch, "bitnet") == 0;
    if (rc || file_bitnet != (m != NULL))
        return rc ? rc
                  : ck_fail(c, BG_EINVAL, "checkpoint of a %s model, loading into a %s one",
                            file_bitnet ? "bitnet" : "non-bitnet", m ? "bitnet" : "non-bitnet");
    if (!m) return BG_OK;
    const struct {
        const char *key;
        int type;
        double model;
    } keys[] = {
        { "bitnet.vocab_size", BG_GGUF_U32, (double)m->n_vocab },
        { "bitnet.context_length", BG_GGUF_U32, (double)m->n_ctx },
        { "bitnet.embedding_length", BG_GGUF_U32, (double)m->n_embd },
        { "bitnet.block_count", BG_GGUF_U32, (double)m->n_layer },
        { "bitnet.feed_forward_length", BG_GGUF_U32, (double)m->n_ff },
        { "bitnet.attention.head_count", BG_GGUF_U32, (double)m->n_head },
        { "bitnet.attention.head_count_kv", BG_GGUF_U32, (double)m->n_head_kv },
        { "bitnet.attention.layer_norm_rms_epsilon", BG_GGUF_F32, m->eps },
        { "bitnet.rope.freq_base", BG_GGUF_F32, m->rope_base },
        { "bitgrad.bitnet.bitlinear", BG_GGUF_BOOL, m->bitlinear },
        { "bitgrad.quant.weight_mode", BG_GGUF_I32, m->quant.weight_mode },
        { "bitgrad.quant.group", BG_GGUF_I64, (double)m->quant.group },
        { "bitgrad.quant.act_bits", BG_GGUF_I32, m->quant.act_bits },
        { "bitgrad.quant.act_per_tensor", BG_GGUF_BOOL, m->quant.act_per_tensor },
        { "bitgrad.quant.quant_weights", BG_GGUF_BOOL, m->quant.quant_weights },
        { "bitgrad.quant.quant_acts", BG_GGUF_BOOL, m->quant.quant_acts },
    };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0] && !rc; i++) {
        double v = 0.0;
        rc = get_num(c, keys[i].key, keys[i].type, &v);
        if (!rc && v != keys[i].model)
            rc = ck_fail(c, BG_ESHAPE, "%s is %g in the checkpoint but %g in the model",
                         keys[i].key, v, keys[i].model);
    }
    return rc;
}

/* ---- load: tensors -------------------------------------------------------------------- */

/* "[a,b]" in bitgrad order from ggml's ne. */
static const char *ne_str(char *buf, size_t n, int nd, const int64_t *ne)
{
    size_t off = (size_t)snprintf(buf, n, "[");
    for (int i = nd - 1; i >= 0 && off < n; i--)
        off += (size_t)snprintf(buf + off, n - off, "%lld%s", (long long)ne[i], i ? "," : "]");
    return buf;
}

/* Tensor `name` must exist, be of type want (ggml) and have the shape of `like`. */
static int check_tensor_as(ck_load *c, const char *name, const bg_tensor *like, int want,
                           int64_t *idx)
{
    int64_t ti = bg_gguf_find_tensor(c->g, name);
    if (ti < 0) return ck_fail(c, BG_EFORMAT, "tensor '%s' is missing", name);
    int type = bg_gguf_tensor_type(c->g, ti);
    if (type != want)
        return ck_fail(c, BG_EFORMAT, "tensor '%s' is %s, expected %s (the model holds it %s)",
                       name, bg_ggml_type_name(type), bg_ggml_type_name(want),
                       want == BG_GGML_I8 ? "packed" : want == BG_GGML_F16 ? "as f16" : "as f32");
    int nd = bg_tensor_ndim(like), fnd = bg_gguf_tensor_n_dims(c->g, ti);
    const int64_t *ne = bg_gguf_tensor_ne(c->g, ti);
    int64_t mne[BG_MAX_DIMS];
    bool same = fnd == nd;
    for (int i = 0; i < nd; i++) {
        mne[i] = bg_tensor_dim(like, nd - 1 - i);
        same = same && ne[i] == mne[i];
    }
    if (!same) {
        char a[96], b[96];
        return ck_fail(c, BG_ESHAPE, "tensor '%s' is %s in the checkpoint but %s in the model",
                       name, ne_str(a, sizeof a, fnd, ne), ne_str(b, sizeof b, nd, mne));
    }
    *idx = ti;
    return BG_OK;
}

static int check_tensor(ck_load *c, const char *name, const bg_tensor *like, int64_t *idx)
{
    return check_tensor_as(c, name, like, BG_GGML_F32, idx);
}

/* Parameter i of the model as stored: F32, F16 (an F16 embedding) or packed (I8 codes and
 * F32 scales). */
static int check_param(ck_load *c, int i)
{
    const bg_tensor *t = bg_module_param(c->model, i);
    const char *name = bg_tensor_name(t);
    c->ssrc[i] = -1;
    c->own[i] = t->data ? NULL : bg__ck_packed_owner(c->model, t);
    if (t->data)
        return check_tensor_as(c, name, t, t->dtype == BG_F16 ? BG_GGML_F16 : BG_GGML_F32,
                               &c->src[i]);
    if (!c->own[i]) return ck_fail(c, BG_EUNSUPPORTED, "parameter '%s' has no values", name);
    int64_t fi = bg_gguf_find_tensor(c->g, name);
    int ftype = fi >= 0 ? bg_gguf_tensor_type(c->g, fi) : BG_GGML_I8;
    int rc = check_tensor_as(c, name, t, ftype == BG_GGML_TQ2_0 ? ftype : BG_GGML_I8, &c->src[i]);
    char sn[BG_NAME_MAX];
    bg__ck_scale_name(sn, name, i);
    int64_t ti = rc ? -1 : bg_gguf_find_tensor(c->g, sn), want = bg__ck_packed_n_scales(c->own[i]);
    if (!rc && (ti < 0 || bg_gguf_tensor_type(c->g, ti) != BG_GGML_F32 ||
                bg_gguf_tensor_n_dims(c->g, ti) != 1 || bg_gguf_tensor_ne(c->g, ti)[0] != want))
        return ck_fail(c, BG_EFORMAT, "tensor '%s' (the scales of packed '%s'): missing or not "
                       "f32 [%lld]", sn, name, (long long)want);
    c->ssrc[i] = ti;
    return rc;
}

/* Position of name in string array key i, or -1. */
static int64_t list_find(const bg_gguf *g, int64_t key, const char *name)
{
    int64_t n = bg_gguf_get_arr_n(g, key);
    for (int64_t j = 0; j < n; j++) {
        const char *s = bg_gguf_get_arr_str(g, key, j, NULL);
        if (s && strcmp(s, name) == 0) return j;
    }
    return -1;
}

/* The saved parameter list is exactly the model's; every parameter is stored as expected. */
static int check_params(ck_load *c)
{
    int64_t li = bg_gguf_find_key(c->g, "bitgrad.params"), ri;
    int64_t nf = li >= 0 ? bg_gguf_get_arr_n(c->g, li) : -1;
    if (nf >= 0 && nf != c->n_params)
        return ck_fail(c, BG_ESHAPE, "the checkpoint has %lld parameters, the model %d",
                       (long long)nf, c->n_params);
    int rc = need_key(c, "bitgrad.params", BG_GGUF_ARRAY, BG_GGUF_STRING, c->n_params, &li);
    if (!rc)
        rc = need_key(c, "bitgrad.requires_grad", BG_GGUF_ARRAY, BG_GGUF_BOOL, c->n_params, &ri);
    const uint8_t *req = rc ? NULL : bg_gguf_get_arr_data(c->g, ri);
    for (int i = 0; !rc && i < c->n_params; i++) {
        const bg_tensor *t = bg_module_param(c->model, i);
        int64_t j = list_find(c->g, li, bg_tensor_name(t));
        if (j < 0)
            return ck_fail(c, BG_ESHAPE, "the model's parameter '%s' is not in the checkpoint",
                           bg_tensor_name(t));
        c->req[i] = req[j] != 0;
        rc = check_param(c, i);
    }
    return rc;
}

/* ---- load: optimizer --------------------------------------------------------------------- */

static int read_optim_config(ck_load *c)
{
    const char *kind = NULL;
    bg_optim_config *o = &c->ocfg;
    int rc = get_str(c, "bitgrad.optim.kind", &kind);
    if (!rc) {
        if (strcmp(kind, "sgd") == 0) o->kind = BG_SGD;
        else if (strcmp(kind, "adam") == 0)
            o->kind = BG_ADAM;
        else if (strcmp(kind, "adamw") == 0)
            o->kind = BG_ADAMW;
        else
            return ck_fail(c, BG_EFORMAT, "unknown optimizer kind '%s'", kind);
    }
    if (!rc) rc = get_i64(c, "bitgrad.optim.steps", &c->opt_steps);
    if (!rc) rc = get_f32(c, "bitgrad.optim.lr", &o->lr);
    if (!rc) rc = get_f32(c, "bitgrad.optim.beta1", &o->beta1);
    if (!rc) rc = get_f32(c, "bitgrad.optim.beta2", &o->beta2);
    if (!rc) rc = get_f32(c, "bitgrad.optim.eps", &o->eps);
    if (!rc) rc = get_f32(c, "bitgrad.optim.weight_decay", &o->weight_decay);
    if (!rc) rc = get_f32(c, "bitgrad.optim.momentum", &o->momentum);
    if (!rc) rc = get_f32(c, "bitgrad.optim.dampening", &o->dampening);
    if (!rc) rc = get_bool(c, "bitgrad.optim.nesterov", &o->nesterov);
    if (!rc) rc = get_f32(c, "bitgrad.optim.lr_scale", &c->lr_scale);
    if (!rc) rc = get_f32(c, "bitgrad.optim.wd_scale", &c->wd_scale);
    if (!rc) rc = get_bool(c, "bitgrad.optim.has_state", &c->has_state);
    if (!rc && c->opt_steps < 0) rc = ck_fail(c, BG_EFORMAT, "negative optimizer step count");
    return rc;
}

/* Parameter list, groups and the moments' tensors (checked against the model's parameters). */
static int read_optim_params(ck_load *c)
{
    int64_t pi, gi, lri, wdi;
    int rc = need_key(c, "bitgrad.optim.params", BG_GGUF_ARRAY, BG_GGUF_STRING, -1, &pi);
    c->n_opt = rc ? 0 : bg_gguf_get_arr_n(c->g, pi);
    if (!rc)
        rc = need_key(c, "bitgrad.optim.param_group", BG_GGUF_ARRAY, BG_GGUF_I32, c->n_opt, &gi);
    if (!rc) rc = need_key(c, "bitgrad.optim.group_lr", BG_GGUF_ARRAY, BG_GGUF_F32, -1, &lri);
    c->n_groups = rc ? 0 : bg_gguf_get_arr_n(c->g, lri);
    if (!rc)
        rc = need_key(c, "bitgrad.optim.group_wd", BG_GGUF_ARRAY, BG_GGUF_F32, c->n_groups, &wdi);
    if (rc) return rc;
    c->group_lr = bg_gguf_get_arr_data(c->g, lri);
    c->group_wd = bg_gguf_get_arr_data(c->g, wdi);
    const int32_t *grp = bg_gguf_get_arr_data(c->g, gi);
    c->msrc = malloc((size_t)(2 * c->n_opt + 1) * sizeof *c->msrc);
    if (!c->msrc) return ck_fail(c, BG_ENOMEM, "out of memory");
    for (int64_t i = 0; !rc && i < c->n_opt; i++) {
        const char *name = bg_gguf_get_arr_str(c->g, pi, i, NULL);
        const bg_tensor *p = bg_module_find_param(c->model, name);
        if (!p) return ck_fail(c, BG_ESHAPE, "optimizer parameter '%s' is not in the model", name);
        if (grp[i] < 0 || grp[i] >= c->n_groups)
            return ck_fail(c, BG_EFORMAT, "optimizer parameter '%s' in group %d of %lld", name,
                           grp[i], (long long)c->n_groups);
        for (int which = 0; which < 2 && !rc; which++) {
            c->msrc[2 * i + which] = -1;
            if (!c->has_state || !bg__ck_needs_moment(&c->ocfg, which)) continue;
            char mn[BG_NAME_MAX];
            bg__ck_moment_name(mn, name, (int)i, which, c->ocfg.kind);
            rc = check_tensor(c, mn, p, &c->msrc[2 * i + which]);
        }
    }
    return rc;
}

/* The live optimizer must be the one saved: kind, hyper-parameters, parameters, groups. */
static int check_optim_fits(ck_load *c)
{
    bg_optim_config m = bg_optim_get_config(c->opt), *f = &c->ocfg;
    if (m.kind != f->kind)
        return ck_fail(c, BG_EINVAL, "the checkpoint's optimizer is %s, the given one %s",
                       bg__ck_kind_name(f->kind), bg__ck_kind_name(m.kind));
    if (m.beta1 != f->beta1 || m.beta2 != f->beta2 || m.eps != f->eps ||
        m.momentum != f->momentum || m.dampening != f->dampening || m.nesterov != f->nesterov)
        return ck_fail(c, BG_EINVAL,
                       "optimizer hyper-parameters differ: checkpoint betas "
                       "%g/%g eps %g momentum %g dampening %g nesterov %d; given %g/%g %g %g %g %d",
                       f->beta1, f->beta2, f->eps, f->momentum, f->dampening, f->nesterov, m.beta1,
                       m.beta2, m.eps, m.momentum, m.dampening, m.nesterov);
    if (c->n_opt != bg_optim_n_params(c->opt) || c->n_groups != bg_optim_n_groups(c->opt))
        return ck_fail(c, BG_EINVAL,
                       "the checkpoint's optimizer has %lld parameters in %lld "
                       "groups, the given one %d in %d (build it the same way, freezing first)",
                       (long long)c->n_opt, (long long)c->n_groups, bg_optim_n_params(c->opt),
                       bg_optim_n_groups(c->opt));
    int64_t pi = bg_gguf_find_key(c->g, "bitgrad.optim.params");
    const int32_t *grp =
        bg_gguf_get_arr_data(c->g, bg_gguf_find_key(c->g, "bitgrad.optim.param_group"));
    for (int i = 0; i < c->n_opt; i++) {
        const char *name = bg_gguf_get_arr_str(c->g, pi, i, NULL);
        const bg_tensor *p = bg_optim_param(c->opt, i);
        if (strcmp(name, bg_tensor_name(p)) != 0 || grp[i] != bg_optim_param_group(c->opt, i))
            return ck_fail(c, BG_EINVAL,
                           "optimizer parameter %d is '%s' in group %d in the "
                           "checkpoint but '%s' in group %d in the given optimizer",
                           i, name, grp[i], bg_tensor_name(p), bg_optim_param_group(c->opt, i));
    }
    return BG_OK;
}

static int check_optim(ck_load *c)
{
    c->has_opt = bg_gguf_find_key(c->g, "bitgrad.optim.kind") >= 0;
    if (!c->has_opt)
        return c->opt ? ck_fail(c, BG_EINVAL, "saved without an optimizer; load with opt NULL")
                      : BG_OK;
    int rc = read_optim_config(c);
    if (!rc) rc = read_optim_params(c);
    if (!rc && c->opt) rc = check_optim_fits(c);
    return rc;
}

/* No unknown tensors, and every tensor's data matches its checksum. */
static int check_contents(ck_load *c)
{
    int64_t expected = c->n_params, nt = bg_gguf_n_tensors(c->g), si;
    for (int64_t i = 0; c->has_opt && i < 2 * c->n_opt; i++) expected += c->msrc[i] >= 0;
    for (int i = 0; i < c->n_params; i++) expected += c->ssrc[i] >= 0;
    if (nt != expected)
        return ck_fail(c, BG_EFORMAT, "the file holds %lld tensors, expected %lld", (long long)nt,
                       (long long)expected);
    int rc = need_key(c, "bitgrad.tensor_checksums", BG_GGUF_ARRAY, BG_GGUF_U64, nt, &si);
    const uint64_t *sums = rc ? NULL : bg_gguf_get_arr_data(c->g, si);
    for (int64_t i = 0; !rc && i < nt; i++)
        if (bg__ck_checksum(bg_gguf_tensor_data(c->g, i), bg_gguf_tensor_nbytes(c->g, i)) != sums[i])
            rc = ck_fail(c, BG_EFORMAT, "tensor '%s': checksum mismatch (the data is corrupted)",
                         bg_gguf_tensor_name(c->g, i));
    return rc;
}

/* ---- load: commit (everything was validated; only allocation can fail, first) ------------- */

static int commit(ck_load *c)
{
    bg_optim *o = c->has_opt ? c->opt : NULL;
    if (o && c->has_state && bg_optim_init_state(o))
        return ck_fail(c, BG_ENOMEM, "out of memory creating the optimizer state");
    for (int i = 0; i < c->n_params; i++) {
        if (c->own[i]) { /* a new packed matrix: can fail only for memory */
            const void *data = bg_gguf_tensor_data(c->g, c->src[i]);
            const float *sc = bg_gguf_tensor_data(c->g, c->ssrc[i]);
            int rc = bg_gguf_tensor_type(c->g, c->src[i]) == BG_GGML_TQ2_0
                         ? bg_bitlinear_set_packed_tq(c->own[i], BG_GGML_TQ2_0, data,
                                                      bg_gguf_tensor_nbytes(c->g, c->src[i]), sc)
                         : bg_bitlinear_set_packed(c->own[i], data, sc);
            if (rc) return ck_fail(c, rc, "packed '%s': %s", c->own[i]->name,
                                   bg_ctx_error(c->model->ctx));
        }
        bg_tensor *t = bg_module_param(c->model, i);
        if (t->dtype == BG_F16)
            memcpy(t->data, bg_gguf_tensor_data(c->g, c->src[i]), bg_gguf_tensor_nbytes(c->g, c->src[i]));
        else if (!c->own[i])
            bg_gguf_read_tensor_f32(c->g, c->src[i], bg_tensor_data(t));
        bg_tensor_set_requires_grad(t, c->req[i]);
    }
    for (int i = 0; o && i < c->n_opt; i++)
        for (int which = 0; which < 2; which++) {
            bg_tensor *m = bg_optim_state(o, i, which);
            if (m && c->msrc[2 * i + which] >= 0)
                bg_gguf_read_tensor_f32(c->g, c->msrc[2 * i + which], bg_tensor_data(m));
            else if (m) /* saved before the first step: a fresh state */
                memset(bg_tensor_data(m), 0, (size_t)bg_tensor_numel(m) * sizeof(float));
        }
    if (o) {
        bg_optim_set_steps(o, c->opt_steps);
        for (int g = 0; g < c->n_groups; g++) {
            bg_optim_set_group_lr(o, g, c->group_lr[g]);
            bg_optim_set_group_weight_decay(o, g, c->group_wd[g]);
        }
        bg_optim_set_lr_scale(o, c->lr_scale);
        bg_optim_set_wd_scale(o, c->wd_scale);
    }
    bg_ctx_set_rng_state(c->model->ctx, c->st.rng);
    if (bg_bitnet_get_config(c->model) || bg__ck_first_bitlinear(c->model))
        bg_module_set_lambda(c->model, c->st.lambda);
    return BG_OK;
}

int bg_checkpoint_load(const char *path, bg_module *model, bg_optim *opt, bg_checkpoint_state *st,
                       char *err, size_t errlen)
{
    if (!path || !model) return bg__io_err(err, errlen, BG_EINVAL, "checkpoint: NULL argument");
    ck_load c = { .path = path,
                  .err = err,
                  .errlen = errlen,
                  .model = model,
                  .opt = opt,
                  .st = bg_checkpoint_state_default(),
                  .n_params = bg_module_n_params(model) };
    bg_ctx_stats stats;
    bg_ctx_stats_get(model->ctx, &stats);
    if (stats.tape_nodes)
        return ck_fail(&c, BG_ESTATE,
                       "load between steps: the tape holds %zu nodes (call bg_step_end first)",
                       stats.tape_nodes);
    c.src = malloc((size_t)(c.n_params + 1) * sizeof *c.src);
    c.req = malloc((size_t)(c.n_params + 1) * sizeof *c.req);
    c.ssrc = calloc((size_t)c.n_params + 1, sizeof *c.ssrc);
    c.own = calloc((size_t)c.n_params + 1, sizeof *c.own);
    bg_gguf *g = NULL;
    char gerr[256] = "";
    int rc = c.src && c.req && c.ssrc && c.own ? bg_gguf_open(&g, path, gerr, sizeof gerr) : BG_ENOMEM;
    if (rc) ck_fail(&c, rc, "%s", gerr[0] ? gerr : bg_strerror(rc));
    c.g = g;
    if (!rc) rc = read_state(&c);
    if (!rc) rc = check_bitnet(&c);
    if (!rc) rc = check_params(&c);
    if (!rc) rc = check_optim(&c);
    if (!rc) rc = check_contents(&c);
    if (!rc) rc = commit(&c);
    bg__tok_keys *tok = NULL; /* a checkpoint of a model with a tokenizer gives it back */
    if (!rc && bg_bitnet_get_config(model) && bg__tok_keys_from(g, &tok) == BG_OK)
        bg__model_attach_tok_keys(model, tok);
    if (!rc && st) *st = c.st;
    if (!rc && err && errlen) err[0] = 0;
    bg_gguf_free(&g);
    free(c.src);
    free(c.req);
    free(c.ssrc);
    free(c.own);
    free(c.msrc);
    return rc;
}
