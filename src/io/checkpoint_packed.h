/* checkpoint_packed.h - what checkpoint.c needs of a packed frozen base (src/nn/packed.c):
 * the module owning a data-less weight header, and its codes and scales. */
#ifndef BG_IO_CHECKPOINT_PACKED_H
#define BG_IO_CHECKPOINT_PACKED_H

#include "bitgrad/nn.h"

/* The packed BitLinear under m whose weight header is t, or NULL. */
bg_module *bg__ck_packed_owner(bg_module *m, const bg_tensor *t);
/* The owner's codes [out * in] (malloc'd, *codes; the caller frees) and its scales (1, or out
 * in BG_WQ_PER_ROW mode; owned by the module). BG_OK or BG_ENOMEM. */
int bg__ck_packed_codes(const bg_module *owner, int8_t **codes, const float **scales,
                        int64_t *n_scales);
/* The owner's codes as stored in a checkpoint: TQ2_0 blocks with d = 1 (rows of whole
 * blocks, one scale) or else I8 codes [out * in]; *data malloc'd (the caller frees). */
int bg__ck_packed_blob(const bg_module *owner, void **data, size_t *nbytes, int *type);
/* How many scales owner keeps (1, or one per row). */
int64_t bg__ck_packed_n_scales(const bg_module *owner);

#endif
