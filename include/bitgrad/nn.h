/* bitgrad/nn.h - modules: Linear and BitLinear, Embedding, RMSNorm, LayerNorm, Dropout,
 * Sequential, and the bitnet transformer (exactly llama.cpp's "bitnet" graph). Parameter
 * names are hierarchical and equal to the GGUF tensor names ("blk.0.attn_q.weight"). */
#ifndef BITGRAD_NN_H
#define BITGRAD_NN_H

#include "bitgrad/autograd.h"
#include "bitgrad/ternary.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bg_module bg_module;

typedef enum bg_module_kind {
    BG_MOD_LINEAR = 0,  /* Linear or BitLinear (bitlinear flag) */
    BG_MOD_EMBEDDING,
    BG_MOD_RMSNORM,
    BG_MOD_LAYERNORM,
    BG_MOD_DROPOUT,
    BG_MOD_SEQUENTIAL,
    BG_MOD_RELU,
    BG_MOD_BITNET,
    BG_MOD_CUSTOM,
} bg_module_kind;

/* BitLinear configuration (DESIGN.md section 5). */
typedef struct bg_bitlinear_config {
    int weight_mode;      /* bg_wq_mode: per tensor (default), per row, per group */
    int64_t group;        /* group size for BG_WQ_PER_GROUP */
    int act_bits;         /* 2..8, default 8 */
    bool act_per_tensor;  /* default false: per token */
    bool quant_weights;   /* STE on the weights (default true) */
    bool quant_acts;      /* STE on the activations (default true) */
    float lambda;         /* blend 0..1 (warm-up), default 1 */
} bg_bitlinear_config;

BG_API bg_bitlinear_config bg_bitlinear_default(void);

/* ---- generic module API ----------------------------------------------------- */
BG_API bg_tensor *bg_module_forward(bg_module *m, bg_tensor *x);
BG_API void bg_module_free(bg_module **m);
BG_API bg_module_kind bg_module_kind_of(const bg_module *m);
BG_API const char *bg_module_name(const bg_module *m);
BG_API int bg_module_n_children(const bg_module *m);
BG_API bg_module *bg_module_child(const bg_module *m, int i);
/* Depth-first search for a module by its full name ("blk.0.attn_q"). */
BG_API bg_module *bg_module_find(bg_module *m, const char *name);
/* Parameters of m and its descendants, in registration order. */
BG_API int bg_module_n_params(const bg_module *m);
BG_API bg_tensor *bg_module_param(const bg_module *m, int i);
BG_API bg_tensor *bg_module_find_param(const bg_module *m, const char *name);
/* Number of scalars: all, or only those that require grad. */
BG_API int64_t bg_module_count(const bg_module *m, bool trainable_only);
BG_API void bg_module_set_training(bg_module *m, bool training);
BG_API bool bg_module_training(const bg_module *m);
/* Fills every Linear/Embedding weight with N(0, std) and norms with 1 (ctx RNG). */
BG_API void bg_module_init_normal(bg_module *m, float std);

/* ---- layers ------------------------------------------------------------------ */
/* y = x W^T (+ b); W [out, in]. Input [.., in]. */
BG_API bg_module *bg_linear_new(bg_ctx *ctx, const char *name, int64_t in, int64_t out, bool bias);
/* y = ActQ(x) WQ(W)^T (+ b). cfg NULL means the defaults. */
BG_API bg_module *bg_bitlinear_new(bg_ctx *ctx, const char *name, int64_t in, int64_t out,
                                   bool bias, const bg_bitlinear_config *cfg);
BG_API bool bg_linear_is_bit(const bg_module *m);
BG_API int bg_linear_set_config(bg_module *m, const bg_bitlinear_config *cfg);
BG_API bg_bitlinear_config bg_linear_config(const bg_module *m);
BG_API bg_tensor *bg_linear_weight(const bg_module *m);
BG_API bg_tensor *bg_linear_bias(const bg_module *m);
/* Sets lambda on every BitLinear under m. */
BG_API void bg_module_set_lambda(bg_module *m, float lambda);
/* Turns every Linear under m into a BitLinear with cfg, keeping its weights, except those
 * whose full name matches one of the fnmatch patterns in exclude (may be NULL). Returns
 * the number converted. */
BG_API int bg_module_to_bitlinear(bg_module *m, const bg_bitlinear_config *cfg,
                                  const char *const *exclude, int n_exclude);
/* Inference mode for BitLinear: weights quantized once to codes + scale; the forward runs
 * int8 activations x ternary codes with int32 accumulation (no grad). Off: latent weights. */
BG_API int bg_module_set_inference(bg_module *m, bool on);
/* In inference mode, round activations as llama.cpp's CPU backend converts them for each
 * projection's weight type (the type in the file it was imported from, else the type
 * bg_bitnet_export writes for its row length): TQ1_0 / TQ2_0 -> Q8_K (blocks of 256,
 * d = max / -127 from the element of largest magnitude, round half to even, the blocks'
 * integer dots summed as llama.cpp does); Q2_0 / Q8_0 -> Q8_0 blocks of 32; F16 -> F16;
 * BF16 -> BF16; F32 -> unchanged. token_embd's type rounds the output projection's input
 * the same way. Logits then match llama.cpp's (F32 KV cache) to ~1e-6, except where a
 * float32 activation that differs from llama.cpp's in its last bit rounds the other way. */
BG_API void bg_module_set_llama_emulation(bg_module *m, bool on);

BG_API bg_module *bg_embedding_new(bg_ctx *ctx, const char *name, int64_t n_vocab, int64_t dim);
BG_API bg_module *bg_rmsnorm_new(bg_ctx *ctx, const char *name, int64_t dim, float eps);
BG_API bg_module *bg_layernorm_new(bg_ctx *ctx, const char *name, int64_t dim, float eps, bool bias);
BG_API bg_module *bg_dropout_new(bg_ctx *ctx, float p);
BG_API bg_module *bg_relu_new(bg_ctx *ctx);
/* Runs children in order; takes ownership of them. */
BG_API bg_module *bg_sequential_new(bg_ctx *ctx, const char *name, bg_module *const *mods, int n);

/* ---- the bitnet transformer (DESIGN.md section 6) --------------------------- */
typedef struct bg_bitnet_config {
    int64_t n_vocab, n_embd, n_layer, n_head, n_head_kv, n_ff, n_ctx;
    float eps, rope_base;
    bool bitlinear;             /* projections are BitLinear (else full-precision Linear) */
    bg_bitlinear_config quant;  /* their configuration */
    bool packed_base;           /* BitLinear projections made frozen and packed (zero codes, to
                                   be set by bg_bitlinear_set_packed): no latent weights ever */
    bool recompute;             /* activation recomputation: each block's forward runs again
                                   in backward instead of keeping its intermediates */
    bool no_init;               /* parameters left zero (norms one) for a loader to fill */
} bg_bitnet_config;

BG_API bg_bitnet_config bg_bitnet_default(void);
BG_API bg_module *bg_bitnet_new(bg_ctx *ctx, const bg_bitnet_config *cfg);
BG_API const bg_bitnet_config *bg_bitnet_get_config(const bg_module *m);
/* Turns activation recomputation (bg_bitnet_config.recompute) on or off. */
BG_API int bg_bitnet_set_recompute(bg_module *m, bool on);
/* ids I32 [B, T] (or [T]) -> logits [B, T, n_vocab]; positions start at pos0. */
BG_API bg_tensor *bg_bitnet_forward(bg_module *m, bg_tensor *ids);
/* Mean next-token cross-entropy: logits of ids[:, :-1] against ids[:, 1:] (targets equal
 * to ignore_index are skipped). */
BG_API bg_tensor *bg_bitnet_loss(bg_module *m, bg_tensor *ids, int ignore_index);
/* W2-style init: weights N(0, std), norms 1. */
BG_API void bg_bitnet_init(bg_module *m, float std);

/* ---- generation with a key/value cache (src/nn/bitnet_cache.c) ---------------------- */
/* Per-layer caches of the keys (after RoPE) and values of the positions seen so far, so that
 * each new token costs one position instead of a re-run of the sequence. Inference only (no
 * grad is recorded), CPU only; the model must outlive the cache and keep its configuration. */
typedef struct bg_kv_cache bg_kv_cache;
/* A cache of n_ctx positions (<= 0 or more than the model's: the model's n_ctx). */
BG_API int bg_kv_cache_new(bg_module *bitnet, int64_t n_ctx, bg_kv_cache **out);
BG_API void bg_kv_cache_free(bg_kv_cache **c);
/* Positions filled so far (the position the next token gets), and the capacity. */
BG_API int64_t bg_kv_cache_pos(const bg_kv_cache *c);
BG_API int64_t bg_kv_cache_n_ctx(const bg_kv_cache *c);
/* Empties the cache (the next token is position 0 again). */
BG_API void bg_kv_cache_reset(bg_kv_cache *c);
/* Runs n new tokens at positions pos .. pos + n - 1 (a prompt at once, or one token at a
 * time), appends their keys and values, and returns their logits [n, n_vocab] as a step
 * tensor: equal, up to rounding, to rows pos .. pos + n - 1 of bg_bitnet_forward on the whole
 * sequence. NULL with a sticky error (and the cache unchanged) when pos + n exceeds the
 * cache, an id is outside [0, n_vocab), or llama.cpp emulation is on (full forward only). */
BG_API bg_tensor *bg_bitnet_forward_cached(bg_module *bitnet, bg_kv_cache *c,
                                           const int32_t *ids, int64_t n);

/* ---- the packed frozen base (DESIGN.md §10) ------------------------------------ */
/* Holds every frozen BitLinear base under m (requires_grad false, full quantization: lambda 1,
 * per-token activations, per-tensor or per-row scales; CPU) as 2-bit ternary codes and its
 * scale instead of fp32 latent weights: the forward and the dX backward run on the codes and
 * give the bits of the latent path. The weight parameter stays (name, shape) with no data:
 * reading or writing its values is refused until unpacked. Call between steps. Returns the
 * number of modules packed. Unfreezing a packed weight (bg_module_unfreeze) or merging a
 * LoRA adapter into it unpacks it first. */
BG_API int bg_module_pack_frozen(bg_module *m);
/* A frozen Embedding (bitnet: token_embd, also the tied output projection) whose values are all
 * exact in F16 is kept as F16 (half the bytes; the same values). It counts among the returned
 * modules. */
/* Rebuilds latent weights for every packed base under m (and F16 embeddings: F32 again) (codes * g with absmean exactly the
 * stored scale, so the quantizer gives back the same codes and scale); frozen as before.
 * Returns the number unpacked. */
BG_API int bg_module_unpack(bg_module *m);
BG_API bool bg_linear_is_packed(const bg_module *m);
/* The first parameter under m without f32 values (a packed base, an F16 embedding), or NULL:
 * writers of f32 tensors (checkpoints, export) refuse such a model, naming it. */
BG_API const bg_tensor *bg_module_find_packed(const bg_module *m);
/* A BitLinear's per-tensor weight scale s_w: the packed one, or absmean of the latent weights. */
BG_API float bg_bitlinear_scale(const bg_module *m);
/* Sets a BitLinear's base from ternary codes [out, in] in {-1, 0, 1} and its scale (one, or
 * one per row in BG_WQ_PER_ROW mode), packed and frozen; its latent weights are freed. */
BG_API int bg_bitlinear_set_packed(bg_module *m, const int8_t *codes, const float *s_w);
/* The same from GGUF TQ2_0 / TQ1_0 blocks ([out] rows of in/256 blocks, nbytes in all): the
 * codes go straight into the packed layout (no float weights); the scale is the blocks' d
 * (their mean over nonzero blocks) times *scale (the file's exact `.scale`, or NULL). */
/* Loads a bitnet GGUF whose projections are TQ2_0 / TQ1_0 with every projection packed and
 * frozen from the mmapped blocks (no fp32 weights at any point); an F16 token_embd stays F16
 * and frozen; norms and other token_embd types as bg_bitnet_import (export.h) loads them. err gets a message on failure. */
BG_API int bg_bitnet_import_packed(bg_ctx *ctx, const char *path, bg_module **out, char *err,
                                   size_t errlen);
BG_API int bg_bitlinear_set_packed_tq(bg_module *m, int ggml_type, const void *data, size_t nbytes,
                                      const float *scale);

/* ---- freezing (DESIGN.md §3: a frozen parameter gets no gradient and no dW GEMM) ---- */
/* Sets requires_grad on every parameter whose full name matches the fnmatch pattern
 * ("blk.*.attn_*"); returns how many matched (0: BG_ENOTFOUND is not raised, check it). */
BG_API int bg_module_freeze(bg_module *m, const char *pattern);
BG_API int bg_module_unfreeze(bg_module *m, const char *pattern);
/* "trainable params: N || all params: M || trainable%: P" (as peft), to out. */
BG_API void bg_module_print_trainable(const bg_module *m, void *file /* FILE* */);

/* ---- LoRA adapters (peft semantics) ---------------------------------------------- */
#define BG_LORA_MAX_ADAPTERS 4

typedef struct bg_lora_config {
    int rank;
    float alpha;
    float dropout;              /* on the adapter's input, while training */
    bool rslora;                /* scale alpha / sqrt(r) instead of alpha / r */
    bool gaussian_init;         /* A ~ N(0, 1/r) instead of Kaiming-uniform */
    const char *const *targets; /* fnmatch patterns on module names ("blk.*.attn_q") */
    int n_targets;
} bg_lora_config;

BG_API bg_lora_config bg_lora_default(void);
/* Adds adapter `name` to every Linear/BitLinear whose name matches a target: A [r, in]
 * (Kaiming-uniform a=sqrt(5), or Gaussian), B [out, r] zero; y = base(x) + s * B A x.
 * Freezes every base parameter of m and makes the new adapter active. Errors (nothing
 * changed): no module matches, rank < 1 or larger than a layer, duplicate name. Returns
 * the number of wrapped modules. */
BG_API int bg_lora_add(bg_module *m, const char *name, const bg_lora_config *cfg);
/* Makes `name` the active adapter (NULL: none active, the base model alone). */
BG_API int bg_lora_set_active(bg_module *m, const char *name);
/* Folds the active adapter into the base weights (W += s B A); for a BitLinear base the
 * latent weights change and are re-quantized: *flipped gets the number of ternary codes
 * that changed (may be NULL). While merged the adapter path is skipped. */
BG_API int bg_lora_merge(bg_module *m, int64_t *flipped);
BG_API int bg_lora_unmerge(bg_module *m);
/* Adapter tensors of adapter `name` (A then B per wrapped module) into out (max n). */
BG_API int bg_lora_params(bg_module *m, const char *name, bg_tensor **out, int max);
BG_API float bg_lora_scale(const bg_lora_config *cfg);

/* Losses as functions (ops in autograd.h): bg_cross_entropy, bg_mse. */

#ifdef __cplusplus
}
#endif
#endif
