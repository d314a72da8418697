/* import_packed.c - loads a bitnet GGUF for fine-tuning with its ternary projections held
 * packed and frozen (DESIGN.md section 10): the model is made with packed_base set, so no
 * fp32 latent weight is ever allocated, and each TQ2_0 / TQ1_0 tensor's blocks (read from the
 * mmapped file) go straight into 2-bit codes with the scale import.c would give the latent
 * weights. An F16 token_embd stays F16 (frozen); everything else (norms, other embedding
 * types) loads as bg_bitnet_import does. Each tensor's mapped pages are given back once read,
 * so the file and the model are not both resident. */
#include <sys/mman.h>
#include <unistd.h>

#include "bitgrad/export.h"
#include "bitgrad/gguf.h"
#include "bitgrad/quant.h"
#include "io/gguf_internal.h"
#include "io/model_io.h"
#include "nn/module_impl.h"

/* The bitnet.* hyper-parameters; projections packed when attn_q is a TQ type. */
static int packed_config(const bg_gguf *g, bg_bitnet_config *c, char *err, size_t errlen)
{
    int rc = bg__bitnet_read_config(g, c, err, errlen);
    if (rc) return rc;
    int64_t q = bg_gguf_find_tensor(g, "blk.0.attn_q.weight");
    int qt = q >= 0 ? bg_gguf_tensor_type(g, q) : -1;
    c->packed_base = qt == BG_GGML_TQ1_0 || qt == BG_GGML_TQ2_0;
    c->no_init = true; /* every tensor comes from the file */
    if (!c->packed_base)
        return bg__io_err(err, errlen, BG_EFORMAT, "import (packed): blk.0.attn_q.weight is not "
                          "TQ1_0 / TQ2_0: use bg_bitnet_import");
    return BG_OK;
}

static int load_packed(const bg_gguf *g, bg_module *lin, int64_t ti, char *err, size_t errlen)
{
    const char *name = bg_gguf_tensor_name(g, ti);
    char sn[BG_NAME_MAX + 8];
    snprintf(sn, sizeof sn, "%s.scale", bg_module_name(lin));
    int64_t si = bg_gguf_find_tensor(g, sn);
    float scale;
    if (si >= 0 && (bg_gguf_tensor_nelements(g, si) != 1 || bg_gguf_read_tensor_f32(g, si, &scale)))
        return bg__io_err(err, errlen, BG_EFORMAT, "import: '%s' must be one f32", sn);
    const int64_t *ne = bg_gguf_tensor_ne(g, ti);
    bg_tensor *w = bg_linear_weight(lin);
    int type = bg_gguf_tensor_type(g, ti);
    if (ne[0] != bg_tensor_dim(w, 1) || ne[1] != bg_tensor_dim(w, 0) ||
        (type != BG_GGML_TQ1_0 && type != BG_GGML_TQ2_0))
        return bg__io_err(err, errlen, BG_ESHAPE, "import: '%s' has the wrong shape or type", name);
    lin->llama_no_scale = si < 0;
    int rc = bg_bitlinear_set_packed_tq(lin, type, bg_gguf_tensor_data(g, ti),
                                        bg_gguf_tensor_nbytes(g, ti), si >= 0 ? &scale : NULL);
    return rc ? bg__io_err(err, errlen, rc, "import: %s", bg_ctx_error(lin->ctx)) : BG_OK;
}

/* Gives the mapped file's pages of tensor ti back once their contents are copied, so the
 * file and its packed copy are not both resident (a page read again is mapped again). */
static void release_pages(const bg_gguf *g, int64_t ti)
{
    long page = sysconf(_SC_PAGESIZE);
    if (!g->mapped || ti < 0 || page <= 0) return;
    uintptr_t a = (uintptr_t)bg_gguf_tensor_data(g, ti), e = a + bg_gguf_tensor_nbytes(g, ti);
    a = (a + (uintptr_t)page - 1) / (uintptr_t)page * (uintptr_t)page;
    e = e / (uintptr_t)page * (uintptr_t)page;
    if (e > a) (void)madvise((void *)a, e - a, MADV_DONTNEED);
}

static int load_plain(const bg_gguf *g, bg_tensor *p, char *err, size_t errlen);

/* token_embd: an F16 table in the file stays F16 (frozen, as bg_module_pack_frozen would
 * leave it), never widened; any other type loads as f32. */
static int load_embd(const bg_gguf *g, bg_module *emb, char *err, size_t errlen)
{
    bg_tensor *p = bg_module_param(emb, 0);
    int64_t ti = bg_gguf_find_tensor(g, bg_tensor_name(p));
    const int64_t *ne = ti >= 0 ? bg_gguf_tensor_ne(g, ti) : NULL;
    if (!ne || bg_gguf_tensor_type(g, ti) != BG_GGML_F16 || ne[0] != bg_tensor_dim(p, 1) ||
        ne[1] != bg_tensor_dim(p, 0) || bg_gguf_tensor_nelements(g, ti) != bg_tensor_numel(p))
        return load_plain(g, p, err, errlen);
    int rc = bg__embedding_set_f16(emb, bg_gguf_tensor_data(g, ti));
    release_pages(g, ti);
    return rc ? bg__io_err(err, errlen, rc, "import: %s", bg_ctx_error(emb->ctx)) : BG_OK;
}

static int load_plain(const bg_gguf *g, bg_tensor *p, char *err, size_t errlen)
{
    const char *name = bg_tensor_name(p);
    int64_t ti = bg_gguf_find_tensor(g, name);
    if (ti < 0) return bg__io_err(err, errlen, BG_EFORMAT, "import: tensor '%s' missing", name);
    int nd = bg_tensor_ndim(p);
    const int64_t *ne = bg_gguf_tensor_ne(g, ti);
    bool ok = bg_gguf_tensor_nelements(g, ti) == bg_tensor_numel(p);
    for (int i = 0; ok && i < nd; i++) ok = ne[i] == bg_tensor_dim(p, nd - 1 - i);
    if (!ok || bg_gguf_read_tensor_f32(g, ti, bg_tensor_data(p)))
        return bg__io_err(err, errlen, BG_EFORMAT, "import: '%s': wrong shape or unsupported type", name);
    release_pages(g, ti);
    return BG_OK;
}

int bg_bitnet_import_packed(bg_ctx *ctx, const char *path, bg_module **out, char *err, size_t errlen)
{
    if (!ctx || !path || !out) return bg__io_err(err, errlen, BG_EINVAL, "import: NULL argument");
    *out = NULL;
    bg_gguf *g = NULL;
    int rc = bg_gguf_open(&g, path, err, errlen);
    if (rc) return rc;
    bg_bitnet_config c;
    rc = packed_config(g, &c, err, errlen);
    bg_module *m = rc ? NULL : bg_bitnet_new(ctx, &c);
    if (!rc && !m) rc = bg__io_err(err, errlen, BG_ENOMEM, "import: %s", bg_ctx_error(ctx));
    for (int i = 0; !rc && i < bg_module_n_children(m); i++) {
        bg_module *ch = bg_module_child(m, i);
        if (bg_linear_is_packed(ch)) {
            int64_t ti = bg_gguf_find_tensor(g, bg_tensor_name(bg_linear_weight(ch)));
            rc = ti < 0 ? bg__io_err(err, errlen, BG_EFORMAT, "import: tensor '%s' missing",
                                     bg_tensor_name(bg_linear_weight(ch)))
                        : load_packed(g, ch, ti, err, errlen);
            if (!rc) release_pages(g, ti);
        } else if (ch->kind == BG_MOD_EMBEDDING && bg_module_n_params(ch) == 1) {
            rc = load_embd(g, ch, err, errlen);
        } else {
            for (int k = 0; !rc && k < bg_module_n_params(ch); k++)
                rc = load_plain(g, bg_module_param(ch, k), err, errlen);
        }
    }
    if (!rc) m->embd_type = bg_gguf_tensor_type(g, bg_gguf_find_tensor(g, "token_embd.weight"));
    if (!rc) { /* the file's tokenizer.* keys travel with the model, as in bg_bitnet_import */
        bg__tok_keys *tok = NULL;
        int trc = bg__tok_keys_from(g, &tok);
        if (trc == BG_OK) bg__model_attach_tok_keys(m, tok);
        else if (trc != BG_EFORMAT) rc = bg__io_err(err, errlen, trc, "import: out of memory");
    }
    bg_gguf_free(&g);
    if (rc) bg_module_free(&m);
    *out = m;
    return rc;
}
