/* checkpoint_packed.c - reading a packed frozen base for checkpoints (layout in
 * include/bitgrad/checkpoint.h): its ternary codes, one int8 per weight, and exact scales. */
#include <stdlib.h>

#include "bitgrad/quant.h"

#include "io/checkpoint_packed.h"
#include "nn/module_impl.h"
#include "quant/tmat_access.h"

bg_module *bg__ck_packed_owner(bg_module *m, const bg_tensor *t)
{
    if (!m) return NULL;
    if (bg_linear_is_packed(m) && m->params[0] == t) return m;
    for (int i = 0; i < m->n_children; i++) {
        bg_module *r = bg__ck_packed_owner(m->children[i], t);
        if (r) return r;
    }
    return NULL;
}

int64_t bg__ck_packed_n_scales(const bg_module *owner)
{
    bool per_row;
    bg__tmat_scales(bg__linear_packed_base(owner), &per_row);
    return per_row ? owner->params[0]->shape[0] : 1;
}

int bg__ck_packed_codes(const bg_module *owner, int8_t **codes, const float **scales,
                        int64_t *n_scales)
{
    const bg_tmat *pk = bg__linear_packed_base(owner);
    int64_t out = owner->params[0]->shape[0], in = owner->params[0]->shape[1];
    *scales = bg__tmat_scales(pk, NULL);
    *n_scales = bg__ck_packed_n_scales(owner);
    *codes = malloc((size_t)(out * in));
    if (!*codes) return BG_ENOMEM;
    for (int64_t j = 0; j < out; j++) bg__tmat_row_codes(pk, j, *codes + j * in);
    return BG_OK;
}

int bg__ck_packed_blob(const bg_module *owner, void **data, size_t *nbytes, int *type)
{
    const bg_tmat *pk = bg__linear_packed_base(owner);
    int64_t out = owner->params[0]->shape[0], in = owner->params[0]->shape[1];
    bool per_row;
    *data = NULL;
    bg__tmat_scales(pk, &per_row);
    if (in % 256 || per_row) { /* I8 codes */
        const float *sc;
        int64_t ns;
        *type = BG_GGML_I8;
        *nbytes = (size_t)(out * in);
        return bg__ck_packed_codes(owner, (int8_t **)data, &sc, &ns);
    }
    *type = BG_GGML_TQ2_0; /* codes in blocks with d = 1: a quarter of the bytes */
    size_t row = bg_ggml_row_size(BG_GGML_TQ2_0, in);
    *nbytes = row * (size_t)out;
    uint8_t *blocks = malloc(*nbytes);
    int8_t *codes = malloc((size_t)in);
    float *v = malloc((size_t)in * sizeof *v);
    int rc = blocks && codes && v ? BG_OK : BG_ENOMEM;
    for (int64_t j = 0; !rc && j < out; j++) {
        bg__tmat_row_codes(pk, j, codes);
        for (int64_t i = 0; i < in; i++) v[i] = (float)codes[i];
        rc = bg_ggml_quantize(BG_GGML_TQ2_0, v, blocks + (size_t)j * row, 1, in);
    }
    free(codes);
    free(v);
    if (rc) free(blocks);
    else *data = blocks;
    return rc;
}
