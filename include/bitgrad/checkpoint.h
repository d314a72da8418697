/* bitgrad/checkpoint.h - training checkpoints (model, optimizer, schedule, lambda and RNG
 * state in one GGUF file, so that a resumed run continues bit for bit) and bitgrad's own
 * LoRA adapter files (adapter tensors plus the full adapter configuration).
 *
 * Checkpoint file (GGUF v3, written atomically: PATH.tmp, fsync, rename):
 *   keys     general.type "checkpoint", general.architecture ("bitnet" or "bitgrad"),
 *            bitgrad.checkpoint.version (u32 1), bitgrad.step (i64), bitgrad.lambda (f32),
 *            bitgrad.rng (u64), bitgrad.user (str), bitgrad.schedule.* (kind i32, -1: none;
 *            warmup, total i64; min_factor, stage2_at, stage2_factor f32),
 *            bitgrad.params (str array: every model parameter, model order),
 *            bitgrad.requires_grad (bool array, same order),
 *            bitgrad.tensor_checksums (u64 array, one per tensor in file order: see below),
 *            for a bitnet model the bitnet.* keys of DESIGN.md section 7 and bitgrad.bitnet.* /
 *            bitgrad.quant.* (projection kind and BitLinear configuration),
 *            with an optimizer bitgrad.optim.kind ("sgd", "adam", "adamw"), .steps (i64), the
 *            hyper-parameters (.lr .beta1 .beta2 .eps .weight_decay .momentum .dampening f32,
 *            .nesterov bool), .lr_scale .wd_scale (f32), .params (str array), .param_group
 *            (i32 array), .group_lr .group_wd (f32 arrays) and .has_state (bool).
 *   tensors  every model parameter as F32 under its own name, then the optimizer moments as
 *            F32: "<param>.exp_avg" and "<param>.exp_avg_sq" (Adam, AdamW) or
 *            "<param>.momentum_buffer" (SGD with momentum); when that name would reach 64 bytes
 *            the moment is named "optim.<i>.exp_avg" (etc.) with i the optimizer's index.
 *            A packed frozen base (bg_module_pack_frozen, nn.h) is stored losslessly without
 *            unpacking the model: its ternary codes under the parameter's name, as TQ2_0
 *            blocks with d = 1 when rows are whole 256-weight blocks and the scale is per
 *            tensor, else as I8 [out, in] (one code per byte), and its exact scale(s) as F32 [1] (or [out], per-row mode) under
 *            "<param>.packed_scale" ("packed.<i>.scale", i the parameter's index, when that
 *            name would reach 64 bytes); an F16 embedding as F16. Such a checkpoint loads only
 *            into a model packed the same way (build it, add the adapters, pack, then load);
 *            the base is then re-packed from the file's codes and scales. Saving allocates the
 *            stored codes of the packed bases (2.06 bits or 1 byte per weight) until the file
 *            is written. bg_bitnet_import (and so `bitgrad export`) reads such a checkpoint
 *            with the base rebuilt as latent weights of exactly these codes and scale
 *            (per-tensor scales only); bg_bitnet_export of a packed model stays refused.
 *   checksum of a tensor: h = 0xcbf29ce484222325; for each little-endian 64-bit word w of its
 *            data h = (h ^ w) * 0x100000001b3 (a trailing partial word is zero-extended), so
 *            any one corrupted word is detected.
 *
 * Loading validates the whole file first (keys and their types, the model's configuration,
 * every tensor's presence, type, shape and checksum, the optimizer's kind, hyper-parameters,
 * parameter list and groups) and only then writes into the model and optimizer: on any error
 * nothing has changed and err says what is wrong. Load between steps (an empty tape).
 * Restored: parameter values and requires_grad flags, the quantizer lambda (set on every
 * BitLinear), the ctx RNG, the optimizer's moments, step count, per-group lr and weight decay
 * and lr/wd scales. The optimizer must hold the same parameters in the same groups as the one
 * saved (build it the same way, freezing first); its hyper-parameters must be equal too.
 * Adapters are not created by a checkpoint: add them (bg_lora_add) before loading. */
#ifndef BITGRAD_CHECKPOINT_H
#define BITGRAD_CHECKPOINT_H

#include "bitgrad/optim.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BG_CHECKPOINT_VERSION 1
#define BG_CHECKPOINT_USER_MAX 1024

typedef struct bg_checkpoint_state {
    int64_t step; /* training steps done (the schedule's position) */
    float lambda; /* quantizer blend in [0, 1] (bg_module_set_lambda) */
    uint64_t rng; /* ctx RNG: save takes it from the model's ctx (this field is
                           * ignored); load restores it into the ctx and reports it here */
    bool has_schedule;
    bg_schedule schedule;              /* lr / wd schedule, at position `step` */
    char user[BG_CHECKPOINT_USER_MAX]; /* free text (a command line, a data position) */
    /* Save only: a GGUF file whose tokenizer.* keys the checkpoint copies unchanged (the
     * model's own file, or the vocabulary a model is trained with), so that the checkpoint
     * carries its tokenizer (bg_tokenizer_load reads it). NULL: none. Load sets it NULL. */
    const char *tokenizer_from;
} bg_checkpoint_state;

/* step 0, lambda 1, no schedule, empty user string. */
BG_API bg_checkpoint_state bg_checkpoint_state_default(void);

/* Writes model (and opt, which may be NULL) with st (NULL: step = the optimizer's steps,
 * lambda = the model's) to path. On failure path keeps its previous contents. */
BG_API int bg_checkpoint_save(const char *path, bg_module *model, bg_optim *opt,
                              const bg_checkpoint_state *st, char *err, size_t errlen);
/* Restores a checkpoint into model (and opt, may be NULL: the file's optimizer state is then
 * ignored); st (may be NULL) receives the saved state. Nothing changes on error. */
BG_API int bg_checkpoint_load(const char *path, bg_module *model, bg_optim *opt,
                              bg_checkpoint_state *st, char *err, size_t errlen);

/* ---- LoRA adapter files (bitgrad's own; llama.cpp's format is bg_lora_export) -----------
 * GGUF with general.type "adapter", adapter.type "lora", adapter.lora.alpha (f32),
 * bitgrad.lora.rank (u32), bitgrad.lora.rslora (bool), bitgrad.lora.dropout (f32),
 * bitgrad.lora.targets (str array: the wrapped module names) and per target module the F32
 * tensors "<module>.weight.lora_a" {in, r} (A [r, in]) and "<module>.weight.lora_b" {r, out}
 * (B [out, r]), in ggml order; general.architecture "bitnet" for a bitnet model. */

/* Writes adapter `adapter` of model (all its modules must share one configuration). */
BG_API int bg_lora_save(const char *path, bg_module *model, const char *adapter, char *err,
                        size_t errlen);
/* Loads an adapter file into model as adapter `adapter_name` (NULL: "default"). If the model
 * has no such adapter it is added first (bg_lora_add with the saved configuration and
 * targets: the base is frozen and the adapter made active; the ctx RNG is left as it was);
 * if it has one, it must wrap the same modules with the same rank, and its tensors and
 * configuration are replaced. Everything is validated first: a file that does not fit the
 * model (other shapes, unknown modules) is an error that changes nothing. */
BG_API int bg_lora_load(const char *path, bg_module *model, const char *adapter_name, char *err,
                        size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
