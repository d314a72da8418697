/* checkpoint.c - training checkpoints as GGUF files (layout: include/bitgrad/checkpoint.h):
 * the model's parameters and requires_grad flags, the optimizer's moments, steps, groups and
 * schedule factors, the quantizer lambda, the ctx RNG and a user string. This file writes them
 * (and holds the helpers both sides share, checkpoint_internal.h); checkpoint_load.c reads
 * them back, validating the whole file before it writes anything. */
#include <math.h>

#include "bitgrad/checkpoint.h"
#include "bitgrad/gguf.h"
#include "bitgrad/quant.h"
#include "io/checkpoint_internal.h"
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
uint64_t bg__ck_checksum(const void *data, size_t n)
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

const char *bg__ck_kind_name(bg_optim_kind k)
{
    return k == BG_SGD ? "sgd" : k == BG_ADAM ? "adam" : "adamw";
}

/* Which moments an optimizer of this configuration keeps (as optim.c's ensure_state). */
bool bg__ck_needs_moment(const bg_optim_config *c, int which)
{
    return which == 0 ? (c->kind != BG_SGD || c->momentum != 0.0f) : c->kind != BG_SGD;
}

void bg__ck_moment_name(char out[BG_NAME_MAX], const char *param, int i, int which,
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

bg_module *bg__ck_first_bitlinear(bg_module *m)
{
    if (bg_linear_is_bit(m)) return m;
    for (int i = 0; i < bg_module_n_children(m); i++) {
        bg_module *r = bg__ck_first_bitlinear(bg_module_child(m, i));
        if (r) return r;
    }
    return NULL;
}

static float model_lambda(bg_module *m)
{
    const bg_bitnet_config *c = bg_bitnet_get_config(m);
    if (c) return c->quant.lambda;
    bg_module *b = bg__ck_first_bitlinear(m);
    return b ? bg_linear_config(b).lambda : 1.0f;
}

static int model_param_index(const bg_module *m, const bg_tensor *t)
{
    int n = bg_module_n_params(m);
    for (int i = 0; i < n; i++)
        if (bg_module_param(m, i) == t) return i;
    return -1;
}

/* Name of the scale tensor of packed parameter i. */
void bg__ck_scale_name(char out[BG_NAME_MAX], const char *param, int i)
{
    if (strlen(param) + sizeof ".packed_scale" <= BG_NAME_MAX)
        snprintf(out, BG_NAME_MAX, "%s.packed_scale", param);
    else
        snprintf(out, BG_NAME_MAX, "packed.%d.scale", i);
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
    if (!s->rc) s->sums[s->n_sums++] = bg__ck_checksum(data, bytes);
}

/* A packed base: its codes as I8 [out, in] under the parameter's name, its exact scales as
 * F32 (1 or out) under bg__ck_scale_name. An F16 embedding: F16 as held. */
static void add_packed(ck_save *s, bg_module *model, const bg_tensor *t, int i)
{
    int64_t ne[2] = { bg_tensor_dim(t, 1), bg_tensor_dim(t, 0) };
    if (t->dtype == BG_F16 && t->data) {
        size_t bytes = (size_t)bg_tensor_numel(t) * 2;
        const void *data = bg_tensor_data_const(t);
        PUT(bg_gguf_writer_add_tensor_ref(s->w, bg_tensor_name(t), BG_GGML_F16, 2, ne, data, bytes));
        if (!s->rc) s->sums[s->n_sums++] = bg__ck_checksum(data, bytes);
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
    if (!s->rc) s->sums[s->n_sums++] = bg__ck_checksum(blob, bytes);
    char sn[BG_NAME_MAX];
    bg__ck_scale_name(sn, bg_tensor_name(t), i);
    PUT(bg_gguf_writer_add_tensor_ref(s->w, sn, BG_GGML_F32, 1, &nsc, sc, (size_t)nsc * 4));
    if (!s->rc) s->sums[s->n_sums++] = bg__ck_checksum(sc, (size_t)nsc * 4);
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
    PUT(bg_gguf_writer_set_str(w, "bitgrad.optim.kind", bg__ck_kind_name(c.kind)));
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
            if (!bg__ck_needs_moment(&c, which)) continue;
            bg_tensor *m = bg_optim_state(o, i, which);
            char mn[BG_NAME_MAX];
            bg__ck_moment_name(mn, names[i], i, which, c.kind);
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
