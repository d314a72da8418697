/* checkpoint_internal.h - helpers shared by the checkpoint writer (checkpoint.c) and reader
 * (checkpoint_load.c): tensor checksums and the names the file gives optimizer moments and
 * packed scales. */
#ifndef BG_IO_CHECKPOINT_INTERNAL_H
#define BG_IO_CHECKPOINT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bitgrad/nn.h"
#include "bitgrad/optim.h"
#include "tensor/tensor_impl.h"

/* Word-wise FNV-1a of n bytes (the per-tensor checksum of the file). */
BG_INTERNAL uint64_t bg__ck_checksum(const void *data, size_t n);
/* "sgd", "adam" or "adamw". */
BG_INTERNAL const char *bg__ck_kind_name(bg_optim_kind k);
/* Whether an optimizer of this configuration keeps moment `which` (0: first, 1: second). */
BG_INTERNAL bool bg__ck_needs_moment(const bg_optim_config *c, int which);
/* The tensor name of moment `which` of parameter i (named param). */
BG_INTERNAL void bg__ck_moment_name(char out[BG_NAME_MAX], const char *param, int i, int which,
                                    bg_optim_kind kind);
/* The first BitLinear in m (depth first), or NULL. */
BG_INTERNAL bg_module *bg__ck_first_bitlinear(bg_module *m);
/* The name of the scale tensor of packed parameter i (named param). */
BG_INTERNAL void bg__ck_scale_name(char out[BG_NAME_MAX], const char *param, int i);

#endif
