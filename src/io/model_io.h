/* model_io.h - helpers shared by model export, import and adapter files. */
#ifndef BG_MODEL_IO_H
#define BG_MODEL_IO_H

#include "bitgrad/gguf.h"
#include "nn/lora_impl.h"

/* Formats a message into err (if not NULL) and returns code. */
BG_INTERNAL int bg__io_err(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Scale of a projection as exported: absmean of its latent weights (per tensor). */
BG_INTERNAL float bg__proj_scale(const bg_module *lin);
/* ffn_gate / ffn_up whose base file has "<proj>.scale": llama.cpp scales their LoRA delta. */
BG_INTERNAL bool bg__lora_scaled_by_llama(const bg_module *m);

/* The tokenizer.* key/values of a GGUF file, kept in file order with their exact types. */
typedef struct bg__tok_keys {
    bg_gguf_writer *kv;
    int64_t n_tokens; /* length of tokenizer.ggml.tokens */
} bg__tok_keys;

/* Copies the tokenizer.* keys of g (BG_EFORMAT if it has no tokenizer.ggml.tokens array). */
/* The bitnet.* hyper-parameters and n_vocab of a bitnet GGUF (import.c), validated. */
BG_INTERNAL int bg__bitnet_read_config(const bg_gguf *g, bg_bitnet_config *c, char *err,
                                       size_t errlen);
BG_INTERNAL int bg__tok_keys_from(const bg_gguf *g, bg__tok_keys **out);
BG_INTERNAL int bg__tok_keys_load(const char *path, bg__tok_keys **out, char *err, size_t errlen);
BG_INTERNAL void bg__tok_keys_free(void *t);
/* The model's attached keys (NULL if none); attach takes ownership (t may be NULL). */
BG_INTERNAL const bg__tok_keys *bg__model_tok_keys(const bg_module *m);
BG_INTERNAL void bg__model_attach_tok_keys(bg_module *m, bg__tok_keys *t);

#endif
