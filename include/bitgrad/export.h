/* bitgrad/export.h - the bitnet model and LoRA adapters as GGUF files that upstream
 * llama.cpp loads (DESIGN.md section 7), and import of a bitnet GGUF back into a model. */
#ifndef BITGRAD_EXPORT_H
#define BITGRAD_EXPORT_H

#include "bitgrad/nn.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bg_export_options {
    int weight_type;     /* BG_GGML_TQ2_0 (default) or BG_GGML_TQ1_0 */
    int embd_type;       /* BG_GGML_F16 (default) or BG_GGML_F32 */
    bool scale_in_d;     /* lossy: block scale d = fp16(s_w) and no .scale tensors */
    const char *name;    /* general.name (default "bitgrad") */
    int32_t bos_id, eos_id; /* tokenizer ids (default 10 and 10: a newline ends a line) */
} bg_export_options;

BG_API bg_export_options bg_export_default(void);
/* Writes a bitnet model (BitLinear projections, per-tensor weight scales, n_vocab 256 byte
 * tokenizer). Refuses, naming the fix, sizes a TQ type cannot hold. */
BG_API int bg_bitnet_export(bg_module *model, const char *path, const bg_export_options *opt,
                            char *err, size_t errlen);
/* Writes adapter `name` of model in llama.cpp's LoRA format (lora_a {in, r}, lora_b {r, out},
 * adapter.lora.alpha); B of ffn_gate and ffn_up is divided by that projection's scale,
 * because llama.cpp multiplies those adapters' output by it. */
BG_API int bg_lora_export(bg_module *model, const char *name, const char *path, char *err,
                          size_t errlen);
/* Loads a bitnet GGUF (bitgrad's, or llama.cpp converter's form with d = block absmax and no
 * .scale tensors) into a new model whose training forward gives the same W_q: ternary
 * weights become latent weights whose absmean is exactly the stored scale. */
BG_API int bg_bitnet_import(bg_ctx *ctx, const char *path, bg_module **out, char *err,
                            size_t errlen);
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
