/* checkpoint.c - training checkpoints as GGUF files (layout: include/bitgrad/checkpoint.h):
 * the model's parameters and requires_grad flags, the optimizer's moments, steps, groups and
 * schedule factors, the quantizer lambda, the ctx RNG and a user string. Loading validates
 * the whole file before it writes anything, so a bad file changes nothing. */
#include <math.h>

#include "bitgrad/checkpoint.h"
#include "bitgrad/gguf.h"
#include "bitgrad/quant.h"
#include "io/checkpoint_packed.h"
#include "io/gguf_internal.h"
#include "io/model_io.h"
#include "quant/tmat_access.h"

#define CK_HASH_SEED 0xcbf29ce484222325ull
#define CK_HASH_MUL 0x100000001b3ull

/* ---- shared helpers ------------------------------------------------------------------ */

bg_checkpoint_state bg_checkpoint_state_default(void)
{
    bg_checkpoint_state st;
    memset(&st, 0, sizeof st);
    st.lambda = 1.0f;
    return st;
}

/* Word-wise FNV-1a: each step is a bijection of both h and the word, so one changed word
 * always changes the result. */
static uint64_t ck_checksum(const void *data, size_t n)
{
    const unsigned char *p = data;
    uint64_t h = CK_HASH_SEED;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * CK_HASH_MUL;
    }
    if (i < n) {
        uint64_t w = 0;
        memcpy(&w, p + i, n - i);
        h = (h ^ w) * CK_HASH_MUL;
    }
    return h;
}

static const char *kind_name(bg_optim_kind k)
{
    return k == BG_SGD ? "sgd" : k == BG_ADAM ? "adam" : "adamw";
}

/* Which moments an optimizer of this configuration keeps (as optim.c's ensure_state). */
static bool needs_moment(const bg_optim_config *c, int which)
{
    return which == 0 ? (c->kind != BG_SGD || c->momentum != 0.0f) : c->kind != BG_SGD;
}

static void moment_name(char out[BG_NAME_MAX], const char *param, int i, int which,
                        bg_optim_kind kind)
{
    const char *suf = which == 1 ? "exp_avg_sq" : kind == BG_SGD ? "momentum_buffer" : "exp_avg";
    size_t lp = strlen(param), ls = strlen(suf);
    if (lp + 1 + ls < BG_NAME_MAX) {
        memcpy(out, param, lp);
        out[lp] = '.';
        memcpy(out + lp + 1, suf, ls + 1);
    } else {
        snprintf(out, BG_NAME_MAX, "optim.%d.%s", i, suf);
    }
}

static bg_module *first_bitlinear(bg_module *m)
{
    if (bg_linear_is_bit(m)) return m;
    for (int i = 0; i < bg_module_n_children(m); i++) {
        bg_module *r = first_bitlinear(bg_module_child(m, i));
        if (r) return r;
    }
    return NULL;
}

static float model_lambda(bg_module *m)
{
    const bg_bitnet_config *c = bg_bitnet_get_config(m);
    if (c) return c->quant.lambda;
    bg_module *b = first_bitlinear(m);
    return b ? bg_linear_config(b).lambda : 1.0f;
}

static int model_param_index(const bg_module *m, const bg_tensor *t)
{
    int n = bg_module_n_params(m);
    for (int i = 0; i < n; i++)
        if (bg_module_param(m, i) == t) return i;
    return -1;
}

/* ---- save ------------------------------------------------------------------------------ */

typedef struct ck_save {
    bg_gguf_writer *w;
    uint64_t *sums; /* checksum of every tensor added */
    int64_t n_sums;
    void **codes; /* packed bases' codes, alive until the file is written */
    int n_codes;
    int rc; /* first error */
} ck_save;

#define PUT(call) (s->rc = s->rc ? s->rc : (call))

static void put_state(ck_save *s, bg_module *model, bg_optim *opt, const bg_checkpoint_state *st)
{
    bg_gguf_writer *w = s->w;
    bg_checkpoint_state d = bg_checkpoint_state_default();
    if (!st) {
        d.step = opt ? bg_optim_steps(opt) : 0;
        d.lambda = model_lambda(model);
        st = &d;
    }
    bool bitnet = bg_bitnet_get_config(model) != NULL;
    PUT(bg_gguf_writer_set_str(w, "general.type", "checkpoint"));
    PUT(bg_gguf_writer_set_str(w, "general.architecture", bitnet ? "bitnet" : "bitgrad"));
    PUT(bg_gguf_writer_set_u32(w, "bitgrad.checkpoint.version", BG_CHECKPOINT_VERSION));
    PUT(bg_gguf_writer_set_i64(w, "bitgrad.step", st->step));
    PUT(bg_gguf_writer_set_f32(w, "bitgrad.lambda", st->lambda));
    PUT(bg_gguf_writer_set_u64(w, "bitgrad.rng", bg_ctx_rng_state(model->ctx)));
    char user[BG_CHECKPOINT_USER_MAX];
    snprintf(user, sizeof user, "%.*s", BG_CHECKPOINT_USER_MAX - 1, st->user);
    PUT(bg_gguf_writer_set_str(w, "bitgrad.user", user));
    const bg_schedule *sc = &st->schedule;
    PUT(bg_gguf_writer_set_i32(w, "bitgrad.schedule.kind",
                               st->has_schedule ? (int32_t)sc->kind : -1));
    PUT(bg_gguf_writer_set_i64(w, "bitgrad.schedule.warmup", sc->warmup));
    PUT(bg_gguf_writer_set_i64(w, "bitgrad.schedule.total", sc->total));
    PUT(bg_gguf_writer_set_f32(w, "bitgrad.schedule.min_factor", sc->min_factor));
    PUT(bg_gguf_writer_set_f32(w, "bitgrad.schedule.stage2_at", sc->stage2_at));
    PUT(bg_gguf_writer_set_f32(w, "bitgrad.schedule.stage2_factor", sc->stage2_factor));
}

/* Every tokenizer.* key of the file st->tokenizer_from, unchanged. */
static void put_tokenizer(ck_save *s, const char *path, char *err, size_t errlen)
{
    bg_gguf *g = NULL;
    if (s->rc) return;
    if ((s->rc = bg_gguf_open(&g, path, err, errlen)) != BG_OK) return;
    for (int64_t i = 0; !s->rc && i < bg_gguf_n_kv(g); i++)
        if (strncmp(bg_gguf_key(g, i), "tokenizer.", 10) == 0)
            s->rc = bg_gguf_writer_copy_kv(s->w, g, i);
    bg_gguf_free(&g);
}

static void put_bitnet(ck_save *s, const bg_bitnet_config *c)
{
    bg_gguf_writer *w = s->w;
    PUT(bg_gguf_writer_set_u32(w, "bitnet.vocab_size", (uint32_t)c->n_vocab));
    PUT(bg_gguf_writer_set_u32(w, "bitnet.context_length", (uint32_t)c->n_ctx));
    PUT(bg_gguf_writer_set_u32(w, "bitnet.embedding_length", (uint32_t)c->n_embd));
    PUT(bg_gguf_writer_set_u32(w, "bitnet.block_count", (uint32_t)c->n_layer));
    PUT(bg_gguf_writer_set_u32(w, "bitnet.feed_forward_length", (uint32_t)c->n_ff));
    PUT(bg_gguf_writer_set_u32(w, "bitnet.attention.head_count", (uint32_t)c->n_head));
    PUT(bg_gguf_writer_set_u32(w, "bitnet.attention.head_count_kv", (uint32_t)c->n_head_kv));
    PUT(bg_gguf_writer_set_f32(w, "bitnet.attention.layer_norm_rms_epsilon", c->eps));
    PUT(bg_gguf_writer_set_f32(w, "bitnet.rope.freq_base", c->rope_base));
    PUT(bg_gguf_writer_set_bool(w, "bitgrad.bitnet.bitlinear", c->bitlinear));
    const bg_bitlinear_config *q = &c->quant;
    PUT(bg_gguf_writer_set_i32(w, "bitgrad.quant.weight_mode", q->weight_mode));
    PUT(bg_gguf_writer_set_i64(w, "bitgrad.quant.group", q->group));
    PUT(bg_gguf_writer_set_i32(w, "bitgrad.quant.act_bits", q->act_bits));
    PUT(bg_gguf_writer_set_bool(w, "bitgrad.quant.act_per_tensor", q->act_per_tensor));
    PUT(bg_gguf_writer_set_bool(w, "bitgrad.quant.quant_weights", q->quant_weights));
    PUT(bg_gguf_writer_set_bool(w, "bitgrad.quant.quant_acts", q->quant_acts));
}

static void add_f32(ck_save *s, const char *name, const bg_tensor *t)
{
    int nd = bg_tensor_ndim(t);
    int64_t ne[BG_MAX_DIMS];
    for (int i = 0; i < nd; i++) ne[i] = bg_tensor_dim(t, nd - 1 - i);
    size_t bytes = (size_t)bg_tensor_numel(t) * sizeof(float);
    const void *data = bg_tensor_data_const(t);
    PUT(bg_gguf_writer_add_tensor_ref(s->w, name, BG_GGML_F32, nd, ne, data, bytes));
    if (!s->rc) s->sums[s->n_sums++] = ck_checksum(data, bytes);
}

/* Name of the scale tensor of packed parameter i. */
static void scale_name(char out[BG_NAME_MAX], const char *param, int i)
{
    if (strlen(param) + sizeof ".packed_scale" <= BG_NAME_MAX)
        snprintf(out, BG_NAME_MAX, "%s.packed_scale", param);
    else
        snprintf(out, BG_NAME_MAX, "packed.%d.scale", i);
}

/* A packed base: its codes as I8 [out, in] under the parameter's name, its exact scales as
 * F32 (1 or out) under scale_name. An F16 embedding: F16 as held. */
static void add_packed(ck_save *s, bg_module *model, const bg_tensor *t, int i)
{
    int64_t ne[2] = { bg_tensor_dim(t, 1), bg_tensor_dim(t, 0) };
    if (t->dtype == BG_F16 && t->data) {
        size_t bytes = (size_t)bg_tensor_numel(t) * 2;
        const void *data = bg_tensor_data_const(t);
        PUT(bg_gguf_writer_add_tensor_ref(s->w, bg_tensor_name(t), BG_GGML_F16, 2, ne, data, bytes));
        if (!s->rc) s->sums[s->n_sums++] = ck_checksum(data, bytes);
        return;
    }
    bg_module *owner = bg__ck_packed_owner(model, t);
    if (!owner) {
        PUT(BG_EUNSUPPORTED);
        return;
    }
    void *blob = NULL;
    size_t bytes = 0;
    int type = 0;
    bool per_row;
    const float *sc = bg__tmat_scales(bg__linear_packed_base(owner), &per_row);
    int64_t nsc = bg__ck_packed_n_scales(owner);
    PUT(bg__ck_packed_blob(owner, &blob, &bytes, &type));
    if (s->rc) return;
    s->codes[s->n_codes++] = blob;
    PUT(bg_gguf_writer_add_tensor_ref(s->w, bg_tensor_name(t), type, 2, ne, blob, bytes));
    if (!s->rc) s->sums[s->n_sums++] = ck_checksum(blob, bytes);
    char sn[BG_NAME_MAX];
    scale_name(sn, bg_tensor_name(t), i);
    PUT(bg_gguf_writer_add_tensor_ref(s->w, sn, BG_GGML_F32, 1, &nsc, sc, (size_t)nsc * 4));
    if (!s->rc) s->sums[s->n_sums++] = ck_checksum(sc, (size_t)nsc * 4);
}

static void put_params(ck_save *s, bg_module *model)
{
    int n = bg_module_n_params(model);
    const char **names = malloc((size_t)(n ? n : 1) * sizeof *names);
    bool *req = malloc((size_t)(n ? n : 1) * sizeof *req);
    PUT(names && req ? BG_OK : BG_ENOMEM);
    for (int i = 0; !s->rc && i < n; i++) {
        bg_tensor *t = bg_module_param(model, i);
        names[i] = bg_tensor_name(t);
        req[i] = bg_tensor_requires_grad(t);
        if (t->dtype != BG_F32 || !t->data)
            add_packed(s, model, t, i);
        else
            add_f32(s, names[i], t);
    }
    PUT(bg_gguf_writer_set_arr(s->w, "bitgrad.params", BG_GGUF_STRING, names, (size_t)n));
    PUT(bg_gguf_writer_set_arr(s->w, "bitgrad.requires_grad", BG_GGUF_BOOL, req, (size_t)n));
    free(names);
    free(req);
}

static void put_optim_keys(ck_save *s, bg_optim *o)
{
    bg_gguf_writer *w = s->w;
    bg_optim_config c = bg_optim_get_config(o);
    PUT(bg_gguf_writer_set_str(w, "bitgrad.optim.kind", kind_name(c.kind)));
    PUT(bg_gguf_writer_set_i64(w, "bitgrad.optim.steps", bg_optim_steps(o)));
    PUT(bg_gguf_writer_set_f32(w, "bitgrad.optim.lr", c.lr));
    PUT(bg_gguf_writer_set_f32(w, "bitgrad.optim.beta1", c.beta1));
    PUT(bg_gguf_writer_set_f32(w, "bitgrad.optim.beta2", c.beta2));
    PUT(bg_gguf_writer_set_f32(w, "bitgrad.optim.eps", c.eps));
    PUT(bg_gguf_writer_set_f32(w, "bitgrad.optim.weight_decay", c.weight_decay));
    PUT(bg_gguf_writer_set_f32(w, "bitgrad.optim.momentum", c.momentum));
    PUT(bg_gguf_writer_set_f32(w, "bitgrad.optim.dampening", c.dampening));
    PUT(bg_gguf_writer_set_bool(w, "bitgrad.optim.nesterov", c.nesterov));
    PUT(bg_gguf_writer_set_f32(w, "bitgrad.optim.lr_scale", bg_optim_lr_scale(o)));
    PUT(bg_gguf_writer_set_f32(w, "bitgrad.optim.wd_scale", bg_optim_wd_scale(o)));
    int ng = bg_optim_n_groups(o);
    float *lr = malloc((size_t)(ng ? ng : 1) * sizeof *lr);
    float *wd = malloc((size_t)(ng ? ng : 1) * sizeof *wd);
    PUT(lr && wd ? BG_OK : BG_ENOMEM);
    for (int g = 0; !s->rc && g < ng; g++) {
        lr[g] = bg_optim_group_lr(o, g);
        wd[g] = bg_optim_group_weight_decay(o, g);
    }
    PUT(bg_gguf_writer_set_arr(w, "bitgrad.optim.group_lr", BG_GGUF_F32, lr, (size_t)ng));
    PUT(bg_gguf_writer_set_arr(w, "bitgrad.optim.group_wd", BG_GGUF_F32, wd, (size_t)ng));
    free(lr);
    free(wd);
}

/* Optimizer parameter list, groups and (if created) moments. */
static void put_optim(ck_save *s, bg_module *model, bg_optim *o, char *err, size_t errlen)
{
    put_optim_keys(s, o);
    int n = bg_optim_n_params(o);
    const char **names = malloc((size_t)(n ? n : 1) * sizeof *names);
    int32_t *grp = malloc((size_t)(n ? n : 1) * sizeof *grp);
    PUT(names && grp ? BG_OK : BG_ENOMEM);
    bool has_state = false;
    for (int i = 0; !s->rc && i < n; i++) {
        bg_tensor *p = bg_optim_param(o, i);
        if (model_param_index(model, p) < 0)
            s->rc = bg__io_err(err, errlen, BG_EINVAL,
                               "checkpoint: optimizer parameter '%s' is "
                               "not a parameter of the model",
                               bg_tensor_name(p));
        names[i] = bg_tensor_name(p);
        grp[i] = bg_optim_param_group(o, i);
        has_state = has_state || bg_optim_state(o, i, 0) || bg_optim_state(o, i, 1);
    }
    /* A parameter added after the last step has no state yet: zeros, as its first step would
     * create (bitgrad's optimizers treat a fresh state as zeros). */
    if (has_state) PUT(bg_optim_init_state(o));
    PUT(bg_gguf_writer_set_arr(s->w, "bitgrad.optim.params", BG_GGUF_STRING, names, (size_t)n));
    PUT(bg_gguf_writer_set_arr(s->w, "bitgrad.optim.param_group", BG_GGUF_I32, grp, (size_t)n));
    PUT(bg_gguf_writer_set_bool(s->w, "bitgrad.optim.has_state", has_state));
    bg_optim_config c = bg_optim_get_config(o);
    for (int i = 0; has_state && !s->rc && i < n; i++)
        for (int which = 0; which < 2 && !s->rc; which++) {
            if (!needs_moment(&c, which)) continue;
            bg_tensor *m = bg_optim_state(o, i, which);
            char mn[BG_NAME_MAX];
            moment_name(mn, names[i], i, which, c.kind);
            PUT(m ? BG_OK : BG_ESTATE);
            if (m) add_f32(s, mn, m);
        }
    free(names);
    free(grp);
}

int bg_checkpoint_save(const char *path, bg_module *model, bg_optim *opt,
                       const bg_checkpoint_state *st, char *err, size_t errlen)
{
    if (!path || !model) return bg__io_err(err, errlen, BG_EINVAL, "checkpoint: NULL argument");
    int np = bg_module_n_params(model), no = opt ? bg_optim_n_params(opt) : 0;
    ck_save s = { .sums = malloc((size_t)(2 * np + 2 * no + 1) * sizeof(uint64_t)),
                  .codes = calloc((size_t)np + 1, sizeof(void *)) };
    s.rc = s.sums && s.codes ? bg_gguf_writer_create(&s.w) : BG_ENOMEM;
    if (s.rc) {
        free(s.sums);
        free(s.codes);
        return bg__io_err(err, errlen, s.rc, "checkpoint: out of memory");
    }
    if (err && errlen) err[0] = 0;
    put_state(&s, model, opt, st);
    if (st && st->tokenizer_from) put_tokenizer(&s, st->tokenizer_from, err, errlen);
    const bg_bitnet_config *bc = bg_bitnet_get_config(model);
    if (bc) put_bitnet(&s, bc);
    const bg__tok_keys *tok = bc ? bg__model_tok_keys(model) : NULL; /* the model's tokenizer */
    if (tok && !s.rc) s.rc = bg__gguf_writer_copy_kvs(s.w, tok->kv);
    put_params(&s, model);
    if (opt) put_optim(&s, model, opt, err, errlen);
    if (!s.rc)
        s.rc = bg_gguf_writer_set_arr(s.w, "bitgrad.tensor_checksums", BG_GGUF_U64, s.sums,
                                      (size_t)s.n_sums);
    if (s.rc && !(err && errlen && err[0]))
        bg__io_err(err, errlen, s.rc, "checkpoint: preparing '%s': %s", path, bg_strerror(s.rc));
    if (!s.rc) s.rc = bg_gguf_writer_write(s.w, path, err, errlen);
    bg_gguf_writer_free(&s.w);
    for (int i = 0; i < s.n_codes; i++) free(s.codes[i]);
    free(s.codes);
    free(s.sums);
    return s.rc;
}

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
    scale_name(sn, name, i);
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
            if (!c->has_state || !needs_moment(&c->ocfg, which)) continue;
            char mn[BG_NAME_MAX];
            moment_name(mn, name, (int)i, which, c->ocfg.kind);
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
                       kind_name(f->kind), kind_name(m.kind));
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
        if (ck_checksum(bg_gguf_tensor_data(c->g, i), bg_gguf_tensor_nbytes(c->g, i)) != sums[i])
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
    if (bg_bitnet_get_config(c->model) || first_bitlinear(c->model))
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
