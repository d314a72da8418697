/* lora_impl.h - LoRA adapter slots attached to a Linear / BitLinear module. */
#ifndef BG_LORA_IMPL_H
#define BG_LORA_IMPL_H

#include "nn/module_impl.h"

typedef struct bg_lora_adapter {
    char name[32];
    bg_tensor *A, *B; /* A [r, in], B [out, r]; registered as the module's parameters */
    bg_lora_config cfg;
    float scale;
    float *llama_b; /* eval --llama: B as the adapter file holds it, when import rescaled B */
} bg_lora_adapter;

typedef struct bg_lora_slots {
    bg_lora_adapter a[BG_LORA_MAX_ADAPTERS];
    int n, active;
    bool merged;
} bg_lora_slots;

/* y + scale * B A x for the active, unmerged adapter of m (y unchanged otherwise). */
BG_INTERNAL bg_tensor *bg__lora_apply(bg_module *m, bg_tensor *x, bg_tensor *y);


#endif
