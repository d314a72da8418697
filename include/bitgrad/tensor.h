/* bitgrad/tensor.h - contexts, tensors, lifetimes, errors.
 *
 * A bg_ctx owns everything of one training run on one device: persistent tensors
 * (parameters, gradients, optimizer state), the step arena that holds every op result,
 * the autograd tape, the RNG and a sticky error. See DESIGN.md sections 2 and 4. */
#ifndef BITGRAD_TENSOR_H
#define BITGRAD_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(BG_BUILDING_LIB)
#define BG_API __attribute__((visibility("default")))
#else
#define BG_API
#endif

#define BG_MAX_DIMS 4
#define BG_NAME_MAX 64

/* Error codes: 0 is success, failures are negative. */
enum {
    BG_OK = 0,
    BG_EINVAL = -1,      /* bad argument */
    BG_ENOMEM = -2,      /* allocation failed */
    BG_EIO = -3,         /* read/write failure */
    BG_EFORMAT = -4,     /* malformed file */
    BG_ESHAPE = -5,      /* shapes do not fit */
    BG_EDEVICE = -6,     /* tensors on different devices */
    BG_ESTATE = -7,      /* call not valid now (tape consumed, tensor freed, in-place on recorded) */
    BG_ENONFINITE = -8,  /* NaN or Inf in a loss or gradient */
    BG_EUNSUPPORTED = -9,/* valid request this build cannot do */
    BG_ENODEV = -10,     /* no such device (no GPU, no driver) */
    BG_ENOTFOUND = -11,  /* name matched nothing */
};

typedef enum bg_dtype {
    BG_F32 = 0,
    BG_F16 = 1,
    BG_BF16 = 2,
    BG_I8 = 3,
    BG_I32 = 4,
} bg_dtype;

typedef enum bg_device {
    BG_CPU = 0,
    BG_CUDA = 1,
} bg_device;

typedef struct bg_ctx bg_ctx;
typedef struct bg_tensor bg_tensor;
/* Backward's grad-ready hook (bg_ctx_set_grad_ready in autograd.h). */
typedef void (*bg_grad_ready_fn)(void *user, bg_tensor *param);

typedef struct bg_ctx_stats {
    uint64_t heap_allocs;      /* heap allocations made by this ctx so far */
    size_t arena_bytes;        /* capacity of the step arena */
    size_t arena_high_water;   /* most bytes a step has used */
    size_t arena_used;         /* bytes used by the current step */
    size_t persistent_bytes;   /* bytes held by persistent tensors */
    size_t grad_bytes;         /* most bytes intermediates' gradients held at once in the last
                                  backward (CPU) */
    size_t pool_bytes;         /* buffers kept for large step tensors and intermediates'
                                  gradients, reused within and across steps (CPU) */
    size_t pool_high_water;    /* most pool bytes in use at once so far */
    size_t tape_nodes;         /* nodes recorded in the current step */
    uint64_t matmul_calls;     /* GEMM calls issued (weight-gradient skips show here) */
    uint64_t matmul_flops;     /* their 2 m n k, summed (int8 GEMMs counted the same) */
    uint64_t steps;            /* completed bg_step_end calls */
} bg_ctx_stats;

/* ---- context ---------------------------------------------------------- */
BG_API int bg_ctx_create(bg_ctx **out, bg_device device);
BG_API void bg_ctx_free(bg_ctx **ctx);
BG_API bg_device bg_ctx_device(const bg_ctx *ctx);
BG_API void bg_ctx_stats_get(const bg_ctx *ctx, bg_ctx_stats *out);
/* Sticky error: the first error since the last clear. */
BG_API int bg_ctx_error_code(const bg_ctx *ctx);
BG_API const char *bg_ctx_error(const bg_ctx *ctx);
BG_API void bg_ctx_clear_error(bg_ctx *ctx);
/* Frees every step tensor and the tape at once. Call once per training step. */
BG_API void bg_step_end(bg_ctx *ctx);
/* Grad mode; returns the previous state. */
BG_API bool bg_grad_enable(bg_ctx *ctx, bool enabled);
BG_API bool bg_grad_enabled(const bg_ctx *ctx);
/* Training flag (dropout is active only while training). Returns the previous state. */
BG_API bool bg_ctx_set_training(bg_ctx *ctx, bool training);
BG_API void bg_ctx_seed(bg_ctx *ctx, uint64_t seed);
BG_API uint64_t bg_ctx_rng_state(const bg_ctx *ctx);
BG_API void bg_ctx_set_rng_state(bg_ctx *ctx, uint64_t state);
/* Uniform in [0,1) and standard normal draws from the ctx RNG (deterministic). */
BG_API float bg_rand_uniform(bg_ctx *ctx);
BG_API float bg_rand_normal(bg_ctx *ctx);

BG_API const char *bg_strerror(int code);
BG_API const char *bg_dtype_name(bg_dtype dtype);
BG_API size_t bg_dtype_size(bg_dtype dtype);

/* ---- persistent tensors (created and freed explicitly) ---------------- */
BG_API bg_tensor *bg_tensor_new(bg_ctx *ctx, bg_dtype dtype, int ndim, const int64_t *shape);
/* A persistent F32 tensor that requires grad: a trainable parameter. */
BG_API bg_tensor *bg_param(bg_ctx *ctx, const char *name, int ndim, const int64_t *shape);
/* Persistent copy of any tensor (e.g. a value that must outlive the step). */
BG_API bg_tensor *bg_tensor_keep(const bg_tensor *t);
BG_API void bg_tensor_free(bg_tensor **t);

/* ---- step tensors (live until bg_step_end) ---------------------------- */
BG_API bg_tensor *bg_zeros(bg_ctx *ctx, bg_dtype dtype, int ndim, const int64_t *shape);
BG_API bg_tensor *bg_full(bg_ctx *ctx, int ndim, const int64_t *shape, float value);
/* Copies n = numel values from data (of the tensor's dtype) into a new step tensor. */
BG_API bg_tensor *bg_from_data(bg_ctx *ctx, bg_dtype dtype, int ndim, const int64_t *shape,
                               const void *data);
BG_API bg_tensor *bg_randn(bg_ctx *ctx, int ndim, const int64_t *shape, float mean, float std);

/* ---- accessors --------------------------------------------------------- */
BG_API bg_ctx *bg_tensor_ctx(const bg_tensor *t);
BG_API int bg_tensor_ndim(const bg_tensor *t);
BG_API int64_t bg_tensor_dim(const bg_tensor *t, int axis); /* axis may be negative */
BG_API const int64_t *bg_tensor_shape(const bg_tensor *t);
BG_API const int64_t *bg_tensor_strides(const bg_tensor *t);
BG_API int64_t bg_tensor_numel(const bg_tensor *t);
BG_API bg_dtype bg_tensor_dtype(const bg_tensor *t);
BG_API bg_device bg_tensor_device(const bg_tensor *t);
BG_API bool bg_tensor_is_contiguous(const bg_tensor *t);
BG_API bool bg_tensor_is_persistent(const bg_tensor *t);
/* Pointer to the first element: host memory for CPU tensors, device memory for CUDA ones
 * (use bg_tensor_read / write / bg_tensor_to to move values). */
BG_API void *bg_tensor_data(bg_tensor *t);
BG_API const void *bg_tensor_data_const(const bg_tensor *t);
BG_API const char *bg_tensor_name(const bg_tensor *t);
BG_API int bg_tensor_set_name(bg_tensor *t, const char *name);
BG_API bool bg_tensor_requires_grad(const bg_tensor *t);
/* Only leaf tensors (persistent, or step tensors made by creation functions) can change it. */
BG_API int bg_tensor_set_requires_grad(bg_tensor *t, bool requires_grad);
/* The gradient accumulated into a leaf (a persistent tensor, or a step tensor made by a
 * creation function), or NULL before any. An intermediate (an op's result) gives its
 * gradient's memory back as soon as backward has passed it, as in PyTorch; call
 * bg_tensor_retain_grad on it before bg_backward to keep it until bg_step_end. */
BG_API bg_tensor *bg_tensor_grad(const bg_tensor *t);
BG_API int bg_tensor_retain_grad(bg_tensor *t);

/* Copies values (converted to float) in logical row-major order into dst[numel]. */
BG_API int bg_tensor_read(const bg_tensor *t, float *dst);
/* Writes values (float) in logical row-major order. An error if t is recorded on the tape. */
BG_API int bg_tensor_write(bg_tensor *t, const float *src);
BG_API int bg_tensor_fill(bg_tensor *t, float value);
/* Fills with normal(mean, std) / uniform(lo, hi) draws from the ctx RNG. */
BG_API int bg_tensor_fill_randn(bg_tensor *t, float mean, float std);
BG_API int bg_tensor_fill_uniform(bg_tensor *t, float lo, float hi);
/* Copies src into dst (same shape, any dtype on either side). */
BG_API int bg_tensor_copy(bg_tensor *dst, const bg_tensor *src);
/* Value of a one-element tensor (NAN and a sticky error otherwise). */
BG_API float bg_item(const bg_tensor *t);

/* ---- devices ------------------------------------------------------------ */
/* Copies src into dst of the same shape, whatever the devices and contexts of the two (and
 * converting dtypes): the explicit way values move between host and GPU, since ops never
 * copy across devices. Returns when the copy is complete. */
BG_API int bg_tensor_to(bg_tensor *dst, const bg_tensor *src);
/* A persistent copy of t in dst_ctx (any device): same dtype, shape, name, requires_grad. */
BG_API bg_tensor *bg_tensor_to_device(const bg_tensor *t, bg_ctx *dst_ctx);
/* One line on a device: "cpu"; for BG_CUDA the GPU (name, compute capability, memory,
 * runtime and driver versions) or why none is usable, e.g. after bg_ctx_create failed with
 * BG_ENODEV. */
BG_API const char *bg_device_info(bg_device device);

#ifdef __cplusplus
}
#endif
#endif
