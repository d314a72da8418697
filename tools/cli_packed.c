/* cli_packed.c - the packed frozen base for `bitgrad finetune` (DESIGN.md section 10): a LoRA
 * fine-tune of a GGUF whose projections are TQ1_0 / TQ2_0 loads them straight into packed
 * codes (no fp32 latent weights), and everything frozen after the adapters are added is held
 * packed; plus --recompute for train and finetune. */
#include <stdlib.h>
#include <string.h>

#include <bitgrad/export.h>

#include "train.h"

/* Whether every projection of path (blk.N.attn_q ... ffn_down .weight) is TQ1_0 or TQ2_0, so
 * the whole base loads packed. A file with other rows too (Q2_0 / Q8_0 / F16 where a row
 * length is not a multiple of 256) loads latent, as before. */
bool cli_file_is_ternary(const char *path)
{
    static const char *const proj[] = { "attn_q", "attn_k", "attn_v", "attn_output",
                                        "ffn_gate", "ffn_up", "ffn_down" };
    char err[256];
    bg_gguf *g = NULL;
    if (bg_gguf_open(&g, path, err, sizeof err)) return false;
    int n = 0;
    bool all = true;
    for (int64_t i = 0; all && i < bg_gguf_n_tensors(g); i++) {
        const char *name = bg_gguf_tensor_name(g, i), *dot = NULL;
        if (strncmp(name, "blk.", 4) != 0 || !(dot = strchr(name + 4, '.'))) continue;
        for (size_t k = 0; k < sizeof proj / sizeof *proj; k++) {
            size_t len = strlen(proj[k]);
            if (strncmp(dot + 1, proj[k], len) != 0 || strcmp(dot + 1 + len, ".weight") != 0)
                continue;
            int type = bg_gguf_tensor_type(g, i);
            all = type == BG_GGML_TQ1_0 || type == BG_GGML_TQ2_0;
            n++;
        }
    }
    bg_gguf_free(&g);
    return all && n > 0;
}

bool cli_packed_wanted(const run_opts *o)
{
    if (o->lora_r <= 0 || o->unfreeze || o->no_pack || getenv("BITGRAD_NO_PACK")) return false;
    return cli_file_is_ternary(o->model_in);
}

int cli_open_model_packed(bg_ctx *ctx, const char *path, bg_module **m, bg_tokenizer **tok)
{
    char err[512];
    *m = NULL;
    if (tok) *tok = NULL;
    if (bg_bitnet_import_packed(ctx, path, m, err, sizeof err))
        return cli_fail(1, "%s: %s", path, err);
    if (tok && cli_model_tokenizer(path, bg_bitnet_get_config(*m)->n_vocab, tok)) {
        bg_module_free(m);
        return 1;
    }
    return 0;
}

static int count_packed(const bg_module *m)
{
    int n = bg_linear_is_packed(m);
    for (int i = 0; i < bg_module_n_children(m); i++) n += count_packed(bg_module_child(m, i));
    return n;
}

int cli_pack_base(bg_ctx *ctx, bg_module *m)
{
    if (bg_module_pack_frozen(m) < 0) return cli_fail(1, "pack: %s", bg_ctx_error(ctx));
    bg_ctx_stats st;
    bg_ctx_stats_get(ctx, &st);
    fprintf(stderr, "base: %d projections packed (%.1f MiB held by the model)\n", count_packed(m),
            (double)st.persistent_bytes / 1048576.0);
    return 0;
}

int cli_set_recompute(const run_opts *o, bg_ctx *ctx, bg_module *m)
{
    if (!o->recompute) return 0;
    if (bg_bitnet_set_recompute(m, true))
        return cli_fail(1, "--recompute: %s", bg_ctx_error(ctx));
    fprintf(stderr, "activation recomputation on\n");
    return 0;
}
