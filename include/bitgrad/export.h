/* bitgrad/export.h - the bitnet model and LoRA adapters as GGUF files that upstream
 * llama.cpp loads (DESIGN.md section 7), and import of a bitnet GGUF back into a model. */
#ifndef BITGRAD_EXPORT_H
#define BITGRAD_EXPORT_H

#include "bitgrad/nn.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bg_export_options {
    /* Projections: BG_GGML_TQ2_0 (default) or TQ1_0 write each row length that is a multiple
     * of 256 in that type, other rows losslessly in Q2_0 (a multiple of 64) or Q8_0 (of 32),
     * else F32; BG_GGML_Q2_0 / Q8_0 choose that type first the same way. All of these are the
     * ternary codes with d = 1 and the exact f32 scale in "<proj>.scale". BG_GGML_F16 / F32
     * write codes * scale as values (F16 rounds the scale). */
    int weight_type;
    int embd_type;       /* BG_GGML_F16 (default) or BG_GGML_F32 */
    bool scale_in_d;     /* lossy: block scale d = fp16(s_w) and no .scale tensors */
    const char *name;    /* general.name (default "bitgrad") */
    int32_t bos_id, eos_id; /* byte tokenizer ids (default 10 and 10: a newline ends a line) */
    /* Path of a GGUF file whose tokenizer.* keys the export copies unchanged (same types, same
     * order), overriding the model's own (see below). NULL (default): the model's own, else
     * bitgrad's 256-token byte vocabulary. The file's token count must equal n_vocab. */
    const char *tokenizer_from;
} bg_export_options;

BG_API bg_export_options bg_export_default(void);
/* Writes a bitnet model (BitLinear projections with per-tensor weight scales). The tokenizer:
 * opt->tokenizer_from if set, else the tokenizer.* keys the model carries (a model loaded by
 * bg_bitnet_import keeps those of its file; bg_bitnet_set_tokenizer attaches another's), else
 * the byte vocabulary (n_vocab must be 256). Never refuses a row length (see weight_type). */
BG_API int bg_bitnet_export(bg_module *model, const char *path, const bg_export_options *opt,
                            char *err, size_t errlen);
/* Writes adapter `name` of model in llama.cpp's LoRA format (lora_a {in, r}, lora_b {r, out},
 * adapter.lora.alpha); B of ffn_gate and ffn_up is divided by that projection's scale,
 * because llama.cpp multiplies those adapters' output by it. */
BG_API int bg_lora_export(bg_module *model, const char *name, const char *path, char *err,
                          size_t errlen);
/* Loads a bitnet GGUF (bitgrad's, or what llama.cpp's convert_hf_to_gguf.py writes) into a new
 * model whose training forward gives the same W_q. Projections may be TQ1_0, TQ2_0, Q2_0, Q8_0,
 * F16, BF16 or F32, with or without "<proj>.scale"; any head size, n_head_kv <= n_head. A
 * projection whose non-zero values share one magnitude s (every converter output) becomes
 * latent weights codes * m whose absmean is exactly s; other values load as they are. The
 * model keeps the file's tokenizer.* keys (bg_bitnet_export writes them back) and each
 * projection's ggml type (for bg_module_set_llama_emulation). */
BG_API int bg_bitnet_import(bg_ctx *ctx, const char *path, bg_module **out, char *err,
                            size_t errlen);
/* Attaches the tokenizer.* keys of the GGUF at path to model (replacing what it carried), for
 * a model trained from scratch on another model's vocabulary (`train --vocab-from X.gguf`).
 * BG_EFORMAT if the file has no tokenizer.ggml.tokens array. */
BG_API int bg_bitnet_set_tokenizer(bg_module *model, const char *gguf_path, char *err,
                                   size_t errlen);
/* Number of tokens of the tokenizer the model carries, or 0 if it carries none. */
BG_API int64_t bg_bitnet_tokenizer_size(const bg_module *model);
/* Loads a llama.cpp LoRA adapter GGUF (as written by bg_lora_export) into model as adapter
 * `name` (undoing the ffn_gate/ffn_up compensation). */
BG_API int bg_lora_import(bg_module *model, const char *path, const char *name, char *err,
                          size_t errlen);

/* The GPT-2 bytes-to-unicode spelling of byte b as UTF-8 (NUL-terminated, <= 3 bytes). */
BG_API void bg_byte_token_text(int b, char out[4]);

#ifdef __cplusplus
}
#endif
#endif
