/* model_io.h - helpers shared by model export, import and adapter files. */
#ifndef BG_MODEL_IO_H
#define BG_MODEL_IO_H

#include "nn/lora_impl.h"

/* Formats a message into err (if not NULL) and returns code. */
BG_INTERNAL int bg__io_err(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Scale of a projection as exported: absmean of its latent weights (per tensor). */
BG_INTERNAL float bg__proj_scale(const bg_module *lin);

#endif
