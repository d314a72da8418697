/* module_impl.h - private layout of bg_module shared by the nn sources. */
#ifndef BG_MODULE_IMPL_H
#define BG_MODULE_IMPL_H

#include "bitgrad/nn.h"
#include "tensor/tensor_impl.h"

#define BG_MOD_MAX_PARAMS (2 + 2 * BG_LORA_MAX_ADAPTERS)

struct bg_module {
    bg_module_kind kind;
    char name[BG_NAME_MAX];
    bg_ctx *ctx;
    bool training;
    bg_tensor *params[BG_MOD_MAX_PARAMS]; /* own parameters (weight, bias) */
    int n_params;
    bg_module **children;
    int n_children, cap_children;
    bg_tensor *(*forward)(bg_module *m, bg_tensor *x);
    /* Linear / BitLinear */
    bool bit;
    bg_bitlinear_config cfg;
    bool inference;
    bool emulate_llama;   /* inference: llama.cpp's activation rounding (llama_emu.c) */
    bool llama_wtype_set; /* Linear: llama_wtype is the file's type (else chosen by shape) */
    int llama_wtype;      /* Linear: ggml type llama.cpp multiplies this projection in */
    bool llama_no_scale;  /* Linear: llama.cpp runs it from a file without "<name>.scale" */
    bool llama_ds_set;    /* Linear: llama_d / llama_s / llama_has_s come from the file */
    bool llama_has_s;     /* Linear: the file has "<name>.scale" (llama.cpp multiplies by it) */
    float llama_d, llama_s; /* Linear: the file's weight magnitude (block d) and its .scale */
    int llama_qmag;       /* Linear, Q8_0 file: |qs| of a non-zero weight (d is then its block d) */
    int embd_type;        /* bitnet: ggml type of token_embd in the file (0 = F32: no rounding) */
    int8_t *codes;        /* inference: ternary codes [out, in] */
    float *scales;        /* inference: weight scales */
    bg_tmat *packed;      /* inference: codes at 2 bits for the SIMD kernels */
    bg_tmat *base_pk;     /* packed frozen base (packed.c): params[0] is then a data-less header */
    /* norms, dropout */
    float eps, p;
    /* bitnet */
    bg_bitnet_config bcfg;
    struct bg_tape *sub_tape; /* recomputation's tape (bitnet.c) */
    /* adapters (LoRA), owned by the adapter code */
    void *adapters;
    /* bitnet: what src/io keeps with an imported model (its tokenizer keys), freed with it */
    void *io_meta;
    void (*io_meta_free)(void *);
};

BG_INTERNAL bg_module *bg__module_alloc(bg_ctx *ctx, bg_module_kind kind, const char *name);
BG_INTERNAL int bg__module_add_child(bg_module *m, bg_module *child);
/* Creates a parameter named "<module name>.<local>" and registers it. */
BG_INTERNAL bg_tensor *bg__module_add_param(bg_module *m, const char *local, int ndim,
                                            const int64_t *shape);
BG_INTERNAL bg_tensor *bg__linear_forward(bg_module *m, bg_tensor *x);
/* An Embedding with zero weights (bg_embedding_new without its random init; for loaders). */
BG_INTERNAL bg_module *bg__embedding_new_zero(bg_ctx *ctx, const char *name, int64_t n_vocab,
                                              int64_t dim);
BG_INTERNAL void bg__bitnet_release(bg_module *m);
/* lora.c: keeps b (the values of adapter tensor B of m as its file holds them) for eval --llama. */
BG_INTERNAL int bg__lora_keep_file_b(const bg_module *m, const bg_tensor *B, const float *b);
/* lora.c: frees a module's adapter slots (m->adapters) and what they own besides tensors. */
BG_INTERNAL void bg__lora_slots_free(void *slots);
/* lora.c: eval --llama, llama.cpp multiplies this module's LoRA sum by "<name>.scale" after
 * adding the delta (ffn_gate, ffn_up), so the base product leaves the scale out. */
BG_INTERNAL bool bg__lora_defers_scale(const bg_module *m);

/* ---- the packed frozen base (packed.c, op_bitlinear.c) ---- */
/* The BitLinear forward on the packed base (errors if the config stopped being full
 * quantization). */
BG_INTERNAL bg_tensor *bg__linear_forward_packed(bg_module *m, bg_tensor *x);
/* Latent weights back in place of m's packed base (frozen or not, as it was); no-op if none. */
BG_INTERNAL int bg__linear_unpack(bg_module *m);
BG_INTERNAL void bg__linear_packed_free(bg_module *m);
/* A frozen F16 embedding table copied from src (the file's F16 token_embd), in place of m's
 * f32 weight (freed first; on failure m has no weight and must be freed). */
BG_INTERNAL int bg__embedding_set_f16(bg_module *m, const uint16_t *src);
/* A frozen BitLinear [out, in] whose base is packed zero codes with scale 1 (no latent
 * weights are ever allocated). */
BG_INTERNAL bg_module *bg__bitlinear_new_packed(bg_ctx *ctx, const char *name, int64_t in,
                                                int64_t out, const bg_bitlinear_config *cfg);
BG_INTERNAL bg_tmat *bg__linear_packed_base(const bg_module *m);
/* y = ActQ(x) . (codes * s_w)^T from the packed codes, recorded as BITLINEAR with w (a frozen
 * data-less header of shape [out, in]): backward gives dX only. */
BG_INTERNAL bg_tensor *bg__bitlinear_packed(bg_tensor *x, bg_tensor *w, const bg_tmat *pk,
                                            int act_bits);

/* llama_emu.c: llama.cpp's CPU arithmetic for eval --llama. The ggml type llama.cpp runs a
 * BitLinear in (the file's, else what bitgrad's exporter writes for its row length); x rounded
 * as llama.cpp converts activations for a weight of type t (F16, BF16, Q8_0 blocks; F32 and
 * others unchanged); rows of a projection of type Q2_0, Q8_0, F16, BF16 or F32 (codes, scale). */
BG_INTERNAL int bg__llama_weight_type(const bg_module *m);
BG_INTERNAL void bg__llama_round_acts(int t, const float *x, float *out, int64_t n);
BG_INTERNAL void bg__llama_rows(const bg_module *m, int t, const float *x, int64_t rows, int64_t in,
                                int64_t out, float *y, float *xr);

/* llama_ops.c: ggml-cpu's float arithmetic (AVX2 + FMA) for the bitnet graph, to the bit. */
BG_INTERNAL float bg__llama_expf_v(float x);
BG_INTERNAL void bg__llama_rmsnorm(const float *x, const float *w, int64_t rows, int64_t n, float eps,
                                   float *y);
BG_INTERNAL void bg__llama_swiglu(const float *g, const float *u, int64_t rows, int64_t n, float *y);
/* q [T, n_head, hd], k and v [T, n_head_kv, hd] (q and k roped in place) -> out [T, n_head, hd]. */
BG_INTERNAL int bg__llama_attention(float *q, float *k, const float *v, int64_t T, int64_t n_head,
                                    int64_t n_head_kv, int64_t hd, float rope_base, float *out);
BG_INTERNAL float bg__llama_tq_dot(int type, const int8_t *q, const float *dx, const int8_t *codes,
                                   int64_t in, float d_w);
BG_INTERNAL void bg__llama_logits(const float *x, int64_t rows, int64_t n, const void *w, bool w16,
                                  int64_t n_vocab, float *y);
/* The logits for a Q8_0 token_embd (its values w), x unrounded; BG_EFORMAT if w's blocks are
 * not what ggml's quantizer writes (the caller then takes the plain path). */
BG_INTERNAL int bg__llama_logits_q8_0(const float *x, int64_t rows, int64_t n, const float *w,
                                      int64_t n_vocab, float *y);
/* y [n, m] = x [n, k] . a [m, k]^T for F32 a and x as ggml-cpu's mul_mat runs them (sgemm
 * when it takes the shape, else ggml_vec_dot_f32). */
BG_INTERNAL void bg__llama_mm_f32(const float *a, int64_t m, const float *x, int64_t n, int64_t k, float *y);
BG_INTERNAL float bg__llama_vdot(const float *a, const float *x, int64_t n, bool f16);
/* The weight magnitude llama.cpp's kernels see, and whether a .scale multiplies after. */
BG_INTERNAL void bg__llama_wscale(const bg_module *m, float *d_w, bool *has_s, float *s);

#endif
